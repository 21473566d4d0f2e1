"""The primitive registry: for each elementary operation, its numpy implementation, shape rule and
scalar code template. Derivative rules (JVP and VJP) are attached by ``_rules``; code emitters live
in ``_codegen``.

Primitives
----------
Elementwise (operands have the output's shape or shape ``()``):
    add sub mul div neg pow pow_const(k) sin cos tan exp log log1p expm1 sqrt tanh sinh cosh
    arctan arctan2 abs sign maximum minimum where lt le gt ge eq ne logical_and logical_or
    logical_not stop_gradient
Reductions (attrs ``axes``): reduce_sum, reduce_max, reduce_min, logsumexp
Linear algebra: dot(ta, tb) -- ``op(a) @ op(b)`` for 1-D and 2-D operands, ``op`` = transpose if set
Structure: assemble(src, elem, shape) -- ``out.flat[i] = args[src[i]].flat[elem[i]]`` (0 where
    ``src[i] < 0``); covers indexing, slicing, reshape, transpose, broadcasting, stack, concatenate
    and array literals. scatter_add(idx, shape) -- ``out.flat[idx[i]] += g.flat[i]``.
Leaves: input(index), const(value)
"""

from __future__ import annotations

import numpy as np

__all__ = ["Primitive", "PRIMITIVES", "ELEMENTWISE", "NONDIFF", "reduce_table", "format_node"]


class Primitive:
    """Registry entry. ``impl(*arrays, **attrs)`` evaluates with numpy; ``jvp``/``vjp`` are set by
    ``_rules``; ``fmt`` is the scalar code template for elementwise primitives."""

    def __init__(self, name, impl, *, fmt=None, show=None, elementwise=False, nargs=None):
        self.name = name
        self.impl = impl
        self.fmt = fmt
        self.show = show
        self.elementwise = elementwise
        self.nargs = nargs
        self.jvp = None
        self.vjp = None

    def __repr__(self):
        return f"Primitive({self.name})"


PRIMITIVES: dict[str, Primitive] = {}
ELEMENTWISE: set[str] = set()
NONDIFF = {"lt", "le", "gt", "ge", "eq", "ne", "logical_and", "logical_or", "logical_not", "sign", "stop_gradient"}


def _reg(name, impl, **kw):
    p = Primitive(name, impl, **kw)
    PRIMITIVES[name] = p
    if kw.get("elementwise"):
        ELEMENTWISE.add(name)
    return p


def _f(x):
    return np.asarray(x, dtype=np.float64) if not np.iscomplexobj(x) else np.asarray(x)


def _cmp(op):
    return lambda a, b: op(np.real(a), np.real(b)).astype(np.float64)


def _sign(a):
    return np.sign(np.real(a)).astype(np.float64)


def _maximum(a, b):
    if np.iscomplexobj(a) or np.iscomplexobj(b):
        return np.where(np.real(a) >= np.real(b), a, b)
    return np.maximum(a, b)


def _minimum(a, b):
    if np.iscomplexobj(a) or np.iscomplexobj(b):
        return np.where(np.real(a) <= np.real(b), a, b)
    return np.minimum(a, b)


def _abs(a):
    if np.iscomplexobj(a):
        return np.where(np.real(a) >= 0, a, -a)
    return np.abs(a)


def _pow_const(a, k):
    if k == 2.0:
        return a * a
    return np.power(a, k)


