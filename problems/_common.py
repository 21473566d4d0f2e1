"""Shared driver for the ready problems: L-BFGS-B with progress lines, a PNG and a JSON summary.

Every problem's ``solve`` ends with :func:`save`, which writes the files and returns the
:class:`adjoint.cli.ProblemResult` that ``python -m adjoint solve`` reads.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

import adjoint
from adjoint.cli import ProblemResult

METHODS = {"euler": adjoint.Euler, "heun": adjoint.Heun, "rk4": adjoint.RK4}


def method_from_name(name):
    """``"euler" | "heun" | "rk4"`` (or a Method instance) -> Method."""
    if name is None or isinstance(name, adjoint.integrators.Method):
        return name
    try:
        return METHODS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}") from None


class Counted:
    """``fun(v) -> (value, grad)`` with an evaluation counter (``nfev``) and a one-entry cache, so
    that :func:`lbfgs` can print progress without triggering extra solves."""

    def __init__(self, fun):
        self.fun, self.nfev, self._key, self._res = fun, 0, None, None

    def __call__(self, v):
        v = np.asarray(v, dtype=np.float64)
        if v.tobytes() != self._key:
            self._key, self._res = v.tobytes(), self.fun(v)
            self.nfev += 1
        value, grad = self._res
        return value, np.array(grad, dtype=np.float64)


class ArgminData:
    """Shared part of the argmin problems (ridge, logistic): sizes and the hand-written derivatives
    as keyword arguments of :func:`adjoint.solve_argmin`. Subclasses are dataclasses with fields
    ``A`` and ``energy_grad, energy_hvp, energy_mixed_vjp, loss_grad``."""

    @property
    def n(self) -> int:
        """Number of features (the size of ``x``)."""
        return self.A.shape[1]

    def derivatives(self) -> dict:
        """Keyword arguments of :func:`adjoint.solve_argmin` with the hand-written derivatives."""
        return dict(
            energy_grad=self.energy_grad,
            energy_hvp=self.energy_hvp,
            energy_mixed_vjp=self.energy_mixed_vjp,
            loss_grad=self.loss_grad,
        )


SEPARABLE_METHODS = {"leapfrog": adjoint.Leapfrog, "verlet": adjoint.VelocityVerlet}


def separable_method_from_name(name, problem="separable problem"):
    """``"leapfrog" | "verlet"`` (or a Leapfrog / VelocityVerlet instance; None -> Leapfrog)."""
    if name is None:
        return adjoint.Leapfrog()
    if isinstance(name, (adjoint.Leapfrog, adjoint.VelocityVerlet)):
        return name
    if isinstance(name, str) and name.lower() in SEPARABLE_METHODS:
        return SEPARABLE_METHODS[name.lower()]()
    raise ValueError(f"unknown method {name!r} for the {problem}; choose one of {sorted(SEPARABLE_METHODS)}")


def _shown(i):
    """Progress lines of long runs: iterations 0-9, every 10th up to 100, then every 100th."""
    return i < 10 or (i < 100 and i % 10 == 0) or i % 100 == 0


def progress_line(row):
    """Print one progress row: iteration, objective, gradient norm, elapsed seconds."""
    print(
        f"  iter {row['iteration']:4d}   objective {row['objective']:.10e}   "
        f"|grad| {row['grad_norm']:.3e}   {row['elapsed']:7.3f} s",
        flush=True,
    )


def progress_recorder(history, t0, verbose):
    """``record(value, grad)``: append the row ``{iteration, objective, grad_norm, elapsed}`` (seconds
    since ``t0``) to ``history`` and, when verbose, print it (iterations 0-9, every 10th up to 100,
    then every 100th; see :func:`progress_line`)."""

    def record(val, g):
        row = {
            "iteration": len(history),
            "objective": float(val),
            "grad_norm": float(np.linalg.norm(g)),
            "elapsed": time.perf_counter() - t0,
        }
        history.append(row)
        if verbose and _shown(row["iteration"]):
            progress_line(row)

    return record


class Memo:
    """``fun(v) -> (value, grad)`` remembering its last few points, so that callbacks asking for the
    gradient at an iterate (also after a rejected trust-region step, which is not the last point
    run) run no extra sweep."""

    def __init__(self, fun, size=4):
        self.fun, self.size, self._store = fun, size, {}

    def __call__(self, v):
        v = np.asarray(v, dtype=np.float64)
        key = v.tobytes()
        got = self._store.get(key)
        if got is None:
            val, g = self.fun(v)
            got = (float(val), np.array(g, dtype=np.float64))
            if len(self._store) >= self.size:
                self._store.pop(next(iter(self._store)))
            self._store[key] = got
        return got[0], got[1].copy()


def lbfgs(fun, v0, *, bounds=None, max_iter=200, verbose=True, gtol=1e-9, ftol=1e-13):
    """Minimise an :class:`adjoint.Objective` with L-BFGS-B and print its progress.

    Progress lines (``verbose``): iterations 0-9, every 10th up to 100, then every 100th, and the
    last one. Returns ``(scipy_result, history)`` where history is a list of dicts with the
    iteration, objective, gradient norm and elapsed seconds (every iteration).
    """
    t0 = time.perf_counter()
    history = []
    record = progress_recorder(history, t0, verbose)
    record(*fun(v0))
    from scipy.optimize import minimize  # here: problems that do not optimise skip importing it

    res = minimize(
        fun,
        v0,
        jac=True,
        method="L-BFGS-B",
        bounds=bounds,
        callback=lambda xk: record(*fun(np.asarray(xk))),
        options={"maxiter": max_iter, "gtol": gtol, "ftol": ftol, "maxcor": 20},
    )
    if verbose:
        if not _shown(history[-1]["iteration"]):
            progress_line(history[-1])
        print(
            f"  {res.message}  ({res.nit} iterations, {fun.nfev} gradient evaluations, "
            f"{time.perf_counter() - t0:.2f} s)"
        )
    return res, history


def jsonable(o):
    """``o`` with numpy arrays and scalars replaced by lists and Python numbers (tuples by lists)."""
    if isinstance(o, dict):
        return {k: jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return o


def save(output_dir, name, fig, summary) -> ProblemResult:
    """Write ``<name>.png`` (from ``fig``) and ``<name>.json`` (from ``summary``) into ``output_dir``.

    Returns the :class:`~adjoint.cli.ProblemResult` of the run: ``summary`` made JSON-able (what
    the JSON file holds) and the paths of both files.
    """
    os.makedirs(output_dir, exist_ok=True)
    png = os.path.join(output_dir, f"{name}.png")
    js = os.path.join(output_dir, f"{name}.json")
    fig.savefig(png, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    summary = jsonable(summary)
    with open(js, "w") as fh:
        json.dump(summary, fh, indent=2)
    return ProblemResult(name=name, summary=summary, figure=png, json=js)


def history_axis(ax, history):
    it = [h["iteration"] for h in history]
    ax.semilogy(it, [max(h["objective"], 1e-300) for h in history], "o-", ms=3)
    ax.set_xlabel("L-BFGS-B iteration")
    ax.set_ylabel("objective")
    ax.set_title("objective history")
    ax.grid(True, which="both", alpha=0.3)


def figure(ncols=3, width=15, height=4):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width, height))
    return fig, axes


def solve_ocp_and_save(
    name, prob, controls, *, output_dir, solver, max_iter, verbose, bounds=None, segments=1, tol=1e-8,
    state_labels=(), control_labels=(), reference=None, reference_label="", summary_extra=None,
):  # fmt: skip
    """Solve a constrained problem with :func:`adjoint.solve_ocp`, print the outcome, plot the states,
    the controls and the objective history, and save ``<name>.png`` / ``<name>.json``.

    ``reference``: the published or analytic optimum of ``result_key`` (``"objective"`` or
    ``"final_time"``), given as ``(key, value)``; the summary records the relative gap to it.
    """
    res = adjoint.solve_ocp(
        prob, controls=controls, bounds=bounds, solver=solver, segments=segments,
        options={"tol": tol, "max_iter": max_iter}, verbose=verbose,
    )  # fmt: skip
    summary = {
        "problem": name,
        "steps": prob.steps,
        "solver": solver,
        "segments": segments,
        "objective": res.value,
        "final_time": res.final_time,
        "success": res.success,
        "max_violation": res.max_violation,
        "iterations": res.nit,
        "gradients": res.nfev,
        "constraint_jacobians": res.njev,
        "seconds": res.seconds,
        "message": res.message,
        "history": res.history,
    }
    if reference is not None:
        key, ref = reference
        summary["reference"] = {"quantity": key, "value": ref, "source": reference_label}
        summary["relative_gap"] = abs(summary[key] - ref) / abs(ref)
    summary.update(summary_extra or {})
    if verbose:
        line = f"  {res.message} ({res.nit} iterations, {res.nfev} gradients, {res.njev} constraint Jacobians, {res.seconds:.2f} s)"
        line += (
            f"\n  objective {res.value:.10f}   final time {res.final_time:.8f}   max violation {res.max_violation:.1e}"
        )
        if reference is not None:
            line += f"\n  {reference[0]} {summary[reference[0]]:.8f}   {reference_label} {reference[1]:.8f}   relative gap {summary['relative_gap']:.2e}"
        if not res.success:
            line += "\n  NOT CONVERGED: the result above is not a solution"
        print(line)
    fig, ax = figure()
    t = res.times
    for i, lab in enumerate(state_labels or [f"x{i}" for i in range(res.trajectory.shape[1])]):
        ax[0].plot(t, res.trajectory[:, i], label=lab)
    ax[0].set_xlabel("t")
    ax[0].set_title("state")
    ax[0].legend(fontsize=8)
    for i, lab in enumerate(control_labels or [f"u{i}" for i in range(res.controls.shape[1])]):
        ax[1].step(t[:-1], res.controls[:, i], where="post", label=lab)
    ax[1].set_xlabel("t")
    ax[1].set_title(f"controls (solve_ocp, {solver})")
    ax[1].legend(fontsize=8)
    ax[2].plot(np.arange(len(res.history)), res.history, "o-", ms=3)
    ax[2].set_xlabel("evaluation")
    ax[2].set_title("objective")
    return res, save(output_dir, name, fig, summary)
