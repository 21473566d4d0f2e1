"""Numba code generation from a :class:`Graph`.

Every node is emitted in one of two representations:

- *scalarised* (``'s'``): one Python scalar local per element (``_t12_0, _t12_1, ...``); used for
  small nodes. A graph whose nodes are all small becomes straight-line scalar code: the state
  lives in registers, nothing is allocated, indexing and reshaping cost nothing.
- *buffer* (``'b'``): a flat C-order float64 array, written by loops; used for large nodes. All
  buffers are slices of one workspace allocated once per call. Contiguous slices of a buffer or of
  an input are views (no copy).

The same emitter produces (a) complete ``@njit(cache=True)`` kernels written into a module in the
disk cache (``$ADJOINT_CACHE_DIR``, default ``~/.cache/adjoint``), keyed by a hash of the source,
so a second process loads the compiled machine code instead of recompiling; and (b) bare source
lines (:func:`emit_lines`) that a caller splices into its own generated kernel.
"""

from __future__ import annotations

import ast as _ast
import math
import re

import numpy as np

from .. import _modules
from .._modules import cache_dir
from ._graph import Graph
from ._primitives import PRIMITIVES, pow_const_fmt, reduce_table
from ._tcall import cse_tcalls, import_lines, tcall_fmt

__all__ = [
    "Emitter",
    "emit_lines",
    "kernel_source",
    "load_module",
    "cache_dir",
    "CODEGEN_VERSION",
    "FULL_SCALAR_LIMIT",
    "SMALL",
]

CODEGEN_VERSION = "3"
#: A graph with at most this many scalar operations is emitted fully scalarised.
FULL_SCALAR_LIMIT = 400
#: Otherwise, nodes with at most this many elements are scalarised, larger ones use loops.
SMALL = 16
_UNROLL = 32  # unroll a contraction / reduction of at most this length
#: ... but over buffers (loop operands) only up to this length: longer sums become loops, which run
#: as fast (LLVM unrolls them) and compile much faster (numba types every unrolled element access)
_UNROLL_BUF = 4


def _lit(v) -> str:
    v = float(v)
    if math.isnan(v):
        return "math.nan"
    if math.isinf(v):
        return "math.inf" if v > 0 else "(-math.inf)"
    s = repr(v)
    return f"({s})" if v < 0 else s


def _affine(a):
    """(start, step) if the 1-D int array is ``start + step * arange(n)``, else None."""
    a = np.asarray(a)
    if a.size == 0:
        return None
    if a.size == 1:
        return int(a[0]), 1
    st = int(a[1] - a[0])
    if np.array_equal(a, a[0] + st * np.arange(a.size)):
        return int(a[0]), st
    return None


def _lin(c0, terms):
    """``c0 + sum(coef * var)``: an int if every var is an int, else a source string."""
    total = c0
    parts = []
    for var, coef in terms:
        if coef == 0:
            continue
        if isinstance(var, str):
            parts.append(var if coef == 1 else f"{var}*{coef}")
        else:
            total += var * coef
    if not parts:
        return total
    s = " + ".join(parts)
    return s if total == 0 else f"{s} + {total}"


