"""User-facing tracing AD: grad, value_and_grad, jvp, vjp, hvp, trace_dynamics, and the compiled
vector fields and costs that ``adjoint.vector_field`` and ``adjoint.cost`` wrap (:func:`compile_field`,
:func:`compile_cost`). Nothing here imports the ODE core."""

from __future__ import annotations

import math
import types
import weakref
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ._codegen import emit_lines, kernel_source, load_module, module_source
from ._graph import Graph
from ._tracer import Builder, TraceError, Tracer, as_value
from ._tracing import array_literals, trace_shapes
from ._transforms import bind_inputs, jvp_graph, replay, select_outputs, vjp_graph

__all__ = [
    "compile_field",
    "compile_cost",
    "CompiledField",
    "CompiledCost",
    "grad",
    "value_and_grad",
    "jvp",
    "vjp",
    "hvp",
    "hessian_vector_product",
    "trace_dynamics",
    "trace_cost",
    "compile_graph",
    "TracedDynamics",
    "TracedCost",
    "CompiledGraph",
]


# -- compiled graphs -----------------------------------------------------------------------------


class CompiledGraph:
    """A graph compiled to a numba kernel ``k(in_0, ..., in_{n-1}, out_0, ..., out_{m-1})`` on flat
    float64 arrays; calling it converts inputs, allocates outputs and reshapes them."""

    def __init__(self, graph: Graph, small=None):
        self.graph = graph
        nin, nout = len(graph.inputs), len(graph.outputs)
        ins = [f"a{k}" for k in range(nin)]
        outs = [f"o{k}" for k in range(nout)]
        src, consts = kernel_source(graph, "kernel", ins, ["array"] * nin, outs, small=small)
        self.source = module_source([src], consts)
        self.kernel = load_module(self.source).kernel
        self._in_sizes = [graph.nodes[i].size for i in graph.inputs]
        self._out_shapes = graph.output_shapes

    def __call__(self, *args):
        flat = []
        for a, n in zip(args, self._in_sizes):
            arr = np.ascontiguousarray(np.asarray(a, dtype=np.float64)).reshape(-1)
            if arr.size != n:
                raise ValueError(f"expected an input with {n} elements; got {arr.size}")
            flat.append(arr)
        outs = [np.empty(int(np.prod(s, dtype=np.int64))) for s in self._out_shapes]
        self.kernel(*flat, *outs)
        return [o.reshape(s) if s else float(o[0]) for o, s in zip(outs, self._out_shapes)]


def compile_graph(graph: Graph, small=None) -> CompiledGraph:
    """Compile any graph (cached on disk by its generated source). ``small``: nodes with at most
    this many elements are scalarised (default: all of them for small graphs, else 16)."""
    return CompiledGraph(graph, small=small)


# -- function transformations ----------------------------------------------------------------------

_CACHE: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _cache_for(fn):
    try:
        return _CACHE.setdefault(fn, {})
    except TypeError:
        return {}


def _shape_of(a, where="argument"):
    if isinstance(a, Tracer):
        return a.shape
    if isinstance(a, (str, bytes)):
        raise TypeError(f"{where} must be a float or an array of floats; got the string {a!r}")
    arr = np.asarray(a)
    if arr.dtype.kind not in "biufcO":
        raise TypeError(f"{where} must be a float or an array of floats; got an array of dtype {arr.dtype}")
    if arr.dtype == object:
        return as_value(arr).shape if not isinstance(as_value(arr), np.ndarray) else arr.shape
    return arr.shape


def _is_traced(args):
    return any(isinstance(a, Tracer) or (isinstance(a, np.ndarray) and a.dtype == object) for a in args)


def _normalize_argnums(argnums, nargs):
    single = isinstance(argnums, (int, np.integer))
    ok = single or (
        isinstance(argnums, (tuple, list))
        and all(isinstance(a, (int, np.integer)) and not isinstance(a, bool) for a in argnums)
    )
    if not ok or isinstance(argnums, bool):
        raise TypeError(f"`argnums` must be an int or a tuple of ints (positions of arguments); got {argnums!r}")
    nums = [int(argnums)] if single else [int(a) for a in argnums]
    for a in nums:
        if not 0 <= a < nargs:
            raise ValueError(f"`argnums` entry {a} is out of range for a function of {nargs} positional arguments")
    return nums, single


