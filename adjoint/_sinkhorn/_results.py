"""Result objects of :func:`solve_sinkhorn` and :func:`sinkhorn_value_and_grad`."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._kernels import _plan

# ----------------------------------------------------------------------------------
# Result objects
# ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SinkhornResult:
    """Result of :func:`solve_sinkhorn`.

    Attributes
    ----------
    f : ndarray, shape (n,)
        Potential on the source side (relative to ``a x b``, see Notes).
    g : ndarray, shape (m,)
        Potential on the target side.  The gauge ``(f + c, g - c)`` is fixed by
        ``<f, a> = <g, b>``.
    transport_cost : float
        ``<P, C>`` (POT's ``sinkhorn2`` value).
    reg_cost : float
        ``<P, C> + eps KL(P | a x b)``; equals ``<f, a> + <g, b>`` at convergence.
    iterations : int
        Sinkhorn iterations done (one iteration = column then row update;
        epsilon-scaling stages included).
    marginal_error : float
        ``|P 1 - a|_1 + |P^T 1 - b|_1`` of the returned plan.
    converged : bool
        ``marginal_error <= tol`` reached within ``max_iter`` (False when
        ``tol = 0``: a fixed number of iterations was asked for).
    eps : float
        Regularisation.
    method : str
        ``"log"`` or ``"scaling"`` (the domain actually used).
    absorptions : int
        Kernel rebuilds of the stabilised scaling method (0 for ``"log"``).

    Notes
    -----
    The plan ``P_ij = a_i b_j exp((f_i + g_j - C_ij)/eps)`` is not stored unless
    ``return_plan=True`` was given: :attr:`plan` rebuilds it (time and memory
    O(n m)) from the potentials and the cost matrix kept by reference.
    """

    f: np.ndarray
    g: np.ndarray
    transport_cost: float
    reg_cost: float
    iterations: int
    marginal_error: float
    converged: bool
    eps: float
    method: str
    absorptions: int = 0
    # a, b, cost: always given by the solve (None is only the default that lets them follow absorptions)
    a: np.ndarray = field(default=None, repr=False)  # type: ignore[arg-type]
    b: np.ndarray = field(default=None, repr=False)  # type: ignore[arg-type]
    cost: np.ndarray = field(default=None, repr=False)  # type: ignore[arg-type]
    stored_plan: np.ndarray | None = field(default=None, repr=False)

    @property
    def plan(self) -> np.ndarray:
        """Transport plan, shape (n, m) (rebuilt on each access unless stored)."""
        if self.stored_plan is not None:
            return self.stored_plan
        return _plan(self.cost, self.f, self.g, self.a, self.b, self.eps)

    @property
    def dual_value(self) -> float:
        """``<f, a> + <g, b>``."""
        return float(self.f @ self.a + self.g @ self.b)


@dataclass(frozen=True)
class SinkhornGradResult:
    """Result of :func:`sinkhorn_value_and_grad`.

    Attributes
    ----------
    value : float
        ``<f, a> + <g, b>`` at the final potentials (the regularised cost; equal
        to ``solution.reg_cost`` at convergence), or the user loss.
    grad_a : ndarray, shape (n,)
        Gradient with respect to ``a`` on the simplex: projected on the tangent
        space ``sum(da) = 0`` (mean removed), see Notes of
        :func:`sinkhorn_value_and_grad`.
    grad_b : ndarray, shape (m,)
        Same for ``b``.
    grad_x : ndarray, shape (n, d)
    grad_y : ndarray, shape (m, d)
    mode : str
        ``"implicit"``, ``"unrolled"`` or ``"envelope"``.
    solution : SinkhornResult
        The forward solve.
    linear_solver : str
        ``"dense"`` or ``"cg"`` (implicit mode), else ``""``.
    linear_iterations : int
        CG iterations (implicit mode with CG), else 0.
    linear_residual : float
        Relative residual of the implicit linear system (0 for other modes).
    stored_bytes : int
        Bytes of the stored iterates and of the cost adjoint (unrolled:
        ``slots (n + m) 8 + n m 8``, slots = K + 1 for store-all, ``min(s, K)``
        with ``s`` snapshots), or of the plan and linear system (implicit); the
        plan for envelope.
    schedule : str
        Unrolled mode: the checkpoint schedule that ran (``"StoreAll"`` or e.g.
        ``"Revolve(snapshots=10)"``; a ``MemoryBudget`` shows what it resolved
        to); else ``""``.
    forward_iterations : int
        Unrolled mode: Sinkhorn iterations evaluated in total, the forward solve
        included (K for store-all; ``K + p(K, s) + (K - 1)`` for Revolve, see
        the Notes of :func:`sinkhorn_value_and_grad`); else 0.
    peak_stored_iterates : int
        Unrolled mode: iterates ``(f_k, g_k)`` held at once (K + 1 for
        store-all, at most ``s`` with a schedule); else 0.
    """

    value: float
    grad_a: np.ndarray
    grad_b: np.ndarray
    grad_x: np.ndarray
    grad_y: np.ndarray
    mode: str
    solution: SinkhornResult
    linear_solver: str = ""
    linear_iterations: int = 0
    linear_residual: float = 0.0
    stored_bytes: int = 0
    schedule: str = ""
    forward_iterations: int = 0
    peak_stored_iterates: int = 0
