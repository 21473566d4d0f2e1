"""Traced vector fields (Lotka-Volterra, pendulum, neural ODE) against hand-written numba
derivatives; the Dynamics/Cost objects; trace_dynamics and the line-emission API."""

import math

import numba
import numpy as np
import pytest

import adjoint
import adjoint.ad as ad
from adjoint._problem import Cost, Dynamics

H = 8  # neural ODE hidden width in tests (the benchmark uses 32 and 128)
N = 2


# -- plain numpy definitions ----------------------------------------------------------------------
def lotka_volterra(x, c, p, t):
    a, b, d, g = p
    return np.array([a * x[0] - b * x[0] * x[1], d * x[0] * x[1] - g * x[1]])


def pendulum(x, c, p, t):
    return np.array([x[1], -p[0] * np.sin(x[0]) - p[1] * x[1] + c[0]])


def neural_ode(x, c, p, t):
    W1 = p[: H * N].reshape(H, N)
    b1 = p[H * N : H * N + H]
    W2 = p[H * N + H : H * N + H + N * H].reshape(N, H)
    b2 = p[H * N + H + N * H :]
    return W2 @ np.tanh(W1 @ x + b1) + b2


Q = H * N + H + N * H + N


# -- hand-written numba versions ----------------------------------------------------------------
@numba.njit
def lv_f(x, c, p, t, out):
    out[0] = p[0] * x[0] - p[1] * x[0] * x[1]
    out[1] = p[2] * x[0] * x[1] - p[3] * x[1]


@numba.njit
def lv_vjp(x, c, p, t, z, ox, oc, op):
    ox[0] = (p[0] - p[1] * x[1]) * z[0] + p[2] * x[1] * z[1]
    ox[1] = -p[1] * x[0] * z[0] + (p[2] * x[0] - p[3]) * z[1]
    op[0] = x[0] * z[0]
    op[1] = -x[0] * x[1] * z[0]
    op[2] = x[0] * x[1] * z[1]
    op[3] = -x[1] * z[1]


@numba.njit
def pend_f(x, c, p, t, out):
    out[0] = x[1]
    out[1] = -p[0] * math.sin(x[0]) - p[1] * x[1] + c[0]


@numba.njit
def pend_vjp(x, c, p, t, z, ox, oc, op):
    ox[0] = -p[0] * math.cos(x[0]) * z[1]
    ox[1] = z[0] - p[1] * z[1]
    oc[0] = z[1]
    op[0] = -math.sin(x[0]) * z[1]
    op[1] = -x[1] * z[1]


@numba.njit
def node_f(x, c, p, t, out):
    o_b1, o_w2, o_b2 = H * N, H * N + H, H * N + H + N * H
    for i in range(N):
        out[i] = p[o_b2 + i]
    for j in range(H):
        s = p[o_b1 + j]
        for k in range(N):
            s += p[j * N + k] * x[k]
        a = math.tanh(s)
        for i in range(N):
            out[i] += p[o_w2 + i * H + j] * a


@numba.njit
def node_vjp(x, c, p, t, z, ox, oc, op):
    o_b1, o_w2, o_b2 = H * N, H * N + H, H * N + H + N * H
    ox[:] = 0.0
    for j in range(H):
        s = p[o_b1 + j]
        for k in range(N):
            s += p[j * N + k] * x[k]
        a = math.tanh(s)
        g = 0.0
        for i in range(N):
            g += p[o_w2 + i * H + j] * z[i]
            op[o_w2 + i * H + j] = z[i] * a
        dh = g * (1.0 - a * a)
        op[o_b1 + j] = dh
        for k in range(N):
            op[j * N + k] = dh * x[k]
            ox[k] += p[j * N + k] * dh
    for i in range(N):
        op[o_b2 + i] = z[i]


CASES = {
    "lotka_volterra": (lotka_volterra, lv_f, lv_vjp, 2, 0, 4),
    "pendulum": (pendulum, pend_f, pend_vjp, 2, 1, 2),
    "neural_ode": (neural_ode, node_f, node_vjp, N, 0, Q),
}


@pytest.fixture(scope="session")
def traced():
    return {k: adjoint.vector_field(fn, n, m, q) for k, (fn, _, _, n, m, q) in CASES.items()}


def _point(rng, n, m, q):
    return (
        rng.normal(size=n),
        rng.normal(size=m),
        0.5 * rng.normal(size=q) + (q == 4) * 1.0,
        float(rng.normal()),
        rng.normal(size=n),
    )


