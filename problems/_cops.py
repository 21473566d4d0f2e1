"""Shared driver of the COPS 3.0 parameter-estimation problems gasoil (#12) and methanol (#13).

Each problem module describes its data once as a :class:`Cops` (name, right-hand side, initial
state, observation times and data, start, published optimum, grid unit, ...), and its public
``make_problem``, ``residuals``, ``solve`` and ``compare_fd`` are thin calls into it: the same
least_squares fit (method ``trf``, bounds ``theta >= 0``, default tolerances), the same progress
lines, figure and JSON summary, and the same exact-Jacobian vs finite-difference comparison.
This module is private: it is not a ready problem (``adjoint.cli.PROBLEMS`` does not list it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

import adjoint

from . import _common

#: theta >= 0 (no upper bounds), as ``least_squares(bounds=...)``
BOUNDS = (0.0, np.inf)


def check_steps(steps, unit, t_end):
    """Refuse ``steps`` unless it is a positive multiple of ``unit`` (every observation time a grid point)."""
    if not isinstance(steps, (int, np.integer)) or steps < 1 or steps % unit:
        raise ValueError(
            f"steps must be a positive multiple of {unit} (the observation times are multiples of "
            f"{t_end}/{unit}, and must be grid points); got {steps!r}"
        )


@dataclass(frozen=True)
class Cops:
    """The data of one COPS fit: ``y' = f(y, c, theta, t)`` on ``[0, t_end]`` from the fixed ``x0``,
    observed as ``data`` at ``times`` (multiples of ``t_end / grid_unit``); start ``theta0``;
    ``published``: the COPS 3.0 optimal sum of squares (no factor 1/2)."""

    name: str
    f: Callable
    x0: np.ndarray
    t_end: float
    times: np.ndarray
    data: np.ndarray
    theta0: np.ndarray
    published: float
    grid_unit: int
    default_steps: int
    labels: tuple

    @property
    def param_names(self) -> tuple:
        return tuple(f"theta{i}" for i in range(1, self.theta0.size + 1))

    def make_problem(self, steps) -> adjoint.ControlProblem:
        """The problem on ``steps`` steps (a multiple of ``grid_unit``); unknowns: params."""
        check_steps(steps, self.grid_unit, self.t_end)
        return adjoint.ControlProblem(
            self.f, self.x0, (0.0, self.t_end), steps, observations=adjoint.Observations(self.times, self.data),
            param_dim=self.theta0.size, name=self.name,
        )  # fmt: skip

    def residuals(self, steps=None, method=None, prob=None) -> adjoint.Residuals:
        """``r(theta) = y(times; theta) - data`` (flattened) with ``.jac``; RK4 by default."""
        prob = self.make_problem(self.default_steps if steps is None else steps) if prob is None else prob
        return prob.residuals(wrt="params", params=self.theta0, method=method or adjoint.RK4())

    def solve(self, output_dir, steps, method, max_iter, verbose):
        """The body of the modules' ``solve``: fit from ``theta0``, print, plot and save."""
        method = _common.method_from_name(method) or adjoint.RK4()
        prob = self.make_problem(self.default_steps if steps is None else steps)
        res = self.residuals(method=method, prob=prob)
        return _solve(self, prob, res, method=method, max_iter=max_iter, verbose=verbose, output_dir=output_dir)

    def compare_fd(self, steps, repeats, verbose, theta0):
        """The body of the modules' ``compare_fd`` (from ``theta0``, by default the COPS start)."""
        res = self.residuals(steps)
        start = self.theta0 if theta0 is None else np.asarray(theta0, dtype=np.float64)
        return _compare_fd(self.name, res, start, self.published, repeats=repeats, verbose=verbose)


class _Progress:
    """``res`` with a history: one row per Jacobian evaluation (``trf`` evaluates the Jacobian at
    the start and after every accepted step, so one row per iteration), printed when verbose."""

    def __init__(self, res, verbose):
        self.res, self.verbose = res, verbose
        self.history = []
        self.nfev = self.njev = 0
        self._key = self._r = None
        self.t0 = time.perf_counter()

    def __call__(self, v):
        self.nfev += 1
        r = self.res(v)
        self._key, self._r = np.asarray(v, dtype=np.float64).tobytes(), r
        return r

    def jac(self, v):
        self.njev += 1
        J = self.res.jac(v)
        v = np.asarray(v, dtype=np.float64)
        r = self._r if v.tobytes() == self._key else self.res(v)
        g = J.T @ r
        # least_squares' first-order optimality for lower bounds 0: |g_i| * (x_i if g_i > 0 else 1)
        opt = float(np.max(np.abs(g) * np.where(g > 0, v, 1.0)))
        row = {
            "iteration": len(self.history),
            "sum_of_squares": float(r @ r),
            "optimality": opt,
            "nfev": self.nfev,
            "elapsed": time.perf_counter() - self.t0,
        }
        self.history.append(row)
        if self.verbose:
            print(
                f"  iter {row['iteration']:3d}   sum of squares {row['sum_of_squares']:.10e}   "
                f"optimality {opt:.3e}   residual evaluations {self.nfev:3d}   {row['elapsed']:6.3f} s",
                flush=True,
            )
        return J


def _fit(res, theta0, *, jac="exact", max_nfev=None, verbose=False):
    """``least_squares(res, theta0, jac, bounds=(0, inf))`` (default tolerances); ``jac="exact"``:
    ``res.jac``, else a least_squares option such as ``"2-point"``. Returns ``(result, history,
    seconds)`` (history only with the exact Jacobian)."""
    from scipy.optimize import least_squares

    prog = _Progress(res, verbose)
    t0 = time.perf_counter()
    if jac == "exact":
        sol = least_squares(prog, theta0, jac=prog.jac, bounds=BOUNDS, method="trf", max_nfev=max_nfev)
    else:
        sol = least_squares(res, theta0, jac=jac, bounds=BOUNDS, method="trf", max_nfev=max_nfev)
    return sol, prog.history, time.perf_counter() - t0


