"""Graph-to-graph transformations: replay, forward mode (JVP) and reverse mode (VJP).

Each transformation interprets a graph node by node inside a new trace, so its result is again a
:class:`Graph` that can be transformed again (``jvp_graph(vjp_graph(g))`` gives Hessian-vector
products) and compiled.

Forward mode (the lecture's forward chain rule) carries a tangent beside every value:
``dx_k = sum_{l in parents(k)} [d f_k / d x_l] dx_l``.
Reverse mode (the backward chain rule) first replays the program, then sweeps the nodes in reverse
linear order accumulating ``grad_{x_k} = sum_{m in children(k)} [d f_m / d x_k]^T grad_{x_m}``.
"""

from __future__ import annotations

import numpy as np

from . import _rules  # noqa: F401  (registers the derivative rules)
from ._graph import Graph
from ._primitives import NONDIFF, PRIMITIVES
from ._rules import _ct_dependent
from ._tracer import Builder, Tracer, bind

__all__ = ["replay", "jvp_graph", "vjp_graph", "bind_inputs", "select_outputs"]


def replay(graph: Graph, inputs):
    """Re-run ``graph`` on ``inputs`` (tracers of the current trace and/or constants); returns the
    list of output values and the dict of all node values."""
    vals = {}
    for nid, v in zip(graph.inputs, inputs):
        vals[nid] = v
    for n in graph.nodes:
        if n.id in vals:
            continue
        if n.prim == "const":
            vals[n.id] = n.attrs["value"]
        elif n.prim == "input":
            raise ValueError("replay: missing input value")
        else:
            vals[n.id] = bind(n.prim, *[vals[a] for a in n.args], **n.attrs)
    return [vals[o] for o in graph.outputs], vals


def _wrt(graph, wrt):
    if wrt is None:
        return list(range(len(graph.inputs)))
    if isinstance(wrt, int):
        return [wrt]
    return list(wrt)


def jvp_graph(graph: Graph, wrt=None) -> Graph:
    """Forward mode. Inputs: the primals, then one tangent per input in ``wrt`` (default all).
    Outputs: the primal outputs, then their tangents."""
    wrt = _wrt(graph, wrt)
    b = Builder()
    prim_in = [b.input(graph.nodes[i].shape, nm) for i, nm in zip(graph.inputs, graph.input_names)]
    tan_in = [b.input(graph.nodes[graph.inputs[k]].shape, "d" + graph.input_names[k]) for k in wrt]
    vals, tans = {}, {}
    for k, nid in enumerate(graph.inputs):
        vals[nid] = prim_in[k]
    for j, k in enumerate(wrt):
        tans[graph.inputs[k]] = tan_in[j]
    for n in graph.nodes:
        if n.prim == "input":
            continue
        if n.prim == "const":
            vals[n.id] = n.attrs["value"]
            continue
        args = [vals[a] for a in n.args]
        out = bind(n.prim, *args, **n.attrs)
        vals[n.id] = out
        ts = [tans.get(a) for a in n.args]
        if any(t is not None for t in ts) and isinstance(out, Tracer) and n.prim not in NONDIFF:
            tans[n.id] = PRIMITIVES[n.prim].jvp(args, ts, out, **n.attrs)
    outs = [vals[o] for o in graph.outputs]
    touts: list = [tans.get(o) for o in graph.outputs]
    touts = [np.zeros(graph.nodes[o].shape) if t is None else t for o, t in zip(graph.outputs, touts)]
    return b.graph(outs + touts)


def _accumulate(contribs):
    """Sum cotangent contributions in a fixed order. Contributions that are scatters of disjoint
    pieces (the VJPs of slicing the same array) are merged into one assemble node."""
    contribs = [c for c in contribs if c is not None]
    if not contribs:
        return None
    if len(contribs) == 1:
        return contribs[0]
    pieces = [c for c in contribs if isinstance(c, Tracer) and c.builder.nodes[c.id].prim == "assemble"]
    rest = [c for c in contribs if not (isinstance(c, Tracer) and c.builder.nodes[c.id].prim == "assemble")]
    merged = None
    if len(pieces) > 1:
        b = pieces[0].builder
        cover = np.zeros(pieces[0].size, dtype=bool)
        ok = True
        for p in pieces:
            m = b.nodes[p.id].attrs["src"] >= 0
            if np.any(cover & m):
                ok = False
                break
            cover |= m
        if ok:
            size = pieces[0].size
            src = np.full(size, -1, dtype=np.int64)
            elem = np.zeros(size, dtype=np.int64)
            args = []
            for p in pieces:
                n = b.nodes[p.id]
                for k, a in enumerate(n.args):
                    sel = n.attrs["src"] == k
                    src[sel] = len(args)
                    elem[sel] = n.attrs["elem"][sel]
                    args.append(Tracer(b, a, b.nodes[a].shape))
            merged = bind("assemble", *args, src=src, elem=elem, shape=pieces[0].shape)
            pieces = []
    acc = merged
    for c in pieces + _factor_cotangents(rest):
        acc = c if acc is None else bind("add", acc, c)
    return acc


