"""Derivative rules: a JVP (forward) and a VJP (reverse) rule per primitive.

Rules are written with traced operations (``bind``), so the derivative of a graph is again a graph
and the transformations compose to any order.

``jvp(primals, tangents, out, **attrs) -> tangent | None``: ``tangents[i]`` is ``None`` for a zero
tangent; returning ``None`` means a zero output tangent.
``vjp(g, primals, out, **attrs) -> list of cotangents | None``, one per primal.

Convention at kinks (documented in docs/ad.md): ``abs'(0) = 0``; ``maximum``/``minimum`` and the
``max``/``min`` reductions split the derivative equally between tied arguments (an element of the
Clarke subdifferential); ``where``'s condition and the comparisons have zero derivative.
"""

from __future__ import annotations

import numpy as np

from ._primitives import NONDIFF, PRIMITIVES
from ._tracer import Tracer, bind, structural

__all__ = ["unbroadcast", "broadcast_back"]


def _shape(v):
    return v.shape if isinstance(v, Tracer) else np.shape(v)


def _to_shape(t, shape):
    if t is None or _shape(t) == tuple(shape):
        return t
    return structural(lambda c: np.broadcast_to(c, shape), t)


def unbroadcast(ct, shape):
    """Sum a cotangent of the output's shape down to an operand's shape (``()`` or the same)."""
    if ct is None:
        return None
    shape = tuple(shape)
    cs = _shape(ct)
    if cs == shape:
        return ct
    if shape == ():
        return bind("reduce_sum", ct, axes=tuple(range(len(cs))))
    # general numpy broadcasting (only reached for constants turned into operands)
    nd = len(cs) - len(shape)
    axes = tuple(range(nd)) + tuple(nd + i for i, s in enumerate(shape) if s == 1 and cs[nd + i] != 1)
    r = bind("reduce_sum", ct, axes=axes)
    return structural(lambda c: np.reshape(c, shape), r)


def broadcast_back(g, in_shape, axes):
    """Broadcast a reduction's cotangent back over the reduced ``axes`` of ``in_shape``."""
    in_shape = tuple(in_shape)
    keep = tuple(1 if i in axes else s for i, s in enumerate(in_shape))
    return structural(lambda c: np.broadcast_to(np.reshape(c, keep), in_shape), g)


def _add(a, b):
    if a is None:
        return b
    if b is None:
        return a
    return bind("add", a, b)


def _mul(p, t):
    if t is None or p is None:
        return None
    return bind("mul", p, t)


def _ct_dependent(t) -> bool:
    """Whether the traced value ``t`` depends on a cotangent input (an input named ``ct...``, as
    :func:`adjoint.ad._transforms.vjp_graph` names them). Node ids are topological, so one pass
    extends a per-builder table up to ``t``."""
    b = t.builder
    dep = b.__dict__.setdefault("_ct_dep", [])
    for n in b.nodes[len(dep) : t.id + 1]:
        if n.prim == "input":
            dep.append(b.names[n.attrs["index"]].startswith("ct"))
        else:
            dep.append(any(dep[a] for a in n.args))
    return dep[t.id]


def _mul_ct(p, g):
    """``p * g`` for a partial derivative ``p`` (primal values only) and a cotangent ``g``, with the
    primal factors multiplied first: ``p * (q * h)`` becomes ``(p * q) * h`` and ``p * (-h)``
    becomes ``(-p) * h`` when ``q`` is primal and ``h`` carries the cotangent.

    Same value up to rounding; the point is the backward recurrence of a compiled adjoint sweep,
    whose every step waits on the cotangent: a chain ``p2 * (x1 * l1)`` puts two multiplications
    on that critical path, ``(p2 * x1) * l1`` one (the primal product runs in its shadow).
    """
    if p is None or g is None:
        return None
    if not isinstance(g, Tracer) or (isinstance(p, Tracer) and _ct_dependent(p)):
        return bind("mul", p, g)
    b = g.builder
    n = b.nodes[g.id]
    if n.prim == "neg" and _ct_dependent(g):
        return bind("mul", bind("neg", p), Tracer(b, n.args[0], b.nodes[n.args[0]].shape))
    if n.prim == "mul":
        a0, a1 = (Tracer(b, a, b.nodes[a].shape) for a in n.args)
        d0, d1 = _ct_dependent(a0), _ct_dependent(a1)
        if d0 != d1:
            q, h = (a1, a0) if d0 else (a0, a1)
            return bind("mul", bind("mul", p, q), h)
    return bind("mul", p, g)


# -- elementwise -------------------------------------------------------------------------------


