"""Store-all gradient kernels with a tape of forward intermediates (traced fields too big to scalarise).

:mod:`adjoint._fused` splices small traced vector fields into one kernel as straight-line scalar
code. Larger fields (a neural ODE ``W2 tanh(W1 x + b1) + b2`` with a hidden layer of 32 or more)
run through the generic kernels of :mod:`adjoint._kernels`, which call the generated ``f`` once per
forward step and the generated ``vjp`` once per backward step; that ``vjp`` replays the forward
computation (the matmuls and the ``tanh``) before it can sweep backwards.

This module generates, from the traced graph, one store-all kernel for such fields:

* the joint graph ``(x, c, p, t, z) -> (u, [d_x u]^T z, [d_c u]^T z, [d_p u]^T z)`` is split into
  the nodes that depend only on ``p`` (*invariant*: computed once, before the step loops), the
  primal nodes that vary with the step, and the cotangent nodes (which depend on ``z``);
* the forward loop evaluates ``u`` and writes, per step, the primal intermediates the backward
  sweep needs and that are expensive to recompute (transcendental functions, matrix products,
  reductions) into a tape of shape ``(K, width)``; cheap intermediates (sums, products, slices)
  are recomputed in the backward loop from the stored ones;
* the backward loop evaluates the cotangent nodes with those intermediates read from the tape;
* the emitter writes one loop per buffer node; :func:`adjoint.ad._passes.fuse_loops` (``split``)
  then fuses loops of equal trip count by kind, so that what LLVM can vectorise stays vectorisable:
  the elementwise loops together, the loops calling the vectorisable ``_adj_vm`` functions
  (``tanh``, ``exp``) together, and the reductions (dot products: sequential sums, never
  vectorised without reassociation) together, a loop moving up to the loop it joins past what it
  commutes with; stores with a stride (``grad_p[2 * j] += ...``) move from an elementwise loop into
  the following reduction, where they run in the shadow of its additions; buffers that live inside
  one fused loop become scalar locals. The parameter cotangent is added straight into ``grad_p``
  (``grad_p[i] += tau * <value>``, the same two operations as filling a work array and
  accumulating it) by :func:`adjoint.ad._passes.accumulate_into` when each of its elements is
  written exactly once. For the neural ODE a forward step is one loop for ``W1 x + b1``, one for
  the ``tanh`` (both vectorised) and the dot products with ``W2``; a backward step one vectorised
  loop (the gradients of ``W2`` and ``b1`` and the cotangent of the hidden layer) and the dot
  products with ``W1`` (with the gradient of ``W1``);
* the tape row of step ``k`` is indexed through :func:`_row_index`, ``k`` hidden from LLVM: with a
  row index it can follow, LLVM leaves every backward loop that reads the tape and touches
  ``p`` or ``grad_p`` scalar (see there).

Every value is computed by the same operations in the same order as the generated ``f`` and
``vjp`` (a stored intermediate is bit for bit the value the ``vjp`` would have recomputed), and
the Euler / discrete-map step and adjoint step are rendered from the method's description
(:mod:`adjoint.integrators._steps`, as for the other backends), so the gradient agrees bit for bit
with the generic kernels, hence with every checkpointing schedule.

The tape costs ``K * width * 8`` bytes on top of the trajectory: it is used only when the schedule
resolves to store-all and the tape fits the memory budget (``MemoryBudget``: trajectory plus tape
within the budget; ``StoreAll``: tape within ``DEFAULT_MEMORY_BUDGET``); otherwise the generic
kernels run. ``solve_adjoint(backend="tape")`` asks for it, ``backend="generic"`` turns it off (see :mod:`adjoint._backends`).
"""

from __future__ import annotations

import heapq
import re

from llvmlite import ir as _llir
from numba.core import types as _nbtypes
from numba.extending import intrinsic

from . import _kernels as kern
from .integrators import _steps

__all__ = ["tape_kernels", "tape_plan", "TapePlan"]

