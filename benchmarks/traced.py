"""Traced vs hand-written numba: Euler discrete-adjoint gradient time, and build times.

Run: PYTHONPATH=. python benchmarks/traced.py
Prints ratios measured in this run (2 shared cores: expect noise)."""
import math
import os
import subprocess
import sys
import tempfile
import time

import numba
import numpy as np

import adjoint.ad as ad


@numba.njit(cache=True)
def sweep(f, vjp, x0, c, p, tau, K, xs, gp):
    """Generic store-all Euler + discrete adjoint calling out-writing f/vjp (J = 0.5|x_K|^2)."""
    n = x0.shape[0]
    u = np.empty(n)
    xs[0] = x0
    for k in range(K):
        f(xs[k], c, p, k * tau, u)
        for i in range(n):
            xs[k + 1, i] = xs[k, i] + tau * u[i]
    z = xs[K].copy()
    ox = np.empty(n)
    oc = np.empty(c.shape[0])
    op = np.empty(p.shape[0])
    gp[:] = 0.0
    for k in range(K - 1, -1, -1):
        vjp(xs[k], c, p, k * tau, z, ox, oc, op)
        for j in range(p.shape[0]):
            gp[j] += tau * op[j]
        for i in range(n):
            z[i] += tau * ox[i]
    return z


@numba.njit(cache=True)
def lv_tuned(x0, p, tau, K, xs, gp):
    """Hand-tuned Lotka-Volterra Euler gradient, state in scalar locals."""
    a, b, d, g = p[0], p[1], p[2], p[3]
    x, y = x0[0], x0[1]
    xs[0, 0] = x
    xs[0, 1] = y
    for k in range(K):
        x, y = x + tau * (a * x - b * x * y), y + tau * (d * x * y - g * y)
        xs[k + 1, 0] = x
        xs[k + 1, 1] = y
    zx, zy = x, y
    g0 = g1 = g2 = g3 = 0.0
    for k in range(K - 1, -1, -1):
        x, y = xs[k, 0], xs[k, 1]
        g0 += tau * x * zx
        g1 -= tau * x * y * zx
        g2 += tau * x * y * zy
        g3 -= tau * y * zy
        zx, zy = zx + tau * ((a - b * y) * zx + d * y * zy), zy + tau * (-b * x * zx + (d * x - g) * zy)
    gp[0], gp[1], gp[2], gp[3] = g0, g1, g2, g3
    return zx, zy


def make_node(H, N=2):
    def neural_ode(x, c, p, t):
        W1 = p[:H * N].reshape(H, N)
        b1 = p[H * N:H * N + H]
        W2 = p[H * N + H:H * N + H + N * H].reshape(N, H)
        return W2 @ np.tanh(W1 @ x + b1) + p[H * N + H + N * H:]
    return neural_ode


@numba.njit(cache=True)
def node_tuned(x0, p, H, tau, K, xs, gp):
    """Hand-tuned neural-ODE (N=2) Euler gradient with preallocated hidden buffers."""
    N = 2
    ob1, ow2, ob2 = H * N, H * N + H, H * N + H + N * H
    a = np.empty(H)
    xs[0] = x0
    for k in range(K):
        x0_, x1_ = xs[k, 0], xs[k, 1]
        u0, u1 = p[ob2], p[ob2 + 1]
        for j in range(H):
            aj = math.tanh(p[j * 2] * x0_ + p[j * 2 + 1] * x1_ + p[ob1 + j])
            u0 += p[ow2 + j] * aj
            u1 += p[ow2 + H + j] * aj
        xs[k + 1, 0] = x0_ + tau * u0
        xs[k + 1, 1] = x1_ + tau * u1
    z0, z1 = xs[K, 0], xs[K, 1]
    gp[:] = 0.0
    for k in range(K - 1, -1, -1):
        x0_, x1_ = xs[k, 0], xs[k, 1]
        d0 = d1 = 0.0
        for j in range(H):
            aj = math.tanh(p[j * 2] * x0_ + p[j * 2 + 1] * x1_ + p[ob1 + j])
            gp[ow2 + j] += tau * z0 * aj
            gp[ow2 + H + j] += tau * z1 * aj
            dh = (p[ow2 + j] * z0 + p[ow2 + H + j] * z1) * (1.0 - aj * aj)
            gp[ob1 + j] += tau * dh
            gp[j * 2] += tau * dh * x0_
            gp[j * 2 + 1] += tau * dh * x1_
            d0 += p[j * 2] * dh
            d1 += p[j * 2 + 1] * dh
        gp[ob2] += tau * z0
        gp[ob2 + 1] += tau * z1
        z0 += tau * d0
        z1 += tau * d1
    return z0, z1


