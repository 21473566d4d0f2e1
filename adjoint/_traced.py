"""``adjoint.Dynamics`` and ``adjoint.Cost`` from plain numpy functions, traced by :mod:`adjoint.ad`.

The tracing AD compiles a function and its derivative (:func:`adjoint.ad.compile_field`,
:func:`adjoint.ad.compile_cost`); this core-side module wraps them in the problem's contract
types, so that ``adjoint.ad`` needs nothing from the ODE core.
"""

from __future__ import annotations

from ._problem import Cost, Dynamics
from .ad import compile_cost, compile_field

__all__ = ["vector_field", "cost"]


def vector_field(fn, state_dim, control_dim=0, param_dim=0, *, name=None) -> Dynamics:
    """Trace a plain numpy vector field ``fn(x, c, p, t) -> u`` and compile it and its VJP.

    Parameters
    ----------
    fn : callable
        ``fn(x, c, p, t)`` with ``x`` of shape ``(state_dim,)``, ``c`` ``(control_dim,)``, ``p``
        ``(param_dim,)`` and a float ``t``; returns an array of shape ``(state_dim,)`` (e.g.
        ``np.array([...])`` of expressions).
    state_dim, control_dim, param_dim : int
    name : str, optional

    Returns
    -------
    adjoint.Dynamics
        Its ``f`` and ``vjp`` are generated numba kernels; ``.traced`` is an
        :class:`adjoint.ad.TracedDynamics` (graphs and source emission for generated sweeps).

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> def lotka_volterra(x, c, p, t):
    ...     a, b, d, g = p
    ...     return np.array([a * x[0] - b * x[0] * x[1], d * x[0] * x[1] - g * x[1]])
    >>> dyn = adjoint.vector_field(lotka_volterra, state_dim=2, param_dim=4)
    >>> out = np.empty(2); dyn.f(np.array([1.0, 2.0]), np.empty(0), np.array([1.0, 0.5, 0.25, 2.0]), 0.0, out)
    >>> out.tolist()
    [0.0, -3.5]
    """
    cf = compile_field(fn, state_dim, control_dim, param_dim)
    tr = cf.traced
    return Dynamics(
        cf.f,
        cf.vjp,
        tr.state_dim,
        tr.control_dim,
        tr.param_dim,
        name=name or getattr(fn, "__name__", "vector_field"),
        traced=tr,
        source=cf.source,
    )


def cost(fn, state_dim, control_dim=0, param_dim=0, *, name=None) -> Cost:
    """Trace a plain numpy scalar cost ``fn(x, c, p, t) -> float`` and compile it and its gradient.

    Returns
    -------
    adjoint.Cost
        With ``.traced`` an :class:`adjoint.ad.TracedCost`.
    """
    cc = compile_cost(fn, state_dim, control_dim, param_dim)
    return Cost(cc.value, cc.grad, name=name or getattr(fn, "__name__", "cost"), traced=cc.traced, source=cc.source)
