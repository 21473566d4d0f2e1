"""Differentiating an argmin: implicit differentiation and unrolled gradient descent.

The problem is ``f(theta) = L(x(theta), theta)`` with ``x(theta) = argmin_x E(x, theta)``.

* ``mode="implicit"`` solves the inner problem with scipy (L-BFGS-B or Newton-CG), then one linear
  system with the Hessian ``d2E/dx2`` (conjugate gradients on Hessian-vector products, or a dense
  solve), and applies the implicit function theorem.
* ``mode="unrolled"`` runs ``steps`` iterations of gradient descent and differentiates them exactly
  with :func:`adjoint.solve_adjoint` (gradient descent is a :class:`adjoint.DiscreteMap`), so every
  checkpoint schedule applies and memory is reported the same way.

Derivatives come from the tracing AD (``adjoint.ad``) for plain functions, or are hand-written
(keyword arguments ``energy_grad``, ``energy_hvp``, ``energy_mixed_vjp``, ``loss_grad``).
"""

from __future__ import annotations

import inspect
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._cg import conjugate_gradients
from ._problem import ControlProblem, Cost, Dynamics, _is_dispatcher, as_float_vector, call_user
from ._solve import Stats, solve_adjoint
from ._traced import cost, vector_field
from .checkpointing import Schedule, as_schedule
from .integrators import DiscreteMap

__all__ = ["solve_argmin", "ArgminResult", "ArgminStats", "ArgminConvergenceError", "ArgminConvergenceWarning"]


class ArgminConvergenceError(RuntimeError):
    """The inner solve or the linear solve missed its tolerance: the gradient would be wrong."""


class ArgminConvergenceWarning(RuntimeWarning):
    """Issued instead of :class:`ArgminConvergenceError` when ``on_failure="warn"``."""


@dataclass(frozen=True)
class ArgminStats:
    """What the solve cost, and how well its parts converged.

    Attributes
    ----------
    mode : str
        ``"implicit"`` or ``"unrolled"``.
    inner_iterations : int
        Iterations of the inner solver (scipy's ``nit``), or ``steps`` when unrolled.
    inner_residual : float
        ``||grad_x E(x, theta)||_2`` at the returned ``x``.
    inner_tol : float
        The tolerance ``inner_residual`` was held to (``nan`` when unrolled: not checked).
    linear_iterations : int
        Conjugate-gradient iterations (``n`` Hessian columns for the dense solve, 0 when unrolled).
    linear_residual : float
        Relative residual ``||H w - grad_x L|| / ||grad_x L||`` of the adjoint solve, recomputed
        from ``w`` (``nan`` when unrolled).
    linear_tol : float
        Tolerance of ``linear_residual`` (``nan`` when unrolled).
    hvp_evaluations : int
        Hessian-vector products outside scipy's solver (Newton polishing, linear solve, residual
        check; ``steps`` when unrolled).
    converged : bool
        Both residuals within their tolerances (always ``True`` when unrolled: the unrolled
        gradient is the exact derivative of the ``steps`` iterations, whatever ``x_K``).
    seconds : float
        Wall time of the call.
    adjoint : Stats or None
        When unrolled, the :class:`adjoint.Stats` of the backward sweep (forward steps, peak stored
        states and bytes, schedule); ``None`` when implicit.
    """

    mode: str
    inner_iterations: int
    inner_residual: float
    inner_tol: float
    linear_iterations: int
    linear_residual: float
    linear_tol: float
    hvp_evaluations: int
    converged: bool
    seconds: float
    adjoint: Stats | None


@dataclass(frozen=True)
class ArgminResult:
    """Result of :func:`solve_argmin`.

    Attributes
    ----------
    x : ndarray, shape (n,)
        The inner solution (``x_K`` when unrolled).
    value : float
        ``L(x, theta)``.
    grad : ndarray, shape (p,)
        ``d value / d theta`` (for a scalar ``theta``, shape (1,)).
    stats : ArgminStats
    """

    x: np.ndarray
    value: float
    grad: np.ndarray
    stats: ArgminStats


