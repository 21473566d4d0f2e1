"""l2-regularised logistic regression: tuning the regularisation on a validation set.

Data: a synthetic classification set (fixed seed). Features ``a_i ~ N(0, I_n)``; labels
``y_i = sign(<a_i, x_true> / sqrt(n) + noise)`` in ``{-1, +1}``; ``n_train`` training and ``n_val``
validation rows. The hyper-parameter is ``theta = log(lambda)``.

Inner problem (regularised training loss; ``ell(z) = log(1 + exp(-z))``)::

    E(x, theta) = (1/m) sum_i ell(y_i <a_i, x>) + exp(theta) |x|^2 / 2

Outer problem (validation log-loss)::

    L(x) = (1/m_v) sum_i ell(y_i <a_i^v, x>)

Derivatives (``z_i = y_i <a_i, x>``, ``ell' = -sigma(-z)``, ``ell'' = sigma(z) sigma(-z)``)::

    grad_x E = A^T (y * ell'(z)) / m + lambda x
    [d2E/dx2] v = A^T (ell''(z) * (A v)) / m + lambda v
    [d2E/dx dtheta]^T w = lambda <x, w>

There is no closed form: the implicit hyper-gradient is checked against central differences of
the full solve (tests) and against unrolled gradient descent (``benchmarks/argmin.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numba
import numpy as np

from ._common import ArgminData

try:
    from adjoint import solve_argmin
except ImportError:  # until adjoint/__init__.py re-exports it
    from adjoint._argmin import solve_argmin


@dataclass(frozen=True, eq=False)
class Logistic(ArgminData):
    """An l2-regularised logistic-regression hyper-parameter problem (see the module docstring).

    Attributes
    ----------
    A, y : training features (m, n) and labels (m,)
    A_val, y_val : validation features and labels
    energy, loss : plain functions ``(x, theta) -> float``
    energy_grad, energy_hvp, energy_mixed_vjp, loss_grad : numba-compiled hand-written derivatives
        in the conventions of :func:`adjoint.solve_argmin`.
    """

    A: np.ndarray
    y: np.ndarray
    A_val: np.ndarray
    y_val: np.ndarray
    energy: object = field(repr=False)
    loss: object = field(repr=False)
    energy_grad: object = field(repr=False)
    energy_hvp: object = field(repr=False)
    energy_mixed_vjp: object = field(repr=False)
    loss_grad: object = field(repr=False)

    def curvature_bounds(self, theta):
        """``(mu, L)`` bounds on the Hessian's spectrum: ``lambda`` and
        ``|A|_2^2 / (4 m) + lambda`` (a safe gradient-descent step is ``1 / L``)."""
        lam = float(np.exp(np.ravel(theta)[0]))
        s = np.linalg.norm(self.A, 2)
        return lam, s * s / (4.0 * self.A.shape[0]) + lam

    def accuracy(self, x) -> float:
        """Validation accuracy of the classifier ``sign(<a, x>)``."""
        return float(np.mean(np.sign(self.A_val @ x) == self.y_val))


def make_data(n_features=20, n_train=60, n_val=60, noise=0.5, seed=0):
    """Synthetic data ``(A, y, A_val, y_val)`` (fixed seed)."""
    rng = np.random.default_rng(seed)
    x_true = rng.standard_normal(n_features)
    A = rng.standard_normal((n_train + n_val, n_features))
    y = np.sign(A @ x_true / np.sqrt(n_features) + noise * rng.standard_normal(n_train + n_val))
    y[y == 0] = 1.0
    return (
        np.ascontiguousarray(A[:n_train]),
        np.ascontiguousarray(y[:n_train]),
        np.ascontiguousarray(A[n_train:]),
        np.ascontiguousarray(y[n_train:]),
    )


@numba.njit(cache=True)
def _ell(z):
    """log(1 + exp(-z)), stable."""
    if z > 0:
        return math.log1p(math.exp(-z))
    return -z + math.log1p(math.exp(z))


@numba.njit(cache=True)
def _sigma(z):
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@numba.njit(cache=True)
def _dot_row(A, i, x):
    """<A[i], x> (a row-major loop: faster than a BLAS call on a shared machine for these sizes)."""
    s = 0.0
    for j in range(A.shape[1]):
        s += A[i, j] * x[j]
    return s


@numba.njit(cache=True)
def _axpy_row(A, i, a, out):
    """out += a A[i]."""
    for j in range(A.shape[1]):
        out[j] += a * A[i, j]


def make_problem(n_features=20, n_train=60, n_val=60, noise=0.5, seed=0) -> Logistic:
    """A :class:`Logistic` problem on synthetic data (the data are compiled in as constants)."""
    A, y, Av, yv = make_data(n_features, n_train, n_val, noise, seed)
    m, mv, n = A.shape[0], Av.shape[0], A.shape[1]

    def energy(x, theta):
        z = y * (A @ x)
        return np.mean(np.maximum(-z, 0.0) + np.log1p(np.exp(-np.abs(z)))) + 0.5 * np.exp(theta[0]) * (x @ x)

    def loss(x, theta):
        z = yv * (Av @ x)
        return np.mean(np.maximum(-z, 0.0) + np.log1p(np.exp(-np.abs(z))))

    @numba.njit
    def energy_grad(x, theta, out):
        lam = np.exp(theta[0])
        for j in range(n):
            out[j] = lam * x[j]
        for i in range(m):
            u = _dot_row(A, i, x)
            _axpy_row(A, i, -y[i] * _sigma(-y[i] * u) / m, out)

    @numba.njit
    def energy_hvp(x, theta, v, out):
        lam = np.exp(theta[0])
        for j in range(n):
            out[j] = lam * v[j]
        for i in range(m):
            s = _sigma(y[i] * _dot_row(A, i, x))
            _axpy_row(A, i, s * (1.0 - s) * _dot_row(A, i, v) / m, out)

    @numba.njit
    def energy_mixed_vjp(x, theta, w, out):
        s = 0.0
        for j in range(x.shape[0]):
            s += x[j] * w[j]
        out[0] = np.exp(theta[0]) * s

    @numba.njit
    def loss_grad(x, theta, out_x, out_theta):
        for j in range(n):
            out_x[j] = 0.0
        for i in range(mv):
            u = _dot_row(Av, i, x)
            _axpy_row(Av, i, -yv[i] * _sigma(-yv[i] * u) / mv, out_x)
        out_theta[0] = 0.0

    return Logistic(A, y, Av, yv, energy, loss, energy_grad, energy_hvp, energy_mixed_vjp, loss_grad)


def solve(output_dir="out", max_iter=100, verbose=True, problem: Logistic | None = None, theta0=0.0):
    """Tune ``theta = log lambda`` by L-BFGS-B on the implicit hyper-gradient; save a PNG and JSON.

    Prints one line per iteration when ``verbose``, saves ``logistic.png`` (validation loss over
    ``lambda`` with the optimiser's iterates, objective history) and ``logistic.json`` into
    ``output_dir`` and returns their :class:`~adjoint.cli.ProblemResult` (in its ``summary``, ``"theta"``
    is the best ``log lambda``, ``"accuracy"`` the validation accuracy there). There are no time steps, so no ``steps`` or
    ``method`` options.
    """
    from . import _common

    prob = make_problem() if problem is None else problem
    kw = prob.derivatives()
    x_warm = [np.zeros(prob.n)]
    path = []

    def fun(th):
        r = solve_argmin(prob.energy, prob.loss, th, x_warm[0], **kw)
        x_warm[0] = r.x  # warm start the next inner solve
        path.append((float(th[0]), r.value))
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
    x_best = solve_argmin(prob.energy, prob.loss, [theta], np.zeros(prob.n), **kw).x
    acc = prob.accuracy(x_best)
    if verbose:
        print(f"  best log lambda {theta:.6f}   validation accuracy {acc:.3f}")
    thetas = np.linspace(-8.0, 3.0, 45)
    vals = [solve_argmin(prob.energy, prob.loss, t, np.zeros(prob.n), **kw).value for t in thetas]
    fig, ax = _common.figure(ncols=2, width=11)
    ax[0].plot(thetas, vals, label="validation log-loss")
    pts = np.array(path)
    ax[0].plot(pts[:, 0], pts[:, 1], "o-", ms=4, label="L-BFGS-B iterates")
    ax[0].axvline(theta, ls="--", c="k", label=f"best log lambda = {theta:.3f}")
    ax[0].set_xlabel("theta = log lambda")
    ax[0].set_ylabel("L(x(theta))")
    ax[0].legend()
    _common.history_axis(ax[1], hist)
    summary = {
        "problem": "logistic",
        "objective": float(best.fun),
        "theta": theta,
        "lambda": float(np.exp(theta)),
        "theta0": float(theta0),
        "accuracy": acc,
        "n_features": prob.n,
        "n_train": prob.A.shape[0],
        "n_val": prob.A_val.shape[0],
        "iterations": int(best.nit),
        "message": str(best.message),
        "history": hist,
    }
    return _common.save(output_dir, "logistic", fig, summary)
