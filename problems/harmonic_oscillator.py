"""Harmonic oscillator ``x' = y``, ``y' = -omega^2 x``: fit the frequency, with closed forms.

Separable form (``adjoint.SeparableDynamics``, ``x_dim = y_dim = 1``, ``param_dim = 1``)::

    u(y) = y,    v(x) = -omega^2 x,    p = (omega,)

Problem: the state ``s_T`` of the true oscillator (``TRUE_OMEGA``, exact flow
``x(t) = x0 cos(w t) + y0/w sin(w t)``) is observed at ``T_END``; the frequency is recovered by
minimising ``J(omega) = 0.5 |s_K(omega) - s_T|^2`` with ``adjoint.Leapfrog`` (any checkpoint,
``adjoint.Reversible()`` included).

Closed forms for tests: the leapfrog step is linear, ``s_{k+1} = M s_k`` with
``M = [[1, tau], [-w^2 tau, 1 - w^2 tau^2]]`` (``det M = 1``), so ``s_K = M^K s_0`` and
``grad_{s_0} J = (M^K)^T (s_K - s_T)`` (:func:`discrete_solution`, :func:`discrete_grad_x0`). The
discrete energy ``w^2 x_k^2 + y_k^2 + w^2 tau x_k y_k`` is conserved exactly by the map
(:func:`modified_energy`); the plain energy oscillates within ``O(tau)`` of it.
"""

from __future__ import annotations

import numpy as np
from numba import njit

import adjoint
from adjoint._separable import SeparableDynamics

TRUE_OMEGA = 1.3
S0 = np.array([1.0, 0.0])  # (x0, y0)
T_END = 10.0


@njit(cache=True)
def u(y, c, p, t, out):
    out[0] = y[0]


@njit(cache=True)
def vjp_u(y, c, p, t, z, out_y, out_c, out_p):
    out_y[0] = z[0]
    for i in range(out_p.shape[0]):
        out_p[i] = 0.0


@njit(cache=True)
def v(x, c, p, t, out):
    out[0] = -p[0] * p[0] * x[0]


