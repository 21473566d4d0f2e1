"""A reversible residual network (the lecture's invertible architecture) on two moons.

Each sample ``a in R^2`` starts as ``x_0 = a``, ``y_0 = 0 in R^H`` and flows through ``K`` layers
with shared weights::

    x_{k+1} = x_k + tau tanh(W1 y_k + b1)          W1: (2, H), b1: (2,)
    y_{k+1} = y_k + tau tanh(W2 x_{k+1} + b2)      W2: (H, 2), b2: (H,)

which is ``adjoint.Leapfrog`` on the separable field ``u(y) = tanh(W1 y + b1)``,
``v(x) = tanh(W2 x + b2)``: every layer is exactly invertible, so ``adjoint.Reversible()`` trains
it with memory independent of the depth. A logistic classifier ``w . (x_K, y_K) + c`` reads the
final state; the loss is the mean logistic loss plus ``0.5 * 1e-4 |theta|^2``.

The batch of N samples is one state: ``x`` stacks the N inputs (``x_dim = 2N``), ``y`` the N hidden
parts (``y_dim = H N``); ``params`` is ``theta = (W1, b1, W2, b2, w, c)`` flattened
(:func:`unpack`). Data: :func:`two_moons` (generated in code, fixed seed).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from numba import njit

import adjoint
from adjoint._separable import SeparableDynamics
from adjoint.integrators import Leapfrog

T_END = 2.0
REG = 1e-4


def two_moons(n: int = 200, noise: float = 0.1, seed: int = 0):
    """Two interleaved half circles in the plane; labels in {-1, +1}. Returns ``(points, labels)``."""
    rng = np.random.default_rng(seed)
    n1 = n // 2
    n2 = n - n1
    t1 = np.pi * rng.random(n1)
    t2 = np.pi * rng.random(n2)
    a = np.stack([np.cos(t1), np.sin(t1)], axis=1)
    b = np.stack([1.0 - np.cos(t2), 0.5 - np.sin(t2)], axis=1)
    pts = np.concatenate([a, b]) + noise * rng.standard_normal((n, 2))
    pts = (pts - np.array([0.5, 0.25])) / np.array([1.0, 0.5])  # centred, unit-ish scale
    labels = np.concatenate([np.ones(n1), -np.ones(n2)])
    return pts, labels


def param_dim(hidden: int) -> int:
    return 2 * hidden + 2 + 2 * hidden + hidden + (2 + hidden) + 1


def unpack(theta, hidden: int):
    """``theta -> (W1 (2, H), b1 (2,), W2 (H, 2), b2 (H,), w (2 + H,), c)``."""
    H = hidden
    i = 0
    W1 = theta[i : i + 2 * H].reshape(2, H)
    i += 2 * H
    b1 = theta[i : i + 2]
    i += 2
    W2 = theta[i : i + 2 * H].reshape(H, 2)
    i += 2 * H
    b2 = theta[i : i + H]
    i += H
    w = theta[i : i + 2 + H]
    i += 2 + H
    return W1, b1, W2, b2, w, theta[i]


@lru_cache(maxsize=None)
def _fields(H: int):
    """Compiled u, vjp_u, v, vjp_v for hidden width H (any batch size)."""
    oW1, ob1, oW2, ob2 = 0, 2 * H, 2 * H + 2, 4 * H + 2

    @njit(cache=True)
    def u(y, c, p, t, out):  # x' = tanh(W1 y_i + b1) for each sample i
        N = y.shape[0] // H
        for i in range(N):
            for a in range(2):
                acc = p[ob1 + a]
                for j in range(H):
                    acc += p[oW1 + a * H + j] * y[i * H + j]
                out[2 * i + a] = np.tanh(acc)

    @njit(cache=True)
    def vjp_u(y, c, p, t, z, out_y, out_c, out_p):
        N = y.shape[0] // H
        for k in range(out_p.shape[0]):
            out_p[k] = 0.0
        for k in range(out_y.shape[0]):
            out_y[k] = 0.0
        for i in range(N):
            for a in range(2):
                acc = p[ob1 + a]
                for j in range(H):
                    acc += p[oW1 + a * H + j] * y[i * H + j]
                th = np.tanh(acc)
                g = (1.0 - th * th) * z[2 * i + a]
                out_p[ob1 + a] += g
                for j in range(H):
                    out_p[oW1 + a * H + j] += g * y[i * H + j]
                    out_y[i * H + j] += g * p[oW1 + a * H + j]

    @njit(cache=True)
    def v(x, c, p, t, out):  # y' = tanh(W2 x_i + b2)
        N = x.shape[0] // 2
        for i in range(N):
            for j in range(H):
                acc = p[ob2 + j] + p[oW2 + 2 * j] * x[2 * i] + p[oW2 + 2 * j + 1] * x[2 * i + 1]
                out[i * H + j] = np.tanh(acc)

    @njit(cache=True)
    def vjp_v(x, c, p, t, z, out_x, out_c, out_p):
        N = x.shape[0] // 2
        for k in range(out_p.shape[0]):
            out_p[k] = 0.0
        for k in range(out_x.shape[0]):
            out_x[k] = 0.0
        for i in range(N):
            for j in range(H):
                acc = p[ob2 + j] + p[oW2 + 2 * j] * x[2 * i] + p[oW2 + 2 * j + 1] * x[2 * i + 1]
                th = np.tanh(acc)
                g = (1.0 - th * th) * z[i * H + j]
                out_p[ob2 + j] += g
                out_p[oW2 + 2 * j] += g * x[2 * i]
                out_p[oW2 + 2 * j + 1] += g * x[2 * i + 1]
                out_x[2 * i] += g * p[oW2 + 2 * j]
                out_x[2 * i + 1] += g * p[oW2 + 2 * j + 1]

    return u, vjp_u, v, vjp_v


@lru_cache(maxsize=None)
def _loss(H: int):
    """Compiled mean logistic loss of ``w . (x_i, y_i) + c`` (labels passed in ``p`` after theta)."""
    ow = 5 * H + 2
    oc = ow + 2 + H
    ol = oc + 1  # labels follow theta in the parameter vector (their gradient is never used)

    @njit(cache=True)
    def value(s, c, p, t):
        N = p.shape[0] - ol
        tot = 0.0
        for i in range(N):
            m = p[oc] + p[ow] * s[2 * i] + p[ow + 1] * s[2 * i + 1]
            for j in range(H):
                m += p[ow + 2 + j] * s[2 * N + i * H + j]
            m *= p[ol + i]
            tot += np.log1p(np.exp(-abs(m))) + max(-m, 0.0)  # log(1 + exp(-m)), stable
        reg = 0.0
        for k in range(ol):
            reg += p[k] * p[k]
        return tot / N + 0.5 * REG * reg

    @njit(cache=True)
    def grad(s, c, p, t, out_s, out_c, out_p):
        N = p.shape[0] - ol
        for k in range(out_p.shape[0]):
            out_p[k] = REG * p[k] if k < ol else 0.0
        for i in range(N):
            m = p[oc] + p[ow] * s[2 * i] + p[ow + 1] * s[2 * i + 1]
            for j in range(H):
                m += p[ow + 2 + j] * s[2 * N + i * H + j]
            lab = p[ol + i]
            # d/dm log(1 + exp(-lab m)) = -lab sigmoid(-lab m)
            e = np.exp(-abs(lab * m))
            sig = e / (1.0 + e) if lab * m >= 0.0 else 1.0 / (1.0 + e)
            g = -lab * sig / N
            out_s[2 * i] = g * p[ow]
            out_s[2 * i + 1] = g * p[ow + 1]
            for j in range(H):
                out_s[2 * N + i * H + j] = g * p[ow + 2 + j]
            out_p[oc] += g
            out_p[ow] += g * s[2 * i]
            out_p[ow + 1] += g * s[2 * i + 1]
            for j in range(H):
                out_p[ow + 2 + j] += g * s[2 * N + i * H + j]
        for k in range(ol, out_p.shape[0]):
            out_p[k] = 0.0  # labels are data

    return value, grad


@lru_cache(maxsize=None)
def _dynamics(H: int, n_samples: int) -> SeparableDynamics:
    u, vjp_u, v, vjp_v = _fields(H)
    return SeparableDynamics(
        u, vjp_u, v, vjp_v, x_dim=2 * n_samples, y_dim=H * n_samples, param_dim=param_dim(H) + n_samples, name="revnet"
    )


def make_problem(points=None, labels=None, steps: int = 20, hidden: int = 4, t_end: float = T_END):
    """The training problem; call ``solve_adjoint(prob, params=with_labels(theta, labels))``.

    Returns ``(problem, labels)``. ``params`` carries ``theta`` followed by the labels (data, whose
    gradient entries are zero), so one compiled problem serves any labels of the same batch size.
    """
    if points is None:
        points, labels = two_moons()
    points = np.asarray(points, dtype=float)
    N = points.shape[0]
    s0 = np.concatenate([points.ravel(), np.zeros(hidden * N)])
    value, grad = _loss(hidden)
    prob = adjoint.ControlProblem(
        _dynamics(hidden, N),
        s0,
        (0.0, t_end),
        steps,
        terminal_cost=adjoint.Cost(value, grad, name="logistic"),
        name="revnet",
    )
    return prob, np.asarray(labels, dtype=float)


def with_labels(theta, labels):
    return np.concatenate([np.asarray(theta, dtype=float), labels])


def initial_params(hidden: int = 4, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 0.5 * rng.standard_normal(param_dim(hidden))


def predict(theta, points, hidden: int = 4, steps: int = 20, t_end: float = T_END):
    """Classifier margin ``w . (x_K, y_K) + c`` by an independent numpy leapfrog loop."""
    W1, b1, W2, b2, w, c = unpack(np.asarray(theta, dtype=float), hidden)
    tau = t_end / steps
    x = np.asarray(points, dtype=float).copy()
    y = np.zeros((x.shape[0], hidden))
    for _ in range(steps):
        x = x + tau * np.tanh(y @ W1.T + b1)
        y = y + tau * np.tanh(x @ W2.T + b2)
    return np.concatenate([x, y], axis=1) @ w + c


def _train(steps, hidden, checkpoint, max_iter, seed, verbose):
    """L-BFGS-B on two moons via ``_common.lbfgs``; returns ``(theta, result, accuracy, data, history)``."""
    from adjoint.checkpointing._reversible import Reversible

    from . import _common

    points, labels = two_moons()
    prob, labels = make_problem(points, labels, steps=steps, hidden=hidden)
    checkpoint = Reversible() if checkpoint is None else checkpoint
    npar = param_dim(hidden)

    def fun(theta):
        res = adjoint.solve_adjoint(prob, params=with_labels(theta, labels), method=Leapfrog(), checkpoint=checkpoint)
        return res.value, res.grad.params[:npar].copy()

    # scipy's default L-BFGS-B tolerances (a tighter fit does not change the boundary)
    opt, hist = _common.lbfgs(
        _common.Counted(fun),
        initial_params(hidden, seed),
        max_iter=max_iter,
        verbose=verbose,
        gtol=1e-5,
        ftol=2.220446049250313e-09,
    )
    acc = float(np.mean(np.sign(predict(opt.x, points, hidden, steps)) == labels))
    return opt.x, opt, acc, (points, labels), hist


def train(steps: int = 20, hidden: int = 4, checkpoint=None, max_iter: int = 300, seed: int = 1, verbose: bool = False):
    """Train with L-BFGS-B. Returns ``(theta, scipy_result, accuracy, (points, labels))``."""
    theta, opt, acc, data, _ = _train(steps, hidden, checkpoint, max_iter, seed, verbose)
    return theta, opt, acc, data


def solve(output_dir="out", steps=None, max_iter=300, verbose=True, hidden=4, checkpoint=None, seed=1):
    """Train on two moons (``steps`` layers, reversible adjoint by default) and save the decision boundary.

    Prints one line per L-BFGS-B iteration when ``verbose``, saves ``revnet.png`` (decision boundary,
    objective history) and ``revnet.json`` into ``output_dir`` and returns their
    :class:`~adjoint.cli.ProblemResult` (its ``summary`` has the training ``"accuracy"`` and the
    trained ``"theta"``). The architecture is the leapfrog step, so there is no ``method`` option.
    """
    from . import _common

    steps = 20 if steps is None else steps
    theta, opt, acc, (points, labels), hist = _train(steps, hidden, checkpoint, max_iter, seed, verbose)
    if verbose:
        print(f"  training accuracy {acc:.3f}")
    lo, hi = points.min(axis=0) - 0.5, points.max(axis=0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.stack([gx.ravel(), gy.ravel()], axis=1)
    margin = predict(theta, grid, hidden, steps).reshape(gx.shape)
    fig, ax = _common.figure(ncols=2, width=11, height=4.5)
    ax[0].contourf(gx, gy, margin, levels=[-1e9, 0, 1e9], colors=["#f4b6b6", "#b6c8f4"], alpha=0.7)
    ax[0].contour(gx, gy, margin, levels=[0], colors="k", linewidths=1)
    ax[0].scatter(points[labels > 0, 0], points[labels > 0, 1], s=10, c="b", label="+1")
    ax[0].scatter(points[labels < 0, 0], points[labels < 0, 1], s=10, c="r", label="-1")
    ax[0].set_title(f"reversible ResNet, {steps} layers, H={hidden}: accuracy {acc:.1%}")
    ax[0].legend(fontsize=8)
    _common.history_axis(ax[1], hist)
    summary = {
        "problem": "revnet",
        "layers": steps,
        "steps": steps,
        "hidden": hidden,
        "checkpoint": repr(checkpoint) if checkpoint is not None else "Reversible()",
        "objective": float(opt.fun),
        "accuracy": acc,
        "theta": theta,
        "iterations": int(opt.nit),
        "message": str(opt.message),
        "history": hist,
    }
    return _common.save(output_dir, "revnet", fig, summary)


if __name__ == "__main__":  # pragma: no cover
    s = solve()
    r = s.summary
    print(f"accuracy {r['accuracy']:.3f}, loss {r['objective']:.4f}, iterations {r['iterations']}, saved {s.figure}")
