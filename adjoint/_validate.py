"""Validation of ``solve_adjoint``'s arguments and the one-time checks of the user's functions.

:func:`_prepare` turns the arguments into float64 arrays of the problem's shapes (clear errors
naming the argument otherwise) and compiles the problem's functions for those dimensions
(:func:`_materialize`); the first call for a problem, method and dimensions calls every user function
once outside the kernels, so that an error names the function instead of surfacing as a numba
traceback.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np

from . import _kernels as kern
from . import _traced
from ._bounds import probe_bounds
from ._fused import fused_kernels, traced_parts
from ._problem import ControlProblem, Cost, Dynamics, _arity, as_float_vector, call_user
from ._separable import SeparableDynamics
from ._sweep import Functions
from .integrators import Euler, Method


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
        # memos of the generators and of solve_adjoint, per method and dimensions
        self.traced_parts: dict = {}  # adjoint._fused.traced_parts
        self.trust_notes: dict = {}  # traces not spliced, and why (adjoint._trust; Stats.notes)
        self.scalar_kernels: dict = {}  # adjoint._fused.fused_kernels
        self.tape_kernels: dict = {}  # adjoint._tape.tape_kernels
        self.runs: set = set()  # (method, schedule, backend) run once in this process (Stats.compile_seconds)
        self.constraint_parts = None  # adjoint._constraints.compiled_constraints

    def functions(self, kind: int) -> Functions:
        """The functions of a sweep with method code ``kind``."""
        return Functions(
            kind, self.f, self.vjp, self.g, self.gvjp, self.rv, self.rg, self.has_run, self.tv, self.tg, self.has_term
        )


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
    got = problem._cache.compiled.get(key)
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
    problem._cache.compiled[key] = comp
    return comp


def _call_user(label, fn, args, fix, interpreted=frozenset()):
    fn = getattr(fn, "_adjoint_reference", fn)  # generated kernels: their numpy reference (no compile)
    if fn in interpreted:
        fn = fn.py_func  # see _interpretable
    return call_user(label, fn, args, fix)


def _interpretable(comp: _Compiled, method, n, m, q) -> frozenset:
    """The user's numba functions that no kernel of this method will call compiled.

    A fused kernel runs the traced code of the dynamics (and of every traceable cost) instead of
    calling the user's functions, so compiling those functions just to check them would cost a fresh
    process a numba compile each for nothing. They are checked through their ``py_func`` (the same
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
    if key + (not interpreted,) in problem._cache.checked:
        return
    _probe_calls(comp, x0, c0, p, problem.t_span[0])
    try:
        _check_calls(problem, comp, method, x0, c0, p, interpreted)
    except (TypeError, ValueError):
        if not interpreted:
            raise
        _check_calls(problem, comp, method, x0, c0, p, frozenset())  # the compiled functions decide
        interpreted = frozenset()
    # keyed by whether the compiled functions were checked: a check of their traced code (through
    # py_func) does not clear them for the generic backend
    problem._cache.checked.add(key + (False,))
    if not interpreted:
        problem._cache.checked.add(key + (True,))


def _probe_calls(comp: _Compiled, x0, c0, p, t0):
    """Each user numba function once through its Python source on arrays of exactly the declared
    sizes: an index out of range raises IndexError here instead of corrupting memory in a kernel."""
    n, m, q = x0.shape[0], c0.shape[0], p.shape[0]
    dyn = comp.dynamics
    if not isinstance(dyn, SeparableDynamics):
        probe_bounds("`dynamics.f`", dyn.f, "f", (x0, c0, p, t0, np.zeros(n)))
        probe_bounds(
            "`dynamics.vjp`", dyn.vjp, "vjp", (x0, c0, p, t0, np.ones(n), np.zeros(n), np.zeros(m), np.zeros(q))
        )
    for label, has, cost, c in (
        ("terminal_cost", comp.has_term, comp.terminal, np.zeros(0)),
        ("running_cost", comp.has_run, comp.running, c0),
    ):
        if not has or cost is None:
            continue
        probe_bounds(f"`{label}.value`", cost.value, "value", (x0, c, p, t0))
        grads = (np.zeros(n), np.zeros(c.shape[0]), np.zeros(q))
        probe_bounds(f"`{label}.grad`", cost.grad, "grad", (x0, c, p, t0) + grads)
        vg = getattr(cost, "value_and_grad", None)
        if vg is not None:
            probe_bounds(f"`{label}.value_and_grad`", vg, "grad", (x0, c, p, t0) + grads)


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
            f"`dynamics.f` left entries of `out` unset or non-finite at x0 (got {out}); it must write all {n} entries, "
            f"finite at x0{_scale_hint(x0, p)}"
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
            val = float(val)
        except (TypeError, ValueError):
            raise TypeError(f"`{label}.value` must return a float; got {type(val).__name__}") from None
        if label == "running_cost" and not math.isfinite(val):  # l(x_0, c_0) is a term of the objective
            raise ValueError(
                f"`{label}.value` is {val} at x0: the cost is undefined or overflows at the initial state "
                f"(a log or sqrt of a negative number, a division by zero){_scale_hint(x0, p)}"
            )
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


def _scale_hint(x0, p) -> str:
    """A hint when the inputs are so large that squares or products overflow."""
    big = max([float(np.max(np.abs(a))) for a in (x0, p) if a.size] or [0.0])
    if big > 1e100:
        return f"; x0 and params have entries up to {big:.3g}, where squares and products overflow: rescale them"
    return ""


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
    if not (got == val or abs(got - val) <= 1e-12 * max(1.0, abs(val))):  # == : both inf
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


def resolve_dims(problem, params, controls):
    """``(control_dim, param_dim)`` of a call: the dynamics' own, the problem's declared ones, or the
    sizes of the given arrays (-1: controls of an impossible rank, reported by the caller)."""
    if isinstance(problem.dynamics, Dynamics):
        return problem.dynamics.control_dim, problem.dynamics.param_dim
    pdim = problem.param_dim if problem.param_dim is not None else (0 if params is None else np.size(params))
    if problem.control_dim is not None:
        cdim = problem.control_dim
    elif controls is None:
        cdim = 0
    else:
        ca = np.asarray(controls)
        cdim = ca.shape[1] if ca.ndim == 2 else (1 if ca.ndim == 1 else -1)
    return cdim, pdim


def _prepare(problem, params, controls, x0, method, backend="auto"):
    if not isinstance(problem, ControlProblem):
        raise TypeError(f"`problem` must be an adjoint.ControlProblem; got {type(problem).__name__}")
    if not isinstance(method, Method):
        raise TypeError(f"`method` must be an adjoint method such as adjoint.Euler() or adjoint.RK4(); got {method!r}")
    K = problem.steps
    cdim, pdim = resolve_dims(problem, params, controls)
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
    if (comp.dynamics.f, cdim, p.shape[0], method.kind, compiled) not in problem._cache.checked:
        c0 = np.ascontiguousarray(C[0]) if K > 0 else np.zeros(cdim)
        interpreted = frozenset() if compiled else _interpretable(comp, method, problem.state_dim, cdim, p.shape[0])
        _check_user_functions(problem, comp, method, x0c, c0, p, interpreted)
    return comp, p, C, x0c


def raise_nonfinite_value(value) -> None:
    """The state stayed finite but the objective is not: the costs returned NaN or inf."""
    if not math.isfinite(value):
        raise FloatingPointError(
            f"the objective is {value} although the state stayed finite: the terminal or running cost returned "
            "NaN or inf (a log or sqrt of a negative number, a division by zero, an overflow); check the costs "
            "at the states this run reached"
        )


def _raise_nonfinite(problem, status):
    k = status - 1
    t = problem.t_span[0] + (k + 1) * problem.tau
    raise FloatingPointError(
        f"the state became non-finite (NaN or inf) in step {k} (t = {t:.6g} -> output at step {k + 1}); "
        "the simulation diverged: reduce the step size (more `steps`), check `params`/`controls`, or use a "
        "higher-order method"
    )


# -- checks made before a long or large sweep starts -----------------------------------------------

#: a floor on the time of one step (forward or adjoint) per state component: the fastest generated
#: kernels run near it, so an estimate from it is a lower bound, never an alarm for nothing
SECONDS_PER_STEP_FLOOR = 2e-9
#: planned sweeps estimated at more than this get a warning before they start (compiled loops
#: cannot be interrupted with Ctrl-C)
WARN_SECONDS = 60.0


def _machine_memory() -> int | None:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_trajectory_size(K: int, n: int, fn_name: str, fix: str) -> None:
    """Raise before any work when a stored trajectory of ``K + 1`` states cannot fit in memory."""
    need = (K + 1) * n * 8
    mem = _machine_memory()
    if mem is not None and need > mem:
        raise MemoryError(
            f"{fn_name}: the trajectory of {K + 1} states of {n} floats needs {need / 1e9:.3g} GB, more than "
            f"this machine's memory ({mem / 1e9:.3g} GB); {fix}, or use fewer `steps`"
        )


def warn_long_sweep(resolved, K: int, n: int, fn_name: str) -> None:
    """Warn, before it starts, when the planned sweep takes more than about a minute even at the
    fastest kernels' speed: forward steps from the schedule's recomputation count, plus the adjoint."""
    from .checkpointing._plan import binomial_forward_steps
    from .checkpointing._streamed import RULE_BINOMIAL

    if K * n * 2 * SECONDS_PER_STEP_FLOOR < WARN_SECONDS:  # the cheap exit: even store-all is short
        return
    fwd = K
    if resolved.kind == "streamed" and resolved.rule == RULE_BINOMIAL and resolved.snapshots:
        fwd = binomial_forward_steps(K, min(int(resolved.snapshots), K))
    elif resolved.kind == "reversible":
        fwd = 2 * K  # the forward sweep and the reconstruction of the states backwards
    seconds = (fwd + K) * n * SECONDS_PER_STEP_FLOOR
    if seconds < WARN_SECONDS:
        return
    stored = K + 1 if resolved.kind == "store_all" else (resolved.snapshots or 1)
    warnings.warn(
        f"{fn_name}: the planned sweep runs {fwd:.3g} forward and {K:.3g} adjoint steps of a state of {n} "
        f"floats (schedule {resolved.name}, recomputation ratio {fwd / K:.2f}, {stored * n * 8 / 1e9:.3g} GB of "
        f"stored states): at least ~{seconds:.3g} s, and a compiled loop cannot be interrupted with Ctrl-C. "
        "Use fewer `steps` if this is not intended.",
        RuntimeWarning,
        stacklevel=3,
    )
