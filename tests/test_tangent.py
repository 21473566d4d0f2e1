"""Forward sensitivities, Hessian-vector products and residual Jacobians (issue 17).

Every derivative is checked against an independent reference: complex step through a plain numpy
implementation of the same discrete scheme written here (not using adjoint), central differences of
the adjoint gradient, or the closed-form Hessian of a linear-quadratic problem.
"""

from __future__ import annotations

import numpy as np
import pytest

import adjoint
from adjoint._tangent import hessp

K = 48
P0 = np.array([1.0, 0.6, 0.8, 0.4])
X0 = np.array([1.0, 0.5])
T1 = 2.0


def field(x, c, p, t):
    return np.array([p[0] * x[0] - p[1] * x[0] * x[1] + c[0], -p[2] * x[1] + p[3] * x[0] * x[1] + 0.1 * np.sin(t)])


def running(x, c, p, t):
    return 0.5 * (x[0] - 1.0) ** 2 + 0.1 * c[0] ** 2 + 0.3 * np.sin(x[1]) * p[1]


def terminal(x, p):
    return x[0] * x[1] + p[0] ** 2


def _controls():
    return 0.1 * np.sin(np.arange(K))[:, None]


@pytest.fixture(scope="module")
def prob():
    return adjoint.ControlProblem(
        field, X0, (0.0, T1), K, terminal_cost=terminal, running_cost=running, param_dim=4, control_dim=1
    )


# -- the independent reference: plain numpy (complex-safe) Euler and RK4 -----------------------------

_TABLEAUX = {
    "euler": (np.zeros((1, 1)), np.array([1.0]), np.array([0.0])),
    "heun": (np.array([[0.0, 0.0], [1.0, 0.0]]), np.array([0.5, 0.5]), np.array([0.0, 1.0])),
    "rk4": (
        np.array([[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1.0, 0]]),
        np.array([1, 2, 2, 1]) / 6.0,
        np.array([0, 0.5, 0.5, 1.0]),
    ),
}


def reference(v, method, obs_idx=None):
    """``(J, trajectory)`` of the discrete problem for ``v = (p, C.ravel(), x0)`` (any dtype)."""
    A, b, cn = _TABLEAUX[method]
    p, C, x = v[:4], v[4 : 4 + K].reshape(K, 1), v[4 + K :]
    tau = T1 / K
    J = 0.0
    traj = [x]
    for k in range(K):
        t = k * tau
        J = J + tau * running(x, C[k], p, t)
        ks = []
        for i in range(len(b)):
            xi = x + tau * sum(A[i, j] * ks[j] for j in range(i)) if i else x
            ks.append(field(xi, C[k], p, t + cn[i] * tau))
        x = x + tau * sum(b[i] * ks[i] for i in range(len(b)))
        traj.append(x)
    return J + terminal(x, p), np.array(traj)


def complex_step(v, D, method):
    """Value and state tangents along the columns of ``D`` by complex step (h = 1e-30)."""
    h = 1e-30
    vals, trajs = [], []
    for j in range(D.shape[1]):
        J, tr = reference(v + 1j * h * D[:, j], method)
        vals.append(J.imag / h)
        trajs.append(tr.imag / h)
    return np.array(vals), np.stack(trajs, axis=-1)


def _v():
    return np.concatenate([P0, _controls().ravel(), X0])


METHODS = {"euler": adjoint.Euler(), "heun": adjoint.Heun(), "rk4": adjoint.RK4()}


@pytest.mark.parametrize("name", ["euler", "rk4"])
def test_tangents_match_complex_step(prob, name):
    D = np.random.default_rng(0).standard_normal((4 + K + 2, 3))
    tan = adjoint.solve_tangent(prob, params=P0, controls=_controls(), directions=D, method=METHODS[name])
    dv, dtraj = complex_step(_v(), D, name)
    assert np.allclose(tan.value_tangent, dv, rtol=1e-11, atol=0)
    assert tan.state_tangents.shape == (K + 1, 2, 3)
    scale = np.abs(dtraj).max()
    assert np.abs(tan.state_tangents - dtraj).max() <= 1e-11 * scale
    J, traj = reference(_v(), name)
    assert tan.states == pytest.approx(traj, rel=1e-13, abs=1e-14)
    assert tan.value == pytest.approx(J, rel=1e-13)


def test_tangent_equals_adjoint_gradient_times_direction(prob):
    D = np.random.default_rng(1).standard_normal((4 + K + 2, 2))
    for meth in METHODS.values():
        tan = adjoint.solve_tangent(prob, params=P0, controls=_controls(), directions=D, method=meth)
        r = adjoint.solve_adjoint(prob, params=P0, controls=_controls(), method=meth)
        g = np.concatenate([r.grad.params, r.grad.controls.ravel(), r.grad.x0])
        assert np.abs(tan.value_tangent - g @ D).max() <= 1e-13 * np.abs(g @ D).max()
        assert tan.value == r.value


