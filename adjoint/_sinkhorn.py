"""Entropic optimal transport (Sinkhorn) and its gradients.

Public names: :func:`solve_sinkhorn`, :func:`sinkhorn_value_and_grad`,
:class:`SinkhornResult`, :class:`SinkhornGradResult`.

Conventions
-----------
Potentials are taken relative to the product measure ``a x b`` (the convention of
OTT-JAX and GeomLoss):

    P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)

and one Sinkhorn iteration is the pair of soft c-transforms (column update first,
as in POT's ``sinkhorn_log``)

    g_j <- -eps log sum_i a_i exp((f_i - C_ij) / eps)
    f_i <- -eps log sum_j b_j exp((g_j - C_ij) / eps)

so that after every iteration the row marginals of ``P`` are exact and the column
marginals carry the error.  POT's log-potentials are ``u = f/eps + log a`` and
``v = g/eps + log b``.

Layout: numba kernels (``_k_*``, arrays and scalars only, no validation) first, then
the Python layer (validation, strategy selection, gradient modes, result objects).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass, field

import numba
import numpy as np
from numba import njit, prange

# vectorisable exp and fma (numba here has no SVML: np.exp is a scalar libm call);
# _k_exp_array is imported by the tests
from ._vecmath import _exp, _fma, _k_exp_array  # noqa: F401
from .checkpointing._streamed import (
    CHUNK as _PLAN_CHUNK,
)
from .checkpointing._streamed import (
    OP_ADVANCE as _OP_ADVANCE,
)
from .checkpointing._streamed import (
    OP_RESTORE as _OP_RESTORE,
)
from .checkpointing._streamed import (
    OP_STORE as _OP_STORE,
)
from .checkpointing._streamed import (
    OP_TERMINAL as _OP_TERMINAL,
)
from .checkpointing._streamed import (
    RULE_BINOMIAL as _RULE_BINOMIAL,
)
from .checkpointing._streamed import (
    RULE_UNIFORM as _RULE_UNIFORM,
)
from .checkpointing._streamed import (
    plan_chunk as _plan_chunk,
)
from .checkpointing._streamed import (
    plan_init as _plan_init,
)

__all__ = [
    "SinkhornResult",
    "SinkhornGradResult",
    "solve_sinkhorn",
    "sinkhorn_value_and_grad",
]

# ----------------------------------------------------------------------------------
# Log-domain half steps
# ----------------------------------------------------------------------------------

# Sums of shifted exponentials accepted without recomputation: outside this range
# the shift (taken from the previous iterate) was too far from the maximum.
_SUM_LO = 1e-200
_SUM_HI = 1e200


def _n_chunks(n):
    """Fixed number of row blocks for parallel column reductions (deterministic)."""
    return max(1, min(8, n // 64))


@njit(cache=True, fastmath={"reassoc"})
def _sum(buf, m):
    """sum(buf[:m]), vectorised.

    ``reassoc`` lets LLVM split the sum over SIMD lanes; the order of the
    additions is fixed at compile time (it depends on m only, not on the data,
    the alignment or the thread count), so results are deterministic.
    """
    acc = 0.0
    for j in range(m):
        acc += buf[j]
    return acc


@njit(cache=True)
def _copy(dst, src):
    """dst[:] = src for two vectors of equal length. Kernels copy through this loop: numba's slice
    assignment from an array compiles its shape-mismatch message (string formatting), about 2 s
    of the first compile of the Sinkhorn kernels."""
    for i in range(dst.shape[0]):
        dst[i] = src[i]


@njit(cache=True, inline="always")
def _row_shifted_sum(Ci, beta, ie, s, buf, m):
    """buf_j = exp(beta_j - C_ij/eps - s) and acc = sum_j buf_j for one row i, with the shift s
    replaced by the row's maximum when acc leaves [_SUM_LO, _SUM_HI] (then recomputed).
    Returns (s, acc, the sum with the first shift)."""
    for j in range(m):
        buf[j] = _exp(beta[j] - Ci[j] * ie - s)
    acc = _sum(buf, m)
    first = acc
    if not (acc >= _SUM_LO and acc <= _SUM_HI):
        s = -np.inf
        for j in range(m):
            v = beta[j] - Ci[j] * ie
            if v > s:
                s = v
        for j in range(m):
            buf[j] = _exp(beta[j] - Ci[j] * ie - s)
        acc = _sum(buf, m)
    return s, acc, first


@njit(cache=True, parallel=True)
def _k_row_update(C, g, logb, f_old, eps, f_new, work):
    """f_new_i = -eps log sum_j b_j exp((g_j - C_ij)/eps); shift from f_old.

    One exponential per entry: the shift -f_old_i/eps is the previous value of the
    log-sum-exp; rows whose shifted sum leaves [1e-200, 1e200] are recomputed with
    the exact maximum (early iterations, eps-scaling steps).  ``work`` (nb, m)
    holds one row buffer per block of rows (the exponentials are written to it,
    which vectorises, then summed).
    """
    n, m = C.shape
    ie = 1.0 / eps
    nb = work.shape[0]
    beta = np.empty(m)
    for j in range(m):
        beta[j] = g[j] * ie + logb[j]
    for t in prange(nb):
        i0 = (t * n) // nb
        i1 = ((t + 1) * n) // nb
        buf = work[t]
        for i in range(i0, i1):
            s, acc, _ = _row_shifted_sum(C[i], beta, ie, -f_old[i] * ie, buf, m)
            f_new[i] = -eps * (s + math.log(acc))


@njit(cache=True, parallel=True)
def _k_col_update(C, f, loga, g_old, eps, g_new, work):
    """g_new_j = -eps log sum_i a_i exp((f_i - C_ij)/eps); shift from g_old.

    C is row major, so rows are split into ``work.shape[0]`` blocks reduced in
    parallel (fixed blocks: the result does not depend on the thread count).
    Returns the L1 column-marginal error of the plan of (f, g_old), which the
    ratio of new and old sums gives for free:
    colsum_j = b_j exp((g_old_j - g_new_j)/eps).
    """
    n, m = C.shape
    ie = 1.0 / eps
    nb = work.shape[0]
    sh = np.empty(m)
    for j in range(m):
        sh[j] = g_old[j] * ie
    for t in prange(nb):
        i0 = (t * n) // nb
        i1 = ((t + 1) * n) // nb
        w = work[t]
        for j in range(m):
            w[j] = 0.0
        for i in range(i0, i1):
            al = f[i] * ie + loga[i]
            Ci = C[i]
            for j in range(m):
                w[j] = w[j] + _exp(al - Ci[j] * ie + sh[j])
    nbad = 0
    for j in range(m):
        acc = 0.0
        for t in range(nb):
            acc += work[t, j]
        if acc >= _SUM_LO and acc <= _SUM_HI:
            g_new[j] = -eps * (math.log(acc) - sh[j])
        else:
            g_new[j] = np.nan
            nbad += 1
    if nbad > 0:
        # exact two-pass log-sum-exp for the offending columns only
        bad = np.empty(nbad, dtype=np.int64)
        q = 0
        for j in range(m):
            if np.isnan(g_new[j]):
                bad[q] = j
                q += 1
        mx = np.full(nbad, -np.inf)
        for i in range(n):
            al = f[i] * ie + loga[i]
            for q in range(nbad):
                v = al - C[i, bad[q]] * ie
                if v > mx[q]:
                    mx[q] = v
        sm = np.zeros(nbad)
        for i in range(n):
            al = f[i] * ie + loga[i]
            for q in range(nbad):
                sm[q] += _exp(al - C[i, bad[q]] * ie - mx[q])
        for q in range(nbad):
            g_new[bad[q]] = -eps * (mx[q] + math.log(sm[q]))
    return nbad


@njit(cache=True)
def _k_col_error(g_old, g_new, b, eps):
    """L1 column error of the plan of (f, g_old) from the update g_old -> g_new."""
    err = 0.0
    for j in range(b.shape[0]):
        if b[j] > 0.0:
            err += b[j] * abs(math.expm1((g_old[j] - g_new[j]) / eps))
    return err


@njit(cache=True)
def _k_log_loop(C, loga, logb, b, eps_sched, f, g, max_iter, tol, work, store_f, store_g, store_at):
    """Log-domain Sinkhorn iterations, in place on (f, g).

    Iteration k (k = 1, 2, ...) uses eps_sched[min(k-1, len-1)].  Before each
    iteration the column error of the current iterate is obtained from the column
    update; if it is <= tol (tol > 0) the loop stops and that update is discarded,
    so the returned iterate is the one whose error was measured.  With
    store_f.shape[0] > 0 the iterates are written to store_f[store_at + k],
    store_g[store_at + k] (StoreAll).  Returns (iterations done, converged,
    last measured error).
    """
    return _k_log_iterate(
        C, loga, loga, logb, b, eps_sched, f, g, max_iter, tol, work, store_f, store_g, store_at, False
    )


# Column sums carried over from a fused row pass are used only if every row's
# one-pass sum stayed in this range (the shifts were accurate: entries below the
# exp cut-off are then < 1e-258 of their row and of any accepted column sum).
_FUSE_LO = 1e-50
_FUSE_HI = 1e50


@njit(cache=True, parallel=True)
def _k_row_update_fused(C, g, logb, f_old, a, eps, f_new, work, wsum, W):
    """_k_row_update that also yields the next column update's sums (one pass).

    With buf_ij = b_j exp((f_old_i + g_j - C_ij)/eps) (the shifted terms of row
    i) and acc_i = sum_j buf_ij, the new potential is f_new_i = f_old_i - eps
    log acc_i, so exp((f_new_i + g_j - C_ij)/eps) = buf_ij / (b_j acc_i): the
    row-normalised terms already hold the entries of the new plan.  Hence
    W_j = sum_i a_i buf_ij / acc_i = b_j S_j, where S_j is the shifted sum of the
    next column update (shift g_j) -- without a second exponential per entry.
    ``wsum`` (nb, m) holds per-block partial sums (fixed blocks and order).
    Returns True if every row's one-pass sum was in [_FUSE_LO, _FUSE_HI].
    """
    n, m = C.shape
    ie = 1.0 / eps
    nb = work.shape[0]
    beta = np.empty(m)
    for j in range(m):
        beta[j] = g[j] * ie + logb[j]
    ok = np.ones(nb, dtype=np.bool_)
    for t in prange(nb):
        i0 = (t * n) // nb
        i1 = ((t + 1) * n) // nb
        buf = work[t]
        w = wsum[t]
        for j in range(m):
            w[j] = 0.0
        for i in range(i0, i1):
            s, acc, first = _row_shifted_sum(C[i], beta, ie, -f_old[i] * ie, buf, m)
            if not (first >= _FUSE_LO and first <= _FUSE_HI):
                ok[t] = False
            f_new[i] = -eps * (s + math.log(acc))
            sc = a[i] / acc
            for j in range(m):
                w[j] = _fma(buf[j], sc, w[j])
    for j in range(m):
        acc = 0.0
        for t in range(nb):
            acc += wsum[t, j]
        W[j] = acc
    good = True
    for t in range(nb):
        good = good and ok[t]
    return good


@njit(cache=True)
def _k_col_from_sums(W, b, g_old, eps, g_new):
    """g_new_j = g_old_j - eps log(W_j / b_j); False if a column needs the
    direct update (b_j = 0, or a sum outside the accepted range)."""
    for j in range(b.shape[0]):
        bj = b[j]
        wj = W[j]
        if not (bj > 0.0 and wj >= _SUM_LO):
            return False
        q = wj / bj
        if not (q >= _SUM_LO and q <= _SUM_HI):
            return False
        g_new[j] = g_old[j] - eps * math.log(q)
    return True


@njit(cache=True)
def _k_log_loop_fused(C, a, loga, logb, b, eps_sched, f, g, max_iter, tol, work):
    """_k_log_loop (no storing) with one exponential per entry and iteration.

    The row half step of iteration k also accumulates the column sums of
    iteration k + 1 (_k_row_update_fused), which replace the column pass when
    the shifts were accurate and eps does not change between the two
    iterations; otherwise the column update is computed directly.  Same
    iterates as _k_log_loop up to rounding (used by solves, not by unrolled
    gradients, which differentiate -- and recompute -- _k_log_loop's iterates).
    Returns (iterations done, converged, last measured error).
    """
    e = np.empty((0, 0))
    return _k_log_iterate(C, a, loga, logb, b, eps_sched, f, g, max_iter, tol, work, e, e, 0, True)


@njit(inline="always")
def _k_log_iterate(C, a, loga, logb, b, eps_sched, f, g, max_iter, tol, work, store_f, store_g, store_at, fuse):
    """The loop of _k_log_loop (fuse=False: two exponentials per entry and
    iteration, optional storing) and of _k_log_loop_fused (fuse=True)."""
    n = f.shape[0]
    m = g.shape[0]
    g_new = np.empty(m)
    f_new = np.empty(n)
    W = np.empty(m if fuse else 0)
    wsum = np.empty((work.shape[0], work.shape[1]) if fuse else (0, 0))
    nsched = eps_sched.shape[0]
    storing = store_f.shape[0] > 0
    err = np.inf
    k = 0
    converged = False
    have_w = False
    eps_w = 0.0
    while k < max_iter:
        eps = eps_sched[min(k, nsched - 1)]
        done = False
        if have_w and eps == eps_w:
            done = _k_col_from_sums(W, b, g, eps, g_new)
        if not done:
            _k_col_update(C, f, loga, g, eps, g_new, work)
        if tol > 0.0:
            # error of the current iterate, tested only at the final eps
            if k >= nsched - 1:
                err = _k_col_error(g, g_new, b, eps)
                if err <= tol:
                    converged = True
                    break
        for j in range(m):
            if not np.isfinite(g_new[j]):
                return k, False, np.nan
            g[j] = g_new[j]
        if fuse:
            have_w = _k_row_update_fused(C, g, logb, f, a, eps, f_new, work, wsum, W)
            eps_w = eps
        else:
            _k_row_update(C, g, logb, f, eps, f_new, work)
        for i in range(n):
            f[i] = f_new[i]
        k += 1
        if storing:
            _copy(store_f[store_at + k], f)
            _copy(store_g[store_at + k], g)
    return k, converged, err


# ----------------------------------------------------------------------------------
# Stabilised scaling domain (Schmitzer 2019): matrix-vector speed, small eps safe
# ----------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _k_gibbs(C, f, g, eps, out):
    """out_ij = exp((f_i + g_j - C_ij)/eps) (the absorbed kernel)."""
    n, m = C.shape
    ie = 1.0 / eps
    gs = g * ie
    for i in prange(n):
        fi = f[i] * ie
        Ci = C[i]
        oi = out[i]
        for j in range(m):
            oi[j] = _exp(fi + gs[j] - Ci[j] * ie)


@njit(cache=True, fastmath={"reassoc", "contract"})
def _dot(x, y, m):
    """sum_j x[j] y[j], vectorised (order fixed at compile time, as in _sum)."""
    acc = 0.0
    for j in range(m):
        acc += x[j] * y[j]
    return acc


@njit(cache=True, parallel=True)
def _k_kt_matvec(K, au, work, out):
    """out = K^T au, reading K row by row (fixed row blocks, deterministic)."""
    n, m = K.shape
    nb = work.shape[0]
    for t in prange(nb):
        i0 = (t * n) // nb
        i1 = ((t + 1) * n) // nb
        w = work[t]
        for j in range(m):
            w[j] = 0.0
        for i in range(i0, i1):
            Ki = K[i]
            s = au[i]
            for j in range(m):
                w[j] = _fma(Ki[j], s, w[j])
    for j in range(m):
        acc = 0.0
        for t in range(nb):
            acc += work[t, j]
        out[j] = acc


@njit(cache=True, parallel=True)
def _k_scaling_pass(K, bv, a, u, work, kv):
    """One pass over K for a row half step and the next column product.

    u_i = 1 / (K bv)_i (row scaling update), then kv = K^T (a u) with the new u
    (the matrix-vector product of the next column update), accumulated from
    the same row of K while it is in cache: K is read once per iteration
    instead of twice (the scaling domain is memory bound for large n).  Rows
    are split in fixed blocks, each with its own partial sum of kv (work[t]),
    reduced in a fixed order: the result does not depend on the thread count.
    """
    n, m = K.shape
    nb = work.shape[0]
    for t in prange(nb):
        i0 = (t * n) // nb
        i1 = ((t + 1) * n) // nb
        w = work[t]
        for j in range(m):
            w[j] = 0.0
        for i in range(i0, i1):
            Ki = K[i]
            ui = 1.0 / _dot(Ki, bv, m)
            u[i] = ui
            s = a[i] * ui
            for j in range(m):
                w[j] = _fma(Ki[j], s, w[j])
    for j in range(m):
        acc = 0.0
        for t in range(nb):
            acc += work[t, j]
        kv[j] = acc


@njit(cache=True)
def _k_absorb(f, g, u, v, eps):
    for i in range(f.shape[0]):
        f[i] += eps * math.log(u[i])
        u[i] = 1.0
    for j in range(g.shape[0]):
        g[j] += eps * math.log(v[j])
        v[j] = 1.0


@njit(cache=True)
def _k_bad_scaling(u, tau):
    """True if a scaling is not finite or |log u| > tau (time to absorb)."""
    hi = math.exp(tau)
    lo = 1.0 / hi
    for i in range(u.shape[0]):
        x = u[i]
        if not (x >= lo and x <= hi):
            return True
    return False


@njit(cache=True)
def _k_scaling_loop(C, a, b, loga, logb, eps, f, g, Kt, max_iter, tol, tau, work):
    """Stabilised scaling iterations, in place on (f, g); Kt is scratch (n, m).

    Plan P = diag(a u) Kt diag(b v) with Kt = exp((f + g - C)/eps).  The scalings
    (u, v) are absorbed into (f, g) and Kt rebuilt when |log u| or |log v| exceeds
    tau; a scaling that over- or underflows is recomputed by a log-domain half
    step (always safe).  Each iteration reads Kt once (_k_scaling_pass: the row
    update and the product of the next column update share the pass).  Returns
    (iterations, converged, last error, absorptions).
    """
    n = f.shape[0]
    m = g.shape[0]
    u = np.ones(n)
    v = np.ones(m)
    un = np.empty(n)
    g_new = np.empty(m)
    f_new = np.empty(n)
    au = np.empty(n)
    bv = np.empty(m)
    vn = np.empty(m)
    kv = np.empty(m)  # Kt^T (a u) for the current u
    kv_next = np.empty(m)
    _k_gibbs(C, f, g, eps, Kt)
    for i in range(n):
        au[i] = a[i] * u[i]
    _k_kt_matvec(Kt, au, work, kv)
    n_absorb = 0
    err = np.inf
    k = 0
    converged = False
    while k < max_iter:
        # column update: v = 1 / (Kt^T (a u))
        for j in range(m):
            vn[j] = 1.0 / kv[j]
        if tol > 0.0:
            err = 0.0
            for j in range(m):
                if b[j] > 0.0:
                    err += b[j] * abs(v[j] * kv[j] - 1.0)
            if err <= tol:
                converged = True
                break
        if _k_bad_scaling(vn, tau):
            # absorb u, then redo the column update in the log domain
            _k_absorb(f, g, u, v, eps)
            _k_col_update(C, f, loga, g, eps, g_new, work)
            _copy(g, g_new)
            _k_gibbs(C, f, g, eps, Kt)
            n_absorb += 1
        else:
            _copy(v, vn)
        # row update u = 1 / (Kt (b v)) and, in the same pass, Kt^T (a u)
        for j in range(m):
            bv[j] = b[j] * v[j]
        _k_scaling_pass(Kt, bv, a, un, work, kv_next)
        if _k_bad_scaling(un, tau):
            _k_absorb(f, g, u, v, eps)
            _k_row_update(C, g, logb, f, eps, f_new, work)
            _copy(f, f_new)
            _k_gibbs(C, f, g, eps, Kt)
            n_absorb += 1
            for i in range(n):
                au[i] = a[i] * u[i]
            _k_kt_matvec(Kt, au, work, kv)
        else:
            _copy(u, un)
            _copy(kv, kv_next)
        k += 1
    _k_absorb(f, g, u, v, eps)
    return k, converged, err, n_absorb


# ----------------------------------------------------------------------------------
# Plan statistics, plan, cost matrices
# ----------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _k_plan_stats(C, f, g, loga, logb, eps, work):
    """One pass over P: returns (<P, C>, sum P log(P/(a b)), row sums, col sums)."""
    n, m = C.shape
    ie = 1.0 / eps
    nb = work.shape[0]
    rows = np.zeros(n)
    pc = np.zeros(nb)
    pl = np.zeros(nb)
    for t in prange(nb):
        i0 = (t * n) // nb
        i1 = ((t + 1) * n) // nb
        w = work[t]
        for j in range(m):
            w[j] = 0.0
        spc = 0.0
        spl = 0.0
        for i in range(i0, i1):
            rs = 0.0
            Ci = C[i]
            fi = f[i]
            lai = loga[i]
            for j in range(m):
                z = (fi + g[j] - Ci[j]) * ie
                p = _exp(lai + logb[j] + z)
                rs += p
                w[j] = w[j] + p
                spc += p * Ci[j]
                spl += p * z if p > 0.0 else 0.0
            rows[i] = rs
        pc[t] = spc
        pl[t] = spl
    cols = np.zeros(m)
    for t in range(nb):
        for j in range(m):
            cols[j] += work[t, j]
    # explicit loops: in a parallel=True kernel ``pc.sum()`` would become a
    # parallel reduction whose order depends on the thread count
    tpc = 0.0
    tpl = 0.0
    for t in range(nb):
        tpc += pc[t]
        tpl += pl[t]
    return tpc, tpl, rows, cols


@njit(cache=True, parallel=True)
def _k_plan(C, f, g, loga, logb, eps, out):
    n, m = C.shape
    ie = 1.0 / eps
    for i in prange(n):
        Ci = C[i]
        oi = out[i]
        fi = f[i]
        lai = loga[i]
        for j in range(m):
            oi[j] = _exp(lai + logb[j] + (fi + g[j] - Ci[j]) * ie)


@njit(cache=True, parallel=True)
def _k_sqeuclidean(x, y, out):
    """out_ij = |x_i - y_j|^2 (difference form: exact for nearby points)."""
    n, d = x.shape
    m = y.shape[0]
    for i in prange(n):
        for j in range(m):
            s = 0.0
            for k in range(d):
                t = x[i, k] - y[j, k]
                s += t * t
            out[i, j] = s


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


# Checkpoint-schedule actions executed by _k_run_reverse.  StoreAll uses only
# ADJOINT (every state is stored); a binomial schedule would interleave RESTORE
# (slot -> current state), ADVANCE (one forward iteration) and STORE (current ->
# slot) before each ADJOINT.
_ACT_ADVANCE = 0
_ACT_STORE = 1
_ACT_RESTORE = 2
_ACT_ADJOINT = 3


@njit(cache=True)
def _k_run_reverse(
    actions, C, a, b, loga, logb, eps_sched, slots_f, slots_g, slot_iter, fbar, gbar, abar, bbar, Cbar, work
):
    """Execute a reverse schedule: rows of ``actions`` are (kind, arg).

    ADJOINT k: reverse iteration k (needs f_{k-1} and the iterate (f_k, g_k) in
    the slots whose iteration index ``slot_iter`` equals k-1 and k); fbar, gbar
    hold the adjoints of (f_k, g_k) on entry and of (f_{k-1}, g_{k-1}) on exit.
    STORE / RESTORE / ADVANCE move states between a working state and the slots
    (kept general for checkpointing schedules; StoreAll never needs them).
    """
    n = fbar.shape[0]
    m = gbar.shape[0]
    nsched = eps_sched.shape[0]
    fbar_prev = np.empty(n)
    cur_f = np.zeros(n)
    cur_g = np.zeros(m)
    cur_k = 0
    g_tmp = np.empty(m)
    f_tmp = np.empty(n)
    # map iteration index -> slot (slots hold iterates in arbitrary order)
    for r in range(actions.shape[0]):
        kind = actions[r, 0]
        arg = actions[r, 1]
        if kind == _ACT_ADVANCE:
            eps = eps_sched[min(cur_k, nsched - 1)]
            _k_col_update(C, cur_f, loga, cur_g, eps, g_tmp, work)
            _copy(cur_g, g_tmp)
            _k_row_update(C, cur_g, logb, cur_f, eps, f_tmp, work)
            _copy(cur_f, f_tmp)
            cur_k += 1
        elif kind == _ACT_STORE:
            _copy(slots_f[arg], cur_f)
            _copy(slots_g[arg], cur_g)
            slot_iter[arg] = cur_k
        elif kind == _ACT_RESTORE:
            _copy(cur_f, slots_f[arg])
            _copy(cur_g, slots_g[arg])
            cur_k = slot_iter[arg]
        else:  # ADJOINT of iteration arg
            k = arg
            sk = -1
            sp = -1
            for s in range(slot_iter.shape[0]):
                if slot_iter[s] == k:
                    sk = s
                if slot_iter[s] == k - 1:
                    sp = s
            eps = eps_sched[min(k - 1, nsched - 1)]
            fk = slots_f[sk]
            gk = slots_g[sk]
            _k_adjoint_row_step(C, fk, gk, b, eps, fbar, gbar, bbar, Cbar, work)
            _k_adjoint_col_step(C, slots_f[sp], gk, a, eps, gbar, fbar_prev, abar, Cbar, work)
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


# ----------------------------------------------------------------------------------
# Result objects
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkhornResult:
    """Result of :func:`solve_sinkhorn`.

    Attributes
    ----------
    f : ndarray, shape (n,)
        Potential on the source side (relative to ``a x b``, see Notes).
    g : ndarray, shape (m,)
        Potential on the target side.  The gauge ``(f + c, g - c)`` is fixed by
        ``<f, a> = <g, b>``.
    transport_cost : float
        ``<P, C>`` (POT's ``sinkhorn2`` value).
    reg_cost : float
        ``<P, C> + eps KL(P | a x b)``; equals ``<f, a> + <g, b>`` at convergence.
    iterations : int
        Sinkhorn iterations done (one iteration = column then row update;
        epsilon-scaling stages included).
    marginal_error : float
        ``|P 1 - a|_1 + |P^T 1 - b|_1`` of the returned plan.
    converged : bool
        ``marginal_error <= tol`` reached within ``max_iter`` (False when
        ``tol = 0``: a fixed number of iterations was asked for).
    eps : float
        Regularisation.
    method : str
        ``"log"`` or ``"scaling"`` (the domain actually used).
    absorptions : int
        Kernel rebuilds of the stabilised scaling method (0 for ``"log"``).

    Notes
    -----
    The plan ``P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps)`` is not stored unless
    ``return_plan=True`` was given: :attr:`plan` rebuilds it (time and memory
    O(n m)) from the potentials and the cost matrix kept by reference.
    """

    f: np.ndarray
    g: np.ndarray
    transport_cost: float
    reg_cost: float
    iterations: int
    marginal_error: float
    converged: bool
    eps: float
    method: str
    absorptions: int = 0
    a: np.ndarray = field(default=None, repr=False)
    b: np.ndarray = field(default=None, repr=False)
    cost: np.ndarray = field(default=None, repr=False)
    stored_plan: np.ndarray | None = field(default=None, repr=False)

    @property
    def plan(self) -> np.ndarray:
        """Transport plan, shape (n, m) (rebuilt on each access unless stored)."""
        if self.stored_plan is not None:
            return self.stored_plan
        return _plan(self.cost, self.f, self.g, self.a, self.b, self.eps)

    @property
    def dual_value(self) -> float:
        """``<f, a> + <g, b>``."""
        return float(self.f @ self.a + self.g @ self.b)


@dataclass(frozen=True)
class SinkhornGradResult:
    """Result of :func:`sinkhorn_value_and_grad`.

    Attributes
    ----------
    value : float
        ``<f, a> + <g, b>`` at the final potentials (the regularised cost; equal
        to ``solution.reg_cost`` at convergence), or the user loss.
    grad_a : ndarray, shape (n,)
        Gradient with respect to ``a`` on the simplex: projected on the tangent
        space ``sum(da) = 0`` (mean removed), see Notes of
        :func:`sinkhorn_value_and_grad`.
    grad_b : ndarray, shape (m,)
        Same for ``b``.
    grad_x : ndarray, shape (n, d)
    grad_y : ndarray, shape (m, d)
    mode : str
        ``"implicit"``, ``"unrolled"`` or ``"envelope"``.
    solution : SinkhornResult
        The forward solve.
    linear_solver : str
        ``"dense"`` or ``"cg"`` (implicit mode), else ``""``.
    linear_iterations : int
        CG iterations (implicit mode with CG), else 0.
    linear_residual : float
        Relative residual of the implicit linear system (0 for other modes).
    stored_bytes : int
        Bytes of the stored iterates and of the cost adjoint (unrolled:
        ``slots (n + m) 8 + n m 8``, slots = K + 1 for store-all, ``min(s, K)``
        with ``s`` snapshots), or of the plan and linear system (implicit); the
        plan for envelope.
    schedule : str
        Unrolled mode: the checkpoint schedule that ran (``"StoreAll"`` or e.g.
        ``"Revolve(snapshots=10)"``; a ``MemoryBudget`` shows what it resolved
        to); else ``""``.
    forward_iterations : int
        Unrolled mode: Sinkhorn iterations evaluated in total, the forward solve
        included (K for store-all; ``K + p(K, s) + (K - 1)`` for Revolve, see
        the Notes of :func:`sinkhorn_value_and_grad`); else 0.
    peak_stored_iterates : int
        Unrolled mode: iterates ``(f_k, g_k)`` held at once (K + 1 for
        store-all, at most ``s`` with a schedule); else 0.
    """

    value: float
    grad_a: np.ndarray
    grad_b: np.ndarray
    grad_x: np.ndarray
    grad_y: np.ndarray
    mode: str
    solution: SinkhornResult
    linear_solver: str = ""
    linear_iterations: int = 0
    linear_residual: float = 0.0
    stored_bytes: int = 0
    schedule: str = ""
    forward_iterations: int = 0
    peak_stored_iterates: int = 0


# ----------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------

_NORM_TOL = 1e-8


def _as_weights(w, name, size_name):
    arr = np.asarray(w, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D array of weights; got shape {arr.shape}. Pass a vector of length {size_name}."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` must not be empty.")
    if not np.all(np.isfinite(arr)):
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"`{name}` must be finite; got {arr[i]} at index {i}.")
    if np.any(arr < 0):
        i = int(np.argmin(arr))
        raise ValueError(
            f"`{name}` must be nonnegative (weights of a probability measure); "
            f"got {float(arr[i])!r} at index {i}. Clip or shift the weights, then "
            f"normalise them."
        )
    s = float(arr.sum())
    if abs(s - 1.0) > _NORM_TOL:
        raise ValueError(
            f"`{name}` must sum to 1 (balanced transport between probability "
            f"measures); got sum {s!r}. Normalise it: `{name} / {name}.sum()`."
        )
    return np.ascontiguousarray(arr)


def _as_eps(eps):
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"`eps` must be a positive float; got {eps!r}.") from None
    if not (e > 0.0 and math.isfinite(e)):
        raise ValueError(
            f"`eps` must be a positive finite float (the entropic "
            f"regularisation); got {eps!r}. Use e.g. eps=0.05 times the cost "
            f"scale."
        )
    return e


def _as_cost(cost, n, m):
    C = np.asarray(cost, dtype=np.float64)
    if C.shape != (n, m):
        raise ValueError(f"`cost` must have shape (n, m) = ({n}, {m}) to match `a` and `b`; got shape {C.shape}.")
    if not np.all(np.isfinite(C)):
        bad = np.argwhere(~np.isfinite(C))[0]
        raise ValueError(
            f"`cost` must be finite; got {C[tuple(bad)]} at index "
            f"{tuple(int(i) for i in bad)}. Remove NaN/inf entries (forbid a pair "
            f"with a large finite cost instead of inf)."
        )
    return np.ascontiguousarray(C)


def _as_points(p, name, n, size_name, d=None):
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(
            f"`{name}` must have shape ({size_name}, d) = ({n}, d) to match the weights; got shape {arr.shape}."
        )
    if d is not None and arr.shape[1] != d:
        raise ValueError(f"`{name}` must have the same dimension d = {d} as `x`; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite; it contains NaN or inf.")
    return np.ascontiguousarray(arr)


def _check_positive_int(v, name):
    if not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {v!r}.")
    return int(v)


_METHODS = ("auto", "log", "scaling")


# ----------------------------------------------------------------------------------
# Forward solve
# ----------------------------------------------------------------------------------


# Below this many cost entries a half step takes well under a millisecond and the
# fork/join of a parallel region (very slow when the cores are shared) does not pay.
_PARALLEL_MIN_ENTRIES = 1_000_000


@contextlib.contextmanager
def _threads_for(n_entries):
    """Run small problems on one thread (restores the caller's setting)."""
    if n_entries >= _PARALLEL_MIN_ENTRIES:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _log_weights(w):
    with np.errstate(divide="ignore"):
        return np.log(w)


def _eps_schedule(C, eps, eps_scaling):
    """eps per iteration: stages (one iteration each) then eps.

    ``eps_scaling`` = ratio r in (0, 1): geometric decrease from the cost range
    ``max C - min C`` to eps; or an explicit 1-D sequence of stage values.
    """
    if eps_scaling is None:
        return np.array([eps])
    if np.ndim(eps_scaling) == 1:
        st = np.asarray(eps_scaling, dtype=np.float64)
        if not (np.all(np.isfinite(st)) and np.all(st > 0)):
            raise ValueError(
                f"`eps_scaling` given as a sequence must hold positive finite values; got {eps_scaling!r}."
            )
        return np.concatenate([st, [eps]])
    try:
        r = float(eps_scaling)
    except (TypeError, ValueError):
        r = -1.0
    if not (0.0 < r < 1.0):
        raise ValueError(
            f"`eps_scaling` must be a ratio in (0, 1) (e.g. 0.9), a 1-D sequence "
            f"of eps values, or None; got {eps_scaling!r}."
        )
    eps0 = max(float(C.max() - C.min()), eps)
    k = max(0, int(math.ceil(math.log(eps / eps0) / math.log(r))))
    sched = eps0 * r ** np.arange(k + 1)
    sched = np.maximum(sched, eps)
    sched[-1] = eps
    return sched


def _gauge(f, g, a, b):
    """Shift (f + c, g - c) so that <f, a> = <g, b>."""
    c = (g @ b - f @ a) / (a.sum() + b.sum())
    return f + c, g - c


def _plan(C, f, g, a, b, eps):
    P = np.empty(C.shape)
    _k_plan(C, f, g, _log_weights(a), _log_weights(b), eps, P)
    return P


def _solve(a, b, C, eps, *, tol, max_iter, method, eps_scaling, init, warn, return_plan, store=False, raw=False):
    """Validated inputs -> SinkhornResult (and stored iterates when store=True).

    ``raw=True``: log-domain iterations without storing, returns
    ``(result, eps schedule, (f_K, g_K))`` with the potentials before the gauge
    shift (the input of the output layer of a checkpointed unrolled gradient).
    """
    n, m = C.shape
    loga = _log_weights(a)
    logb = _log_weights(b)
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}; got {method!r}.")
    sched = _eps_schedule(C, eps, eps_scaling)
    if init is None:
        f = np.zeros(n)
        g = np.zeros(m)
    else:
        f = np.array(init[0], dtype=np.float64)
        g = np.array(init[1], dtype=np.float64)
        if f.shape != (n,) or g.shape != (m,):
            raise ValueError(f"`init` must be a pair (f, g) of shapes ({n},), ({m},); got {f.shape}, {g.shape}.")
    work = np.empty((_n_chunks(n), m))
    if method == "auto":
        # the scaling domain is as accurate as the log domain with absorption;
        # the log domain is kept where the kernel would be rebuilt too often
        method = "scaling" if (C.max() - C.min()) / eps <= 2000.0 else "log"
    if store or raw:
        method = "log"  # the unrolled adjoint differentiates log-domain iterates
    absorptions = 0
    stored = None
    if method == "log":
        if store:
            cap = min(max_iter, 64) + 1
            Fs = np.empty((cap, n))
            Gs = np.empty((cap, m))
            Fs[0] = f
            Gs[0] = g
            done = 0
            converged = False
            while True:
                room = Fs.shape[0] - 1 - done
                chunk = min(room, max_iter - done)
                k, converged, err = _k_log_loop(
                    C,
                    loga,
                    logb,
                    b,
                    sched[done:] if done < len(sched) else sched[-1:],
                    f,
                    g,
                    chunk,
                    tol,
                    work,
                    Fs,
                    Gs,
                    done,
                )
                done += k
                if converged or done >= max_iter or k < chunk:
                    break
                newcap = min(2 * (Fs.shape[0] - 1), max_iter) + 1
                Fs = np.concatenate([Fs, np.empty((newcap - Fs.shape[0], n))])
                Gs = np.concatenate([Gs, np.empty((newcap - Gs.shape[0], m))])
            stored = (Fs[: done + 1].copy(), Gs[: done + 1].copy(), sched)
            iters = done
        else:
            if raw:  # iterates recomputed bit for bit by the checkpointed adjoint
                empty = np.empty((0, 0))
                iters, converged, err = _k_log_loop(C, loga, logb, b, sched, f, g, max_iter, tol, work, empty, empty, 0)
            else:
                iters, converged, err = _k_log_loop_fused(C, a, loga, logb, b, sched, f, g, max_iter, tol, work)
    else:
        iters = 0
        if len(sched) > 1:
            iters, _, _ = _k_log_loop_fused(C, a, loga, logb, b, sched[:-1], f, g, len(sched) - 1, 0.0, work)
        if init is None and iters == 0:
            # one log-domain iteration: potentials of the right magnitude, so the
            # absorbed kernel is O(1) whatever the cost scale and sign. The two
            # half steps of _k_log_loop_fused, bit for bit, called directly: that
            # loop's compilation (about 3.5 s cold) is not needed on this path
            g_new = np.empty(m)
            _k_col_update(C, f, loga, g, eps, g_new, work)
            if np.all(np.isfinite(g_new)):
                g[:] = g_new
                f_new = np.empty(n)
                _k_row_update(C, g, logb, f, eps, f_new, work)
                f[:] = f_new
                iters += 1
        Kt = np.empty((n, m))
        k2, converged, err, absorptions = _k_scaling_loop(
            C, a, b, loga, logb, eps, f, g, Kt, max(max_iter - iters, 0), tol, 50.0, work
        )
        iters += k2
        del Kt
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(g))):
        raise FloatingPointError(
            f"Sinkhorn potentials became non-finite after {iters} iterations "
            f"(eps={eps}); please report this with the inputs."
        )
    pc, pl, rows, cols = _k_plan_stats(C, f, g, loga, logb, eps, work)
    marg = float(np.abs(rows - a).sum() + np.abs(cols - b).sum())
    total = float(rows.sum())
    reg = pc + eps * (pl - total + 1.0)
    converged = bool(converged)
    if tol > 0 and not converged and warn:
        warnings.warn(
            f"Sinkhorn did not converge: marginal error {marg:.3g} > tol={tol:g} "
            f"after max_iter={max_iter} iterations (eps={eps:g}). Increase "
            f"`max_iter`, use `eps_scaling=0.9`, or a larger `eps`.",
            RuntimeWarning,
            stacklevel=3,
        )
    fg, gg = _gauge(f, g, a, b)
    plan = _plan(C, fg, gg, a, b, eps) if return_plan else None
    res = SinkhornResult(
        f=fg,
        g=gg,
        transport_cost=float(pc),
        reg_cost=float(reg),
        iterations=int(iters),
        marginal_error=marg,
        converged=converged,
        eps=eps,
        method=method,
        absorptions=int(absorptions),
        a=a,
        b=b,
        cost=C,
        stored_plan=plan,
    )
    if store:
        return res, stored, (f, g)
    if raw:
        return res, sched, (f, g)
    return res


