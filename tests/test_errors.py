"""Bad input gets a clear error naming the argument (pinned messages)."""

import numpy as np
import pytest
from numba import njit

import adjoint
from adjoint.problems import lotka_volterra as lv
from adjoint.problems import pendulum


@pytest.fixture(scope="session")
def pend():
    return pendulum.make_problem(20)


def test_wrong_x0_shape():
    with pytest.raises(ValueError, match=r"`x0` must have shape \(2,\) to match the problem; got shape \(3,\)"):
        adjoint.ControlProblem(lv.DYNAMICS, [1.0, 1.0, 1.0], (0, 1), 10, terminal_cost=lv.TERMINAL)


def test_nonfinite_x0():
    with pytest.raises(ValueError, match=r"`x0` must be finite; entry 1 is nan"):
        adjoint.ControlProblem(lv.DYNAMICS, [1.0, np.nan], (0, 1), 10, terminal_cost=lv.TERMINAL)


@pytest.mark.parametrize("span", [(1.0, 1.0), (2.0, 1.0)])
def test_reversed_t_span(span):
    with pytest.raises(ValueError, match=r"`t_span` must satisfy t1 > t0"):
        adjoint.ControlProblem(lv.DYNAMICS, [1.0, 1.0], span, 10, terminal_cost=lv.TERMINAL)


@pytest.mark.parametrize("steps, exc", [(0, ValueError), (-3, ValueError), (2.5, TypeError)])
def test_bad_steps(steps, exc):
    with pytest.raises(exc, match=r"`steps` must be an integer >= 1"):
        adjoint.ControlProblem(lv.DYNAMICS, [1.0, 1.0], (0, 1), steps, terminal_cost=lv.TERMINAL)


def test_no_cost():
    with pytest.raises(ValueError, match="at least one of `terminal_cost` and `running_cost`"):
        adjoint.ControlProblem(lv.DYNAMICS, [1.0, 1.0], (0, 1), 10)


def test_params_missing_and_wrong_shape():
    prob = lv.make_problem(10)
    with pytest.raises(ValueError, match=r"`params` is required: the dynamics has param_dim=4"):
        adjoint.solve_adjoint(prob)
    with pytest.raises(ValueError, match=r"`params` must have shape \(4,\)"):
        adjoint.solve_adjoint(prob, params=[1.0, 2.0])
    with pytest.raises(ValueError, match=r"`params` must be finite; entry 2 is inf"):
        adjoint.solve_adjoint(prob, params=[1.0, 2.0, np.inf, 1.0])
    with pytest.raises(TypeError, match=r"`params` must be real"):
        adjoint.solve_adjoint(prob, params=np.ones(4) * 1j)


def test_controls_shape_and_nan(pend):
    with pytest.raises(ValueError, match=r"`controls` is required: the dynamics has control_dim=1"):
        adjoint.solve_adjoint(pend)
    with pytest.raises(
        ValueError, match=r"`controls` must have shape \(steps, control_dim\) = \(20, 1\); got shape \(19, 1\)"
    ):
        adjoint.solve_adjoint(pend, controls=np.zeros((19, 1)))
    c = np.zeros((20, 1))
    c[7] = np.nan
    with pytest.raises(ValueError, match=r"`controls` must be finite; row 7"):
        adjoint.solve_adjoint(pend, controls=c)


def test_bad_method_and_checkpoint(pend):
    with pytest.raises(TypeError, match=r"`method` must be an adjoint method"):
        adjoint.solve_adjoint(pend, controls=np.zeros((20, 1)), method="rk4")
    with pytest.raises(TypeError, match=r"`checkpoint` must be"):
        adjoint.solve_adjoint(pend, controls=np.zeros((20, 1)), checkpoint=3.5)


def test_invalid_tableaux():
    with pytest.raises(ValueError, match="strictly lower triangular"):
        adjoint.RungeKutta([[0.5, 0], [0.5, 0]], [0.5, 0.5], [0.5, 0.5])
    with pytest.raises(ValueError, match="row sums of A must equal c"):
        adjoint.RungeKutta([[0, 0], [0.5, 0]], [0.5, 0.5], [0, 1.0])
    with pytest.raises(ValueError, match="weights b must sum to 1"):
        adjoint.RungeKutta([[0, 0], [1.0, 0]], [0.5, 0.6], [0, 1.0])
    with pytest.raises(ValueError, match=r"b and c must have shape \(2,\)"):
        adjoint.RungeKutta([[0, 0], [1.0, 0]], [1.0], [0, 1.0])


def test_dynamics_dimension_errors():
    with pytest.raises(ValueError, match=r"`state_dim` must be an integer >= 1; got 0"):
        adjoint.Dynamics(lv.f, lv.vjp, 0)
    with pytest.raises(TypeError, match=r"`control_dim` must be an integer >= 0"):
        adjoint.Dynamics(lv.f, lv.vjp, 2, control_dim=1.5)


def test_vjp_with_wrong_signature():
    @njit
    def vjp_short(x, c, p, t, z, out_x):
        out_x[0] = z[0]

    with pytest.raises(TypeError, match=r"`vjp` must take 8 positional arguments"):
        adjoint.Dynamics(lv.f, vjp_short, 2, param_dim=4)


