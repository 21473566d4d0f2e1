"""The generated-module layer: every module that ``adjoint`` generates is written and loaded here.

Five generators write Python source for numba: the bound generic kernels (:mod:`adjoint._bind`),
a method's step functions (:mod:`adjoint.integrators._steps`), the scalar sweeps
(:mod:`adjoint._fused`), the tape kernels (:mod:`adjoint._tape`) and the traced functions of
:mod:`adjoint.ad`. They all hand their source to :func:`load`, which

- names the module by one digest of the generator's name and version, the numba version, the
  caller's stamp (digests of the user files the source imports) and the source itself, so that a
  change to any of them gives a new module and stale machine code is never reused;
- keeps one cache folder, ``$ADJOINT_CACHE_DIR`` or ``~/.cache/adjoint``, where numba stores the
  machine code of each module (``cache=True``) beside it, so a second process loads instead of
  compiling;
- writes the file atomically (a unique temporary file, then ``os.replace``), so two processes that
  generate the same module at once both import a complete file;
- checks a file that is already there against the source it must hold: a truncated or edited file
  is rewritten, with a warning naming the folder;
- makes numba's own cache files of adjoint's functions heal (:func:`install_cache_healing`): data
  files carry a checksum, and a damaged index or data file is recompiled with a warning, never
  loaded or raised;
- falls back to compiling in memory, without ``cache=True``, when the folder cannot be created or
  written (a read-only home, a path that is a file), with one warning per folder and process.

This module imports nothing from the rest of ``adjoint``: the tracing AD (:mod:`adjoint.ad`) uses
it as well as the ODE core.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import sys
import tempfile
import threading
import types
import warnings
from pathlib import Path

__all__ = [
    "cache_dir",
    "load",
    "file_digest",
    "import_path",
    "CacheWarning",
    "install_cache_healing",
]

#: the version of this layer's file layout; part of every digest
LAYOUT_VERSION = "1"

_LOCK = threading.RLock()
_MODULES: dict[str, types.ModuleType] = {}
_WRITABLE: dict[str, str | None] = {}  # folder -> None (writable) or the reason it is not
_FILE_HASH: dict[tuple, str] = {}
_CACHE_TRUE = re.compile(r"\bcache=True\b")


class CacheWarning(UserWarning):
    """The cache folder of generated kernels could not be used as it is (see :func:`cache_dir`)."""


def cache_dir() -> Path:
    """The folder of generated modules: ``$ADJOINT_CACHE_DIR``, else ``~/.cache/adjoint``.

    numba keeps the compiled machine code of each module in ``__pycache__`` inside it. Deleting the
    folder is always safe: the modules are generated again (and compiled once) on the next call.
    """
    d = os.environ.get("ADJOINT_CACHE_DIR")
    return Path(d) if d else Path.home() / ".cache" / "adjoint"


def file_digest(path: str) -> str:
    """A short digest of a file's bytes (memoised by path, mtime and size); ``"missing"`` if absent."""
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


def import_path(fn):
    """``(module, qualname, file)`` when the numba function ``fn`` is importable by name, else None.

    A generated module can then reference it as ``module.qualname`` (and numba can cache the
    module's functions). A closure made by a module-level factory (``def fields(H): @njit def
    u(...): ... H ...; return u``) has no module-level name: it is set as an attribute ``c_<key>`` of
    this module, where the key digests its module, qualified name, the digest of its source file
    and the values its closure cells hold, when those are plain constants (numbers, strings, tuples,
    numpy arrays). Equal keys mean equal compiled code, so the name can stand in generated source,
    and numba's disk cache of that source serves a later process that builds the same closure.
    Functions of ``__main__``, methods, and closures over other objects are not importable.
    """
    py = getattr(fn, "py_func", None)
    if py is None:
        return None
    mod, qual = getattr(py, "__module__", None), getattr(py, "__qualname__", "")
    if not mod or mod == "__main__" or not qual:
        return None
    module = sys.modules.get(mod)
    path = getattr(module, "__file__", None) if module is not None else None
    if not path or not os.path.exists(path):
        return None
    if "<" not in qual and "." not in qual:
        return (mod, qual, path) if getattr(module, qual, None) is fn else None
    return _closure_path(fn, py, mod, qual, path)


