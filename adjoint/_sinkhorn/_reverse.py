"""Numba kernels of the unrolled Sinkhorn gradient: the adjoint half steps and the reverse sweeps
(store-all, and checkpointed under a streamed schedule of :mod:`adjoint.checkpointing`)."""

from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from .._vecmath import _exp
from ..checkpointing._streamed import (
    CHUNK as _PLAN_CHUNK,
)
from ..checkpointing._streamed import (
    OP_ADVANCE as _OP_ADVANCE,
)
from ..checkpointing._streamed import (
    OP_RESTORE as _OP_RESTORE,
)
from ..checkpointing._streamed import (
    OP_STORE as _OP_STORE,
)
from ..checkpointing._streamed import (
    OP_TERMINAL as _OP_TERMINAL,
)
from ..checkpointing._streamed import (
    plan_chunk as _plan_chunk,
)
from ..checkpointing._streamed import (
    plan_init as _plan_init,
)
from ._kernels import PARALLEL, SERIAL, _copy, _k_col_update, _k_row_update, _sum, kernels_for, serial_variants

# ----------------------------------------------------------------------------------
# Unrolled adjoint (reverse sweep through stored iterates)
# ----------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _k_adjoint_row_step(C, f, g, b, eps, fbar, gbar, bbar, Cbar, work):
    """Adjoint of f = T_f(g) (f_i = -eps log sum_j b_j exp((g_j - C_ij)/eps)).

    With E_ij = exp((f_i + g_j - C_ij)/eps) and A_ij = b_j E_ij (row softmax):
    gbar_j -= sum_i fbar_i A_ij, bbar_j -= eps sum_i fbar_i E_ij,
    Cbar_ij += fbar_i A_ij.
    """
    n, m = C.shape
    ie = 1.0 / eps
    nb = work.shape[0]
    gs = g * ie
    for t in prange(nb):
        i0 = (t * n) // nb
        i1 = ((t + 1) * n) // nb
        w = work[t]
        for j in range(m):
            w[j] = 0.0
        for i in range(i0, i1):
            fi = f[i] * ie
            fb = fbar[i]
            Ci = C[i]
            Cb = Cbar[i]
            for j in range(m):
                e = fb * _exp(fi + gs[j] - Ci[j] * ie)
                w[j] = w[j] + e
                Cb[j] = Cb[j] + e * b[j]
    for j in range(m):
        s = 0.0
        for t in range(nb):
            s += work[t, j]
        bbar[j] -= eps * s
        gbar[j] -= s * b[j]


@njit(cache=True, parallel=True)
def _k_adjoint_col_step(C, f, g, a, eps, gbar, fbar_out, abar, Cbar, work):
    """Adjoint of g = T_g(f) (g_j = -eps log sum_i a_i exp((f_i - C_ij)/eps)).

    With E_ij = exp((f_i + g_j - C_ij)/eps) and B_ij = a_i E_ij (column softmax):
    fbar_out_i = -sum_j gbar_j B_ij, abar_i -= eps sum_j gbar_j E_ij,
    Cbar_ij += gbar_j B_ij.
    """
    n, m = C.shape
    ie = 1.0 / eps
    nb = work.shape[0]
    gs = g * ie
    for t in prange(nb):
        i0 = (t * n) // nb
        i1 = ((t + 1) * n) // nb
        buf = work[t]
        for i in range(i0, i1):
            fi = f[i] * ie
            ai = a[i]
            Ci = C[i]
            Cb = Cbar[i]
            for j in range(m):
                e = gbar[j] * _exp(fi + gs[j] - Ci[j] * ie)
                buf[j] = e
                Cb[j] = Cb[j] + e * ai
            s = _sum(buf, m)
            abar[i] -= eps * s
            fbar_out[i] = -ai * s


@njit(cache=True)
def _k_run_reverse(C, a, b, eps_sched, Fs, Gs, fbar, gbar, abar, bbar, Cbar, work):
    """Reverse sweep of the K = ``len(Fs) - 1`` iterations, every iterate stored (store-all).

    ``Fs[k], Gs[k]`` hold the iterate (f_k, g_k) after k iterations; the reverse
    step of iteration k needs f_{k-1} and (f_k, g_k). fbar, gbar, abar, bbar,
    Cbar hold the seed on entry (adjoints of the output layer with respect to
    (f_K, g_K), a, b, C) and the accumulated gradient on exit (fbar, gbar:
    adjoints of the initial potentials). Checkpointed sweeps run in
    :func:`_k_run_schedule`.
    """
    n = fbar.shape[0]
    nsched = eps_sched.shape[0]
    fbar_prev = np.empty(n)
    for k in range(Fs.shape[0] - 1, 0, -1):
        eps = eps_sched[min(k - 1, nsched - 1)]
        fk = Fs[k]
        gk = Gs[k]
        _k_adjoint_row_step(C, fk, gk, b, eps, fbar, gbar, bbar, Cbar, work)
        _k_adjoint_col_step(C, Fs[k - 1], gk, a, eps, gbar, fbar_prev, abar, Cbar, work)
        _copy(fbar, fbar_prev)
        gbar[:] = 0.0
    return 0


