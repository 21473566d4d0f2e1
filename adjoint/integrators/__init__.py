"""One-step methods: explicit Runge-Kutta (Butcher tableaux) and discrete maps."""
from ._methods import Euler, Heun, RK4, RungeKutta, DiscreteMap, Method

__all__ = ["Euler", "Heun", "RK4", "RungeKutta", "DiscreteMap", "Method"]
