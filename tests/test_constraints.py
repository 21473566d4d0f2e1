"""Constraints: exact Jacobians by a block of cotangents, and solve_ocp.

References are independent of the code under test: the complex step of a plain numpy Euler / RK4
implementation of the same constraints (relative 1e-10, free final time included), central
differences of the constraint values, a hand-written constraint against the traced one, and closed
forms of the optimal-control problems (the discrete double integrator's KKT solution, the
Bryson-Denham optimum 4 / (9 l)).
"""

from __future__ import annotations

import numba
import numpy as np
import pytest

import adjoint

K = 12


def _dyn(x, c, p, t):
    return np.array([x[1], c[0] * p[0] - 0.1 * np.sin(x[0]) * (1.0 + t)])


def _make(every=3):
    return adjoint.ControlProblem(
        _dyn,
        [0.3, 0.1],
        (0.0, 1.0),
        K,
        running_cost=lambda x, c, p, t: c[0] ** 2,
        control_dim=1,
        param_dim=1,
        constraints=[
            adjoint.Terminal(
                lambda x, p: np.array([x[0] * x[1], x[1] ** 2 + p[0]]), lower=[0.0, -1.0], upper=[0.0, 1.0]
            ),
            adjoint.Terminal(lambda x, c, p, t: x[0] * t, upper=2.0),
            adjoint.Path(lambda x, c, p, t: np.array([x[0] + c[0] ** 2, x[1] * t * p[0]]), upper=1.0, every=every),
        ],
    )


@pytest.fixture(scope="module")
def prob():
    return _make()


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    return rng.normal(size=(K, 1)), np.array([1.3])


def _central(prob, C, p, method, h=1e-6):
    def vals(C_, p_, x0_=None):
        return adjoint.constraint_jacobian(prob, controls=C_, params=p_, x0=x0_, method=method).values

    r = vals(C, p).shape[0]
    jc = np.zeros((r, K, 1))
    for k in range(K):
        Cp, Cm = C.copy(), C.copy()
        Cp[k, 0] += h
        Cm[k, 0] -= h
        jc[:, k, 0] = (vals(Cp, p) - vals(Cm, p)) / (2 * h)
    jp = ((vals(C, p + h) - vals(C, p - h)) / (2 * h))[:, None]
    jx = np.stack([(vals(C, p, prob.x0 + h * e) - vals(C, p, prob.x0 - h * e)) / (2 * h) for e in np.eye(2)], 1)
    return jc, jp, jx


@pytest.mark.parametrize("method", [adjoint.Euler(), adjoint.RK4()], ids=["euler", "rk4"])
def test_jacobian_matches_central_differences(prob, inputs, method):
    C, p = inputs
    J = adjoint.constraint_jacobian(prob, controls=C, params=p, method=method, checkpoint=adjoint.StoreAll())
    # rows: 2 + 1 terminal rows, then 2 rows per node k = 0, 3, 6, 9
    assert J.terminal_rows == 3 and J.path_rows == 2
    np.testing.assert_allclose(J.path_times, np.arange(0, K, 3) / K)
    assert J.values.shape == (3 + 2 * 4,) and J.controls.shape == (11, K, 1)
    jc, jp, jx = _central(prob, C, p, method)
    np.testing.assert_allclose(J.controls, jc, atol=2e-8)
    np.testing.assert_allclose(J.params, jp, atol=2e-8)
    np.testing.assert_allclose(J.x0, jx, atol=2e-8)
    # a path row of node k does not depend on the controls of steps k and later
    for a, k in enumerate(range(0, K, 3)):
        rows = slice(3 + 2 * a, 5 + 2 * a)
        assert np.all(J.controls[rows, k + 1 :, :] == 0.0)
    # the values are those of the forward trajectory
    _, traj = adjoint.simulate(prob, controls=C, params=p, method=method)
    xK = traj[-1]
    np.testing.assert_allclose(J.values[:3], [xK[0] * xK[1], xK[1] ** 2 + p[0], xK[0] * 1.0], rtol=1e-14)
    np.testing.assert_allclose(J.values[3 + 2 * 2], traj[6, 0] + C[6, 0] ** 2, rtol=1e-14)
    np.testing.assert_array_equal(J.lower[:3], [0.0, -1.0, -np.inf])
    np.testing.assert_array_equal(J.upper[3:], np.ones(8))


