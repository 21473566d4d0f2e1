"""Checkpoint schedules as data.

Every schedule implements ``_run(sweep) -> SweepOutcome`` (see ``adjoint._sweep``): it calls one
compiled kernel that runs the whole gradient. ``plan(steps)`` shows the actions a schedule takes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Iterator

import numpy as np

from .._sweep import Sweep, SweepOutcome
from ._plan import Action, binomial_forward_steps, iter_actions, uniform_forward_steps
from ._streamed import RULE_BINOMIAL, RULE_UNIFORM

__all__ = [
    "Schedule",
    "StoreAll",
    "Uniform",
    "Revolve",
    "MemoryBudget",
    "Plan",
    "Action",
    "DEFAULT_MEMORY_BUDGET",
    "Resolved",
    "parse_bytes",
]

#: Budget of ``checkpoint="auto"`` (the default of ``solve_adjoint``): store every state when
#: ``(K + 1) * state_dim * 8`` bytes fit, else Revolve with as many snapshots as fit.
DEFAULT_MEMORY_BUDGET = 256 * 10**6


@dataclass(frozen=True)
class Resolved:
    """What a schedule runs for a given number of steps and state size (:meth:`Schedule.resolve_plan`).

    Attributes
    ----------
    kind : {"store_all", "streamed", "reversible"}
    name : str
        The schedule reported in ``Stats.schedule``.
    snapshots : int or None
        Slots (``x0`` included) of a streamed plan; for store-all the slots the schedule was
        allowed, None meaning the number of steps.
    rule : int or None
        The planner rule of a streamed plan (``RULE_BINOMIAL`` or ``RULE_UNIFORM``).
    budget : int or None
        Bytes the schedule may use in all (``MemoryBudget``), None when it sets no byte limit.
    """

    kind: str
    name: str
    snapshots: int | None = None
    rule: int | None = None
    budget: int | None = None


class Schedule:
    """Base class of checkpoint strategies accepted by ``solve_adjoint(checkpoint=...)``.

    A schedule resolves, for ``steps`` steps of a ``state_dim`` state, to a plan
    (:meth:`resolve_plan`): store every state, stream a checkpointing rule through some slots, or
    rebuild the states backwards (reversible). Every sweep kind and every caller (the ODE
    gradients, the fast lane, the tape backend, Sinkhorn's unrolled gradient) asks this one method.
    """

    def resolve_plan(self, steps: int, state_dim: int) -> Resolved:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, sweep: Sweep) -> SweepOutcome:
        return run_plan(self.resolve_plan(sweep.grid.K, sweep.state_dim), sweep)


def _check_steps(steps) -> int:
    if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)):
        raise TypeError(f"`steps` must be an integer >= 1; got {steps!r}")
    if steps < 1:
        raise ValueError(f"`steps` must be an integer >= 1; got {steps}")
    return int(steps)


def _check_snapshots(value) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(
            f"`snapshots` must be an integer >= 1 (the number of stored states, x0 included); "
            f"got {value!r} of type {type(value).__name__}"
        )
    if value < 1:
        raise ValueError(f"`snapshots` must be an integer >= 1 (the number of stored states, x0 included); got {value}")
    return int(value)


class Plan:
    """The actions of a schedule for a given number of steps (streamed, never stored whole).

    Iterate it for :class:`Action` tuples, or print it. ``forward_steps`` and
    ``peak_stored_states`` are the predicted costs.
    """

    def __init__(self, name: str, steps: int, slots: int, rule: int, forward_steps: int, peak: int):
        self.name = name
        self.steps = steps
        self.slots = slots
        self.rule = rule
        self.forward_steps = forward_steps
        self.peak_stored_states = peak

    def __iter__(self) -> Iterator[Action]:
        return iter_actions(self.steps, self.slots, self.rule)

    def __repr__(self) -> str:
        return (
            f"Plan({self.name}, steps={self.steps}: forward_steps={self.forward_steps}, "
            f"peak_stored_states<={self.peak_stored_states})"
        )

    def __str__(self, limit: int = 200) -> str:
        lines = [repr(self)]
        for i, a in enumerate(self):
            if i == limit:
                lines.append(f"  ... (first {limit} actions shown)")
                break
            lines.append(f"  {a}")
        return "\n".join(lines)


#: store-all trajectories up to this size are reused between calls when the caller does not keep
#: them (an optimiser calls the gradient hundreds of times with the same shapes; a fresh array of
#: more than ~128 kB comes from mmap and pays its page faults again at every call, a visible share of
#: a small gradient). At most _POOL_SHAPES arrays are kept.
_POOL_MAX_BYTES = 8 * 2**20
_POOL_SHAPES = 4
_TRAJ_POOL: dict = {}


def _take_traj(shape, keep: bool):
    nbytes = 8 * shape[0] * shape[1]
    if keep or nbytes > _POOL_MAX_BYTES or nbytes < 2**16:
        return np.empty(shape), False
    lst = _TRAJ_POOL.get(shape)
    if lst:
        try:
            return lst.pop(), True
        except IndexError:  # another thread took it
            pass
    return np.empty(shape), True


def _give_traj(shape, traj):
    lst = _TRAJ_POOL.get(shape)
    if lst is None:
        if len(_TRAJ_POOL) >= _POOL_SHAPES:
            return
        lst = _TRAJ_POOL.setdefault(shape, [])
    if not lst:
        lst.append(traj)


def run_store_all(sweep: Sweep, name: str = "StoreAll", snapshots: int | None = None) -> SweepOutcome:
    """Store every state, then sweep backwards (shared by schedules that degenerate to it)."""
    K, n = sweep.grid.K, sweep.state_dim
    traj, pooled = _take_traj((K + 1, n), sweep.want_trajectory)
    try:
        return _store_all(sweep, traj, name, snapshots, pooled)
    finally:
        if pooled:
            _give_traj((K + 1, n), traj)


def _store_all(sweep, traj, name, snapshots, pooled):
    K = sweep.grid.K
    value, status = sweep.backend.store_all(sweep, traj)
    return SweepOutcome(
        value=value,
        status=status,
        x_final=traj[K].copy(),
        forward_steps=K,
        peak_stored_states=K,
        snapshots=K if snapshots is None else snapshots,
        schedule=name,
        trajectory=None if pooled else traj,
        backend=sweep.backend.name,
    )


def run_plan(plan: Resolved, sweep: Sweep) -> SweepOutcome:
    """Run a store-all or streamed plan on the sweep's backend."""
    if plan.kind == "store_all":
        return run_store_all(sweep, plan.name, plan.snapshots)
    if plan.kind == "streamed":
        assert plan.rule is not None and plan.snapshots is not None
        return run_streamed(sweep, plan.rule, plan.snapshots, plan.name)
    raise ValueError(f"a {plan.kind} plan is run by its schedule")  # pragma: no cover


def run_streamed(sweep: Sweep, rule: int, snapshots: int, name: str) -> SweepOutcome:
    """Run the compiled executor of a streamed schedule (``snapshots <= K``)."""
    n = sweep.state_dim
    x_final = np.full(n, np.nan)
    counters = np.zeros(3, dtype=np.int64)
    value, status = sweep.backend.streamed(sweep, rule, snapshots, x_final, counters)
    if counters[2]:  # pragma: no cover - planner bug
        raise RuntimeError("checkpoint planner stack overflow (please report)")
    return SweepOutcome(
        value=value,
        status=status,
        x_final=x_final,
        forward_steps=int(counters[0]),
        peak_stored_states=int(counters[1]),
        snapshots=snapshots,
        schedule=name,
        backend=sweep.backend.name,
    )


@dataclass(frozen=True)
class StoreAll(Schedule):
    """Keep every state ``x_0 ... x_{K-1}`` for the backward sweep (no recomputation).

    Memory ``K * state_dim * 8`` bytes; ``forward_steps == K``.
    """

    def plan(self, steps: int) -> Plan:
        steps = _check_steps(steps)
        return Plan("StoreAll()", steps, steps, RULE_BINOMIAL, steps, steps)

    def forward_steps(self, steps: int) -> int:
        return _check_steps(steps)

    def resolve_plan(self, steps: int, state_dim: int) -> Resolved:
        return Resolved("store_all", "StoreAll")


class _SlotSchedule(Schedule):
    """A schedule with ``snapshots`` slots run by the streamed planner under rule ``_rule``."""

    _rule: int
    snapshots: int

    def forward_steps(self, steps: int) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    def __post_init__(self):
        object.__setattr__(self, "snapshots", _check_snapshots(self.snapshots))

    def plan(self, steps: int) -> Plan:
        """The schedule's actions for ``steps`` steps (print or iterate them)."""
        steps = _check_steps(steps)
        s = min(self.snapshots, steps)
        return Plan(repr(self), steps, s, self._rule, self.forward_steps(steps), s)

    def resolve_plan(self, steps: int, state_dim: int) -> Resolved:
        if self.snapshots > steps:  # a slot per state: nothing to recompute
            return Resolved("store_all", "StoreAll", self.snapshots)
        return Resolved("streamed", repr(self), self.snapshots, self._rule)


@dataclass(frozen=True)
class Revolve(_SlotSchedule):
    """Binomial checkpointing (Griewank and Walther, ACM TOMS 2000): optimal for ``snapshots`` slots.

    Parameters
    ----------
    snapshots : int
        Stored states allowed at once, ``x_0`` included (``>= 1``).

    Notes
    -----
    With ``s`` slots and ``K`` steps the schedule takes ``p(K, s) + 1`` forward steps, the minimum:
    ``p(l, s) = r l - C(s + r, s + 1)`` with r the integer such that
    ``C(s + r - 1, s) < l <= C(s + r, s)``; the ``+ 1`` is the step to ``x_K`` that the terminal
    cost needs. Each step is recomputed at most ``r`` times. ``s >= K`` stores everything
    (``K`` forward steps).

    Examples
    --------
    >>> import adjoint
    >>> adjoint.Revolve(snapshots=2).forward_steps(5)
    7
    >>> for a in adjoint.Revolve(snapshots=2).plan(3): print(a)
    store x_0 in slot 0
    advance x_0 -> x_1
    store x_1 in slot 1
    advance x_1 -> x_2
    terminal x_2 -> x_3, seed z_3 = grad L
    adjoint step 2
    restore x_1 from slot 1
    adjoint step 1
    restore x_0 from slot 0
    adjoint step 0
    """

    snapshots: int

    _rule = RULE_BINOMIAL

    def forward_steps(self, steps: int) -> int:
        """Forward steps for ``steps`` steps: ``p(K, s) + 1``."""
        steps = _check_steps(steps)
        return binomial_forward_steps(steps, min(self.snapshots, steps))


@dataclass(frozen=True)
class Uniform(_SlotSchedule):
    """Equally spaced checkpoints with ``snapshots`` slots (a simple baseline for Revolve).

    Parameters
    ----------
    snapshots : int
        Stored states allowed at once, ``x_0`` included (``>= 1``).

    Notes
    -----
    An interval of ``l`` steps with ``f`` free slots is reversed by storing every state when
    ``l <= f``, by recomputing from its start (``l (l - 1) / 2`` steps) when ``f == 1``, and
    otherwise by cutting it into ``c`` equal pieces (``x`` at each cut stored), the pieces reversed
    last to first with the slots then free. ``c = ceil(l^(1/L))`` for the fewest levels
    ``L >= 2`` with ``1 + L (c - 1) <= f`` (bisection if none). With ``s >= 2 sqrt(K)`` this is the
    classic two-level scheme, ``~2 K`` forward steps; in general about ``(L + 1) K``, which is
    ``forward_steps(K)`` exactly.
    """

    snapshots: int

    _rule = RULE_UNIFORM

    def forward_steps(self, steps: int) -> int:
        steps = _check_steps(steps)
        return uniform_forward_steps(steps, min(self.snapshots, steps))


_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
    "k": 10**3,
    "m": 10**6,
    "g": 10**9,
}


