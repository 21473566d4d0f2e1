"""Robot arm (COPS 3.0): move a rotating arm between two positions at rest in minimum time.

COPS 3.0 problem 8 (Dolan, More and Munson, 2004): the arm's length ``rho``, its horizontal and
vertical angles ``theta`` and ``phi``; controls ``|u_rho|, |u_theta|, |u_phi| <= 1``::

    L rho'' = u_rho,   I_theta theta'' = u_theta,   I_phi phi'' = u_phi,
    I_phi = ((L - rho)^3 + rho^3) / 3,   I_theta = I_phi sin(phi)^2,   L = 5,

from ``(rho, theta, phi) = (4.5, 0, pi/4)`` at rest to ``(4.5, 2 pi/3, pi/4)`` at rest; minimise
the final time. COPS reports ``T* = 9.14101``; on the explicit-Euler grid 9.14066 (100 steps) and
9.14083 (200) measured here (IPOPT, 19-20 iterations).
"""

from __future__ import annotations

import numpy as np

import adjoint

L = 5.0
X0 = np.array([4.5, 0.0, 0.0, 0.0, np.pi / 4, 0.0])
X_FINAL = np.array([4.5, 0.0, 2 * np.pi / 3, 0.0, np.pi / 4, 0.0])
COPS_TIME = 9.14101


def dynamics(x, c, p, t):
    rho, phi = x[0], x[4]
    inertia = ((L - rho) ** 3 + rho**3) / 3.0
    return np.array([x[1], c[0] / L, x[3], c[1] / (inertia * np.sin(phi) ** 2), x[5], c[2] / inertia])


def make_problem(steps: int = 200) -> adjoint.ControlProblem:
    """Minimum time on ``steps`` steps (final-time guess 9, bounds 1 .. 20)."""
    return adjoint.ControlProblem(
        dynamics,
        X0,
        (0.0, adjoint.Free(9.0, lower=1.0, upper=20.0)),
        steps,
        running_cost=lambda x, c, p, t: 1.0,  # J = T
        control_dim=3,
        constraints=[adjoint.Terminal(lambda x, p: x - X_FINAL, name="final_position_at_rest")],
        name="robot_arm",
    )


def solve(output_dir="out", steps=None, max_iter=500, verbose=True, solver=None):
    """Solve from zero controls (IPOPT when CasADi is installed, else SLSQP); writes ``robot_arm.png`` /
    ``robot_arm.json``."""
    from . import _common

    steps = 200 if steps is None else steps
    if solver is None:
        import importlib.util

        solver = "ipopt" if importlib.util.find_spec("casadi") else "slsqp"
    _, result = _common.solve_ocp_and_save(
        "robot_arm", make_problem(steps), np.zeros((steps, 3)), output_dir=output_dir, solver=solver,
        max_iter=max_iter, verbose=verbose, bounds={"controls": (-1.0, 1.0)},
        state_labels=("rho", "rho'", "theta", "theta'", "phi", "phi'"), control_labels=("u_rho", "u_theta", "u_phi"),
        reference=("final_time", COPS_TIME), reference_label="COPS 3.0 T*",
    )  # fmt: skip
    return result