def _graph_of(fn, shapes, cache, kind):
    key = ("graph", kind, tuple(map(tuple, shapes)))
    g = cache.get(key)
    if g is None:
        g = trace_shapes(fn, shapes)
        cache[key] = g
    return g


def _scalar_output(g, what):
    if len(g.outputs) != 1 or g.output_shapes[0] != ():
        raise ValueError(
            f"`{what}` needs a function with one scalar output; this one returns "
            f"shape(s) {g.output_shapes} (use adjoint.vjp for non-scalar outputs)"
        )


def _grad_graph(fn, shapes, nums, cache, with_value):
    key = ("grad_graph", tuple(nums), with_value, tuple(map(tuple, shapes)))
    gg = cache.get(key)
    if gg is None:
        g = _graph_of(fn, shapes, cache, "fwd")
        _scalar_output(g, "grad")
        v = vjp_graph(g, wrt=nums, with_primals=with_value)
        gg = bind_inputs(v, {len(shapes): 1.0})
        cache[key] = gg
    return gg


def _run(graph, args, cache, key):
    """Evaluate ``graph`` on ``args``: inline into the current trace, or compiled."""
    if _is_traced(args):
        b = next(a.builder for a in [as_value(x) for x in args] if isinstance(a, Tracer))
        del b
        outs, _ = replay(graph, [as_value(a) for a in args])
        return outs
    comp = cache.get(key)
    if comp is None:
        comp = CompiledGraph(graph)
        cache[key] = comp
    return comp(*args)


def grad(fn, argnums=0):
    """Gradient of a scalar function by reverse mode, compiled once per input shape.

    Parameters
    ----------
    fn : callable
        ``fn(*args) -> scalar``, plain numpy code.
    argnums : int or tuple of int
        Which positional arguments to differentiate; a tuple returns a tuple of gradients.

    Returns
    -------
    callable
        ``g(*args)``; a gradient has its argument's shape (a float for a scalar argument).

    Examples
    --------
    >>> import numpy as np, adjoint.ad as ad
    >>> f = lambda x, y: y * np.log(x) + np.sqrt(y * np.log(x))
    >>> dfdx, dfdy = ad.grad(f, argnums=(0, 1))(2.0, 3.0)
    >>> round(dfdx, 12), round(dfdy, 12)
    (2.020101259532, 0.933484994993)
    """
    return _make_grad(fn, argnums, with_value=False)


def value_and_grad(fn, argnums=0):
    """Like :func:`grad` but returns ``(value, gradient)`` from one forward and one reverse sweep."""
    return _make_grad(fn, argnums, with_value=True)


def _make_grad(fn, argnums, with_value):
    if not callable(fn):
        raise TypeError(f"`fn` must be a callable returning a scalar; got {fn!r}")
    _normalize_argnums(argnums, 1 << 30)  # the type now; the range once the arguments are known
    cache = _cache_for(fn)

    def g(*args):
        nums, single = _normalize_argnums(argnums, len(args))
        shapes = [_shape_of(a, f"argument {i} of {g.__name__}") for i, a in enumerate(args)]
        gg = _grad_graph(fn, shapes, nums, cache, with_value)
        outs = _run(gg, args, cache, ("grad", tuple(nums), with_value, tuple(map(tuple, shapes))))
        if with_value:
            val, grads = outs[0], outs[1:]
            return val, (grads[0] if single else tuple(grads))
        return outs[0] if single else tuple(outs)

    g.__name__ = f"{'value_and_grad' if with_value else 'grad'}_{getattr(fn, '__name__', 'fn')}"
    g.__doc__ = f"Gradient of {getattr(fn, '__name__', 'fn')} (argnums={argnums})."
    return g