def solve_sinkhorn(
    a,
    b,
    cost,
    eps,
    *,
    tol=1e-9,
    max_iter=10_000,
    method="auto",
    eps_scaling=None,
    init=None,
    return_plan=False,
    warn=True,
):
    """Entropic optimal transport between weights ``a`` and ``b``.

    Parameters
    ----------
    a : array_like, shape (n,)
        Source weights: nonnegative, summing to 1 (zeros allowed).
    b : array_like, shape (m,)
        Target weights: nonnegative, summing to 1.
    cost : array_like, shape (n, m)
        Cost matrix ``C`` (finite; any sign).
    eps : float
        Entropic regularisation, > 0, in the units of ``cost``.
    tol : float, optional
        Stop when the L1 marginal error ``|P^T 1 - b|_1`` is ``<= tol`` (the row
        marginals are exact after each iteration).  ``tol = 0`` runs exactly
        ``max_iter`` iterations without a warning.
    max_iter : int, optional
        Maximum number of iterations.  Non-convergence is reported in the result
        (``converged=False``) and warned (``RuntimeWarning``).
    method : {"auto", "log", "scaling"}, optional
        ``"log"``: log-domain iterations (one exponential per entry and
        iteration: the row half step also yields the next column update's sums;
        parallel over rows).  ``"scaling"``: Schmitzer's stabilised scaling
        (matrix-vector products with an absorbed kernel, one pass over it per
        iteration, rebuilt when the scalings leave ``[e^-50, e^50]``; any half
        step that over/underflows is redone in the log domain).  ``"auto"``:
        ``"scaling"`` unless ``(max C - min C) / eps > 2000`` (frequent kernel
        rebuilds).
    eps_scaling : float in (0, 1), sequence of floats, or None, optional
        Epsilon scaling (annealing): one iteration at each of
        ``eps_k = max(eps, range(C) r^k)`` (or at each value of the given
        sequence) before iterating at ``eps``.  Recommended for ``eps`` well
        below the cost range.  In unrolled gradients the schedule is a constant
        (the dependence of ``range(C)`` on the points is not differentiated).
    init : (f, g) or None, optional
        Warm start potentials.
    return_plan : bool, optional
        Store the plan in the result (otherwise ``result.plan`` rebuilds it).
    warn : bool, optional
        Warn on non-convergence.

    Returns
    -------
    SinkhornResult

    Notes
    -----
    Iterates ``g_j <- -eps log sum_i a_i exp((f_i - C_ij)/eps)``, then
    ``f_i <- -eps log sum_j b_j exp((g_j - C_ij)/eps)``, and returns
    ``P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps)``.  The fixed point maximises
    ``<f, a> + <g, b> - eps <a x b, exp((f + g - C)/eps) - 1>``, whose value is
    ``<P, C> + eps KL(P | a x b)``.  POT's ``sinkhorn_log`` computes the same
    iterates with log-potentials ``f/eps + log a``, ``g/eps + log b``.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint._sinkhorn import solve_sinkhorn
    >>> a = np.array([0.5, 0.5]); b = np.array([0.5, 0.5])
    >>> C = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> res = solve_sinkhorn(a, b, C, eps=0.1, tol=1e-12)
    >>> print(res.converged, f"{res.transport_cost:.6f}")
    True 0.000045
    >>> bool(np.allclose(res.plan.sum(axis=1), a))
    True
    >>> bool(abs(res.reg_cost - res.dual_value) < 1e-12)
    True
    """
    a = _as_weights(a, "a", "n")
    b = _as_weights(b, "b", "m")
    C = _as_cost(cost, a.shape[0], b.shape[0])
    eps = _as_eps(eps)
    max_iter = _check_positive_int(max_iter, "max_iter")
    tol = float(tol)
    if not tol >= 0:
        raise ValueError(f"`tol` must be >= 0; got {tol!r}.")
    with _threads_for(C.size):
        return _solve(
            a,
            b,
            C,
            eps,
            tol=tol,
            max_iter=max_iter,
            method=method,
            eps_scaling=eps_scaling,
            init=init,
            warn=warn,
            return_plan=return_plan,
        )