@njit(cache=True)
def vjp_v(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = -p[0] * p[0] * z[0]
    out_p[0] = -2.0 * p[0] * x[0] * z[0]


def exact_state(t, omega=TRUE_OMEGA, s0=S0):
    """Exact flow of the oscillator at time ``t`` from ``s0 = (x0, y0)``."""
    x0, y0 = s0
    wt = omega * t
    return np.array([x0 * np.cos(wt) + y0 / omega * np.sin(wt), -x0 * omega * np.sin(wt) + y0 * np.cos(wt)])


TARGET = exact_state(T_END)


@njit(cache=True)
def terminal_value(s, c, p, t):
    return 0.5 * ((s[0] - TARGET[0]) ** 2 + (s[1] - TARGET[1]) ** 2)


@njit(cache=True)
def terminal_grad(s, c, p, t, out_s, out_c, out_p):
    out_s[0] = s[0] - TARGET[0]
    out_s[1] = s[1] - TARGET[1]
    for i in range(out_p.shape[0]):
        out_p[i] = 0.0


DYNAMICS = SeparableDynamics(u, vjp_u, v, vjp_v, x_dim=1, y_dim=1, param_dim=1, name="harmonic_oscillator")
TERMINAL = adjoint.Cost(terminal_value, terminal_grad, name="final_misfit")


def make_problem(steps: int = 1000, t_end: float = T_END, x0=None) -> adjoint.ControlProblem:
    """``J(omega) = 0.5 |s_K - s_T|^2`` on ``steps`` leapfrog steps over ``[0, t_end]``.

    The target ``s_T`` is the exact state at ``T_END`` (so with ``t_end != T_END`` the problem is
    only a benchmark workload).
    """
    return adjoint.ControlProblem(
        DYNAMICS, S0 if x0 is None else x0, (0.0, t_end), steps, terminal_cost=TERMINAL, name="harmonic_oscillator"
    )


def step_matrix(omega: float, tau: float) -> np.ndarray:
    """The leapfrog step as a matrix: ``s_{k+1} = M s_k``."""
    w2 = omega * omega
    return np.array([[1.0, tau], [-w2 * tau, 1.0 - w2 * tau * tau]])


def discrete_solution(omega, steps, t_end=T_END, s0=S0):
    """``s_K = M^K s_0`` (closed form of the leapfrog trajectory's end)."""
    return np.linalg.matrix_power(step_matrix(omega, t_end / steps), steps) @ np.asarray(s0, dtype=float)


def discrete_grad_x0(omega, steps, t_end=T_END, s0=S0):
    """``grad_{s_0} J = (M^K)^T (s_K - s_T)`` for the terminal misfit."""
    MK = np.linalg.matrix_power(step_matrix(omega, t_end / steps), steps)
    return MK.T @ (MK @ np.asarray(s0, dtype=float) - TARGET)


def modified_energy(s, omega, tau):
    """Quantity conserved exactly by the leapfrog map: ``w^2 x^2 + y^2 + w^2 tau x y``."""
    s = np.asarray(s)
    w2 = omega * omega
    return w2 * s[..., 0] ** 2 + s[..., 1] ** 2 + w2 * tau * s[..., 0] * s[..., 1]


def solve(output_dir="out", steps=None, method=None, max_iter=200, verbose=True, omega0=1.2, checkpoint=None):
    """Recover ``omega`` with L-BFGS-B (bounds ``1.0 <= omega <= 1.6``) and the reversible adjoint.

    ``method`` is ``"leapfrog"`` (default) or ``"verlet"``; ``checkpoint`` defaults to
    ``adjoint.Reversible()``. Prints one line per iteration when ``verbose``, saves
    ``harmonic_oscillator.png`` (fitted trajectory, ``J(omega)``, objective history) and
    ``harmonic_oscillator.json`` into ``output_dir`` and returns their :class:`~adjoint.cli.ProblemResult`.
    """
    from adjoint.checkpointing._reversible import Reversible

    from . import _common

    steps = 2000 if steps is None else steps
    method = _common.separable_method_from_name(method, "harmonic oscillator")
    checkpoint = Reversible() if checkpoint is None else checkpoint
    prob = make_problem(steps)

    def objective(w):
        res = adjoint.solve_adjoint(prob, params=w, method=method, checkpoint=checkpoint)
        return res.value, res.grad.params.copy()

    fun = _common.Counted(objective)
    opt, hist = _common.lbfgs(
        fun, np.array([float(omega0)]), bounds=[(1.0, 1.6)], max_iter=max_iter, verbose=verbose, gtol=1e-12, ftol=1e-15
    )
    w_hat = float(opt.x[0])
    if verbose:
        print(f"  fitted omega {w_hat:.10f}   true {TRUE_OMEGA}")
    _, traj = adjoint.simulate(prob, params=opt.x, method=method)
    t = prob.times
    fig, ax = _common.figure()
    ax[0].plot(t, traj[:, 0], label=f"{type(method).__name__} x_k (fitted omega)")
    ax[0].plot(t, exact_state(t)[0], "--", label="exact x(t), true omega")
    ax[0].set_xlabel("t")
    ax[0].legend(fontsize=8)
    ax[0].set_title(f"omega: true {TRUE_OMEGA}, fitted {w_hat:.6f}")
    ws = np.linspace(0.8, 1.8, 400)
    ax[1].plot(ws, [objective(np.array([w]))[0] for w in ws])
    ax[1].axvline(TRUE_OMEGA, color="k", ls=":")
    ax[1].set_xlabel("omega")
    ax[1].set_ylabel("J")
    ax[1].set_yscale("log")
    ax[1].set_title("J(omega)")
    _common.history_axis(ax[2], hist)
    summary = {
        "problem": "harmonic_oscillator",
        "steps": steps,
        "method": repr(method),
        "checkpoint": repr(checkpoint),
        "objective": float(opt.fun),
        "omega": w_hat,
        "true_omega": TRUE_OMEGA,
        "omega0": float(omega0),
        "iterations": int(opt.nit),
        "message": str(opt.message),
        "history": hist,
    }
    return _common.save(output_dir, "harmonic_oscillator", fig, summary)


if __name__ == "__main__":  # pragma: no cover
    s = solve()
    print(
        f"omega_hat = {s.summary['omega']:.10f} (true {TRUE_OMEGA}), J = {s.summary['objective']:.3e}, saved {s.figure}"
    )