def _rel(a, b):
    return np.max(np.abs(a - b)) / max(1e-300, np.max(np.abs(b)))


@pytest.mark.parametrize("name", list(CASES))
def test_traced_equals_handwritten(traced, name):
    fn, hf, hv, n, m, q = CASES[name]
    dyn = traced[name]
    assert isinstance(dyn, Dynamics) and (dyn.state_dim, dyn.control_dim, dyn.param_dim) == (n, m, q)
    rng = np.random.default_rng(0)
    for _ in range(5):
        x, c, p, t, z = _point(rng, n, m, q)
        o1, o2 = np.empty(n), np.empty(n)
        dyn.f(x, c, p, t, o1)
        hf(x, c, p, t, o2)
        assert _rel(o1, o2) <= 1e-12
        outs1 = [np.full(n, np.nan), np.full(m, np.nan), np.full(q, np.nan)]
        outs2 = [np.empty(n), np.empty(m), np.empty(q)]
        dyn.vjp(x, c, p, t, z, *outs1)
        hv(x, c, p, t, z, *outs2)
        for a, b in zip(outs1, outs2):
            if b.size:
                assert _rel(a, b) <= 1e-12


def _euler_gradient(f, vjp, n, m, q, x0, p, tau, K):
    """Discrete adjoint of explicit Euler with J = 0.5 |x_K|^2 (a plain Python sweep)."""
    xs = [x0.copy()]
    u = np.empty(n)
    c = np.zeros(m)
    for k in range(K):
        f(xs[-1], c, p, k * tau, u)
        xs.append(xs[-1] + tau * u)
    z = xs[-1].copy()
    gp = np.zeros(q)
    ox, oc, op = np.empty(n), np.empty(m), np.empty(q)
    for k in range(K - 1, -1, -1):
        vjp(xs[k], c, p, k * tau, z, ox, oc, op)
        gp += tau * op
        z = z + tau * ox
    return z, gp


@pytest.mark.parametrize("name", list(CASES))
def test_euler_gradient_traced_vs_handwritten(traced, name):
    fn, hf, hv, n, m, q = CASES[name]
    dyn = traced[name]
    rng = np.random.default_rng(1)
    x0, _, p, _, _ = _point(rng, n, m, q)
    g1 = _euler_gradient(dyn.f, dyn.vjp, n, m, q, np.abs(x0) + 0.5, p, 0.01, 200)
    g2 = _euler_gradient(hf, hv, n, m, q, np.abs(x0) + 0.5, p, 0.01, 200)
    for a, b in zip(g1, g2):
        assert _rel(a, b) <= 1e-12


def test_cost_object():
    def running(x, c, p, t):
        return 0.5 * np.sum((x - p[:2]) ** 2) + 0.1 * c[0] ** 2 * np.exp(-t)

    cst = adjoint.cost(running, 2, 1, 3)
    assert isinstance(cst, Cost)
    x, c, p = np.array([1.0, 2.0]), np.array([0.5]), np.array([0.3, -0.2, 7.0])
    assert cst.value(x, c, p, 0.4) == pytest.approx(running(x, c, p, 0.4), rel=1e-14)
    gx, gc, gp = np.empty(2), np.empty(1), np.full(3, np.nan)
    cst.grad(x, c, p, 0.4, gx, gc, gp)
    np.testing.assert_allclose(gx, x - p[:2], rtol=1e-14)
    np.testing.assert_allclose(gc, 0.2 * c * np.exp(-0.4), rtol=1e-14)
    np.testing.assert_allclose(gp, [-(x[0] - p[0]), -(x[1] - p[1]), 0.0], rtol=1e-14)
    lines = cst.traced.grad_lines(
        ["x0", "x1"], ["c0"], ["p0", "p1", "p2"], "t", ["gx0", "gx1"], ["gc0"], ["gp0", "gp1", "gp2"], prefix="_k"
    )
    assert any(ln.startswith("gx0 = ") for ln in lines)
    assert all(ln.split(" = ")[0].startswith(("_k", "g")) for ln in lines)


def _kernel_from_lines(lines, args, ret):
    src = "def k(" + ", ".join(args) + "):\n" + "".join("    " + ln + "\n" for ln in lines)
    src += "    return (" + ", ".join(ret) + ",)\n"
    ns = {"math": math, "np": np}
    exec(src, ns)
    return numba.njit(ns["k"])