_GEN_VERSION = "4"
#: primitives whose outputs are stored on the tape (when the backward sweep needs them) rather
#: than recomputed: transcendental functions, divisions and powers, contractions and reductions
EXPENSIVE = frozenset(
    (
        "sin",
        "cos",
        "tan",
        "exp",
        "log",
        "log1p",
        "expm1",
        "sqrt",
        "tanh",
        "sinh",
        "cosh",
        "arctan",
        "arctan2",
        "pow",
        "pow_const",
        "div",
        "dot",
        "reduce_sum",
        "reduce_max",
        "reduce_min",
        "logsumexp",
        "scatter_add",
        "tcall",
    )
)
#: loops of more than this many iterations are never fused (None: no limit; see gradient_source)
FUSE_MAX_TRIP = None
MAX_STATE = 64
MAX_CONTROLS = 64


#: the tape row of step k, as the generated kernels compute it (see :func:`_row_index`)
_ROW = "_adj_tp._row_index"


@intrinsic
def _row_index(typingctx, k):
    """``k``, opaque to the optimiser (an empty inline asm: no instruction).

    The generated kernels index the tape rows with it. Indexed by ``k`` itself, a row is an
    induction variable of the step loop, and LLVM hoists the runtime alias checks of an inner loop
    that reads or writes the row and touches an argument array (``p``, ``grad_p``) out of the step
    loop; in the backward sweep the row moves down (``k = K-1, ..., 0``), the hoisted check folds to
    "always overlaps" and the loop vectoriser silently gives up (LLVM 22; before this, none of the
    backward loops of the neural ODE that read the tape vectorised). With the index opaque, each
    inner loop checks its own row, once per step. Changing this function needs a new
    ``_GEN_VERSION`` (numba's cache of a generated module does not see it).
    """
    sig = _nbtypes.int64(_nbtypes.int64)

    def codegen(context, builder, signature, args):
        i64 = _llir.IntType(64)
        return builder.asm(_llir.FunctionType(i64, [i64]), "", "=r,0", [args[0]], side_effect=False)

    return sig, codegen


class TapePlan:
    """How a traced field is split between the forward loop, the tape and the backward loop.

    Attributes
    ----------
    graph : Graph
        The joint graph ``(x, c, p, t, z) -> (u, gx, gc, gp)``.
    invariant, forward, backward : list of int
        Node ids emitted before the loops, in the forward loop, in the backward loop.
    stored : list of (node id, offset, size)
        The tape columns.
    width : int
        Tape floats per step.
    """

    def __init__(self, graph, invariant, forward, backward, stored):
        self.graph = graph
        self.invariant, self.forward, self.backward = invariant, forward, backward
        self.stored = stored
        self.width = sum(s for _, _, s in stored)

    def __repr__(self):
        prims = sorted({self.graph.nodes[i].prim for i, _, _ in self.stored})
        return (
            f"TapePlan(width={self.width} floats per step ({', '.join(prims) or 'nothing'}), "
            f"{len(self.invariant)} invariant / {len(self.forward)} forward / "
            f"{len(self.backward)} backward nodes)"
        )


