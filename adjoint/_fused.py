"""Fused, scalarised sweeps generated from traced vector fields (the fast path for small states).

A generic kernel calls the user's compiled functions on small arrays at every step; for tiny states
the per-step memory round trips dominate. When the vector field (hand-written and traceable, or
defined as a plain function and traced by :mod:`adjoint.ad`) is small, we generate one kernel that
keeps the state, the adjoint and the parameters in scalar local variables and splices the traced
forward and VJP code straight into the step loops. Costs that cannot be traced (e.g. data lookups
with a computed index) are called as functions on small buffers.

The step and the adjoint step are rendered from the method's description
(:mod:`adjoint.integrators._steps`), the same one the generic kernels' step functions are rendered
from (explicit Euler, explicit Runge-Kutta, discrete maps), so the results agree bit for bit with the
checkpointed schedules that use those kernels.

Modules are written and loaded by the one module layer (:mod:`adjoint._modules`), named by a digest
of their source, and compiled with ``cache=True``.
"""

from __future__ import annotations

import re
import warnings

from . import _kernels as kern
from . import _modules
from ._modules import file_digest as _file_digest
from ._modules import import_path as _import_path
from ._trust import TraceMismatchWarning, trace_mismatch
from .checkpointing import _streamed
from .integrators import _steps

__all__ = ["fused_kernels", "MAX_SCALAR_OPS"]

#: the largest traced field (forward + VJP scalar operations) spliced as straight-line code
MAX_SCALAR_OPS = 400
MAX_STATE = 64
_GEN_VERSION = "10"


def _names(prefix, n):
    return [f"{prefix}{i}" for i in range(n)]


