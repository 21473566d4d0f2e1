"""The COPS 3.0 parameter-estimation problems gasoil (#12) and methanol (#13), problems/gasoil.py and
problems/methanol.py: the published optima from the COPS starting points with least_squares and
the exact residual Jacobian, and the residuals and Jacobian against an independent numpy RK4 of the
same ODEs on the same grid (complex step and central differences)."""

import json

import numpy as np
import pytest
from scipy.optimize import least_squares

from adjoint.problems import gasoil, methanol

# ---------------------------------------------------------------------------------------------
# Independent implementation: the right-hand sides written again from the COPS model text, a
# classical RK4 in plain numpy on the grid t_k = k T / steps, batched over columns (states (n, B),
# parameters (P, B)), any dtype (complex for the complex step).


def gasoil_rhs(y, th):
    return np.stack([-(th[0] + th[2]) * y[0] ** 2, th[0] * y[0] ** 2 - th[1] * y[1]])


def methanol_rhs(y, th):
    d = (th[1] + th[4]) * y[0] + y[1]
    return np.stack(
        [
            -(2 * th[1] - th[0] * y[1] / d + th[2] + th[3]) * y[0],
            th[0] * y[0] * (th[1] * y[0] - y[1]) / d + th[2] * y[0],
            th[0] * y[0] * (y[1] + th[4] * y[0]) / d + th[3] * y[0],
        ]
    )


def rk4_residuals(rhs, y0, theta, t_end, steps, times, data):
    """Residuals (y(t_j) - data_j), time by time and component by component, for each column of
    ``theta`` (P, B): shape (J * n, B)."""
    theta = np.asarray(theta)
    B = theta.shape[1]
    h = t_end / steps
    want = {int(round(t / h)): j for j, t in enumerate(times)}
    assert all(abs(k * h - times[j]) < 1e-12 for k, j in want.items())
    y = np.repeat(np.asarray(y0, dtype=theta.dtype)[:, None], B, axis=1)
    out = np.empty((len(times),) + y.shape, dtype=theta.dtype)
    if 0 in want:
        out[want[0]] = y
    for k in range(1, steps + 1):
        k1 = rhs(y, theta)
        k2 = rhs(y + 0.5 * h * k1, theta)
        k3 = rhs(y + 0.5 * h * k2, theta)
        k4 = rhs(y + h * k3, theta)
        y = y + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if k in want:
            out[want[k]] = y
    return (out - np.asarray(data)[:, :, None]).reshape(-1, B)


CASES = {
    "gasoil": (gasoil, gasoil_rhs, (0.5, 15.0)),
    "methanol": (methanol, methanol_rhs, (0.2, 3.0)),
}

# reference optima from an independent integrator (scipy Radau, rtol 1e-12, + least_squares):
# /tmp/copscheck/verify.py in the task notes
REFERENCE_THETA = {
    "gasoil": np.array([11.846737, 8.344518, 1.001441]),
    "methanol": np.array([1.775185, 2.167985, 1.857557, 1.802447, 0.0]),
}


@pytest.fixture(scope="module")
def residuals():
    """One compiled Residuals per problem (default steps), shared by the tests."""
    return {name: mod.residuals() for name, (mod, _, _) in CASES.items()}


def independent(name, theta):
    mod, rhs, _ = CASES[name]
    return rk4_residuals(rhs, mod.X0, theta, mod.T_END, mod.DEFAULT_STEPS, mod.TIMES, mod.DATA)


def points(name):
    mod, _, (lo, hi) = CASES[name]
    rng = np.random.default_rng(2024 + len(name))
    return {"start": mod.THETA0.copy(), "random": rng.uniform(lo, hi, mod.THETA0.size)}


# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(CASES))
def test_data_and_grid(name):
    mod = CASES[name][0]
    assert mod.DATA.shape == (mod.TIMES.size, mod.X0.size)
    assert np.array_equal(mod.DATA[0], mod.X0) and mod.TIMES[0] == 0.0 and mod.TIMES[-1] == mod.T_END
    k = mod.TIMES / (mod.T_END / mod.GRID_UNIT)
    assert np.max(np.abs(k - np.rint(k))) < 1e-9
    assert mod.DEFAULT_STEPS % mod.GRID_UNIT == 0
    with pytest.raises(ValueError, match=f"multiple of {mod.GRID_UNIT}"):
        mod.make_problem(mod.GRID_UNIT + 1)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("where", ["start", "random"])
def test_residuals_match_independent_rk4(name, where, residuals):
    res = residuals[name]
    theta = points(name)[where]
    r = res(theta)
    ref = independent(name, theta[:, None])[:, 0]
    assert r.shape == ref.shape == (CASES[name][0].DATA.size,)
    np.testing.assert_allclose(r, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("where", ["start", "random"])
def test_jacobian_against_complex_step(name, where, residuals):
    res = residuals[name]
    theta = points(name)[where]
    P = theta.size
    h = 1e-30
    J_cs = independent(name, theta[:, None] + 1j * h * np.eye(P)).imag / h
    J = res.jac(theta)
    assert J.shape == J_cs.shape
    scale = np.abs(J_cs).max()
    np.testing.assert_allclose(J, J_cs, rtol=1e-11, atol=1e-11 * scale)


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("where", ["start", "random"])
def test_jacobian_against_central_differences(name, where, residuals):
    res = residuals[name]
    theta = points(name)[where]
    P = theta.size
    h = 1e-5 * np.maximum(1.0, np.abs(theta))
    D = np.diag(h)
    J_fd = (independent(name, theta[:, None] + D) - independent(name, theta[:, None] - D)) / (2 * h)
    J = res.jac(theta)
    assert np.linalg.norm(J - J_fd) <= 1e-7 * np.linalg.norm(J_fd)
    assert np.abs(J - J_fd).max() <= 1e-7 * np.abs(J_fd).max()
    assert P == J.shape[1]


@pytest.mark.parametrize("name", list(CASES))
def test_published_optimum_from_cops_start(name, residuals):
    mod = CASES[name][0]
    res = residuals[name]
    sol = least_squares(res, mod.THETA0, jac=res.jac, bounds=mod.BOUNDS)
    assert sol.success
    ssq = 2 * sol.cost
    assert abs(ssq - mod.PUBLISHED_OPTIMUM) <= 1e-4 * mod.PUBLISHED_OPTIMUM
    np.testing.assert_allclose(sol.x, REFERENCE_THETA[name], rtol=1e-5, atol=1e-6)
    assert np.all(sol.x >= 0)
    if name == "methanol":  # theta5 at its bound
        assert sol.x[4] < 1e-8 and sol.active_mask[4] == -1


@pytest.mark.parametrize("name", list(CASES))
def test_solve_writes_summary(name, tmp_path):
    mod = CASES[name][0]
    out = mod.solve(output_dir=str(tmp_path), verbose=False)
    summary = json.loads((tmp_path / f"{name}.json").read_text())
    assert (tmp_path / f"{name}.png").stat().st_size > 0
    assert out.summary == summary
    assert summary["published_optimum"] == mod.PUBLISHED_OPTIMUM
    assert abs(summary["relative_difference"]) < 1e-4
    assert summary["objective"] == summary["sum_of_squares"] == pytest.approx(2 * summary["least_squares_cost"])
    assert summary["nfev"] >= summary["iterations"] and summary["njev"] == len(summary["history"])
    assert list(summary["theta"]) == [f"theta{i + 1}" for i in range(mod.THETA0.size)]
