"""Traced (the library's real path) vs a tuned hand-written numba adjoint (issue 5).

Run: ``PYTHONPATH=. python benchmarks/traced.py`` (``--quick`` for small sizes, no child processes).

"traced" is what a user gets from plain numpy code: ``adjoint.solve_adjoint`` on a
``ControlProblem`` whose dynamics come from ``adjoint.vector_field(plain_fn, ...)`` and whose
terminal cost ``0.5 |x_K - target|^2`` comes from ``adjoint.cost(plain_fn, ...)``. When the traced
field is small (forward + VJP <= ``adjoint._fused.MAX_SCALAR_OPS`` scalar operations) the library
generates one fused scalar sweep; a larger field with a store-all schedule whose tape fits the memory
budget runs the tape kernel (``adjoint._tape``: one generated store-all sweep that stores the expensive
forward intermediates, here the tanh activations, and reads them back in the backward loop); otherwise
the generic kernels calling the generated f/vjp. The "path" column says which ran.

"tuned" is a hand-written numba adjoint of exactly the same computation (explicit Euler, discrete
adjoint, value + gradients w.r.t. p and x0, trajectory allocated per call like the library does):
state in scalar locals for Lotka-Volterra; for the neural ODE ``u(x) = W2 tanh(W1 x + b1) + b2``
plain loops with the hidden activations stored in the forward sweep (no tanh recomputed, no
allocation in the inner loops). The generated code evaluates tanh with ``adjoint._vecmath.tanh``
(branch free, vectorised; libm's ``math.tanh`` is a scalar call), so the neural ODE has a second
tuned baseline, "tuned vm": the same hand-written adjoint calling ``adjoint._vecmath.tanh``.

"generic sweep" (extra column, a colleague's earlier measurement) is a store-all Euler adjoint
written in this file that calls the traced ``dyn.f`` / ``dyn.vjp`` kernels once per step.

All step times are medians of interleaved rounds after warm-up (2 shared cores: expect noise).
Build times (trace + codegen + numba compile + the first gradient) are measured in fresh child
processes with NUMBA_CACHE_DIR and ADJOINT_CACHE_DIR pointing at a new temporary folder (cold),
then again with the same folder (warm); the import time of numpy/numba/adjoint is printed apart.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numba
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import adjoint  # noqa: E402
from adjoint import _vecmath  # noqa: E402
from benchmarks._util import fresh_cache_env, run_child  # noqa: E402

TARGET = np.array([0.8, 1.3])
LV_P = np.array([1.0, 0.5, 0.25, 2.0])
LV_X0 = np.array([1.0, 0.5])
NODE_X0 = np.array([1.0, 0.5])


# -- the models, as plain numpy functions ------------------------------------------------------------


def lotka_volterra(x, c, p, t):
    return np.array([p[0] * x[0] - p[1] * x[0] * x[1], p[2] * x[0] * x[1] - p[3] * x[1]])


def make_node(H, N=2):
    """``u(x) = W2 tanh(W1 x + b1) + b2`` with ``p = (W1.ravel(), b1, W2.ravel(), b2)``."""

    def neural_ode(x, c, p, t):
        W1 = p[: H * N].reshape(H, N)
        b1 = p[H * N : H * N + H]
        W2 = p[H * N + H : H * N + H + N * H].reshape(N, H)
        return W2 @ np.tanh(W1 @ x + b1) + p[H * N + H + N * H :]

    return neural_ode


def terminal(x, c, p, t):
    return 0.5 * np.sum((x - TARGET) ** 2)


def build_problem(case):
    """(ControlProblem, kwargs for solve_adjoint) for case "lv", "node32", "node128"."""
    if case == "lv":
        K, T = 100_000, 10.0
        dyn = adjoint.vector_field(lotka_volterra, state_dim=2, param_dim=4)
        p, x0 = LV_P, LV_X0
    else:
        H = int(case[4:])
        K, T = 1000, 10.0
        q = 5 * H + 2
        dyn = adjoint.vector_field(make_node(H), state_dim=2, param_dim=q)
        p, x0 = node_params(H), NODE_X0
    cst = adjoint.cost(terminal, state_dim=2, param_dim=dyn.param_dim)
    prob = adjoint.ControlProblem(dyn, x0, (0.0, T), K, terminal_cost=cst)
    return prob, dict(params=p, checkpoint=adjoint.StoreAll())


def node_params(H):
    return 0.3 * np.random.default_rng(H).normal(size=5 * H + 2)


# -- tuned hand-written adjoints -------------------------------------------------------------------


@numba.njit(cache=True)
def lv_tuned(x0, p, tau, K, target):
    """Lotka-Volterra Euler + discrete adjoint, state in scalar locals. Returns (J, dJ/dp, dJ/dx0)."""
    X = np.empty((K + 1, 2))
    a, b, d, g = p[0], p[1], p[2], p[3]
    x, y = x0[0], x0[1]
    X[0, 0] = x
    X[0, 1] = y
    for k in range(K):
        x, y = x + tau * (a * x - b * x * y), y + tau * (d * x * y - g * y)
        X[k + 1, 0] = x
        X[k + 1, 1] = y
    zx, zy = x - target[0], y - target[1]
    value = 0.5 * (zx * zx + zy * zy)
    g0 = g1 = g2 = g3 = 0.0
    for k in range(K - 1, -1, -1):
        x, y = X[k, 0], X[k, 1]
        g0 += tau * (x * zx)
        g1 += tau * (-x * y * zx)
        g2 += tau * (x * y * zy)
        g3 += tau * (-y * zy)
        zx, zy = zx + tau * ((a - b * y) * zx + d * y * zy), zy + tau * (-b * x * zx + (d * x - g) * zy)
    gp = np.empty(4)
    gp[0], gp[1], gp[2], gp[3] = g0, g1, g2, g3
    gx = np.empty(2)
    gx[0], gx[1] = zx, zy
    return value, gp, gx


@numba.njit(cache=True)
def _node_backward(X, A, p, H, tau, K, target, x0_, x1_):
    """The backward sweep of both tuned neural-ODE adjoints (stored states X, activations A)."""
    ob1, ow2, ob2 = 2 * H, 3 * H, 5 * H
    gp = np.zeros(5 * H + 2)
    z0, z1 = x0_ - target[0], x1_ - target[1]
    value = 0.5 * (z0 * z0 + z1 * z1)
    for k in range(K - 1, -1, -1):
        x0_, x1_ = X[k, 0], X[k, 1]
        t0, t1 = tau * z0, tau * z1
        d0 = 0.0
        d1 = 0.0
        for j in range(H):
            aj = A[k, j]
            gp[ow2 + j] += t0 * aj
            gp[ow2 + H + j] += t1 * aj
            dh = (p[ow2 + j] * t0 + p[ow2 + H + j] * t1) * (1.0 - aj * aj)
            gp[ob1 + j] += dh
            gp[2 * j] += dh * x0_
            gp[2 * j + 1] += dh * x1_
            d0 += p[2 * j] * dh
            d1 += p[2 * j + 1] * dh
        gp[ob2] += t0
        gp[ob2 + 1] += t1
        z0 += d0
        z1 += d1
    gx = np.empty(2)
    gx[0], gx[1] = z0, z1
    return value, gp, gx


@numba.njit(cache=True)
def node_tuned(x0, p, H, tau, K, target):
    """Neural ODE (N = 2) Euler + discrete adjoint; activations stored in the forward sweep."""
    ob1, ow2, ob2 = 2 * H, 3 * H, 5 * H
    X = np.empty((K + 1, 2))
    A = np.empty((K, H))
    x0_, x1_ = x0[0], x0[1]
    X[0, 0] = x0_
    X[0, 1] = x1_
    for k in range(K):
        u0 = 0.0
        u1 = 0.0
        for j in range(H):
            aj = math.tanh(p[2 * j] * x0_ + p[2 * j + 1] * x1_ + p[ob1 + j])
            A[k, j] = aj
            u0 += p[ow2 + j] * aj
            u1 += p[ow2 + H + j] * aj
        x0_ = x0_ + tau * (u0 + p[ob2])
        x1_ = x1_ + tau * (u1 + p[ob2 + 1])
        X[k + 1, 0] = x0_
        X[k + 1, 1] = x1_
    return _node_backward(X, A, p, H, tau, K, target, x0_, x1_)


@numba.njit(cache=True)
def node_tuned_fast(x0, p, H, tau, K, target):
    """``node_tuned`` with ``adjoint._vecmath.tanh`` (the tanh of the generated code) instead of
    ``math.tanh``, the activations computed in a loop of their own so that it vectorises (the sums
    that follow cannot: no reassociation without fastmath)."""
    ob1, ow2, ob2 = 2 * H, 3 * H, 5 * H
    X = np.empty((K + 1, 2))
    A = np.empty((K, H))
    x0_, x1_ = x0[0], x0[1]
    X[0, 0] = x0_
    X[0, 1] = x1_
    for k in range(K):
        Ak = A[k]
        for j in range(H):
            Ak[j] = _vecmath.tanh(p[2 * j] * x0_ + p[2 * j + 1] * x1_ + p[ob1 + j])
        u0 = 0.0
        u1 = 0.0
        for j in range(H):
            aj = Ak[j]
            u0 += p[ow2 + j] * aj
            u1 += p[ow2 + H + j] * aj
        x0_ = x0_ + tau * (u0 + p[ob2])
        x1_ = x1_ + tau * (u1 + p[ob2 + 1])
        X[k + 1, 0] = x0_
        X[k + 1, 1] = x1_
    return _node_backward(X, A, p, H, tau, K, target, x0_, x1_)


# -- the colleague's generic sweep (extra column) --------------------------------------------------


@numba.njit(cache=True)
def generic_sweep(f, vjp, x0, c, p, tau, K, target):
    """Store-all Euler + discrete adjoint calling the out-writing traced f/vjp once per step."""
    n = x0.shape[0]
    xs = np.empty((K + 1, n))
    u = np.empty(n)
    xs[0] = x0
    for k in range(K):
        f(xs[k], c, p, k * tau, u)
        for i in range(n):
            xs[k + 1, i] = xs[k, i] + tau * u[i]
    z = xs[K] - target
    value = 0.5 * np.sum(z * z)
    ox = np.empty(n)
    oc = np.empty(c.shape[0])
    op = np.empty(p.shape[0])
    gp = np.zeros(p.shape[0])
    for k in range(K - 1, -1, -1):
        vjp(xs[k], c, p, k * tau, z, ox, oc, op)
        for j in range(p.shape[0]):
            gp[j] += tau * op[j]
        for i in range(n):
            z[i] += tau * ox[i]
    return value, gp, z


# -- measurement -----------------------------------------------------------------------------------


def interleaved_medians(fns, rounds=21, warmup=2, min_time=0.5):
    """Median time of each callable, calling them in turn every round (robust to load drift)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    ts = [[] for _ in fns]
    t_all = time.perf_counter()
    r = 0
    while r < rounds or (time.perf_counter() - t_all < min_time and r < 20 * rounds):
        for i, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            ts[i].append(time.perf_counter() - t)
        r += 1
    return [float(np.median(t)) for t in ts]