def _as_tuple(x):
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def jvp(fn, primals, tangents):
    """Forward mode: ``(fn(*primals), J tangents)``; one sweep per direction.

    ``primals`` and ``tangents`` are tuples of the same structure. The output and its tangent have
    the structure of ``fn``'s return value (a tuple for several outputs).
    """
    primals, tangents = _as_tuple(primals), _as_tuple(tangents)
    if len(primals) != len(tangents):
        raise ValueError(f"`tangents` must have one entry per primal ({len(primals)}); got {len(tangents)}")
    cache = _cache_for(fn)
    shapes = [_shape_of(a) for a in primals]
    for k, (s, t) in enumerate(zip(shapes, tangents)):
        if _shape_of(t) != tuple(s):
            raise ValueError(f"`tangents[{k}]` must have shape {tuple(s)} like primals[{k}]; got shape {_shape_of(t)}")
    key = ("jvp", tuple(map(tuple, shapes)))
    jg = cache.get(key + ("graph",))
    if jg is None:
        g = _graph_of(fn, shapes, cache, "fwd")
        jg = jvp_graph(g)
        cache[key + ("graph",)] = (jg, len(g.outputs), _returns_tuple(fn, cache, shapes))
    jg, nout, is_tuple = cache[key + ("graph",)]
    outs = _run(jg, list(primals) + list(tangents), cache, key)
    y, dy = outs[:nout], outs[nout:]
    if is_tuple:
        return tuple(y), tuple(dy)
    return y[0], dy[0]


def _returns_tuple(fn, cache, shapes):
    key = ("is_tuple", tuple(map(tuple, shapes)))
    if key not in cache:
        b = Builder()
        out = fn(*[b.input(tuple(s), f"x{i}") for i, s in enumerate(shapes)])
        cache[key] = isinstance(out, tuple)
    return cache[key]


def vjp(fn, *primals):
    """Reverse mode: returns ``(fn(*primals), vjp_fun)`` where ``vjp_fun(cotangent)`` returns the
    tuple of cotangents ``J_k^T cotangent``, one per primal (one sweep for all of them)."""
    cache = _cache_for(fn)
    shapes = [_shape_of(a) for a in primals]
    key = ("vjp", tuple(map(tuple, shapes)))
    if key + ("graph",) not in cache:
        g = _graph_of(fn, shapes, cache, "fwd")
        cache[key + ("graph",)] = (g, vjp_graph(g, with_primals=False), _returns_tuple(fn, cache, shapes))
    g, vg, is_tuple = cache[key + ("graph",)]
    outs = _run(g, list(primals), cache, key + ("fwd",))
    out_shapes = g.output_shapes

    def vjp_fun(cotangent):
        cts = _as_tuple(cotangent) if is_tuple else (cotangent,)
        if len(cts) != len(out_shapes):
            raise ValueError(f"`cotangent` must match the output structure ({len(out_shapes)} arrays); got {len(cts)}")
        for k, (c, s) in enumerate(zip(cts, out_shapes)):
            if _shape_of(c) != tuple(s):
                raise ValueError(f"cotangent {k} must have the output's shape {tuple(s)}; got shape {_shape_of(c)}")
        return tuple(_run(vg, list(primals) + list(cts), cache, key + ("bwd",)))

    return (tuple(outs) if is_tuple else outs[0]), vjp_fun


def hvp(fn, primals, tangents):
    """Hessian-vector product ``H v`` of a scalar function, as forward mode over reverse mode
    (``jvp`` of ``grad``): cost a small multiple of one gradient, no Hessian formed.

    Returns an array shaped like the single primal, or a tuple (one per primal) for several.
    """
    primals, tangents = _as_tuple(primals), _as_tuple(tangents)
    cache = _cache_for(fn)
    shapes = [_shape_of(a) for a in primals]
    nums = list(range(len(primals)))
    key = ("hvp", tuple(map(tuple, shapes)))
    hg = cache.get(key + ("graph",))
    if hg is None:
        gg = _grad_graph(fn, shapes, nums, cache, False)
        jg = jvp_graph(gg)
        hg = select_outputs(jg, list(range(len(nums), 2 * len(nums))))
        cache[key + ("graph",)] = hg
    outs = _run(hg, list(primals) + list(tangents), cache, key)
    return outs[0] if len(outs) == 1 else tuple(outs)


hessian_vector_product = hvp


# -- vector fields and costs -----------------------------------------------------------------------


