"""Vectorisable elementary functions (float64) for compiled loops.

numba here has no SVML: ``math.exp`` / ``math.tanh`` (and ``np.exp`` / ``np.tanh``) in a numba loop
are scalar libm calls, so LLVM cannot vectorise the loop. The functions below are branch free
(both paths computed, then a select) and built from fused multiply-adds, so a loop calling them
vectorises (AVX2 / AVX-512 here) and the results do not depend on the vector width: ``llvm.fma``
is exactly rounded in every lane and every compilation.

* :func:`_exp`: exp to < 4e-16 relative for x in [-708, 709] (used by the Sinkhorn kernels, whose
  semantics outside that range are their own: 0 below -708, exp(709) above).
* :func:`tanh`: tanh to < 2 ulp over the whole float64 range with IEEE edge semantics, and
* :func:`exp`: exp to < 1 ulp with IEEE semantics (overflow to inf, subnormal results, NaN),
  used by the code generated from traced functions (``_adj_vm.tanh``, ``_adj_vm.exp``, see
  :mod:`adjoint.ad._primitives`).

Inlining: :func:`_exp`, :func:`tanh` and :func:`exp` are plain ``njit`` functions that LLVM inlines
at every call site (they are small), which vectorises as numba-level inlining (``inline="always"``)
would: numba-level inlining of a function built from intrinsics adds compilation per intrinsic call
per call site, which grows the compile time of a fully scalarised graph several-fold, and that of
the Sinkhorn kernels (a dozen call sites of :func:`_exp`) noticeably. The results do not depend on
it: the operations and their rounding are the same either way. Divisions go through :func:`_div`, which never checks for zero whatever
the ``error_model``, so nothing stops the vectoriser.

The polynomial coefficients are re-derived and checked against mpmath in ``tests/test_vecmath.py``.
"""

from __future__ import annotations

import math

from llvmlite import ir as _llir
from numba import njit
from numba.core import types as _nbtypes
from numba.extending import intrinsic

__all__ = ["tanh", "exp"]


# ----------------------------------------------------------------------------------
# Intrinsics (free bit casts, one-rounding FMA, plain division)
# ----------------------------------------------------------------------------------


@intrinsic
def _bits_to_float(typingctx, x):
    """Reinterpret the bits of an int64 as a float64 (free, vectorisable)."""
    sig = _nbtypes.float64(_nbtypes.int64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _llir.DoubleType())

    return sig, codegen


@intrinsic
def _float_to_bits(typingctx, x):
    """Reinterpret the bits of a float64 as an int64 (free, vectorisable)."""
    sig = _nbtypes.int64(_nbtypes.float64)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], _llir.IntType(64))

    return sig, codegen


@intrinsic
def _fma(typingctx, x, y, z):
    """x * y + z with a single rounding (``llvm.fma``: one instruction here,
    exactly rounded everywhere, hence deterministic; vectorises)."""
    sig = _nbtypes.float64(_nbtypes.float64, _nbtypes.float64, _nbtypes.float64)

    def codegen(context, builder, signature, args):
        d = _llir.DoubleType()
        fn = builder.module.declare_intrinsic("llvm.fma", [d], _llir.FunctionType(d, [d, d, d]))
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _div(typingctx, x, y):
    """x / y, IEEE (no zero-division check whatever the caller's ``error_model``: vectorises)."""
    sig = _nbtypes.float64(_nbtypes.float64, _nbtypes.float64)

    def codegen(context, builder, signature, args):
        return builder.fdiv(args[0], args[1])

    return sig, codegen


# ----------------------------------------------------------------------------------
# exp
# ----------------------------------------------------------------------------------

_LOG2E = 1.4426950408889634
_LN2_HI = 6.93147180369123816490e-01  # fdlibm split of log(2)
_LN2_LO = 1.90821492927058770002e-10
_ROUND = 6755399441055744.0  # 1.5 * 2**52: x + _ROUND - _ROUND rounds x to an integer
_EXP_LO = -708.0  # below: result 0 (true value < 3.3e-308, negligible in every sum)
_EXP_HI = 709.0  # above: clamped (callers treat such values as overflow)

