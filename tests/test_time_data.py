"""Costs and fields that read data of time (opaque calls of t) and combined value_and_grad costs."""

import numpy as np
import pytest
from numba import njit

import adjoint
from adjoint.ad import TraceError
from adjoint.ad._tcall import cse_tcalls
from adjoint.problems import lotka_volterra as lv

P = lv.initial_guess()


def misfit(x, c, p, t):
    """The Lotka-Volterra running misfit as a plain function calling the njit data lookup."""
    y0, y1 = lv.observation(t)
    return 0.5 * ((x[0] - y0) ** 2 + (x[1] - y1) ** 2) / lv.T_END


def forced(x, c, p, t):
    """A linear field forced by the (interpolated) data."""
    y0, y1 = lv.observation(t)
    return np.array([-p[0] * x[0] + p[1] * y0, -p[2] * x[1] + p[3] * y1 * x[0]])


def _central(fun, v, h=1e-6):
    g = np.empty_like(v)
    for i in range(v.size):
        e = np.zeros_like(v)
        e[i] = h
        g[i] = (fun(v + e) - fun(v - e)) / (2 * h)
    return g


def test_plain_cost_reading_data_of_t_is_traced_as_an_opaque_call():
    cst = adjoint.cost(misfit, state_dim=2, param_dim=4)
    prims = [n.prim for n in cst.traced.graph.nodes]
    assert "tcall" in prims
    plain = adjoint.ControlProblem(
        lv.DYNAMICS, lv.Y_OBS[0], (0.0, lv.T_END), 400, terminal_cost=lv.TERMINAL, running_cost=cst
    )
    hand = lv.make_problem(400)
    a = adjoint.solve_adjoint(plain, params=P)
    b = adjoint.solve_adjoint(hand, params=P)
    assert abs(a.value - b.value) <= 1e-14 * abs(b.value)
    assert np.allclose(a.grad.params, b.grad.params, rtol=1e-13, atol=0)
    fd = _central(lambda q: adjoint.evaluate(plain, params=q), P)
    assert np.allclose(a.grad.params, fd, rtol=1e-6, atol=1e-9)


def test_field_forced_by_data_of_t_fused_equals_generic_bitwise():
    """Stage times t + c_i tau reach the opaque call exactly as in the generic kernels."""
    dyn = adjoint.vector_field(forced, state_dim=2, param_dim=4)
    prob = adjoint.ControlProblem(
        dyn,
        [1.0, 0.5],
        (0.0, lv.T_END),
        150,
        terminal_cost=lv.TERMINAL,
        running_cost=adjoint.cost(misfit, state_dim=2, param_dim=4),
    )
    p = np.array([0.7, 0.3, 0.5, 0.2])
    for method in (adjoint.Euler(), adjoint.Heun(), adjoint.RK4()):
        a = adjoint.solve_adjoint(prob, params=p, method=method, checkpoint=adjoint.StoreAll())
        b = adjoint.solve_adjoint(prob, params=p, method=method, checkpoint=adjoint.StoreAll(), backend="generic")
        assert a.value == b.value
        assert np.array_equal(a.grad.params, b.grad.params) and np.array_equal(a.grad.x0, b.grad.x0)


def test_field_forced_by_data_of_t_gradient_matches_central_differences():
    dyn = adjoint.vector_field(forced, state_dim=2, param_dim=4)
    prob = adjoint.ControlProblem(
        dyn,
        [1.0, 0.5],
        (0.0, lv.T_END),
        300,
        terminal_cost=lv.TERMINAL,
        running_cost=adjoint.cost(misfit, state_dim=2, param_dim=4),
    )
    p = np.array([0.7, 0.3, 0.5, 0.2])
    for method in (adjoint.Euler(), adjoint.RK4()):
        res = adjoint.solve_adjoint(prob, params=p, method=method)
        fd = _central(lambda q: adjoint.evaluate(prob, params=q, method=method), p)
        assert np.allclose(res.grad.params, fd, rtol=1e-6, atol=1e-9)
        fdx = _central(lambda x: adjoint.evaluate(prob, params=p, x0=x, method=method), np.array([1.0, 0.5]))
        assert np.allclose(res.grad.x0, fdx, rtol=1e-6, atol=1e-9)
        rev = adjoint.solve_adjoint(prob, params=p, method=method, checkpoint=adjoint.Revolve(snapshots=4))
        assert np.array_equal(rev.grad.params, res.grad.params) and rev.value == res.value


