"""Kepler two-body shooting: find the initial velocity that reaches a target point at time T.

Separable form (relative motion, ``x = q`` position in the plane, ``y = q'`` velocity)::

    u(y) = y,    v(q) = -mu q / |q|^3,    p = (mu, target_x, target_y)

integrated with ``adjoint.Leapfrog`` (symplectic: the orbit's energy and angular momentum stay close
to constant over many revolutions). The shooting objective is ``J(v0) = 0.5 |q_K - target|^2``
with ``q_0 = Q0`` fixed; its gradient with respect to the velocity is ``grad.x0[2:]`` of
``solve_adjoint`` (the target sits in ``params`` so one compiled problem serves every target, and
``grad.params`` holds the exact derivatives with respect to ``mu`` and the target too).

In the leapfrog's staggered interpretation the unknown ``y_0`` is the velocity at ``tau/2``; it
differs from ``q'(0)`` by ``O(tau)``, which shooting absorbs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

import adjoint
from adjoint._separable import SeparableDynamics
from adjoint.integrators import Leapfrog

MU = 1.0
Q0 = np.array([1.0, 0.0])
TARGET = np.array([-0.6, 0.7])
T_END = 2.5


@njit(cache=True)
def u(y, c, p, t, out):
    out[0] = y[0]
    out[1] = y[1]


@njit(cache=True)
def vjp_u(y, c, p, t, z, out_y, out_c, out_p):
    out_y[0] = z[0]
    out_y[1] = z[1]
    for i in range(out_p.shape[0]):
        out_p[i] = 0.0


@njit(cache=True)
def v(q, c, p, t, out):
    r2 = q[0] * q[0] + q[1] * q[1]
    r3 = r2 * np.sqrt(r2)
    out[0] = -p[0] * q[0] / r3
    out[1] = -p[0] * q[1] / r3


@njit(cache=True)
def vjp_v(q, c, p, t, z, out_q, out_c, out_p):
    # d/dq (-mu q / r^3) = -mu (I / r^3 - 3 q q^T / r^5)   (symmetric)
    r2 = q[0] * q[0] + q[1] * q[1]
    r = np.sqrt(r2)
    r3 = r2 * r
    r5 = r3 * r2
    qz = q[0] * z[0] + q[1] * z[1]
    out_q[0] = -p[0] * (z[0] / r3 - 3.0 * q[0] * qz / r5)
    out_q[1] = -p[0] * (z[1] / r3 - 3.0 * q[1] * qz / r5)
    out_p[0] = -qz / r3
    out_p[1] = 0.0
    out_p[2] = 0.0


@njit(cache=True)
def miss_value(s, c, p, t):
    return 0.5 * ((s[0] - p[1]) * (s[0] - p[1]) + (s[1] - p[2]) * (s[1] - p[2]))


@njit(cache=True)
def miss_grad(s, c, p, t, out_s, out_c, out_p):
    out_s[0] = s[0] - p[1]
    out_s[1] = s[1] - p[2]
    out_s[2] = 0.0
    out_s[3] = 0.0
    out_p[0] = 0.0
    out_p[1] = -(s[0] - p[1])
    out_p[2] = -(s[1] - p[2])


DYNAMICS = SeparableDynamics(u, vjp_u, v, vjp_v, x_dim=2, y_dim=2, param_dim=3, name="kepler")
MISS = adjoint.Cost(miss_value, miss_grad, name="miss_distance")


def make_problem(steps: int = 2000, t_end: float = T_END, v0=(0.0, 1.0)) -> adjoint.ControlProblem:
    """Shooting from ``Q0`` with initial velocity ``v0``; pass ``params=params(target)``."""
    return adjoint.ControlProblem(
        DYNAMICS,
        np.concatenate([Q0, np.asarray(v0, dtype=float)]),
        (0.0, t_end),
        steps,
        terminal_cost=MISS,
        name="kepler_shooting",
    )


def params(target=TARGET, mu=MU) -> np.ndarray:
    return np.array([mu, target[0], target[1]], dtype=float)


def energy(s, mu=MU):
    """Orbital energy ``|v|^2 / 2 - mu / |q|`` (rows of states)."""
    s = np.asarray(s)
    return 0.5 * (s[..., 2] ** 2 + s[..., 3] ** 2) - mu / np.hypot(s[..., 0], s[..., 1])


def shoot(prob, v0, target=TARGET, checkpoint=None, method=None):
    """Minimise ``J(v0)`` with scipy's BFGS. Returns the scipy result."""
    from scipy.optimize import minimize

    method = Leapfrog() if method is None else method
    p = params(target)

    def fun(vel):
        res = adjoint.solve_adjoint(prob, params=p, x0=np.concatenate([Q0, vel]), method=method, checkpoint=checkpoint)
        return res.value, res.grad.x0[2:].copy()

    return minimize(fun, np.asarray(v0, dtype=float), jac=True, method="BFGS", options={"gtol": 1e-12})


