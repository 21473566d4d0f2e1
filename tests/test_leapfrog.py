"""Leapfrog and velocity Verlet: order, symplecticity, discrete adjoint vs complex step."""

import numpy as np
import pytest
from numba import njit

import adjoint
from adjoint._separable import SeparableDynamics
from adjoint.integrators import Leapfrog, VelocityVerlet
from adjoint.problems import harmonic_oscillator as ho


# (products, not `**`: numba's complex power leaks rounding into the imaginary part)
# A nonlinear, non-autonomous separable system with controls and parameters, x_dim=2, y_dim=1.
@njit
def u(y, c, p, t, out):
    out[0] = p[0] * y[0] + c[0]
    out[1] = np.sin(y[0]) * (1.0 + 0.1 * t)


@njit
def vjp_u(y, c, p, t, z, out_y, out_c, out_p):
    out_y[0] = p[0] * z[0] + np.cos(y[0]) * (1.0 + 0.1 * t) * z[1]
    out_c[0] = z[0]
    out_p[0] = y[0] * z[0]
    out_p[1] = 0.0


@njit
def v(x, c, p, t, out):
    out[0] = -p[1] * x[0] - 0.5 * x[1] * x[1] * x[1] + c[0] * x[1]


@njit
def vjp_v(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = -p[1] * z[0]
    out_x[1] = (-1.5 * x[1] * x[1] + c[0]) * z[0]
    out_c[0] = x[1] * z[0]
    out_p[0] = 0.0
    out_p[1] = -x[0] * z[0]


@njit
def run_value(s, c, p, t):
    return 0.5 * (s[0] * s[0] + 0.3 * s[1] * s[1] + s[2] * s[2]) + 0.2 * c[0] * c[0] + 0.1 * p[0] * s[2]


@njit
def run_grad(s, c, p, t, out_s, out_c, out_p):
    out_s[0] = s[0]
    out_s[1] = 0.3 * s[1]
    out_s[2] = s[2] + 0.1 * p[0]
    out_c[0] = 0.4 * c[0]
    out_p[0] = 0.1 * s[2]
    out_p[1] = 0.0


@njit
def term_value(s, c, p, t):
    return (s[0] - 0.5) * (s[0] - 0.5) + s[1] * s[2] + p[1] * s[1] * s[1]


@njit
def term_grad(s, c, p, t, out_s, out_c, out_p):
    out_s[0] = 2.0 * (s[0] - 0.5)
    out_s[1] = s[2] + 2.0 * p[1] * s[1]
    out_s[2] = s[1]
    out_p[0] = 0.0
    out_p[1] = s[1] * s[1]


K_CS = 40
T_CS = 2.0
X0_CS = np.array([0.3, -0.2, 0.7])
P_CS = np.array([0.9, 1.4])
C_CS = 0.3 * np.cos(np.linspace(0.0, 3.0, K_CS)).reshape(K_CS, 1)


@pytest.fixture(scope="session")
def nonlinear_problem():
    dyn = SeparableDynamics(u, vjp_u, v, vjp_v, x_dim=2, y_dim=1, control_dim=1, param_dim=2, name="toy")
    return adjoint.ControlProblem(
        dyn,
        X0_CS,
        (0.0, T_CS),
        K_CS,
        terminal_cost=adjoint.Cost(term_value, term_grad),
        running_cost=adjoint.Cost(run_value, run_grad),
    )


def reference_objective(method, s0, C, p):
    """An independent loop (numpy, complex-safe) of the splitting step and the objective."""
    tau = T_CS / K_CS
    s = np.array(s0, dtype=complex)
    ux, vy = np.empty(2, dtype=complex), np.empty(1, dtype=complex)
    run = 0.0
    for k in range(K_CS):
        t = k * tau
        c = C[k]
        run = run + run_value(s, c, p, t)
        x, y = s[:2].copy(), s[2:].copy()
        if method == "leapfrog":
            u(y, c, p, t + 0.5 * tau, ux)
            x = x + tau * ux
            v(x, c, p, t + tau, vy)
            y = y + tau * vy
        else:  # velocity Verlet
            v(x, c, p, t, vy)
            y = y + 0.5 * tau * vy
            u(y, c, p, t + 0.5 * tau, ux)
            x = x + tau * ux
            v(x, c, p, t + tau, vy)
            y = y + 0.5 * tau * vy
        s = np.concatenate([x, y])
    return term_value(s, np.zeros(0, dtype=complex), p, T_CS) + tau * run


def complex_step_gradient(method):
    h = 1e-30
    p = P_CS.astype(complex)
    C = C_CS.astype(complex)
    s0 = X0_CS.astype(complex)
    gp = np.empty(2)
    for i in range(2):
        pp = p.copy()
        pp[i] += 1j * h
        gp[i] = reference_objective(method, s0, C, pp).imag / h
    gx = np.empty(3)
    for i in range(3):
        ss = s0.copy()
        ss[i] += 1j * h
        gx[i] = reference_objective(method, ss, C, p).imag / h
    gc = np.empty((K_CS, 1))
    for k in range(K_CS):
        cc = C.copy()
        cc[k, 0] += 1j * h
        gc[k, 0] = reference_objective(method, s0, cc, p).imag / h
    return reference_objective(method, s0, C, p).real, gp, gc, gx


def rel(a, b):
    return np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b))


