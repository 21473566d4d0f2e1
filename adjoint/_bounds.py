"""Bounds-checked probe of the user's numba functions, run once per problem before any kernel.

Compiled numba code does not check indices: a vector field that reads ``p[3]`` with
``param_dim=3`` reads whatever lies after the array, and one that writes ``out[2]`` with
``state_dim=2`` corrupts the heap (the process may abort at exit with ``double free or
corruption``). Before the first sweep we therefore run each user function's Python source
(``py_func``, the code numba compiles) once on arrays of exactly the declared sizes, in a subclass
of ``ndarray`` that names itself when an index is out of range. An out-of-range access becomes an
``IndexError`` naming the function, the argument, the index and the declared size. Above
``PYTHON_PROBE_MAX`` entries (where the Python run would be slow) the compiled function runs
instead, on arrays followed by guard entries (see :func:`_probe_guarded`).

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
#: (about 2 us per indexed access): the compiled function is run on guarded arrays instead
PYTHON_PROBE_MAX = 20_000

#: guard entries after each array of the guarded run: the largest array's size plus this many
GUARD_EXTRA = 64
#: the first guard entries are set to a marker value (a write past the end changes them; a read sees
#: them); the rest stay zero, so that a write of anything but zero there is seen too
GUARD_MARKED = 1024

_FILL, _OTHER = 1.5, np.nan


def _bits_equal(a, b) -> bool:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.array_equal(a.view(np.int64), b.view(np.int64)))


def _same(r1, r2) -> bool:
    """Two runs' results (return value, every array after the call) equal bit for bit."""
    if (r1[0] is None) != (r2[0] is None):
        return False
    if r1[0] is not None:
        try:
            if not _bits_equal(r1[0], r2[0]):
                return False
        except (TypeError, ValueError):  # not numbers: compare as objects
            if not bool(np.all(np.asarray(r1[0] == r2[0]))):
                return False
    return all(a is None or _bits_equal(a, b) for a, b in zip(r1[1], r2[1]))


def _guarded_run(fn, roles, args, fills):
    """Call ``fn`` on copies of ``args``, each followed by guard entries (as many as the largest
    array has, plus GUARD_EXTRA): the first GUARD_MARKED of them set to ``fills[i]``, the rest zero
    (untouched memory costs nothing). Returns ``(result, arrays, guards)``, or None if the call raises."""
    bufs, call = [], []
    # a loop bound by another array's size (``for i in range(n): out_p[i] = ...``) runs into the
    # guard, not past it
    longest = max(int(np.size(a)) for r, a in zip(roles, args) if r is not None)
    for i, (role, a) in enumerate(zip(roles, args)):
        if role is None:
            bufs.append(None)
            call.append(a)
            continue
        a = np.asarray(a, dtype=np.float64)
        buf = np.zeros(a.size + longest + GUARD_EXTRA)
        buf[: a.size] = a
        buf[a.size : a.size + GUARD_MARKED] = fills[i]
        bufs.append((buf, a.size))
        call.append(buf[: a.size])
    try:
        ret = fn(*call)
    except Exception:  # noqa: BLE001 - judged by the compiled checks that follow
        return None
    arrays = [None if b is None else b[0][: b[1]] for b in bufs]  # each run has its own buffers
    guards = [None if b is None else b[0][b[1] :] for b in bufs]
    return ret, arrays, guards


def _guard_intact(g, fill) -> bool:
    return bool(np.all(g[:GUARD_MARKED] == fill) and not np.any(g[GUARD_MARKED:]))


def _probe_guarded(label, fn, roles, args, names=_DECLARED):
    """Large arrays: the compiled function itself, run on arrays followed by guard entries.

    A write past the end of an array changes its guard (a write of zero beyond the first GUARD_MARKED
    guard entries goes unseen, harmlessly: the guard is ours); a read past the end makes the results
    depend on the guard's marked values (found by changing every guard; then, unless a repeated run
    differs as well (a function that draws random numbers), each guard in turn names the array).
    Costs two calls of the function and no compilation when nothing is found. An index past an array's end by more
    than the largest array's size (plus GUARD_EXTRA) is not covered.
    """
    base_fills = [_FILL] * len(roles)
    base = _guarded_run(fn, roles, args, base_fills)
    if base is None:
        return
    bad = None
    for i, g in enumerate(base[2]):
        if g is not None and not _guard_intact(g, _FILL):
            bad = ("writes past the end of", i)
            break
    if bad is None:
        every = _guarded_run(fn, roles, args, [_OTHER] * len(roles))
        if every is None or not _same(base, every):  # some guard is read, or the function is random
            again = _guarded_run(fn, roles, args, base_fills)
            if again is None or not _same(base, again):
                return  # not deterministic: reads cannot be judged this way
            for i, role in enumerate(roles):  # which array's guard is read?
                if role is None:
                    continue
                fills = list(base_fills)
                fills[i] = _OTHER
                other = _guarded_run(fn, roles, args, fills)
                if other is None or not _same(base, other):
                    bad = ("reads past the end of", i)
                    break
    if bad is None:
        return
    action, i = bad
    name = roles[i]
    size = int(np.size(args[i]))
    declared = names.get(name, "its declared size")
    raise IndexError(
        f"{label} {action} `{name}`, which has {size} entries ({declared}={size} as declared; found by running "
        f"the compiled function on arrays followed by guard entries): fix the index in the function, or declare "
        f"{declared} to match it. (Compiled numba code does not check indices: the call would read or write memory "
        "outside the array.)"
    )


def probe_bounds(label, fn, kind, args, declared=None):
    """Run ``fn.py_func`` on named copies of ``args``; raise IndexError on an out-of-range index.

    ``label`` names the function in the message (e.g. "`dynamics.f`"), ``kind`` is one of
    ``"f"``, ``"vjp"``, ``"value"``, ``"grad"`` (the argument roles). ``declared``: argument name ->
    the setting that declares its size, where it is not the problem's (``{"out": "size"}``).
    """
    names = {**_DECLARED, **(declared or {})}
    py = getattr(fn, "py_func", None)
    if py is None:
        return
    roles = _ROLES[kind]
    if sum(np.size(a) for r, a in zip(roles, args) if r is not None) > PYTHON_PROBE_MAX:
        _probe_guarded(label, fn, roles, args, names)
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
        declared = names.get(exc.name, "its declared size")
        raise IndexError(
            f"{label} {exc.action} {exc.name}[{index}], but `{exc.name}` has {size} entries ({declared}={size} "
            f"as declared): fix the index in the function, or declare {declared} to match it. (Compiled numba "
            "code does not check indices: the call would read or write memory outside the array.)"
        ) from None
    except Exception:  # noqa: BLE001 - anything but an index is for the compiled checks to judge
        return
