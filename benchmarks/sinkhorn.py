"""Sinkhorn benchmark: adjoint vs POT (optional), at equal iteration counts.

Usage::

    python benchmarks/sinkhorn.py [--sizes 500 2000 5000] [--iters 200]
                                  [--threads 1 2] [--no-grad]
                                  [--ckpt-n 1000] [--ckpt-eps 0.01] [--only-ckpt]

Forward: n = m points uniform in the unit square, squared Euclidean cost,
``tol=0`` (exactly ``--iters`` iterations), medians of repeated calls after a
warm-up; the first (compile or cache-load) call is reported apart.

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


def problem(n, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 2))
    y = rng.random((n, 2))
    a = np.full(n, 1.0 / n)
    C = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return a, a.copy(), x, y, C


def forward(sizes, iters, threads):
    print(f"\n== forward, {iters} iterations (tol=0), medians in seconds ==")
    pot_log_500 = {}
    hdr = (f"{'n':>5} {'eps':>6} {'ours auto':>10} {'domain':>8} "
           + " ".join(f"{'log ' + str(t) + 'thr':>10}" for t in threads)
           + f" {'POT plain':>10} {'POT log':>10} {'OTT~':>8} "
           f"{'plain/ours':>10} {'OTT~/log':>9} {'POTlog/log':>10}")
    print(hdr)
    for n in sizes:
        a, b, x, y, C = problem(n)
        reps = 5 if n <= 500 else (3 if n <= 2000 else 1)
        for eps in (0.05, 1e-3):
            run = dict(tol=0.0, max_iter=iters, warn=False)
            t0 = time.perf_counter()
            r = solve_sinkhorn(a, b, C, eps, **run)
            first = time.perf_counter() - t0
            t_auto = median_time(lambda: solve_sinkhorn(a, b, C, eps, **run), reps)
            t_log = {}
            for t in threads:
                numba.set_num_threads(t)
                solve_sinkhorn(a, b, C, eps, method="log", **run)
                t_log[t] = median_time(
                    lambda: solve_sinkhorn(a, b, C, eps, method="log", **run), reps)
            numba.set_num_threads(max(threads))
            t_pot = t_potlog = float("nan")
            potlog_mark = " "
            if ot is not None:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    t_pot = median_time(
                        lambda: ot.sinkhorn(a, b, C, eps, numItermax=iters,
                                            stopThr=0.0), reps)
                    if n == min(sizes) or n <= 500:
                        t_potlog = median_time(
                            lambda: ot.sinkhorn(a, b, C, eps, method="sinkhorn_log",
                                                numItermax=iters, stopThr=0.0),
                            1 if n > 500 else 3)
                        pot_log_500[eps] = (t_potlog, n)
                    elif eps in pot_log_500:
                        t0_, n0 = pot_log_500[eps]
                        t_potlog = t0_ * (n / n0) ** 2
                        potlog_mark = "~"
            t_ott = OTT_500 * (n / 500) ** 2
            best_log = min(t_log.values())
            print(f"{n:>5} {eps:>6g} {t_auto:>10.4f} {r.method:>8} "
                  + " ".join(f"{t_log[t]:>10.4f}" for t in threads)
                  + f" {t_pot:>10.4f} {t_potlog:>9.3f}{potlog_mark} {t_ott:>8.2f} "
                  f"{t_pot / t_auto:>10.2f} {t_ott / best_log:>9.2f} "
                  f"{t_potlog / best_log:>10.1f}", flush=True)
            if n == sizes[0] and eps == 0.05:
                print(f"      (first call incl. compile/cache load: {first:.2f} s)")


def gradients(sizes, eps=0.05, tol=1e-9):
    print(f"\n== gradients, eps={eps}, tol={tol} (run to convergence) ==")
    print(f"{'n':>5} {'iters':>6} {'forward s':>9} {'mode':>9} {'grad s':>8} "
          f"{'grad/fwd':>8} {'peak MB':>8} {'stored MB':>9}")
    for n in sizes:
        a, b, x, y, C = problem(n, seed=1)
        reps = 3 if n <= 500 else 1
        sinkhorn_value_and_grad(a, b, x, y, eps, mode="envelope", tol=tol)
        t_fwd = median_time(lambda: solve_sinkhorn(a, b, C, eps, tol=tol), reps)
        it = solve_sinkhorn(a, b, C, eps, tol=tol).iterations
        for mode in ("envelope", "implicit", "unrolled"):
            t = median_time(
                lambda: sinkhorn_value_and_grad(a, b, x, y, eps, mode=mode, tol=tol),
                reps)
            tracemalloc.start()
            r = sinkhorn_value_and_grad(a, b, x, y, eps, mode=mode, tol=tol)
            _, peak = tracemalloc.get_traced_memory()
            tracemalloc.stop()
            print(f"{n:>5} {it:>6} {t_fwd:>9.4f} {mode:>9} {t:>8.4f} "
                  f"{t / t_fwd:>8.2f} {peak / 2**20:>8.1f} "
                  f"{r.stored_bytes / 2**20:>9.1f}", flush=True)


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


def checkpointed(n, eps=0.01, tol=1e-9, specs=("StoreAll", "Revolve(snapshots=10)",
                                                "implicit")):
    import json
    import os
    import subprocess

    print(f"\n== unrolled with checkpointing, n = m = {n}, eps={eps}, tol={tol} "
          f"(each row: a child process, one gradient after a tiny warm-up) ==")
    print(f"{'gradient':>31} {'K':>5} {'grad s':>8} {'iters run':>9} "
          f"{'held':>5} {'stored MB':>9} {'RSS+ MB':>8} {'RSS before':>10}")
    bench = str(Path(__file__).resolve().parent)
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ)
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    out = {}
    for spec in specs:
        code = _CKPT_CHILD.format(bench=bench, spec=spec, n=n, eps=eps, tol=tol)
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True,
                              text=True, env=env, cwd=root)
        if proc.returncode != 0:
            raise RuntimeError(f"child failed:\n{proc.stderr[-3000:]}")
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out[spec] = r
        name = spec if spec == "implicit" else f"unrolled {spec}"
        held = r["held"] if spec != "implicit" else "-"
        fwd = r["fwd"] if spec != "implicit" else r["K"]
        print(f"{name:>31} {r['K']:>5} {r['time']:>8.2f} {fwd:>9} {held:>5} "
              f"{r['stored'] / 1e6:>9.2f} {r['rss_peak'] - r['rss_floor']:>8.1f} "
              f"{r['rss_floor']:>10.1f}", flush=True)
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
    p.add_argument("--threads", type=int, nargs="+",
                   default=sorted({1, numba.config.NUMBA_NUM_THREADS}))
    p.add_argument("--no-grad", action="store_true")
    p.add_argument("--ckpt-n", type=int, default=1000,
                   help="size of the checkpointed-unrolled rows (0: skip)")
    p.add_argument("--ckpt-eps", type=float, default=0.01)
    p.add_argument("--only-ckpt", action="store_true",
                   help="run only the checkpointed-unrolled rows")
    args = p.parse_args()
    if args.only_ckpt:
        checkpointed(args.ckpt_n, eps=args.ckpt_eps)
        return
    print(f"numba {numba.__version__}, threading layer request "
          f"{numba.config.THREADING_LAYER!r}, threads {args.threads}, "
          f"POT {'%s' % ot.__version__ if ot else 'not installed'}")
    forward(args.sizes, args.iters, args.threads)
    if not args.no_grad:
        gradients(args.grad_sizes)
        if args.ckpt_n > 0:
            checkpointed(args.ckpt_n, eps=args.ckpt_eps)


if __name__ == "__main__":
    main()
