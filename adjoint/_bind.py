"""Bind user functions into compiled kernels, with numba's on-disk cache.

A kernel in ``adjoint._kernels`` takes the user's numba functions as arguments. numba cannot cache
a function whose argument types are dispatchers (their type is the function object itself), so a
fresh process would recompile every kernel. When the user's functions are importable (defined at
module level in a file), we generate a tiny module in a cache folder::

    import adjoint._kernels as _m0
    import problems.lotka_volterra as _m1
    @njit(cache=True)
    def bound(kind, has_run, ...):
        return _m0.gradient_store_all(kind, _m1.f, _m1.vjp, ...)

whose functions reference the user's functions as globals; numba caches those on disk, so a second
process loads machine code instead of compiling. The file name hashes the source files of the user's
modules, of this package's kernels and the numba version, so editing any of them gives a new
module (stale machine code is never reused). Functions that are not importable (defined in
``__main__``, closures) are passed directly, uncached.

The folder is ``$ADJOINT_CACHE_DIR`` or ``~/.cache/adjoint``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import os
import sys
import threading

__all__ = ["bound_kernel", "cache_dir"]

_LOCK = threading.Lock()
_BOUND: dict = {}
_FILE_HASH: dict = {}


def cache_dir() -> str:
    """The folder holding generated kernel modules (created on demand)."""
    d = os.environ.get("ADJOINT_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "adjoint")
    return os.path.join(d, "kernels")


def _file_digest(path: str) -> str:
    try:
        st = os.stat(path)
    except OSError:
        return "missing"
    key = (path, st.st_mtime_ns, st.st_size)
    got = _FILE_HASH.get(key)
    if got is None:
        with open(path, "rb") as fh:
            got = hashlib.sha256(fh.read()).hexdigest()[:16]
        _FILE_HASH[key] = got
    return got


def _import_path(fn):
    """``(module, qualname, file)`` when ``fn`` is importable by name, else None."""
    py = getattr(fn, "py_func", None)
    if py is None:
        return None
    mod, qual = getattr(py, "__module__", None), getattr(py, "__qualname__", "")
    if not mod or mod == "__main__" or "<" in qual or "." in qual:
        return None
    module = sys.modules.get(mod)
    if module is None or getattr(module, qual, None) is not fn:
        return None
    path = getattr(module, "__file__", None)
    if not path or not os.path.exists(path):
        return None
    return mod, qual, path


def bound_kernel(kernel, funcs: dict, literals: dict | None = None):
    """A callable running ``kernel`` with the function arguments named in ``funcs`` filled in.

    Parameters
    ----------
    kernel : numba dispatcher
        A kernel of ``adjoint._kernels`` (or any module-level njit function).
    funcs : dict
        Parameter name -> numba dispatcher, for the kernel's function-valued parameters.
    literals : dict, optional
        Parameter name -> int or bool written into the wrapper as a constant. numba then compiles
        the kernel for that literal value and prunes the branches it rules out (e.g. the method
        ``kind``), which lets LLVM inline the remaining small step functions.

    Returns
    -------
    callable
        Takes the kernel's remaining parameters, in order.
    """
    literals = dict(literals or {})
    params = list(inspect.signature(kernel.py_func).parameters)
    rest = [p for p in params if p not in funcs and p not in literals]
    # the function objects themselves (not their ids) key the cache: it keeps them alive, so an id
    # can never be reused by another function while its wrapper is cached
    key = (kernel, tuple(sorted(funcs.items(), key=lambda kv: kv[0])), tuple(sorted(literals.items())))
    got = _BOUND.get(key)
    if got is not None:
        return got
    for name, val in literals.items():
        if not isinstance(val, (bool, int)):
            raise TypeError(f"literal {name!r} must be an int or bool; got {val!r}")
    targets = {name: _import_path(fn) for name, fn in funcs.items()}
    kpath = _import_path(kernel)
    if os.environ.get("ADJOINT_DISABLE_CACHE") or kpath is None or any(t is None for t in targets.values()):
        fn = _in_memory(kernel, funcs, literals, params, rest)
        _BOUND[key] = fn
        return fn
    import numba

    h = hashlib.sha256()
    h.update(numba.__version__.encode())
    for name in sorted(targets):
        mod, qual, path = targets[name]
        h.update(f"{name}={mod}.{qual}:{_file_digest(path)};".encode())
    h.update(f"{kpath[0]}.{kpath[1]}:{_file_digest(kpath[2])}".encode())
    h.update(repr(sorted(literals.items())).encode())
    for dep in ("_kernels.py", "_bind.py"):
        h.update(_file_digest(os.path.join(os.path.dirname(__file__), dep)).encode())
    digest = h.hexdigest()[:20]
    modname = f"_adjoint_bound_{kpath[1]}_{digest}"
    # Reference every function as a module attribute (``_m0.f``): numba lowers a dispatcher reached
    # that way as a constant, whereas a bare imported alias passed as an argument is compiled as a
    # "dynamic global" that the disk cache refuses.
    modules = sorted({t[0] for t in targets.values()})
    malias = {m: f"_m{i}" for i, m in enumerate(modules)}
    lines = ["# generated by adjoint._bind: do not edit", "from numba import njit"]
    lines += [f"import {m} as {a}" for m, a in malias.items()]
    ref = {name: f"{malias[t[0]]}.{t[1]}" for name, t in targets.items()}
    ref.update({name: repr(val) for name, val in literals.items()})
    used = _kernel_globals(kernel, ref)
    if used:
        lines.append(f"from {kpath[0]} import {', '.join(used)}")
    lines += ["", "", "@njit(cache=True)", _specialised_source(kernel, ref), ""]
    src = "\n".join(lines)
    module = load_generated(modname, src, cache_dir())
    fn = module.bound if module is not None else _in_memory(kernel, funcs, literals, params, rest)
    _BOUND[key] = fn
    return fn


def load_generated(modname: str, src: str, folder: str):
    """Write ``src`` to ``folder/modname.py`` (once, atomically) and import it; None if the folder
    cannot be written (read-only home, full disk), so the caller falls back to uncached code."""
    path = os.path.join(folder, modname + ".py")
    with _LOCK:
        try:
            os.makedirs(folder, exist_ok=True)
            if not os.path.exists(path):
                tmp = f"{path}.{os.getpid()}.tmp"
                with open(tmp, "w") as fh:
                    fh.write(src)
                os.replace(tmp, path)
        except OSError:
            return None
        module = sys.modules.get(modname)
        if module is None:
            spec = importlib.util.spec_from_file_location(modname, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[modname] = module
            spec.loader.exec_module(module)
    return module


def _in_memory(kernel, funcs, literals, params, rest):
    """The same specialised kernel compiled from source held in memory (no disk cache)."""
    import numba

    ns = dict(kernel.py_func.__globals__)
    ref = {}
    for i, (name, fn) in enumerate(sorted(funcs.items())):
        ns[f"_u{i}"] = fn
        ref[name] = f"_u{i}"
    ref.update({name: repr(val) for name, val in literals.items()})
    src = _specialised_source(kernel, ref)
    exec(compile(src, f"<adjoint bound {kernel.py_func.__name__}>", "exec"), ns)
    return numba.njit(ns["bound"])


def _function_ast(kernel):
    import ast
    import textwrap

    src = textwrap.dedent(inspect.getsource(kernel.py_func))
    tree = ast.parse(src)
    fdef = tree.body[0]
    if not isinstance(fdef, ast.FunctionDef):
        raise TypeError(f"cannot specialise {kernel!r}: not a plain function definition")
    return fdef


def _specialised_source(kernel, ref: dict) -> str:
    """Source of ``bound(...)``: the kernel's body with parameters in ``ref`` replaced by constants.

    Function parameters become module attributes (``_m1.f``) and literal parameters (``kind``,
    ``has_run``...) become constants, so numba and LLVM fold the branches they decide and inline
    the small step functions; the other parameters stay parameters, in order.
    """
    import ast

    fdef = _function_ast(kernel)
    if fdef.args.vararg or fdef.args.kwarg or fdef.args.kwonlyargs or fdef.args.defaults:
        raise TypeError(f"cannot specialise {fdef.name}: only plain positional parameters are supported")

    class Subst(ast.NodeTransformer):
        def visit_Name(self, node):
            if node.id in ref:
                if not isinstance(node.ctx, ast.Load):
                    raise TypeError(f"cannot specialise {fdef.name}: it assigns to parameter {node.id!r}")
                return ast.copy_location(ast.parse(ref[node.id], mode="eval").body, node)
            return node

    fdef = Subst().visit(fdef)
    fdef.args.args = [a for a in fdef.args.args if a.arg not in ref]
    fdef.decorator_list = []
    fdef.name = "bound"
    ast.fix_missing_locations(fdef)
    return ast.unparse(fdef)


def _kernel_globals(kernel, ref: dict) -> list:
    """Names the kernel reads from its module's globals (imported into the generated module)."""
    g = kernel.py_func.__globals__
    names = set()

    def walk(code):
        for n in code.co_names:
            if n in g and n not in ref:
                names.add(n)
        for c in code.co_consts:
            if hasattr(c, "co_names"):
                walk(c)

    walk(kernel.py_func.__code__)
    return sorted(names)