def solve(
    output_dir="out", steps=None, method=None, max_iter=200, verbose=True, target=TARGET, v0=(0.0, 1.0), checkpoint=None
):
    """Shoot to ``target`` with L-BFGS-B (reversible adjoint by default); save the orbits and history.

    ``method`` is ``"leapfrog"`` (default) or ``"verlet"``. Prints one line per iteration when
    ``verbose``, saves ``kepler.png`` (initial and shot orbits, objective history) and ``kepler.json``
    into ``output_dir`` and returns their :class:`~adjoint.cli.ProblemResult` (in its ``summary``, ``"v0"``
    is the shot velocity, ``"miss"`` the final distance to the target).
    """
    from adjoint.checkpointing._reversible import Reversible

    from . import _common

    steps = 4000 if steps is None else steps
    method = _common.separable_method_from_name(method, "Kepler problem")
    checkpoint = Reversible() if checkpoint is None else checkpoint
    target = np.asarray(target, dtype=float)
    v0 = np.asarray(v0, dtype=float)
    prob = make_problem(steps)
    p = params(target)

    def objective(vel):
        res = adjoint.solve_adjoint(prob, params=p, x0=np.concatenate([Q0, vel]), method=method, checkpoint=checkpoint)
        return res.value, res.grad.x0[2:].copy()

    # J has an exact zero (a hit), so only the gradient tolerance ends the search
    opt, hist = _common.lbfgs(_common.Counted(objective), v0, max_iter=max_iter, verbose=verbose, gtol=1e-12, ftol=0.0)
    v_hat = opt.x
    _, first = adjoint.simulate(prob, params=p, x0=np.concatenate([Q0, v0]), method=method)
    _, best = adjoint.simulate(prob, params=p, x0=np.concatenate([Q0, v_hat]), method=method)
    miss = float(np.hypot(*(best[-1, :2] - target)))
    if verbose:
        print(f"  v0 = ({v_hat[0]:.10f}, {v_hat[1]:.10f})   miss {miss:.2e}")
    fig, ax = _common.figure(ncols=2, width=10, height=4.5)
    ax[0].plot(first[:, 0], first[:, 1], ":", color="gray", label=f"initial guess v0=({v0[0]:.3g}, {v0[1]:.3g})")
    ax[0].plot(best[:, 0], best[:, 1], label=f"shot v0=({v_hat[0]:.4f}, {v_hat[1]:.4f})")
    ax[0].plot([0], [0], "k*", ms=12, label="central body")
    ax[0].plot([Q0[0]], [Q0[1]], "go", label="start")
    ax[0].plot([target[0]], [target[1]], "rx", ms=10, mew=2, label=f"target at T={T_END}")
    ax[0].set_aspect("equal")
    ax[0].legend(fontsize=7, loc="lower left")
    ax[0].set_title(f"Kepler shooting, miss {miss:.1e}")
    _common.history_axis(ax[1], hist)
    summary = {
        "problem": "kepler",
        "steps": steps,
        "method": repr(method),
        "checkpoint": repr(checkpoint),
        "objective": float(opt.fun),
        "v0": v_hat,
        "v0_initial": v0,
        "target": target,
        "miss": miss,
        "energy": float(energy(best[-1])),
        "iterations": int(opt.nit),
        "message": str(opt.message),
        "history": hist,
    }
    return _common.save(output_dir, "kepler", fig, summary)


if __name__ == "__main__":  # pragma: no cover
    s = solve()
    r = s.summary
    print(f"v0 = {r['v0']}, miss = {r['miss']:.2e}, iterations = {r['iterations']}, saved {s.figure}")
