"""Entropic optimal transport (Sinkhorn) and its gradients.

Public names: :func:`solve_sinkhorn`, :func:`sinkhorn_value_and_grad`,
:class:`SinkhornResult`, :class:`SinkhornGradResult`.

Conventions
-----------
Potentials are taken relative to the product measure ``a x b`` (the convention of
OTT-JAX and GeomLoss):

    P_ij = a_i b_j exp((f_i + g_j - C_ij) / eps)

and one Sinkhorn iteration is the pair of soft c-transforms (column update first,
as in POT's ``sinkhorn_log``)

    g_j <- -eps log sum_i a_i exp((f_i - C_ij) / eps)
    f_i <- -eps log sum_j b_j exp((g_j - C_ij) / eps)

so that after every iteration the row marginals of ``P`` are exact and the column
marginals carry the error.  POT's log-potentials are ``u = f/eps + log a`` and
``v = g/eps + log b``.

Layout: numba kernels (``_k_*``, arrays and scalars only, no validation) in
:mod:`._kernels` (forward iterations, plan) and :mod:`._reverse` (the reverse sweeps of the
unrolled gradient); the Python layer in :mod:`._solve` (validation, strategy selection, the
forward solve), :mod:`._grad` (gradient modes) and :mod:`._results` (result objects).
"""

# the private names that tests and benchmarks import from adjoint._sinkhorn
from .._vecmath import _k_exp_array  # noqa: F401
from ._grad import sinkhorn_value_and_grad
from ._kernels import (  # noqa: F401
    _k_col_from_sums,
    _k_col_update,
    _k_kt_matvec,
    _k_log_loop,
    _k_log_loop_fused,
    _k_row_update,
    _k_row_update_fused,
    _k_scaling_pass,
    _n_chunks,
)
from ._results import SinkhornGradResult, SinkhornResult
from ._solve import solve_sinkhorn

__all__ = [
    "SinkhornResult",
    "SinkhornGradResult",
    "solve_sinkhorn",
    "sinkhorn_value_and_grad",
]
