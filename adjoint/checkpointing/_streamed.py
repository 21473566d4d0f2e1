"""Streamed checkpoint schedules: the compiled planner and the compiled executor.

A schedule is a sequence of compact actions on one *working state* and ``s`` snapshot slots:

=========  ===============================================================================
advance    ``x_k -> x_j``: take ``j - k`` forward steps from the working state
store      copy the working state ``x_k`` into a slot
restore    copy the state ``x_k`` held in a slot into the working state
terminal   one forward step ``x_{K-1} -> x_K`` into scratch; evaluate ``L(x_K)`` and seed the adjoint
adjoint    the adjoint step ``k`` (needs only the working state ``x_k``)
=========  ===============================================================================

The planner is a numba function with an explicit stack of pending intervals ``(a, b, f, slot)``
("reverse steps ``a .. b-1``; ``x_a`` is in ``slot``; ``f`` slots may be used, that one included").
It writes the actions into a small buffer chunk by chunk, so a schedule for ``K`` steps never
needs ``O(K)`` memory: the stack holds at most ``s`` intervals. The gradient kernel and the
Python view of a schedule (:class:`Plan`) call the same compiled planner, so what a user prints is
what the kernel runs.

Interval rules
--------------
* one step (``b - a == 1``): restore ``x_a`` if needed, adjoint step ``a``;
* one slot (``f == 1``): restore ``x_a``, advance to ``x_{b-1}``, adjoint step ``b - 1``, repeat
  with ``[a, b - 1)`` (``l (l - 1) / 2`` forward steps);
* otherwise the interval is cut at ``a = m_0 < m_1 < ... < m_{c-1} < b``: advance through the cuts
  storing ``x_{m_i}`` in ``slot + i``, then reverse the pieces last to first, piece ``i`` with
  ``f - i`` slots (the slots of the pieces after it are free again by then).
  *Binomial* (Revolve) cuts once (``c = 2``) at Griewank and Walther's optimal point; *uniform*
  cuts into ``c`` equal pieces (see :func:`uniform_pieces`).

Compound mode
-------------
Nearly every step of a long schedule sits at the bottom of the recursion, where the primitive
actions come 3.5 to 4 per step (K = 10^7, s = 10 ... 50). The generated executor of
:mod:`adjoint._fused` therefore plans with :func:`plan_compound`: the same planner, which then
emits an interval reversed with one slot (``OP_ONESLOT``) or with a slot per step (``OP_SWEEP``,
``OP_SWEEP_FULL``) as one action, executed in one tight loop. Each stands for a fixed run of
primitive actions (:func:`expand_compound`); users see the primitive actions.
"""

from __future__ import annotations

import functools

import numpy as np
from numba import njit

from .. import _kernels as kern

OP_ADVANCE = 0
OP_STORE = 1
OP_RESTORE = 2
OP_TERMINAL = 3
OP_ADJOINT = 4
OP_NAMES = ("advance", "store", "restore", "terminal", "adjoint")
# compound actions (only in compound mode, see :func:`plan_compound`): ``ops = code + 8 * slot``,
# ``arg0, arg1 = a, b``; each stands for a fixed run of the primitive actions above
OP_SWEEP = 5  # ``2 <= b - a <= f``: store-all reversal of ``[a, b)`` in slots ``slot .. slot + b - a - 1``
OP_ONESLOT = 6  # ``f == 1``: reverse ``[a, b)`` by recomputing from ``x_a`` (``slot``) to each ``x_k``
OP_SWEEP_FULL = 7  # binomial, ``b - a == f + 1 >= 3``: as OP_SWEEP, but ``x_{b-1}`` is not stored
OP_MASK = 7
OP_SHIFT = 3

RULE_BINOMIAL = 0
RULE_UNIFORM = 1

