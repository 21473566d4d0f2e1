"""check_gradient is honest about its reference: complex step for traced problems too, the reference
and the accuracy to expect reported, and a warning when it checks another method than the one used."""

import warnings

import numba
import numpy as np
import pytest

import adjoint


def lotka_volterra(x, c, p, t):
    return np.array([p[0] * x[0] - p[1] * x[0] * x[1], p[2] * x[0] * x[1] - p[3] * x[1]])


def traced_problem(steps=300):
    return adjoint.ControlProblem(
        lotka_volterra,
        [1.0, 1.0],
        (0.0, 5.0),
        steps,
        terminal_cost=lambda x, p: np.sum(x**2),
        running_cost=lambda x, c, p, t: 0.1 * np.sin(x[0]) * t,
    )


P0 = [1.0, 0.4, 0.4, 0.8]


@pytest.mark.parametrize("method", [adjoint.Euler(), adjoint.Heun(), adjoint.RK4()], ids=repr)
def test_traced_problems_get_the_complex_step(method):
    chk = adjoint.check_gradient(traced_problem(), params=P0, method=method)
    assert chk.reference == "complex step" and chk.complex_step_error is None
    assert chk.expected_accuracy == 1e-13
    assert chk.max_rel_error == chk.complex_rel_error < 1e-12
    # the complex step and central differences agree with each other to the differences' accuracy
    assert np.allclose(chk.complex_step, chk.central, rtol=1e-6, atol=0)
    assert "against complex step" in str(chk) and repr(method) in str(chk)


def test_central_differences_are_named_when_the_complex_step_is_off():
    chk = adjoint.check_gradient(traced_problem(), params=P0, complex_step=False)
    assert chk.reference == "central differences" and chk.expected_accuracy == 1e-6
    assert chk.max_rel_error == chk.central_rel_error < 1e-5


@numba.njit
def f_real_only(x, c, p, t, out):
    out[0] = -p[0] * x[0] + np.float64(0.0) * x[0]


@numba.njit
def vjp_wrong(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = -p[0] * z[0]
    out_p[0] = -1.01 * x[0] * z[0]  # 1% off


def test_a_wrong_hand_written_vjp_is_caught():
    prob = adjoint.ControlProblem(
        adjoint.Dynamics(f_real_only, vjp_wrong, state_dim=1, param_dim=1),
        [1.0],
        (0.0, 1.0),
        100,
        terminal_cost=lambda x, p: x[0] ** 2,
    )
    chk = adjoint.check_gradient(prob, params=[0.7], wrt="params")
    assert chk.max_rel_error > 1e-3


def test_warns_when_the_problem_was_solved_with_another_method_only():
    prob = traced_problem(100)
    adjoint.solve_adjoint(prob, params=P0, method=adjoint.RK4())
    with pytest.warns(UserWarning, match=r"checks the explicit Euler gradient .*method="):
        adjoint.check_gradient(prob, params=P0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        adjoint.check_gradient(prob, params=P0, method=adjoint.RK4())  # explicit: no warning


def test_too_many_steps_for_the_interpreted_sweep_fall_back_to_central_differences():
    from adjoint._check import MAX_TRACED_COMPLEX_EVALUATIONS

    prob = traced_problem(MAX_TRACED_COMPLEX_EVALUATIONS + 1)
    chk = adjoint.check_gradient(prob, params=P0, directions=1)
    assert chk.reference == "central differences"
    assert "too many for the interpreted complex sweep" in chk.complex_step_error
