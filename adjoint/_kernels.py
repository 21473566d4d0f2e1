"""Compiled kernels: whole sweeps, given the method's step and adjoint step.

Every function here takes only arrays, scalars and the user's numba dispatchers, writes into
preallocated outputs, validates nothing and allocates only O(1) work buffers outside the step
loops. The Python layer (``adjoint._solve``) validates, allocates and wraps results.

Conventions
-----------
* ``step``, ``adjoint_step``: the method's compiled step and adjoint step (signatures
  ``adjoint.integrators._steps.STEP_PARAMS`` / ``ADJOINT_PARAMS``), generated from its description
  by :func:`adjoint.integrators._steps.array_steps`.
* ``kind``: 0 explicit Euler, 1 explicit Runge-Kutta with tableau ``(A, b, cn)``, 2 discrete map,
  3 leapfrog (separable systems; ``f, vjp`` are ``u, vjp_u`` and ``g, gvjp`` are ``v, vjp_v``).
  Methods that need no second function receive ``g = f``, ``gvjp = vjp``.
* Value: ``J = L(x_K) + tau * sum_{k=K-1..0} l(x_k, c_k)``; the running sum is accumulated in the
  backward sweep (descending k) by every gradient kernel, so that all schedules perform the same
  floating-point operations in the same order and agree bit for bit.
* Times: step ``k`` and ``l`` run at ``t0 + k * tau``; the terminal cost ``L`` at ``t1`` (the
  problem's ``t_span[1]``, passed as it is: ``t0 + K * tau`` misses it in the last bit on some grids).
* ``status``: 0 on success, ``k + 1`` when the state became non-finite at step ``k`` (the output
  of step k, at time ``t0 + (k + 1) tau``).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

# the method codes (compile-time constants of the kernels) are defined once, with the methods
from .integrators._methods import KIND_EULER, KIND_LEAPFROG, KIND_MAP, KIND_RK  # noqa: F401


@njit(cache=True)
def zero_value(x, c, p, t):  # pragma: no cover - compiled
    """Placeholder cost (absent running or terminal cost)."""
    return 0.0 * x[0]


@njit(cache=True)
def zero_grad(x, c, p, t, out_x, out_c, out_p):  # pragma: no cover - compiled
    for i in range(out_x.shape[0]):
        out_x[i] = 0.0
    for i in range(out_c.shape[0]):
        out_c[i] = 0.0
    for i in range(out_p.shape[0]):
        out_p[i] = 0.0


@njit(inline="always")
def _finite(x):
    s = 0.0 * x[0]
    for i in range(x.shape[0]):
        s += x[i]
    return s - s == 0.0


# A method's step and adjoint step (and, for splitting methods, the inverse step and the adjoint
# from the substep inputs) are generated from its description by
# adjoint.integrators._steps.array_steps; they reach the kernels below as the sweep functions
# ``step`` and ``adjoint_step``.


@njit(inline="always")
def terminal_seed(tv, tg, has_term, x, p, t, lam, grad_p):
    """Seed the backward sweep at ``x = x_K``: ``lam = grad_x L``, ``grad_p = grad_p L``; return ``L``.

    Without a terminal cost both are zero. Shared by every gradient kernel, so that they all start
    the backward sweep with the same operations.
    """
    cempty = np.empty(0)
    for i in range(grad_p.shape[0]):
        grad_p[i] = 0.0
    if has_term:
        tg(x, cempty, p, t, lam, cempty, grad_p)
        return tv(x, cempty, p, t)
    for i in range(lam.shape[0]):
        lam[i] = 0.0
    return 0.0


def cost_value_after_grad(r, rv, x, c, p, t):  # pragma: no cover - replaced by the overload in numba
    """The cost value, given what the gradient function returned: ``r`` itself when the gradient
    function was a ``value_and_grad`` (returns the value), else ``rv(x, c, p, t)``."""
    return rv(x, c, p, t) if r is None else r


@overload(cost_value_after_grad, inline="always")
def _ov_cost_value_after_grad(r, rv, x, c, p, t):
    if isinstance(r, types.NoneType):
        return lambda r, rv, x, c, p, t: rv(x, c, p, t)
    return lambda r, rv, x, c, p, t: r


@njit(inline="always")
def running_adjoint(rv, rg, x, c, p, t, tau, gx, gc, gp, out_z, out_c, acc_p):
    """Add the running-cost contribution at step k; return ``l(x_k, c_k)``.

    ``rg`` is the cost's ``grad`` (returns nothing; the value is then ``rv(...)``) or its
    ``value_and_grad`` (returns the value, computed together with the gradient)."""
    r = rg(x, c, p, t, gx, gc, gp)
    for i in range(out_z.shape[0]):
        out_z[i] += tau * gx[i]
    for i in range(out_c.shape[0]):
        out_c[i] += tau * gc[i]
    for i in range(acc_p.shape[0]):
        acc_p[i] += tau * gp[i]
    return cost_value_after_grad(r, rv, x, c, p, t)


@njit(inline="always")
def forward_store(step, f, g, x, C, p, t0, tau, K, A, b, cn, stage_k, stage_x0, xn, traj):
    """``x``: ``x_0 -> x_K``, every state stored in ``traj`` (K + 1, n); returns 0, or ``k + 1`` when
    step ``k`` gave a non-finite state. The forward sweep of the store-all gradient and Jacobian."""
    n = x.shape[0]
    for i in range(n):
        traj[0, i] = x[i]
    for k in range(K):
        step(f, g, x, C[k], p, t0 + k * tau, tau, A, b, cn, stage_k, stage_x0, xn)
        if not _finite(xn):
            return k + 1
        for i in range(n):
            x[i] = xn[i]
            traj[k + 1, i] = xn[i]
    return 0


@njit
def forward(step, f, g, rv, has_run, tv, has_term, x0, C, p, t0, tau, K, t1, A, b, cn, traj, store):
    """Forward sweep: returns ``(value, x_K, status)``; fills ``traj`` when ``store``.

    Works for real and complex state (complex-step checks). The value's running sum is taken in
    ascending k here (only the gradient kernels fix the descending order).
    """
    n = x0.shape[0]
    s = b.shape[0]
    stage_k = np.empty((s, n), dtype=x0.dtype)
    stage_x = np.empty(n, dtype=x0.dtype)
    x = x0.copy()
    xn = np.empty_like(x0)
    cempty = np.empty(0, dtype=p.dtype)
    run = 0.0 * x0[0]
    if store:  # element loops: a slice assignment compiles numba's shape-error formatting (seconds)
        for i in range(n):
            traj[0, i] = x[i]
    for k in range(K):
        t = t0 + k * tau
        if has_run:
            run += rv(x, C[k], p, t)
        step(f, g, x, C[k], p, t, tau, A, b, cn, stage_k, stage_x, xn)
        if not _finite(xn):
            return 0.0 * run, x, k + 1
        for i in range(n):
            x[i] = xn[i]
        if store:
            for i in range(n):
                traj[k + 1, i] = x[i]
    val = tau * run
    if has_term:
        val += tv(x, cempty, p, t1)
    return val, x, 0


@njit
def gradient_store_all(
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
    x0,
    C,
    p,
    t0,
    tau,
    K,
    t1,
    A,
    b,
    cn,
    traj,
    grad_c,
    grad_p,
    grad_x0,
):
    """Store every state, then sweep backwards. Returns ``(value, status)``.

    ``traj`` has shape (K + 1, n) and receives the trajectory; ``grad_c`` (K, m), ``grad_p`` and
    ``grad_x0`` receive the gradient.
    """
    n = x0.shape[0]
    s = b.shape[0]
    m = C.shape[1]
    npar = p.shape[0]
    stage_k = np.empty((s, n))
    stage_x = np.empty((s, n))
    stage_bar = np.empty((s, n))
    stage_xbar = np.empty((s, n))
    x = x0.copy()
    xn = np.empty(n)
    bad = forward_store(step, f, g, x, C, p, t0, tau, K, A, b, cn, stage_k, stage_x[0], xn, traj)
    if bad:
        return 0.0, bad
    # terminal cost
    lam = np.empty(n)
    value = terminal_seed(tv, tg, has_term, x, p, t1, lam, grad_p)
    z = np.empty(n)
    tmp_c = np.empty(m)
    tmp_p = np.empty(npar)
    gx = np.empty(n)
    run = 0.0
    for k in range(K - 1, -1, -1):
        t = t0 + k * tau
        for i in range(n):
            x[i] = traj[k, i]
        adjoint_step(
            f,
            vjp,
            g,
            gvjp,
            x,
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
            grad_p,
        )
        if has_run:
            run += running_adjoint(rv, rg, x, C[k], p, t, tau, gx, tmp_c, tmp_p, z, grad_c[k], grad_p)
        for i in range(n):
            lam[i] = z[i]
    for i in range(n):
        grad_x0[i] = lam[i]
    return value + tau * run, 0


# -- blocks of cotangents (constraint Jacobians) ----------------------------------------------------
#
# A block sweep carries r cotangents at once: one per row of the constraints' Jacobian. The adjoint
# state is the tuple ``lam = (Lam, w, vals)``: ``Lam`` (r, n) is the block (it is the caller's
# ``jac_x0`` output, filled in place), ``w`` a work vector of unit weights, ``vals`` (r,) receives
# the constraint values. The gradient buffers become ``jac_c`` (r, K, m) and ``jac_p`` (r, q).
# The context slots of the running and terminal costs carry the constraints instead: ``rv, rg``
# the path function ``h(x, c, p, t, out)`` and its VJP ``(x, c, p, t, w, out_x, out_c, out_p)``,
# ``has_run`` the literal ``every`` (0: no path constraint); ``tv, tg`` the terminal function and
# its VJP (called with an empty ``c`` and ``t = t1``), ``has_term`` the literal number of terminal
# rows. Rows: the terminal rows first, then ``q`` rows per path node ``k = 0, every, 2 every, ... <
# K``. A path row of node k is zero for the steps at and after k, so the block advances only the
# rows that are live. Store-all (:func:`jacobian_store_all`) and every streamed plan (the one
# executor, ``adjoint.checkpointing._streamed``, dispatching on the tuple) run these same
# functions, so their Jacobians agree bit for bit.


@njit(cache=True)
def zero_vector(x, c, p, t, out):  # pragma: no cover - compiled
    """Placeholder vector function (no path or terminal constraint)."""
    for i in range(out.shape[0]):
        out[i] = 0.0


@njit(cache=True)
def zero_vector_vjp(x, c, p, t, w, out_x, out_c, out_p):  # pragma: no cover - compiled
    for i in range(out_x.shape[0]):
        out_x[i] = 0.0
    for i in range(out_c.shape[0]):
        out_c[i] = 0.0
    for i in range(out_p.shape[0]):
        out_p[i] = 0.0


@njit(inline="always")
def block_path_rows(every, n_term, r, K):
    """Rows per path node of a block of ``r`` rows on ``K`` steps (0 without path constraints)."""
    if every:
        return (r - n_term) // ((K + every - 1) // every)
    return 0


@njit(inline="always")
def block_seed(tv, tg, has_term, x, p, t, lam, gpa):
    """Seed the block at ``x = x_K``: terminal row j gets ``grad_x g_j`` (and ``grad_p g_j`` in
    ``gpa[j]``), every other row zero; the terminal values go to ``vals[:has_term]``."""
    Lam, w, vals = lam
    cempty = np.empty(0)
    for j in range(Lam.shape[0]):
        for i in range(Lam.shape[1]):
            Lam[j, i] = 0.0
        for i in range(gpa.shape[1]):
            gpa[j, i] = 0.0
    if has_term:
        tv(x, cempty, p, t, vals[:has_term])
        for j in range(has_term):
            for i in range(has_term):
                w[i] = 0.0
            w[j] = 1.0
            tg(x, cempty, p, t, w[:has_term], Lam[j], cempty, gpa[j])


@njit(inline="always")
def block_adjoint_one(
    step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, xa, C, p, t0, tau, k, lam,
    grad_c, gpa, W,
):  # fmt: skip
    """Adjoint step ``k`` of a block from ``x_k`` (in ``xa``): every live row of ``Lam`` becomes its
    ``z_k``; at a path node, the node's rows are seeded with ``grad h_i(x_k, c_k)`` and their values
    written. Returns 0.0 (a block has no running cost)."""
    Lam, w, vals = lam
    stage_k, stage_x, stage_bar, stage_xbar, z, tmp_c, tmp_p = W[0], W[1], W[2], W[3], W[5], W[6], W[7]
    t = t0 + k * tau
    r = Lam.shape[0]
    n = xa.shape[0]
    q = block_path_rows(has_run, has_term, r, grad_c.shape[1])
    live = r  # path rows from ``live`` on belong to nodes after k
    if has_run:
        live = has_term + (k // has_run + 1) * q
    for j in range(r):
        if j < has_term or j >= live:
            adjoint_step(
                f, vjp, g, gvjp, xa, C[k], p, t, tau, A, b, cn, stage_k, stage_x, stage_bar, stage_xbar, Lam[j],
                tmp_c, tmp_p, z, grad_c[j, k], gpa[j],
            )  # fmt: skip
            for i in range(n):
                Lam[j, i] = z[i]
    if has_run:
        if k % has_run == 0:
            a0 = has_term + (k // has_run) * q
            rv(xa, C[k], p, t, vals[a0 : a0 + q])
            for i in range(q):
                for l in range(q):
                    w[l] = 0.0
                w[i] = 1.0
                # the node's rows were not live: their Lam, jac_c entries and jac_p are still zero
                rg(xa, C[k], p, t, w[:q], Lam[a0 + i], grad_c[a0 + i, k], gpa[a0 + i])
    return 0.0


@njit(inline="always")
def block_terminal(
    step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, xa, C, p, t0, tau, K, t1,
    x_final, lam, gpa, W,
):  # fmt: skip
    """The executor's terminal action for a block: the last step into ``x_final`` and
    :func:`block_seed`; returns ``(0.0, 0)``, or ``(0.0, K)`` when ``x_K`` is not finite."""
    stage_k, stage_x, xn = W[0], W[1], W[4]
    k = K - 1
    step(f, g, xa, C[k], p, t0 + k * tau, tau, A, b, cn, stage_k, stage_x[0], xn)
    if not _finite(xn):
        return 0.0, K
    for i in range(xa.shape[0]):
        x_final[i] = xn[i]
    block_seed(tv, tg, has_term, xn, p, t1, lam, gpa)
    return 0.0, 0


@njit(inline="always")
def block_adjoint_buffer(step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, x0, grad_x0):
    """The executor's adjoint state for a block, ``grad_x0 = (jac_x0, vals)``: ``(jac_x0, w, vals)``
    (the block is advanced in the output itself)."""
    Lam = grad_x0[0]
    return (Lam, np.zeros(max(Lam.shape[0], 1)), grad_x0[1])


@njit(inline="always")
def block_adjoint_out(step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, lam, grad_x0):
    """Nothing to copy: the block already is the output."""
    return None


#: the executor's actions a block sweep binds in place of the vector ones (``adjoint._bind``)
BLOCK_ACTIONS = {
    "g_adjoint_one": "block_adjoint_one",
    "g_terminal": "block_terminal",
    "g_adjoint_buffer": "block_adjoint_buffer",
    "g_adjoint_out": "block_adjoint_out",
}


@njit
def jacobian_store_all(
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
    x0,
    C,
    p,
    t0,
    tau,
    K,
    t1,
    A,
    b,
    cn,
    traj,
    jac_c,
    jac_p,
    jac_x0,
    vals,
):
    """The constraints' values and Jacobian (see the block conventions above), every state stored.

    Returns ``status``; ``traj`` (K + 1, n) receives the trajectory, ``jac_c`` (r, K, m) must be zero
    on entry.
    """
    n = x0.shape[0]
    ns = b.shape[0]
    W = (
        np.empty((ns, n)),
        np.empty((ns, n)),
        np.empty((ns, n)),
        np.empty((ns, n)),
        np.empty(n),
        np.empty(n),
        np.empty(C.shape[1]),
        np.empty(p.shape[0]),
    )
    x = x0.copy()
    bad = forward_store(step, f, g, x, C, p, t0, tau, K, A, b, cn, W[0], W[1][0], W[4], traj)
    if bad:
        return bad
    lam = (jac_x0, np.zeros(max(jac_x0.shape[0], 1)), vals)
    block_seed(tv, tg, has_term, x, p, t1, lam, jac_p)
    for k in range(K - 1, -1, -1):
        for i in range(n):
            x[i] = traj[k, i]
        block_adjoint_one(
            step, adjoint_step, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, A, b, cn, x, C, p, t0, tau, k,
            lam, jac_c, jac_p, W,
        )  # fmt: skip
    return 0