class TracedDynamics:
    """Traced graphs of a vector field ``u(x, c, p, t)`` and of its VJP, with source emission for
    generated (fused, scalarised) sweeps.

    Attributes
    ----------
    graph : Graph            inputs (x, c, p, t) -> u
    vjp_graph : Graph        inputs (x, c, p, t, z) -> ([d_x u]^T z, [d_c u]^T z, [d_p u]^T z)
    state_dim, control_dim, param_dim : int
    scalar_ops : int         scalar operations of forward + vjp (a size hint for splicing)
    """

    def __init__(self, graph, vjp_graph_, state_dim, control_dim, param_dim, origin=None):
        self.graph = graph
        self.vjp_graph = vjp_graph_
        self.state_dim, self.control_dim, self.param_dim = state_dim, control_dim, param_dim
        self.scalar_ops = graph.num_scalar_ops() + vjp_graph_.num_scalar_ops()
        self._jvp = None
        #: "vector_field" when the compiled vjp is the traced reverse mode of ``graph`` (made by
        #: :func:`compile_field`); None for traced hand-written kernels
        self.origin = origin

    def forward_lines(self, x, c, p, t, out, *, prefix="_t"):
        """Source lines assigning ``u(x, c, p, t)`` to the names ``out``. ``x``, ``c``, ``p`` are
        lists of expression strings (one per element), ``t`` a string."""
        return emit_lines(self.graph, [list(x), list(c), list(p), [t]], [list(out)], prefix)

    def vjp_lines(self, x, c, p, t, z, out_x, out_c, out_p, *, prefix="_t"):
        """Source lines assigning ``[d_x u]^T z``, ``[d_c u]^T z``, ``[d_p u]^T z``."""
        return emit_lines(
            self.vjp_graph, [list(x), list(c), list(p), [t], list(z)], [list(out_x), list(out_c), list(out_p)], prefix
        )

    def jvp_lines(self, x, c, p, t, dx, dc, dp, out, out_dot, *, prefix="_t"):
        """Source lines assigning ``u`` and ``d_x u dx + d_c u dc + d_p u dp`` (forward mode)."""
        if self._jvp is None:
            self._jvp = jvp_graph(self.graph, wrt=[0, 1, 2])
        return emit_lines(
            self._jvp,
            [list(x), list(c), list(p), [t], list(dx), list(dc), list(dp)],
            [list(out), list(out_dot)],
            prefix,
        )

    def __repr__(self):
        return (
            f"TracedDynamics(state_dim={self.state_dim}, control_dim={self.control_dim}, "
            f"param_dim={self.param_dim}, scalar_ops={self.scalar_ops})"
        )


class TracedCost:
    """Traced graphs of a scalar cost ``l(x, c, p, t)`` and of its gradient, with source emission.

    Attributes
    ----------
    graph : Graph         inputs (x, c, p, t) -> l
    grad_graph : Graph    inputs (x, c, p, t) -> (d_x l, d_c l, d_p l)
    """

    def __init__(self, graph, grad_graph_, state_dim, control_dim, param_dim):
        self.graph = graph
        self.grad_graph = grad_graph_
        self.state_dim, self.control_dim, self.param_dim = state_dim, control_dim, param_dim
        self.scalar_ops = graph.num_scalar_ops() + grad_graph_.num_scalar_ops()

    def value_lines(self, x, c, p, t, out_name, *, prefix="_t"):
        return emit_lines(self.graph, [list(x), list(c), list(p), [t]], [[out_name]], prefix)

    def grad_lines(self, x, c, p, t, out_x, out_c, out_p, *, prefix="_t"):
        return emit_lines(
            self.grad_graph, [list(x), list(c), list(p), [t]], [list(out_x), list(out_c), list(out_p)], prefix
        )

    def __repr__(self):
        return (
            f"TracedCost(state_dim={self.state_dim}, control_dim={self.control_dim}, "
            f"param_dim={self.param_dim}, scalar_ops={self.scalar_ops})"
        )


@dataclass(frozen=True)
class CompiledField:
    """A traced vector field and its VJP, compiled (:func:`compile_field`).

    ``f(x, c, p, t, out)`` and ``vjp(x, c, p, t, z, out_x, out_c, out_p)`` are generated numba
    kernels; ``traced`` holds their graphs; ``source`` is the generated module's file (None when it
    was compiled in memory). ``adjoint.vector_field`` wraps them in an ``adjoint.Dynamics``.
    """

    f: Callable
    vjp: Callable
    traced: TracedDynamics
    source: str | None