def _ct_factor(c):
    """``(coefficient, h)`` when the contribution ``c`` is ``coefficient * h`` with ``h`` carrying
    a cotangent and the coefficient primal values only (all of one shape), else None."""
    if not isinstance(c, Tracer) or not _ct_dependent(c):
        return None
    b = c.builder
    n = b.nodes[c.id]
    if n.prim == "mul":
        a0, a1 = (Tracer(b, a, b.nodes[a].shape) for a in n.args)
        d0, d1 = _ct_dependent(a0), _ct_dependent(a1)
        if d0 == d1:
            return None
        q, h = (a1, a0) if d0 else (a0, a1)
        return (q, h) if q.shape == h.shape == c.shape else None
    if n.prim == "neg":
        h = Tracer(b, n.args[0], b.nodes[n.args[0]].shape)
        return (-1.0, h) if h.shape == c.shape else None
    return 1.0, c


def _factor_cotangents(contribs):
    """Contributions ``q_1 * h + q_2 * h + ...`` sharing a cotangent factor ``h`` become one
    ``(q_1 + q_2 + ...) * h`` (at the place of the first), the Jacobian entry times the
    cotangent, as a hand-written adjoint groups it. Same value up to rounding; in a compiled
    backward sweep the sum of primal coefficients leaves the cotangent's critical path (one multiply
    and one add per adjoint component instead of one of each per contribution)."""
    if len(contribs) < 2:
        return contribs
    factors = [_ct_factor(c) for c in contribs]
    groups: dict = {}
    for i, f in enumerate(factors):
        if f is not None:
            groups.setdefault(f[1].id, []).append(i)
    if all(len(g) < 2 for g in groups.values()):
        return contribs
    out = []
    for i, c in enumerate(contribs):
        f = factors[i]
        if f is None or len(groups[f[1].id]) < 2:
            out.append(c)
        elif groups[f[1].id][0] == i:
            coef = None
            for j in groups[f[1].id]:
                q = factors[j][0]
                coef = q if coef is None else bind("add", coef, q)
            out.append(bind("mul", coef, f[1]))
    return out


def vjp_graph(graph: Graph, wrt=None, with_primals=True) -> Graph:
    """Reverse mode. Inputs: the primals, then one cotangent per output. Outputs: the primal
    outputs (if ``with_primals``), then the cotangents of the inputs in ``wrt`` (default all)."""
    wrt = _wrt(graph, wrt)
    b = Builder()
    prim_in = [b.input(graph.nodes[i].shape, nm) for i, nm in zip(graph.inputs, graph.input_names)]
    ct_in = [b.input(graph.nodes[o].shape, f"ct{k}") for k, o in enumerate(graph.outputs)]
    outs, vals = replay(graph, prim_in)
    cts: dict[int, list] = {}
    for k, o in enumerate(graph.outputs):
        cts.setdefault(o, []).append(ct_in[k])
    for n in reversed(graph.nodes):
        if n.prim in ("input", "const") or n.prim in NONDIFF or n.id not in cts:
            continue
        if not isinstance(vals[n.id], Tracer):
            continue
        g = _accumulate(cts.pop(n.id))
        if g is None:
            continue
        args = [vals[a] for a in n.args]
        res = PRIMITIVES[n.prim].vjp(g, args, vals[n.id], **n.attrs)
        if res is None:
            continue
        for a, c in zip(n.args, res):
            if c is not None:
                cts.setdefault(a, []).append(c)
    grads: list = []
    for k in wrt:
        nid = graph.inputs[k]
        g = _accumulate(cts.get(nid, []))
        grads.append(np.zeros(graph.nodes[nid].shape) if g is None else g)
    return b.graph((outs if with_primals else []) + grads)


def bind_inputs(graph: Graph, values: dict) -> Graph:
    """Fix some inputs to constants: ``values`` maps input position -> array. The remaining
    inputs keep their order."""
    b = Builder()
    ins: list = []
    for k, (nid, nm) in enumerate(zip(graph.inputs, graph.input_names)):
        if k in values:
            ins.append(np.asarray(values[k], dtype=np.float64).reshape(graph.nodes[nid].shape))
        else:
            ins.append(b.input(graph.nodes[nid].shape, nm))
    outs, _ = replay(graph, ins)
    return b.graph(outs)


def select_outputs(graph: Graph, idx) -> Graph:
    """Keep only the outputs at positions ``idx`` (and the nodes they need)."""
    return Graph(graph.nodes, graph.inputs, [graph.outputs[i] for i in idx], graph.input_names).pruned()