class _Gen:
    """Source builder for one problem (dynamics + costs) and one method."""

    def __init__(self, td, tdyn, terminal, running, n, m, q, kind, A, b, cn):
        self.td, self.tdyn = td, tdyn  # traced dynamics (or None) and the Dynamics object
        self.term, self.run = terminal, running  # (traced or None, Cost) pairs, or None
        self.n, self.m, self.q = n, m, q
        self.kind = kind
        self.A, self.b, self.cn = A, b, cn
        self.desc = _steps.describe(kind, A, b, cn)  # the step and adjoint step (also the generic kernels')
        self.imports = {}
        self.files = {}
        self.uid = 0
        self.P = _names("p_", q)

    # -- references to user functions that are called, not spliced --------------------------------
    def ref(self, fn):
        """``module.name`` of a user function that is called (not spliced) by the kernel.

        (A plain call to the user's compiled function is faster here than splicing a copy with
        ``inline="always"``, which bloats the loop body.)
        """
        path = _import_path(fn)
        if path is None:
            raise _Unfusable("function not importable")
        mod, qual, file = path
        alias = self.imports.setdefault(mod, f"_m{len(self.imports)}")
        self.files[mod] = file
        return f"{alias}.{qual}"

    def pfx(self):
        self.uid += 1
        return f"_t{self.uid}_"

    # -- pieces ------------------------------------------------------------------------------------
    def fill(self, buf, exprs):
        return [f"{buf}[{i}] = {e}" for i, e in enumerate(exprs)]

    def dyn_f(self, xs, cs, t, outs):
        if self.td is not None:
            return self.td.forward_lines(xs, cs, self.P, t, outs, prefix=self.pfx())
        lines = self.fill("_xb", xs) + self.fill("_cb", cs)
        lines.append(f"{self.ref(self.tdyn.f)}(_xb, _cb, p, {t}, _ob)")
        return lines + [f"{o} = _ob[{i}]" for i, o in enumerate(outs)]

    def dyn_vjp(self, xs, cs, t, zs, ox, oc, op):
        if self.td is not None:
            return self.td.vjp_lines(xs, cs, self.P, t, zs, ox, oc, op, prefix=self.pfx())
        lines = self.fill("_xb", xs) + self.fill("_cb", cs) + self.fill("_zb", zs)
        lines.append(f"{self.ref(self.tdyn.vjp)}(_xb, _cb, p, {t}, _zb, _gxb, _gcb, _gpb)")
        return (
            lines
            + [f"{o} = _gxb[{i}]" for i, o in enumerate(ox)]
            + [f"{o} = _gcb[{i}]" for i, o in enumerate(oc)]
            + [f"{o} = _gpb[{i}]" for i, o in enumerate(op)]
        )

    def cost_value(self, cost, xs, cs, t, out):
        tr, obj = cost
        if tr is not None:
            return tr.value_lines(xs, cs, self.P, t, out, prefix=self.pfx())
        cb = "_cb" if cs else "_c0"
        return self.fill("_xb", xs) + self.fill("_cb", cs) + [f"{out} = {self.ref(obj.value)}(_xb, {cb}, p, {t})"]

    def cost_grad(self, cost, xs, cs, t, ox, oc, op, fn=None, vout=None):
        """Lines computing a cost's gradient into the names ``ox, oc, op``: spliced when traced, else
        a call of ``fn`` (default the cost's ``grad``; its return value goes to ``vout`` if given)."""
        tr, obj = cost
        if tr is not None and fn is None:
            return tr.grad_lines(xs, cs, self.P, t, ox, oc, op, prefix=self.pfx())
        cb = "_cb" if cs else "_c0"
        lines = self.fill("_xb", xs) + self.fill("_cb", cs)
        call = f"{self.ref(fn or obj.grad)}(_xb, {cb}, p, {t}, _gxb, {'_gcb' if cs else '_c0'}, _gpb)"
        lines.append(call if vout is None else f"{vout} = {call}")
        return (
            lines
            + [f"{o} = _gxb[{i}]" for i, o in enumerate(ox)]
            + [f"{o} = _gcb[{i}]" for i, o in enumerate(oc)]
            + [f"{o} = _gpb[{i}]" for i, o in enumerate(op)]
        )

    def run_grad_and_value(self, xs, cs, t, ox, oc, op, vout):
        """``(grad_lines, value_lines)`` of the running cost at one step; the value lines come after
        the gradient is accumulated (the generic kernels' order). An untraced cost with a
        ``value_and_grad`` computes both in one call (no value lines)."""
        tr, obj = self.run
        vg = getattr(obj, "value_and_grad", None)
        if tr is None and vg is not None:
            return self.cost_grad(self.run, xs, cs, t, ox, oc, op, fn=vg, vout=vout), []
        return self.cost_grad(self.run, xs, cs, t, ox, oc, op), self.cost_value(self.run, xs, cs, t, vout)

    # -- one step and one adjoint step, rendered from the method's description -------------------
    def step(self, X, C, t, OUT):
        """Lines computing the next state OUT (names) from X (names)."""
        return _steps.scalar_lines(self.desc.forward, self, {"x": X, "c": C, "xn": OUT}, t)

    def adjoint(self, X, C, t, LAM, Z, GC, GP):
        """Lines: Z = [dx_{k+1}/dx_k]^T LAM; GC = [dx_{k+1}/dc_k]^T LAM; GP += [dx_{k+1}/dp]^T LAM."""
        names = {"x": X, "c": C, "lam": LAM, "z": Z, "gc": GC, "gp": GP}
        return _steps.scalar_lines(self.desc.adjoint, self, names, t)

    # -- whole kernels -----------------------------------------------------------------------------
    def header(self, allocate=True):
        """Parameter loads, and the small buffers used when a function is called (not spliced).

        ``allocate=False``: the buffers arrive in the workspace tuple ``W`` (allocated once by the
        executor's ``workspace``, instead of at every call)."""
        lines = [f"p_{i} = p[{i}]" for i in range(self.q)]
        return lines + (self._buffers() if allocate else [f"{BUFFERS} = W"])

    def _buffers(self):
        n, m, q = self.n, self.m, self.q
        return [
            "_xb = np.empty(%d)" % n,
            "_ob = np.empty(%d)" % n,
            "_zb = np.empty(%d)" % n,
            "_cb = np.empty(%d)" % m,
            "_c0 = np.empty(0)",
            "_gxb = np.empty(%d)" % n,
            "_gcb = np.empty(%d)" % m,
            "_gpb = np.empty(%d)" % q,
        ]

    def workspace_source(self):
        """The executor's workspace: the buffers of called (not spliced) functions."""
        body = self._buffers() + [f"return ({BUFFERS},)"]
        return "def workspace(x0, C, p):\n" + "\n".join("    " + ln for ln in body) + "\n"

    def forward_source(self):
        n, m = self.n, self.m
        X, XN, C = _names("x_", n), _names("xn_", n), _names("c_", m)
        body = self.header() + [f"{X[i]} = x0[{i}]" for i in range(n)] + ["run = 0.0"]
        # the trajectory only when asked: evaluate() passes a (1, 1) placeholder
        body += ["if store:"] + [f"    traj[0, {i}] = {X[i]}" for i in range(n)] if n else []
        loop = ["t = t0 + k * tau"] + [f"{C[j]} = C[k, {j}]" for j in range(m)]
        if self.run is not None:
            loop += self.cost_value(self.run, X, C, "t", "_rv") + ["run += _rv"]
        loop += self.step(X, C, "t", XN)
        loop += ["_s = 0.0" + "".join(f" + {x}" for x in XN), "if not (_s - _s == 0.0):", "    return 0.0, k + 1"]
        loop += [f"{X[i]} = {XN[i]}" for i in range(n)]
        loop += ["if store:"] + [f"    traj[k + 1, {i}] = {X[i]}" for i in range(n)]
        body += ["for k in range(K):"] + ["    " + ln for ln in loop]
        body += ["val = tau * run"]
        if self.term is not None:
            body += self.cost_value(self.term, X, [], "t1", "_tv") + ["val += _tv"]
        body += ["return val, 0"]
        return "def forward(x0, C, p, t0, tau, K, t1, traj, store):\n" + "\n".join("    " + ln for ln in body) + "\n"

    def gradient_source(self):
        n, m, q = self.n, self.m, self.q
        X, XN, C = _names("x_", n), _names("xn_", n), _names("c_", m)
        LAM, Z, GC, GP = _names("l_", n), _names("z_", n), _names("gc_", m), _names("gp_", q)
        body = self.header() + [f"{X[i]} = x0[{i}]" for i in range(n)]
        body += [f"traj[0, {i}] = {X[i]}" for i in range(n)]
        loop = ["t = t0 + k * tau"] + [f"{C[j]} = C[k, {j}]" for j in range(m)]
        loop += self.step(X, C, "t", XN)
        # finiteness without a branch per step: the sum of all states is finite unless a state is
        # not (or the sum overflows); the first bad step, if any, is then found again from the
        # stored states with the per-step test of the other kernels (a branch or a test per step
        # costs more than this one running sum)
        loop += ["_bad += " + (" + ".join(XN) or "0.0")]
        loop += [f"{X[i]} = {XN[i]}" for i in range(n)] + [f"traj[k + 1, {i}] = {X[i]}" for i in range(n)]
        body += ["_bad = 0.0", "for k in range(K):"] + ["    " + ln for ln in loop]
        body += [
            "if not (_bad - _bad == 0.0):",
            "    for k in range(K):",
            "        _s = 0.0" + "".join(f" + traj[k + 1, {i}]" for i in range(n)),
            "        if not (_s - _s == 0.0):",
            "            return 0.0, k + 1",
        ]
        if self.term is not None:
            body += self.cost_value(self.term, X, [], "t1", "value")
            body += self.cost_grad(self.term, X, [], "t1", LAM, [], GP)
        else:
            body += ["value = 0.0"] + [f"{LAM[i]} = 0.0" for i in range(n)] + [f"{GP[i]} = 0.0" for i in range(q)]
        body += ["run = 0.0"]
        loop = (
            ["t = t0 + k * tau"]
            + [f"{X[i]} = traj[k, {i}]" for i in range(n)]
            + [f"{C[j]} = C[k, {j}]" for j in range(m)]
        )
        loop += self.adjoint(X, C, "t", LAM, Z, GC, GP)
        if self.run is not None:
            RX, RC, RP = _names("_rx", n), _names("_rc", m), _names("_rp", q)
            g_lines, v_lines = self.run_grad_and_value(X, C, "t", RX, RC, RP, "_rv")
            loop += g_lines
            loop += [f"{Z[i]} += tau * {RX[i]}" for i in range(n)] + [f"{GC[j]} += tau * {RC[j]}" for j in range(m)]
            loop += [f"{GP[j]} += tau * {RP[j]}" for j in range(q)]
            loop += v_lines + ["run += _rv"]
        loop += [f"grad_c[k, {j}] = {GC[j]}" for j in range(m)] + [f"{LAM[i]} = {Z[i]}" for i in range(n)]
        loop, after = _drop_zero_terms(_fold_zero_adjoint_terms(loop, Z), GP)
        pre, loop = _pipeline_tcalls(loop)
        body += pre + ["for k in range(K - 1, -1, -1):"] + ["    " + ln for ln in loop] + after
        body += [f"grad_x0[{i}] = {LAM[i]}" for i in range(n)] + [f"grad_p[{i}] = {GP[i]}" for i in range(q)]
        body += ["return value + tau * run, 0"]
        return (
            "def gradient(x0, C, p, t0, tau, K, t1, traj, grad_c, grad_p, grad_x0):\n"
            + "\n".join("    " + ln for ln in body)
            + "\n"
        )

    def block_source(self, tc, pc, mT, qh, every):
        """A store-all kernel of a block of cotangents (constraint Jacobians; the conventions of
        ``adjoint._kernels``, block section), the state and one row of the block at a time in scalar
        locals: ``jacobian(x0, C, p, t0, tau, K, t1, traj, jac_c, jac_p, jac_x0, vals) -> status``.
        ``tc``/``pc``: the traced terminal / path constraint (or None), ``mT``/``qh`` their rows.
        The same operations in the same order as ``_kernels.jacobian_store_all``."""
        n, m = self.n, self.m
        X, XN, C = _names("x_", n), _names("xn_", n), _names("c_", m)
        body = self.header() + [f"{X[i]} = x0[{i}]" for i in range(n)]
        body += [f"traj[0, {i}] = {X[i]}" for i in range(n)]
        loop = ["t = t0 + k * tau"] + [f"{C[j]} = C[k, {j}]" for j in range(m)]
        loop += self.step(X, C, "t", XN)
        loop += ["_s = 0.0" + "".join(f" + {x}" for x in XN), "if not (_s - _s == 0.0):", "    return k + 1"]
        loop += [f"{X[i]} = {XN[i]}" for i in range(n)] + [f"traj[k + 1, {i}] = {X[i]}" for i in range(n)]
        body += ["for k in range(K):"] + ["    " + ln for ln in loop]
        body += ["r = jac_x0.shape[0]"] + self._block_seed_lines(tc, mT, X)
        loop = ["t = t0 + k * tau"] + [f"{X[i]} = traj[k, {i}]" for i in range(n)]
        loop += self._block_step_lines(pc, mT, qh, every, X, C)
        body += ["for k in range(K - 1, -1, -1):"] + ["    " + ln for ln in loop] + ["return 0"]
        return (
            "def jacobian(x0, C, p, t0, tau, K, t1, traj, jac_c, jac_p, jac_x0, vals):\n"
            + "\n".join("    " + ln for ln in body)
            + "\n"
        )

    def _block_seed_lines(self, tc, mT, X):
        """Zero the block (``jac_x0``, ``jac_p``, ``r`` rows) and seed the terminal rows at ``x_K`` in X."""
        n, q = self.n, self.q
        OX, OP = _names("ox_", n), _names("op_", q)
        body = [
            "for j in range(r):",
            "    for i in range(jac_x0.shape[1]):",
            "        jac_x0[j, i] = 0.0",
            "    for i in range(jac_p.shape[1]):",
            "        jac_p[j, i] = 0.0",
        ]
        if mT:
            TV, W = _names("tv_", mT), _names("w_", mT)
            body += tc.forward_lines(X, [], self.P, "t1", TV, prefix=self.pfx())
            body += [f"vals[{i}] = {TV[i]}" for i in range(mT)]
            row = [f"{W[i]} = 1.0 if j == {i} else 0.0" for i in range(mT)]
            row += tc.vjp_lines(X, [], self.P, "t1", W, OX, [], OP, prefix=self.pfx())
            row += [f"jac_x0[j, {i}] = {OX[i]}" for i in range(n)] + [f"jac_p[j, {i}] = {OP[i]}" for i in range(q)]
            body += [f"for j in range({mT}):"] + ["    " + ln for ln in row]
        return body

    def _block_step_lines(self, pc, mT, qh, every, X, C):
        """Adjoint step ``k`` of the block (``t``, X set): the live rows, then a path node's seeds."""
        n, m, q = self.n, self.m, self.q
        LAM, Z, GC, GP = _names("l_", n), _names("z_", n), _names("gc_", m), _names("gp_", q)
        OX, OC, OP = _names("ox_", n), _names("oc_", m), _names("op_", q)
        loop = [f"{C[j]} = C[k, {j}]" for j in range(m)]
        loop += [f"live = {mT} + (k // {every} + 1) * {qh}" if qh else "live = r"]
        # the stage inputs once per step, shared by the rows (the same values the generic block
        # recomputes for each row, so the same bits); the reverse statements per row
        loop += _steps.scalar_lines(self.desc.recompute, self, {"x": X, "c": C}, "t")
        row = [f"{LAM[i]} = jac_x0[j, {i}]" for i in range(n)] + [f"{GP[i]} = jac_p[j, {i}]" for i in range(q)]
        names = {"x": X, "c": C, "lam": LAM, "z": Z, "gc": GC, "gp": GP}
        row += _steps.scalar_lines(self.desc.reverse, self, names, "t")
        row += [f"jac_c[j, k, {i}] = {GC[i]}" for i in range(m)] + [f"jac_x0[j, {i}] = {Z[i]}" for i in range(n)]
        row += [f"jac_p[j, {i}] = {GP[i]}" for i in range(q)]
        loop += ["for j in range(r):", f"    if j < {mT} or j >= live:"] + ["        " + ln for ln in row]
        if qh:
            HV, W = _names("hv_", qh), _names("w_", qh)
            node = [f"a0 = {mT} + (k // {every}) * {qh}"]
            node += pc.forward_lines(X, C, self.P, "t", HV, prefix=self.pfx())
            node += [f"vals[a0 + {i}] = {HV[i]}" for i in range(qh)]
            row = [f"{W[i]} = 1.0 if i == {i} else 0.0" for i in range(qh)]
            row += pc.vjp_lines(X, C, self.P, "t", W, OX, OC, OP, prefix=self.pfx())
            row += [f"jac_x0[a0 + i, {ii}] = {OX[ii]}" for ii in range(n)]
            row += [f"jac_c[a0 + i, k, {ii}] = {OC[ii]}" for ii in range(m)]
            row += [f"jac_p[a0 + i, {ii}] = {OP[ii]}" for ii in range(q)]
            node += [f"for i in range({qh}):"] + ["    " + ln for ln in row]
            loop += [f"if k % {every} == 0:"] + ["    " + ln for ln in node]
        return loop

    def block_action_sources(self, tc, pc, mT, qh, every):
        """The streamed executor's actions for a block (``adjoint_one``, ``terminal``, ``sweep``,
        ``oneslot``, ``adjoint_buffer``, ``adjoint_out``), with the operations of the generic block
        actions (``_kernels.block_*`` and ``_streamed.g_sweep`` / ``g_oneslot``)."""
        n, m = self.n, self.m
        X, XN, C = _names("x_", n), _names("xn_", n), _names("c_", m)
        alias = ["jac_x0, _w, vals = lam", "jac_c = grad_c", "jac_p = gpa", "r = jac_x0.shape[0]"]
        one = self.header(allocate=False) + alias + [f"{X[i]} = xa[{i}]" for i in range(n)] + ["t = t0 + k * tau"]
        one += self._block_step_lines(pc, mT, qh, every, X, C) + ["return 0.0"]
        term = self.header(allocate=False) + alias[:1] + ["jac_p = gpa", "r = jac_x0.shape[0]"]
        term += [f"{X[i]} = xa[{i}]" for i in range(n)] + ["k = K - 1", "t = t0 + k * tau"]
        term += [f"{C[j]} = C[k, {j}]" for j in range(m)] + self.step(X, C, "t", XN)
        term += ["_s = 0.0" + "".join(f" + {x}" for x in XN), "if not (_s - _s == 0.0):", "    return 0.0, K"]
        term += [f"x_final[{i}] = {XN[i]}" for i in range(n)] + self._block_seed_lines(tc, mT, XN) + ["return 0.0, 0"]
        step = ["t = t0 + k * tau"] + [f"{C[j]} = C[k, {j}]" for j in range(m)] + self.step(X, C, "t", XN)
        step += [f"{X[i]} = {XN[i]}" for i in range(n)]
        sweep = self.header(allocate=False) + [f"{X[i]} = xa[{i}]" for i in range(n)]
        sweep += ["for k in range(a, b - 1):"] + ["    " + ln for ln in step]
        sweep += ["    if k < b - 2:"] + [f"        slots[sl + k + 1 - a, {i}] = {X[i]}" for i in range(n)]
        sweep += [f"xa[{i}] = {X[i]}" for i in range(n)]
        sweep += ["for k in range(b - 1, a - 1, -1):", "    if k < b - 1:"]
        sweep += [f"        xa[{i}] = slots[sl + k - a, {i}]" for i in range(n)]
        sweep += ["    run += adjoint_one(xa, C, p, t0, tau, k, lam, grad_c, gpa, W)", "return run"]
        ones = self.header(allocate=False) + ["xw = np.empty(%d)" % n]
        ones += ["for kk in range(b - 1, a - 1, -1):"] + ["    " + f"{X[i]} = xa[{i}]" for i in range(n)]
        ones += ["    for k in range(a, kk):"] + ["        " + ln for ln in step]
        ones += ["    " + f"xw[{i}] = {X[i]}" for i in range(n)]
        ones += ["    run += adjoint_one(xw, C, p, t0, tau, kk, lam, grad_c, gpa, W)", "return run"]

        def fn(sig, body):
            return f"def {sig}:\n" + "\n".join("    " + ln for ln in body) + "\n"

        return [
            fn("adjoint_one(xa, C, p, t0, tau, k, lam, grad_c, gpa, W)", one),
            fn("terminal(xa, C, p, t0, tau, K, t1, x_final, lam, gpa, W)", term),
            fn("sweep(xa, slots, sl, C, p, t0, tau, a, b, lam, grad_c, gpa, run, W)", sweep),
            fn("oneslot(xa, C, p, t0, tau, a, b, lam, grad_c, gpa, run, W)", ones),
            fn(
                "adjoint_buffer(x0, grad_x0)",
                ["return (grad_x0[0], np.zeros(max(grad_x0[0].shape[0], 1)), grad_x0[1])"],
            ),
            fn("adjoint_out(lam, grad_x0)", ["return None"]),
        ]

    def advance_source(self):
        n, m = self.n, self.m
        X, XN, C = _names("x_", n), _names("xn_", n), _names("c_", m)
        body = self.header(allocate=False) + [f"{X[i]} = xa[{i}]" for i in range(n)]
        loop = ["t = t0 + k * tau"] + [f"{C[j]} = C[k, {j}]" for j in range(m)]
        loop += self.step(X, C, "t", XN)
        loop += ["_s = 0.0" + "".join(f" + {x}" for x in XN), "if not (_s - _s == 0.0):", "    return k + 1"]
        loop += [f"{X[i]} = {XN[i]}" for i in range(n)]
        body += ["for k in range(k0, k1):"] + ["    " + ln for ln in loop]
        body += [f"xa[{i}] = {X[i]}" for i in range(n)] + ["return 0"]
        return "def advance(xa, C, p, t0, tau, k0, k1, W):\n" + "\n".join("    " + ln for ln in body) + "\n"

    def adjoint_one_source(self):
        n, q = self.n, self.q
        X, C = _names("x_", n), _names("c_", self.m)
        LAM, Z, GP = _names("l_", n), _names("z_", n), _names("gp_", q)
        body = (
            self.header(allocate=False)
            + [f"{X[i]} = xa[{i}]" for i in range(n)]
            + [f"{LAM[i]} = lam[{i}]" for i in range(n)]
        )
        body += [f"{GP[i]} = gpa[{i}]" for i in range(q)] + self._adjoint_core(X, C, LAM, GP)
        body += [f"lam[{i}] = {Z[i]}" for i in range(n)]
        body += [f"gpa[{i}] = {GP[i]}" for i in range(q)] + ["return _rv"]
        return (
            "def adjoint_one(xa, C, p, t0, tau, k, lam, grad_c, gpa, W):\n"
            + "\n".join("    " + ln for ln in body)
            + "\n"
        )

    def _adjoint_core(self, X, C, LAM, GP):
        """Lines of one adjoint step ``k``: reads X, LAM; leaves the new adjoint in ``z_*``, the
        running cost in ``_rv``; writes ``grad_c[k]`` and accumulates GP."""
        n, m, q = self.n, self.m, self.q
        Z, GC = _names("z_", n), _names("gc_", m)
        body = ["t = t0 + k * tau"] + [f"{C[j]} = C[k, {j}]" for j in range(m)] + ["_rv = 0.0"]
        body += self.adjoint(X, C, "t", LAM, Z, GC, GP)
        if self.run is not None:
            RX, RC, RP = _names("_rx", n), _names("_rc", m), _names("_rp", q)
            g_lines, v_lines = self.run_grad_and_value(X, C, "t", RX, RC, RP, "_rv")
            body += g_lines
            body += [f"{Z[i]} += tau * {RX[i]}" for i in range(n)] + [f"{GC[j]} += tau * {RC[j]}" for j in range(m)]
            body += [f"{GP[j]} += tau * {RP[j]}" for j in range(q)]
            body += v_lines
        return body + [f"grad_c[k, {j}] = {GC[j]}" for j in range(m)]

    def _adjoint_body(self, X, C, LAM, GP):
        """Lines of one adjoint step ``k`` (state X, adjoint LAM in registers), its running cost and
        ``run += _rv``, in the order of :meth:`adjoint_one_source` followed by the executor's sum."""
        Z = _names("z_", self.n)
        return self._adjoint_core(X, C, LAM, GP) + [f"{LAM[i]} = {Z[i]}" for i in range(self.n)] + ["run += _rv"]

    def _step_body(self, X, C):
        """Lines of one forward step ``k`` in registers, X <- step(X) (no finiteness check: compound
        actions only recompute steps the first sweep has already checked)."""
        n, m = self.n, self.m
        XN = _names("xn_", n)
        body = ["t = t0 + k * tau"] + [f"{C[j]} = C[k, {j}]" for j in range(m)]
        return body + self.step(X, C, "t", XN) + [f"{X[i]} = {XN[i]}" for i in range(n)]

    def sweep_source(self):
        """Compound action ``OP_SWEEP`` / ``OP_SWEEP_FULL`` of the streamed planner on ``[a, b)``:
        advance from ``x_a`` one step at a time storing ``x_{a+1} .. x_{b-2}`` in ``slots[sl + 1 ..]``
        (``x_{b-1}`` stays in registers), then adjoint steps ``b - 1 .. a`` reading the states back.
        Leaves ``x_a`` in ``xa``; returns the running-cost sum continued from ``run``."""
        n, m, q = self.n, self.m, self.q
        X, C = _names("x_", n), _names("c_", m)
        LAM, GP = _names("l_", n), _names("gp_", q)
        step = self._step_body(X, C)
        body = self.header(allocate=False) + [f"{X[i]} = xa[{i}]" for i in range(n)]
        body += ["for k in range(a, b - 2):"] + ["    " + ln for ln in step]
        body += ["    " + f"slots[sl + k + 1 - a, {i}] = {X[i]}" for i in range(n)]
        body += ["k = b - 2"] + step  # x_{b-1}, kept in registers
        body += [f"{LAM[i]} = lam[{i}]" for i in range(n)] + [f"{GP[i]} = gpa[{i}]" for i in range(q)]
        # (b - a >= 2: the loop runs at least once, as _drop_zero_terms requires)
        loop, after = _drop_zero_terms(_fold_zero_adjoint_terms(self._adjoint_body(X, C, LAM, GP), _names("z_", n)), GP)
        pre, loop = _pipeline_tcalls(loop, top="b - 1", low="a")
        body += pre + ["for k in range(b - 1, a - 1, -1):", "    if k < b - 1:"]
        body += ["        " + f"{X[i]} = slots[sl + k - a, {i}]" for i in range(n)]
        body += ["    " + ln for ln in loop] + after
        body += [f"lam[{i}] = {LAM[i]}" for i in range(n)] + [f"gpa[{i}] = {GP[i]}" for i in range(q)]
        body += [f"xa[{i}] = {X[i]}" for i in range(n)] + ["return run"]
        return (
            "def sweep(xa, slots, sl, C, p, t0, tau, a, b, lam, grad_c, gpa, run, W):\n"
            + "\n".join("    " + ln for ln in body)
            + "\n"
        )

    def oneslot_source(self):
        """Compound action ``OP_ONESLOT`` on ``[a, b)``: for ``kk = b - 1 .. a`` recompute ``x_kk``
        from ``x_a`` (in ``xa``, left unchanged) and take adjoint step ``kk``."""
        n, m, q = self.n, self.m, self.q
        X, XS, C = _names("x_", n), _names("xs_", n), _names("c_", m)
        LAM, GP = _names("l_", n), _names("gp_", q)
        body = self.header(allocate=False) + [f"{XS[i]} = xa[{i}]" for i in range(n)]
        body += [f"{LAM[i]} = lam[{i}]" for i in range(n)] + [f"{GP[i]} = gpa[{i}]" for i in range(q)]
        body += ["for kk in range(b - 1, a - 1, -1):"] + ["    " + f"{X[i]} = {XS[i]}" for i in range(n)]
        body += ["    for k in range(a, kk):"] + ["        " + ln for ln in self._step_body(X, C)]
        body += ["    k = kk"] + ["    " + ln for ln in self._adjoint_body(X, C, LAM, GP)]
        body += [f"lam[{i}] = {LAM[i]}" for i in range(n)] + [f"gpa[{i}] = {GP[i]}" for i in range(q)]
        body += ["return run"]
        return (
            "def oneslot(xa, C, p, t0, tau, a, b, lam, grad_c, gpa, run, W):\n"
            + "\n".join("    " + ln for ln in body)
            + "\n"
        )

    def terminal_source(self):
        n, m, q = self.n, self.m, self.q
        X, XN, C = _names("x_", n), _names("xn_", n), _names("c_", m)
        LAM, GP = _names("l_", n), _names("gp_", q)
        body = self.header(allocate=False) + [f"{X[i]} = xa[{i}]" for i in range(n)] + ["k = K - 1", "t = t0 + k * tau"]
        body += [f"{C[j]} = C[k, {j}]" for j in range(m)] + self.step(X, C, "t", XN)
        body += ["_s = 0.0" + "".join(f" + {x}" for x in XN), "if not (_s - _s == 0.0):", "    return 0.0, K"]
        body += [f"x_final[{i}] = {XN[i]}" for i in range(n)]
        if self.term is not None:
            body += self.cost_value(self.term, XN, [], "t1", "value")
            body += self.cost_grad(self.term, XN, [], "t1", LAM, [], GP)
        else:
            body += ["value = 0.0"] + [f"{LAM[i]} = 0.0" for i in range(n)] + [f"{GP[i]} = 0.0" for i in range(q)]
        body += [f"lam[{i}] = {LAM[i]}" for i in range(n)] + [f"gpa[{i}] = {GP[i]}" for i in range(q)]
        body += ["return value, 0"]
        return (
            "def terminal(xa, C, p, t0, tau, K, t1, x_final, lam, gpa, W):\n"
            + "\n".join("    " + ln for ln in body)
            + "\n"
        )


