"""Second-order benchmark: exact Hessian-vector products and least-squares fits with exact Jacobians.

Run::

    python benchmarks/second_order.py                 # every section (about 3-4 minutes here)
    python benchmarks/second_order.py --quick         # small sizes, fewer repeats (a smoke test)
    python benchmarks/second_order.py --only hvp lsq  # a subset of sections (hvp, lsq, newton)
    python benchmarks/second_order.py --json out.json # also write the raw numbers

Sections

1. ``hvp``: our ``hessp`` (``adjoint._tangent.hessp``: one adjoint sweep of the tangent system,
   forward over reverse; what ``Objective.hessp`` calls) against our gradient
   (``adjoint.solve_adjoint``) on the same problem with the same method (Euler and RK4), and
   against JAX on the same discrete scheme: ``jit(jax.jvp(jax.grad(loss), (p,), (w,)))`` and
   ``jit(jax.value_and_grad(loss))`` with the Euler/RK4 loop written with ``lax.scan`` as in
   ``benchmarks/peers.py`` (float64). Problems:

   * Lotka-Volterra, 10^5 steps (10^4 with ``--quick``): field ``[a x - b x y, d x y - g y]`` and a
     running misfit ``0.5 |x_k - y(t_k)|^2 / T`` plus the terminal misfit of ``peers.py``. The data
     ``y(t_k)`` (the interpolated observations of ``problems/lotka_volterra.py``) are passed as
     per-step *controls* (``control_dim=2``, held fixed; the unknowns are the 4 parameters): the
     plain-numpy form, which the tracing AD differentiates twice and which is exactly JAX's
     ``lax.scan`` over ``yk``. (``peers.py``'s traced variant looks the data up by calling the
     numba function ``lotka_volterra.observation(t)`` inside the cost; that suffices for
     gradients, but the tangent system traces it with a traced ``t`` and fails:
     ``int()`` of a traced value. ``adjoint.Observations`` at 21 times would be a different loss
     than the JAX loop, and adds four data columns per step.)
   * neural ODE ``x' = W2 tanh(W1 x + b1) + b2``, state 2, hidden 32 and 128, 1000 steps,
     terminal cost ``0.5 |x_K - target|^2`` (``peers.node_data``), gradient w.r.t. all weights.

   Columns: medians after warm-up, measured side by side in turns (one round calls each
   function a few times, rounds repeat, so drift of the machine's load hits all alike); *sweep*:
   ``stats.seconds`` of the gradient's and of the tangent system's adjoint solve (the kernels
   without the Python wrappers of ``hessp``); *first*: the first call (compilation, tracing,
   jit), reported apart. ``backend`` is ``AdjointResult.stats.backend`` of the gradient / of the
   tangent system. The agreement column is ``max |Hw_ours - Hw_jax| / max |Hw_jax|`` (and the
   same for the gradients); target 1e-10. When a hessp/grad ratio exceeds 3, a diagnostic line
   times ``simulate`` (forward of the problem), ``solve_tangent``'s forward sweep of the
   tangent system (one direction) and the sweep of the hessp.

2. ``lsq``: ``scipy.optimize.least_squares`` (``trf``, bounds ``(0, inf)``, default tolerances)
   on the COPS problems ``problems/gasoil.py`` and ``problems/methanol.py`` (if present:
   ``residuals(steps=..., method=None)``, ``THETA0``) from ``THETA0``, with our exact Jacobian
   ``jac=res.jac`` (one tangent sweep with one direction per parameter) against finite
   differences ``jac="2-point"``: nfev, njev, residual calls in all (FD's included), wall time
   (median of 3 after a warm-up fit), final ``2 cost`` (the sum of squares), speed ratio.

3. ``newton``: the Lotka-Volterra fit as a least-squares objective
   (``lotka_volterra.make_observed_problem``: ``Observations`` at the 21 data times, RK4, 2000
   steps; unknowns params and x0, unbounded) minimised to a gradient norm of 1e-8 with
   ``minimize(method="trust-krylov", hessp=fun.hessp)`` and with L-BFGS-B: iterations, gradient
   and Hessian-vector evaluations, wall time (median of 3 after a warm-up run), final value and
   gradient norm.

Everything runs in this one process with one thread (``OMP_NUM_THREADS=1``,
``NUMBA_NUM_THREADS=1``, XLA single-threaded; set before numba and JAX are imported), pinned to one
CPU (``--no-pin`` to leave scheduling to the OS; see ``benchmarks/_util.pin_to_one_cpu``). Our
compiled kernels come from the caches as found (``ADJOINT_CACHE_DIR``, numba's ``__pycache__``);
``--cold`` points them at an empty folder so that *first* includes compilation.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

ONE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "NUMBA_NUM_THREADS": "1",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "JAX_PLATFORMS": "cpu",
    "TF_CPP_MIN_LOG_LEVEL": "2",
}

SECTIONS = ("hvp", "lsq", "newton")


def fmt_time(s):
    if s is None or (isinstance(s, float) and math.isnan(s)):
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} us"
    if s < 1.0:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"


def side_by_side(fns, rounds=7, target=0.05, warmup=2):
    """Median wall time of each callable, measured in turns (as ``_util.block_medians``), with a
    block per function sized to about ``target`` seconds (at least one call) so that fast and
    slow functions share one budget. Returns the medians."""
    est = []
    for fn in fns:
        for _ in range(warmup):
            fn()
        t = time.perf_counter()
        fn()
        est.append(time.perf_counter() - t)
    blocks = [max(1, min(50, int(target / max(e, 1e-9)))) for e in est]
    ts = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            for _ in range(blocks[i]):
                t = time.perf_counter()
                fn()
                ts[i].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in ts]


def first_call(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def rel(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


# ================================================================================================
# section hvp: problems (ours and JAX's loops of the same scheme)
# ================================================================================================
def lv_case(K):
    """Lotka-Volterra of peers.py, the data per step as fixed controls (see the module docstring)."""
    import adjoint
    from adjoint.problems import lotka_volterra as lv

    T = lv.T_END
    tau = T / K
    yk = np.array([lv.observation(k * tau) for k in range(K)])
    yend = lv.Y_OBS[-1].copy()
    x0 = lv.Y_OBS[0].copy()

    def lotka_volterra(x, c, p, t):
        return np.array([p[0] * x[0] - p[1] * x[0] * x[1], p[2] * x[0] * x[1] - p[3] * x[1]])

    def misfit(x, c, p, t):  # c = y(t_k), the interpolated data at the step
        return 0.5 * ((x[0] - c[0]) ** 2 + (x[1] - c[1]) ** 2) / T

    def final_misfit(x, c, p, t):
        return 0.5 * ((x[0] - yend[0]) ** 2 + (x[1] - yend[1]) ** 2)

    prob = adjoint.ControlProblem(
        lotka_volterra, x0, (0.0, T), K, terminal_cost=final_misfit, running_cost=misfit,
        param_dim=4, control_dim=2, name="lotka_volterra_traced",
    )  # fmt: skip
    p = lv.initial_guess()
    w = np.array([1.0, -0.5, 0.3, 0.2])

    def jax_loss(jax, jnp, rk4):
        x0j, ykj, yendj = jnp.asarray(x0), jnp.asarray(yk), jnp.asarray(yend)

        def loss(p):
            def u(x):
                return jnp.array([p[0] * x[0] - p[1] * x[0] * x[1], p[2] * x[0] * x[1] - p[3] * x[1]])

            def step(x, y):
                run = 0.5 * jnp.sum((x - y) ** 2) / T
                return x + tau * _jax_increment(u, x, tau, rk4), run

            xK, runs = jax.lax.scan(step, x0j, ykj)
            return 0.5 * jnp.sum((xK - yendj) ** 2) + tau * jnp.sum(runs)

        return loss

    name = f"Lotka-Volterra, {K:.0e} steps".replace("e+0", "e")
    return dict(name=name, prob=prob, params=p, controls=yk, x0=x0, w=w, jax_loss=jax_loss)


def node_case(H, K=1000):
    import adjoint
    from benchmarks.peers import node_data, node_unpack

    D = node_data(H, K=K)
    d = int(D["d"])
    tau = float(D["tau"])
    target = D["target"]

    def node(x, c, p, t):
        W1 = p[: H * d].reshape(H, d)
        b1 = p[H * d : H * d + H]
        W2 = p[H * d + H : H * d + H + d * H].reshape(d, H)
        b2 = p[H * d + H + d * H :]
        return W2 @ np.tanh(W1 @ x + b1) + b2

    def final(x, c, p, t):
        return 0.5 * ((x[0] - target[0]) ** 2 + (x[1] - target[1]) ** 2)

    prob = adjoint.ControlProblem(
        node, D["x0"], (0.0, float(D["T"])), K, terminal_cost=final, param_dim=D["p"].size, name=f"node{H}"
    )
    w = np.random.default_rng(1).standard_normal(D["p"].size)

    def jax_loss(jax, jnp, rk4):
        x0j, tj = jnp.asarray(D["x0"]), jnp.asarray(target)

        def loss(p):
            W1, b1, W2, b2 = node_unpack(p, H, d)

            def u(x):
                return W2 @ jnp.tanh(W1 @ x + b1) + b2

            def step(x, _):
                return x + tau * _jax_increment(u, x, tau, rk4), None

            xK, _ = jax.lax.scan(step, x0j, None, length=K)
            return 0.5 * jnp.sum((xK - tj) ** 2)

        return loss

    return dict(
        name=f"neural ODE, hidden {H}, {K} steps", prob=prob, params=D["p"], controls=None, x0=D["x0"], w=w,
        jax_loss=jax_loss,
    )  # fmt: skip


def _jax_increment(u, x, tau, rk4):
    """The explicit step's increment ``(x_{k+1} - x_k) / tau``: Euler or classical RK4 (the
    autonomous fields here: no time argument)."""
    if not rk4:
        return u(x)
    k1 = u(x)
    k2 = u(x + 0.5 * tau * k1)
    k3 = u(x + 0.5 * tau * k2)
    k4 = u(x + tau * k3)
    return (k1 + 2.0 * k2 + 2.0 * k3 + k4) / 6.0


def _jax_modules():
    try:
        import jax
    except Exception as exc:  # noqa: BLE001 - optional peer
        return None, None, f"jax not importable ({type(exc).__name__})"
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp

    return jax, jnp, None


def run_hvp_case(case, method_name, use_jax, rounds):
    import adjoint
    from adjoint._tangent import hessp

    method = {"Euler": adjoint.Euler(), "RK4": adjoint.RK4()}[method_name]
    prob, p, C, x0, w = case["prob"], case["params"], case["controls"], case["x0"], case["w"]
    K, n = prob.steps, prob.state_dim
    m = 0 if C is None else C.shape[1]
    zc = np.zeros((K, m))
    zx = np.zeros(n)
    row = {"problem": case["name"], "method": method_name}

    def grad():
        return adjoint.solve_adjoint(prob, params=p, controls=C, x0=x0, method=method)

    def hvp():
        return hessp(prob, params=p, controls=C, x0=x0, dparams=w, dcontrols=zc, dx0=zx, method=method)

    g_res, row["first_grad"] = first_call(grad)
    h_out, row["first_hessp"] = first_call(hvp)
    hw, g2, _, h_res = h_out
    row["backend_grad"] = g_res.stats.backend
    row["backend_hessp"] = h_res.stats.backend
    row["grad_vs_hessp_grad"] = rel(g2["params"], g_res.grad.params)
    # the kernels alone: stats.seconds of the solves inside the timed calls
    sweeps = {"grad": [], "hessp": []}

    def grad_t():
        sweeps["grad"].append(grad().stats.seconds)

    def hvp_t():
        sweeps["hessp"].append(hvp()[3].stats.seconds)

    fns = [grad_t, hvp_t]
    if use_jax:
        jax, jnp, _ = _jax_modules()
        loss = case["jax_loss"](jax, jnp, method_name == "RK4")
        vg = jax.jit(jax.value_and_grad(loss))
        hv = jax.jit(lambda q, v: jax.jvp(jax.grad(loss), (q,), (v,))[1])
        pj, wj = jnp.asarray(p), jnp.asarray(w)
        (jv, jg), row["jax_first_grad"] = first_call(lambda: jax.block_until_ready(vg(pj)))
        jh, row["jax_first_hessp"] = first_call(lambda: jax.block_until_ready(hv(pj, wj)))
        row["agree_hessp"] = rel(hw["params"], np.asarray(jh))
        row["agree_grad"] = rel(g_res.grad.params, np.asarray(jg))
        row["agree_value"] = abs(g_res.value - float(jv)) / abs(float(jv))
        fns += [lambda: jax.block_until_ready(vg(pj)), lambda: jax.block_until_ready(hv(pj, wj))]
    meds = side_by_side(fns, rounds=rounds)
    row["grad"], row["hessp"] = meds[0], meds[1]
    row["sweep_grad"] = float(np.median(sweeps["grad"]))
    row["sweep_hessp"] = float(np.median(sweeps["hessp"]))
    row["ratio"] = row["hessp"] / row["grad"]
    row["ratio_sweep"] = row["sweep_hessp"] / row["sweep_grad"]
    if use_jax:
        row["jax_grad"], row["jax_hessp"] = meds[2], meds[3]
        row["speedup_hessp"] = row["jax_hessp"] / row["hessp"]
        row["speedup_grad"] = row["jax_grad"] / row["grad"]
    if row["ratio"] > 3.0:
        row["diagnostic"] = diagnose(prob, p, C, x0, w, method, m, hvp, rounds)
    return row


def diagnose(prob, p, C, x0, w, method, m, hvp, rounds):
    """Where a hessp/grad ratio above 3 comes from: the forward of the problem, the forward of the
    tangent system, the tangent system's adjoint sweep, and the rest of the hessp call."""
    import adjoint

    sim = lambda: adjoint.simulate(prob, params=p, controls=C, x0=x0, method=method)  # noqa: E731
    tan_res = {}

    def tan():
        tan_res["r"] = adjoint.solve_tangent(
            prob, directions=w.reshape(-1, 1), wrt="params", params=p, controls=C, x0=x0, method=method
        )

    sw = []
    tan()
    t_sim, t_tan, t_h = side_by_side([sim, tan, lambda: sw.append(hvp()[3].stats.seconds)], rounds=rounds)
    return {
        "simulate": t_sim,
        "solve_tangent": t_tan,
        "tangent_backend": tan_res["r"].backend,
        "hessp": t_h,
        "hessp_sweep": float(np.median(sw)),
        "hessp_outside_sweep": t_h - float(np.median(sw)),
    }


