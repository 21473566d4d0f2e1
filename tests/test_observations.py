"""Observations, residuals and their Jacobians (issue 17), against an independent plain numpy
implementation of the same discrete scheme (complex step) and against each other (forward and
reverse Jacobians, Gauss-Newton products, the objective's gradient)."""

from __future__ import annotations

import numpy as np
import pytest

import adjoint

K = 40
T1 = 2.0
TAU = T1 / K
P0 = np.array([0.9, 0.5, 0.7])
X0 = np.array([1.0, 0.4])
OBS_K = np.array([0, 5, 12, 20, 33, 40])  # includes t0 and the final time
DATA = np.array([[1.0, 0.4], [0.93, np.nan], [0.8, 0.45], [0.7, 0.5], [np.nan, 0.52], [0.55, 0.5]])
WEIGHTS = np.array([1.0, 2.0])


def field(x, c, p, t):
    return np.array([-p[0] * x[0] * x[1] + c[0], p[1] * x[0] - p[2] * x[1] ** 2])


def observe(x, p):
    return np.array([x[0] + 0.1 * p[0] * x[1], np.exp(-x[1])])


def make(observe_fn=None, data=DATA, weights=WEIGHTS, **kw):
    obs = adjoint.Observations(OBS_K * TAU, data, observe=observe_fn, weights=weights)
    return adjoint.ControlProblem(field, X0, (0.0, T1), K, observations=obs, param_dim=3, control_dim=1, **kw)


def _controls():
    return 0.05 * np.cos(np.arange(K))[:, None]


def reference_residuals(v, obs_fn, method):
    """The residuals by a plain numpy Euler / RK4 (complex-safe), ``v = (p, C.ravel(), x0)``."""
    p, C, x = v[:3], v[3 : 3 + K].reshape(K, 1), v[3 + K :]
    traj = [x]
    for k in range(K):
        t = k * TAU
        if method == "euler":
            x = x + TAU * field(x, C[k], p, t)
        else:
            k1 = field(x, C[k], p, t)
            k2 = field(x + 0.5 * TAU * k1, C[k], p, t + 0.5 * TAU)
            k3 = field(x + 0.5 * TAU * k2, C[k], p, t + 0.5 * TAU)
            k4 = field(x + TAU * k3, C[k], p, t + TAU)
            x = x + TAU / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        traj.append(x)
    out = []
    for j, k in enumerate(OBS_K):
        o = traj[k] if obs_fn is None else obs_fn(traj[k], p)
        for i in range(2):
            if not np.isnan(DATA[j, i]):
                out.append(WEIGHTS[i] * (o[i] - DATA[j, i]))
    return np.array(out)


def _v():
    return np.concatenate([P0, _controls().ravel(), X0])


@pytest.mark.parametrize("obs_fn", [None, observe], ids=["state", "observe"])
@pytest.mark.parametrize("name", ["euler", "rk4"])
def test_residuals_and_jacobian_match_complex_step(obs_fn, name):
    prob = make(obs_fn)
    meth = adjoint.Euler() if name == "euler" else adjoint.RK4()
    res = prob.residuals(wrt=("params", "controls", "x0"), params=P0, controls=_controls(), method=meth)
    v = _v()
    r = res(v)
    ref = reference_residuals(v, obs_fn, name)
    assert r.shape == (int(np.sum(~np.isnan(DATA))),) == (res.size,)
    assert np.allclose(r, ref, rtol=1e-13, atol=1e-15)
    h = 1e-30
    Jcs = np.array([reference_residuals(v + 1j * h * e, obs_fn, name).imag / h for e in np.eye(v.size)]).T
    J = res.jac(v)  # N = 45 inputs > 10 residuals: reverse mode (one adjoint sweep per residual)
    assert np.abs(J - Jcs).max() <= 1e-11 * np.abs(Jcs).max()
    # forward mode on the same inputs (forced) agrees with reverse mode
    _, Jf = res._forward(v, np.eye(v.size))
    assert np.abs(Jf - Jcs).max() <= 1e-11 * np.abs(Jcs).max()
    # params only: forward mode (3 inputs < 10 residuals)
    rp = prob.residuals(wrt="params", params=P0, controls=_controls(), method=meth)
    assert np.abs(rp.jac(P0) - Jcs[:, :3]).max() <= 1e-11 * np.abs(Jcs[:, :3]).max()


