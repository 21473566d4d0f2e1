"""User-facing problem description: compiled vector fields, costs and control problems.

This module only validates and stores; the compiled sweeps live in ``adjoint._kernels``.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

__all__ = ["Dynamics", "Cost", "ControlProblem", "as_float_vector"]


def _is_dispatcher(fn) -> bool:
    try:
        from numba.core.dispatcher import Dispatcher
    except Exception:  # pragma: no cover - numba is a hard dependency
        return False
    return isinstance(fn, Dispatcher)


def _check_dim(name: str, value, minimum: int) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be an integer >= {minimum}; got {value!r}")
    if value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}; got {value}")
    return int(value)


def _njit_user(name: str, fn, nargs: int):
    """Return a numba dispatcher for the user's function ``fn`` (jit it if needed)."""
    if not callable(fn):
        raise TypeError(f"`{name}` must be a function; got {type(fn).__name__}")
    py = fn.py_func if _is_dispatcher(fn) else fn
    try:
        sig = inspect.signature(py)
        params = [p for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
        if len(params) != nargs and not any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
            raise TypeError(
                f"`{name}` must take {nargs} positional arguments; "
                f"{getattr(py, '__name__', name)}{sig} takes {len(params)}"
            )
    except (TypeError, ValueError) as exc:
        if isinstance(exc, TypeError) and str(exc).startswith(f"`{name}`"):
            raise
    if _is_dispatcher(fn):
        return fn
    import numba

    return numba.njit(fn)


def as_float_vector(name: str, value, size: int | None = None, *, allow_none_as_empty=False) -> np.ndarray:
    """Convert ``value`` to a contiguous float64 vector, with a clear error naming ``name``."""
    if value is None and allow_none_as_empty:
        value = np.zeros(0)
    if (
        type(value) is np.ndarray
        and value.dtype == np.float64
        and value.ndim == 1
        and (size is None or value.shape[0] == size)
        and value.flags.c_contiguous
    ):
        if math.isfinite(value.sum()):  # the common case: no conversion, one pass
            return value
    if np.iscomplexobj(value):
        raise TypeError(f"`{name}` must be real (float64); got a complex array")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"`{name}` must be an array of real numbers; got {type(value).__name__} ({exc})") from None
    if arr.ndim == 0 and size is not None:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D array"
            + (f" of shape ({size},)" if size is not None else "")
            + f"; got shape {arr.shape}"
        )
    if size is not None and arr.shape[0] != size:
        raise ValueError(f"`{name}` must have shape ({size},) to match the problem; got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"`{name}` must be finite; entry {bad} is {arr[bad]}")
    return np.ascontiguousarray(arr)


class Dynamics:
    """A vector field ``x' = u(x, c, p, t)`` given by numba-compiled functions.

    Parameters
    ----------
    f : callable ``f(x, c, p, t, out)``
        Writes ``u(x, c, p, t)`` into ``out`` (shape ``(state_dim,)``). A plain Python function is
        compiled with ``numba.njit``.
    vjp : callable ``vjp(x, c, p, t, z, out_x, out_c, out_p)``
        Writes ``[d_x u]^T z``, ``[d_c u]^T z`` and ``[d_p u]^T z`` into ``out_x`` (``(state_dim,)``),
        ``out_c`` (``(control_dim,)``) and ``out_p`` (``(param_dim,)``). It overwrites, it does not
        accumulate.
    state_dim, control_dim, param_dim : int
        Sizes of ``x``, of the per-step control ``c`` and of the shared parameters ``p``.
    jvp : callable ``jvp(x, c, p, t, dx, dc, dp, out)``, optional
        Writes the directional derivative ``[d_x u] dx + [d_c u] dc + [d_p u] dp`` into ``out``
        (``(state_dim,)``; it overwrites). Only forward sensitivities use it
        (:func:`adjoint.solve_tangent`); Hessian-vector products and observations need the model as
        a plain numpy function (traced), which derives every derivative.

    Notes
    -----
    With :class:`adjoint.DiscreteMap` the same pair describes a map: ``f`` writes the next state
    ``x_{k+1} = f(x_k, c_k, p, t_k)`` and ``vjp`` its transposed Jacobians.

    Examples
    --------
    >>> import numba, adjoint
    >>> @numba.njit
    ... def f(x, c, p, t, out):
    ...     out[0] = -p[0] * x[0]
    >>> @numba.njit
    ... def vjp(x, c, p, t, z, out_x, out_c, out_p):
    ...     out_x[0] = -p[0] * z[0]
    ...     out_p[0] = -x[0] * z[0]
    >>> decay = adjoint.Dynamics(f, vjp, state_dim=1, param_dim=1)
    >>> decay.state_dim, decay.control_dim, decay.param_dim
    (1, 0, 1)
    """

    def __init__(
        self,
        f: Callable,
        vjp: Callable,
        state_dim: int,
        control_dim: int = 0,
        param_dim: int = 0,
        *,
        name: str | None = None,
        traced=None,
        source: str | None = None,
        jvp: Callable | None = None,
    ):
        self.state_dim = _check_dim("state_dim", state_dim, 1)
        self.control_dim = _check_dim("control_dim", control_dim, 0)
        self.param_dim = _check_dim("param_dim", param_dim, 0)
        self.f = _njit_user("f", f, 5)
        self.vjp = _njit_user("vjp", vjp, 8)
        #: the optional hand-written JVP (forward sensitivities), or None
        self.jvp = None if jvp is None else _njit_user("jvp", jvp, 8)
        self.name = name or getattr(getattr(self.f, "py_func", f), "__name__", "dynamics")
        #: the traced graphs (``adjoint.ad.TracedDynamics``) when ``f``/``vjp`` were generated from a
        #: plain function by :func:`adjoint.vector_field`; None for hand-written functions
        self.traced = traced
        #: the generated module's file (None: hand-written, or compiled in memory)
        self.source = source

    def __repr__(self) -> str:
        return (
            f"Dynamics({self.name}, state_dim={self.state_dim}, control_dim={self.control_dim}, "
            f"param_dim={self.param_dim})"
        )


class Cost:
    """A scalar cost ``l(x, c, p, t)`` and its gradient, as numba-compiled functions.

    Parameters
    ----------
    value : callable ``value(x, c, p, t) -> float``
    grad : callable ``grad(x, c, p, t, out_x, out_c, out_p)``
        Writes the partial gradients (overwrites). A terminal cost is called with ``c`` of length 0
        and ``t = t1``.
    value_and_grad : callable ``value_and_grad(x, c, p, t, out_x, out_c, out_p) -> float``, optional
        Writes the gradients like ``grad`` and returns the value, for costs whose value and gradient
        share expensive work (a data lookup, an interpolation). For a running cost the backward
        sweep then makes one call per step instead of two. It must return exactly what ``value`` returns (same
        arithmetic); this is checked at the first solve. ``value`` is still used by forward-only
        evaluations.

    Examples
    --------
    >>> import numba, adjoint
    >>> @numba.njit
    ... def value(x, c, p, t):
    ...     return 0.5 * (x[0] ** 2)
    >>> @numba.njit
    ... def grad(x, c, p, t, out_x, out_c, out_p):
    ...     out_x[0] = x[0]
    ...     out_c[:] = 0.0
    ...     out_p[:] = 0.0
    >>> half_square = adjoint.Cost(value, grad)
    """

    def __init__(
        self,
        value: Callable,
        grad: Callable,
        *,
        value_and_grad: Callable | None = None,
        name: str | None = None,
        traced=None,
        source: str | None = None,
    ):
        self.value = _njit_user("value", value, 4)
        self.grad = _njit_user("grad", grad, 7)
        self.value_and_grad = None if value_and_grad is None else _njit_user("value_and_grad", value_and_grad, 7)
        self.name = name or getattr(getattr(self.value, "py_func", value), "__name__", "cost")
        #: the traced graphs (``adjoint.ad.TracedCost``) when generated by :func:`adjoint.cost`, else None
        self.traced = traced
        #: the generated module's file (None: hand-written, or compiled in memory)
        self.source = source

    def __repr__(self) -> str:
        return f"Cost({self.name})"


def call_user(label, fn, args, fix, *, shapes="of the problem's shapes"):
    """``fn(*args)``; any failure (numba typing errors, wrong signatures, the user's exceptions) becomes
    a TypeError naming the function (``label``), what went wrong and ``fix``, never a raw traceback."""
    try:
        return fn(*args)
    except Exception as exc:
        from numba.core.errors import NumbaError

        kind = "could not be compiled by numba" if isinstance(exc, NumbaError) else "raised an error"
        lines = [m for m in str(exc).strip().splitlines() if m.strip()]
        raise TypeError(
            f"{label} {kind} when called with float64 arrays {shapes}: {type(exc).__name__}: "
            f"{' | '.join(lines[:6])[:800]}. {fix}"
        ) from None


def _arity(fn) -> int | None:
    py = getattr(fn, "py_func", fn)
    try:
        sig = inspect.signature(py)
    except (TypeError, ValueError):
        return None
    if any(p.kind == p.VAR_POSITIONAL for p in sig.parameters.values()):
        return None
    return sum(1 for p in sig.parameters.values() if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _check_cost(name, cost):
    if cost is None or isinstance(cost, Cost):
        return cost
    if not callable(cost):
        raise TypeError(f"`{name}` must be an adjoint.Cost or a plain function; got {type(cost).__name__}")
    n = _arity(cost)
    if n not in (2, 4, None):
        raise TypeError(f"`{name}` as a plain function must take (x, p) or (x, c, p, t); it takes {n} arguments")
    return cost


@dataclass(eq=False)
class ProblemCache:
    """What ``solve_adjoint`` compiles and memoises for one problem (internal).

    One declared object per :class:`ControlProblem`, created with it and freed with it (the problem
    itself is immutable). ``compiled`` maps ``(control_dim, param_dim)`` to the compiled functions
    (``adjoint._solve._Compiled``, which holds the generators' memos); ``checked`` records the
    one-time argument checks of the user's functions; ``lanes`` holds the fast lanes of repeated
    store-all gradients (``adjoint._solve._Lane``), keyed by method, schedule and backend.
    """

    compiled: dict = field(default_factory=dict)
    checked: set = field(default_factory=set)
    lanes: dict = field(default_factory=dict)
    #: problems derived from this one (the free-final-time rewriting, ``adjoint._freetime``)
    derived: dict = field(default_factory=dict)


class ControlProblem:
    """An optimal-control (or fitting) problem on the grid ``t_k = t0 + k tau``.

    Parameters
    ----------
    dynamics : Dynamics or callable
        The vector field (or, with :class:`adjoint.DiscreteMap`, the map). A plain Python function
        ``fn(x, c, p, t)`` returning an array is traced and compiled (requires ``adjoint.ad``);
        its control and parameter sizes are taken from the first ``solve_adjoint`` call or from
        ``control_dim``/``param_dim``.
    x0 : array_like, shape (state_dim,)
        Initial state.
    t_span : (float, float)
        ``(t0, t1)`` with ``t1 > t0``. ``t1`` may be an :class:`adjoint.Free` final time, which
        :func:`adjoint.solve_ocp` optimises (other functions use its guess).
    steps : int
        Number of steps ``K``; ``tau = (t1 - t0) / K``.
    terminal_cost, running_cost : Cost or callable, optional
        ``L(x_K, p)`` and ``l(x_k, c_k, p, t_k)``. At least one must be given. Plain functions
        ``fn(x, p)`` or ``fn(x, c, p, t)`` are traced.
    constraints : list of adjoint.Terminal / adjoint.Path, optional
        Hard constraints, for :func:`adjoint.solve_ocp` (their exact Jacobian:
        :func:`adjoint.constraint_jacobian`). ``solve_adjoint`` ignores them.
    observations : adjoint.Observations, optional
        Data to fit: the objective gains ``1/2 sum_j |r_j|^2`` with the residuals
        ``r_j = weights_j * (observe(x(t_j), p) - data_j)`` at grid times ``t_j``; then the costs
        may be omitted. :meth:`residuals` gives the residual vector and its Jacobian for
        ``scipy.optimize.least_squares``. The dynamics and costs must be plain numpy functions
        (or built by ``adjoint.vector_field``/``adjoint.cost``).

    Notes
    -----
    The objective is ``J = L(x_K, p) + tau * sum_{k<K} l(x_k, c_k, p, t_k)``; controls are held
    constant over a step. A problem is immutable once built (its compiled kernels and fast paths
    depend on it): :meth:`with_steps` gives the same problem on another grid.
    """

    def __init__(
        self,
        dynamics,
        x0,
        t_span,
        steps,
        terminal_cost=None,
        running_cost=None,
        *,
        control_dim: int | None = None,
        param_dim: int | None = None,
        name: str | None = None,
        constraints=None,
        observations=None,
    ):
        if isinstance(dynamics, Dynamics):
            state_dim = dynamics.state_dim
            for nm, given, have in (
                ("control_dim", control_dim, dynamics.control_dim),
                ("param_dim", param_dim, dynamics.param_dim),
            ):
                if given is not None and given != have:
                    raise ValueError(f"`{nm}`={given} disagrees with the dynamics ({nm}={have})")
        elif callable(dynamics):
            state_dim = None
            n_args = _arity(dynamics)
            if n_args is not None and n_args != 4:
                raise TypeError(
                    f"`dynamics` as a plain function must take (x, c, p, t) and return x' as an array (c: the "
                    f"controls of the step, p: the parameters, t: the time; unused ones are ignored); it takes "
                    f"{n_args} arguments"
                )
        else:
            raise TypeError(
                "`dynamics` must be an adjoint.Dynamics (or SeparableDynamics) or a plain "
                f"function fn(x, c, p, t); got {type(dynamics).__name__}"
            )
        self.dynamics = dynamics
        # a private copy, then read-only: never lock (or alias) the caller's array
        self.x0 = np.array(as_float_vector("x0", x0, state_dim))
        self.x0.setflags(write=False)
        self.state_dim = self.x0.shape[0]
        from ._freetime import Free

        final_time = None
        try:
            t0_, t1_ = t_span
            if isinstance(t1_, Free):
                final_time, t1_ = t1_, t1_.guess
            t0, t1 = float(t0_), float(t1_)
        except (TypeError, ValueError):
            raise ValueError(f"`t_span` must be a pair of numbers (t0, t1); got {t_span!r}") from None
        if not (np.isfinite(t0) and np.isfinite(t1)):
            raise ValueError(f"`t_span` must be finite; got {(t0, t1)}")
        if not t1 > t0:
            raise ValueError(
                f"`t_span` must satisfy t1 > t0 (integration runs forward in time); got {(t0, t1)}. "
                "Reparametrise time (s = -t) for a backward-in-time model."
            )
        self.t_span = (t0, t1)
        #: an :class:`adjoint.Free` final time (``solve_ocp`` optimises it), else None
        self.final_time = final_time
        if final_time is not None:
            final_time.bounds(t0)  # checks lower > t0
        if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)):
            raise TypeError(f"`steps` must be an integer >= 1; got {steps!r}")
        if steps < 1:
            raise ValueError(f"`steps` must be an integer >= 1; got {steps}")
        self.steps = int(steps)
        self.terminal_cost = _check_cost("terminal_cost", terminal_cost)
        self.running_cost = _check_cost("running_cost", running_cost)
        if terminal_cost is None and running_cost is None and observations is None:
            raise ValueError("give at least one of `terminal_cost` and `running_cost` (or `observations` to fit)")
        from ._observations import check_observations

        #: the :class:`adjoint.Observations` fitted by the objective (or None)
        self.observations = check_observations(self.steps, self.t_span, observations, final_time)
        self._control_dim = control_dim if not isinstance(dynamics, Dynamics) else dynamics.control_dim
        self._param_dim = param_dim if not isinstance(dynamics, Dynamics) else dynamics.param_dim
        self.name = name or getattr(dynamics, "name", getattr(dynamics, "__name__", "problem"))
        from ._constraints import check_constraints

        #: the problem's :class:`adjoint.Terminal` and :class:`adjoint.Path` constraints (a tuple)
        self.constraints = check_constraints(constraints)
        self._cache = ProblemCache()
        self._frozen = True

    def __getstate__(self):
        # pickled for an executor's workers: without the compiled functions and lanes (rebuilt there)
        state = dict(self.__dict__)
        state.pop("_cache", None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.__dict__["_cache"] = ProblemCache()

    def __setattr__(self, name, value):
        if self.__dict__.get("_frozen"):
            raise AttributeError(
                f"ControlProblem is immutable: cannot set {name!r}. Build a new problem (or use "
                "problem.with_steps(steps) for another grid)."
            )
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        raise AttributeError(f"ControlProblem is immutable: cannot delete {name!r}")

    @property
    def tau(self) -> float:
        """Step size ``(t1 - t0) / steps``."""
        return (self.t_span[1] - self.t_span[0]) / self.steps

    @property
    def times(self) -> np.ndarray:
        """The grid ``t_0, ..., t_K``, shape (steps + 1,)."""
        return self.t_span[0] + self.tau * np.arange(self.steps + 1)

    @property
    def control_dim(self):
        return self._control_dim

    @property
    def param_dim(self):
        return self._param_dim

    def with_steps(self, steps: int) -> "ControlProblem":
        """The same problem on a grid with ``steps`` steps."""
        if isinstance(steps, (bool, np.bool_)) or not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"`steps` must be an integer >= 1; got {steps!r}")
        new = ControlProblem.__new__(ControlProblem)
        new.__dict__.update(self.__dict__)
        new.__dict__["steps"] = int(steps)
        if self.observations is not None:
            self.observations.indices(self.t_span[0], self.t_span[1], int(steps))
        # the compiled functions and checks do not depend on the grid; the fast lanes do
        new.__dict__["_cache"] = ProblemCache(self._cache.compiled, self._cache.checked)
        return new

    def objective(self, wrt="params", **kwargs):
        """A ``fun(v) -> (value, grad)`` for ``scipy.optimize.minimize(fun, v0, jac=True)``.

        See :func:`adjoint.objective`.
        """
        from ._optimize import objective

        return objective(self, wrt=wrt, **kwargs)

    def residuals(self, wrt="params", **kwargs):
        """The residuals of the problem's :class:`adjoint.Observations` as a function of ``v`` (laid
        out as in :meth:`objective`), with their exact Jacobian: for
        ``scipy.optimize.least_squares(res, v0, jac=res.jac)``. See :class:`adjoint.Residuals`."""
        from ._observations import Residuals

        return Residuals(self, wrt=wrt, **kwargs)

    def nlp(self, **kwargs):
        """The nonlinear program of this problem for ``scipy.optimize.minimize``: ``x0``, ``fun``
        (value and gradient), ``constraints`` (``NonlinearConstraint`` with exact Jacobians),
        ``bounds`` and ``unpack(v)``. See :func:`adjoint.nlp` (same arguments as
        :func:`adjoint.solve_ocp`)."""
        from ._ocp import nlp

        return nlp(self, **kwargs)

    def __repr__(self):
        return f"ControlProblem({self.name}, state_dim={self.state_dim}, t_span={self.t_span}, steps={self.steps})"
