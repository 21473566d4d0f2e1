"""Source-to-source passes over emitted lines: loop fusion (:func:`fuse_loops`) and the rewrite
of a work array's writes into accumulations (:func:`accumulate_into`).

The emitter writes one loop per buffer node. A chain of elementwise nodes, the contractions that
read them and the writes of an output then run as several passes over the same index range, each
storing its result in the workspace and the next one loading it back. :func:`fuse_loops` merges
top-level loops of equal trip count when that cannot change any value: every array element is
read after exactly the writes that preceded the read in the original order (checked element by
element over the iteration space), and scalars computed by a loop (the accumulators of a
contraction) are read only after it. A loop moves up to the loop it joins only past statements
and loops it commutes with (statements it depends on move above that loop when they commute with
what they pass). The operations, their operands and the order of every accumulation are
unchanged, so the results are bitwise identical. Workspace buffers then used only inside one
fused loop, one element per iteration, written before being read, become scalar locals (no
store / load at all).
"""

from __future__ import annotations

import ast as _ast

__all__ = ["fuse_loops", "accumulate_into"]


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