# Near-minimax polynomial for exp(r) on [-log(2)/2, log(2)/2], degree 11
# (Chebyshev fit in 40-digit arithmetic, mpmath.chebyfit; approximation error
# 3.2e-18, far below the rounding error of the evaluation).
_E11 = 2.5110037605963777e-08
_E10 = 2.763263963904103e-07
_E9 = 2.755724091857897e-06
_E8 = 2.4801485482328494e-05
_E7 = 0.00019841269890047113
_E6 = 0.0013888888952314775
_E5 = 0.008333333333319601
_E4 = 0.0416666666664881
_E3 = 0.1666666666666668
_E2 = 0.5000000000000019


@njit(cache=True, inline="always")
def _exp_reduced(xc):
    """(exp(r), t) with xc = k log 2 + r, |r| <= log(2)/2, and k in the low mantissa bits of t
    (two's complement), for |xc| < 2^50: Cody-Waite reduction and the polynomial above."""
    t = _fma(xc, _LOG2E, _ROUND)
    kd = t - _ROUND
    r = _fma(-kd, _LN2_HI, xc)
    r = _fma(-kd, _LN2_LO, r)
    p = _fma(_E11, r, _E10)
    p = _fma(p, r, _E9)
    p = _fma(p, r, _E8)
    p = _fma(p, r, _E7)
    p = _fma(p, r, _E6)
    p = _fma(p, r, _E5)
    p = _fma(p, r, _E4)
    p = _fma(p, r, _E3)
    p = _fma(p, r, _E2)
    p = _fma(p, r, 1.0)
    p = _fma(p, r, 1.0)
    return p, t


@njit(cache=True, inline="always")
def _exp_core(xc):
    """exp(xc) for xc in [-708, 709] (no range handling): see :func:`_exp`."""
    p, t = _exp_reduced(xc)
    # low mantissa bits of t hold k (two's complement): 2^k = ((k + 1023) << 52)
    scale = _bits_to_float((_float_to_bits(t) + 1023) << 52)
    return p * scale


@njit(cache=True)
def _exp(x):
    """exp(x) to < 4e-16 relative: Cody-Waite reduction + degree-11 polynomial.

    Branch free and built from fused multiply-adds so that loops calling it
    vectorise (numba here has no SVML: ``np.exp`` is a scalar libm call).  The
    integer k = round(x / log 2) is read from the bits of x / log 2 + 1.5 2^52,
    so no float -> int conversion is needed.  Returns 0 for x < -708 (including
    -inf and NaN) and exp(709) for x > 709.
    """
    xc = min(max(x, _EXP_LO), _EXP_HI)
    res = _exp_core(xc)
    return res if x >= _EXP_LO else 0.0


_EXP_OVER = 709.782712893384  # exp(x) rounds to inf above (log(DBL_MAX) = 709.78271289338400)
_EXP_UNDER = -745.1332191019412  # exp(x) rounds to 0 at and below (log(2^-1075) = -745.13321910194122)


@njit(cache=True)
def exp(x):
    """exp(x) with IEEE semantics to < 1 ulp (measured max 0.93 ulp against mpmath, test_vecmath.py).

    The reduction and polynomial of :func:`_exp`; 2^k is applied in two exact powers of two
    (2^(k - k//2) then 2^(k//2)), so that the only rounding of the scaling is the last product: it
    overflows to inf exactly when the result does (x > 709.78) and rounds correctly into the
    subnormal range (results down to 2^-1074 at x = -744.44, 0 from x <= -745.13). The argument is
    clamped to [-746, 710] for the computation of k (-inf -> 0, +inf -> inf), NaN is returned as
    is. Branch free, so loops calling it vectorise; a plain ``njit`` function that LLVM inlines (see
    the module docstring).
    """
    xc = x if x > -746.0 else -746.0
    xc = xc if xc < 710.0 else 710.0
    p, t = _exp_reduced(xc)
    # k in [-1076, 1024]: the mantissa field of t is 2^51 + k, so its bits 0-50 hold k in two's
    # complement (sign extended from bit 50); k1 + k2 = k with 2^k1 and 2^k2 normal numbers
    k = (_float_to_bits(t) << 13) >> 13
    k1 = k >> 1
    k2 = k - k1
    res = (p * _bits_to_float((k1 + 1023) << 52)) * _bits_to_float((k2 + 1023) << 52)
    return res if x == x else x


