"""Reversible adjoint vs store-all vs Revolve(20): time and peak memory, K = 10^6 and 10^7.

Workloads: the harmonic oscillator (state dim 2) and the reversible ResNet on a batch of 4 two-moons
points with H = 2 (state dim 16), both with ``adjoint.Leapfrog``.

Every (workload, K, schedule) runs in its own child process: the child compiles on a small K
(compile time reported apart), then runs ``repeats`` gradients at K and prints the median wall time,
the peak RSS of the process (``ru_maxrss``) and the peak RSS growth over the post-compile baseline
(what the sweep itself allocated). Ratios are against store-all in the same run.

    PYTHONPATH=. python benchmarks/reversible.py [--ks 1000000 10000000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _make(workload, K):
    import numpy as np

    if workload == "oscillator":
        from adjoint.problems import harmonic_oscillator as ho

        return ho.make_problem(K), np.array([1.1])
    from adjoint.problems import revnet as rn

    pts, lab = rn.two_moons(4, seed=3)
    prob, lab = rn.make_problem(pts, lab, steps=K, hidden=2)
    return prob, rn.with_labels(rn.initial_params(2), lab)


def _schedule(name):
    from adjoint import checkpointing as ck
    from adjoint.checkpointing._reversible import Reversible

    if name == "StoreAll":
        return ck.StoreAll()
    if name == "Reversible":
        return Reversible()
    if name == "Revolve(20)":
        rev = getattr(ck, "Revolve", None)
        return None if rev is None else rev(snapshots=20)
    raise ValueError(name)


def child(workload, K, sched_name, repeats):
    import adjoint
    from adjoint.integrators import Leapfrog

    sched = _schedule(sched_name)
    if sched is None:
        print(json.dumps({"skipped": f"{sched_name} not available"}))
        return
    small, p = _make(workload, 1000)
    t = time.perf_counter()
    adjoint.solve_adjoint(small, params=p, method=Leapfrog(), checkpoint=sched)
    compile_s = time.perf_counter() - t
    prob, p = _make(workload, K)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    times, res = [], None
    for _ in range(repeats):
        res = None
        t = time.perf_counter()
        res = adjoint.solve_adjoint(prob, params=p, method=Leapfrog(), checkpoint=sched)
        times.append(time.perf_counter() - t)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    st = res.stats
    print(
        json.dumps(
            {
                "median_s": statistics.median(times),
                "times": times,
                "compile_s": compile_s,
                "peak_rss_mb": peak / 1024,
                "rss_growth_mb": (peak - base) / 1024,
                "forward_steps": st.forward_steps,
                "peak_stored_states": st.peak_stored_states,
                "drift": st.reversal_drift,
                "fallback": st.fallback,
                "grad_head": [float(v) for v in res.grad.params[:2]],
            }
        )
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ks", type=int, nargs="+", default=[1_000_000, 10_000_000])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workloads", nargs="+", default=["oscillator", "revnet"])
    ap.add_argument("--child", nargs=4, metavar=("WORKLOAD", "K", "SCHEDULE", "REPEATS"))
    args = ap.parse_args()
    if args.child:
        w, K, s, r = args.child
        child(w, int(K), s, int(r))
        return
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    print(
        f"{'workload':<11} {'K':>9} {'schedule':<12} {'median s':>9} {'x StoreAll':>10} {'compile s':>9} "
        f"{'peak RSS MB':>11} {'RSS growth MB':>13} {'fwd steps':>11} {'drift':>9}"
    )
    for w in args.workloads:
        for K in args.ks:
            ref = None
            for s in ("StoreAll", "Reversible", "Revolve(20)"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", w, str(K), s, str(args.repeats)],
                    capture_output=True,
                    text=True,
                    env=env,
                    cwd=ROOT,
                )
                if out.returncode != 0:
                    print(f"{w:<11} {K:>9} {s:<12} FAILED: {out.stderr.strip().splitlines()[-1:]}")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if "skipped" in r:
                    print(f"{w:<11} {K:>9} {s:<12} skipped ({r['skipped']})")
                    continue
                if s == "StoreAll":
                    ref = r["median_s"]
                ratio = r["median_s"] / ref if ref else float("nan")
                drift = "-" if r["drift"] is None else f"{r['drift']:.1e}"
                print(
                    f"{w:<11} {K:>9} {s:<12} {r['median_s']:>9.3f} {ratio:>10.2f} {r['compile_s']:>9.2f} "
                    f"{r['peak_rss_mb']:>11.0f} {r['rss_growth_mb']:>13.1f} {r['forward_steps']:>11} {drift:>9}"
                    + (f"  FALLBACK: {r['fallback']}" if r["fallback"] else ""),
                    flush=True,
                )


if __name__ == "__main__":
    main()
