"""adjoint: exact gradients of simulations, compiled with numba, for scipy.optimize.

The public API is re-exported here; implementation modules are private.
"""
from ._problem import Cost, ControlProblem, Dynamics
from ._separable import SeparableDynamics
from ._argmin import (ArgminConvergenceError, ArgminConvergenceWarning, ArgminResult, ArgminStats,
                      solve_argmin)
from ._check import GradientCheck, check_gradient
from ._optimize import Objective, control_bounds, objective
from ._sinkhorn import SinkhornGradResult, SinkhornResult, sinkhorn_value_and_grad, solve_sinkhorn
from ._solve import AdjointResult, Gradient, Stats, evaluate, simulate, solve_adjoint
from .checkpointing import DEFAULT_MEMORY_BUDGET, MemoryBudget, Reversible, Revolve, StoreAll, Uniform
from .integrators import RK4, DiscreteMap, Euler, Heun, Leapfrog, RungeKutta, VelocityVerlet

from .ad import cost, grad, hessian_vector_product, hvp, jvp, value_and_grad, vector_field, vjp

__version__ = "0.1.0"

__all__ = [
    "Dynamics", "SeparableDynamics", "Cost", "ControlProblem",
    "solve_adjoint", "simulate", "evaluate", "AdjointResult", "Gradient", "Stats",
    "Euler", "Heun", "RK4", "RungeKutta", "DiscreteMap", "Leapfrog", "VelocityVerlet",
    "StoreAll", "Revolve", "Uniform", "MemoryBudget", "Reversible", "DEFAULT_MEMORY_BUDGET",
    "vector_field", "cost", "grad", "value_and_grad", "jvp", "vjp", "hvp", "hessian_vector_product",
    "solve_argmin", "ArgminResult", "ArgminStats", "ArgminConvergenceError", "ArgminConvergenceWarning",
    "solve_sinkhorn", "sinkhorn_value_and_grad", "SinkhornResult", "SinkhornGradResult",
    "objective", "Objective", "control_bounds", "check_gradient", "GradientCheck",
]
