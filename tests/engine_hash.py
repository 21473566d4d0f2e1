#!/usr/bin/env python
"""Guard hash of the engine: SHA-256 of values, gradients and stats over every ready problem, method,
checkpoint schedule and backend, to check that a refactor of the internals is bitwise identical.
A standalone script, not a pytest file.

    python tests/engine_hash.py [--out FILE] [--cache DIR] [--verbose]   # every mode, a subprocess each
    python tests/engine_hash.py --mode default|generic|notape [...]      # one mode, in this process

Modes: if ``solve_adjoint`` has a ``backend=`` keyword, ``generic`` passes ``backend="generic"`` to the
functions that take it and ``notape`` (not expressible) is skipped; otherwise the modes set
``ADJOINT_DISABLE_FUSED`` / ``ADJOINT_DISABLE_TAPE`` before ``adjoint`` is imported. A run uses a fresh
temporary ``ADJOINT_CACHE_DIR`` (shared by its modes) unless ``--cache DIR`` is given.

Output: per configuration ``name  sha256[:16]`` (or ``name  ERROR Type: message``), sorted, then
``MODE <mode> <sha256>`` over the sorted ``name  <full sha256 or ERROR text>`` lines; ``--out`` writes
full hashes and a readable note per line. Stats fields ``seconds``, ``compile_seconds`` and ``backend``
are not hashed (``backend`` appears in the note). Compare the MODE lines of two checkouts; OVERALL is
comparable only when the same modes ran.
"""

import argparse
import dataclasses
import hashlib
import inspect
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import warnings

import numpy as np

MODES = ("default", "generic", "notape")
ENV = {"default": {}, "generic": {"ADJOINT_DISABLE_FUSED": "1"}, "notape": {"ADJOINT_DISABLE_TAPE": "1"}}
UNHASHED = {"seconds", "compile_seconds", "backend", "notes"}  # timings, and the field the refactor adds
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# --- canonical bytes of a result ----------------------------------------------------------------
def encode(v, out):
    """Append a type-tagged canonical byte encoding of ``v`` to the list ``out`` (recursive)."""
    if isinstance(v, np.ndarray):
        out += [b"A" + repr(v.shape).encode(), np.ascontiguousarray(v, dtype=np.float64).tobytes()]
    elif isinstance(v, (float, np.floating)):
        out.append(b"F" + struct.pack("<d", float(v)))
    elif v is None or isinstance(v, (bool, np.bool_, int, np.integer, str)):
        out.append(b"R" + repr(v.item() if isinstance(v, np.generic) else v).encode())  # np.int64(3) ~ 3
    elif dataclasses.is_dataclass(v):  # by sorted field name: field order does not matter
        for name in sorted(f.name for f in dataclasses.fields(v) if f.name not in UNHASHED):
            out.append(b"N" + name.encode())
            encode(getattr(v, name), out)
    elif isinstance(v, (tuple, list)):
        out.append(b"T%d" % len(v))
        for x in v:
            encode(x, out)
    elif isinstance(v, dict):
        for k in sorted(v):
            out.append(b"K" + str(k).encode())
            encode(v[k], out)
    else:
        raise TypeError(f"cannot encode {type(v).__name__}")


def adjoint_view(res):
    """The hashed parts of an AdjointResult (named: a new top-level field would not count)."""
    return {
        "value": res.value,
        "grad": (res.grad.params, res.grad.controls, res.grad.x0),
        "x_final": res.x_final,
        "trajectory": res.trajectory,
        "stats": res.stats,
    }


def note(res):
    """A readable note for the --out listing (not hashed)."""
    val = res if isinstance(res, float) else res[0] if isinstance(res, tuple) else getattr(res, "value", None)
    s = f"value={val!r}" if isinstance(val, float) else ""
    st = getattr(res, "stats", None)
    if hasattr(st, "schedule"):
        s += f" schedule={st.schedule} fwd={st.forward_steps} peak={st.peak_stored_states}"
        s += f" backend={st.backend}" if hasattr(st, "backend") else ""
    return s