def tape_plan(td) -> TapePlan:
    """The :class:`TapePlan` of a :class:`adjoint.ad.TracedDynamics` (memoised on it)."""
    got = getattr(td, "_tape_plan", None)
    if got is not None:
        return got
    from .ad._transforms import vjp_graph

    jg = vjp_graph(td.graph, wrt=[0, 1, 2], with_primals=True)
    nodes = jg.nodes
    xi, ci, pi, ti, zi = jg.inputs
    VAR, COT = 1, 2
    mask = {}
    for nd in nodes:
        if nd.prim == "input":
            mask[nd.id] = COT if nd.id == zi else (0 if nd.id == pi else VAR)
        elif nd.prim == "const":
            mask[nd.id] = 0
        else:
            m = 0
            for a in nd.args:
                m |= mask[a]
            mask[nd.id] = m
    u = jg.outputs[0]
    grads = jg.outputs[1:]
    leaf = ("input", "const")
    # the forward set: step-varying ancestors of u
    fwd = set()
    stack = [u]
    while stack:
        v = stack.pop()
        if v in fwd or nodes[v].prim in leaf or mask[v] != VAR:
            continue
        fwd.add(v)
        stack.extend(nodes[v].args)
    # the backward set: the cotangent nodes, plus the primal nodes they need that are recomputed
    cot = [nd.id for nd in nodes if mask[nd.id] & COT and nd.prim not in leaf]
    need: set[int] = set()
    for v in cot:
        need.update(a for a in nodes[v].args if mask[a] == VAR and nodes[a].prim not in leaf)
    need.update(g for g in grads if mask[g] == VAR and nodes[g].prim not in leaf)
    stored, recompute = set(), set()
    todo = [-v for v in need]
    heapq.heapify(todo)
    while todo:
        v = -heapq.heappop(todo)  # highest id first: children are decided before their parents
        if v in stored or v in recompute:
            continue
        if v in fwd and nodes[v].prim in EXPENSIVE:
            stored.add(v)
            continue
        recompute.add(v)
        for a in nodes[v].args:
            if mask[a] == VAR and nodes[a].prim not in leaf and a not in stored and a not in recompute:
                heapq.heappush(todo, -a)
    invariant = [nd.id for nd in nodes if mask[nd.id] == 0 and nd.prim != "input"]
    forward = sorted(fwd)
    backward = sorted(recompute | set(cot))
    cols, off = [], 0
    for v in sorted(stored):
        sz = nodes[v].size
        cols.append((v, off, sz))
        off += sz
    plan = TapePlan(jg, invariant, forward, backward, cols)
    td._tape_plan = plan
    return plan


class _Unsupported(Exception):
    pass


def _emit_node(E, nd):
    from .ad._primitives import PRIMITIVES

    getattr(E, "_e_" + ("elementwise" if PRIMITIVES[nd.prim].elementwise else nd.prim))(nd)


def _write_outputs(E, ids, targets):
    """Copy the values of nodes ``ids`` into ``targets`` (``('s', names)`` or ``('b', array)``)."""
    for o, tgt in zip(ids, targets):
        E.write_output(o, tgt)


_WS_LINE = re.compile(r"^(\w+) = (\w+)ws\[\d+:\d+\]$")


def _hoist(lines, prefix):
    """Split ``lines`` into (workspace views, which do not depend on the step, and the rest)."""
    head, body = [], []
    for ln in lines:
        m = _WS_LINE.match(ln)
        if m is not None and m.group(2) == prefix:
            head.append(ln)
        else:
            body.append(ln)
    return head, body


def _names(prefix, n):
    return [f"{prefix}{i}" for i in range(n)]