def test_data_lookup_of_the_state_is_not_opaque_and_fails_clearly():
    def bad(x, c, p, t):
        y0, y1 = lv.observation(x[0])  # depends on the state: must be differentiated, cannot be opaque
        return y0 * x[1]

    with pytest.raises(TraceError, match="int"):
        adjoint.cost(bad, state_dim=2, param_dim=4)


def test_cse_merges_repeated_calls_only_within_a_block_without_reassignment():
    src = "\n".join(
        [
            "    for k in range(K):",
            "        t = t0 + k * tau",
            "        a = _adj_tc_m.obs(t)[0]",
            "        b = _adj_tc_m.obs(t)[1]",
            "        c = _adj_tc_m.obs(t)[0]",
            "        t = t + 1.0",
            "        d = _adj_tc_m.obs(t)[0]",
            "    e = _adj_tc_m.obs(t)[0]",
        ]
    )
    out = cse_tcalls(src).split("\n")
    calls = [ln for ln in out if "_adj_tc_m.obs(" in ln]
    assert len(calls) == 3  # first block, after `t` is reassigned, and the outer block
    assert "        a = _tc0[0]" in out and "        b = _tc0[1]" in out and "        c = _tc0[0]" in out
    assert "        d = _tc1[0]" in out and "    e = _tc2[0]" in out


@njit
def _vg_wrong_value(x, c, p, t, out_x, out_c, out_p):
    lv.running_grad(x, c, p, t, out_x, out_c, out_p)
    return 1.0 + lv.running_value(x, c, p, t)


@njit
def _vg_no_value(x, c, p, t, out_x, out_c, out_p):
    lv.running_grad(x, c, p, t, out_x, out_c, out_p)


def _lv_with_running(running):
    return adjoint.ControlProblem(
        lv.DYNAMICS, lv.Y_OBS[0], (0.0, lv.T_END), 200, terminal_cost=lv.TERMINAL, running_cost=running
    )


def test_value_and_grad_cost_is_bitwise_equal_to_separate_value_and_grad():
    sep = _lv_with_running(adjoint.Cost(lv.running_value, lv.running_grad))
    comb = _lv_with_running(lv.RUNNING)
    assert lv.RUNNING.value_and_grad is not None
    for backend in (None, "generic"):  # the fused kernels, then the generic kernels
        for sched in (adjoint.StoreAll(), adjoint.Revolve(snapshots=5), adjoint.Uniform(snapshots=7)):
            a = adjoint.solve_adjoint(sep, params=P, checkpoint=sched, backend=backend)
            b = adjoint.solve_adjoint(comb, params=P, checkpoint=sched, backend=backend)
            assert a.value == b.value
            assert np.array_equal(a.grad.params, b.grad.params) and np.array_equal(a.grad.x0, b.grad.x0)


def test_value_and_grad_that_disagrees_with_value_is_rejected():
    prob = _lv_with_running(adjoint.Cost(lv.running_value, lv.running_grad, value_and_grad=_vg_wrong_value))
    with pytest.raises(ValueError, match=r"running_cost.value_and_grad.*same value"):
        adjoint.solve_adjoint(prob, params=P)
    prob = _lv_with_running(adjoint.Cost(lv.running_value, lv.running_grad, value_and_grad=_vg_no_value))
    with pytest.raises(TypeError, match=r"running_cost.value_and_grad.*return the cost value"):
        adjoint.solve_adjoint(prob, params=P)


