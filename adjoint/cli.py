"""Command line: ``python -m adjoint list`` and ``python -m adjoint solve NAME``.

The ready problems are the modules of :mod:`adjoint.problems` named in :data:`PROBLEMS`. Each has a
module docstring (its first line is what ``list`` shows) and a function

    solve(output_dir, steps=None, method=None, max_iter=..., verbose=True) -> ProblemResult

taking the subset of ``steps``, ``method`` and ``max_iter`` that makes sense for it (the CLI passes
only the options given on the command line, and refuses those ``solve`` does not take). ``solve``
prints its progress when ``verbose``, writes ``<name>.png`` and ``<name>.json`` into ``output_dir``
and returns a :class:`ProblemResult` naming them: the CLI reports exactly those files.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import json
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

# name -> module; modules that are not present (yet) are skipped by `list`
PROBLEMS = {
    "pendulum": "adjoint.problems.pendulum",
    "lqr": "adjoint.problems.lqr",
    "lotka_volterra": "adjoint.problems.lotka_volterra",
    "perceptron": "adjoint.problems.perceptron",
    "harmonic_oscillator": "adjoint.problems.harmonic_oscillator",
    "kepler": "adjoint.problems.kepler",
    "revnet": "adjoint.problems.revnet",
    "ridge": "adjoint.problems.ridge",
    "logistic": "adjoint.problems.logistic",
    "point_cloud_flow": "adjoint.problems.point_cloud_flow",
    "barycenter": "adjoint.problems.barycenter",
    "bryson_denham": "adjoint.problems.bryson_denham",
    "double_integrator": "adjoint.problems.double_integrator",
    "goddard": "adjoint.problems.goddard",
    "robot_arm": "adjoint.problems.robot_arm",
    "pendulum_min_time": "adjoint.problems.pendulum_min_time",
    "gasoil": "adjoint.problems.gasoil",
    "methanol": "adjoint.problems.methanol",
    "neural_ode_fit": "adjoint.problems.neural_ode_fit",
}


@dataclass(frozen=True)
class ProblemResult:
    """What a ready problem's ``solve`` returns, and all that ``python -m adjoint solve`` reads.

    Attributes
    ----------
    name : str
        The problem's name (the stem of its files, e.g. ``"pendulum"``).
    summary : dict
        JSON-able figures of the run (numbers, strings, lists, dicts): the content of ``json``. A
        numeric ``"objective"`` is printed by the CLI; most problems also give ``"iterations"`` and
        ``"history"`` (one dict per optimiser iteration).
    figure : str or None
        Path of the PNG written, None when no figure was written.
    json : str or None
        Path of the JSON summary written. None when ``solve`` wrote none: the CLI then writes
        ``summary`` (with ``"problem": name`` first) to ``<output_dir>/<name>.json``. A ``solve``
        returning a plain dict is read as ``ProblemResult(name, that dict, figure=None, json=None)``.

    Examples
    --------
    >>> r = ProblemResult("demo", {"objective": 0.5}, figure=None, json="out/demo.json")
    >>> r.summary["objective"], r.figure, r.json
    (0.5, None, 'out/demo.json')
    """

    name: str
    summary: dict
    figure: str | None
    json: str | None


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


def _check_output_dir(path) -> str | None:
    """Why ``path`` cannot serve as the output folder, or None: checked before the optimisation, so
    a bad ``--out`` is reported at once, not as a traceback after the whole run."""
    if os.path.exists(path) and not os.path.isdir(path):
        return "exists and is not a folder"
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as exc:
        return f"cannot be created ({exc.strerror or exc})"
    if not os.access(path, os.W_OK | os.X_OK):
        return "cannot be written"
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
    sp.add_argument(
        "--max-iter", "--maxiter", dest="max_iter", type=int, default=None, help="maximum optimiser iterations"
    )
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
    if args.max_iter is not None and args.max_iter < 1:
        print(f"--max-iter must be >= 1; got {args.max_iter}", file=sys.stderr)
        return 2
    problem = _check_output_dir(args.out)
    if problem:
        print(f"error: --out {args.out!r}: {problem}; pass a folder that can be created and written", file=sys.stderr)
        return 2
    mod = importlib.import_module(avail[args.name])
    accepted = inspect.signature(mod.solve).parameters
    kwargs = {"output_dir": args.out}
    for opt in ("steps", "method", "max_iter"):
        val = getattr(args, opt)
        if val is None:
            continue
        if opt not in accepted:
            print(f"problem {args.name!r} does not take --{opt}", file=sys.stderr)
            return 2
        kwargs[opt] = val
    print(f"solving {args.name}: {_summary_line(avail[args.name])}")
    t0 = time.perf_counter()
    try:
        result = mod.solve(**kwargs)
    except (ValueError, TypeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if isinstance(result, Mapping):  # a summary alone: the problem wrote no files
        result = ProblemResult(name=args.name, summary=dict(result), figure=None, json=None)
    if not isinstance(result, ProblemResult):
        print(f"error: problem {args.name!r} returned {type(result).__name__}, not a ProblemResult", file=sys.stderr)
        return 2
    summary, js = result.summary, result.json
    if js is None:  # the problem wrote no summary: write the one it returned
        os.makedirs(args.out, exist_ok=True)
        js = os.path.join(args.out, f"{args.name}.json")
        with open(js, "w") as fh:
            json.dump({"problem": args.name, **summary}, fh, indent=2, default=_jsonable)
    line = f"done in {time.perf_counter() - t0:.1f} s"
    if isinstance(summary.get("objective"), (int, float)):
        line += f"; objective {summary['objective']:.6e}"
    print(line)
    print(f"  plot:    {result.figure or '(none)'}")
    print(f"  summary: {js}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