_ZERO_ASSIGN = re.compile(r"^(\w+) = (\w+|0\.0)$")
_ACC_TERM = re.compile(r"^(\w+) \+= (tau \* )?(\w+)$")
_BINDS = re.compile(r"^\s*(?:for\s+)?([\w\s,]+?)\s*(?:\[[^\]]*\])?\s*(?:[-+*/]?=(?!=)|\bin\b)")


def _bound_names(loop):
    """How many lines of ``loop`` (any indentation) bind each name."""
    count = {}
    for ln in loop:
        b = _BINDS.match(ln)
        if b:
            for nm in _WORD.findall(b.group(1)):
                count[nm] = count.get(nm, 0) + 1
    return count


def _drop_zero_terms(loop, accs):
    """Drop ``acc += [tau *] v`` from a loop body when ``v`` is the literal 0.0 (a cost or field
    that does not depend on p adds zeros at every step, a visible share of a small sweep).

    Returns ``(loop, after)``, ``after`` the lines to run once after the loop (which must run at
    least once) to keep the result bit for bit: ``acc + tau * 0.0`` changes ``acc`` at most by
    turning -0.0 into +0.0, and an accumulator that has gone through it once can no longer become
    -0.0 (sums give -0.0 only from two -0.0), so one such addition at the end gives the same bits
    as one per step. Only for pure accumulators (names read nowhere else in the loop) and names
    bound once in the loop, at its top level, to 0.0.
    """
    accs = set(accs)
    read = set()
    for ln in loop:
        m = _ACC_TERM.match(ln)
        if not (m and m.group(1) in accs):
            read |= set(_WORD.findall(ln.split("=", 1)[1] if "=" in ln else ln))
    once = {nm for nm, c in _bound_names(loop).items() if c == 1}
    zero, out, after = set(), [], []
    for ln in loop:
        m = _ACC_TERM.match(ln)
        if m and m.group(1) in accs and m.group(1) not in read and m.group(3) in zero:
            fin = f"{m.group(1)} += {m.group(2) or ''}0.0"
            if fin not in after:
                after.append(fin)
            continue
        out.append(ln)
        z = _ZERO_ASSIGN.match(ln)
        if z and z.group(1) in once and (z.group(2) == "0.0" or z.group(2) in zero):
            zero.add(z.group(1))
    return out, after