# --------------------------------------------------------------------------------------------
# The derivative bundle
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Funcs:
    energy: Callable  # energy(x, theta) -> float
    loss: Callable  # loss(x, theta) -> float
    egrad: Callable  # egrad(x, theta, out)
    hvp: Callable  # hvp(x, theta, v, out)
    mixed: Callable  # mixed(x, theta, w, out_theta)
    lgrad: Callable  # lgrad(x, theta, out_x, out_theta)
    traced_energy: bool  # egrad, hvp, mixed come from adjoint.ad (not numba-callable)
    traced_loss: bool  # lgrad comes from adjoint.ad


_HAND = (
    ("energy_grad", "energy_grad(x, theta, out)", 3),
    ("energy_hvp", "energy_hvp(x, theta, v, out)", 4),
    ("energy_mixed_vjp", "energy_mixed_vjp(x, theta, w, out)", 4),
    ("loss_grad", "loss_grad(x, theta, out_x, out_theta)", 4),
)
_ENERGY_DERIVS = ("energy_grad", "energy_hvp", "energy_mixed_vjp")


def _positional_arity(fn):
    py = fn.py_func if _is_dispatcher(fn) else fn
    try:
        sig = inspect.signature(py)
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
        return None
    return sum(1 for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _check_callable(name, fn, nargs, form):
    if not callable(fn):
        raise TypeError(f"`{name}` must be a function {form}; got {type(fn).__name__}")
    k = _positional_arity(fn)
    if k is not None and k != nargs:
        raise TypeError(f"`{name}` must take {nargs} positional arguments, {form}; it takes {k}")


def _tracer(missing):
    try:
        from . import ad

        ad.grad, ad.hvp, ad.compile_field, ad.compile_cost  # noqa: B018 - the API this module needs
    except (ImportError, AttributeError) as exc:
        raise TypeError(
            f"{', '.join(f'`{m}`' for m in missing)} not given and the tracing AD (adjoint.ad) is not "
            f"available ({exc}); pass energy_grad=, energy_hvp=, energy_mixed_vjp= and loss_grad= "
            "(see adjoint.solve_argmin's docstring)"
        ) from None
    return ad


# Traced derivatives, in the out-writing conventions, kept per function (tracing compiles once per
# shape inside adjoint.ad; these wrappers only convert).
_TRACED_CACHE: dict = {}


def _traced_energy(energy):
    got = _TRACED_CACHE.get(("energy", energy))
    if got is None:
        ad = _tracer(_ENERGY_DERIVS)
        G = ad.grad(energy, 0)

        def energy_grad(x, theta, out):
            out[:] = G(x, theta)

        def energy_hvp(x, theta, v, out):
            # hvp over (x, theta) with tangent (v, 0): first output H_xx v, second [d2E/dx dtheta]^T v
            out[:] = ad.hvp(energy, (x, theta), (v, np.zeros(theta.shape[0])))[0]

        def energy_mixed_vjp(x, theta, w, out):
            out[:] = ad.hvp(energy, (x, theta), (w, np.zeros(theta.shape[0])))[1]

        got = (energy_grad, energy_hvp, energy_mixed_vjp)
        _TRACED_CACHE[("energy", energy)] = got
    return got


def _traced_loss(loss):
    got = _TRACED_CACHE.get(("loss", loss))
    if got is None:
        ad = _tracer(("loss_grad",))
        G = ad.grad(loss, (0, 1))

        def loss_grad(x, theta, out_x, out_theta):
            gx, gt = G(x, theta)
            out_x[:] = gx
            out_theta[:] = gt

        got = loss_grad
        _TRACED_CACHE[("loss", loss)] = got
    return got


def _make_funcs(energy, loss, hand) -> _Funcs:
    """Hand-written derivatives where given; the rest traced from ``energy``/``loss`` by adjoint.ad.

    The three energy derivatives go together (all hand-written, or all traced): the unrolled mode
    compiles them into one map.
    """
    _check_callable("energy", energy, 2, "energy(x, theta) -> float")
    _check_callable("loss", loss, 2, "loss(x, theta) -> float")
    for name, form, nargs in _HAND:
        if hand[name] is not None:
            _check_callable(name, hand[name], nargs, form)
    given_e = [hand[k] is not None for k in _ENERGY_DERIVS]
    if any(given_e) and not all(given_e):
        missing = [k for k, g in zip(_ENERGY_DERIVS, given_e) if not g]
        raise TypeError(
            f"give all of energy_grad=, energy_hvp=, energy_mixed_vjp= or none of them (to trace "
            f"them from `energy`); missing {', '.join(f'`{m}`' for m in missing)}"
        )
    traced_e = not any(given_e)
    eg, eh, em = (
        _traced_energy(energy) if traced_e else (hand["energy_grad"], hand["energy_hvp"], hand["energy_mixed_vjp"])
    )
    traced_l = hand["loss_grad"] is None
    lg = _traced_loss(loss) if traced_l else hand["loss_grad"]
    return _Funcs(energy, loss, eg, eh, em, lg, traced_e, traced_l)


def _call(label, fn, args, fix):
    return call_user(label, fn, args, fix, shapes=f"of shapes x {args[0].shape}, theta {args[1].shape}")


def _check_funcs(fs: _Funcs, x, theta):
    """Call every function once at ``(x_init, theta)`` so that errors name the argument."""
    n, npar = x.shape[0], theta.shape[0]
    for name, fn in (("energy", fs.energy), ("loss", fs.loss)):
        v = _call(f"`{name}`", fn, (x, theta), "It must return a float.")
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise TypeError(f"`{name}` must return a float; got {type(v).__name__}") from None
        if not np.isfinite(v):
            raise ValueError(
                f"`{name}` is not finite at x_init, theta (got {v}); start from a point where it is defined"
            )
    v1 = np.linspace(0.5, 1.5, n)
    checks = (
        ("energy_grad", fs.egrad, lambda: (x, theta, np.full(n, np.nan)), ((n, "out"),)),
        ("energy_hvp", fs.hvp, lambda: (x, theta, v1, np.full(n, np.nan)), ((n, "out"),)),
        ("energy_mixed_vjp", fs.mixed, lambda: (x, theta, v1, np.full(npar, np.nan)), ((npar, "out"),)),
        (
            "loss_grad",
            fs.lgrad,
            lambda: (x, theta, np.full(n, np.nan), np.full(npar, np.nan)),
            ((n, "out_x"), (npar, "out_theta")),
        ),
    )
    for name, fn, mk, outs in checks:
        args = mk()
        _call(
            f"`{name}`",
            fn,
            args,
            "It must write its result into the output array(s) "
            + ", ".join(f"`{o}` of shape ({k},)" for k, o in outs)
            + ".",
        )
        for (k, o), arr in zip(outs, args[len(args) - len(outs) :]):
            if not np.all(np.isfinite(arr)):
                raise ValueError(
                    f"`{name}` left entries of `{o}` unset or non-finite at x_init (got {arr}); it must "
                    "overwrite every entry (write 0.0 where the derivative is zero)"
                )


# --------------------------------------------------------------------------------------------
# Implicit mode
# --------------------------------------------------------------------------------------------


def _inner_solve(fs: _Funcs, theta, x0, method, tol, max_iter, polish):
    """scipy's solver, then (``polish``) Newton steps until ``||grad_x E|| <= tol``.

    Returns ``(x, iterations, residual, hvp_evaluations)``.
    """
    from scipy.optimize import minimize

    n = x0.shape[0]
    g = np.empty(n)

    def fun(x):
        fs.egrad(x, theta, g)
        return float(fs.energy(x, theta)), g.copy()

    if method == "lbfgs":
        # gtol bounds the max-norm; dividing by sqrt(n) makes it a bound on the 2-norm
        res = minimize(
            fun,
            x0,
            jac=True,
            method="L-BFGS-B",
            options=dict(maxiter=max_iter, gtol=tol / np.sqrt(n), ftol=0.0, maxfun=10 * max_iter + 100),
        )
    else:
        hv = np.empty(n)

        def hessp(x, v):
            fs.hvp(x, theta, np.ascontiguousarray(v, dtype=np.float64), hv)
            return hv.copy()

        res = minimize(
            fun, x0, jac=True, hessp=hessp, method="Newton-CG", options=dict(maxiter=max_iter, xtol=1e-3 * tol)
        )
    x = np.ascontiguousarray(res.x, dtype=np.float64)
    nit = int(res.nit)
    fs.egrad(x, theta, g)
    r = float(np.linalg.norm(g))
    nh = 0
    # Line searches stop on rounding of E (relative 1e-16 of E ~ residual^2 / mu) before the
    # gradient reaches a tight tolerance; Newton steps (CG on Hessian-vector products, no line
    # search) need only the gradient and converge quadratically from there.
    for _ in range(polish if r > tol else 0):
        if not np.isfinite(r) or nit >= max_iter:
            break
        d, k, bad = conjugate_gradients(lambda v, out: fs.hvp(x, theta, v, out), -g, 1e-3 * tol / max(r, tol), 4 * n)
        nh += k
        if bad:
            break
        xn = x + d
        gn = np.empty(n)
        fs.egrad(xn, theta, gn)
        rn = float(np.linalg.norm(gn))
        if not rn < r:
            break
        x, g, r = xn, gn, rn
        nit += 1
        if r <= tol:
            break
    return x, nit, r, nh


def _implicit(
    fs,
    theta,
    x_init,
    inner,
    inner_tol,
    inner_max_iter,
    polish,
    linear_solver,
    linear_tol,
    linear_max_iter,
    on_failure,
    t_start,
):
    n, npar = x_init.shape[0], theta.shape[0]
    x, nit, inner_res, nh_inner = _inner_solve(fs, theta, x_init, inner, inner_tol, inner_max_iter, polish)
    value = float(fs.loss(x, theta))
    gx, gth = np.empty(n), np.empty(npar)
    fs.lgrad(x, theta, gx, gth)
    Hv = np.empty(n)

    def hvp(v, out):
        fs.hvp(x, theta, v, out)

    problems = []
    if not inner_res <= inner_tol:
        problems.append(
            f"the inner solve ({inner}) stopped after {nit} iterations with residual "
            f"||grad_x E|| = {inner_res:.3e} > inner_tol = {inner_tol:.1e} (raise inner_max_iter, "
            "loosen inner_tol, or try inner='newton-cg')"
        )
    gnorm = float(np.linalg.norm(gx))
    nonpd = False
    if gnorm == 0.0:
        w, lit, nh, lin_res = np.zeros(n), 0, 0, 0.0
    else:
        if linear_solver == "cg":
            w, lit, nonpd = conjugate_gradients(hvp, gx, linear_tol, linear_max_iter)
            nh = lit
        else:
            H = np.empty((n, n))
            e = np.zeros(n)
            for j in range(n):
                e[j] = 1.0
                hvp(e, H[:, j])
                e[j] = 0.0
            H = 0.5 * (H + H.T)
            try:
                # positive definiteness first (the CG path detects nonpositive curvature as it
                # goes; an LU solve would return a saddle's or a maximum's w without complaint)
                np.linalg.cholesky(H)
                w = np.linalg.solve(H, gx)
            except np.linalg.LinAlgError:
                w = np.zeros(n)
                nonpd = True
            lit, nh = n, n
        hvp(w, Hv)
        nh += 1
        lin_res = float(np.linalg.norm(Hv - gx) / gnorm)
    if nonpd:
        problems.append(
            "the Hessian d2E/dx2 is not positive definite at x (nonpositive curvature or "
            "singular): the implicit function theorem does not give the gradient there"
        )
    if not lin_res <= linear_tol:
        problems.append(
            f"the linear solve ({linear_solver}) of d2E/dx2 w = grad_x L stopped after {lit} "
            f"iterations with relative residual {lin_res:.3e} > linear_tol = {linear_tol:.1e} "
            "(raise linear_max_iter, loosen linear_tol, or use linear_solver='dense')"
        )
    mixed = np.empty(npar)
    fs.mixed(x, theta, w, mixed)
    grad = gth - mixed
    stats = ArgminStats(
        mode="implicit",
        inner_iterations=nit,
        inner_residual=inner_res,
        inner_tol=inner_tol,
        linear_iterations=int(lit),
        linear_residual=lin_res,
        linear_tol=linear_tol,
        hvp_evaluations=int(nh + nh_inner),
        converged=not problems,
        seconds=time.perf_counter() - t_start,
        adjoint=None,
    )
    if problems:
        msg = "solve_argmin: the implicit gradient is not reliable: " + "; ".join(problems)
        if on_failure == "raise":
            raise ArgminConvergenceError(msg + ". Pass on_failure='warn' to get the result anyway.")
        warnings.warn(msg, ArgminConvergenceWarning, stacklevel=3)
    return ArgminResult(x=x, value=value, grad=grad, stats=stats)


# --------------------------------------------------------------------------------------------
# Unrolled mode
# --------------------------------------------------------------------------------------------

_UNROLLED_CACHE: dict = {}


_JIT_CACHE: dict = {}


def _jit(fn):
    """``fn`` as a numba dispatcher (plain functions are compiled once and remembered)."""
    if _is_dispatcher(fn):
        return fn
    got = _JIT_CACHE.get(fn)
    if got is None:
        import numba

        got = numba.njit(fn)
        if len(_JIT_CACHE) > 256:
            _JIT_CACHE.clear()
        _JIT_CACHE[fn] = got
    return got


def _descent_dynamics_handwritten(fs: _Funcs, n, npar) -> Dynamics:
    import numba

    eg, hv, mx = _jit(fs.egrad), _jit(fs.hvp), _jit(fs.mixed)

    @numba.njit
    def descent(x, c, p, t, out):
        th = p[:npar]
        s = p[npar]
        eg(x, th, out)
        for i in range(x.shape[0]):
            out[i] = x[i] - s * out[i]

    @numba.njit
    def descent_vjp(x, c, p, t, z, out_x, out_c, out_p):
        th = p[:npar]
        s = p[npar]
        hv(x, th, z, out_x)  # H is symmetric: [d_x grad_x E]^T z = H z
        for i in range(x.shape[0]):
            out_x[i] = z[i] - s * out_x[i]
        mx(x, th, z, out_p[:npar])
        for j in range(npar):
            out_p[j] = -s * out_p[j]
        out_p[npar] = 0.0  # d/ds is not needed

    return Dynamics(descent, descent_vjp, state_dim=n, param_dim=npar + 1, name="gradient_descent")


def _descent_dynamics_traced(energy, n, npar) -> Dynamics:
    ad = _tracer(_ENERGY_DERIVS)
    G = ad.grad(energy, 0)

    def gradient_descent(x, c, p, t):
        return x - p[npar] * G(x, p[:npar])

    return vector_field(gradient_descent, n, 0, npar + 1)


def _loss_cost(fs: _Funcs, n, npar) -> Cost:
    if fs.traced_loss:
        _tracer(("loss_grad",))
        loss = fs.loss

        def terminal(x, c, p, t):
            return loss(x, p[:npar])

        return cost(terminal, n, 0, npar + 1)
    import numba

    lv, lg = _jit(fs.loss), _jit(fs.lgrad)

    @numba.njit
    def terminal_value(x, c, p, t):
        return lv(x, p[:npar])

    @numba.njit
    def terminal_grad(x, c, p, t, out_x, out_c, out_p):
        lg(x, p[:npar], out_x, out_p[:npar])
        out_p[npar] = 0.0

    return Cost(terminal_value, terminal_grad, name="loss")


def _unrolled_problem(fs: _Funcs, n, npar, x_init, steps) -> ControlProblem:
    """Gradient descent as a DiscreteMap: ``x_{k+1} = x_k - s grad_x E(x_k, theta)``.

    The shared parameters are ``p = (theta, s)``: the step size ``s`` is data, so changing it does
    not recompile (its own derivative is discarded). Compiled once per set of functions and sizes.
    """
    key = (fs.energy, fs.loss, fs.egrad, fs.hvp, fs.mixed, fs.lgrad, n, npar)
    prob = _UNROLLED_CACHE.get(key)
    if prob is None:
        dyn = (
            _descent_dynamics_traced(fs.energy, n, npar)
            if fs.traced_energy
            else _descent_dynamics_handwritten(fs, n, npar)
        )
        cost = _loss_cost(fs, n, npar)
        prob = ControlProblem(dyn, x_init, (0.0, 1.0), 1, terminal_cost=cost, name="unrolled_argmin")
        if len(_UNROLLED_CACHE) > 64:
            _UNROLLED_CACHE.clear()
        _UNROLLED_CACHE[key] = prob
    return prob.with_steps(steps)


def _unrolled(fs, theta, x_init, steps, step_size, checkpoint, t_start):
    n, npar = x_init.shape[0], theta.shape[0]
    if not (fs.traced_energy and fs.traced_loss):
        # compile the hand-written functions now, so that numba errors name the argument
        jitted = _Funcs(
            fs.energy,
            fs.loss if fs.traced_loss else _jit(fs.loss),
            *((fs.egrad, fs.hvp, fs.mixed) if fs.traced_energy else (_jit(fs.egrad), _jit(fs.hvp), _jit(fs.mixed))),
            fs.lgrad if fs.traced_loss else _jit(fs.lgrad),
            fs.traced_energy,
            fs.traced_loss,
        )
        _check_funcs(jitted, x_init, theta)
    prob = _unrolled_problem(fs, n, npar, x_init, steps)
    p = np.concatenate([theta, [step_size]])
    try:
        res = solve_adjoint(prob, params=p, x0=x_init, method=DiscreteMap(), checkpoint=checkpoint)
    except FloatingPointError as exc:
        raise FloatingPointError(
            f"gradient descent diverged: {exc}; `step_size` = {step_size:g} is probably "
            "too large (it must be below 2 / (largest Hessian eigenvalue))"
        ) from None
    x = res.x_final
    g = np.empty(n)
    fs.egrad(x, theta, g)
    stats = ArgminStats(
        mode="unrolled",
        inner_iterations=steps,
        inner_residual=float(np.linalg.norm(g)),
        inner_tol=float("nan"),
        linear_iterations=0,
        linear_residual=float("nan"),
        linear_tol=float("nan"),
        hvp_evaluations=steps,
        converged=True,
        seconds=time.perf_counter() - t_start,
        adjoint=res.stats,
    )
    return ArgminResult(x=x, value=res.value, grad=res.grad.params[:npar].copy(), stats=stats)


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------

_MODES = ("implicit", "unrolled")


def _positive(name, v, kind=float):
    if kind is int:
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"`{name}` must be an integer >= 1; got {v!r}")
        return int(v)
    try:
        fv = float(v)
    except (TypeError, ValueError):
        raise TypeError(f"`{name}` must be a positive number; got {v!r}") from None
    if not (np.isfinite(fv) and fv > 0):
        raise ValueError(f"`{name}` must be a positive finite number; got {v!r}")
    return fv