def gradient_source(plan: TapePlan, n, m, q, kind, costs, fuse=True):
    """Source of ``gradient(x0, C, p, t0, tau, K, t1, traj, grad_c, grad_p, grad_x0) -> (value, status)``
    and its constant arrays. ``costs``: dict with ``tv, tg, rv, rg`` -> ``module.name`` strings (or
    None when absent)."""
    from .ad._codegen import Emitter, choose_small
    from .ad._passes import accumulate_into, fuse_loops

    jg = plan.graph
    desc = _steps.describe(kind, None, None, None)  # Euler or a discrete map: no tableau
    (gp_acc,) = [st for st in desc.reverse if isinstance(st, _steps.Acc) and st.out == "gp"]
    P = "_j"
    E = Emitter(jg, prefix=P, small=choose_small(jg))
    xi, ci, pi, ti, zi = jg.inputs
    nodes = jg.nodes
    u, gx, gc, gp = jg.outputs
    X, XN, U = _names("x_", n), _names("xn_", n), _names("u_", n)
    Cn = _names("c_", m)
    LAM, Z, VX, VC = _names("l_", n), _names("z_", n), _names("vx_", n), _names("vc_", m)
    c_scalar = True
    # -- invariant nodes (p and constants only), emitted once ---------------------------------------
    if q <= E.small:
        E.rep[pi] = ("s", [f"p[{i}]" for i in range(q)])
    else:
        E.rep[pi] = ("b", "p")
    E.lines = []
    for v in plan.invariant:
        _emit_node(E, nodes[v])
    pre = E.lines
    base_rep, base_mat = dict(E.rep), dict(E._mat)

    def phase(extra_reps, ids, outs, targets, stored_out=None):
        E.rep = dict(base_rep)
        E.rep.update(extra_reps)
        E._mat = dict(base_mat)
        E.lines = []
        if stored_out:
            for v, off, sz in stored_out:
                if not E.is_small(nodes[v]):
                    E.preassigned[v] = f"tape[_row, {off}:{off + sz}]"
        for v in ids:
            if v not in E.rep:
                _emit_node(E, nodes[v])
        if stored_out:
            for v, off, sz in stored_out:
                kind_, val = E.rep[v]
                if kind_ == "b" and val == E.preassigned.get(v):
                    continue
                if kind_ == "s":
                    for i in range(sz):
                        E.emit(f"tape[_row, {off + i}] = {E.get(v, i)}")
                else:
                    iv = E.loopvar("i")
                    E.emit(f"for {iv} in range({sz}):")
                    E.emit(f"tape[_row, {off} + {iv}] = {val}[{iv}]", 1)
        _write_outputs(E, outs, targets)
        return E.lines

    creps = {ci: ("s", list(Cn))} if c_scalar else {}
    # -- forward loop body --------------------------------------------------------------------------
    fwd_lines = phase(
        {xi: ("s", list(X)), ti: ("s", ["t"]), **creps}, plan.forward, [u], [("s", U)], stored_out=plan.stored
    )
    # -- backward loop body -------------------------------------------------------------------------
    loads = []
    reps: dict = {xi: ("s", list(X)), ti: ("s", ["t"]), zi: ("s", list(LAM)), **creps}
    for v, off, sz in plan.stored:
        if E.is_small(nodes[v]):
            nm = [f"_r{v}_{i}" for i in range(sz)]
            loads += [f"{a} = tape[_row, {off + i}]" for i, a in enumerate(nm)]
            reps[v] = ("s", nm)
        else:
            loads.append(f"_r{v} = tape[_row, {off}:{off + sz}]")
            reps[v] = ("b", f"_r{v}")
    # the parameter cotangent goes to a work array (directly into its slices where possible), then is
    # accumulated, like the generic kernel does with the vjp's out_p
    E.preassigned = {k_: v_ for k_, v_ in E.preassigned.items() if not v_.startswith("tape[")}
    gp_node = nodes[gp]
    if gp_node.prim not in ("input", "const") and not E.is_small(gp_node):
        E.preassigned[gp] = "_gp"
        E._forward_into_outputs()
    bwd_lines = phase(reps, plan.backward, [gx, gc, gp], [("s", VX), ("s", VC), ("b", "_gp")])
    bwd_lines = loads + bwd_lines
    # one loop per node -> fused loops over the same index range, intermediates in scalars
    if fuse:
        fwd_lines = fuse_loops(fwd_lines, scratch=f"{P}ws", max_trip=FUSE_MAX_TRIP, split=True)
        bwd_lines = fuse_loops(bwd_lines, scratch=f"{P}ws", max_trip=FUSE_MAX_TRIP, split=True)
    # the parameter cotangent straight into grad_p (grad_p[i] += tau * <value of _gp[i]>, the same
    # operations as filling _gp and then accumulating it), when each element is written once
    direct = None
    if fuse:
        direct = accumulate_into(bwd_lines, "_gp", "grad_p", "tau" if gp_acc.tau else None, q)
    if direct is not None:
        bwd_lines = direct
    # workspace views do not depend on the step: define them once, before the loops
    h1, fwd_lines = _hoist(fwd_lines, P)
    h2, bwd_lines = _hoist(bwd_lines, P)
    h0, pre = _hoist(pre, P)
    body = h0 + h1 + h2 + pre
    if E.ws and any(f"{P}ws[" in ln for ln in body):
        body.insert(0, f"{P}ws = np.empty({E.ws})")
    W = plan.width
    body.append(f"tape = np.empty((K, {max(W, 1)}))")
    if direct is None:
        body.append(f"_gp = np.empty({q})")
    body += [
        f"_xb = np.empty({n})",
        "_c0 = np.empty(0)",
        f"_lb = np.empty({n})",
        f"_gxb = np.empty({n})",
        f"_gcb = np.empty({m})",
        f"_gpb = np.empty({q})",
    ]
    body += [f"{X[i]} = x0[{i}]" for i in range(n)] + [f"traj[0, {i}] = {X[i]}" for i in range(n)]
    row = [f"_row = {_ROW}(k)"] if plan.stored else []
    loop = ["t = t0 + k * tau"] + row + [f"{Cn[j]} = C[k, {j}]" for j in range(m)] + fwd_lines
    # the step from the method's description, with the field already evaluated into U
    loop += _steps.scalar_lines(desc.forward, _steps.Computed(n, m, q, u=U), {"x": X, "c": Cn, "xn": XN, "d": U}, "t")
    loop += ["_s = 0.0" + "".join(f" + {x}" for x in XN), "if not (_s - _s == 0.0):", "    return 0.0, k + 1"]
    loop += [f"{X[i]} = {XN[i]}" for i in range(n)] + [f"traj[k + 1, {i}] = {X[i]}" for i in range(n)]
    body += ["for k in range(K):"] + ["    " + ln for ln in loop]
    # terminal seed, as kern.terminal_seed
    body += [f"for _i in range({q}):", "    grad_p[_i] = 0.0"]
    if costs.get("tg"):
        body += [f"_xb[{i}] = {X[i]}" for i in range(n)]
        body += [
            f"{costs['tg']}(_xb, _c0, p, t1, _lb, _c0, grad_p)",
            f"value = {costs['tv']}(_xb, _c0, p, t1)",
        ]
        body += [f"{LAM[i]} = _lb[{i}]" for i in range(n)]
    else:
        body += ["value = 0.0"] + [f"{LAM[i]} = 0.0" for i in range(n)]
    body.append("run = 0.0")
    loop = ["t = t0 + k * tau"] + row + [f"{X[i]} = traj[k, {i}]" for i in range(n)]
    loop += [f"{Cn[j]} = C[k, {j}]" for j in range(m)] + bwd_lines
    # the adjoint step from the method's description, with the VJP already evaluated into VX, VC, _gp
    # (accumulated into grad_p by the VJP's own loops when ``direct``)
    names = {"x": X, "c": Cn, "lam": LAM, "z": Z, "gc": [f"grad_c[k, {j}]" for j in range(m)], "vx": VX, "vc": VC}
    names.update({"gp": None if direct is not None else "grad_p", "vp": "_gp"})
    loop += _steps.scalar_lines(desc.reverse, _steps.Computed(n, m, q, vx=VX, vc=VC), names, "t")
    if costs.get("rg"):
        loop += [f"_xb[{i}] = {X[i]}" for i in range(n)]
        # as kern.running_adjoint: a value_and_grad returns the value, else it is rv(...) after
        loop += [("_rv = " if costs.get("rvg") else "") + f"{costs['rg']}(_xb, C[k], p, t, _gxb, _gcb, _gpb)"]
        loop += [f"{Z[i]} += tau * _gxb[{i}]" for i in range(n)]
        loop += [f"grad_c[k, {j}] += tau * _gcb[{j}]" for j in range(m)]
        loop += [f"for _i in range({q}):", "    grad_p[_i] += tau * _gpb[_i]"]
        loop += ["run += _rv" if costs.get("rvg") else f"run += {costs['rv']}(_xb, C[k], p, t)"]
    loop += [f"{LAM[i]} = {Z[i]}" for i in range(n)]
    body += ["for k in range(K - 1, -1, -1):"] + ["    " + ln for ln in loop]
    body += [f"grad_x0[{i}] = {LAM[i]}" for i in range(n)]
    body.append("return value + tau * run, 0")
    src = (
        "def gradient(x0, C, p, t0, tau, K, t1, traj, grad_c, grad_p, grad_x0):\n"
        + "\n".join("    " + ln for ln in body)
        + "\n"
    )
    return src, E.consts


