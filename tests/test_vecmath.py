"""adjoint._vecmath: the vectorisable tanh and exps against mpmath (ulp errors, edge cases), the
re-derivation of their polynomial coefficients, vectorisation of a loop calling them, and their use
by the code generated from traced functions."""

import math
import re

import mpmath as mp
import numba
import numpy as np
import pytest

from adjoint import _vecmath as vm


def _ulp_errors(x, got, fn, dps=40):
    """|got - fn(x)| in units in the last place of the exact value (fn evaluated by mpmath)."""
    with mp.workdps(dps):
        out = np.empty(len(x))
        for i, (xi, gi) in enumerate(zip(x, got)):
            r = fn(mp.mpf(float(xi)))
            if r == 0:
                out[i] = 0.0 if gi == 0 else math.inf
                continue
            _, e = mp.frexp(r)  # |r| = m 2^e, 1/2 <= m < 1
            ulp = mp.ldexp(1, max(int(e) - 53, -1074))
            out[i] = float(abs(mp.mpf(float(gi)) - r) / ulp)
    return out


def _tanh_points():
    rng = np.random.default_rng(2024)
    t = vm._TANH_SMALL
    around = lambda c, w, n: c + w * rng.uniform(-1.0, 1.0, n)  # noqa: E731
    x = np.concatenate(
        [
            10.0 ** rng.uniform(-310.0, -4.0, 2000),  # tiny and subnormal
            10.0 ** rng.uniform(-4.0, math.log10(t), 6000),  # polynomial range, log-spaced
            rng.uniform(0.0, t, 6000),  # polynomial range, uniform
            around(t, 1e-3, 3000),
            around(t, 1e-12, 500),  # both sides of the switch
            np.array([np.nextafter(t, 0.0), t, np.nextafter(t, 1.0)]),
            rng.uniform(t, 1.5, 8000),  # where the exp path is least accurate
            rng.uniform(1.5, 8.0, 4000),
            rng.uniform(8.0, 25.0, 3000),
            around(19.06, 0.1, 2000),  # tanh rounds to 1 from 19.06 on
            np.array([20.0, 30.0, 710.0, 1e300]),
        ]
    )
    return x


def test_tanh_within_2_ulp_of_mpmath():
    x = _tanh_points()
    got = np.empty_like(x)
    vm._k_tanh_array(x, got)
    err = _ulp_errors(x, got, mp.tanh)
    worst = int(np.argmax(err))
    assert err.max() < 2.0, (x[worst], err.max())
    assert err.max() < 1.6, (x[worst], err.max())  # measured 1.46 ulp (exp path near 0.58)
    small = np.abs(x) < vm._TANH_SMALL
    assert err[small].max() < 0.75  # the polynomial: one final rounding
    # odd, bitwise
    neg = np.empty_like(x)
    vm._k_tanh_array(-x, neg)
    assert np.array_equal(neg, -got)


def test_tanh_edge_cases():
    sub = np.array([5e-324, 2.2250738585072e-308, 1e-310, 1e-20, 2.0**-27])
    x = np.concatenate([[0.0, -0.0, np.inf, -np.inf, np.nan, 19.5, 25.0, -40.0, 1e308, -1e308], sub, -sub])
    out = np.empty_like(x)
    vm._k_tanh_array(x, out)
    assert out[0] == 0.0 and not np.signbit(out[0])
    assert out[1] == 0.0 and np.signbit(out[1])
    assert out[2] == 1.0 and out[3] == -1.0
    assert np.isnan(out[4])
    assert list(out[5:10]) == [1.0, 1.0, -1.0, 1.0, -1.0]
    assert np.array_equal(out[10:], x[10:])  # tanh(x) = x for |x| <= 2^-27 (within 1/2 ulp)
    # a scalar call from numba (default error model) agrees with the loop
    f = numba.njit(lambda v: vm.tanh(v))
    z = np.array([0.3, 0.7, -2.5])
    vz = np.empty_like(z)
    vm._k_tanh_array(z, vz)
    assert [f(v) for v in z] == list(vz)
    # the result never leaves [-1, 1] and increases on a coarse grid
    y = np.empty(4001)
    vm._k_tanh_array(np.linspace(-30.0, 30.0, 4001), y)
    assert np.all(np.abs(y) <= 1.0) and np.all(np.diff(y) >= 0.0)


def test_exp_within_2_ulp_of_mpmath():
    rng = np.random.default_rng(7)
    x = np.concatenate(
        [
            rng.uniform(-708.0, 709.0, 6000),
            rng.uniform(-1.0, 1.0, 4000),
            rng.uniform(-0.35, 0.35, 2000),
            [0.0, -708.0, 709.0],
        ]
    )
    got = np.empty_like(x)
    vm._k_exp_array(x, got)
    err = _ulp_errors(x, got, mp.exp)
    assert err.max() < 2.0, (x[int(np.argmax(err))], err.max())
    # documented range handling: 0 below -708 (and for -inf, NaN), exp(709) above 709
    y = np.array([-708.5, -1e4, -np.inf, np.nan, 709.5, 1e4, np.inf])
    out = np.empty_like(y)
    vm._k_exp_array(y, out)
    assert list(out[:4]) == [0.0] * 4
    assert np.all(out[4:] == got[-1])


