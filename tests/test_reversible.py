"""The reversible adjoint: agreement with store-all, bounded memory, drift report and fallback."""

import numpy as np
import pytest
from numba import njit
from test_leapfrog import C_CS, P_CS, nonlinear_problem  # noqa: F401  (session fixture)

import adjoint
from adjoint import checkpointing
from adjoint._separable import SeparableDynamics
from adjoint.checkpointing._reversible import Reversible
from adjoint.integrators import Leapfrog, VelocityVerlet
from adjoint.problems import harmonic_oscillator as ho


def rel(a, b):
    return np.linalg.norm(np.ravel(a) - np.ravel(b)) / np.linalg.norm(np.ravel(b))


@pytest.fixture(scope="session")
def oscillator_1e5():
    return ho.make_problem(100_000)


def test_reversible_matches_store_all_on_oscillator_1e5(oscillator_1e5):
    prob = oscillator_1e5
    ref = adjoint.solve_adjoint(prob, params=[1.1], method=Leapfrog())
    res = adjoint.solve_adjoint(prob, params=[1.1], method=Leapfrog(), checkpoint=Reversible())
    assert res.stats.schedule == "Reversible" and res.stats.fallback is None
    assert 0.0 <= res.stats.reversal_drift < 1e-12
    assert rel(res.grad.params, ref.grad.params) <= 1e-9
    assert rel(res.grad.x0, ref.grad.x0) <= 1e-9
    assert abs(res.value - ref.value) <= 1e-9 * abs(ref.value)
    np.testing.assert_array_equal(res.x_final, ref.x_final)  # the forward sweep is the same
    assert ref.stats.reversal_drift is None


def test_peak_stored_states_does_not_grow_with_steps(oscillator_1e5):
    small = adjoint.solve_adjoint(ho.make_problem(100), params=[1.1], method=Leapfrog(), checkpoint=Reversible())
    big = adjoint.solve_adjoint(oscillator_1e5, params=[1.1], method=Leapfrog(), checkpoint=Reversible())
    assert small.stats.peak_stored_states == big.stats.peak_stored_states == 2
    assert big.stats.forward_steps == 2 * 100_000  # K steps forward, K inverse steps backward


@pytest.mark.parametrize("method", [Leapfrog(), VelocityVerlet()])
def test_reversible_with_controls_running_cost_and_verlet(nonlinear_problem, method):  # noqa: F811
    ref = adjoint.solve_adjoint(nonlinear_problem, params=P_CS, controls=C_CS, method=method)
    res = adjoint.solve_adjoint(nonlinear_problem, params=P_CS, controls=C_CS, method=method, checkpoint=Reversible())
    assert res.stats.fallback is None and res.stats.reversal_drift < 1e-13
    for a, b in (
        (res.grad.params, ref.grad.params),
        (res.grad.controls, ref.grad.controls),
        (res.grad.x0, ref.grad.x0),
    ):
        assert rel(a, b) <= 1e-12
    assert abs(res.value - ref.value) <= 1e-13 * abs(ref.value)


# Strongly expanding: the inverted oscillator x' = y, y' = a x grows like exp(sqrt(a) t); its inverse
# amplifies rounding along the contracting direction by the same factor.
@njit
def u_inv(y, c, p, t, out):
    out[0] = y[0]


@njit
def vjp_u_inv(y, c, p, t, z, out_y, out_c, out_p):
    out_y[0] = z[0]
    out_p[0] = 0.0


@njit
def v_inv(x, c, p, t, out):
    out[0] = p[0] * x[0]


