"""Checkpoint schedules as data.

Every schedule implements ``_run(sweep) -> SweepOutcome`` (see ``adjoint._sweep``): it calls one
compiled kernel that runs the whole gradient.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import _kernels as kern
from .._sweep import Sweep, SweepOutcome


class Schedule:
    """Base class of checkpoint strategies accepted by ``solve_adjoint(checkpoint=...)``."""

    def _run(self, sweep: Sweep) -> SweepOutcome:  # pragma: no cover - abstract
        raise NotImplementedError


def run_store_all(sweep: Sweep, name: str = "StoreAll", snapshots: int | None = None) -> SweepOutcome:
    """Store every state, then sweep backwards (shared by schedules that degenerate to it)."""
    K, n = sweep.K, sweep.state_dim
    traj = np.empty((K + 1, n))
    value, status = sweep.run(kern.gradient_store_all, traj, sweep.grad_c, sweep.grad_p, sweep.grad_x0)
    return SweepOutcome(value=value, status=status, x_final=traj[K].copy(), forward_steps=K,
                        peak_stored_states=K, snapshots=K if snapshots is None else snapshots,
                        schedule=name, trajectory=traj)


@dataclass(frozen=True)
class StoreAll(Schedule):
    """Keep every state ``x_0 ... x_{K-1}`` for the backward sweep (no recomputation).

    Memory ``K * state_dim * 8`` bytes; ``forward_steps == K``.
    """

    def _run(self, sweep: Sweep) -> SweepOutcome:
        return run_store_all(sweep)
