"""Fit the four Lotka-Volterra parameters and the initial state to noisy observations (RK4)."""

from scipy.optimize import minimize

import adjoint
from adjoint.problems import lotka_volterra as lv

prob = lv.make_problem(steps=2000)
fun = prob.objective(wrt=("params", "x0"), params=lv.initial_guess(), method=adjoint.RK4())
print(adjoint.check_gradient(prob, params=lv.initial_guess(), method=adjoint.RK4()))
res = minimize(fun, fun.initial(), jac=True, method="L-BFGS-B", bounds=fun.bounds(params=(1e-3, 10), x0=(1e-3, 10)))
fit = fun.unpack(res.x)
print("fitted params", fit["params"].round(4), " true", lv.TRUE_PARAMS)
print("fitted x0    ", fit["x0"].round(4), " true", lv.TRUE_X0)