class Emitter:
    """Emit straight-line / loop code for a graph.

    Parameters
    ----------
    graph : Graph
    prefix : str
        Prefix of every local name this emission creates.
    small : int or float
        Nodes with at most ``small`` elements are scalarised (``math.inf``: all of them).
    """

    def __init__(self, graph: Graph, prefix="_t", small=math.inf, allow_workspace=True):
        self.g = graph
        self.P = prefix
        self.small = small
        self.allow_ws = allow_workspace
        self.lines: list[str] = []
        self.rep: dict = {}
        self.ws = 0
        self.consts: dict[str, np.ndarray] = {}
        self.preassigned: dict[int, str] = {}
        self._mat: dict[int, str] = {}
        self._loopvar = 0

    # -- helpers ---------------------------------------------------------------------------------
    def emit(self, line, indent=0):
        self.lines.append("    " * indent + line)

    def const_array(self, arr, kind):
        name = f"{self.P}K{len(self.consts)}"
        self.consts[name] = np.ascontiguousarray(arr, dtype=np.float64 if kind == "f" else np.int64)
        return name

    def is_small(self, node):
        return node.size <= self.small

    def alloc(self, nid, n):
        if nid in self.preassigned:
            name = self.preassigned[nid]
            if "[" in name:
                local = f"{self.P}o{nid}"
                self.emit(f"{local} = {name}")
                self.preassigned[nid] = local
                return local
            return name
        if not self.allow_ws:
            raise RuntimeError("internal: a buffer was needed in scalar-only emission")
        name = f"{self.P}b{nid}"
        self.emit(f"{name} = {self.P}ws[{self.ws}:{self.ws + n}]")
        self.ws += n
        return name

    def buf(self, nid):
        """A buffer name for node ``nid`` (materialising a scalarised node into the workspace)."""
        kind, val = self.rep[nid]
        if kind == "b":
            return val
        if nid not in self._mat:
            n = len(val)
            name = f"{self.P}m{nid}"
            self.emit(f"{name} = {self.P}ws[{self.ws}:{self.ws + n}]")
            self.ws += n
            for i, e in enumerate(val):
                self.emit(f"{name}[{i}] = {e}")
            self._mat[nid] = name
        return self._mat[nid]

    def get(self, nid, i):
        """Expression for element ``i`` (an int, or a source string for a loop index)."""
        kind, val = self.rep[nid]
        if kind == "s":
            if isinstance(i, str):
                if len(val) == 1:
                    return val[0]
                return f"{self.buf(nid)}[{i}]"
            return val[i]
        return f"{val}[{i}]"

    def loopvar(self, base):
        self._loopvar += 1
        return f"{self.P}{base}{self._loopvar}"

    def name(self, nid, i, n):
        return f"{self.P}{nid}" if n == 1 and not self.g.nodes[nid].shape else f"{self.P}{nid}_{i}"

    # -- driver ----------------------------------------------------------------------------------
    def run(self, input_reps, output_targets):
        """``input_reps``: per graph input, ``('s', exprs)`` or ``('b', array_name)``.
        ``output_targets``: per output, ``('s', names)`` (assign scalars) or ``('b', array)``."""
        g = self.g
        for nid, rep in zip(g.inputs, input_reps):
            self.rep[nid] = rep
        seen = set()
        for k, (o, tgt) in enumerate(zip(g.outputs, output_targets)):
            node = g.nodes[o]
            if tgt[0] == "b" and o not in seen and node.prim not in ("input", "const") and not self.is_small(node):
                self.preassigned[o] = tgt[1]
            seen.add(o)
        self._forward_into_outputs()
        for n in g.nodes:
            if n.id in self.rep:
                continue
            getattr(self, "_e_" + ("elementwise" if PRIMITIVES[n.prim].elementwise else n.prim))(n)
        for o, tgt in zip(g.outputs, output_targets):
            self.write_output(o, tgt)
        return self.lines

    def write_output(self, o, tgt):
        """Lines storing node ``o`` into ``tgt``: ``('s', names)`` (assign scalars) or ``('b', array)``."""
        kind, val = self.rep[o]
        size = self.g.nodes[o].size
        if tgt[0] == "s":
            for i, nm in enumerate(tgt[1]):
                self.emit(f"{nm} = {self.get(o, i)}")
            return
        arr = tgt[1]
        if kind == "b" and val == arr:
            return
        if kind == "s" and size > 4 and len(set(val)) == 1 and val[0] in self._literals(o):
            # a constant output (typically a zero gradient): one loop, not one line per element
            iv = self.loopvar("i")
            self.emit(f"for {iv} in range({size}):")
            self.emit(f"{arr}[{iv}] = {val[0]}", 1)
        elif kind == "s" or size <= _UNROLL:
            for i in range(size):
                self.emit(f"{arr}[{i}] = {self.get(o, i)}")
        else:
            iv = self.loopvar("i")
            self.emit(f"for {iv} in range({size}):")
            self.emit(f"{arr}[{iv}] = {val}[{iv}]", 1)

    def _literals(self, o):
        node = self.g.nodes[o]
        if node.prim != "const":
            return ()
        return {_lit(v) for v in np.ravel(node.attrs["value"])}

    def _forward_into_outputs(self):
        """Let the pieces of an output assembled from contiguous blocks be computed directly in
        the output array (``out_p[a:b]``) when nothing else reads them."""
        g = self.g
        uses = {}
        for n in g.nodes:
            for a in n.args:
                uses[a] = uses.get(a, 0) + 1
        for o in g.outputs:
            uses[o] = uses.get(o, 0) + 1
        for n in reversed(g.nodes):
            if n.prim != "assemble" or n.id not in self.preassigned:
                continue
            arr = self.preassigned[n.id]
            if ":" in arr:
                continue
            src, elem = n.attrs["src"], n.attrs["elem"]
            for j, a in enumerate(n.args):
                an = g.nodes[a]
                if (
                    an.prim in ("input", "const")
                    or uses.get(a, 0) != 1
                    or a in self.preassigned
                    or self.is_small(an)
                    or list(n.args).count(a) != 1
                ):
                    continue
                pos = np.flatnonzero(src == j)
                pa = _affine(pos)
                if pa is None or pa[1] != 1 or pos.size != an.size or not np.array_equal(elem[pos], np.arange(an.size)):
                    continue
                self.preassigned[a] = f"{arr}[{pa[0]}:{pa[0] + pos.size}]"

    # -- primitives --------------------------------------------------------------------------------
    def _e_const(self, n):
        v = n.attrs["value"].ravel()
        if self.is_small(n) or not self.allow_ws:
            self.rep[n.id] = ("s", [_lit(x) for x in v])
        else:
            self.rep[n.id] = ("b", self.const_array(v, "f"))

    def _e_input(self, n):
        raise RuntimeError("internal: graph input without a representation")

    def _e_elementwise(self, n):
        p = PRIMITIVES[n.prim]
        if n.prim == "pow_const":
            fmt = pow_const_fmt(n.attrs["k"])
        elif n.prim == "tcall":
            fmt = tcall_fmt(n.attrs)
        else:
            fmt = p.fmt
        size = n.size
        shapes = [self.g.nodes[a].shape for a in n.args]
        if fmt == "{0}":
            self.rep[n.id] = self.rep[n.args[0]]
            return
        if self.is_small(n):
            names = []
            for i in range(size):
                args = [self.get(a, i if s == n.shape else 0) for a, s in zip(n.args, shapes)]
                nm = self.name(n.id, i, size)
                self.emit(f"{nm} = " + fmt.format(*args))
                names.append(nm)
            self.rep[n.id] = ("s", names)
            return
        B = self.alloc(n.id, size)
        iv = self.loopvar("i")
        args = [self.get(a, iv if s == n.shape else 0) for a, s in zip(n.args, shapes)]
        self.emit(f"for {iv} in range({size}):")
        self.emit(f"{B}[{iv}] = " + fmt.format(*args), 1)
        self.rep[n.id] = ("b", B)

    def _reduce_expr(self, prim, elems, acc_name):
        """Lines computing a reduction of the expressions ``elems`` into ``acc_name``."""
        if prim == "reduce_sum":
            if not elems:
                self.emit(f"{acc_name} = 0.0")
            else:
                self.emit(f"{acc_name} = " + " + ".join(elems))
        elif prim in ("reduce_max", "reduce_min"):
            op = "max" if prim == "reduce_max" else "min"
            self.emit(f"{acc_name} = {elems[0]}")
            for e in elems[1:]:
                self.emit(f"{acc_name} = {op}({acc_name}, {e})")
        else:  # logsumexp
            m = acc_name + "m"
            self.emit(f"{m} = {elems[0]}")
            for e in elems[1:]:
                self.emit(f"{m} = max({m}, {e})")
            self.emit(f"{m} = ({m} if abs({m}) < math.inf else 0.0)")
            self.emit(f"{acc_name} = {m} + math.log(" + " + ".join(f"math.exp({e} - {m})" for e in elems) + ")")

    def _reduce_loop(self, prim, B, idx_of_j, m, acc, indent):
        """Loop form of a reduction over ``m`` elements ``B[idx_of_j(j)]`` into ``acc``."""
        jv = self.loopvar("j")
        e = f"{B}[{idx_of_j(jv)}]"
        if prim == "reduce_sum":
            self.emit(f"{acc} = 0.0", indent)
            self.emit(f"for {jv} in range({m}):", indent)
            self.emit(f"{acc} += {e}", indent + 1)
        elif prim in ("reduce_max", "reduce_min"):
            op = ">" if prim == "reduce_max" else "<"
            self.emit(f"{acc} = {B}[{idx_of_j(0)}]", indent)
            self.emit(f"for {jv} in range(1, {m}):", indent)
            self.emit(f"if {e} {op} {acc}:", indent + 1)
            self.emit(f"{acc} = {e}", indent + 2)
        else:
            mm = acc + "m"
            self.emit(f"{mm} = {B}[{idx_of_j(0)}]", indent)
            self.emit(f"for {jv} in range(1, {m}):", indent)
            self.emit(f"if {e} > {mm}:", indent + 1)
            self.emit(f"{mm} = {e}", indent + 2)
            self.emit(f"{mm} = ({mm} if abs({mm}) < math.inf else 0.0)", indent)
            self.emit(f"{acc} = 0.0", indent)
            self.emit(f"for {jv} in range({m}):", indent)
            self.emit(f"{acc} += math.exp({e} - {mm})", indent + 1)
            self.emit(f"{acc} = {mm} + math.log({acc})", indent)

    def _e_reduce(self, n):
        x = n.args[0]
        xs = self.g.nodes[x].shape
        T = reduce_table(xs, n.attrs["axes"])
        outsize, m = T.shape
        xrep = self.rep[x][0]
        if self.is_small(n):
            names = []
            for o in range(outsize):
                nm = self.name(n.id, o, outsize)
                if xrep == "s" or m <= _UNROLL_BUF or m == 0:
                    self._reduce_expr(n.prim, [self.get(x, int(i)) for i in T[o]], nm)
                else:
                    B = self.buf(x)
                    aff = _affine(T[o])
                    if aff is not None:
                        fn = (lambda a: lambda j: _lin(a[0], [(j, a[1])]))(aff)
                    else:
                        K = self.const_array(T[o], "i")
                        fn = (lambda K: lambda j: f"{K}[{j}]")(K)
                    self._reduce_loop(n.prim, B, fn, m, nm, 0)
                names.append(nm)
            self.rep[n.id] = ("s", names)
            return
        B = self.buf(x)
        O = self.alloc(n.id, outsize)
        ov = self.loopvar("o")
        base = _affine(T[:, 0])
        step = _affine(T[0]) if m > 1 else (int(T[0, 0]), 1)
        if base is not None and step is not None and np.array_equal(T, T[:, :1] + step[1] * np.arange(m)[None, :]):
            fn = lambda j: _lin(base[0], [(ov, base[1]), (j, step[1])])  # noqa: E731
        else:
            K = self.const_array(T, "i")
            fn = lambda j: f"{K}[{ov}, {j}]"  # noqa: E731
        acc = f"{self.P}acc{n.id}"
        self.emit(f"for {ov} in range({outsize}):")
        self._reduce_loop(n.prim, B, fn, m, acc, 1)
        self.emit(f"{O}[{ov}] = {acc}", 1)
        self.rep[n.id] = ("b", O)

    _e_reduce_sum = _e_reduce
    _e_reduce_max = _e_reduce
    _e_reduce_min = _e_reduce
    _e_logsumexp = _e_reduce

    def _e_dot(self, n):
        a, b = n.args
        sa, sb = self.g.nodes[a].shape, self.g.nodes[b].shape
        ta, tb = n.attrs["ta"], n.attrs["tb"]
        if len(sa) == 1:
            m, k = 1, sa[0]
            ia = lambda i, l: l  # noqa: E731
        elif ta:
            k, m = sa
            ia = lambda i, l: _lin(0, [(l, m), (i, 1)])  # noqa: E731
        else:
            m, k = sa
            ia = lambda i, l: _lin(0, [(i, k), (l, 1)])  # noqa: E731
        if len(sb) == 1:
            nn = 1
            ib = lambda l, j: l  # noqa: E731
        elif tb:
            nn = sb[0]
            ib = lambda l, j: _lin(0, [(j, k), (l, 1)])  # noqa: E731
        else:
            nn = sb[1]
            ib = lambda l, j: _lin(0, [(l, nn), (j, 1)])  # noqa: E731
        both_s = self.rep[a][0] == "s" and self.rep[b][0] == "s"
        small_out = self.is_small(n)
        loop_k = k > _UNROLL_BUF and not both_s
        # operands read with a loop index must be buffers: materialise them before any loop
        if (loop_k or (not small_out and m > 8)) and len(sa) == 2 or loop_k:
            if self.rep[a][0] == "s" and self.g.nodes[a].size > 1:
                self.buf(a)
        if (loop_k or (not small_out and nn > 8)) and len(sb) == 2 or loop_k:
            if self.rep[b][0] == "s" and self.g.nodes[b].size > 1:
                self.buf(b)

        def term(i, j, l):
            return f"{self.get(a, ia(i, l))} * {self.get(b, ib(l, j))}"

        def contraction(i, j, target, indent):
            if k == 0:
                self.emit(f"{target} = 0.0", indent)
            elif k <= _UNROLL_BUF or both_s:
                self.emit(f"{target} = " + " + ".join(term(i, j, l) for l in range(k)), indent)
            else:
                lv = self.loopvar("l")
                acc = f"{self.P}acc{n.id}"
                self.emit(f"{acc} = 0.0", indent)
                self.emit(f"for {lv} in range({k}):", indent)
                self.emit(f"{acc} += {term(i, j, lv)}", indent + 1)
                self.emit(f"{target} = {acc}", indent)

        size = n.size
        if self.is_small(n):
            names = []
            if loop_k and 1 < m * nn <= 8 and not (k <= _UNROLL_BUF or both_s):
                # several small outputs summed over a long axis: one loop, one accumulator each
                # (independent chains run in parallel; each sums in the same order as alone)
                lv = self.loopvar("l")
                accs = [f"{self.P}acc{n.id}_{o}" for o in range(m * nn)]
                for acc in accs:
                    self.emit(f"{acc} = 0.0")
                self.emit(f"for {lv} in range({k}):")
                for i in range(m):
                    for j in range(nn):
                        self.emit(f"{accs[i * nn + j]} += {term(i, j, lv)}", 1)
                for o, acc in enumerate(accs):
                    nm = self.name(n.id, o, size)
                    self.emit(f"{nm} = {acc}")
                    names.append(nm)
                self.rep[n.id] = ("s", names)
                return
            for i in range(m):
                for j in range(nn):
                    o = i * nn + j
                    nm = self.name(n.id, o, size)
                    contraction(i, j, nm, 0)
                    names.append(nm)
            self.rep[n.id] = ("s", names)
            return
        O = self.alloc(n.id, size)
        iv, jv = self.loopvar("i"), self.loopvar("j")
        # few rows: unroll them (keeps small operands in scalars); else loop
        rows = list(range(m)) if m <= 8 else [iv]
        cols = list(range(nn)) if nn <= 8 else [jv]
        for i_ in rows:
            for j_ in cols:
                indent = 0
                if isinstance(i_, str):
                    self.emit(f"for {iv} in range({m}):")
                    indent += 1
                if isinstance(j_, str):
                    self.emit(f"for {jv} in range({nn}):", indent)
                    indent += 1
                contraction(i_, j_, f"{O}[{_lin(0, [(i_, nn), (j_, 1)])}]", indent)
                if isinstance(i_, str) and not isinstance(j_, str) and len(cols) > 1:
                    # one loop over rows with all (unrolled) columns inside
                    for j2 in cols[1:]:
                        contraction(i_, j2, f"{O}[{_lin(0, [(i_, nn), (j2, 1)])}]", indent)
                    break
        self.rep[n.id] = ("b", O)

    def _e_assemble(self, n):
        src, elem = n.attrs["src"], n.attrs["elem"]
        size = n.size
        if self.is_small(n):
            exprs = ["0.0" if s < 0 else self.get(n.args[s], int(e)) for s, e in zip(src, elem)]
            self.rep[n.id] = ("s", exprs)
            return
        if len(n.args) == 1 and np.all(src == 0) and self.rep[n.args[0]][0] == "b" and n.id not in self.preassigned:
            aff = _affine(elem)
            if aff is not None and aff[1] >= 1:
                B = self.rep[n.args[0]][1]
                start, st = aff
                stop = start + st * size
                name = f"{self.P}v{n.id}"
                self.emit(f"{name} = {B}[{start}:{stop}" + (f":{st}]" if st != 1 else "]"))
                self.rep[n.id] = ("b", name)
                return
        O = self.alloc(n.id, size)
        for j, a in enumerate(list(n.args) + [None]):
            pos = np.flatnonzero(src == j) if a is not None else np.flatnonzero(src < 0)
            if pos.size == 0:
                continue
            e = elem[pos]
            pa = _affine(pos)
            if a is None:
                # (explicit loops, never slice assignments: numba compiles a slice assignment's
                # shape-mismatch error path for seconds)
                if pa is not None and pa[1] == 1:
                    iv = self.loopvar("i")
                    self.emit(f"for {iv} in range({pos.size}):")
                    self.emit(f"{O}[{_lin(pa[0], [(iv, 1)])}] = 0.0", 1)
                else:
                    K = self.const_array(pos, "i")
                    iv = self.loopvar("i")
                    self.emit(f"for {iv} in range({pos.size}):")
                    self.emit(f"{O}[{K}[{iv}]] = 0.0", 1)
                continue
            if self.rep[a] == ("b", self.preassigned.get(a)):
                continue
            if self.rep[a][0] == "s" and pos.size <= 4 * _UNROLL:
                for p_, e_ in zip(pos, e):
                    self.emit(f"{O}[{p_}] = {self.get(a, int(e_))}")
                continue
            B = self.buf(a)
            ea = _affine(e)
            iv = self.loopvar("i")
            pe = str(_lin(pa[0], [(iv, pa[1])])) if pa is not None else f"{self.const_array(pos, 'i')}[{iv}]"
            ee = str(_lin(ea[0], [(iv, ea[1])])) if ea is not None else f"{self.const_array(e, 'i')}[{iv}]"
            self.emit(f"for {iv} in range({pos.size}):")
            self.emit(f"{O}[{pe}] = {B}[{ee}]", 1)
        self.rep[n.id] = ("b", O)

    def _e_scatter_add(self, n):
        (g,) = n.args
        idx = n.attrs["idx"]
        size = n.size
        if self.is_small(n):
            names = []
            for k in range(size):
                hits = np.flatnonzero(idx == k)
                if hits.size == 0:
                    names.append("0.0")
                elif hits.size == 1:
                    names.append(self.get(g, int(hits[0])))
                else:
                    nm = self.name(n.id, k, size)
                    if hits.size <= 4 * _UNROLL or self.rep[g][0] == "s":
                        self.emit(f"{nm} = " + " + ".join(self.get(g, int(h)) for h in hits))
                    else:
                        B = self.buf(g)
                        K = self.const_array(hits, "i")
                        self._reduce_loop("reduce_sum", B, lambda j: f"{K}[{j}]", hits.size, nm, 0)
                    names.append(nm)
            self.rep[n.id] = ("s", names)
            return
        O = self.alloc(n.id, size)
        iz = self.loopvar("i")
        self.emit(f"for {iz} in range({size}):")
        self.emit(f"{O}[{iz}] = 0.0", 1)
        K = self.const_array(idx, "i")
        iv = self.loopvar("i")
        ge = self.get(g, iv)
        self.emit(f"for {iv} in range({idx.size}):")
        self.emit(f"{O}[{K}[{iv}]] += {ge}", 1)
        self.rep[n.id] = ("b", O)


