"""Sinkhorn benchmark: adjoint vs POT (optional), at equal iteration counts.

Usage::

    python benchmarks/sinkhorn.py [--sizes 500 2000 5000] [--iters 200]
                                  [--threads 1 2] [--pot-threads 1] [--no-grad]
                                  [--ckpt-n 1000] [--ckpt-eps 0.01] [--only-ckpt]

Forward: n = m points uniform in the unit square, squared Euclidean cost,
``tol=0`` (exactly ``--iters`` iterations, the same for every solver), medians
of interleaved repeated calls (each round times every solver in turn, so load
from other processes hits all of them alike) after a warm-up; the first
(compile or cache-load) call is reported apart.  Our plans are checked against
POT's on the same inputs ("plan dev").  POT's plain ``ot.sinkhorn`` runs with
numpy's BLAS pinned to ``--pot-threads`` threads (default 1, the issue's
setting; printed in the header); ours with 1 and with all numba threads
(columns ``log 1t``, ``log 2t``, ...; ``auto`` uses all).

Regimes: eps = 0.05 ("scaling-safe": kernel exp(-C/eps) does not underflow) and
eps = 1e-3 ("log-domain regime").  References: POT ``ot.sinkhorn`` (plain
scaling) and ``method="sinkhorn_log"`` (numpy log domain; measured at the
smallest size only and scaled by (n/500)^2 beyond, marked "~"), OTT-JAX figure
from the issue (0.23 s at n = 500, 200 iterations, one thread; scaled by
(n/500)^2; JAX is not installed here).

Gradients: time of ``sinkhorn_value_and_grad`` per mode divided by the forward
time with the same settings, and the peak of traced (numpy) memory of unrolled
StoreAll vs implicit vs envelope (tracemalloc).

Checkpointed unrolled (``--ckpt-n``, default n = 1000, eps = 0.01, tol = 1e-9,
K decided by convergence): unrolled StoreAll vs unrolled Revolve(10) vs
implicit, each in its own child process (fresh interpreter, kernels loaded from
numba's cache by a tiny warm-up problem first).  Reported: wall time of one
full-size gradient, peak RSS of the child during that gradient above the RSS
just before it (Python + numpy + numba/LLVM + loaded kernels; the high-water
mark is reset through /proc/self/clear_refs after the warm-up, whose
compilation peaks far higher; RSS also counts the kernels' own allocations,
which tracemalloc does not see), the
library's ``stored_bytes`` (stored iterates + the n m cost adjoint), the
iterates held at once and the Sinkhorn iterations evaluated.
"""

import argparse
import sys
import time
import tracemalloc
import warnings
from pathlib import Path

import numba
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from adjoint._sinkhorn import sinkhorn_value_and_grad, solve_sinkhorn  # noqa: E402

try:
    import ot
except ImportError:  # POT is an optional benchmark dependency
    ot = None

OTT_500 = 0.23  # seconds, n = m = 500, 200 iterations, from the issue


def median_time(fn, repeats):
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts))


