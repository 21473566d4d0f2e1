"""One-step methods: explicit Runge-Kutta (Butcher tableaux) and discrete maps."""

from ._leapfrog import Leapfrog, SymplecticSplitting, VelocityVerlet
from ._methods import RK4, DiscreteMap, Euler, Heun, Method, RungeKutta

__all__ = [
    "Euler",
    "Heun",
    "RK4",
    "RungeKutta",
    "DiscreteMap",
    "Method",
    "Leapfrog",
    "VelocityVerlet",
    "SymplecticSplitting",
]