@njit
def vjp_v_inv(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = p[0] * z[0]
    out_p[0] = x[0] * z[0]


@njit
def sq_value(s, c, p, t):
    return 0.5 * (s[0] * s[0] + s[1] * s[1])


@njit
def sq_grad(s, c, p, t, out_s, out_c, out_p):
    out_s[0] = s[0]
    out_s[1] = s[1]
    out_p[0] = 0.0


@pytest.fixture(scope="session")
def expanding_problem():
    dyn = SeparableDynamics(u_inv, vjp_u_inv, v_inv, vjp_v_inv, x_dim=1, y_dim=1, param_dim=1, name="inverted")
    # sqrt(a) T = 2 * 20 = 40: growth e^40 ~ 2e17, beyond the reach of double precision
    return adjoint.ControlProblem(dyn, [1.0, -1.0], (0.0, 20.0), 4000, terminal_cost=adjoint.Cost(sq_value, sq_grad))


def test_expanding_case_reports_drift_without_fallback_when_disabled(expanding_problem):
    ref = adjoint.solve_adjoint(expanding_problem, params=[4.0], method=Leapfrog())
    res = adjoint.solve_adjoint(
        expanding_problem, params=[4.0], method=Leapfrog(), checkpoint=Reversible(max_drift=None)
    )
    assert res.stats.reversal_drift > 1e-3  # the rebuilt x0 is far off
    assert res.stats.fallback is None
    # the parameter gradient uses the rebuilt states (the x0 gradient of this linear model does not)
    assert rel(res.grad.params, ref.grad.params) > 1e-3  # wrong: this is why the bound exists


def test_expanding_case_triggers_fallback_with_correct_gradient(expanding_problem):
    ref = adjoint.solve_adjoint(expanding_problem, params=[4.0], method=Leapfrog())
    res = adjoint.solve_adjoint(expanding_problem, params=[4.0], method=Leapfrog(), checkpoint=Reversible())
    st = res.stats
    assert st.reversal_drift > 1e-8
    assert st.fallback is not None and "reversal drift" in st.fallback and "max_drift" in st.fallback
    if hasattr(checkpointing, "MemoryBudget"):  # 4000 states of dimension 2 fit: store-all is chosen
        assert "MemoryBudget" in st.fallback
    assert st.schedule != "Reversible"
    assert st.forward_steps >= 3 * expanding_problem.steps  # the rejected attempt is accounted for
    # the fallback's gradient is a checkpointed gradient: identical to store-all
    np.testing.assert_array_equal(res.grad.x0, ref.grad.x0)
    np.testing.assert_array_equal(res.grad.params, ref.grad.params)
    assert res.value == ref.value


def test_fallback_to_revolve_gives_the_store_all_gradient(expanding_problem):
    revolve = checkpointing.Revolve
    ref = adjoint.solve_adjoint(expanding_problem, params=[4.0], method=Leapfrog())
    res = adjoint.solve_adjoint(
        expanding_problem, params=[4.0], method=Leapfrog(), checkpoint=Reversible(fallback=revolve(snapshots=10))
    )
    assert "Revolve(snapshots=10)" in res.stats.fallback and res.stats.reversal_drift > 1e-8
    np.testing.assert_array_equal(res.grad.params, ref.grad.params)
    np.testing.assert_array_equal(res.grad.x0, ref.grad.x0)


def test_explicit_fallback_schedule(expanding_problem):
    res = adjoint.solve_adjoint(
        expanding_problem,
        params=[4.0],
        method=Leapfrog(),
        checkpoint=Reversible(max_drift=1e-10, fallback=adjoint.StoreAll()),
    )
    assert res.stats.schedule == "StoreAll" and "StoreAll()" in res.stats.fallback


@pytest.mark.parametrize("name", ["Uniform", "Revolve"])
def test_checkpointed_schedules_work_with_leapfrog(nonlinear_problem, name):  # noqa: F811
    cls = getattr(checkpointing, name)
    sched = cls(snapshots=5)
    ref = adjoint.solve_adjoint(nonlinear_problem, params=P_CS, controls=C_CS, method=Leapfrog())
    res = adjoint.solve_adjoint(nonlinear_problem, params=P_CS, controls=C_CS, method=Leapfrog(), checkpoint=sched)
    np.testing.assert_array_equal(res.grad.controls, ref.grad.controls)
    np.testing.assert_array_equal(res.grad.params, ref.grad.params)
    np.testing.assert_array_equal(res.grad.x0, ref.grad.x0)


def test_reversible_rejects_non_invertible_method():
    from adjoint.problems import lotka_volterra as lv

    prob = lv.make_problem(steps=10)
    with pytest.raises(
        TypeError,
        match=r"Reversible\(\) needs an invertible method; got method=RK4\(.*"
        r"adjoint.Leapfrog\(\).*SeparableDynamics",
    ):
        adjoint.solve_adjoint(prob, params=lv.TRUE_PARAMS, method=adjoint.RK4(), checkpoint=Reversible())


def test_reversible_argument_validation():
    with pytest.raises(ValueError, match=r"`max_drift` must be a number >= 0 or None; got -1"):
        Reversible(max_drift=-1)
    with pytest.raises(TypeError, match=r"`fallback` must be a checkpoint schedule"):
        Reversible(fallback="revolve")


def test_kepler_shooting_gradient_and_solution():
    from adjoint.problems import kepler

    prob = kepler.make_problem(800)
    p = kepler.params()
    s0 = np.array([1.0, 0.0, 0.1, 0.9])
    ref = adjoint.solve_adjoint(prob, params=p, x0=s0, method=Leapfrog())
    res = adjoint.solve_adjoint(prob, params=p, x0=s0, method=Leapfrog(), checkpoint=Reversible())
    assert rel(res.grad.x0, ref.grad.x0) <= 1e-12 and rel(res.grad.params, ref.grad.params) <= 1e-12
    h = 1e-6  # central differences on the initial velocity
    for i in (2, 3):
        e = np.zeros(4)
        e[i] = h
        fd = (
            adjoint.simulate(prob, params=p, x0=s0 + e, method=Leapfrog())[0]
            - adjoint.simulate(prob, params=p, x0=s0 - e, method=Leapfrog())[0]
        ) / (2 * h)
        assert abs(fd - ref.grad.x0[i]) <= 1e-6 * max(1.0, abs(fd))
    opt = kepler.shoot(prob, [0.0, 1.0], checkpoint=Reversible())
    assert opt.fun < 1e-20


def test_revnet_reversible_gradient_matches_store_all_and_numpy_forward():
    from adjoint.problems import revnet

    pts, lab = revnet.two_moons(30, seed=2)
    prob, lab = revnet.make_problem(pts, lab, steps=15, hidden=3)
    theta = revnet.initial_params(3)
    params = revnet.with_labels(theta, lab)
    ref = adjoint.solve_adjoint(prob, params=params, method=Leapfrog())
    res = adjoint.solve_adjoint(prob, params=params, method=Leapfrog(), checkpoint=Reversible())
    assert res.stats.fallback is None
    assert rel(res.grad.params, ref.grad.params) <= 1e-12
    margin = revnet.predict(theta, pts, hidden=3, steps=15)
    m = margin * lab
    loss = np.mean(np.log1p(np.exp(-m))) + 0.5 * revnet.REG * np.sum(theta**2)
    assert abs(loss - ref.value) <= 1e-12 * loss
    h = 1e-6
    for i in (0, 7, 20):
        e = np.zeros_like(params)
        e[i] = h
        fd = (
            adjoint.simulate(prob, params=params + e, method=Leapfrog())[0]
            - adjoint.simulate(prob, params=params - e, method=Leapfrog())[0]
        ) / (2 * h)
        assert abs(fd - ref.grad.params[i]) <= 1e-7 * max(1.0, abs(fd))