def solve_argmin(
    energy,
    loss,
    theta,
    x_init,
    *,
    mode="implicit",
    energy_grad=None,
    energy_hvp=None,
    energy_mixed_vjp=None,
    loss_grad=None,
    inner=None,
    inner_tol=None,
    inner_max_iter=None,
    inner_polish=None,
    linear_solver=None,
    linear_tol=None,
    linear_max_iter=None,
    on_failure="raise",
    steps=None,
    step_size=None,
    checkpoint="auto",
) -> ArgminResult:
    """Value and gradient of ``f(theta) = L(x(theta), theta)``, ``x(theta) = argmin_x E(x, theta)``.

    Parameters
    ----------
    energy : callable ``energy(x, theta) -> float``
        The inner objective ``E``, strongly convex in ``x`` near the solution.
    loss : callable ``loss(x, theta) -> float``
        The outer objective ``L``.
    theta : array_like, shape (p,) or scalar
        Outer parameters (a scalar is treated as shape (1,)).
    x_init : array_like, shape (n,)
        Start of the inner solve (the ``x_0`` of gradient descent when unrolled).
    mode : {"implicit", "unrolled"}
    energy_grad, energy_hvp, energy_mixed_vjp, loss_grad : callable, optional
        Hand-written derivatives (numba-compiled or plain numpy functions) that write into
        preallocated outputs and overwrite them:

        * ``energy_grad(x, theta, out)``: ``out = grad_x E``, shape (n,);
        * ``energy_hvp(x, theta, v, out)``: ``out = [d2E/dx2] v``, shape (n,);
        * ``energy_mixed_vjp(x, theta, w, out)``: ``out = [d2E/dx dtheta]^T w
          = grad_theta <grad_x E(x, theta), w>``, shape (p,);
        * ``loss_grad(x, theta, out_x, out_theta)``: ``grad_x L`` (n,) and ``grad_theta L`` (p,).

        Give the three energy derivatives together or none of them; what is not given is traced
        from ``energy`` (and ``loss``) by ``adjoint.ad``. The unrolled mode compiles hand-written
        ones (and ``loss``) with numba, so they must be numba-compilable there.
    inner : {"lbfgs", "newton-cg"}, default "lbfgs"
        *implicit*: scipy's ``L-BFGS-B`` or ``Newton-CG`` (with ``energy_hvp``) for the inner problem.
    inner_tol : float, default 1e-9
        *implicit*: required ``||grad_x E(x, theta)||_2`` at the inner solution (absolute).
    inner_max_iter : int, default 1000
        *implicit*: iterations of the inner solver, Newton polishing steps included.
    inner_polish : int, default 5
        *implicit*: at most this many Newton steps (CG on ``energy_hvp``, no line search) after
        scipy's solver when its gradient is still above ``inner_tol`` (scipy's line searches stop on
        the rounding of ``E`` before tight gradient tolerances are met); 0 disables them.
    linear_solver : {"cg", "dense"}, default "cg"
        *implicit*: conjugate gradients on Hessian-vector products, or a dense solve with the Hessian
        assembled from ``n`` Hessian-vector products (small ``n``).
    linear_tol : float, default 1e-10
        *implicit*: required relative residual ``||H w - grad_x L|| / ||grad_x L||``.
    linear_max_iter : int, default ``10 n``
    on_failure : {"raise", "warn"}
        *implicit*: when a residual exceeds its tolerance (or the Hessian is not positive definite),
        raise :class:`ArgminConvergenceError` (default) or issue :class:`ArgminConvergenceWarning`
        and return the result, whose ``stats.converged`` is ``False``.
    steps : int
        *unrolled*: iterations ``K`` of gradient descent (required).
    step_size : float
        *unrolled*: the step ``s`` of ``x_{k+1} = x_k - s grad_x E(x_k, theta)`` (required).
    checkpoint : Schedule or "auto", default ``"auto"``
        *unrolled*: checkpoint schedule of the backward sweep (any of :func:`adjoint.solve_adjoint`'s;
        ``"auto"`` stores every state when they fit in ``DEFAULT_MEMORY_BUDGET``, as there).

    Returns
    -------
    ArgminResult
        ``x``, ``value = L(x, theta)``, ``grad`` of shape (p,), ``stats``.

    Raises
    ------
    ArgminConvergenceError
        *implicit*, ``on_failure="raise"``: the inner residual or the linear-solve residual exceeds
        its tolerance; the message gives both figures.

    Notes
    -----
    *Implicit*: at ``grad_x E(x(theta), theta) = 0`` the implicit function theorem gives::

        [d2E/dx2] w = grad_x L,    grad f = grad_theta L - [d2E/dx dtheta]^T w

    one symmetric positive-definite solve whatever the number of inner iterations. Its accuracy is
    that of the inner solve (error ~ ``inner_residual / mu``) and of the linear solve.

    *Unrolled*: ``x_{k+1} = x_k - s grad_x E(x_k, theta)`` for ``k < K`` and ``f = L(x_K, theta)``
    is a recurrent map with shared parameters (an :class:`adjoint.DiscreteMap` with ``p = theta``);
    its exact discrete gradient is the backpropagation::

        z_K = grad_x L(x_K),  z_k = z_{k+1} - s H(x_k) z_{k+1},
        grad f = grad_theta L - s sum_k [d2E/dx dtheta (x_k)]^T z_{k+1}

    computed by :func:`adjoint.solve_adjoint`; memory is that of the ``checkpoint`` schedule. For a
    strongly convex quadratic with ``s < 2 / L`` it converges to the implicit gradient like
    ``K rho^K``, ``rho = max_i |1 - s lambda_i(H)|``.

    Examples
    --------
    Ridge regression in one unknown, ``E = (x - 1)^2 / 2 + exp(theta) x^2 / 2``, ``L = x^2 / 2``:

    >>> import numpy as np, adjoint
    >>> E = lambda x, th: 0.5 * (x[0] - 1.0) ** 2 + 0.5 * np.exp(th[0]) * x[0] ** 2
    >>> L = lambda x, th: 0.5 * x[0] ** 2
    >>> def eg(x, th, out): out[0] = x[0] - 1.0 + np.exp(th[0]) * x[0]
    >>> def eh(x, th, v, out): out[0] = (1.0 + np.exp(th[0])) * v[0]
    >>> def em(x, th, w, out): out[0] = np.exp(th[0]) * x[0] * w[0]
    >>> def lg(x, th, out_x, out_th):
    ...     out_x[0] = x[0]
    ...     out_th[0] = 0.0
    >>> r = adjoint.solve_argmin(E, L, 0.0, [0.0], energy_grad=eg, energy_hvp=eh,
    ...                          energy_mixed_vjp=em, loss_grad=lg)
    >>> np.round(r.x, 8), np.round(r.grad, 8)      # x = 1/2, d/dtheta (x^2/2) = -1/8
    (array([0.5]), array([-0.125]))
    """
    t_start = time.perf_counter()
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}")
    if isinstance(theta, str):
        theta = as_float_vector("theta", theta)  # raises, naming the argument
    th_arr = np.asarray(theta, dtype=np.float64)
    theta = as_float_vector("theta", th_arr.reshape(1) if th_arr.ndim == 0 else theta)
    if theta.shape[0] == 0:
        raise ValueError("`theta` must have at least one entry; got shape (0,)")
    x_init = as_float_vector("x_init", x_init)
    if x_init.shape[0] == 0:
        raise ValueError("`x_init` must have at least one entry; got shape (0,)")
    if on_failure not in ("raise", "warn"):
        raise ValueError(f"`on_failure` must be 'raise' or 'warn'; got {on_failure!r}")
    implicit_opts = dict(
        inner=inner,
        inner_tol=inner_tol,
        inner_max_iter=inner_max_iter,
        inner_polish=inner_polish,
        linear_solver=linear_solver,
        linear_tol=linear_tol,
        linear_max_iter=linear_max_iter,
    )
    unrolled_opts = dict(steps=steps, step_size=step_size, checkpoint=checkpoint)
    other = unrolled_opts if mode == "implicit" else implicit_opts
    for k, v in other.items():
        if v is not None and not (k == "checkpoint" and isinstance(v, str) and v == "auto"):  # the default
            raise ValueError(
                f"`{k}` applies to mode={'unrolled' if mode == 'implicit' else 'implicit'!r} only; "
                f"it was given with mode={mode!r}"
            )
    n = x_init.shape[0]
    fs = _make_funcs(
        energy,
        loss,
        dict(energy_grad=energy_grad, energy_hvp=energy_hvp, energy_mixed_vjp=energy_mixed_vjp, loss_grad=loss_grad),
    )
    _check_funcs(fs, x_init, theta)
    if mode == "implicit":
        inner = "lbfgs" if inner is None else inner
        if inner not in ("lbfgs", "newton-cg"):
            raise ValueError(f"`inner` must be 'lbfgs' or 'newton-cg'; got {inner!r}")
        linear_solver = "cg" if linear_solver is None else linear_solver
        if linear_solver not in ("cg", "dense"):
            raise ValueError(f"`linear_solver` must be 'cg' or 'dense'; got {linear_solver!r}")
        inner_tol = 1e-9 if inner_tol is None else _positive("inner_tol", inner_tol)
        linear_tol = 1e-10 if linear_tol is None else _positive("linear_tol", linear_tol)
        inner_max_iter = 1000 if inner_max_iter is None else _positive("inner_max_iter", inner_max_iter, int)
        linear_max_iter = 10 * n if linear_max_iter is None else _positive("linear_max_iter", linear_max_iter, int)
        inner_polish = 5 if inner_polish is None else inner_polish
        if (
            isinstance(inner_polish, (bool, np.bool_))
            or not isinstance(inner_polish, (int, np.integer))
            or inner_polish < 0
        ):
            raise ValueError(f"`inner_polish` must be an integer >= 0; got {inner_polish!r}")
        return _implicit(
            fs,
            theta,
            x_init,
            inner,
            inner_tol,
            inner_max_iter,
            int(inner_polish),
            linear_solver,
            linear_tol,
            linear_max_iter,
            on_failure,
            t_start,
        )
    if steps is None or step_size is None:
        raise ValueError(
            "mode='unrolled' requires `steps` (iterations of gradient descent) and `step_size`; "
            f"got steps={steps!r}, step_size={step_size!r}"
        )
    steps = _positive("steps", steps, int)
    step_size = _positive("step_size", step_size)
    if not (
        checkpoint is None or isinstance(checkpoint, Schedule) or (isinstance(checkpoint, str) and checkpoint == "auto")
    ):
        raise TypeError(f'`checkpoint` must be a schedule such as adjoint.StoreAll(), or "auto"; got {checkpoint!r}')
    checkpoint = as_schedule(checkpoint)
    return _unrolled(fs, theta, x_init, steps, step_size, checkpoint, t_start)