_ADJ_UPDATE = re.compile(r"^(\w+) = (\w+) \+ tau \* (\w+)$")


def _fold_zero_adjoint_terms(loop, zs):
    """``z = l + tau * v`` followed by ``z += tau * r`` with ``r`` the literal 0.0 (a running cost
    that does not depend on x) becomes ``z = (l + 0.0) + tau * v``.

    Bit for bit the same: ``tau * 0.0`` is +0.0 (tau > 0), and in round-to-nearest
    ``(a + b) + 0.0 == (a + 0.0) + b`` for all a, b (adding +0.0 only turns -0.0 into +0.0, and
    ``a + b`` is -0.0 only when a and b both are). The gain is the adjoint recurrence's critical
    path: the addition of +0.0 moves from after the update (on the path through ``v``) to ``l``.
    Only when no line
    between the two reads or writes ``z``.
    """
    zs = set(zs)
    once = {nm for nm, c in _bound_names(loop).items() if c == 1}
    zero = set()
    out = list(loop)
    drop = set()
    last_def = {}
    for i, ln in enumerate(loop):
        m = _ACC_TERM.match(ln)
        if m and m.group(1) in zs and m.group(2) and m.group(3) in zero and m.group(1) in last_def:
            j = last_def.pop(m.group(1))
            d = _ADJ_UPDATE.match(out[j])
            between = loop[j + 1 : i]
            if d and not any(m.group(1) in _WORD.findall(b) for b in between):
                out[j] = f"{d.group(1)} = ({d.group(2)} + 0.0) + tau * {d.group(3)}"
                drop.add(i)
                continue
        z = _ZERO_ASSIGN.match(ln)
        if z and z.group(1) in once and (z.group(2) == "0.0" or z.group(2) in zero):
            zero.add(z.group(1))
        d = _ADJ_UPDATE.match(ln)
        if d and d.group(1) in zs:
            last_def[d.group(1)] = i
        else:
            for nm in zs & set(_WORD.findall(ln)):
                last_def.pop(nm, None)
    return [ln for i, ln in enumerate(out) if i not in drop]