def emit_lines(graph: Graph, inputs, outputs, prefix="_t"):
    """Straight-line scalar source lines for ``graph``.

    ``inputs``: per graph input, a list of expression strings (one per element, C order).
    ``outputs``: per graph output, a list of local names to assign. Temporaries start with
    ``prefix``. No loops, no indentation, no allocation. The lines refer to ``math`` and to module
    aliases (``_adj_vm`` for :mod:`adjoint._vecmath`, opaque calls of t): the module they are
    spliced into imports ``math`` and the lines of :func:`adjoint.ad._tcall.import_lines`.
    """
    for k, (nid, ex) in enumerate(zip(graph.inputs, inputs)):
        if len(ex) != graph.nodes[nid].size:
            raise ValueError(
                f"input {k} ({graph.input_names[k]}) needs {graph.nodes[nid].size} expressions; got {len(ex)}"
            )
    for k, (nid, nm) in enumerate(zip(graph.outputs, outputs)):
        if len(nm) != graph.nodes[nid].size:
            raise ValueError(f"output {k} needs {graph.nodes[nid].size} names; got {len(nm)}")
    E = Emitter(graph, prefix=prefix, small=math.inf, allow_workspace=False)
    return E.run([("s", list(map(str, ex))) for ex in inputs], [("s", list(nm)) for nm in outputs])


