"""Every primitive's JVP and VJP against complex step / central differences, and the dot-product
test <J u, w> = <u, J^T w>, on hypothesis-generated inputs (with broadcasting)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import adjoint.ad as ad
from adjoint.ad import jvp_graph, trace, vjp_graph

SETTINGS = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False)


def arr(shape, lo=-2.0, hi=2.0):
    return arrays(np.float64, shape, elements=_floats(lo, hi))


def check(fn, args, method="complex", rtol=1e-7, atol=1e-9, seed=0):
    """JVP vs complex step (or central differences) and VJP by the dot-product test."""
    args = [np.asarray(a, dtype=np.float64) for a in args]
    g = trace(fn, *args)
    rng = np.random.default_rng(seed)
    us = [rng.normal(size=a.shape) for a in args]
    y, jv = [np.asarray(v) for v in jvp_graph(g).evaluate(*args, *us)]
    np.testing.assert_allclose(y, fn(*args), rtol=1e-13, atol=1e-13)
    if method == "complex":
        h = 1e-30
        ref = np.imag(np.asarray(fn(*[a + 1j * h * u for a, u in zip(args, us)]))) / h
    else:
        h = 1e-6
        ref = (
            np.asarray(fn(*[a + h * u for a, u in zip(args, us)]))
            - np.asarray(fn(*[a - h * u for a, u in zip(args, us)]))
        ) / (2 * h)
    np.testing.assert_allclose(jv, ref, rtol=rtol, atol=atol)
    w = rng.normal(size=np.shape(y))
    cts = vjp_graph(g, with_primals=False).evaluate(*args, w)
    lhs = float(np.sum(jv * w))
    rhs = float(sum(np.sum(u * c) for u, c in zip(us, cts)))
    assert abs(lhs - rhs) <= 1e-10 * (1 + abs(lhs)), (lhs, rhs)


SHAPES = [(), (3,), (2, 3)]

UNARY = [
    (np.sin, -3, 3),
    (np.cos, -3, 3),
    (np.tan, -1.2, 1.2),
    (np.exp, -3, 3),
    (np.log, 0.1, 5),
    (np.log1p, -0.9, 5),
    (np.expm1, -3, 3),
    (np.sqrt, 0.1, 5),
    (np.tanh, -3, 3),
    (np.sinh, -3, 3),
    (np.cosh, -3, 3),
    (np.arctan, -3, 3),
    (np.negative, -3, 3),
    (np.square, -3, 3),
    (lambda x: x**3, -3, 3),
    (lambda x: x**-1.5, 0.2, 3),
    (lambda x: 1.0 / x, 0.2, 3),
    (lambda x: 2.0**x, -2, 2),
]


@pytest.mark.parametrize("op,lo,hi", UNARY, ids=lambda v: getattr(v, "__name__", None))
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@SETTINGS
@given(data=st.data())
def test_unary(op, lo, hi, shape, data):
    x = data.draw(arr(shape, lo, hi))
    check(lambda a: op(a), [x])


BROADCAST = [((3,), ()), ((), (3,)), ((2, 3), (3,)), ((2, 1), (1, 3)), ((2, 3), (2, 3)), ((), ())]
BINARY = [
    ("add", lambda a, b: a + b, (-3, 3), (-3, 3)),
    ("sub", lambda a, b: a - b, (-3, 3), (-3, 3)),
    ("mul", lambda a, b: a * b, (-3, 3), (-3, 3)),
    ("div", lambda a, b: a / b, (-3, 3), (0.5, 3)),
    ("pow", lambda a, b: a**b, (0.3, 3), (-2, 2)),
    ("arctan2", np.arctan2, (-3, 3), (0.3, 3)),
]


@pytest.mark.parametrize("name,op,ra,rb", BINARY, ids=[b[0] for b in BINARY])
@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
@SETTINGS
@given(data=st.data())
def test_binary_broadcasting(name, op, ra, rb, shapes, data):
    a = data.draw(arr(shapes[0], *ra))
    b = data.draw(arr(shapes[1], *rb))
    if name == "arctan2":  # no complex arctan2 in numpy
        check(op, [a, b], method="central", rtol=1e-6, atol=1e-7)
    else:
        check(op, [a, b])


def _away_from_ties(a, b):
    return np.all(np.abs(np.asarray(a) - np.asarray(b)) > 1e-3)


@pytest.mark.parametrize("shapes", BROADCAST, ids=str)
@SETTINGS
@given(data=st.data())
def test_nonsmooth(shapes, data):
    a = data.draw(arr(shapes[0]))
    b = data.draw(arr(shapes[1]))
    if (
        not _away_from_ties(a, b)
        or np.any(np.abs(a) < 1e-3)
        or np.any(np.abs(b) < 1e-3)
        or np.any(np.abs(np.abs(a) - 0.5) < 1e-3)
    ):
        return
    check(np.maximum, [a, b], method="central", rtol=1e-6)
    check(np.minimum, [a, b], method="central", rtol=1e-6)
    check(lambda u, v: np.where(u > v, u * v, np.sin(v)), [a, b], method="central", rtol=1e-6)
    check(lambda u: np.abs(u), [a], method="central", rtol=1e-6)
    check(lambda u, v: np.clip(u, -0.5, 0.5) + abs(v), [a, b], method="central", rtol=1e-6)


def test_kink_conventions():
    g = ad.grad(lambda x: np.abs(x))
    assert g(0.0) == 0.0
    gm = ad.grad(lambda x, y: np.maximum(x, y), argnums=(0, 1))
    assert gm(1.0, 1.0) == (0.5, 0.5)
    assert gm(2.0, 1.0) == (1.0, 0.0)
    gx = ad.grad(lambda x: np.max(x))
    np.testing.assert_array_equal(gx(np.array([1.0, 3.0, 3.0])), [0.0, 0.5, 0.5])


REDUCE_STRUCT = [
    ("sum", lambda x: np.sum(x), (2, 3)),
    ("sum0", lambda x: np.sum(x, axis=0), (2, 3)),
    ("sum1", lambda x: x.sum(axis=1), (2, 3)),
    ("sumk", lambda x: np.sum(x, axis=-1, keepdims=True) * x, (2, 3)),
    ("mean", lambda x: np.mean(x), (2, 3)),
    ("mean0", lambda x: np.mean(x, axis=0), (2, 3)),
    ("lse", lambda x: ad.logsumexp(x), (2, 3)),
    ("lse1", lambda x: ad.logsumexp(x, axis=1), (2, 3)),
    ("index", lambda x: x[1, 2] * x[0], (2, 3)),
    ("slice", lambda x: x[:, 1:] * x[0, ::2], (2, 3)),
    ("neg_index", lambda x: x[-1] - x[..., 0:1], (2, 3)),
    ("reshape", lambda x: x.reshape(3, 2) @ x, (2, 3)),
    ("transpose", lambda x: x.T * np.array([1.0, 2.0, 3.0])[:, None], (2, 3)),
    ("stack", lambda x: np.stack([x[0], x[1] ** 2, x[0] * x[1]], axis=1), (2, 3)),
    ("concat", lambda x: np.concatenate([x, np.sin(x)], axis=1), (2, 3)),
    ("literal", lambda x: np.array([[x[0, 0] * x[1, 1], 2.0], [np.sin(x[0, 2]), x[1, 0]]]), (2, 3)),
    ("outer", lambda x: np.outer(x[0], x[1]), (2, 3)),
    ("matvec", lambda x: x @ x[0], (2, 3)),
    ("vecmat", lambda x: x[1, :2] @ x, (2, 3)),
    ("matmat", lambda x: x @ x.T, (2, 3)),
    ("matTmat", lambda x: x.T @ x, (2, 3)),
    ("vecvec", lambda x: np.dot(x[0], x[1]), (2, 3)),
    ("const_mat", lambda x: np.arange(6.0).reshape(3, 2).T @ x[0], (2, 3)),
    ("norm", lambda x: np.linalg.norm(x + 3.0), (2, 3)),
]


@pytest.mark.parametrize("name,fn,shape", REDUCE_STRUCT, ids=[r[0] for r in REDUCE_STRUCT])
@SETTINGS
@given(data=st.data())
def test_reductions_and_structure(name, fn, shape, data):
    x = data.draw(arr(shape))
    if name == "norm":  # numpy's norm of a complex array is not complex-analytic
        check(fn, [x], method="central", rtol=1e-6, atol=1e-8)
    else:
        check(fn, [x])


def test_reduce_max_min():
    x = np.array([[0.3, -1.0, 2.0], [1.5, 0.2, -0.7]])
    check(lambda a: np.max(a, axis=1) + np.min(a, axis=0).sum(), [x], method="central", rtol=1e-6)


def test_dot_transposed_flags():
    """dot with ta/tb (produced by reverse mode) through second order."""
    rng = np.random.default_rng(1)
    A = rng.normal(size=(3, 4))
    B = rng.normal(size=(4, 2))
    f = lambda a, b: np.sum(np.tanh(a @ b) ** 2)  # noqa: E731
    check(lambda a, b: ad.grad(f, argnums=(0, 1))(a, b)[0], [A, B], method="central", rtol=1e-6)
    check(lambda a, b: ad.grad(f, argnums=(0, 1))(a, b)[1], [A, B], method="central", rtol=1e-6)