def interleaved(cases, repeats):
    """Median time of each case, the cases timed in turn within every round."""
    ts = {name: [] for name in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            t = time.perf_counter()
            fn()
            ts[name].append(time.perf_counter() - t)
    return {name: float(np.median(v)) for name, v in ts.items()}


def _openblas():
    """numpy's OpenBLAS (ctypes handle) or None: to pin POT's BLAS threads."""
    import ctypes
    import glob
    import os

    libdir = os.path.join(os.path.dirname(np.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(libdir, "*openblas*.so*")):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("64_", "", "_64"):
            get = getattr(lib, f"scipy_openblas_get_num_threads{suffix}", None)
            put = getattr(lib, f"scipy_openblas_set_num_threads{suffix}", None)
            if get is not None and put is not None:
                return get, put
        get = getattr(lib, "openblas_get_num_threads", None)
        put = getattr(lib, "openblas_set_num_threads", None)
        if get is not None and put is not None:
            return get, put
    return None


_BLAS = _openblas()


def blas_threads(k=None):
    """Set numpy's BLAS threads to k (if given); return the current count."""
    if _BLAS is None:
        return None
    if k is not None:
        _BLAS[1](int(k))
    return int(_BLAS[0]())


def problem(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2))
    y = rng.random((n, 2))
    a = np.full(n, 1.0 / n)
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return a, a.copy(), x, y, C


def _rel_plan_diff(P, Q):
    return float(np.abs(P - Q).max() / np.abs(Q).max())


def forward(sizes, iters, threads, pot_threads):
    """Forward solves at equal iteration counts, interleaved medians.

    Ours: ``method="auto"`` with numba's full thread count (the library still
    runs problems below 10^6 entries on one thread), and the two domains
    forced, on 1 and on all numba threads.  POT: plain ``ot.sinkhorn`` with
    numpy's BLAS pinned to ``pot_threads`` threads; ``sinkhorn_log`` (numpy,
    not threaded) timed at the smallest size only and scaled by (n / n0)^2
    beyond (marked ~).
    """
    tmax = max(threads)
    print(f"\n== forward, {iters} iterations (tol=0), interleaved medians in seconds ==")
    print(
        f"POT plain: BLAS threads = {pot_threads}; POT sinkhorn_log: numpy, "
        f"one thread; OTT-JAX: issue figure 0.23 s (n=500, one thread) x "
        f"(n/500)^2; ours: numba threads as in the column name."
    )
    pot_log_ref = {}
    cols = ["auto"] + [f"log {t}t" for t in threads] + [f"scal {t}t" for t in threads]
    hdr = (
        f"{'n':>5} {'eps':>6} {'domain':>7} "
        + " ".join(f"{c:>8}" for c in cols)
        + f" {'POT':>8} {'POT log':>9} {'OTT~':>7} | {'POT/auto':>8} "
        f"{'POT/sc1t':>8} {'OTT~/log':>8} {'POTlog/log':>10} {'plan dev':>8}"
    )
    print(hdr)
    rows = []
    for n in sizes:
        a, b, x, y, C = problem(n)
        reps = 7 if n <= 500 else (5 if n <= 2000 else 3)
        for eps in (0.05, 1e-3):
            run = dict(tol=0.0, max_iter=iters, warn=False)

            def ours(method, t):
                def fn():
                    numba.set_num_threads(t)
                    return solve_sinkhorn(a, b, C, eps, method=method, **run)

                return fn

            cases = {"auto": ours("auto", tmax)}
            for t in threads:
                cases[f"log {t}t"] = ours("log", t)
            for t in threads:
                cases[f"scal {t}t"] = ours("scaling", t)
            P_pot = None
            if ot is not None:

                def pot():
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        return ot.sinkhorn(a, b, C, eps, numItermax=iters, stopThr=0.0)

                cases["POT"] = pot
            # warm-up (compilation / cache load) and agreement checks
            t0 = time.perf_counter()
            r_auto = cases["auto"]()
            first = time.perf_counter() - t0
            plans = {name: fn().plan for name, fn in cases.items() if name in ("auto", f"log {tmax}t", f"scal {tmax}t")}
            dev = float("nan")
            if ot is not None:
                P_pot = cases["POT"]()
                if np.all(np.isfinite(P_pot)):
                    dev = max(_rel_plan_diff(P, P_pot) for P in plans.values())
            tm = interleaved(cases, reps)
            numba.set_num_threads(tmax)
            t_pot = tm.get("POT", float("nan"))
            t_potlog = float("nan")
            mark = " "
            if ot is not None:
                if n == min(sizes):
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t1 = time.perf_counter()
                        P_log = ot.sinkhorn(a, b, C, eps, method="sinkhorn_log", numItermax=iters, stopThr=0.0)
                        t_potlog = time.perf_counter() - t1
                    pot_log_ref[eps] = (t_potlog, n)
                    dev = max(dev, _rel_plan_diff(plans[f"log {tmax}t"], P_log))
                elif eps in pot_log_ref:
                    t0_, n0 = pot_log_ref[eps]
                    t_potlog = t0_ * (n / n0) ** 2
                    mark = "~"
            t_ott = OTT_500 * (n / 500) ** 2
            best_log = min(tm[f"log {t}t"] for t in threads)
            print(
                f"{n:>5} {eps:>6g} {r_auto.method:>7} "
                + " ".join(f"{tm[c]:>8.4f}" for c in cols)
                + f" {t_pot:>8.4f} {t_potlog:>8.3f}{mark} {t_ott:>7.2f} | "
                f"{t_pot / tm['auto']:>8.2f} "
                f"{t_pot / tm[f'scal {min(threads)}t']:>8.2f} "
                f"{t_ott / best_log:>8.2f} {t_potlog / best_log:>10.1f} "
                f"{dev:>8.1e}",
                flush=True,
            )
            if n == sizes[0] and eps == 0.05:
                print(f"      (first call incl. compile/cache load: {first:.2f} s)")
            rows.append(dict(n=n, eps=eps, times=tm, pot_log=t_potlog, ott=t_ott, dev=dev, domain=r_auto.method))
    print(
        "plan dev: max |P - P_POT| / max P_POT over our auto, log and scaling "
        "plans vs POT plain (and vs POT sinkhorn_log at the smallest size)."
    )
    return rows


def gradients(sizes, eps=0.05, tol=1e-9):
    print(f"\n== gradients, eps={eps}, tol={tol} (run to convergence) ==")
    print(
        f"{'n':>5} {'iters':>6} {'forward s':>9} {'mode':>9} {'grad s':>8} "
        f"{'grad/fwd':>8} {'peak MB':>8} {'stored MB':>9}"
    )
    for n in sizes:
        a, b, x, y, C = problem(n, seed=1)
        reps = 3 if n <= 500 else 1
        sinkhorn_value_and_grad(a, b, x, y, eps, mode="envelope", tol=tol)
        t_fwd = median_time(lambda: solve_sinkhorn(a, b, C, eps, tol=tol), reps)
        it = solve_sinkhorn(a, b, C, eps, tol=tol).iterations
        for mode in ("envelope", "implicit", "unrolled"):
            t = median_time(lambda: sinkhorn_value_and_grad(a, b, x, y, eps, mode=mode, tol=tol), reps)
            tracemalloc.start()
            r = sinkhorn_value_and_grad(a, b, x, y, eps, mode=mode, tol=tol)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(
                f"{n:>5} {it:>6} {t_fwd:>9.4f} {mode:>9} {t:>8.4f} "
                f"{t / t_fwd:>8.2f} {peak / 2**20:>8.1f} "
                f"{r.stored_bytes / 2**20:>9.1f}",
                flush=True,
            )


_CKPT_CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {bench!r})
import adjoint
from adjoint._sinkhorn import sinkhorn_value_and_grad
from sinkhorn import problem