def print_hvp(rows, use_jax):
    print()
    print("== 1-2. Hessian-vector products: ours (hessp / grad) and against JAX jvp(grad) ==")
    hdr = (
        f"{'problem':34s} {'method':6s} {'grad':>9s} {'hessp':>9s} {'ratio':>6s} "
        f"{'sweep g':>9s} {'sweep h':>9s} {'ratio':>6s} {'backend g/h':>17s}"
    )
    if use_jax:
        hdr += f" {'JAX grad':>9s} {'JAX hvp':>9s} {'hvp x':>7s} {'grad x':>7s} {'agree Hw':>9s} {'agree g':>8s}"
    print(hdr)
    for r in rows:
        line = (
            f"{r['problem']:34s} {r['method']:6s} {fmt_time(r['grad']):>9s} {fmt_time(r['hessp']):>9s} "
            f"{r['ratio']:6.2f} {fmt_time(r['sweep_grad']):>9s} {fmt_time(r['sweep_hessp']):>9s} "
            f"{r['ratio_sweep']:6.2f} {r['backend_grad'] + '/' + r['backend_hessp']:>17s}"
        )
        if use_jax:
            line += (
                f" {fmt_time(r['jax_grad']):>9s} {fmt_time(r['jax_hessp']):>9s} {r['speedup_hessp']:6.1f}x "
                f"{r['speedup_grad']:6.1f}x {r['agree_hessp']:9.1e} {r['agree_grad']:8.1e}"
            )
        print(line)
    print()
    print("first calls (compilation / tracing / jit, apart from the medians above):")
    for r in rows:
        line = f"  {r['problem']:34s} {r['method']:6s} ours grad {fmt_time(r['first_grad']):>8s}, hessp {fmt_time(r['first_hessp']):>8s}"
        if use_jax:
            line += f";  JAX value_and_grad {fmt_time(r['jax_first_grad']):>8s}, jvp(grad) {fmt_time(r['jax_first_hessp']):>8s}"
        print(line)
    if use_jax:
        worst = max(r["agree_hessp"] for r in rows)
        print(
            f"agreement with JAX: max relative difference of Hw {worst:.1e} "
            f"({'within' if worst <= 1e-10 else 'ABOVE'} 1e-10); of the gradients "
            f"{max(r['agree_grad'] for r in rows):.1e}; of the values {max(r['agree_value'] for r in rows):.1e}"
        )
    for r in rows:
        d = r.get("diagnostic")
        if d:
            print(
                f"ratio {r['ratio']:.2f} > 3 on {r['problem']}, {r['method']}: simulate {fmt_time(d['simulate'])}, "
                f"solve_tangent (1 direction) {fmt_time(d['solve_tangent'])} [backend {d['tangent_backend']}], "
                f"hessp {fmt_time(d['hessp'])} of which the tangent system's adjoint sweep "
                f"{fmt_time(d['hessp_sweep'])} and {fmt_time(d['hessp_outside_sweep'])} outside it "
                "(building the augmented inputs, validation)"
            )
    print(
        "columns: grad = solve_adjoint, hessp = adjoint._tangent.hessp (what Objective.hessp runs); "
        "sweep = stats.seconds of the adjoint solve inside; ratio = hessp / grad; hvp x, grad x = "
        "JAX time / ours; agree = max|ours - JAX| / max|JAX|"
    )


