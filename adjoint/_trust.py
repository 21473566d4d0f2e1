"""Is the trace of a hand-written numba function the same function?

The scalar backend splices the traced code of the user's numba functions (their Python source run on
symbolic values) into its kernels. Whatever the tracer evaluates without symbols becomes a constant:
a random draw, ``len(str(t))``, a global read once, a file read. Spliced, such a trace is a different
function from the compiled one, and the gradient would be silently wrong.

Before a trace of a hand-written function is used, :func:`trace_mismatch` runs the function's Python
source (``py_func``, the code numba compiles; no compilation here) at two fixed points, the first
twice, and compares it with the traced graphs evaluated at the same points. A function that is not
deterministic, or whose trace does not reproduce it, is not spliced: the kernels call the compiled
function instead, and the reason is reported (``Stats.notes`` and a warning).
"""

from __future__ import annotations

import numpy as np

__all__ = ["TraceMismatchWarning", "trace_mismatch"]


class TraceMismatchWarning(UserWarning):
    """The trace of a hand-written numba function did not reproduce it: the kernels call the compiled
    function instead (correct, a little slower), and ``Stats.notes`` says so."""


_RTOL = 1e-9


def _points(n, m, q):
    """Two fixed, unremarkable points (x, c, p, t): distinct entries, away from 0 and 1."""
    rng = np.random.default_rng(20261205)
    first = (0.3 + 0.1 * np.arange(n), 0.2 + 0.05 * np.arange(m), 0.5 + 0.1 * np.arange(q), 0.37)
    second = (0.5 * rng.normal(size=n), 0.5 * rng.normal(size=m), 0.8 + 0.2 * rng.random(size=q), 1.13)
    return first, second


def _same(a, b) -> bool:
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        return False
    both_nan = np.isnan(a) & np.isnan(b)
    close = np.abs(a - b) <= _RTOL * np.maximum(1.0, np.maximum(np.abs(a), np.abs(b)))
    return bool(np.all(both_nan | close))


def _call_field(py, x, c, p, t, n):
    out = np.zeros(n)
    py(x.copy(), c.copy(), p.copy(), t, out)
    return [out]


def _call_vjp(py, x, c, p, t, z, n, m, q):
    ox, oc, op = np.zeros(n), np.zeros(m), np.zeros(q)
    py(x.copy(), c.copy(), p.copy(), t, z.copy(), ox, oc, op)
    return [ox, oc, op]


def _call_value(py, x, c, p, t):
    return [np.float64(py(x.copy(), c.copy(), p.copy(), t))]


def _call_grad(py, x, c, p, t, n, m, q):
    ox, oc, op = np.zeros(n), np.zeros(m), np.zeros(q)
    py(x.copy(), c.copy(), p.copy(), t, ox, oc, op)
    return [ox, oc, op]


def trace_mismatch(obj, traced, n, m, q) -> str | None:
    """None when ``traced`` reproduces the Python source of the hand-written ``obj`` (a Dynamics or a
    Cost) at the probe points; else why it does not (the caller then calls the compiled functions).

    Traces made from plain functions by :func:`adjoint.vector_field` / :func:`adjoint.cost` are the
    functions themselves (the compiled code is generated from the trace) and are not checked.
    """
    if traced is None or getattr(obj, "traced", None) is not None:
        return None
    is_field = hasattr(obj, "vjp")
    name = getattr(obj, "name", "the function")
    if is_field:
        pairs = [
            ("f", obj.f, traced.graph, lambda py, x, c, p, t, z: _call_field(py, x, c, p, t, n)),
            ("vjp", obj.vjp, traced.vjp_graph, lambda py, x, c, p, t, z: _call_vjp(py, x, c, p, t, z, n, m, q)),
        ]
    else:
        pairs = [
            ("value", obj.value, traced.graph, lambda py, x, c, p, t, z: _call_value(py, x, c, p, t)),
            ("grad", obj.grad, traced.grad_graph, lambda py, x, c, p, t, z: _call_grad(py, x, c, p, t, n, m, q)),
        ]
    first, second = _points(n, m, q)
    for label, fn, graph, call in pairs:
        py = getattr(fn, "py_func", None)
        if py is None:
            continue
        for k, (x, c, p, t) in enumerate((first, second)):
            z = 0.7 - 0.1 * np.arange(n)
            inputs = (x, c, p, t, z) if label == "vjp" else (x, c, p, t)
            try:
                got = call(py, x, c, p, t, z)
                if k == 0 and not all(_same(a, b) for a, b in zip(got, call(py, x, c, p, t, z))):
                    return f"{name}.{label} is not deterministic (two calls at one point differ: random numbers?)"
                want = graph.evaluate(*inputs)
            except Exception as exc:  # noqa: BLE001 - cannot compare: do not trust the trace
                return f"{name}.{label} could not be compared with its trace ({type(exc).__name__}: {exc})"
            if not all(_same(a, b) for a, b in zip(got, want)):
                return (
                    f"the trace of {name}.{label} differs from the function (a value the tracer froze into a "
                    "constant: string work, a global, a file or a clock read?)"
                )
    return None
