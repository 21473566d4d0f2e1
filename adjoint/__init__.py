"""adjoint: exact gradients of simulations, compiled with numba, for scipy.optimize.

The public API is re-exported here; implementation modules are private.
"""

import os
import sys
from typing import TYPE_CHECKING

from ._check import GradientCheck, check_gradient
from ._constraints import ConstraintJacobian, Path, Terminal, constraint_jacobian
from ._freetime import Free
from ._observations import Observations, Residuals
from ._optimize import Objective, control_bounds, objective
from ._problem import ControlProblem, Cost, Dynamics
from ._separable import SeparableDynamics
from ._solve import AdjointResult, Gradient, Stats, evaluate, simulate, solve_adjoint
from ._traced import cost, vector_field
from ._trust import TraceMismatchWarning
from .ad import grad, hessian_vector_product, hvp, jvp, value_and_grad, vjp
from .checkpointing import DEFAULT_MEMORY_BUDGET, MemoryBudget, Reversible, Revolve, StoreAll, Uniform
from .integrators import RK4, DiscreteMap, Euler, Heun, Leapfrog, RungeKutta, VelocityVerlet

if TYPE_CHECKING:  # static view (type checkers, the API reference); loaded lazily at run time below
    from ._argmin import ArgminConvergenceError, ArgminConvergenceWarning, ArgminResult, ArgminStats, solve_argmin
    from ._ensemble import EnsembleResult, solve_ensemble
    from ._ocp import NLP, OCPResult, nlp, solve_ocp
    from ._sinkhorn import SinkhornGradResult, SinkhornResult, sinkhorn_value_and_grad, solve_sinkhorn
    from ._tangent import TangentResult, solve_tangent

__version__ = "0.1.0"

# Implicit differentiation and Sinkhorn load on first use (PEP 562): their module-level numba
# declarations cost import time that a user of solve_adjoint alone need not pay.
_LAZY = {
    "solve_argmin": "_argmin",
    "ArgminResult": "_argmin",
    "ArgminStats": "_argmin",
    "ArgminConvergenceError": "_argmin",
    "ArgminConvergenceWarning": "_argmin",
    "solve_sinkhorn": "_sinkhorn",
    "sinkhorn_value_and_grad": "_sinkhorn",
    "SinkhornResult": "_sinkhorn",
    "SinkhornGradResult": "_sinkhorn",
    "solve_ocp": "_ocp",
    "OCPResult": "_ocp",
    "nlp": "_ocp",
    "NLP": "_ocp",
    "solve_tangent": "_tangent",
    "solve_ensemble": "_ensemble",
    "EnsembleResult": "_ensemble",
    "TangentResult": "_tangent",
}


def __getattr__(name):
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'adjoint' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


class _SourceProblems:
    """Import hook for a source checkout: ``adjoint.problems`` is the top-level folder ``problems/``.

    Installed (wheel or ``pip install -e .``), pyproject.toml maps that folder to ``adjoint.problems``
    and this hook is not consulted (it comes last in ``sys.meta_path``). Run from a checkout that is
    not installed (``PYTHONPATH=.``), nothing else would find it.
    """

    def __init__(self, folder):
        self.folder = folder

    def find_spec(self, fullname, path=None, target=None):
        if fullname != __name__ + ".problems":
            return None
        import importlib.util

        init = os.path.join(self.folder, "__init__.py")
        return importlib.util.spec_from_file_location(fullname, init, submodule_search_locations=[self.folder])


def _install_source_problems():
    here = os.path.dirname(os.path.abspath(__file__))
    folder = os.path.join(os.path.dirname(here), "problems")
    if os.path.isdir(os.path.join(here, "problems")) or not os.path.isfile(os.path.join(folder, "__init__.py")):
        return  # installed as a wheel (adjoint/problems/ exists), or no problems folder next to us
    if not any(isinstance(f, _SourceProblems) for f in sys.meta_path):
        sys.meta_path.append(_SourceProblems(folder))


_install_source_problems()


__all__ = [
    "Dynamics",
    "SeparableDynamics",
    "Cost",
    "ControlProblem",
    "solve_adjoint",
    "simulate",
    "evaluate",
    "AdjointResult",
    "Gradient",
    "Stats",
    "Euler",
    "Heun",
    "RK4",
    "RungeKutta",
    "DiscreteMap",
    "Leapfrog",
    "VelocityVerlet",
    "StoreAll",
    "Revolve",
    "Uniform",
    "MemoryBudget",
    "Reversible",
    "DEFAULT_MEMORY_BUDGET",
    "vector_field",
    "cost",
    "grad",
    "value_and_grad",
    "jvp",
    "vjp",
    "hvp",
    "hessian_vector_product",
    "solve_argmin",
    "ArgminResult",
    "ArgminStats",
    "ArgminConvergenceError",
    "ArgminConvergenceWarning",
    "solve_sinkhorn",
    "sinkhorn_value_and_grad",
    "SinkhornResult",
    "SinkhornGradResult",
    "objective",
    "Objective",
    "control_bounds",
    "check_gradient",
    "GradientCheck",
    "solve_tangent",
    "TangentResult",
    "solve_ensemble",
    "EnsembleResult",
    "Observations",
    "Residuals",
    "TraceMismatchWarning",
    "Terminal",
    "Path",
    "Free",
    "constraint_jacobian",
    "ConstraintJacobian",
    "solve_ocp",
    "OCPResult",
    "nlp",
    "NLP",
]


from ._modules import install_cache_healing as _install_cache_healing  # noqa: E402

_install_cache_healing()  # damaged numba cache files of adjoint's functions recompile, with a warning