@njit
def _vg_nudged(x, c, p, t, out_x, out_c, out_p):
    lv.running_grad(x, c, p, t, out_x, out_c, out_p)
    return lv.running_value(x, c, p, t) * (1.0 + 1e-13)  # within the check's tolerance, but visible


def test_generic_kernels_take_the_value_from_value_and_grad():
    """The sweeps really use value_and_grad's return value (not a second call of value)."""
    sep = adjoint.solve_adjoint(
        _lv_with_running(adjoint.Cost(lv.running_value, lv.running_grad)), params=P, backend="generic"
    )
    nud = adjoint.solve_adjoint(
        _lv_with_running(adjoint.Cost(lv.running_value, lv.running_grad, value_and_grad=_vg_nudged)),
        params=P,
        backend="generic",
    )
    assert nud.value != sep.value and abs(nud.value - sep.value) < 1e-11 * abs(sep.value)
    assert np.array_equal(nud.grad.params, sep.grad.params)


@njit
def _loop_value(x, c, p, t):
    s = 0.0
    k = 0
    while s < abs(x[0]) and k < 2:  # data-dependent loop: not traceable
        s += 1.0
        k += 1
    return 0.5 * s * (x[0] * x[0] + x[1] * x[1]) / lv.T_END


@njit
def _loop_grad(x, c, p, t, out_x, out_c, out_p):
    s = 0.0
    k = 0
    while s < abs(x[0]) and k < 2:
        s += 1.0
        k += 1
    out_x[0] = s * x[0] / lv.T_END
    out_x[1] = s * x[1] / lv.T_END
    out_p[:] = 0.0


@njit
def _loop_vg(x, c, p, t, out_x, out_c, out_p):
    _loop_grad(x, c, p, t, out_x, out_c, out_p)
    return _loop_value(x, c, p, t) * (1.0 + 1e-13)


def test_fused_kernel_calls_value_and_grad_of_an_untraceable_cost():
    from adjoint import _fused, _solve

    cost = adjoint.Cost(_loop_value, _loop_grad, value_and_grad=_loop_vg)
    prob = _lv_with_running(cost)
    comp, p, C, _ = _solve._prepare(prob, P, None, None, adjoint.Euler())
    assert adjoint.ad.trace_cost(cost, 2, 0, 4) is None  # really untraceable
    assert _fused.fused_kernels(comp, adjoint.Euler(), 2, 0, 4) is not None
    fused = adjoint.solve_adjoint(prob, params=P)
    plain = adjoint.solve_adjoint(_lv_with_running(adjoint.Cost(_loop_value, _loop_grad)), params=P)
    assert fused.value != plain.value  # the nudged value_and_grad was used
    generic = adjoint.solve_adjoint(prob, params=P, backend="generic")
    assert fused.value == generic.value
    assert np.array_equal(fused.grad.params, generic.grad.params) and np.array_equal(fused.grad.x0, generic.grad.x0)


# -- the terminal cost receives exactly t1 ---------------------------------------------------------
# A grid whose last point t0 + K tau (tau = (t1 - t0) / K) is not t1 in float64: the terminal cost
# is evaluated at t1 = t_span[1] itself, not at t0 + K tau (``Cost``: "called with ... t = t1").
T0_EXACT, T1_EXACT = 0.1, 1.3


def _grid_missing_t1():
    """The first K >= 20 whose t0 + K * tau differs from t1 (asserted: the tests are never vacuous)."""
    for K in range(20, 400):
        tau = (T1_EXACT - T0_EXACT) / K
        if T0_EXACT + K * tau != T1_EXACT:
            return K
    raise AssertionError("no grid with t0 + K * tau != t1 found")


K_EXACT = _grid_missing_t1()


@njit
def _t1_value(x, c, p, t):
    w = 1.0 if t == T1_EXACT else 2.0  # doubles the state part anywhere but at t1 exactly
    return w * x[0] * x[0] + p[0] * t