def choose_small(graph: Graph):
    return math.inf if graph.num_scalar_ops() <= FULL_SCALAR_LIMIT else SMALL


def kernel_source(
    graph: Graph, fname, arg_names, in_kinds, out_names, *, returns_scalar=False, prefix="_t", small=None
):
    """Source of one kernel ``def fname(*arg_names, *out_names)``.

    ``in_kinds[k]`` is ``'array'`` (a flat float64 array) or ``'scalar'`` (a float).
    With ``returns_scalar`` the single (scalar) output is returned instead of written.
    Returns (source_lines, consts).
    """
    if small is None:
        small = choose_small(graph)
    E = Emitter(graph, prefix=prefix, small=small)
    reps = []
    loads = []
    for nid, nm, kind in zip(graph.inputs, arg_names, in_kinds):
        node = graph.nodes[nid]
        if kind == "scalar":
            reps.append(("s", [nm]))
        elif E.is_small(node):
            names = []
            for i in range(node.size):
                ln = f"{prefix}{nm}_{i}"
                loads.append(f"{ln} = {nm}[{i}]")
                names.append(ln)
            reps.append(("s", names))
        else:
            reps.append(("b", nm))
    if returns_scalar:
        targets = [("s", [f"{prefix}ret"])]
    else:
        targets = [("b", o) for o in out_names]
    body = E.run(reps, targets)
    head = []
    if E.ws:
        head.append(f"{prefix}ws = np.empty({E.ws})")
    # load only the input elements the body reads (fewer statements: faster numba compiles)
    used = set(re.findall(r"[A-Za-z_][A-Za-z_0-9]*", "\n".join(body)))
    loads = [ln for ln in loads if ln.split(" = ", 1)[0] in used]
    lines = head + loads + body
    if returns_scalar:
        lines.append(f"return {prefix}ret")
    if not lines:
        lines = ["pass"]
    sig = ", ".join(list(arg_names) + ([] if returns_scalar else list(out_names)))
    src = [f"def {fname}({sig}):"] + ["    " + ln for ln in lines]
    return src, E.consts


