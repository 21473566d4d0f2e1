"""The lecture's example, the function transformations (grad/jvp/vjp/hvp) and pinned errors."""

import numpy as np
import pytest

import adjoint
import adjoint.ad as ad
from adjoint.ad import TraceError, trace


def lecture(x, y):
    return y * np.log(x) + np.sqrt(y * np.log(x))


def test_lecture_graph_node_list():
    g = trace(lecture, 2.0, 3.0)
    assert g.lines() == ["a = log x", "b = y a", "c = sqrt b", "f = b + c"]


def test_lecture_partials():
    dfdx, dfdy = ad.grad(lecture, argnums=(0, 1))(2.0, 3.0)
    b = 3.0 * np.log(2.0)
    assert dfdx == pytest.approx((3.0 / 2.0) * (1 + 0.5 / np.sqrt(b)), rel=1e-14)
    assert dfdy == pytest.approx(np.log(2.0) * (1 + 0.5 / np.sqrt(b)), rel=1e-14)
    assert ad.grad(lecture)(2.0, 3.0) == dfdx
    v, g = ad.value_and_grad(lecture, argnums=1)(2.0, 3.0)
    assert v == pytest.approx(lecture(2.0, 3.0)) and g == dfdy


def test_jvp_vjp_hvp():
    f = lambda x, y: np.sum(np.sin(x) * y) + x @ x  # noqa: E731
    x, y = np.array([0.1, 0.2, 0.3]), np.array([1.0, -2.0, 0.5])
    u, w = np.array([1.0, 0.0, 2.0]), np.array([0.0, 1.0, 0.0])
    out, t = ad.jvp(f, (x, y), (u, w))
    assert out == pytest.approx(f(x, y))
    gx = np.cos(x) * y + 2 * x
    gy = np.sin(x)
    assert t == pytest.approx(gx @ u + gy @ w, rel=1e-14)
    out2, back = ad.vjp(f, x, y)
    cx, cy = back(1.0)
    np.testing.assert_allclose(cx, gx, rtol=1e-14)
    np.testing.assert_allclose(cy, gy, rtol=1e-14)
    hx, hy = ad.hvp(f, (x, y), (u, w))
    np.testing.assert_allclose(hx, (-np.sin(x) * y + 2) * u + np.cos(x) * w, rtol=1e-14)
    np.testing.assert_allclose(hy, np.cos(x) * u, rtol=1e-14)
    assert ad.hessian_vector_product is ad.hvp


def test_vector_valued_vjp_and_nested_grad():
    f = lambda x: np.array([x[0] * x[1], np.exp(x[0])])  # noqa: E731
    y, back = ad.vjp(f, np.array([1.0, 2.0]))
    np.testing.assert_allclose(back(np.array([1.0, 1.0]))[0], [2.0 + np.e, 1.0])
    d2 = ad.grad(ad.grad(lambda x: x**3 * np.sin(x)))
    x = 0.7
    assert d2(x) == pytest.approx(6 * x * np.sin(x) + 6 * x**2 * np.cos(x) - x**3 * np.sin(x), rel=1e-13)


def test_compiled_once_per_shape():
    calls = []

    def f(x):
        calls.append(1)
        return np.sum(x**2)

    g = ad.grad(f)
    g(np.ones(3))
    n = len(calls)
    g(np.full(3, 2.0))
    assert len(calls) == n
    np.testing.assert_allclose(g(np.ones(5)), 2 * np.ones(5))
    assert len(calls) > n


def test_disk_cache_module_written():
    dyn = adjoint.vector_field(lambda x, c, p, t: -p[0] * x, 1, 0, 1)
    src = open(dyn.source).read()
    assert "@njit(cache=True" in src and str(ad.cache_dir()) in dyn.source


# -- errors, pinned ------------------------------------------------------------------------------------
def test_error_control_flow():
    def f(x):
        if x > 0:
            return x
        return -x

    with pytest.raises(TraceError, match="data-dependent Python control flow.*np.where"):
        ad.grad(f)(1.0)


def test_error_python_max():
    with pytest.raises(TraceError, match="np.maximum"):
        ad.grad(lambda x, y: max(x, y))(1.0, 2.0)


def test_error_unsupported_ufunc():
    with pytest.raises(TraceError, match=r"`np.arcsin` is not supported on traced arrays"):
        ad.grad(lambda x: np.arcsin(x))(0.1)


def test_error_unsupported_function():
    with pytest.raises(TraceError, match=r"`np.cumsum` is not supported on traced arrays"):
        ad.grad(lambda x: np.cumsum(x)[-1])(np.ones(3))


def test_error_math_and_float_arrays():
    import math

    with pytest.raises(TraceError, match="cannot be converted to a Python float"):
        ad.grad(lambda x: math.exp(x))(1.0)

    with pytest.raises(TraceError, match="cannot be converted to a Python float"):
        ad.grad(lambda x: float(x) * 2.0)(1.0)


def test_error_data_dependent_index_and_range():
    with pytest.raises(TraceError, match="indexing by a traced value"):
        ad.grad(lambda x: x[x[0]])(np.ones(2))
    with pytest.raises(TraceError, match="cannot be used as an index or a size"):
        ad.grad(lambda x: sum(x * i for i in range(x)))(2.0)


def test_error_grad_needs_scalar_and_shapes():
    with pytest.raises(ValueError, match="one scalar output"):
        ad.grad(lambda x: x * 2)(np.ones(2))
    with pytest.raises(ValueError, match=r"must return an array of shape \(2,\)"):
        adjoint.vector_field(lambda x, c, p, t: x[0], 2)
    with pytest.raises(ValueError, match="not aligned"):
        ad.grad(lambda x: np.sum(x @ np.ones(3)))(np.ones(2))
    with pytest.raises(ValueError, match=r"`tangents\[0\]` must have shape \(2,\)"):
        ad.jvp(lambda x: x, (np.ones(2),), (np.ones(3),))


def test_closure_over_an_enclosing_trace_is_refused_not_silently_wrong():
    """A nested jvp of a closure that captures a value of the enclosing trace used to treat it as
    foreign node ids (a wrong gradient, 1.82 instead of 3.0 here); now a clear error."""
    import adjoint
    from adjoint import ad

    def inner(x, c):
        return x[0] ** 2 * c[0] + np.sin(x[1]) * c[1]

    def closure(x, c):
        return ad.jvp(lambda y: inner(y, c), (x,), (np.array([1.0, 0.5]),))[1]

    def direct(x, c):
        return ad.jvp(inner, (x, c), (np.array([1.0, 0.5]), np.zeros(2)))[1]

    x, c = np.array([0.3, 0.7]), np.array([1.5, -2.0])
    with pytest.raises(ad.TraceError, match="captured from an enclosing trace"):
        adjoint.grad(closure, argnums=(0, 1))(x, c)
    gx, gc = adjoint.grad(direct, argnums=(0, 1))(x, c)
    # d/dx [2 x0 c0 + 0.5 cos(x1) c1] and d/dc, by hand
    assert np.allclose(gx, [2 * c[0], -0.5 * np.sin(x[1]) * c[1]], rtol=1e-14)
    assert np.allclose(gc, [2 * x[0], 0.5 * np.cos(x[1])], rtol=1e-14)
