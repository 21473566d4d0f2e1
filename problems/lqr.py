"""Linear-quadratic regulator (double integrator) with an independently computed optimum.

State ``x = (position, velocity)``, control ``c = (force,)``::

    x' = A x + B c,   A = [[0, 1], [0, 0]],  B = [0, 1]^T

Objective on the explicit-Euler grid (the *discrete* problem)::

    J = 0.5 x_K^T QF x_K + tau * sum_k 0.5 (x_k^T Q x_k + R c_k^2)

``exact_optimum(steps)`` computes the exact minimiser of this discrete quadratic by a dense
linear solve (no use of the library), so the optimiser's result can be checked to rounding.
"""

from __future__ import annotations

import numpy as np
from numba import njit

import adjoint

A = np.array([[0.0, 1.0], [0.0, 0.0]])
B = np.array([0.0, 1.0])
Q = np.diag([1.0, 0.1])
QF = np.diag([10.0, 10.0])
R = 0.1
X0 = np.array([1.0, 0.0])
T_END = 5.0


@njit(cache=True)
def f(x, c, p, t, out):
    out[0] = x[1]
    out[1] = c[0]


@njit(cache=True)
def vjp(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = 0.0
    out_x[1] = z[0]
    out_c[0] = z[1]


@njit(cache=True)
def running_value(x, c, p, t):
    return 0.5 * (Q[0, 0] * x[0] ** 2 + Q[1, 1] * x[1] ** 2 + R * c[0] ** 2)


@njit(cache=True)
def running_grad(x, c, p, t, out_x, out_c, out_p):
    out_x[0] = Q[0, 0] * x[0]
    out_x[1] = Q[1, 1] * x[1]
    out_c[0] = R * c[0]


@njit(cache=True)
def terminal_value(x, c, p, t):
    return 0.5 * (QF[0, 0] * x[0] ** 2 + QF[1, 1] * x[1] ** 2)


@njit(cache=True)
def terminal_grad(x, c, p, t, out_x, out_c, out_p):
    out_x[0] = QF[0, 0] * x[0]
    out_x[1] = QF[1, 1] * x[1]


DYNAMICS = adjoint.Dynamics(f, vjp, state_dim=2, control_dim=1, name="double_integrator")
RUNNING = adjoint.Cost(running_value, running_grad, name="quadratic")
TERMINAL = adjoint.Cost(terminal_value, terminal_grad, name="final_quadratic")


def make_problem(steps: int = 100) -> adjoint.ControlProblem:
    """The LQR problem on ``steps`` explicit-Euler steps over ``[0, T_END]``."""
    return adjoint.ControlProblem(
        DYNAMICS, X0, (0.0, T_END), steps, terminal_cost=TERMINAL, running_cost=RUNNING, name="lqr"
    )


def exact_optimum(steps: int):
    """Exact minimiser of the discrete objective: returns ``(controls (steps, 1), J*)``.

    With ``F = I + tau A``, ``x_k = F^k x0 + tau sum_{j<k} F^{k-1-j} B c_j`` is affine in the
    stacked controls, so ``J`` is a quadratic ``0.5 c^T H c + g^T c + const``; ``H c = -g``.
    """
    tau = T_END / steps
    F = np.eye(2) + tau * A
    # x_k = Phi[k] x0 + G[k] c
    Phi = np.empty((steps + 1, 2, 2))
    G = np.zeros((steps + 1, 2, steps))
    Phi[0] = np.eye(2)
    for k in range(steps):
        Phi[k + 1] = F @ Phi[k]
        G[k + 1] = F @ G[k]
        G[k + 1][:, k] += tau * B
    H = tau * R * np.eye(steps)
    g = np.zeros(steps)
    const = 0.0
    for k in range(steps + 1):
        W = QF if k == steps else tau * Q
        H += G[k].T @ W @ G[k]
        g += G[k].T @ W @ (Phi[k] @ X0)
        const += 0.5 * (Phi[k] @ X0) @ W @ (Phi[k] @ X0)
    c = np.linalg.solve(H, -g)
    J = 0.5 * c @ H @ c + g @ c + const
    return c.reshape(steps, 1), float(J)


def solve(output_dir="out", steps=None, method=None, max_iter=500, verbose=True):
    """Optimise with L-BFGS-B from zero controls and compare with :func:`exact_optimum`.

    Writes ``lqr.png`` and ``lqr.json`` into ``output_dir``; returns their
    :class:`~adjoint.cli.ProblemResult`.
    """
    from . import _common

    steps = 100 if steps is None else steps
    if method not in (None, "euler") and not isinstance(method, adjoint.Euler):
        raise ValueError("the LQR reference optimum is computed for explicit Euler; use method='euler'")
    prob = make_problem(steps)
    fun = prob.objective(wrt="controls", controls=np.zeros((steps, 1)))
    res, hist = _common.lbfgs(fun, fun.initial(), max_iter=max_iter, verbose=verbose, gtol=1e-12, ftol=1e-15)
    c_opt, j_opt = exact_optimum(steps)
    u = fun.unpack(res.x)["controls"]
    _, traj = adjoint.simulate(prob, controls=u)
    rel = abs(res.fun - j_opt) / abs(j_opt)
    if verbose:
        print(f"  objective {res.fun:.12e}  exact discrete optimum {j_opt:.12e}  relative gap {rel:.2e}")
    t = prob.times
    fig, ax = _common.figure()
    ax[0].plot(t, traj[:, 0], label="position")
    ax[0].plot(t, traj[:, 1], label="velocity")
    ax[0].set_xlabel("t")
    ax[0].set_title("state")
    ax[0].legend()
    ax[1].step(t[:-1], u[:, 0], where="post", label="L-BFGS-B")
    ax[1].plot(t[:-1], c_opt[:, 0], "k--", lw=1, label="exact (dense solve)")
    ax[1].set_xlabel("t")
    ax[1].set_title("control")
    ax[1].legend()
    _common.history_axis(ax[2], hist)
    summary = {
        "problem": "lqr",
        "steps": steps,
        "objective": float(res.fun),
        "exact_optimum": j_opt,
        "relative_gap": rel,
        "iterations": int(res.nit),
        "history": hist,
    }
    return _common.save(output_dir, "lqr", fig, summary)