def _const_bytes(value, out: list) -> bool:
    """Append a byte form of a plain constant to ``out``; False for anything else."""
    import numpy as np

    if value is None or isinstance(value, (bool, int, float, complex, str, np.number, np.bool_)):
        out.append(f"{type(value).__name__}:{value!r};".encode())
        return True
    if isinstance(value, tuple):
        out.append(f"tuple{len(value)}(".encode())
        if not all(_const_bytes(v, out) for v in value):
            return False
        out.append(b")")
        return True
    if isinstance(value, np.ndarray) and value.dtype.kind in "biufc":
        out.append(f"array{value.dtype.str}{value.shape};".encode())
        out.append(np.ascontiguousarray(value).tobytes())
        return True
    return False


def _closure_path(fn, py, mod, qual, path):
    parts = qual.split(".<locals>.")
    if len(parts) != 2 or "." in parts[0] or "." in parts[1] or "<" in parts[1]:
        return None  # only closures of module-level factories (not methods, not nested factories)
    data = [mod.encode(), b"\0", qual.encode(), b"\0", file_digest(path).encode(), b"\0"]
    for cell in py.__closure__ or ():
        try:
            contents = cell.cell_contents
        except ValueError:  # an empty cell
            return None
        if not _const_bytes(contents, data):
            return None
    if not _const_bytes(tuple(py.__defaults__ or ()), data):
        return None
    name = "c_" + hashlib.sha256(b"".join(data)).hexdigest()[:24]
    this = sys.modules[__name__]
    with _LOCK:
        if getattr(this, name, None) is None:
            setattr(this, name, fn)  # the first of equal closures serves them all
    return __name__, name, path


def digest(generator: str, version: str, source: str, stamp: str = "") -> str:
    """The digest that names a generated module (see the module docstring)."""
    import numba

    h = hashlib.sha256()
    for part in (LAYOUT_VERSION, generator, version, numba.__version__, stamp):
        h.update(part.encode())
        h.update(b"\0")
    h.update(source.encode())
    return h.hexdigest()[:24]


def load(generator: str, version: str, source: str, stamp: str = "") -> types.ModuleType:
    """Import the generated ``source`` (written to the cache folder, or compiled in memory).

    Parameters
    ----------
    generator : str
        A short name of the generator (``"bound"``, ``"steps"``, ``"scalar"``, ``"tape"``, ``"ad"``); it starts
        the module's name.
    version : str
        The generator's version: bump it when generated code changes in a way the source does not
        show (e.g. a helper the source calls by name).
    source : str
        The module's text. ``@njit(cache=True)`` functions in it are cached on disk by numba.
    stamp : str
        Extra text for the digest: digests of the files the source imports by name.

    Returns
    -------
    module
        The same module object for the same digest within a process.
    """
    name = f"_adjoint_{generator}_{digest(generator, version, source, stamp)}"
    module = _MODULES.get(name)
    if module is not None:
        return module
    with _LOCK:
        module = _MODULES.get(name)
        if module is None:
            folder = cache_dir()
            path = _write(folder, name, source)
            module = _import_file(name, path) if path is not None else _import_memory(name, source)
            _MODULES[name] = module
    return module


def _writable(folder: Path) -> str | None:
    """None when ``folder`` exists (or was created) and accepts a new file; else the reason."""
    key = str(folder)
    if key not in _WRITABLE:
        reason = None
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".probe-")
            os.close(fd)
            os.unlink(probe)
        except OSError as exc:
            reason = f"{type(exc).__name__}: {exc.strerror or exc}"
        _WRITABLE[key] = reason
        if reason is not None:
            warnings.warn(
                f"adjoint: the cache folder {key!r} cannot be used ({reason}); generated kernels are "
                "compiled in memory in this process and not cached on disk. Set ADJOINT_CACHE_DIR to a "
                "writable folder to cache them.",
                CacheWarning,
                stacklevel=4,
            )
    return _WRITABLE[key]


def _write(folder: Path, name: str, source: str) -> Path | None:
    """``folder/name.py`` holding exactly ``source`` (written atomically when needed), or None when the
    folder cannot be written."""
    if _writable(folder) is not None:
        return None
    path = folder / f"{name}.py"
    try:
        held = path.read_text()
    except FileNotFoundError:
        held = None
    except (OSError, UnicodeDecodeError):
        held = ""
    if held == source:
        return path
    if held is not None:
        warnings.warn(
            f"adjoint: the generated module {path.name} in the cache folder {str(folder)!r} did not hold the "
            "source it is named after (a truncated or edited file); it was written again.",
            CacheWarning,
            stacklevel=4,
        )
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{name}-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(source)
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    except OSError as exc:  # the disk filled up since the probe, or the folder became read-only
        _WRITABLE[str(folder)] = f"{type(exc).__name__}: {exc.strerror or exc}"
        return None
    return path


