"""Pendulum swing-up with 200 bounded per-step torques, from Python (what `python -m adjoint solve
pendulum` does). Saves pendulum_swingup.png next to this script (or into the folder given)."""

import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

import adjoint  # noqa: E402
from adjoint.problems import pendulum  # noqa: E402

steps = 200
prob = pendulum.make_problem(steps)
fun = prob.objective(wrt="controls", controls=pendulum.initial_guess(steps))  # fun(v) -> (J, dJ/dv)
res = minimize(
    fun,
    fun.initial(),
    jac=True,
    method="L-BFGS-B",
    bounds=fun.bounds(controls=(-pendulum.U_MAX, pendulum.U_MAX)),
    options={"maxiter": 500, "gtol": 1e-9, "ftol": 1e-13, "maxcor": 20},
)
torque = fun.unpack(res.x)["controls"]
sol = adjoint.solve_adjoint(prob, controls=torque, return_trajectory=True)
print(f"J = {res.fun:.6f} after {res.nit} iterations; final state {sol.x_final}")

fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
ax[0].plot(sol.times, sol.trajectory[:, 0], label="theta")
ax[0].plot(sol.times, sol.trajectory[:, 1], label="omega")
ax[0].axhline(np.pi, color="k", lw=0.5, ls="--")
ax[0].legend()
ax[1].step(sol.times[:-1], torque[:, 0], where="post")
ax[1].set_title("torque")
out = sys.argv[1] if len(sys.argv) > 1 else os.path.dirname(os.path.abspath(__file__))
fig.savefig(os.path.join(out, "pendulum_swingup.png"), dpi=100, bbox_inches="tight")