def test_tangent_wrt_subset_and_times(prob):
    d = np.array([[1.0], [0.0], [0.0], [0.0]])
    ts = prob.times[[K, 0, 12]]
    tan = adjoint.solve_tangent(prob, params=P0, controls=_controls(), directions=d, wrt="params", times=ts)
    D = np.zeros((4 + K + 2, 1))
    D[0, 0] = 1.0
    _, dtraj = complex_step(_v(), D, "euler")
    assert np.array_equal(tan.times, ts)
    assert np.allclose(tan.state_tangents[:, :, 0], dtraj[[K, 0, 12], :, 0], rtol=1e-11, atol=1e-15)


# -- Hessian-vector products ---------------------------------------------------------------------------


def _grad(problem, v, method, np_=4, m=1):
    r = adjoint.solve_adjoint(
        problem, params=v[:np_], controls=v[np_ : np_ + K * m].reshape(K, m), x0=v[np_ + K * m :], method=method
    )
    return np.concatenate([r.grad.params, r.grad.controls.ravel(), r.grad.x0])


def _hessp(problem, v, w, method, np_=4, m=1, checkpoint="auto"):
    hw, g, val, res = hessp(
        problem,
        params=v[:np_],
        controls=v[np_ : np_ + K * m].reshape(K, m),
        x0=v[np_ + K * m :],
        dparams=w[:np_],
        dcontrols=w[np_ : np_ + K * m],
        dx0=w[np_ + K * m :],
        method=method,
        checkpoint=checkpoint,
    )
    return np.concatenate([hw["params"], hw["controls"].ravel(), hw["x0"]]), g, val, res


def _central(problem, v, w, method, **kw):
    h = 1e-5
    return (_grad(problem, v + h * w, method, **kw) - _grad(problem, v - h * w, method, **kw)) / (2 * h)


@pytest.mark.parametrize("name", ["euler", "heun", "rk4"])
def test_hessp_matches_central_differences_of_gradient(prob, name):
    w = np.random.default_rng(2).standard_normal(4 + K + 2)
    Hw, g, _, _ = _hessp(prob, _v(), w, METHODS[name])
    fd = _central(prob, _v(), w, METHODS[name])
    assert np.linalg.norm(Hw - fd) <= 1e-7 * np.linalg.norm(Hw)
    # the second half of the tangent system's gradient is the gradient itself
    assert np.array_equal(
        np.concatenate([g["params"], g["controls"].ravel(), g["x0"]]), _grad(prob, _v(), METHODS[name])
    )


@pytest.mark.parametrize("name", ["euler", "rk4"])
def test_checkpointed_hessp_bitwise_equal_to_store_all(prob, name):
    w = np.random.default_rng(3).standard_normal(4 + K + 2)
    ref, *_ = _hessp(prob, _v(), w, METHODS[name], checkpoint=adjoint.StoreAll())
    for ck in (adjoint.Revolve(4), adjoint.Uniform(6), adjoint.Revolve(1)):
        got, *_ = _hessp(prob, _v(), w, METHODS[name], checkpoint=ck)
        assert np.array_equal(got, ref), ck


def _map(x, c, p, t):
    return np.array([x[0] + 0.1 * np.sin(p[0] * x[1]), x[1] - 0.1 * p[1] * x[0] ** 2 + c[0]])


def test_hessp_discrete_map():
    problem = adjoint.ControlProblem(
        _map, [0.3, 0.5], (0.0, 1.0), K, running_cost=running, terminal_cost=terminal, param_dim=2, control_dim=1
    )
    v = np.concatenate([P0[:2], _controls().ravel(), [0.3, 0.5]])
    w = np.random.default_rng(4).standard_normal(v.size)
    meth = adjoint.DiscreteMap()
    Hw, *_ = _hessp(problem, v, w, meth, np_=2)
    fd = _central(problem, v, w, meth, np_=2)
    assert np.linalg.norm(Hw - fd) <= 1e-7 * np.linalg.norm(Hw)
    ref, *_ = _hessp(problem, v, w, meth, np_=2, checkpoint=adjoint.StoreAll())
    assert np.array_equal(_hessp(problem, v, w, meth, np_=2, checkpoint=adjoint.Revolve(3))[0], ref)


def _sep_u(y, c, p, t):
    return p[0] * y


def _sep_v(x, c, p, t):
    return -p[1] * np.sin(x) + c[0]


def _sep_run(s, c, p, t):
    return 0.5 * s[0] ** 2 + 0.1 * c[0] ** 2 + 0.2 * s[1] ** 4