def test_ieee_exp_within_1_ulp_of_mpmath_with_overflow_and_subnormals():
    """``exp`` (the one of generated code): < 1 ulp against mpmath over the finite range, subnormal
    results included (ulp 2^-1074 there), inf above log(DBL_MAX), 0 from log(2^-1075) down."""
    rng = np.random.default_rng(11)
    over, under = vm._EXP_OVER, vm._EXP_UNDER
    x = np.concatenate(
        [
            rng.uniform(under, over, 6000),
            rng.uniform(-1.0, 1.0, 2000),
            rng.uniform(-745.2, -708.0, 3000),
            rng.uniform(709.0, over, 500),
            rng.uniform(-1e-10, 1e-10, 200),
            [
                over,
                np.nextafter(over, 0.0),
                np.nextafter(under, 0.0),
                -744.44007192138126,
                -708.3964185322641,
                -708.3964185322642,
                5e-324,
                -1e-300,
            ],
        ]
    )
    got = np.empty_like(x)
    vm._k_vexp_array(x, got)
    finite = x <= over
    err = _ulp_errors(x[finite], got[finite], mp.exp)
    assert err.max() < 1.0, (x[finite][int(np.argmax(err))], err.max())  # measured 0.93
    assert np.all(np.isinf(got[~finite]))
    assert np.any((got > 0.0) & (got < 2.2250738585072014e-308))  # subnormals reached
    y = np.array([np.nan, np.inf, -np.inf, np.nextafter(over, 1e3), 710.0, 1e300, under, -745.5, -1e300, 0.0, -0.0])
    out = np.empty_like(y)
    vm._k_vexp_array(y, out)
    assert np.isnan(out[0])
    assert list(out[1:]) == [np.inf, 0.0, np.inf, np.inf, np.inf, 0.0, 0.0, 0.0, 1.0, 1.0]
    assert out[-3] == 0.0 and not np.signbit(out[-3])
    assert np.all(got[x == 5e-324] == 1.0)


# ------------------------------------------------------------ coefficients re-derived with mpmath


def _chebyfit(f, interval, n):
    """mpmath.chebyfit's coefficients, highest power first, and its error estimate (mpmath >= 1.4
    deprecates that order by default and takes ``asc``; 1.3 has no ``asc``)."""
    try:
        coeffs, err = mp.chebyfit(f, interval, n, error=True, asc=True)
        return coeffs[::-1], err
    except TypeError:
        return mp.chebyfit(f, interval, n, error=True)


def test_tanh_coefficients_rederived():
    """q(u) = (tanh(sqrt u) - sqrt u) / u^(3/2) on [0, (9/16)^2]: degree-10 Chebyshev fit in 60-digit
    arithmetic (mpmath.chebyfit) gives the module's coefficients and a 1.2e-17 approximation error."""
    assert vm._TANH_SMALL == 0.5625
    with mp.workdps(60):

        def q(u):
            if u == 0:
                return mp.mpf(-1) / 3
            s = mp.sqrt(u)
            return (mp.tanh(s) - s) / (u * s)

        coeffs, err = _chebyfit(q, [0, mp.mpf(vm._TANH_SMALL) ** 2], 11)
        assert err < 1.5e-17
        mine = [getattr(vm, f"_T{k}") for k in range(10, -1, -1)]
        for c, m in zip(coeffs, mine):
            assert abs(float(c) - m) <= 1e-15 * abs(m), (float(c), m)


def test_exp_coefficients_rederived():
    """exp(r) on [-log(2)/2, log(2)/2]: degree-11 Chebyshev fit in 40-digit arithmetic."""
    with mp.workdps(40):
        half = mp.log(2) / 2
        coeffs, err = _chebyfit(mp.exp, [-half, half], 12)
        assert err < 4e-18
        mine = [getattr(vm, f"_E{k}") for k in range(11, 1, -1)] + [1.0, 1.0]
        for c, m in zip(coeffs, mine):
            assert abs(float(c) - m) <= 1e-15 * abs(m), (float(c), m)


# ------------------------------------------------------------ vectorisation and generated code


@pytest.mark.parametrize("name", ["tanh", "exp"])
def test_loop_vectorises(name):
    """A plain loop calling tanh / exp compiles to packed SIMD code (LLVM inlines the function;
    no libm call), under numba's default error model too (the division does not check for zero),
    and gives the same values as the function called alone."""
    fn = getattr(vm, name)

    @numba.njit
    def loop(a, out):
        for i in range(a.shape[0]):
            out[i] = fn(a[i])

    a = np.linspace(-3.0, 3.0, 1000)
    out = np.empty_like(a)
    loop(a, out)
    assert np.array_equal(out, [fn(v) for v in a])
    asm = loop.inspect_asm(loop.signatures[0])
    assert not re.search(r"\bcall\w*\s+\S*" + name, asm)
    assert re.search(r"\bvfmadd\w*pd\s+%[yz]mm", asm), "no packed FMA: the loop did not vectorise"
    if name == "tanh":
        assert re.search(r"\bvdivpd\s+%[yz]mm", asm)


@pytest.mark.parametrize("name,kernel", [("tanh", vm._k_tanh_array), ("exp", vm._k_vexp_array)])
def test_generated_code_uses_vecmath(name, kernel):
    """Traced tanh / exp compile to ``_adj_vm.tanh`` / ``_adj_vm.exp`` (loop and scalarised forms),
    imported with the digest of adjoint/_vecmath.py, and give exactly the values of
    adjoint._vecmath."""
    from adjoint._modules import file_digest as _file_digest
    from adjoint.ad import compile_graph, trace

    x = np.random.default_rng(3).uniform(-4.0, 4.0, 1000)
    ref = np.empty_like(x)
    kernel(x, ref)
    npf = getattr(np, name)
    for v in (x, x[:3]):
        cg = compile_graph(trace(lambda a: npf(a), v))
        assert f"_adj_vm.{name}(" in cg.source and f"math.{name}(" not in cg.source
        assert f"from adjoint import _vecmath as _adj_vm  # {_file_digest(vm.__file__)}" in cg.source
        assert np.array_equal(cg(v)[0], ref[: v.size])
