"""Checkpointing benchmark: StoreAll vs Revolve(s) vs Uniform(s) on Lotka-Volterra, explicit Euler.

Every configuration runs in its own child process, which reports

* the median gradient time over ``--repeats`` runs after one warm-up run (compilation apart; the
  kernels are cached on disk after the first child),
* the median forward-only time (``adjoint.evaluate``) and the store-all gradient time of the same
  process, giving the prediction ``(forward_steps / K) * forward + (store_all - forward)``,
* the peak RSS of the whole child process (``resource.getrusage``), compilation included, the RSS
  floor before the first full-size gradient (imports, numba/LLVM, loaded kernels), and the peak of
  numpy/Python allocations during one gradient (``tracemalloc``),
* ``forward_steps / K`` and peak stored states from ``stats``.

Usage::

    PYTHONPATH=. python benchmarks/checkpointing.py                 # K = 10^6 and 10^7
    PYTHONPATH=. python benchmarks/checkpointing.py --steps 1000000 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SNAPSHOTS = (10, 20, 50)


def _child(steps: int, spec: str, repeats: int) -> dict:
    import resource
    import statistics
    import tracemalloc

    import adjoint
    from adjoint.checkpointing import Revolve, StoreAll, Uniform
    from problems import lotka_volterra as lv

    sched = {"StoreAll": lambda s: StoreAll(), "Revolve": lambda s: Revolve(snapshots=s),
             "Uniform": lambda s: Uniform(snapshots=s)}
    name, _, s = spec.partition(":")
    schedule = sched[name](int(s) if s else None)
    p = lv.initial_guess()
    warm = lv.make_problem(steps=1000)
    t = time.perf_counter()
    adjoint.solve_adjoint(warm, params=p, checkpoint=schedule)
    adjoint.evaluate(warm, params=p)
    compile_s = time.perf_counter() - t
    prob = lv.make_problem(steps=steps)

    def med(fn):
        fn()  # warm-up at full size
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return statistics.median(ts)

    rss_floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # imports + kernels loaded
    stats = adjoint.solve_adjoint(prob, params=p, checkpoint=schedule).stats  # keep no result arrays
    t_grad = med(lambda: adjoint.solve_adjoint(prob, params=p, checkpoint=schedule))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # before the reference runs
    tracemalloc.start()
    adjoint.solve_adjoint(prob, params=p, checkpoint=schedule)
    alloc_mb = tracemalloc.get_traced_memory()[1] / 1e6  # peak numpy/Python allocation of one gradient
    tracemalloc.stop()
    out = dict(steps=steps, schedule=stats.schedule, grad_s=t_grad, rss_mb=rss_mb,
               ratio=stats.forward_steps / steps, forward_steps=stats.forward_steps,
               peak_states=stats.peak_stored_states, peak_bytes=stats.peak_stored_bytes,
               compile_s=compile_s, rss_floor_mb=rss_floor, alloc_mb=alloc_mb)
    if name != "StoreAll":
        out["forward_s"] = med(lambda: adjoint.evaluate(prob, params=p))
        # store-all reference in the same process (its memory is not part of rss_mb above)
        if steps <= 10**7:
            out["store_all_s"] = med(lambda: adjoint.solve_adjoint(prob, params=p, checkpoint=StoreAll()))
    else:
        out["forward_s"] = med(lambda: adjoint.evaluate(prob, params=p))
        out["store_all_s"] = t_grad
    return out


def _run_child(steps: int, spec: str, repeats: int) -> dict:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", spec, "--steps", str(steps),
           "--repeats", str(repeats)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"child {spec} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, nargs="*", default=[10**6, 10**7])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--snapshots", type=int, nargs="*", default=list(SNAPSHOTS))
    ap.add_argument("--uniform", type=int, nargs="*", default=None, help="snapshots for Uniform (default: --snapshots)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.steps[0], args.child, args.repeats)))
        return
    specs = ["StoreAll"] + [f"Revolve:{s}" for s in args.snapshots]
    specs += [f"Uniform:{s}" for s in (args.uniform if args.uniform is not None else args.snapshots)]
    print("Lotka-Volterra, explicit Euler, state_dim 2; medians of "
          f"{args.repeats} runs after warm-up; peak RSS of each child process")
    hdr = (f"{'K':>9} {'schedule':<22} {'grad [s]':>9} {'fwd/K':>7} {'peak states':>11} {'RSS [MB]':>9} "
           f"{'floor [MB]':>10} {'alloc [MB]':>10} {'predicted [s]':>13} {'measured/pred':>13}")
    for steps in args.steps:
        print()
        print(hdr)
        for spec in specs:
            r = _run_child(steps, spec, args.repeats)
            fwd, sa = r["forward_s"], r.get("store_all_s", float("nan"))
            pred = r["ratio"] * fwd + (sa - fwd)
            print(f"{steps:>9} {r['schedule']:<22} {r['grad_s']:>9.3f} {r['ratio']:>7.3f} {r['peak_states']:>11} "
                  f"{r['rss_mb']:>9.1f} {r['rss_floor_mb']:>10.1f} {r['alloc_mb']:>10.1f} {pred:>13.3f} "
                  f"{r['grad_s'] / pred:>13.3f}", flush=True)
        print(f"  (forward only {fwd:.3f} s, store-all gradient {sa:.3f} s in the last child)")


if __name__ == "__main__":
    main()
