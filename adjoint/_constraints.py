"""Constraints of a control problem and their exact Jacobians by a block of cotangents.

A :class:`Terminal` constraint ``lower <= g(x_K, p) <= upper`` and a :class:`Path` constraint
``lower <= h(x_k, c_k, p, t_k) <= upper`` at the grid points ``k = 0, every, 2 every, ... < K`` are
given to ``ControlProblem(..., constraints=[...])``. :func:`constraint_jacobian` returns all their
values and their Jacobian with respect to the controls, the parameters and the initial state from
one forward sweep and one backward sweep that advances the ``r`` cotangents of all rows together
(``adjoint._kernels``: the block conventions), under any checkpointing schedule; the streamed plans
run the one executor of ``adjoint.checkpointing._streamed`` with the block's actions, and agree
with store-all bit for bit.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np

from ._problem import _arity, _is_dispatcher, _njit_user

__all__ = ["Terminal", "Path", "ConstraintJacobian", "constraint_jacobian"]


class _Constraint:
    kind = ""

    def __init__(self, fn, lower, upper, *, vjp, size, name):
        if not callable(fn):
            raise TypeError(f"the {self.kind} constraint function must be callable; got {type(fn).__name__}")
        self.name = name or getattr(getattr(fn, "py_func", fn), "__name__", self.kind)
        if vjp is None:  # a plain numpy function, traced
            if _is_dispatcher(fn):
                raise TypeError(
                    f"{self.kind} constraint {self.name!r}: a numba function needs its `vjp` (hand-written "
                    "contract: fn(x, c, p, t, out), vjp(x, c, p, t, w, out_x, out_c, out_p)) and `size`; or pass "
                    "a plain numpy function returning an array, which is traced"
                )
            self.fn, self.vjp, self.size = fn, None, size
        else:
            if size is None:
                raise TypeError(f"{self.kind} constraint {self.name!r}: a hand-written `vjp` needs `size` (rows)")
            self.fn = _njit_user("fn", fn, 5)
            self.vjp = _njit_user("vjp", vjp, 8)
            self.size = size
        if self.size is not None:
            if isinstance(self.size, (bool, np.bool_)) or not isinstance(self.size, (int, np.integer)) or self.size < 1:
                raise ValueError(f"`size` must be an integer >= 1; got {self.size!r}")
            self.size = int(self.size)
        if lower is None and upper is None:
            lower = upper = 0.0
        self.lower = _bound_array("lower", lower, -math.inf, self)
        self.upper = _bound_array("upper", upper, math.inf, self)

    def bounds(self, r: int):
        """``(lower, upper)`` broadcast to ``r`` rows, checked."""
        out = []
        for nm, b in (("lower", self.lower), ("upper", self.upper)):
            if b.size not in (1, r):
                raise ValueError(
                    f"`{nm}` of {self.kind} constraint {self.name!r} has {b.size} entries; the function returns {r}"
                )
            out.append(np.broadcast_to(b, (r,)).astype(np.float64))
        lo, hi = out
        if np.any(lo > hi):
            i = int(np.flatnonzero(lo > hi)[0])
            raise ValueError(f"{self.kind} constraint {self.name!r}: lower > upper in row {i} ({lo[i]} > {hi[i]})")
        return lo, hi

    def __repr__(self):
        return f"{type(self).__name__}({self.name})"


def _bound_array(nm, value, missing, con):
    if value is None:
        value = missing
    arr = np.atleast_1d(np.asarray(value, dtype=np.float64))
    if arr.ndim != 1:
        raise ValueError(f"`{nm}` of {con.kind} constraint {con.name!r} must be a number or a 1-D array")
    if np.any(np.isnan(arr)):
        raise ValueError(f"`{nm}` of {con.kind} constraint {con.name!r} contains NaN; use -inf / inf for no bound")
    return arr


class Terminal(_Constraint):
    """A constraint on the final state: ``lower <= g(x_K, p) <= upper``.

    Parameters
    ----------
    g : callable
        A plain numpy function ``g(x, p)`` (or ``g(x, c, p, t)``, called with an empty ``c`` and
        ``t = t1``) returning an array (m,), traced and differentiated by :mod:`adjoint.ad`; or a
        hand-written numba function ``g(x, c, p, t, out)`` with its ``vjp`` (below).
    lower, upper : float or array (m,), optional
        Bounds; ``-inf``/``inf`` for none. Rows with ``lower == upper`` are equalities. With neither
        given: ``g(x_K, p) = 0``.
    vjp : callable, optional
        For a hand-written ``g``: ``vjp(x, c, p, t, w, out_x, out_c, out_p)`` writes ``[d_x g]^T w``,
        ``[d_c g]^T w`` (length 0) and ``[d_p g]^T w`` (overwrites, like a dynamics' vjp).
    size : int, optional
        Rows ``m``; required with a hand-written ``vjp`` (a traced function's is read from its result).

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> reach = adjoint.Terminal(lambda x, p: x - np.array([1.0, 0.0]))   # x_K = (1, 0)
    >>> below = adjoint.Terminal(lambda x, p: x[0], upper=2.0)            # x_K[0] <= 2
    """

    kind = "terminal"

    def __init__(self, g, lower=None, upper=None, *, vjp=None, size=None, name=None):
        super().__init__(g, lower, upper, vjp=vjp, size=size, name=name)


class Path(_Constraint):
    """A constraint along the trajectory: ``lower <= h(x_k, c_k, p, t_k) <= upper`` at the grid points
    ``k = 0, every, 2 every, ... < K`` (the final state is constrained with :class:`Terminal`).

    Parameters
    ----------
    h : callable
        A plain numpy function ``h(x, c, p, t)`` returning an array (q,), traced; or a hand-written
        numba function ``h(x, c, p, t, out)`` with its ``vjp(x, c, p, t, w, out_x, out_c, out_p)``.
    lower, upper : float or array (q,), optional
        Bounds per row, the same at every grid point. With neither given: ``h = 0``.
    every : int, default 1
        Constrain every ``every``-th grid point.
    vjp, size : see :class:`Terminal`.

    Examples
    --------
    >>> import adjoint
    >>> limit = adjoint.Path(lambda x, c, p, t: x[0], upper=1.0 / 9.0)   # x_k[0] <= 1/9
    """

    kind = "path"

    def __init__(self, h, lower=None, upper=None, *, every=1, vjp=None, size=None, name=None):
        if isinstance(every, (bool, np.bool_)) or not isinstance(every, (int, np.integer)) or every < 1:
            raise ValueError(f"`every` must be an integer >= 1; got {every!r}")
        self.every = int(every)
        super().__init__(h, lower, upper, vjp=vjp, size=size, name=name)


def check_constraints(constraints) -> tuple:
    """The ``constraints=`` argument of a ControlProblem, as a tuple (checked)."""
    if constraints is None:
        return ()
    if isinstance(constraints, _Constraint):
        constraints = [constraints]
    try:
        items = tuple(constraints)
    except TypeError:
        raise TypeError(
            f"`constraints` must be a list of adjoint.Terminal / adjoint.Path; got {type(constraints).__name__}"
        ) from None
    for c in items:
        if not isinstance(c, _Constraint):
            raise TypeError(f"`constraints` entries must be adjoint.Terminal or adjoint.Path; got {c!r}")
    paths = [c for c in items if isinstance(c, Path)]
    if len({c.every for c in paths}) > 1:
        raise ValueError(
            f"all Path constraints of a problem must share `every`; got {sorted({c.every for c in paths})}. "
            "Constrain the coarser ones at the finer grid, or merge them."
        )
    for group in (paths, [c for c in items if isinstance(c, Terminal)]):
        if len(group) > 1 and any(c.vjp is not None for c in group):
            raise ValueError(
                f"several {group[0].kind} constraints with a hand-written vjp: give one {group[0].kind} "
                "constraint returning all rows (several plain numpy ones are merged automatically)"
            )
    return items


@dataclass(frozen=True)
class _Part:
    """One compiled group (all terminal or all path constraints): ``f(x, c, p, t, out)``,
    ``vjp(x, c, p, t, w, out_x, out_c, out_p)``, rows per evaluation and their bounds."""

    f: object
    vjp: object
    rows: int
    lower: np.ndarray
    upper: np.ndarray
    #: the traced graphs (``adjoint.ad.TracedDynamics``) of a plain-numpy group, for the scalar backend
    traced: object = None


def _compile_group(group, n, m, q):
    if not group:
        return None
    if group[0].vjp is not None:
        c = group[0]
        lo, hi = c.bounds(c.size)
        return _Part(c.fn, c.vjp, c.size, lo, hi)
    from . import ad

    is_terminal = group[0].kind == "terminal"
    fns = [c.fn for c in group]
    arities = [_arity(fn) for fn in fns]
    for c, a in zip(group, arities):
        ok = (2, 4, None) if is_terminal else (4, None)
        if a not in ok:
            want = "(x, p) or (x, c, p, t)" if is_terminal else "(x, c, p, t)"
            raise TypeError(f"{c.kind} constraint {c.name!r} must take {want}; it takes {a} arguments")

    def merged(x, c, p, t):
        outs = []
        for fn, a in zip(fns, arities):
            v = fn(x, p) if a == 2 else fn(x, c, p, t)
            outs.append(np.atleast_1d(v))
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    try:
        cf = ad.compile_vector(merged, n, 0 if is_terminal else m, q)
    except ad.TraceError as exc:
        names = ", ".join(repr(c.name) for c in group)
        raise ad.TraceError(f"tracing the {group[0].kind} constraint(s) {names} failed: {exc}") from None
    # the rows of each constraint, for its bounds: evaluated once by numpy (the trace above succeeded)
    sizes = []
    xs, cs, ps = np.zeros(n), np.zeros(0 if is_terminal else m), np.zeros(q)
    with np.errstate(all="ignore"):
        for fn, a in zip(fns, arities):
            sizes.append(int(np.size(fn(xs, ps) if a == 2 else fn(xs, cs, ps, 0.0))))
    rows = int(cf.traced.graph.output_shapes[0][0])
    assert rows == sum(sizes)
    los, his = zip(*(c.bounds(s) for c, s in zip(group, sizes)))
    return _Part(cf.f, cf.vjp, rows, np.concatenate(los), np.concatenate(his), cf.traced)


def compiled_constraints(problem, comp, m, q):
    """``(terminal part or None, path part or None, every)`` of a problem, compiled once per dims."""
    got = comp.constraint_parts
    if got is None:
        items = problem.constraints
        n = problem.state_dim
        terms = [c for c in items if isinstance(c, Terminal)]
        paths = [c for c in items if isinstance(c, Path)]
        for c in terms[:1] + paths[:1]:
            if c.vjp is not None:
                _check_hand_written(c, problem.x0, 0 if isinstance(c, Terminal) else m, q)
        term = _compile_group(terms, n, m, q)
        path = _compile_group(paths, n, m, q)
        got = comp.constraint_parts = (term, path, paths[0].every if paths else 0)
    return got


def _check_hand_written(c, x0, m, q):
    """A hand-written constraint once outside the kernels, on arrays of exactly its sizes: an index out
    of range or a function numba cannot compile is named here (like the problem's own functions)."""
    from ._bounds import probe_bounds
    from ._problem import call_user

    n, r = x0.shape[0], c.size
    x, cc, p, t = np.array(x0), np.zeros(m), np.zeros(q), 0.0
    label = f"{c.kind} constraint {c.name!r}"
    fix = f"Check it against the contract fn(x, c, p, t, out) with out of size={r} and its vjp (see adjoint.{type(c).__name__})."
    args_f = (x, cc, p, t, np.zeros(r))
    args_v = (x, cc, p, t, np.ones(r), np.zeros(n), np.zeros(m), np.zeros(q))
    probe_bounds(f"`{label}` fn", c.fn, "f", args_f, {"out": "size", "z": "size"})
    probe_bounds(f"`{label}` vjp", c.vjp, "vjp", args_v, {"out": "size", "z": "size"})
    call_user(f"the {label} fn", c.fn, args_f, fix)
    call_user(f"the {label} vjp", c.vjp, args_v, fix)


@dataclass(frozen=True)
class ConstraintJacobian:
    """The constraints' values, bounds and exact Jacobian (:func:`constraint_jacobian`).

    Rows: the terminal rows first (in the order of the problem's ``Terminal`` constraints), then for
    each path node ``t_k`` (``path_times``) the rows of the ``Path`` constraints.

    Attributes
    ----------
    values, lower, upper : ndarray (r,)
    controls : ndarray (r, steps, control_dim)
        ``d values / d controls``.
    params : ndarray (r, param_dim)
    x0 : ndarray (r, state_dim)
    terminal_rows : int
    path_rows : int
        Rows per path node.
    path_times : ndarray
        The times of the path nodes.
    schedule, backend : str
        The plan and the backend that ran.
    forward_steps : int
        Step evaluations outside the adjoint steps.
    seconds : float
    """

    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    controls: np.ndarray
    params: np.ndarray
    x0: np.ndarray
    terminal_rows: int
    path_rows: int
    path_times: np.ndarray
    schedule: str
    backend: str
    forward_steps: int
    seconds: float

    @property
    def max_violation(self) -> float:
        """``max(lower - values, values - upper, 0)`` over the rows."""
        if self.values.size == 0:
            return 0.0
        return float(max(0.0, np.max(self.lower - self.values), np.max(self.values - self.upper)))


def constraint_jacobian(problem, *, params=None, controls=None, x0=None, method=None, checkpoint="auto", backend=None):
    """Values and exact Jacobian of all the constraints of ``problem``.

    One forward sweep and one backward sweep carrying the cotangents of all rows together (a path
    row is advanced only over the steps before its grid point), under any checkpointing schedule
    (the Jacobian is bitwise the same for all of them). Same arguments as
    :func:`adjoint.solve_adjoint`. ``backend``: ``"auto"`` (default) runs a store-all plan of small
    traced dynamics and constraints on a generated kernel with the state and one row of the block in
    scalar locals (``"scalar"``), everything else on the generic kernels (``"generic"``); both give
    the same bits. ``ConstraintJacobian.backend`` says which ran.

    Returns
    -------
    ConstraintJacobian

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> prob = adjoint.ControlProblem(lambda x, c, p, t: np.array([x[1], c[0]]), [0.0, 0.0], (0.0, 1.0), 10,
    ...     running_cost=lambda x, c, p, t: c[0] ** 2, control_dim=1,
    ...     constraints=[adjoint.Terminal(lambda x, p: x - np.array([1.0, 0.0]))])
    >>> J = adjoint.constraint_jacobian(prob, controls=np.ones((10, 1)))
    >>> J.values.shape, J.controls.shape
    ((2,), (2, 10, 1))
    """
    from . import _kernels as kern
    from ._backends import GenericBackend
    from ._sweep import Buffers, Functions, Grid, Sweep
    from ._validate import _EULER, _prepare, _raise_nonfinite
    from .checkpointing import _streamed, as_schedule

    if not getattr(problem, "constraints", ()):
        raise ValueError(
            "the problem has no constraints: pass ControlProblem(..., constraints=[adjoint.Terminal(...)])"
        )
    method = _EULER if method is None else method
    checkpoint = as_schedule(checkpoint)
    comp, p, C, x0a = _prepare(problem, params, controls, x0, method, "generic")
    K, n, m, npar = problem.steps, problem.state_dim, C.shape[1], p.shape[0]
    term, path, every = compiled_constraints(problem, comp, m, npar)
    mT = term.rows if term is not None else 0
    qh = path.rows if path is not None else 0
    nodes = (K + every - 1) // every if path is not None else 0
    r = mT + qh * nodes
    lower = np.concatenate([term.lower if term else np.zeros(0)] + ([path.lower] * nodes if path else []))
    upper = np.concatenate([term.upper if term else np.zeros(0)] + ([path.upper] * nodes if path else []))
    A, b, cn = method.tableau_arrays()
    fs = Functions(
        method.kind,
        comp.f,
        comp.vjp,
        comp.g,
        comp.gvjp,
        path.f if path else kern.zero_vector,
        path.vjp if path else kern.zero_vector_vjp,
        every,
        term.f if term else kern.zero_vector,
        term.vjp if term else kern.zero_vector_vjp,
        mT,
    )
    jac_c = np.zeros((r, K, m))
    jac_p = np.empty((r, npar))
    jac_x0 = np.empty((r, n))
    vals = np.empty(r)
    sweep = Sweep(
        functions=fs,
        grid=Grid(x0a, C, p, problem.t_span[0], problem.tau, K, problem.t_span[1], A, b, cn),
        buffers=Buffers(jac_c, jac_p, jac_x0),
        method=method,
        backend=GenericBackend(comp, method),
    )
    plan = checkpoint.resolve_plan(K, n)
    if backend not in (None, "auto", "scalar", "generic"):
        raise ValueError(f'`backend` must be "auto", "scalar" or "generic"; got {backend!r}')
    kernels = None
    if plan.kind in ("store_all", "streamed") and backend != "generic":
        from ._fused import block_kernel

        kernels = block_kernel(comp, method, n, m, npar, term, path, every)
    if backend == "scalar" and kernels is None:
        raise ValueError(
            'backend="scalar" needs traced (plain numpy) dynamics and constraints of at most 64 states, Euler, '
            "explicit Runge-Kutta or a discrete map, and a store-all or streamed plan"
        )
    t0, t1 = problem.t_span
    t_start = time.perf_counter()
    if kernels is not None and plan.kind == "store_all":
        traj = np.empty((K + 1, n))
        status = kernels[0](x0a, C, p, t0, problem.tau, K, t1, traj, jac_c, jac_p, jac_x0, vals)
        fwd = K
    elif kernels is not None:
        counters = np.zeros(3, dtype=np.int64)
        _, status = kernels[1](
            x0a, C, p, t0, problem.tau, K, t1, plan.rule, plan.snapshots, np.full(n, np.nan), jac_c, jac_p,
            (jac_x0, vals), counters,
        )  # fmt: skip
        if counters[2]:  # pragma: no cover - planner bug
            raise RuntimeError("checkpoint planner stack overflow (please report)")
        fwd = int(counters[0])
    elif plan.kind == "store_all":
        status = sweep.run(kern.jacobian_store_all, np.empty((K + 1, n)), jac_c, jac_p, jac_x0, vals)
        fwd = K
    elif plan.kind == "streamed":
        counters = np.zeros(3, dtype=np.int64)
        _, status = sweep.run(
            _streamed.gradient_checkpointed,
            plan.rule,
            plan.snapshots,
            np.full(n, np.nan),
            jac_c,
            jac_p,
            (jac_x0, vals),
            counters,
            actions={k: getattr(kern, v) for k, v in kern.BLOCK_ACTIONS.items()},
        )
        if counters[2]:  # pragma: no cover - planner bug
            raise RuntimeError("checkpoint planner stack overflow (please report)")
        fwd = int(counters[0])
    else:
        raise ValueError(
            f"constraint Jacobians do not run the {plan.name} schedule ({plan.kind}); use "
            "adjoint.Revolve(snapshots=...) or StoreAll()"
        )
    elapsed = time.perf_counter() - t_start
    if status:
        _raise_nonfinite(problem, status)
    for nm, arr in (("values", vals), ("controls", jac_c), ("params", jac_p), ("x0", jac_x0)):
        if not np.all(np.isfinite(arr)):
            raise FloatingPointError(
                f"the constraint {'values are' if nm == 'values' else 'Jacobian with respect to ' + nm + ' is'} "
                "non-finite although the state stayed finite; check the constraint functions and their vjp"
            )
    return ConstraintJacobian(
        values=vals,
        lower=lower,
        upper=upper,
        controls=jac_c,
        params=jac_p,
        x0=jac_x0,
        terminal_rows=mT,
        path_rows=qh,
        path_times=problem.t_span[0] + problem.tau * np.arange(0, K, every) if path else np.zeros(0),
        schedule=plan.name,
        backend="scalar" if kernels is not None else "generic",
        forward_steps=fwd,
        seconds=elapsed,
    )
