"""``solve_adjoint``: value and exact discrete gradient of a control problem."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from . import _kernels as kern
from . import _traced
from ._backends import check_name as _check_backend
from ._backends import select as _select_backend
from ._fused import fused_kernels, traced_parts
from ._problem import ControlProblem, Cost, Dynamics, _arity, as_float_vector
from ._separable import SeparableDynamics
from ._sweep import Sweep
from .checkpointing import MemoryBudget, Schedule, StoreAll
from .checkpointing import auto as _auto_schedule
from .checkpointing._schedules import _give_traj, _take_traj
from .integrators import Euler, Method

__all__ = ["solve_adjoint", "simulate", "evaluate", "AdjointResult", "Gradient", "Stats"]


@dataclass(frozen=True)
class Gradient:
    """Gradient of the objective.

    Attributes
    ----------
    params : ndarray, shape (param_dim,)
    controls : ndarray, shape (steps, control_dim)
    x0 : ndarray, shape (state_dim,)
    """

    params: np.ndarray
    controls: np.ndarray
    x0: np.ndarray


@dataclass(frozen=True)
class Stats:
    """What a gradient cost.

    Attributes
    ----------
    forward_steps : int
        Step evaluations outside adjoint steps (``K`` for store-all).
    adjoint_steps : int
        Adjoint steps (always ``K``).
    peak_stored_states : int
        States held at once for the backward sweep, ``x0`` included.
    peak_stored_bytes : int
        Bytes of those states.
    snapshots : int
        Snapshot slots the schedule was allowed (``K`` for store-all).
    recomputation_ratio : float
        ``forward_steps / K``.
    schedule : str
        The schedule actually used.
    seconds : float
        Wall time of the compiled sweeps (validation excluded; compilation included on a first call).
    compile_seconds : float
        On the first call for this problem, method and schedule in the process: its wall time
        (compilation or loading from the disk cache, plus one sweep); 0.0 afterwards.
    reversal_drift : float or None
        ``adjoint.Reversible`` only: ``|x0_rebuilt - x0| / |x0|`` after the backward sweep rebuilt the
        states with the inverse step (None for other schedules).
    fallback : str or None
        Set when ``adjoint.Reversible`` rejected its gradient (drift above ``max_drift``) and recomputed
        it with a checkpointing schedule; says which and why. None otherwise.
    backend : str
        The backend that ran the sweeps: ``"scalar"`` (generated kernels with the state in scalar
        locals), ``"tape"`` (a generated kernel with a tape of forward intermediates) or
        ``"generic"`` (kernels calling the compiled user functions); see ``solve_adjoint(backend=...)``.
    """

    forward_steps: int
    adjoint_steps: int
    peak_stored_states: int
    peak_stored_bytes: int
    snapshots: int
    recomputation_ratio: float
    schedule: str
    seconds: float
    compile_seconds: float
    reversal_drift: float | None = None
    fallback: str | None = None
    backend: str = "generic"


@dataclass(frozen=True)
class AdjointResult:
    """Result of :func:`solve_adjoint`.

    Attributes
    ----------
    value : float
        ``J = L(x_K, p) + tau * sum_k l(x_k, c_k, p, t_k)``.
    grad : Gradient
        Exact derivative of ``value`` (of the discrete computation).
    x_final : ndarray, shape (state_dim,)
    stats : Stats
    trajectory : ndarray, shape (steps + 1, state_dim), or None
        The states ``x_0 ... x_K`` when ``return_trajectory=True``.
    times : ndarray, shape (steps + 1,), or None
        The grid ``t_0 ... t_K`` when ``return_trajectory=True`` (not built otherwise, so memory
        stays independent of ``steps`` with checkpointing).
    """

    value: float
    grad: Gradient
    x_final: np.ndarray
    stats: Stats
    trajectory: np.ndarray | None
    times: np.ndarray


class _Compiled:
    """The compiled functions of a problem for given (control_dim, param_dim)."""

    def __init__(self, dynamics, terminal, running):
        self.dynamics = dynamics
        self.terminal = terminal
        self.running = running
        self.f = dynamics.f
        self.vjp = dynamics.vjp
        # separable dynamics (leapfrog) bring a second function pair; others repeat the first
        self.g = getattr(dynamics, "g", dynamics.f)
        self.gvjp = getattr(dynamics, "gvjp", dynamics.vjp)
        self.has_term = terminal is not None
        self.has_run = running is not None
        self.tv, self.tg = (
            (terminal.value, terminal.grad) if terminal is not None else (kern.zero_value, kern.zero_grad)
        )
        self.rv, self.rg = (running.value, running.grad) if running is not None else (kern.zero_value, kern.zero_grad)
        # a running cost with a combined value_and_grad: the backward sweeps call it once per step
        # (the kernels take its return value as the cost value; see kern.running_adjoint)
        if running is not None and getattr(running, "value_and_grad", None) is not None:
            self.rg = running.value_and_grad


_EULER = Euler()  # the default method (one instance: its cache_key is computed once)


def _wrap_cost_fn(fn):
    if _arity(fn) == 2:

        def wrapped(x, c, p, t):
            return fn(x, p)

        wrapped.__name__ = getattr(fn, "__name__", "cost")
        return wrapped
    return fn


def _materialize(problem: ControlProblem, control_dim: int, param_dim: int) -> _Compiled:
    key = (control_dim, param_dim)
    got = problem._compiled.get(key)
    if got is not None:
        return got
    from . import ad  # tracing AD, for plain-function dynamics and costs

    def traced(label, build, *args):
        try:
            return build(*args)
        except ad.TraceError as exc:
            raise ad.TraceError(
                f"tracing `{label}` (a plain function, differentiated by adjoint.ad) failed: {exc}"
            ) from None

    n = problem.state_dim
    dyn = problem.dynamics
    if not isinstance(dyn, Dynamics):
        dyn = traced("dynamics", _traced.vector_field, dyn, n, control_dim, param_dim)
    costs = []
    for nm, cst, cdim in (
        ("terminal_cost", problem.terminal_cost, 0),
        ("running_cost", problem.running_cost, control_dim),
    ):
        if cst is not None and not isinstance(cst, Cost):
            cst = traced(nm, _traced.cost, _wrap_cost_fn(cst), n, cdim, param_dim)
        costs.append(cst)
    comp = _Compiled(dyn, costs[0], costs[1])
    problem._compiled[key] = comp
    return comp


def _numba_error_summary(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    msg = [m for m in msg if m.strip()]
    return " | ".join(msg[:6])[:800]


def _call_user(label, fn, args, fix, interpreted=frozenset()):
    fn = getattr(fn, "_adjoint_reference", fn)  # generated kernels: their numpy reference (no compile)
    if fn in interpreted:
        fn = fn.py_func  # see _interpretable
    try:
        return fn(*args)
    except Exception as exc:  # numba typing errors, wrong signatures, user exceptions
        from numba.core.errors import NumbaError

        kind = "could not be compiled by numba" if isinstance(exc, NumbaError) else "raised an error"
        raise TypeError(
            f"{label} {kind} when called with float64 arrays of the problem's shapes: "
            f"{type(exc).__name__}: {_numba_error_summary(exc)}. {fix}"
        ) from None


def _interpretable(comp: _Compiled, method, n, m, q) -> frozenset:
    """The user's numba functions that no kernel of this method will call compiled.

    A fused kernel runs the traced code of the dynamics (and of every traceable cost) instead of
    calling the user's functions, so compiling those functions just to check them costs a fresh
    process about 0.1-0.3 s each for nothing. They are checked through their ``py_func`` (the same
    code run by Python); when that raises, the check is redone with the compiled functions, whose
    verdict stands.
    """
    if fused_kernels(comp, method, n, m, q) is None:
        return frozenset()
    dyn = comp.dynamics
    td, term, run = traced_parts(comp, n, m, q)  # as the fused kernels traced them
    out = []
    if not isinstance(dyn, SeparableDynamics) and td is not None:
        out += [dyn.f, dyn.vjp]
    for cst, tr in ((comp.terminal, term), (comp.running, run)):
        if tr is not None:
            out += [cst.value, cst.grad, getattr(cst, "value_and_grad", None)]
    return frozenset(f for f in out if f is not None and callable(getattr(f, "py_func", None)))


def _check_user_functions(problem, comp: _Compiled, method, x0, c0, p, interpreted=frozenset()):
    """Call each user function once, outside the kernels, so errors name the function."""
    key = (comp.dynamics.f, c0.shape[0], p.shape[0], method.kind)
    if key + (not interpreted,) in problem._checked:
        return
    try:
        _check_calls(problem, comp, method, x0, c0, p, interpreted)
    except (TypeError, ValueError):
        if not interpreted:
            raise
        _check_calls(problem, comp, method, x0, c0, p, frozenset())  # the compiled functions decide
        interpreted = frozenset()
    # keyed by whether the compiled functions were checked: a check of their traced code (through
    # py_func) does not clear them for the generic backend
    problem._checked.add(key + (False,))
    if not interpreted:
        problem._checked.add(key + (True,))


def _check_calls(problem, comp: _Compiled, method, x0, c0, p, interpreted):
    n = x0.shape[0]
    m = c0.shape[0]
    npar = p.shape[0]
    t0 = problem.t_span[0]
    if method.kind == kern.KIND_LEAPFROG or isinstance(comp.dynamics, SeparableDynamics):
        if not isinstance(comp.dynamics, SeparableDynamics):
            raise TypeError(
                f"`method` {method!r} needs separable dynamics x' = u(y), y' = v(x): build the problem "
                "with adjoint.SeparableDynamics(u, vjp_u, v, vjp_v, x_dim, y_dim, ...); got "
                f"{comp.dynamics!r}"
            )
        comp.dynamics._check(_call_user, method.kind, method, x0, c0, p, t0)  # u, vjp_u on y; v, vjp_v on x
    what = "the map f(x, c, p, t, out)" if method.kind == kern.KIND_MAP else "the vector field f(x, c, p, t, out)"
    out = np.full(n, np.nan)
    _call_user(
        f"`dynamics.f` ({what})",
        comp.f,
        (x0, c0, p, t0, out),
        f"It must write u(x, c, p, t) into `out` of shape ({n},) using operations numba supports.",
        interpreted,
    )
    if not np.all(np.isfinite(out)):
        raise ValueError(
            f"`dynamics.f` left entries of `out` unset or non-finite at x0 (got {out}); it must write all {n} entries"
        )
    z = np.ones(n)
    ox, oc, op = np.full(n, np.nan), np.full(m, np.nan), np.full(npar, np.nan)
    _call_user(
        "`dynamics.vjp` (vjp(x, c, p, t, z, out_x, out_c, out_p))",
        comp.vjp,
        (x0, c0, p, t0, z, ox, oc, op),
        f"It must write [d_x u]^T z, [d_c u]^T z, [d_p u]^T z into out_x ({n},), out_c ({m},), out_p ({npar},).",
        interpreted,
    )
    for nm, arr in (("out_x", ox), ("out_c", oc), ("out_p", op)):
        if not np.all(np.isfinite(arr)):
            raise ValueError(
                f"`dynamics.vjp` left entries of `{nm}` unset or non-finite at x0 (got {arr}); "
                "it must overwrite every entry (write 0.0 where the derivative is zero)"
            )
    cempty = np.zeros(0)
    run_grad = comp.running.grad if comp.has_run else comp.rg
    for label, has, v, g, c in (
        ("terminal_cost", comp.has_term, comp.tv, comp.tg, cempty),
        ("running_cost", comp.has_run, comp.rv, run_grad, c0),
    ):
        if not has:
            continue
        val = _call_user(
            f"`{label}.value` (value(x, c, p, t) -> float)", v, (x0, c, p, t0), "It must return a float.", interpreted
        )
        try:
            float(val)
        except (TypeError, ValueError):
            raise TypeError(f"`{label}.value` must return a float; got {type(val).__name__}") from None
        gx, gc, gp = np.full(n, np.nan), np.full(c.shape[0], np.nan), np.full(npar, np.nan)
        _call_user(
            f"`{label}.grad` (grad(x, c, p, t, out_x, out_c, out_p))",
            g,
            (x0, c, p, t0, gx, gc, gp),
            f"It must write the partial gradients into out_x ({n},), out_c ({c.shape[0]},), out_p ({npar},).",
            interpreted,
        )
        for nm, arr in (("out_x", gx), ("out_c", gc), ("out_p", gp)):
            if not np.all(np.isfinite(arr)):
                raise ValueError(
                    f"`{label}.grad` left entries of `{nm}` unset or non-finite (got {arr}); "
                    "it must overwrite every entry"
                )
        vg = getattr(comp.running if label == "running_cost" else comp.terminal, "value_and_grad", None)
        if vg is not None:
            _check_value_and_grad(label, vg, (x0, c, p, t0), float(val), (gx, gc, gp), interpreted)


def _check_value_and_grad(label, vg, args, val, grads, interpreted=frozenset()):
    """``value_and_grad`` must agree with ``value`` and ``grad`` (it replaces both in the sweeps)."""
    n_out = [a.shape[0] for a in grads]
    outs = tuple(np.full(k, np.nan) for k in n_out)
    what = f"`{label}.value_and_grad` (value_and_grad(x, c, p, t, out_x, out_c, out_p) -> float)"
    got = _call_user(
        what, vg, args + outs, "It must write the gradients like `grad` and return the value.", interpreted
    )
    try:
        got = float(got)
    except (TypeError, ValueError):
        raise TypeError(f"`{label}.value_and_grad` must return the cost value as a float; got {got!r}") from None
    if not abs(got - val) <= 1e-12 * max(1.0, abs(val)):
        raise ValueError(
            f"`{label}.value_and_grad` returned {got!r} but `{label}.value` returned {val!r} at x0; "
            "they must compute the same value"
        )
    for nm, a, b in zip(("out_x", "out_c", "out_p"), outs, grads):
        if not np.allclose(a, b, rtol=1e-12, atol=1e-300):
            raise ValueError(
                f"`{label}.value_and_grad` wrote {nm} = {a} but `{label}.grad` wrote {b} at x0; "
                "they must compute the same gradient"
            )


def _prepare(problem, params, controls, x0, method, backend="auto"):
    if not isinstance(problem, ControlProblem):
        raise TypeError(f"`problem` must be an adjoint.ControlProblem; got {type(problem).__name__}")
    if not isinstance(method, Method):
        raise TypeError(f"`method` must be an adjoint method such as adjoint.Euler() or adjoint.RK4(); got {method!r}")
    K = problem.steps
    # dimensions
    if isinstance(problem.dynamics, Dynamics):
        pdim, cdim = problem.dynamics.param_dim, problem.dynamics.control_dim
    else:
        pdim = problem.param_dim if problem.param_dim is not None else (0 if params is None else np.size(params))
        if problem.control_dim is not None:
            cdim = problem.control_dim
        elif controls is None:
            cdim = 0
        else:
            ca = np.asarray(controls)
            cdim = ca.shape[1] if ca.ndim == 2 else (1 if ca.ndim == 1 else -1)
    if params is None:
        if pdim:
            raise ValueError(f"`params` is required: the dynamics has param_dim={pdim}")
        p = np.zeros(0)
    else:
        p = as_float_vector("params", params, pdim)
    if controls is None:
        if cdim:
            raise ValueError(
                f"`controls` is required: the dynamics has control_dim={cdim}; pass an array of shape ({K}, {cdim})"
            )
        C = np.zeros((K, 0))
    elif (
        type(controls) is np.ndarray
        and controls.dtype == np.float64
        and controls.shape == (K, cdim)
        and controls.flags.c_contiguous
    ):  # the common case, validated without copies
        C = controls
        if not math.isfinite(C.sum()) and not np.all(np.isfinite(C)):
            k = int(np.argwhere(~np.isfinite(C))[0][0])
            raise ValueError(f"`controls` must be finite; row {k} is {C[k]}")
    else:
        if np.iscomplexobj(controls):
            raise TypeError("`controls` must be real (float64); got a complex array")
        try:
            C = np.asarray(controls, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"`controls` must be an array of real numbers of shape ({K}, {cdim})") from None
        if C.ndim == 1 and cdim == 1 and C.shape[0] == K:
            C = C.reshape(K, 1)
        if C.shape != (K, cdim):
            raise ValueError(f"`controls` must have shape (steps, control_dim) = ({K}, {cdim}); got shape {C.shape}")
        if not math.isfinite(C.sum()) and not np.all(np.isfinite(C)):  # sum: one pass, no temporary
            k = int(np.argwhere(~np.isfinite(C))[0][0])
            raise ValueError(f"`controls` must be finite; row {k} is {C[k]}")
        C = np.ascontiguousarray(C)
    # numba compiles a kernel per array mutability: read-only inputs are copied (x0 always is, below),
    # so one compiled specialisation serves every call
    if not p.flags.writeable:
        p = p.copy()
    if not C.flags.writeable:
        C = C.copy()
    x0a = problem.x0 if x0 is None else as_float_vector("x0", x0, problem.state_dim)
    comp = _materialize(problem, cdim, pdim)
    x0c = np.array(x0a)
    compiled = backend == "generic"  # the generic backend calls the compiled functions: check those
    if (comp.dynamics.f, cdim, p.shape[0], method.kind, compiled) not in problem._checked:
        c0 = np.ascontiguousarray(C[0]) if K > 0 else np.zeros(cdim)
        interpreted = frozenset() if compiled else _interpretable(comp, method, problem.state_dim, cdim, p.shape[0])
        _check_user_functions(problem, comp, method, x0c, c0, p, interpreted)
    return comp, p, C, x0c


def _raise_nonfinite(problem, status):
    k = status - 1
    t = problem.t_span[0] + (k + 1) * problem.tau
    raise FloatingPointError(
        f"the state became non-finite (NaN or inf) in step {k} (t = {t:.6g} -> output at step {k + 1}); "
        "the simulation diverged: reduce the step size (more `steps`), check `params`/`controls`, or use a "
        "higher-order method"
    )


def _forward(problem, params, controls, x0, method, backend, keep):
    """``(value, trajectory or None)`` of one forward sweep on the selected backend."""
    method = _EULER if method is None else method
    backend = _check_backend(backend)
    comp, p, C, x0a = _prepare(problem, params, controls, x0, method, backend)
    K, n = problem.steps, problem.state_dim
    be = _select_backend(comp, method, None, K, n, C.shape[1], p.shape[0], backend, purpose="forward")
    traj = np.empty((K + 1, n)) if keep else _NO_TRAJ
    val, status = be.forward(x0a, C, p, problem.t_span[0], problem.tau, K, traj, keep)
    if status:
        _raise_nonfinite(problem, status)
    return float(val), (traj if keep else None)


def evaluate(problem, *, params=None, controls=None, x0=None, method=None, backend=None) -> float:
    """The objective only (one forward sweep, nothing stored).

    Same arguments as :func:`solve_adjoint`. The running sum is taken in ascending k here, so the
    value can differ from ``solve_adjoint(...).value`` in the last bits.
    """
    return _forward(problem, params, controls, x0, method, backend, False)[0]


_NO_TRAJ = np.empty((1, 1))


def simulate(problem, *, params=None, controls=None, x0=None, method=None, backend=None):
    """Run the forward sweep only.

    Same arguments as :func:`solve_adjoint`.

    Returns
    -------
    value : float
        The objective.
    trajectory : ndarray, shape (steps + 1, state_dim)
    """
    return _forward(problem, params, controls, x0, method, backend, True)


# ------------------------------------------------------------------------------------------------
# The fast lane: repeated gradients of one problem (an optimiser's loop) skip the general path
# ------------------------------------------------------------------------------------------------
# After a first store-all run through a generated kernel (fused scalar sweep or tape kernel), the
# problem keeps a _Lane per (method, checkpoint): the kernel and everything the result needs. A
# later call whose arguments are float64 arrays of the right shapes (the common case in a loop)
# goes straight to the kernel; anything else -- or anything non-finite -- takes the general path,
# which validates and raises the usual errors. Measured on a 2-step pendulum: 17.6 us per call
# through the general path (validation, the Sweep record, dataclass results).

_F64 = np.dtype(np.float64)
_STATS_FIELDS = (
    "forward_steps",
    "adjoint_steps",
    "peak_stored_states",
    "peak_stored_bytes",
    "snapshots",
    "recomputation_ratio",
    "schedule",
    "seconds",
    "compile_seconds",
    "reversal_drift",
    "fallback",
    "backend",
)


def _frozen(cls, fields):
    """An instance of the frozen dataclass ``cls`` from a complete dict of its fields (about 4x
    cheaper than ``cls(**fields)``, whose generated __init__ sets each field by object.__setattr__)."""
    obj = object.__new__(cls)
    obj.__dict__.update(fields)
    return obj


def _lane_vector(v, size):
    """``v`` (or a writable copy) when it is a contiguous float64 vector of length ``size``, else None."""
    if type(v) is np.ndarray and v.dtype is _F64 and v.shape == (size,) and (size < 2 or v.strides[0] == 8):
        # a read-only array (e.g. problem.x0 passed back by an Objective) is copied: numba would
        # compile a second specialisation of the kernel for it (0.45 s in a fresh process)
        return v if v.flags.writeable else v.copy()
    return None


@njit(cache=True, nogil=True)
def _all_finite(a, b, c):
    """Whether the contiguous vectors ``a``, ``b`` and ``c`` are all finite.

    One compiled call (about 0.45 us plus 0.1 ns per entry: an OR-reduction that vectorises), and
    unlike a numpy reduction it neither overflows nor warns on inf/NaN. Matrices are passed as
    ``M.reshape(-1)`` views: a reshape inside compiled code tripled the cold compile time (0.36 s
    against 0.12 s here)."""
    bad = False
    for i in range(a.shape[0]):
        bad |= (a[i] - a[i]) != 0.0
    for i in range(b.shape[0]):
        bad |= (b[i] - b[i]) != 0.0
    for i in range(c.shape[0]):
        bad |= (c[i] - c[i]) != 0.0
    return not bad


_LANE_EMPTY = np.zeros(0)


class _Lane:
    __slots__ = ("kernel", "K", "n", "m", "q", "t0", "tau", "t_span", "x0", "C0", "P0", "stats")

    def __init__(self, problem, kernel, m, q, stats):
        self.kernel = kernel
        self.K, self.n, self.m, self.q = problem.steps, problem.state_dim, m, q
        self.t_span, self.x0 = problem.t_span, problem.x0
        self.t0, self.tau = problem.t_span[0], problem.tau
        self.C0, self.P0 = np.zeros((self.K, 0)), np.zeros(0)
        self.stats = stats  # the Stats fields of a store-all run, ``seconds`` updated per call

    def run(self, problem, params, controls, x0):
        """The result, or None when the call needs the general path."""
        K, n, m, q = self.K, self.n, self.m, self.q
        if problem.steps != K or problem.t_span is not self.t_span or problem.x0 is not self.x0:
            return None  # the problem object was modified
        if params is None:
            if q:
                return None
            p = self.P0
        else:
            p = _lane_vector(params, q)
            if p is None:
                return None
        if controls is None:
            if m:
                return None
            C = self.C0
        else:
            C = controls
            if not (type(C) is np.ndarray and C.dtype is _F64 and C.shape == (K, m) and C.flags.c_contiguous):
                return None
            if not C.flags.writeable:
                C = C.copy()
        if x0 is None:
            # a fresh writable copy (~0.1 us): problem.x0 is read-only, for which numba would compile
            # a second specialisation of the kernel, and a copy kept from an earlier call would not
            # see an x0 modified in place since
            x0a = problem.x0.copy()
        else:
            x0a = _lane_vector(x0, n)
            if x0a is None:
                return None
        if not _all_finite(p, C.reshape(-1), x0a):
            return None  # the general path names the argument
        traj, pooled = _take_traj((K + 1, n), False)
        gC, gp, gx = np.empty((K, m)), np.empty(q), np.empty(n)
        t_start = time.perf_counter()
        try:
            value, status = self.kernel(x0a, C, p, self.t0, self.tau, K, traj, gC, gp, gx)
            elapsed = time.perf_counter() - t_start
            x_final = traj[K].copy()
        finally:
            if pooled:
                _give_traj((K + 1, n), traj)
        if status:
            _raise_nonfinite(problem, status)
        if not _all_finite(gp, gC.reshape(-1), gx):
            return None  # the general path names the non-finite block
        st = dict(self.stats)
        st["seconds"] = elapsed
        return _frozen(
            AdjointResult,
            {
                "value": float(value),
                "grad": _frozen(Gradient, {"params": gp, "controls": gC, "x0": gx}),
                "x_final": x_final,
                "stats": _frozen(Stats, st),
                "trajectory": None,
                "times": None,
            },
        )


def _lane_key(method, checkpoint, backend):
    return (
        _EULER.cache_key if method is None else method.cache_key,
        "auto" if checkpoint is None or (type(checkpoint) is str and checkpoint == "auto") else checkpoint,
        "auto" if backend is None else backend,
    )


def _install_lane(problem, method, checkpoint, backend, sweep, out, stats):
    """Keep a _Lane for this (method, checkpoint, backend) when this run was a generated store-all kernel."""
    if sweep.backend.lane_kernel is None or out.extra or sweep.K != problem.steps:
        return
    if isinstance(checkpoint, StoreAll):
        pass
    elif isinstance(checkpoint, MemoryBudget) and type(checkpoint).resolve is MemoryBudget.resolve:
        if not isinstance(checkpoint.resolve(sweep.K, sweep.state_dim), StoreAll):
            return
    else:
        return
    try:
        key = _lane_key(method, checkpoint if checkpoint is not _auto_schedule() else "auto", backend)
        hash(key)
    except (AttributeError, TypeError):
        return
    fields = {f: getattr(stats, f) for f in _STATS_FIELDS}
    fields["compile_seconds"] = 0.0
    lanes = problem.__dict__.setdefault("_lanes", {})
    if len(lanes) >= 16:  # e.g. a fresh MemoryBudget(...) instance per call: keys that never repeat
        lanes.clear()
    lanes[key] = _Lane(problem, sweep.backend.lane_kernel, sweep.C.shape[1], sweep.p.shape[0], fields)
    _all_finite(_LANE_EMPTY, _LANE_EMPTY, _LANE_EMPTY)  # compiled (or loaded) in this first call, not the next


def solve_adjoint(
    problem,
    *,
    params=None,
    controls=None,
    x0=None,
    method=None,
    checkpoint="auto",
    return_trajectory=False,
    backend=None,
) -> AdjointResult:
    """Value and exact gradient of a control problem's discrete objective.

    Parameters
    ----------
    problem : ControlProblem
    params : array_like, shape (param_dim,), optional
        Shared parameters ``p`` (required when ``param_dim > 0``).
    controls : array_like, shape (steps, control_dim), optional
        Per-step controls ``c_k`` (required when ``control_dim > 0``).
    x0 : array_like, shape (state_dim,), optional
        Overrides ``problem.x0``.
    method : Method, default ``Euler()``
        ``Euler()``, ``Heun()``, ``RK4()``, ``RungeKutta(...)`` or ``DiscreteMap()``.
    checkpoint : Schedule or "auto", default ``"auto"``
        Which states the backward sweep keeps: ``StoreAll()``, ``Revolve(snapshots=s)``,
        ``Uniform(snapshots=s)``, ``MemoryBudget("200 MB")``. ``"auto"`` (or None) is
        ``MemoryBudget(DEFAULT_MEMORY_BUDGET)``: store every state if ``(K + 1) * state_dim * 8``
        bytes fit in 256 MB, else Revolve with as many snapshots as fit.
    return_trajectory : bool
        Also return ``x_0 ... x_K``.
    backend : {"auto", "scalar", "tape", "generic"}, default "auto"
        How the sweeps run (``Stats.backend`` says which ran). ``"auto"`` takes the fastest that
        applies: ``"scalar"`` (kernels generated from the traced step, the state in scalar locals;
        small traced or traceable fields, Euler / explicit Runge-Kutta / discrete maps), else
        ``"tape"`` (a generated store-all kernel storing expensive intermediates; larger fields built
        by ``vector_field``, Euler or discrete maps, within the memory budget), else ``"generic"``
        (kernels calling the compiled user functions: every method and schedule). All give the same
        bits; asking for one that cannot run raises a ValueError saying what it needs.

    Returns
    -------
    AdjointResult

    Notes
    -----
    The backward sweep is the discrete adjoint of the method (DESIGN.md section 1). For explicit
    Euler: ``z_K = grad L(x_K)``, ``z_k = z_{k+1} + tau [d_x u(x_k)]^T z_{k+1} + tau grad_x l(x_k)``,
    ``grad c_k = tau [d_c u(x_k)]^T z_{k+1} + tau grad_c l``, ``grad p = grad_p L + sum_k (...)``,
    ``grad x0 = z_0``.

    Repeated calls on one problem (an optimiser's loop) are cheap: after a first store-all run
    through a generated kernel, a call whose ``params``/``controls``/``x0`` are C-contiguous float64
    arrays of the right shapes (or None) goes straight to that kernel, about 5 us of Python per
    call instead of about 18 us; any other argument takes the general path, with the same result
    bit for bit and the same errors.

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> from adjoint.problems import lotka_volterra as lv
    >>> prob = lv.make_problem(steps=1000)
    >>> res = adjoint.solve_adjoint(prob, params=lv.TRUE_PARAMS * 1.1)
    >>> res.grad.params.shape, res.stats.forward_steps
    ((4,), 1000)
    """
    lanes = problem.__dict__.get("_lanes") if not return_trajectory and type(problem) is ControlProblem else None
    if lanes:
        try:
            lane = lanes.get(_lane_key(method, checkpoint, backend))
        except (AttributeError, TypeError):  # not a method / an unhashable checkpoint: the general path says so
            lane = None
        if lane is not None:
            res = lane.run(problem, params, controls, x0)
            if res is not None:
                return res
    method = _EULER if method is None else method
    if checkpoint is None or (isinstance(checkpoint, str) and checkpoint == "auto"):
        checkpoint = _auto_schedule()
    if not isinstance(checkpoint, Schedule):
        raise TypeError(
            '`checkpoint` must be "auto" or a schedule such as adjoint.StoreAll(), '
            f"adjoint.Revolve(snapshots=20), adjoint.MemoryBudget('200 MB'); got {checkpoint!r}"
        )
    backend = _check_backend(backend)
    comp, p, C, x0a = _prepare(problem, params, controls, x0, method, backend)
    A, b, cn = method.tableau_arrays()
    K = problem.steps
    n = problem.state_dim
    sweep = Sweep(
        kind=method.kind,
        f=comp.f,
        vjp=comp.vjp,
        g=comp.g,
        gvjp=comp.gvjp,
        rv=comp.rv,
        rg=comp.rg,
        has_run=comp.has_run,
        tv=comp.tv,
        tg=comp.tg,
        has_term=comp.has_term,
        x0=x0a,
        C=C,
        p=p,
        t0=problem.t_span[0],
        tau=problem.tau,
        K=K,
        A=A,
        b=b,
        cn=cn,
        method=method,
        grad_c=np.empty_like(C),
        grad_p=np.empty_like(p),
        grad_x0=np.empty(n),
        want_trajectory=bool(return_trajectory),
        backend=_select_backend(comp, method, checkpoint, K, n, C.shape[1], p.shape[0], backend),
    )
    # the first run of a (problem, method, schedule) in this process is the one that compiles
    seen = comp.__dict__.setdefault("_runs", set())
    run_key = (method.cache_key, checkpoint, sweep.backend.name)
    compiled_now = run_key not in seen
    seen.add(run_key)
    t_start = time.perf_counter()
    out = checkpoint._run(sweep)
    elapsed = time.perf_counter() - t_start
    status = out.status
    gp, gC, gx0 = sweep.grad_p, sweep.grad_c, sweep.grad_x0
    if status:
        _raise_nonfinite(problem, status)
    if not math.isfinite(gp.sum() + gC.sum() + gx0.sum()):
        for nm, g in (("params", gp), ("controls", gC), ("x0", gx0)):
            if not np.all(np.isfinite(g)):
                raise FloatingPointError(
                    f"the gradient with respect to {nm} is non-finite although the state "
                    "stayed finite; check the vjp and cost gradients for overflow"
                )
    traj = out.trajectory
    if return_trajectory and traj is None:
        _, traj = simulate(problem, params=p, controls=C, x0=x0a, method=method, backend=backend)
    extra = out.extra or {}
    stats = Stats(
        forward_steps=int(out.forward_steps),
        adjoint_steps=K,
        peak_stored_states=int(out.peak_stored_states),
        peak_stored_bytes=int(out.peak_stored_states) * n * 8,
        snapshots=int(out.snapshots),
        recomputation_ratio=out.forward_steps / K,
        schedule=out.schedule,
        seconds=elapsed,
        compile_seconds=elapsed if compiled_now else 0.0,
        backend=out.backend,
        **extra,
    )
    if not return_trajectory:
        _install_lane(problem, method, checkpoint, backend, sweep, out, stats)
    return AdjointResult(
        value=float(out.value),
        grad=Gradient(params=gp, controls=gC, x0=gx0),
        x_final=np.asarray(out.x_final, dtype=np.float64).copy(),
        stats=stats,
        trajectory=traj if return_trajectory else None,
        times=problem.times if return_trajectory else None,
    )
