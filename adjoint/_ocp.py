"""``solve_ocp``: constrained optimal control with exact gradients and constraint Jacobians.

The objective and its gradient come from :func:`adjoint.solve_adjoint`, the constraints and their
Jacobian from :func:`adjoint.constraint_jacobian` (one backward sweep for all rows). Both are
handed to a constrained solver: scipy's ``SLSQP`` or ``trust-constr``, or IPOPT through CasADi
(the ``ipopt`` extra).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ._constraints import ConstraintJacobian, constraint_jacobian
from ._optimize import Objective
from ._problem import ControlProblem

__all__ = ["solve_ocp", "OCPResult", "nlp", "NLP"]

SOLVERS = ("slsqp", "trust-constr", "ipopt")


@dataclass(frozen=True)
class OCPResult:
    """The result of :func:`solve_ocp`.

    Attributes
    ----------
    success : bool
        The solver reported convergence and the constraints hold to ``tol`` (``options["tol"]``,
        default 1e-6; ``max_violation`` says how well).
    value : float
        The objective at the solution.
    controls : ndarray (steps, control_dim)
    params : ndarray (param_dim,) or None
        The optimised parameters (None when none were optimised).
    final_time : float
    trajectory : ndarray (steps + 1, state_dim)
    times : ndarray (steps + 1,)
    max_violation : float
        The largest constraint violation at the solution.
    nit : int
        Solver iterations.
    message : str
    multipliers : ndarray or None
        Lagrange multipliers of the constraint rows (in the rows of ``constraints``) where the solver
        gives them (trust-constr, ipopt), else None.
    constraints : ConstraintJacobian or None
        The constraints' values and Jacobian at the solution (None without constraints, and with
        ``segments > 1``, whose rows include the continuity conditions).
    nfev, njev : int
        Objective-gradient and constraint-Jacobian evaluations.
    solver : str
    seconds : float
        Wall time of the solve.
    history : list of float
        Objective values of the evaluations, in order.
    """

    success: bool
    value: float
    controls: np.ndarray
    params: np.ndarray | None
    final_time: float
    trajectory: np.ndarray
    times: np.ndarray
    max_violation: float
    nit: int
    message: str
    multipliers: np.ndarray | None
    constraints: ConstraintJacobian | None
    nfev: int
    njev: int
    solver: str
    seconds: float
    history: list = field(default_factory=list)


class _ConstraintFun:
    """Constraint values and Jacobian in the layout of the optimisation vector, one sweep per point."""

    def __init__(self, obj: Objective, method, checkpoint):
        self.obj, self.method, self.checkpoint = obj, method, checkpoint
        self._key: bytes | None = None
        self._res: ConstraintJacobian | None = None
        self.njev = 0

    def evaluate(self, v) -> ConstraintJacobian:
        v = np.asarray(v, dtype=np.float64)
        key = v.tobytes()
        if key != self._key:
            blocks = self.obj.unpack(v)
            kw = {k: blocks.get(k, self.obj._fixed[k]) for k in ("params", "controls", "x0")}
            self._res = constraint_jacobian(self.obj.problem, **kw, method=self.method, checkpoint=self.checkpoint)
            self._key = key
            self.njev += 1
        assert self._res is not None
        return self._res

    def values(self, v) -> np.ndarray:
        return self.evaluate(v).values.copy()

    def jac(self, v) -> np.ndarray:
        J = self.evaluate(v)
        parts = {"params": J.params, "controls": J.controls.reshape(J.controls.shape[0], -1), "x0": J.x0}
        return np.concatenate([parts[w] for w in self.obj.wrt], axis=1)


def _block_bounds(problem, obj, bounds):
    """``(lower, upper)`` arrays for the optimisation vector from ``bounds={"controls": (lo, hi), ...}``."""
    sizes, cdim = obj._sizes()
    bounds = dict(bounds or {})
    for k in bounds:
        if k not in obj.wrt:
            raise ValueError(f"`bounds` names {k!r}, which is not optimised (optimised: {obj.wrt})")
    los, his = [], []
    for w in obj.wrt:
        pair = bounds.get(w, (None, None))
        try:
            lo, hi = pair
        except (TypeError, ValueError):
            raise ValueError(f"`bounds[{w!r}]` must be a pair (lower, upper); got {pair!r}") from None
        shape = (problem.steps, cdim) if w == "controls" else (sizes[w],)
        out = []
        for nm, b, miss in (("lower", lo, -np.inf), ("upper", hi, np.inf)):
            arr = np.full(shape, miss) if b is None else np.asarray(b, dtype=np.float64)
            try:
                arr = np.broadcast_to(arr, shape)
            except ValueError:
                raise ValueError(
                    f"the {nm} bound of {w!r} must be a number or broadcast to {shape}; got shape {arr.shape}"
                ) from None
            if np.any(np.isnan(arr)):
                raise ValueError(f"the {nm} bound of {w!r} contains NaN; use -inf / inf (or None) for no bound")
            out.append(arr.ravel())
        if np.any(out[0] > out[1]):
            raise ValueError(f"`bounds[{w!r}]`: lower exceeds upper")
        los.append(out[0])
        his.append(out[1])
    return np.concatenate(los), np.concatenate(his)


def solve_ocp(
    problem,
    *,
    controls=None,
    params=None,
    x0=None,
    bounds=None,
    method=None,
    checkpoint="auto",
    solver="slsqp",
    segments=1,
    options=None,
    verbose=False,
) -> OCPResult:
    """Solve a constrained optimal-control problem: minimise the objective over the controls (and
    the parameters) subject to the problem's :class:`adjoint.Terminal` and :class:`adjoint.Path`
    constraints and box bounds.

    Parameters
    ----------
    problem : ControlProblem
        With ``constraints=[...]`` (an unconstrained problem is solved with the bounds only).
    controls : array_like (steps, control_dim)
        The initial guess of the controls (required when the problem has controls).
    params : array_like (param_dim,), optional
        The initial guess of the parameters; given, they are optimised too.
    x0 : array_like, optional
        Overrides ``problem.x0`` (held fixed).
    bounds : dict, optional
        ``{"controls": (lower, upper), "params": (lower, upper)}``: numbers or arrays broadcast to
        the block's shape (``(steps, control_dim)``, ``(param_dim,)``); None for no bound.
    method, checkpoint :
        As for :func:`adjoint.solve_adjoint`; the constraint Jacobians use the same schedule.
    solver : {"slsqp", "trust-constr", "ipopt"}
        scipy's SLSQP or trust-constr; or IPOPT through CasADi (``pip install -e ".[ipopt]"``).
    segments : int, default 1
        Multiple shooting with ``segments`` pieces of the horizon (cut at grid points): the states at
        the cuts become unknowns (started from a simulation with the initial controls) tied by
        continuity constraints, and the constraint Jacobian is a sparse matrix with one block per
        segment. Needed for unstable dynamics; it keeps the Jacobian sparse on long horizons
        (``"trust-constr"`` and ``"ipopt"`` use the sparsity; ``"slsqp"`` works on dense matrices).
    options : dict, optional
        ``tol`` (default 1e-6: optimality and feasibility), ``max_iter`` (default 500), and for IPOPT
        any IPOPT option by name.
    verbose : bool
        Print the solver's progress.

    Returns
    -------
    OCPResult

    Examples
    --------
    Move a double integrator from rest at 0 to rest at 1 in unit time with the least effort:

    >>> import numpy as np, adjoint
    >>> prob = adjoint.ControlProblem(lambda x, c, p, t: np.array([x[1], c[0]]), [0.0, 0.0], (0.0, 1.0), 50,
    ...     running_cost=lambda x, c, p, t: c[0] ** 2, control_dim=1,
    ...     constraints=[adjoint.Terminal(lambda x, p: x - np.array([1.0, 0.0]))])
    >>> res = adjoint.solve_ocp(prob, controls=np.zeros((50, 1)))
    >>> bool(res.success), round(res.value, 1)
    (True, 12.0)
    """
    t_start = time.perf_counter()
    if not isinstance(solver, str) or solver.lower() not in SOLVERS:
        raise ValueError(f"`solver` must be one of {SOLVERS}; got {solver!r}")
    solver = solver.lower()
    opts = dict(options or {})
    tol = float(opts.pop("tol", 1e-6))
    max_iter = int(opts.pop("max_iter", 500))
    b = _build(problem, controls, params, x0, bounds, method, checkpoint, segments)
    obj, cons, v0, lo, hi = b.obj, b.cons, b.v0, b.lo, b.hi
    if cons is not None:
        cons.evaluate(v0)  # errors in the constraints surface here, before the solver starts
    obj(v0)
    if solver == "ipopt":
        from ._ipopt import solve_ipopt

        v, nit, message, ok, mult = solve_ipopt(obj, cons, v0, lo, hi, tol, max_iter, opts, verbose)
    else:
        v, nit, message, ok, mult = _solve_scipy(solver, obj, cons, v0, lo, hi, tol, max_iter, opts, verbose)
    res = _result(b.problem, obj, cons, v, nit, message, ok, mult, solver, tol, b.method, t_start, b.shooting)
    if b.free is not None:  # the last parameter of the rewritten problem is the final time
        from ._freetime import times

        original, params_given = b.free
        assert res.params is not None
        T = float(res.params[-1])
        res = replace(
            res,
            params=res.params[:-1] if params_given else None,
            final_time=T,
            times=times(original, T),
        )
    return replace(res, seconds=time.perf_counter() - t_start)


@dataclass
class _Built:
    """The pieces of the NLP: objective and constraints (single or multiple shooting), start, bounds."""

    problem: ControlProblem  # the problem solved (the rewritten one for a free final time)
    obj: Any
    cons: Any
    v0: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    method: object
    shooting: Any = None
    free: tuple | None = None  # (the original problem, whether params were given)


def _build(problem, controls, params, x0, bounds, method, checkpoint, segments) -> _Built:
    from ._validate import _EULER
    from .checkpointing import as_schedule

    if not isinstance(problem, ControlProblem):
        raise TypeError(f"`problem` must be an adjoint.ControlProblem; got {type(problem).__name__}")
    if isinstance(segments, (bool, np.bool_)) or not isinstance(segments, (int, np.integer)) or segments < 1:
        raise ValueError(f"`segments` must be an integer >= 1; got {segments!r}")
    method = _EULER if method is None else method
    checkpoint = as_schedule(checkpoint)
    free = problem.final_time
    if free is not None:  # T joins the parameters of the problem rewritten on s in [0, 1]
        from ._freetime import scaled_problem

        q0 = 0 if params is None else int(np.size(params))
        if problem.param_dim and q0 != problem.param_dim:
            raise ValueError(f"`params` is required: the problem has param_dim={problem.param_dim}")
        t_lo, t_hi = free.bounds(problem.t_span[0])
        bounds = dict(bounds or {})
        plo, phi = bounds.pop("params", (None, None))
        plo = np.broadcast_to(-np.inf if plo is None else np.asarray(plo, dtype=np.float64), (q0,))
        phi = np.broadcast_to(np.inf if phi is None else np.asarray(phi, dtype=np.float64), (q0,))
        bounds["params"] = (np.append(plo, t_lo), np.append(phi, t_hi))
        ps = np.append(np.zeros(0) if params is None else np.asarray(params, dtype=np.float64).ravel(), free.guess)
        b = _build(scaled_problem(problem, q0), controls, ps, x0, bounds, method, checkpoint, segments)
        return replace(b, free=(problem, params is not None))
    wrt = []
    if params is not None and np.size(params) > 0:
        wrt.append("params")
    if controls is not None and np.size(controls) > 0:
        wrt.append("controls")
    elif problem.control_dim:
        raise ValueError(f"`controls` is required: the problem has control_dim={problem.control_dim}")
    if not wrt:
        raise ValueError("nothing to optimise: give `controls` (and/or `params`) as the initial guess")
    obj = Objective(problem, tuple(wrt), params=params, controls=controls, x0=x0, method=method, checkpoint=checkpoint)
    v0 = obj.initial()
    obj.unpack(v0)  # shape check of the initial guess
    lo, hi = _block_bounds(problem, obj, bounds)
    v0 = np.clip(v0, lo, hi)
    if segments > 1:
        from ._shooting import Shooting

        blocks = obj.unpack(v0)
        sh = Shooting(
            problem, segments, params=blocks.get("params", params), controls=blocks["controls"], x0=x0,
            method=method, checkpoint=checkpoint, optimise_params="params" in wrt,
        )  # fmt: skip
        lo, hi = sh.bounds(lo, hi)
        return _Built(problem, sh, sh.constraints(), sh.v0, lo, hi, method, shooting=sh)
    cons = _ConstraintFun(obj, method, checkpoint) if problem.constraints else None
    return _Built(problem, obj, cons, v0, lo, hi, method)


@dataclass(frozen=True)
class NLP:
    """The nonlinear program of a control problem, for a user who calls ``scipy.optimize.minimize``
    (:meth:`adjoint.ControlProblem.nlp`).

    Attributes
    ----------
    x0 : ndarray
        The initial unknown vector: ``[params], controls (steps * control_dim), [final time]``, then with
        ``segments > 1`` the segment start states.
    fun : callable
        ``fun(v) -> (value, gradient)``, for ``minimize(fun, x0, jac=True, ...)``.
    constraints : list of scipy.optimize.NonlinearConstraint
        With exact ``jac`` (sparse with ``segments > 1``); empty without constraints.
    bounds : scipy.optimize.Bounds
    """

    x0: np.ndarray
    fun: object
    constraints: list
    bounds: object
    _built: _Built

    def unpack(self, v) -> dict:
        """The blocks of ``v``: ``controls`` (steps, control_dim), ``params`` (or None), ``final_time``
        (a free final time, else the problem's), and ``states`` (the segment start states, or None)."""
        b = self._built
        v = np.asarray(v, dtype=np.float64)
        if b.shooting is not None:
            p, C, xi = b.shooting.unpack(v)
            out = {"params": p if b.shooting.optimise_params else None, "controls": C, "states": xi}
        else:
            blocks = b.obj.unpack(v)
            out = {"params": blocks.get("params"), "controls": blocks.get("controls"), "states": None}
        T = b.problem.t_span[1]
        if b.free is not None:
            T = float(out["params"][-1])
            out["params"] = out["params"][:-1] if b.free[1] else None
        out["final_time"] = T
        return out


def nlp(
    problem, *, controls=None, params=None, x0=None, bounds=None, method=None, checkpoint="auto", segments=1
) -> NLP:
    """The pieces :func:`solve_ocp` hands to a solver, for ``scipy.optimize.minimize`` (see :class:`NLP`).

    Same arguments as :func:`solve_ocp`.

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> from scipy.optimize import minimize
    >>> from adjoint.problems import bryson_denham as bd
    >>> prob = bd.make_problem(50)
    >>> P = prob.nlp(controls=np.zeros((50, 1)))
    >>> res = minimize(P.fun, P.x0, jac=True, method="SLSQP", bounds=P.bounds, constraints=P.constraints)
    >>> round(res.fun, 4), P.unpack(res.x)["controls"].shape
    (4.0364, (50, 1))
    """
    from scipy.optimize import Bounds, NonlinearConstraint

    b = _build(problem, controls, params, x0, bounds, method, checkpoint, segments)
    cons = []
    if b.cons is not None:
        c = b.cons
        J0 = c.evaluate(b.v0)
        eq = J0.lower == J0.upper
        # equalities and inequalities apart: SLSQP handles them separately (scipy warns otherwise)
        for rows in (np.flatnonzero(eq), np.flatnonzero(~eq)):
            if rows.size:
                cons.append(
                    NonlinearConstraint(
                        lambda v, rows=rows: c.values(v)[rows],
                        J0.lower[rows],
                        J0.upper[rows],
                        jac=lambda v, rows=rows: c.jac(v)[rows],
                    )
                )
    return NLP(x0=b.v0.copy(), fun=b.obj, constraints=cons, bounds=Bounds(b.lo, b.hi), _built=b)


def _dense(J):
    return J.toarray() if hasattr(J, "toarray") else J


class _Progress:
    """Prints one line per solver iteration: objective, largest constraint violation, wall time."""

    def __init__(self, obj, cons, verbose):
        self.obj, self.cons, self.verbose = obj, cons, verbose
        self.it = -1  # the first call shows the initial guess as iteration 0
        self.t0 = time.perf_counter()

    def __call__(self, v, *_):
        self.it += 1
        if not self.verbose:
            return
        if self.it <= 10 or (self.it <= 100 and self.it % 10 == 0) or self.it % 100 == 0:
            viol = self.cons.evaluate(v).max_violation if self.cons is not None else 0.0
            print(
                f"  iter {self.it:4d}   objective {self.obj.value(v):.10e}   violation {viol:.2e}   "
                f"{time.perf_counter() - self.t0:7.3f} s",
                flush=True,
            )


def _solve_scipy(solver, obj, cons, v0, lo, hi, tol, max_iter, opts, verbose):
    from scipy.optimize import Bounds, NonlinearConstraint, minimize

    progress = _Progress(obj, cons, verbose)
    progress(v0)

    bnds = Bounds(lo, hi) if np.any(np.isfinite(lo)) or np.any(np.isfinite(hi)) else None
    if solver == "slsqp":
        constraints = []
        if cons is not None:
            J0 = cons.evaluate(v0)
            clo, chi = J0.lower, J0.upper
            eq = np.flatnonzero(clo == chi)
            lo_rows = np.flatnonzero((clo != chi) & np.isfinite(clo))
            hi_rows = np.flatnonzero((clo != chi) & np.isfinite(chi))
            if eq.size:
                constraints.append(
                    {
                        "type": "eq",
                        "fun": lambda v: cons.values(v)[eq] - clo[eq],
                        "jac": lambda v: _dense(cons.jac(v))[eq],
                    }
                )
            if lo_rows.size:
                constraints.append(
                    {
                        "type": "ineq",
                        "fun": lambda v: cons.values(v)[lo_rows] - clo[lo_rows],
                        "jac": lambda v: _dense(cons.jac(v))[lo_rows],
                    }
                )
            if hi_rows.size:
                constraints.append(
                    {
                        "type": "ineq",
                        "fun": lambda v: chi[hi_rows] - cons.values(v)[hi_rows],
                        "jac": lambda v: -_dense(cons.jac(v))[hi_rows],
                    }
                )
        res = minimize(
            obj,
            v0,
            jac=True,
            method="SLSQP",
            bounds=bnds,
            constraints=constraints,
            callback=progress,
            options={"ftol": tol, "maxiter": max_iter, **opts},
        )
        return res.x, int(res.nit), str(res.message), bool(res.success), None
    constraints = []
    if cons is not None:
        J0 = cons.evaluate(v0)
        from scipy.sparse import csr_matrix

        zero = csr_matrix((v0.shape[0], v0.shape[0]))
        # the constraints' curvature is not available (second order is a later capability): their
        # Hessian is taken as zero, with BFGS on the objective. A quasi-Newton matrix per constraint
        # row (scipy's default) costs O(rows * n^2) per iteration and stalls on long horizons.
        constraints.append(NonlinearConstraint(cons.values, J0.lower, J0.upper, jac=cons.jac, hess=lambda v, w: zero))
    from scipy.optimize import BFGS

    with warnings.catch_warnings():
        # scipy's hint that a quasi-Newton update saw no change of the gradient (linear problems)
        warnings.filterwarnings("ignore", message="delta_grad == 0.0", category=UserWarning)
        res = _trust_constr(minimize, BFGS, obj, v0, bnds, constraints, tol, max_iter, progress, opts)
    mult = None
    if cons is not None and getattr(res, "v", None):
        mult = np.asarray(res.v[0], dtype=np.float64)
    return res.x, int(res.nit), str(res.message), bool(res.success), mult


def _trust_constr(minimize, BFGS, obj, v0, bnds, constraints, tol, max_iter, progress, opts):
    return minimize(
        obj,
        v0,
        jac=True,
        hess=BFGS(),
        method="trust-constr",
        bounds=bnds,
        constraints=constraints,
        callback=progress,
        options={"gtol": tol, "xtol": tol * 1e-3, "maxiter": max_iter, **opts},
    )


def _result(problem, obj, cons, v, nit, message, ok, mult, solver, tol, method, t_start, shooting=None):
    from ._solve import simulate

    value, _ = obj(v)
    J = cons.evaluate(v) if cons is not None else None
    viol = J.max_violation if J is not None else 0.0
    if shooting is not None:  # the segments, each from its start state
        p, C, _ = shooting.unpack(v)
        kw = {"params": p if shooting.optimise_params else None, "controls": C}
        traj = shooting.trajectory(v)
        if not isinstance(J, ConstraintJacobian):
            J = None  # the rows of the shooting formulation: see max_violation
    else:
        blocks = obj.unpack(v)
        kw = {k: blocks.get(k, obj._fixed[k]) for k in ("params", "controls", "x0")}
        _, traj = simulate(problem, params=kw["params"], controls=kw["controls"], x0=kw["x0"], method=method)
    C = kw["controls"]
    controls = (
        np.array(C, dtype=np.float64).reshape(problem.steps, -1) if C is not None else np.zeros((problem.steps, 0))
    )
    return OCPResult(
        success=bool(ok) and math.isfinite(value) and viol <= tol,
        value=float(value),
        controls=controls,
        params=None if kw["params"] is None or not np.size(kw["params"]) else np.array(kw["params"], dtype=np.float64),
        final_time=problem.t_span[1],
        trajectory=traj,
        times=problem.times,
        max_violation=float(viol),
        nit=nit,
        message=message,
        multipliers=mult,
        constraints=J,
        nfev=obj.nfev,
        njev=cons.njev if cons is not None else 0,
        solver=solver,
        seconds=time.perf_counter() - t_start,
        history=list(obj.history),
    )
