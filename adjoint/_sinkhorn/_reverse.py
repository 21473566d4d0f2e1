"""Numba kernels of the unrolled Sinkhorn gradient: the adjoint half steps, the store-all reverse
sweep, and the per-action work with which the executor of streamed plans of
:mod:`adjoint.checkpointing` runs the checkpointed reverse sweep (:func:`schedule_runner`)."""

from __future__ import annotations

import types

import numpy as np
from numba import njit, prange

from .._vecmath import _exp
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
    :func:`schedule_runner`.
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


# Checkpointed reverse sweep.  The schedules of adjoint.checkpointing see Sinkhorn as K steps on the
# state x_k = (f_k, g_k) (the iterate after k iterations, n + m floats, concatenated): step k is
# iteration k + 1.  The plan runs through the one executor of streamed plans
# (adjoint.checkpointing._streamed.gradient_checkpointed, rendered by ``executor_source`` into a
# generated module, see :func:`schedule_runner`) with the per-action work below in place of an ODE
# step.  Their convention is that the adjoint of step k needs only its input state x_k; the adjoint
# of iteration k + 1 needs f_k, g_{k+1} and f_{k+1}, so the adjoint step recomputes x_{k+1} from x_k
# (the two half steps, the same operations as the forward, hence the same bits) before running the
# two adjoint half steps.  The terminal step x_{K-1} -> x_K is not recomputed: x_K and the seed of
# the adjoint come from the forward solve.
#
# The executor's arguments ``C`` (the context) and ``p`` are passed through to the actions: here
# ``ctx = (C, a, b, loga, logb, eps_sched, fK, gK, abar, bbar, Cbar, work, fbar_seed, gbar_seed,
# recomputed)`` and an empty ``p``. The adjoint state ``lam`` is (fbar, gbar); abar, bbar, Cbar
# accumulate in ``ctx``, and ``recomputed[0]`` counts the iterations recomputed inside adjoint steps.
# Workspace: (nxt_f, nxt_g, f_tmp, g_tmp, fbar_prev, xw, ints) with ``ints[0]`` the step whose
# output nxt_* holds (-1: none).


@njit
def sk_workspace(x0, ctx, p):
    n = ctx[3].shape[0]
    m = ctx[4].shape[0]
    ints = np.empty(1, dtype=np.int64)
    ints[0] = -1
    return (np.empty(n), np.empty(m), np.empty(n), np.empty(m), np.empty(n), np.empty(n + m), ints)


@njit
def _sk_iterate(ctx, f, g, it, W):
    """Iteration ``it + 1`` in place on (f, g): the column half step, then the row half step."""
    C, loga, logb, eps_sched, work = ctx[0], ctx[3], ctx[4], ctx[5], ctx[11]
    eps = eps_sched[min(it, eps_sched.shape[0] - 1)]
    f_tmp, g_tmp = W[2], W[3]
    _k_col_update(C, f, loga, g, eps, g_tmp, work)
    _copy(g, g_tmp)
    _k_row_update(C, g, logb, f, eps, f_tmp, work)
    _copy(f, f_tmp)


@njit
def sk_advance(x, ctx, p, t0, tau, k0, k1, W):
    n = ctx[3].shape[0]
    f = x[:n]
    g = x[n:]
    for it in range(k0, k1):
        _sk_iterate(ctx, f, g, it, W)
    return 0


@njit
def sk_adjoint_one(x, ctx, p, t0, tau, k, lam, grad_c, gpa, W):
    """Adjoint of iteration k + 1 from x_k (in ``x``): lam = (fbar, gbar) becomes the adjoint of x_k."""
    C, a, b, loga, logb, eps_sched = ctx[0], ctx[1], ctx[2], ctx[3], ctx[4], ctx[5]
    abar, bbar, Cbar, work = ctx[8], ctx[9], ctx[10], ctx[11]
    nxt_f, nxt_g, fbar_prev, ints = W[0], W[1], W[4], W[6]
    n = loga.shape[0]
    cur_f = x[:n]
    cur_g = x[n:]
    eps = eps_sched[min(k, eps_sched.shape[0] - 1)]
    if ints[0] != k:
        _k_col_update(C, cur_f, loga, cur_g, eps, nxt_g, work)
        _k_row_update(C, nxt_g, logb, cur_f, eps, nxt_f, work)
        ctx[14][0] += 1
    fbar = lam[:n]
    gbar = lam[n:]
    _k_adjoint_row_step(C, nxt_f, nxt_g, b, eps, fbar, gbar, bbar, Cbar, work)
    _k_adjoint_col_step(C, cur_f, nxt_g, a, eps, gbar, fbar_prev, abar, Cbar, work)
    _copy(fbar, fbar_prev)
    for j in range(gbar.shape[0]):
        gbar[j] = 0.0
    ints[0] = -1
    return 0.0


@njit
def sk_terminal(x, ctx, p, t0, tau, K, t1, x_final, lam, gpa, W):
    """x_K and the seed come from the forward solve: nothing to compute (x holds x_{K-1})."""
    fK, gK, fbar_seed, gbar_seed = ctx[6], ctx[7], ctx[12], ctx[13]
    nxt_f, nxt_g, ints = W[0], W[1], W[6]
    n = fK.shape[0]
    _copy(nxt_f, fK)
    _copy(nxt_g, gK)
    ints[0] = K - 1
    for i in range(n):
        lam[i] = fbar_seed[i]
        x_final[i] = fK[i]
    for j in range(gK.shape[0]):
        lam[n + j] = gbar_seed[j]
        x_final[n + j] = gK[j]
    return 0.0, 0