def _solve(cops, prob, res, *, method, max_iter, verbose, output_dir):
    """Fit, print, plot and save (the body of ``solve`` of gasoil and methanol)."""
    name, theta0, published = cops.name, cops.theta0, cops.published
    t0 = time.perf_counter()
    res(theta0), res.jac(theta0)  # compile outside the timed fit
    setup = time.perf_counter() - t0
    if verbose:
        print(f"  {prob.steps} RK4 steps, compiled in {setup:.2f} s; least_squares (trf) from theta0 = {theta0}")
    sol, hist, seconds = _fit(res, theta0, max_nfev=max_iter, verbose=verbose)
    theta = sol.x
    ssq = 2.0 * float(sol.cost)
    rel = (ssq - published) / published
    if verbose:
        print(f"  {sol.message}  ({sol.nfev} residual, {sol.njev} Jacobian evaluations, {seconds:.3f} s)")
        print(f"  theta = {np.array2string(theta, precision=6)}")
        print(f"  sum of squares {ssq:.8e}   published (COPS 3.0) {published:.5e}   relative difference {rel:.1e}")
        if sol.status <= 0:
            print("  NOT CONVERGED: the result above is not a solution (raise --max-iter)")
    _, traj = adjoint.simulate(prob, params=theta, method=method)
    obs = prob.observations
    r = traj[obs.indices(*prob.t_span, prob.steps)] - obs.data

    fig, ax = _common.figure()
    t = prob.times
    for i, lab in enumerate(cops.labels):
        ax[0].plot(obs.times, obs.data[:, i], "o", ms=4, color=f"C{i}", label=f"{lab} (data)")
        ax[0].plot(t, traj[:, i], color=f"C{i}", label=f"{lab} (fit)")
        ax[1].plot(obs.times, r[:, i], "o-", ms=4, color=f"C{i}", label=lab)
    ax[0].set_xlabel("t")
    ax[0].set_title(f"{name}: data and fitted trajectories")
    ax[0].legend(fontsize=7)
    ax[1].axhline(0.0, color="k", lw=0.5)
    ax[1].set_xlabel("t")
    ax[1].set_title("residuals y(t_j) - data_j")
    ax[1].legend(fontsize=7)
    it = [h["iteration"] for h in hist]
    ax[2].semilogy(it, [h["sum_of_squares"] for h in hist], "o-", ms=3, label="least_squares")
    ax[2].axhline(published, color="k", ls="--", lw=0.8, label=f"COPS 3.0: {published:.5e}")
    ax[2].set_xlabel("least_squares iteration (trf)")
    ax[2].set_ylabel("sum of squares")
    ax[2].set_title("objective history")
    ax[2].legend(fontsize=7)
    ax[2].grid(True, which="both", alpha=0.3)
    summary = {
        "problem": name,
        "steps": prob.steps,
        "method": repr(method),
        "objective": ssq,
        "sum_of_squares": ssq,
        "least_squares_cost": float(sol.cost),
        "published_optimum": published,
        "relative_difference": rel,
        "theta": dict(zip(cops.param_names, theta.tolist())),
        "theta0": theta0,
        "optimality": float(sol.optimality),
        "active_mask": sol.active_mask,
        "status": int(sol.status),
        "message": sol.message,
        "nfev": int(sol.nfev),
        "njev": int(sol.njev),
        "iterations": len(hist) - 1,
        "seconds": seconds,
        "compile_seconds": setup,
        "history": hist,
    }
    return _common.save(output_dir, name, fig, summary)


def _compare_fd(name, res, theta0, published, *, repeats=3, verbose=True):
    """least_squares with ``res.jac`` vs ``jac="2-point"`` (forward differences of ``res``): nfev,
    njev, residual sweeps, median wall time of ``repeats`` runs after a warm-up run, ``2 * cost``."""
    rows = {}
    for label, jac in (("exact Jacobian (res.jac)", "exact"), ("finite differences (2-point)", "2-point")):
        _fit(res, theta0, jac=jac)  # warm-up (compilation)
        times = []
        for _ in range(repeats):
            n0 = res.nfev
            sol, _, sec = _fit(res, theta0, jac=jac)
            times.append(sec)
            sweeps = res.nfev - n0
        ssq = 2.0 * float(sol.cost)
        rows[label] = {
            "nfev": int(sol.nfev),
            "njev": int(sol.njev),
            "residual_evaluations": int(sweeps),
            "seconds": float(np.median(times)),
            "sum_of_squares": ssq,
            "relative_difference": (ssq - published) / published,
            "theta": sol.x,
        }
    if verbose:
        print(f"{name}: least_squares (trf, theta >= 0) from theta0 = {theta0}, {res.problem.steps} RK4 steps")
        print(
            f"  {'Jacobian':30s} {'nfev':>5s} {'njev':>5s} {'r(v) calls':>10s} {'time [ms]':>10s} {'2*cost':>16s} {'rel. diff.':>10s}"
        )
        for label, row in rows.items():
            print(
                f"  {label:30s} {row['nfev']:5d} {row['njev']:5d} {row['residual_evaluations']:10d} "
                f"{1e3 * row['seconds']:10.2f} {row['sum_of_squares']:16.10e} {row['relative_difference']:10.1e}"
            )
        print(f"  published (COPS 3.0) {published:.5e}; time: median of {repeats} runs after a warm-up run")
    return rows
