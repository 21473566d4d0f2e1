"""Numba kernels of Sinkhorn: log-domain half steps, the stabilised scaling domain, plan statistics.

Arrays and scalars only, no validation (the Python layer is :mod:`adjoint._sinkhorn._solve`). The
kernels of the unrolled gradient's reverse sweeps are in :mod:`adjoint._sinkhorn._reverse`.
"""

from __future__ import annotations

import math
import types

import numba
import numpy as np
from numba import njit, prange

# vectorisable exp and fma (numba here has no SVML: np.exp is a scalar libm call)
from .._vecmath import _exp, _fma

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
        mx = np.empty(nbad)  # not np.full / np.zeros: one numpy constructor less to compile
        for q in range(nbad):
            mx[q] = -np.inf
        for i in range(n):
            al = f[i] * ie + loga[i]
            for q in range(nbad):
                v = al - C[i, bad[q]] * ie
                if v > mx[q]:
                    mx[q] = v
        sm = np.empty(nbad)
        for q in range(nbad):
            sm[q] = 0.0
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


# _k_scaling_iterate stops with one of these codes
_SC_DONE = 0  # max_iter iterations done
_SC_CONVERGED = 1  # the column error of the current iterate is <= tol
_SC_BAD_COL = 2  # the column scaling left [e^-tau, e^tau]: absorb, then a log-domain column step
_SC_BAD_ROW = 3  # the row scaling did: absorb, then a log-domain row step (ends the iteration)


@njit(cache=True)
def _k_scaling_iterate(Kt, a, b, tau, tol, max_iter, k, phase, err, u, v, un, vn, bv, kv, kv_next, work):
    """Stabilised scaling iterations k, k + 1, ... on the absorbed kernel Kt until one of the stops
    _SC_*; returns (k, code, last error). ``phase`` 1 resumes iteration k at its row step; ``err`` is
    the last error measured before (returned if none is measured).

    Plan P = diag(a u) Kt diag(b v).  kv holds Kt^T (a u) for the current u.  Each iteration reads
    Kt once (_k_scaling_pass: the row update and the product of the next column update share the
    pass).  Absorptions (rare) are done by the caller between two calls
    (``adjoint._sinkhorn._solve._scaling_loop``): this loop then does not compile the log-domain
    half steps, the kernel rebuild and their optimised machine code again into itself.
    """
    m = v.shape[0]
    while k < max_iter:
        if phase == 0:
            # column update: v = 1 / (Kt^T (a u))
            for j in range(m):
                vn[j] = 1.0 / kv[j]
            if tol > 0.0:
                err = 0.0
                for j in range(m):
                    if b[j] > 0.0:
                        err += b[j] * abs(v[j] * kv[j] - 1.0)
                if err <= tol:
                    return k, _SC_CONVERGED, err
            if _k_bad_scaling(vn, tau):
                return k, _SC_BAD_COL, err
            _copy(v, vn)
        phase = 0
        # row update u = 1 / (Kt (b v)) and, in the same pass, Kt^T (a u)
        for j in range(m):
            bv[j] = b[j] * v[j]
        _k_scaling_pass(Kt, bv, a, un, work, kv_next)
        if _k_bad_scaling(un, tau):
            return k, _SC_BAD_ROW, err
        _copy(u, un)
        _copy(kv, kv_next)
        k += 1
    return k, _SC_DONE, err


# ----------------------------------------------------------------------------------
# Plan statistics, plan, cost matrices
# ----------------------------------------------------------------------------------


@njit(cache=True, parallel=True)
def _k_plan_stats(C, f, g, loga, logb, eps, work):
    """One pass over P: returns (<P, C>, sum P log(P/(a b)), row sums, col sums)."""
    n, m = C.shape
    ie = 1.0 / eps
    nb = work.shape[0]
    # np.empty and explicit loops rather than np.zeros: each numpy constructor is one more
    # compilation on a cold start (every entry below is written before it is read)
    rows = np.empty(n)
    pc = np.empty(nb)
    pl = np.empty(nb)
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
    cols = np.empty(m)
    for j in range(m):
        cols[j] = 0.0
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
# Serial variants for small problems
# ----------------------------------------------------------------------------------

# Below this many cost entries a half step takes well under a millisecond: the fork/join of a
# parallel region (very slow when the cores are shared) does not pay, and neither does the
# compilation of the parallel kernels (parfor lowering, a gufunc per prange loop: most of the first
# call's compile time). Such problems run the serial variants below.
_PARALLEL_MIN_ENTRIES = 1_000_000


def serial_variants(namespace, names):
    """Serial copies of the numba functions ``namespace[name]``, compiled from the same source.

    Each copy is a new function object on the same code, named ``<name>_serial`` (so that numba's
    on-disk cache, which files machine code by the function's qualified name, keeps it apart from
    the parallel original), compiled with the original's options minus ``parallel``, whose global
    names resolve in a copy of ``namespace`` where every name of ``names`` is its serial copy: a
    serial loop kernel calls the serial half steps. ``prange`` is ``range`` without ``parallel``,
    and the parallel kernels reduce over fixed row blocks (``_n_chunks``) in a fixed order, so the
    serial copies do the same arithmetic in the same order (the same bits). Returns a namespace of
    the copies.
    """
    ns = dict(namespace)
    out = {}
    for name in names:
        disp = namespace[name]
        py = disp.py_func
        fn = types.FunctionType(py.__code__, ns, f"{name}_serial", py.__defaults__, py.__closure__)
        fn.__qualname__ = f"{name}_serial"
        fn.__doc__ = py.__doc__
        opts = {k: v for k, v in disp.targetoptions.items() if k not in ("parallel", "nopython")}
        out[name] = ns[name] = njit(cache=True, **opts)(fn)
    return types.SimpleNamespace(**out)


_PARALLEL_NAMES = (
    "_k_row_update",
    "_k_col_update",
    "_k_row_update_fused",
    "_k_log_iterate",
    "_k_log_loop",
    "_k_log_loop_fused",
    "_k_gibbs",
    "_k_kt_matvec",
    "_k_scaling_pass",
    "_k_scaling_iterate",
    "_k_plan_stats",
    "_k_plan",
    "_k_sqeuclidean",
)

#: the kernels of :data:`_PARALLEL_NAMES` as defined above, and their serial variants
PARALLEL = types.SimpleNamespace(**{name: globals()[name] for name in _PARALLEL_NAMES})
SERIAL = serial_variants(globals(), _PARALLEL_NAMES)


def kernels_for(n_entries):
    """The kernel set for a cost matrix of ``n_entries`` entries: :data:`PARALLEL` for large problems
    (when numba may use more than one thread), :data:`SERIAL` otherwise."""
    if n_entries >= _PARALLEL_MIN_ENTRIES and numba.config.NUMBA_NUM_THREADS > 1:
        return PARALLEL
    return SERIAL


# ----------------------------------------------------------------------------------
# Python helpers around the kernels
# ----------------------------------------------------------------------------------


def _log_weights(w):
    with np.errstate(divide="ignore"):
        return np.log(w)


def _plan(C, f, g, a, b, eps):
    P = np.empty(C.shape)
    kernels_for(C.size)._k_plan(C, f, g, _log_weights(a), _log_weights(b), eps, P)
    return P
