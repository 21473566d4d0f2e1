"""Figures of the user guide (docs/guide/), one function per section; PNGs go to docs/img/.

Run: ``python examples/guide_figures.py`` (all) or ``python examples/guide_figures.py cost dual``.
Sections: cost, dual, layers, control, checkpointing. (The computational-graph figure is made by
``examples/lecture_graph.py``, the DTO/OTD figure by ``examples/dto_vs_otd.py``, the Sinkhorn and
argmin figures by the scripts named in their pages.)
"""

from __future__ import annotations

import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
IMG = os.path.join(ROOT, "docs", "img")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

import adjoint  # noqa: E402


def _median(fn, repeat=5):
    fn()
    ts = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def _save(fig, name):
    os.makedirs(IMG, exist_ok=True)
    path = os.path.join(IMG, name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    print(f"wrote {os.path.relpath(path, ROOT)}")


# ------------------------------------------------------------------------------------------------
def cost():
    """Time of one gradient w.r.t. n per-step controls (pendulum): reverse mode vs n-proportional methods."""
    from adjoint.problems import pendulum as pd

    ns, fwd, rev = [], [], []
    for K in (100, 300, 1000, 3000, 10_000, 30_000):
        prob = pd.make_problem(K)
        u = pd.initial_guess(K)
        ns.append(K)
        fwd.append(_median(lambda: adjoint.evaluate(prob, controls=u)))
        rev.append(_median(lambda: adjoint.solve_adjoint(prob, controls=u)))
    ns, fwd, rev = map(np.array, (ns, fwd, rev))
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.loglog(ns, 2 * ns * fwd, "s-", label="central differences: 2n forward sweeps")
    ax.loglog(ns, ns * fwd, "^-", label="forward mode: n tangent sweeps (>= n forward)")
    ax.loglog(ns, rev, "o-", label="reverse mode: adjoint.solve_adjoint")
    ax.loglog(ns, fwd, "k:", label="one forward sweep: adjoint.evaluate")
    ax.set_xlabel("n = number of controls (= steps)")
    ax.set_ylabel("seconds per gradient")
    ax.set_title("cost of a gradient (pendulum, Euler)")
    ax.legend(fontsize=7)
    _save(fig, "guide_cost.png")


# ------------------------------------------------------------------------------------------------
class Dual:
    """``a + eps b`` with ``eps^2 = 0``: enough of the arithmetic for the lecture's example."""

    def __init__(self, a, b=0.0):
        self.a, self.b = a, b

    def __add__(self, o):
        o = o if isinstance(o, Dual) else Dual(o)
        return Dual(self.a + o.a, self.b + o.b)

    __radd__ = __add__

    def __mul__(self, o):
        o = o if isinstance(o, Dual) else Dual(o)
        return Dual(self.a * o.a, self.a * o.b + self.b * o.a)

    __rmul__ = __mul__


def dlog(x):
    return Dual(math.log(x.a), x.b / x.a) if isinstance(x, Dual) else np.log(x)


def dsqrt(x):
    return Dual(math.sqrt(x.a), x.b / (2 * math.sqrt(x.a))) if isinstance(x, Dual) else np.sqrt(x)


def lecture_f(x, y):
    return y * dlog(x) + dsqrt(y * dlog(x))


def dual():
    """Error of the derivative d f / d x of f(x, y) = y log x + sqrt(y log x) at (2, 3)."""
    x, y = 2.0, 3.0
    exact = y / x + y / (2 * x * math.sqrt(y * math.log(x)))
    d = lecture_f(Dual(x, 1.0), y).b
    hs = np.logspace(-16, -1, 61)
    fwd = [abs((lecture_f(x + h, y) - lecture_f(x, y)) / h - exact) / exact for h in hs]
    cen = [abs((lecture_f(x + h, y) - lecture_f(x - h, y)) / (2 * h) - exact) / exact for h in hs]
    cs = [abs(np.imag(y * np.log(x + 1j * h) + np.sqrt(y * np.log(x + 1j * h))) / h - exact) / exact for h in hs]
    floor = 1e-17
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.loglog(hs, np.maximum(fwd, floor), label="forward difference")
    ax.loglog(hs, np.maximum(cen, floor), label="central difference")
    ax.loglog(hs, np.maximum(cs, floor), label="complex step")
    ax.axhline(max(abs(d - exact) / exact, floor), color="k", ls="--", label="dual number (no h)")
    ax.set_xlabel("step h")
    ax.set_ylabel("relative error of df/dx")
    ax.set_title("f(x, y) = y log x + sqrt(y log x) at (2, 3)")
    ax.legend(fontsize=7)
    _save(fig, "guide_dual.png")


# ------------------------------------------------------------------------------------------------
def layers():
    """Perceptron trained by backpropagation (the discrete adjoint of a map): the gradient per layer."""
    from adjoint.problems import perceptron as pc

    prob = pc.make_problem()
    c0 = pc.initial_guess()
    fun = prob.objective(wrt="controls", controls=c0, method=adjoint.DiscreteMap())
    from scipy.optimize import minimize

    hist = []
    res = minimize(
        fun,
        fun.initial(),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 300},
        callback=lambda v: hist.append(fun(v)[0]),
    )
    ctrl = fun.unpack(res.x)["controls"]
    g0 = adjoint.solve_adjoint(prob, controls=c0, method=adjoint.DiscreteMap()).grad.controls
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    g = np.linspace(-2.5, 2.5, 200)
    X, Y = np.meshgrid(g, g)
    S = pc.predict(ctrl, np.stack([X.ravel(), Y.ravel()], axis=1)).reshape(X.shape)
    ax[0].contourf(X, Y, S, levels=20, cmap="RdBu", alpha=0.6)
    ax[0].contour(X, Y, S, levels=[0.0], colors="k")
    ax[0].scatter(pc.POINTS[:, 0], pc.POINTS[:, 1], c=pc.LABELS, cmap="RdBu", edgecolors="k", s=14)
    ax[0].set_title(f"decision boundary, {pc.LAYERS} layers")
    ax[1].bar(np.arange(pc.LAYERS), np.linalg.norm(g0, axis=1))
    ax[1].set_xlabel("layer k")
    ax[1].set_ylabel("|grad_{theta_k} f|")
    ax[1].set_title("backpropagated gradient per layer (start)")
    ax[2].semilogy(hist)
    ax[2].set_xlabel("L-BFGS iteration")
    ax[2].set_title("training loss")
    _save(fig, "guide_layers.png")


