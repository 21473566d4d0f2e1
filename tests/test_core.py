"""Core acceptance: exact discrete adjoints for Euler, Runge-Kutta and discrete maps."""

import numpy as np
import pytest
from numba import njit

import adjoint
from adjoint.problems import lotka_volterra as lv
from adjoint.problems import lqr, pendulum, perceptron


# ---------------------------------------------------------------------------------------------
# independent numpy implementations (complex-step capable)
# ---------------------------------------------------------------------------------------------
def lv_rhs(x, p):
    return np.array([p[0] * x[0] - p[1] * x[0] * x[1], p[2] * x[0] * x[1] - p[3] * x[1]])


def lv_loss_numpy(p, x0, steps, rk4):
    tau = lv.T_END / steps
    x = np.array(x0, dtype=complex)
    total = 0.0
    for k in range(steps):
        t = k * tau
        y = np.array([np.interp(t, lv.T_OBS, lv.Y_OBS[:, 0]), np.interp(t, lv.T_OBS, lv.Y_OBS[:, 1])])
        total = total + 0.5 * np.sum((x - y) ** 2) / lv.T_END
        if rk4:
            k1 = lv_rhs(x, p)
            k2 = lv_rhs(x + 0.5 * tau * k1, p)
            k3 = lv_rhs(x + 0.5 * tau * k2, p)
            k4 = lv_rhs(x + tau * k3, p)
            x = x + tau / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        else:
            x = x + tau * lv_rhs(x, p)
    return tau * total + 0.5 * np.sum((x - lv.Y_OBS[-1]) ** 2)


def complex_step_grad(fun, v, h=1e-30):
    g = np.empty(v.size)
    for i in range(v.size):
        e = np.zeros(v.size, dtype=complex)
        e[i] = 1j * h
        g[i] = fun(v + e).imag / h
    return g


def rel_err(a, b):
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


@pytest.fixture(scope="session")
def lv_problem():
    return lv.make_problem(2000)


@pytest.mark.parametrize("method, rk4", [(adjoint.Euler(), False), (adjoint.RK4(), True)])
def test_lotka_volterra_vs_complex_step(lv_problem, method, rk4):
    p0 = lv.initial_guess()
    x0 = np.array([1.1, 0.9])
    res = adjoint.solve_adjoint(lv_problem, params=p0, x0=x0, method=method)
    v = np.concatenate([p0, x0]).astype(complex)
    ref_value = lv_loss_numpy(p0, x0, 2000, rk4).real
    ref = complex_step_grad(lambda w: lv_loss_numpy(w[:4], w[4:], 2000, rk4), v)
    assert abs(res.value - ref_value) <= 1e-12 * abs(ref_value)
    assert rel_err(res.grad.params, ref[:4]) <= 1e-10
    assert rel_err(res.grad.x0, ref[4:]) <= 1e-10
    assert res.stats.forward_steps == 2000 and res.stats.adjoint_steps == 2000


def pendulum_loss_numpy(u, steps):
    tau = pendulum.T_END / steps
    th, om = pendulum.X0.astype(complex)
    run = 0.0
    for k in range(steps):
        run = run + 0.5 * pendulum.R * u[k] ** 2
        th, om = (th + tau * om, om + tau * (-pendulum.G_OVER_L * np.sin(th) - pendulum.DAMPING * om + u[k]))
    return tau * run + 0.5 * pendulum.W_FINAL * ((th - np.pi) ** 2 + om**2)


def test_pendulum_control_gradient_vs_complex_step():
    steps = 200
    prob = pendulum.make_problem(steps)
    u = pendulum.initial_guess(steps) + 0.3 * np.cos(np.arange(steps) / 7.0).reshape(steps, 1)
    res = adjoint.solve_adjoint(prob, controls=u)
    ref = complex_step_grad(lambda w: pendulum_loss_numpy(w, steps), u[:, 0].astype(complex))
    assert res.grad.controls.shape == (steps, 1)
    assert rel_err(res.grad.controls[:, 0], ref) <= 1e-10
    # central differences of the same independent loop, as a second reference
    h = 1e-6
    for k in (0, 57, 199):
        e = np.zeros(steps)
        e[k] = h
        fd = (pendulum_loss_numpy(u[:, 0] + e, steps).real - pendulum_loss_numpy(u[:, 0] - e, steps).real) / (2 * h)
        assert abs(fd - res.grad.controls[k, 0]) <= 1e-6 * max(1.0, abs(fd))