# planner state ``meta``
_M_SP = 0  # stack size
_M_W = 1  # index of the state held by the working state
_M_K = 2  # steps
_M_FIRST = 3  # 1 until the initial ``store x_0 in slot 0`` was emitted
_M_RULE = 4
_M_ERR = 5  # 1 if the stack overflowed (a bug)
_M_COMPOUND = 6  # 1: emit the compound actions OP_SWEEP / OP_ONESLOT (executors only)
_META_LEN = 7

CHUNK = 4096


def binomial_steps_r(l: int, s: int) -> int:
    """The r of ``C(s + r - 1, s) < l <= C(s + r, s)``."""
    r, beta = 0, 1
    while beta < l:
        r += 1
        beta = beta * (s + r) // r
    return r


@njit(cache=True)
def binomial_cut(l, f):  # pragma: no cover - compiled (py_func is tested)
    """Optimal first cut ``m`` (``1 <= m < l``) to reverse ``l >= 2`` steps with ``f >= 2`` slots.

    With ``beta(f, r) = C(f + r, f)`` and ``beta(f, r - 1) < l <= beta(f, r)``, any ``m`` with
    ``beta(f, r - 2) <= m <= beta(f, r - 1)`` and ``beta(f - 1, r - 1) <= l - m <= beta(f - 1, r)``
    attains ``p(l, f) = m + p(l - m, f - 1) + p(m, f)``; we take the smallest.
    """
    r = 0
    beta = 1
    prev = 0
    prev2 = 0
    while beta < l:
        r += 1
        prev2 = prev
        prev = beta
        beta = beta * (f + r) // r
    right = beta * f // (f + r)  # beta(f - 1, r)
    m = l - right
    if m < prev2:
        m = prev2
    if m < 1:
        m = 1
    if m > l - 1:
        m = l - 1
    return m


@njit(cache=True)
def uniform_pieces(l, f):  # pragma: no cover - compiled (py_func is tested)
    """Number of equal pieces ``c >= 2`` a uniform schedule cuts ``l > f >= 2`` steps into.

    The smallest number of levels ``L`` such that ``L`` nested cuts into ``c = ceil(l^(1/L))``
    equal pieces fit: ``1 + L (c - 1) <= f``; bisection (``c = 2``) when even that does not fit.
    """
    L = 2
    while True:
        c = int(np.floor(l ** (1.0 / L)))
        if c < 2:
            c = 2
        # smallest c with c^L >= l
        while True:
            pw = 1
            for _ in range(L):
                pw *= c
                if pw >= l:
                    break
            if pw >= l:
                break
            c += 1
        while c > 2:
            pw = 1
            for _ in range(L):
                pw *= c - 1
                if pw >= l:
                    break
            if pw >= l:
                c -= 1
            else:
                break
        if 1 + L * (c - 1) <= f or c == 2:
            return c
        L += 1


@njit(cache=True)
def plan_init(K, s, rule):  # pragma: no cover - compiled
    """Planner state for ``K >= 1`` steps and ``s >= 1`` slots: ``(stack, meta)``."""
    se = s if s < K else K
    stack = np.zeros((se + 8, 4), dtype=np.int64)
    stack[0, 0] = 0
    stack[0, 1] = K
    stack[0, 2] = se
    stack[0, 3] = 0
    meta = np.zeros(_META_LEN, dtype=np.int64)
    meta[_M_SP] = 1
    meta[_M_W] = 0
    meta[_M_K] = K
    meta[_M_FIRST] = 1
    meta[_M_RULE] = rule
    return stack, meta


