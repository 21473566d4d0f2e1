"""Checkpointing benchmark: StoreAll vs Revolve(s) vs Uniform(s) on Lotka-Volterra, explicit Euler.

Every configuration runs in its own child process, which reports

* the median gradient time over ``--repeats`` runs after one warm-up run (compilation apart; the
  kernels are cached on disk after the first child),
* the median forward-only time (``adjoint.evaluate``) and the store-all gradient time of the same
  process, giving the prediction ``(forward_steps / K) * forward + (store_all - forward)``; the
  gradient and these references are timed in interleaved rounds (one run of each per round), so
  that load from other processes affects them alike,
* the peak RSS of the whole child process (``resource.getrusage``), compilation included, the RSS
  floor before the first full-size gradient (imports, numba/LLVM, loaded kernels), and the peak of
  numpy/Python allocations during one gradient (``tracemalloc``),
* ``forward_steps / K`` and peak stored states from ``stats``,
* the forward-only time of the dynamics without the running cost (what a recomputed step costs:
  the executor's advances do not evaluate the running cost; its adjoint steps do), giving a second,
  tighter model ``(forward_steps / K) * dyn_forward + (store_all - forward)``.

The issue's target is stated against the first prediction (``measured/pred``); ``meas/pred(dyn)``
shows the overhead of the executor itself.

``--rss`` (default for K = 10^7) then measures the peak RSS of a process that does nothing but one
Revolve(20) gradient at K = 10^7, in fresh children: with every numba cache cold (library and
generated kernels compiled in that process), with only the generated kernels cold (first run of a
problem), and warm (everything loaded from the disk caches); and, for reference, the floor of a
process that imports numpy and numba and calls one trivial cached ``@njit`` function.

Usage::

    PYTHONPATH=. python benchmarks/checkpointing.py                 # K = 10^6 and 10^7
    PYTHONPATH=. python benchmarks/checkpointing.py --steps 1000000 --repeats 3
    PYTHONPATH=. python benchmarks/checkpointing.py --steps --rss            # RSS section only
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
    from adjoint.problems import lotka_volterra as lv

    sched = {
        "StoreAll": lambda s: StoreAll(),
        "Revolve": lambda s: Revolve(snapshots=s),
        "Uniform": lambda s: Uniform(snapshots=s),
    }
    name, _, s = spec.partition(":")
    schedule = sched[name](int(s) if s else None)
    p = lv.initial_guess()
    warm = lv.make_problem(steps=1000)
    t = time.perf_counter()
    adjoint.solve_adjoint(warm, params=p, checkpoint=schedule)
    adjoint.evaluate(warm, params=p)
    compile_s = time.perf_counter() - t
    prob = lv.make_problem(steps=steps)
    rss_floor = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # imports + kernels loaded
    grad = lambda: adjoint.solve_adjoint(prob, params=p, checkpoint=schedule)  # noqa: E731
    stats = grad().stats  # warm-up at full size; keep no result arrays
    grad()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # before the reference runs
    tracemalloc.start()
    grad()
    alloc_mb = tracemalloc.get_traced_memory()[1] / 1e6  # peak numpy/Python allocation of one gradient
    tracemalloc.stop()
    # the dynamics alone (no running cost): what a recomputed step costs (compiled after rss_mb)
    dyn = adjoint.ControlProblem(lv.DYNAMICS, lv.Y_OBS[0], (0.0, lv.T_END), steps, terminal_cost=lv.TERMINAL)
    # the timings are taken in interleaved rounds, so that load from other processes hits the
    # gradient and the reference sweeps it is compared with alike
    runs = {
        "grad_s": grad,
        "forward_s": lambda: adjoint.evaluate(prob, params=p),
        "dyn_forward_s": lambda: adjoint.evaluate(dyn, params=p),
    }
    if name != "StoreAll":  # store-all reference in the same process (its memory is not part of rss_mb)
        runs["store_all_s"] = lambda: adjoint.solve_adjoint(prob, params=p, checkpoint=StoreAll())
    for fn in runs.values():
        fn()
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    out = dict(
        steps=steps,
        schedule=stats.schedule,
        rss_mb=rss_mb,
        ratio=stats.forward_steps / steps,
        forward_steps=stats.forward_steps,
        peak_states=stats.peak_stored_states,
        peak_bytes=stats.peak_stored_bytes,
        compile_s=compile_s,
        rss_floor_mb=rss_floor,
        alloc_mb=alloc_mb,
    )
    out.update({k: statistics.median(v) for k, v in times.items()})
    if name == "StoreAll":
        out["store_all_s"] = out["grad_s"]
    return out


_RSS_CHILD = """
import json, resource, time
def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
import adjoint
from adjoint.problems import lotka_volterra as lv
floor = peak()  # imports, numba initialised (lotka_volterra calls a jitted function at import)
prob = lv.make_problem(steps={steps})
t = time.perf_counter()
res = adjoint.solve_adjoint(prob, params=lv.initial_guess(), checkpoint=adjoint.Revolve(snapshots={s}))
print(json.dumps(dict(rss_mb=peak(), floor_mb=floor, seconds=time.perf_counter() - t,
                      forward_steps=res.stats.forward_steps)))