# ---------------------------------------------------------------------------------------------
# convergence order on x' = cos(t) x, exact x(t) = x0 exp(sin t)  (time-dependent field)
# ---------------------------------------------------------------------------------------------
@njit
def _growth_f(x, c, p, t, out):
    out[0] = np.cos(t) * p[0] * x[0]


@njit
def _growth_vjp(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = np.cos(t) * p[0] * z[0]
    out_p[0] = np.cos(t) * x[0] * z[0]


@njit
def _final_value(x, c, p, t):
    return x[0]


@njit
def _final_grad(x, c, p, t, out_x, out_c, out_p):
    out_x[0] = 1.0
    out_p[0] = 0.0


@pytest.fixture(scope="session")
def growth():
    dyn = adjoint.Dynamics(_growth_f, _growth_vjp, state_dim=1, param_dim=1)
    return adjoint.ControlProblem(dyn, [1.0], (0.0, 2.0), 10, terminal_cost=adjoint.Cost(_final_value, _final_grad))


MIDPOINT = adjoint.RungeKutta([[0, 0], [0.5, 0]], [0, 1], [0, 0.5], order=2)
RALSTON3 = adjoint.RungeKutta([[0, 0, 0], [0.5, 0, 0], [0, 0.75, 0]], [2 / 9, 1 / 3, 4 / 9], [0, 0.5, 0.75], order=3)


@pytest.mark.parametrize(
    "method, order", [(adjoint.Euler(), 1), (adjoint.Heun(), 2), (MIDPOINT, 2), (RALSTON3, 3), (adjoint.RK4(), 4)]
)
def test_convergence_order(growth, method, order):
    exact = np.exp(np.sin(2.0))
    steps = np.array([16, 32, 64, 128])
    errs = []
    for K in steps:
        res = adjoint.solve_adjoint(growth.with_steps(int(K)), params=[1.0], method=method)
        errs.append(abs(res.value - exact))
    slope = -np.polyfit(np.log(steps), np.log(errs), 1)[0]
    assert abs(slope - order) < 0.25, (slope, errs)
    # and the gradient w.r.t. p of x(2) = exp(p sin 2) converges to sin(2) exp(sin 2) at the same order
    gerr = []
    for K in steps:
        res = adjoint.solve_adjoint(growth.with_steps(int(K)), params=[1.0], method=method)
        gerr.append(abs(res.grad.params[0] - np.sin(2.0) * exact))
    gslope = -np.polyfit(np.log(steps), np.log(gerr), 1)[0]
    assert abs(gslope - order) < 0.35, (gslope, gerr)


@pytest.mark.parametrize("method", [adjoint.Heun(), MIDPOINT, RALSTON3, adjoint.RK4()])
def test_runge_kutta_gradient_exact_for_discrete_scheme(growth, method):
    """The RK adjoint is the exact derivative of the discrete scheme (central differences)."""
    prob = growth.with_steps(13)
    res = adjoint.solve_adjoint(prob, params=[0.7], x0=[1.3], method=method)
    h = 1e-6
    fp = adjoint.solve_adjoint(prob, params=[0.7 + h], x0=[1.3], method=method).value
    fm = adjoint.solve_adjoint(prob, params=[0.7 - h], x0=[1.3], method=method).value
    assert abs((fp - fm) / (2 * h) - res.grad.params[0]) <= 1e-8 * abs(res.grad.params[0])
    # x(T) is linear in x0: the x0-gradient is x(T)/x0 exactly
    assert abs(res.grad.x0[0] - res.value / 1.3) <= 1e-13 * abs(res.value)


def test_lqr_reaches_exact_optimum():
    from scipy.optimize import minimize

    steps = 100
    prob = lqr.make_problem(steps)
    fun = prob.objective(wrt="controls", controls=np.zeros((steps, 1)))
    res = minimize(
        fun, fun.initial(), jac=True, method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-12, "ftol": 1e-15}
    )
    c_opt, j_opt = lqr.exact_optimum(steps)
    assert abs(res.fun - j_opt) <= 1e-6 * abs(j_opt)
    # the exact optimum is a stationary point of the adjoint gradient
    g = adjoint.solve_adjoint(prob, controls=c_opt).grad.controls
    assert np.max(np.abs(g)) < 1e-10