@njit(cache=True)
def plan_chunk(stack, meta, ops, arg0, arg1):  # pragma: no cover - compiled
    """Write the next actions into ``ops, arg0, arg1``; return how many (0 when done, -1 on error).

    ``ops`` must hold at least ``2 s + 16`` entries. ``arg0, arg1`` are ``(from, to)`` for
    advance, ``(k, slot)`` for store and restore, ``(k, -1)`` for terminal and adjoint.
    """
    cap = ops.shape[0]
    sp = meta[_M_SP]
    w = meta[_M_W]
    K = meta[_M_K]
    rule = meta[_M_RULE]
    compound = meta[_M_COMPOUND] == 1
    n = 0
    if meta[_M_FIRST] == 1:
        ops[n] = OP_STORE
        arg0[n] = 0
        arg1[n] = 0
        n += 1
        meta[_M_FIRST] = 0
    while sp > 0:
        a = stack[sp - 1, 0]
        b = stack[sp - 1, 1]
        f = stack[sp - 1, 2]
        slot = stack[sp - 1, 3]
        if n + 2 * f + 8 > cap:
            break
        sp -= 1
        l = b - a
        if w != a:
            ops[n] = OP_RESTORE
            arg0[n] = a
            arg1[n] = slot
            n += 1
            w = a
        if compound and l >= 2 and b < K and (f == 1 or l <= f or (rule == RULE_BINOMIAL and l == f + 1)):
            # the primitive actions of this interval, folded into one (expanded by
            # :func:`expand_compound`); b < K: never the first sweep, so no terminal step inside
            if f == 1:
                code = OP_ONESLOT
            elif l <= f:
                code = OP_SWEEP
            else:
                code = OP_SWEEP_FULL
            ops[n] = code + (slot << OP_SHIFT)
            arg0[n] = a
            arg1[n] = b
            n += 1
            w = a  # both end with x_a restored in the working state
            continue
        if l == 1 or f == 1:
            k = b - 1
            if k > a:
                ops[n] = OP_ADVANCE
                arg0[n] = a
                arg1[n] = k
                n += 1
                w = k
                stack[sp, 0] = a  # the rest of the interval, still with x_a in its slot
                stack[sp, 1] = k
                stack[sp, 2] = 1
                stack[sp, 3] = slot
                sp += 1
            if k == K - 1:
                ops[n] = OP_TERMINAL
                arg0[n] = k
                arg1[n] = -1
                n += 1
            ops[n] = OP_ADJOINT
            arg0[n] = k
            arg1[n] = -1
            n += 1
            continue
        if l <= f:
            c = l
        elif rule == RULE_BINOMIAL:
            c = 2
        else:
            c = uniform_pieces(l, f)
        if sp + c > stack.shape[0]:
            meta[_M_ERR] = 1
            return -1
        prev = a
        for i in range(c):
            if rule == RULE_BINOMIAL and c == 2 and l > f:
                m = a if i == 0 else a + binomial_cut(l, f)
            else:
                m = a + (i * l) // c
            if i > 0:
                ops[n] = OP_ADVANCE
                arg0[n] = prev
                arg1[n] = m
                n += 1
                ops[n] = OP_STORE
                arg0[n] = m
                arg1[n] = slot + i
                n += 1
                stack[sp - 1, 1] = m  # close the previous piece
            stack[sp, 0] = m
            stack[sp, 1] = b
            stack[sp, 2] = f - i
            stack[sp, 3] = slot + i
            sp += 1
            prev = m
        w = prev
    meta[_M_SP] = sp
    meta[_M_W] = w
    return n


@njit(cache=True)
def plan_compound(K, s, rule):  # pragma: no cover - compiled
    """Planner state like :func:`plan_init`, in compound mode (for executors).

    Two runs of primitive actions that make up most of a long schedule (nearly every step sits in
    one of them) are emitted as one action each, ``(code + 8 * slot, a, b)``, with the working
    state at ``x_a`` (``x_a`` also in ``slot``) before and after:

    * ``OP_SWEEP``, an interval with ``2 <= l = b - a <= f`` slots: advance one step at a time,
      storing ``x_{a+i}`` in ``slot + i`` (``i = 1 .. l - 1``); adjoint step ``b - 1``; then
      restore ``x_k`` from ``slot + k - a`` and adjoint step ``k`` for ``k = b - 2 .. a``;
    * ``OP_SWEEP_FULL``, binomial rule, an interval with ``l = f + 1 >= 3``: the same, except that
      ``x_{b-1}`` is not stored (the binomial cuts at ``a + 1, a + 2, ...``: ``p(f + 1, f) = f``);
    * ``OP_ONESLOT``, an interval with ``f = 1``: for ``k = b - 1 .. a``: restore ``x_a``
      (not for ``k = b - 1``), advance ``x_a -> x_k`` (if ``k > a``), adjoint step ``k``.

    Only for ``b < K`` (the terminal step is never inside one). :func:`expand_compound` turns them
    back into the primitive actions, which the tests compare with the primitive stream.
    """
    stack, meta = plan_init(K, s, rule)
    meta[_M_COMPOUND] = 1
    return stack, meta


