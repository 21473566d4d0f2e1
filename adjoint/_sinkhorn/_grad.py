"""Gradients: :func:`sinkhorn_value_and_grad` (implicit, unrolled, envelope)."""

from __future__ import annotations

import numpy as np

from .._cg import conjugate_gradients
from ..checkpointing import MemoryBudget, Reversible, Revolve, StoreAll, Uniform, as_schedule
from ._kernels import PARALLEL, _log_weights, _n_chunks, _plan, kernels_for
from ._results import SinkhornGradResult
from ._reverse import reverse_kernels_for, schedule_runner
from ._solve import _as_eps, _as_points, _as_weights, _check_positive_int, _solve, _threads_for

# ----------------------------------------------------------------------------------
# Gradients
# ----------------------------------------------------------------------------------

_MODES = ("implicit", "unrolled", "envelope")
_COSTS = ("sqeuclidean",)
_LINEAR_SOLVERS = ("auto", "dense", "cg")


def _is_store_all(checkpoint):
    return checkpoint is None or isinstance(checkpoint, StoreAll)


def _is_auto(checkpoint):
    return isinstance(checkpoint, str) and checkpoint == "auto"


_CHECKPOINT_HELP = (
    "`checkpoint` must be None or StoreAll() (store every iterate), "
    "Revolve(snapshots=s), Uniform(snapshots=s) or MemoryBudget(bytes) (from "
    "adjoint / adjoint.checkpointing)"
)


def _check_checkpoint(checkpoint, mode, state_dim):
    """Validate ``checkpoint`` before the solve (fail fast)."""
    if _is_store_all(checkpoint) or _is_auto(checkpoint):
        return
    if isinstance(checkpoint, Reversible):
        raise ValueError(
            f"{_CHECKPOINT_HELP}; got {checkpoint!r}. Reversible needs an "
            f"invertible step, and a Sinkhorn iteration (a pair of soft "
            f"c-transforms) cannot be inverted: use Revolve(snapshots=s)."
        )
    if not isinstance(checkpoint, (Revolve, Uniform, MemoryBudget)):
        hint = ""
        if isinstance(checkpoint, str):
            hint = " Pass a schedule object, e.g. adjoint.Revolve(snapshots=10), not a string."
        elif isinstance(checkpoint, type):
            hint = " Pass an instance (e.g. Revolve(snapshots=10)), not the class."
        raise ValueError(f"{_CHECKPOINT_HELP}; got {checkpoint!r}.{hint}")
    if mode != "unrolled":
        raise ValueError(
            f"`checkpoint` only applies to mode='unrolled' (the reverse sweep "
            f"through the iterations); got checkpoint={checkpoint!r} with "
            f"mode={mode!r}."
        )
    if isinstance(checkpoint, MemoryBudget):
        checkpoint.snapshots(state_dim)  # raises if not even one iterate fits


def _resolve_checkpoint(checkpoint, iterations, state_dim):
    """(name, rule, slots) for K iterations; rule None means store every iterate.

    Store-all keeps the K + 1 iterates (f_0, g_0) ... (f_K, g_K), so a schedule
    with at least K + 1 slots stores everything (``Schedule.resolve_plan``, as for ODEs).
    """
    if checkpoint is None:
        return "StoreAll", None, iterations + 1
    plan = as_schedule(checkpoint).resolve_plan(iterations, state_dim)
    if plan.kind == "store_all":
        return "StoreAll", None, iterations + 1
    return plan.name, plan.rule, plan.snapshots


def _loss_terms(loss, P, f, g, a, b, C, eps):
    """Partials of a user loss of (plan, f, g), pushed through P = a b E.

    Returns (value, Lf, Lg, La, Lb, LC): partial derivatives with respect to the
    potentials and the inputs, P being a function of all of them.
    """
    out = loss(P, f, g)
    if not (isinstance(out, tuple) and len(out) == 4):
        raise ValueError(
            "`loss` must return a tuple (value, d_plan, d_f, d_g) (derivatives "
            "may be None meaning zero); got "
            f"{type(out).__name__}."
        )
    value, dP, df, dg = out
    n, m = P.shape
    Lf = np.zeros(n) if df is None else np.array(df, dtype=np.float64).reshape(n)
    Lg = np.zeros(m) if dg is None else np.array(dg, dtype=np.float64).reshape(m)
    La = np.zeros(n)
    Lb = np.zeros(m)
    LC = np.zeros((n, m))
    if dP is not None:
        dP = np.asarray(dP, dtype=np.float64)
        if dP.shape != (n, m):
            raise ValueError(f"`loss` d_plan must have shape {(n, m)}; got {dP.shape}.")
        W = dP * P
        Lf += W.sum(axis=1) / eps
        Lg += W.sum(axis=0) / eps
        LC -= W / eps
        E = np.exp((f[:, None] + g[None, :] - C) / eps)
        La += (dP * E) @ b
        Lb += (dP * E).T @ a
    return float(value), Lf, Lg, La, Lb, LC