@njit
def _t1_grad(x, c, p, t, out_x, out_c, out_p):
    w = 1.0 if t == T1_EXACT else 2.0
    out_x[0] = 2.0 * w * x[0]
    for i in range(1, out_x.shape[0]):
        out_x[i] = 0.0
    out_p[0] = t  # grad_p of the objective is t itself (the fields below do not depend on p)


def _t1_traced(x, c, p, t):
    return p[0] * t + 1e-30 * x[0] ** 2  # the value is t (p = 1): the x part is below its last bit


def _t1_field(x, c, p, t):
    return np.array([x[1] - 0.3 * x[0], -x[0] + 0.1 * x[1] * x[0]])


@njit
def _t1_u(y, c, p, t, out):
    out[0] = y[0]


@njit
def _t1_vjp_u(y, c, p, t, z, out_y, out_c, out_p):
    out_y[0] = z[0]
    out_p[0] = 0.0


@njit
def _t1_v(x, c, p, t, out):
    out[0] = -x[0]


@njit
def _t1_vjp_v(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = -z[0]
    out_p[0] = 0.0


T1_HAND = adjoint.Cost(_t1_value, _t1_grad, name="t1_hand")
T1_P = np.array([1.0])


def _t1_problems():
    dyn = adjoint.vector_field(_t1_field, state_dim=2, param_dim=1)
    traced = adjoint.cost(_t1_traced, state_dim=2, param_dim=1)
    span = (T0_EXACT, T1_EXACT)
    return {
        "hand": adjoint.ControlProblem(dyn, [0.8, -0.4], span, K_EXACT, terminal_cost=T1_HAND),
        "traced": adjoint.ControlProblem(dyn, [0.8, -0.4], span, K_EXACT, terminal_cost=traced),
    }


def _assert_terminal_at_t1(kind, value, x_final, grad_p=None):
    if kind == "hand":
        expected = 1.0 * x_final[0] * x_final[0] + T1_P[0] * T1_EXACT
        assert abs(value - expected) <= 1e-14 * abs(expected), (value, expected)
    else:
        assert value == T1_EXACT, (value, T1_EXACT)
    if grad_p is not None:
        assert grad_p[0] == T1_EXACT, (grad_p[0], T1_EXACT)


def test_grid_for_exact_t1_exposes_the_last_bit():
    prob = _t1_problems()["hand"]
    assert prob.t_span[1] == T1_EXACT and prob.steps == K_EXACT
    assert prob.t_span[0] + prob.steps * prob.tau != prob.t_span[1]


@pytest.mark.parametrize("kind", ["hand", "traced"])
def test_terminal_cost_receives_exactly_t1_on_every_backend_and_schedule(kind):
    prob = _t1_problems()[kind]
    # the terminal cost is evaluated outside the steps: one multi-stage method (store-all) suffices
    cases = [
        (backend, method, sched)
        for backend in ("auto", "scalar", "generic")
        for method, sched in (
            (adjoint.Euler(), adjoint.StoreAll()),
            (adjoint.Euler(), adjoint.Revolve(snapshots=5)),
            (adjoint.Euler(), adjoint.Uniform(snapshots=6)),
            (adjoint.Heun(), adjoint.StoreAll()),
        )
    ]
    cases.append(("tape", adjoint.Euler(), adjoint.StoreAll()))
    ran = set()
    for backend, method, sched in cases:
        res = adjoint.solve_adjoint(prob, params=T1_P, method=method, checkpoint=sched, backend=backend)
        ran.add(res.stats.backend)
        _assert_terminal_at_t1(kind, res.value, res.x_final, res.grad.params)
        # the trajectory's last state is the one the terminal cost saw
        _, traj = adjoint.simulate(prob, params=T1_P, method=method, backend=backend)
        assert np.array_equal(traj[-1], res.x_final)
    assert ran == {"scalar", "tape", "generic"}
    # the fast lane (a repeated store-all call goes straight to the kernel)
    for backend in ("auto", "scalar", "tape", "generic"):
        first = adjoint.solve_adjoint(prob, params=T1_P, checkpoint=adjoint.StoreAll(), backend=backend)
        again = adjoint.solve_adjoint(prob, params=T1_P.copy(), checkpoint=adjoint.StoreAll(), backend=backend)
        assert again.value == first.value and np.array_equal(again.grad.params, first.grad.params)
        _assert_terminal_at_t1(kind, again.value, again.x_final, again.grad.params)
    assert prob._cache.lanes
    # the forward sweeps: evaluate and simulate on each backend
    for backend in ("auto", "scalar", "tape", "generic"):
        for method in (adjoint.Euler(), adjoint.Heun()):
            val, traj = adjoint.simulate(prob, params=T1_P, method=method, backend=backend)
            _assert_terminal_at_t1(kind, val, traj[-1])
            val = adjoint.evaluate(prob, params=T1_P, method=method, backend=backend)
            _assert_terminal_at_t1(kind, val, traj[-1])


def test_terminal_cost_receives_exactly_t1_in_the_reversible_and_leapfrog_sweeps():
    from adjoint._separable import SeparableDynamics
    from adjoint.checkpointing._reversible import Reversible
    from adjoint.integrators import Leapfrog

    dyn = SeparableDynamics(_t1_u, _t1_vjp_u, _t1_v, _t1_vjp_v, x_dim=1, y_dim=1, param_dim=1)
    prob = adjoint.ControlProblem(dyn, [0.8, -0.4], (T0_EXACT, T1_EXACT), K_EXACT, terminal_cost=T1_HAND)
    method = Leapfrog()
    ref = None
    for sched in (adjoint.StoreAll(), adjoint.Revolve(snapshots=5), Reversible()):
        res = adjoint.solve_adjoint(prob, params=T1_P, method=method, checkpoint=sched)
        assert res.stats.backend == "generic"
        _assert_terminal_at_t1("hand", res.value, res.x_final, res.grad.params)
        if isinstance(sched, Reversible):
            assert res.stats.schedule == "Reversible" and res.stats.fallback is None
        ref = ref or res
        assert np.array_equal(res.grad.x0, ref.grad.x0)
    val, traj = adjoint.simulate(prob, params=T1_P, method=method)
    _assert_terminal_at_t1("hand", val, traj[-1])
    _assert_terminal_at_t1("hand", adjoint.evaluate(prob, params=T1_P, method=method), traj[-1])
    # the complex step (the forward kernel in complex arithmetic) sees t1 too: with another t it
    # would double the state part of the terminal cost and disagree with the adjoint
    chk = adjoint.check_gradient(prob, params=T1_P, method=method, wrt=("params", "x0"))
    assert chk.reference == "complex step" and chk.max_rel_error < 1e-12, str(chk)


@pytest.mark.parametrize("kind", ["hand", "traced"])
def test_check_gradient_evaluates_the_terminal_cost_at_exactly_t1(kind):
    """The complex step of a traced field (interpreted graphs) evaluates the terminal cost at t1."""
    from adjoint import _check
    from adjoint._optimize import Objective

    prob = _t1_problems()[kind]
    for method in (adjoint.Euler(), adjoint.Heun()):
        chk = adjoint.check_gradient(prob, params=T1_P, method=method, wrt=("params", "x0"))
        assert chk.reference == "complex step" and chk.max_rel_error < 1e-12, str(chk)
        fun = Objective(prob, ("params", "x0"), params=T1_P, method=method)
        v = fun.initial()
        val = _check._complex_value(fun, v.astype(complex)).real
        x_final = adjoint.solve_adjoint(prob, params=T1_P, method=method).x_final
        _assert_terminal_at_t1(kind, val, x_final)