def expand_compound(op, a, b):
    """The primitive actions ``(op, arg0, arg1)`` a compound action stands for (Python, for tests)."""
    code, slot = op & OP_MASK, op >> OP_SHIFT
    out = []
    if code == OP_SWEEP or code == OP_SWEEP_FULL:
        for i in range(1, b - a):
            out.append((OP_ADVANCE, a + i - 1, a + i))
            if code == OP_SWEEP or i < b - a - 1:
                out.append((OP_STORE, a + i, slot + i))
        out.append((OP_ADJOINT, b - 1, -1))
        for k in range(b - 2, a - 1, -1):
            out += [(OP_RESTORE, k, slot + k - a), (OP_ADJOINT, k, -1)]
    elif code == OP_ONESLOT:
        for k in range(b - 1, a - 1, -1):
            if k < b - 1:
                out.append((OP_RESTORE, a, slot))
            if k > a:
                out.append((OP_ADVANCE, a, k))
            out.append((OP_ADJOINT, k, -1))
    else:
        out.append((op, a, b))
    return out


# -- the one executor of streamed plans ---------------------------------------------------------
#
# ``gradient_checkpointed`` runs a compound-mode plan (:func:`plan_compound`). Its per-action work is
# done by the ``g_*`` functions below, which take the sweep's functions and constants first (the
# context ``step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn``) and a
# workspace ``W``. This is the generic backend's executor (bound to the user's functions by
# :mod:`adjoint._bind`); the scalar backend (:mod:`adjoint._fused`) derives its executor from this
# same source with :func:`executor_source`, which drops the context and calls the generated actions
# ``workspace, advance, adjoint_one, terminal, sweep, oneslot`` of the same signatures. Each action
# performs the primitive actions it stands for (:func:`expand_compound`) in their order.

#: the leading parameters of the generic executor and of every ``g_*`` action
CONTEXT = (
    "step", "adjoint_step", "f", "vjp", "g", "gvjp", "rv", "rg", "has_run", "tv", "tg", "has_term", "A", "b", "cn",
)  # fmt: skip


@njit(inline="always")
def g_workspace(step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, x0, C, p):
    """Scratch arrays of the generic actions: RK stages, next state, adjoint, cost buffers."""
    n = x0.shape[0]
    ns = b.shape[0]
    return (
        np.empty((ns, n)),  # stage_k
        np.empty((ns, n)),  # stage_x
        np.empty((ns, n)),  # stage_bar
        np.empty((ns, n)),  # stage_xbar
        np.empty(n),  # xn
        np.empty(n),  # z
        np.empty(C.shape[1]),  # tmp_c
        np.empty(p.shape[0]),  # tmp_p
        np.empty(n),  # gx
        np.empty(n),  # xw: the working copy of a one-slot reversal
    )


@njit(inline="always")
def g_advance(
    step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, xa, C, p, t0, tau, k0, k1, W
):
    """``xa``: ``x_k0 -> x_k1``; returns 0, or ``k + 1`` when step ``k`` gave a non-finite state."""
    stage_k, stage_x, xn = W[0], W[1], W[4]
    for k in range(k0, k1):
        step(f, g, xa, C[k], p, t0 + k * tau, tau, A, b, cn, stage_k, stage_x[0], xn)
        if not kern._finite(xn):
            return k + 1
        for i in range(xa.shape[0]):
            xa[i] = xn[i]
    return 0


