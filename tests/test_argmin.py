"""Tests of adjoint._argmin: implicit differentiation of argmin and unrolled gradient descent.

References: the ridge closed form, central differences of the full solve (logistic regression, a
two-parameter problem), unrolled vs implicit, and central differences of the unrolled computation.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from adjoint._argmin import ArgminConvergenceError, ArgminConvergenceWarning, ArgminResult, ArgminStats, solve_argmin
from adjoint.checkpointing import StoreAll


def _schedule(name):
    """A checkpoint schedule class by name."""
    import adjoint.checkpointing as ck

    return getattr(ck, name)


def _ad_ready():
    return importlib.import_module("adjoint.ad")


# --------------------------------------------------------------------------------------------
# fixtures (compiled once per session)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ridge():
    from adjoint.problems import ridge as mod

    return mod.make_problem(n_features=20, n_train=40, n_val=40)


@pytest.fixture(scope="session")
def logistic():
    from adjoint.problems import logistic as mod

    return mod.make_problem(n_features=15, n_train=50, n_val=50)


def _two_param_problem():
    """E = 0.5 |x - c|^2_D + 0.5 exp(t0) |x|^2 + 0.25 exp(t1) sum x^4 (strongly convex), L = 0.5 |Bx - d|^2.

    Plain numpy functions with hand-written derivatives (the unrolled mode compiles them)."""
    n = 6
    rng = np.random.default_rng(3)
    c = rng.standard_normal(n)
    D = 1.0 + rng.random(n)
    B = rng.standard_normal((4, n))
    d = rng.standard_normal(4)

    def energy(x, th):
        return (
            0.5 * np.sum(D * (x - c) ** 2) + 0.5 * np.exp(th[0]) * np.sum(x * x) + 0.25 * np.exp(th[1]) * np.sum(x**4)
        )

    def loss(x, th):
        r = B @ x - d
        return 0.5 * np.sum(r * r) + 0.1 * th[1] * np.sum(x)

    def energy_grad(x, th, out):
        out[:] = D * (x - c) + np.exp(th[0]) * x + np.exp(th[1]) * x**3

    def energy_hvp(x, th, v, out):
        out[:] = (D + np.exp(th[0]) + 3.0 * np.exp(th[1]) * x * x) * v

    def energy_mixed_vjp(x, th, w, out):
        out[0] = np.exp(th[0]) * np.sum(x * w)
        out[1] = np.exp(th[1]) * np.sum(x**3 * w)

    def loss_grad(x, th, out_x, out_th):
        out_x[:] = B.T @ (B @ x - d) + 0.1 * th[1]
        out_th[0] = 0.0
        out_th[1] = 0.1 * np.sum(x)

    kw = dict(energy_grad=energy_grad, energy_hvp=energy_hvp, energy_mixed_vjp=energy_mixed_vjp, loss_grad=loss_grad)
    # step bound: Hessian <= max D + exp(t0) + 3 exp(t1) max x^2 near the solution
    return energy, loss, kw, n


@pytest.fixture(scope="session")
def two_param():
    return _two_param_problem()


def _cd(fun, theta, h):
    theta = np.asarray(theta, dtype=float)
    g = np.empty_like(theta)
    for i in range(theta.size):
        e = np.zeros_like(theta)
        e[i] = h
        g[i] = (fun(theta + e) - fun(theta - e)) / (2 * h)
    return g


# --------------------------------------------------------------------------------------------
# ridge: closed form
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [-3.0, -1.0, 0.5, 2.0])
@pytest.mark.parametrize("inner,linear", [("lbfgs", "cg"), ("newton-cg", "dense")])
def test_ridge_implicit_matches_closed_form(ridge, theta, inner, linear):
    r = solve_argmin(
        ridge.energy, ridge.loss, theta, np.zeros(ridge.n), inner=inner, linear_solver=linear, **ridge.derivatives()
    )
    assert isinstance(r, ArgminResult) and isinstance(r.stats, ArgminStats)
    xc = ridge.closed_form_x([theta])
    gc = ridge.closed_form_grad([theta])
    assert np.linalg.norm(r.x - xc) <= 1e-8 * np.linalg.norm(xc)
    assert r.grad.shape == (1,)
    np.testing.assert_allclose(r.grad, gc, rtol=1e-8, atol=0)
    np.testing.assert_allclose(r.value, ridge.closed_form_value([theta]), rtol=1e-10)
    s = r.stats
    assert s.mode == "implicit" and s.converged and s.adjoint is None
    assert s.inner_residual <= s.inner_tol and s.linear_residual <= s.linear_tol
    assert s.linear_iterations >= 1 and s.hvp_evaluations >= s.linear_iterations


def test_ridge_unrolled_converges_at_the_gradient_descent_rate(ridge):
    """Strongly convex quadratic, step 1/L: |g_K - g*| ~ C K rho^K with rho = 1 - mu/L."""
    theta = np.array([-1.0])
    gc = ridge.closed_form_grad(theta)[0]
    mu, L = ridge.step_bounds(theta)
    rho = 1.0 - mu / L
    Ks = np.arange(20, 161, 20)
    errs = []
    for K in Ks:
        r = solve_argmin(
            ridge.energy,
            ridge.loss,
            theta,
            np.zeros(ridge.n),
            mode="unrolled",
            steps=int(K),
            step_size=1.0 / L,
            **ridge.derivatives(),
        )
        errs.append(abs(r.grad[0] - gc) / abs(gc))
        assert r.stats.mode == "unrolled" and r.stats.inner_iterations == K
        assert r.stats.adjoint.forward_steps == K and r.stats.adjoint.schedule == "StoreAll"
    errs = np.array(errs)
    assert np.all(np.diff(errs) < 0)
    assert errs[-1] < 1e-9
    slope = np.polyfit(Ks, np.log(errs / Ks), 1)[0]
    assert abs(slope - np.log(rho)) < 0.1 * abs(np.log(rho)), (slope, np.log(rho))


def test_unrolled_is_the_exact_gradient_of_the_unrolled_computation(ridge):
    """Few steps (far from converged): the unrolled gradient matches central differences of L(x_K)."""
    K, s = 7, 0.2

    def value(th):
        return solve_argmin(
            ridge.energy,
            ridge.loss,
            th,
            np.zeros(ridge.n),
            mode="unrolled",
            steps=K,
            step_size=s,
            **ridge.derivatives(),
        ).value

    r = solve_argmin(
        ridge.energy, ridge.loss, [0.3], np.zeros(ridge.n), mode="unrolled", steps=K, step_size=s, **ridge.derivatives()
    )
    np.testing.assert_allclose(r.grad, _cd(value, [0.3], 1e-5), rtol=1e-7)
    # and x_K is gradient descent, computed here independently
    x = np.zeros(ridge.n)
    g = np.empty(ridge.n)
    for _ in range(K):
        ridge.energy_grad(x, np.array([0.3]), g)
        x = x - s * g
    np.testing.assert_allclose(r.x, x, rtol=1e-13, atol=1e-15)


def test_unrolled_checkpointed_agrees_with_store_all_bitwise(ridge):
    Revolve = _schedule("Revolve")
    kw = dict(mode="unrolled", steps=60, step_size=0.25, **ridge.derivatives())
    a = solve_argmin(ridge.energy, ridge.loss, [-1.0], np.zeros(ridge.n), checkpoint=StoreAll(), **kw)
    b = solve_argmin(ridge.energy, ridge.loss, [-1.0], np.zeros(ridge.n), checkpoint=Revolve(snapshots=4), **kw)
    assert np.array_equal(a.grad, b.grad) and a.value == b.value
    assert b.stats.adjoint.peak_stored_states < a.stats.adjoint.peak_stored_states


# --------------------------------------------------------------------------------------------
# convergence failures are reported, never silent
# --------------------------------------------------------------------------------------------


def test_unconverged_inner_solve_raises_with_the_figures(ridge):
    with pytest.raises(
        ArgminConvergenceError,
        match=r"inner solve \(lbfgs\) stopped after 2 iterations with residual "
        r"\|\|grad_x E\|\| = \d\.\d{3}e[-+]\d+ > inner_tol = 1\.0e-09",
    ):
        solve_argmin(ridge.energy, ridge.loss, -1.0, np.zeros(ridge.n), inner_max_iter=2, **ridge.derivatives())


def test_unconverged_inner_solve_warns_when_asked(ridge):
    with pytest.warns(ArgminConvergenceWarning, match=r"inner solve .* residual"):
        r = solve_argmin(
            ridge.energy,
            ridge.loss,
            -1.0,
            np.zeros(ridge.n),
            inner_max_iter=2,
            on_failure="warn",
            **ridge.derivatives(),
        )
    assert not r.stats.converged
    assert r.stats.inner_residual > r.stats.inner_tol
    assert r.stats.inner_iterations == 2
    # the figures tell the truth: the gradient is off
    assert abs(r.grad[0] - ridge.closed_form_grad([-1.0])[0]) > 1e-6


def test_unconverged_linear_solve_raises(ridge):
    with pytest.raises(
        ArgminConvergenceError,
        match=r"linear solve \(cg\) .* stopped after 2 iterations with "
        r"relative residual \d\.\d{3}e[-+]\d+ > linear_tol = 1\.0e-10",
    ):
        solve_argmin(ridge.energy, ridge.loss, -1.0, np.zeros(ridge.n), linear_max_iter=2, **ridge.derivatives())


def test_indefinite_hessian_is_reported():
    # E = -x^2/2 + theta x: a stationary point (a maximum), not a minimum
    E = lambda x, th: -0.5 * x[0] ** 2 + th[0] * x[0]
    L = lambda x, th: x[0]

    def eg(x, th, out):
        out[0] = -x[0] + th[0]

    def eh(x, th, v, out):
        out[0] = -v[0]

    def em(x, th, w, out):
        out[0] = w[0]

    def lg(x, th, ox, ot):
        ox[0] = 1.0
        ot[0] = 0.0

    with pytest.raises(ArgminConvergenceError, match="not positive definite"):
        solve_argmin(
            E,
            L,
            [1.0],
            [1.0],
            energy_grad=eg,
            energy_hvp=eh,
            energy_mixed_vjp=em,
            loss_grad=lg,
            inner="newton-cg",
            inner_max_iter=3,
        )


# --------------------------------------------------------------------------------------------
# logistic regression: central differences of the full solve
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("theta", [-4.0, -1.0, 1.0])
def test_logistic_implicit_matches_central_differences(logistic, theta):
    kw = dict(logistic.derivatives(), inner_tol=1e-12)
    x0 = np.zeros(logistic.n)

    def value(th):
        return solve_argmin(logistic.energy, logistic.loss, th, x0, **kw).value

    r = solve_argmin(logistic.energy, logistic.loss, [theta], x0, **kw)
    cd = _cd(value, [theta], 1e-4)
    np.testing.assert_allclose(r.grad, cd, rtol=1e-6)


def test_logistic_unrolled_agrees_with_implicit(logistic):
    theta = np.array([-2.0])
    x0 = np.zeros(logistic.n)
    imp = solve_argmin(logistic.energy, logistic.loss, theta, x0, inner_tol=1e-12, **logistic.derivatives())
    mu, L = logistic.curvature_bounds(theta)
    unr = solve_argmin(
        logistic.energy,
        logistic.loss,
        theta,
        x0,
        mode="unrolled",
        steps=600,
        step_size=1.0 / L,
        **logistic.derivatives(),
    )
    np.testing.assert_allclose(unr.x, imp.x, rtol=1e-8)
    np.testing.assert_allclose(unr.grad, imp.grad, rtol=1e-8)
    assert unr.stats.inner_residual < 1e-10


# --------------------------------------------------------------------------------------------
# two parameters, plain numpy functions (compiled by the unrolled mode)
# --------------------------------------------------------------------------------------------


def test_vector_theta_implicit_and_unrolled(two_param):
    energy, loss, kw, n = two_param
    theta = np.array([-0.5, -1.0])
    x0 = np.zeros(n)
    r = solve_argmin(energy, loss, theta, x0, inner_tol=1e-12, **kw)
    cd = _cd(lambda th: solve_argmin(energy, loss, th, x0, inner_tol=1e-12, **kw).value, theta, 1e-5)
    assert r.grad.shape == (2,)
    np.testing.assert_allclose(r.grad, cd, rtol=1e-7)
    # dense linear solve gives the same
    rd = solve_argmin(energy, loss, theta, x0, inner_tol=1e-12, linear_solver="dense", **kw)
    np.testing.assert_allclose(rd.grad, r.grad, rtol=1e-10)
    u = solve_argmin(energy, loss, theta, x0, mode="unrolled", steps=400, step_size=0.2, **kw)
    np.testing.assert_allclose(u.grad, r.grad, rtol=1e-9)


# --------------------------------------------------------------------------------------------
# input validation: errors name the argument
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(mode="newton"), ValueError, r"`mode` must be one of \('implicit', 'unrolled'\); got 'newton'"),
        (dict(theta=[np.nan]), ValueError, r"`theta` must be finite; entry 0 is nan"),
        (dict(theta=np.zeros((1, 1))), ValueError, r"`theta` must be a 1-D array"),
        (dict(x_init=np.zeros((2, 20))), ValueError, r"`x_init` must be a 1-D array"),
        (dict(x_init=[np.inf] * 20), ValueError, r"`x_init` must be finite"),
        (dict(steps=10), ValueError, r"`steps` applies to mode='unrolled' only"),
        (dict(mode="unrolled", steps=10), ValueError, r"mode='unrolled' requires `steps` .* and `step_size`"),
        (dict(mode="unrolled", steps=0, step_size=0.1), ValueError, r"`steps` must be an integer >= 1; got 0"),
        (dict(mode="unrolled", steps=5, step_size=-1.0), ValueError, r"`step_size` must be a positive finite"),
        (
            dict(mode="unrolled", steps=5, step_size=0.1, inner_tol=1e-3),
            ValueError,
            r"`inner_tol` applies to mode='implicit' only",
        ),
        (
            dict(mode="unrolled", steps=5, step_size=0.1, checkpoint="revolve"),
            TypeError,
            r"`checkpoint` must be a schedule",
        ),
        (dict(inner="bfgs"), ValueError, r"`inner` must be 'lbfgs' or 'newton-cg'; got 'bfgs'"),
        (dict(linear_solver="lu"), ValueError, r"`linear_solver` must be 'cg' or 'dense'"),
        (dict(on_failure="ignore"), ValueError, r"`on_failure` must be 'raise' or 'warn'"),
        (dict(inner_tol=0.0), ValueError, r"`inner_tol` must be a positive finite number"),
    ],
)
def test_bad_input_names_the_argument(ridge, kwargs, exc, match):
    args = dict(theta=[0.0], x_init=np.zeros(ridge.n))
    args.update({k: kwargs.pop(k) for k in ("theta", "x_init") if k in kwargs})
    with pytest.raises(exc, match=match):
        solve_argmin(ridge.energy, ridge.loss, args["theta"], args["x_init"], **kwargs, **ridge.derivatives())


def test_bad_derivative_functions_are_named(ridge):
    kw = ridge.derivatives()

    def lazy_grad(x, th, out):
        out[0] = 1.0  # leaves the rest unset

    with pytest.raises(ValueError, match=r"`energy_grad` left entries of `out` unset or non-finite"):
        solve_argmin(ridge.energy, ridge.loss, [0.0], np.zeros(ridge.n), **dict(kw, energy_grad=lazy_grad))
    with pytest.raises(TypeError, match=r"`energy_hvp` must take 4 positional arguments"):
        solve_argmin(ridge.energy, ridge.loss, [0.0], np.zeros(ridge.n), **dict(kw, energy_hvp=lambda x, th, out: None))
    with pytest.raises(TypeError, match=r"`loss_grad` raised an error .* shapes x \(20,\), theta \(1,\)"):
        solve_argmin(
            ridge.energy,
            ridge.loss,
            [0.0],
            np.zeros(ridge.n),
            **dict(kw, loss_grad=lambda x, th, ox, ot: ox.reshape(3, 3)),
        )
    with pytest.raises(ValueError, match=r"`energy` is not finite at x_init"):
        solve_argmin(lambda x, th: np.nan, ridge.loss, [0.0], np.zeros(ridge.n), **kw)


def test_partial_energy_derivatives_are_rejected(ridge):
    with pytest.raises(
        TypeError,
        match=r"give all of energy_grad=, energy_hvp=, energy_mixed_vjp= or none .* "
        r"missing `energy_mixed_vjp`",
    ):
        solve_argmin(
            ridge.energy,
            ridge.loss,
            [0.0],
            np.zeros(ridge.n),
            energy_grad=ridge.energy_grad,
            energy_hvp=ridge.energy_hvp,
        )


# --------------------------------------------------------------------------------------------
# traced (adjoint.ad) vs hand-written derivatives
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ad():
    return _ad_ready()


def test_traced_derivatives_match_hand_written(ridge, ad):
    from adjoint._argmin import _traced_energy, _traced_loss

    rng = np.random.default_rng(5)
    x, v, th = rng.standard_normal(ridge.n), rng.standard_normal(ridge.n), np.array([-0.4])
    eg, eh, em = _traced_energy(ridge.energy)
    lg = _traced_loss(ridge.loss)
    for traced, hand, args, sizes in (
        (eg, ridge.energy_grad, (x, th), (ridge.n,)),
        (eh, ridge.energy_hvp, (x, th, v), (ridge.n,)),
        (em, ridge.energy_mixed_vjp, (x, th, v), (1,)),
        (lg, ridge.loss_grad, (x, th), (ridge.n, 1)),
    ):
        a = [np.empty(k) for k in sizes]
        b = [np.empty(k) for k in sizes]
        traced(*args, *a)
        hand(*args, *b)
        for u, w in zip(a, b):
            np.testing.assert_allclose(u, w, rtol=1e-12, atol=1e-14)


def test_traced_ridge_implicit_and_unrolled(ridge, ad):
    theta = np.array([-1.0])
    gc = ridge.closed_form_grad(theta)
    r = solve_argmin(ridge.energy, ridge.loss, theta, np.zeros(ridge.n))
    np.testing.assert_allclose(r.grad, gc, rtol=1e-8)
    kw = dict(mode="unrolled", steps=40, step_size=0.2)
    traced = solve_argmin(ridge.energy, ridge.loss, theta, np.zeros(ridge.n), **kw)
    hand = solve_argmin(ridge.energy, ridge.loss, theta, np.zeros(ridge.n), **kw, **ridge.derivatives())
    np.testing.assert_allclose(traced.x, hand.x, rtol=1e-12)
    np.testing.assert_allclose(traced.grad, hand.grad, rtol=1e-10)
    # mixed: traced energy, hand-written loss gradient
    mixed = solve_argmin(ridge.energy, ridge.loss, theta, np.zeros(ridge.n), **kw, loss_grad=ridge.loss_grad)
    np.testing.assert_allclose(mixed.grad, hand.grad, rtol=1e-10)


def test_results_are_frozen(ridge):
    r = solve_argmin(ridge.energy, ridge.loss, [0.0], np.zeros(ridge.n), **ridge.derivatives())
    with pytest.raises(Exception):
        r.grad = None
    with pytest.raises(Exception):
        r.stats.inner_residual = 0.0