class Recorder:
    def __init__(self, verbose=False):
        self.lines = {}  # name -> (full sha256 or ERROR text, note)
        self.verbose = verbose

    def run(self, name, fn, view=lambda r: r):
        assert name not in self.lines, name
        t0 = time.perf_counter()
        try:
            res = fn()
            parts = []
            encode(view(res), parts)
            self.lines[name] = (hashlib.sha256(b"".join(parts)).hexdigest(), note(res))
        except Exception as exc:  # an unsupported combination: recorded and hashed, never fatal
            msg = re.sub(r"0x[0-9a-fA-F]+", "0x?", " ".join(str(exc).split()))[:80]  # no addresses
            self.lines[name] = (f"ERROR {type(exc).__name__}: {msg}", "")
        if self.verbose:
            print(f"# {time.perf_counter() - t0:8.3f} s  {name}", file=sys.stderr, flush=True)

    def mode_hash(self):
        return hashlib.sha256("".join(f"{n}  {self.lines[n][0]}\n" for n in sorted(self.lines)).encode()).hexdigest()


# --- the ControlProblems (built after adjoint is imported in the chosen mode) --------------------
def build_cases(adjoint, numba):
    """name -> (factory() -> fresh ControlProblem, solve kwargs, {name: method}, blocks for objective)."""
    from problems import harmonic_oscillator as ho
    from problems import kepler, lqr, pendulum, perceptron, revnet
    from problems import lotka_volterra as lv

    @numba.njit
    def qs_f(x, c, p, t, out):  # the README quickstart (Lotka-Volterra), hand-written numba
        out[0] = p[0] * x[0] - p[1] * x[0] * x[1]
        out[1] = p[2] * x[0] * x[1] - p[3] * x[1]

    @numba.njit
    def qs_vjp(x, c, p, t, z, out_x, out_c, out_p):
        out_x[0] = (p[0] - p[1] * x[1]) * z[0] + p[2] * x[1] * z[1]
        out_x[1] = -p[1] * x[0] * z[0] + (p[2] * x[0] - p[3]) * z[1]
        out_p[0] = x[0] * z[0]
        out_p[1] = -x[0] * x[1] * z[0]
        out_p[2] = x[0] * x[1] * z[1]
        out_p[3] = -x[1] * z[1]

    @numba.njit
    def qs_L(x, c, p, t):
        return 0.5 * ((x[0] - 1.0) ** 2 + (x[1] - 0.5) ** 2)

    @numba.njit
    def qs_dL(x, c, p, t, out_x, out_c, out_p):
        out_x[0] = x[0] - 1.0
        out_x[1] = x[1] - 0.5
        out_p[:] = 0.0

    qs_dyn, qs_cost = adjoint.Dynamics(qs_f, qs_vjp, state_dim=2, param_dim=4), adjoint.Cost(qs_L, qs_dL)

    # traced neural ODE, state 8, hidden 16: too many scalar ops for the fused kernel -> "tape" (Euler)
    N, H = 8, 16
    q_node = 2 * N * H + H + N

    def node_field(x, c, p, t):
        W1, W2 = p[: N * H].reshape(H, N), p[N * H : 2 * N * H].reshape(N, H)
        return W2 @ np.tanh(W1 @ x + p[2 * N * H : 2 * N * H + H]) + p[2 * N * H + H :] + c

    node_dyn = adjoint.vector_field(node_field, state_dim=N, control_dim=N, param_dim=q_node)
    node_run = adjoint.cost(lambda x, c, p, t: 0.05 * np.sum(c * c) + 0.01 * np.sum(x * x), N, N, q_node)
    node_term = adjoint.cost(lambda x, c, p, t: 0.5 * np.sum((x - 0.3) ** 2), N, 0, q_node)

    # small traced pendulum, plain functions passed straight to ControlProblem -> fused scalar kernel
    def pend_field(x, c, p, t):
        return np.array([x[1], -9.81 * np.sin(x[0]) - p[0] * x[1] + c[0] * np.cos(t)])

    # traced recurrent maps x+ = tanh(W x + b + c): width 3 fused, width 16 tape. (Base-commit bug:
    # evaluate() through a fused kernel writes x0 into a (1, 1) placeholder trajectory, out of bounds
    # for state_dim > 1; from 4 states on it overruns the malloc chunk and glibc aborts at exit.)
    def rnn(w):
        def rnn_map(x, c, p, t):
            return np.tanh(p[: w * w].reshape(w, w) @ x + p[w * w :] + c)

        dyn = adjoint.vector_field(rnn_map, state_dim=w, control_dim=w, param_dim=w * w + w)
        term = adjoint.cost(lambda x, c, p, t: 0.5 * np.sum((x - 0.2) ** 2), w, 0, w * w + w)
        return lambda: adjoint.ControlProblem(dyn, np.linspace(-1, 1, w), (0.0, 1.0), 50, terminal_cost=term)

    # traced separable oscillator (plain u and v: their vjps derived by adjoint.ad)
    ho_dyn = adjoint.SeparableDynamics(
        lambda y, c, p, t: np.array([y[0]]),
        None,
        lambda x, c, p, t: np.array([-(p[0] ** 2) * x[0]]),
        None,
        x_dim=1,
        y_dim=1,
        param_dim=1,
    )
    rng = np.random.default_rng(1234)
    pts, labels = revnet.two_moons(n=24, seed=0)
    ode = {
        "Euler": adjoint.Euler(),
        "Heun": adjoint.Heun(),
        "RK4": adjoint.RK4(),
        "Ralston3": adjoint.RungeKutta(
            [[0, 0, 0], [0.5, 0, 0], [0, 0.75, 0]], [2 / 9, 1 / 3, 4 / 9], [0, 0.5, 0.75], order=3, name="Ralston3"
        ),
    }
    ode2 = {k: ode[k] for k in ("Euler", "RK4")}  # fewer tableaus where they would add only compile time
    sep = {"Leapfrog": adjoint.Leapfrog(), "VelocityVerlet": adjoint.VelocityVerlet()}
    dmap = {"DiscreteMap": adjoint.DiscreteMap()}
    ctrl = lambda K, m, s=0.3: s * np.sin(np.arange(K * m, dtype=float) * 0.37).reshape(K, m)
    CP = adjoint.ControlProblem
    return {
        "lqr": (lambda: lqr.make_problem(100), dict(controls=ctrl(100, 1)), ode, ("controls", "x0")),
        "pendulum": (
            lambda: pendulum.make_problem(100),
            dict(controls=pendulum.initial_guess(100)),
            ode2,
            ("controls",),
        ),
        "lotka_volterra": (lambda: lv.make_problem(200), dict(params=lv.TRUE_PARAMS * 1.1), ode2, ("params", "x0")),
        "quickstart": (
            lambda: CP(qs_dyn, x0=[1.0, 1.0], t_span=(0.0, 5.0), steps=150, terminal_cost=qs_cost),
            dict(params=np.array([1.0, 0.4, 0.4, 0.8])),
            ode,
            ("params",),
        ),
        "node": (
            lambda: CP(
                node_dyn, np.linspace(-0.5, 0.5, N), (0.0, 1.0), 120, terminal_cost=node_term, running_cost=node_run
            ),
            dict(params=0.3 * rng.standard_normal(q_node), controls=ctrl(120, N, 0.1)),
            ode,
            ("params", "controls"),
        ),
        "pend_traced": (
            lambda: CP(
                pend_field,
                [0.1, 0.0],
                (0.0, 2.0),
                100,
                control_dim=1,
                param_dim=1,
                terminal_cost=lambda x, p: 10.0 * (x[0] - np.pi) ** 2 + x[1] ** 2,
                running_cost=lambda x, c, p, t: 0.05 * c[0] ** 2 + p[0] * x[1] ** 2,
            ),
            dict(params=np.array([0.1]), controls=ctrl(100, 1)),
            ode,
            ("params", "controls", "x0"),
        ),
        "ho_as_dynamics": (
            lambda: CP(ho.DYNAMICS.as_dynamics(), ho.S0, (0.0, 5.0), 100, terminal_cost=ho.TERMINAL),
            dict(params=np.array([1.2])),
            ode2,
            ("params",),
        ),
        "perceptron": (
            lambda: perceptron.make_problem(6),
            dict(controls=perceptron.initial_guess(6)),
            dmap,
            ("controls",),
        ),
        "rnn3": (
            rnn(3),
            dict(params=0.4 * rng.standard_normal(12), controls=ctrl(50, 3)),
            dmap,
            ("params", "controls"),
        ),
        "rnn16": (rnn(16), dict(params=0.2 * rng.standard_normal(272), controls=ctrl(50, 16)), dmap, ("params",)),
        "harmonic_oscillator": (
            lambda: ho.make_problem(100, t_end=5.0),
            dict(params=np.array([1.2])),
            sep,
            ("params", "x0"),
        ),
        "kepler": (
            lambda: kepler.make_problem(150),
            dict(params=kepler.params(), x0=np.array([1.0, 0.0, 0.05, 1.02])),
            sep,
            ("x0",),
        ),
        "revnet": (
            lambda: revnet.make_problem(pts, labels, steps=20)[0],
            dict(params=revnet.with_labels(revnet.initial_params(), labels)),
            sep,
            ("params",),
        ),
        "ho_traced": (
            lambda: CP(
                ho_dyn,
                [1.0, 0.2],
                (0.0, 3.0),
                100,
                terminal_cost=lambda s, p: 0.5 * (s[0] - 0.3) ** 2 + 0.5 * s[1] ** 2,
            ),
            dict(params=np.array([1.3])),
            sep,
            ("params",),
        ),
    }