@njit(inline="always")
def g_adjoint_one(
    step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, xa, C, p, t0, tau, k, lam,
    grad_c, gpa, W,
):  # fmt: skip
    """Adjoint step ``k`` from ``x_k`` (in ``xa``): ``lam`` becomes ``z_k``; returns ``l(x_k, c_k)``
    (0.0 without a running cost)."""
    stage_k, stage_x, stage_bar, stage_xbar, z, tmp_c, tmp_p, gx = W[0], W[1], W[2], W[3], W[5], W[6], W[7], W[8]
    t = t0 + k * tau
    adjoint_step(
        f,
        vjp,
        g,
        gvjp,
        xa,
        C[k],
        p,
        t,
        tau,
        A,
        b,
        cn,
        stage_k,
        stage_x,
        stage_bar,
        stage_xbar,
        lam,
        tmp_c,
        tmp_p,
        z,
        grad_c[k],
        gpa,
    )
    r = 0.0
    if has_run:
        r = kern.running_adjoint(rv, rg, xa, C[k], p, t, tau, gx, tmp_c, tmp_p, z, grad_c[k], gpa)
    for i in range(xa.shape[0]):
        lam[i] = z[i]
    return r


@njit(inline="always")
def g_terminal(
    step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, xa, C, p, t0, tau, K, t1,
    x_final, lam, gpa, W,
):  # fmt: skip
    """The last step from ``x_{K-1}`` (in ``xa``) into ``x_final``, the terminal cost and the seed of
    the adjoint; returns ``(L(x_K), 0)``, or ``(0.0, K)`` when ``x_K`` is not finite."""
    stage_k, stage_x, xn = W[0], W[1], W[4]
    k = K - 1
    step(f, g, xa, C[k], p, t0 + k * tau, tau, A, b, cn, stage_k, stage_x[0], xn)
    if not kern._finite(xn):
        return 0.0, K
    for i in range(xa.shape[0]):
        x_final[i] = xn[i]
    return kern.terminal_seed(tv, tg, has_term, xn, p, t1, lam, gpa), 0


@njit(inline="always")
def g_adjoint_buffer(step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, x0, grad_x0):
    """The executor's adjoint state ``lam`` (a vector of n; a block sweep binds
    :func:`adjoint._kernels.block_adjoint_buffer` instead)."""
    return np.empty(x0.shape[0])


@njit(inline="always")
def g_adjoint_out(step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, lam, grad_x0):
    """``grad_x0 = z_0``."""
    for i in range(lam.shape[0]):
        grad_x0[i] = lam[i]


@njit(inline="always")
def g_sweep(
    step,
    adjoint_step,
    f,
    vjp,
    g,
    gvjp,
    rv,
    rg,
    has_run,
    tv,
    tg,
    has_term,
    A,
    b,
    cn,
    xa,
    slots,
    sl,
    C,
    p,
    t0,
    tau,
    a,
    bb,
    lam,
    grad_c,
    gpa,
    run,
    W,
):
    """``OP_SWEEP`` / ``OP_SWEEP_FULL`` on ``[a, bb)``: advance storing ``x_{a+1} .. x_{bb-2}`` in
    ``slots[sl + 1 ..]``, then adjoint steps ``bb - 1 .. a`` reading them back; leaves ``x_a`` in
    ``xa``; returns the running-cost sum continued from ``run``."""
    stage_k, stage_x, xn = W[0], W[1], W[4]
    n = xa.shape[0]
    for k in range(a, bb - 1):  # recomputed steps: checked in the first forward pass
        step(f, g, xa, C[k], p, t0 + k * tau, tau, A, b, cn, stage_k, stage_x[0], xn)
        for i in range(n):
            xa[i] = xn[i]
        if k < bb - 2:
            for i in range(n):
                slots[sl + k + 1 - a, i] = xa[i]
    for k in range(bb - 1, a - 1, -1):
        if k < bb - 1:
            for i in range(n):
                xa[i] = slots[sl + k - a, i]
        run += g_adjoint_one(
            step,
            adjoint_step,
            f,
            vjp,
            g,
            gvjp,
            rv,
            rg,
            has_run,
            tv,
            tg,
            has_term,
            A,
            b,
            cn,
            xa,
            C,
            p,
            t0,
            tau,
            k,
            lam,
            grad_c,
            gpa,
            W,
        )
    return run


