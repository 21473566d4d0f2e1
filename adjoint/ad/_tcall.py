"""Calls to compiled functions of time only, kept as opaque calls in traced code.

A vector field or cost often reads data that depends on time alone: an interpolated observation, a
forcing term, a schedule. Such a helper is usually a numba function with a computed index
(``j = int(t / dt)``) that the tracer cannot follow. Its result does not depend on the state,
controls or parameters, and the time is never differentiated, so its derivative is not needed: the
tracer records the call as one node (primitive ``tcall``, zero derivative) and the generated code
calls the user's compiled function, where LLVM inlines it like any other call.

This applies only while tracing a field or cost (:func:`adjoint.vector_field`, :func:`adjoint.cost`,
hand-written ``Dynamics``/``Cost`` traced for the fused kernels), where ``t`` is declared not
differentiated, and only to numba functions importable by name (defined at module level in a file)
whose arguments are ``t``, expressions of ``t`` alone, or constants, and which return a float or a
tuple of floats. Anything else is traced into as before.
"""

from __future__ import annotations

import importlib
import re

import numpy as np

from ._primitives import ELEMENTWISE, NONDIFF, PRIMITIVES, Primitive

__all__ = ["opaque_inputs", "try_tcall", "import_lines", "is_dispatcher"]

_ALIAS_PREFIX = "_adj_tc_"
_ALIASES: dict[str, str] = {}  # alias -> module name
_STATE: dict = {"builder": None, "allowed": frozenset()}


def _alias(module: str) -> str:
    a = _ALIAS_PREFIX + re.sub(r"\W", "_", module)
    _ALIASES[a] = module
    return a


def _resolve(module: str, qual: str):
    return getattr(importlib.import_module(module), qual)


def _impl(*args, module, qual, index, consts, digest):
    fn = _resolve(module, qual)
    it = iter(args)
    vals = []
    for c in consts:
        vals.append(float(np.real(next(it))) if c is None else c)
    out = fn(*vals)
    return np.float64(out if index < 0 else out[index])


_P = Primitive("tcall", _impl, fmt=None, show=None, elementwise=True)
PRIMITIVES["tcall"] = _P
ELEMENTWISE.add("tcall")
NONDIFF.add("tcall")


def tcall_fmt(attrs) -> str:
    """Scalar code of a ``tcall`` node: ``alias.qual(args)[index]``."""
    k = 0
    parts = []
    for c in attrs["consts"]:
        if c is None:
            parts.append("{%d}" % k)
            k += 1
        else:
            parts.append(repr(c))
    call = f"{_alias(attrs['module'])}.{attrs['qual']}({', '.join(parts)})"
    return call if attrs["index"] < 0 else f"{call}[{attrs['index']}]"


def tcall_show(attrs, argnames) -> str:
    return tcall_fmt(attrs).split(".", 1)[1].format(*argnames)


# vectorisable elementary functions called by generated code (primitive templates such as
# ``_adj_vm.tanh({0})``, see ._primitives)
VECMATH_ALIAS = "_adj_vm"
_VECMATH_USE = re.compile(r"\b" + VECMATH_ALIAS + r"\.")


def import_lines(source: str) -> list[str]:
    """Import lines for the modules generated ``source`` refers to by alias: ``import module as
    alias`` for the tcall aliases (with the user's file digest in a comment, so an edited file gives
    a new generated module), and ``from adjoint import _vecmath as _adj_vm`` when it calls the
    vectorisable functions of :mod:`adjoint._vecmath` (with that file's digest: numba's cache of
    the generated module does not see changes of inlined callees in other files, a new digest gives
    a new module)."""
    from .._modules import file_digest as _file_digest

    lines = []
    if _VECMATH_USE.search(source):
        from .. import _vecmath

        lines.append(f"from adjoint import _vecmath as {VECMATH_ALIAS}  # {_file_digest(_vecmath.__file__)}")
    for alias in sorted(set(re.findall(re.escape(_ALIAS_PREFIX) + r"\w+", source))):
        mod = _ALIASES[alias]
        path = getattr(importlib.import_module(mod), "__file__", "") or ""
        lines.append(f"import {mod} as {alias}  # {_file_digest(path) if path else 'nofile'}")
    return lines


class opaque_inputs:
    """Context: while tracing with ``builder``, inputs named in ``names`` are not differentiated,
    so compiled functions of them alone may be recorded as opaque calls."""

    def __init__(self, builder, tracers, names, allowed=("t",)):
        self.new = (builder, frozenset(tr.id for tr, nm in zip(tracers, names) if nm in allowed))
        self.old = None

    def __enter__(self):
        self.old = (_STATE["builder"], _STATE["allowed"])
        _STATE["builder"], _STATE["allowed"] = self.new
        return self

    def __exit__(self, *exc):
        _STATE["builder"], _STATE["allowed"] = self.old


