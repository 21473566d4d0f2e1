"""Integration methods as data.

A method is a small frozen object. Explicit Runge-Kutta methods are a validated Butcher tableau
fed to one generic compiled kernel (``adjoint._kernels``); a new method is a few coefficients.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import numpy as np

# The method codes the kernels branch on (adjoint._kernels, adjoint._fused, adjoint._tape): the one
# definition. numba compiles them in as constants.
KIND_EULER = 0
KIND_RK = 1
KIND_MAP = 2
KIND_LEAPFROG = 3


class Method:
    """Base class of the one-step methods accepted by :func:`adjoint.solve_adjoint`."""

    kind: int = -1
    order: int = 0

    @property
    def stages(self) -> int:
        return self.tableau_arrays()[1].shape[0]

    def tableau_arrays(self):
        """Return ``(A, b, c)`` float64 arrays used by the compiled kernels."""
        raise NotImplementedError

    @functools.cached_property
    def cache_key(self) -> tuple:
        """``(kind, A, b, c)`` as bytes: identifies the compiled kernels this method needs."""
        A, b, c = self.tableau_arrays()
        return (self.kind, A.tobytes(), b.tobytes(), c.tobytes())


def _validate_tableau(A, b, c, name):
    def as_real(v, nm):
        try:
            return np.asarray(v, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(
                f"`{name}` {nm} must be an array of real numbers (e.g. a nested list of floats); got {v!r}"
            ) from None

    A, b, c = as_real(A, "A"), as_real(b, "b"), as_real(c, "c")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"`{name}` A must be a square matrix; got shape {A.shape}")
    s = A.shape[0]
    if s < 1:
        raise ValueError(f"`{name}` must have at least one stage")
    if b.shape != (s,) or c.shape != (s,):
        raise ValueError(f"`{name}` b and c must have shape ({s},) to match A; got {b.shape} and {c.shape}")
    for arr, nm in ((A, "A"), (b, "b"), (c, "c")):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"`{name}` {nm} must be finite")
    if np.any(np.triu(A) != 0.0):
        raise ValueError(f"`{name}` must be explicit: A must be strictly lower triangular; got\n{A}")
    if not np.allclose(A.sum(axis=1), c, rtol=0, atol=1e-12):
        raise ValueError(f"`{name}` row sums of A must equal c; got row sums {A.sum(axis=1)} and c = {c}")
    if abs(b.sum() - 1.0) > 1e-12:
        raise ValueError(f"`{name}` weights b must sum to 1 (consistency); they sum to {b.sum()!r}")
    return A, b, c


@dataclass(frozen=True, eq=False)
class RungeKutta(Method):
    """An explicit Runge-Kutta method given by its Butcher tableau.

    Parameters
    ----------
    A : array_like, shape (s, s)
        Strictly lower-triangular stage coefficients.
    b : array_like, shape (s,)
        Weights, summing to 1.
    c : array_like, shape (s,)
        Nodes, equal to the row sums of ``A``.
    order : int, optional
        Declared order (informational).

    Notes
    -----
    One step from ``x_k`` with control ``c_k`` (held over the step) is::

        X_i = x_k + tau sum_{j<i} A_ij K_j,   K_i = u(X_i, c_k, p, t_k + c_i tau)
        x_{k+1} = x_k + tau sum_i b_i K_i

    Its discrete adjoint sweeps the stages backwards
    (``Kbar_i = tau (b_i z_{k+1} + sum_{j>i} A_ji Xbar_j)``, ``Xbar_i = [d_x u(X_i)]^T Kbar_i``,
    ``z_k = z_{k+1} + sum_i Xbar_i``), recomputing the stages from ``x_k`` alone.

    Examples
    --------
    >>> import adjoint
    >>> midpoint = adjoint.RungeKutta([[0, 0], [0.5, 0]], [0, 1], [0, 0.5], order=2)
    >>> midpoint.stages
    2
    """

    A: object
    b: object
    c: object
    order: int = 0
    name: str = "RungeKutta"
    kind: int = field(default=KIND_RK, init=False)

    def __post_init__(self):
        A, b, c = _validate_tableau(self.A, self.b, self.c, "tableau")
        for arr in (A, b, c):
            arr.setflags(write=False)
        object.__setattr__(self, "A", A)
        object.__setattr__(self, "b", b)
        object.__setattr__(self, "c", c)

    def tableau_arrays(self):
        return self.A, self.b, self.c

    def __repr__(self):
        return f"{self.name}(stages={self.stages}, order={self.order})"


class Heun(RungeKutta):
    """Heun's method (explicit trapezoid), order 2: the tableau ``A = [[0, 0], [1, 0]]``,
    ``b = [1/2, 1/2]``, ``c = [0, 1]``."""

    def __init__(self):
        super().__init__([[0.0, 0.0], [1.0, 0.0]], [0.5, 0.5], [0.0, 1.0], order=2, name="Heun")


class RK4(RungeKutta):
    """The classical fourth-order Runge-Kutta method."""

    def __init__(self):
        super().__init__(
            [[0, 0, 0, 0], [0.5, 0, 0, 0], [0, 0.5, 0, 0], [0, 0, 1.0, 0]],
            [1 / 6, 1 / 3, 1 / 3, 1 / 6],
            [0, 0.5, 0.5, 1.0],
            order=4,
            name="RK4",
        )


_EULER_TABLEAU = (np.zeros((1, 1)), np.ones(1), np.zeros(1))


@dataclass(frozen=True)
class Euler(Method):
    """Explicit Euler, ``x_{k+1} = x_k + tau u(x_k, c_k, p, t_k)`` (order 1).

    Its discrete adjoint is the lecture's sweep ``z_k = z_{k+1} + tau [d_x u(x_k)]^T z_{k+1}``.
    """

    kind: int = field(default=KIND_EULER, init=False, repr=False)
    order: int = field(default=1, init=False, repr=False)

    def tableau_arrays(self):
        return _EULER_TABLEAU


@dataclass(frozen=True)
class DiscreteMap(Method):
    """A discrete map: ``f`` gives the next state itself, ``x_{k+1} = f(x_k, c_k, p, t_k)``.

    This is the lecture's layered map (perceptron layers ``rho(theta_k x)`` with the per-step
    controls as the layer weights) and recurrent map (shared ``p``). The backward sweep is
    backpropagation: ``z_k = [d_x f(x_k)]^T z_{k+1}``, ``grad c_k = [d_c f(x_k)]^T z_{k+1}``,
    ``grad p = sum_k [d_p f(x_k)]^T z_{k+1}``. The running-cost weight is still
    ``tau = (t1 - t0) / steps``.
    """

    kind: int = field(default=KIND_MAP, init=False, repr=False)
    order: int = field(default=0, init=False, repr=False)

    def tableau_arrays(self):
        return _EULER_TABLEAU