# ================================================================================================
# section lsq: least_squares with the exact Jacobian vs finite differences (COPS problems)
# ================================================================================================
def run_lsq(repeats):
    import importlib

    from scipy.optimize import least_squares

    rows = []
    for name in ("gasoil", "methanol"):
        try:
            mod = importlib.import_module(f"adjoint.problems.{name}")
            res = mod.residuals()
            theta0 = np.asarray(mod.THETA0, dtype=np.float64)
        except Exception as exc:  # noqa: BLE001 - another helper writes these modules
            rows.append({"problem": name, "skipped": f"problems/{name}.py not usable ({type(exc).__name__}: {exc})"})
            continue
        calls = {"n": 0}

        def r(v, res=res, calls=calls):
            calls["n"] += 1
            return res(v)

        t = time.perf_counter()
        res(theta0), res.jac(theta0)  # compile apart
        compile_s = time.perf_counter() - t
        for label, jac in (("exact (res.jac)", res.jac), ("2-point FD", "2-point")):
            fit = lambda jac=jac: least_squares(r, theta0, jac=jac, bounds=(0.0, np.inf), method="trf")  # noqa: E731
            fit()  # warm-up
            ts = []
            for _ in range(repeats):
                calls["n"] = 0
                t = time.perf_counter()
                sol = fit()
                ts.append(time.perf_counter() - t)
            rows.append(
                {
                    "problem": name,
                    "jac": label,
                    "nfev": int(sol.nfev),
                    "njev": int(sol.njev),
                    "residual_calls": calls["n"],
                    "seconds": float(np.median(ts)),
                    "ssq": 2.0 * float(sol.cost),
                    "status": int(sol.status),
                    "x": sol.x.tolist(),
                    "compile": compile_s,
                    "published": float(getattr(mod, "PUBLISHED_OPTIMUM", float("nan"))),
                }
            )
    return rows