@pytest.mark.parametrize("name", ["lotka_volterra", "pendulum"])
def test_line_emission_api(traced, name):
    fn, hf, hv, n, m, q = CASES[name]
    tr = traced[name].traced
    xs = [f"x{i}" for i in range(n)]
    cs = [f"c{i}" for i in range(m)]
    ps = [f"p{i}" for i in range(q)]
    zs = [f"z{i}" for i in range(n)]
    fl = tr.forward_lines(xs, cs, ps, "t", [f"u{i}" for i in range(n)], prefix="_a")
    vl = tr.vjp_lines(
        xs,
        cs,
        ps,
        "t",
        zs,
        [f"gx{i}" for i in range(n)],
        [f"gc{i}" for i in range(m)],
        [f"gp{i}" for i in range(q)],
        prefix="_b",
    )
    assert not any(ln.startswith(" ") for ln in fl + vl)
    assert not ({ln.split(" = ")[0] for ln in fl} & {ln.split(" = ")[0] for ln in vl})
    args = xs + cs + ps + ["t"] + zs
    k = _kernel_from_lines(
        fl + vl, args, [f"u{i}" for i in range(n)] + [f"gx{i}" for i in range(n)] + [f"gp{i}" for i in range(q)]
    )
    rng = np.random.default_rng(3)
    x, c, p, t, z = _point(rng, n, m, q)
    res = np.array(k(*x, *c, *p, t, *z))
    u, ox, oc, op = np.empty(n), np.empty(n), np.empty(m), np.empty(q)
    hf(x, c, p, t, u)
    hv(x, c, p, t, z, ox, oc, op)
    np.testing.assert_allclose(res, np.concatenate([u, ox, op]), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("name", list(CASES))
def test_trace_dynamics_of_handwritten(name):
    fn, hf, hv, n, m, q = CASES[name]
    dyn = Dynamics(hf, hv, n, m, q)
    tr = ad.trace_dynamics(dyn)
    assert isinstance(tr, ad.TracedDynamics)
    rng = np.random.default_rng(4)
    x, c, p, t, z = _point(rng, n, m, q)
    u = np.empty(n)
    hf(x, c, p, t, u)
    np.testing.assert_allclose(tr.graph.evaluate(x, c, p, t)[0], u, rtol=1e-13)
    outs = [np.empty(n), np.empty(m), np.empty(q)]
    hv(x, c, p, t, z, *outs)
    for a, b in zip(tr.vjp_graph.evaluate(x, c, p, t, z), outs):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
    # the traced hand-written vjp agrees with reverse mode applied to the traced f
    rev = ad.vjp_graph(tr.graph, wrt=[0, 1, 2], with_primals=False).evaluate(x, c, p, t, z)
    for a, b in zip(rev, outs):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@numba.njit
def _helper(v):
    return v * v


@numba.njit
def _branchy_f(x, c, p, t, out):
    if x[0] > 0:
        out[0] = x[0]
    else:
        out[0] = -x[0]


@numba.njit
def _loop_f(x, c, p, t, out):
    s = x[0]
    while s > 1e-3:
        s *= 0.5
    out[0] = s


@numba.njit
def _ok_f(x, c, p, t, out):
    out[:] = 0.0
    for i in range(x.shape[0]):
        out[i] += _helper(x[i]) * p[0] + math.exp(-t)


@numba.njit
def _ok_vjp(x, c, p, t, z, ox, oc, op):
    op[0] = 0.0
    for i in range(x.shape[0]):
        ox[i] = 2.0 * x[i] * p[0] * z[i]
        op[0] += x[i] * x[i] * z[i]


def test_trace_dynamics_returns_none_for_data_dependent_code():
    assert ad.trace_dynamics(Dynamics(_branchy_f, _ok_vjp, 1, 0, 1)) is None
    assert ad.trace_dynamics(Dynamics(_loop_f, _ok_vjp, 1, 0, 1)) is None
    tr = ad.trace_dynamics(Dynamics(_ok_f, _ok_vjp, 3, 0, 1))
    assert tr is not None
    lines = tr.forward_lines(["a", "b", "c"], [], ["k"], "tt", ["o0", "o1", "o2"])
    assert any("_adj_vm.exp(" in ln for ln in lines)  # the traced math.exp(-t)