spec, n, eps, tol = {spec!r}, {n}, {eps}, {tol}
ck = None if spec in ("StoreAll", "implicit") else eval("adjoint." + spec)
mode = "implicit" if spec == "implicit" else "unrolled"
kw = dict(mode=mode, tol=tol, max_iter=100_000, checkpoint=ck)
a, b, x, y, C = problem(30, seed=2)  # warm-up: compile or load the kernels
sinkhorn_value_and_grad(a, b, x, y, 0.1, **kw)
a, b, x, y, C = problem(n, seed=1)
del C


def status(key):  # kB -> MB
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024.0


# compiling or loading kernels peaks far above the steady state: reset the
# high-water mark (Linux: "5" > clear_refs) so the peak is the gradient's own
reset = True
try:
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
except OSError:
    reset = False
rss0 = status("VmRSS")
t = time.perf_counter()
r = sinkhorn_value_and_grad(a, b, x, y, eps, **kw)
dt = time.perf_counter() - t
rss1 = status("VmHWM") if reset else resource.getrusage(
    resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps(dict(spec=spec, K=r.solution.iterations, time=dt, rss_floor=rss0,
                      rss_peak=rss1, stored=r.stored_bytes, held=r.peak_stored_iterates,
                      fwd=r.forward_iterations, gx=r.grad_x.tolist())))
