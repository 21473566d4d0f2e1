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
lines (:func:`emit_lines`) that a caller splices into its own generated kernel. The passes that
rewrite emitted lines (loop fusion) are in :mod:`adjoint.ad._passes`.
"""

from __future__ import annotations

import math
import re

import numpy as np

from .. import _modules
from .._modules import cache_dir
from ._graph import Graph

# re-exported: tests import the passes from here
from ._passes import accumulate_into, fuse_loops  # noqa: F401
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