def test_lqr_optimum_matches_discrete_riccati():
    """Second, independent reference for the dense solve: the discrete Riccati recursion."""
    steps = 60
    tau = lqr.T_END / steps
    F = np.eye(2) + tau * lqr.A
    Bd = (tau * lqr.B).reshape(2, 1)
    Qd, Rd = tau * lqr.Q, np.array([[tau * lqr.R]])
    P = lqr.QF.copy()
    gains = []
    for _ in range(steps):
        Kg = np.linalg.solve(Rd + Bd.T @ P @ Bd, Bd.T @ P @ F)
        P = Qd + F.T @ P @ (F - Bd @ Kg)
        gains.append(Kg)
    gains.reverse()
    x = lqr.X0.copy()
    u = np.empty((steps, 1))
    for k in range(steps):
        u[k] = -gains[k] @ x
        x = F @ x + Bd @ u[k]
    c_opt, j_opt = lqr.exact_optimum(steps)
    assert np.allclose(u, c_opt, rtol=0, atol=1e-10)
    assert abs(0.5 * lqr.X0 @ P @ lqr.X0 - j_opt) <= 1e-12 * j_opt


def test_discrete_map_perceptron_gradient_vs_central_differences(rng):
    prob = perceptron.make_problem()
    c0 = perceptron.initial_guess()
    res = adjoint.solve_adjoint(prob, controls=c0, method=adjoint.DiscreteMap())

    # independent numpy forward pass of the same network and loss
    def loss(c):
        x = prob.x0.reshape(-1, perceptron.WIDTH)
        d = perceptron.WIDTH
        reg = 0.0
        for ck in c:
            x = np.tanh(x @ ck[: d * d].reshape(d, d).T + ck[d * d :])
            reg += 0.5 * perceptron.DECAY * np.sum(ck**2)
        s = -perceptron.LABELS * perceptron.SCALE * x[:, 0]
        return np.mean(np.logaddexp(0.0, s)) + reg

    assert abs(loss(c0) - res.value) <= 1e-12 * abs(res.value)
    h = 1e-6
    for _ in range(5):
        d = rng.standard_normal(c0.shape)
        fd = (loss(c0 + h * d) - loss(c0 - h * d)) / (2 * h)
        assert abs(fd - np.sum(res.grad.controls * d)) <= 1e-7 * max(1.0, abs(fd))


def test_trajectory_and_simulate_agree(lv_problem):
    res = adjoint.solve_adjoint(lv_problem, params=lv.TRUE_PARAMS, return_trajectory=True)
    val, traj = adjoint.simulate(lv_problem, params=lv.TRUE_PARAMS)
    assert np.array_equal(traj, res.trajectory)
    assert np.array_equal(res.x_final, traj[-1])
    assert abs(val - res.value) <= 1e-13 * abs(val)
    assert res.times.shape == (2001,) and res.times[-1] == lv.T_END


def test_result_is_frozen(lv_problem):
    res = adjoint.solve_adjoint(lv_problem, params=lv.TRUE_PARAMS)
    with pytest.raises(AttributeError):
        res.value = 1.0


