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
    for i in range(n):
        traj[0, i] = x[i]
    stage_x0 = stage_x[0]
    for k in range(K):
        step(f, g, x, C[k], p, t0 + k * tau, tau, A, b, cn, stage_k, stage_x0, xn)
        if not _finite(xn):
            return 0.0, k + 1
        for i in range(n):
            x[i] = xn[i]
            traj[k + 1, i] = xn[i]
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