def _cost_refs(comp, imports, files):
    from ._modules import import_path as _import_path

    refs = {}
    pairs = []
    if comp.has_term:
        pairs += [("tv", comp.tv), ("tg", comp.tg)]
    if comp.has_run:
        pairs += [("rv", comp.rv), ("rg", comp.rg)]
    for key, fn in pairs:
        path = _import_path(fn)
        if path is None:
            raise _Unsupported(f"cost function {fn!r} is not importable")
        mod, qual, file = path
        alias = imports.setdefault(mod, f"_m{len(imports)}")
        files[mod] = file
        refs[key] = f"{alias}.{qual}"
    if comp.has_run and comp.rg is getattr(comp.running, "value_and_grad", None):
        refs["rvg"] = True
    return refs


def _schedule_allows(checkpoint, K, n, width):
    """Whether ``checkpoint`` runs store-all for K steps and the tape fits its memory budget (the
    trajectory plus the tape within a ``MemoryBudget``; the tape within ``DEFAULT_MEMORY_BUDGET``
    otherwise)."""
    from .checkpointing._schedules import DEFAULT_MEMORY_BUDGET

    plan = checkpoint.resolve_plan(K, n)
    if plan.kind != "store_all":
        return False
    tape = 8 * K * width
    if plan.budget is None:
        return tape <= DEFAULT_MEMORY_BUDGET
    return 8 * (K + 1) * n + tape <= plan.budget


