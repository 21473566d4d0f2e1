"""A trace of a hand-written numba function is spliced into the scalar kernels only when it is the same
function (adjoint._trust). Functions whose trace freezes a value (string work on the time, a random
draw) must give the results of the compiled functions, with a warning and a note in Stats."""

import warnings

import numba
import numpy as np
import pytest

import adjoint
import adjoint.ad as ad
from adjoint import Dynamics
from adjoint._trust import trace_mismatch
from adjoint.problems import lotka_volterra as lv

STEPS = 60


@numba.njit
def _f_str(x, c, p, t, out):
    # the tracer sees a symbol for t: len(str(t)) becomes one constant in the trace
    out[0] = -p[0] * x[0] + 0.01 * len(str(t)) * x[0]


@numba.njit
def _v_str(x, c, p, t, z, ox, oc, op):
    ox[0] = (-p[0] + 0.01 * len(str(t))) * z[0]
    op[0] = -x[0] * z[0]


@numba.njit
def _f_rand(x, c, p, t, out):
    out[0] = -p[0] * x[0] * (1.0 + 1e-3 * np.random.random())


@numba.njit
def _v_rand(x, c, p, t, z, ox, oc, op):
    ox[0] = -p[0] * z[0]
    op[0] = -x[0] * z[0]


def _terminal(x, p):
    return (x[0] - 0.3) ** 2


def _problem(f, v):
    return adjoint.ControlProblem(Dynamics(f, v, 1, 0, 1), [1.0], (0.0, 1.0), STEPS, terminal_cost=_terminal)


def _euler_value(p0):
    """An independent reference: explicit Euler in Python, calling the compiled field."""
    x, p, tau = np.array([1.0]), np.array([p0]), 1.0 / STEPS
    for k in range(STEPS):
        u = np.empty(1)
        _f_str(x, np.zeros(0), p, 0.0 + k * tau, u)
        x = x + tau * u
    return (x[0] - 0.3) ** 2


def _solve_recording(prob, **kw):
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = adjoint.solve_adjoint(prob, params=[0.7], **kw)
    return res, [w for w in rec if issubclass(w.category, adjoint.TraceMismatchWarning)]


def test_frozen_string_work_is_detected_and_the_compiled_function_runs():
    prob = _problem(_f_str, _v_str)
    tr = ad.trace_dynamics(prob.dynamics)
    assert tr is not None  # the tracer does accept it: only the comparison catches the frozen value
    assert "differs from the function" in trace_mismatch(prob.dynamics, tr, 1, 0, 1)
    res, warned = _solve_recording(prob)
    assert warned and "compiled function is called" in str(warned[0].message)
    assert res.stats.notes and "_f_str" in res.stats.notes[0]
    assert res.stats.backend == "generic"  # no trustworthy trace of the field: nothing to scalarise
    ref = adjoint.solve_adjoint(prob, params=[0.7], backend="generic")
    assert res.value == ref.value and np.array_equal(res.grad.params, ref.grad.params)
    np.testing.assert_allclose(res.value, _euler_value(0.7), rtol=1e-13)
    h = 1e-6
    fd = (_euler_value(0.7 + h) - _euler_value(0.7 - h)) / (2 * h)
    np.testing.assert_allclose(res.grad.params[0], fd, rtol=1e-7)


def test_random_draws_are_detected():
    prob = _problem(_f_rand, _v_rand)
    assert ad.trace_dynamics(prob.dynamics) is not None
    res, warned = _solve_recording(prob)
    assert warned and "not deterministic" in str(warned[0].message)
    assert res.stats.backend == "generic" and "not deterministic" in res.stats.notes[0]
    assert np.isfinite(res.value)


def test_backend_scalar_refuses_an_untrustworthy_trace():
    with pytest.warns(adjoint.TraceMismatchWarning), pytest.raises(ValueError, match="backend='scalar'.*differs from"):
        adjoint.solve_adjoint(_problem(_f_str, _v_str), params=[0.7], backend="scalar")


def test_honest_handwritten_functions_are_still_spliced():
    prob = lv.make_problem(40)
    with warnings.catch_warnings():
        warnings.simplefilter("error", adjoint.TraceMismatchWarning)
        res = adjoint.solve_adjoint(prob, params=lv.initial_guess())
    assert res.stats.backend == "scalar" and res.stats.notes == ()
    assert trace_mismatch(prob.dynamics, ad.trace_dynamics(prob.dynamics), 2, 0, 4) is None
