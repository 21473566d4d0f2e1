"""Discretise-then-optimise vs optimise-then-discretise on the pendulum (issue 8, part 2).

Run: ``python examples/dto_vs_otd.py [--out docs/img/dto_vs_otd.png] [--max-steps 25600]``.

The objective is the one the library computes, the pendulum of ``problems/pendulum.py`` on the
explicit Euler grid ``t_k = k tau`` with per-step torques ``c_k``::

    x_{k+1} = x_k + tau u(x_k, c_k),   J = L(x_K) + tau sum_k l(c_k)

Three gradients with respect to the torques ``c_0 ... c_{K-1}``:

* **DTO** (ours, ``adjoint.solve_adjoint``): the discrete adjoint
  ``z_k = z_{k+1} + tau [d_x u(x_k, c_k)]^T z_{k+1}``, ``dJ/dc_k = tau [d_c u]^T z_{k+1} + tau l'(c_k)``;
* **OTD, Euler grid**: the continuous adjoint ``z' = -[d_x u(x(t), c(t))]^T z`` integrated backwards
  with explicit Euler on the same grid, from the stored states (what a continuous-adjoint ODE
  library does with a fixed-step Euler solver): ``z_k = z_{k+1} + tau [d_x u(x_{k+1}, c_k)]^T z_{k+1}``;
* **OTD, fine RK4**: the continuous problem solved accurately (RK4, 16 substeps per control
  interval, forward; then state and adjoint together backwards), ``dJ/dc_k = int_{t_k}^{t_{k+1}} z_2 dt
  + tau l'(c_k)``: the exact gradient of the *continuous* objective.

Reference: the derivative of the computed ``J`` by the complex step, in random directions ``v``
(``dJ_v = Im J(c + i h v) / h`` with ``h = 1e-30``: exact to rounding). The DTO error is
``|<g, v> - dJ_v| / |dJ_v|`` (largest over three directions): rounding level for every step size.
Once DTO is established as the exact gradient, the OTD errors are measured against it componentwise,
``max_k |g_k - g_dto_k| / max_k |g_dto_k|``: both are off by ``O(tau)``; they converge to the gradient
of the ODE, not to the gradient of what was computed.
"""

from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np
from numba import njit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import adjoint  # noqa: E402
from adjoint.problems import pendulum as pd  # noqa: E402

G, DAMP, W, R = pd.G_OVER_L, pd.DAMPING, pd.W_FINAL, pd.R


def controls(K):
    """A fixed torque profile (amplitude 1), sampled at the left end of each step."""
    return 2.0 * pd.initial_guess(K)


def dto(K, c):
    prob = pd.make_problem(K)
    return adjoint.solve_adjoint(prob, controls=c).grad.controls[:, 0]


@njit(cache=True)
def otd_euler(x0, c, tau):
    K = c.shape[0]
    X = np.empty((K + 1, 2))
    X[0] = x0
    for k in range(K):
        X[k + 1, 0] = X[k, 0] + tau * X[k, 1]
        X[k + 1, 1] = X[k, 1] + tau * (-G * math.sin(X[k, 0]) - DAMP * X[k, 1] + c[k])
    z0, z1 = W * (X[K, 0] - math.pi), W * X[K, 1]
    g = np.empty(K)
    for k in range(K - 1, -1, -1):
        g[k] = tau * z1 + tau * R * c[k]  # [d_c u]^T z at t_{k+1}
        th = X[k + 1, 0]  # the Jacobian at the right end: a backward Euler-grid step of z' = -A^T z
        z0, z1 = z0 - tau * G * math.cos(th) * z1, z1 + tau * (z0 - DAMP * z1)
    return g


@njit(cache=True)
def _rhs_back(s, ck, out):
    # augmented state s = (theta, omega, z0, z1, q), derivative in forward time
    th, om, z0, z1 = s[0], s[1], s[2], s[3]
    out[0] = om
    out[1] = -G * math.sin(th) - DAMP * om + ck
    out[2] = G * math.cos(th) * z1  # z' = -A^T z,  A = [[0, 1], [-G cos th, -DAMP]]
    out[3] = -z0 + DAMP * z1
    out[4] = z1  # q' = [d_c u]^T z = z1