def tape_kernels(comp, method, checkpoint, K, n, m, q):
    """``(gradient, None, None)`` -- the store-all kernel with a tape, in the layout of
    :func:`adjoint._fused.fused_kernels` -- when the problem qualifies, else None.

    It qualifies when the dynamics come from :func:`adjoint.vector_field` (its vjp is the traced
    reverse mode of its graph), the method is explicit Euler or a discrete map, the state and the
    controls are small (the step loop keeps them in scalars), the costs are importable compiled
    functions, and ``checkpoint`` runs store-all with the tape within its memory budget.
    """
    if method.kind not in (kern.KIND_EULER, kern.KIND_MAP) or n > MAX_STATE or m > MAX_CONTROLS:
        return None
    td = getattr(comp.dynamics, "traced", None)
    if td is None or getattr(td, "origin", None) != "vector_field":
        return None
    memo = comp.tape_kernels
    key = (method.kind, n, m, q)
    got = memo.get(key, False)
    if got is False:
        got = None
        try:
            got = _build(comp, td, method.kind, n, m, q)
        except _Unsupported:
            got = None
        memo[key] = got
    if got is None:
        return None
    fn, width = got
    if not _schedule_allows(checkpoint, K, n, width):
        return None
    return fn, None, None


def _build(comp, td, kind, n, m, q):
    from . import _modules
    from ._modules import file_digest as _file_digest
    from .ad._codegen import module_source
    from .ad._tcall import import_lines

    plan = tape_plan(td)
    imports, files = {}, {}
    costs = _cost_refs(comp, imports, files)
    src, consts = gradient_source(plan, n, m, q, kind, costs)
    kernel = "\n\n@njit(cache=True, error_model='numpy', nogil=True)\n" + src
    head = [f"import {mod} as {alias}" for mod, alias in imports.items()] + import_lines(kernel)
    if _ROW in kernel:
        head.append(f"from adjoint import _tape as {_ROW.split('.')[0]}")
    src = module_source([], consts) + "\n".join(head) + "\n" + kernel
    stamp = "".join(f"{mm}:{_file_digest(f)};" for mm, f in sorted(files.items()))
    module = _modules.load("tape", _GEN_VERSION, src, stamp)
    return module.gradient, plan.width
