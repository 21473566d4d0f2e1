"""The tracer: runs a plain numpy function on symbolic arrays and records a :class:`Graph`.

A :class:`Tracer` stands for a float64 array of known shape. Arithmetic, numpy ufuncs and the
numpy functions listed in ``HANDLED`` on tracers create graph nodes through :func:`bind`, which
folds constants, simplifies trivial operations (``x + 0``, ``x * 1``), inserts explicit
broadcasting and hash-conses identical nodes (common-subexpression elimination). Python floats and
numpy arrays met on the way are captured as constants.

Anything whose result would depend on a traced value at trace time -- ``if x > 0:``, ``float(x)``,
``math.exp(x)``, indexing by a traced value -- raises :class:`TraceError` with a message naming
the operation and what to use instead.

The numpy functions and ufuncs that tracers dispatch through are in :mod:`adjoint.ad._dispatch`;
running a function under tracing (:func:`~adjoint.ad._tracing.trace`) in :mod:`adjoint.ad._tracing`.
"""

from __future__ import annotations

import numpy as np

from ._graph import Graph, Node, attrs_key
from ._primitives import ELEMENTWISE, PRIMITIVES

__all__ = ["TraceError", "Tracer", "Builder", "bind", "as_value", "structural"]


class TraceError(TypeError):
    """An operation cannot be traced (unsupported, or data-dependent control flow)."""


_CONTROL_FLOW = (
    "data-dependent Python control flow: the truth value of a traced array is unknown at trace "
    "time (`if`/`while` on a traced value, `and`/`or`, Python `max()`/`min()`/`sorted()`). "
    "Use np.where(cond, a, b), np.maximum / np.minimum or np.abs instead"
)
_TO_FLOAT = (
    "a traced value cannot be converted to a Python {what} (by `{what}()`, `math.*` functions or "
    "assignment into a float numpy array). Use numpy functions on the array (np.exp, np.sqrt...) "
    "and build arrays with np.array([...]), np.stack or np.concatenate"
)


_MIXED_TRACES = (
    "a traced value from another trace was mixed into this one (values captured from an enclosing "
    "trace cannot be used inside adjoint.grad/jvp/vjp of a nested function: pass them as arguments)"
)