"""


def checkpointed(n, eps=0.01, tol=1e-9, specs=("StoreAll", "Revolve(snapshots=10)", "implicit")):
    import json
    import os
    import subprocess

    print(
        f"\n== unrolled with checkpointing, n = m = {n}, eps={eps}, tol={tol} "
        f"(each row: a child process, one gradient after a tiny warm-up) =="
    )
    print(
        f"{'gradient':>31} {'K':>5} {'grad s':>8} {'iters run':>9} "
        f"{'held':>5} {'stored MB':>9} {'RSS+ MB':>8} {'RSS before':>10}"
    )
    bench = str(Path(__file__).resolve().parent)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = {}
    for spec in specs:
        code = _CKPT_CHILD.format(bench=bench, spec=spec, n=n, eps=eps, tol=tol)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=root)
        if proc.returncode != 0:
            raise RuntimeError(f"child failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out[spec] = r
        name = spec if spec == "implicit" else f"unrolled {spec}"
        held = r["held"] if spec != "implicit" else "-"
        fwd = r["fwd"] if spec != "implicit" else r["K"]
        print(
            f"{name:>31} {r['K']:>5} {r['time']:>8.2f} {fwd:>9} {held:>5} "
            f"{r['stored'] / 1e6:>9.2f} {r['rss_peak'] - r['rss_floor']:>8.1f} "
            f"{r['rss_floor']:>10.1f}",
            flush=True,
        )
    if "StoreAll" in out:
        ref = np.array(out["StoreAll"]["gx"])
        for spec, r in out.items():
            if spec not in ("StoreAll", "implicit"):
                same = np.array_equal(np.array(r["gx"]), ref)
                print(f"  {spec}: grad_x bitwise equal to StoreAll: {same}")
    return out


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[500, 2000, 5000])
    p.add_argument("--grad-sizes", type=int, nargs="+", default=[500, 2000])
    p.add_argument("--iters", type=int, default=200)
    p.add_argument("--threads", type=int, nargs="+", default=sorted({1, numba.config.NUMBA_NUM_THREADS}))
    p.add_argument(
        "--pot-threads",
        type=int,
        default=1,
        help="BLAS threads for POT's plain sinkhorn (default 1, as in the issue's figures)",
    )
    p.add_argument("--no-grad", action="store_true")
    p.add_argument("--ckpt-n", type=int, default=1000, help="size of the checkpointed-unrolled rows (0: skip)")
    p.add_argument("--ckpt-eps", type=float, default=0.01)
    p.add_argument("--only-ckpt", action="store_true", help="run only the checkpointed-unrolled rows")
    args = p.parse_args()
    if args.only_ckpt:
        checkpointed(args.ckpt_n, eps=args.ckpt_eps)
        return
    old_blas = blas_threads()
    pot_threads = blas_threads(args.pot_threads)
    print(
        f"numba {numba.__version__}, threading layer request "
        f"{numba.config.THREADING_LAYER!r}, numba threads {args.threads}, "
        f"POT {'%s' % ot.__version__ if ot else 'not installed'}, numpy BLAS "
        f"threads for POT: {pot_threads} (default was {old_blas})"
    )
    forward(args.sizes, args.iters, args.threads, pot_threads)
    if not args.no_grad:
        gradients(args.grad_sizes)
        if args.ckpt_n > 0:
            checkpointed(args.ckpt_n, eps=args.ckpt_eps)


if __name__ == "__main__":
    main()