def schedules(adjoint, K, n, separable):
    out = {
        "StoreAll": adjoint.StoreAll(),
        "Revolve3": adjoint.Revolve(snapshots=3),
        "Uniform4": adjoint.Uniform(snapshots=4),
        "RevolveK+1": adjoint.Revolve(snapshots=K + 1),
        "MemoryBudget5states": adjoint.MemoryBudget(8 * n * 5),
        "auto": "auto",
    }
    if separable:
        out["Reversible"] = adjoint.Reversible()
        out["Reversible0+fallback"] = adjoint.Reversible(max_drift=0.0, fallback=adjoint.Uniform(snapshots=3))
    return out


# --- one mode -----------------------------------------------------------------------------------
def run_mode(mode, out_path, cache, verbose=False):
    for var in ("ADJOINT_DISABLE_FUSED", "ADJOINT_DISABLE_TAPE"):
        os.environ.pop(var, None)
    os.environ.update(ENV[mode])  # before adjoint is imported
    tmp_cache = None if cache else tempfile.mkdtemp(prefix="engine_hash_")
    os.environ["ADJOINT_CACHE_DIR"] = cache or tmp_cache
    os.makedirs(os.environ["ADJOINT_CACHE_DIR"], exist_ok=True)
    if os.path.isdir(os.path.join(ROOT, "adjoint")):
        sys.path.insert(0, ROOT)  # the checkout this script lives in
    import numba

    import adjoint as A

    print(f"# mode {mode}: adjoint from {os.path.dirname(A.__file__)}", flush=True)
    new_api = "backend" in inspect.signature(A.solve_adjoint).parameters
    if new_api and mode == "notape":
        print(f"# notape cannot be expressed with backend=: skipped\nMODE {mode} SKIPPED")
        return _write(out_path, [f"MODE {mode} SKIPPED"])
    backend = {"backend": "generic"} if new_api and mode == "generic" else {}
    kw = lambda fn: backend if "backend" in inspect.signature(fn).parameters else {}
    warnings.simplefilter("ignore")
    t_start = time.perf_counter()
    rec = Recorder(verbose)

    # solve_adjoint (each call twice: the second takes the fast lane where there is one),
    # return_trajectory, evaluate, simulate; a fresh problem per (case, method), fixed order.
    # (The lambdas below are called at once by rec.run: late binding of loop variables is harmless.)
    cases = build_cases(A, numba)
    for cname, (make, args, methods, wrt) in cases.items():
        for mname, method in methods.items():
            prob = make()
            sep = isinstance(prob.dynamics, A.SeparableDynamics)
            for sname, sched in schedules(A, prob.steps, prob.state_dim, sep).items():
                for rep in ("", "/2nd"):
                    rec.run(
                        f"solve/{cname}/{mname}/{sname}{rep}",
                        lambda: A.solve_adjoint(prob, method=method, checkpoint=sched, **args, **kw(A.solve_adjoint)),
                        adjoint_view,
                    )
            for sname, sched in (("StoreAll", A.StoreAll()), ("Revolve3", A.Revolve(snapshots=3))):
                rec.run(
                    f"traj/{cname}/{mname}/{sname}",
                    lambda: A.solve_adjoint(
                        prob, method=method, checkpoint=sched, return_trajectory=True, **args, **kw(A.solve_adjoint)
                    ),
                    adjoint_view,
                )
            rec.run(f"evaluate/{cname}/{mname}", lambda: A.evaluate(prob, method=method, **args, **kw(A.evaluate)))
            rec.run(f"simulate/{cname}/{mname}", lambda: A.simulate(prob, method=method, **args, **kw(A.simulate)))
        # problem.objective(wrt=...) on a fresh problem, first method: each block alone, then all
        method = next(iter(methods.values()))
        prob = make()
        for w in [(b,) for b in wrt] + ([wrt] if len(wrt) > 1 else []):
            fun = prob.objective(wrt=w, method=method, **args, **kw(A.objective))
            v0 = fun.initial()
            for i, v in enumerate((v0, v0 * 1.01 + 0.001, v0 * 1.01 + 0.001)):  # the third is memoised
                rec.run(f"objective/{cname}/{'+'.join(w)}/{i}", lambda: fun(v))

    # unsupported combinations and bad arguments: recorded as errors
    lqr_prob, ho_prob, sa = cases["lqr"][0](), cases["harmonic_oscillator"][0](), kw(A.solve_adjoint)
    rec.run(
        "error/lqr/Euler/Reversible",
        lambda: A.solve_adjoint(lqr_prob, controls=np.zeros((100, 1)), checkpoint=A.Reversible(), **sa),
    )
    rec.run(
        "error/lqr/MemoryBudget1B",
        lambda: A.solve_adjoint(lqr_prob, controls=np.zeros((100, 1)), checkpoint=A.MemoryBudget(1), **sa),
    )
    rec.run("error/lqr/controls-shape", lambda: A.solve_adjoint(lqr_prob, controls=np.zeros((99, 1)), **sa))
    rec.run("error/harmonic_oscillator/Euler", lambda: A.solve_adjoint(ho_prob, params=np.array([1.2]), **sa))

    # solve_argmin: hand-written and traced derivatives, implicit (both solvers) and unrolled
    from problems import logistic, ridge

    argmin = A.solve_argmin
    full = [("lbfgs", "cg"), ("newton-cg", "dense")], ["StoreAll", "Revolve3", "Uniform4", "MemoryBudget"]
    for pname, mod, theta, variants in (
        ("ridge", ridge, [-1.0], {"hand": full, "traced": full}),
        ("logistic", logistic, [0.5], {"hand": full, "traced": (full[0][:1], [])}),
    ):
        data = mod.make_problem(n_features=8, n_train=24, n_val=24)
        x0 = np.zeros(data.n)
        scheds = {
            "StoreAll": A.StoreAll(),
            "Revolve3": A.Revolve(snapshots=3),
            "Uniform4": A.Uniform(snapshots=4),
            "MemoryBudget": A.MemoryBudget(8 * data.n * 6),
        }
        for dname, (solvers, unrolled) in variants.items():
            base = dict(data.derivatives() if dname == "hand" else {}, **kw(argmin))
            for inner, lin in solvers:
                rec.run(
                    f"argmin/{pname}/{dname}/implicit/{inner}/{lin}",
                    lambda: argmin(data.energy, data.loss, theta, x0, inner=inner, linear_solver=lin, **base),
                )
            for sname in unrolled:
                rec.run(
                    f"argmin/{pname}/{dname}/unrolled/{sname}",
                    lambda: argmin(
                        data.energy,
                        data.loss,
                        theta,
                        x0,
                        mode="unrolled",
                        steps=40,
                        step_size=0.1,
                        checkpoint=scheds[sname],
                        **base,
                    ),
                )
        rec.run(
            f"error/argmin/{pname}/inner_max_iter",
            lambda: argmin(data.energy, data.loss, theta, x0, inner_max_iter=2, **data.derivatives()),
        )

    # Sinkhorn: every gradient mode (every schedule of the unrolled one), and the solver alone
    from problems import point_cloud_flow

    a, b, x, y = point_cloud_flow.make_problem(n=20, m=25, seed=0)
    loss = lambda P, f, g: (float(np.sum(P * P)), 2.0 * P, None, None)
    unr = {
        "default": None,
        "StoreAll": A.StoreAll(),
        "Revolve3": A.Revolve(snapshots=3),
        "Uniform4": A.Uniform(snapshots=4),
        "MemoryBudget": A.MemoryBudget(8 * 45 * 10),
    }
    variants = {
        "envelope/log": dict(mode="envelope", method="log"),
        "envelope/scaling": dict(mode="envelope", method="scaling"),
        "envelope/eps_scaling": dict(mode="envelope", eps_scaling=0.5),
        "implicit/dense": dict(mode="implicit", linear_solver="dense"),
        "implicit/cg": dict(mode="implicit", linear_solver="cg"),
        "implicit/loss": dict(mode="implicit", loss=loss),
        "unrolled/loss": dict(mode="unrolled", loss=loss),
        "error/envelope+loss": dict(mode="envelope", loss=loss),
        **{f"unrolled/{k}": dict(mode="unrolled", checkpoint=s) for k, s in unr.items()},
    }
    for vname, opts in variants.items():
        rec.run(
            f"sinkhorn/{vname}", lambda: A.sinkhorn_value_and_grad(a, b, x, y, 0.05, tol=1e-10, max_iter=2000, **opts)
        )
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    for meth in ("log", "scaling"):
        rec.run(
            f"solve_sinkhorn/{meth}",
            lambda: A.solve_sinkhorn(a, b, C, 0.05, method=meth, return_plan=True, tol=1e-10, max_iter=2000),
        )

    digest = rec.mode_hash()
    for name, (text, _) in sorted(rec.lines.items()):
        print(f"{name}  {text if text.startswith('ERROR') else text[:16]}")
    print(f"MODE {mode} {digest}")
    print(f"# {len(rec.lines)} configurations in {time.perf_counter() - t_start:.1f} s", flush=True)
    _write(out_path, [f"{n}  {t}  {s}".rstrip() for n, (t, s) in sorted(rec.lines.items())] + [f"MODE {mode} {digest}"])
    if tmp_cache:
        shutil.rmtree(tmp_cache, ignore_errors=True)