#: appended to numba's pickled cache data: a marker and the SHA-256 of the pickle (``pickle.loads``
#: stops at the pickle's end, so numba itself reads such files unchanged)
_TRAILER = b"\0adjoint-sha256\0"


def _ours(module_name: str) -> bool:
    return module_name == "adjoint" or module_name.startswith(("adjoint.", "_adjoint_"))


def _checksummed(cache_file):
    """Give one numba cache file object checksummed data: written with a trailing digest, verified
    when read (a file without the trailer, from before, is read as numba reads it)."""
    import pickle

    dump = cache_file._dump

    def dump_with_digest(obj):
        data = dump(obj)
        return data + _TRAILER + hashlib.sha256(data).digest()

    def load_verified(name):
        path = cache_file._data_path(name)
        with open(path, "rb") as fh:
            data = fh.read()
        cut = len(data) - len(_TRAILER) - 32
        if cut >= 0 and data[cut : cut + len(_TRAILER)] == _TRAILER:
            if hashlib.sha256(data[:cut]).digest() != data[cut + len(_TRAILER) :]:
                raise ValueError(f"{os.path.basename(path)} does not match its checksum (a damaged file)")
        return pickle.loads(data)

    cache_file._dump = dump_with_digest
    cache_file._load_data = load_verified


def _remove_files(cache) -> list:
    """Remove the index and data files of one function's numba cache; their names."""
    folder = getattr(cache, "_cache_path", None)
    index = getattr(getattr(cache, "_cache_file", None), "_index_path", None)
    removed: list = []
    if not folder or not index:
        return removed
    stem = os.path.basename(index)[: -len(".nbi")]
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for fn in names:
        if fn == stem + ".nbi" or (fn.startswith(stem + ".") and fn.endswith(".nbc")):
            try:
                os.unlink(os.path.join(folder, fn))
                removed.append(fn)
            except OSError:
                pass
    return removed


def install_cache_healing() -> None:
    """Make numba's on-disk cache of this package's functions (the library's own kernels, the
    generated modules, the ready problems) heal instead of failing.

    numba raises, in every later process, when a function's index (``.nbi``) or data (``.nbc``) file
    is truncated or garbled (``UnpicklingError``, ``EOFError``, an LLVM bitcode parsing error), and a
    data file garbled inside its machine code could even load. For functions of ``adjoint`` (and
    only those), data files are written with a checksum and verified when read, and any failure to
    load is a miss: the function's files are removed, a :class:`CacheWarning` names the folder, and
    numba compiles and saves anew. Installed once, when ``adjoint`` is imported.
    """
    from numba.core.caching import FunctionCache

    if getattr(FunctionCache, "_adjoint_healing", False):
        return
    load_overload = FunctionCache.load_overload

    def healing_load_overload(self, sig, target_context):
        module = getattr(getattr(self, "_py_func", None), "__module__", None) or ""
        if not _ours(module):
            return load_overload(self, sig, target_context)
        if not getattr(self, "_adjoint_checksummed", False):
            cache_file = getattr(self, "_cache_file", None)
            if cache_file is not None and hasattr(cache_file, "_dump") and hasattr(cache_file, "_load_data"):
                _checksummed(cache_file)
            self._adjoint_checksummed = True
        try:
            return load_overload(self, sig, target_context)
        except Exception as exc:  # noqa: BLE001 - any failure to load is a miss: compile instead
            removed = _remove_files(self)
            name = getattr(getattr(self, "_py_func", None), "__qualname__", "?")
            warnings.warn(
                f"adjoint: numba's cached machine code of {module}.{name} in "
                f"{str(getattr(self, '_cache_path', '?'))!r} could not be loaded ({type(exc).__name__}: "
                f"{str(exc)[:200]}); it is compiled again"
                + (f" and the damaged files ({', '.join(sorted(removed))}) were replaced." if removed else "."),
                CacheWarning,
                stacklevel=2,
            )
            return None

    FunctionCache.load_overload = healing_load_overload  # type: ignore[method-assign]
    FunctionCache._adjoint_healing = True  # type: ignore[attr-defined]


def _import_file(name: str, path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def _import_memory(name: str, source: str) -> types.ModuleType:
    """The module compiled from memory: numba cannot cache a function without a source file."""
    module = types.ModuleType(name)
    sys.modules[name] = module
    code = compile(_CACHE_TRUE.sub("cache=False", source), f"<{name}>", "exec")
    exec(code, module.__dict__)
    return module