# ----------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------

_MODES = ("implicit", "unrolled", "envelope")
_COSTS = ("sqeuclidean",)
_LINEAR_SOLVERS = ("auto", "dense", "cg")


def _is_store_all(checkpoint):
    return checkpoint is None or type(checkpoint).__name__ == "StoreAll"


_CHECKPOINT_HELP = (
    "`checkpoint` must be None or StoreAll() (store every iterate), "
    "Revolve(snapshots=s), Uniform(snapshots=s) or MemoryBudget(bytes) (from "
    "adjoint / adjoint.checkpointing)"
)


def _check_checkpoint(checkpoint, mode, state_dim):
    """Validate ``checkpoint`` before the solve (fail fast)."""
    from .checkpointing import MemoryBudget, Revolve, Uniform

    if _is_store_all(checkpoint):
        return
    if type(checkpoint).__name__ == "Reversible":
        raise ValueError(
            f"{_CHECKPOINT_HELP}; got {checkpoint!r}. Reversible needs an "
            f"invertible step, and a Sinkhorn iteration (a pair of soft "
            f"c-transforms) cannot be inverted: use Revolve(snapshots=s)."
        )
    if not isinstance(checkpoint, (Revolve, Uniform, MemoryBudget)):
        hint = ""
        if isinstance(checkpoint, str):
            hint = " Pass a schedule object, e.g. adjoint.Revolve(snapshots=10), not a string."
        elif isinstance(checkpoint, type):
            hint = " Pass an instance (e.g. Revolve(snapshots=10)), not the class."
        raise ValueError(f"{_CHECKPOINT_HELP}; got {checkpoint!r}.{hint}")
    if mode != "unrolled":
        raise ValueError(
            f"`checkpoint` only applies to mode='unrolled' (the reverse sweep "
            f"through the iterations); got checkpoint={checkpoint!r} with "
            f"mode={mode!r}."
        )
    if isinstance(checkpoint, MemoryBudget):
        checkpoint.snapshots(state_dim)  # raises if not even one iterate fits