@pytest.mark.parametrize(
    "schedule",
    [adjoint.Revolve(3), adjoint.Uniform(4), adjoint.Revolve(1), adjoint.MemoryBudget(4 * 2 * 8)],
    ids=["revolve3", "uniform4", "revolve1", "budget"],
)
@pytest.mark.parametrize("method", [adjoint.Euler(), adjoint.Heun()], ids=["euler", "heun"])
def test_streamed_jacobians_equal_store_all_bit_for_bit(prob, inputs, schedule, method):
    C, p = inputs
    J = adjoint.constraint_jacobian(prob, controls=C, params=p, method=method, checkpoint=adjoint.StoreAll())
    J2 = adjoint.constraint_jacobian(prob, controls=C, params=p, method=method, checkpoint=schedule)
    assert J2.schedule != "StoreAll"
    assert J2.forward_steps > K
    for name in ("values", "controls", "params", "x0"):
        np.testing.assert_array_equal(getattr(J2, name), getattr(J, name), err_msg=name)


@numba.njit
def _hand_path(x, c, p, t, out):
    out[0] = x[0] + c[0] ** 2
    out[1] = x[1] * t * p[0]


@numba.njit
def _hand_path_vjp(x, c, p, t, w, out_x, out_c, out_p):
    out_x[0] = w[0]
    out_x[1] = w[1] * t * p[0]
    out_c[0] = 2.0 * c[0] * w[0]
    out_p[0] = w[1] * x[1] * t


