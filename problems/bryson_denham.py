"""Bryson-Denham: a double integrator with a state constraint x <= l (solve_ocp; optimum 4 / (9 l)).

State ``x = (position, velocity)``, control ``c = (acceleration,)`` on ``t in [0, 1]``::

    x' = v,  v' = u,   x(0) = 0, v(0) = 1,   x(1) = 0, v(1) = -1,   x(t) <= l,
    minimise J = 1/2 int_0^1 u^2 dt.

For ``l <= 1/6`` the state constraint is active on the arc ``[3 l, 1 - 3 l]`` and the continuous
optimum is ``J* = 4 / (9 l)`` (Bryson and Ho, *Applied Optimal Control*, 1975, section 3.11),
with ``u(t) = -2/(3 l) (1 - t/(3 l))`` before the arc and zero on it. The problem is written in
plain numpy (traced): a :class:`adjoint.Terminal` constraint for the final state and a
:class:`adjoint.Path` constraint for ``x <= l``, solved by :func:`adjoint.solve_ocp` on the
explicit-Euler grid; the discrete optimum converges to ``J*`` as the grid is refined.
"""

from __future__ import annotations

import numpy as np

import adjoint

L_MAX = 1.0 / 9.0
X0 = np.array([0.0, 1.0])
X_FINAL = np.array([0.0, -1.0])


def dynamics(x, c, p, t):
    return np.array([x[1], c[0]])


def effort(x, c, p, t):
    return 0.5 * c[0] ** 2


def make_problem(steps: int = 100, l: float = L_MAX) -> adjoint.ControlProblem:
    """The problem on ``steps`` steps with the limit ``x <= l``."""
    return adjoint.ControlProblem(
        dynamics,
        X0,
        (0.0, 1.0),
        steps,
        running_cost=effort,
        control_dim=1,
        constraints=[
            adjoint.Terminal(lambda x, p: x - X_FINAL, name="final_state"),
            adjoint.Path(lambda x, c, p, t: x[0], upper=l, name="position_limit"),
        ],
        name="bryson_denham",
    )


def exact_optimum(l: float = L_MAX) -> float:
    """The continuous optimum ``4 / (9 l)`` (valid for ``l <= 1/6``)."""
    if not 0 < l <= 1.0 / 6.0:
        raise ValueError(f"the closed form holds for 0 < l <= 1/6; got l = {l}")
    return 4.0 / (9.0 * l)


def exact_control(t, l: float = L_MAX):
    """The continuous optimal control ``u(t)`` (symmetric about ``t = 1/2``)."""
    t = np.asarray(t, dtype=np.float64)
    s = np.minimum(t, 1.0 - t)
    return np.where(s < 3 * l, -2.0 / (3 * l) * (1.0 - s / (3 * l)), 0.0)


def solve(output_dir="out", steps=None, max_iter=200, verbose=True, solver="slsqp"):
    """Solve with :func:`adjoint.solve_ocp` from zero controls and compare with the closed form.

    Writes ``bryson_denham.png`` and ``bryson_denham.json`` into ``output_dir``.
    """
    from . import _common

    steps = 200 if steps is None else steps
    prob = make_problem(steps)
    res = adjoint.solve_ocp(
        prob, controls=np.zeros((steps, 1)), solver=solver, options={"max_iter": max_iter}, verbose=verbose
    )
    j_star = exact_optimum()
    rel = abs(res.value - j_star) / j_star
    if verbose:
        print(
            f"  {res.message} ({res.nit} iterations, {res.nfev} gradients, {res.njev} constraint Jacobians, "
            f"{res.seconds:.2f} s)\n"
            f"  objective {res.value:.10f}   continuous optimum 4/(9 l) = {j_star:.10f}   relative gap {rel:.2e}   "
            f"max violation {res.max_violation:.1e}"
        )
    t = res.times
    fig, ax = _common.figure()
    ax[0].plot(t, res.trajectory[:, 0], label="position x")
    ax[0].axhline(L_MAX, color="k", ls=":", lw=1, label="limit l")
    ax[0].plot(t, res.trajectory[:, 1], label="velocity v")
    ax[0].set_xlabel("t")
    ax[0].set_title("state")
    ax[0].legend()
    ax[1].step(t[:-1], res.controls[:, 0], where="post", label=f"solve_ocp ({solver})")
    ax[1].plot(t, exact_control(t), "k--", lw=1, label="continuous optimum")
    ax[1].set_xlabel("t")
    ax[1].set_title("control u")
    ax[1].legend()
    ax[2].plot(np.arange(len(res.history)), res.history, "o-", ms=3)
    ax[2].set_xlabel("evaluation")
    ax[2].set_title("objective")
    summary = {
        "problem": "bryson_denham",
        "steps": steps,
        "solver": solver,
        "objective": res.value,
        "exact_optimum": j_star,
        "relative_gap": rel,
        "max_violation": res.max_violation,
        "success": res.success,
        "iterations": res.nit,
    }
    return _common.save(output_dir, "bryson_denham", fig, summary)
