"""Pendulum swing-up with a per-step torque.

State ``x = (theta, omega)`` (angle from the hanging position, angular velocity), control
``c = (torque,)`` held constant over each step, no shared parameters::

    theta' = omega
    omega' = -(G / L) sin(theta) - DAMPING * omega + torque

Objective: bring the pendulum upright and at rest at ``T_END`` with little effort::

    J = 0.5 * W_FINAL * ((theta_K - pi)^2 + omega_K^2) + tau * sum_k 0.5 * R * torque_k^2

The torque is bounded, ``|torque| <= U_MAX`` (L-BFGS-B bounds), so the controller has to pump
energy by swinging back and forth.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

import adjoint

G_OVER_L = 9.81
DAMPING = 0.1
T_END = 5.0
W_FINAL = 50.0
R = 0.05
U_MAX = 3.0
X0 = np.array([0.0, 0.0])


@njit(cache=True)
def f(x, c, p, t, out):
    out[0] = x[1]
    out[1] = -G_OVER_L * np.sin(x[0]) - DAMPING * x[1] + c[0]


@njit(cache=True)
def vjp(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = -G_OVER_L * np.cos(x[0]) * z[1]
    out_x[1] = z[0] - DAMPING * z[1]
    out_c[0] = z[1]


@njit(cache=True)
def effort_value(x, c, p, t):
    return 0.5 * R * c[0] * c[0]


@njit(cache=True)
def effort_grad(x, c, p, t, out_x, out_c, out_p):
    out_x[0] = 0.0
    out_x[1] = 0.0
    out_c[0] = R * c[0]


@njit(cache=True)
def upright_value(x, c, p, t):
    return 0.5 * W_FINAL * ((x[0] - math.pi) ** 2 + x[1] ** 2)


@njit(cache=True)
def upright_grad(x, c, p, t, out_x, out_c, out_p):
    out_x[0] = W_FINAL * (x[0] - math.pi)
    out_x[1] = W_FINAL * x[1]


DYNAMICS = adjoint.Dynamics(f, vjp, state_dim=2, control_dim=1, name="pendulum")
EFFORT = adjoint.Cost(effort_value, effort_grad, name="effort")
UPRIGHT = adjoint.Cost(upright_value, upright_grad, name="upright")


def make_problem(steps: int = 200) -> adjoint.ControlProblem:
    """The swing-up problem with ``steps`` per-step torques over ``[0, T_END]``."""
    return adjoint.ControlProblem(
        DYNAMICS, X0, (0.0, T_END), steps, terminal_cost=UPRIGHT, running_cost=EFFORT, name="pendulum"
    )


def initial_guess(steps: int) -> np.ndarray:
    """A small smooth torque to break the symmetry of the hanging rest state."""
    t = np.linspace(0.0, T_END, steps, endpoint=False)
    return (0.5 * np.sin(2.0 * math.pi * t / T_END)).reshape(steps, 1)


def solve(output_dir="out", steps=None, method=None, max_iter=2000, verbose=True):
    """Optimise the torques with L-BFGS-B (bounds ``|torque| <= U_MAX``); save a PNG and JSON.

    Writes ``pendulum.png`` and ``pendulum.json`` into ``output_dir``; returns their
    :class:`~adjoint.cli.ProblemResult`.
    """
    from . import _common

    steps = 200 if steps is None else steps
    method = _common.method_from_name(method) or adjoint.Euler()
    prob = make_problem(steps)
    fun = prob.objective(wrt="controls", controls=initial_guess(steps), method=method)
    res, hist = _common.lbfgs(
        fun, fun.initial(), bounds=fun.bounds(controls=(-U_MAX, U_MAX)), max_iter=max_iter, verbose=verbose
    )
    torque = fun.unpack(res.x)["controls"]
    _, traj = adjoint.simulate(prob, controls=torque, method=method)
    t = prob.times
    fig, ax = _common.figure()
    ax[0].plot(t, traj[:, 0], label="theta")
    ax[0].plot(t, traj[:, 1], label="omega")
    ax[0].axhline(np.pi, color="k", lw=0.5, ls="--")
    ax[0].set_xlabel("t")
    ax[0].set_title("state")
    ax[0].legend()
    ax[1].step(t[:-1], torque[:, 0], where="post")
    ax[1].set_xlabel("t")
    ax[1].set_title("torque (control)")
    _common.history_axis(ax[2], hist)
    summary = {
        "problem": "pendulum",
        "steps": steps,
        "method": repr(method),
        "objective": float(res.fun),
        "final_state": traj[-1],
        "iterations": int(res.nit),
        "message": str(res.message),
        "history": hist,
    }
    return _common.save(output_dir, "pendulum", fig, summary)
