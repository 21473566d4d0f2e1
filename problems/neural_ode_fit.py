"""Neural ODE fitted to a noisy damped pendulum trajectory with trust-krylov (exact Hessian-vector products).

Model: state ``x = (x1, x2)`` in the plane, the learned vector field

    x' = u(x) = W2 tanh(W1 x + b1) + b2,     W1 (H, 2), b1 (H,), W2 (2, H), b2 (2,),

with the parameters flattened in ``p = (W1.ravel(), b1, W2.ravel(), b2)`` (``H = 16``: 82 of them),
written as a plain numpy function (:func:`field`) that adjoint traces, so that its second
derivatives exist. The initial state is the known ``X0``.

Data: the damped pendulum ``x1' = x2, x2' = -sin(x1) - DAMPING x2`` from ``X0 = (2, 0)``, integrated
finely on ``[0, T_END]`` and observed at ``N_OBS = 40`` equally spaced times ``T_END / N_OBS, ...,
T_END`` with Gaussian noise of standard deviation ``NOISE`` (fixed seed), given to the problem as
``adjoint.Observations``: the objective is ``1/2 sum_j |x(t_j) - y_j|^2`` on the RK4 grid (``steps``
a multiple of ``N_OBS``, so that the observation times are grid points).

Optimiser: ``scipy.optimize.minimize(fun, p0, jac=True, hessp=fun.hessp, method="trust-krylov")``
from a small random initialisation (fixed seed); :func:`compare` runs L-BFGS-B from the same start.
"""

from __future__ import annotations

import time

import numpy as np

import adjoint

from . import _common

H = 16
STATE_DIM = 2
N_PARAMS = H * STATE_DIM + H + STATE_DIM * H + STATE_DIM
T_END = 10.0
N_OBS = 40
DAMPING = 0.25
NOISE = 0.02
X0 = np.array([2.0, 0.0])
DEFAULT_STEPS = 200


def unpack(p, hidden=H):
    """``(W1, b1, W2, b2)`` from the flat parameter vector ``p``."""
    n = STATE_DIM
    W1 = p[: hidden * n].reshape(hidden, n)
    b1 = p[hidden * n : hidden * n + hidden]
    W2 = p[hidden * n + hidden : hidden * n + hidden + n * hidden].reshape(n, hidden)
    b2 = p[hidden * n + hidden + n * hidden :]
    return W1, b1, W2, b2


def field(x, c, p, t):
    """The neural vector field ``W2 tanh(W1 x + b1) + b2`` (plain numpy, traced by adjoint)."""
    W1 = p[: H * STATE_DIM].reshape(H, STATE_DIM)
    b1 = p[H * STATE_DIM : H * STATE_DIM + H]
    W2 = p[H * STATE_DIM + H : H * STATE_DIM + H + STATE_DIM * H].reshape(STATE_DIM, H)
    b2 = p[H * STATE_DIM + H + STATE_DIM * H :]
    return W2 @ np.tanh(W1 @ x + b1) + b2


def field_numpy(x, p):
    """The same field on an array of states ``x`` (..., 2): for plotting and checking."""
    W1, b1, W2, b2 = unpack(np.asarray(p, dtype=np.float64))
    return np.tanh(x @ W1.T + b1) @ W2.T + b2


def pendulum(x):
    """The true system, on an array of states (..., 2)."""
    return np.stack([x[..., 1], -np.sin(x[..., 0]) - DAMPING * x[..., 1]], axis=-1)


def _rk4(u, x0, h, n):
    """Classical RK4 of ``x' = u(x)`` with n steps of size h; the n + 1 states."""
    out = np.empty((n + 1, np.size(x0)))
    x = np.array(x0, dtype=np.float64)
    out[0] = x
    for k in range(n):
        k1 = u(x)
        k2 = u(x + 0.5 * h * k1)
        k3 = u(x + 0.5 * h * k2)
        k4 = u(x + h * k3)
        x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
        out[k + 1] = x
    return out


