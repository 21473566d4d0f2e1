"""Minimum-time double integrator: from (1, 0) to rest at 0 with |u| <= 1 (bang-bang, T* = 2).

State ``x = (position, velocity)``, control ``u``, ``x' = v``, ``v' = u``; free final time
``T``, ``|u| <= 1``, ``x(0) = (1, 0)``, ``x(T) = (0, 0)``, minimise ``T``. The optimum is
bang-bang (``u = -1`` then ``+1``, switching at ``T/2``) with ``T* = 2``. On the explicit-Euler
grid with an even number of steps the discrete optimum is ``T = 2`` as well: with ``u = -1`` on the
first half and ``+1`` on the second, ``x_K = 1 - tau^2 (K/2)^2 = 1 - T^2/4``.
"""

from __future__ import annotations

import numpy as np

import adjoint

X0 = np.array([1.0, 0.0])
T_STAR = 2.0


def dynamics(x, c, p, t):
    return np.array([x[1], c[0]])


def make_problem(steps: int = 200, guess: float = 4.0) -> adjoint.ControlProblem:
    """The problem on ``steps`` steps with the final-time guess ``guess`` (bounds 0.1 .. 20)."""
    return adjoint.ControlProblem(
        dynamics,
        X0,
        (0.0, adjoint.Free(guess, lower=0.1, upper=20.0)),
        steps,
        running_cost=lambda x, c, p, t: 1.0,  # J = T
        control_dim=1,
        constraints=[adjoint.Terminal(lambda x, p: x, name="at_rest_at_0")],
        name="double_integrator",
    )


def solve(output_dir="out", steps=None, max_iter=500, verbose=True, solver="slsqp"):
    """Solve from zero controls; writes ``double_integrator.png`` / ``.json``."""
    from . import _common

    steps = 200 if steps is None else steps
    _, result = _common.solve_ocp_and_save(
        "double_integrator", make_problem(steps), np.zeros((steps, 1)), output_dir=output_dir, solver=solver,
        max_iter=max_iter, verbose=verbose, bounds={"controls": (-1.0, 1.0)}, tol=1e-10,
        state_labels=("position", "velocity"), control_labels=("u",),
        reference=("final_time", T_STAR), reference_label="analytic T* = 2",
    )  # fmt: skip
    return result