_WORD = re.compile(r"\b[A-Za-z_]\w*")
_TCALL: list = []  # the pattern of an opaque call line, compiled at first use (adjoint.ad is imported lazily)


def _tcall_pattern():
    if not _TCALL:
        from .ad._tcall import _ALIAS_PREFIX

        _TCALL.append(re.compile(r"^(\w+) = (" + re.escape(_ALIAS_PREFIX) + r"\w+\.\w+)\((.*)\)(\[\d+\])?$"))
    return _TCALL[0]


_T_WORD = re.compile(r"\bt\b")
#: how many adjoint steps ahead the opaque functions of t are called: the call's latency then
#: overlaps the steps in between (more steps ahead gain little); each step ahead is one more inlined
#: copy of the function to compile
TCALL_AHEAD = 2


def _pipeline_tcalls(loop, top="K - 1", low="0", ahead=None):
    """Call the opaque functions of ``t`` (data lookups, see :mod:`adjoint.ad._tcall`) of a
    backward loop ``for k in range(top, low - 1, -1)`` ``ahead`` iterations early.

    Such a call (an index computation, a division, loads) does not depend on the adjoint, but in
    place its latency adds to every step's; called for step ``k - ahead`` at step ``k`` it runs
    in the shadow of the adjoint recurrence. The same ``t = t0 + k * tau`` is used, so the values
    are bit for bit those of the in-place call; the calls before the loop and the extra ones near
    ``k = low`` are made at steps of the loop (clamped to ``low``), never outside it.

    Returns ``(lines before the loop, new loop body)``; only calls whose arguments are
    expressions of ``t``, ``tau``, ``t0`` and constants are moved.
    """
    d = TCALL_AHEAD if ahead is None else ahead
    if (
        d <= 0
        or not loop
        or loop[0] != "t = t0 + k * tau"
        or any(_bound_names(loop[1:]).get(nm) for nm in ("t", "tau", "t0", "k"))
    ):
        return [], loop
    calls = {}
    out = []
    pat = _tcall_pattern()
    for ln in loop:
        m = pat.match(ln)
        if m and set(_WORD.findall(m.group(3))) <= {"t", "tau", "t0"}:
            key = (m.group(2), m.group(3))
            j = calls.setdefault(key, len(calls))
            out.append(f"{m.group(1)} = _pc{j}{m.group(4) or ''}")
        else:
            out.append(ln)
    if not calls:
        return [], loop

    def call(key, tq):
        return key[0] + "(" + _T_WORD.sub(tq, key[1]) + ")"

    pre = []
    for i in range(d):
        pre += [f"_kq = {top} - {i}", f"if _kq < {low}:", f"    _kq = {low}", "_tq = t0 + _kq * tau"]
        pre += [f"_pf{j}_{i} = {call(key, '_tq')}" for key, j in calls.items()]
    head = [f"_pc{j} = _pf{j}_0" for j in calls.values()]
    for i in range(d - 1):
        head += [f"_pf{j}_{i} = _pf{j}_{i + 1}" for j in calls.values()]
    head += [f"_kq = k - {d} if k - {d} >= {low} else {low}", "_tq = t0 + _kq * tau"]
    head += [f"_pf{j}_{d - 1} = {call(key, '_tq')}" for key, j in calls.items()]
    # the loop's first line is ``t = t0 + k * tau``: keep it first
    return pre, out[:1] + head + out[1:]


