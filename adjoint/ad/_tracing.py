"""Running a function under tracing: :func:`trace` / :func:`trace_shapes` record its :class:`Graph`,
with numpy's array literals (:class:`array_literals`) and calls of numba functions
(:class:`traced_calls`) intercepted while it runs."""

from __future__ import annotations

import inspect

import numpy as np

from ._tracer import Builder, TraceError, Tracer, _np_array, _np_asarray, as_value

__all__ = ["trace", "trace_shapes", "array_literals", "traced_calls"]


def trace(fn, *args, names=None):
    """Trace ``fn`` on symbolic arrays shaped like ``args`` and return its :class:`Graph`.

    Parameters
    ----------
    fn : callable
        A plain Python function of arrays and floats written with numpy.
    *args : array_like or float
        Example arguments; only their shapes are used.
    names : list of str, optional
        Names of the inputs (default: ``fn``'s parameter names).

    Returns
    -------
    Graph
        Its outputs are ``fn``'s return value (a tuple gives several outputs).

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint.ad import trace
    >>> g = trace(lambda x, y: y * np.log(x) + np.sqrt(y * np.log(x)), 2.0, 3.0)
    >>> print("\\n".join(g.lines()))
    a = log x
    b = y a
    c = sqrt b
    f = b + c
    """
    shapes = [np.shape(a) for a in args]
    return trace_shapes(fn, shapes, names=names)


def _contains_tracer(obj, depth=0):
    if isinstance(obj, Tracer):
        return True
    if depth < 6 and isinstance(obj, (list, tuple)):
        return any(_contains_tracer(o, depth + 1) for o in obj)
    if isinstance(obj, np.ndarray) and obj.dtype == object:
        return any(isinstance(o, Tracer) for o in obj.ravel())
    return False


def _traced_array(obj, *args, **kwargs):
    if _contains_tracer(obj):
        return as_value(obj) if not isinstance(obj, Tracer) else obj
    return _np_array(obj, *args, **kwargs)


def _traced_asarray(obj, *args, **kwargs):
    if _contains_tracer(obj):
        return as_value(obj) if not isinstance(obj, Tracer) else obj
    return _np_asarray(obj, *args, **kwargs)


_REGISTRIES_LOADED = False


def _load_numba_registries():
    """Let numba import its numpy implementations before ``np.array`` is patched, once per process.

    numba registers ``np.array``/``np.asarray`` by the function object when it first imports them
    (lazily, at the first compilation in a process). A compilation that happens while tracing (a
    numba function of ``t`` recorded as an opaque call) would register the patched functions, and
    every later ``np.array`` in any numba function of the process would fail to type."""
    global _REGISTRIES_LOADED
    if not _REGISTRIES_LOADED:
        from numba.core.registry import cpu_target

        cpu_target.typing_context.refresh()
        cpu_target.target_context.refresh()
        _REGISTRIES_LOADED = True


class array_literals:
    """While tracing, ``np.array([...])`` / ``np.asarray`` of traced values return one traced
    array (numpy would otherwise build an object array). Plain arguments go to numpy unchanged."""

    depth = 0

    def __enter__(self):
        if array_literals.depth == 0:
            _load_numba_registries()
            np.array, np.asarray = _traced_array, _traced_asarray
        array_literals.depth += 1

    def __exit__(self, *exc):
        array_literals.depth -= 1
        if array_literals.depth == 0:
            np.array, np.asarray = _np_array, _np_asarray


def trace_shapes(fn, shapes, names=None, opaque=()):
    """Trace ``fn`` on inputs of the given shapes. ``opaque``: names of inputs that are never
    differentiated (``"t"`` of a field or cost); compiled functions of those alone are recorded as
    opaque calls (see :mod:`adjoint.ad._tcall`)."""
    if names is None:
        names = _param_names(fn, len(shapes))
    b = Builder()
    tracers = [b.input(tuple(s), nm) for s, nm in zip(shapes, names)]
    with array_literals(), traced_calls(b, tracers, names, opaque):
        try:
            out = fn(*tracers)
        except ValueError as exc:
            if "setting an array element with a sequence" not in str(exc):
                raise
            # numpy's words for `buf[i] = traced value` into a float array: say what to write instead
            raise TraceError(
                f"{getattr(fn, '__name__', 'the function')}: assigning a traced value into a numpy array "
                "(`y = np.zeros(n); y[i] = ...`) is not supported while tracing; build the array from "
                "its entries instead (`np.array([e0, e1, ...])`, np.stack, np.concatenate or np.where), "
                "or pass a hand-written numba function"
            ) from None
        outs = list(out) if isinstance(out, tuple) else [out]
        return b.graph([as_value(o) for o in outs])


class traced_calls:
    """While tracing: a numba function called on traced values is recorded as an opaque call when
    it depends on ``opaque`` inputs only, else traced into through its Python source."""

    def __init__(self, builder, tracers, names, opaque):
        from ._tcall import opaque_inputs

        self.ctx = opaque_inputs(builder, tracers, names, allowed=tuple(opaque)) if opaque else None
        self.patched = False

    def __enter__(self):
        if self.ctx is None:
            return self
        self.ctx.__enter__()
        from numba.core.dispatcher import Dispatcher

        if "__call__" not in Dispatcher.__dict__:

            def call(self_, *args, **kwargs):
                if not kwargs and any(isinstance(a, Tracer) for a in args):
                    from ._api import _rebind
                    from ._tcall import try_tcall

                    got = try_tcall(self_, args)
                    if got is not None:
                        return got
                    return _rebind(self_)(*args)
                return super(Dispatcher, self_).__call__(*args, **kwargs)

            Dispatcher.__call__ = call
            self.patched = True
        return self

    def __exit__(self, *exc):
        if self.ctx is None:
            return
        if self.patched:
            from numba.core.dispatcher import Dispatcher

            del Dispatcher.__call__
        self.ctx.__exit__(*exc)


def _param_names(fn, n):
    try:
        ps = [
            p.name
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        ps = []
    if len(ps) < n:
        ps = ps + [f"x{i}" for i in range(len(ps), n)]
    return ps[:n]