def is_dispatcher(v) -> bool:
    from numba.core.dispatcher import Dispatcher

    return isinstance(v, Dispatcher)


def _depends_only_on(builder, nid, allowed) -> bool:
    memo = builder.__dict__.setdefault("_tcall_deps", {})
    if nid in memo:
        return memo[nid]
    stack, seen, ok = [nid], set(), True
    while stack:
        i = stack.pop()
        if i in seen:
            continue
        seen.add(i)
        n = builder.nodes[i]
        if n.prim == "input" and i not in allowed:
            ok = False
            break
        stack.extend(n.args)
    memo[nid] = ok
    return ok


def try_tcall(disp, args):
    """Record ``disp(*args)`` as opaque call node(s) when allowed (see the module docstring);
    return the traced result, or ``None`` when the call must be traced into instead."""
    from .._modules import import_path as _import_path
    from ._tracer import Tracer

    builder, allowed = _STATE["builder"], _STATE["allowed"]
    if builder is None or not allowed:
        return None
    tr_ids, consts = [], []
    for a in args:
        if isinstance(a, Tracer):
            if a.builder is not builder or a.shape != () or not _depends_only_on(builder, a.id, allowed):
                return None
            tr_ids.append(a.id)
            consts.append(None)
        elif isinstance(a, (bool, int, float, np.integer, np.floating)):
            consts.append(a.item() if isinstance(a, np.generic) else a)
        else:
            return None
    if not tr_ids:
        return None
    path = _import_path(disp)
    if path is None:
        return None
    module, qual, file = path
    try:  # the result's structure (a float or a tuple of floats), from one call
        probe = disp(*[0.0 if c is None else c for c in consts])
    except Exception:  # noqa: BLE001 - not callable this way: trace into it instead
        return None
    if isinstance(probe, tuple):
        if not probe or not all(isinstance(v, (int, float, bool, np.number)) for v in probe):
            return None
        indices = list(range(len(probe)))
    elif isinstance(probe, (int, float, bool, np.number)):
        indices = [-1]
    else:
        return None
    from .._modules import file_digest as _file_digest

    digest = _file_digest(file)
    _alias(module)
    outs = [
        builder.node(
            "tcall", tr_ids, {"module": module, "qual": qual, "index": i, "consts": tuple(consts), "digest": digest}, ()
        )
        for i in indices
    ]
    return outs[0] if indices == [-1] else tuple(outs)


_CALL_LINE = re.compile(r"^(\s*)(\w+) = (" + re.escape(_ALIAS_PREFIX) + r"\w+\.\w+\((.*)\))(\[\d+\])?$")
_ASSIGN = re.compile(r"^\s*([\w\s,]+?)\s*(?:\[[^\]]*\])?\s*(?:[-+*/]?=)(?!=)")
_IDENT = re.compile(r"[A-Za-z_]\w*")
_CONTROL = re.compile(r"^\s*(for|while|if|elif|else|return|def|with|try|except|@)\b")


def cse_tcalls(source: str) -> str:
    """Call each opaque function of ``t`` once per straight-line block of generated code.

    Traced pieces (the field, its VJP, a cost and its gradient) are emitted separately, so the same
    ``fn(t)`` appears several times per step; LLVM does not merge the inlined copies. A later
    identical call (same text) in the same block, with no assignment to any name of its arguments
    in between, reuses the first result (``_tcN``). A block ends at any change of indentation or
    any control-flow line."""
    out = []
    seen: dict[tuple, str] = {}
    indent = None
    count = 0
    for ln in source.split("\n"):
        ind = len(ln) - len(ln.lstrip())
        if ind != indent or _CONTROL.match(ln) or not ln.strip():
            seen = {}
            indent = ind
        m = _CALL_LINE.match(ln)
        if m:
            sp, name, call, args, idx = m.groups()
            key = (call,)
            var = seen.get(key)
            if var is None:
                var = f"_tc{count}"
                count += 1
                seen[key] = var
                out.append(f"{sp}{var} = {call}")
            out.append(f"{sp}{name} = {var}{idx or ''}")
            assigned = {name}
        else:
            out.append(ln)
            a = _ASSIGN.match(ln)
            assigned = set(_IDENT.findall(a.group(1))) if a else set()
        if assigned and seen:
            seen = {
                k: v
                for k, v in seen.items()
                if not (assigned & set(_IDENT.findall(k[0].split("(", 1)[1]))) and v not in assigned
            }
    return "\n".join(out)