BUFFERS = "_xb, _ob, _zb, _cb, _c0, _gxb, _gcb, _gpb"


class _Unfusable(Exception):
    pass


def _traced_or_none(obj, tracer, *args):
    tr = getattr(obj, "traced", None)
    if tr is not None:
        return tr
    return tracer(obj, *args)


def traced_parts(comp, n, m, q):
    """``(dynamics, terminal cost, running cost)`` of a compiled bundle as traced by adjoint.ad,
    each None when absent or not traceable; traced once per bundle and dimensions."""
    memo = comp.traced_parts
    key = (n, m, q)
    if key not in memo:
        from . import ad

        td = _traced_or_none(comp.dynamics, ad.trace_dynamics)
        term = _traced_or_none(comp.terminal, ad.trace_cost, n, 0, q) if comp.has_term else None
        run = _traced_or_none(comp.running, ad.trace_cost, n, m, q) if comp.has_run else None
        # a trace of a hand-written function is spliced only if it is the same function (adjoint._trust)
        parts = [td, term, run]
        notes = []
        for i, (obj, mm) in enumerate(((comp.dynamics, m), (comp.terminal, 0), (comp.running, m))):
            why = trace_mismatch(obj, parts[i], n, mm, q) if parts[i] is not None else None
            if why is not None:
                parts[i] = None
                notes.append(f"{why}; the compiled function is called instead of its trace")
        for note in notes:
            warnings.warn(note, TraceMismatchWarning, stacklevel=2)
        comp.trust_notes[key] = tuple(notes)
        memo[key] = tuple(parts)
    return memo[key]