# ------------------------------------------------------------------------------------------------
def control():
    """Pendulum swing-up: 400 per-step torques optimised with the exact discrete gradient."""
    from adjoint.problems import pendulum as pd

    K = 400
    prob = pd.make_problem(K)
    fun = prob.objective(wrt="controls", controls=pd.initial_guess(K))
    from scipy.optimize import minimize

    hist = []
    res = minimize(
        fun,
        fun.initial(),
        jac=True,
        method="L-BFGS-B",
        bounds=fun.bounds(controls=(-pd.U_MAX, pd.U_MAX)),
        options={"maxiter": 500},
        callback=lambda v: hist.append(fun(v)[0]),
    )
    torque = fun.unpack(res.x)["controls"]
    _, traj = adjoint.simulate(prob, controls=torque)
    t = prob.times
    fig, ax = plt.subplots(1, 3, figsize=(12, 3.6))
    ax[0].plot(t, traj[:, 0], label="theta")
    ax[0].plot(t, traj[:, 1], label="omega")
    ax[0].axhline(math.pi, color="k", lw=0.5, ls="--")
    ax[0].set_xlabel("t")
    ax[0].set_title("state")
    ax[0].legend(fontsize=8)
    ax[1].step(t[:-1], torque[:, 0], where="post")
    ax[1].set_xlabel("t")
    ax[1].set_title("optimal torque c_k")
    ax[2].semilogy(hist)
    ax[2].set_xlabel("L-BFGS iteration")
    ax[2].set_title("objective J")
    _save(fig, "guide_control.png")


# ------------------------------------------------------------------------------------------------
def checkpointing():
    """Forward steps of binomial checkpointing vs snapshots, measured and predicted (Revolve)."""
    from math import comb

    from adjoint.problems import lotka_volterra as lv

    K = 10_000
    prob = lv.make_problem(K)
    p = lv.initial_guess()
    ss = [2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128]
    meas = [
        adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.checkpointing.Revolve(snapshots=s)).stats.forward_steps
        for s in ss
    ]

    def p_opt(l, s):
        r = 0
        while comb(s + r, s) < l:
            r += 1
        return r * l - comb(s + r, s + 1)

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    ax.loglog(ss, np.array(meas) / K, "o", label="measured: stats.forward_steps / K")
    ax.loglog(ss, [(p_opt(K, s) + 1) / K for s in ss], "k-", lw=0.8, label="(p(K, s) + 1) / K (Revolve)")
    ax.axhline(1.0, color="C2", ls="--", label="store-all (K snapshots)")
    ax.set_xlabel("snapshots s")
    ax.set_ylabel("forward steps / K")
    ax.set_title(f"Lotka-Volterra, K = {K}: memory s states")
    ax.legend(fontsize=7)
    _save(fig, "guide_checkpointing.png")


SECTIONS = {"cost": cost, "dual": dual, "layers": layers, "control": control, "checkpointing": checkpointing}

if __name__ == "__main__":
    names = sys.argv[1:] or list(SECTIONS)
    for nm in names:
        SECTIONS[nm]()