def print_lsq(rows):
    print()
    print("== 3. least_squares (trf, bounds (0, inf)) from THETA0: exact Jacobian vs finite differences ==")
    print(
        f"{'problem':9s} {'jacobian':16s} {'nfev':>5s} {'njev':>5s} {'r calls':>7s} {'time':>9s} "
        f"{'2 cost':>14s} {'published':>11s} {'status':>6s}  theta"
    )
    for r in rows:
        if "skipped" in r:
            print(f"{r['problem']:9s} skipped: {r['skipped']}")
            continue
        print(
            f"{r['problem']:9s} {r['jac']:16s} {r['nfev']:5d} {r['njev']:5d} {r['residual_calls']:7d} "
            f"{fmt_time(r['seconds']):>9s} {r['ssq']:14.8e} {r['published']:11.5e} {r['status']:6d}  "
            + np.array2string(np.asarray(r["x"]), precision=5)
        )
    for name in ("gasoil", "methanol"):
        ex = next((r for r in rows if r.get("problem") == name and r.get("jac", "").startswith("exact")), None)
        fd = next((r for r in rows if r.get("problem") == name and r.get("jac") == "2-point FD"), None)
        if ex and fd:
            print(
                f"  {name}: FD time / exact time = {fd['seconds'] / ex['seconds']:.2f}; "
                f"2 cost exact {ex['ssq']:.8e} vs FD {fd['ssq']:.8e} (first calls incl. compilation {fmt_time(ex['compile'])})"
            )
    print("  (time: median of 3 fits after a warm-up fit; r calls: every residual evaluation, FD's included)")


