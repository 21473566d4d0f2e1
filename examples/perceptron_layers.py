"""Train a 6-layer perceptron as a discrete map: backpropagation is the discrete adjoint sweep."""

import numpy as np
from scipy.optimize import minimize

import adjoint
from adjoint.problems import perceptron as pc

prob = pc.make_problem()
fun = prob.objective(wrt="controls", controls=pc.initial_guess(), method=adjoint.DiscreteMap())
res = minimize(fun, fun.initial(), jac=True, method="L-BFGS-B", options={"maxiter": 300})
weights = fun.unpack(res.x)["controls"]  # (layers, WIDTH^2 + WIDTH): one row per layer
acc = np.mean(np.sign(pc.predict(weights, pc.POINTS)) == pc.LABELS)
print(f"loss {res.fun:.4f}, training accuracy {acc:.3f} after {res.nit} iterations")
