"""ControlProblem is immutable; its compiled artefacts live in one declared cache object."""

import numpy as np
import pytest

import adjoint
from problems import lotka_volterra as lv


def test_problem_is_immutable_and_says_what_to_do():
    prob = lv.make_problem(50)
    for name, value in (("steps", 100), ("t_span", (0.0, 2.0)), ("x0", np.ones(2)), ("new_field", 1)):
        with pytest.raises(AttributeError, match=rf"ControlProblem is immutable: cannot set '{name}'.*with_steps"):
            setattr(prob, name, value)
    with pytest.raises(AttributeError, match="immutable"):
        del prob.steps
    assert prob.steps == 50


def test_with_steps_shares_compiled_functions_not_fast_lanes():
    prob = lv.make_problem(50)
    p = lv.initial_guess()
    a = adjoint.solve_adjoint(prob, params=p)
    adjoint.solve_adjoint(prob, params=p)
    assert prob._cache.lanes
    finer = prob.with_steps(80)
    assert finer._cache.compiled is prob._cache.compiled and not finer._cache.lanes
    b = adjoint.solve_adjoint(finer, params=p)
    assert (a.stats.forward_steps, b.stats.forward_steps) == (50, 80)
    ref = adjoint.solve_adjoint(lv.make_problem(80), params=p)
    assert b.value == ref.value and np.array_equal(b.grad.params, ref.grad.params)
    with pytest.raises(ValueError, match="`steps` must be an integer >= 1"):
        prob.with_steps(0)
