"""Runge-Kutta gradients per backend: the generic kernels against the scalar (generated) ones.

Run: ``python benchmarks/methods.py [--steps K] [--rounds R]``. For Lotka-Volterra (p = 4, K = 2e5
steps by default) and each of Euler, Heun and RK4, prints the median gradient time of the scalar
backend (state in locals, the stages unrolled) and of the generic backend (the user's compiled
``f``/``vjp`` called on arrays, the stages as one loop over the tableau), under StoreAll,
Revolve(20) and Uniform(10), and the ratio generic / scalar measured side by side (in turns, after
warm-up). The first call of each configuration (compiling, or loading the disk cache) is reported
apart. Both backends return the same bits; the script checks it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import adjoint  # noqa: E402
from adjoint.problems import lotka_volterra as lv  # noqa: E402
from benchmarks._util import block_medians  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    prob, p = lv.make_problem(args.steps), lv.initial_guess()
    methods = {"Euler": adjoint.Euler(), "Heun": adjoint.Heun(), "RK4": adjoint.RK4()}
    schedules = {"StoreAll": adjoint.StoreAll(), "Revolve(20)": adjoint.Revolve(snapshots=20)}
    schedules["Uniform(10)"] = adjoint.Uniform(snapshots=10)
    print(f"Lotka-Volterra, K = {args.steps}, gradient medians ({args.rounds} rounds after warm-up)\n")
    print(
        f"{'method':7s} {'schedule':12s} {'scalar [ms]':>12s} {'generic [ms]':>13s} {'gen/scalar':>11s}  first calls [s]"
    )
    for mname, meth in methods.items():
        for sname, ck in schedules.items():
            fns, first, res = [], [], []
            for be in ("scalar", "generic"):

                def fn(be=be):
                    return adjoint.solve_adjoint(prob, params=p, method=meth, checkpoint=ck, backend=be)

                t = time.perf_counter()
                res.append(fn())
                first.append(time.perf_counter() - t)
                fns.append(fn)
            a, b = res
            same = a.value == b.value and np.array_equal(a.grad.params, b.grad.params)
            if not same or (a.stats.backend, b.stats.backend) != ("scalar", "generic"):
                raise SystemExit(
                    f"{mname} {sname}: backends differ ({a.stats.backend}, {b.stats.backend}, same={same})"
                )
            ts, tg = block_medians(fns, rounds=args.rounds, block=3, warmup=1)
            print(
                f"{mname:7s} {sname:12s} {1e3 * ts:12.2f} {1e3 * tg:13.2f} {tg / ts:11.2f}  "
                f"{first[0]:.2f} / {first[1]:.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