def test_objective_gradient_gauss_newton_and_hessp():
    prob = make(observe)
    meth = adjoint.RK4()
    wrt = ("params", "controls", "x0")
    res = prob.residuals(wrt=wrt, params=P0, controls=_controls(), method=meth)
    fun = prob.objective(wrt=wrt, params=P0, controls=_controls(), method=meth)
    v = _v()
    r, J = res(v), res.jac(v)
    val, g = fun(v)
    assert val == pytest.approx(0.5 * r @ r, rel=1e-13)
    assert np.abs(g - J.T @ r).max() <= 1e-12 * np.abs(g).max()
    w = np.random.default_rng(0).standard_normal(v.size)
    assert np.abs(res.gnp(v, w) - J.T @ (J @ w)).max() <= 1e-12 * np.abs(J.T @ (J @ w)).max()
    h = 1e-5
    fd = (fun(v + h * w)[1] - fun(v - h * w)[1]) / (2 * h)
    Hw = fun.hessp(v, w)
    assert np.linalg.norm(Hw - fd) <= 1e-7 * np.linalg.norm(Hw)


def test_observations_with_costs_add_up():
    def running(x, c, p, t):
        return 0.3 * c[0] ** 2 + 0.1 * x[1] ** 2

    prob = make(running_cost=running)
    plain = adjoint.ControlProblem(field, X0, (0.0, T1), K, running_cost=running, param_dim=3, control_dim=1)
    r = prob.residuals(params=P0, controls=_controls())(P0)
    a = adjoint.solve_adjoint(prob, params=P0, controls=_controls())
    b = adjoint.solve_adjoint(plain, params=P0, controls=_controls())
    assert a.value == pytest.approx(b.value + 0.5 * r @ r, rel=1e-12)
    assert a.grad.controls.shape == (K, 1)


def test_least_squares_recovers_parameters():
    from scipy.optimize import least_squares

    truth = make(data=np.zeros((6, 2)))
    _, traj = adjoint.simulate(truth, params=P0, controls=_controls(), method=adjoint.RK4())
    obs = adjoint.Observations(OBS_K * TAU, traj[OBS_K])
    prob = adjoint.ControlProblem(field, X0, (0.0, T1), K, observations=obs, param_dim=3, control_dim=1)
    res = prob.residuals(wrt="params", params=P0, controls=_controls(), method=adjoint.RK4())
    sol = least_squares(res, np.array([0.5, 0.5, 0.5]), jac=res.jac, xtol=1e-14, ftol=1e-14, gtol=1e-14)
    assert np.abs(sol.x - P0).max() < 1e-9
    assert sol.njev <= 20


def test_errors():
    with pytest.raises(
        ValueError, match=r"not a point of the step grid.*nearest grid points are t_2 = 0.1 and t_3 = 0.15"
    ):
        adjoint.ControlProblem(
            field, X0, (0.0, T1), K, observations=adjoint.Observations([0.12], [[1.0, 1.0]]), param_dim=3, control_dim=1
        )
    with pytest.raises(ValueError, match="outside the horizon"):
        adjoint.ControlProblem(
            field, X0, (0.0, T1), K, observations=adjoint.Observations([3.0], [[1.0, 1.0]]), param_dim=3, control_dim=1
        )
    with pytest.raises(ValueError, match="`data` must have shape"):
        adjoint.Observations([0.0, 1.0], np.zeros((3, 2)))
    with pytest.raises(ValueError, match="`weights` must be"):
        adjoint.Observations([0.0, 1.0], np.zeros((2, 2)), weights=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="must not contain inf"):
        adjoint.Observations([0.0, 1.0], [[np.inf], [0.0]])
    with pytest.raises(ValueError, match="distinct"):
        adjoint.Observations([1.0, 1.0], [[0.0], [0.0]])
    with pytest.raises(ValueError, match="free final time"):
        adjoint.ControlProblem(
            field,
            X0,
            (0.0, adjoint.Free(2.0)),
            K,
            observations=adjoint.Observations([1.0], [[0.0, 0.0]]),
            param_dim=3,
            control_dim=1,
        )
    # the default observes the whole state: data with another width is named
    prob = adjoint.ControlProblem(
        field, X0, (0.0, T1), K, observations=adjoint.Observations([1.0], [[0.0]]), param_dim=3, control_dim=1
    )
    with pytest.raises(ValueError, match="`data` has 1 columns but the state has 2"):
        adjoint.solve_adjoint(prob, params=P0, controls=_controls())
    plain = adjoint.ControlProblem(
        field, X0, (0.0, T1), K, running_cost=lambda x, c, p, t: x[0], param_dim=3, control_dim=1
    )
    with pytest.raises(ValueError, match="needs data"):
        plain.residuals(params=P0)
    with pytest.raises(ValueError, match="not a point of the step grid"):
        make().with_steps(K + 1)
    lv = pytest.importorskip("adjoint.problems.lotka_volterra")
    hand = adjoint.ControlProblem(
        lv.DYNAMICS, [1.0, 1.0], (0.0, 1.0), 10, observations=adjoint.Observations([0.5], [[1.0, 1.0]])
    )
    with pytest.raises(ValueError, match="hand-written.*plain numpy function"):
        adjoint.solve_adjoint(hand, params=lv.TRUE_PARAMS)