@dataclass(frozen=True)
class CompiledCost:
    """A traced scalar cost and its gradient, compiled (:func:`compile_cost`); ``adjoint.cost``
    wraps them in an ``adjoint.Cost``."""

    value: Callable
    grad: Callable
    traced: TracedCost
    source: str | None


_XCPT = ["x", "c", "p", "t"]


def _trace_field(fn, n, m, q):
    g = trace_shapes(fn, [(n,), (m,), (q,), ()], names=_XCPT, opaque=("t",))
    if len(g.outputs) != 1:
        raise ValueError(f"`fn` must return one array of shape ({n},); got {len(g.outputs)} outputs")
    s = g.output_shapes[0]
    if s != (n,):
        if int(np.prod(s)) == n and len(s) <= 1:
            b = Builder()
            ins = [b.input(g.nodes[i].shape, nm) for i, nm in zip(g.inputs, g.input_names)]
            outs, _ = replay(g, ins)
            g = b.graph([as_value(outs[0]).reshape((n,)) if isinstance(outs[0], Tracer) else np.reshape(outs[0], (n,))])
        else:
            raise ValueError(f"`fn` must return an array of shape ({n},) (state_dim={n}); got shape {s}")
    return g


def _compile_field_graphs(g, vg, n, m, q) -> CompiledField:
    src_f, c1 = kernel_source(g, "f", _XCPT, ["array", "array", "array", "scalar"], ["out"], prefix="_f")
    src_v, c2 = kernel_source(
        vg,
        "vjp",
        _XCPT + ["z"],
        ["array", "array", "array", "scalar", "array"],
        ["out_x", "out_c", "out_p"],
        prefix="_v",
    )
    mod = load_module(module_source([src_f, src_v], {**c1, **c2}))
    _set_reference(mod.f, g, "out")
    _set_reference(mod.vjp, vg, "out")
    traced = TracedDynamics(g, vg, n, m, q, origin="vector_field")
    return CompiledField(mod.f, mod.vjp, traced, getattr(mod, "__file__", None))


def _set_reference(disp, graph, kind):
    """Attach to a generated kernel ``_adjoint_reference``: the same function evaluated by numpy from
    the graph (``Graph.evaluate``). The argument checks of ``solve_adjoint`` call it instead of the
    kernel, so that a first solve compiles only the kernels its sweep runs."""
    nin = len(graph.inputs)

    def reference(*args):
        with np.errstate(all="ignore"):
            outs = graph.evaluate(*args[:nin])
        if kind == "value":
            return float(outs[0])
        for buf, v in zip(args[nin:], outs):
            buf[...] = np.reshape(v, buf.shape)
        return None

    try:
        disp._adjoint_reference = reference
    except (AttributeError, TypeError):  # pragma: no cover - not a plain dispatcher
        pass


def compile_field(fn, state_dim, control_dim=0, param_dim=0) -> CompiledField:
    """Trace a plain numpy vector field ``fn(x, c, p, t) -> u`` and compile it and its VJP.

    ``adjoint.vector_field`` (which returns an ``adjoint.Dynamics``) is the public entry point.

    Parameters
    ----------
    fn : callable
        ``fn(x, c, p, t)`` with ``x`` of shape ``(state_dim,)``, ``c`` ``(control_dim,)``, ``p``
        ``(param_dim,)`` and a float ``t``; returns an array of shape ``(state_dim,)``.
    state_dim, control_dim, param_dim : int

    Returns
    -------
    CompiledField
    """
    n = _dim("state_dim", state_dim, 1)
    m = _dim("control_dim", control_dim, 0)
    q = _dim("param_dim", param_dim, 0)
    g = _trace_field(fn, n, m, q)
    vg = vjp_graph(g, wrt=[0, 1, 2], with_primals=False)
    return _compile_field_graphs(g, vg, n, m, q)


