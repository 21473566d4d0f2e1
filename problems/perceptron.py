"""A small perceptron trained as a discrete map: backpropagation is the discrete adjoint.

Data: two interleaved half-moons in the plane (``N_SAMPLES`` points, labels ``y_i = +-1``,
generated with a fixed seed). Each sample is embedded in ``WIDTH`` dimensions as
``(u, v, 0, ..., 0)``; the state of the map is all samples stacked, ``x in R^(N_SAMPLES * WIDTH)``.

Layer k (``k = 0 .. LAYERS - 1``) applies the same affine map and activation to every sample::

    x_{k+1}^{(i)} = tanh(W_k x_k^{(i)} + b_k)

with per-layer weights ``c_k = (vec(W_k), b_k)`` as the per-step controls
(``control_dim = WIDTH^2 + WIDTH``). The loss is the mean logistic loss of the score
``s_i = SCALE * x_K^{(i)}[0]`` plus weight decay as a running cost (``tau = 1``)::

    J = mean_i log(1 + exp(-y_i s_i)) + sum_k 0.5 * DECAY * |c_k|^2
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

import adjoint

WIDTH = 4
N_SAMPLES = 80
LAYERS = 6
SCALE = 4.0
DECAY = 1e-4


def make_moons(n=N_SAMPLES, noise=0.1, seed=0):
    """Two interleaved half-moons: points (n, 2) and labels (n,) in {-1, +1}."""
    rng = np.random.default_rng(seed)
    n1 = n // 2
    a = np.pi * rng.random(n1)
    b = np.pi * rng.random(n - n1)
    upper = np.stack([np.cos(a), np.sin(a)], axis=1)
    lower = np.stack([1.0 - np.cos(b), 0.5 - np.sin(b)], axis=1)
    pts = np.concatenate([upper, lower]) + noise * rng.standard_normal((n, 2))
    pts = (pts - pts.mean(axis=0)) / pts.std(axis=0)
    labels = np.concatenate([np.ones(n1), -np.ones(n - n1)])
    return pts, labels


POINTS, LABELS = make_moons()


def embed(points):
    """Stack the points as the map's initial state (N * WIDTH,)."""
    x0 = np.zeros((points.shape[0], WIDTH))
    x0[:, :2] = points
    return x0.ravel()


@njit(cache=True)
def f(x, c, p, t, out):
    d = WIDTH
    ns = x.shape[0] // d
    for i in range(ns):
        for r in range(d):
            a = c[d * d + r]
            for q in range(d):
                a += c[r * d + q] * x[i * d + q]
            out[i * d + r] = math.tanh(a)


@njit(cache=True)
def vjp(x, c, p, t, z, out_x, out_c, out_p):
    d = WIDTH
    ns = x.shape[0] // d
    for j in range(out_c.shape[0]):
        out_c[j] = 0.0
    for i in range(ns):
        for q in range(d):
            out_x[i * d + q] = 0.0
        for r in range(d):
            a = c[d * d + r]
            for q in range(d):
                a += c[r * d + q] * x[i * d + q]
            h = math.tanh(a)
            g = z[i * d + r] * (1.0 - h * h)
            out_c[d * d + r] += g
            for q in range(d):
                out_c[r * d + q] += g * x[i * d + q]
                out_x[i * d + q] += c[r * d + q] * g


@njit(cache=True)
def decay_value(x, c, p, t):
    s = 0.0
    for j in range(c.shape[0]):
        s += c[j] * c[j]
    return 0.5 * DECAY * s


@njit(cache=True)
def decay_grad(x, c, p, t, out_x, out_c, out_p):
    for j in range(out_x.shape[0]):
        out_x[j] = 0.0
    for j in range(c.shape[0]):
        out_c[j] = DECAY * c[j]


@njit(cache=True)
def _softplus(v):
    return max(v, 0.0) + math.log1p(math.exp(-abs(v)))


@njit(cache=True)
def loss_value(x, c, p, t):
    d = WIDTH
    ns = x.shape[0] // d
    s = 0.0
    for i in range(ns):
        s += _softplus(-LABELS[i] * SCALE * x[i * d])
    return s / ns


