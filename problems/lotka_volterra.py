"""Lotka-Volterra parameter fitting to noisy synthetic observations.

Model (predator-prey), state ``x = (prey, predator)``, parameters ``p = (a, b, d, g)``::

    prey'     = a * prey - b * prey * predator
    predator' = d * prey * predator - g * predator

Data: the true model (``TRUE_PARAMS``, ``TRUE_X0``) is integrated finely on ``[0, T_END]`` and
observed at ``N_OBS`` equally spaced times with 5% multiplicative log-normal noise (fixed seed).

Loss (a documented equivalent of a sum over observation times): the observations are joined by
linear interpolation ``y(t)`` and the fit minimises the time-averaged squared misfit::

    J(p, x0) = tau * sum_k 0.5 |x_k - y(t_k)|^2 / T_END  +  0.5 |x_K - y(T_END)|^2

so every step contributes, and the minimiser approaches the true parameters as the noise shrinks.

Second-order variant (:func:`make_observed_problem`): the same model as a plain numpy function
(:func:`field`, traced, so that the Hessian-vector products exist) with the 21 observations as
``adjoint.Observations(T_OBS, Y_OBS)``, i.e. the sum-of-squares objective
``J(p, x0) = 1/2 sum_j |x(t_j) - y_j|^2`` at the observation times themselves (grid points when
``steps`` is a multiple of 20). ``solve(solver="least_squares")`` fits it with
``scipy.optimize.least_squares`` and the exact residual Jacobian, ``solve(solver="trust-krylov")``
with Newton-Krylov steps on exact Hessian-vector products; :func:`compare_newton` measures
trust-krylov against L-BFGS-B on it.
"""

from __future__ import annotations

import time

import numpy as np
from numba import njit

import adjoint

from . import _common

TRUE_PARAMS = np.array([1.0, 0.4, 0.4, 0.8])
TRUE_X0 = np.array([1.0, 1.0])
T_END = 10.0
N_OBS = 21


@njit(cache=True)
def f(x, c, p, t, out):
    out[0] = p[0] * x[0] - p[1] * x[0] * x[1]
    out[1] = p[2] * x[0] * x[1] - p[3] * x[1]