@njit
def sk_adjoint_buffer(x0, grad_x0):
    """The adjoint state ``lam = (fbar, gbar)``."""
    return np.empty(x0.shape[0])


@njit
def sk_adjoint_out(lam, grad_x0):
    for i in range(lam.shape[0]):
        grad_x0[i] = lam[i]


@njit
def sk_sweep(x, slots, sl, ctx, p, t0, tau, a, bb, lam, grad_c, gpa, run, W):
    """``OP_SWEEP`` / ``OP_SWEEP_FULL`` on ``[a, bb)`` (as ``_streamed.g_sweep``): iterate storing
    x_{a+1} .. x_{bb-2} in ``slots[sl + 1 ..]``, then the adjoint steps bb - 1 .. a reading them back."""
    n = ctx[3].shape[0]
    N = x.shape[0]
    f = x[:n]
    g = x[n:]
    for k in range(a, bb - 1):
        _sk_iterate(ctx, f, g, k, W)
        if k < bb - 2:
            for i in range(N):
                slots[sl + k + 1 - a, i] = x[i]
    for k in range(bb - 1, a - 1, -1):
        if k < bb - 1:
            for i in range(N):
                x[i] = slots[sl + k - a, i]
        run += sk_adjoint_one(x, ctx, p, t0, tau, k, lam, grad_c, gpa, W)
    return run


@njit
def sk_oneslot(x, ctx, p, t0, tau, a, bb, lam, grad_c, gpa, run, W):
    """``OP_ONESLOT`` on ``[a, bb)`` (as ``_streamed.g_oneslot``): for kk = bb - 1 .. a recompute x_kk
    from x_a (in ``x``, left unchanged) and take adjoint step kk."""
    n = ctx[3].shape[0]
    xw = W[5]
    for kk in range(bb - 1, a - 1, -1):
        for i in range(x.shape[0]):
            xw[i] = x[i]
        fw = xw[:n]
        gw = xw[n:]
        for k in range(a, kk):
            _sk_iterate(ctx, fw, gw, k, W)
        run += sk_adjoint_one(xw, ctx, p, t0, tau, kk, lam, grad_c, gpa, W)
    return run


_ACTIONS = ("workspace", "advance", "adjoint_one", "terminal", "sweep", "oneslot", "adjoint_buffer", "adjoint_out")
_GEN_VERSION = "1"


_RUNNERS: dict = {}


def schedule_runner(serial: bool):
    """The executor of streamed plans with Sinkhorn's actions (``serial``: the serial half steps),
    from a generated module of :mod:`adjoint._modules` (cached on disk like every other; built once
    per process)."""
    got = _RUNNERS.get(serial)
    if got is None:
        got = _RUNNERS[serial] = _build_runner(serial)
    return got


def _build_runner(serial: bool):
    import os

    from .. import _modules
    from ..checkpointing import _streamed

    sfx = "_serial" if serial else ""
    head = [
        "# generated by adjoint._sinkhorn._reverse: do not edit",
        "import numpy as np",
        "from numba import njit",
        "from adjoint.checkpointing._streamed import (CHUNK, OP_ADJOINT, OP_ADVANCE, OP_MASK, OP_ONESLOT,",
        "    OP_RESTORE, OP_SHIFT, OP_STORE, OP_SWEEP, OP_SWEEP_FULL, plan_chunk, plan_compound)",
        "from adjoint._sinkhorn._reverse import (",
    ]
    head += [f"    sk_{name}{sfx} as {name}," for name in _ACTIONS]
    head += [")"]
    src = "\n".join(head) + "\n\n\n@njit(cache=True)\n" + _streamed.executor_source("run_schedule")
    here = os.path.dirname(os.path.abspath(__file__))
    files = (_streamed.__file__, os.path.join(here, "_reverse.py"), os.path.join(here, "_kernels.py"))
    stamp = "".join(f"{os.path.basename(f)}:{_modules.file_digest(f)};" for f in files)
    return _modules.load("sinkhorn", _GEN_VERSION, src, stamp).run_schedule


# the reverse kernels and their serial variants (see :func:`._kernels.serial_variants`), which call
# the serial half steps
_REVERSE_NAMES = (
    "_k_adjoint_row_step",
    "_k_adjoint_col_step",
    "_k_run_reverse",
    "_sk_iterate",
    *(f"sk_{name}" for name in _ACTIONS),
)
_PARALLEL_REVERSE = types.SimpleNamespace(**{name: globals()[name] for name in _REVERSE_NAMES})
_SERIAL_REVERSE = serial_variants(
    {**globals(), "_k_col_update": SERIAL._k_col_update, "_k_row_update": SERIAL._k_row_update}, _REVERSE_NAMES
)
# module attributes, for the generated executor to import the serial actions by name
globals().update({f"{name}_serial": fn for name, fn in vars(_SERIAL_REVERSE).items()})


def reverse_kernels_for(n_entries):
    """The reverse kernels for ``n_entries`` cost entries, parallel or serial as the forward's
    (:func:`._kernels.kernels_for`)."""
    return _PARALLEL_REVERSE if kernels_for(n_entries) is PARALLEL else _SERIAL_REVERSE
