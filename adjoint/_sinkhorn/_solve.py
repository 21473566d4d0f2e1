"""The forward solve: :func:`solve_sinkhorn`, input validation, strategy selection."""

from __future__ import annotations

import contextlib
import math
import warnings

import numba
import numpy as np

from ._kernels import (
    _PARALLEL_MIN_ENTRIES,
    _SC_BAD_COL,
    _SC_CONVERGED,
    _SC_DONE,
    _k_absorb,
    _k_col_from_sums,
    _log_weights,
    _n_chunks,
    _plan,
    kernels_for,
)
from ._results import SinkhornResult

# ----------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------

_NORM_TOL = 1e-8


def _as_weights(w, name, size_name):
    arr = np.asarray(w, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(
            f"`{name}` must be a 1-D array of weights; got shape {arr.shape}. Pass a vector of length {size_name}."
        )
    if arr.shape[0] == 0:
        raise ValueError(f"`{name}` must not be empty.")
    if not np.all(np.isfinite(arr)):
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise ValueError(f"`{name}` must be finite; got {arr[i]} at index {i}.")
    if np.any(arr < 0):
        i = int(np.argmin(arr))
        raise ValueError(
            f"`{name}` must be nonnegative (weights of a probability measure); "
            f"got {float(arr[i])!r} at index {i}. Clip or shift the weights, then "
            f"normalise them."
        )
    s = float(arr.sum())
    if abs(s - 1.0) > _NORM_TOL:
        raise ValueError(
            f"`{name}` must sum to 1 (balanced transport between probability "
            f"measures); got sum {s!r}. Normalise it: `{name} / {name}.sum()`."
        )
    return np.ascontiguousarray(arr)


def _as_eps(eps):
    try:
        e = float(eps)
    except (TypeError, ValueError):
        raise ValueError(f"`eps` must be a positive float; got {eps!r}.") from None
    if not (e > 0.0 and math.isfinite(e)):
        raise ValueError(
            f"`eps` must be a positive finite float (the entropic "
            f"regularisation); got {eps!r}. Use e.g. eps=0.05 times the cost "
            f"scale."
        )
    return e


def _as_cost(cost, n, m):
    C = np.asarray(cost, dtype=np.float64)
    if C.shape != (n, m):
        raise ValueError(f"`cost` must have shape (n, m) = ({n}, {m}) to match `a` and `b`; got shape {C.shape}.")
    if not np.all(np.isfinite(C)):
        bad = np.argwhere(~np.isfinite(C))[0]
        raise ValueError(
            f"`cost` must be finite; got {C[tuple(bad)]} at index "
            f"{tuple(int(i) for i in bad)}. Remove NaN/inf entries (forbid a pair "
            f"with a large finite cost instead of inf)."
        )
    return np.ascontiguousarray(C)


def _as_points(p, name, n, size_name, d=None):
    arr = np.asarray(p, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(
            f"`{name}` must have shape ({size_name}, d) = ({n}, d) to match the weights; got shape {arr.shape}."
        )
    if d is not None and arr.shape[1] != d:
        raise ValueError(f"`{name}` must have the same dimension d = {d} as `x`; got shape {arr.shape}.")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` must be finite; it contains NaN or inf.")
    return np.ascontiguousarray(arr)


def _check_positive_int(v, name):
    if not isinstance(v, (int, np.integer)) or v < 1:
        raise ValueError(f"`{name}` must be a positive integer; got {v!r}.")
    return int(v)


_METHODS = ("auto", "log", "scaling")


# ----------------------------------------------------------------------------------
# Forward solve
# ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _threads_for(n_entries):
    """Run small problems on one thread (restores the caller's setting); they run the serial kernels
    (:func:`._kernels.kernels_for`), this keeps numba's other parallel code of the call serial too."""
    if n_entries >= _PARALLEL_MIN_ENTRIES:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        yield
    finally:
        numba.set_num_threads(old)


def _eps_schedule(C, eps, eps_scaling):
    """eps per iteration: stages (one iteration each) then eps.

    ``eps_scaling`` = ratio r in (0, 1): geometric decrease from the cost range
    ``max C - min C`` to eps; or an explicit 1-D sequence of stage values.
    """
    if eps_scaling is None:
        return np.array([eps])
    if np.ndim(eps_scaling) == 1:
        st = np.asarray(eps_scaling, dtype=np.float64)
        if not (np.all(np.isfinite(st)) and np.all(st > 0)):
            raise ValueError(
                f"`eps_scaling` given as a sequence must hold positive finite values; got {eps_scaling!r}."
            )
        return np.concatenate([st, [eps]])
    try:
        r = float(eps_scaling)
    except (TypeError, ValueError):
        r = -1.0
    if not (0.0 < r < 1.0):
        raise ValueError(
            f"`eps_scaling` must be a ratio in (0, 1) (e.g. 0.9), a 1-D sequence "
            f"of eps values, or None; got {eps_scaling!r}."
        )
    eps0 = max(float(C.max() - C.min()), eps)
    k = max(0, int(math.ceil(math.log(eps / eps0) / math.log(r))))
    sched = eps0 * r ** np.arange(k + 1)
    sched = np.maximum(sched, eps)
    sched[-1] = eps
    return sched


def _gauge(f, g, a, b):
    """Shift (f + c, g - c) so that <f, a> = <g, b>."""
    c = (g @ b - f @ a) / (a.sum() + b.sum())
    return f + c, g - c


def _log_stages(kern, C, a, loga, logb, b, stages, f, g, work):
    """One log-domain iteration at each eps of ``stages``, in place on (f, g); returns the number done.

    The iterates of ``_k_log_loop_fused(C, a, loga, logb, b, stages, f, g, len(stages), 0.0, work)``
    bit for bit, stepped from Python with the half steps that the scaling loop compiles anyway: a
    cold start of the scaling path then does not compile that loop. The fused row step (whose
    column sums replace the next column step when eps does not change) is used only before a
    stage with the same eps, as in the loop; its new row potentials are those of _k_row_update.
    """
    n, m = C.shape
    g_new = np.empty(m)
    f_new = np.empty(n)
    W = wsum = None
    have_w = False
    for k in range(len(stages)):
        eps = stages[k]
        done = have_w and _k_col_from_sums(W, b, g, eps, g_new)
        if not done:
            kern._k_col_update(C, f, loga, g, eps, g_new, work)
        bad = np.flatnonzero(~np.isfinite(g_new))
        if bad.size:  # the loop copies the finite entries before the first bad one, then stops
            g[: bad[0]] = g_new[: bad[0]]
            return k
        g[:] = g_new
        if k + 1 < len(stages) and stages[k + 1] == eps:
            if W is None:
                W = np.empty(m)
                wsum = np.empty(work.shape)
            have_w = kern._k_row_update_fused(C, g, logb, f, a, eps, f_new, work, wsum, W)
        else:
            kern._k_row_update(C, g, logb, f, eps, f_new, work)
            have_w = False
        f[:] = f_new
    return len(stages)


def _scaling_loop(kern, C, a, b, loga, logb, eps, f, g, max_iter, tol, tau, work):
    """Stabilised scaling iterations (Schmitzer 2019), in place on (f, g).

    Plan P = diag(a u) Kt diag(b v) with the absorbed kernel Kt = exp((f + g - C)/eps) (scratch,
    n x m).  The scalings (u, v) are absorbed into (f, g) and Kt rebuilt when |log u| or |log v|
    exceeds tau; a scaling that over- or underflows is recomputed by a log-domain half step (always
    safe).  The iterations run in _k_scaling_iterate, which returns here for each absorption (rare:
    the kernel is rebuilt, O(nm) work either way).  Returns (iterations, converged, last error,
    absorptions).
    """
    n, m = C.shape
    Kt = np.empty((n, m))
    u = np.ones(n)
    v = np.ones(m)
    un = np.empty(n)
    vn = np.empty(m)
    bv = np.empty(m)
    kv = np.empty(m)  # Kt^T (a u) for the current u
    kv_next = np.empty(m)
    kern._k_gibbs(C, f, g, eps, Kt)
    kern._k_kt_matvec(Kt, a * u, work, kv)
    n_absorb = 0
    err = np.inf
    k = 0
    phase = 0
    while True:
        k, code, err = kern._k_scaling_iterate(
            Kt, a, b, tau, tol, max_iter, k, phase, err, u, v, un, vn, bv, kv, kv_next, work
        )
        if code == _SC_DONE or code == _SC_CONVERGED:
            break
        _k_absorb(f, g, u, v, eps)
        n_absorb += 1
        if code == _SC_BAD_COL:  # the column step in the log domain, then the row step of iteration k
            g_new = np.empty(m)
            kern._k_col_update(C, f, loga, g, eps, g_new, work)
            g[:] = g_new
            kern._k_gibbs(C, f, g, eps, Kt)
            phase = 1
        else:  # the row step in the log domain ends iteration k
            f_new = np.empty(n)
            kern._k_row_update(C, g, logb, f, eps, f_new, work)
            f[:] = f_new
            kern._k_gibbs(C, f, g, eps, Kt)
            kern._k_kt_matvec(Kt, a * u, work, kv)
            k += 1
            phase = 0
    _k_absorb(f, g, u, v, eps)
    return k, code == _SC_CONVERGED, err, n_absorb


def _solve(a, b, C, eps, *, tol, max_iter, method, eps_scaling, init, warn, return_plan, store=False, raw=False):
    """Validated inputs -> SinkhornResult (and stored iterates when store=True).

    ``raw=True``: log-domain iterations without storing, returns
    ``(result, eps schedule, (f_K, g_K))`` with the potentials before the gauge
    shift (the input of the output layer of a checkpointed unrolled gradient).
    """
    n, m = C.shape
    kern = kernels_for(C.size)
    loga = _log_weights(a)
    logb = _log_weights(b)
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {_METHODS}; got {method!r}.")
    sched = _eps_schedule(C, eps, eps_scaling)
    if init is None:
        f = np.zeros(n)
        g = np.zeros(m)
    else:
        f = np.array(init[0], dtype=np.float64)
        g = np.array(init[1], dtype=np.float64)
        if f.shape != (n,) or g.shape != (m,):
            raise ValueError(f"`init` must be a pair (f, g) of shapes ({n},), ({m},); got {f.shape}, {g.shape}.")
    work = np.empty((_n_chunks(n), m))
    if method == "auto":
        # the scaling domain is as accurate as the log domain with absorption;
        # the log domain is kept where the kernel would be rebuilt too often
        method = "scaling" if (C.max() - C.min()) / eps <= 2000.0 else "log"
    if store or raw:
        method = "log"  # the unrolled adjoint differentiates log-domain iterates
    absorptions = 0
    stored = None
    if method == "log":
        if store:
            cap = min(max_iter, 64) + 1
            Fs = np.empty((cap, n))
            Gs = np.empty((cap, m))
            Fs[0] = f
            Gs[0] = g
            done = 0
            converged = False
            while True:
                room = Fs.shape[0] - 1 - done
                chunk = min(room, max_iter - done)
                k, converged, err = kern._k_log_loop(
                    C,
                    loga,
                    logb,
                    b,
                    sched[done:] if done < len(sched) else sched[-1:],
                    f,
                    g,
                    chunk,
                    tol,
                    work,
                    Fs,
                    Gs,
                    done,
                )
                done += k
                if converged or done >= max_iter or k < chunk:
                    break
                newcap = min(2 * (Fs.shape[0] - 1), max_iter) + 1
                Fs = np.concatenate([Fs, np.empty((newcap - Fs.shape[0], n))])
                Gs = np.concatenate([Gs, np.empty((newcap - Gs.shape[0], m))])
            stored = (Fs[: done + 1].copy(), Gs[: done + 1].copy(), sched)
            iters = done
        else:
            if raw:  # iterates recomputed bit for bit by the checkpointed adjoint
                empty = np.empty((0, 0))
                iters, converged, err = kern._k_log_loop(
                    C, loga, logb, b, sched, f, g, max_iter, tol, work, empty, empty, 0
                )
            else:
                iters, converged, err = kern._k_log_loop_fused(C, a, loga, logb, b, sched, f, g, max_iter, tol, work)
    else:
        iters = 0
        if len(sched) > 1:
            iters = _log_stages(kern, C, a, loga, logb, b, sched[:-1], f, g, work)
        if init is None and iters == 0:
            # one log-domain iteration: potentials of the right magnitude, so the
            # absorbed kernel is O(1) whatever the cost scale and sign. The two
            # half steps of _k_log_loop_fused, bit for bit, called directly: that
            # loop's compilation is not needed on this path
            g_new = np.empty(m)
            kern._k_col_update(C, f, loga, g, eps, g_new, work)
            if np.all(np.isfinite(g_new)):
                g[:] = g_new
                f_new = np.empty(n)
                kern._k_row_update(C, g, logb, f, eps, f_new, work)
                f[:] = f_new
                iters += 1
        k2, converged, err, absorptions = _scaling_loop(
            kern, C, a, b, loga, logb, eps, f, g, max(max_iter - iters, 0), tol, 50.0, work
        )
        iters += k2
    if not (np.all(np.isfinite(f)) and np.all(np.isfinite(g))):
        raise FloatingPointError(
            f"Sinkhorn potentials became non-finite after {iters} iterations "
            f"(eps={eps}); please report this with the inputs."
        )
    pc, pl, rows, cols = kern._k_plan_stats(C, f, g, loga, logb, eps, work)
    marg = float(np.abs(rows - a).sum() + np.abs(cols - b).sum())
    total = float(rows.sum())
    reg = pc + eps * (pl - total + 1.0)
    converged = bool(converged)
    if tol > 0 and not converged and warn:
        warnings.warn(
            f"Sinkhorn did not converge: marginal error {marg:.3g} > tol={tol:g} "
            f"after max_iter={max_iter} iterations (eps={eps:g}). Increase "
            f"`max_iter`, use `eps_scaling=0.9`, or a larger `eps`.",
            RuntimeWarning,
            stacklevel=3,
        )
    fg, gg = _gauge(f, g, a, b)
    plan = _plan(C, fg, gg, a, b, eps) if return_plan else None
    res = SinkhornResult(
        f=fg,
        g=gg,
        transport_cost=float(pc),
        reg_cost=float(reg),
        iterations=int(iters),
        marginal_error=marg,
        converged=converged,
        eps=eps,
        method=method,
        absorptions=int(absorptions),
        a=a,
        b=b,
        cost=C,
        stored_plan=plan,
    )
    if store:
        return res, stored, (f, g)
    if raw:
        return res, sched, (f, g)
    return res


def solve_sinkhorn(
    a,
    b,
    cost,
    eps,
    *,
    tol=1e-9,
    max_iter=10_000,
    method="auto",
    eps_scaling=None,
    init=None,
    return_plan=False,
    warn=True,
):
    """Entropic optimal transport between weights ``a`` and ``b``.

    Parameters
    ----------
    a : array_like, shape (n,)
        Source weights: nonnegative, summing to 1 (zeros allowed).
    b : array_like, shape (m,)
        Target weights: nonnegative, summing to 1.
    cost : array_like, shape (n, m)
        Cost matrix ``C`` (finite; any sign).
    eps : float
        Entropic regularisation, > 0, in the units of ``cost``.
    tol : float, optional
        Stop when the L1 marginal error ``|P^T 1 - b|_1`` is ``<= tol`` (the row
        marginals are exact after each iteration).  ``tol = 0`` runs exactly
        ``max_iter`` iterations without a warning.
    max_iter : int, optional
        Maximum number of iterations.  Non-convergence is reported in the result
        (``converged=False``) and warned (``RuntimeWarning``).
    method : {"auto", "log", "scaling"}, optional
        ``"log"``: log-domain iterations (one exponential per entry and
        iteration: the row half step also yields the next column update's sums;
        parallel over rows).  ``"scaling"``: Schmitzer's stabilised scaling
        (matrix-vector products with an absorbed kernel, one pass over it per
        iteration, rebuilt when the scalings leave ``[e^-50, e^50]``; any half
        step that over/underflows is redone in the log domain).  ``"auto"``:
        ``"scaling"`` unless ``(max C - min C) / eps > 2000`` (frequent kernel
        rebuilds).
    eps_scaling : float in (0, 1), sequence of floats, or None, optional
        Epsilon scaling (annealing): one iteration at each of
        ``eps_k = max(eps, range(C) r^k)`` (or at each value of the given
        sequence) before iterating at ``eps``.  Recommended for ``eps`` well
        below the cost range.  In unrolled gradients the schedule is a constant
        (the dependence of ``range(C)`` on the points is not differentiated).
    init : (f, g) or None, optional
        Warm start potentials.
    return_plan : bool, optional
        Store the plan in the result (otherwise ``result.plan`` rebuilds it).
    warn : bool, optional
        Warn on non-convergence.

    Returns
    -------
    SinkhornResult

    Notes
    -----
    Iterates ``g_j <- -eps log sum_i a_i exp((f_i - C_ij)/eps)``, then
    ``f_i <- -eps log sum_j b_j exp((g_j - C_ij)/eps)``, and returns
    ``P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps)``.  The fixed point maximises
    ``<f, a> + <g, b> - eps <a x b, exp((f + g - C)/eps) - 1>``, whose value is
    ``<P, C> + eps KL(P | a x b)``.  POT's ``sinkhorn_log`` computes the same
    iterates with log-potentials ``f/eps + log a``, ``g/eps + log b``.

    Examples
    --------
    >>> import numpy as np
    >>> from adjoint._sinkhorn import solve_sinkhorn
    >>> a = np.array([0.5, 0.5]); b = np.array([0.5, 0.5])
    >>> C = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> res = solve_sinkhorn(a, b, C, eps=0.1, tol=1e-12)
    >>> print(res.converged, f"{res.transport_cost:.6f}")
    True 0.000045
    >>> bool(np.allclose(res.plan.sum(axis=1), a))
    True
    >>> bool(abs(res.reg_cost - res.dual_value) < 1e-12)
    True
    """
    a = _as_weights(a, "a", "n")
    b = _as_weights(b, "b", "m")
    C = _as_cost(cost, a.shape[0], b.shape[0])
    eps = _as_eps(eps)
    max_iter = _check_positive_int(max_iter, "max_iter")
    tol = float(tol)
    if not tol >= 0:
        raise ValueError(f"`tol` must be >= 0; got {tol!r}.")
    with _threads_for(C.size):
        return _solve(
            a,
            b,
            C,
            eps,
            tol=tol,
            max_iter=max_iter,
            method=method,
            eps_scaling=eps_scaling,
            init=init,
            warn=warn,
            return_plan=return_plan,
        )
