"""Conjugate gradients, shared by the implicit gradients of :func:`adjoint.solve_argmin` (Hessian-
vector products) and of :func:`adjoint.sinkhorn_value_and_grad` (the Schur complement of the plan,
Jacobi-preconditioned)."""

from __future__ import annotations

import numpy as np


def conjugate_gradients(matvec, b, tol, max_iter, diag=None, stop_at_nonpositive_curvature=True):
    """Solve ``A x = b`` for a symmetric positive-definite ``A``, from ``x = 0``.

    ``matvec(v, out)`` writes ``A v`` into ``out``. ``diag``: the Jacobi preconditioner (the
    diagonal of ``A``, positive), or None. Stops when ``|b - A x| <= tol |b|`` or after ``max_iter``
    iterations; with ``stop_at_nonpositive_curvature``, also at a direction ``p`` of nonpositive
    curvature ``p^T A p <= 0`` (``A`` is not positive definite: :func:`adjoint.solve_argmin`
    reports it; ``x`` is the iterate before it). Without, such a step is taken as any other: the
    Schur complement of Sinkhorn's implicit gradient is positive semi-definite by construction,
    singular along the coordinates of zero weights, where rounding alone gives ``p^T A p <= 0``
    and iterating on converges.

    Returns ``(x, iterations, nonpositive_curvature)``; one ``matvec`` per iteration.

    >>> A = np.array([[4.0, 1.0], [1.0, 3.0]])
    >>> def matvec(v, out):
    ...     out[:] = A @ v
    >>> x, its, bad = conjugate_gradients(matvec, np.array([1.0, 2.0]), 1e-12, 10)
    >>> bool(np.allclose(A @ x, [1.0, 2.0])), its, bad
    (True, 2, False)
    """
    n = b.shape[0]
    x = np.zeros(n)
    r = b.copy()
    z = r if diag is None else r / diag
    p = z.copy()
    Ap = np.empty(n)
    rr = float(r @ r)
    rz = rr if diag is None else float(r @ z)
    bnorm = np.sqrt(rr)
    it = 0
    while it < max_iter and np.sqrt(rr) > tol * bnorm:
        matvec(p, Ap)
        it += 1
        pAp = float(p @ Ap)
        if stop_at_nonpositive_curvature and not pAp > 0.0:
            return x, it, True
        alpha = rz / pAp
        x += alpha * p
        r -= alpha * Ap
        rr = float(r @ r)
        if diag is None:
            z, rz_new = r, rr
        else:
            z = r / diag
            rz_new = float(r @ z)
        p *= rz_new / rz
        p += z
        rz = rz_new
    return x, it, False