def module_source(kernels, consts):
    """Assemble a module from kernel sources (each a list of lines) and constant arrays."""
    out = [
        "# generated by adjoint.ad._codegen -- do not edit",
        "import math",
        "import numpy as np",
        "from numba import njit",
        "",
    ]
    for name, arr in consts.items():
        if arr.dtype == np.int64:
            out.append(
                f"{name} = np.array({arr.tolist()!r}, dtype=np.int64)"
                + (f".reshape({arr.shape})" if arr.ndim > 1 else "")
            )
        else:
            body = ", ".join(
                repr(float(v))
                if np.isfinite(v)
                else ("math.nan" if np.isnan(v) else ("math.inf" if v > 0 else "-math.inf"))
                for v in arr.ravel()
            )
            out.append(
                f"{name} = np.array([{body}], dtype=np.float64)" + (f".reshape({arr.shape})" if arr.ndim > 1 else "")
            )
    for src in kernels:
        out.append("")
        out.append("@njit(cache=True, error_model='numpy', nogil=True)")
        out.extend(src)
    text = "\n".join(out)
    imports = import_lines(text)  # user modules of opaque calls of t (adjoint.ad._tcall)
    if imports:
        text = cse_tcalls(text).replace(
            "from numba import njit\n", "from numba import njit\n" + "\n".join(imports) + "\n", 1
        )
    return text + "\n"


def load_module(source: str):
    """Import a module of generated kernels through the one module layer (:mod:`adjoint._modules`):
    written to the cache folder and cached by numba, or compiled in memory when it cannot be."""
    return _modules.load("ad", CODEGEN_VERSION, source)


# -- loop fusion of emitted lines ------------------------------------------------------------------
#
# The emitter writes one loop per buffer node. A chain of elementwise nodes, the contractions that
# read them and the writes of an output then run as several passes over the same index range, each
# storing its result in the workspace and the next one loading it back. :func:`fuse_loops` merges
# top-level loops of equal trip count when that cannot change any value: every array element is
# read after exactly the writes that preceded the read in the original order (checked element by
# element over the iteration space), and scalars computed by a loop (the accumulators of a
# contraction) are read only after it. A loop moves up to the loop it joins only past statements
# and loops it commutes with (statements it depends on move above that loop when they commute with
# what they pass). The operations, their operands and the order of every accumulation are
# unchanged, so the results are bitwise identical. Workspace buffers then used only inside one
# fused loop, one element per iteration, written before being read, become scalar locals (no
# store / load at all).


class _Acc:
    """The accesses of one statement (or loop): scalar reads / writes and array element accesses."""

    __slots__ = ("sr", "sw", "arr")

    def __init__(self):
        self.sr, self.sw = set(), set()
        self.arr = {}  # root -> list of (is_write, spec); spec ('aff', c, s) over the loop var, or None

    def add(self, other):
        self.sr |= other.sr
        self.sw |= other.sw
        for r, lst in other.arr.items():
            self.arr.setdefault(r, []).extend(lst)


def _affine_expr(e, var):
    """(c, s) with ``e == c + s * var`` for an integer expression, else None."""
    if isinstance(e, _ast.Constant) and type(e.value) is int:
        return e.value, 0
    if isinstance(e, _ast.Name):
        return (0, 1) if e.id == var and var is not None else None
    if isinstance(e, _ast.UnaryOp) and isinstance(e.op, _ast.USub):
        a = _affine_expr(e.operand, var)
        return None if a is None else (-a[0], -a[1])
    if isinstance(e, _ast.BinOp):
        a, b = _affine_expr(e.left, var), _affine_expr(e.right, var)
        if a is None or b is None:
            return None
        if isinstance(e.op, _ast.Add):
            return a[0] + b[0], a[1] + b[1]
        if isinstance(e.op, _ast.Sub):
            return a[0] - b[0], a[1] - b[1]
        if isinstance(e.op, _ast.Mult) and (a[1] == 0 or b[1] == 0):
            return a[0] * b[0], a[0] * b[1] + a[1] * b[0]
    return None