# Checkpointed reverse sweep.  The schedules of adjoint.checkpointing see Sinkhorn
# as K steps on the state x_k = (f_k, g_k) (the iterate after k iterations, n + m
# floats): step k is iteration k + 1.  Their convention is that the adjoint of
# step k needs only its input state x_k; the adjoint of iteration k + 1 needs
# f_k, g_{k+1} and f_{k+1}, so the adjoint step recomputes x_{k+1} from x_k (the
# two half steps, the same operations as the forward, hence the same bits) before
# running the two adjoint half steps.  The terminal step x_{K-1} -> x_K is not
# recomputed: x_K and the seed of the adjoint come from the forward solve.


@njit(cache=True)
def _k_run_schedule(K, s, rule, C, a, b, loga, logb, eps_sched, fK, gK, fbar, gbar, abar, bbar, Cbar, work, counters):
    """Reverse sweep of K iterations with ``s`` slots under a streamed schedule.

    Runs the planner of ``adjoint.checkpointing`` (``rule`` binomial or uniform)
    chunk by chunk, so memory is O(s (n + m)) whatever K.  fbar, gbar, abar,
    bbar, Cbar hold the seed on entry (adjoints of the output layer with respect
    to (f_K, g_K), a, b, C) and the accumulated gradient on exit (fbar, gbar:
    adjoints of the initial potentials).  counters = (iterations run by advance
    actions, iterations recomputed inside adjoint steps, peak slots used,
    planner error).
    """
    n = fbar.shape[0]
    m = gbar.shape[0]
    nsched = eps_sched.shape[0]
    se = s if s < K else K
    slots_f = np.empty((se, n))
    slots_g = np.empty((se, m))
    stack, meta = _plan_init(K, s, rule)
    cap = _PLAN_CHUNK if _PLAN_CHUNK > 2 * se + 16 else 2 * se + 16
    ops = np.empty(cap, dtype=np.int64)
    arg0 = np.empty(cap, dtype=np.int64)
    arg1 = np.empty(cap, dtype=np.int64)
    cur_f = np.zeros(n)  # working state, x_0 = (0, 0)
    cur_g = np.zeros(m)
    nxt_f = np.empty(n)  # x_{k+1} for the adjoint of step k
    nxt_g = np.empty(m)
    nxt_k = -1  # step whose output nxt_* holds (-1: none)
    f_tmp = np.empty(n)
    g_tmp = np.empty(m)
    fbar_prev = np.empty(n)
    advanced = 0
    recomputed = 0
    peak = 0
    counters[3] = 0
    while True:
        nact = _plan_chunk(stack, meta, ops, arg0, arg1)
        if nact <= 0:
            if nact < 0:
                counters[3] = 1
            break
        for r in range(nact):
            op = ops[r]
            if op == _OP_ADVANCE:
                for it in range(arg0[r], arg1[r]):
                    eps = eps_sched[min(it, nsched - 1)]
                    _k_col_update(C, cur_f, loga, cur_g, eps, g_tmp, work)
                    _copy(cur_g, g_tmp)
                    _k_row_update(C, cur_g, logb, cur_f, eps, f_tmp, work)
                    _copy(cur_f, f_tmp)
                advanced += arg1[r] - arg0[r]
            elif op == _OP_STORE:
                sl = arg1[r]
                _copy(slots_f[sl], cur_f)
                _copy(slots_g[sl], cur_g)
                if sl + 1 > peak:
                    peak = sl + 1
            elif op == _OP_RESTORE:
                sl = arg1[r]
                _copy(cur_f, slots_f[sl])
                _copy(cur_g, slots_g[sl])
            elif op == _OP_TERMINAL:
                # x_K is known from the forward solve, seed already in the bars
                _copy(nxt_f, fK)
                _copy(nxt_g, gK)
                nxt_k = arg0[r]
            else:  # adjoint of step k = iteration k + 1; working state x_k
                k = arg0[r]
                eps = eps_sched[min(k, nsched - 1)]
                if nxt_k != k:
                    _k_col_update(C, cur_f, loga, cur_g, eps, nxt_g, work)
                    _k_row_update(C, nxt_g, logb, cur_f, eps, nxt_f, work)
                    recomputed += 1
                _k_adjoint_row_step(C, nxt_f, nxt_g, b, eps, fbar, gbar, bbar, Cbar, work)
                _k_adjoint_col_step(C, cur_f, nxt_g, a, eps, gbar, fbar_prev, abar, Cbar, work)
                _copy(fbar, fbar_prev)
                gbar[:] = 0.0
                nxt_k = -1
    counters[0] = advanced
    counters[1] = recomputed
    counters[2] = peak
    return 0


# the reverse kernels and their serial variants (see :func:`._kernels.serial_variants`), which call
# the serial half steps
_REVERSE_NAMES = ("_k_adjoint_row_step", "_k_adjoint_col_step", "_k_run_reverse", "_k_run_schedule")
_PARALLEL_REVERSE = types.SimpleNamespace(**{name: globals()[name] for name in _REVERSE_NAMES})
_SERIAL_REVERSE = serial_variants(
    {**globals(), "_k_col_update": SERIAL._k_col_update, "_k_row_update": SERIAL._k_row_update}, _REVERSE_NAMES
)


def reverse_kernels_for(n_entries):
    """The reverse kernels for ``n_entries`` cost entries, parallel or serial as the forward's
    (:func:`._kernels.kernels_for`)."""
    return _PARALLEL_REVERSE if kernels_for(n_entries) is PARALLEL else _SERIAL_REVERSE
