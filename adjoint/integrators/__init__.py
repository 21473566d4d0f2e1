"""One-step methods: explicit Runge-Kutta (Butcher tableaux) and discrete maps."""
from ._methods import Euler, Heun, RK4, RungeKutta, DiscreteMap, Method
from ._leapfrog import Leapfrog, VelocityVerlet, SymplecticSplitting

__all__ = ["Euler", "Heun", "RK4", "RungeKutta", "DiscreteMap", "Method",
           "Leapfrog", "VelocityVerlet", "SymplecticSplitting"]
