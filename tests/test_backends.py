"""One place chooses how a sweep runs (adjoint._backends.select); Stats.backend says which ran.

The tape backend's selection is tested with its problems in test_ad_tape.py.
"""

import numpy as np
import pytest
from numba import njit

import adjoint
from adjoint.problems import harmonic_oscillator as ho
from adjoint.problems import lotka_volterra as lv
from adjoint.problems import pendulum


def _same(a, b):
    assert a.value == b.value
    for u, v in ((a.grad.params, b.grad.params), (a.grad.controls, b.grad.controls), (a.grad.x0, b.grad.x0)):
        assert np.array_equal(u, v)


@pytest.fixture(scope="module")
def pend():
    return pendulum.make_problem(120), pendulum.initial_guess(120)


@pytest.mark.parametrize(
    "checkpoint", [adjoint.StoreAll(), adjoint.Revolve(snapshots=4), "auto"], ids=["storeall", "revolve", "auto"]
)
def test_scalar_by_default_generic_on_request_same_bits(pend, checkpoint):
    prob, c = pend
    auto = adjoint.solve_adjoint(prob, controls=c, checkpoint=checkpoint)
    again = adjoint.solve_adjoint(prob, controls=c, checkpoint=checkpoint)  # the fast lane where it applies
    scalar = adjoint.solve_adjoint(prob, controls=c, checkpoint=checkpoint, backend="scalar")
    generic = adjoint.solve_adjoint(prob, controls=c, checkpoint=checkpoint, backend="generic")
    generic2 = adjoint.solve_adjoint(prob, controls=c, checkpoint=checkpoint, backend="generic")
    assert [r.stats.backend for r in (auto, again, scalar, generic, generic2)] == [
        "scalar",
        "scalar",
        "scalar",
        "generic",
        "generic",
    ]
    for r in (again, scalar, generic, generic2):
        _same(auto, r)


def test_forward_sweeps_take_the_backend(pend):
    prob, c = pend
    v_auto, tr_auto = adjoint.simulate(prob, controls=c)
    v_gen, tr_gen = adjoint.simulate(prob, controls=c, backend="generic")
    assert v_auto == v_gen and np.array_equal(tr_auto, tr_gen)
    assert adjoint.evaluate(prob, controls=c, backend="scalar") == adjoint.evaluate(prob, controls=c, backend="generic")


def test_objective_passes_the_backend(pend):
    prob, c = pend
    fun = prob.objective(wrt="controls", backend="generic")
    v, g = fun(c.ravel())
    assert fun.last.stats.backend == "generic"
    ref = adjoint.solve_adjoint(prob, controls=c)
    assert v == ref.value and np.array_equal(g, ref.grad.controls.ravel())


@njit
def _loop_f(x, c, p, t, out):
    # a data-dependent loop: not traceable, so no generated backend applies
    s = 0.0
    for i in range(int(abs(x[0])) % 3 + 1):
        s += p[0]
    out[0] = -s * x[0]


@njit
def _loop_vjp(x, c, p, t, z, out_x, out_c, out_p):
    s = 0.0
    for i in range(int(abs(x[0])) % 3 + 1):
        s += p[0]
    out_x[0] = -s * z[0]
    out_p[0] = -(int(abs(x[0])) % 3 + 1) * x[0] * z[0]


@njit
def _sq(x, c, p, t):
    return x[0] * x[0]


@njit
def _sq_grad(x, c, p, t, out_x, out_c, out_p):
    out_x[0] = 2.0 * x[0]
    out_p[0] = 0.0


def test_untraceable_field_runs_generic_and_scalar_request_says_why():
    prob = adjoint.ControlProblem(
        adjoint.Dynamics(_loop_f, _loop_vjp, 1, param_dim=1),
        [0.5],
        (0.0, 1.0),
        20,
        terminal_cost=adjoint.Cost(_sq, _sq_grad),
    )
    assert adjoint.solve_adjoint(prob, params=[0.7]).stats.backend == "generic"
    with pytest.raises(ValueError, match=r"backend='scalar'.*cannot run this problem.*traced.*Use backend='auto'"):
        adjoint.solve_adjoint(prob, params=[0.7], backend="scalar")
    with pytest.raises(ValueError, match=r"backend='scalar'"):
        adjoint.evaluate(prob, params=[0.7], backend="scalar")


def test_leapfrog_and_reversible_run_generic():
    prob = ho.make_problem(50)
    res = adjoint.solve_adjoint(prob, params=[1.1], method=adjoint.Leapfrog(), checkpoint=adjoint.Reversible())
    assert res.stats.schedule == "Reversible" and res.stats.backend == "generic"
    res = adjoint.solve_adjoint(prob, params=[1.1], method=adjoint.Leapfrog(), checkpoint=adjoint.StoreAll())
    assert res.stats.backend == "generic"


def test_runge_kutta_streamed_scalar_equals_generic():
    prob = lv.make_problem(steps=200)
    p = lv.initial_guess()
    for ck in (adjoint.StoreAll(), adjoint.Uniform(snapshots=5)):
        a = adjoint.solve_adjoint(prob, params=p, method=adjoint.RK4(), checkpoint=ck)
        b = adjoint.solve_adjoint(prob, params=p, method=adjoint.RK4(), checkpoint=ck, backend="generic")
        assert (a.stats.backend, b.stats.backend) == ("scalar", "generic")
        _same(a, b)


