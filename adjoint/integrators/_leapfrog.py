"""Symplectic splitting methods for separable systems: leapfrog and velocity Verlet.

A separable system ``x' = u(y), y' = v(x)`` (see :class:`adjoint.SeparableDynamics`) splits into
two half fields on the concatenated state ``s = (x, y)``::

    F(s) = (u(y), 0)      "drift": moves x, reads only y
    G(s) = (0, v(x))      "kick":  moves y, reads only x

A splitting method is a sequence of explicit Euler substeps ``S_{i+1} = S_i + tau b_i H_i(S_i)``
with ``H_i`` in ``{F, G}``, evaluated at time ``t_k + cn_i tau``. Each substep changes only the
components its field does not read, so ``H_i(S_i) = H_i(S_{i+1})`` and the step has the exact
algebraic inverse ``S_i = S_{i+1} - tau b_i H_i(S_{i+1})`` (used by :class:`adjoint.Reversible`).
Its discrete adjoint is the reverse sweep of the substeps' Euler adjoints,
``Z_i = Z_{i+1} + tau b_i [dH_i(S_i)]^T Z_{i+1}``.

Methods are data. ``tableau_arrays()`` returns ``(A, b, cn)`` for the compiled kernels (kind
``KIND_LEAPFROG``): ``b[i]`` is the substep weight, ``cn[i]`` its time node, and the diagonal
``A[i, i]`` says which half field substep ``i`` uses (0.0: drift F with ``u``, 1.0: kick G with
``v``). The kernels never need ``x_dim``: the split is done by the half-field wrappers that
:class:`adjoint.SeparableDynamics` compiles (``.f/.vjp`` = F, ``.g/.gvjp`` = G).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._methods import KIND_LEAPFROG, Method

DRIFT = 0.0  # x += tau b u(y)
KICK = 1.0  # y += tau b v(x)


def _splitting_arrays(fields, weights, nodes):
    s = len(fields)
    A = np.zeros((s, s))
    A[np.arange(s), np.arange(s)] = fields
    b = np.asarray(weights, dtype=np.float64)
    cn = np.asarray(nodes, dtype=np.float64)
    for arr in (A, b, cn):
        arr.setflags(write=False)
    return A, b, cn


class SymplecticSplitting(Method):
    """Base class of the splitting methods for :class:`adjoint.SeparableDynamics` (kind 3)."""

    kind = KIND_LEAPFROG
    reversible = True


_LEAPFROG = _splitting_arrays([DRIFT, KICK], [1.0, 1.0], [0.5, 1.0])
_VERLET = _splitting_arrays([KICK, DRIFT, KICK], [0.5, 1.0, 0.5], [0.0, 0.5, 1.0])


@dataclass(frozen=True)
class Leapfrog(SymplecticSplitting):
    """The leapfrog step for separable systems ``x' = u(y, c, p, t)``, ``y' = v(x, c, p, t)``.

    One step from ``(x_k, y_k)`` with control ``c_k``::

        x_{k+1} = x_k + tau u(y_k,     c_k, p, t_k + tau/2)
        y_{k+1} = y_k + tau v(x_{k+1}, c_k, p, t_k + tau)

    Inverse (exact in exact arithmetic, used by :class:`adjoint.Reversible`)::

        y_k = y_{k+1} - tau v(x_{k+1}, c_k, p, t_k + tau)
        x_k = x_{k+1} - tau u(y_k,     c_k, p, t_k + tau/2)

    Notes
    -----
    Staggered interpretation: ``x_k ~ x(t_k)`` and ``y_k ~ y(t_k + tau/2)``. Both updates are then
    midpoint rules and the method is second order, provided ``y_0`` is the half-step value
    ``y(t_0 + tau/2)`` (a ``y_0 = y(t_0)`` start costs one order in ``y``). The time arguments
    passed to ``u`` and ``v`` follow this interpretation. The map is symplectic (a composition of
    two shears), so energy errors stay bounded over long runs.

    Discrete adjoint, with ``(a, b) = (z^x_{k+1}, z^y_{k+1})``::

        xbar = a + tau [d_x v(x_{k+1})]^T b
        z^x_k = xbar,   z^y_k = b + tau [d_y u(y_k)]^T xbar
        grad c_k = tau [d_c v]^T b + tau [d_c u]^T xbar   (and likewise for p)

    Examples
    --------
    >>> import adjoint
    >>> adjoint.Leapfrog().order
    2
    """

    order: int = field(default=2, init=False, repr=False)

    def tableau_arrays(self):
        return _LEAPFROG


@dataclass(frozen=True)
class VelocityVerlet(SymplecticSplitting):
    """Velocity Verlet (kick-drift-kick) for separable systems; both halves at integer times.

    One step::

        y_h     = y_k + tau/2 v(x_k,     c_k, p, t_k)
        x_{k+1} = x_k + tau   u(y_h,     c_k, p, t_k + tau/2)
        y_{k+1} = y_h + tau/2 v(x_{k+1}, c_k, p, t_k + tau)

    Second order with ``x_k ~ x(t_k)``, ``y_k ~ y(t_k)`` (no staggering), symplectic, and exactly
    invertible (the substeps undone in reverse order). Costs one more ``v`` evaluation per step than
    :class:`Leapfrog` (the kernels do not reuse the last kick across steps).

    Examples
    --------
    >>> import adjoint
    >>> adjoint.VelocityVerlet().stages
    3
    """

    order: int = field(default=2, init=False, repr=False)

    def tableau_arrays(self):
        return _VERLET
