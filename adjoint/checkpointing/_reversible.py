"""The reversible adjoint: rebuild the states backwards with the inverse step (O(1) memory).

For separable systems the leapfrog family has an exact algebraic inverse
(``adjoint.integrators._leapfrog``). The forward sweep keeps only the current state; the backward
sweep rebuilds ``x_k`` from ``x_{k+1}`` with the method's ``inverse_step`` and takes the adjoint step
there with its ``stages_adjoint`` (both generated from its description,
:mod:`adjoint.integrators._steps`). In floating point the rebuilt states drift from the true ones; the drift is
measured on ``x_0`` (the one state known exactly) and, above ``max_drift``, the gradient is thrown
away and recomputed with a checkpointing schedule.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass

import numpy as np
from numba import njit

from .. import _kernels as kern
from .._sweep import Sweep, SweepOutcome
from ._schedules import Resolved, Schedule, StoreAll

__all__ = ["Reversible", "gradient_reversible"]

_TINY = 1e-300
#: Memory allowed to the fallback schedule when the library offers no default budget (bytes).
FALLBACK_BYTES = 256 * 2**20


@njit
def gradient_reversible(
    step,
    inverse_step,
    stages_adjoint,
    f,
    vjp,
    g,
    gvjp,
    rv,
    rg,
    has_run,
    tv,
    tg,
    has_term,
    x0,
    C,
    p,
    t0,
    tau,
    K,
    t1,
    A,
    b,
    cn,
    x_final,
    grad_c,
    grad_p,
    grad_x0,
):
    """Forward sweep keeping one state, backward sweep rebuilding states with ``inverse_step``.

    Returns ``(value, status, drift)`` with ``drift = |x0_rebuilt - x0| / max(|x0|, tiny)`` (inf
    or nan when the rebuilt states overflow). The running cost is summed in descending k over the
    rebuilt states, as in ``gradient_store_all``: with zero drift both agree bit for bit.
    """
    n = x0.shape[0]
    s = b.shape[0]
    m = C.shape[1]
    npar = p.shape[0]
    stage_k = np.empty((s, n))
    stage_xs = np.empty((s, n))
    stage_x = np.empty(n)
    buf = np.empty(n)
    x = x0.copy()
    xn = np.empty(n)
    for k in range(K):
        step(f, g, x, C[k], p, t0 + k * tau, tau, A, b, cn, stage_k, stage_x, xn)
        if not kern._finite(xn):
            return 0.0, k + 1, 0.0
        for i in range(n):
            x[i] = xn[i]
    for i in range(n):
        x_final[i] = x[i]
    lam = np.empty(n)
    value = kern.terminal_seed(tv, tg, has_term, x, p, t1, lam, grad_p)
    z = np.empty(n)
    tmp_c = np.empty(m)
    tmp_p = np.empty(npar)
    gx = np.empty(n)
    run = 0.0
    for k in range(K - 1, -1, -1):
        t = t0 + k * tau
        inverse_step(f, g, x, C[k], p, t, tau, A, b, cn, buf, stage_xs, xn)
        stages_adjoint(vjp, gvjp, stage_xs, C[k], p, t, tau, A, b, cn, buf, lam, tmp_c, tmp_p, z, grad_c[k], grad_p)
        if has_run:
            run += kern.running_adjoint(rv, rg, xn, C[k], p, t, tau, gx, tmp_c, tmp_p, z, grad_c[k], grad_p)
        for i in range(n):
            lam[i] = z[i]
            x[i] = xn[i]
    for i in range(n):
        grad_x0[i] = lam[i]
    num = 0.0
    den = 0.0
    for i in range(n):
        num += (x[i] - x0[i]) ** 2
        den += x0[i] ** 2
    drift = math.sqrt(num) / max(math.sqrt(den), _TINY)
    return value + tau * run, 0, drift


def _default_fallback(sweep: Sweep):
    """Revolve under the default memory budget (``MemoryBudget()``: store-all when that fits).

    Returns ``(schedule, note)``.
    """
    ck = importlib.import_module("adjoint.checkpointing")  # the package that imports this module
    budget_cls = getattr(ck, "MemoryBudget", None)
    if budget_cls is not None:
        budget = budget_cls()
        sched = budget.resolve(sweep.grid.K, sweep.state_dim)  # store-all if it fits, else Revolve
        return sched, f"{sched!r} (chosen by the default {budget!r})"
    revolve = getattr(ck, "Revolve", None)
    if revolve is not None:
        snaps = int(max(2, min(sweep.grid.K + 1, FALLBACK_BYTES // (8 * sweep.state_dim))))
        sched = revolve(snapshots=snaps)
        return sched, f"{sched!r} ({FALLBACK_BYTES // 2**20} MiB budget)"
    return StoreAll(), "StoreAll() (Revolve is not available in this build)"


@dataclass(frozen=True)
class Reversible(Schedule):
    """Rebuild the states backwards with the method's exact inverse: O(1) memory.

    For :class:`adjoint.SeparableDynamics` integrated with :class:`adjoint.Leapfrog` or
    :class:`adjoint.VelocityVerlet`. The forward sweep keeps only the current state; the backward
    sweep runs ``x_k = step^{-1}(x_{k+1})`` (``y_k = y_{k+1} - tau v(x_{k+1})``,
    ``x_k = x_{k+1} - tau u(y_k)`` for leapfrog) and the adjoint step at ``x_k``.

    Parameters
    ----------
    max_drift : float or None, default 1e-8
        Largest accepted relative reversal drift ``|x0_rebuilt - x0| / |x0|``. Above it (or when the
        rebuilt states overflow) the gradient is recomputed with ``fallback`` and ``stats.fallback``
        says so. ``None`` accepts any drift (it is still reported in ``stats.reversal_drift``).
    fallback : Schedule, optional
        The schedule used to recompute a rejected gradient. Default: ``adjoint.Revolve`` under the
        default memory budget.

    Notes
    -----
    Memory: two states (the current one and ``x0``) whatever ``K``. Work: ``K`` steps forward and
    ``K`` inverse steps backward (``stats.forward_steps = 2K``); the adjoint step reuses the inverse
    step's substep states, so it evaluates no field. The gradient is exact for the computed forward
    trajectory up to the drift of the rebuilt one: with zero drift it equals ``StoreAll``'s bit for
    bit.

    Examples
    --------
    >>> import adjoint
    >>> adjoint.Reversible(max_drift=1e-10)
    Reversible(max_drift=1e-10, fallback=None)
    """

    max_drift: float | None = 1e-8
    fallback: Schedule | None = None

    def __post_init__(self):
        md = self.max_drift
        if md is not None:
            if (
                isinstance(md, bool)
                or not isinstance(md, (int, float, np.integer, np.floating))
                or not (float(md) >= 0.0)
            ):
                raise ValueError(f"`max_drift` must be a number >= 0 or None; got {md!r}")
            object.__setattr__(self, "max_drift", float(md))
        if self.fallback is not None and (
            not isinstance(self.fallback, Schedule) or isinstance(self.fallback, Reversible)
        ):
            raise TypeError(
                "`fallback` must be a checkpoint schedule such as adjoint.Revolve(snapshots=20) or "
                f"adjoint.StoreAll() (not Reversible); got {self.fallback!r}"
            )

    def resolve_plan(self, steps: int, state_dim: int) -> Resolved:
        return Resolved("reversible", "Reversible", 2)

    def _run(self, sweep: Sweep) -> SweepOutcome:
        if sweep.functions.kind != kern.KIND_LEAPFROG:
            raise TypeError(
                f"checkpoint=adjoint.Reversible() needs an invertible method; got method={sweep.method!r}. "
                "Use method=adjoint.Leapfrog() or adjoint.VelocityVerlet() with adjoint.SeparableDynamics, or "
                "a checkpointing schedule such as adjoint.StoreAll() or adjoint.Revolve(snapshots=20)."
            )
        K, n = sweep.grid.K, sweep.state_dim
        x_final = np.empty(n)
        # binds the user's functions (disk-cached when importable)
        value, status, drift = sweep.run(
            gradient_reversible, x_final, sweep.buffers.grad_c, sweep.buffers.grad_p, sweep.buffers.grad_x0
        )
        drift = float(drift)
        if status:
            return SweepOutcome(
                value=value,
                status=status,
                x_final=x_final,
                forward_steps=K,
                peak_stored_states=2,
                snapshots=2,
                schedule="Reversible",
                backend="generic",
            )
        if not math.isfinite(drift):
            drift = math.inf
        grads_ok = all(
            np.all(np.isfinite(a)) for a in (sweep.buffers.grad_c, sweep.buffers.grad_p, sweep.buffers.grad_x0)
        )
        if (self.max_drift is None or drift <= self.max_drift) and grads_ok:
            return SweepOutcome(
                value=value,
                status=0,
                x_final=x_final,
                forward_steps=2 * K,
                peak_stored_states=2,
                snapshots=2,
                schedule="Reversible",
                backend="generic",
                extra={"reversal_drift": drift},
            )
        # reject: recompute with a checkpointing schedule (it overwrites the gradient arrays)
        if self.fallback is not None:
            sched, note = self.fallback, repr(self.fallback)
        else:
            sched, note = _default_fallback(sweep)
        why = (
            f"reversal drift {drift:.3g} > max_drift {self.max_drift:.3g}"
            if grads_ok
            else f"non-finite reversible gradient (drift {drift:.3g})"
        )
        out = sched._run(sweep)
        extra = dict(out.extra or {})
        extra.update(
            reversal_drift=drift,
            fallback=f"{why}: gradient recomputed with {note}; the rejected reversible sweep cost "
            f"{2 * K} steps and {K} adjoint steps more (included in forward_steps)",
        )
        return SweepOutcome(
            value=out.value,
            status=out.status,
            x_final=out.x_final,
            forward_steps=out.forward_steps + 2 * K,
            peak_stored_states=max(2, out.peak_stored_states),
            snapshots=out.snapshots,
            schedule=out.schedule,
            trajectory=out.trajectory,
            backend=out.backend,
            extra=extra,
        )