def test_check_gradient_reports_small_error_and_catches_wrong_vjp():
    chk = adjoint.check_gradient(pendulum.make_problem(50), controls=pendulum.initial_guess(50))
    assert chk.complex_rel_error is not None and chk.max_rel_error < 1e-12
    assert chk.central_rel_error < 1e-6

    @njit
    def bad_vjp(x, c, p, t, z, out_x, out_c, out_p):  # sign error in d/dtheta
        out_x[0] = +pendulum.G_OVER_L * np.cos(x[0]) * z[1]
        out_x[1] = z[0] - pendulum.DAMPING * z[1]
        out_c[0] = z[1]

    dyn = adjoint.Dynamics(pendulum.f, bad_vjp, 2, 1)
    prob = adjoint.ControlProblem(
        dyn, pendulum.X0, (0.0, pendulum.T_END), 50, terminal_cost=pendulum.UPRIGHT, running_cost=pendulum.EFFORT
    )
    bad = adjoint.check_gradient(prob, controls=pendulum.initial_guess(50))
    assert bad.max_rel_error > 1e-3


@pytest.mark.parametrize("method", [adjoint.Euler(), adjoint.Heun(), adjoint.RK4(), RALSTON3])
def test_fused_scalar_kernel_is_bitwise_equal_to_generic_kernel(method):
    """The generated scalar sweep performs the generic kernel's operations in the same order."""
    from adjoint import _fused, _solve

    cases = [
        (pendulum.make_problem(300), dict(controls=pendulum.initial_guess(300) + 0.2)),
        (lv.make_problem(500), dict(params=lv.initial_guess(), x0=[1.2, 0.8])),
    ]
    for prob, kw in cases:
        comp, p, C, _ = _solve._prepare(prob, kw.get("params"), kw.get("controls"), None, method)
        assert _fused.fused_kernels(comp, method, prob.state_dim, C.shape[1], p.shape[0]) is not None
        fused = adjoint.solve_adjoint(prob, method=method, **kw)
        fval = adjoint.evaluate(prob, method=method, **kw)
        generic = adjoint.solve_adjoint(prob, method=method, backend="generic", **kw)
        gval = adjoint.evaluate(prob, method=method, backend="generic", **kw)
        assert fused.value == generic.value and fval == gval
        for a, b in (
            (fused.grad.params, generic.grad.params),
            (fused.grad.controls, generic.grad.controls),
            (fused.grad.x0, generic.grad.x0),
        ):
            assert a.tobytes() == b.tobytes()  # bit for bit, signed zeros included


def test_fold_of_zero_adjoint_terms_is_an_identity():
    """The fused generator rewrites ``z = l + tau * v; z += tau * 0.0`` as ``z = (l + 0.0) + tau * v``:
    ``(a + b) + 0.0`` and ``(a + 0.0) + b`` agree bit for bit on every pair of doubles tried (signed
    zeros, infinities, NaN, subnormals, random magnitudes), and the rewrite fires on the pattern."""
    from adjoint._fused import _fold_zero_adjoint_terms

    rng = np.random.default_rng(3)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 5e-324, -5e-324, 1e308, -1e308, 1.0, -1.0])
    vals = np.concatenate([special, rng.standard_normal(200) * 10.0 ** rng.integers(-300, 300, 200)])
    a, b = np.meshgrid(vals, vals)
    zero = np.float64(0.3) * 0.0  # tau * 0.0 with tau > 0
    with np.errstate(all="ignore"):
        lhs, rhs = (a + b) + zero, (a + 0.0) + b
    assert lhs.tobytes() == rhs.tobytes()
    loop = ["_r0 = 0.0", "z_0 = l_0 + tau * _v0", "g = 2.0", "z_0 += tau * _r0", "l_0 = z_0"]
    assert _fold_zero_adjoint_terms(loop, ["z_0"]) == [
        "_r0 = 0.0",
        "z_0 = (l_0 + 0.0) + tau * _v0",
        "g = 2.0",
        "l_0 = z_0",
    ]
    read_between = ["_r0 = 0.0", "z_0 = l_0 + tau * _v0", "g = z_0", "z_0 += tau * _r0"]
    assert _fold_zero_adjoint_terms(read_between, ["z_0"]) == read_between
    not_zero = ["_r0 = x_0", "z_0 = l_0 + tau * _v0", "z_0 += tau * _r0"]
    assert _fold_zero_adjoint_terms(not_zero, ["z_0"]) == not_zero


