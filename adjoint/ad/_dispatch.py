"""numpy functions and ufuncs on traced arrays: the tables through which ``Tracer.__array_ufunc__``
(``UFUNCS``, by ufunc name) and ``Tracer.__array_function__`` (``HANDLED``, by numpy function)
dispatch, and the functions they hold (numpy-compatible signatures)."""

from __future__ import annotations

import numpy as np

from ._tracer import (
    TraceError,
    _reduce,
    _shape,
    as_value,
    bind,
    dot,
    matmul,
    mean,
    power,
    reshape,
    structural,
)

__all__ = ["UFUNCS", "HANDLED", "logsumexp"]


def outer(a, b):
    a, b = as_value(a), as_value(b)
    a = reshape(a, (int(np.prod(_shape(a))), 1))
    b = reshape(b, (1, int(np.prod(_shape(b)))))
    return bind("dot", a, b)


def _sum(x, axis=None, dtype=None, out=None, keepdims=False, **kw):
    if out is not None:
        raise TraceError("`np.sum(..., out=...)` is not supported during tracing")
    return _reduce("reduce_sum", x, axis, keepdims)


def logsumexp(x, axis=None, keepdims=False):
    """Numerically stable ``log(sum(exp(x), axis))`` on traced or plain arrays.

    Its derivative is the softmax ``exp(x - logsumexp(x))``.
    """
    return _reduce("logsumexp", x, axis, keepdims)


def where(cond, a=None, b=None):
    if a is None or b is None:
        raise TraceError("np.where(cond) (one argument) returns data-dependent indices; use np.where(cond, a, b)")
    return bind("where", cond, a, b)


def _structural_np(npfn):
    def f(*args, **kwargs):
        return structural(lambda *c: npfn(*c, **kwargs), *args)

    f.__name__ = npfn.__name__
    return f


def _seq_structural(npfn):
    def f(arrays, *args, **kwargs):
        arrays = list(arrays)
        return structural(lambda *c: npfn(list(c), *args, **kwargs), *arrays)

    f.__name__ = npfn.__name__
    return f


def _clip(a, a_min=None, a_max=None, **kw):
    if a_min is None:
        a_min = kw.pop("min", None)
    if a_max is None:
        a_max = kw.pop("max", None)
    r = a
    if a_min is not None:
        r = bind("maximum", r, a_min)
    if a_max is not None:
        r = bind("minimum", r, a_max)
    return r


def _norm(x, ord=None, axis=None, keepdims=False):
    if ord not in (None, 2, "fro"):
        raise TraceError(
            f"np.linalg.norm(ord={ord!r}) is not supported on traced arrays; only the 2-norm / Frobenius norm"
        )
    return bind("sqrt", _reduce("reduce_sum", bind("mul", x, x), axis, keepdims))


def _inner(a, b):
    a, b = as_value(a), as_value(b)
    if len(_shape(a)) <= 1 and len(_shape(b)) <= 1:
        return dot(a, b)
    raise TraceError("np.inner on traced arrays supports vectors only; use @")


def _hypot(a, b):
    return bind("sqrt", bind("add", bind("mul", a, a), bind("mul", b, b)))


def _logaddexp(a, b):
    s = np.broadcast_shapes(_shape(as_value(a)), _shape(as_value(b)))
    st = structural(lambda u, v: np.stack([np.broadcast_to(u, s), np.broadcast_to(v, s)]), a, b)
    return logsumexp(st, axis=0)