# ================================================================================================
# section newton: trust-krylov with exact Hessian-vector products vs L-BFGS-B
# ================================================================================================
def _observed_lv(steps):
    import adjoint
    from adjoint.problems import lotka_volterra as lv

    if hasattr(lv, "make_observed_problem"):
        return lv.make_observed_problem(steps), "lotka_volterra.make_observed_problem"

    def field(x, c, p, t):
        return np.array([p[0] * x[0] - p[1] * x[0] * x[1], p[2] * x[0] * x[1] - p[3] * x[1]])

    prob = adjoint.ControlProblem(
        field, lv.Y_OBS[0], (0.0, lv.T_END), steps, observations=adjoint.Observations(lv.T_OBS, lv.Y_OBS),
        param_dim=4, name="lotka_volterra_observed",
    )  # fmt: skip
    return prob, "built here (Observations(T_OBS, Y_OBS))"


def run_newton(steps, repeats, gtol=1e-8):
    from scipy.optimize import minimize

    import adjoint
    from adjoint.problems import lotka_volterra as lv

    prob, origin = _observed_lv(steps)
    method = adjoint.RK4()
    wrt = ("params", "x0")
    v0 = np.concatenate([lv.initial_guess(), lv.Y_OBS[0]])

    def new_fun():
        return prob.objective(wrt=wrt, params=lv.initial_guess(), method=method)

    t = time.perf_counter()
    f0 = new_fun()
    f0(v0), f0.hessp(v0, np.ones_like(v0))
    compile_s = time.perf_counter() - t

    def tk():
        fun = new_fun()
        out = minimize(
            fun, v0, jac=True, hessp=fun.hessp, method="trust-krylov", options={"gtol": gtol, "maxiter": 1000}
        )
        return out, fun

    def lb():
        fun = new_fun()
        out = minimize(
            fun, v0, jac=True, method="L-BFGS-B",
            options={"gtol": gtol, "ftol": 0.0, "maxiter": 20000, "maxfun": 50000, "maxcor": 10},
        )  # fmt: skip
        return out, fun

    rows = []
    for label, run in (("trust-krylov (hessp)", tk), ("L-BFGS-B", lb)):
        run()  # warm-up
        ts = []
        for _ in range(repeats):
            t = time.perf_counter()
            out, fun = run()
            ts.append(time.perf_counter() - t)
        ngrad = int(fun.nfev)
        _, g = fun(out.x)
        rows.append(
            {
                "solver": label,
                "nit": int(out.nit),
                "ngrad": ngrad,
                "nhessp": int(fun.nhev),
                "seconds": float(np.median(ts)),
                "value": float(out.fun),
                "gnorm": float(np.linalg.norm(g)),
                "gmax": float(np.max(np.abs(g))),
                "success": bool(out.success),
                "message": str(out.message),
                "x": out.x.tolist(),
            }
        )
    return {"origin": origin, "steps": steps, "compile": compile_s, "rows": rows, "gtol": gtol}