@njit(cache=True)
def loss_grad(x, c, p, t, out_x, out_c, out_p):
    d = WIDTH
    ns = x.shape[0] // d
    for j in range(out_x.shape[0]):
        out_x[j] = 0.0
    for i in range(ns):
        m = -LABELS[i] * SCALE * x[i * d]
        sig = 1.0 / (1.0 + math.exp(-m))
        out_x[i * d] = sig * (-LABELS[i] * SCALE) / ns


DYNAMICS = adjoint.Dynamics(f, vjp, state_dim=N_SAMPLES * WIDTH, control_dim=WIDTH * WIDTH + WIDTH, name="perceptron")
LOSS = adjoint.Cost(loss_value, loss_grad, name="logistic")
DECAY_COST = adjoint.Cost(decay_value, decay_grad, name="weight_decay")


def make_problem(steps: int = LAYERS) -> adjoint.ControlProblem:
    """The training problem with ``steps`` layers (``t_span = (0, steps)`` so ``tau = 1``)."""
    return adjoint.ControlProblem(
        DYNAMICS,
        embed(POINTS),
        (0.0, float(steps)),
        steps,
        terminal_cost=LOSS,
        running_cost=DECAY_COST,
        name="perceptron",
    )


def initial_guess(steps: int = LAYERS, seed: int = 1) -> np.ndarray:
    """Near-identity layers with small random perturbations, shape (steps, WIDTH^2 + WIDTH)."""
    rng = np.random.default_rng(seed)
    c = np.zeros((steps, WIDTH * WIDTH + WIDTH))
    for k in range(steps):
        W = np.eye(WIDTH) + 0.5 * rng.standard_normal((WIDTH, WIDTH))
        c[k, : WIDTH * WIDTH] = W.ravel()
        c[k, WIDTH * WIDTH :] = 0.1 * rng.standard_normal(WIDTH)
    return c


def predict(controls, points):
    """Class scores ``SCALE * x_K[0]`` for new points (numpy forward pass)."""
    x = np.zeros((points.shape[0], WIDTH))
    x[:, :2] = points
    for ck in controls:
        W = ck[: WIDTH * WIDTH].reshape(WIDTH, WIDTH)
        x = np.tanh(x @ W.T + ck[WIDTH * WIDTH :])
    return SCALE * x[:, 0]


def solve(output_dir="out", steps=None, method=None, max_iter=1000, verbose=True):
    """Train the layer weights with L-BFGS-B; save the decision boundary and history.

    Writes ``perceptron.png`` and ``perceptron.json`` into ``output_dir``; returns their
    :class:`~adjoint.cli.ProblemResult`.
    """
    from . import _common

    steps = LAYERS if steps is None else steps
    prob = make_problem(steps)
    fun = prob.objective(wrt="controls", controls=initial_guess(steps), method=adjoint.DiscreteMap())
    res, hist = _common.lbfgs(fun, fun.initial(), max_iter=max_iter, verbose=verbose)
    ctrl = fun.unpack(res.x)["controls"]
    acc = float(np.mean(np.sign(predict(ctrl, POINTS)) == LABELS))
    if verbose:
        print(f"  training accuracy {acc:.3f}")
    fig, ax = _common.figure(ncols=2, width=10)
    g = np.linspace(-2.5, 2.5, 200)
    X, Y = np.meshgrid(g, g)
    S = predict(ctrl, np.stack([X.ravel(), Y.ravel()], axis=1)).reshape(X.shape)
    ax[0].contourf(X, Y, S, levels=20, cmap="RdBu", alpha=0.6)
    ax[0].contour(X, Y, S, levels=[0.0], colors="k")
    ax[0].scatter(POINTS[:, 0], POINTS[:, 1], c=LABELS, cmap="RdBu", edgecolors="k", s=18)
    ax[0].set_title(f"decision boundary ({steps} layers, accuracy {acc:.2f})")
    _common.history_axis(ax[1], hist)
    summary = {
        "problem": "perceptron",
        "layers": steps,
        "objective": float(res.fun),
        "accuracy": acc,
        "iterations": int(res.nit),
        "history": hist,
    }
    return _common.save(output_dir, "perceptron", fig, summary)