@njit(inline="always")
def g_oneslot(
    step,
    adjoint_step,
    f,
    vjp,
    g,
    gvjp,
    rv,
    rg,
    has_run,
    tv,
    tg,
    has_term,
    A,
    b,
    cn,
    xa,
    C,
    p,
    t0,
    tau,
    a,
    bb,
    lam,
    grad_c,
    gpa,
    run,
    W,
):
    """``OP_ONESLOT`` on ``[a, bb)``: for ``kk = bb - 1 .. a`` recompute ``x_kk`` from ``x_a`` (in
    ``xa``, left unchanged) and take adjoint step ``kk``."""
    stage_k, stage_x, xn, xw = W[0], W[1], W[4], W[9]
    n = xa.shape[0]
    for kk in range(bb - 1, a - 1, -1):
        for i in range(n):
            xw[i] = xa[i]
        for k in range(a, kk):
            step(f, g, xw, C[k], p, t0 + k * tau, tau, A, b, cn, stage_k, stage_x[0], xn)
            for i in range(n):
                xw[i] = xn[i]
        run += g_adjoint_one(
            step,
            adjoint_step,
            f,
            vjp,
            g,
            gvjp,
            rv,
            rg,
            has_run,
            tv,
            tg,
            has_term,
            A,
            b,
            cn,
            xw,
            C,
            p,
            t0,
            tau,
            kk,
            lam,
            grad_c,
            gpa,
            W,
        )
    return run