def _schur_solve(P, d1, d2, R1, R2, solver, cg_tol, cg_max_iter):
    """Solve [[D1, P], [P^T, D2]] (x1, x2) = (R1, R2), consistent and singular
    along (1, -1): eliminate x1, solve the Schur complement
    S = D2 - P^T D1^{-1} P (null vector 1) with the rank-one correction
    S + beta 1 1^T (nonsingular; picks 1^T x2 = 0), back-substitute.
    """
    inv1 = np.divide(1.0, d1, out=np.zeros_like(d1), where=d1 > 0)
    s = R2 - P.T @ (inv1 * R1)
    m2 = d2.shape[0]
    beta = float(d2.mean()) / m2
    if solver == "dense":
        Q = P * np.sqrt(inv1)[:, None]
        S = -(Q.T @ Q)
        S[np.diag_indices(m2)] += d2
        S += beta
        import scipy.linalg  # lazily: keeps `import adjoint` light

        x2 = scipy.linalg.solve(S, s, assume_a="pos")
        its = 0
    else:

        def matvec(v, out):
            out[:] = d2 * v - P.T @ (inv1 * (P @ v)) + beta * v.sum()

        diag = d2 - (P * P).T @ inv1 + beta
        diag = np.where(diag > 0, diag, d2.mean())
        x2, its, _ = conjugate_gradients(matvec, s, cg_tol, cg_max_iter, diag=diag, stop_at_nonpositive_curvature=False)
    x1 = inv1 * (R1 - P @ x2)
    return x1, x2, its


def _implicit_adjoint(P, a, b, Lf, Lg, eps, solver, cg_tol, cg_max_iter):
    """Adjoint of the gauge-fixed optimality system.

    Unknowns z = (f, g); equations G(z) = (a - P 1, b - P^T 1) = 0 (Hessian of
    the dual H = -K/eps, K = [[diag r, P], [P^T, diag c]], singular along
    u = (1, -1)) bordered by the gauge h(z) = <f, a> - <g, b> = 0, v = grad h =
    (a, -b), v^T u = sum a + sum b != 0 so the bordered matrix is nonsingular.
    The transposed bordered system [[H, v], [v^T, 0]] (lam, sigma) = (L_z, 0)
    gives sigma = u^T L_z / v^T u and K lam = eps (sigma v - L_z), v^T lam = 0.
    """
    n, m = P.shape
    r = P.sum(axis=1)
    c = P.sum(axis=0)
    sa, sb = a.sum(), b.sum()
    sigma = (Lf.sum() - Lg.sum()) / (sa + sb)
    Rf = eps * (sigma * a - Lf)
    Rg = eps * (-sigma * b - Lg)
    if solver == "auto":
        solver = "dense" if min(n, m) <= 3000 else "cg"
    if n >= m:
        lf, lg, its = _schur_solve(P, r, c, Rf, Rg, solver, cg_tol, cg_max_iter)
    else:
        lg, lf, its = _schur_solve(P.T, c, r, Rg, Rf, solver, cg_tol, cg_max_iter)
    t = (a @ lf - b @ lg) / (sa + sb)
    lf = lf - t
    lg = lg + t
    res_f = r * lf + P @ lg - Rf
    res_g = P.T @ lf + c * lg - Rg
    nrm = np.sqrt(Rf @ Rf + Rg @ Rg)
    resid = float(np.sqrt(res_f @ res_f + res_g @ res_g) / nrm) if nrm > 0 else 0.0
    return lf, lg, sigma, solver, its, resid


def _sqeuclidean_pullback(G, x, y):
    """grad_x, grad_y of <G, C(x, y)> with C_ij = |x_i - y_j|^2."""
    gx = 2.0 * (x * G.sum(axis=1)[:, None] - G @ y)
    gy = 2.0 * (y * G.sum(axis=0)[:, None] - G.T @ x)
    return gx, gy


