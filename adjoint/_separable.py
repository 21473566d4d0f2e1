"""Separable dynamics ``x' = u(y), y' = v(x)`` for the leapfrog family and the reversible adjoint."""

from __future__ import annotations

from typing import Callable

import numpy as np
from numba import njit

from ._problem import Dynamics, _check_dim, _njit_user
from .integrators._methods import KIND_LEAPFROG

__all__ = ["SeparableDynamics"]


def _half_fields(u, vjp_u, v, vjp_v, nx: int, n: int):
    """Compile the half fields on the concatenated state ``s = (x, y)``.

    ``F(s) = (u(y), 0)`` and ``G(s) = (0, v(x))`` with their VJPs
    ``[dF]^T z = (0, [d_y u]^T z_x)`` and ``[dG]^T z = ([d_x v]^T z_y, 0)``. The kernels of the
    splitting methods see only these full-state functions, so they need no ``x_dim``.
    """

    @njit
    def drift(s, c, p, t, out):  # pragma: no cover - compiled
        u(s[nx:], c, p, t, out[:nx])
        for i in range(nx, n):
            out[i] = 0.0

    @njit
    def drift_vjp(s, c, p, t, z, out_s, out_c, out_p):  # pragma: no cover - compiled
        for i in range(nx):
            out_s[i] = 0.0
        vjp_u(s[nx:], c, p, t, z[:nx], out_s[nx:], out_c, out_p)

    @njit
    def kick(s, c, p, t, out):  # pragma: no cover - compiled
        for i in range(nx):
            out[i] = 0.0
        v(s[:nx], c, p, t, out[nx:])

    @njit
    def kick_vjp(s, c, p, t, z, out_s, out_c, out_p):  # pragma: no cover - compiled
        vjp_v(s[:nx], c, p, t, z[nx:], out_s[:nx], out_c, out_p)
        for i in range(nx, n):
            out_s[i] = 0.0

    return drift, drift_vjp, kick, kick_vjp


def _full_field(u, vjp_u, v, vjp_v, nx: int, n: int):
    """The whole vector field ``(u(y), v(x))`` and its VJP, for non-splitting methods."""

    @njit
    def field(s, c, p, t, out):  # pragma: no cover - compiled
        u(s[nx:], c, p, t, out[:nx])
        v(s[:nx], c, p, t, out[nx:])

    @njit
    def field_vjp(s, c, p, t, z, out_s, out_c, out_p):  # pragma: no cover - compiled
        # out_s[nx:] = [d_y u]^T z_x ; out_s[:nx] = [d_x v]^T z_y ; c, p parts add up
        vjp_u(s[nx:], c, p, t, z[:nx], out_s[nx:], out_c, out_p)
        m = out_c.shape[0]
        q = out_p.shape[0]
        tc = np.empty(m)
        tp = np.empty(q)
        vjp_v(s[:nx], c, p, t, z[nx:], out_s[:nx], tc, tp)
        for i in range(m):
            out_c[i] += tc[i]
        for i in range(q):
            out_p[i] += tp[i]

    return field, field_vjp