def print_newton(res):
    print()
    print(
        f"== 4. Lotka-Volterra least squares ({res['origin']}, RK4, {res['steps']} steps, unknowns params + x0): "
        f"trust-krylov with exact hessp vs L-BFGS-B to gradient norm {res['gtol']:.0e} =="
    )
    print(
        f"{'solver':22s} {'iters':>6s} {'grads':>6s} {'hessp':>6s} {'time':>9s} {'value':>22s} {'|g|_2':>9s} {'|g|_inf':>9s}  message"
    )
    for r in res["rows"]:
        print(
            f"{r['solver']:22s} {r['nit']:6d} {r['ngrad']:6d} {r['nhessp']:6d} {fmt_time(r['seconds']):>9s} "
            f"{r['value']:22.15e} {r['gnorm']:9.1e} {r['gmax']:9.1e}  {r['message'][:60]}"
        )
    a, b = res["rows"]
    print(
        f"  L-BFGS-B time / trust-krylov time = {b['seconds'] / a['seconds']:.2f}; "
        f"|x_tk - x_lbfgs|_inf = {np.max(np.abs(np.subtract(a['x'], b['x']))):.1e}; "
        f"first calls (compile) {fmt_time(res['compile'])}; time: median of 3 runs after a warm-up run"
    )
    print(
        "  (trust-krylov: gtol on |g|_2; L-BFGS-B: gtol on the max |projected gradient|, ftol=0; "
        "grads = gradient evaluations, hessp = Hessian-vector products)"
    )