class _Fuser:
    def __init__(self, stmts):
        self.views = {}  # name -> (root, offset, step)
        self.arrays = set()  # names used as arrays
        for st in stmts:
            for nd in _ast.walk(st):
                if isinstance(nd, _ast.Subscript) and isinstance(nd.value, _ast.Name):
                    self.arrays.add(nd.value.id)
        self.bad_roots = set()
        self.row_of = {}  # array -> the (unparsed) leading index it is accessed with

    # -- views -------------------------------------------------------------------------------------
    def view_def(self, st):
        """(name, root, offset, step) when ``st`` is ``name = base[a:b(:s)]`` or ``name = base[i, a:b]``."""
        if not (
            isinstance(st, _ast.Assign)
            and len(st.targets) == 1
            and isinstance(st.targets[0], _ast.Name)
            and isinstance(st.value, _ast.Subscript)
            and isinstance(st.value.value, _ast.Name)
        ):
            return None
        sl = st.value.slice
        lead = None
        if isinstance(sl, _ast.Tuple):
            if not sl.elts or not isinstance(sl.elts[-1], _ast.Slice):
                return None
            lead = [_ast.unparse(x) for x in sl.elts[:-1]]
            sl = sl.elts[-1]
        if not isinstance(sl, _ast.Slice):
            return None
        lo = _affine_expr(sl.lower, None) if sl.lower is not None else (0, 0)
        stp = _affine_expr(sl.step, None) if sl.step is not None else (1, 0)
        if lo is None or stp is None or stp[0] < 1:
            return None
        root, off, step = self.resolve(st.value.value.id, lead)
        return st.targets[0].id, root, off + step * lo[0], step * stp[0]

    def resolve(self, name, lead=None):
        if name in self.views and lead is None:
            return self.views[name]
        if lead is not None:
            key = ", ".join(lead)
            if self.row_of.setdefault(name, key) != key:
                self.bad_roots.add(name)
        return name, 0, 1

    # -- accesses ----------------------------------------------------------------------------------
    def _sub(self, nd, var, write, acc):
        name = nd.value.id
        idx = nd.slice
        lead = None
        if isinstance(idx, _ast.Tuple):
            lead = [_ast.unparse(x) for x in idx.elts[:-1]]
            for x in idx.elts[:-1]:
                self._expr(x, var, acc)
            idx = idx.elts[-1]
        self._expr(idx, var, acc)
        root, off, step = self.resolve(name, lead)
        a = None if isinstance(idx, _ast.Slice) else _affine_expr(idx, var)
        spec = None if a is None else ("aff", off + step * a[0], step * a[1])
        acc.arr.setdefault(root, []).append((write, spec))

    def _expr(self, e, var, acc):
        if e is None:
            return
        if isinstance(e, _ast.Subscript) and isinstance(e.value, _ast.Name):
            self._sub(e, var, False, acc)
            return
        if isinstance(e, _ast.Name):
            if e.id == var:
                return
            if e.id in self.arrays or e.id in self.views:
                root = self.resolve(e.id)[0]
                acc.arr.setdefault(root, []).extend([(True, None), (False, None)])
            else:
                acc.sr.add(e.id)
            return
        for ch in _ast.iter_child_nodes(e):
            self._expr(ch, var, acc)

    def simple(self, st, var):
        """Accesses of an assignment, or None for anything else."""
        acc = _Acc()
        if isinstance(st, _ast.Assign) and len(st.targets) == 1:
            tgt, aug = st.targets[0], False
        elif isinstance(st, _ast.AugAssign):
            tgt, aug = st.target, True
        else:
            return None
        self._expr(st.value, var, acc)
        if isinstance(tgt, _ast.Name):
            if tgt.id in self.arrays or tgt.id in self.views:
                return None
            acc.sw.add(tgt.id)
            if aug:
                acc.sr.add(tgt.id)
        elif isinstance(tgt, _ast.Subscript) and isinstance(tgt.value, _ast.Name):
            if aug:
                self._sub(tgt, var, False, acc)
            self._sub(tgt, var, True, acc)
        else:
            return None
        return acc

    def loop(self, st):
        """(trip count, loop var, accesses) of ``for v in range(N):`` over assignments, else None."""
        if not (
            isinstance(st, _ast.For)
            and isinstance(st.target, _ast.Name)
            and not st.orelse
            and isinstance(st.iter, _ast.Call)
            and isinstance(st.iter.func, _ast.Name)
            and st.iter.func.id == "range"
            and len(st.iter.args) == 1
            and not st.iter.keywords
            and isinstance(st.iter.args[0], _ast.Constant)
            and type(st.iter.args[0].value) is int
        ):
            return None
        var = st.target.id
        acc = _Acc()
        for b in st.body:
            a = self.simple(b, var)
            if a is None:
                return None
            acc.add(a)
        acc.sw.discard(var)
        return st.iter.args[0].value, var, acc

    # -- dependences -------------------------------------------------------------------------------
    @staticmethod
    def _elems(spec, n):
        _, c, s = spec
        return range(c, c + s * n, s) if s else [c] * n

    def ordered(self, a, b, n):
        """Whether loop ``b`` (accesses) may join loop ``a`` (both n iterations, a's body first)."""
        if b.sr & a.sw or b.sw & (a.sr | a.sw):
            return False
        for root, la in a.arr.items():
            lb = b.arr.get(root)
            if not lb:
                continue
            if root in self.bad_roots:
                return False
            for wa, sa in la:
                for wb, sb in lb:
                    if not (wa or wb):
                        continue
                    if sa is None or sb is None:
                        return False
                    last = {}
                    for i, e in enumerate(self._elems(sa, n)):
                        last[e] = i
                    for i, e in enumerate(self._elems(sb, n)):
                        if last.get(e, -1) > i or e < 0:  # (a negative index wraps around)
                            return False
                    if min(last) < 0:
                        return False
        return True

    def _touch(self, acc, n):
        """root -> (written elements or None for all, read elements or None)."""
        out = {}
        for root, lst in acc.arr.items():
            w, r = out.setdefault(root, [set(), set()])
            for wr, spec in lst:
                tgt = 0 if wr else 1
                if spec is None or root in self.bad_roots:
                    out[root][tgt] = None
                elif out[root][tgt] is not None:
                    es = list(self._elems(spec, n))
                    out[root][tgt] = None if min(es) < 0 else out[root][tgt].union(es)
        return out

    def independent(self, a, na, b, nb):
        """Whether the accesses ``a`` and ``b`` commute (no element or scalar written by one and
        touched by the other)."""
        if a.sw & (b.sr | b.sw) or b.sw & a.sr:
            return False
        ta, tb = self._touch(a, na), self._touch(b, nb)
        for root, (wa, ra) in ta.items():
            if root not in tb:
                continue
            wb, rb = tb[root]
            for x, y in ((wa, wb), (wa, rb), (ra, wb)):
                if x is None:
                    if y is None or y:
                        return False
                elif y is None:
                    if x:
                        return False
                elif x & y:
                    return False
        return True


def _rename(stmts, old, new):
    if old == new:
        return stmts

    class R(_ast.NodeTransformer):
        def visit_Name(self, nd):
            if nd.id == old:
                return _ast.copy_location(_ast.Name(id=new, ctx=nd.ctx), nd)
            return nd

    return [R().visit(s) for s in stmts]


def _call_names(st):
    """Dotted names of the functions called in ``st`` (``'?'`` for anything but a (dotted) name)."""
    out = []
    for nd in _ast.walk(st):
        if isinstance(nd, _ast.Call):
            f, parts = nd.func, []
            while isinstance(f, _ast.Attribute):
                parts.append(f.attr)
                f = f.value
            out.append(".".join([f.id] + parts[::-1]) if isinstance(f, _ast.Name) else "?")
    return out


class _Item:
    """A top-level statement of :func:`fuse_loops`: a loop (``n`` iterations of ``var``, fusion class
    ``cls``, None when it stays alone) or a statement (``n == 1``); ``acc`` None for anything the
    fuser does not analyse (nothing moves across it)."""

    __slots__ = ("st", "acc", "n", "var", "cls", "loop")

    def __init__(self, st, acc, n=1, var=None, cls=None, loop=False):
        self.st, self.acc, self.n, self.var, self.cls, self.loop = st, acc, n, var, cls, loop


