"""scipy plug-in: memoisation, block layout, bounds."""

import numpy as np
from scipy.optimize import minimize

import adjoint
from adjoint.problems import lotka_volterra as lv
from adjoint.problems import pendulum


def test_each_point_evaluated_once():
    prob = pendulum.make_problem(30)
    fun = prob.objective(wrt="controls", controls=np.zeros((30, 1)))
    v = fun.initial() + 0.1
    a = fun(v)
    b = fun.value(v)
    c = fun.grad(v)
    assert fun.nfev == 1
    assert a[0] == b and np.array_equal(a[1], c)
    fun(v + 1e-3)
    assert fun.nfev == 2


def test_tuple_wrt_layout_matches_solve_adjoint():
    prob = lv.make_problem(300)
    fun = prob.objective(wrt=("x0", "params"), params=lv.initial_guess())
    v = fun.initial()
    assert v.shape == (6,)
    blocks = fun.unpack(v)
    assert np.array_equal(blocks["x0"], prob.x0) and np.array_equal(blocks["params"], lv.initial_guess())
    val, g = fun(v)
    res = adjoint.solve_adjoint(prob, params=lv.initial_guess())
    assert val == res.value
    assert np.array_equal(g, np.concatenate([res.grad.x0, res.grad.params]))


def test_bounds_are_respected_by_lbfgsb():
    steps = 60
    prob = pendulum.make_problem(steps)
    fun = prob.objective(wrt="controls", controls=pendulum.initial_guess(steps))
    bnds = fun.bounds(controls=(-1.0, 1.0))
    assert bnds == adjoint.control_bounds(prob, -1.0, 1.0)
    res = minimize(fun, fun.initial(), jac=True, method="L-BFGS-B", bounds=bnds, options={"maxiter": 30})
    assert np.all(np.abs(res.x) <= 1.0 + 1e-12)
    assert res.fun < fun.history[0]