class Builder:
    """Records nodes; identical nodes are created once (hash-consing)."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.cse: dict = {}
        self.inputs: list[int] = []
        self.names: list[str] = []

    def node(self, prim, args, attrs, shape) -> "Tracer":
        key = (prim, tuple(args), attrs_key(attrs), tuple(shape))
        nid = self.cse.get(key)
        if nid is None:
            nid = len(self.nodes)
            self.nodes.append(Node(nid, prim, args, attrs, shape))
            self.cse[key] = nid
        return Tracer(self, nid, self.nodes[nid].shape)

    def input(self, shape, name) -> "Tracer":
        nid = len(self.nodes)
        self.nodes.append(Node(nid, "input", (), {"index": len(self.inputs)}, tuple(shape)))
        self.inputs.append(nid)
        self.names.append(name)
        return Tracer(self, nid, tuple(shape))

    def const(self, value) -> int:
        v = np.array(value, dtype=np.float64, copy=True)
        v.setflags(write=False)
        return self.node("const", (), {"value": v}, v.shape).id

    def id_of(self, v) -> int:
        if isinstance(v, Tracer):
            if v.builder is not self:
                raise TraceError(_MIXED_TRACES)
            return v.id
        return self.const(v)

    def graph(self, outputs) -> Graph:
        outs = [self.id_of(o) for o in outputs]
        return Graph(list(self.nodes), self.inputs, outs, self.names).pruned()


def _is_const(v, c=None) -> bool:
    if isinstance(v, Tracer):
        return False
    if c is None:
        return True
    a = np.asarray(v)
    return a.size > 0 and bool(np.all(a == c))


def _shape(v):
    return v.shape if isinstance(v, Tracer) else np.shape(v)


def _zeros(shape):
    return np.zeros(shape)


def bind(prim: str, *args, **attrs):
    """Apply primitive ``prim``: evaluate it when every argument is constant, else record a node."""
    args = tuple(as_value(a) for a in args)
    tr = [a for a in args if isinstance(a, Tracer)]
    if not tr:
        r = np.asarray(PRIMITIVES[prim].impl(*[np.asarray(a) for a in args], **attrs))
        return r if r.dtype.kind == "c" else r.astype(np.float64)
    b = tr[0].builder
    for t in tr[1:]:
        if t.builder is not b:
            raise TraceError(_MIXED_TRACES)
    if prim in ELEMENTWISE:
        return _bind_elementwise(b, prim, args, attrs)
    if prim in ("reduce_sum", "reduce_max", "reduce_min", "logsumexp"):
        (x,) = args
        axes = tuple(sorted(attrs["axes"]))
        if not axes:
            return x
        shape = tuple(s for i, s in enumerate(x.shape) if i not in axes)
        return b.node(prim, (x.id,), {"axes": axes}, shape)
    if prim == "dot":
        a, c = args
        ta, tb = bool(attrs.get("ta", False)), bool(attrs.get("tb", False))
        sa = a.shape[::-1] if (ta and len(a.shape) == 2) else _shape(a)
        sc = _shape(c)[::-1] if (tb and len(_shape(c)) == 2) else _shape(c)
        if len(sa) not in (1, 2) or len(sc) not in (1, 2):
            raise TraceError(
                f"`dot`/`@` on traced arrays supports 1-D and 2-D operands; got shapes "
                f"{tuple(sa)} and {tuple(sc)} (use reshape, or sum of products)"
            )
        k1 = sa[-1]
        k2 = sc[0]
        if k1 != k2:
            raise ValueError(f"`dot`/`@`: shapes {tuple(sa)} and {tuple(sc)} not aligned ({k1} != {k2})")
        shape = tuple(sa[:-1]) + tuple(sc[1:])
        if _is_const(a, 0.0) or _is_const(c, 0.0):
            return _zeros(shape)
        return b.node("dot", (b.id_of(a), b.id_of(c)), {"ta": ta, "tb": tb}, shape)
    if prim == "assemble":
        return _bind_assemble(b, args, attrs["src"], attrs["elem"], tuple(attrs["shape"]))
    if prim == "scatter_add":
        (g,) = args
        return b.node(
            "scatter_add", (g.id,), {"idx": attrs["idx"], "shape": tuple(attrs["shape"])}, tuple(attrs["shape"])
        )
    raise TraceError(f"unknown primitive {prim!r}")


def _bind_elementwise(b, prim, args, attrs):
    shapes = [_shape(a) for a in args]
    try:
        out = np.broadcast_shapes(*shapes)
    except ValueError:
        raise ValueError(
            f"`{prim}`: operands could not be broadcast together with shapes " + " ".join(str(tuple(s)) for s in shapes)
        ) from None
    simp = _simplify(prim, args, attrs, out)
    if simp is not None:
        return simp
    ids = []
    for a, s in zip(args, shapes):
        if isinstance(a, Tracer):
            if s != out and s != ():
                a = structural(lambda c, _o=out: np.broadcast_to(c, _o), a)
            ids.append(a.id)
        else:
            v = np.asarray(a, dtype=np.float64)
            if v.shape != out and v.shape != ():
                if v.size and np.all(v == v.flat[0]):
                    v = v.flat[0]
                else:
                    v = np.broadcast_to(v, out)
            ids.append(b.const(v))
    return b.node(prim, ids, attrs, out)


def _simplify(prim, args, attrs, out):
    """Algebraic shortcuts that keep graphs small (symbolic zeros from the transforms)."""

    def same(t):
        return isinstance(t, Tracer) and t.shape == out

    if prim == "add":
        x, y = args
        if _is_const(y, 0.0) and same(x):
            return x
        if _is_const(x, 0.0) and same(y):
            return y
    elif prim == "sub":
        x, y = args
        if _is_const(y, 0.0) and same(x):
            return x
        if _is_const(x, 0.0) and same(y):
            return bind("neg", y)
    elif prim == "mul":
        x, y = args
        for u, v in ((x, y), (y, x)):
            if _is_const(v, 1.0) and same(u):
                return u
            if _is_const(v, -1.0) and same(u):
                return bind("neg", u)
            if _is_const(v, 0.0):
                return _zeros(out)
    elif prim == "div":
        x, y = args
        if _is_const(y, 1.0) and same(x):
            return x
        if _is_const(x, 0.0):
            return _zeros(out)
    elif prim == "neg":
        (x,) = args
        n = x.builder.nodes[x.id]
        if n.prim == "neg":
            return Tracer(x.builder, n.args[0], x.shape)
    elif prim == "pow_const":
        (x,) = args
        if attrs["k"] == 1.0:
            return x
        if attrs["k"] == 0.0:
            return np.ones(out)
    elif prim == "where":
        c, x, y = args
        if _is_const(c):
            cv = np.asarray(c)
            if np.all(cv != 0) and same(x):
                return x
            if np.all(cv == 0) and same(y):
                return y
        if isinstance(x, Tracer) and isinstance(y, Tracer) and x.id == y.id and same(x):
            return x
        if _is_const(x, 0.0) and _is_const(y, 0.0):
            return _zeros(out)
    elif prim == "stop_gradient":
        pass
    return None


def _bind_assemble(b, args, src, elem, shape):
    src = np.asarray(src, dtype=np.int64).ravel()
    elem = np.asarray(elem, dtype=np.int64).ravel()
    # Compose with assemble parents and drop duplicate/unused sources, so that chains of
    # indexing, reshape and transpose become one node reading the original array.
    new_args, new_src, new_elem = [], np.full(src.shape, -1, dtype=np.int64), elem.copy()
    key_of = {}

    def slot(v):
        k = ("t", v.id) if isinstance(v, Tracer) else ("c", id(v))
        if k not in key_of:
            key_of[k] = len(new_args)
            new_args.append(v)
        return key_of[k]

    for j, a in enumerate(args):
        sel = np.flatnonzero(src == j)
        if sel.size == 0:
            continue
        if isinstance(a, Tracer) and b.nodes[a.id].prim == "assemble":
            inner = b.nodes[a.id]
            isrc = inner.attrs["src"][elem[sel]]
            ielem = inner.attrs["elem"][elem[sel]]
            for k, pa in enumerate(inner.args):
                sk = sel[isrc == k]
                if sk.size:
                    s = slot(Tracer(b, pa, b.nodes[pa].shape))
                    new_src[sk] = s
                    new_elem[sk] = ielem[isrc == k]
            zero = sel[isrc < 0]
            new_src[zero] = -1
            new_elem[zero] = 0
        elif isinstance(a, Tracer) and b.nodes[a.id].prim == "const":
            vals = b.nodes[a.id].attrs["value"].ravel()[elem[sel]]
            if np.all(vals == 0.0):
                new_src[sel] = -1
                new_elem[sel] = 0
            else:
                new_src[sel] = slot(a)
        elif not isinstance(a, Tracer):
            vals = np.asarray(a, dtype=np.float64).ravel()[elem[sel]]
            if np.all(vals == 0.0):
                new_src[sel] = -1
                new_elem[sel] = 0
            else:
                new_src[sel] = slot(np.asarray(a, dtype=np.float64))
        else:
            new_src[sel] = slot(a)
    new_elem[new_src < 0] = 0
    if not any(isinstance(a, Tracer) for a in new_args):
        vals = [
            np.asarray(a, dtype=np.float64) if not isinstance(a, Tracer) else b.nodes[a.id].attrs["value"]
            for a in new_args
        ]
        return PRIMITIVES["assemble"].impl(*vals, src=new_src, elem=new_elem, shape=shape)
    if (
        len(new_args) == 1
        and isinstance(new_args[0], Tracer)
        and new_args[0].shape == shape
        and np.all(new_src == 0)
        and np.array_equal(new_elem, np.arange(new_elem.size))
    ):
        return new_args[0]
    ids = [b.id_of(a) for a in new_args]
    new_src.setflags(write=False)
    new_elem.setflags(write=False)
    return b.node("assemble", ids, {"src": new_src, "elem": new_elem, "shape": shape}, shape)


def structural(fn, *sources):
    """Apply an element-rearranging numpy function ``fn`` (indexing, reshape, transpose, stack,
    broadcast_to, ...) to traced arrays by applying it to integer codes of their elements."""
    sources = [as_value(s) for s in sources]
    if not any(isinstance(s, Tracer) for s in sources):
        return np.asarray(fn(*[np.asarray(s, dtype=np.float64) for s in sources]))
    sizes = [int(np.prod(_shape(s), dtype=np.int64)) for s in sources]
    M = max(sizes + [1]) + 1
    codes = [
        1 + j * M + np.arange(n, dtype=np.int64).reshape(_shape(s)) for j, (s, n) in enumerate(zip(sources, sizes))
    ]
    r = np.asarray(fn(*codes))
    if r.dtype.kind not in "iu":
        raise TraceError("internal: structural operation did not preserve integer codes")
    flat = r.ravel().astype(np.int64)
    zero = flat <= 0
    src = np.where(zero, -1, (flat - 1) // M)
    elem = np.where(zero, 0, (flat - 1) % M)
    return bind("assemble", *sources, src=src, elem=elem, shape=r.shape)


# numpy's array constructors, which array_literals (adjoint.ad._tracing) replaces while tracing
_np_array, _np_asarray = np.array, np.asarray


def as_value(v):
    """Normalise an operand: tracers stay, object arrays holding tracers become one assembled
    tracer, everything else becomes a float64 constant."""
    if isinstance(v, Tracer):
        return v
    if isinstance(v, np.ndarray) and v.dtype == object or isinstance(v, (list, tuple)):
        arr = _np_asarray(v, dtype=object) if not isinstance(v, np.ndarray) else v
        flat = [as_value(e) for e in arr.ravel()]
        if any(isinstance(e, Tracer) for e in flat):
            if any(isinstance(e, Tracer) and e.shape != () for e in flat):
                raise TraceError(
                    "an array literal mixes traced arrays of different shapes; use np.stack or np.concatenate"
                )
            src = np.arange(len(flat))
            elem = np.zeros(len(flat), dtype=np.int64)
            return bind("assemble", *flat, src=src, elem=elem, shape=arr.shape)
        return np.array([float(np.asarray(e)) for e in flat], dtype=np.float64).reshape(arr.shape)
    if isinstance(v, (bool, np.bool_)):
        return np.float64(v)
    try:
        a = np.asarray(v)
        if a.dtype.kind != "c":
            a = a.astype(np.float64)
    except (TypeError, ValueError):
        raise TraceError(
            f"cannot use a {type(v).__name__} in a traced computation (only float arrays, numbers and traced arrays)"
        ) from None
    return a


def _norm_axes(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)):
        axis = (axis,)
    out = []
    for a in axis:
        a = int(a)
        if not -ndim <= a < ndim:
            raise ValueError(f"axis {a} is out of bounds for a traced array of dimension {ndim}")
        out.append(a % ndim)
    return tuple(sorted(set(out)))


def _reduce(prim, x, axis=None, keepdims=False):
    x = as_value(x)
    shape = _shape(x)
    axes = _norm_axes(axis, len(shape))
    r = bind(prim, x, axes=axes)
    if keepdims:
        ks = tuple(1 if i in axes else s for i, s in enumerate(shape))
        r = reshape(r, ks)
    return r


def reshape(x, *shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return structural(lambda c: np.reshape(c, shape), x)


class Tracer:
    """A symbolic float64 array of fixed shape inside a trace."""

    __slots__ = ("builder", "id", "shape")
    __array_priority__ = 1000

    def __init__(self, builder, id, shape):
        self.builder = builder
        self.id = id
        self.shape = tuple(shape)

    # -- array protocol --------------------------------------------------------------------------
    @property
    def ndim(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def dtype(self):
        return np.dtype(np.float64)

    @property
    def T(self):
        return structural(np.transpose, self)

    def __repr__(self):
        n = self.builder.nodes[self.id]
        return f"Tracer(shape={self.shape}, node={self.id}:{n.prim})"

    def __len__(self):
        if not self.shape:
            raise TypeError("len() of a 0-d traced value")
        return self.shape[0]

    def __iter__(self):
        if not self.shape:
            raise TypeError("iteration over a 0-d traced value")
        return (self[i] for i in range(self.shape[0]))

    def __bool__(self):
        raise TraceError(_CONTROL_FLOW)

    def __float__(self):
        raise TraceError(_TO_FLOAT.format(what="float"))

    def __int__(self):
        raise TraceError(_TO_FLOAT.format(what="int"))

    def __index__(self):
        raise TraceError(
            "a traced value cannot be used as an index or a size (data-dependent "
            "indexing, `range(x)`); use constant indices, or np.where for selection"
        )

    def __complex__(self):
        raise TraceError(_TO_FLOAT.format(what="complex"))

    __hash__ = object.__hash__

    def __getitem__(self, key):
        for k in key if isinstance(key, tuple) else (key,):
            if isinstance(k, Tracer):
                raise TraceError(
                    "indexing by a traced value is data-dependent; use constant "
                    "indices or slices, or np.where(cond, a, b) to select"
                )
            if isinstance(k, np.ndarray) and k.dtype == object:
                raise TraceError("indexing by an array of traced values is not supported")
        return structural(lambda c: c[key], self)

    def __setitem__(self, key, value):
        raise TraceError(
            "traced arrays are immutable: `x[i] = ...` on a traced value is not "
            "supported; build a new array with np.array([...]), np.stack, "
            "np.concatenate or np.where"
        )

    # -- arithmetic ------------------------------------------------------------------------------
    def __add__(self, o):
        return bind("add", self, o)

    def __radd__(self, o):
        return bind("add", o, self)

    def __sub__(self, o):
        return bind("sub", self, o)

    def __rsub__(self, o):
        return bind("sub", o, self)

    def __mul__(self, o):
        return bind("mul", self, o)

    def __rmul__(self, o):
        return bind("mul", o, self)

    def __truediv__(self, o):
        return bind("div", self, o)

    def __rtruediv__(self, o):
        return bind("div", o, self)

    def __pow__(self, o):
        return power(self, o)

    def __rpow__(self, o):
        return power(o, self)

    def __neg__(self):
        return bind("neg", self)

    def __pos__(self):
        return self

    def __abs__(self):
        return bind("abs", self)

    def __matmul__(self, o):
        return matmul(self, o)

    def __rmatmul__(self, o):
        return matmul(o, self)

    def __lt__(self, o):
        return bind("lt", self, o)

    def __le__(self, o):
        return bind("le", self, o)

    def __gt__(self, o):
        return bind("gt", self, o)

    def __ge__(self, o):
        return bind("ge", self, o)

    def __eq__(self, o):
        return bind("eq", self, o)

    def __ne__(self, o):
        return bind("ne", self, o)

    def __and__(self, o):
        return bind("logical_and", self, o)

    def __rand__(self, o):
        return bind("logical_and", o, self)

    def __or__(self, o):
        return bind("logical_or", self, o)

    def __ror__(self, o):
        return bind("logical_or", o, self)

    def __invert__(self):
        return bind("logical_not", self)

    def __floordiv__(self, o):
        raise TraceError(
            "`//` (floor division) has no useful derivative and is not supported on traced values; use `/`"
        )

    __rfloordiv__ = __floordiv__

    def __mod__(self, o):
        raise TraceError("`%` (modulo) is not supported on traced values")

    __rmod__ = __mod__

    # -- methods mirroring ndarray (object arrays call these too) --------------------------------
    def sum(self, axis=None, keepdims=False):
        return _reduce("reduce_sum", self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return mean(self, axis, keepdims=keepdims)

    def max(self, axis=None, keepdims=False):
        return _reduce("reduce_max", self, axis, keepdims)

    def min(self, axis=None, keepdims=False):
        return _reduce("reduce_min", self, axis, keepdims)

    def dot(self, o):
        return dot(self, o)

    def reshape(self, *shape):
        return reshape(self, *shape)

    def ravel(self):
        return reshape(self, (self.size,))

    def flatten(self):
        return reshape(self, (self.size,))

    def copy(self):
        return self

    def astype(self, dtype, *a, **k):
        return self

    def transpose(self, *axes):
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        return structural(lambda c: np.transpose(c, axes or None), self)

    # Called by numpy on object arrays of tracers (np.sin(obj_array) calls x.sin()).
    def sin(self):
        return bind("sin", self)

    def cos(self):
        return bind("cos", self)

    def tan(self):
        return bind("tan", self)

    def exp(self):
        return bind("exp", self)

    def log(self):
        return bind("log", self)

    def log1p(self):
        return bind("log1p", self)

    def expm1(self):
        return bind("expm1", self)

    def sqrt(self):
        return bind("sqrt", self)

    def tanh(self):
        return bind("tanh", self)

    def sinh(self):
        return bind("sinh", self)

    def cosh(self):
        return bind("cosh", self)

    def arctan(self):
        return bind("arctan", self)

    def arctan2(self, o):
        return bind("arctan2", self, o)

    def conjugate(self):
        return self

    # -- numpy dispatch ----------------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        from ._dispatch import UFUNCS

        name = ufunc.__name__
        if method != "__call__":
            hint = " (use np.sum / np.max / np.cumsum-free code)" if method == "reduce" else ""
            raise TraceError(f"`np.{name}.{method}` is not supported on traced arrays{hint}")
        if kwargs.get("out") is not None:
            raise TraceError(
                f"`np.{name}(..., out=...)` cannot write into a numpy array during tracing; use the returned value"
            )
        fn = UFUNCS.get(name)
        if fn is None:
            raise TraceError(
                f"`np.{name}` is not supported on traced arrays (no derivative rule). Supported "
                f"ufuncs: {', '.join(sorted(UFUNCS))}. Express it with these, or hand-write the "
                "vector field and its vjp"
            )
        return fn(*inputs)

    def __array_function__(self, func, types, args, kwargs):
        from ._dispatch import HANDLED

        fn = HANDLED.get(func)
        if fn is None:
            name = getattr(func, "__module__", "numpy").replace("numpy", "np") + "." + func.__name__
            raise TraceError(
                f"`{name}` is not supported on traced arrays. Supported numpy functions: "
                f"{', '.join(sorted(f.__name__ for f in HANDLED))}; for a max use np.maximum, for "
                "a smooth max adjoint.ad.logsumexp"
            )
        return fn(*args, **kwargs)


# -- numpy functions called by Tracer's operators and methods (the others: adjoint.ad._dispatch) --


def power(a, b):
    a, b = as_value(a), as_value(b)
    if not isinstance(b, Tracer) and np.ndim(b) == 0:
        k = float(b)
        if k == 0.5:
            return bind("sqrt", a)
        return bind("pow_const", a, k=k)
    return bind("pow", a, b)


def matmul(a, b):
    a, b = as_value(a), as_value(b)
    if len(_shape(a)) == 0 or len(_shape(b)) == 0:
        raise ValueError("`@`/matmul: operands must be at least 1-D (use * for scalars)")
    return bind("dot", a, b)


def dot(a, b):
    a, b = as_value(a), as_value(b)
    if len(_shape(a)) == 0 or len(_shape(b)) == 0:
        return bind("mul", a, b)
    return bind("dot", a, b)


def mean(x, axis=None, keepdims=False, **kw):
    x = as_value(x)
    axes = _norm_axes(axis, len(_shape(x)))
    n = int(np.prod([_shape(x)[a] for a in axes], dtype=np.int64))
    return bind("div", _reduce("reduce_sum", x, axis, keepdims), float(n))
