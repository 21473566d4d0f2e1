"""Command line: ``python -m adjoint list`` and ``python -m adjoint solve NAME``."""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import sys
import time

import numpy as np

# name -> module; modules that are not present (yet) are skipped by `list`
PROBLEMS = {
    "pendulum": "problems.pendulum",
    "lqr": "problems.lqr",
    "lotka_volterra": "problems.lotka_volterra",
    "perceptron": "problems.perceptron",
    "harmonic_oscillator": "problems.harmonic_oscillator",
    "kepler": "problems.kepler",
    "revnet": "problems.revnet",
    "ridge": "problems.ridge",
    "logistic": "problems.logistic",
    "point_cloud_flow": "problems.point_cloud_flow",
    "barycenter": "problems.barycenter",
}


def _available():
    out = {}
    for name, mod in PROBLEMS.items():
        if importlib.util.find_spec(mod) is not None:
            out[name] = mod
    return out


def _summary_line(modname):
    mod = importlib.import_module(modname)
    doc = (mod.__doc__ or "").strip().splitlines()
    return doc[0] if doc else ""


def _jsonable(o):
    if isinstance(o, np.ndarray):
        return o.tolist() if o.size <= 10_000 else f"<array {o.shape}>"
    if isinstance(o, (np.floating, np.integer, np.bool_)):
        return o.item()
    return repr(o)


def _as_summary(result) -> dict:
    """A JSON-able dict from whatever a problem's ``solve`` returned."""
    if isinstance(result, dict):
        return result
    if dataclasses.is_dataclass(result):
        out = {}
        for fld in dataclasses.fields(result):
            val = getattr(result, fld.name)
            if isinstance(val, (int, float, str, bool, list, tuple, np.ndarray, np.floating, np.integer)):
                out[fld.name] = val
        return out
    if isinstance(result, tuple):
        return {"result": [r for r in result if isinstance(r, (int, float, str))]}
    return {}


def _written(folder, name, ext, since):
    """``folder/name.ext`` when this run wrote it (mtime from ``since`` on, with 1 s of slack for
    coarse file-system clocks), else None. Only the problem's own file name counts: another
    problem's file written a moment earlier must never be reported as this run's output."""
    path = os.path.join(folder, name + ext)
    if os.path.exists(path) and os.path.getmtime(path) >= since - 1:
        return path
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m adjoint", description="Exact gradients of simulations: ready problems."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the ready problems")
    sp = sub.add_parser("solve", help="optimise a ready problem, print progress, save a PNG and a JSON summary")
    sp.add_argument("name", help="problem name (see `list`)")
    sp.add_argument("--steps", type=int, default=None, help="number of steps (problem default if omitted)")
    sp.add_argument("--method", default=None, help="euler, heun or rk4 (where the problem allows)")
    sp.add_argument("--maxiter", type=int, default=None, help="maximum optimiser iterations")
    sp.add_argument("--out", default="out", help="output folder (default: ./out)")
    args = parser.parse_args(argv)
    avail = _available()
    if args.command == "list":
        width = max(len(n) for n in avail)
        for name, mod in avail.items():
            print(f"{name:<{width}}  {_summary_line(mod)}")
        return 0
    if args.name not in avail:
        print(f"unknown problem {args.name!r}; available: {', '.join(avail)}", file=sys.stderr)
        return 2
    if args.steps is not None and args.steps < 1:
        print("--steps must be >= 1", file=sys.stderr)
        return 2
    mod = importlib.import_module(avail[args.name])
    accepted = inspect.signature(mod.solve).parameters
    kwargs = {"output_dir": args.out}
    for opt in ("steps", "method", "maxiter"):
        val = getattr(args, opt)
        if val is None:
            continue
        if opt not in accepted:
            print(f"problem {args.name!r} does not take --{opt}", file=sys.stderr)
            return 2
        kwargs[opt] = val
    print(f"solving {args.name}: {_summary_line(avail[args.name])}")
    t0 = time.perf_counter()
    t_wall = time.time()
    try:
        result = mod.solve(**kwargs)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary = _as_summary(result)
    os.makedirs(args.out, exist_ok=True)
    png = summary.get("png") or summary.get("figure") or _written(args.out, args.name, ".png", t_wall)
    js = summary.get("json") or _written(args.out, args.name, ".json", t_wall)
    if js is None:  # the problem wrote no summary: write what it returned
        js = os.path.join(args.out, f"{args.name}.json")
        with open(js, "w") as fh:
            json.dump({"problem": args.name, **summary}, fh, indent=2, default=_jsonable)
    line = f"done in {time.perf_counter() - t0:.1f} s"
    if isinstance(summary.get("objective"), (int, float)):
        line += f"; objective {summary['objective']:.6e}"
    print(line)
    print(f"  plot:    {png or '(none)'}")
    print(f"  summary: {js}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