def _resolve_checkpoint(checkpoint, iterations, state_dim):
    """(name, rule, slots) for K iterations; rule None means store every iterate.

    Store-all keeps the K + 1 iterates (f_0, g_0) ... (f_K, g_K), so a schedule
    with at least K + 1 slots stores everything.
    """
    from .checkpointing import MemoryBudget, Uniform

    if _is_store_all(checkpoint):
        return "StoreAll", None, iterations + 1
    if isinstance(checkpoint, MemoryBudget):
        checkpoint = checkpoint.resolve(iterations, state_dim)
        if _is_store_all(checkpoint):
            return "StoreAll", None, iterations + 1
    s = checkpoint.snapshots
    if s >= iterations + 1:
        return "StoreAll", None, iterations + 1
    rule = _RULE_UNIFORM if isinstance(checkpoint, Uniform) else _RULE_BINOMIAL
    return repr(checkpoint), rule, s


def _loss_terms(loss, P, f, g, a, b, C, eps):
    """Partials of a user loss of (plan, f, g), pushed through P = a b E.

    Returns (value, Lf, Lg, La, Lb, LC): partial derivatives with respect to the
    potentials and the inputs, P being a function of all of them.
    """
    out = loss(P, f, g)
    if not (isinstance(out, tuple) and len(out) == 4):
        raise ValueError(
            "`loss` must return a tuple (value, d_plan, d_f, d_g) (derivatives "
            "may be None meaning zero); got "
            f"{type(out).__name__}."
        )
    value, dP, df, dg = out
    n, m = P.shape
    Lf = np.zeros(n) if df is None else np.array(df, dtype=np.float64).reshape(n)
    Lg = np.zeros(m) if dg is None else np.array(dg, dtype=np.float64).reshape(m)
    La = np.zeros(n)
    Lb = np.zeros(m)
    LC = np.zeros((n, m))
    if dP is not None:
        dP = np.asarray(dP, dtype=np.float64)
        if dP.shape != (n, m):
            raise ValueError(f"`loss` d_plan must have shape {(n, m)}; got {dP.shape}.")
        W = dP * P
        Lf += W.sum(axis=1) / eps
        Lg += W.sum(axis=0) / eps
        LC -= W / eps
        E = np.exp((f[:, None] + g[None, :] - C) / eps)
        La += (dP * E) @ b
        Lb += (dP * E).T @ a
    return float(value), Lf, Lg, La, Lb, LC