def compile_vector(fn, state_dim, control_dim=0, param_dim=0) -> CompiledField:
    """Trace a plain numpy vector function ``fn(x, c, p, t) -> array (r,)`` of any length ``r`` (a
    constraint) and compile it and its VJP, with the contract of :func:`compile_field`: ``f(x, c, p,
    t, out)`` writes the r values, ``vjp(x, c, p, t, w, out_x, out_c, out_p)`` the transposed
    Jacobians applied to ``w`` (r,). A scalar result counts as ``r = 1`` (``r`` is
    ``traced.graph.output_shapes[0][0]``).
    """
    n = _dim("state_dim", state_dim, 1)
    m = _dim("control_dim", control_dim, 0)
    q = _dim("param_dim", param_dim, 0)
    g = trace_shapes(fn, [(n,), (m,), (q,), ()], names=_XCPT, opaque=("t",))
    if len(g.outputs) != 1:
        raise ValueError(f"`fn` must return one array; got {len(g.outputs)} outputs")
    s = g.output_shapes[0]
    if len(s) > 1:
        raise ValueError(f"`fn` must return a 1-D array (or a number); got shape {s}")
    r = int(np.prod(s)) if s else 1
    if r < 1:
        raise ValueError("`fn` must return at least one value; got an empty array")
    if s != (r,):
        b = Builder()
        ins = [b.input(g.nodes[i].shape, nm) for i, nm in zip(g.inputs, g.input_names)]
        outs, _ = replay(g, ins)
        g = b.graph([as_value(outs[0]).reshape((r,)) if isinstance(outs[0], Tracer) else np.reshape(outs[0], (r,))])
    vg = vjp_graph(g, wrt=[0, 1, 2], with_primals=False)
    return _compile_field_graphs(g, vg, n, m, q)


def _dim(name, v, lo):
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)) or v < lo:
        raise ValueError(f"`{name}` must be an integer >= {lo}; got {v!r}")
    return int(v)


def compile_cost(fn, state_dim, control_dim=0, param_dim=0) -> CompiledCost:
    """Trace a plain numpy scalar cost ``fn(x, c, p, t) -> float`` and compile it and its gradient.

    ``adjoint.cost`` (which returns an ``adjoint.Cost``) is the public entry point.
    """
    n = _dim("state_dim", state_dim, 1)
    m = _dim("control_dim", control_dim, 0)
    q = _dim("param_dim", param_dim, 0)
    g = trace_shapes(fn, [(n,), (m,), (q,), ()], names=_XCPT, opaque=("t",))
    _scalar_output(g, "cost")
    gg = bind_inputs(vjp_graph(g, wrt=[0, 1, 2], with_primals=False), {4: 1.0})
    src_v, c1 = kernel_source(
        g, "value", _XCPT, ["array", "array", "array", "scalar"], [], returns_scalar=True, prefix="_f"
    )
    src_g, c2 = kernel_source(
        gg, "grad", _XCPT, ["array", "array", "array", "scalar"], ["out_x", "out_c", "out_p"], prefix="_g"
    )
    mod = load_module(module_source([src_v, src_g], {**c1, **c2}))
    _set_reference(mod.value, g, "value")
    _set_reference(mod.grad, gg, "out")
    return CompiledCost(mod.value, mod.grad, TracedCost(g, gg, n, m, q), getattr(mod, "__file__", None))


# -- tracing hand-written out-writing kernels ------------------------------------------------------


def _traced_math(name, npname):
    real = getattr(math, name)
    npf = getattr(np, npname)

    def f(*args):
        if any(isinstance(a, (Tracer, np.ndarray)) for a in args):
            return npf(*args)
        return real(*args)

    f.__name__ = name
    return f


_MATH_MAP = {
    "exp": "exp",
    "log": "log",
    "sqrt": "sqrt",
    "sin": "sin",
    "cos": "cos",
    "tan": "tan",
    "tanh": "tanh",
    "sinh": "sinh",
    "cosh": "cosh",
    "atan": "arctan",
    "atan2": "arctan2",
    "log1p": "log1p",
    "expm1": "expm1",
    "fabs": "abs",
    "pow": "power",
    "hypot": "hypot",
}
_MATH_SHIM = types.SimpleNamespace(**{k: getattr(math, k) for k in dir(math) if not k.startswith("_")})
for _k, _v in _MATH_MAP.items():
    setattr(_MATH_SHIM, _k, _traced_math(_k, _v))