@pytest.mark.parametrize("name,method", [("leapfrog", Leapfrog()), ("verlet", VelocityVerlet())])
def test_gradient_matches_complex_step_of_independent_loop(nonlinear_problem, name, method):
    value, gp, gc, gx = complex_step_gradient(name)
    res = adjoint.solve_adjoint(nonlinear_problem, params=P_CS, controls=C_CS, method=method)
    assert abs(res.value - value) <= 1e-13 * abs(value)
    assert rel(res.grad.params, gp) <= 1e-10
    assert rel(res.grad.controls, gc) <= 1e-10
    assert rel(res.grad.x0, gx) <= 1e-10


def test_leapfrog_step_is_the_lectures_formula(nonlinear_problem):
    _, traj = adjoint.simulate(nonlinear_problem, params=P_CS, controls=C_CS, method=Leapfrog())
    tau = T_CS / K_CS
    s = X0_CS.copy()
    ux, vy = np.empty(2), np.empty(1)
    for k in range(K_CS):
        u(s[2:], C_CS[k], P_CS, k * tau + 0.5 * tau, ux)
        x = s[:2] + tau * ux
        v(x, C_CS[k], P_CS, k * tau + tau, vy)
        s = np.concatenate([x, s[2:] + tau * vy])
        np.testing.assert_array_equal(traj[k + 1], s)  # same operations, same bits


def _ho_staggered_error(steps, t_end=2.0):
    """Max error of leapfrog on the oscillator in the staggered interpretation.

    ``x_k ~ x(t_k)``, ``y_k ~ y(t_k + tau/2)``, started from the exact ``y(tau/2)``.
    """
    tau = t_end / steps
    w = ho.TRUE_OMEGA
    s0 = np.array([ho.S0[0], ho.exact_state(0.5 * tau)[1]])
    prob = ho.make_problem(steps, t_end=t_end, x0=s0)
    _, traj = adjoint.simulate(prob, params=[w], method=Leapfrog())
    t = prob.times
    ex = ho.exact_state(t)[0]
    ey = ho.exact_state(t + 0.5 * tau)[1]
    return max(np.max(np.abs(traj[:, 0] - ex)), np.max(np.abs(traj[:, 1] - ey)))


def test_leapfrog_is_second_order_staggered():
    steps = np.array([50, 100, 200, 400, 800])
    errs = np.array([_ho_staggered_error(k) for k in steps])
    slope = np.polyfit(np.log(1.0 / steps), np.log(errs), 1)[0]
    assert 1.9 < slope < 2.1, (slope, errs)


def test_velocity_verlet_is_second_order():
    steps = np.array([50, 100, 200, 400, 800])
    errs = []
    for k in steps:
        prob = ho.make_problem(int(k), t_end=2.0)
        _, traj = adjoint.simulate(prob, params=[ho.TRUE_OMEGA], method=VelocityVerlet())
        errs.append(np.max(np.abs(traj - ho.exact_state(prob.times).T)))
    slope = np.polyfit(np.log(1.0 / steps), np.log(errs), 1)[0]
    assert 1.9 < slope < 2.1, (slope, errs)


def test_unstaggered_start_is_first_order_in_y():
    # documents the interpretation: with y_0 = y(0) (not y(tau/2)) the y error is O(tau)
    errs = []
    for k in (100, 200, 400, 800):
        prob = ho.make_problem(k, t_end=2.0)
        _, traj = adjoint.simulate(prob, params=[ho.TRUE_OMEGA], method=Leapfrog())
        errs.append(np.max(np.abs(traj[:, 1] - ho.exact_state(prob.times + 1.0 / k)[1])))
    slope = np.polyfit(np.log(1.0 / np.array([100, 200, 400, 800])), np.log(errs), 1)[0]
    assert 0.9 < slope < 1.1