class SeparableDynamics(Dynamics):
    """A separable vector field ``x' = u(y, c, p, t)``, ``y' = v(x, c, p, t)``.

    The problem's state is the concatenation ``s = (x, y)`` of length ``x_dim + y_dim``; costs and
    ``x0`` use that concatenated state. Integrate it with :class:`adjoint.Leapfrog` or
    :class:`adjoint.VelocityVerlet`; then ``checkpoint=adjoint.Reversible()`` rebuilds the states
    backwards with O(1) memory.

    Parameters
    ----------
    u : callable ``u(y, c, p, t, out)``
        Writes ``x'`` (shape ``(x_dim,)``) as a function of ``y`` (shape ``(y_dim,)``). With
        ``vjp_u = vjp_v = None``, ``u(y, c, p, t)`` and ``v(x, c, p, t)`` are plain numpy functions
        returning arrays; they are traced and their VJPs derived by :mod:`adjoint.ad`.
    vjp_u : callable ``vjp_u(y, c, p, t, z, out_y, out_c, out_p)`` or None
        ``z`` has shape ``(x_dim,)``; writes ``[d_y u]^T z``, ``[d_c u]^T z``, ``[d_p u]^T z``
        (overwrites).
    v : callable ``v(x, c, p, t, out)``
        Writes ``y'`` (shape ``(y_dim,)``) as a function of ``x``.
    vjp_v : callable ``vjp_v(x, c, p, t, z, out_x, out_c, out_p)``
        ``z`` has shape ``(y_dim,)``; writes ``[d_x v]^T z``, ``[d_c v]^T z``, ``[d_p v]^T z``.
    x_dim, y_dim, control_dim, param_dim : int

    Attributes
    ----------
    u, vjp_u, v, vjp_v : numba dispatchers
        The user's functions.
    f, vjp, g, gvjp : numba dispatchers
        What the compiled kernels receive: the half fields ``F(s) = (u(y), 0)`` and
        ``G(s) = (0, v(x))`` on the concatenated state, with their VJPs.
    state_dim : int
        ``x_dim + y_dim``.

    Notes
    -----
    Splitting methods only (``Leapfrog``, ``VelocityVerlet``). For Euler or Runge-Kutta methods
    use :meth:`as_dynamics`, the same field as a plain :class:`adjoint.Dynamics`.

    Examples
    --------
    >>> import numba, adjoint
    >>> @numba.njit
    ... def u(y, c, p, t, out):
    ...     out[0] = y[0]
    >>> @numba.njit
    ... def vjp_u(y, c, p, t, z, out_y, out_c, out_p):
    ...     out_y[0] = z[0]
    >>> @numba.njit
    ... def v(x, c, p, t, out):
    ...     out[0] = -x[0]
    >>> @numba.njit
    ... def vjp_v(x, c, p, t, z, out_x, out_c, out_p):
    ...     out_x[0] = -z[0]
    >>> osc = adjoint.SeparableDynamics(u, vjp_u, v, vjp_v, x_dim=1, y_dim=1)
    >>> osc.state_dim
    2
    """

    def __init__(
        self,
        u: Callable,
        vjp_u: Callable | None,
        v: Callable,
        vjp_v: Callable | None,
        x_dim: int,
        y_dim: int,
        control_dim: int = 0,
        param_dim: int = 0,
        *,
        name: str | None = None,
    ):
        self.x_dim = _check_dim("x_dim", x_dim, 1)
        self.y_dim = _check_dim("y_dim", y_dim, 1)
        self.state_dim = self.x_dim + self.y_dim
        self.control_dim = _check_dim("control_dim", control_dim, 0)
        self.param_dim = _check_dim("param_dim", param_dim, 0)
        if (vjp_u is None) != (vjp_v is None):
            raise TypeError(
                "give both `vjp_u` and `vjp_v` (hand-written derivatives) or neither (then `u` and `v` "
                "are plain numpy functions u(y, c, p, t) -> array, v(x, c, p, t) -> array, traced)"
            )
        if vjp_u is None:  # plain functions: trace them (adjoint.ad)
            from .ad._api import half_field

            u, vjp_u = half_field(u, self.y_dim, self.x_dim, self.control_dim, self.param_dim, name="u")
            v, vjp_v = half_field(v, self.x_dim, self.y_dim, self.control_dim, self.param_dim, name="v")
        self.u = _njit_user("u", u, 5)
        self.vjp_u = _njit_user("vjp_u", vjp_u, 8)
        self.v = _njit_user("v", v, 5)
        self.vjp_v = _njit_user("vjp_v", vjp_v, 8)
        self.f, self.vjp, self.g, self.gvjp = _half_fields(
            self.u, self.vjp_u, self.v, self.vjp_v, self.x_dim, self.state_dim
        )
        self.name = name or getattr(getattr(self.u, "py_func", u), "__name__", "separable")
        self._as_dynamics: Dynamics | None = None

    def as_dynamics(self) -> Dynamics:
        """The same vector field ``(u(y), v(x))`` as a plain :class:`adjoint.Dynamics`.

        For Euler and Runge-Kutta methods (comparisons, convergence studies).
        """
        if self._as_dynamics is None:
            fld, fld_vjp = _full_field(self.u, self.vjp_u, self.v, self.vjp_v, self.x_dim, self.state_dim)
            self._as_dynamics = Dynamics(fld, fld_vjp, self.state_dim, self.control_dim, self.param_dim, name=self.name)
        return self._as_dynamics

    def _check(self, call_user, kind: int, method, x0, c0, p, t0):
        """Validate the user's four functions once (called by ``solve_adjoint``'s checks).

        ``call_user(label, fn, args, fix)`` runs a function and turns its errors into messages that
        name it. Rejects non-splitting methods.
        """
        if kind != KIND_LEAPFROG:
            raise TypeError(
                f"`method` {method!r} cannot integrate adjoint.SeparableDynamics: use method=adjoint.Leapfrog() "
                "or adjoint.VelocityVerlet(), or pass `dynamics.as_dynamics()` to the ControlProblem for "
                "Euler/Runge-Kutta methods"
            )
        nx, ny = self.x_dim, self.y_dim
        m, npar = c0.shape[0], p.shape[0]
        x, y = np.ascontiguousarray(x0[:nx]), np.ascontiguousarray(x0[nx:])
        for nm, fn, arg, size, other in (("u", self.u, y, nx, "y"), ("v", self.v, x, ny, "x")):
            out = np.full(size, np.nan)
            call_user(
                f"`dynamics.{nm}` ({nm}({other}, c, p, t, out))",
                fn,
                (arg, c0, p, t0, out),
                f"It must take {other} of shape ({arg.shape[0]},) and write into `out` of shape ({size},).",
            )
            if not np.all(np.isfinite(out)):
                raise ValueError(
                    f"`dynamics.{nm}` left entries of `out` unset or non-finite at x0 (got {out}); "
                    f"it must write all {size} entries"
                )
        for nm, fn, arg, zs, other in (("vjp_u", self.vjp_u, y, nx, "y"), ("vjp_v", self.vjp_v, x, ny, "x")):
            z = np.ones(zs)
            ox, oc, op = np.full(arg.shape[0], np.nan), np.full(m, np.nan), np.full(npar, np.nan)
            call_user(
                f"`dynamics.{nm}` ({nm}({other}, c, p, t, z, out_{other}, out_c, out_p))",
                fn,
                (arg, c0, p, t0, z, ox, oc, op),
                f"z has shape ({zs},); it must write out_{other} ({arg.shape[0]},), out_c ({m},), out_p ({npar},).",
            )
            for onm, arr in ((f"out_{other}", ox), ("out_c", oc), ("out_p", op)):
                if not np.all(np.isfinite(arr)):
                    raise ValueError(
                        f"`dynamics.{nm}` left entries of `{onm}` unset or non-finite at x0 (got "
                        f"{arr}); it must overwrite every entry (write 0.0 where the derivative "
                        "is zero)"
                    )

    def __repr__(self) -> str:
        return (
            f"SeparableDynamics({self.name}, x_dim={self.x_dim}, y_dim={self.y_dim}, "
            f"control_dim={self.control_dim}, param_dim={self.param_dim})"
        )
