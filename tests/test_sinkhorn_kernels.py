"""Kernel-level tests of adjoint._sinkhorn: the one-pass log-sum-exp and its
two-pass fallback, the fused scaling-domain pass, determinism with respect to
the thread count, and the stabilised scaling loop's absorption paths."""

import numba
import numpy as np
import pytest

from adjoint._sinkhorn import (
    _k_col_from_sums,
    _k_col_update,
    _k_kt_matvec,
    _k_log_loop,
    _k_log_loop_fused,
    _k_row_update,
    _k_row_update_fused,
    _k_scaling_pass,
    _n_chunks,
    solve_sinkhorn,
)


def _lse(Z, axis):
    """Two-pass log-sum-exp in numpy (independent reference)."""
    mx = Z.max(axis=axis, keepdims=True)
    return (mx + np.log(np.exp(Z - mx).sum(axis=axis, keepdims=True))).squeeze(axis)


def _setup(n, m, seed=0, eps=0.05):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2))
    y = rng.random((m, 2))
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    a = rng.random(n) + 0.5
    a /= a.sum()
    b = rng.random(m) + 0.5
    b /= b.sum()
    # a converged-ish iterate, so that the previous potential is a good shift
    r = solve_sinkhorn(a, b, C, eps, tol=1e-12, method="log")
    return a, b, C, eps, r.f.copy(), r.g.copy()


def _row_ref(C, g, b, eps):
    return -eps * _lse((g[None, :] - C) / eps + np.log(b)[None, :], axis=1)


def _col_ref(C, f, a, eps):
    return -eps * _lse((f[:, None] - C) / eps + np.log(a)[:, None], axis=0)


@pytest.mark.parametrize("offset", [0.0, 1e3, -1e3])
def test_row_update_one_pass_and_fallback_match_two_pass(offset):
    """Shift from the previous f; a shift 1000 eps off makes every shifted sum
    over- or underflow, so every row takes the exact two-pass fallback."""
    a, b, C, eps, f, g = _setup(70, 90, seed=1)
    n, m = C.shape
    work = np.empty((_n_chunks(n), m))
    out = np.empty(n)
    f_old = f + offset * eps  # offset 0: one pass; +-1e3: fallback on all rows
    _k_row_update(C, g, np.log(b), f_old, eps, out, work)
    ref = _row_ref(C, g, b, eps)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-14 * np.abs(ref).max() + 1e-16)


def test_row_update_fallback_on_some_rows_only():
    a, b, C, eps, f, g = _setup(50, 40, seed=2)
    n, m = C.shape
    work = np.empty((_n_chunks(n), m))
    f_old = f.copy()
    f_old[::3] += 900.0 * eps  # shifted sums underflow on every third row
    f_old[1::7] -= 900.0 * eps  # ... and overflow on others
    out = np.empty(n)
    _k_row_update(C, g, np.log(b), f_old, eps, out, work)
    out_good = np.empty(n)
    _k_row_update(C, g, np.log(b), f, eps, out_good, work)
    ref = _row_ref(C, g, b, eps)
    tol = 1e-14 * np.abs(ref).max()
    np.testing.assert_allclose(out, ref, rtol=0, atol=tol)
    np.testing.assert_allclose(out, out_good, rtol=0, atol=tol)


@pytest.mark.parametrize("offset", [0.0, 1e3, -1e3])
def test_col_update_one_pass_and_fallback_match_two_pass(offset):
    a, b, C, eps, f, g = _setup(60, 80, seed=3)
    n, m = C.shape
    work = np.empty((_n_chunks(n), m))
    out = np.empty(m)
    g_old = g + offset * eps
    g_old[::5] = g[::5]  # fallback on 4 columns out of 5 only (offset != 0)
    nbad = _k_col_update(C, f, np.log(a), g_old, eps, out, work)
    expected_bad = 0 if offset == 0.0 else m - len(range(0, m, 5))
    assert nbad == expected_bad
    ref = _col_ref(C, f, a, eps)
    np.testing.assert_allclose(out, ref, rtol=0, atol=1e-14 * np.abs(ref).max() + 1e-16)


def test_scaling_pass_matches_numpy():
    rng = np.random.default_rng(4)
    n, m = 300, 257  # m not a multiple of the SIMD width
    K = rng.random((n, m)) * np.exp(rng.normal(size=(n, m)))
    a = rng.random(n)
    bv = rng.random(m) + 0.1
    work = np.empty((_n_chunks(n), m))
    u = np.empty(n)
    kv = np.empty(m)
    _k_scaling_pass(K, bv, a, u, work, kv)
    u_ref = 1.0 / (K @ bv)
    np.testing.assert_allclose(u, u_ref, rtol=1e-14)
    np.testing.assert_allclose(kv, K.T @ (a * u_ref), rtol=1e-14)
    out = np.empty(m)
    _k_kt_matvec(K, a * u, work, out)
    np.testing.assert_array_equal(out, kv)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 threads")
@pytest.mark.parametrize("method", ["log", "scaling"])
def test_results_do_not_depend_on_thread_count(method):
    """Fixed row blocks and fixed reduction orders: bitwise equal results on
    1 and 2 threads (problem above the one-thread threshold of 10^6 entries)."""
    rng = np.random.default_rng(5)
    n, m = 1100, 1000
    x = rng.random((n, 2))
    y = rng.random((m, 2))
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    a = np.full(n, 1.0 / n)
    b = np.full(m, 1.0 / m)
    old = numba.get_num_threads()
    res = []
    try:
        for t in (1, 2):
            numba.set_num_threads(t)
            res.append(solve_sinkhorn(a, b, C, 0.01, tol=0.0, max_iter=15, method=method, warn=False))
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(res[0].f, res[1].f)
    np.testing.assert_array_equal(res[0].g, res[1].g)
    assert res[0].transport_cost == res[1].transport_cost
    assert res[0].reg_cost == res[1].reg_cost
    assert res[0].marginal_error == res[1].marginal_error


