"""Cold start of every CLI problem: one optimiser iteration in a fresh process with empty caches.

For each ready problem (``python -m adjoint list``) a fresh child process, with numba's and
adjoint's cache folders pointed at a new empty folder, imports the problem and runs its ``solve``
with one optimiser iteration (``max_iter=1``; ``iters=1`` fixed-point iteration of the barycenter,
``steps=1`` gradient step of the point-cloud flow), no printing, into a temporary folder. Reported, per
problem: the import time, the time of that first ``solve`` (compilation of everything it needs,
one iteration, the figure and the JSON summary), and the same again in a second fresh process
that finds the caches warm. Target of issue 14: cold first call <= 5 s.

Usage::

    python benchmarks/cold_start.py                 # every problem, this checkout
    python benchmarks/cold_start.py --root OTHER    # another checkout (e.g. the previous commit)
    python benchmarks/cold_start.py pendulum ridge  # some problems
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from _util import ROOT, child_env  # noqa: E402

PROBLEMS = [
    "pendulum",
    "lqr",
    "lotka_volterra",
    "perceptron",
    "harmonic_oscillator",
    "kepler",
    "revnet",
    "ridge",
    "logistic",
    "point_cloud_flow",
    "barycenter",
]

CHILD = r"""
import importlib, inspect, json, sys, tempfile, time
t0 = time.perf_counter()
import adjoint
try:
    mod = importlib.import_module("adjoint.problems." + NAME)
except ImportError:
    mod = importlib.import_module("problems." + NAME)
t1 = time.perf_counter()
sig = inspect.signature(mod.solve).parameters
kw = {"verbose": False} if "verbose" in sig else {}
for key in ("max_iter", "maxiter", "iters"):  # the optimiser's or the fixed-point iterations
    if key in sig:
        kw[key] = 1
if NAME == "point_cloud_flow":  # its iterations are the flow's gradient steps
    kw["steps"] = 1
mod.solve(tempfile.mkdtemp(), **kw)
t2 = time.perf_counter()
print(json.dumps({"import": t1 - t0, "solve": t2 - t1}))
"""


def run(root, name, env_extra):
    env = child_env()
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "").replace(ROOT + os.pathsep, "")
    env.update(env_extra)
    env["MPLBACKEND"] = "Agg"
    out = subprocess.run(
        [sys.executable, "-c", f"NAME = {name!r}\n" + CHILD],
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
        cwd=root,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{name}: child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", default=PROBLEMS)
    ap.add_argument("--root", default=ROOT, help="checkout to measure (default: this one)")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    print(f"Cold start of the CLI problems ({root}); one solve iteration, fresh processes\n")
    print(f"{'problem':22s} {'import':>8s} {'cold solve':>11s} {'warm solve':>11s}   (target: cold <= 5 s)")
    worst = 0.0
    for name in args.names:
        d = tempfile.mkdtemp(prefix="adjoint-cold-")
        caches = {"NUMBA_CACHE_DIR": os.path.join(d, "numba"), "ADJOINT_CACHE_DIR": os.path.join(d, "adjoint")}
        cold = run(root, name, caches)
        warm = run(root, name, caches)
        worst = max(worst, cold["solve"])
        print(f"{name:22s} {cold['import']:7.2f}s {cold['solve']:10.2f}s {warm['solve']:10.2f}s")
    print(f"\nslowest cold solve: {worst:.2f} s")


if __name__ == "__main__":
    main()