def _sep_term(s, p):
    return s[0] * s[1] + p[0] * s[1] ** 2


def test_hessp_and_tangent_leapfrog():
    dyn = adjoint.SeparableDynamics(_sep_u, None, _sep_v, None, x_dim=1, y_dim=1, control_dim=1, param_dim=2)
    problem = adjoint.ControlProblem(dyn, [0.3, 0.5], (0.0, 2.0), K, terminal_cost=_sep_term, running_cost=_sep_run)
    v = np.concatenate([[1.1, 0.9], 0.1 * np.cos(np.arange(K)), [0.3, 0.5]])
    w = np.random.default_rng(5).standard_normal(v.size)
    meth = adjoint.Leapfrog()
    Hw, *_ = _hessp(problem, v, w, meth, np_=2)
    fd = _central(problem, v, w, meth, np_=2)
    assert np.linalg.norm(Hw - fd) <= 1e-7 * np.linalg.norm(Hw)
    ref, *_ = _hessp(problem, v, w, meth, np_=2, checkpoint=adjoint.StoreAll())
    assert np.array_equal(_hessp(problem, v, w, meth, np_=2, checkpoint=adjoint.Revolve(3))[0], ref)
    tan = adjoint.solve_tangent(problem, params=v[:2], controls=v[2 : 2 + K].reshape(K, 1), directions=w, method=meth)
    g = _grad(problem, v, meth, np_=2)
    assert tan.value_tangent[0] == pytest.approx(g @ w, rel=1e-12)


@pytest.mark.filterwarnings("ignore:overflow encountered in dot:RuntimeWarning")  # scipy's trust-krylov internals
def test_hessp_linear_quadratic_closed_form():
    """x' = A x + B c, J = tau/2 sum (x'Qx + c'Rc) + x_K'S x_K / 2 with Euler: the Hessian in
    (c, x0) is the constant M' Qbig M + Rbig, built here from the stacked Euler map."""
    n, m = 2, 1
    A = np.array([[0.0, 1.0], [-2.0, -0.3]])
    B = np.array([[0.0], [1.0]])
    Q = np.diag([1.0, 0.5])
    R = np.array([[0.2]])
    S = np.diag([3.0, 1.0])
    tau = T1 / K

    def f(x, c, p, t):
        return np.array([x[1], -2.0 * x[0] - 0.3 * x[1] + c[0]])

    def run(x, c, p, t):
        return 0.5 * (x[0] ** 2 + 0.5 * x[1] ** 2 + 0.2 * c[0] ** 2)

    def term(x, p):
        return 0.5 * (3.0 * x[0] ** 2 + x[1] ** 2)

    problem = adjoint.ControlProblem(f, [1.0, 0.0], (0.0, T1), K, terminal_cost=term, running_cost=run, control_dim=1)
    # x_k = Phi^k x0 + sum_{i<k} Phi^{k-1-i} tau B c_i  ->  X = M u with u = (c, x0)
    Phi = np.eye(n) + tau * A
    N = K * m + n
    M = np.zeros(((K + 1) * n, N))
    M[:n, K * m :] = np.eye(n)
    for k in range(K):
        M[(k + 1) * n : (k + 2) * n] = Phi @ M[k * n : (k + 1) * n]
        M[(k + 1) * n : (k + 2) * n, k * m : (k + 1) * m] += tau * B
    Qbig = np.zeros(((K + 1) * n, (K + 1) * n))
    for k in range(K):
        Qbig[k * n : (k + 1) * n, k * n : (k + 1) * n] = tau * Q
    Qbig[K * n :, K * n :] = S
    H = M.T @ Qbig @ M
    H[: K * m, : K * m] += tau * np.kron(np.eye(K), R)
    fun = problem.objective(wrt=("controls", "x0"), controls=np.zeros((K, 1)))
    rng = np.random.default_rng(6)
    u = rng.standard_normal(N)
    for _ in range(3):
        w = rng.standard_normal(N)
        assert np.linalg.norm(fun.hessp(u, w) - H @ w) <= 1e-12 * np.linalg.norm(H @ w)
    # trust-krylov with the exact hessp reaches the closed-form minimiser in the controls
    from scipy.optimize import minimize

    fc = problem.objective(wrt="controls", controls=np.zeros((K, 1)))
    x0 = np.array([1.0, 0.0])
    Hc = H[: K * m, : K * m]
    c_star = np.linalg.solve(Hc, -H[: K * m, K * m :] @ x0)
    res = minimize(fc, np.zeros(K * m), jac=True, hessp=fc.hessp, method="trust-krylov", options={"gtol": 1e-8})
    # the Hessian is well conditioned: the minimiser to about the gradient tolerance
    assert np.abs(res.x - c_star).max() <= 1e-6 * np.abs(c_star).max()
    with pytest.raises(ValueError, match="the direction `w` must be finite; entry 3"):
        fc.hessp(res.x, np.where(np.arange(K) == 3, np.nan, 1.0))
    assert res.nit < 20
    assert fc.nhev > 0