def rel_diff(a, b):
    a, b = np.concatenate([np.ravel(v) for v in a]), np.concatenate([np.ravel(v) for v in b])
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def bench_case(case, K=None):
    prob, kw = build_problem(case)
    if K is not None:
        prob = prob.with_steps(K)
    p = kw["params"]
    K, tau = prob.steps, prob.tau
    x0 = np.array(prob.x0)
    dyn = prob.dynamics
    tuned_vm = None
    if case == "lv":
        tuned = lambda: lv_tuned(x0, p, tau, K, TARGET)  # noqa: E731
    else:
        H = int(case[4:])
        tuned = lambda: node_tuned(x0, p, H, tau, K, TARGET)  # noqa: E731
        tuned_vm = lambda: node_tuned_fast(x0, p, H, tau, K, TARGET)  # noqa: E731
    traced = lambda: adjoint.solve_adjoint(prob, **kw)  # noqa: E731
    c = np.empty(0)
    generic = lambda: generic_sweep(dyn.f, dyn.vjp, x0, c, p, tau, K, TARGET)  # noqa: E731
    res = traced()
    from adjoint._fused import MAX_SCALAR_OPS
    from adjoint._solve import _materialize
    from adjoint._tape import tape_kernels, tape_plan

    fused = dyn.traced.scalar_ops <= MAX_SCALAR_OPS
    comp = _materialize(prob, 0, dyn.param_dim)
    tape = None
    tk = None if fused else tape_kernels(comp, adjoint.Euler(), kw["checkpoint"], K, 2, 0, dyn.param_dim)
    fns = [traced, tuned, generic] + ([tuned_vm] if tuned_vm is not None else [])
    if tk is not None:
        tape = tape_plan(dyn.traced)
        # the compiled tape kernel alone (what solve_adjoint runs, minus its Python layer)
        bufs = (np.empty((K + 1, 2)), np.empty((K, 0)), np.empty(dyn.param_dim), np.empty(2))
        C0 = np.empty((K, 0))
        fns.append(lambda: tk[0](x0, C0, p, 0.0, tau, K, prob.t_span[1], *bufs))
    tv, tg, tx = tuned()
    gv, gg, gx = generic()
    diff_vm = None
    if tuned_vm is not None:
        _, vg, vx = tuned_vm()
        diff_vm = rel_diff([res.grad.params, res.grad.x0], [vg, vx])
    t_traced, t_tuned, t_generic, *t_more = interleaved_medians(fns)
    t_vm = t_more.pop(0) if tuned_vm is not None else None
    t_kernel = t_more
    return dict(
        case=case,
        K=K,
        q=dyn.param_dim,
        ops=dyn.traced.scalar_ops,
        fused=fused,
        tape=tape,
        traced=t_traced,
        tuned=t_tuned,
        generic=t_generic,
        kernel=t_kernel[0] if t_kernel else None,
        tuned_vm=t_vm,
        diff_vm=diff_vm,
        diff=rel_diff([res.grad.params, res.grad.x0], [tg, tx]),
        diff_value=abs(res.value - tv) / abs(tv),
        diff_generic=rel_diff([gg, gx], [tg, tx]),
    )


CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
import numpy as np, numba, adjoint
from benchmarks.traced import build_problem
t1 = time.perf_counter()
prob, kw = build_problem(sys.argv[1])
t2 = time.perf_counter()
adjoint.solve_adjoint(prob, **kw)
t3 = time.perf_counter()
adjoint.solve_adjoint(prob, **kw)
t4 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "trace": t2 - t1, "first": t3 - t2, "total": t3 - t1, "steady": t4 - t3}))
"""


def build_times(case):
    env = fresh_cache_env()
    cold = run_child(CHILD.replace("sys.argv[1]", repr(case)), env)
    warm = run_child(CHILD.replace("sys.argv[1]", repr(case)), env)
    return cold, warm


NAMES = {
    "lv": "Lotka-Volterra, p = 4, Euler, 1e5 steps",
    "node32": "neural ODE, hidden 32, Euler, 1000 steps",
    "node128": "neural ODE, hidden 128, Euler, 1000 steps",
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="10x fewer steps, no child processes")
    ap.add_argument("--cases", default="lv,node32,node128")
    a = ap.parse_args(argv)
    cases = a.cases.split(",")
    print(
        "Traced (adjoint.vector_field + adjoint.cost + adjoint.solve_adjoint) vs tuned hand-written numba\n"
        "(medians of interleaved rounds after warm-up; one process; 2 shared cores)\n"
    )
    print(
        f"{'case':<44} {'traced':>10} {'tuned':>10} {'ratio':>6} {'kernel':>6} {'tuned vm':>10} {'ratio vm':>8} "
        f"{'max rel diff':>12} {'generic sweep':>13} {'gen/tuned':>9}  path"
    )
    for case in cases:
        K = None
        if a.quick:
            K = 10_000 if case == "lv" else 100
        r = bench_case(case, K)
        name = NAMES[case] if not a.quick else f"{case}, K={r['K']}"
        if r["fused"]:
            path = f"fused scalar sweep ({r['ops']} ops)"
        elif r["tape"] is not None:
            prims = "/".join(sorted({r["tape"].graph.nodes[v].prim for v, _, _ in r["tape"].stored}))
            path = f"tape kernel ({r['ops']} ops; {r['tape'].width} floats/step of {prims} stored)"
        else:
            path = f"generic kernels ({r['ops']} ops > fused limit)"
        kr = f"{r['kernel'] / r['tuned']:>6.2f}" if r["kernel"] is not None else f"{'-':>6}"
        if r["tuned_vm"] is not None:
            vm = f"{1e3 * r['tuned_vm']:>7.3f} ms {r['traced'] / r['tuned_vm']:>8.2f}"
        else:
            vm = f"{'-':>10} {'-':>8}"
        print(
            f"{name:<44} {1e3 * r['traced']:>7.3f} ms {1e3 * r['tuned']:>7.3f} ms {r['traced'] / r['tuned']:>6.2f} "
            f"{kr} {vm} {r['diff']:>12.1e} {1e3 * r['generic']:>10.3f} ms {r['generic'] / r['tuned']:>9.2f}  {path}",
            flush=True,
        )
        if r["diff_value"] > 1e-12 or r["diff_generic"] > 1e-9 or (r["diff_vm"] or 0.0) > 1e-9:
            print(
                f"   (value rel diff {r['diff_value']:.1e}; generic vs tuned gradient {r['diff_generic']:.1e}; "
                f"traced vs tuned vm gradient {r['diff_vm'] or 0.0:.1e})"
            )
    print(
        "   ratio = traced / tuned (target <= 1.2); kernel = the compiled tape kernel alone / tuned (without the\n"
        "   Python layer of solve_adjoint); tuned vm = the tuned adjoint with adjoint._vecmath.tanh (the tanh of the\n"
        "   generated code) instead of math.tanh, ratio vm = traced / tuned vm; max rel diff = max |g_traced - g_tuned|\n"
        "   / max |g_tuned| over dJ/dp and dJ/dx0"
    )
    if a.quick:
        return
    print(
        "\nBuild: trace + codegen + numba compile + first gradient, fresh child process "
        "(import of numpy/numba/adjoint apart)"
    )
    print(f"{'case':<44} {'cold':>8} {'warm':>8}   cold: import / trace+codegen / compile+first solve | warm: same")
    for case in cases:
        cold, warm = build_times(case)
        print(
            f"{NAMES[case]:<44} {cold['total']:>6.2f} s {warm['total']:>6.2f} s   "
            f"{cold['import']:.2f} / {cold['trace']:.2f} / {cold['first']:.2f} | "
            f"{warm['import']:.2f} / {warm['trace']:.2f} / {warm['first']:.2f}   "
            f"(steady gradient {1e3 * warm['steady']:.2f} ms)",
            flush=True,
        )
    print(
        "   cold/warm = trace+codegen + compile (or cache load) + first solve_adjoint (one gradient run);\n"
        "   numba compiles lazily, so compilation shows up in the first solve. Targets: cold <= 3 s, warm <= 0.5 s"
    )


if __name__ == "__main__":
    main()