# name, impl, scalar template, display template. exp and tanh: the branch-free FMA versions of
# adjoint._vecmath (IEEE edge cases, < 2 ulp; loops calling them vectorise, unlike the libm calls),
# imported as _adj_vm by ._tcall.import_lines
_UNARY = [
    ("neg", np.negative, "(-{0})", "-{0}"),
    ("sin", np.sin, "math.sin({0})", "sin {0}"),
    ("cos", np.cos, "math.cos({0})", "cos {0}"),
    ("tan", np.tan, "math.tan({0})", "tan {0}"),
    ("exp", np.exp, "_adj_vm.exp({0})", "exp {0}"),
    ("log", np.log, "math.log({0})", "log {0}"),
    ("log1p", np.log1p, "math.log1p({0})", "log1p {0}"),
    ("expm1", np.expm1, "math.expm1({0})", "expm1 {0}"),
    ("sqrt", np.sqrt, "math.sqrt({0})", "sqrt {0}"),
    ("tanh", np.tanh, "_adj_vm.tanh({0})", "tanh {0}"),
    ("sinh", np.sinh, "math.sinh({0})", "sinh {0}"),
    ("cosh", np.cosh, "math.cosh({0})", "cosh {0}"),
    ("arctan", np.arctan, "math.atan({0})", "arctan {0}"),
    ("abs", _abs, "abs({0})", "|{0}|"),
    ("sign", _sign, "(({0} > 0.0) * 1.0 - ({0} < 0.0) * 1.0)", "sign {0}"),
    ("logical_not", lambda a: (np.real(a) == 0).astype(np.float64), "(({0} == 0.0) * 1.0)", "not {0}"),
    ("stop_gradient", lambda a: a, "{0}", "stop_gradient {0}"),
]
_BINARY = [
    ("add", np.add, "({0} + {1})", "{0} + {1}"),
    ("sub", np.subtract, "({0} - {1})", "{0} - {1}"),
    ("mul", np.multiply, "({0} * {1})", "{0} {1}"),
    ("div", np.divide, "({0} / {1})", "{0} / {1}"),
    ("pow", np.power, "({0} ** {1})", "{0} ** {1}"),
    ("arctan2", np.arctan2, "math.atan2({0}, {1})", "arctan2({0}, {1})"),
    ("maximum", _maximum, "max({0}, {1})", "max({0}, {1})"),
    ("minimum", _minimum, "min({0}, {1})", "min({0}, {1})"),
    ("lt", _cmp(np.less), "(({0} < {1}) * 1.0)", "{0} < {1}"),
    ("le", _cmp(np.less_equal), "(({0} <= {1}) * 1.0)", "{0} <= {1}"),
    ("gt", _cmp(np.greater), "(({0} > {1}) * 1.0)", "{0} > {1}"),
    ("ge", _cmp(np.greater_equal), "(({0} >= {1}) * 1.0)", "{0} >= {1}"),
    ("eq", _cmp(np.equal), "(({0} == {1}) * 1.0)", "{0} == {1}"),
    ("ne", _cmp(np.not_equal), "(({0} != {1}) * 1.0)", "{0} != {1}"),
    (
        "logical_and",
        lambda a, b: ((np.real(a) != 0) & (np.real(b) != 0)).astype(np.float64),
        "((({0} != 0.0) & ({1} != 0.0)) * 1.0)",
        "{0} and {1}",
    ),
    (
        "logical_or",
        lambda a, b: ((np.real(a) != 0) | (np.real(b) != 0)).astype(np.float64),
        "((({0} != 0.0) | ({1} != 0.0)) * 1.0)",
        "{0} or {1}",
    ),
]
for _n, _i, _t, _s in _UNARY:
    _reg(_n, _i, fmt=_t, show=_s, elementwise=True, nargs=1)
for _n, _i, _t, _s in _BINARY:
    _reg(_n, _i, fmt=_t, show=_s, elementwise=True, nargs=2)
_reg(
    "where",
    lambda c, a, b: np.where(np.real(c) != 0, a, b),
    fmt="({1} if {0} != 0.0 else {2})",
    show="where({0}, {1}, {2})",
    elementwise=True,
    nargs=3,
)
_reg("pow_const", _pow_const, fmt=None, show="{0} ** {k}", elementwise=True, nargs=1)


def pow_const_fmt(k: float) -> str:
    """Scalar code for ``a ** k`` with a constant exponent (cheap special cases)."""
    if k == 2.0:
        return "({0} * {0})"
    if k == 1.0:
        return "{0}"
    if k == 0.5:
        return "math.sqrt({0})"
    if k == -1.0:
        return "(1.0 / {0})"
    if k == 3.0:
        return "({0} * {0} * {0})"
    if float(k).is_integer() and abs(k) < 64:
        return "({0} ** " + f"{int(k)})"
    return "({0} ** " + f"{float(k)!r})"


# -- reductions --------------------------------------------------------------------------------


