"""Ensembles: many members of one problem (experiments, samples, minibatches) in one call.

``solve_ensemble`` runs every member's gradient with the engine's own kernels, the members
distributed over

* threads (the default, ``workers`` of them): when the problem runs on a generated store-all
  kernel (the fast lane of :mod:`adjoint._lane`), a compiled loop over a chunk of members calls
  that kernel with the GIL released (:func:`_members`), one chunk per thread; otherwise each member
  runs ``solve_adjoint`` on a thread;
* an executor: any object with ``submit(fn, *args)`` returning futures with ``result()`` (a
  ``concurrent.futures`` executor, or a ``dask.distributed.Client`` for a cluster; ``pip install
  -e ".[dask]"``). Members are chunked into tasks, each task runs its members with
  ``solve_adjoint`` in the worker (which compiles or loads the kernels once, from the disk cache
  where it is shared); a task that a scheduler reruns (a lost worker) returns the same bits.

Every member's value and gradient is computed by the same kernel on the same inputs as its own
serial ``solve_adjoint``, so they are bit for bit the same, and the sums (the weighted value and
the gradients of shared inputs) are reduced in member order after all members are back:
bitwise reproducible for any number of workers, threads or processes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numba import njit

from ._problem import ControlProblem

__all__ = ["solve_ensemble", "EnsembleResult"]


@dataclass(frozen=True)
class EnsembleResult:
    """What :func:`solve_ensemble` returns.

    Attributes
    ----------
    values : ndarray, shape (B,)
        Each member's objective.
    value : float
        ``sum_b weights_b values_b`` (summed in member order).
    grad_params, grad_controls, grad_x0 : ndarray
        Per-member gradients with the batch axis: shapes (B, param_dim), (B, steps, control_dim),
        (B, state_dim).
    grad : adjoint.Gradient
        The gradient of ``value``: for an input with a batch axis, ``weights_b`` times the member's
        gradient (shape with the batch axis); for a shared input, the weighted sum over members.
    weights : ndarray, shape (B,)
    stats : list of adjoint.Stats, or None
        Per-member stats where members ran through ``solve_adjoint`` (None for the members of a
        compiled chunk, which share ``chunk_stats``).
    chunk_stats : adjoint.Stats or None
        The stats of the generated kernel that ran the compiled chunks (steps, memory, backend).
    batched : tuple of str
        The inputs that carried a batch axis.
    workers : int
        Threads used (1 with an executor: the executor's own workers ran the tasks).
    chunks : int
        Tasks or thread chunks.
    seconds : float
        Wall time of the call.
    """

    values: np.ndarray
    value: float
    grad_params: np.ndarray
    grad_controls: np.ndarray
    grad_x0: np.ndarray
    grad: object
    weights: np.ndarray
    stats: list | None
    chunk_stats: object
    batched: tuple
    workers: int
    chunks: int
    seconds: float


# -- inputs ------------------------------------------------------------------------------------------


class _Members:
    """The member inputs: per block a stacked array ``(B_block, ...)`` and whether it is batched."""

    def __init__(self, problem, params, controls, x0):
        from ._validate import resolve_dims

        K, n = problem.steps, problem.state_dim
        self.batched = []
        B = {}
        arrays = {}
        m, q = None, None
        for name, val, member_ndim in (("params", params, 1), ("controls", controls, 2), ("x0", x0, 1)):
            if val is None:
                arrays[name] = None
                continue
            try:
                a = np.asarray(val, dtype=np.float64)
            except (TypeError, ValueError):
                raise TypeError(f"`{name}` must be an array of numbers; got {type(val).__name__}") from None
            if name == "controls" and a.ndim == 1:
                a = a.reshape(-1, 1)
            if a.ndim == member_ndim + 1:
                self.batched.append(name)
                B[name] = a.shape[0]
            elif a.ndim != member_ndim:
                raise ValueError(
                    f"`{name}` must have shape {('(steps, control_dim)' if name == 'controls' else '(size,)')} "
                    f"(shared by all members) or that shape with a leading batch axis; got shape {a.shape}"
                )
            arrays[name] = a
        if not self.batched:
            raise ValueError(
                "solve_ensemble needs a batch axis: give `params` as (B, param_dim), `controls` as "
                "(B, steps, control_dim) or `x0` as (B, state_dim); for one member use solve_adjoint"
            )
        sizes = set(B.values())
        if len(sizes) > 1:
            raise ValueError("the batch axes disagree: " + ", ".join(f"`{k}` has {v} members" for k, v in B.items()))
        self.B = sizes.pop()
        if self.B == 0:
            raise ValueError(f"the batch axis of `{self.batched[0]}` is empty (B = 0): give at least one member")
        self.arrays = arrays
        # shapes of one member, checked here so that an error names the batched argument
        m, q = resolve_dims(problem, self.member(0)["params"], self.member(0)["controls"])
        if arrays["x0"] is not None and arrays["x0"].shape[-1] != n:
            raise ValueError(f"`x0` must have {n} entries per member; got shape {arrays['x0'].shape}")
        if arrays["controls"] is not None and arrays["controls"].shape[-2:] != (K, m):
            raise ValueError(
                f"`controls` must have shape ({K}, {m}) per member (steps, control_dim); got shape "
                f"{arrays['controls'].shape}"
            )
        if arrays["params"] is not None and arrays["params"].shape[-1] != q:
            raise ValueError(f"`params` must have {q} entries per member; got shape {arrays['params'].shape}")
        for name in self.batched:
            a = arrays[name]
            bad = ~np.isfinite(a.reshape(self.B, -1)).all(axis=1)
            if bad.any():
                b = int(np.flatnonzero(bad)[0])
                raise ValueError(f"`{name}` of member {b} is not finite")
        self.m, self.q = m, q

    def member(self, b):
        out = {}
        for name, a in self.arrays.items():
            out[name] = None if a is None else (a[b] if name in self.batched else a)
        return out

    def stacked(self, name, problem):
        """``(array (B_block, ...) C-contiguous, index (B,) of each member's row)``."""
        a = self.arrays[name]
        if a is None:
            a = {
                "params": np.zeros(0),
                "controls": np.zeros((problem.steps, self.m)),
                "x0": np.array(problem.x0),
            }[name]
        if name in self.batched:
            return np.ascontiguousarray(a), np.arange(self.B)
        return np.ascontiguousarray(a[None]), np.zeros(self.B, dtype=np.int64)


# -- the compiled chunk ------------------------------------------------------------------------------


@njit(nogil=True)  # not cached: `kernel` is a compiled function of this process
def _members(
    kernel, X0, xi, Cs, ci, Ps, pi, t0, tau, K, t1, traj, GC, GP, GX, values, status, lo, hi
):  # pragma: no cover
    """Members ``lo..hi-1`` through the store-all ``kernel`` (the fast lane's), GIL released."""
    for b in range(lo, hi):
        x0 = X0[xi[b]].copy()
        v, s = kernel(x0, Cs[ci[b]], Ps[pi[b]], t0, tau, K, t1, traj, GC[b], GP[b], GX[b])
        values[b] = v
        status[b] = s


def _chunks(B, parts):
    parts = max(1, min(parts, B))
    edges = np.linspace(0, B, parts + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def _serial(problem, members, lo, hi, method, checkpoint, backend):
    """Members ``lo..hi-1`` by ``solve_adjoint`` (a task of an executor, or a thread)."""
    from ._solve import solve_adjoint

    out = []
    for b in range(lo, hi):
        kw = members.member(b)
        try:
            r = solve_adjoint(problem, method=method, checkpoint=checkpoint, backend=backend, **kw)
        except Exception as exc:
            raise type(exc)(f"member {b}: {exc}") from exc
        out.append((r.value, r.grad.params, r.grad.controls, r.grad.x0, r.stats))
    return out


def solve_ensemble(
    problem,
    *,
    params=None,
    controls=None,
    x0=None,
    weights=None,
    method=None,
    checkpoint="auto",
    backend=None,
    workers=None,
    executor=None,
    chunks=None,
) -> EnsembleResult:
    """Values and exact gradients of many members of one problem, on every core or on a cluster.

    Parameters
    ----------
    problem : ControlProblem
    params, controls, x0 : array_like, optional
        Each either one member's shape, shared by all members, or that shape with a leading batch
        axis of length ``B`` (``(B, param_dim)``, ``(B, steps, control_dim)``, ``(B, state_dim)``).
        At least one has the batch axis; those that have one agree on ``B``. A member's own data
        (an experiment's measurements) come through a batched input the costs read: per-step data
        as controls columns (``controls[b]``), or a member's constants in ``params[b]``.
    weights : array_like, shape (B,), optional
        ``value = sum_b weights_b J_b`` (default all 1).
    method, checkpoint, backend :
        As for :func:`adjoint.solve_adjoint`.
    workers : int, optional
        Threads (default: every core, ``os.cpu_count()``). Ignored with ``executor``.
    executor : optional
        Anything with ``submit(fn, *args)`` returning futures with ``result()``: a
        ``concurrent.futures`` executor or a ``dask.distributed.Client``. Members are chunked into
        tasks, each task runs its members with ``solve_adjoint`` in the worker; the problem is
        pickled to the workers (plain functions need cloudpickle, which Dask uses).
    chunks : int, optional
        Number of tasks (executor) or thread chunks (default: ``4 * workers``, at most ``B``).

    Returns
    -------
    EnsembleResult

    Notes
    -----
    Each member's value and gradient equals its own ``solve_adjoint`` bit for bit, and the sums are
    taken in member order: the result does not depend on ``workers``, ``chunks`` or the executor.

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> prob = adjoint.ControlProblem(lambda x, c, p, t: -p[0] * x, [1.0], (0.0, 1.0), 100,
    ...                               terminal_cost=lambda x, p: x[0] ** 2, param_dim=1)
    >>> res = adjoint.solve_ensemble(prob, params=[0.5], x0=[[1.0], [2.0], [3.0]], workers=2)
    >>> res.values.shape, res.grad.params.shape, res.grad_x0.shape
    ((3,), (1,), (3, 1))
    """
    import os

    from ._results import Gradient

    start = time.perf_counter()
    if not isinstance(problem, ControlProblem):
        raise TypeError(f"`problem` must be an adjoint.ControlProblem; got {type(problem).__name__}")
    members = _Members(problem, params, controls, x0)
    B = members.B
    if weights is None:
        w = np.ones(B)
    else:
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != (B,):
            raise ValueError(f"`weights` must have shape ({B},), one per member; got shape {w.shape}")
        if not np.all(np.isfinite(w)):
            raise ValueError("`weights` must be finite")
    if executor is not None and not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "`executor` must have a submit(fn, *args) method (a concurrent.futures executor or a "
            f"dask.distributed.Client); got {type(executor).__name__}"
        )
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1):
        raise ValueError(f"`workers` must be an integer >= 1 (or None: every core); got {workers!r}")
    nthreads = 1 if executor is not None else int(workers or os.cpu_count() or 1)
    nchunks = int(chunks) if chunks is not None else (4 * nthreads if executor is None else 4 * 2)
    if nchunks < 1:
        raise ValueError(f"`chunks` must be >= 1; got {chunks!r}")
    K, n, m, q = problem.steps, problem.state_dim, members.m, members.q
    values = np.empty(B)
    GP, GC, GX = np.empty((B, q)), np.empty((B, K, m)), np.empty((B, n))
    stats: list | None = None
    chunk_stats = None
    parts = _chunks(B, nchunks)
    if executor is not None:
        futures = [executor.submit(_serial, problem, members, lo, hi, method, checkpoint, backend) for lo, hi in parts]
        stats = [None] * B
        for (lo, _hi), fut in zip(parts, futures):
            for i, (v, gp, gc, gx, st) in enumerate(fut.result()):
                values[lo + i], GP[lo + i], GC[lo + i], GX[lo + i], stats[lo + i] = v, gp, gc, gx, st
    else:
        from ._lane import _lane_key
        from ._solve import solve_adjoint

        # member 0 by the general path: validates the problem, compiles, and leaves the fast lane
        r0 = solve_adjoint(problem, method=method, checkpoint=checkpoint, backend=backend, **members.member(0))
        values[0], GP[0], GC[0], GX[0] = r0.value, r0.grad.params, r0.grad.controls, r0.grad.x0
        try:
            lane = problem._cache.lanes.get(_lane_key(method, checkpoint, backend))
        except (AttributeError, TypeError):
            lane = None
        rest = _chunks(B - 1, nchunks)
        rest = [(lo + 1, hi + 1) for lo, hi in rest]
        if lane is not None and (lane.m, lane.q) == (m, q):
            chunk_stats = r0.stats
            X0, xi = members.stacked("x0", problem)
            Cs, ci = members.stacked("controls", problem)
            Ps, pi = members.stacked("params", problem)
            status = np.zeros(B, dtype=np.int64)

            def run(lo, hi):
                traj = np.empty((K + 1, n))
                _members(
                    lane.kernel, X0, xi, Cs, ci, Ps, pi, lane.t0, lane.tau, K, lane.t1, traj, GC, GP, GX,
                    values, status, lo, hi,
                )  # fmt: skip

            _pool_map(run, rest, nthreads)
            bad = np.flatnonzero(
                (status != 0)
                | ~np.isfinite(values)
                | ~np.isfinite(GP).all(axis=1)
                | ~np.isfinite(GX).all(axis=1)
                | ~np.isfinite(GC.reshape(B, -1)).all(axis=1)
            )
            if bad.size:
                b = int(bad[0])
                # the general path names what is not finite
                solve_adjoint(problem, method=method, checkpoint=checkpoint, backend=backend, **members.member(b))
                raise FloatingPointError(f"member {b}: the value or gradient is not finite")
        else:
            stats = [r0.stats] + [None] * (B - 1)

            def run(lo, hi):
                for i, (v, gp, gc, gx, st) in enumerate(_serial(problem, members, lo, hi, method, checkpoint, backend)):
                    values[lo + i], GP[lo + i], GC[lo + i], GX[lo + i], stats[lo + i] = v, gp, gc, gx, st

            _pool_map(run, rest, nthreads)
    # reductions in member order
    value = 0.0
    for b in range(B):
        value += w[b] * values[b]
    grads = {}
    for name, G in (("params", GP), ("controls", GC), ("x0", GX)):
        if name in members.batched:
            grads[name] = G * w.reshape((B,) + (1,) * (G.ndim - 1))
        else:
            acc = np.zeros(G.shape[1:])
            for b in range(B):
                acc += w[b] * G[b]
            grads[name] = acc
    return EnsembleResult(
        values=values,
        value=float(value),
        grad_params=GP,
        grad_controls=GC,
        grad_x0=GX,
        grad=Gradient(grads["params"], grads["controls"], grads["x0"]),
        weights=w,
        stats=stats,
        chunk_stats=chunk_stats,
        batched=tuple(members.batched),
        workers=nthreads,
        chunks=len(parts),
        seconds=time.perf_counter() - start,
    )


def _pool_map(fn, parts, nthreads):
    if not parts:
        return
    if nthreads == 1 or len(parts) == 1:
        for lo, hi in parts:
            fn(lo, hi)
        return
    with ThreadPoolExecutor(max_workers=nthreads) as pool:
        for fut in [pool.submit(fn, lo, hi) for lo, hi in parts]:
            fut.result()