def fused_kernels(comp, method, n, m, q):
    """``(gradient, forward, checkpointed)`` fused kernels for this problem and method, or None.

    None when the vector field cannot be traced, is too large for scalar code, or the method is
    not Euler / explicit Runge-Kutta / a discrete map.
    """
    if method.kind not in (kern.KIND_EULER, kern.KIND_RK, kern.KIND_MAP) or n > MAX_STATE:
        return None
    # memoised on the problem's compiled bundle itself (never by id(): ids are reused after garbage
    # collection, which would hand one problem another problem's kernels)
    memo = comp.scalar_kernels
    key = (method.cache_key, n, m, q)
    if key in memo:
        return memo[key]
    A, b, cn = method.tableau_arrays()
    result = None
    try:
        from . import ad

        td, term_tr, run_tr = traced_parts(comp, n, m, q)
        if td is None or td.scalar_ops > MAX_SCALAR_OPS:
            raise _Unfusable("dynamics not traced or too large")
        term = (term_tr, comp.terminal) if comp.has_term else None
        run = (run_tr, comp.running) if comp.has_run else None
        gen = _Gen(td, comp.dynamics, term, run, n, m, q, method.kind, A, b, cn)
        src_g = gen.gradient_source()
        src_f = gen.forward_source()
        head = [
            "# generated by adjoint._fused: do not edit",
            "import math",
            "import numpy as np",
            "from numba import njit",
        ]
        head += [f"import {mod} as {alias}" for mod, alias in gen.imports.items()]
        head += [
            "from adjoint.checkpointing._streamed import (CHUNK, OP_ADJOINT, OP_ADVANCE, OP_MASK, OP_ONESLOT,",
            "    OP_RESTORE, OP_SHIFT, OP_STORE, OP_SWEEP, OP_SWEEP_FULL, plan_chunk, plan_compound)",
        ]
        tmpl = _streamed.executor_source("checkpointed")  # the one executor, with this module's actions
        # the per-action functions are spliced into the executor at numba-IR level (inline="always"):
        # a call per adjoint step would cost more than the step itself on small states
        parts = [
            ("cache=True", src_g),
            ("cache=True", src_f),
            ('inline="always"', gen.workspace_source()),
            ('inline="always"', gen.advance_source()),
            ('inline="always"', gen.adjoint_one_source()),
            ('inline="always"', gen.terminal_source()),
            ('inline="always"', gen.sweep_source()),
            ('inline="always"', gen.oneslot_source()),
            ('inline="always"', _ADJOINT_BUFFER),
            ('inline="always"', _ADJOINT_OUT),
            ("cache=True", tmpl),
        ]
        body = "".join(f"\n\n@njit({opt})\n" + p_ for opt, p_ in parts)
        body = ad._tcall.cse_tcalls(body)  # one call of each opaque function of t per step
        head += ad._tcall.import_lines(body)  # user modules of opaque calls of t (adjoint.ad._tcall)
        src = "\n".join(head) + "\n" + body
        # the user's module files enter the name: editing them gives a new module (no stale cache)
        stamp = "".join(f"{m}:{_file_digest(f)};" for m, f in sorted(gen.files.items()))
        # the executor compiles the planner into its cached machine code: a planner change must
        # give a new module too
        stamp += "planner:" + _file_digest(_streamed.__file__)
        result = _load(src, stamp)
    except _Unfusable:
        result = None
    except ImportError:
        result = None
    memo[key] = result
    return result