def test_hand_written_constraint_matches_traced(prob, inputs):
    C, p = inputs
    hand = adjoint.ControlProblem(
        _dyn,
        [0.3, 0.1],
        (0.0, 1.0),
        K,
        running_cost=lambda x, c, p, t: c[0] ** 2,
        control_dim=1,
        param_dim=1,
        constraints=[adjoint.Path(_hand_path, upper=1.0, every=3, vjp=_hand_path_vjp, size=2)],
    )
    Jh = adjoint.constraint_jacobian(hand, controls=C, params=p)
    Jt = adjoint.constraint_jacobian(prob, controls=C, params=p)
    assert Jh.terminal_rows == 0
    np.testing.assert_allclose(Jh.values, Jt.values[3:], rtol=1e-14)
    np.testing.assert_allclose(Jh.controls, Jt.controls[3:], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(Jh.params, Jt.params[3:], rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(Jh.x0, Jt.x0[3:], rtol=1e-13, atol=1e-15)


def _double_integrator(steps, constraints=None):
    return adjoint.ControlProblem(
        lambda x, c, p, t: np.array([x[1], c[0]]),
        [0.0, 0.0],
        (0.0, 1.0),
        steps,
        running_cost=lambda x, c, p, t: c[0] ** 2,
        control_dim=1,
        constraints=constraints or [adjoint.Terminal(lambda x, p: x - np.array([1.0, 0.0]))],
    )


def _double_integrator_kkt(steps):
    """The discrete optimum by hand: with explicit Euler x_K = M u, minimise tau u.u subject to M u = (1, 0)."""
    tau = 1.0 / steps
    M = np.zeros((2, steps))
    M[1, :] = tau
    M[0, :] = tau * tau * (steps - 1 - np.arange(steps))
    u = M.T @ np.linalg.solve(M @ M.T, np.array([1.0, 0.0]))
    return u, tau * u @ u


@pytest.mark.parametrize("solver", ["slsqp", "trust-constr"])
def test_solve_ocp_double_integrator_reaches_the_kkt_solution(solver):
    prob = _double_integrator(40)
    u, J = _double_integrator_kkt(40)
    res = adjoint.solve_ocp(prob, controls=np.zeros((40, 1)), solver=solver)
    assert res.success, res.message
    assert abs(res.value - J) <= 1e-8 * J
    np.testing.assert_allclose(res.controls[:, 0], u, atol=1e-5)
    assert res.max_violation <= 1e-8
    np.testing.assert_allclose(res.trajectory[-1], [1.0, 0.0], atol=1e-8)
    assert res.times.shape == (41,) and res.final_time == 1.0 and res.params is None


def test_solve_ocp_respects_control_bounds():
    prob = _double_integrator(40)
    _, J_free = _double_integrator_kkt(40)  # the free optimum has |u| up to about 6
    res = adjoint.solve_ocp(prob, controls=np.zeros((40, 1)), bounds={"controls": (-5.0, 5.0)})
    assert res.success, res.message
    assert res.controls.max() <= 5.0 + 1e-12 and res.controls.min() >= -5.0 - 1e-12
    assert res.value > J_free * (1 + 1e-6)
    assert res.max_violation <= 1e-8


@pytest.mark.parametrize("solver", ["slsqp", "trust-constr"])
def test_solve_ocp_bryson_denham_state_constraint(solver):
    """Bryson-Denham: x' = v, v' = u, x(0) = 0, v(0) = 1, x(1) = 0, v(1) = -1, x <= l; the continuous
    optimum of 1/2 int u^2 is 4 / (9 l) for l <= 1/6 (Bryson and Ho, 1975)."""
    l, steps = 1.0 / 9.0, 100
    prob = adjoint.ControlProblem(
        lambda x, c, p, t: np.array([x[1], c[0]]),
        [0.0, 1.0],
        (0.0, 1.0),
        steps,
        running_cost=lambda x, c, p, t: 0.5 * c[0] ** 2,
        control_dim=1,
        constraints=[
            adjoint.Terminal(lambda x, p: x - np.array([0.0, -1.0])),
            adjoint.Path(lambda x, c, p, t: x[0], upper=l),
        ],
    )
    res = adjoint.solve_ocp(prob, controls=np.zeros((steps, 1)), solver=solver)
    assert res.success, res.message
    assert abs(res.value - 4.0 / (9.0 * l)) < 0.01 * 4.0  # Euler, 100 steps: within 1%
    assert res.trajectory[:-1, 0].max() <= l + 1e-8
    # the constraint is active on an arc: unconstrained, the optimum would be 4 (x peaks at 1/4)
    assert np.sum(res.trajectory[:, 0] > l - 1e-6) >= 3


def test_constraint_errors(prob, inputs):
    C, p = inputs
    with pytest.raises(ValueError, match="lower > upper"):
        adjoint.constraint_jacobian(
            adjoint.ControlProblem(
                _dyn, [0.3, 0.1], (0.0, 1.0), K, running_cost=lambda x, c, p, t: c[0] ** 2, control_dim=1,
                param_dim=1, constraints=[adjoint.Terminal(lambda x, p: x, lower=1.0, upper=0.0)],
            ),
            controls=C, params=p,
        )  # fmt: skip
    with pytest.raises(ValueError, match="has 3 entries; the function returns 2"):
        adjoint.constraint_jacobian(
            adjoint.ControlProblem(
                _dyn, [0.3, 0.1], (0.0, 1.0), K, running_cost=lambda x, c, p, t: c[0] ** 2, control_dim=1,
                param_dim=1, constraints=[adjoint.Terminal(lambda x, p: x, upper=[1.0, 2.0, 3.0])],
            ),
            controls=C, params=p,
        )  # fmt: skip
    with pytest.raises(ValueError, match="NaN"):
        adjoint.Terminal(lambda x, p: x, upper=np.nan)
    with pytest.raises(ValueError, match="`every`"):
        adjoint.Path(lambda x, c, p, t: x, every=0)
    with pytest.raises(TypeError, match="needs its `vjp`"):
        adjoint.Path(_hand_path)
    with pytest.raises(TypeError, match="needs `size`"):
        adjoint.Path(_hand_path, vjp=_hand_path_vjp)
    with pytest.raises(TypeError, match="entries must be adjoint.Terminal or adjoint.Path"):
        _double_integrator(5, constraints=[lambda x, p: x])
    with pytest.raises(ValueError, match="share `every`"):
        _double_integrator(
            5, constraints=[adjoint.Path(lambda x, c, p, t: x, every=1), adjoint.Path(lambda x, c, p, t: x, every=2)]
        )
    with pytest.raises(ValueError, match="no constraints"):
        adjoint.constraint_jacobian(
            adjoint.ControlProblem(_dyn, [0.3, 0.1], (0.0, 1.0), K, running_cost=lambda x, c, p, t: c[0] ** 2,
                                   control_dim=1, param_dim=1),
            controls=C, params=p,
        )  # fmt: skip
    with pytest.raises(ValueError, match="`controls` must have shape"):
        adjoint.constraint_jacobian(prob, controls=C[:-1], params=p)
    with pytest.raises(ValueError, match="segments"):
        adjoint.solve_ocp(prob, controls=C, params=p, segments=0)
    with pytest.raises(ValueError, match="exceeds the 4 grid points"):
        adjoint.solve_ocp(prob, controls=C, params=p, segments=5)
    with pytest.raises(ValueError, match="`solver` must be one of"):
        adjoint.solve_ocp(prob, controls=C, params=p, solver="snopt")
    with pytest.raises(ValueError, match="not optimised"):
        adjoint.solve_ocp(prob, controls=C, bounds={"x0": (0, 1)}, params=p)


# -- free final time -------------------------------------------------------------------------------


def _td_dyn(x, c, p, t):
    return np.array([x[1], c[0] * np.cos(t) - p[0] * x[0]])


def _td_run(x, c, p, t):
    return c[0] ** 2 + t * x[0] ** 2


def _td_problem(t1, constraints=None):
    return adjoint.ControlProblem(
        _td_dyn,
        [0.2, 0.0],
        (0.5, t1),
        30,
        running_cost=_td_run,
        terminal_cost=lambda x, p: p[0] * x[0] ** 2,
        control_dim=1,
        param_dim=1,
        constraints=constraints,
    )


def test_free_final_time_derivatives_match_central_differences_of_fixed_horizons():
    """dJ/dT and dg/dT of the rewritten problem (one ordinary sweep) against central differences of
    the original problem solved with fixed horizons T +- h (time-dependent dynamics and running cost)."""
    from adjoint._freetime import scaled_problem

    term = [adjoint.Terminal(lambda x, c, p, t: np.array([x[0] * t, x[1] + p[0]]))]
    free = _td_problem(adjoint.Free(2.0), term)
    sp = scaled_problem(free, 1)
    rng = np.random.default_rng(1)
    C, T, h = rng.normal(size=(30, 1)), 2.0, 1e-5
    res = adjoint.solve_adjoint(sp, params=[0.7, T], controls=C)
    J = adjoint.constraint_jacobian(sp, params=[0.7, T], controls=C)

    def fixed(T_):
        q = _td_problem(T_, term)
        return adjoint.evaluate(q, params=[0.7], controls=C), adjoint.constraint_jacobian(q, params=[0.7], controls=C)

    (v0, J0), (vp, Jp), (vm, Jm) = fixed(T), fixed(T + h), fixed(T - h)
    assert abs(res.value - v0) <= 1e-13 * abs(v0)
    np.testing.assert_allclose(J.values, J0.values, rtol=1e-13)
    np.testing.assert_allclose(res.grad.params[1], (vp - vm) / (2 * h), rtol=1e-8)
    np.testing.assert_allclose(J.params[:, 1], (Jp.values - Jm.values) / (2 * h), rtol=1e-8)
    # the other derivatives are those of the fixed-horizon problem
    np.testing.assert_allclose(J.controls, J0.controls, rtol=1e-12, atol=1e-15)


def _min_time(steps):
    return adjoint.ControlProblem(
        lambda x, c, p, t: np.array([x[1], c[0]]),
        [0.0, 0.0],
        (0.0, adjoint.Free(3.0, lower=0.5, upper=10.0)),
        steps,
        running_cost=lambda x, c, p, t: 1.0,
        control_dim=1,
        constraints=[adjoint.Terminal(lambda x, p: x - np.array([1.0, 0.0]))],
    )


@pytest.mark.parametrize("solver", ["slsqp", "ipopt"])
def test_minimum_time_double_integrator(solver):
    """Rest to rest over distance 1 with |u| <= 1: bang-bang, T* = 2. On the Euler grid with an even
    number of steps the discrete optimum is T = 2 as well (x_K = tau^2 (K/2)^2 = T^2 / 4)."""
    if solver == "ipopt":
        pytest.importorskip("casadi")
    res = adjoint.solve_ocp(
        _min_time(40), controls=np.zeros((40, 1)), bounds={"controls": (-1.0, 1.0)}, solver=solver,
        options={"tol": 1e-10},
    )  # fmt: skip
    assert res.success, res.message
    assert abs(res.final_time - 2.0) < 1e-6
    assert abs(res.value - res.final_time) < 1e-12  # the running cost 1 integrates to T
    np.testing.assert_allclose(res.times[[0, -1]], [0.0, res.final_time])
    np.testing.assert_allclose(res.controls[:15, 0], 1.0, atol=1e-4)
    np.testing.assert_allclose(res.controls[-15:, 0], -1.0, atol=1e-4)


def test_free_final_time_errors():
    with pytest.raises(ValueError, match="exceeds guess"):
        adjoint.Free(1.0, lower=2.0)
    with pytest.raises(ValueError, match="must exceed t0"):
        _td_problem(adjoint.Free(2.0, lower=0.5))
    with pytest.raises(ValueError, match="t1 > t0"):
        _td_problem(adjoint.Free(0.1))
    from adjoint.problems import lqr

    hand = adjoint.ControlProblem(lqr.DYNAMICS, lqr.X0, (0.0, adjoint.Free(5.0)), 20, running_cost=lqr.RUNNING)
    with pytest.raises(ValueError, match="plain numpy functions"):
        adjoint.solve_ocp(hand, controls=np.zeros((20, 1)))


# -- IPOPT -----------------------------------------------------------------------------------------


def test_ipopt_double_integrator_and_multipliers():
    pytest.importorskip("casadi")
    u, J = _double_integrator_kkt(40)
    res = adjoint.solve_ocp(_double_integrator(40), controls=np.zeros((40, 1)), solver="ipopt")
    assert res.success, res.message
    assert abs(res.value - J) <= 1e-7 * J
    np.testing.assert_allclose(res.controls[:, 0], u, atol=1e-4)
    # KKT: grad J + J_g^T lambda = 0 at the solution (IPOPT's sign convention)
    g = adjoint.solve_adjoint(_double_integrator(40), controls=res.controls).grad.controls.ravel()
    Jg = res.constraints.controls.reshape(2, -1)
    np.testing.assert_allclose(g + Jg.T @ res.multipliers, 0.0, atol=1e-6)


def test_cli_solves_bryson_denham(tmp_path):
    import json
    import os
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""), MPLBACKEND="Agg")
    out = subprocess.run(
        [sys.executable, "-m", "adjoint", "solve", "bryson_denham", "--steps", "80", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=root, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert sum("violation" in line for line in out.stdout.splitlines()) >= 2, out.stdout
    summary = json.loads((tmp_path / "bryson_denham.json").read_text())
    assert summary["success"] and summary["max_violation"] <= 1e-8
    assert abs(summary["objective"] - 4.0) < 0.02 * 4.0
    assert (tmp_path / "bryson_denham.png").stat().st_size > 0


# -- multiple shooting -----------------------------------------------------------------------------


def test_shooting_jacobian_matches_central_differences(prob, inputs):
    """The sparse Jacobian of the shooting formulation (continuity rows, per-segment path and terminal
    rows; parameters, controls and segment start states as unknowns) against central differences."""
    from adjoint._shooting import Shooting

    C, p = inputs
    sh = Shooting(
        prob, 3, params=p, controls=C, x0=None, method=adjoint.Euler(), checkpoint=adjoint.StoreAll(),
        optimise_params=True,
    )  # fmt: skip
    assert sh.ks == [0, 3, 9, 12]  # cuts on the path nodes 0, 3, 6, 9
    cons = sh.constraints()
    v = sh.v0 + 0.01 * np.random.default_rng(3).normal(size=sh.nv)  # continuity not satisfied
    J = cons.jac(v).toarray()
    assert J.shape == (2 * 2 + 3 + 2 * 4, sh.nv)
    h = 1e-6
    fd = np.stack([(cons.values(v + h * e) - cons.values(v - h * e)) / (2 * h) for e in np.eye(sh.nv)], 1)
    np.testing.assert_allclose(J, fd, atol=3e-8)
    # the objective's gradient too
    g = sh.grad(v)
    fdg = np.array([(sh.value(v + h * e) - sh.value(v - h * e)) / (2 * h) for e in np.eye(sh.nv)])
    np.testing.assert_allclose(g, fdg, rtol=1e-6, atol=1e-8)
    # the rows of a segment do not depend on the controls of later segments
    assert np.all(J[:2, 1 + 3 :][:, : 12 - 3] == 0.0)


@pytest.mark.parametrize("solver", ["slsqp", "trust-constr", "ipopt"])
def test_multiple_shooting_finds_the_single_shooting_optimum(solver):
    if solver == "ipopt":
        pytest.importorskip("casadi")
    from adjoint.problems import bryson_denham as bd

    single = adjoint.solve_ocp(bd.make_problem(60), controls=np.zeros((60, 1)), options={"tol": 1e-10})
    res = adjoint.solve_ocp(bd.make_problem(60), controls=np.zeros((60, 1)), solver=solver, segments=4)
    assert res.success, res.message
    assert abs(res.value - single.value) < 1e-4 * single.value
    assert res.max_violation <= 1e-6
    assert res.trajectory.shape == (61, 2) and res.constraints is None


def _unstable_kkt(lam, T, K):
    """min tau sum u^2 s.t. x_K = 0 for x' = lam x + u, x0 = 1, explicit Euler: x_K = a^K + sum_k M_k u_k
    with a = 1 + tau lam, M_k = tau a^(K-1-k); u = -M^T (M M^T)^-1 a^K (in logarithms: a^K ~ 1e19)."""
    tau = T / K
    a = 1 + tau * lam
    logw = (K - 1 - np.arange(K)) * np.log(a) + np.log(tau)
    top = logw.max()
    log_mm = np.log(np.sum(np.exp(2 * (logw - top)))) + 2 * top
    u = -np.exp(logw + K * np.log(a) - log_mm)
    return u, tau * np.sum(u**2)


@pytest.mark.parametrize("solver", ["slsqp", "ipopt"])
def test_multiple_shooting_on_unstable_dynamics(solver):
    """x' = 10 x + u over [0, 5]: the state grows by 1.25^200 ~ 2e19 on the grid; 20 segments of 10
    steps keep every simulation bounded and reach the discrete optimum."""
    if solver == "ipopt":
        pytest.importorskip("casadi")
    K = 200
    prob = adjoint.ControlProblem(
        lambda x, c, p, t: np.array([10.0 * x[0] + c[0]]),
        [1.0],
        (0.0, 5.0),
        K,
        running_cost=lambda x, c, p, t: c[0] ** 2,
        control_dim=1,
        constraints=[adjoint.Terminal(lambda x, p: x)],
    )
    u, J = _unstable_kkt(10.0, 5.0, K)
    res = adjoint.solve_ocp(prob, controls=np.zeros((K, 1)), solver=solver, segments=20, options={"tol": 1e-9})
    assert res.success, res.message
    assert abs(res.value - J) < 1e-6 * J
    np.testing.assert_allclose(res.controls[:, 0], u, atol=1e-3 * np.abs(u).max())
    assert abs(res.trajectory[-1, 0]) < 1e-6


def test_nlp_pieces_for_scipy_minimize():
    """problem.nlp(): the same NLP as solve_ocp, for a user's own scipy.optimize.minimize call (free final
    time and multiple shooting: unpack gives the final time and the segment start states)."""
    from scipy.optimize import minimize

    P = _min_time(40).nlp(controls=np.zeros((40, 1)), bounds={"controls": (-1.0, 1.0)}, segments=4)
    assert P.x0.shape == (40 + 1 + 3 * 2,)
    res = minimize(
        P.fun, P.x0, jac=True, method="SLSQP", bounds=P.bounds, constraints=P.constraints,
        options={"ftol": 1e-12, "maxiter": 500},
    )  # fmt: skip
    assert res.success, res.message
    blocks = P.unpack(res.x)
    assert abs(blocks["final_time"] - 2.0) < 1e-6
    assert blocks["params"] is None and blocks["controls"].shape == (40, 1) and blocks["states"].shape == (3, 2)
    # the first cut (step 10) lies on the discrete bang-bang trajectory: Euler with u = 1, tau = 0.05 gives
    # v_10 = 10 tau = 0.5 and x_10 = tau^2 (0 + 1 + ... + 9) = 0.1125
    np.testing.assert_allclose(blocks["states"][0], [0.1125, 0.5], atol=1e-5)


def test_clear_errors_for_bad_constraint_outputs_and_missing_ipopt(monkeypatch):
    def prob_with(con):
        return adjoint.ControlProblem(
            _dyn, [0.3, 0.1], (0.0, 1.0), K, running_cost=lambda x, c, p, t: c[0] ** 2, control_dim=1, param_dim=1,
            constraints=[con],
        )  # fmt: skip

    C, p = np.zeros((K, 1)), np.array([1.0])
    with pytest.raises(FloatingPointError, match="constraint values are non-finite"):
        adjoint.constraint_jacobian(prob_with(adjoint.Terminal(lambda x, p: np.log(x[0] - 10.0))), controls=C, params=p)
    with pytest.raises(ValueError, match="1-D array"):
        adjoint.constraint_jacobian(prob_with(adjoint.Terminal(lambda x, p: np.outer(x, x))), controls=C, params=p)
    monkeypatch.setitem(__import__("sys").modules, "casadi", None)  # as if CasADi were not installed
    with pytest.raises(ImportError, match=r'pip install -e "\.\[ipopt\]"'):
        adjoint.solve_ocp(_double_integrator(10), controls=np.zeros((10, 1)), solver="ipopt")


# -- complex step of an independent numpy implementation (acceptance: relative 1e-10) ---------------


def _numpy_constraints(C, p, x0, T, method, t0=0.0, every=3):
    """The constraint rows of :func:`_make` by a plain numpy Euler / RK4 loop on the grid t0 + k tau,
    tau = (T - t0) / K, in complex arithmetic (no adjoint code involved)."""
    tau = (T - t0) / K

    def u(x, c, t):
        return np.array([x[1], c[0] * p[0] - 0.1 * np.sin(x[0]) * (1.0 + t)])

    x = np.array(x0, dtype=complex)
    path = []
    for k in range(K):
        t = t0 + k * tau
        if k % every == 0:
            path += [x[0] + C[k, 0] ** 2, x[1] * t * p[0]]
        if method == "euler":
            x = x + tau * u(x, C[k], t)
        else:
            k1 = u(x, C[k], t)
            k2 = u(x + tau / 2 * k1, C[k], t + tau / 2)
            k3 = u(x + tau / 2 * k2, C[k], t + tau / 2)
            k4 = u(x + tau * k3, C[k], t + tau)
            x = x + tau / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return np.array([x[0] * x[1], x[1] ** 2 + p[0], x[0] * T] + path)


@pytest.mark.parametrize("method", ["euler", "rk4"])
def test_jacobian_matches_complex_step_of_an_independent_numpy_implementation(prob, inputs, method):
    C, p = inputs
    meth = adjoint.Euler() if method == "euler" else adjoint.RK4()
    J = adjoint.constraint_jacobian(prob, controls=C, params=p, method=meth, checkpoint=adjoint.Revolve(3))
    h = 1e-30
    x0 = prob.x0.astype(complex)
    ref_vals = _numpy_constraints(C, p, x0, 1.0, method).real
    np.testing.assert_allclose(J.values, ref_vals, rtol=1e-13, atol=1e-15)

    def cs(C_=C, p_=p, x0_=x0):
        return _numpy_constraints(C_, p_, x0_, 1.0, method).imag / h

    jc = np.zeros_like(J.controls)
    for k in range(K):
        Cc = C.astype(complex)
        Cc[k, 0] += 1j * h
        jc[:, k, 0] = cs(C_=Cc)
    jp = cs(p_=p + 1j * h)
    jx = np.stack([cs(x0_=x0 + 1j * h * e) for e in np.eye(2)], 1)
    scale = np.abs(np.concatenate([jc.reshape(len(ref_vals), -1), jp[:, None], jx], 1)).max(axis=1)[:, None]
    for got, ref in (
        (J.controls.reshape(len(ref_vals), -1), jc.reshape(len(ref_vals), -1)),
        (J.params, jp[:, None]),
        (J.x0, jx),
    ):
        assert np.all(np.abs(got - ref) <= 1e-10 * np.maximum(scale, 1e-300)), np.abs(got - ref).max()


def test_free_final_time_jacobian_matches_complex_step_in_t():
    """dg/dT of the rewritten problem (T = the last parameter) against the complex step in T of the
    independent numpy implementation, where T sets tau and every time t_k."""
    from adjoint._freetime import scaled_problem

    free = adjoint.ControlProblem(
        _dyn, [0.3, 0.1], (0.0, adjoint.Free(1.0)), K, running_cost=lambda x, c, p, t: c[0] ** 2, control_dim=1,
        param_dim=1, constraints=_make().constraints,
    )  # fmt: skip
    # the Terminal x[0] * t of _make reads t = T: the numpy rows use x[0] * T
    rng = np.random.default_rng(5)
    C, p, T, h = rng.normal(size=(K, 1)), np.array([0.8]), 1.3, 1e-30
    sp = scaled_problem(free, 1)
    for method, meth in (("euler", adjoint.Euler()), ("rk4", adjoint.RK4())):
        J = adjoint.constraint_jacobian(sp, controls=C, params=[p[0], T], method=meth)
        ref = _numpy_constraints(C, p, free.x0.astype(complex), T, method)
        np.testing.assert_allclose(J.values, ref.real, rtol=1e-12, atol=1e-14)
        dT = _numpy_constraints(C, p, free.x0.astype(complex), T + 1j * h, method).imag / h
        np.testing.assert_allclose(J.params[:, 1], dT, rtol=1e-10, atol=1e-10 * np.abs(dT).max())


@pytest.mark.parametrize("method", [adjoint.Euler(), adjoint.Heun(), adjoint.RK4()], ids=["euler", "heun", "rk4"])
def test_scalar_block_kernels_equal_the_generic_ones_bit_for_bit(prob, inputs, method):
    """The generated block kernels (state and one row in scalar locals; store-all, and the one
    executor with the block's actions for streamed plans, compound actions included) against the
    generic block kernels: the same bits."""
    C, p = inputs
    ref = adjoint.constraint_jacobian(
        prob, controls=C, params=p, method=method, checkpoint=adjoint.StoreAll(), backend="generic"
    )
    assert ref.backend == "generic"
    for schedule in (adjoint.StoreAll(), adjoint.Revolve(3), adjoint.Uniform(4), adjoint.Revolve(1)):
        for backend in ("scalar", "generic"):
            J = adjoint.constraint_jacobian(
                prob, controls=C, params=p, method=method, checkpoint=schedule, backend=backend
            )
            assert J.backend == backend
            for name in ("values", "controls", "params", "x0"):
                np.testing.assert_array_equal(
                    getattr(J, name), getattr(ref, name), err_msg=f"{schedule} {backend} {name}"
                )
    assert adjoint.constraint_jacobian(prob, controls=C, params=p, method=method).backend == "scalar"  # auto
    hand = adjoint.ControlProblem(
        _dyn, [0.3, 0.1], (0.0, 1.0), K, running_cost=lambda x, c, p, t: c[0] ** 2, control_dim=1, param_dim=1,
        constraints=[adjoint.Path(_hand_path, upper=1.0, every=3, vjp=_hand_path_vjp, size=2)],
    )  # fmt: skip
    assert adjoint.constraint_jacobian(hand, controls=C, params=p).backend == "generic"
    with pytest.raises(ValueError, match='backend="scalar" needs traced'):
        adjoint.constraint_jacobian(hand, controls=C, params=p, backend="scalar")
    with pytest.raises(ValueError, match="`backend` must be"):
        adjoint.constraint_jacobian(prob, controls=C, params=p, backend="tape")


def test_discrete_maps_and_leapfrog_jacobians_and_the_reversible_error():
    """Block Jacobians of a discrete map (scalar and generic) and of a separable leapfrog problem
    (generic, streamed) against central differences; Reversible is refused with the alternatives."""
    from adjoint.problems import harmonic_oscillator as ho

    def mp(x, c, p, t):
        return np.array([np.tanh(x[0] * p[0] + c[0]), x[0] * x[1] * 0.5 + c[0]])

    k, h = 10, 1e-6
    prob = adjoint.ControlProblem(
        mp, [0.3, 0.2], (0.0, 1.0), k, running_cost=lambda x, c, p, t: c[0] ** 2, control_dim=1, param_dim=1,
        constraints=[adjoint.Terminal(lambda x, p: x * p[0]), adjoint.Path(lambda x, c, p, t: x[1] + c[0], every=2)],
    )  # fmt: skip
    C, p = np.random.default_rng(2).normal(size=(k, 1)), np.array([0.7])

    def vals(C_):
        return adjoint.constraint_jacobian(prob, controls=C_, params=p, method=adjoint.DiscreteMap()).values

    fd = np.stack([(vals(C + h * e.reshape(k, 1)) - vals(C - h * e.reshape(k, 1))) / (2 * h) for e in np.eye(k)], 1)
    for backend in ("scalar", "generic"):
        J = adjoint.constraint_jacobian(prob, controls=C, params=p, method=adjoint.DiscreteMap(), backend=backend)
        np.testing.assert_allclose(J.controls[:, :, 0], fd, atol=1e-8)
    lf = adjoint.ControlProblem(
        ho.DYNAMICS, ho.S0, (0.0, 2.0), 20, terminal_cost=ho.TERMINAL,
        constraints=[adjoint.Terminal(lambda x, p: np.array([x[0] * x[1], x[1] * p[0]])),
                     adjoint.Path(lambda x, c, p, t: x[0] ** 2, every=3)],
    )  # fmt: skip
    w = np.array([1.3])

    def lvals(w_):
        return adjoint.constraint_jacobian(lf, params=w_, method=adjoint.Leapfrog()).values

    J = adjoint.constraint_jacobian(lf, params=w, method=adjoint.Leapfrog(), checkpoint=adjoint.Revolve(3))
    np.testing.assert_allclose(J.params[:, 0], (lvals(w + h) - lvals(w - h)) / (2 * h), atol=1e-8)
    with pytest.raises(ValueError, match="do not run the Reversible"):
        adjoint.constraint_jacobian(lf, params=w, method=adjoint.Leapfrog(), checkpoint=adjoint.Reversible())


@numba.njit
def _hand_path_too_long(x, c, p, t, out):
    out[0] = x[0]
    out[2] = x[1]  # size=2: out of range


@numba.njit
def _hand_path_uncompilable(x, c, p, t, out):
    out[0] = x[0] + "a"  # numba cannot type this


def test_hand_written_constraints_are_checked_before_the_kernels(inputs):
    C, p = inputs

    def prob_with(fn):
        return adjoint.ControlProblem(
            _dyn, [0.3, 0.1], (0.0, 1.0), K, running_cost=lambda x, c, p, t: c[0] ** 2, control_dim=1, param_dim=1,
            constraints=[adjoint.Path(fn, upper=1.0, vjp=_hand_path_vjp, size=2)],
        )  # fmt: skip

    with pytest.raises(IndexError, match=r"path constraint.*writes out\[2\].*size=2"):
        adjoint.constraint_jacobian(prob_with(_hand_path_too_long), controls=C, params=p)
    with pytest.raises(TypeError, match="could not be compiled by numba.*size=2"):
        adjoint.constraint_jacobian(prob_with(_hand_path_uncompilable), controls=C, params=p)
