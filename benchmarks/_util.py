"""Shared helpers for the benchmark scripts: medians after warm-up, child-process measurements."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def median_time(fn, *args, repeat=15, warmup=2, min_time=0.0):
    """Median wall time of ``fn(*args)`` in seconds after ``warmup`` calls."""
    for _ in range(warmup):
        fn(*args)
    ts = []
    t_all = time.perf_counter()
    while len(ts) < repeat or time.perf_counter() - t_all < min_time:
        t = time.perf_counter()
        fn(*args)
        ts.append(time.perf_counter() - t)
        if len(ts) > 10 * repeat:
            break
    return float(np.median(ts))


def block_medians(fns, rounds=11, block=10, warmup=3):
    """Median wall time of each callable, measured in turns: every round calls each function
    ``block`` times back to back (each call timed), so slow drift of the shared machine's load
    hits all of them alike while each still runs with warm caches, as in an optimiser's loop."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    ts = [[] for _ in fns]
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            for _ in range(block):
                t = time.perf_counter()
                fn()
                ts[i].append(time.perf_counter() - t)
    return [float(np.median(t)) for t in ts]


def pin_to_one_cpu():
    """Pin this process to one CPU (the last it may run on); returns it, or None where unsupported.

    On this 2-core machine an unpinned single-threaded child measured bimodally from process to
    process (Lotka-Volterra 10^5 gradient: 1.05-1.18 ms or 1.36-1.40 ms); pinned to either core,
    1.05-1.08 ms every time. Every peer's child is pinned alike (one core each, one thread)."""
    if os.environ.get("ADJOINT_BENCH_PIN", "1") == "0" or not hasattr(os, "sched_setaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpus[-1]})
    return cpus[-1]


def child_env():
    """The environment of a measured child process: ours, with the repository on the path and
    Python's default bytecode caching (this machine's shells set PYTHONDONTWRITEBYTECODE, which
    would make every fresh process recompile our sources: ~0.1 s that no installed package --
    pip compiles their bytecode at install -- pays)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_child(code: str, env_extra=None, timeout=900) -> dict:
    """Run ``code`` in a fresh Python process; it must print one JSON line last."""
    env = child_env()
    if env_extra:
        env.update(env_extra)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout, cwd=ROOT
    )
    if out.returncode != 0:
        raise RuntimeError(f"child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def fresh_cache_env():
    """Environment pointing numba's and adjoint's caches at a new empty folder."""
    d = tempfile.mkdtemp(prefix="adjoint-bench-")
    return {"NUMBA_CACHE_DIR": os.path.join(d, "numba"), "ADJOINT_CACHE_DIR": os.path.join(d, "adjoint")}


def fmt_ms(s):
    return f"{1e3 * s:9.3f} ms"