@pytest.mark.parametrize("eps_scaling", [None, 0.7])
def test_scaling_absorptions_agree_with_log(eps_scaling):
    """Small eps: the stabilised scaling loop absorbs (rebuilds the kernel,
    redoes half steps in the log domain) and still matches the log domain."""
    rng = np.random.default_rng(6)
    n, m = 80, 70
    x = rng.random((n, 2))
    y = rng.random((m, 2)) + 0.5  # offset clouds: large potentials
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    a = rng.random(n) + 0.2
    a /= a.sum()
    b = rng.random(m) + 0.2
    b /= b.sum()
    eps = 2e-3
    kw = dict(tol=1e-11, max_iter=200_000, eps_scaling=eps_scaling)
    rs = solve_sinkhorn(a, b, C, eps, method="scaling", **kw)
    rl = solve_sinkhorn(a, b, C, eps, method="log", **kw)
    assert rs.converged and rl.converged
    if eps_scaling is None:  # (annealing stages run in the log domain)
        assert rs.absorptions > 0
    np.testing.assert_allclose(rs.f, rl.f, rtol=0, atol=1e-9)
    np.testing.assert_allclose(rs.g, rl.g, rtol=0, atol=1e-9)
    assert abs(rs.transport_cost - rl.transport_cost) <= 1e-9 * rl.transport_cost


# ------------------------------------------------ fused row/next-column pass


@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_fused_row_update_and_column_sums(offset):
    """f_new bitwise equal to _k_row_update; W_j = b_j sum_i a_i
    exp((f_new_i + g_j - C_ij)/eps) (independent numpy reference); the flag
    says whether the shifts were accurate enough to use W."""
    a, b, C, eps, f, g = _setup(70, 90, seed=7)
    n, m = C.shape
    work = np.empty((_n_chunks(n), m))
    wsum = np.empty_like(work)
    f_old = f + 0.3 * eps  # a shift close to the new value
    f_old[5] += offset * eps  # offset: row 5 takes the two-pass fallback
    f1 = np.empty(n)
    W = np.empty(m)
    ok = _k_row_update_fused(C, g, np.log(b), f_old, a, eps, f1, work, wsum, W)
    assert ok == (offset == 0.0)
    f2 = np.empty(n)
    _k_row_update(C, g, np.log(b), f_old, eps, f2, work)
    np.testing.assert_array_equal(f1, f2)
    W_ref = b * (a[:, None] * np.exp((f1[:, None] + g[None, :] - C) / eps)).sum(0)
    np.testing.assert_allclose(W, W_ref, rtol=1e-13)
    g_new = np.empty(m)
    assert _k_col_from_sums(W, b, g, eps, g_new)
    np.testing.assert_allclose(g_new, _col_ref(C, f1, a, eps), rtol=0, atol=1e-14 * np.abs(g_new).max())
    b0 = b.copy()
    b0[3] = 0.0
    assert not _k_col_from_sums(W, b0, g, eps, g_new)  # zero weight: direct


@pytest.mark.parametrize("case", ["plain", "zero_b", "eps_schedule"])
def test_fused_log_loop_matches_two_exp_loop(case):
    """One exponential per entry and iteration (fused) vs two (reference loop,
    the one the unrolled adjoint differentiates): same iterates to rounding,
    including the direct fallbacks (zero target weights, eps changes)."""
    rng = np.random.default_rng(8)
    n, m = 90, 75
    x = rng.random((n, 2))
    y = rng.random((m, 2))
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    a = rng.random(n) + 0.2
    b = rng.random(m) + 0.2
    if case == "zero_b":
        b[::4] = 0.0
    a /= a.sum()
    b /= b.sum()
    eps = 0.01
    sched = np.array([1.0, 0.3, 0.1, 0.03, eps]) if case == "eps_schedule" else np.array([eps])
    with np.errstate(divide="ignore"):
        la, lb = np.log(a), np.log(b)
    work = np.empty((_n_chunks(n), m))
    e = np.empty((0, 0))
    f1, g1 = np.zeros(n), np.zeros(m)
    k1, c1, e1 = _k_log_loop(C, la, lb, b, sched, f1, g1, 20_000, 1e-11, work, e, e, 0)
    f2, g2 = np.zeros(n), np.zeros(m)
    k2, c2, e2 = _k_log_loop_fused(C, a, la, lb, b, sched, f2, g2, 20_000, 1e-11, work)
    assert c1 and c2 and abs(k1 - k2) <= 1
    np.testing.assert_allclose(f2, f1, rtol=0, atol=1e-12)
    np.testing.assert_allclose(g2[b > 0], g1[b > 0], rtol=0, atol=1e-12)
    # a fixed number of iterations from far-off potentials (first passes fall back)
    for f0 in (0.0, 5.0):
        f1, g1 = np.full(n, f0), np.zeros(m)
        _k_log_loop(C, la, lb, b, sched, f1, g1, 40, 0.0, work, e, e, 0)
        f2, g2 = np.full(n, f0), np.zeros(m)
        _k_log_loop_fused(C, a, la, lb, b, sched, f2, g2, 40, 0.0, work)
        np.testing.assert_allclose(f2, f1, rtol=0, atol=1e-13)
        np.testing.assert_allclose(g2[b > 0], g1[b > 0], rtol=0, atol=1e-13)