@njit(cache=True)
def _k_vexp_array(x, out):
    """out[:] = exp(x[:]) (tests; vectorised loop)."""
    for i in range(x.shape[0]):
        out[i] = exp(x[i])


@njit(cache=True)
def _k_exp_array(x, out):
    """out[:] = _exp(x[:]) (used to test the polynomial against np.exp)."""
    for i in range(x.shape[0]):
        out[i] = _exp(x[i])


# ----------------------------------------------------------------------------------
# tanh
# ----------------------------------------------------------------------------------

_TANH_SMALL = 0.5625  # |x| below: odd polynomial; above: 1 - 2 / (exp(2|x|) + 1)
_TANH_BIG = 20.0  # |x| above: tanh = 1 exactly (1 - tanh < 2^-54 from |x| > 19.06 on)

# tanh(x) = x + x u q(u), u = x^2, |x| < 9/16: q(u) = (tanh(sqrt u) - sqrt u) / u^(3/2) is
# approximated by a degree-10 polynomial, Chebyshev fit on u in [0, (9/16)^2] in 60-digit
# arithmetic (mpmath.chebyfit; approximation error 1.2e-17 absolute on q ~ -1/3, i.e. < 0.04 ulp
# of tanh after the factor u <= 0.32). Re-derived in tests/test_vecmath.py.
_T10 = -2.0026740085317684e-05
_T9 = 8.426522203958066e-05
_T8 = -0.00023410556936672797
_T7 = 0.0005887537111834804
_T6 = -0.0014556239774192678
_T5 = 0.003592105532132769
_T4 = -0.008863234021529514
_T3 = 0.021869488476962563
_T2 = -0.0539682539670594
_T1 = 0.13333333333332392
_T0 = -0.3333333333333333


@njit(cache=True)
def tanh(x):
    """tanh(x) to < 2 ulp (measured max 1.49 ulp against mpmath, at |x| = 0.563; tests/test_vecmath.py).

    Branch free (both paths computed, then selects) and FMA based, so loops calling it vectorise:

    * |x| < 9/16: ``|x| + |x| u q(u)`` (u = x^2, q a degree-10 polynomial; one rounding in the
      final FMA, error < 0.6 ulp);
    * |x| >= 9/16: ``1 - 2 / (exp(2|x|) + 1)`` with the FMA exp of :func:`_exp_core` (the result is
      in [0.51, 1] and the subtracted term at most half of it; error < 2 ulp), |x| clamped to 20
      where the result is 1 exactly;

    the sign restored with ``copysign``. Edge cases as IEEE / libm: tanh(+-0) = +-0, tanh(+-inf) =
    +-1, NaN -> NaN, subnormal x -> x (tanh(x) = x to within half an ulp for |x| < 2^-27).
    """
    ax = abs(x)
    # small |x| (also NaN: it propagates through the polynomial)
    u = ax * ax
    q = _fma(_T10, u, _T9)
    q = _fma(q, u, _T8)
    q = _fma(q, u, _T7)
    q = _fma(q, u, _T6)
    q = _fma(q, u, _T5)
    q = _fma(q, u, _T4)
    q = _fma(q, u, _T3)
    q = _fma(q, u, _T2)
    q = _fma(q, u, _T1)
    q = _fma(q, u, _T0)
    small = _fma(ax * u, q, ax)
    # large |x| (+inf included)
    xc = ax if ax < _TANH_BIG else _TANH_BIG
    e = _exp_core(xc + xc)
    large = 1.0 - _div(2.0, e + 1.0)
    r = large if ax >= _TANH_SMALL else small
    return math.copysign(r, x)


@njit(cache=True)
def _k_tanh_array(x, out):
    """out[:] = tanh(x[:]) (tests; vectorised loop)."""
    for i in range(x.shape[0]):
        out[i] = tanh(x[i])