def _make_data(seed=0):
    n = 100 * N_OBS
    fine = _rk4(pendulum, X0, T_END / n, n)
    ts = T_END * np.arange(1, N_OBS + 1) / N_OBS
    clean = fine[np.arange(1, N_OBS + 1) * (n // N_OBS)]
    return ts, clean + NOISE * np.random.default_rng(seed).standard_normal(clean.shape), fine


T_OBS, Y_OBS, _TRUE_FINE = _make_data()


def make_problem(steps: int = DEFAULT_STEPS) -> adjoint.ControlProblem:
    """The fit on ``steps`` steps over ``[0, T_END]`` (a multiple of ``N_OBS``); unknowns ``params``."""
    if steps % N_OBS != 0:
        raise ValueError(
            f"neural_ode_fit: steps must be a multiple of {N_OBS} (the observation times "
            f"{T_END / N_OBS:g}, {2 * T_END / N_OBS:g}, ... must be grid points); got {steps}"
        )
    return adjoint.ControlProblem(
        field,
        X0,
        (0.0, T_END),
        steps,
        observations=adjoint.Observations(T_OBS, Y_OBS),
        param_dim=N_PARAMS,
        name="neural_ode_fit",
    )


def initial_guess(seed: int = 1) -> np.ndarray:
    """Small random weights (fixed seed): ``W1, b1 ~ N(0, 0.5^2), N(0, 0.1^2)``, ``W2 ~ N(0, 0.1^2)``,
    ``b2 = 0``."""
    rng = np.random.default_rng(seed)
    return np.concatenate(
        [
            rng.normal(0.0, 0.5, H * STATE_DIM),
            rng.normal(0.0, 0.1, H),
            rng.normal(0.0, 0.1, STATE_DIM * H),
            np.zeros(STATE_DIM),
        ]
    )


def fit(steps=DEFAULT_STEPS, method=None, max_iter=200, gtol=1e-6, solver="trust-krylov", verbose=True, p0=None):
    """Run one optimiser from ``initial_guess()`` (or ``p0``); returns ``(scipy_result, history, stats)``.

    ``solver``: ``"trust-krylov"`` (with ``hessp=fun.hessp``) or ``"L-BFGS-B"``. ``gtol`` is the
    trust-krylov test on the gradient's 2-norm; for L-BFGS-B its own test, on the max-abs gradient.
    ``stats`` has the solver, iterations, gradient evaluations, Hessian-vector products and seconds.
    """
    from scipy.optimize import minimize

    method = method or adjoint.RK4()
    prob = make_problem(steps)
    p0 = initial_guess() if p0 is None else np.asarray(p0, dtype=np.float64)
    fun = prob.objective(wrt="params", params=p0, method=method)
    memo = _common.Memo(fun)
    history = []
    t0 = time.perf_counter()
    record = _common.progress_recorder(history, t0, verbose)
    record(*memo(p0))
    if solver == "trust-krylov":
        res = minimize(
            memo, p0, jac=True, hessp=fun.hessp, method="trust-krylov", callback=lambda xk: record(*memo(xk)),
            options={"maxiter": max_iter, "gtol": gtol},
        )  # fmt: skip
    elif solver == "L-BFGS-B":
        res = minimize(
            memo, p0, jac=True, method="L-BFGS-B", callback=lambda xk: record(*memo(xk)),
            options={"maxiter": max_iter, "gtol": gtol, "ftol": 1e-15, "maxcor": 20},
        )  # fmt: skip
    else:
        raise ValueError(f"unknown solver {solver!r}; choose 'trust-krylov' or 'L-BFGS-B'")
    seconds = time.perf_counter() - t0
    stats = {
        "solver": solver,
        "iterations": int(res.nit),
        "gradients": int(fun.nfev),
        "hessps": int(fun.nhev),
        "seconds": seconds,
        "message": str(res.message),
        "success": bool(res.success),
    }
    if verbose:
        print(
            f"  {res.message}  ({res.nit} iterations, {fun.nfev} gradient evaluations, {fun.nhev} "
            f"Hessian-vector products, {seconds:.2f} s)"
        )
    return res, history, stats


def solve(output_dir="out", steps=None, method=None, max_iter=200, verbose=True):
    """Fit the network with trust-krylov; save ``neural_ode_fit.png`` and ``neural_ode_fit.json``.

    ``steps`` (default 200) must be a multiple of 40; ``method`` euler, heun or rk4 (default);
    ``max_iter`` trust-krylov iterations (default 200). Returns the
    :class:`~adjoint.cli.ProblemResult` of the files.
    """
    steps = DEFAULT_STEPS if steps is None else steps
    method = _common.method_from_name(method) or adjoint.RK4()
    prob = make_problem(steps)  # validates steps before the run
    if verbose:
        print(f"  {N_PARAMS} parameters (H = {H}), {N_OBS} observations of 2 components, {steps} steps of {method!r}")
    res, hist, stats = fit(steps, method=method, max_iter=max_iter, verbose=verbose)
    p = res.x
    _, traj = adjoint.simulate(prob, params=p, method=method)
    _, traj0 = adjoint.simulate(prob, params=initial_guess(), method=method)
    t = prob.times
    t_fine = np.linspace(0.0, T_END, _TRUE_FINE.shape[0])
    # extrapolation: the fitted field run twice as long as the data, against the true system
    n_ext = 2 * steps
    ext = _rk4(lambda x: field_numpy(x, p), X0, T_END / steps, n_ext)
    true_ext = _rk4(pendulum, X0, T_END / steps, n_ext)
    fig, ax = _common.figure()
    for i, (col, lab) in enumerate((("C0", "x1"), ("C1", "x2"))):
        ax[0].plot(T_OBS, Y_OBS[:, i], "o", ms=3, color=col, label=f"{lab} (data)")
        ax[0].plot(t_fine, _TRUE_FINE[:, i], ":", color=col, lw=1)
        ax[0].plot(t, traj[:, i], color=col, label=f"{lab} (neural ODE)")
        ax[0].plot(t, traj0[:, i], "--", color=col, lw=0.8, alpha=0.5)
    ax[0].set_xlabel("t")
    ax[0].set_title("data, fit (solid), truth (dotted), start (dashed)")
    ax[0].legend(fontsize=7)
    ax[1].plot(Y_OBS[:, 0], Y_OBS[:, 1], "o", ms=3, color="k", label="data")
    ax[1].plot(true_ext[:, 0], true_ext[:, 1], ":", color="C2", label=f"pendulum on [0, {2 * T_END:g}]")
    ax[1].plot(ext[:, 0], ext[:, 1], color="C3", label=f"neural ODE on [0, {2 * T_END:g}]")
    g = np.linspace(-2.5, 2.5, 15)
    XX, YY = np.meshgrid(g, g)
    UV = field_numpy(np.stack([XX, YY], axis=-1), p)
    ax[1].quiver(XX, YY, UV[..., 0], UV[..., 1], color="0.6", alpha=0.6)
    ax[1].set_xlabel("x1")
    ax[1].set_ylabel("x2")
    ax[1].set_title("phase plane, learned field")
    ax[1].legend(fontsize=7)
    _common.history_axis(ax[2], hist)
    ax[2].set_xlabel("trust-krylov iteration")
    ax[2].set_title("loss history")
    summary = {
        "problem": "neural_ode_fit",
        "steps": steps,
        "method": repr(method),
        "hidden": H,
        "n_params": N_PARAMS,
        "n_obs": N_OBS,
        "noise": NOISE,
        "objective": float(res.fun),
        "objective_at_truth_data": float(0.5 * np.sum((Y_OBS - _TRUE_FINE[np.arange(1, N_OBS + 1) * 100]) ** 2)),
        "extrapolation_rms_error": float(np.sqrt(np.mean((ext - true_ext) ** 2))),
        **stats,
        "params": p,
        "history": hist,
    }
    return _common.save(output_dir, "neural_ode_fit", fig, summary)


def compare(steps=DEFAULT_STEPS, max_iter=200, lbfgs_max_iter=2000, verbose=True) -> dict:
    """trust-krylov (``max_iter`` iterations, gtol 1e-6 on the gradient's 2-norm) against L-BFGS-B
    (``lbfgs_max_iter`` iterations, its own gtol 1e-8 on the max-abs gradient) from the same start.
    The compilation is run once first and not timed. Prints a table and returns the stats and final
    objectives of both runs."""
    make_problem(steps).objective(wrt="params", params=initial_guess(), method=adjoint.RK4()).hessp(
        initial_guess(), np.ones(N_PARAMS)
    )  # compile (not timed)
    out = {}
    for solver, it, gtol in (("trust-krylov", max_iter, 1e-6), ("L-BFGS-B", lbfgs_max_iter, 1e-8)):
        res, hist, stats = fit(steps, max_iter=it, gtol=gtol, solver=solver, verbose=False)
        out[solver] = {**stats, "objective": float(res.fun), "grad_norm": hist[-1]["grad_norm"]}
    if verbose:
        print(f"neural ODE fit ({N_PARAMS} parameters, {steps} RK4 steps)")
        print(
            f"  {'solver':<13} {'iters':>6} {'grads':>6} {'hessps':>7} {'seconds':>8} {'objective':>14} {'|grad|_2':>10}"
        )
        for name, r in out.items():
            print(
                f"  {name:<13} {r['iterations']:>6d} {r['gradients']:>6d} {r['hessps']:>7d} {r['seconds']:>8.2f} "
                f"{r['objective']:>14.6e} {r['grad_norm']:>10.2e}"
            )
    return out
