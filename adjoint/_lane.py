"""The fast lane: repeated gradients of one problem (an optimiser's loop) skip the general path.

After a first store-all run through a generated kernel (the scalar or tape backend), the problem
keeps a :class:`_Lane` per (method, checkpoint, backend): the kernel and everything the result
needs. A later call whose arguments are float64 arrays of the right shapes (the common case in a
loop) goes straight to the kernel; anything else, or anything non-finite, takes the general path,
which validates and raises the usual errors. The results are the same bit for bit; the lane saves the
validation, the Sweep record and the dataclass constructors (``docs/`` and ``benchmarks/core.py``
have the figures).
"""

from __future__ import annotations

import math
import time

import numpy as np
from numba import njit

from ._results import AdjointResult, Gradient, Stats
from ._validate import _EULER, _raise_nonfinite
from .checkpointing import auto as _auto_schedule
from .checkpointing._schedules import _give_traj, _take_traj

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
        # compile a second specialisation of the kernel for it (a compile in a fresh process)
        return v if v.flags.writeable else v.copy()
    return None


@njit(cache=True, nogil=True)
def _all_finite(a, b, c):
    """Whether the contiguous vectors ``a``, ``b`` and ``c`` are all finite.

    One compiled call (an OR-reduction that vectorises), and unlike a numpy reduction it neither
    overflows nor warns on inf/NaN. Matrices are passed as ``M.reshape(-1)`` views: a reshape inside
    compiled code makes the cold compile several times longer."""
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
    __slots__ = ("kernel", "K", "n", "m", "q", "t0", "tau", "t1", "C0", "P0", "stats")

    def __init__(self, problem, kernel, m, q, stats):
        # a lane belongs to one (immutable) problem: its grid is fixed
        self.kernel = kernel
        self.K, self.n, self.m, self.q = problem.steps, problem.state_dim, m, q
        self.t0, self.tau, self.t1 = problem.t_span[0], problem.tau, problem.t_span[1]
        self.C0, self.P0 = np.zeros((self.K, 0)), np.zeros(0)
        self.stats = stats  # the Stats fields of a store-all run, ``seconds`` updated per call

    def run(self, problem, params, controls, x0):
        """The result, or None when the call needs the general path."""
        K, n, m, q = self.K, self.n, self.m, self.q
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
            # a fresh writable copy: problem.x0 is read-only, for which numba would compile
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
            value, status = self.kernel(x0a, C, p, self.t0, self.tau, K, self.t1, traj, gC, gp, gx)
            elapsed = time.perf_counter() - t_start
            x_final = traj[K].copy()
        finally:
            if pooled:
                _give_traj((K + 1, n), traj)
        if status:
            _raise_nonfinite(problem, status)
        if not (_all_finite(gp, gC.reshape(-1), gx) and math.isfinite(value)):
            return None  # the general path names the non-finite block or value
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
    if sweep.backend.lane_kernel is None or out.extra or sweep.grid.K != problem.steps:
        return
    if checkpoint.resolve_plan(sweep.grid.K, sweep.state_dim).kind != "store_all":
        return
    try:
        key = _lane_key(method, checkpoint if checkpoint is not _auto_schedule() else "auto", backend)
        hash(key)
    except (AttributeError, TypeError):
        return
    fields = {f: getattr(stats, f) for f in _STATS_FIELDS}
    fields["compile_seconds"] = 0.0
    lanes = problem._cache.lanes
    if len(lanes) >= 16:  # e.g. a fresh MemoryBudget(...) instance per call: keys that never repeat
        lanes.clear()
    lanes[key] = _Lane(problem, sweep.backend.lane_kernel, sweep.grid.C.shape[1], sweep.grid.p.shape[0], fields)
    _all_finite(_LANE_EMPTY, _LANE_EMPTY, _LANE_EMPTY)  # compiled (or loaded) in this first call, not the next
