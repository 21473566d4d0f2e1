"""Bounds-checked probe of the user's numba functions, run once per problem before any kernel.

Compiled numba code does not check indices: a vector field that reads ``p[3]`` with
``param_dim=3`` reads whatever lies after the array, and one that writes ``out[2]`` with
``state_dim=2`` corrupts the heap (the process may abort at exit with ``double free or
corruption``). Before the first sweep we therefore run each user function's Python source
(``py_func``, the code numba compiles) once on arrays of exactly the declared sizes, in a subclass
of ``ndarray`` that names itself when an index is out of range. An out-of-range access becomes an
``IndexError`` naming the function, the argument, the index and the declared size.

The probe decides only about indices. Anything else the Python run raises (code that only numba
accepts, an error the compiled function would raise too) is left to the compiled checks that
follow; a function without ``py_func`` (a plain Python function: traced, where the tracer checks
indices against the declared shapes) is not probed here.
"""

from __future__ import annotations

import numpy as np

__all__ = ["probe_bounds"]


class _OutOfBounds(Exception):
    def __init__(self, name, size, key, action):
        super().__init__(name, size, key, action)
        self.name, self.size, self.key, self.action = name, size, key, action


class _Named(np.ndarray):
    """An array that raises :class:`_OutOfBounds` (with its name) on an out-of-range index."""

    _probe_name: str = "?"

    def __array_finalize__(self, obj):
        self._probe_name = getattr(obj, "_probe_name", "?")

    def __getitem__(self, key):
        try:
            return np.ndarray.__getitem__(self, key)
        except IndexError:
            raise _OutOfBounds(self._probe_name, self.shape, key, "reads") from None

    def __setitem__(self, key, value):
        try:
            np.ndarray.__setitem__(self, key, value)
        except IndexError:
            raise _OutOfBounds(self._probe_name, self.shape, key, "writes") from None


def _named(arr, name):
    a = np.array(arr, dtype=np.float64).view(_Named)
    a._probe_name = name
    return a


# role of each array argument, by position, per kind of user function: (name, declared size)
_ROLES = {
    "f": ("x", "c", "p", None, "out"),
    "vjp": ("x", "c", "p", None, "z", "out_x", "out_c", "out_p"),
    "value": ("x", "c", "p", None),
    "grad": ("x", "c", "p", None, "out_x", "out_c", "out_p"),
}
_DECLARED = {
    "x": "state_dim",
    "out": "state_dim",
    "z": "state_dim",
    "out_x": "state_dim",
    "c": "control_dim",
    "out_c": "control_dim",
    "p": "param_dim",
    "out_p": "param_dim",
}


#: above this many array entries the Python run would take more than a few tens of milliseconds
#: (about 2 us per indexed access): a bounds-checked compile of the same source is used instead
PYTHON_PROBE_MAX = 20_000


def _probe_compiled(label, py, roles, args):
    """Large arrays: the function's source compiled with bounds checking, run once on copies."""
    from numba import njit

    try:
        checked = njit(boundscheck=True)(py)
    except Exception:  # noqa: BLE001
        return
    copies = [a if r is None else np.array(a, dtype=np.float64) for r, a in zip(roles, args)]
    try:
        checked(*copies)
    except IndexError:
        sizes = ", ".join(f"{r} ({np.size(a)},)" for r, a in zip(roles, args) if r is not None)
        raise IndexError(
            f"{label} indexes an array out of its bounds (a bounds-checked compile of its source says so); "
            f"the arrays have the declared sizes {sizes}: fix the index in the function, or declare the "
            "dimensions to match it. (Compiled numba code does not check indices: the call would read or "
            "write memory outside the array.)"
        ) from None
    except Exception:  # noqa: BLE001 - anything but an index is for the compiled checks to judge
        return


def probe_bounds(label, fn, kind, args):
    """Run ``fn.py_func`` on named copies of ``args``; raise IndexError on an out-of-range index.

    ``label`` names the function in the message (e.g. "`dynamics.f`"), ``kind`` is one of
    ``"f"``, ``"vjp"``, ``"value"``, ``"grad"`` (the argument roles).
    """
    py = getattr(fn, "py_func", None)
    if py is None:
        return
    roles = _ROLES[kind]
    if sum(np.size(a) for r, a in zip(roles, args) if r is not None) > PYTHON_PROBE_MAX:
        _probe_compiled(label, py, roles, args)
        return
    call = []
    for role, a in zip(roles, args):
        call.append(a if role is None else _named(a, role))
    try:
        py(*call)
    except _OutOfBounds as exc:
        key = exc.key if isinstance(exc.key, tuple) else (exc.key,)
        index = ", ".join(repr(k) if not isinstance(k, (int, np.integer)) else str(int(k)) for k in key)
        size = exc.size[0] if len(exc.size) == 1 else exc.size
        declared = _DECLARED.get(exc.name, "its declared size")
        raise IndexError(
            f"{label} {exc.action} {exc.name}[{index}], but `{exc.name}` has {size} entries ({declared}={size} "
            f"as declared): fix the index in the function, or declare {declared} to match it. (Compiled numba "
            "code does not check indices: the call would read or write memory outside the array.)"
        ) from None
    except Exception:  # noqa: BLE001 - anything but an index is for the compiled checks to judge
        return