# the executor's adjoint state: one vector of n (the scalar actions keep it in an array between actions)
_ADJOINT_BUFFER = "def adjoint_buffer(x0, grad_x0):\n    return np.empty(x0.shape[0])\n"
_ADJOINT_OUT = "def adjoint_out(lam, grad_x0):\n    for i in range(lam.shape[0]):\n        grad_x0[i] = lam[i]\n"


def block_kernel(comp, method, n, m, q, term, path, every):
    """The scalar-generated kernels of a block of cotangents, ``(store_all, streamed)`` (see
    :meth:`_Gen.block_source` and :meth:`_Gen.block_action_sources`; ``streamed`` is the one
    executor with the block's actions) for this problem, method and constraints, or None when the dynamics or a constraint is not traced
    (or too large): the caller then runs the generic kernel. Memoised per method and dimensions."""
    if method.kind not in (kern.KIND_EULER, kern.KIND_RK, kern.KIND_MAP) or n > MAX_STATE:
        return None
    if (term is not None and term.traced is None) or (path is not None and path.traced is None):
        return None
    memo = comp.scalar_kernels
    key = ("block", method.cache_key, n, m, q)
    if key in memo:
        return memo[key]
    A, b, cn = method.tableau_arrays()
    result = None
    try:
        from . import ad

        td = traced_parts(comp, n, m, q)[0]
        if td is None or td.scalar_ops > MAX_SCALAR_OPS:
            raise _Unfusable("dynamics not traced or too large")
        gen = _Gen(td, comp.dynamics, None, None, n, m, q, method.kind, A, b, cn)
        args = (
            term.traced if term else None,
            path.traced if path else None,
            term.rows if term else 0,
            path.rows if path else 0,
            every or 1,
        )
        src = gen.block_source(*args)
        head = ["# generated by adjoint._fused (block of cotangents): do not edit", "import math", "import numpy as np"]
        head += ["from numba import njit"] + [f"import {mod} as {alias}" for mod, alias in gen.imports.items()]
        head += [
            "from adjoint.checkpointing._streamed import (CHUNK, OP_ADJOINT, OP_ADVANCE, OP_MASK, OP_ONESLOT,",
            "    OP_RESTORE, OP_SHIFT, OP_STORE, OP_SWEEP, OP_SWEEP_FULL, plan_chunk, plan_compound)",
        ]
        # the streamed plans: the one executor with the block's actions (spliced, as for gradients)
        parts = [
            ("cache=True", src),
            ('inline="always"', gen.workspace_source()),
            ('inline="always"', gen.advance_source()),
        ]
        parts += [('inline="always"', a) for a in gen.block_action_sources(*args)]
        parts += [("cache=True", _streamed.executor_source("checkpointed"))]
        body = ad._tcall.cse_tcalls("".join(f"\n\n@njit({opt})\n" + p_ for opt, p_ in parts))
        head += ad._tcall.import_lines(body)
        stamp = "".join(f"{m_}:{_file_digest(f)};" for m_, f in sorted(gen.files.items()))
        stamp += "planner:" + _file_digest(_streamed.__file__)
        module = _modules.load("scalar", _GEN_VERSION, "\n".join(head) + "\n" + body, stamp)
        result = (module.jacobian, module.checkpointed)
    except (_Unfusable, ImportError):
        result = None
    memo[key] = result
    return result


def _load(src: str, stamp: str = ""):
    module = _modules.load("scalar", _GEN_VERSION, src, stamp)
    return module.gradient, module.forward, module.checkpointed