def _center(v):
    return v - v.mean()


def sinkhorn_value_and_grad(
    a,
    b,
    x,
    y,
    eps,
    *,
    mode="implicit",
    cost="sqeuclidean",
    loss=None,
    tol=1e-9,
    max_iter=10_000,
    method="auto",
    eps_scaling=None,
    checkpoint="auto",
    linear_solver="auto",
    cg_tol=1e-12,
    cg_max_iter=None,
    warn=True,
):
    """Regularised OT cost between point clouds and its gradient.

    Parameters
    ----------
    a : array_like, shape (n,)
        Source weights (nonnegative, sum 1).
    b : array_like, shape (m,)
        Target weights (nonnegative, sum 1).
    x : array_like, shape (n, d)
        Source points.
    y : array_like, shape (m, d)
        Target points.
    eps : float
        Entropic regularisation (> 0).
    mode : {"implicit", "unrolled", "envelope"}, optional
        How the gradient is obtained (see Notes).
    cost : {"sqeuclidean"}, optional
        Ground cost ``C_ij = |x_i - y_j|^2`` (POT's ``ot.dist`` default).
    loss : callable or None, optional
        ``loss(plan, f, g) -> (value, d_plan, d_f, d_g)`` with the partial
        derivatives of the loss (``None`` for a zero derivative); potentials are
        in the gauge ``<f, a> = <g, b>``.  Default: the regularised cost
        ``<f, a> + <g, b>``.  Not available with ``mode="envelope"``.
    tol, max_iter, method, eps_scaling :
        As in :func:`solve_sinkhorn` (``mode="unrolled"`` always iterates in
        the log domain, the iterations it differentiates).
    checkpoint : "auto", None, StoreAll, Revolve, Uniform or MemoryBudget, default "auto"
        Memory strategy of ``mode="unrolled"`` (schedules of
        :mod:`adjoint.checkpointing`): ``"auto"`` is ``MemoryBudget`` of
        ``DEFAULT_MEMORY_BUDGET``, as in :func:`adjoint.solve_adjoint` (other modes
        store no iterates and ignore it); ``None`` or ``StoreAll()`` stores the
        K + 1 iterates ``(f_k, g_k)``; ``Revolve(snapshots=s)`` and
        ``Uniform(snapshots=s)`` store at most ``s`` and recompute the others;
        ``MemoryBudget(bytes)`` stores all if ``K + 1`` iterates of ``n + m``
        floats fit, else runs Revolve with as many as fit.  The gradient is
        bitwise the same whatever the schedule.
    linear_solver : {"auto", "dense", "cg"}, optional
        Implicit mode: Schur complement solved densely (Cholesky, O(min(n,m)^3))
        or by Jacobi-preconditioned CG (matrix-vector products with the plan).
        ``"auto"``: dense when ``min(n, m) <= 3000``.
    cg_tol, cg_max_iter : optional
        CG relative tolerance and iteration cap (default ``10 min(n, m)``).
    warn : bool, optional
        Warn on non-convergence of the forward solve.

    Returns
    -------
    SinkhornGradResult

    Notes
    -----
    *envelope* (Danskin): at the optimum of the dual
    ``D(f, g) = <f, a> + <g, b> - eps <a x b, exp((f + g - C)/eps) - 1>`` the
    gradient of the value is the partial gradient of D:
    ``grad_a = f, grad_b = g, grad_C = P``.  Exact at convergence for the
    regularised cost only; costs one pass over the plan after the solve.

    *implicit*: differentiates the fixed point.  The optimality equations
    ``G(f, g) = (a - P 1, b - P^T 1) = 0`` have Jacobian
    ``-[[diag(P 1), P], [P^T, diag(P^T 1)]]/eps``, singular along ``(1, -1)``
    (the gauge ``(f + c, g - c)``).  The gauge is fixed explicitly by the
    equation ``<f, a> = <g, b>`` (bordered system); the adjoint solve reduces to
    a Schur complement ``S = D_c - P^T D_r^{-1} P`` on the smaller side, made
    nonsingular by the rank-one correction ``S + beta 1 1^T`` (its null vector is
    ``1``), then the gauge multiplier is recovered in closed form.  Exact for any
    loss at convergence; time: the solve plus O(min(n,m)^3) (dense) or O(n m)
    per CG iteration; memory: the plan, O(n m).

    *unrolled*: reverse-mode sweep through the log-domain iterations actually
    run (store-all: memory O(K (n + m)) for K iterations, time about one more
    forward pass plus O(n m) gradient accumulation per iteration).  The exact
    gradient of the computed (possibly unconverged) iterate; tends to the
    implicit gradient as K grows.  With a checkpoint schedule of ``s`` slots
    the forward solve runs without storing (convergence fixes K), then the
    schedule reverses the K steps ``x_k = (f_k, g_k) -> x_{k+1}``: its advances
    recompute ``p(K, s)`` iterations for Revolve (``Revolve(s).forward_steps(K)
    - 1``; the terminal step is the solve's last iteration) and every adjoint
    step recomputes its own iteration from its input state (``K - 1`` more), so
    ``forward_iterations = K + p(K, s) + K - 1`` instead of K, with
    ``min(s, K)`` stored iterates instead of K + 1.

    The weights live on simplices, so ``grad_a`` and ``grad_b`` are defined up
    to constants; they are returned projected on ``sum(da) = 0``, i.e. with zero
    mean: ``<grad_a, da>`` is the directional derivative for every ``da`` with
    zero sum.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint._sinkhorn import sinkhorn_value_and_grad
    >>> rng = np.random.default_rng(0)
    >>> x = rng.random((5, 2)); y = rng.random((4, 2))
    >>> a = np.full(5, 0.2); b = np.full(4, 0.25)
    >>> r1 = sinkhorn_value_and_grad(a, b, x, y, 0.1, mode="implicit", tol=1e-12)
    >>> r2 = sinkhorn_value_and_grad(a, b, x, y, 0.1, mode="envelope", tol=1e-12)
    >>> bool(np.allclose(r1.grad_x, r2.grad_x, atol=1e-9)), r1.grad_y.shape
    (True, (4, 2))
    """
    a = _as_weights(a, "a", "n")
    b = _as_weights(b, "b", "m")
    n, m = a.shape[0], b.shape[0]
    x = _as_points(x, "x", n, "n")
    y = _as_points(y, "y", m, "m", d=x.shape[1])
    eps = _as_eps(eps)
    max_iter = _check_positive_int(max_iter, "max_iter")
    tol = float(tol)
    if not tol >= 0:
        raise ValueError(f"`tol` must be >= 0; got {tol!r}.")
    if mode not in _MODES:
        raise ValueError(f"`mode` must be one of {_MODES}; got {mode!r}.")
    if cost not in _COSTS:
        raise ValueError(f"`cost` must be one of {_COSTS}; got {cost!r}.")
    if linear_solver not in _LINEAR_SOLVERS:
        raise ValueError(f"`linear_solver` must be one of {_LINEAR_SOLVERS}; got {linear_solver!r}.")
    if loss is not None and not callable(loss):
        raise ValueError(f"`loss` must be callable or None; got {loss!r}.")
    if loss is not None and mode == "envelope":
        raise ValueError(
            "`mode='envelope'` is exact only for the regularised cost itself; "
            "got a user `loss`. Use mode='implicit' or mode='unrolled'."
        )
    _check_checkpoint(checkpoint, mode, n + m)
    if cg_max_iter is None:
        cg_max_iter = 10 * min(n, m)
    with _threads_for(n * m):
        return _value_and_grad(
            a,
            b,
            x,
            y,
            eps,
            mode,
            loss,
            tol,
            max_iter,
            method,
            eps_scaling,
            linear_solver,
            cg_tol,
            cg_max_iter,
            warn,
            checkpoint,
        )