def fuse_loops(lines, scratch=None, max_trip=None, calls=True, split=False, vector_calls=("_adj_vm.",)):
    """Fuse loops of equal trip count in straight emitted ``lines`` (see above) and turn the buffers
    of the workspace ``scratch`` (a name, e.g. ``'_tws'``) that live inside one fused loop into
    scalars. Returns the new lines (bitwise-identical results).

    A loop joins the closest earlier loop it may be fused with, moving up past the statements and
    loops in between when it does not depend on them (the statements it depends on move above that
    loop when they can). Loops of more than ``max_trip`` iterations stay alone, and so do loops
    calling a function when ``calls`` is false.

    With ``split``, only loops of the same kind are fused, so that what LLVM can vectorise stays
    vectorisable: *elementwise* loops (nothing carried from one iteration to the next) with each
    other, elementwise loops calling the vectorisable functions whose names start with one of
    ``vector_calls`` (the branch-free ``_adj_vm.tanh``, ...) with each other, and *reductions*
    (loops accumulating into scalars: they run in order, without reassociation they cannot
    vectorise) with each other; loops calling anything else (libm) stay alone. The statements of an
    elementwise loop that store with a stride then move into a later reduction of the same length
    when they commute with everything in between (:func:`_sink_strided`)."""
    if not lines:
        return lines
    tree = _ast.parse("\n".join(lines))
    stmts = tree.body
    F = _Fuser(stmts)
    assigned = set()
    for st in stmts:
        if F.view_def(st) is None:
            for nd in _ast.walk(st):
                if isinstance(nd, _ast.Name) and isinstance(nd.ctx, _ast.Store):
                    assigned.add(nd.id)
    views, items = [], []

    def kind(st, n, acc):
        if max_trip is not None and n > max_trip:
            return None
        names = [c for b in st.body for c in _call_names(b)]
        if not split:
            return "loop" if calls or not names else None
        if not all(any(c.startswith(v) for v in vector_calls) for c in names):
            return None
        return "reduction" if acc.sw else ("calls" if names else "elementwise")

    def join(it):
        """Fuse loop item ``it`` into an earlier loop; True when done."""
        for gi in range(len(items) - 1, -1, -1):
            g = items[gi]
            if g.acc is None:
                return False
            if not (g.loop and g.cls == it.cls and g.n == it.n and F.ordered(g.acc, it.acc, it.n)):
                continue
            between, hoist = items[gi + 1 :], []
            for j, b in enumerate(between):
                if F.independent(b.acc, b.n, it.acc, it.n):
                    continue
                # ``it`` depends on b: b moves above g, if it is a statement that commutes with g and
                # with what stays in between before it
                if (
                    b.loop
                    or not F.independent(g.acc, g.n, b.acc, 1)
                    or any(not F.independent(x.acc, x.n, b.acc, 1) for x in between[:j] if x not in hoist)
                ):
                    break
                hoist.append(b)
            else:
                g.st.body.extend(_rename(it.st.body, it.var, g.var))
                g.acc.add(it.acc)
                items[gi:] = hoist + [g] + [x for x in between if x not in hoist]
                return True
        return False

    for st in stmts:
        vd = F.view_def(st)
        if vd is not None:
            name, root, off, step = vd
            F.views[name] = (root, off, step)
            if st.value.value.id not in assigned:
                views.append(st)  # a view of an input or of the workspace: defined up front
            else:
                items.append(_Item(st, None))
            continue
        lp = F.loop(st)
        if lp is not None:
            n, var, acc = lp
            it = _Item(st, acc, n, var, kind(st, n, acc), True)
            if it.cls is None or not join(it):
                items.append(it)
            continue
        items.append(_Item(st, F.simple(st, None)))
    if split:
        _sink_strided(F, items)
    out = views + [it.st for it in items]
    if scratch:
        out = _scalarise(F, out, scratch)
    return _ast.unparse(_ast.Module(body=out, type_ignores=[])).split("\n")


def _sink_strided(F, items):
    """Move the statements of an elementwise loop that store with a stride (``g[2 * j] += ...``:
    vectorised, a shuffle per store) into a later reduction loop of the same trip count, when they
    commute with everything in between: the reduction runs at the latency of its additions, and
    these statements then cost next to nothing in its shadow."""
    for ri, r in enumerate(items):
        if not (r.loop and r.cls == "reduction"):
            continue
        for gi in range(ri - 1, -1, -1):
            g = items[gi]
            if g.acc is None:
                break
            if not (g.loop and g.cls in ("elementwise", "calls") and g.n == r.n):
                continue
            between = items[gi + 1 : ri]
            accs = [F.simple(b, g.var) for b in g.st.body]
            moved = []
            for i in range(len(g.st.body) - 1, -1, -1):
                a = accs[i]
                if not any(
                    w and sp is not None and abs(sp[2]) > 1 for lst in a.arr.values() for w, sp in lst
                ) or _call_names(g.st.body[i]):
                    continue
                # it now runs after all of g (the statements before it in g's body: as when fusing
                # two loops; those after it must commute with it), after everything in between, and
                # interleaved with r, after r's body (must commute)
                if (
                    all(F.ordered(accs[j], a, g.n) for j in range(i))
                    and all(F.independent(accs[j], g.n, a, g.n) for j in range(i + 1, len(accs)))
                    and all(b.acc is not None and F.independent(b.acc, b.n, a, g.n) for b in between)
                    and F.independent(r.acc, r.n, a, g.n)
                ):
                    moved.insert(0, i)
            if moved and len(moved) < len(g.st.body):
                r.st.body.extend(_rename([g.st.body[i] for i in moved], g.var, r.var))
                for i in moved:
                    r.acc.add(accs[i])
                g.st.body = [b for i, b in enumerate(g.st.body) if i not in moved]
            break


