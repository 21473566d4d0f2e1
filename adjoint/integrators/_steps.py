"""A method's step and adjoint step, described once and rendered for every backend.

:func:`describe` turns a method (its kind and tableau) into a :class:`StepDescription`: short lists
of statements over named vectors: ``forward`` (``x -> xn``), ``recompute`` (the stage inputs from
``x``) and ``reverse`` (the adjoint step ``(X<i>, lam) -> (z, gc)``, adding the parameter part to
``gp``), and for invertible methods (splittings) ``inverse`` (``xn -> x``). Two renderers read it:

- :func:`scalar_lines` writes straight-line code with one local per component; the field and VJP
  statements are spliced from the traced graph or called (the scalar backend, :mod:`adjoint._fused`),
  or bound to locals already computed (:class:`Computed`: the tape backend, :mod:`adjoint._tape`);
- :func:`array_source` writes njit functions (``step``, ``adjoint_step``; ``inverse_step`` and
  ``stages_adjoint`` for splittings) with one loop over the components per statement (a Runge-Kutta
  method's stages as one loop reading the tableau at run time, :class:`Loop`), calling the
  user's compiled ``f`` / ``vjp`` (``g`` / ``gvjp``); the generic backend's sweep kernels
  (:mod:`adjoint._kernels`, :mod:`adjoint.checkpointing._streamed`,
  :mod:`adjoint.checkpointing._reversible`) receive them as sweep functions (:func:`array_steps`).

Every statement fixes the floating-point operations and their order (left to right, as written in
its docstring); both renderers emit exactly those, so the backends agree bit for bit by
construction. Zero coefficients of ``A`` are skipped (when a stage loop is unrolled, and at run time
in a rendered loop); the weights ``b`` never are. A Runge-Kutta method is written once, with its
stages as :class:`Loop` statements (``StepDescription.looped``); :func:`unroll` expands them into
the per-stage lists the scalar renderer reads.

Vector names: ``x``, ``lam`` (inputs), ``xn`` (forward output), ``z``, ``gc`` (adjoint outputs),
``gp`` (accumulated); internal vectors are ``d``, ``vx``, ``vc``, ``vp`` and the per-stage ``k<i>``
(stage derivative), ``X<i>`` (stage input), ``kb<i>`` (stage-derivative cotangent), ``xb<i>``
(stage-input cotangent). Sizes: ``n`` (state) unless a statement says ``m`` (controls) or ``q``
(parameters).

The next sweeps add to this description (docs/architecture.md, "Where the next capabilities go"):
a tangent sweep is a ``tangent`` list (a ``Jvp`` statement where ``forward`` has ``Field``; the
other statements are linear and apply to tangents as written); the second-order adjoint is the
tangent of ``recompute`` + ``reverse``; a block of cotangents renders ``reverse`` once per column;
an implicit stage is a ``Solve`` statement (Newton forward, a transposed solve in ``reverse``); a
variable step needs nothing here (the statements name ``t`` and ``tau`` symbolically).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ._methods import KIND_EULER, KIND_LEAPFROG, KIND_MAP, KIND_RK

__all__ = ["StepDescription", "describe", "unroll", "scalar_lines", "array_source", "array_steps"]

_GEN_VERSION = "1"


# -- statements ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Field:
    """``out = fn(x, c, p, t + dt * tau)`` (``t`` itself when ``dt`` is None); ``fn`` is ``"f"``, or
    ``"g"`` for the second half-field of a splitting method."""

    x: str
    dt: float | str | None  # str: CN_I in a Loop
    out: str
    fn: str = "f"


@dataclass(frozen=True)
class Vjp:
    """``(ox, oc, op) = [d_(x, c, p) fn(x, c, p, t + dt * tau)]^T cot``."""

    x: str
    dt: float | str | None  # str: CN_I in a Loop
    cot: str
    ox: str
    oc: str
    op: str
    fn: str = "f"


@dataclass(frozen=True)
class Stage:
    """A stage input: ``out = (((x + tau * a_1 * v_1) + tau * a_2 * v_2) ...)``, terms ``(a, v)``
    (``tau * a_j`` first); also a substep ``S + tau * b_i * H_i`` of a splitting method."""

    out: str
    x: str
    terms: tuple | Tab  # Tab in a Loop
    size: str = "n"


@dataclass(frozen=True)
class Undo:
    """``out = x - tau * a * v`` (a substep of a splitting method taken back)."""

    out: str
    x: str
    a: float
    v: str


@dataclass(frozen=True)
class Combine:
    """``out = x + tau * (((0 + b_1 * v_1) + b_2 * v_2) ...)`` (``0`` a zero of the state's type)."""

    out: str
    x: str
    terms: tuple | Tab  # Tab in a Loop


@dataclass(frozen=True)
class Update:
    """``out = x + tau * v``."""

    out: str
    x: str
    v: str


@dataclass(frozen=True)
class StageCot:
    """``out = tau * (((b * lam) + a_1 * v_1) + ...)``, terms ``(a, v)``."""

    out: str
    b: float | str  # str: B_I in a Loop
    lam: str
    terms: tuple | Tab  # Tab in a Loop


@dataclass(frozen=True)
class Copy:
    """``out = src``."""

    out: str
    src: str
    size: str = "n"


@dataclass(frozen=True)
class Zero:
    """``out = 0``."""

    out: str
    size: str = "n"


@dataclass(frozen=True)
class Scale:
    """``out = tau * src``."""

    out: str
    src: str
    size: str = "n"


@dataclass(frozen=True)
class Acc:
    """``out += src`` (``out += tau * src`` when ``tau``)."""

    out: str
    src: str
    size: str = "n"
    tau: bool = False


@dataclass(frozen=True)
class Tab:
    """Tableau terms of a statement inside a :class:`Loop` over the stages (stage index ``i``), in
    place of its ``terms``: ``"row"`` are ``(A[i, j], vec<j>)`` for ``j < i``, ``"col"`` are
    ``(A[j, i], vec<j>)`` for ``i < j < s``, ``"b"`` are ``(b[j], vec<j>)`` for every ``j``. Zero
    coefficients of ``A`` are skipped (when the loop is unrolled, and at run time in a rendered
    loop), those of ``b`` never."""

    coef: str
    vec: str


#: a stage-indexed coefficient in a :class:`Loop`: ``cn[i]`` (a :class:`Field`'s or :class:`Vjp`'s
#: ``dt``) or ``b[i]`` (a :class:`StageCot`'s ``b``)
CN_I = "cn[i]"
B_I = "b[i]"


@dataclass(frozen=True)
class Loop:
    """``body`` once per stage index ``i``, ascending (``reverse`` False) or descending, over all the
    stages. In ``body``, a vector name ending in ``{i}`` is that stage's, coefficients are
    :class:`Tab`, ``CN_I`` or ``B_I``, and :class:`NotLast` statements are skipped at the last stage.

    The scalar renderer reads the loop unrolled (:func:`unroll`, with the tableau's values as
    constants). The array renderer writes one loop whose bounds and coefficients are read at run
    time from ``A, b, cn``: the user's field and VJP are then compiled once per step function, not
    once per stage (unrolled stages, or a constant stage count that LLVM unrolls, run slower:
    docs/architecture.md)."""

    reverse: bool
    body: tuple


@dataclass(frozen=True)
class NotLast:
    """``stmt`` at every stage of a :class:`Loop` but the last."""

    stmt: object


def unroll(stmts, A, b, cn) -> tuple:
    """``stmts`` with every :class:`Loop` replaced by its body once per stage and every :class:`Tab`
    by its terms, the stage index and the tableau's values substituted: the statements that the
    loop's rendering computes, in order."""
    s = len(b)

    def terms(tt, i):
        if tt.coef == "row":
            return tuple((float(A[i][j]), f"{tt.vec}{j}") for j in range(i) if A[i][j] != 0.0)
        if tt.coef == "col":
            return tuple((float(A[j][i]), f"{tt.vec}{j}") for j in range(i + 1, s) if A[j][i] != 0.0)
        return tuple((float(b[j]), f"{tt.vec}{j}") for j in range(s))

    def subst(st, i):
        kw = {}
        for f_ in st.__dataclass_fields__:
            v = getattr(st, f_)
            if isinstance(v, Tab):
                v = terms(v, i)
            elif isinstance(v, str) and i is not None:
                v = float(cn[i]) if v == CN_I else float(b[i]) if v == B_I else v.replace("{i}", str(i))
            kw[f_] = v
        return type(st)(**kw)

    out: list = []
    for st in stmts:
        if isinstance(st, Loop):
            for i in range(s - 1, -1, -1) if st.reverse else range(s):
                for x in st.body:
                    if isinstance(x, NotLast):
                        if i == s - 1:
                            continue
                        x = x.stmt
                    out.append(subst(x, i))
        else:
            out.append(subst(st, None))
    return tuple(out)


@dataclass(frozen=True)
class StepDescription:
    """The statements of one method's forward step and adjoint step.

    The adjoint step is ``recompute`` (the stage inputs ``X<i>`` from ``x``) followed by ``reverse``
    (the adjoint from the stage inputs). ``inverse``: for an invertible method (splittings), the
    statements rebuilding ``x`` and the stage inputs from ``xn``, else None. ``homes``: where the
    array renderer keeps a vector when it may share another's storage (an elementwise statement
    reads it only to write the same component of that one). ``looped``: for a Runge-Kutta method,
    ``forward``, ``recompute`` and ``reverse`` as written, with their stage :class:`Loop` statements
    (the fields above are these unrolled); None when there is nothing to loop over."""

    kind: int
    forward: tuple
    recompute: tuple
    reverse: tuple
    inverse: tuple | None = None
    homes: dict = field(default_factory=dict)
    looped: dict | None = None

    @property
    def adjoint(self) -> tuple:
        return self.recompute + self.reverse

    def rolled(self, which: str) -> tuple:
        """The statements of list ``which`` with their stage loops (:class:`Loop`) kept: what the
        array renderer writes. The other fields hold them unrolled (:func:`unroll`)."""
        if self.looped is None:
            return getattr(self, which)
        if which == "adjoint":
            return self.looped["recompute"] + self.looped["reverse"]
        return self.looped.get(which, getattr(self, which))


def _t(dt):
    return None if dt is None else float(dt)


def describe(kind, A, b, cn) -> StepDescription:
    """The description of the method with code ``kind`` and tableau ``(A, b, cn)``."""
    if kind == KIND_EULER:
        return StepDescription(
            kind,
            (Field("x", None, "d"), Update("xn", "x", "d")),
            (),
            (
                Vjp("x", None, "lam", "vx", "vc", "vp"),
                Update("z", "lam", "vx"),
                Scale("gc", "vc", "m"),
                Acc("gp", "vp", "q", tau=True),
            ),
            homes={"d": "xn", "vx": "z", "vc": "gc"},
        )
    if kind == KIND_MAP:
        return StepDescription(
            kind, (Field("x", None, "xn"),), (), (Vjp("x", None, "lam", "z", "gc", "vp"), Acc("gp", "vp", "q"))
        )
    if kind == KIND_LEAPFROG:
        return _describe_splitting(kind, A, b, cn)
    if kind != KIND_RK:
        raise ValueError(f"no step description for method kind {kind}")
    stage, field_ = Stage("X{i}", "x", Tab("row", "k")), Field("X{i}", CN_I, "k{i}")
    fwd = (Loop(False, (stage, field_)), Combine("xn", "x", Tab("b", "k")))
    rec = (Loop(False, (stage, NotLast(field_))),)  # the last stage derivative is not needed by the adjoint
    rev = (
        Copy("z", "lam"),
        Zero("gc", "m"),
        Loop(
            True,
            (
                StageCot("kb{i}", B_I, "lam", Tab("col", "xb")),
                Vjp("X{i}", CN_I, "kb{i}", "xb{i}", "vc", "vp"),
                Acc("z", "xb{i}"),
                Acc("gc", "vc", "m"),
                Acc("gp", "vp", "q"),
            ),
        ),
    )
    tab = (tuple(map(tuple, A.tolist())), tuple(b.tolist()), tuple(cn.tolist()))
    return StepDescription(
        kind,
        unroll(fwd, *tab),
        unroll(rec, *tab),
        unroll(rev, *tab),
        looped={"forward": fwd, "recompute": rec, "reverse": rev},
    )


def _describe_splitting(kind, A, b, cn) -> StepDescription:
    """A symplectic splitting (adjoint.integrators._leapfrog): substeps ``S <- S + tau b_i H_i(S)`` at
    ``t + cn_i tau``, ``H_i = f`` (drift, ``A[i, i] == 0``) or ``g`` (kick). ``f, g`` are the half-field
    wrappers of SeparableDynamics, so no x/y split is needed. The substep inputs are ``X<i>``; each
    ``H_i`` does not read the components its substep moves, so a substep is undone exactly by
    ``S - tau b_i H_i(S)`` (``inverse``)."""
    s = len(b)
    fn = ["f" if A[i, i] == 0.0 else "g" for i in range(s)]
    fwd: list = [Copy("xn", "x")]
    for i in range(s):
        fwd += [Field("xn", _t(cn[i]), "d", fn[i]), Stage("xn", "xn", ((float(b[i]), "d"),))]
    rec: list = [Copy("X0", "x")]
    for i in range(s - 1):  # the last field value is not needed
        rec += [Field(f"X{i}", _t(cn[i]), "d", fn[i]), Stage(f"X{i + 1}", f"X{i}", ((float(b[i]), "d"),))]
    rev: list = [Copy("z", "lam"), Zero("gc", "m")]
    for i in range(s - 1, -1, -1):
        h = ((float(b[i]), "vx"),)
        rev += [
            Vjp(f"X{i}", _t(cn[i]), "z", "vx", "vc", "vp", fn[i]),
            Stage("z", "z", h),
            Stage("gc", "gc", ((float(b[i]), "vc"),), "m"),
            Stage("gp", "gp", ((float(b[i]), "vp"),), "q"),
        ]
    inv: list = [Copy("x", "xn")]
    for i in range(s - 1, -1, -1):
        inv += [Field("x", _t(cn[i]), "d", fn[i]), Undo("x", "x", float(b[i]), "d"), Copy(f"X{i}", "x")]
    return StepDescription(kind, tuple(fwd), tuple(rec), tuple(rev), tuple(inv), homes={"d": "k0", "vx": "kb0"})


@functools.lru_cache(maxsize=None)
def _describe_key(key):
    import numpy as np

    kind, A, b, cn = key
    b_ = np.frombuffer(b)
    s = b_.shape[0]
    return describe(kind, np.frombuffer(A).reshape(s, s), b_, np.frombuffer(cn))


def describe_method(method) -> StepDescription:
    """:func:`describe` of a method object (memoised on its tableau)."""
    return _describe_key(method.cache_key)


# -- scalar renderer -------------------------------------------------------------------------------
def scalar_lines(stmts, gen, names, t):
    """Straight-line lines of ``stmts`` for :class:`adjoint._fused._Gen` ``gen``.

    ``names``: the local names of the named vectors (``x``, ``c``, ``lam``, ``xn``, ``z``, ``gc``,
    ``gp``); the others are ``_<name>`` (``_<name>_`` for per-stage names) with the component
    index appended. A name may also be given as one array name (its accumulations become a loop)
    or None (its accumulations are left to the caller). ``gen`` renders the field and VJP statements
    (``dyn_f``, ``dyn_vjp``: traced splices or calls; :class:`Computed` when they are already
    evaluated) and gives the dimensions ``n, m, q``. ``t``: the expression of the step's start time.
    """
    dims = {"n": gen.n, "m": gen.m, "q": gen.q}

    def vec(nm, size="n"):
        if nm in names:
            return names[nm]
        base = f"_{nm}_" if nm[-1].isdigit() else f"_{nm}"
        return [f"{base}{i}" for i in range(dims[size])]

    def time(dt):
        return t if dt is None else f"({t} + {dt!r} * tau)"

    C = names["c"]
    lines: list = []
    for st in stmts:
        if isinstance(st, (Field, Vjp)) and st.fn != "f":
            raise TypeError(f"no scalar rendering of a second half-field: {st!r}")
        if isinstance(st, Field):
            lines += gen.dyn_f(vec(st.x), C, time(st.dt), vec(st.out))
        elif isinstance(st, Vjp):
            lines += gen.dyn_vjp(vec(st.x), C, time(st.dt), vec(st.cot), vec(st.ox), vec(st.oc, "m"), vec(st.op, "q"))
        elif isinstance(st, Stage):
            out, x = vec(st.out, st.size), vec(st.x, st.size)
            terms = [(a, vec(v, st.size)) for a, v in st.terms]
            for mm in range(dims[st.size]):
                e = x[mm]
                for a, v in terms:
                    e = f"({e} + tau * {a!r} * {v[mm]})"
                lines.append(f"{out[mm]} = {e}")
        elif isinstance(st, Undo):
            out, x, v = vec(st.out), vec(st.x), vec(st.v)
            lines += [f"{out[i]} = ({x[i]} - tau * {st.a!r} * {v[i]})" for i in range(gen.n)]
        elif isinstance(st, Combine):
            out, x = vec(st.out), vec(st.x)
            terms = [(a, vec(v)) for a, v in st.terms]
            for mm in range(gen.n):
                acc = "0.0"
                for a, v in terms:
                    acc = f"({acc} + {a!r} * {v[mm]})"
                lines.append(f"{out[mm]} = {x[mm]} + tau * {acc}")
        elif isinstance(st, Update):
            out, x, v = vec(st.out), vec(st.x), vec(st.v)
            lines += [f"{out[i]} = {x[i]} + tau * {v[i]}" for i in range(gen.n)]
        elif isinstance(st, StageCot):
            out, lam = vec(st.out), vec(st.lam)
            terms = [(a, vec(v)) for a, v in st.terms]
            for mm in range(gen.n):
                acc = f"{st.b!r} * {lam[mm]}"
                for a, v in terms:
                    acc = f"({acc} + {a!r} * {v[mm]})"
                lines.append(f"{out[mm]} = tau * ({acc})")
        elif isinstance(st, Copy):
            out, src = vec(st.out, st.size), vec(st.src, st.size)
            lines += [f"{o} = {s_}" for o, s_ in zip(out, src)]
        elif isinstance(st, Zero):
            lines += [f"{o} = 0.0" for o in vec(st.out, st.size)]
        elif isinstance(st, Scale):
            out, src = vec(st.out, st.size), vec(st.src, st.size)
            lines += [f"{o} = tau * {s_}" for o, s_ in zip(out, src)]
        elif isinstance(st, Acc):
            out, src, pre = vec(st.out, st.size), vec(st.src, st.size), "tau * " if st.tau else ""
            if out is None:  # accumulated by the caller (e.g. fused into the VJP's own loops)
                continue
            if isinstance(out, str):  # an array: one loop
                lines += [f"for _i in range({dims[st.size]}):", f"    {out}[_i] += {pre}{src}[_i]"]
                continue
            lines += [f"{o} += {pre}{s_}" for o, s_ in zip(out, src)]
        else:  # pragma: no cover - a statement without a scalar rendering
            raise TypeError(f"no scalar rendering of {st!r}")
    return lines


class Computed:
    """For :func:`scalar_lines` when the field and its VJP are already evaluated into locals (the tape
    backend emits them from the traced graph): a field statement then binds its output to ``u``, a
    VJP statement its state and control parts to ``vx``, ``vc`` (the parameter part is an array the
    caller names)."""

    def __init__(self, n, m, q, u=(), vx=(), vc=()):
        self.n, self.m, self.q = n, m, q
        self.u, self.vx, self.vc = list(u), list(vx), list(vc)

    def dyn_f(self, xs, cs, t, outs):
        return [f"{o} = {u}" for o, u in zip(outs, self.u) if o != u]

    def dyn_vjp(self, xs, cs, t, zs, ox, oc, op):
        return [f"{o} = {v}" for o, v in zip(ox, self.vx) if o != v] + [
            f"{o} = {v}" for o, v in zip(oc, self.vc) if o != v
        ]


# -- array renderer --------------------------------------------------------------------------------
#: the generated functions: name -> (parameters, the description's list, vector homes, sizes). A home
#: ``"?name"`` is a default that the description's ``homes`` may override. The kernels call the
#: functions with these signatures (``stages_adjoint`` and ``inverse_step`` only exist for
#: invertible methods, :mod:`adjoint.checkpointing._reversible`).
_STAGE_HOMES = {"kb": "stage_bar", "xb": "stage_xbar", "k": "stage_k", "X": "stage_xs"}
_FUNCTIONS = {
    "step": (
        "f, g, x, c, p, t, tau, A, b, cn, stage_k, stage_x, out",
        "forward",
        {"x": "x", "xn": "out", "X": "stage_x"},  # one stage input at a time
        {"n": "x.shape[0]"},
    ),
    "adjoint_step": (
        "f, vjp, g, gvjp, x, c, p, t, tau, A, b, cn, stage_k, stage_xs, stage_bar, stage_xbar, lam, tmp_c, tmp_p, "
        "out_z, out_c, acc_p",
        "adjoint",
        {"x": "x", "lam": "lam", "z": "out_z", "gc": "out_c", "gp": "acc_p", "?vc": "tmp_c", "?vp": "tmp_p"},
        {"n": "x.shape[0]", "m": "out_c.shape[0]", "q": "acc_p.shape[0]"},
    ),
    "stages_adjoint": (
        "vjp, gvjp, stage_xs, c, p, t, tau, A, b, cn, buf, lam, tmp_c, tmp_p, out_z, out_c, acc_p",
        "reverse",
        {"lam": "lam", "z": "out_z", "gc": "out_c", "gp": "acc_p", "?vc": "tmp_c", "?vp": "tmp_p", "vx": "buf"},
        {"n": "out_z.shape[0]", "m": "out_c.shape[0]", "q": "acc_p.shape[0]"},
    ),
    "inverse_step": (
        "f, g, xn, c, p, t, tau, A, b, cn, buf, stage_xs, out",
        "inverse",
        {"x": "out", "xn": "xn", "d": "buf"},
        {"n": "xn.shape[0]"},
    ),
}
_INVERTIBLE_ONLY = ("stages_adjoint", "inverse_step")
#: the parameters of ``step`` and ``adjoint_step``
STEP_PARAMS = _FUNCTIONS["step"][0]
ADJOINT_PARAMS = _FUNCTIONS["adjoint_step"][0]


def _elem(home, i):
    if home.endswith("]"):
        return f"{home[:-1]}, {i}]"
    return f"{home}[{i}]"


def _array_lines(stmts, homes, sizes):
    """Lines of ``stmts``, one loop over the components per statement; ``homes`` maps a vector name to
    the array (or ``array[row]``) holding it (a stage vector ``v{i}`` to ``array[_s]``). A
    :class:`Loop` becomes a loop over the stage index ``_s`` (``_ns`` stages); its bounds and tableau
    coefficients are read from ``A, b, cn`` at run time."""

    def h(nm):
        return homes(nm)

    def time(dt):
        if dt == CN_I:
            return "t + cn[_s] * tau"
        return "t" if dt is None else f"t + {dt!r} * tau"

    def loop(size, rhs_of, lhs_home, op="="):
        return [f"for _i in range({sizes[size]}):", f"    {_elem(lhs_home, '_i')} {op} {rhs_of('_i')}"]

    def terms(e, tt, i, tau):
        for a, v in tt:
            e = f"({e} + {'tau * ' if tau else ''}{a!r} * {_elem(h(v), i)})"
        return e

    def tab_loop(lhs_home, init, tab, tau, final):
        """``lhs = final(e)`` per component, ``e = init`` plus the :class:`Tab` terms in order."""
        coef, rng, skip = {
            "row": ("A[_s, _j]", "range(_s)", True),
            "col": ("A[_j, _s]", "range(_s + 1, _ns)", True),
            "b": ("b[_j]", "range(_ns)", False),
        }[tab.coef]
        v = _elem(h(tab.vec + "{j}"), "_i")
        add = [f"        _e = _e + {'tau * ' if tau else ''}{coef} * {v}"]
        if skip:  # zero coefficients of A are skipped, as the unrolled statements do
            add = [f"        if {coef} != 0.0:", "    " + add[0]]
        return (
            ["for _i in range(" + sizes["n"] + "):", f"    _e = {init}", f"    for _j in {rng}:"]
            + add
            + [f"    {_elem(lhs_home, '_i')} = {final}"]
        )

    lines: list = []
    for st in stmts:
        if isinstance(st, Loop):
            lines.append("for _s in range(_ns - 1, -1, -1):" if st.reverse else "for _s in range(_ns):")
            lines += ["    " + ln for ln in _array_lines(st.body, homes, sizes)]
        elif isinstance(st, NotLast):
            lines.append("if _s < _ns - 1:")
            lines += ["    " + ln for ln in _array_lines((st.stmt,), homes, sizes)]
        elif isinstance(st, Field):
            lines.append(f"{st.fn}({h(st.x)}, c, p, {time(st.dt)}, {h(st.out)})")
        elif isinstance(st, Vjp):
            args = ", ".join(h(v) for v in (st.cot, st.ox, st.oc, st.op))
            lines.append(f"{'vjp' if st.fn == 'f' else 'gvjp'}({h(st.x)}, c, p, {time(st.dt)}, {args})")
        elif isinstance(st, Stage) and isinstance(st.terms, Tab):
            lines += tab_loop(h(st.out), _elem(h(st.x), "_i"), st.terms, True, "_e")
        elif isinstance(st, Stage):
            lines += loop(st.size, lambda i, st=st: terms(_elem(h(st.x), i), st.terms, i, True), h(st.out))
        elif isinstance(st, Undo):
            rhs = lambda i, st=st: f"({_elem(h(st.x), i)} - tau * {st.a!r} * {_elem(h(st.v), i)})"  # noqa: E731
            lines += loop("n", rhs, h(st.out))
        elif isinstance(st, Combine) and isinstance(st.terms, Tab):
            x = _elem(h(st.x), "_i")
            lines += tab_loop(h(st.out), f"0.0 * {x}", st.terms, False, f"{x} + tau * _e")
        elif isinstance(st, Combine):
            # the sum starts from a zero of the state's type (real or complex)
            rhs = lambda i, st=st: (
                f"{_elem(h(st.x), i)} + tau * {terms(f'0.0 * {_elem(h(st.x), i)}', st.terms, i, False)}"
            )  # noqa: E501, E731
            lines += loop("n", rhs, h(st.out))
        elif isinstance(st, Update):
            lines += loop("n", lambda i, st=st: f"{_elem(h(st.x), i)} + tau * {_elem(h(st.v), i)}", h(st.out))
        elif isinstance(st, StageCot) and isinstance(st.terms, Tab):
            b_ = "b[_s]" if st.b == B_I else repr(st.b)
            lines += tab_loop(h(st.out), f"{b_} * {_elem(h(st.lam), '_i')}", st.terms, False, "tau * (_e)")
        elif isinstance(st, StageCot):
            rhs = lambda i, st=st: f"tau * ({terms(f'{st.b!r} * {_elem(h(st.lam), i)}', st.terms, i, False)})"  # noqa: E731
            lines += loop("n", rhs, h(st.out))
        elif isinstance(st, Copy):
            lines += loop(st.size, lambda i, st=st: _elem(h(st.src), i), h(st.out))
        elif isinstance(st, Zero):
            lines += loop(st.size, lambda i: "0.0", h(st.out))
        elif isinstance(st, Scale):
            lines += loop(st.size, lambda i, st=st: f"tau * {_elem(h(st.src), i)}", h(st.out))
        elif isinstance(st, Acc):
            pre = "tau * " if st.tau else ""
            lines += loop(st.size, lambda i, st=st, pre=pre: f"{pre}{_elem(h(st.src), i)}", h(st.out), "+=")
        else:  # pragma: no cover - a statement without an array rendering
            raise TypeError(f"no array rendering of {st!r}")
    return lines


def _homes(desc, fixed):
    """The home of each vector: the function's own (its parameters), else the description's
    sharing, else the function's default, else the stage arrays (a stage vector ``v{i}`` / ``v{j}``
    of a loop: the row ``_s`` / ``_j``)."""

    def home(nm):
        if nm in fixed:
            return fixed[nm]
        if nm in desc.homes:
            return home(desc.homes[nm])
        if "?" + nm in fixed:
            return fixed["?" + nm]
        for pre in ("kb", "xb", "k", "X"):
            idx = nm[len(pre) :]
            if nm.startswith(pre) and (idx.isdigit() or idx in ("{i}", "{j}")):
                if pre in fixed:
                    return fixed[pre]
                return f"{_STAGE_HOMES[pre]}[{ {'{i}': '_s', '{j}': '_j'}.get(idx, idx) }]"
        raise KeyError(f"no array home for vector {nm!r}")  # pragma: no cover

    return home


def array_source(desc: StepDescription) -> str:
    """Source of a module of njit functions rendered from ``desc`` (see ``_FUNCTIONS``).

    ``step`` writes ``x_{k+1}`` into ``out`` (no aliasing of ``x``); ``adjoint_step`` writes
    ``out_z = [d x_{k+1} / d x_k]^T lam``, ``out_c = [d x_{k+1} / d c_k]^T lam`` and adds
    ``[d x_{k+1} / d p]^T lam`` to ``acc_p``, from ``x_k`` alone (stages are recomputed). For an
    invertible method also ``inverse_step`` (``x_k`` into ``out`` and the stage inputs into
    ``stage_xs`` from ``xn = x_{k+1}``) and ``stages_adjoint`` (the adjoint step from those).
    """
    parts = ["# generated by adjoint.integrators._steps: do not edit", "from numba import njit", ""]
    for name, (params, which, fixed, sizes) in _FUNCTIONS.items():
        if desc.inverse is None and name in _INVERTIBLE_ONLY:
            continue
        stmts = desc.rolled(which)
        body = _array_lines(stmts, _homes(desc, fixed), sizes)
        if any(isinstance(st, Loop) for st in stmts):
            body = ["_ns = b.shape[0]"] + body
        parts += ["", '@njit(inline="always")', f"def {name}({params}):"] + ["    " + ln for ln in body] + [""]
    return "\n".join(parts)


_ARRAY_STEPS: dict = {}


def array_steps(method):
    """``(step, adjoint_step, inverse_step, stages_adjoint)``: the compiled functions of ``method``
    for the generic kernels, rendered from :func:`describe` (one module per tableau, through
    :mod:`adjoint._modules`); the last two are None for a method that is not invertible."""
    key = method.cache_key
    got = _ARRAY_STEPS.get(key)
    if got is None:
        from .. import _modules

        module = _modules.load("steps", _GEN_VERSION, array_source(describe_method(method)))
        got = tuple(getattr(module, nm, None) for nm in ("step", "adjoint_step", "inverse_step", "stages_adjoint"))
        _ARRAY_STEPS[key] = got
    return got
