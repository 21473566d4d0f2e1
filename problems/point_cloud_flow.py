"""Point cloud flow: move a cloud toward another by gradient descent on the Sinkhorn cost.

Problem: source points ``x (n, 2)`` (a Gaussian blob) with uniform weights, target points
``y (m, 2)`` (a noisy ring).  Minimise over ``x``

    J(x) = OT_eps(a, b; C(x, y)),   C_ij = |x_i - y_j|^2,

by the Lagrangian (Wasserstein) gradient step ``x_i <- x_i - lr grad_x_i J / (2 a_i)``.
With ``lr = 1`` this is the barycentric projection ``x_i <- (P y)_i / a_i``.  Known answer:
the cloud ends on the ring (``transport_cost`` tends to the entropic blur, ~eps), and ``J``
decreases monotonically for ``lr <= 1``.

``solve(output_dir)`` runs the flow with ``adjoint.sinkhorn_value_and_grad`` (default
``mode="envelope"``, exact at convergence for the regularised cost), saves
``point_cloud_flow.png`` (snapshots and the cost curve) and ``point_cloud_flow.json`` and returns a
:class:`~adjoint.cli.ProblemResult`; :func:`flow` returns the trajectory (a :class:`FlowResult`)
without writing files.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adjoint._sinkhorn import sinkhorn_value_and_grad


@dataclass(frozen=True)
class FlowResult:
    """Trajectory of the flow: ``snapshots[k]`` is the cloud after ``snapshot_steps[k]`` steps."""

    x_final: np.ndarray
    target: np.ndarray
    values: np.ndarray
    snapshots: tuple
    snapshot_steps: tuple


def make_problem(n=300, m=400, seed=0):
    """Source blob, target ring, uniform weights: returns ``(a, b, x0, y)``."""
    rng = np.random.default_rng(seed)
    x0 = 0.08 * rng.standard_normal((n, 2)) + np.array([0.25, 0.5])
    t = rng.random(m) * 2 * np.pi
    r = 0.3 + 0.02 * rng.standard_normal(m)
    y = np.stack([0.6 + r * np.cos(t), 0.5 + r * np.sin(t)], axis=1)
    return np.full(n, 1.0 / n), np.full(m, 1.0 / m), x0, y


def flow(
    *, n=300, m=400, eps=2e-3, steps=40, lr=0.5, mode="envelope", seed=0, snapshots=(0, 2, 5, 10, 40), verbose=True
):
    """Run the flow (``steps`` gradient steps); returns a :class:`FlowResult` (no files written)."""
    a, b, x, y = make_problem(n, m, seed)
    values = []
    snaps, snap_steps = [], []
    for k in range(steps + 1):
        if k in snapshots:
            snaps.append(x.copy())
            snap_steps.append(k)
        if k == steps:
            break
        res = sinkhorn_value_and_grad(a, b, x, y, eps, mode=mode, tol=1e-7, eps_scaling=0.7, max_iter=20_000)
        values.append(res.value)
        x = x - lr * res.grad_x / (2 * a[:, None])
        if verbose:
            print(
                f"step {k:3d}  J = {res.value:.6f}  transport = "
                f"{res.solution.transport_cost:.6f}  iters = {res.solution.iterations}"
            )
    return FlowResult(
        x_final=x, target=y, values=np.asarray(values), snapshots=tuple(snaps), snapshot_steps=tuple(snap_steps)
    )


def solve(
    output_dir="out",
    steps=None,
    *,
    n=300,
    m=400,
    eps=2e-3,
    lr=0.5,
    mode="envelope",
    seed=0,
    snapshots=(0, 2, 5, 10, 40),
    verbose=True,
):
    """Run the flow (``steps`` gradient steps, 40 by default); save the figure and the JSON summary.

    Writes ``point_cloud_flow.png`` and ``point_cloud_flow.json`` (the cost per step ``"values"``,
    the snapshots, the final cloud and the target) into ``output_dir``; returns their
    :class:`~adjoint.cli.ProblemResult`. :func:`flow` runs the same without writing files.
    """
    from . import _common

    steps = 40 if steps is None else steps
    r = flow(n=n, m=m, eps=eps, steps=steps, lr=lr, mode=mode, seed=seed, snapshots=snapshots, verbose=verbose)
    y, values = r.target, r.values
    fig, axes = _common.figure(ncols=len(r.snapshots) + 1, width=3.2 * (len(r.snapshots) + 1), height=3.2)
    for ax, s, k in zip(axes, r.snapshots, r.snapshot_steps):
        ax.scatter(y[:, 0], y[:, 1], s=4, c="tab:orange", alpha=0.5, label="target")
        ax.scatter(s[:, 0], s[:, 1], s=4, c="tab:blue", label="cloud")
        ax.set_title(f"step {k}")
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.1, 0.9)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0].legend(loc="lower left", fontsize=7)
    axes[-1].semilogy(np.asarray(values) - min(values) + eps * 1e-3)
    axes[-1].set_title("J - min J")
    axes[-1].set_xlabel("step")
    fig.suptitle(f"Sinkhorn flow, eps={eps}, mode={mode}")
    fig.tight_layout()
    summary = {
        "problem": "point_cloud_flow",
        "steps": steps,
        "eps": eps,
        "lr": lr,
        "mode": mode,
        "values": values,
        "snapshot_steps": r.snapshot_steps,
        "snapshots": r.snapshots,
        "x_final": r.x_final,
        "target": y,
    }
    return _common.save(output_dir, "point_cloud_flow", fig, summary)


if __name__ == "__main__":
    solve()