def reduce_table(shape, axes):
    """Index table ``T`` of shape ``(out_size, m)``: output element ``o`` reduces the input's flat
    elements ``T[o, :]`` (in C order along the reduced axes)."""
    shape = tuple(shape)
    idx = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.int64).reshape(shape)
    keep = [a for a in range(len(shape)) if a not in axes]
    moved = np.transpose(idx, keep + list(axes))
    m = int(np.prod([shape[a] for a in axes], dtype=np.int64))
    return moved.reshape(-1, m)


def _reduce_impl(op):
    def impl(a, axes):
        a = np.asarray(a)
        if not axes:
            return a.copy()
        return op(a, axis=tuple(axes))

    return impl


def _lse(a, axes):
    a = np.asarray(a)
    if not axes:
        return a.copy()
    ax = tuple(axes)
    m = np.max(np.real(a), axis=ax, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    s = np.sum(np.exp(a - m), axis=ax, keepdims=True)
    return np.squeeze(m + np.log(s), axis=ax)


def _rmax(a, axes):
    if np.iscomplexobj(a):
        T = reduce_table(np.shape(a), axes)
        flat = np.ravel(a)
        k = np.argmax(np.real(flat)[T], axis=1)
        out_shape = tuple(s for i, s in enumerate(np.shape(a)) if i not in axes)
        return flat[T[np.arange(T.shape[0]), k]].reshape(out_shape)
    return _reduce_impl(np.max)(a, axes)


def _rmin(a, axes):
    if np.iscomplexobj(a):
        return -_rmax(-a, axes)
    return _reduce_impl(np.min)(a, axes)


_reg("reduce_sum", _reduce_impl(np.sum), show="sum{axes} {0}")
_reg("reduce_max", _rmax, show="max{axes} {0}")
_reg("reduce_min", _rmin, show="min{axes} {0}")
_reg("logsumexp", _lse, show="logsumexp{axes} {0}")


# -- linear algebra ----------------------------------------------------------------------------


def _dot(a, b, ta=False, tb=False):
    a = np.asarray(a)
    b = np.asarray(b)
    if ta:
        a = a.T
    if tb:
        b = b.T
    return np.dot(a, b)


_reg("dot", _dot, show="{0} @ {1}")


# -- structure ---------------------------------------------------------------------------------


def _assemble(*args, src, elem, shape):
    dt = np.result_type(np.float64, *[np.asarray(a).dtype for a in args])
    out = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=dt)
    for j, a in enumerate(args):
        sel = src == j
        out[sel] = np.ravel(a)[elem[sel]]
    return out.reshape(shape)


def _scatter_add(g, idx, shape):
    g = np.asarray(g)
    out = np.zeros(int(np.prod(shape, dtype=np.int64)), dtype=np.result_type(np.float64, g.dtype))
    np.add.at(out, idx, np.ravel(g))
    return out.reshape(shape)


_reg("assemble", _assemble, show="assemble")
_reg("scatter_add", _scatter_add, show="scatter_add")
_reg("input", None)
_reg("const", None)


def format_node(node, argnames) -> str:
    """Human-readable right-hand side of a node, lecture style (``log x``, ``y a``, ``b + c``)."""
    p = PRIMITIVES[node.prim]
    a = node.attrs
    if node.prim == "pow_const":
        k = a["k"]
        ks = str(int(k)) if float(k).is_integer() else repr(k)
        return f"{argnames[0]} ** {ks}"
    if node.prim in ("reduce_sum", "reduce_max", "reduce_min", "logsumexp"):
        base = {"reduce_sum": "sum", "reduce_max": "max", "reduce_min": "min"}.get(node.prim, node.prim)
        return f"{base} {argnames[0]}"
    if node.prim == "dot":
        l = argnames[0] + ("^T" if a.get("ta") else "")
        r = argnames[1] + ("^T" if a.get("tb") else "")
        return f"{l} @ {r}"
    if node.prim == "assemble":
        if len(argnames) == 1:
            return f"{argnames[0]}[...] -> shape {list(node.shape)}"
        return "[" + ", ".join(argnames) + "]"
    if node.prim == "tcall":
        from ._tcall import tcall_show

        return tcall_show(a, argnames)
    if node.prim == "scatter_add":
        return f"scatter_add({argnames[0]}) -> shape {list(node.shape)}"
    if p.show:
        return p.show.format(*argnames)
    return f"{node.prim}({', '.join(argnames)})"
