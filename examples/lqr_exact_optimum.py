"""LQR: L-BFGS-B with adjoint gradients reaches the exact discrete optimum (dense solve)."""

import numpy as np
from scipy.optimize import minimize

from adjoint.problems import lqr

steps = 100
prob = lqr.make_problem(steps)
fun = prob.objective(wrt="controls", controls=np.zeros((steps, 1)))
res = minimize(fun, fun.initial(), jac=True, method="L-BFGS-B", options={"gtol": 1e-12, "ftol": 1e-15})
c_opt, j_opt = lqr.exact_optimum(steps)
print(f"L-BFGS-B: J = {res.fun:.12f}   exact: J* = {j_opt:.12f}   relative gap {abs(res.fun - j_opt) / j_opt:.1e}")
print(f"max |u - u*| = {np.max(np.abs(fun.unpack(res.x)['controls'] - c_opt)):.2e}")
