"""Ridge-regression hyper-parameter tuning: the argmin problem with a closed-form answer.

Data: a synthetic linear model ``b = A x_true + noise`` (fixed seed), split into ``n_train``
training and ``n_val`` validation rows. The hyper-parameter is ``theta = log(lambda)``.

Inner problem (the ridge fit on the training rows)::

    E(x, theta) = |A x - b|^2 / (2 m) + exp(theta) |x|^2 / 2

Outer problem (the validation error)::

    L(x) = |A_v x - b_v|^2 / (2 m_v)

Closed forms, with ``H = A^T A / m + lambda I`` and ``lambda = exp(theta)``::

    x(theta) = H^{-1} A^T b / m
    dx/dtheta = -lambda H^{-1} x(theta)
    d L(x(theta)) / d theta = -lambda <grad L(x), H^{-1} x>

``make_problem`` returns a :class:`Ridge` holding the plain functions ``energy(x, theta)`` and
``loss(x, theta)``, their hand-written numba derivatives (``derivatives()`` gives the keyword
arguments of :func:`adjoint.solve_argmin`) and the closed forms.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ._common import ArgminData

try:
    from adjoint import solve_argmin
except ImportError:  # until adjoint/__init__.py re-exports it
    from adjoint._argmin import solve_argmin


@dataclass(frozen=True, eq=False)
class Ridge(ArgminData):
    """A ridge-regression hyper-parameter problem (see the module docstring).

    Attributes
    ----------
    A, b : training data, shapes (m, n) and (m,)
    A_val, b_val : validation data, shapes (m_v, n) and (m_v,)
    energy, loss : plain functions ``(x, theta) -> float``
    energy_grad, energy_hvp, energy_mixed_vjp, loss_grad : numba-compiled hand-written derivatives
        in the conventions of :func:`adjoint.solve_argmin`.
    """

    A: np.ndarray
    b: np.ndarray
    A_val: np.ndarray
    b_val: np.ndarray
    energy: object = field(repr=False)
    loss: object = field(repr=False)
    energy_grad: object = field(repr=False)
    energy_hvp: object = field(repr=False)
    energy_mixed_vjp: object = field(repr=False)
    loss_grad: object = field(repr=False)

    def hessian(self, theta) -> np.ndarray:
        """``d2E/dx2 = A^T A / m + exp(theta) I``, shape (n, n)."""
        lam = float(np.exp(np.ravel(theta)[0]))
        return self.A.T @ self.A / self.A.shape[0] + lam * np.eye(self.n)

    def closed_form_x(self, theta) -> np.ndarray:
        """The ridge solution ``x(theta)``, shape (n,)."""
        return np.linalg.solve(self.hessian(theta), self.A.T @ self.b / self.A.shape[0])

    def closed_form_value(self, theta) -> float:
        """Validation error ``L(x(theta))``."""
        r = self.A_val @ self.closed_form_x(theta) - self.b_val
        return float(0.5 * r @ r / self.A_val.shape[0])

    def closed_form_grad(self, theta) -> np.ndarray:
        """The hyper-gradient ``d L(x(theta)) / d theta``, shape (1,)."""
        lam = float(np.exp(np.ravel(theta)[0]))
        H = self.hessian(theta)
        x = np.linalg.solve(H, self.A.T @ self.b / self.A.shape[0])
        gL = self.A_val.T @ (self.A_val @ x - self.b_val) / self.A_val.shape[0]
        return np.array([-lam * gL @ np.linalg.solve(H, x)])

    def step_bounds(self, theta):
        """``(mu, L)``: smallest and largest eigenvalue of the Hessian (gradient-descent rates)."""
        ev = np.linalg.eigvalsh(self.hessian(theta))
        return float(ev[0]), float(ev[-1])


def make_data(n_features=20, n_train=40, n_val=40, noise=0.5, seed=0):
    """Synthetic linear-model data ``(A, b, A_val, b_val)`` with a fixed seed."""
    rng = np.random.default_rng(seed)
    x_true = rng.standard_normal(n_features)
    A = rng.standard_normal((n_train + n_val, n_features))
    b = A @ x_true + noise * np.sqrt(n_features) * rng.standard_normal(n_train + n_val)
    return (
        np.ascontiguousarray(A[:n_train]),
        np.ascontiguousarray(b[:n_train]),
        np.ascontiguousarray(A[n_train:]),
        np.ascontiguousarray(b[n_train:]),
    )


def make_problem(n_features=20, n_train=40, n_val=40, noise=0.5, seed=0) -> Ridge:
    """A :class:`Ridge` problem on synthetic data (the data are compiled in as constants)."""
    A, b, Av, bv = make_data(n_features, n_train, n_val, noise, seed)
    m, mv, n = A.shape[0], Av.shape[0], A.shape[1]

    def energy(x, theta):
        r = A @ x - b
        return 0.5 * (r @ r) / m + 0.5 * np.exp(theta[0]) * (x @ x)

    def loss(x, theta):
        r = Av @ x - bv
        return 0.5 * (r @ r) / mv

    @numba.njit
    def energy_grad(x, theta, out):
        lam = np.exp(theta[0])
        for j in range(n):
            out[j] = lam * x[j]
        for i in range(m):
            r = -b[i]
            for j in range(n):
                r += A[i, j] * x[j]
            for j in range(n):
                out[j] += A[i, j] * r / m

    @numba.njit
    def energy_hvp(x, theta, v, out):
        lam = np.exp(theta[0])
        for j in range(n):
            out[j] = lam * v[j]
        for i in range(m):
            r = 0.0
            for j in range(n):
                r += A[i, j] * v[j]
            for j in range(n):
                out[j] += A[i, j] * r / m

    @numba.njit
    def energy_mixed_vjp(x, theta, w, out):
        s = 0.0
        for i in range(x.shape[0]):
            s += x[i] * w[i]
        out[0] = np.exp(theta[0]) * s

    @numba.njit
    def loss_grad(x, theta, out_x, out_theta):
        for j in range(n):
            out_x[j] = 0.0
        for i in range(mv):
            r = -bv[i]
            for j in range(n):
                r += Av[i, j] * x[j]
            for j in range(n):
                out_x[j] += Av[i, j] * r / mv
        out_theta[0] = 0.0

    return Ridge(A, b, Av, bv, energy, loss, energy_grad, energy_hvp, energy_mixed_vjp, loss_grad)


def solve(output_dir="out", max_iter=100, verbose=True, problem: Ridge | None = None, theta0=0.0):
    """Tune ``theta = log lambda`` with L-BFGS-B on the implicit hyper-gradient; save a PNG and JSON.

    Prints one line per iteration when ``verbose``, saves ``ridge.png`` (validation error, implicit
    and closed-form hyper-gradients over a range of ``lambda``, objective history) and ``ridge.json``
    into ``output_dir`` and returns their :class:`~adjoint.cli.ProblemResult` (in its ``summary``,
    ``"theta"`` is the best ``log lambda``). There are no time steps, so no ``steps`` or ``method`` options.
    """
    from . import _common

    prob = make_problem() if problem is None else problem
    kw = prob.derivatives()
    x0 = np.zeros(prob.n)

    def fun(th):
        r = solve_argmin(prob.energy, prob.loss, th, x0, **kw)
        return r.value, r.grad

    best, hist = _common.lbfgs(
        _common.Counted(fun),
        np.atleast_1d(float(theta0)),
        max_iter=max_iter,
        verbose=verbose,
        gtol=1e-5,
        ftol=2.220446049250313e-09,
    )  # scipy's defaults, as before
    theta = float(best.x[0])
    grad_cf = float(prob.closed_form_grad([theta])[0])
    if verbose:
        print(f"  best log lambda {theta:.6f}   closed-form dL/dtheta there {grad_cf:.2e}")
    thetas = np.linspace(-6.0, 4.0, 60)
    vals = [prob.closed_form_value([t]) for t in thetas]
    g_imp = [fun(np.array([t]))[1][0] for t in thetas]
    g_cf = [prob.closed_form_grad([t])[0] for t in thetas]
    fig, (ax1, ax2, ax3) = _common.figure()
    ax1.plot(thetas, vals)
    ax1.axvline(theta, ls="--", c="k", label=f"best log lambda = {theta:.3f}")
    ax1.set_xlabel("theta = log lambda")
    ax1.set_ylabel("validation error L(x(theta))")
    ax1.set_title("validation error")
    ax1.legend()
    ax2.plot(thetas, g_cf, label="closed form")
    ax2.plot(thetas, g_imp, "o", ms=3, label="implicit (solve_argmin)")
    ax2.axhline(0.0, c="k", lw=0.5)
    ax2.set_xlabel("theta = log lambda")
    ax2.set_ylabel("dL/dtheta")
    ax2.set_title("hyper-gradient")
    ax2.legend()
    _common.history_axis(ax3, hist)
    summary = {
        "problem": "ridge",
        "objective": float(best.fun),
        "theta": theta,
        "lambda": float(np.exp(theta)),
        "theta0": float(theta0),
        "closed_form_value": prob.closed_form_value([theta]),
        "closed_form_grad": grad_cf,
        "n_features": prob.n,
        "n_train": prob.A.shape[0],
        "n_val": prob.A_val.shape[0],
        "iterations": int(best.nit),
        "message": str(best.message),
        "history": hist,
    }
    return _common.save(output_dir, "ridge", fig, summary)