def _value_and_grad(
    a,
    b,
    x,
    y,
    eps,
    mode,
    loss,
    tol,
    max_iter,
    method,
    eps_scaling,
    linear_solver,
    cg_tol,
    cg_max_iter,
    warn,
    checkpoint="auto",
):
    n, m = a.shape[0], b.shape[0]
    C = np.empty((n, m))
    kernels_for(C.size)._k_sqeuclidean(x, y, C)
    kw = dict(
        tol=tol, max_iter=max_iter, method=method, eps_scaling=eps_scaling, init=None, warn=warn, return_plan=False
    )
    if mode == "unrolled":
        return _grad_unrolled(a, b, C, x, y, eps, loss, kw, checkpoint)
    sol = _solve(a, b, C, eps, **kw)
    f, g = sol.f, sol.g
    P = sol.plan
    if mode == "envelope":
        value = sol.dual_value
        ga, gb, GC = f, g, P
        gx, gy = _sqeuclidean_pullback(GC, x, y)
        return SinkhornGradResult(
            value=value,
            grad_a=_center(ga),
            grad_b=_center(gb),
            grad_x=gx,
            grad_y=gy,
            mode=mode,
            solution=sol,
            stored_bytes=P.nbytes,
        )
    # implicit
    if loss is None:
        value = sol.dual_value
        Lf, Lg, La, Lb = a.copy(), b.copy(), f.copy(), g.copy()
        LC = None
    else:
        value, Lf, Lg, La, Lb, LC = _loss_terms(loss, P, f, g, a, b, C, eps)
    try:
        lf, lg, sigma, solver, its, resid = _implicit_adjoint(P, a, b, Lf, Lg, eps, linear_solver, cg_tol, cg_max_iter)
    except np.linalg.LinAlgError as exc:  # what scipy.linalg.solve raises
        state = (
            "converged"
            if sol.converged
            else f"did NOT converge: marginal error {sol.marginal_error:.3g} > tol={tol:g} after "
            f"{sol.iterations} iterations"
        )
        raise FloatingPointError(
            f"sinkhorn_value_and_grad(mode='implicit'): the linear system of the implicit adjoint "
            f"is singular at eps={eps:g} ({exc}); the Sinkhorn solve {state}. The implicit "
            f"function theorem differentiates the optimum: converge first (`eps_scaling=0.9`, a "
            f"larger `max_iter` or `eps`), or use mode='unrolled' to differentiate the iterations "
            f"actually run."
        ) from exc
    Lam = P * (lf[:, None] + lg[None, :])
    # sum_j b_j E_ij (lf_i + lg_j) = (Lam 1)_i / a_i where a_i > 0
    ra = Lam.sum(axis=1)
    cb = Lam.sum(axis=0)
    rowt = np.divide(ra, a, out=np.zeros(n), where=a > 0)
    colt = np.divide(cb, b, out=np.zeros(m), where=b > 0)
    if np.any(a == 0) or np.any(b == 0):
        E = np.exp((f[:, None] + g[None, :] - C) / eps)
        lamE = E * (lf[:, None] + lg[None, :])
        z = a == 0
        rowt[z] = lamE[z] @ b
        z = b == 0
        colt[z] = lamE[:, z].T @ a
    ga = La - lf + rowt - sigma * f
    gb = Lb - lg + colt + sigma * g
    GC = -Lam / eps
    if LC is not None:
        GC += LC
    gx, gy = _sqeuclidean_pullback(GC, x, y)
    k = min(n, m)
    sys_bytes = k * k * 8 if solver == "dense" else 0
    return SinkhornGradResult(
        value=float(value),
        grad_a=_center(ga),
        grad_b=_center(gb),
        grad_x=gx,
        grad_y=gy,
        mode=mode,
        solution=sol,
        linear_solver=solver,
        linear_iterations=int(its),
        linear_residual=resid,
        stored_bytes=P.nbytes + Lam.nbytes + sys_bytes,
    )