def parse_bytes(value) -> int:
    """Bytes from an int/float or a string such as ``"200 MB"``, ``"1.5GiB"``, ``"512 kB"``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`bytes` must be a number of bytes or a string such as '200 MB'; got {value!r}")
    if isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", value)
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(
                f"`bytes` string must be a number with an optional unit B, kB, MB, GB, TB, KiB, "
                f"MiB, GiB, TiB (e.g. '200 MB'); got {value!r}"
            )
        nbytes = float(m.group(1)) * _UNITS[m.group(2).lower()]
    elif isinstance(value, (int, np.integer, float, np.floating)):
        nbytes = float(value)
    else:
        raise TypeError(f"`bytes` must be a number of bytes or a string such as '200 MB'; got {type(value).__name__}")
    if not math.isfinite(nbytes) or nbytes < 1:
        raise ValueError(f"`bytes` must be a positive, finite number of bytes; got {value!r}")
    return int(nbytes)


def _fmt_bytes(n: int) -> str:
    for unit, size in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= size:
            return f"{n / size:.4g} {unit}"
    return f"{n} B"


@dataclass(frozen=True, init=False)
class MemoryBudget(Schedule):
    """Use at most ``bytes`` for stored states: store all if that fits, else Revolve with the most
    snapshots that fit.

    Parameters
    ----------
    bytes : int, float or str, default ``DEFAULT_MEMORY_BUDGET`` (256 MB)
        The budget, e.g. ``2 * 10**8`` or ``"200 MB"`` (units B, kB, MB, GB, KiB, MiB, GiB).

    Notes
    -----
    For state dimension ``n`` the snapshot count is ``s = floor(bytes / (8 n))``; when
    ``s >= K + 1`` every state is stored (store-all keeps ``x_0 ... x_K``), otherwise
    ``Revolve(snapshots=s)`` runs, with ``p(K, s) + 1`` forward steps (see :class:`Revolve`).
    ``checkpoint="auto"`` is ``MemoryBudget(DEFAULT_MEMORY_BUDGET)`` (256 MB).

    Examples
    --------
    >>> import adjoint
    >>> adjoint.MemoryBudget("1 kB").resolve(steps=1000, state_dim=2)
    Revolve(snapshots=62)
    """

    nbytes: int

    def __init__(self, bytes=None):  # noqa: A002 - the documented argument name
        object.__setattr__(self, "nbytes", parse_bytes(DEFAULT_MEMORY_BUDGET if bytes is None else bytes))

    def __repr__(self) -> str:
        return f"MemoryBudget({_fmt_bytes(self.nbytes)!r})"

    def snapshots(self, state_dim: int) -> int:
        """The most states of dimension ``state_dim`` that fit (error if not even one)."""
        per = 8 * int(state_dim)
        s = self.nbytes // per
        if s < 1:
            raise ValueError(
                f"MemoryBudget({self.nbytes} bytes) is too small for one state: the state has "
                f"dimension {state_dim}, i.e. {per} bytes; give at least {per} bytes"
            )
        return s

    def resolve(self, steps: int, state_dim: int) -> Schedule:
        """The schedule this budget runs for ``steps`` steps of a ``state_dim`` state."""
        steps = _check_steps(steps)
        s = self.snapshots(state_dim)
        return StoreAll() if s >= steps + 1 else Revolve(snapshots=s)

    def resolve_plan(self, steps: int, state_dim: int) -> Resolved:
        s = self.snapshots(state_dim)
        if s >= steps + 1:
            return Resolved("store_all", "StoreAll", budget=self.nbytes)
        return Resolved("streamed", f"Revolve(snapshots={s})", s, RULE_BINOMIAL, budget=self.nbytes)


_AUTO = None


def auto() -> MemoryBudget:
    """The schedule of ``checkpoint="auto"`` (one shared instance)."""
    global _AUTO
    if _AUTO is None:
        _AUTO = MemoryBudget()
    return _AUTO


def as_schedule(checkpoint) -> Schedule:
    """The schedule of a ``checkpoint=`` argument: ``"auto"`` (the default everywhere) and None mean
    :func:`auto`; a :class:`Schedule` is itself; anything else is a TypeError saying what to pass."""
    if checkpoint is None or (isinstance(checkpoint, str) and checkpoint == "auto"):
        return auto()
    if not isinstance(checkpoint, Schedule):
        hint = " (pass an instance, not the class)" if isinstance(checkpoint, type) else ""
        raise TypeError(
            '`checkpoint` must be "auto" or a schedule such as adjoint.StoreAll(), '
            f"adjoint.Revolve(snapshots=20), adjoint.MemoryBudget('200 MB'); got {checkpoint!r}{hint}"
        )
    return checkpoint
