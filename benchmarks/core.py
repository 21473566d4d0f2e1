"""Core performance (issue 2): forward vs gradient vs a tuned hand-written numba loop.

Run: ``python benchmarks/core.py``. Prints, for Lotka-Volterra (p = 4, Euler, 10^5 steps) and the
pendulum with per-step controls (Euler, 10^4 steps): forward time, gradient time, their ratio, the
ratio of our gradient to a tuned hand-written numba adjoint of the same computation, central
differences for contrast, and the first-call time in a fresh process with cold and warm caches.
All times are medians of repeated calls after warm-up.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
from numba import njit

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import adjoint  # noqa: E402
from adjoint.problems import lotka_volterra as lv  # noqa: E402
from adjoint.problems import pendulum as pd  # noqa: E402
from benchmarks._util import block_medians, fmt_ms, fresh_cache_env, run_child  # noqa: E402


# ------------------------------------------------------------------------------------------------
# tuned hand-written loops: state in scalars, trajectory in one array, same arithmetic as the model
# ------------------------------------------------------------------------------------------------
@njit(cache=True)
def lv_tuned(x0, p, tau, K):
    X = np.empty((K + 1, 2))
    a, b, d, g = p[0], p[1], p[2], p[3]
    x, y = x0[0], x0[1]
    X[0, 0] = x
    X[0, 1] = y
    for k in range(K):
        x, y = x + tau * (a * x - b * x * y), y + tau * (d * x * y - g * y)
        X[k + 1, 0] = x
        X[k + 1, 1] = y
    yo0, yo1 = lv.Y_OBS[-1, 0], lv.Y_OBS[-1, 1]
    value = 0.5 * ((x - yo0) ** 2 + (y - yo1) ** 2)
    z0, z1 = x - yo0, y - yo1
    ga = gb = gd = gg = 0.0
    run = 0.0
    for k in range(K - 1, -1, -1):
        x = X[k, 0]
        y = X[k, 1]
        t = k * tau
        o0, o1 = lv.observation(t)
        ga += tau * x * z0
        gb -= tau * x * y * z0
        gd += tau * x * y * z1
        gg -= tau * y * z1
        z0, z1 = (
            z0 + tau * ((a - b * y) * z0 + d * y * z1) + tau * (x - o0) / lv.T_END,
            z1 + tau * (-b * x * z0 + (d * x - g) * z1) + tau * (y - o1) / lv.T_END,
        )
        run += 0.5 * ((x - o0) ** 2 + (y - o1) ** 2) / lv.T_END
    return value + tau * run, np.array([ga, gb, gd, gg]), np.array([z0, z1])


@njit(cache=True)
def pendulum_tuned(x0, u, tau):
    K = u.shape[0]
    X = np.empty((K + 1, 2))
    th, om = x0[0], x0[1]
    X[0, 0] = th
    X[0, 1] = om
    run = 0.0
    for k in range(K):
        run += 0.5 * pd.R * u[k, 0] * u[k, 0]
        th, om = th + tau * om, om + tau * (-pd.G_OVER_L * math.sin(th) - pd.DAMPING * om + u[k, 0])
        X[k + 1, 0] = th
        X[k + 1, 1] = om
    value = 0.5 * pd.W_FINAL * ((th - math.pi) ** 2 + om**2) + tau * run
    z0, z1 = pd.W_FINAL * (th - math.pi), pd.W_FINAL * om
    gu = np.empty(K)
    for k in range(K - 1, -1, -1):
        th = X[k, 0]
        gu[k] = tau * z1 + tau * pd.R * u[k, 0]
        z0, z1 = z0 - tau * pd.G_OVER_L * math.cos(th) * z1, z1 + tau * (z0 - pd.DAMPING * z1)
    return value, gu


def bench_lv(K=100_000):
    prob = lv.make_problem(K)
    p = lv.initial_guess()
    fwd, grad, tuned = block_medians(
        [
            lambda: adjoint.evaluate(prob, params=p),
            lambda: adjoint.solve_adjoint(prob, params=p),
            lambda: lv_tuned(prob.x0, p, prob.tau, K),
        ]
    )
    res = adjoint.solve_adjoint(prob, params=p)
    tv, tg, tz = lv_tuned(prob.x0, p, prob.tau, K)
    agree = max(np.max(np.abs(tg - res.grad.params) / np.abs(tg)), np.max(np.abs(tz - res.grad.x0) / np.abs(tz)))
    fd = 12 * fwd  # central differences over 4 params + 2 initial states: 12 forward sweeps
    return dict(
        name=f"Lotka-Volterra, Euler, K={K}",
        forward=fwd,
        gradient=grad,
        tuned=tuned,
        fd=fd,
        fd_note="12 forward sweeps",
        agree=float(agree),
    )


def bench_pendulum(K=10_000):
    prob = pd.make_problem(K)
    u = pd.initial_guess(K)
    fwd, grad, tuned = block_medians(
        [
            lambda: adjoint.evaluate(prob, controls=u),
            lambda: adjoint.solve_adjoint(prob, controls=u),
            lambda: pendulum_tuned(prob.x0, u, prob.tau),
        ]
    )
    res = adjoint.solve_adjoint(prob, controls=u)
    tv, tg = pendulum_tuned(prob.x0, u, prob.tau)
    agree = float(np.max(np.abs(tg - res.grad.controls[:, 0])) / np.max(np.abs(tg)))
    fd = 2 * K * fwd  # central differences over K controls: 2K forward sweeps (extrapolated)
    return dict(
        name=f"pendulum, Euler, K={K} controls",
        forward=fwd,
        gradient=grad,
        tuned=tuned,
        fd=fd,
        fd_note=f"2K = {2 * K} forward sweeps (forward median x {2 * K})",
        agree=agree,
    )


CHILD = r"""
import time, json
t0 = time.perf_counter()
import numpy as np, adjoint
from adjoint.problems import lotka_volterra as lv
t1 = time.perf_counter()
prob = lv.make_problem(100000)
adjoint.solve_adjoint(prob, params=lv.initial_guess())
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "first_gradient": t2 - t1}))
"""


def main():
    rows = [bench_lv(), bench_pendulum()]
    print(
        "Core benchmark (medians of 110 calls each after warm-up, taken in turns of 10 calls;\n"
        "one process; 2-core shared machine)\n"
    )
    for r in rows:
        print(r["name"])
        print(f"  forward (adjoint.evaluate)        {fmt_ms(r['forward'])}")
        print(f"  gradient (adjoint.solve_adjoint)  {fmt_ms(r['gradient'])}")
        print(f"  tuned hand-written numba adjoint  {fmt_ms(r['tuned'])}")
        print(f"  gradient / forward                {r['gradient'] / r['forward']:9.2f}   (target <= 2.5)")
        print(f"  gradient / tuned loop             {r['gradient'] / r['tuned']:9.2f}   (target <= 1.2)")
        print(f"  central differences               {fmt_ms(r['fd'])}   ({r['fd_note']})")
        print(f"  max rel. difference to tuned loop {r['agree']:9.1e}")
    env = fresh_cache_env()
    cold = run_child(CHILD, env)
    warm = run_child(CHILD, env)
    print("\nFirst gradient in a fresh process (Lotka-Volterra, 10^5 steps; import time apart)")
    print(
        f"  cold caches: import {cold['import']:.2f} s, first gradient {cold['first_gradient']:.2f} s   (target <= 3 s)"
    )
    print(
        f"  warm caches: import {warm['import']:.2f} s, first gradient {warm['first_gradient']:.2f} s   (target <= 0.5 s)"
    )


if __name__ == "__main__":
    main()