def _pcg(matvec, rhs, diag, tol, maxiter):
    """Jacobi-preconditioned conjugate gradients (SPD system)."""
    x = np.zeros_like(rhs)
    r = rhs.copy()
    nr0 = np.linalg.norm(rhs)
    if nr0 == 0.0:
        return x, 0, 0.0
    z = r / diag
    p = z.copy()
    rz = r @ z
    it = 0
    while it < maxiter:
        Ap = matvec(p)
        alpha = rz / (p @ Ap)
        x += alpha * p
        r -= alpha * Ap
        it += 1
        if np.linalg.norm(r) <= tol * nr0:
            break
        z = r / diag
        rz_new = r @ z
        p = z + (rz_new / rz) * p
        rz = rz_new
    return x, it, float(np.linalg.norm(r) / nr0)


def _schur_solve(P, d1, d2, R1, R2, solver, cg_tol, cg_maxiter):
    """Solve [[D1, P], [P^T, D2]] (x1, x2) = (R1, R2), consistent and singular
    along (1, -1): eliminate x1, solve the Schur complement
    S = D2 - P^T D1^{-1} P (null vector 1) with the rank-one correction
    S + beta 1 1^T (nonsingular; picks 1^T x2 = 0), back-substitute.
    """
    inv1 = np.divide(1.0, d1, out=np.zeros_like(d1), where=d1 > 0)
    s = R2 - P.T @ (inv1 * R1)
    m2 = d2.shape[0]
    beta = float(d2.mean()) / m2
    if solver == "dense":
        Q = P * np.sqrt(inv1)[:, None]
        S = -(Q.T @ Q)
        S[np.diag_indices(m2)] += d2
        S += beta
        import scipy.linalg  # lazily: keeps `import adjoint` light

        x2 = scipy.linalg.solve(S, s, assume_a="pos")
        its = 0
    else:

        def matvec(v):
            return d2 * v - P.T @ (inv1 * (P @ v)) + beta * v.sum()

        diag = d2 - (P * P).T @ inv1 + beta
        diag = np.where(diag > 0, diag, d2.mean())
        x2, its, _ = _pcg(matvec, s, diag, cg_tol, cg_maxiter)
    x1 = inv1 * (R1 - P @ x2)
    return x1, x2, its