def _partials(prim, a, y, attrs, need):
    """d y / d a_i for an elementwise primitive, as traced values (None when not needed)."""

    def P(i, f):
        return f() if need[i] else None

    if prim == "add":
        return [1.0, 1.0]
    if prim == "sub":
        return [1.0, -1.0]
    if prim == "mul":
        return [P(0, lambda: a[1]), P(1, lambda: a[0])]
    if prim == "div":
        return [P(0, lambda: bind("div", 1.0, a[1])), P(1, lambda: bind("neg", bind("div", y, a[1])))]
    if prim == "neg":
        return [-1.0]
    if prim == "pow":
        return [
            P(0, lambda: bind("mul", a[1], bind("pow", a[0], bind("sub", a[1], 1.0)))),
            P(1, lambda: bind("mul", y, bind("log", a[0]))),
        ]
    if prim == "pow_const":
        k = attrs["k"]
        return [bind("mul", k, bind("pow_const", a[0], k=k - 1.0))]
    x = a[0]
    if prim == "sin":
        return [bind("cos", x)]
    if prim == "cos":
        return [bind("neg", bind("sin", x))]
    if prim == "tan":
        return [bind("add", 1.0, bind("mul", y, y))]
    if prim == "exp":
        return [y]
    if prim == "log":
        return [bind("div", 1.0, x)]
    if prim == "log1p":
        return [bind("div", 1.0, bind("add", 1.0, x))]
    if prim == "expm1":
        return [bind("add", y, 1.0)]
    if prim == "sqrt":
        return [bind("div", 0.5, y)]
    if prim == "tanh":
        return [bind("sub", 1.0, bind("mul", y, y))]
    if prim == "sinh":
        return [bind("cosh", x)]
    if prim == "cosh":
        return [bind("sinh", x)]
    if prim == "arctan":
        return [bind("div", 1.0, bind("add", 1.0, bind("mul", x, x)))]
    if prim == "abs":
        return [bind("sign", x)]
    if prim == "arctan2":
        r2 = bind("add", bind("mul", a[0], a[0]), bind("mul", a[1], a[1]))
        return [P(0, lambda: bind("div", a[1], r2)), P(1, lambda: bind("neg", bind("div", a[0], r2)))]
    if prim in ("maximum", "minimum"):
        win = bind("gt" if prim == "maximum" else "lt", a[0], a[1])
        w = bind("add", win, bind("mul", 0.5, bind("eq", a[0], a[1])))
        return [w, bind("sub", 1.0, w)]
    raise NotImplementedError(prim)


def _ew_jvp(prim):
    def rule(primals, tangents, out, **attrs):
        if prim in NONDIFF:
            return None
        if prim == "where":
            c, ta, tb = primals[0], tangents[1], tangents[2]
            if ta is None and tb is None:
                return None
            r = bind("where", c, 0.0 if ta is None else ta, 0.0 if tb is None else tb)
            return _to_shape(r, _shape(out))
        need = [t is not None for t in tangents]
        parts = _partials(prim, primals, out, attrs, need)
        acc = None
        for p, t in zip(parts, tangents):
            acc = _add(acc, _mul(p, t))
        return _to_shape(acc, _shape(out))

    return rule


def _ew_vjp(prim):
    def rule(g, primals, out, **attrs):
        if prim in NONDIFF:
            return None
        need = [isinstance(p, Tracer) for p in primals]
        if prim == "where":
            c = primals[0]
            return [
                None,
                unbroadcast(bind("where", c, g, 0.0), _shape(primals[1])) if need[1] else None,
                unbroadcast(bind("where", c, 0.0, g), _shape(primals[2])) if need[2] else None,
            ]
        parts = _partials(prim, primals, out, attrs, need)
        return [unbroadcast(_mul_ct(p, g), _shape(x)) if n else None for p, x, n in zip(parts, primals, need)]

    return rule


for _name, _p in PRIMITIVES.items():
    if _p.elementwise:
        _p.jvp = _ew_jvp(_name)
        _p.vjp = _ew_vjp(_name)


# -- reductions --------------------------------------------------------------------------------


def _sum_jvp(primals, tangents, out, axes):
    t = tangents[0]
    return None if t is None else bind("reduce_sum", t, axes=axes)


def _sum_vjp(g, primals, out, axes):
    return [broadcast_back(g, _shape(primals[0]), axes)]


def _weights(prim, x, y, axes):
    """Derivative weights of max/min (ties split equally) and logsumexp (the softmax)."""
    yb = broadcast_back(y, _shape(x), axes)
    if prim == "logsumexp":
        return bind("exp", bind("sub", x, yb))
    hit = bind("eq", x, yb)
    cnt = broadcast_back(bind("reduce_sum", hit, axes=axes), _shape(x), axes)
    return bind("div", hit, cnt)