def _unrolled_seed(a, b, C, eps, loss, fK, gK):
    """Output layer of the unrolled gradient at the raw iterate (f_K, g_K).

    Returns (value, fbar, gbar, abar, bbar, Cbar): the value and its adjoints
    with respect to f_K, g_K, a, b and C (through the gauge shift and the loss).
    """
    n, m = C.shape
    sab = a.sum() + b.sum()
    cshift = (gK @ b - fK @ a) / sab
    fgauge, ggauge = fK + cshift, gK - cshift
    if loss is None:
        value = float(fgauge @ a + ggauge @ b)
        Lf, Lg, La, Lb = a.copy(), b.copy(), fgauge.copy(), ggauge.copy()
        LC = None
    else:
        P = _plan(C, fgauge, ggauge, a, b, eps)
        value, Lf, Lg, La, Lb, LC = _loss_terms(loss, P, fgauge, ggauge, a, b, C, eps)
    # backprop through the gauge shift f' = f + c, g' = g - c,
    # c = (<g, b> - <f, a>) / (sum a + sum b)
    cbar = Lf.sum() - Lg.sum()
    fbar = Lf + cbar * (-a / sab)
    gbar = Lg + cbar * (b / sab)
    abar = La + cbar * (-fK - cshift) / sab
    bbar = Lb + cbar * (gK - cshift) / sab
    Cbar = np.zeros((n, m)) if LC is None else np.ascontiguousarray(LC)
    return value, fbar, gbar, abar, bbar, Cbar


