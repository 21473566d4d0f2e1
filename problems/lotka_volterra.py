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


def _make_data(seed=0):
    # fine RK4 reference of the true model
    n = 20000
    h = T_END / n
    x = TRUE_X0.copy()
    ts = np.linspace(0.0, T_END, N_OBS)
    obs = np.empty((N_OBS, 2))
    obs[0] = x
    every = n // (N_OBS - 1)
    out = np.empty(2)

    def u(y):
        f(y, np.zeros(0), TRUE_PARAMS, 0.0, out)
        return out.copy()

    for k in range(n):
        k1 = u(x); k2 = u(x + 0.5 * h * k1); k3 = u(x + 0.5 * h * k2); k4 = u(x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if (k + 1) % every == 0:
            obs[(k + 1) // every] = x
    rng = np.random.default_rng(seed)
    return ts, obs * np.exp(0.05 * rng.standard_normal(obs.shape))


T_OBS, Y_OBS = _make_data()


@njit(cache=True)
def observation(t):
    """Piecewise-linear interpolation of the observations at time t."""
    j = int((t - T_OBS[0]) / (T_OBS[1] - T_OBS[0]))
    if j < 0:
        j = 0
    if j > T_OBS.shape[0] - 2:
        j = T_OBS.shape[0] - 2
    w = (t - T_OBS[j]) / (T_OBS[j + 1] - T_OBS[j])
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
RUNNING = adjoint.Cost(running_value, running_grad, name="misfit")
TERMINAL = adjoint.Cost(terminal_value, terminal_grad, name="final_misfit")


def make_problem(steps: int = 2000, x0=None) -> adjoint.ControlProblem:
    """The fitting problem on ``steps`` steps over ``[0, T_END]``; unknowns are ``params`` (and x0)."""
    return adjoint.ControlProblem(DYNAMICS, Y_OBS[0] if x0 is None else x0, (0.0, T_END), steps,
                                  terminal_cost=TERMINAL, running_cost=RUNNING, name="lotka_volterra")


def initial_guess() -> np.ndarray:
    return np.array([0.8, 0.3, 0.5, 1.0])