def _implicit_adjoint(P, a, b, Lf, Lg, eps, solver, cg_tol, cg_maxiter):
    """Adjoint of the gauge-fixed optimality system.

    Unknowns z = (f, g); equations G(z) = (a - P 1, b - P^T 1) = 0 (Hessian of
    the dual H = -K/eps, K = [[diag r, P], [P^T, diag c]], singular along
    u = (1, -1)) bordered by the gauge h(z) = <f, a> - <g, b> = 0, v = grad h =
    (a, -b), v^T u = sum a + sum b != 0 so the bordered matrix is nonsingular.
    The transposed bordered system [[H, v], [v^T, 0]] (lam, sigma) = (L_z, 0)
    gives sigma = u^T L_z / v^T u and K lam = eps (sigma v - L_z), v^T lam = 0.
    """
    n, m = P.shape
    r = P.sum(axis=1)
    c = P.sum(axis=0)
    sa, sb = a.sum(), b.sum()
    sigma = (Lf.sum() - Lg.sum()) / (sa + sb)
    Rf = eps * (sigma * a - Lf)
    Rg = eps * (-sigma * b - Lg)
    if solver == "auto":
        solver = "dense" if min(n, m) <= 3000 else "cg"
    if n >= m:
        lf, lg, its = _schur_solve(P, r, c, Rf, Rg, solver, cg_tol, cg_maxiter)
    else:
        lg, lf, its = _schur_solve(P.T, c, r, Rg, Rf, solver, cg_tol, cg_maxiter)
    t = (a @ lf - b @ lg) / (sa + sb)
    lf = lf - t
    lg = lg + t
    res_f = r * lf + P @ lg - Rf
    res_g = P.T @ lf + c * lg - Rg
    nrm = np.sqrt(Rf @ Rf + Rg @ Rg)
    resid = float(np.sqrt(res_f @ res_f + res_g @ res_g) / nrm) if nrm > 0 else 0.0
    return lf, lg, sigma, solver, its, resid