_MATH_FUNCS = {getattr(math, k): getattr(_MATH_SHIM, k) for k in _MATH_MAP}


def _obj(shape, fill):
    return np.full(shape, fill, dtype=object)


class _NumpyShim(types.ModuleType):
    """numpy, except that new arrays are object arrays (so traced values can be stored in them)."""

    # set on the instance below
    zeros: Callable
    empty: Callable
    ones: Callable
    zeros_like: Callable
    empty_like: Callable
    ones_like: Callable

    def __getattr__(self, name):
        return getattr(np, name)


_NP_SHIM = _NumpyShim("numpy_traced")
for _name, _make in {
    "zeros": lambda shape, *a, **k: _obj(shape, 0.0),
    "empty": lambda shape, *a, **k: _obj(shape, 0.0),
    "ones": lambda shape, *a, **k: _obj(shape, 1.0),
    "zeros_like": lambda a, *r, **k: _obj(_shape_of(a), 0.0),
    "empty_like": lambda a, *r, **k: _obj(_shape_of(a), 0.0),
    "ones_like": lambda a, *r, **k: _obj(_shape_of(a), 1.0),
}.items():
    setattr(_NP_SHIM, _name, _make)


def _rebind(fn, depth=0):
    """A copy of the Python function ``fn`` whose globals see the math/numpy shims and whose
    numba-compiled callees are replaced by their (rebound) Python functions."""
    from numba.core.dispatcher import Dispatcher

    if isinstance(fn, Dispatcher):
        fn = fn.py_func
    if not isinstance(fn, types.FunctionType) or depth > 8:
        return fn

    def conv(v):
        if v is math:
            return _MATH_SHIM
        if v is np:
            return _NP_SHIM
        if isinstance(v, Dispatcher):
            return _DispatcherCall(v, _rebind(v, depth + 1))
        if isinstance(v, types.FunctionType) and v is not fn and getattr(v, "__module__", None) == fn.__module__:
            return _rebind(v, depth + 1)
        try:
            return _MATH_FUNCS.get(v, v)
        except TypeError:
            return v

    names = set(fn.__code__.co_names)
    g = dict(fn.__globals__)
    for k in names:
        if k in g:
            g[k] = conv(g[k])
    closure = None
    if fn.__closure__:
        closure = tuple(types.CellType(conv(c.cell_contents)) if _cell_ok(c) else c for c in fn.__closure__)
    new = types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, closure)
    new.__kwdefaults__ = fn.__kwdefaults__
    return new


class _DispatcherCall:
    """A numba function met inside traced code: an opaque call when its traced arguments depend only
    on inputs that are not differentiated (``t``; see :mod:`adjoint.ad._tcall`), else its
    (rebound) Python function is traced into."""

    __slots__ = ("disp", "py")

    def __init__(self, disp, py):
        self.disp, self.py = disp, py

    def __call__(self, *args, **kwargs):
        if not kwargs:
            from ._tcall import try_tcall

            got = try_tcall(self.disp, args)
            if got is not None:
                return got
        return self.py(*args, **kwargs)


def _cell_ok(c):
    try:
        c.cell_contents  # noqa: B018 - raises ValueError for an empty cell
        return True
    except ValueError:
        return False


def _collect(buf, what):
    if any(v is None for v in buf.ravel()):
        raise TraceError(f"the function did not write every entry of `{what}`")
    return as_value(buf) if buf.size else np.zeros(buf.shape)


def _trace_out_writing(py, in_shapes, in_names, out_shapes, returns=False):
    from ._tcall import opaque_inputs

    b = Builder()
    ins = [b.input(s, nm) if nm != "t" else b.input((), "t") for s, nm in zip(in_shapes, in_names)]
    bufs = [_obj(s, None) for s in out_shapes]
    with array_literals(), opaque_inputs(b, ins, in_names, allowed=("t",)):
        ret = _rebind(py)(*ins, *bufs)
    if returns:
        outs = [as_value(ret)]
        if np.shape(outs[0]) != ():
            raise TraceError("value function must return a scalar")
    else:
        outs = [_collect(bf, f"out{k}") for k, bf in enumerate(bufs)]
    return b.graph(outs)


