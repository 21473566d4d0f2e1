"""Free final time: ``t_span=(t0, adjoint.Free(guess, lower, upper))``.

The horizon ``T`` becomes a decision variable of :func:`adjoint.solve_ocp` by the classical change
of time ``t = t0 + s (T - t0)``, ``s in [0, 1]``: the problem is rewritten on the fixed grid
``s_k = k / K`` with ``T`` appended to the parameters,

    dx/ds = (T - t0) u(x, c, p, t0 + s (T - t0)),   l_s = (T - t0) l(x, c, p, t0 + s (T - t0)).

A step of the rewritten problem is the original step with ``tau = (T - t0) / K`` (the same
arithmetic up to rounding), so ``dJ/dT`` and the constraints' ``dg/dT`` are the parameter
gradient of one ordinary sweep: the derivative of every step with respect to ``tau``, of the
running-cost quadrature and of time-dependent dynamics all come out of the traced derivatives of
the rewritten functions. The rewriting needs the problem's functions as plain numpy functions
(traced); a hand-written ``Dynamics``/``Cost``/constraint gets a clear error.
"""

from __future__ import annotations

import math

import numpy as np

from ._problem import _arity

__all__ = ["Free", "scaled_problem"]


class Free:
    """A free final time for ``ControlProblem(t_span=(t0, adjoint.Free(guess, lower, upper)))``.

    Parameters
    ----------
    guess : float
        The initial guess of the final time (also the final time of ``solve_adjoint`` and
        ``simulate`` on the problem).
    lower, upper : float, optional
        Bounds of the final time; ``lower`` defaults to ``t0`` (exclusive: a horizon of zero
        length is never tried, the solver keeps ``T >= t0 + 1e-9 (guess - t0)``), ``upper`` to
        infinity.

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> prob = adjoint.ControlProblem(lambda x, c, p, t: np.array([x[1], c[0]]), [0.0, 0.0],
    ...     (0.0, adjoint.Free(3.0, lower=0.5, upper=10.0)), 50, running_cost=lambda x, c, p, t: 1.0,
    ...     control_dim=1, constraints=[adjoint.Terminal(lambda x, p: x - np.array([1.0, 0.0]))])
    >>> prob.t_span, prob.final_time
    ((0.0, 3.0), Free(guess=3.0, lower=0.5, upper=10.0))
    """

    def __init__(self, guess, lower=None, upper=None):
        try:
            self.guess = float(guess)
            self.lower = None if lower is None else float(lower)
            self.upper = math.inf if upper is None else float(upper)
        except (TypeError, ValueError):
            raise TypeError(f"Free(guess, lower, upper) takes numbers; got {guess!r}, {lower!r}, {upper!r}") from None
        for nm, v in (("guess", self.guess), ("lower", self.lower), ("upper", self.upper)):
            if v is not None and math.isnan(v):
                raise ValueError(f"Free: `{nm}` is NaN")
        if not math.isfinite(self.guess):
            raise ValueError(f"Free: `guess` must be finite; got {self.guess}")
        if self.lower is not None and self.lower > self.guess:
            raise ValueError(f"Free: lower={self.lower} exceeds guess={self.guess}")
        if self.guess > self.upper:
            raise ValueError(f"Free: guess={self.guess} exceeds upper={self.upper}")

    def bounds(self, t0: float):
        """``(lower, upper)`` of the final time for a problem starting at ``t0`` (checked)."""
        lo = t0 + 1e-9 * (self.guess - t0) if self.lower is None else self.lower
        if not lo > t0:
            raise ValueError(f"Free: lower={lo} must exceed t0={t0} (a horizon of positive length)")
        return lo, self.upper

    def __repr__(self):
        return f"Free(guess={self.guess}, lower={self.lower}, upper={self.upper})"


def _plain(label, fn, hand_written=False):
    from ._problem import Cost, Dynamics

    if hand_written or isinstance(fn, (Dynamics, Cost)):
        raise ValueError(
            f"a free final time rewrites the problem's functions (t = t0 + s (T - t0)) and needs them as plain "
            f"numpy functions, traced by adjoint.ad; {label} is hand-written. Write it as a plain function "
            "fn(x, c, p, t) returning an array, or fix the final time."
        )
    return fn


def scaled_problem(problem, param_dim: int):
    """The problem rewritten on ``s in [0, 1]`` with ``T`` as its last parameter (memoised).

    ``param_dim`` is the original problem's number of parameters (0 when it has none)."""
    from ._constraints import Path, Terminal
    from ._problem import ControlProblem

    key = ("free_time", param_dim)
    got = problem._cache.derived.get(key)
    if got is not None:
        return got
    t0 = problem.t_span[0]
    q = param_dim
    f = _plain("the dynamics", problem.dynamics)

    def dynamics(x, c, ps, s):
        span = ps[q] - t0
        return span * f(x, c, ps[:q], t0 + s * span)

    def wrap_cost(label, fn, running):
        if fn is None:
            return None
        fn = _plain(label, fn)
        two = _arity(fn) == 2
        if running:

            def scaled(x, c, ps, s):
                span = ps[q] - t0
                v = fn(x, ps[:q]) if two else fn(x, c, ps[:q], t0 + s * span)
                return span * v

        else:

            def scaled(x, c, ps, s):
                return fn(x, ps[:q]) if two else fn(x, c, ps[:q], ps[q])

        scaled.__name__ = getattr(fn, "__name__", label)
        return scaled

    cons: list = []
    for c in problem.constraints:
        if c.vjp is not None:
            _plain(f"the {c.kind} constraint {c.name!r}", c, hand_written=True)
        if isinstance(c, Terminal):
            cons.append(Terminal(_terminal_scaled(c.fn, q), c.lower, c.upper, name=c.name))
        else:
            cons.append(Path(_path_scaled(c.fn, q, t0), c.lower, c.upper, every=c.every, name=c.name))
    # Dynamics given as a plain function carry no control_dim: the original's declared one, if any
    sp = ControlProblem(
        dynamics,
        problem.x0,
        (0.0, 1.0),
        problem.steps,
        terminal_cost=wrap_cost("the terminal cost", problem.terminal_cost, False),
        running_cost=wrap_cost("the running cost", problem.running_cost, True),
        control_dim=problem.control_dim,
        param_dim=q + 1,
        name=f"{problem.name} (free final time)",
        constraints=cons,
    )
    problem._cache.derived[key] = sp
    return sp


def _terminal_scaled(fn, q):
    two = _arity(fn) == 2

    def g(x, c, ps, s):
        return fn(x, ps[:q]) if two else fn(x, c, ps[:q], ps[q])

    return g


def _path_scaled(fn, q, t0):
    def h(x, c, ps, s):
        return fn(x, c, ps[:q], t0 + s * (ps[q] - t0))

    return h


def times(problem, T: float) -> np.ndarray:
    """The grid ``t0 + k (T - t0) / K`` of a free-time problem at final time ``T``."""
    t0 = problem.t_span[0]
    return t0 + (T - t0) * np.arange(problem.steps + 1) / problem.steps