@njit(cache=True)
def otd_rk4(x0, c, tau, sub):
    K = c.shape[0]
    h = tau / sub
    s = np.zeros(5)
    s[0], s[1] = x0[0], x0[1]
    k1, k2, k3, k4, tmp = np.empty(5), np.empty(5), np.empty(5), np.empty(5), np.empty(5)
    for k in range(K):  # forward: state only (the adjoint rows are zero)
        for _ in range(sub):
            _rhs_back(s, c[k], k1)
            for i in range(2):
                tmp[i] = s[i] + 0.5 * h * k1[i]
            _rhs_back(tmp, c[k], k2)
            for i in range(2):
                tmp[i] = s[i] + 0.5 * h * k2[i]
            _rhs_back(tmp, c[k], k3)
            for i in range(2):
                tmp[i] = s[i] + h * k3[i]
            _rhs_back(tmp, c[k], k4)
            for i in range(2):
                s[i] += h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
    s[2], s[3] = W * (s[0] - math.pi), W * s[1]
    g = np.empty(K)
    for k in range(K - 1, -1, -1):  # backward: state and adjoint together, time reversed
        s[4] = 0.0
        for _ in range(sub):
            _rhs_back(s, c[k], k1)
            for i in range(5):
                tmp[i] = s[i] - 0.5 * h * k1[i]
            _rhs_back(tmp, c[k], k2)
            for i in range(5):
                tmp[i] = s[i] - 0.5 * h * k2[i]
            _rhs_back(tmp, c[k], k3)
            for i in range(5):
                tmp[i] = s[i] - h * k3[i]
            _rhs_back(tmp, c[k], k4)
            for i in range(5):
                s[i] -= h / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
        g[k] = -s[4] + tau * R * c[k]  # q ran backwards from 0: -q = int_{t_k}^{t_{k+1}} z1 dt
    return g


def objective_complex(c, tau):
    """The discrete objective in plain numpy, complex-valued (for the complex step)."""
    th, om = complex(pd.X0[0]), complex(pd.X0[1])
    run = 0.0
    for ck in c:
        run += 0.5 * R * ck * ck
        th, om = th + tau * om, om + tau * (-G * np.sin(th) - DAMP * om + ck)
    return 0.5 * W * ((th - math.pi) ** 2 + om**2) + tau * run


def directional_errors(K, n_dir=3, seed=0):
    c = controls(K)
    tau = pd.T_END / K
    grads = {
        "DTO (adjoint.solve_adjoint)": dto(K, c),
        "OTD, Euler grid backwards": otd_euler(pd.X0, c[:, 0], tau),
        "OTD, fine RK4 (continuous gradient)": otd_rk4(pd.X0, c[:, 0], tau, 16),
    }
    rng = np.random.default_rng(seed)
    g_dto = grads["DTO (adjoint.solve_adjoint)"]
    err = {k: float(np.max(np.abs(g - g_dto)) / np.max(np.abs(g_dto))) for k, g in grads.items()}
    err["DTO (adjoint.solve_adjoint)"] = 0.0
    h = 1e-30
    for _ in range(n_dir):
        v = rng.standard_normal(K)
        ref = objective_complex(c[:, 0] + 1j * h * v, tau).imag / h
        err["DTO (adjoint.solve_adjoint)"] = max(
            err["DTO (adjoint.solve_adjoint)"], abs(float(g_dto @ v) - ref) / abs(ref)
        )
    return err, grads


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(ROOT, "docs", "img", "dto_vs_otd.png"))
    ap.add_argument("--max-steps", type=int, default=25_600)
    args = ap.parse_args(argv)
    Ks = [25 * 2**j for j in range(20) if 25 * 2**j <= args.max_steps]
    taus, errs = [], []
    print(f"{'steps':>7} {'tau':>10} " + " ".join(f"{n[:26]:>27}" for n in ("DTO", "OTD Euler grid", "OTD fine RK4")))
    for K in Ks:
        e, _ = directional_errors(K)
        taus.append(pd.T_END / K)
        errs.append(e)
        print(f"{K:7d} {pd.T_END / K:10.2e} " + " ".join(f"{v:27.2e}" for v in e.values()), flush=True)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(10, 3.8))
    Kc = 50
    _, g = directional_errors(Kc)
    t = pd.T_END / Kc * np.arange(Kc)
    for (name, gk), st in zip(g.items(), ("-o", "--", ":")):
        ax[0].plot(t, gk / (pd.T_END / Kc), st, ms=3, label=name)
    ax[0].set_xlabel("t")
    ax[0].set_ylabel("dJ/dc_k / tau")
    ax[0].set_title(f"gradient w.r.t. the torques, {Kc} steps")
    ax[0].legend(fontsize=7)
    floor = 1e-17
    for name, mk in zip(errs[0], ("o-", "s-", "^-")):
        ax[1].loglog(taus, [max(e[name], floor) for e in errs], mk, ms=4, label=name)
    ax[1].loglog(
        taus, [errs[0]["OTD, Euler grid backwards"] * tt / taus[0] for tt in taus], "k:", lw=0.8, label="slope 1"
    )
    ax[1].set_xlabel("step size tau")
    ax[1].set_ylabel("relative error")
    ax[1].set_title("error vs the exact gradient of the computed J")
    ax[1].legend(fontsize=7)
    fig.tight_layout()
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