def test_untraceable_dynamics_fall_back_to_generic_kernel():
    """A vector field with a data-dependent loop cannot be traced; the generic kernel is used."""
    from adjoint import _fused, _solve

    @njit
    def f_loop(x, c, p, t, out):
        s = 0.0
        k = 0
        while s < abs(x[0]) and k < 3:  # data-dependent loop
            s += 1.0
            k += 1
        out[0] = -p[0] * x[0] + 0.0 * s

    @njit
    def vjp_loop(x, c, p, t, z, out_x, out_c, out_p):
        out_x[0] = -p[0] * z[0]
        out_p[0] = -x[0] * z[0]

    dyn = adjoint.Dynamics(f_loop, vjp_loop, 1, param_dim=1)
    prob = adjoint.ControlProblem(dyn, [1.0], (0.0, 1.0), 50, terminal_cost=adjoint.Cost(_final_value, _final_grad))
    comp, p, C, _ = _solve._prepare(prob, [0.5], None, None, adjoint.Euler())
    assert _fused.fused_kernels(comp, adjoint.Euler(), 1, 0, 1) is None
    res = adjoint.solve_adjoint(prob, params=[0.5])
    assert abs(res.value - (1 - 0.5 / 50) ** 50) < 1e-14
    assert abs(res.grad.params[0] - (-((1 - 0.5 / 50) ** 49))) < 1e-13


def test_fused_discrete_map_is_bitwise_equal_and_exact():
    """A traced map x_{k+1} = tanh(c_k[0] x + c_k[1]) * p[0] with a running cost: fused = generic,
    and the gradient matches central differences of an independent numpy loop."""
    from adjoint import _fused, _solve

    def layer(x, c, p, t):
        return np.tanh(c[0] * x + c[1]) * p[0]

    def running(x, c, p, t):
        return 0.5 * np.sum(x**2) + 0.1 * c[0] ** 2

    def final(x, p):
        return np.sum((x - 0.3) ** 2)

    K = 12
    prob = adjoint.ControlProblem(
        layer,
        [0.5, -0.2, 0.9],
        (0.0, float(K)),
        K,
        terminal_cost=final,
        running_cost=running,
        control_dim=2,
        param_dim=1,
    )
    rng = np.random.default_rng(5)
    C = 0.8 + 0.3 * rng.standard_normal((K, 2))
    kw = dict(params=[1.1], controls=C, method=adjoint.DiscreteMap())
    res = adjoint.solve_adjoint(prob, **kw)
    comp, p, Cc, _ = _solve._prepare(prob, [1.1], C, None, adjoint.DiscreteMap())
    assert _fused.fused_kernels(comp, adjoint.DiscreteMap(), 3, 2, 1) is not None
    gen = adjoint.solve_adjoint(prob, backend="generic", **kw)
    assert res.value == gen.value and np.array_equal(res.grad.controls, gen.grad.controls)
    assert np.array_equal(res.grad.params, gen.grad.params) and np.array_equal(res.grad.x0, gen.grad.x0)

    def loss(Cv, pv):
        x, run = np.array([0.5, -0.2, 0.9]), 0.0
        for k in range(K):
            run += 0.5 * np.sum(x**2) + 0.1 * Cv[k, 0] ** 2
            x = np.tanh(Cv[k, 0] * x + Cv[k, 1]) * pv
        return np.sum((x - 0.3) ** 2) + run  # tau = 1

    assert abs(loss(C, 1.1) - res.value) <= 1e-13 * abs(res.value)
    h = 1e-6
    D = rng.standard_normal((K, 2))
    fd = (loss(C + h * D, 1.1) - loss(C - h * D, 1.1)) / (2 * h)
    assert abs(fd - np.sum(res.grad.controls * D)) <= 1e-7 * max(1.0, abs(fd))
    fdp = (loss(C, 1.1 + h) - loss(C, 1.1 - h)) / (2 * h)
    assert abs(fdp - res.grad.params[0]) <= 1e-7 * max(1.0, abs(fdp))