def _uncompilable_f(branch):
    def f_bad(x, c, p, t, out):
        out[0] = {"a": x}["a"][0] + len(object.__name__)  # objects numba cannot type
        if branch and x[0] > 0.5:  # a data-dependent branch: not traceable, the compiled f is needed
            out[0] += 1.0
        out[1] = 0.0

    return f_bad


@pytest.mark.parametrize("branch, fused", [(True, True), (False, False)])
def test_function_numba_cannot_compile(branch, fused):
    """An untraceable function needs its compiled version; a traceable one runs as traced code in
    the fused kernels, which never compile it, but the generic kernels (forced here) do. Either way
    the check names it."""
    dyn = adjoint.Dynamics(_uncompilable_f(branch), lv.vjp, 2, param_dim=4)
    prob = adjoint.ControlProblem(dyn, [1.0, 1.0], (0, 1), 10, terminal_cost=lv.TERMINAL)
    with pytest.raises(
        TypeError,
        match=r"`dynamics.f` \(the vector field f\(x, c, p, t, out\)\) could not be "
        r"compiled by numba",
    ):
        adjoint.solve_adjoint(prob, params=lv.TRUE_PARAMS, backend=None if fused else "generic")


def test_interpreted_check_defers_to_the_compiled_functions():
    """Traceable functions are checked through py_func on the fused path; a py_func failure is
    re-judged by the compiled function (numba semantics: math.sqrt(-1) is NaN, not ValueError)."""
    import math

    @njit
    def f(x, c, p, t, out):
        out[0] = -x[1]
        out[1] = x[0] + 0.0 * math.sqrt(x[0] - 2.0)  # Python raises ValueError at x0; numba gives NaN

    @njit
    def vjp(x, c, p, t, z, ox, oc, op):
        ox[0] = z[1]
        ox[1] = -z[0]

    dyn = adjoint.Dynamics(f, vjp, 2)
    prob = adjoint.ControlProblem(dyn, [1.0, 0.0], (0, 1), 10, terminal_cost=lambda x, p: x[0] ** 2)
    with pytest.raises(ValueError, match=r"`dynamics.f` left entries of `out` unset or non-finite at x0"):
        adjoint.solve_adjoint(prob)


def test_vjp_that_does_not_write_everything():
    @njit
    def vjp_partial(x, c, p, t, z, out_x, out_c, out_p):
        out_x[0] = z[0]
        out_x[1] = z[1]  # out_p never written

    dyn = adjoint.Dynamics(lv.f, vjp_partial, 2, param_dim=4)
    prob = adjoint.ControlProblem(dyn, [1.0, 1.0], (0, 1), 10, terminal_cost=lv.TERMINAL)
    with pytest.raises(ValueError, match=r"`dynamics.vjp` left entries of `out_p` unset"):
        adjoint.solve_adjoint(prob, params=lv.TRUE_PARAMS)


def test_divergence_names_step_and_time():
    @njit
    def blowup(x, c, p, t, out):
        out[0] = x[0] * x[0]

    @njit
    def blowup_vjp(x, c, p, t, z, out_x, out_c, out_p):
        out_x[0] = 2.0 * x[0] * z[0]

    @njit
    def val(x, c, p, t):
        return x[0]

    @njit
    def grad(x, c, p, t, ox, oc, op):
        ox[0] = 1.0

    dyn = adjoint.Dynamics(blowup, blowup_vjp, 1)
    prob = adjoint.ControlProblem(dyn, [1.0], (0.0, 2.0), 100, terminal_cost=adjoint.Cost(val, grad))
    with pytest.raises(FloatingPointError, match=r"non-finite \(NaN or inf\) in step \d+ \(t = "):
        adjoint.solve_adjoint(prob)
    with pytest.raises(FloatingPointError, match=r"non-finite"):
        adjoint.simulate(prob)


def test_objective_errors(pend):
    with pytest.raises(ValueError, match=r"`wrt` entries must be 'params', 'controls' or 'x0'; got 'thetas'"):
        pend.objective(wrt="thetas")
    fun = pend.objective(wrt="controls", controls=np.zeros((20, 1)))
    with pytest.raises(ValueError, match=r"the optimisation vector must have shape \(20,\)"):
        fun(np.zeros(3))
    with pytest.raises(ValueError, match=r"bounds given for 'x0', which is not in wrt"):
        fun.bounds(x0=(0, 1))


def test_untraceable_plain_functions_name_the_argument():
    def field_with_if(x, c, p, t):
        if x[0] > 0:  # data-dependent control flow
            return -x
        return x

    prob = adjoint.ControlProblem(field_with_if, [1.0, 2.0], (0, 1), 10, terminal_cost=lambda x, p: np.sum(x**2))
    with pytest.raises(
        adjoint.ad.TraceError,
        match=r"tracing `dynamics` .* data-dependent Python control flow.*"
        r"np\.where",
    ):
        adjoint.solve_adjoint(prob)

    def cost_with_inv(x, p):
        return np.sum(np.linalg.inv(np.outer(x, x) + np.eye(2)) @ x)

    prob = adjoint.ControlProblem(lambda x, c, p, t: -x, [1.0, 2.0], (0, 1), 10, terminal_cost=cost_with_inv)
    with pytest.raises(adjoint.ad.TraceError, match=r"tracing `terminal_cost` .*`np\.linalg\.inv` is not supported"):
        adjoint.solve_adjoint(prob)
