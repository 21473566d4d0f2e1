"""Pendulum swing-up to exactly upright at rest, in minimum time with bounded torque (solve_ocp).

The pendulum of :mod:`adjoint.problems.pendulum` (``theta'' = -g/l sin(theta) - d theta' + u``,
``g/l = 9.81``, ``d = 0.1``) starts hanging at rest; the torque is bounded, ``|u| <= 3`` (too
weak to lift it directly: it must swing up), and the final state is exactly upright at rest,
``(theta, theta') = (pi, 0)``: a :class:`adjoint.Terminal` constraint instead of the penalty of the
L-BFGS-B version. The final time is free and minimised. The optimum is bang-bang with several
switches; on 200 explicit-Euler steps single shooting (IPOPT or SLSQP) and multiple shooting find
the same ``T = 3.75522`` (measured here).
"""

from __future__ import annotations

import numpy as np

import adjoint

from .pendulum import DAMPING, G_OVER_L, U_MAX

X0 = np.array([0.0, 0.0])
UPRIGHT = np.array([np.pi, 0.0])


def dynamics(x, c, p, t):
    return np.array([x[1], -G_OVER_L * np.sin(x[0]) - DAMPING * x[1] + c[0]])


def make_problem(steps: int = 200) -> adjoint.ControlProblem:
    """Minimum time on ``steps`` steps (final-time guess 5, bounds 0.5 .. 20)."""
    return adjoint.ControlProblem(
        dynamics,
        X0,
        (0.0, adjoint.Free(5.0, lower=0.5, upper=20.0)),
        steps,
        running_cost=lambda x, c, p, t: 1.0,  # J = T
        control_dim=1,
        constraints=[adjoint.Terminal(lambda x, p: x - UPRIGHT, name="upright_at_rest")],
        name="pendulum_min_time",
    )


def initial_guess(steps: int) -> np.ndarray:
    """A constant small torque (the solver finds the swings)."""
    return np.full((steps, 1), 0.5)


def solve(output_dir="out", steps=None, max_iter=3000, verbose=True, solver=None, segments=1):
    """Solve (IPOPT when CasADi is installed, else SLSQP); writes ``pendulum_min_time.png`` / ``.json``."""
    from . import _common

    steps = 200 if steps is None else steps
    if solver is None:
        import importlib.util

        solver = "ipopt" if importlib.util.find_spec("casadi") else "slsqp"
    _, result = _common.solve_ocp_and_save(
        "pendulum_min_time", make_problem(steps), initial_guess(steps), output_dir=output_dir, solver=solver,
        max_iter=max_iter, verbose=verbose, bounds={"controls": (-U_MAX, U_MAX)}, segments=segments, tol=1e-9,
        state_labels=("angle", "angular velocity"), control_labels=("torque",),
    )  # fmt: skip
    return result
