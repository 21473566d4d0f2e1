"""Second-order fitting: ``Observations``, ``problem.residuals`` (``res``, ``res.jac``) and
``Objective.hessp`` on the Lotka-Volterra fit (problems/lotka_volterra.py, checked against an
independent plain numpy RK4 written here) and on the neural ODE fit (problems/neural_ode_fit.py);
least_squares and trust-krylov reach the same optimum."""

import json

import numpy as np
import pytest
from scipy.optimize import least_squares, minimize

import adjoint
from adjoint.problems import lotka_volterra as lv
from adjoint.problems import neural_ode_fit as node

LV_STEPS = 400  # a multiple of 20: the observation times 0, 0.5, ..., 10 are grid points


# --------------------------------------------------------------------------------------------------
# an independent implementation of the Lotka-Volterra residuals (no adjoint): classical RK4 on the
# same grid, written for real or complex inputs (complex step)
# --------------------------------------------------------------------------------------------------
def lv_field(x, p):
    return np.array([p[0] * x[0] - p[1] * x[0] * x[1], p[2] * x[0] * x[1] - p[3] * x[1]])


def lv_residuals(v, steps=LV_STEPS):
    """``x(t_j) - y_j`` for ``v = (a, b, d, g, prey0, predator0)``, time by time, component by
    component (the order of ``problem.residuals``)."""
    v = np.asarray(v)
    p, x = v[:4], v[4:6].copy()
    h = lv.T_END / steps
    every = steps // (lv.N_OBS - 1)
    out = [x - lv.Y_OBS[0]]
    for k in range(steps):
        k1 = lv_field(x, p)
        k2 = lv_field(x + 0.5 * h * k1, p)
        k3 = lv_field(x + 0.5 * h * k2, p)
        k4 = lv_field(x + h * k3, p)
        x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        if (k + 1) % every == 0:
            out.append(x - lv.Y_OBS[(k + 1) // every])
    return np.concatenate(out)


def complex_step_jacobian(f, v, h=1e-30):
    cols = []
    for i in range(v.size):
        e = np.zeros(v.size, dtype=complex)
        e[i] = 1j * h
        cols.append(np.imag(f(v + e)) / h)
    return np.stack(cols, axis=1)


def central_jacobian(f, v, h=1e-5):
    """Central differences with one Richardson step (error O(h^4) plus rounding)."""
    cols = []
    for i in range(v.size):
        e = np.zeros(v.size)
        e[i] = h

        def d(s):
            return (f(v + s * e) - f(v - s * e)) / (2 * s * h)

        cols.append((4 * d(0.5) - d(1.0)) / 3)
    return np.stack(cols, axis=1)


def hessp_by_differences(fun, v, w, h):
    """``H w`` by central differences of the gradient along ``w`` with one Richardson step."""

    def d(s):
        return (fun(v + s * w)[1] - fun(v - s * w)[1]) / (2 * s)

    return (4 * d(0.5 * h) - d(h)) / 3


def rel(a, b):
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.fixture(scope="module")
def lv_problem():
    return lv.make_observed_problem(LV_STEPS)


@pytest.fixture(scope="module")
def lv_res(lv_problem):
    return lv_problem.residuals(wrt=("params", "x0"), params=lv.initial_guess(), method=adjoint.RK4())


@pytest.fixture(scope="module")
def lv_fun(lv_problem):
    return lv_problem.objective(wrt=("params", "x0"), params=lv.initial_guess(), method=adjoint.RK4())


@pytest.fixture(scope="module")
def lv_points(lv_fun):
    v0 = lv_fun.initial()
    return [v0, v0 + np.array([0.05, -0.02, 0.03, -0.04, 0.1, -0.05])]


def test_lv_observed_problem_layout(lv_res, lv_fun):
    assert lv_res.size == 2 * lv.N_OBS
    v0 = lv_fun.initial()
    np.testing.assert_array_equal(v0, np.concatenate([lv.initial_guess(), lv.Y_OBS[0]]))
    with pytest.raises(ValueError, match="multiple of 20"):
        lv.make_observed_problem(30)


def test_lv_residuals_match_independent_rk4(lv_res, lv_fun, lv_points):
    for v in lv_points:
        r = lv_res(v)
        ref = lv_residuals(v)
        assert r.shape == ref.shape
        assert rel(r, ref) < 1e-12, rel(r, ref)
        # the objective is 1/2 |r|^2 (no other cost)
        assert abs(lv_fun(v)[0] - 0.5 * ref @ ref) <= 1e-12 * (0.5 * ref @ ref)


def test_lv_residual_jacobian_matches_complex_step_and_differences(lv_res, lv_points):
    for v in lv_points:
        J = lv_res.jac(v)
        cs = complex_step_jacobian(lv_residuals, v)
        assert J.shape == cs.shape == (2 * lv.N_OBS, 6)
        assert rel(J, cs) < 1e-11, rel(J, cs)
        cd = central_jacobian(lv_residuals, v, h=1e-4)
        assert rel(J, cd) < 1e-7, rel(J, cd)


def test_lv_gradient_is_jt_r_and_gauss_newton_product(lv_res, lv_fun, lv_points):
    v = lv_points[1]
    J, r = lv_res.jac(v), lv_res(v)
    g = lv_fun(v)[1]
    assert rel(g, J.T @ r) < 1e-11
    w = np.random.default_rng(3).standard_normal(6)
    assert rel(lv_res.gnp(v, w), J.T @ (J @ w)) < 1e-10


def test_lv_hessp_matches_differences_of_the_gradient(lv_fun, lv_points):
    rng = np.random.default_rng(7)
    for v in lv_points:
        for _ in range(2):
            w = rng.standard_normal(6)
            w /= np.linalg.norm(w)
            hw = lv_fun.hessp(v, w)
            fd = hessp_by_differences(lv_fun, v, w, h=1e-3)
            assert rel(hw, fd) < 1e-7, rel(hw, fd)
    # the Hessian assembled column by column is symmetric
    v = lv_points[1]
    H = np.stack([lv_fun.hessp(v, e) for e in np.eye(6)], axis=1)
    assert np.linalg.norm(H - H.T) <= 1e-12 * np.linalg.norm(H)


@pytest.fixture(scope="module")
def lv_optima(lv_res, lv_fun):
    v0 = lv_fun.initial()
    ls = least_squares(lv_res, v0, jac=lv_res.jac, method="trf", x_scale="jac", ftol=1e-15, xtol=1e-15, gtol=1e-15)
    tk = minimize(lv_fun, v0, jac=True, hessp=lv_fun.hessp, method="trust-krylov", options={"gtol": 1e-10})
    return ls, tk


def test_lv_least_squares_and_trust_krylov_reach_the_same_optimum(lv_optima, lv_fun):
    ls, tk = lv_optima
    assert tk.success, tk.message
    assert np.linalg.norm(tk.jac) <= 1e-10
    f_ls = lv_fun(ls.x)[0]
    assert abs(ls.cost - f_ls) <= 1e-14 * f_ls  # least_squares' cost 1/2 |r|^2 is the objective
    assert abs(f_ls - tk.fun) <= 1e-8 * tk.fun
    np.testing.assert_allclose(ls.x[:4], tk.x[:4], rtol=1e-5)
    np.testing.assert_allclose(ls.x[4:], tk.x[4:], rtol=1e-5)
    # near the true parameters (5% noise)
    np.testing.assert_allclose(tk.x[:4], lv.TRUE_PARAMS, rtol=0.1)


@pytest.mark.parametrize("solver", ["least_squares", "trust-krylov"])
def test_lv_solve_with_second_order_solvers(solver, lv_optima, tmp_path):
    out = lv.solve(tmp_path, steps=LV_STEPS, verbose=False, solver=solver)
    summary = json.loads((tmp_path / "lotka_volterra.json").read_text())
    assert (tmp_path / "lotka_volterra.png").stat().st_size > 0
    assert summary == out.summary
    assert summary["solver"] == solver
    for key in ("iterations", "nfev", "seconds"):
        assert summary[key] > 0
    assert len(summary["history"]) >= 2
    tk = lv_optima[1]
    assert abs(summary["objective"] - tk.fun) <= 1e-8 * tk.fun
    np.testing.assert_allclose(summary["params"], tk.x[:4], rtol=1e-5)


def test_lv_solve_rejects_unknown_solver(tmp_path):
    with pytest.raises(ValueError, match="unknown solver"):
        lv.solve(tmp_path, solver="newton", verbose=False)


def test_lv_compare_newton(lv_fun):
    out = lv.compare_newton(steps=LV_STEPS, repeats=1, verbose=False)
    tk, lb = out["trust-krylov"], out["L-BFGS-B"]
    assert tk["converged"] and tk["grad_norm"] <= 1e-8, tk["message"]
    # L-BFGS-B stops at |g|_2 <= 1e-8 or where its line search fails (2.4e-8 on this grid)
    assert lb["converged"] == (lb["grad_norm"] <= 1e-8) and lb["grad_norm"] < 1e-6, lb["message"]
    assert tk["iterations"] < lb["iterations"]
    assert tk["hessps"] > 0 and lb["hessps"] == 0
    assert out["objective_relative_difference"] <= 1e-10


# --------------------------------------------------------------------------------------------------
# neural ODE
# --------------------------------------------------------------------------------------------------
NODE_STEPS = 80


@pytest.fixture(scope="module")
def node_fun():
    prob = node.make_problem(NODE_STEPS)
    return prob.objective(wrt="params", params=node.initial_guess(), method=adjoint.RK4())


def test_node_field_matches_numpy():
    p = node.initial_guess()
    x = np.array([0.3, -1.2])
    np.testing.assert_allclose(node.field(x, None, p, 0.0), node.field_numpy(x, p), rtol=1e-14)
    assert p.size == node.N_PARAMS == 82


def test_node_hessp_matches_differences_of_the_gradient(node_fun):
    rng = np.random.default_rng(11)
    p0 = node.initial_guess()
    for v in (p0, p0 + 0.1 * rng.standard_normal(p0.size)):
        w = rng.standard_normal(p0.size)
        w /= np.linalg.norm(w)
        hw = node_fun.hessp(v, w)
        fd = hessp_by_differences(node_fun, v, w, h=1e-3)
        assert rel(hw, fd) < 1e-7, rel(hw, fd)


def test_node_short_trust_krylov_run_decreases_the_loss():
    res, hist, stats = node.fit(NODE_STEPS, max_iter=15, verbose=False)
    obj = [h["objective"] for h in hist]
    assert len(obj) == 16 and stats["iterations"] == 15
    assert all(b <= a for a, b in zip(obj, obj[1:]))  # trust region: only decreasing steps accepted
    assert obj[-1] < 0.05 * obj[0]
    assert stats["hessps"] > 0 and stats["solver"] == "trust-krylov"


def test_node_steps_must_put_observations_on_the_grid():
    with pytest.raises(ValueError, match="multiple of 40"):
        node.make_problem(50)