"""

_FLOOR_CHILD = """
import json, os, resource, sys
sys.path.insert(0, {folder!r})
with open(os.path.join({folder!r}, "_trivial_njit.py"), "w") as fh:
    fh.write("from numba import njit\\n@njit(cache=True)\\ndef add(a, b):\\n    return a + b\\n")
import numpy, numba
import _trivial_njit
_trivial_njit.add(1.0, 2.0)
print(json.dumps(dict(rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)))
"""


def _rss_section(steps: int = 10**7, s: int = 20) -> None:
    """Peak RSS of one Revolve(s) gradient in a fresh process: cold, generated-cold and warm caches."""
    import tempfile

    print()
    print(f"Peak RSS of a fresh process doing one Revolve({s}) gradient at K = {steps} (nothing else):")
    with tempfile.TemporaryDirectory() as tmp:
        cold = dict(NUMBA_CACHE_DIR=os.path.join(tmp, "numba"), ADJOINT_CACHE_DIR=os.path.join(tmp, "adjoint"))
        gen_cold = dict(ADJOINT_CACHE_DIR=os.path.join(tmp, "adjoint2"))
        code = _RSS_CHILD.format(steps=steps, s=s)
        runs = [
            ("all caches cold (everything compiled in the process)", cold),
            ("generated kernels cold (first run of this problem)", gen_cold),
            ("warm (kernels loaded from the disk caches)", cold),
            ("warm, again", gen_cold),
        ]
        for label, env in runs:
            r = _run_code(code, env)
            print(
                f"  {label:<56} peak RSS {r['rss_mb']:6.1f} MB (after imports {r['floor_mb']:6.1f} MB), "
                f"{r['seconds']:.2f} s",
                flush=True,
            )
        code = _FLOOR_CHILD.format(folder=tmp)
        _run_code(code, {})
        r = _run_code(code, {})
        print(f"  {'floor: numpy + numba + one trivial cached @njit call':<56} peak RSS {r['rss_mb']:6.1f} MB")


def _run_code(code: str, env_extra: dict) -> dict:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.update(env_extra)
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=root)
    if proc.returncode:
        raise RuntimeError(f"child failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_child(steps: int, spec: str, repeats: int) -> dict:
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, os.path.abspath(__file__), "--child", spec, "--steps", str(steps), "--repeats", str(repeats)]
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
    ap.add_argument(
        "--rss",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="RSS section for K = 10^7, Revolve(20) (default: when 10^7 is among --steps)",
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.steps[0], args.child, args.repeats)))
        return
    specs = ["StoreAll"] + [f"Revolve:{s}" for s in args.snapshots]
    specs += [f"Uniform:{s}" for s in (args.uniform if args.uniform is not None else args.snapshots)]
    print(
        "Lotka-Volterra, explicit Euler, state_dim 2; medians of "
        f"{args.repeats} runs after warm-up; peak RSS of each child process"
    )
    hdr = (
        f"{'K':>9} {'schedule':<22} {'grad [s]':>9} {'fwd/K':>7} {'peak states':>11} {'RSS [MB]':>9} "
        f"{'floor [MB]':>10} {'alloc [MB]':>10} {'predicted [s]':>13} {'measured/pred':>13} {'meas/pred(dyn)':>14}"
    )
    for steps in args.steps:
        print()
        print(hdr)
        for spec in specs:
            r = _run_child(steps, spec, args.repeats)
            fwd, sa = r["forward_s"], r.get("store_all_s", float("nan"))
            pred = r["ratio"] * fwd + (sa - fwd)
            pred_dyn = r["ratio"] * r["dyn_forward_s"] + (sa - fwd)
            print(
                f"{steps:>9} {r['schedule']:<22} {r['grad_s']:>9.3f} {r['ratio']:>7.3f} {r['peak_states']:>11} "
                f"{r['rss_mb']:>9.1f} {r['rss_floor_mb']:>10.1f} {r['alloc_mb']:>10.1f} {pred:>13.3f} "
                f"{r['grad_s'] / pred:>13.3f} {r['grad_s'] / pred_dyn:>14.3f}",
                flush=True,
            )
        print(
            f"  (last child: forward only {fwd:.3f} s, dynamics-only forward {r['dyn_forward_s']:.3f} s, "
            f"store-all gradient {sa:.3f} s)"
        )
    if args.rss or (args.rss is None and 10**7 in args.steps):
        _rss_section()


if __name__ == "__main__":
    main()