def _wred(prim):
    def jvp(primals, tangents, out, axes):
        t = tangents[0]
        if t is None:
            return None
        w = _weights(prim, primals[0], out, axes)
        return bind("reduce_sum", bind("mul", w, t), axes=axes)

    def vjp(g, primals, out, axes):
        w = _weights(prim, primals[0], out, axes)
        return [bind("mul", broadcast_back(g, _shape(primals[0]), axes), w)]

    return jvp, vjp


PRIMITIVES["reduce_sum"].jvp = _sum_jvp
PRIMITIVES["reduce_sum"].vjp = _sum_vjp
for _name in ("reduce_max", "reduce_min", "logsumexp"):
    PRIMITIVES[_name].jvp, PRIMITIVES[_name].vjp = _wred(_name)


# -- dot ---------------------------------------------------------------------------------------


def _dot_jvp(primals, tangents, out, ta, tb):
    a, b = primals
    da, db = tangents
    r = None
    if da is not None:
        r = bind("dot", da, b, ta=ta, tb=tb)
    if db is not None:
        r = _add(r, bind("dot", a, db, ta=ta, tb=tb))
    return r


def _outer(u, v):
    m = int(np.prod(_shape(u)))
    n = int(np.prod(_shape(v)))
    return bind("dot", structural(lambda c: c.reshape(m, 1), u), structural(lambda c: c.reshape(1, n), v))


def _dot_vjp(g, primals, out, ta, tb):
    a, b = primals
    na, nb = len(_shape(a)), len(_shape(b))
    need_a, need_b = isinstance(a, Tracer), isinstance(b, Tracer)
    da = db = None
    if na == 1 and nb == 1:
        da = bind("mul", g, b) if need_a else None
        db = bind("mul", g, a) if need_b else None
    elif na == 2 and nb == 1:  # A' (m,k) @ b (k,) -> (m,)
        if need_a:
            da = _outer(b, g) if ta else _outer(g, b)
        if need_b:
            db = bind("dot", a, g, ta=not ta)
    elif na == 1 and nb == 2:  # a (k,) @ B' (k,n) -> (n,)
        if need_a:
            da = bind("dot", b, g, ta=tb)
        if need_b:
            db = _outer(g, a) if tb else _outer(a, g)
    else:  # A' (m,k) @ B' (k,n) -> (m,n)
        if need_a:
            da = bind("dot", b, g, ta=tb, tb=True) if ta else bind("dot", g, b, tb=not tb)
        if need_b:
            db = bind("dot", g, a, ta=True, tb=ta) if tb else bind("dot", a, g, ta=not ta)
    return [da, db]


PRIMITIVES["dot"].jvp = _dot_jvp
PRIMITIVES["dot"].vjp = _dot_vjp


# -- structure ---------------------------------------------------------------------------------


def _assemble_jvp(primals, tangents, out, src, elem, shape):
    if all(t is None for t in tangents):
        return None
    ts = [np.zeros(_shape(p)) if t is None else t for p, t in zip(primals, tangents)]
    return bind("assemble", *ts, src=src, elem=elem, shape=shape)


def _assemble_vjp(g, primals, out, src, elem, shape):
    cts = []
    for j, p in enumerate(primals):
        if not isinstance(p, Tracer):
            cts.append(None)
            continue
        pos = np.flatnonzero(src == j)
        e = elem[pos]
        pshape = _shape(p)
        psize = int(np.prod(pshape, dtype=np.int64))
        if np.unique(e).size == e.size:
            s2 = np.full(psize, -1, dtype=np.int64)
            e2 = np.zeros(psize, dtype=np.int64)
            s2[e] = 0
            e2[e] = pos
            cts.append(bind("assemble", g, src=s2, elem=e2, shape=pshape))
        else:
            gathered = bind("assemble", g, src=np.zeros(pos.size, dtype=np.int64), elem=pos, shape=(pos.size,))
            cts.append(bind("scatter_add", gathered, idx=e, shape=pshape))
    return cts


def _scatter_jvp(primals, tangents, out, idx, shape):
    t = tangents[0]
    return None if t is None else bind("scatter_add", t, idx=idx, shape=shape)


def _scatter_vjp(g, primals, out, idx, shape):
    gs = _shape(primals[0])
    return [bind("assemble", g, src=np.zeros(idx.size, dtype=np.int64), elem=idx, shape=gs)]


PRIMITIVES["assemble"].jvp = _assemble_jvp
PRIMITIVES["assemble"].vjp = _assemble_vjp
PRIMITIVES["scatter_add"].jvp = _scatter_jvp
PRIMITIVES["scatter_add"].vjp = _scatter_vjp