def _scalarise(F, stmts, scratch):
    """Replace workspace buffers used only inside one loop, one element per iteration (the same
    element of each), written first, by a scalar local."""
    # every access to the scratch root: (statement index, loop var, subscript node, is_write, spec)
    bufs = {}  # view name defined directly on scratch -> (offset, size)
    for st in stmts:
        if (
            isinstance(st, _ast.Assign)
            and isinstance(st.value, _ast.Subscript)
            and isinstance(st.value.value, _ast.Name)
            and st.value.value.id == scratch
            and isinstance(st.targets[0], _ast.Name)
        ):
            sl = st.value.slice
            if isinstance(sl, _ast.Slice) and sl.step is None:
                lo, hi = _affine_expr(sl.lower, None), _affine_expr(sl.upper, None)
                if lo and hi:
                    bufs[st.targets[0].id] = (lo[0], hi[0] - lo[0])
    if not bufs:
        return stmts
    ranges = sorted((off, off + sz, nm) for nm, (off, sz) in bufs.items())
    uses = {}  # buffer -> list of (stmt index, node, is_write, spec, order)

    def owner(e):
        for lo, hi, nm in ranges:
            if lo <= e < hi:
                return nm
        return None

    order = [0]

    def visit(nd, si, var, write):
        if isinstance(nd, _ast.Subscript) and isinstance(nd.value, _ast.Name):
            visit(nd.slice, si, var, False)
            name = nd.value.id
            root, off, step = F.views.get(name, (name, 0, 1))
            if root != scratch:
                return
            a = None if isinstance(nd.slice, (_ast.Slice, _ast.Tuple)) else _affine_expr(nd.slice, var)
            if a is None:
                for lo, hi, nm in ranges:  # unknown element: pin every buffer of the view
                    if lo < off + step * 10**9 and hi > off:
                        uses.setdefault(nm, []).append((None, nd, write, None, 0))
                return
            c, s = off + step * a[0], step * a[1]
            nm = owner(c)
            order[0] += 1
            uses.setdefault(nm, []).append((si, nd, write, (c, s), order[0]))
            return
        if isinstance(nd, _ast.Name) and nd.id in F.views and F.views[nd.id][0] == scratch:
            if not isinstance(nd.ctx, _ast.Store):
                root, off, step = F.views[nd.id]
                for lo, hi, nm in ranges:
                    if lo < off + step * 10**9 and hi > off:
                        uses.setdefault(nm, []).append((None, nd, write, None, 0))
            return
        for ch in _ast.iter_child_nodes(nd):
            visit(ch, si, var, False)

    def visit_stmt(st, si, var):
        if isinstance(st, (_ast.Assign, _ast.AugAssign)):
            visit(st.value, si, var, False)
            tgt = st.targets[0] if isinstance(st, _ast.Assign) else st.target
            if isinstance(tgt, _ast.Subscript):
                if isinstance(st, _ast.AugAssign):
                    visit(tgt, si, var, False)
                visit(tgt, si, var, True)
            return
        visit(st, si, var, False)

    for si, st in enumerate(stmts):
        if isinstance(st, _ast.Assign) and isinstance(st.targets[0], _ast.Name) and st.targets[0].id in F.views:
            continue  # a view definition
        lp = F.loop(st)
        if lp is not None:
            for b in st.body:
                visit_stmt(b, si, lp[1])
        else:
            visit_stmt(st, si, None)
    repl = {}
    for nm, lst in uses.items():
        if nm is None or not lst:
            continue
        sis = {u[0] for u in lst}
        specs = {u[3] for u in lst}
        if None in sis or len(sis) != 1 or len(specs) != 1:
            continue
        ((c, s),) = specs
        lo, sz = bufs[nm]
        if s == 0 or F.loop(stmts[next(iter(sis))]) is None:
            continue
        n = F.loop(stmts[next(iter(sis))])[0]
        if not (lo <= min(c, c + s * (n - 1)) and max(c, c + s * (n - 1)) < lo + sz):
            continue
        first = min(lst, key=lambda u: u[4])
        if not first[2]:
            continue
        for u in lst:
            repl[id(u[1])] = nm + "_s"
    if not repl:
        return stmts

    class R(_ast.NodeTransformer):
        def visit_Subscript(self, nd):
            if id(nd) in repl:
                return _ast.copy_location(_ast.Name(id=repl[id(nd)], ctx=nd.ctx), nd)
            self.generic_visit(nd)
            return nd

    stmts = [R().visit(s) for s in stmts]
    return _drop_dead_views(F, stmts)


def _drop_dead_views(F, stmts):
    while True:
        used = set()
        for st in stmts:
            skip = isinstance(st, _ast.Assign) and isinstance(st.targets[0], _ast.Name) and st.targets[0].id in F.views
            for nd in _ast.walk(st.value if skip else st):
                if isinstance(nd, _ast.Name):
                    used.add(nd.id)
        keep = [
            st
            for st in stmts
            if not (
                isinstance(st, _ast.Assign)
                and isinstance(st.targets[0], _ast.Name)
                and st.targets[0].id in F.views
                and st.targets[0].id not in used
            )
        ]
        if len(keep) == len(stmts):
            return keep
        stmts = keep


def accumulate_into(lines, src, dst, scale, size):
    """Rewrite the writes ``src[e] = expr`` of emitted ``lines`` (through views too) into
    ``dst[e] += scale * (expr)`` (``dst[e] += expr`` when ``scale`` is None), when every element
    ``0 <= e < size`` of ``src`` is written exactly once by a plain assignment and never read: the
    same operations as writing ``src`` and then running ``dst[e] += scale * src[e]`` over it.
    Returns the new lines, or None when the pattern does not hold."""
    stmts = _ast.parse("\n".join(lines)).body
    F = _Fuser(stmts)
    aliases = {src}
    for st in stmts:
        vd = F.view_def(st)
        if vd is not None:
            F.views[vd[0]] = vd[1:]
            if vd[1] == src:
                aliases.add(vd[0])
    count = [0] * size
    sites = []

    def check(st, var, n):
        touches = any(isinstance(nd, _ast.Name) and nd.id in aliases for nd in _ast.walk(st))
        if not touches:
            return True
        acc = F.simple(st, var)
        if acc is None or not isinstance(st, _ast.Assign):
            return False
        lst = acc.arr.get(src, [])
        tgt = st.targets[0]
        if (
            len(lst) != 1
            or not lst[0][0]
            or lst[0][1] is None
            or not isinstance(tgt, _ast.Subscript)
            or tgt.value.id not in aliases
            or isinstance(tgt.slice, _ast.Tuple)
        ):
            return False
        _, c, s = lst[0][1]
        for e in range(c, c + s * n, s) if s else [c] * n:
            if not 0 <= e < size:
                return False
            count[e] += 1
        sites.append(st)
        return True

    for st in stmts:
        vd = F.view_def(st)
        if vd is not None:
            continue
        lp = F.loop(st)
        if lp is not None:
            if not all(check(b, lp[1], lp[0]) for b in st.body):
                return None
        elif not check(st, None, 1):
            return None
    if any(c != 1 for c in count):
        return None
    site_ids = {id(s) for s in sites}

    class R(_ast.NodeTransformer):
        def visit_Assign(self, st):
            if id(st) not in site_ids:
                return st
            tgt = st.targets[0]
            _, off, step = F.views.get(tgt.value.id, (src, 0, 1))
            idx = tgt.slice
            if step != 1:
                idx = _ast.BinOp(left=_ast.Constant(step), op=_ast.Mult(), right=idx)
            if off:
                idx = _ast.BinOp(left=idx, op=_ast.Add(), right=_ast.Constant(off))
            val = st.value
            if scale is not None:
                val = _ast.BinOp(left=_ast.Name(id=scale, ctx=_ast.Load()), op=_ast.Mult(), right=val)
            new = _ast.AugAssign(
                target=_ast.Subscript(value=_ast.Name(id=dst, ctx=_ast.Load()), slice=idx, ctx=_ast.Store()),
                op=_ast.Add(),
                value=val,
            )
            return _ast.copy_location(new, st)

        def visit_For(self, st):
            st.body = [self.visit(b) for b in st.body]
            return st

    stmts = [R().visit(s) for s in stmts]
    stmts = _drop_dead_views(F, stmts)
    if any(isinstance(nd, _ast.Name) and nd.id in aliases for st in stmts for nd in _ast.walk(st)):
        return None
    return _ast.unparse(_ast.Module(body=stmts, type_ignores=[])).split("\n")
