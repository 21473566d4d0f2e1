"""Lotka-Volterra parameter fitting to noisy synthetic observations.

Model (predator-prey), state ``x = (prey, predator)``, parameters ``p = (a, b, d, g)``::

    prey'     = a * prey - b * prey * predator
    predator' = d * prey * predator - g * predator

Data: the true model (``TRUE_PARAMS``, ``TRUE_X0``) is integrated finely on ``[0, T_END]`` and
observed at ``N_OBS`` equally spaced times with 5% multiplicative log-normal noise (fixed seed).

Loss (a documented equivalent of a sum over observation times): the observations are joined by
linear interpolation ``y(t)`` and the fit minimises the time-averaged squared misfit::

    J(p, x0) = tau * sum_k 0.5 |x_k - y(t_k)|^2 / T_END  +  0.5 |x_K - y(T_END)|^2

so every step contributes, and the minimiser approaches the true parameters as the noise shrinks.
"""

from __future__ import annotations

import numpy as np
from numba import njit

import adjoint

TRUE_PARAMS = np.array([1.0, 0.4, 0.4, 0.8])
TRUE_X0 = np.array([1.0, 1.0])
T_END = 10.0
N_OBS = 21


@njit(cache=True)
def f(x, c, p, t, out):
    out[0] = p[0] * x[0] - p[1] * x[0] * x[1]
    out[1] = p[2] * x[0] * x[1] - p[3] * x[1]