UFUNCS = {
    "add": lambda a, b: bind("add", a, b),
    "subtract": lambda a, b: bind("sub", a, b),
    "multiply": lambda a, b: bind("mul", a, b),
    "divide": lambda a, b: bind("div", a, b),
    "true_divide": lambda a, b: bind("div", a, b),
    "power": power,
    "float_power": power,
    "negative": lambda a: bind("neg", a),
    "positive": lambda a: as_value(a),
    "square": lambda a: bind("pow_const", a, k=2.0),
    "reciprocal": lambda a: bind("div", 1.0, a),
    "absolute": lambda a: bind("abs", a),
    "fabs": lambda a: bind("abs", a),
    "sign": lambda a: bind("sign", a),
    "maximum": lambda a, b: bind("maximum", a, b),
    "minimum": lambda a, b: bind("minimum", a, b),
    "fmax": lambda a, b: bind("maximum", a, b),
    "fmin": lambda a, b: bind("minimum", a, b),
    "arctan2": lambda a, b: bind("arctan2", a, b),
    "hypot": _hypot,
    "logaddexp": _logaddexp,
    "matmul": matmul,
    "less": lambda a, b: bind("lt", a, b),
    "less_equal": lambda a, b: bind("le", a, b),
    "greater": lambda a, b: bind("gt", a, b),
    "greater_equal": lambda a, b: bind("ge", a, b),
    "equal": lambda a, b: bind("eq", a, b),
    "not_equal": lambda a, b: bind("ne", a, b),
    "logical_and": lambda a, b: bind("logical_and", a, b),
    "logical_or": lambda a, b: bind("logical_or", a, b),
    "logical_not": lambda a: bind("logical_not", a),
    "log2": lambda a: bind("div", bind("log", a), float(np.log(2.0))),
    "log10": lambda a: bind("div", bind("log", a), float(np.log(10.0))),
    "exp2": lambda a: bind("exp", bind("mul", a, float(np.log(2.0)))),
}
for _u in ("sin", "cos", "tan", "exp", "log", "log1p", "expm1", "sqrt", "tanh", "sinh", "cosh", "arctan"):
    UFUNCS[_u] = (lambda name: lambda a: bind(name, a))(_u)


HANDLED = {
    np.sum: _sum,
    np.mean: mean,
    np.dot: dot,
    np.vdot: lambda a, b: dot(reshape(a, (-1,)), reshape(b, (-1,))),
    np.inner: _inner,
    np.outer: outer,
    np.where: where,
    np.clip: _clip,
    np.max: lambda x, axis=None, keepdims=False, **k: _reduce("reduce_max", x, axis, keepdims),
    np.min: lambda x, axis=None, keepdims=False, **k: _reduce("reduce_min", x, axis, keepdims),
    np.amax: lambda x, axis=None, keepdims=False, **k: _reduce("reduce_max", x, axis, keepdims),
    np.amin: lambda x, axis=None, keepdims=False, **k: _reduce("reduce_min", x, axis, keepdims),
    np.linalg.norm: _norm,
    np.zeros_like: lambda a, *r, **k: np.zeros(_shape(a)),
    np.ones_like: lambda a, *r, **k: np.ones(_shape(a)),
    np.full_like: lambda a, v, *r, **k: np.full(_shape(a), float(v)),
    np.shape: lambda a: _shape(a),
    np.size: lambda a, axis=None: int(np.prod(_shape(a))) if axis is None else _shape(a)[axis],
    np.ndim: lambda a: len(_shape(a)),
    np.copy: lambda a, **k: a,
    np.square: lambda a: bind("pow_const", a, k=2.0),
}
for _f in (
    np.reshape,
    np.transpose,
    np.ravel,
    np.expand_dims,
    np.squeeze,
    np.swapaxes,
    np.moveaxis,
    np.flip,
    np.broadcast_to,
    np.diag,
    np.atleast_1d,
    np.atleast_2d,
    np.roll,
    np.tile,
    np.repeat,
    np.diagonal,
    np.triu,
    np.tril,
    np.fliplr,
    np.flipud,
    np.rot90,
    np.take,
    np.pad,
):
    HANDLED[_f] = _structural_np(_f)
for _fs in (np.stack, np.concatenate, np.hstack, np.vstack, np.column_stack, np.block):
    HANDLED[_fs] = _seq_structural(_fs)