def trace_dynamics(dyn):
    """Trace a hand-written :class:`adjoint.Dynamics` (its out-writing ``f`` and ``vjp``) into a
    :class:`TracedDynamics`, or return ``None`` when they cannot be traced (data-dependent loops or
    branches, unsupported calls). Never raises for that.

    Straight-line code, ``out[i] = ...``, ``out[:] = ...``, ``math.*`` / ``np.*`` calls, calls to
    other numba functions and loops with constant trip counts are all fine.
    """
    tr = getattr(dyn, "traced", None)
    if isinstance(tr, TracedDynamics):
        return tr
    try:
        n, m, q = dyn.state_dim, dyn.control_dim, dyn.param_dim
        fpy = getattr(dyn.f, "py_func", dyn.f)
        vpy = getattr(dyn.vjp, "py_func", dyn.vjp)
        g = _trace_out_writing(fpy, [(n,), (m,), (q,), ()], _XCPT, [(n,)])
        vg = _trace_out_writing(vpy, [(n,), (m,), (q,), (), (n,)], _XCPT + ["z"], [(n,), (m,), (q,)])
        return TracedDynamics(g, vg, n, m, q)
    except Exception:  # noqa: BLE001 - any failure means "cannot trace": the caller falls back
        return None


def trace_cost(cst, state_dim, control_dim=0, param_dim=0):
    """Trace a hand-written :class:`adjoint.Cost` into a :class:`TracedCost`, or ``None``."""
    tr = getattr(cst, "traced", None)
    if isinstance(tr, TracedCost):
        return tr
    try:
        n, m, q = state_dim, control_dim, param_dim
        vpy = getattr(cst.value, "py_func", cst.value)
        gpy = getattr(cst.grad, "py_func", cst.grad)
        g = _trace_out_writing(vpy, [(n,), (m,), (q,), ()], _XCPT, [], returns=True)
        gg = _trace_out_writing(gpy, [(n,), (m,), (q,), ()], _XCPT, [(n,), (m,), (q,)])
        return TracedCost(g, gg, n, m, q)
    except Exception:  # noqa: BLE001
        return None


def half_field(fn, in_dim, out_dim, control_dim=0, param_dim=0, *, name=None):
    """Trace ``fn(w, c, p, t) -> array (out_dim,)`` with ``w`` of shape ``(in_dim,)`` and compile
    the out-writing pair ``f(w, c, p, t, out)``, ``vjp(w, c, p, t, z, out_w, out_c, out_p)``.

    The halves ``u(y)`` and ``v(x)`` of :class:`adjoint.SeparableDynamics` map one block of the
    state to the other, so their input and output sizes may differ.
    """
    ni = _dim("in_dim", in_dim, 1)
    no = _dim("out_dim", out_dim, 1)
    m = _dim("control_dim", control_dim, 0)
    q = _dim("param_dim", param_dim, 0)
    label = name or getattr(fn, "__name__", "field")
    g = trace_shapes(fn, [(ni,), (m,), (q,), ()], names=_XCPT, opaque=("t",))
    if len(g.outputs) != 1 or int(np.prod(g.output_shapes[0])) != no or len(g.output_shapes[0]) > 1:
        raise ValueError(f"`{label}` must return one array of shape ({no},); got output shapes {g.output_shapes}")
    if g.output_shapes[0] != (no,):
        b = Builder()
        ins = [b.input(g.nodes[i].shape, nm) for i, nm in zip(g.inputs, g.input_names)]
        outs, _ = replay(g, ins)
        g = b.graph([as_value(outs[0]).reshape((no,)) if isinstance(outs[0], Tracer) else np.reshape(outs[0], (no,))])
    vg = vjp_graph(g, wrt=[0, 1, 2], with_primals=False)
    src_f, c1 = kernel_source(g, "f", _XCPT, ["array", "array", "array", "scalar"], ["out"], prefix="_f")
    src_v, c2 = kernel_source(
        vg,
        "vjp",
        _XCPT + ["z"],
        ["array", "array", "array", "scalar", "array"],
        ["out_x", "out_c", "out_p"],
        prefix="_v",
    )
    mod = load_module(module_source([src_f, src_v], {**c1, **c2}))
    return mod.f, mod.vjp