# ================================================================================================
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small sizes, fewer repeats (smoke test)")
    ap.add_argument("--only", nargs="*", choices=SECTIONS, help="a subset of sections")
    ap.add_argument("--methods", nargs="*", default=["Euler", "RK4"], choices=["Euler", "RK4"])
    ap.add_argument("--no-jax", action="store_true", help="skip the JAX comparison")
    ap.add_argument("--no-pin", action="store_true", help="do not pin this process to one CPU")
    ap.add_argument("--cold", action="store_true", help="empty numba/adjoint caches: first calls compile")
    ap.add_argument("--json", metavar="PATH", help="write the raw results to PATH")
    args = ap.parse_args(argv)
    for k, v in ONE_THREAD.items():  # before numba and JAX are imported
        os.environ.setdefault(k, v)
    if args.cold:
        from benchmarks._util import fresh_cache_env

        os.environ.update(fresh_cache_env())
    if args.no_pin:
        os.environ["ADJOINT_BENCH_PIN"] = "0"
    from benchmarks._util import pin_to_one_cpu

    cpu = pin_to_one_cpu()
    sections = args.only or list(SECTIONS)
    rounds = 3 if args.quick else 7
    repeats = 1 if args.quick else 3
    t_start = time.perf_counter()
    load = os.getloadavg()[0]
    print(
        f"second-order benchmark: {os.cpu_count()} cores, pinned to CPU {cpu}, one thread; "
        f"{'quick; ' if args.quick else ''}{time.strftime('%Y-%m-%d %H:%M')}"
    )
    out = {"quick": args.quick}
    if "hvp" in sections:
        use_jax = not args.no_jax
        if use_jax:
            _, _, why = _jax_modules()
            if why:
                print(f"JAX comparison skipped: {why}")
                use_jax = False
        if use_jax:
            import jax as _  # noqa: F401  (imported before the runs: the import is not timed)

        cases = [lv_case(10_000 if args.quick else 100_000)] + [
            node_case(H) for H in ([32] if args.quick else [32, 128])
        ]
        rows = []
        for case in cases:
            for meth in args.methods:
                row = run_hvp_case(case, meth, use_jax, rounds)
                rows.append(row)
                print(
                    f"  done: {row['problem']}, {meth}: hessp/grad {row['ratio']:.2f}"
                    + (f", JAX hvp / ours {row['speedup_hessp']:.1f}x" if use_jax else ""),
                    flush=True,
                )
        print_hvp(rows, use_jax)
        out["hvp"] = rows
    if "lsq" in sections:
        rows = run_lsq(repeats if not args.quick else 1)
        print_lsq(rows)
        out["lsq"] = rows
    if "newton" in sections:
        res = run_newton(400 if args.quick else 2000, repeats)
        print_newton(res)
        out["newton"] = res
    load = max(load, os.getloadavg()[0])
    out["load"] = load
    out["seconds"] = time.perf_counter() - t_start
    print(f"\ntotal {out['seconds']:.0f} s; load average up to {load:.1f} during the run")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=1, default=str)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