@njit(cache=True)
def vjp(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = (p[0] - p[1] * x[1]) * z[0] + p[2] * x[1] * z[1]
    out_x[1] = -p[1] * x[0] * z[0] + (p[2] * x[0] - p[3]) * z[1]
    out_p[0] = x[0] * z[0]
    out_p[1] = -x[0] * x[1] * z[0]
    out_p[2] = x[0] * x[1] * z[1]
    out_p[3] = -x[1] * z[1]


def _fine_rk4(x0, p, h, n, every, n_obs):
    """Fine classical RK4 of the true model, sampled every ``every`` steps, on Python floats (the
    same float64 operations as ``f``; no compilation at import, ~0.1 s)."""
    a, b, d, g = (float(v) for v in p)

    def u(x, y):
        return a * x - b * x * y, d * x * y - g * y

    obs = np.empty((n_obs, 2))
    x, y = float(x0[0]), float(x0[1])
    obs[0] = x, y
    w = h / 6
    for k in range(n):
        k1 = u(x, y)
        k2 = u(x + 0.5 * h * k1[0], y + 0.5 * h * k1[1])
        k3 = u(x + 0.5 * h * k2[0], y + 0.5 * h * k2[1])
        k4 = u(x + h * k3[0], y + h * k3[1])
        x = x + w * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        y = y + w * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        if (k + 1) % every == 0:
            obs[(k + 1) // every] = x, y
    return obs


def _make_data(seed=0):
    n = 20000
    ts = np.linspace(0.0, T_END, N_OBS)
    obs = _fine_rk4(TRUE_X0, TRUE_PARAMS, T_END / n, n, n // (N_OBS - 1), N_OBS)
    rng = np.random.default_rng(seed)
    return ts, obs * np.exp(0.05 * rng.standard_normal(obs.shape))


T_OBS, Y_OBS = _make_data()


# The observation grid is uniform with spacing T_END / (N_OBS - 1) = 0.5, a power of two, so the
# interpolation below multiplies by the reciprocal spacing: bitwise the same as dividing by the
# spacing, without two divisions per call (division-throughput bound: 3.6 ns a call here, about a
# third of the whole Lotka-Volterra gradient step). Checked in tests/test_problems_vjp.py.
_DT = T_END / (N_OBS - 1)
_INV_DT = 1.0 / _DT
assert _DT == 0.5 and np.all(np.diff(T_OBS) == _DT), "observation() assumes a uniform grid of spacing 0.5"


@njit(cache=True, inline="always")
def observation(t):
    """Piecewise-linear interpolation of the observations at time t (the first and last pieces
    extend linearly beyond the grid)."""
    j = int((t - T_OBS[0]) * _INV_DT)
    if j < 0:
        j = 0
    if j > T_OBS.shape[0] - 2:
        j = T_OBS.shape[0] - 2
    w = (t - T_OBS[j]) * _INV_DT
    return (1.0 - w) * Y_OBS[j, 0] + w * Y_OBS[j + 1, 0], (1.0 - w) * Y_OBS[j, 1] + w * Y_OBS[j + 1, 1]


@njit(cache=True)
def running_value(x, c, p, t):
    y0, y1 = observation(t)
    return 0.5 * ((x[0] - y0) ** 2 + (x[1] - y1) ** 2) / T_END


@njit(cache=True)
def running_grad(x, c, p, t, out_x, out_c, out_p):
    y0, y1 = observation(t)
    out_x[0] = (x[0] - y0) / T_END
    out_x[1] = (x[1] - y1) / T_END
    for i in range(out_p.shape[0]):
        out_p[i] = 0.0


@njit(cache=True)
def running_value_and_grad(x, c, p, t, out_x, out_c, out_p):
    """Both of the above with one interpolation (the backward sweep calls this once per step)."""
    y0, y1 = observation(t)
    out_x[0] = (x[0] - y0) / T_END
    out_x[1] = (x[1] - y1) / T_END
    if out_p.shape[0] == 4:  # the model's four parameters: straight-line code (measured 2x faster here)
        out_p[0] = 0.0
        out_p[1] = 0.0
        out_p[2] = 0.0
        out_p[3] = 0.0
    else:
        out_p[:] = 0.0
    return 0.5 * ((x[0] - y0) ** 2 + (x[1] - y1) ** 2) / T_END


@njit(cache=True)
def terminal_value(x, c, p, t):
    y0, y1 = Y_OBS[-1, 0], Y_OBS[-1, 1]
    return 0.5 * ((x[0] - y0) ** 2 + (x[1] - y1) ** 2)


@njit(cache=True)
def terminal_grad(x, c, p, t, out_x, out_c, out_p):
    out_x[0] = x[0] - Y_OBS[-1, 0]
    out_x[1] = x[1] - Y_OBS[-1, 1]
    for i in range(out_p.shape[0]):
        out_p[i] = 0.0


DYNAMICS = adjoint.Dynamics(f, vjp, state_dim=2, param_dim=4, name="lotka_volterra")
RUNNING = adjoint.Cost(running_value, running_grad, value_and_grad=running_value_and_grad, name="misfit")
TERMINAL = adjoint.Cost(terminal_value, terminal_grad, name="final_misfit")


def make_problem(steps: int = 2000, x0=None) -> adjoint.ControlProblem:
    """The fitting problem on ``steps`` steps over ``[0, T_END]``; unknowns are ``params`` (and x0)."""
    return adjoint.ControlProblem(
        DYNAMICS,
        Y_OBS[0] if x0 is None else x0,
        (0.0, T_END),
        steps,
        terminal_cost=TERMINAL,
        running_cost=RUNNING,
        name="lotka_volterra",
    )


def initial_guess() -> np.ndarray:
    return np.array([0.8, 0.3, 0.5, 1.0])


def solve(output_dir="out", steps=None, method=None, max_iter=200, verbose=True):
    """Fit the four parameters and the initial state with L-BFGS-B; save a PNG and JSON.

    Writes ``lotka_volterra.png`` and ``lotka_volterra.json`` into ``output_dir``; returns their
    :class:`~adjoint.cli.ProblemResult`.
    """
    from . import _common

    steps = 2000 if steps is None else steps
    method = _common.method_from_name(method) or adjoint.RK4()
    prob = make_problem(steps)
    fun = prob.objective(wrt=("params", "x0"), params=initial_guess(), method=method)
    res, hist = _common.lbfgs(
        fun, fun.initial(), bounds=fun.bounds(params=(1e-3, 10.0), x0=(1e-3, 10.0)), max_iter=max_iter, verbose=verbose
    )
    fit = fun.unpack(res.x)
    _, traj = adjoint.simulate(prob, params=fit["params"], x0=fit["x0"], method=method)
    if verbose:
        print(f"  fitted params {np.round(fit['params'], 4)}   true {TRUE_PARAMS}")
    t = prob.times
    fig, ax = _common.figure()
    ax[0].plot(T_OBS, Y_OBS[:, 0], "o", color="C0", label="prey (data)")
    ax[0].plot(T_OBS, Y_OBS[:, 1], "s", color="C1", label="predator (data)")
    ax[0].plot(t, traj[:, 0], color="C0")
    ax[0].plot(t, traj[:, 1], color="C1")
    ax[0].set_xlabel("t")
    ax[0].set_title("fit")
    ax[0].legend(fontsize=8)
    idx = np.arange(4)
    ax[1].bar(idx - 0.2, TRUE_PARAMS, 0.4, label="true")
    ax[1].bar(idx + 0.2, fit["params"], 0.4, label="fitted")
    ax[1].set_xticks(idx, ["a", "b", "d", "g"])
    ax[1].set_title("parameters")
    ax[1].legend()
    _common.history_axis(ax[2], hist)
    summary = {
        "problem": "lotka_volterra",
        "steps": steps,
        "method": repr(method),
        "objective": float(res.fun),
        "params": fit["params"],
        "x0": fit["x0"],
        "true_params": TRUE_PARAMS,
        "iterations": int(res.nit),
        "history": hist,
    }
    return _common.save(output_dir, "lotka_volterra", fig, summary)