def _write(path, lines):
    if path:
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")


# --- every mode, one subprocess each --------------------------------------------------------------
def run_all(out_path, cache, verbose):
    results, listing = [], []
    with tempfile.TemporaryDirectory(prefix="engine_hash_") as tmp:
        for mode in MODES:
            part = os.path.join(tmp, f"{mode}.txt")
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--mode",
                mode,
                "--out",
                part,
                "--cache",
                cache or os.path.join(tmp, "cache"),
            ] + (["--verbose"] if verbose else [])
            t0 = time.perf_counter()
            rc = subprocess.run(cmd, check=False).returncode
            lines = []
            if os.path.exists(part):
                with open(part) as fh:
                    lines = fh.read().splitlines()
            results.append(lines[-1] if lines and lines[-1].startswith("MODE ") else f"MODE {mode} FAILED")
            listing += [f"## mode {mode}"] + lines
            print(f"# mode {mode} took {time.perf_counter() - t0:.1f} s, exit code {rc}", flush=True)
    overall = hashlib.sha256("\n".join(results).encode()).hexdigest()
    print("\n".join(results) + f"\nOVERALL {overall}")
    _write(out_path, listing + results + [f"OVERALL {overall}"])
    return 1 if any(r.endswith("FAILED") for r in results) else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=MODES, help="run one mode in this process")
    ap.add_argument("--out", help="write the full listing to this file")
    ap.add_argument("--cache", help="ADJOINT_CACHE_DIR to use (default: a fresh temporary folder per run)")
    ap.add_argument("--verbose", action="store_true", help="print the time of each configuration on stderr")
    args = ap.parse_args()
    if args.mode:
        return run_mode(args.mode, args.out, args.cache, args.verbose) or 0
    return run_all(args.out, args.cache, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
