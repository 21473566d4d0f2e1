"""``solve_adjoint``: value and exact discrete gradient of a control problem.

The way from the call to compiled code: :mod:`adjoint._validate` checks the arguments and compiles
the problem's functions, :mod:`adjoint._backends` chooses the backend, the schedule
(:mod:`adjoint.checkpointing`) runs its plan on it, and :mod:`adjoint._results` holds what comes back;
repeated store-all calls take the fast lane (:mod:`adjoint._lane`).
"""

from __future__ import annotations

import math
import time

import numpy as np

from ._backends import check_name as _check_backend
from ._backends import select as _select_backend
from ._lane import _all_finite, _install_lane, _Lane, _lane_key  # noqa: F401 - _Lane, _all_finite: tests
from ._problem import ControlProblem
from ._results import AdjointResult, Gradient, Stats
from ._sweep import Buffers, Grid, Sweep
from ._validate import (  # noqa: F401 - _materialize: tests
    _EULER,
    _materialize,
    _prepare,
    _raise_nonfinite,
    check_trajectory_size,
    raise_nonfinite_value,
    warn_long_sweep,
)
from .checkpointing import as_schedule

__all__ = ["solve_adjoint", "simulate", "evaluate", "AdjointResult", "Gradient", "Stats"]


def _forward(problem, params, controls, x0, method, backend, keep, with_backend=False):
    """``(value, trajectory or None)`` of one forward sweep on the selected backend (and the
    backend's name, with ``with_backend``)."""
    method = _EULER if method is None else method
    backend = _check_backend(backend)
    if getattr(problem, "observations", None) is not None:
        from ._observations import expand_observed
        from ._validate import resolve_dims

        problem, params, controls = expand_observed(
            problem, params, controls, resolve_dims(problem, params, controls)[0]
        )
    comp, p, C, x0a = _prepare(problem, params, controls, x0, method, backend)
    K, n = problem.steps, problem.state_dim
    if keep:
        check_trajectory_size(K, n, "simulate", "use adjoint.evaluate() (the value alone stores no states)")
    be = _select_backend(comp, method, None, K, n, C.shape[1], p.shape[0], backend, purpose="forward")
    traj = np.empty((K + 1, n)) if keep else _NO_TRAJ
    val, status = be.forward(x0a, C, p, problem.t_span[0], problem.tau, K, problem.t_span[1], traj, keep)
    if status:
        _raise_nonfinite(problem, status)
    raise_nonfinite_value(val)
    if with_backend:
        return float(val), (traj if keep else None), be.name
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
    arrays of the right shapes (or None) goes straight to that kernel, with a fraction of the
    Python work of a first call (``benchmarks/core.py`` measures it); any other argument takes the
    general path, with the same result bit for bit and the same errors.

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> from adjoint.problems import lotka_volterra as lv
    >>> prob = lv.make_problem(steps=1000)
    >>> res = adjoint.solve_adjoint(prob, params=lv.TRUE_PARAMS * 1.1)
    >>> res.grad.params.shape, res.stats.forward_steps
    ((4,), 1000)
    """
    lanes = problem._cache.lanes if not return_trajectory and type(problem) is ControlProblem else None
    if lanes:
        try:
            lane = lanes.get(_lane_key(method, checkpoint, backend))
        except (AttributeError, TypeError):  # not a method / an unhashable checkpoint: the general path says so
            lane = None
        if lane is not None:
            res = lane.run(problem, params, controls, x0)
            if res is not None:
                return res
    if getattr(problem, "observations", None) is not None:
        return _solve_observed(problem, params, controls, x0, method, checkpoint, return_trajectory, backend)
    method = _EULER if method is None else method
    checkpoint = as_schedule(checkpoint)
    backend = _check_backend(backend)
    comp, p, C, x0a = _prepare(problem, params, controls, x0, method, backend)
    A, b, cn = method.tableau_arrays()
    K = problem.steps
    n = problem.state_dim
    if return_trajectory:
        check_trajectory_size(K, n, "solve_adjoint", "pass return_trajectory=False (the gradient needs none)")
    warn_long_sweep(checkpoint.resolve_plan(K, n), K, n, "solve_adjoint")
    sweep = Sweep(
        functions=comp.functions(method.kind),
        grid=Grid(x0a, C, p, problem.t_span[0], problem.tau, K, problem.t_span[1], A, b, cn),
        buffers=Buffers(np.empty_like(C), np.empty_like(p), np.empty(n)),
        method=method,
        backend=_select_backend(comp, method, checkpoint, K, n, C.shape[1], p.shape[0], backend),
        want_trajectory=bool(return_trajectory),
    )
    # the first run of a (problem, method, schedule, backend) in this process is the one that compiles
    run_key = (method.cache_key, checkpoint, sweep.backend.name)
    compiled_now = run_key not in comp.runs
    comp.runs.add(run_key)
    t_start = time.perf_counter()
    out = checkpoint._run(sweep)
    elapsed = time.perf_counter() - t_start
    status = out.status
    gp, gC, gx0 = sweep.buffers.grad_p, sweep.buffers.grad_c, sweep.buffers.grad_x0
    if status:
        _raise_nonfinite(problem, status)
    if not math.isfinite(gp.sum() + gC.sum() + gx0.sum()):
        for nm, g in (("params", gp), ("controls", gC), ("x0", gx0)):
            if not np.all(np.isfinite(g)):
                raise FloatingPointError(
                    f"the gradient with respect to {nm} is non-finite although the state "
                    "stayed finite; check the vjp and cost gradients for overflow"
                )
    raise_nonfinite_value(out.value)  # after the gradient: a gradient that overflows is named first
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
        notes=comp.trust_notes.get((n, C.shape[1], p.shape[0]), ()),
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


def _solve_observed(problem, params, controls, x0, method, checkpoint, return_trajectory, backend):
    """``solve_adjoint`` of a problem with observations: the derived problem whose controls carry
    the data (``adjoint._observations``), its gradient with respect to the data dropped."""
    from dataclasses import replace

    from ._observations import expand_observed
    from ._validate import resolve_dims

    m = resolve_dims(problem, params, controls)[0]
    base, params, C = expand_observed(problem, params, controls, m)
    res = solve_adjoint(
        base,
        params=params,
        controls=C,
        x0=x0,
        method=method,
        checkpoint=checkpoint,
        return_trajectory=return_trajectory,
        backend=backend,
    )
    g = res.grad
    return replace(res, grad=Gradient(g.params, np.ascontiguousarray(g.controls[:, :m]), g.x0))