def _sqeuclidean_pullback(G, x, y):
    """grad_x, grad_y of <G, C(x, y)> with C_ij = |x_i - y_j|^2."""
    gx = 2.0 * (x * G.sum(axis=1)[:, None] - G @ y)
    gy = 2.0 * (y * G.sum(axis=0)[:, None] - G.T @ x)
    return gx, gy


def _center(v):
    return v - v.mean()


def sinkhorn_value_and_grad(
    a,
    b,
    x,
    y,
    eps,
    *,
    mode="implicit",
    cost="sqeuclidean",
    loss=None,
    tol=1e-9,
    max_iter=10_000,
    method="auto",
    eps_scaling=None,
    checkpoint=None,
    linear_solver="auto",
    cg_tol=1e-12,
    cg_maxiter=None,
    warn=True,
):
    """Regularised OT cost between point clouds and its gradient.

    Parameters
    ----------
    a : array_like, shape (n,)
        Source weights (nonnegative, sum 1).
    b : array_like, shape (m,)
        Target weights (nonnegative, sum 1).
    x : array_like, shape (n, d)
        Source points.
    y : array_like, shape (m, d)
        Target points.
    eps : float
        Entropic regularisation (> 0).
    mode : {"implicit", "unrolled", "envelope"}, optional
        How the gradient is obtained (see Notes).
    cost : {"sqeuclidean"}, optional
        Ground cost ``C_ij = |x_i - y_j|^2`` (POT's ``ot.dist`` default).
    loss : callable or None, optional
        ``loss(plan, f, g) -> (value, d_plan, d_f, d_g)`` with the partial
        derivatives of the loss (``None`` for a zero derivative); potentials are
        in the gauge ``<f, a> = <g, b>``.  Default: the regularised cost
        ``<f, a> + <g, b>``.  Not available with ``mode="envelope"``.
    tol, max_iter, method, eps_scaling :
        As in :func:`solve_sinkhorn` (``mode="unrolled"`` always iterates in
        the log domain, the iterations it differentiates).
    checkpoint : None, StoreAll, Revolve, Uniform or MemoryBudget, optional
        Memory strategy of ``mode="unrolled"`` (schedules of
        :mod:`adjoint.checkpointing`): ``None`` or ``StoreAll()`` stores the
        K + 1 iterates ``(f_k, g_k)``; ``Revolve(snapshots=s)`` and
        ``Uniform(snapshots=s)`` store at most ``s`` and recompute the others;
        ``MemoryBudget(bytes)`` stores all if ``K + 1`` iterates of ``n + m``
        floats fit, else runs Revolve with as many as fit.  The gradient is
        bitwise the same whatever the schedule.
    linear_solver : {"auto", "dense", "cg"}, optional
        Implicit mode: Schur complement solved densely (Cholesky, O(min(n,m)^3))
        or by Jacobi-preconditioned CG (matrix-vector products with the plan).
        ``"auto"``: dense when ``min(n, m) <= 3000``.
    cg_tol, cg_maxiter : optional
        CG relative tolerance and iteration cap (default ``10 min(n, m)``).
    warn : bool, optional
        Warn on non-convergence of the forward solve.

    Returns
    -------
    SinkhornGradResult

    Notes
    -----
    *envelope* (Danskin): at the optimum of the dual
    ``D(f, g) = <f, a> + <g, b> - eps <a x b, exp((f + g - C)/eps) - 1>`` the
    gradient of the value is the partial gradient of D:
    ``grad_a = f, grad_b = g, grad_C = P``.  Exact at convergence for the
    regularised cost only; costs one pass over the plan after the solve.

    *implicit*: differentiates the fixed point.  The optimality equations
    ``G(f, g) = (a - P 1, b - P^T 1) = 0`` have Jacobian
    ``-[[diag(P 1), P], [P^T, diag(P^T 1)]]/eps``, singular along ``(1, -1)``
    (the gauge ``(f + c, g - c)``).  The gauge is fixed explicitly by the
    equation ``<f, a> = <g, b>`` (bordered system); the adjoint solve reduces to
    a Schur complement ``S = D_c - P^T D_r^{-1} P`` on the smaller side, made
    nonsingular by the rank-one correction ``S + beta 1 1^T`` (its null vector is
    ``1``), then the gauge multiplier is recovered in closed form.  Exact for any
    loss at convergence; time: the solve plus O(min(n,m)^3) (dense) or O(n m)
    per CG iteration; memory: the plan, O(n m).

    *unrolled*: reverse-mode sweep through the log-domain iterations actually
    run (store-all: memory O(K (n + m)) for K iterations, time about one more
    forward pass plus O(n m) gradient accumulation per iteration).  The exact
    gradient of the computed (possibly unconverged) iterate; tends to the
    implicit gradient as K grows.  With a checkpoint schedule of ``s`` slots
    the forward solve runs without storing (convergence fixes K), then the
    schedule reverses the K steps ``x_k = (f_k, g_k) -> x_{k+1}``: its advances
    recompute ``p(K, s)`` iterations for Revolve (``Revolve(s).forward_steps(K)
    - 1``; the terminal step is the solve's last iteration) and every adjoint
    step recomputes its own iteration from its input state (``K - 1`` more), so
    ``forward_iterations = K + p(K, s) + K - 1`` instead of K, with
    ``min(s, K)`` stored iterates instead of K + 1.

    The weights live on simplices, so ``grad_a`` and ``grad_b`` are defined up
    to constants; they are returned projected on ``sum(da) = 0``, i.e. with zero
    mean: ``<grad_a, da>`` is the directional derivative for every ``da`` with
    zero sum.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint._sinkhorn import sinkhorn_value_and_grad
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((5, 2)); y = rng.random((4, 2))
    >>> a = np.full(5, 0.2); b = np.full(4, 0.25)
    >>> r1 = sinkhorn_value_and_grad(a, b, x, y, 0.1, mode="implicit", tol=1e-12)
    >>> r2 = sinkhorn_value_and_grad(a, b, x, y, 0.1, mode="envelope", tol=1e-12)
    >>> bool(np.allclose(r1.grad_x, r2.grad_x, atol=1e-9)), r1.grad_y.shape
    (True, (4, 2))
    """
    a = _as_weights(a, "a", "n")
    b = _as_weights(b, "b", "m")
    n, m = a.shape[0], b.shape[0]
    x = _as_points(x, "x", n, "n")
    y = _as_points(y, "y", m, "m", d=x.shape[1])
    eps = _as_eps(eps)
    max_iter = _check_positive_int(max_iter, "max_iter")
    tol = float(tol)
    if not tol >= 0:
        raise ValueError(f"`tol` must be >= 0; got {tol!r}.")
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}.")
    if cost not in _COSTS:
        raise ValueError(f"`cost` must be one of {_COSTS}; got {cost!r}.")
    if linear_solver not in _LINEAR_SOLVERS:
        raise ValueError(f"`linear_solver` must be one of {_LINEAR_SOLVERS}; got {linear_solver!r}.")
    if loss is not None and not callable(loss):
        raise ValueError(f"`loss` must be callable or None; got {loss!r}.")
    if loss is not None and mode == "envelope":
        raise ValueError(
            "`mode='envelope'` is exact only for the regularised cost itself; "
            "got a user `loss`. Use mode='implicit' or mode='unrolled'."
        )
    _check_checkpoint(checkpoint, mode, n + m)
    if cg_maxiter is None:
        cg_maxiter = 10 * min(n, m)
    with _threads_for(n * m):
        return _value_and_grad(
            a,
            b,
            x,
            y,
            eps,
            mode,
            loss,
            tol,
            max_iter,
            method,
            eps_scaling,
            linear_solver,
            cg_tol,
            cg_maxiter,
            warn,
            checkpoint,
        )