# -- errors --------------------------------------------------------------------------------------------


def test_errors(prob):
    with pytest.raises(ValueError, match=r"`directions` must have shape \(n_inputs, d\) with n_inputs = 4"):
        adjoint.solve_tangent(prob, params=P0, controls=_controls(), directions=np.ones((3, 1)), wrt="params")
    with pytest.raises(ValueError, match="`directions` must be finite"):
        adjoint.solve_tangent(prob, params=P0, controls=_controls(), directions=[np.nan, 0, 0, 0], wrt="params")
    with pytest.raises(ValueError, match="nearest grid points are t_3"):
        adjoint.solve_tangent(prob, params=P0, controls=_controls(), directions=np.eye(4), wrt="params", times=[0.13])
    lv = pytest.importorskip("adjoint.problems.lotka_volterra")
    hand = lv.make_problem(steps=20)
    with pytest.raises(ValueError, match="hand-written.*plain numpy function"):
        adjoint.solve_tangent(hand, params=lv.TRUE_PARAMS, directions=np.eye(4), wrt="params")
    fun = hand.objective(wrt="params", params=lv.TRUE_PARAMS)
    with pytest.raises(ValueError, match="hand-written.*plain numpy function"):
        fun.hessp(lv.TRUE_PARAMS, np.ones(4))


def test_hand_written_jvp_contract():
    """A hand-written ``Dynamics`` with ``jvp=`` runs forward sensitivities; its state tangents equal
    the traced model's (a second method) and the value tangents equal the adjoint gradient."""
    from numba import njit

    @njit
    def f(x, c, p, t, out):
        out[0] = p[0] * x[0] - p[1] * x[0] * x[1] + c[0]
        out[1] = -p[2] * x[1] + p[3] * x[0] * x[1] + 0.1 * np.sin(t)

    @njit
    def vjp(x, c, p, t, z, out_x, out_c, out_p):
        out_x[0] = (p[0] - p[1] * x[1]) * z[0] + p[3] * x[1] * z[1]
        out_x[1] = -p[1] * x[0] * z[0] + (-p[2] + p[3] * x[0]) * z[1]
        out_c[0] = z[0]
        out_p[0] = x[0] * z[0]
        out_p[1] = -x[0] * x[1] * z[0]
        out_p[2] = -x[1] * z[1]
        out_p[3] = x[0] * x[1] * z[1]

    @njit
    def jvp(x, c, p, t, dx, dc, dp, out):
        out[0] = (p[0] - p[1] * x[1]) * dx[0] - p[1] * x[0] * dx[1] + dc[0] + x[0] * dp[0] - x[0] * x[1] * dp[1]
        out[1] = p[3] * x[1] * dx[0] + (-p[2] + p[3] * x[0]) * dx[1] - x[1] * dp[2] + x[0] * x[1] * dp[3]

    dyn = adjoint.Dynamics(f, vjp, 2, 1, 4, jvp=jvp)
    hand = adjoint.ControlProblem(dyn, X0, (0.0, T1), K, terminal_cost=terminal, running_cost=running)
    traced = adjoint.ControlProblem(
        field, X0, (0.0, T1), K, terminal_cost=terminal, running_cost=running, param_dim=4, control_dim=1
    )
    D = np.random.default_rng(7).standard_normal((4 + K + 2, 2))
    meth = adjoint.RK4()
    a = adjoint.solve_tangent(hand, params=P0, controls=_controls(), directions=D, method=meth)
    b = adjoint.solve_tangent(traced, params=P0, controls=_controls(), directions=D, method=meth)
    assert np.abs(a.state_tangents - b.state_tangents).max() <= 1e-13 * np.abs(b.state_tangents).max()
    g = _grad(hand, _v(), meth)
    assert np.abs(a.value_tangent - g @ D).max() <= 1e-13 * np.abs(g @ D).max()
    # without a jvp: the error says what to add
    bare = adjoint.ControlProblem(adjoint.Dynamics(f, vjp, 2, 1, 4), X0, (0.0, T1), K, terminal_cost=terminal)
    with pytest.raises(ValueError, match=r"pass jvp=\.\.\. to adjoint.Dynamics"):
        adjoint.solve_tangent(bare, params=P0, controls=_controls(), directions=D, method=meth)
    with pytest.raises(ValueError, match="Hessian-vector product.*hand-written"):
        hand.objective(params=P0, controls=_controls()).hessp(P0, P0)