def best(fn, reps=5):
    fn()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return min(ts)


BUILD = r"""
import time, numpy as np, sys
t0 = time.perf_counter()
import adjoint.ad as ad
sys.path.insert(0, 'benchmarks')
from traced import make_node
t1 = time.perf_counter()
H = int(sys.argv[1])
q = 2 * H + H + 2 * H + 2
dyn = ad.vector_field(make_node(H), 2, 0, q) if H else ad.vector_field(
    lambda x, c, p, t: np.array([p[0]*x[0]-p[1]*x[0]*x[1], p[2]*x[0]*x[1]-p[3]*x[1]]), 2, 0, 4)
q = dyn.param_dim
o = np.empty(2); dyn.f(np.ones(2), np.empty(0), np.ones(q), 0.0, o)
dyn.vjp(np.ones(2), np.empty(0), np.ones(q), 0.0, np.ones(2), np.empty(2), np.empty(0), np.empty(q))
print(time.perf_counter() - t1)
"""


def build_times(H):
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, ADJOINT_CACHE_DIR=d, PYTHONPATH=os.getcwd())
        out = []
        for _ in range(2):
            r = subprocess.run([sys.executable, "-c", BUILD, str(H)], env=env, capture_output=True,
                               text=True, check=True)
            out.append(float(r.stdout.strip().splitlines()[-1]))
        return out


def main():
    rng = np.random.default_rng(0)
    print("== Lotka-Volterra, Euler, 1e5 steps: gradient time ==")
    K, tau = 100_000, 1e-4
    dyn = ad.vector_field(lambda x, c, p, t: np.array([p[0] * x[0] - p[1] * x[0] * x[1],
                                                       p[2] * x[0] * x[1] - p[3] * x[1]]), 2, 0, 4)
    x0, p = np.array([1.0, 0.5]), np.array([1.0, 0.5, 0.25, 2.0])
    xs, gp1, gp2 = np.empty((K + 1, 2)), np.empty(4), np.empty(4)
    c = np.empty(0)
    t_tuned = best(lambda: lv_tuned(x0, p, tau, K, xs, gp1))
    t_traced = best(lambda: sweep(dyn.f, dyn.vjp, x0, c, p, tau, K, xs, gp2))
    assert np.allclose(gp1, gp2, rtol=1e-10)
    print(f"tuned hand loop {t_tuned*1e3:.2f} ms; generic sweep + traced kernels {t_traced*1e3:.2f} ms; "
          f"ratio {t_traced/t_tuned:.2f}")
    for H in (32, 128):
        print(f"== neural ODE hidden {H}, Euler, 1000 steps ==")
        q = 5 * H + 2
        p = 0.3 * rng.normal(size=q)
        dyn = ad.vector_field(make_node(H), 2, 0, q)
        K, tau = 1000, 1e-2
        xs = np.empty((K + 1, 2))
        g1, g2 = np.empty(q), np.empty(q)
        t_tuned = best(lambda: node_tuned(x0, p, H, tau, K, xs, g1))
        t_traced = best(lambda: sweep(dyn.f, dyn.vjp, x0, c, p, tau, K, xs, g2))
        print(f"max rel diff {np.max(np.abs(g1-g2))/np.max(np.abs(g1)):.1e}")
        print(f"tuned {t_tuned*1e3:.3f} ms; traced {t_traced*1e3:.3f} ms; ratio {t_traced/t_tuned:.2f}")
    for H in (0, 32, 128):
        cold, warm = build_times(H)
        print(f"build (trace+codegen+compile, {'LV' if not H else f'NODE H={H}'}): cold {cold:.2f} s, "
              f"warm disk cache {warm:.2f} s")


if __name__ == "__main__":
    main()