@njit
def gradient_checkpointed(
    step,
    adjoint_step,
    f,
    vjp,
    g,
    gvjp,
    rv,
    rg,
    has_run,
    tv,
    tg,
    has_term,
    A,
    b,
    cn,
    x0,
    C,
    p,
    t0,
    tau,
    K,
    t1,
    rule,
    s,
    x_final,
    grad_c,
    grad_p,
    grad_x0,
    counters,
):
    """Gradient with ``s`` snapshot slots (``x_0`` included) under planner ``rule``.

    Returns ``(value, status)``; writes ``x_K`` into ``x_final`` and
    ``counters = (forward_steps, peak_stored_states, planner_error)``.
    """
    n = x0.shape[0]
    W = g_workspace(step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, x0, C, p)
    se = s if s < K else K
    slots = np.empty((se, n))
    stack, meta = plan_compound(K, s, rule)
    cap = CHUNK if CHUNK > 2 * se + 16 else 2 * se + 16
    ops = np.empty(cap, dtype=np.int64)
    arg0 = np.empty(cap, dtype=np.int64)
    arg1 = np.empty(cap, dtype=np.int64)
    x = x0.copy()
    lam = g_adjoint_buffer(
        step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, x0, grad_x0
    )
    value = 0.0
    run = 0.0
    fwd = 0
    peak = 0
    counters[0] = 0
    counters[1] = 0
    counters[2] = 0
    while True:
        nact = plan_chunk(stack, meta, ops, arg0, arg1)
        if nact <= 0:
            if nact < 0:
                counters[2] = 1
            break
        for j in range(nact):
            op = ops[j]
            code = op & OP_MASK
            if code == OP_SWEEP_FULL or code == OP_SWEEP:  # the common compound actions first
                sl = op >> OP_SHIFT
                k0 = arg0[j]
                k1 = arg1[j]
                run = g_sweep(
                    step,
                    adjoint_step,
                    f,
                    vjp,
                    g,
                    gvjp,
                    rv,
                    rg,
                    has_run,
                    tv,
                    tg,
                    has_term,
                    A,
                    b,
                    cn,
                    x,
                    slots,
                    sl,
                    C,
                    p,
                    t0,
                    tau,
                    k0,
                    k1,
                    lam,
                    grad_c,
                    grad_p,
                    run,
                    W,
                )
                fwd += k1 - k0 - 1
                top = sl + k1 - k0 - (1 if code == OP_SWEEP_FULL else 0)
                if top > peak:
                    peak = top
            elif code == OP_ONESLOT:
                k0 = arg0[j]
                k1 = arg1[j]
                run = g_oneslot(
                    step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, x, C, p, t0, tau,
                    k0, k1, lam, grad_c, grad_p, run, W,
                )  # fmt: skip
                fwd += (k1 - k0) * (k1 - k0 - 1) // 2
            elif op == OP_ADVANCE:
                k0 = arg0[j]
                k1 = arg1[j]
                bad = g_advance(
                    step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, x, C, p, t0, tau,
                    k0, k1, W,
                )  # fmt: skip
                if bad:
                    counters[0] = fwd + bad - k0
                    counters[1] = peak
                    return 0.0, bad
                fwd += k1 - k0
            elif op == OP_ADJOINT:
                run += g_adjoint_one(
                    step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, x, C, p, t0, tau,
                    arg0[j], lam, grad_c, grad_p, W,
                )  # fmt: skip
            elif op == OP_RESTORE:
                sl = arg1[j]
                for i in range(n):
                    x[i] = slots[sl, i]
            elif op == OP_STORE:
                sl = arg1[j]
                for i in range(n):
                    slots[sl, i] = x[i]
                if sl + 1 > peak:
                    peak = sl + 1
            else:  # OP_TERMINAL: x holds x_{K-1}
                value, bad = g_terminal(
                    step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, x, C, p, t0, tau,
                    K, t1, x_final, lam, grad_p, W,
                )  # fmt: skip
                fwd += 1
                if bad:
                    counters[0] = fwd
                    counters[1] = peak
                    return 0.0, bad
    g_adjoint_out(step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, lam, grad_x0)
    counters[0] = fwd
    counters[1] = peak
    return value + tau * run, 0


@functools.lru_cache(maxsize=None)
def executor_source(name: str = "checkpointed") -> str:
    """The source of :func:`gradient_checkpointed` for a generated module whose actions are its
    own ``workspace, advance, adjoint_one, terminal, sweep, oneslot`` (same signatures without the
    context): the context parameters go, ``g_X(context..., rest...)`` becomes ``X(rest...)``.
    Memoised: the source is fixed for the process."""
    import ast
    import inspect
    import textwrap

    fdef = ast.parse(textwrap.dedent(inspect.getsource(gradient_checkpointed.py_func))).body[0]
    assert isinstance(fdef, ast.FunctionDef)
    ctx = set(CONTEXT)
    fdef.args.args = [a for a in fdef.args.args if a.arg not in ctx]
    fdef.decorator_list = []
    fdef.name = name

    class Strip(ast.NodeTransformer):
        def visit_Call(self, node):
            self.generic_visit(node)
            if isinstance(node.func, ast.Name) and node.func.id.startswith("g_"):
                head = node.args[: len(CONTEXT)]
                assert [getattr(a, "id", None) for a in head] == list(CONTEXT), ast.unparse(node)
                node.func.id = node.func.id[2:]
                node.args = node.args[len(CONTEXT) :]
            return node

    fdef = Strip().visit(fdef)
    left = {n.id for n in ast.walk(fdef) if isinstance(n, ast.Name)} & ctx
    assert not left, f"the executor uses context names outside the actions: {sorted(left)}"
    ast.fix_missing_locations(fdef)
    return ast.unparse(fdef) + "\n"
