"""The results of :func:`adjoint.solve_adjoint`: the value, the gradient, and what it cost."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["AdjointResult", "Gradient", "Stats"]


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
    notes : tuple of str
        What the engine decided that a user should know, e.g. that the trace of a hand-written numba
        function did not reproduce it (a random draw or a string computation frozen into a constant),
        so the compiled function was called instead. Empty normally.
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
    notes: tuple[str, ...] = ()


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
    times: np.ndarray | None