def test_leapfrog_is_symplectic_energy_bounded_over_a_million_steps():
    K = 1_000_000
    tau = 0.02
    w = ho.TRUE_OMEGA
    prob = ho.make_problem(K, t_end=K * tau)
    _, traj = adjoint.simulate(prob, params=[w], method=Leapfrog())
    energy = w * w * traj[:, 0] ** 2 + traj[:, 1] ** 2
    e0 = energy[0]
    dev = np.abs(energy - e0) / e0
    # bounded O(w tau) oscillation, no secular growth: last tenth no worse than the first tenth
    assert dev.max() < 2 * w * tau
    first, last = dev[: K // 10].max(), dev[-K // 10 :].max()
    assert last <= 1.05 * first
    # the map's exact invariant (modified energy) is conserved to rounding
    me = ho.modified_energy(traj, w, tau)
    assert np.max(np.abs(me - me[0])) / me[0] < 1e-9
    # explicit Euler on the same field gains energy: e^{w^2 tau^2 K} (not bounded)
    euler = ho.make_problem(10_000, t_end=10_000 * tau).__class__(
        ho.DYNAMICS.as_dynamics(), ho.S0, (0.0, 10_000 * tau), 10_000, terminal_cost=ho.TERMINAL
    )
    _, te = adjoint.simulate(euler, params=[w], method=adjoint.Euler())
    assert (w * w * te[-1, 0] ** 2 + te[-1, 1] ** 2) / e0 > 10.0


def test_closed_form_gradient_of_oscillator():
    K = 5000
    prob = ho.make_problem(K)
    res = adjoint.solve_adjoint(prob, params=[1.1], method=Leapfrog())
    np.testing.assert_allclose(res.x_final, ho.discrete_solution(1.1, K), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(res.grad.x0, ho.discrete_grad_x0(1.1, K), rtol=1e-10)
    h = 1e-30
    MK = np.linalg.matrix_power(ho.step_matrix(1.1 + 1j * h, 10.0 / K), K)
    dJ = (0.5 * np.sum((MK @ ho.S0 - ho.TARGET) ** 2)).imag / h
    assert abs(res.grad.params[0] - dJ) <= 1e-10 * abs(dJ)


def test_separable_rejects_other_methods_and_leapfrog_rejects_plain_dynamics():
    prob = ho.make_problem(10)
    with pytest.raises(TypeError, match=r"cannot integrate adjoint.SeparableDynamics.*Leapfrog.*as_dynamics"):
        adjoint.solve_adjoint(prob, params=[1.0], method=adjoint.RK4())
    plain = adjoint.ControlProblem(ho.DYNAMICS.as_dynamics(), ho.S0, (0.0, 1.0), 10, terminal_cost=ho.TERMINAL)
    with pytest.raises(TypeError, match=r"needs separable dynamics.*SeparableDynamics\(u, vjp_u, v, vjp_v"):
        adjoint.solve_adjoint(plain, params=[1.0], method=Leapfrog())


def test_as_dynamics_rk4_agrees_with_leapfrog_limit():
    prob = adjoint.ControlProblem(ho.DYNAMICS.as_dynamics(), ho.S0, (0.0, 2.0), 400, terminal_cost=ho.TERMINAL)
    r = adjoint.solve_adjoint(prob, params=[ho.TRUE_OMEGA], method=adjoint.RK4())
    np.testing.assert_allclose(r.x_final, ho.exact_state(2.0), atol=1e-8)


def test_bad_user_function_is_named():
    @njit
    def bad_u(y, c, p, t, out):
        out[0] = y[5]  # out of range reads garbage or fails; leave out[1] unset

    dyn = SeparableDynamics(bad_u, vjp_u, v, vjp_v, x_dim=2, y_dim=1, control_dim=1, param_dim=2)
    prob = adjoint.ControlProblem(dyn, X0_CS, (0.0, 1.0), 5, terminal_cost=adjoint.Cost(term_value, term_grad))
    with pytest.raises(ValueError, match=r"`dynamics.u` left entries of `out` unset"):
        adjoint.solve_adjoint(prob, params=P_CS, controls=C_CS[:5], method=Leapfrog())


def test_separable_dynamics_from_plain_functions_matches_hand_written():
    """u and v written in plain numpy are traced; gradients equal the hand-written ones."""
    import adjoint
    from adjoint.problems import kepler

    hand = kepler.DYNAMICS

    def u(y, c, p, t):  # x' = y  (positions driven by velocities)
        return 1.0 * y

    def v(x, c, p, t):  # y' = -mu x / |x|^3
        r2 = x[0] * x[0] + x[1] * x[1]
        return -p[0] * x / (r2 * np.sqrt(r2))

    plain = adjoint.SeparableDynamics(
        u, None, v, None, x_dim=2, y_dim=2, control_dim=hand.control_dim, param_dim=hand.param_dim
    )
    rng = np.random.default_rng(3)
    for dyn_a, dyn_b in ((plain, hand),):
        s = np.array([1.0, 0.2, -0.1, 0.9])
        c, p = np.zeros(hand.control_dim), 0.5 + rng.random(hand.param_dim)
        for fa, fb in ((dyn_a.f, dyn_b.f), (dyn_a.g, dyn_b.g)):
            oa, ob = np.empty(4), np.empty(4)
            fa(s, c, p, 0.0, oa)
            fb(s, c, p, 0.0, ob)
            np.testing.assert_allclose(oa, ob, rtol=1e-13, atol=1e-15)
        z = rng.standard_normal(4)
        for va, vb in ((dyn_a.vjp, dyn_b.vjp), (dyn_a.gvjp, dyn_b.gvjp)):
            ra = [np.empty(4), np.empty(hand.control_dim), np.empty(hand.param_dim)]
            rb = [np.empty(4), np.empty(hand.control_dim), np.empty(hand.param_dim)]
            va(s, c, p, 0.0, z, *ra)
            vb(s, c, p, 0.0, z, *rb)
            for a_, b_ in zip(ra, rb):
                np.testing.assert_allclose(a_, b_, rtol=1e-12, atol=1e-15)
    with pytest.raises(TypeError, match="give both `vjp_u` and `vjp_v`"):
        adjoint.SeparableDynamics(u, None, v, hand.vjp_v, x_dim=2, y_dim=2)