@njit(cache=True)
def vjp(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = (p[0] - p[1] * x[1]) * z[0] + p[2] * x[1] * z[1]
    out_x[1] = -p[1] * x[0] * z[0] + (p[2] * x[0] - p[3]) * z[1]
    out_p[0] = x[0] * z[0]
    out_p[1] = -x[0] * x[1] * z[0]
    out_p[2] = x[0] * x[1] * z[1]
    out_p[3] = -x[1] * z[1]


def _fine_rk4(x0, p, h, n, every, n_obs):
    """Fine classical RK4 of the true model, sampled every ``every`` steps, on Python floats (the
    same float64 operations as ``f``; no compilation at import, ~0.1 s)."""
    a, b, d, g = (float(v) for v in p)

    def u(x, y):
        return a * x - b * x * y, d * x * y - g * y

    obs = np.empty((n_obs, 2))
    x, y = float(x0[0]), float(x0[1])
    obs[0] = x, y
    w = h / 6
    for k in range(n):
        k1 = u(x, y)
        k2 = u(x + 0.5 * h * k1[0], y + 0.5 * h * k1[1])
        k3 = u(x + 0.5 * h * k2[0], y + 0.5 * h * k2[1])
        k4 = u(x + h * k3[0], y + h * k3[1])
        x = x + w * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        y = y + w * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
        if (k + 1) % every == 0:
            obs[(k + 1) // every] = x, y
    return obs


def _make_data(seed=0):
    n = 20000
    ts = np.linspace(0.0, T_END, N_OBS)
    obs = _fine_rk4(TRUE_X0, TRUE_PARAMS, T_END / n, n, n // (N_OBS - 1), N_OBS)
    rng = np.random.default_rng(seed)
    return ts, obs * np.exp(0.05 * rng.standard_normal(obs.shape))


T_OBS, Y_OBS = _make_data()


# The observation grid is uniform with spacing T_END / (N_OBS - 1) = 0.5, a power of two, so the
# interpolation below multiplies by the reciprocal spacing: bitwise the same as dividing by the
# spacing, without two divisions per call (division-throughput bound: 3.6 ns a call here, about a
# third of the whole Lotka-Volterra gradient step). Checked in tests/test_problems_vjp.py.
_DT = T_END / (N_OBS - 1)
_INV_DT = 1.0 / _DT
assert _DT == 0.5 and np.all(np.diff(T_OBS) == _DT), "observation() assumes a uniform grid of spacing 0.5"


@njit(cache=True, inline="always")
def observation(t):
    """Piecewise-linear interpolation of the observations at time t (the first and last pieces
    extend linearly beyond the grid)."""
    j = int((t - T_OBS[0]) * _INV_DT)
    if j < 0:
        j = 0
    if j > T_OBS.shape[0] - 2:
        j = T_OBS.shape[0] - 2
    w = (t - T_OBS[j]) * _INV_DT
    return (1.0 - w) * Y_OBS[j, 0] + w * Y_OBS[j + 1, 0], (1.0 - w) * Y_OBS[j, 1] + w * Y_OBS[j + 1, 1]


@njit(cache=True)
def running_value(x, c, p, t):
    y0, y1 = observation(t)
    return 0.5 * ((x[0] - y0) ** 2 + (x[1] - y1) ** 2) / T_END


@njit(cache=True)
def running_grad(x, c, p, t, out_x, out_c, out_p):
    y0, y1 = observation(t)
    out_x[0] = (x[0] - y0) / T_END
    out_x[1] = (x[1] - y1) / T_END
    for i in range(out_p.shape[0]):
        out_p[i] = 0.0


@njit(cache=True)
def running_value_and_grad(x, c, p, t, out_x, out_c, out_p):
    """Both of the above with one interpolation (the backward sweep calls this once per step)."""
    y0, y1 = observation(t)
    out_x[0] = (x[0] - y0) / T_END
    out_x[1] = (x[1] - y1) / T_END
    if out_p.shape[0] == 4:  # the model's four parameters: straight-line code (measured 2x faster here)
        out_p[0] = 0.0
        out_p[1] = 0.0
        out_p[2] = 0.0
        out_p[3] = 0.0
    else:
        out_p[:] = 0.0
    return 0.5 * ((x[0] - y0) ** 2 + (x[1] - y1) ** 2) / T_END


@njit(cache=True)
def terminal_value(x, c, p, t):
    y0, y1 = Y_OBS[-1, 0], Y_OBS[-1, 1]
    return 0.5 * ((x[0] - y0) ** 2 + (x[1] - y1) ** 2)


@njit(cache=True)
def terminal_grad(x, c, p, t, out_x, out_c, out_p):
    out_x[0] = x[0] - Y_OBS[-1, 0]
    out_x[1] = x[1] - Y_OBS[-1, 1]
    for i in range(out_p.shape[0]):
        out_p[i] = 0.0


DYNAMICS = adjoint.Dynamics(f, vjp, state_dim=2, param_dim=4, name="lotka_volterra")
RUNNING = adjoint.Cost(running_value, running_grad, value_and_grad=running_value_and_grad, name="misfit")
TERMINAL = adjoint.Cost(terminal_value, terminal_grad, name="final_misfit")


def make_problem(steps: int = 2000, x0=None) -> adjoint.ControlProblem:
    """The fitting problem on ``steps`` steps over ``[0, T_END]``; unknowns are ``params`` (and x0)."""
    return adjoint.ControlProblem(
        DYNAMICS,
        Y_OBS[0] if x0 is None else x0,
        (0.0, T_END),
        steps,
        terminal_cost=TERMINAL,
        running_cost=RUNNING,
        name="lotka_volterra",
    )


def initial_guess() -> np.ndarray:
    return np.array([0.8, 0.3, 0.5, 1.0])


SOLVERS = ("lbfgs", "least_squares", "trust-krylov")


def field(x, c, p, t):
    """The model as a plain numpy function (traced by adjoint: first and second derivatives)."""
    return np.array([p[0] * x[0] - p[1] * x[0] * x[1], p[2] * x[0] * x[1] - p[3] * x[1]])


def make_observed_problem(steps: int = 2000) -> adjoint.ControlProblem:
    """The fit as a least-squares problem: ``adjoint.Observations(T_OBS, Y_OBS)`` on ``steps``
    steps over ``[0, T_END]`` (a multiple of 20, so that the observation times ``0, 0.5, ..., 10``
    are grid points), the model as the traced :func:`field`; no other cost, so the objective is
    ``1/2 sum_j |x(t_j) - y_j|^2``. Unknowns: ``params`` (4) and ``x0`` (start: ``Y_OBS[0]``)."""
    if steps % (N_OBS - 1) != 0:
        raise ValueError(
            f"make_observed_problem: steps must be a multiple of {N_OBS - 1} (observations every "
            f"{_DT} on [0, {T_END}] must be grid points); got {steps}"
        )
    return adjoint.ControlProblem(
        field,
        Y_OBS[0],
        (0.0, T_END),
        steps,
        observations=adjoint.Observations(T_OBS, Y_OBS),
        param_dim=4,
        name="lotka_volterra_observed",
    )


def _fit_least_squares(prob, method, max_iter, verbose):
    """``least_squares(res, v0, jac=res.jac, bounds=...)`` on the observed problem; one history row
    per Jacobian evaluation (the trust-region reflective method evaluates one per iteration)."""
    from scipy.optimize import least_squares

    res = prob.residuals(wrt=("params", "x0"), params=initial_guess(), method=method)
    t0 = time.perf_counter()
    history = []
    record = _common.progress_recorder(history, t0, verbose)
    last = {}

    def r(v):
        out = res(v)
        last["key"], last["r"] = np.asarray(v).tobytes(), out
        return out

    def jac(v):
        J = res.jac(v)
        rv = last["r"] if last.get("key") == np.asarray(v).tobytes() else res(v)
        record(0.5 * rv @ rv, J.T @ rv)
        return J

    out = least_squares(
        r, res.initial(), jac=jac, bounds=(1e-3, 10.0), method="trf", x_scale="jac",
        ftol=1e-15, xtol=1e-15, gtol=1e-12, max_nfev=max_iter,
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if verbose:
        print(f"  {out.message}  ({out.nfev} residual and {out.njev} Jacobian evaluations, {seconds:.2f} s)")
    stats = {"iterations": int(out.njev), "nfev": int(out.nfev), "njev": int(out.njev), "seconds": seconds,
             "message": str(out.message), "success": bool(out.success)}  # fmt: skip
    return res.unpack(out.x), float(out.cost), history, stats


def _fit_trust_krylov(prob, method, max_iter, verbose, gtol=1e-10):
    """``minimize(fun, v0, jac=True, hessp=fun.hessp, method="trust-krylov")`` on the observed
    problem, unbounded, from ``initial_guess()`` and ``Y_OBS[0]``."""
    from scipy.optimize import minimize

    fun = prob.objective(wrt=("params", "x0"), params=initial_guess(), method=method)
    memo = _common.Memo(fun)
    t0 = time.perf_counter()
    history = []
    record = _common.progress_recorder(history, t0, verbose)
    v0 = fun.initial()
    record(*memo(v0))
    out = minimize(
        memo, v0, jac=True, hessp=fun.hessp, method="trust-krylov",
        callback=lambda xk: record(*memo(xk)), options={"maxiter": max_iter, "gtol": gtol},
    )  # fmt: skip
    seconds = time.perf_counter() - t0
    if verbose:
        print(
            f"  {out.message}  ({out.nit} iterations, {fun.nfev} gradient evaluations, {fun.nhev} "
            f"Hessian-vector products, {seconds:.2f} s)"
        )
    stats = {"iterations": int(out.nit), "nfev": int(fun.nfev), "nhev": int(fun.nhev), "seconds": seconds,
             "message": str(out.message), "success": bool(out.success)}  # fmt: skip
    return fun.unpack(out.x), float(out.fun), history, stats


def solve(output_dir="out", steps=None, method=None, max_iter=200, verbose=True, solver="lbfgs"):
    """Fit the four parameters and the initial state; save a PNG and JSON.

    ``solver``: ``"lbfgs"`` (default): L-BFGS-B on the interpolated misfit of :func:`make_problem`,
    bounds ``[1e-3, 10]``; ``"least_squares"``: ``scipy.optimize.least_squares`` with the exact
    residual Jacobian on :func:`make_observed_problem` (same bounds; ``max_iter`` bounds the residual
    evaluations); ``"trust-krylov"``: ``scipy.optimize.minimize(..., hessp=fun.hessp,
    method="trust-krylov")`` on :func:`make_observed_problem`, unbounded. The observed problem needs
    ``steps`` a multiple of 20.

    Writes ``lotka_volterra.png`` and ``lotka_volterra.json`` into ``output_dir`` (the JSON records
    the solver, the iterations, the evaluations and the wall time); returns their
    :class:`~adjoint.cli.ProblemResult`.
    """
    if solver not in SOLVERS:
        raise ValueError(f"unknown solver {solver!r}; choose one of {list(SOLVERS)}")
    steps = 2000 if steps is None else steps
    method = _common.method_from_name(method) or adjoint.RK4()
    if solver == "lbfgs":
        prob = make_problem(steps)
        fun = prob.objective(wrt=("params", "x0"), params=initial_guess(), method=method)
        t0 = time.perf_counter()
        res, hist = _common.lbfgs(
            fun, fun.initial(), bounds=fun.bounds(params=(1e-3, 10.0), x0=(1e-3, 10.0)), max_iter=max_iter,
            verbose=verbose,
        )  # fmt: skip
        fit = fun.unpack(res.x)
        objective = float(res.fun)
        stats = {"iterations": int(res.nit), "nfev": int(fun.nfev), "seconds": time.perf_counter() - t0,
                 "message": str(res.message), "success": bool(res.success)}  # fmt: skip
        kind = "interpolated misfit (make_problem)"
    else:
        prob = make_observed_problem(steps)
        fit_fn = _fit_least_squares if solver == "least_squares" else _fit_trust_krylov
        fit, objective, hist, stats = fit_fn(prob, method, max_iter, verbose)
        kind = "1/2 sum_j |x(t_j) - y_j|^2 (make_observed_problem)"
    _, traj = adjoint.simulate(prob, params=fit["params"], x0=fit["x0"], method=method)
    if verbose:
        print(f"  fitted params {np.round(fit['params'], 4)}   true {TRUE_PARAMS}")
    t = prob.times
    fig, ax = _common.figure()
    ax[0].plot(T_OBS, Y_OBS[:, 0], "o", color="C0", label="prey (data)")
    ax[0].plot(T_OBS, Y_OBS[:, 1], "s", color="C1", label="predator (data)")
    ax[0].plot(t, traj[:, 0], color="C0")
    ax[0].plot(t, traj[:, 1], color="C1")
    ax[0].set_xlabel("t")
    ax[0].set_title("fit" if solver == "lbfgs" else f"fit ({solver})")
    ax[0].legend(fontsize=8)
    idx = np.arange(4)
    ax[1].bar(idx - 0.2, TRUE_PARAMS, 0.4, label="true")
    ax[1].bar(idx + 0.2, fit["params"], 0.4, label="fitted")
    ax[1].set_xticks(idx, ["a", "b", "d", "g"])
    ax[1].set_title("parameters")
    ax[1].legend()
    _common.history_axis(ax[2], hist)
    if solver != "lbfgs":
        ax[2].set_xlabel(f"{solver} iteration")
    summary = {
        "problem": "lotka_volterra",
        "steps": steps,
        "method": repr(method),
        "solver": solver,
        "objective_kind": kind,
        "objective": objective,
        "params": fit["params"],
        "x0": fit["x0"],
        "true_params": TRUE_PARAMS,
        **stats,
        "history": hist,
    }
    return _common.save(output_dir, "lotka_volterra", fig, summary)


def compare_newton(
    steps: int = 2000,
    gtol: float = 1e-8,
    max_iter: int = 5000,
    maxcor: int = 10,
    repeats: int = 5,
    verbose: bool = True,
) -> dict:
    """trust-krylov with exact Hessian-vector products against L-BFGS-B on :func:`make_observed_problem`.

    Both start from ``initial_guess()`` and ``Y_OBS[0]``, unbounded, and run until the 2-norm of the
    gradient is ``<= gtol`` (trust-krylov: its own ``gtol``, which is a 2-norm test; L-BFGS-B: a
    callback stopping at the first iterate with ``|g|_2 <= gtol``, its own tests switched off), or
    until ``max_iter`` iterations or a solver failure. L-BFGS-B keeps ``maxcor`` pairs (scipy's
    default 10; with 20 its line search fails at ``|g|_2`` about 3e-7 here). The compilations and one
    warm-up run of each solver come first and are not timed (the first L-BFGS-B call of a process
    costs about 0.3 s in scipy itself); each run is then repeated ``repeats`` times and the median
    wall time reported (the counts are those of one run). Prints a table; returns ``{"trust-krylov": row, "L-BFGS-B": row, ...}`` with the
    iterations, the gradient evaluations (adjoint sweeps, each giving the value too), the
    Hessian-vector products, the wall time, the final objective and gradient 2-norm.
    """
    from scipy.optimize import minimize

    method = adjoint.RK4()
    prob = make_observed_problem(steps)

    def objective():
        return prob.objective(wrt=("params", "x0"), params=initial_guess(), method=method)

    warm = objective()  # compile the gradient and the Hessian-vector product (not timed)
    warm(warm.initial())
    warm.hessp(warm.initial(), np.ones(warm.size))
    rows = {}

    def run_trust_krylov():
        fun = objective()
        memo = _common.Memo(fun)
        t0 = time.perf_counter()
        out = minimize(memo, fun.initial(), jac=True, hessp=fun.hessp, method="trust-krylov",
                       options={"maxiter": max_iter, "gtol": gtol})  # fmt: skip
        return time.perf_counter() - t0, fun, memo, out

    run_trust_krylov()  # warm-up run (first calls into scipy's solver and BLAS), not timed
    times = [run_trust_krylov()[0] for _ in range(max(repeats, 1) - 1)]
    seconds, fun, memo, out = run_trust_krylov()
    seconds = float(np.median(times + [seconds]))
    val, g = memo(out.x)
    rows["trust-krylov"] = {
        "iterations": int(out.nit), "gradients": int(fun.nfev), "hessps": int(fun.nhev), "seconds": seconds,
        "objective": val, "grad_norm": float(np.linalg.norm(g)), "converged": bool(np.linalg.norm(g) <= gtol),
        "message": str(out.message), "x": out.x,
    }  # fmt: skip

    def run_lbfgs():
        fun = objective()
        memo = _common.Memo(fun)
        nit = [0]

        def stop(xk):
            nit[0] += 1
            if np.linalg.norm(memo(xk)[1]) <= gtol:
                raise StopIteration

        t0 = time.perf_counter()
        out = minimize(memo, fun.initial(), jac=True, method="L-BFGS-B", callback=stop,
                       options={"maxiter": max_iter, "maxfun": 10 * max_iter, "gtol": 0.0, "ftol": 0.0,
                                "maxcor": maxcor})  # fmt: skip
        return time.perf_counter() - t0, fun, memo, out, nit[0]

    run_lbfgs()  # warm-up run (first calls into scipy's solver and BLAS), not timed
    times = [run_lbfgs()[0] for _ in range(max(repeats, 1) - 1)]
    seconds, fun, memo, out, nit = run_lbfgs()
    seconds = float(np.median(times + [seconds]))
    val, g = memo(out.x)
    rows["L-BFGS-B"] = {
        "iterations": nit, "gradients": int(fun.nfev), "hessps": 0, "seconds": seconds,
        "objective": val, "grad_norm": float(np.linalg.norm(g)), "converged": bool(np.linalg.norm(g) <= gtol),
        "message": str(out.message), "x": out.x,
    }  # fmt: skip
    a, b = rows["trust-krylov"], rows["L-BFGS-B"]
    result = {
        "steps": steps,
        "gtol": gtol,
        "norm": "2-norm of the gradient",
        "lbfgs_maxcor": maxcor,
        **rows,
        "objective_relative_difference": abs(a["objective"] - b["objective"]) / abs(a["objective"]),
        "max_abs_x_difference": float(np.max(np.abs(a["x"] - b["x"]))),
    }
    if verbose:
        print(f"Lotka-Volterra, observed problem ({steps} RK4 steps), stop at |grad|_2 <= {gtol:g}")
        print(
            f"  {'solver':<13} {'iters':>6} {'grads':>6} {'hessps':>7} {'seconds':>9} {'objective':>22} {'|grad|_2':>10}"
        )
        for name in ("trust-krylov", "L-BFGS-B"):
            r = rows[name]
            print(
                f"  {name:<13} {r['iterations']:>6d} {r['gradients']:>6d} {r['hessps']:>7d} {r['seconds']:>9.4f} "
                f"{r['objective']:>22.16e} {r['grad_norm']:>10.2e}"
                + ("" if r["converged"] else "  NOT CONVERGED: " + r["message"])
            )
        print(
            f"  relative objective difference {result['objective_relative_difference']:.1e}, "
            f"max |x_tk - x_lbfgs| {result['max_abs_x_difference']:.1e}"
        )
    return result