def _value_and_grad(
    a,
    b,
    x,
    y,
    eps,
    mode,
    loss,
    tol,
    max_iter,
    method,
    eps_scaling,
    linear_solver,
    cg_tol,
    cg_maxiter,
    warn,
    checkpoint=None,
):
    n, m = a.shape[0], b.shape[0]
    C = np.empty((n, m))
    _k_sqeuclidean(x, y, C)
    kw = dict(
        tol=tol, max_iter=max_iter, method=method, eps_scaling=eps_scaling, init=None, warn=warn, return_plan=False
    )
    if mode == "unrolled":
        return _grad_unrolled(a, b, C, x, y, eps, loss, kw, checkpoint)
    sol = _solve(a, b, C, eps, **kw)
    f, g = sol.f, sol.g
    P = sol.plan
    if mode == "envelope":
        value = sol.dual_value
        ga, gb, GC = f, g, P
        gx, gy = _sqeuclidean_pullback(GC, x, y)
        return SinkhornGradResult(
            value=value,
            grad_a=_center(ga),
            grad_b=_center(gb),
            grad_x=gx,
            grad_y=gy,
            mode=mode,
            solution=sol,
            stored_bytes=P.nbytes,
        )
    # implicit
    if loss is None:
        value = sol.dual_value
        Lf, Lg, La, Lb = a.copy(), b.copy(), f.copy(), g.copy()
        LC = None
    else:
        value, Lf, Lg, La, Lb, LC = _loss_terms(loss, P, f, g, a, b, C, eps)
    try:
        lf, lg, sigma, solver, its, resid = _implicit_adjoint(P, a, b, Lf, Lg, eps, linear_solver, cg_tol, cg_maxiter)
    except np.linalg.LinAlgError as exc:  # what scipy.linalg.solve raises
        state = (
            "converged"
            if sol.converged
            else f"did NOT converge: marginal error {sol.marginal_error:.3g} > tol={tol:g} after "
            f"{sol.iterations} iterations"
        )
        raise FloatingPointError(
            f"sinkhorn_value_and_grad(mode='implicit'): the linear system of the implicit adjoint "
            f"is singular at eps={eps:g} ({exc}); the Sinkhorn solve {state}. The implicit "
            f"function theorem differentiates the optimum: converge first (`eps_scaling=0.9`, a "
            f"larger `max_iter` or `eps`), or use mode='unrolled' to differentiate the iterations "
            f"actually run."
        ) from exc
    Lam = P * (lf[:, None] + lg[None, :])
    # sum_j b_j E_ij (lf_i + lg_j) = (Lam 1)_i / a_i where a_i > 0
    ra = Lam.sum(axis=1)
    cb = Lam.sum(axis=0)
    rowt = np.divide(ra, a, out=np.zeros(n), where=a > 0)
    colt = np.divide(cb, b, out=np.zeros(m), where=b > 0)
    if np.any(a == 0) or np.any(b == 0):
        E = np.exp((f[:, None] + g[None, :] - C) / eps)
        lamE = E * (lf[:, None] + lg[None, :])
        z = a == 0
        rowt[z] = lamE[z] @ b
        z = b == 0
        colt[z] = lamE[:, z].T @ a
    ga = La - lf + rowt - sigma * f
    gb = Lb - lg + colt + sigma * g
    GC = -Lam / eps
    if LC is not None:
        GC += LC
    gx, gy = _sqeuclidean_pullback(GC, x, y)
    k = min(n, m)
    sys_bytes = k * k * 8 if solver == "dense" else 0
    return SinkhornGradResult(
        value=float(value),
        grad_a=_center(ga),
        grad_b=_center(gb),
        grad_x=gx,
        grad_y=gy,
        mode=mode,
        solution=sol,
        linear_solver=solver,
        linear_iterations=int(its),
        linear_residual=resid,
        stored_bytes=P.nbytes + Lam.nbytes + sys_bytes,
    )


def store_all_schedule(iterations):
    """Reverse schedule of StoreAll: ADJOINT K, K-1, ..., 1 (all states stored).

    Returns an int64 array of (action, argument) rows for ``_k_run_reverse``.
    """
    acts = np.empty((iterations, 2), dtype=np.int64)
    acts[:, 0] = _ACT_ADJOINT
    acts[:, 1] = np.arange(iterations, 0, -1)
    return acts


def _unrolled_seed(a, b, C, eps, loss, fK, gK):
    """Output layer of the unrolled gradient at the raw iterate (f_K, g_K).

    Returns (value, fbar, gbar, abar, bbar, Cbar): the value and its adjoints
    with respect to f_K, g_K, a, b and C (through the gauge shift and the loss).
    """
    n, m = C.shape
    sab = a.sum() + b.sum()
    cshift = (gK @ b - fK @ a) / sab
    fgauge, ggauge = fK + cshift, gK - cshift
    if loss is None:
        value = float(fgauge @ a + ggauge @ b)
        Lf, Lg, La, Lb = a.copy(), b.copy(), fgauge.copy(), ggauge.copy()
        LC = None
    else:
        P = _plan(C, fgauge, ggauge, a, b, eps)
        value, Lf, Lg, La, Lb, LC = _loss_terms(loss, P, fgauge, ggauge, a, b, C, eps)
    # backprop through the gauge shift f' = f + c, g' = g - c,
    # c = (<g, b> - <f, a>) / (sum a + sum b)
    cbar = Lf.sum() - Lg.sum()
    fbar = Lf + cbar * (-a / sab)
    gbar = Lg + cbar * (b / sab)
    abar = La + cbar * (-fK - cshift) / sab
    bbar = Lb + cbar * (gK - cshift) / sab
    Cbar = np.zeros((n, m)) if LC is None else np.ascontiguousarray(LC)
    return value, fbar, gbar, abar, bbar, Cbar


def _grad_unrolled(a, b, C, x, y, eps, loss, kw, checkpoint=None):
    n, m = C.shape
    if not _is_store_all(checkpoint):
        name, rule, s = _resolve_checkpoint(checkpoint, kw["max_iter"], n + m)
        if rule is not None:
            # K is decided by convergence: solve without storing, then reverse
            # the K iterations under the schedule
            sol, sched, (fK, gK) = _solve(a, b, C, eps, raw=True, **kw)
            K = sol.iterations
            if K > 0:
                name, rule, s = _resolve_checkpoint(checkpoint, K, n + m)
            if K > 0 and rule is not None:
                return _grad_checkpointed(a, b, C, x, y, eps, loss, sol, sched, fK, gK, name, rule, s)
            # everything fits after all: store every iterate (one more solve)
    return _grad_store_all(a, b, C, x, y, eps, loss, kw)


def _grad_checkpointed(a, b, C, x, y, eps, loss, sol, sched, fK, gK, name, rule, s):
    n, m = C.shape
    K = sol.iterations
    value, fbar, gbar, abar, bbar, Cbar = _unrolled_seed(a, b, C, eps, loss, fK, gK)
    work = np.empty((_n_chunks(n), m))
    counters = np.zeros(4, dtype=np.int64)
    _k_run_schedule(
        K,
        s,
        rule,
        C,
        a,
        b,
        _log_weights(a),
        _log_weights(b),
        np.ascontiguousarray(sched),
        fK,
        gK,
        fbar,
        gbar,
        abar,
        bbar,
        Cbar,
        work,
        counters,
    )
    if counters[3]:  # pragma: no cover - planner bug
        raise RuntimeError("checkpoint planner stack overflow (please report)")
    gx, gy = _sqeuclidean_pullback(Cbar, x, y)
    se = min(s, K)
    return SinkhornGradResult(
        value=value,
        grad_a=_center(abar),
        grad_b=_center(bbar),
        grad_x=gx,
        grad_y=gy,
        mode="unrolled",
        solution=sol,
        stored_bytes=se * (n + m) * 8 + Cbar.nbytes,
        schedule=name,
        forward_iterations=int(K + counters[0] + counters[1]),
        peak_stored_iterates=int(counters[2]),
    )


def _grad_store_all(a, b, C, x, y, eps, loss, kw):
    n, m = C.shape
    sol, (Fs, Gs, sched), (f_raw, g_raw) = _solve(a, b, C, eps, store=True, **kw)
    K = sol.iterations
    value, fbar, gbar, abar, bbar, Cbar = _unrolled_seed(a, b, C, eps, loss, Fs[K], Gs[K])
    work = np.empty((_n_chunks(n), m))
    slot_iter = np.arange(K + 1, dtype=np.int64)
    acts = store_all_schedule(K)
    _k_run_reverse(
        acts,
        C,
        a,
        b,
        _log_weights(a),
        _log_weights(b),
        np.ascontiguousarray(sched),
        Fs,
        Gs,
        slot_iter,
        fbar,
        gbar,
        abar,
        bbar,
        Cbar,
        work,
    )
    gx, gy = _sqeuclidean_pullback(Cbar, x, y)
    return SinkhornGradResult(
        value=value,
        grad_a=_center(abar),
        grad_b=_center(bbar),
        grad_x=gx,
        grad_y=gy,
        mode="unrolled",
        solution=sol,
        stored_bytes=Fs.nbytes + Gs.nbytes + Cbar.nbytes,
        schedule="StoreAll",
        forward_iterations=K,
        peak_stored_iterates=K + 1,
    )