def _grad_unrolled(a, b, C, x, y, eps, loss, kw, checkpoint=None):
    n, m = C.shape
    if not _is_store_all(checkpoint):
        name, rule, s = _resolve_checkpoint(checkpoint, kw["max_iter"], n + m)
        if rule is not None:
            # K is decided by convergence: solve without storing, then reverse
            # the K iterations under the schedule
            sol, sched, (fK, gK) = _solve(a, b, C, eps, raw=True, **kw)
            K = sol.iterations
            if K > 0:
                name, rule, s = _resolve_checkpoint(checkpoint, K, n + m)
            if K > 0 and rule is not None:
                return _grad_checkpointed(a, b, C, x, y, eps, loss, sol, sched, fK, gK, name, rule, s)
            # everything fits after all: store every iterate (one more solve)
    return _grad_store_all(a, b, C, x, y, eps, loss, kw)


_EMPTY = np.empty(0)
_EMPTY2 = np.empty((0, 0))


def _grad_checkpointed(a, b, C, x, y, eps, loss, sol, sched, fK, gK, name, rule, s):
    n, m = C.shape
    K = sol.iterations
    value, fbar, gbar, abar, bbar, Cbar = _unrolled_seed(a, b, C, eps, loss, fK, gK)
    work = np.empty((_n_chunks(n), m))
    # the executor of streamed plans with Sinkhorn's actions; the state x_k = (f_k, g_k), x_0 = 0
    ctx = (C, a, b, _log_weights(a), _log_weights(b), np.ascontiguousarray(sched), fK, gK, abar, bbar, Cbar, work)
    recomputed = np.zeros(1, dtype=np.int64)
    ctx = ctx + (fbar, gbar, recomputed)  # the seed (the adjoint of x_0 lands in grad_x0, unused)
    x0 = np.zeros(n + m)
    grad_x0 = np.empty(n + m)
    counters = np.zeros(3, dtype=np.int64)
    run = schedule_runner(kernels_for(C.size) is not PARALLEL)
    run(x0, ctx, _EMPTY, 0.0, 1.0, K, 0.0, rule, s, np.empty(n + m), _EMPTY2, _EMPTY, grad_x0, counters)
    if counters[2]:  # pragma: no cover - planner bug
        raise RuntimeError("checkpoint planner stack overflow (please report)")
    gx, gy = _sqeuclidean_pullback(Cbar, x, y)
    se = min(s, K)
    return SinkhornGradResult(
        value=value,
        grad_a=_center(abar),
        grad_b=_center(bbar),
        grad_x=gx,
        grad_y=gy,
        mode="unrolled",
        solution=sol,
        stored_bytes=se * (n + m) * 8 + Cbar.nbytes,
        schedule=name,
        # K in the forward solve; the executor counts the terminal step (taken from that solve here)
        # among its steps, then the iterations of advance actions; recomputed ones inside adjoint steps
        forward_iterations=int(K + counters[0] - 1 + recomputed[0]),
        peak_stored_iterates=int(counters[1]),
    )


def _grad_store_all(a, b, C, x, y, eps, loss, kw):
    n, m = C.shape
    sol, (Fs, Gs, sched), (f_raw, g_raw) = _solve(a, b, C, eps, store=True, **kw)
    K = sol.iterations
    value, fbar, gbar, abar, bbar, Cbar = _unrolled_seed(a, b, C, eps, loss, Fs[K], Gs[K])
    work = np.empty((_n_chunks(n), m))
    reverse_kernels_for(C.size)._k_run_reverse(
        C,
        a,
        b,
        np.ascontiguousarray(sched),
        Fs,
        Gs,
        fbar,
        gbar,
        abar,
        bbar,
        Cbar,
        work,
    )
    gx, gy = _sqeuclidean_pullback(Cbar, x, y)
    return SinkhornGradResult(
        value=value,
        grad_a=_center(abar),
        grad_b=_center(bbar),
        grad_x=gx,
        grad_y=gy,
        mode="unrolled",
        solution=sol,
        stored_bytes=Fs.nbytes + Gs.nbytes + Cbar.nbytes,
        schedule="StoreAll",
        forward_iterations=K,
        peak_stored_iterates=K + 1,
    )