@pytest.mark.parametrize("bad", ["fast", "Scalar", 1, True])
def test_bad_backend_names_the_argument(pend, bad):
    prob, c = pend
    with pytest.raises(ValueError, match=r"`backend` must be one of 'auto', 'scalar', 'tape', 'generic'"):
        adjoint.solve_adjoint(prob, controls=c, backend=bad)
    with pytest.raises(ValueError, match=r"`backend` must be one of"):
        adjoint.simulate(prob, controls=c, backend=bad)


def test_forward_sweep_writes_no_trajectory_out_of_bounds(tmp_path):
    """evaluate() passes a (1, 1) placeholder trajectory; the scalar forward kernel of a field with
    several states must not write x0 into it (it did: heap corruption). Bounds-checked, fresh process."""
    import os
    import subprocess
    import sys

    code = (
        "import numpy as np, adjoint\n"
        "def f(x, c, p, t):\n"
        "    return np.array([x[1], x[2], x[3], -p[0] * x[0]])\n"
        "prob = adjoint.ControlProblem(f, [1.0, 0.5, 0.25, 0.1], (0.0, 1.0), 20, terminal_cost=lambda x, p: x @ x)\n"
        "v = adjoint.evaluate(prob, params=[2.0])\n"
        "assert adjoint.solve_adjoint(prob, params=[2.0]).stats.backend == 'scalar'\n"
        "print('VALUE', repr(v), repr(adjoint.evaluate(prob, params=[2.0], backend='generic')))\n"
    )
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", ADJOINT_CACHE_DIR=str(tmp_path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    vals = out.stdout.split("VALUE ")[1].split()
    assert vals[0] == vals[1]


@njit(cache=True)
def _tv_f(x, c, p, t, out):
    out[0] = -p[0] * x[0] + p[1] * x[1] * np.sin(t)
    out[1] = -p[1] * x[0] * x[1] + np.cos(2.0 * t)


@njit(cache=True)
def _tv_vjp(x, c, p, t, lam, out_x, out_c, out_p):
    out_x[0] = -p[0] * lam[0] - p[1] * x[1] * lam[1]
    out_x[1] = p[1] * np.sin(t) * lam[0] - p[1] * x[0] * lam[1]
    out_p[0] = -x[0] * lam[0]
    out_p[1] = x[1] * np.sin(t) * lam[0] - x[0] * x[1] * lam[1]


@njit(cache=True)
def _half_sq(x, c, p, t):
    return 0.5 * (x[0] * x[0] + x[1] * x[1])


@njit(cache=True)
def _half_sq_grad(x, c, p, t, out_x, out_c, out_p):
    out_x[0] = x[0]
    out_x[1] = x[1]
    for i in range(out_p.shape[0]):
        out_p[i] = 0.0


def test_stage_loops_of_a_general_tableau_match_an_independent_runge_kutta():
    """The generic backend loops over the stages with the tableau read at run time (one call site of
    f and of vjp); the scalar backend unrolls them with constants. A 5-stage tableau with zeros in A
    and b, time-dependent dynamics: both agree bit for bit and with the complex step of a plain
    numpy Runge-Kutta."""
    A = np.zeros((5, 5))
    A[1, 0], A[2, 1], A[3, 0], A[3, 1], A[4, 0], A[4, 2], A[4, 3] = 0.3, 0.6, 0.2, 0.5, 0.1, 0.4, 0.35
    b, cn = np.array([0.3, 0.0, 0.25, 0.2, 0.25]), A.sum(axis=1)
    meth = adjoint.RungeKutta(A, b, cn)
    x0, K, T = np.array([1.0, 0.5]), 40, 1.2
    prob = adjoint.ControlProblem(
        adjoint.Dynamics(_tv_f, _tv_vjp, 2, param_dim=2),
        x0,
        (0.0, T),
        K,
        terminal_cost=adjoint.Cost(_half_sq, _half_sq_grad),
    )
    p = np.array([0.7, 1.3])

    def reference(pp):  # the same discrete method in numpy, complex-capable
        def fld(x, t):
            return np.array([-pp[0] * x[0] + pp[1] * x[1] * np.sin(t), -pp[1] * x[0] * x[1] + np.cos(2.0 * t)])

        x, tau = x0.astype(complex), T / K
        for k in range(K):
            t, ks = k * tau, []
            for i in range(5):
                ks.append(fld(x + tau * sum(A[i, j] * ks[j] for j in range(i)), t + cn[i] * tau))
            x = x + tau * sum(b[i] * ks[i] for i in range(5))
        return 0.5 * (x[0] * x[0] + x[1] * x[1])

    h = 1e-30
    ref = np.array([reference(p + 1j * h * e).imag / h for e in np.eye(2)])
    for ck in (adjoint.StoreAll(), adjoint.Revolve(snapshots=3)):
        gen = adjoint.solve_adjoint(prob, params=p, method=meth, checkpoint=ck, backend="generic")
        sca = adjoint.solve_adjoint(prob, params=p, method=meth, checkpoint=ck, backend="scalar")
        assert (gen.stats.backend, sca.stats.backend) == ("generic", "scalar")
        _same(gen, sca)
        assert abs(gen.value - reference(p).real) <= 1e-13 * abs(gen.value)
        np.testing.assert_allclose(gen.grad.params, ref, rtol=1e-11, atol=0)
