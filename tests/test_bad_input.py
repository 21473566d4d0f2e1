"""Table-driven bad input across the public API: each case asserts the exception type and a phrase
of its message that names the argument (and, where there is one, the fix). The CLI cases run in
subprocesses. More specific behaviour (messages of user-function failures, divergence reports) is
pinned in ``test_errors.py``."""

import os
import subprocess
import sys
import warnings

import numba
import numpy as np
import pytest

import adjoint
import adjoint.ad as ad
from adjoint.ad import TraceError
from adjoint.problems import lotka_volterra as lv
from adjoint.problems import pendulum

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

LV = lv.make_problem(50)
P0 = lv.initial_guess()
PEND = pendulum.make_problem(20)
D, T = lv.DYNAMICS, lv.TERMINAL
HUGE = adjoint.ControlProblem(D, [1.0, 1.0], (0, 1), 10**12, terminal_cost=T)
DIVERGING = np.array([400.0, 1.0, 1.0, 1.0])
LOG_COST = adjoint.ControlProblem(
    lambda x, c, p, t: -p[0] * x, [1.0], (0, 1), 10, terminal_cost=lambda x, p: np.log(x[0] - 5.0)
)
B2 = np.ones(2) / 2
A3 = np.ones(3) / 3


def E(x, th):
    return 0.5 * np.sum((x - th) ** 2)


def L(x, th):
    return np.sum(x)


def saddle(x, th):
    return 0.5 * x[0] ** 2 - 0.5 * x[1] ** 2 + th[0] * x[0]


def maximum(x, th):
    return -0.5 * np.sum(x * x) + 0.0 * th[0]


def setitem(x):
    y = np.zeros(3)
    y[0] = x[0] * 2
    return np.sum(y)


def while_loop(x):
    s = x[0]
    while s < 10:
        s = s * 2
    return s


def cp(**kw):
    args = dict(dynamics=D, x0=[1.0, 1.0], t_span=(0, 1), steps=10, terminal_cost=T)
    args.update(kw)
    return adjoint.ControlProblem(**args)


def sa(prob=LV, **kw):
    if prob is LV:
        kw.setdefault("params", P0)
    return adjoint.solve_adjoint(prob, **kw)


def argmin(energy=E, theta=None, x_init=None, **kw):
    theta = np.ones(3) if theta is None else theta
    x_init = np.zeros(3) if x_init is None else x_init
    return adjoint.solve_argmin(energy, L, theta, x_init, **kw)


CASES = [
    # -- ControlProblem ----------------------------------------------------------------------------
    ("cp-x0-shape", lambda: cp(x0=[1.0, 1.0, 1.0]), ValueError, r"`x0` must have shape \(2,\)"),
    ("cp-x0-nan", lambda: cp(x0=[1.0, np.nan]), ValueError, r"`x0` must be finite; entry 1 is nan"),
    ("cp-x0-str", lambda: cp(x0="ab"), TypeError, r"`x0` must be an array of real numbers"),
    ("cp-span-equal", lambda: cp(t_span=(1, 1)), ValueError, r"`t_span` must satisfy t1 > t0.*Reparametrise"),
    ("cp-span-reversed", lambda: cp(t_span=(2, 1)), ValueError, r"`t_span` must satisfy t1 > t0"),
    ("cp-span-inf", lambda: cp(t_span=(0, np.inf)), ValueError, r"`t_span` must be finite"),
    ("cp-span-three", lambda: cp(t_span=(0, 1, 2)), ValueError, r"`t_span` must be a pair of numbers \(t0, t1\)"),
    ("cp-steps-zero", lambda: cp(steps=0), ValueError, r"`steps` must be an integer >= 1"),
    ("cp-steps-float", lambda: cp(steps=2.5), TypeError, r"`steps` must be an integer >= 1; got 2.5"),
    ("cp-steps-str", lambda: cp(steps="10"), TypeError, r"`steps` must be an integer >= 1"),
    ("cp-no-cost", lambda: cp(terminal_cost=None), ValueError, r"at least one of `terminal_cost` and `running_cost`"),
    (
        "cp-dynamics-str",
        lambda: cp(dynamics="f"),
        TypeError,
        r"`dynamics` must be an adjoint.Dynamics.*fn\(x, c, p, t\)",
    ),
    ("cp-cost-str", lambda: cp(terminal_cost="T"), TypeError, r"`terminal_cost` must be an adjoint.Cost or a plain"),
    ("cp-immutable", lambda: setattr(LV, "steps", 3), AttributeError, r"immutable.*with_steps"),
    # -- solve_adjoint -----------------------------------------------------------------------------
    ("sa-params-missing", lambda: adjoint.solve_adjoint(LV), ValueError, r"`params` is required: .*param_dim=4"),
    ("sa-params-shape", lambda: sa(params=[1.0, 2.0]), ValueError, r"`params` must have shape \(4,\)"),
    ("sa-params-inf", lambda: sa(params=[1.0, 2.0, np.inf, 1.0]), ValueError, r"`params` must be finite; entry 2"),
    ("sa-params-complex", lambda: sa(params=np.ones(4) * 1j), TypeError, r"`params` must be real"),
    ("sa-params-str", lambda: sa(params="abcd"), TypeError, r"`params` must be an array of real numbers"),
    ("sa-controls-missing", lambda: sa(PEND), ValueError, r"`controls` is required.*shape \(20, 1\)"),
    ("sa-controls-shape", lambda: sa(PEND, controls=np.zeros((19, 1))), ValueError, r"`controls` must have shape"),
    ("sa-controls-nan", lambda: sa(PEND, controls=np.full((20, 1), np.nan)), ValueError, r"`controls` must be finite"),
    (
        "sa-controls-extra",
        lambda: sa(controls=np.zeros((50, 1))),
        ValueError,
        r"`controls` must have shape .*\(50, 0\)",
    ),
    ("sa-x0-shape", lambda: sa(x0=[1.0]), ValueError, r"`x0` must have shape \(2,\)"),
    ("sa-method-str", lambda: sa(method="rk5"), TypeError, r"`method` must be an adjoint method such as"),
    ("sa-method-int", lambda: sa(method=3), TypeError, r"`method` must be an adjoint method"),
    ("sa-checkpoint-str", lambda: sa(checkpoint="revolve"), TypeError, r"`checkpoint` must be \"auto\" or a schedule"),
    ("sa-revolve-zero", lambda: sa(checkpoint=adjoint.Revolve(0)), ValueError, r"`snapshots` must be an integer >= 1"),
    (
        "sa-budget-tiny",
        lambda: sa(checkpoint=adjoint.MemoryBudget(8)),
        ValueError,
        r"too small for one state.*at least 16",
    ),
    ("sa-budget-str", lambda: sa(checkpoint=adjoint.MemoryBudget("lots")), ValueError, r"`bytes` string must be"),
    ("sa-reversible-euler", lambda: sa(checkpoint=adjoint.Reversible()), TypeError, r"needs an invertible method"),
    ("sa-backend", lambda: sa(backend="gpu"), ValueError, r"`backend` must be one of 'auto', 'scalar'"),
    ("sa-diverges", lambda: sa(params=DIVERGING), FloatingPointError, r"non-finite .* in step \d+.*reduce the step"),
    (
        "sa-trajectory-too-big",
        lambda: sa(HUGE, params=P0, return_trajectory=True),
        MemoryError,
        r"trajectory of 1000000000001 states .*return_trajectory=False",
    ),
    (
        "sa-x0-overflows",
        lambda: adjoint.solve_adjoint(lv.make_problem(50), params=P0, x0=[1e200, 1.0]),  # checked afresh
        ValueError,
        r"`running_cost.value` is inf at x0.*entries up to 1e\+200.*rescale",
    ),
    (
        "sa-nan-cost",
        lambda: sa(LOG_COST, params=[1.0]),
        FloatingPointError,
        r"objective is nan although the state stayed finite.*log or sqrt of a negative",
    ),
    (
        "cp-plain-dynamics-two-args",
        lambda: cp(dynamics=lambda x, p: -p[0] * x, x0=[1.0]),
        TypeError,
        r"`dynamics` as a plain function must take \(x, c, p, t\).*it takes 2 arguments",
    ),
    (
        "cp-plain-dynamics-five-args",
        lambda: cp(dynamics=lambda x, c, p, t, q: -p[0] * x, x0=[1.0]),
        TypeError,
        r"must take \(x, c, p, t\).*it takes 5 arguments",
    ),
    # -- evaluate, simulate, objective, check_gradient ---------------------------------------------
    ("ev-nan-cost", lambda: adjoint.evaluate(LOG_COST, params=[1.0]), FloatingPointError, r"objective is nan"),
    ("ev-params-shape", lambda: adjoint.evaluate(LV, params=[1.0]), ValueError, r"`params` must have shape \(4,\)"),
    ("ev-diverges", lambda: adjoint.evaluate(LV, params=DIVERGING), FloatingPointError, r"non-finite"),
    ("sim-diverges", lambda: adjoint.simulate(LV, params=DIVERGING), FloatingPointError, r"non-finite"),
    ("sim-too-big", lambda: adjoint.simulate(HUGE, params=P0), MemoryError, r"simulate: .*adjoint.evaluate\(\)"),
    ("sim-backend", lambda: adjoint.simulate(LV, params=P0, backend=1), ValueError, r"`backend` must be one of"),
    ("obj-wrt", lambda: adjoint.objective(LV, wrt="speed", params=P0), ValueError, r"`wrt` entries must be"),
    (
        "obj-vector-shape",
        lambda: adjoint.objective(LV, wrt="params", params=P0)(np.ones(3)),
        ValueError,
        r"optimisation vector must have shape \(4,\)",
    ),
    ("cg-h-zero", lambda: adjoint.check_gradient(LV, params=P0, h=0), ValueError, r"`h` must be a positive finite"),
    ("cg-h-nan", lambda: adjoint.check_gradient(LV, params=P0, h=np.nan), ValueError, r"`h` must be a positive"),
    ("cg-h-str", lambda: adjoint.check_gradient(LV, params=P0, h="x"), TypeError, r"`h` must be a positive float"),
    ("cg-dirs-zero", lambda: adjoint.check_gradient(LV, params=P0, directions=0), ValueError, r"`directions` must"),
    ("cg-dirs-float", lambda: adjoint.check_gradient(LV, params=P0, directions=2.5), ValueError, r"`directions`"),
    ("cg-nothing", lambda: adjoint.check_gradient(LV, params=P0, wrt="controls"), ValueError, r"nothing to check"),
    # -- methods and schedules ---------------------------------------------------------------------
    ("rk-str", lambda: adjoint.RungeKutta("abc", [1.0], [0.0]), TypeError, r"A must be an array of real numbers"),
    ("rk-implicit", lambda: adjoint.RungeKutta([[1.0]], [1.0], [1.0]), ValueError, r"must be explicit"),
    ("rk-shapes", lambda: adjoint.RungeKutta([[0, 0], [1, 0]], [1.0], [0, 1]), ValueError, r"b and c must have shape"),
    ("rk-nan", lambda: adjoint.RungeKutta([[0.0]], [np.nan], [0.0]), ValueError, r"b must be finite"),
    ("revolve-neg", lambda: adjoint.Revolve(-1), ValueError, r"`snapshots` must be an integer >= 1"),
    ("revolve-float", lambda: adjoint.Revolve(2.5), TypeError, r"`snapshots` must be an integer"),
    ("uniform-str", lambda: adjoint.Uniform("3"), TypeError, r"`snapshots` must be an integer"),
    ("budget-neg", lambda: adjoint.MemoryBudget(-5), ValueError, r"`bytes` must be a positive"),
    # -- adjoint.ad --------------------------------------------------------------------------------
    ("ad-str-argument", lambda: ad.grad(lambda x: np.sum(x * x))("abc"), TypeError, r"argument 0 .* got the string"),
    ("ad-argnums-str", lambda: ad.grad(lambda x: np.sum(x), "abc"), TypeError, r"`argnums` must be an int or a tuple"),
    ("ad-argnums-range", lambda: ad.grad(lambda x: np.sum(x), 1)(np.ones(2)), ValueError, r"`argnums` entry 1"),
    ("ad-not-callable", lambda: ad.grad(3.0), TypeError, r"`fn` must be a callable"),
    ("ad-nonscalar", lambda: ad.grad(lambda x: x * 2)(np.ones(2)), ValueError, r"one scalar output.*adjoint.vjp"),
    ("ad-setitem", lambda: ad.grad(setitem)(np.ones(3)), TraceError, r"assigning a traced value.*np.array\(\[e0"),
    ("ad-while", lambda: ad.grad(while_loop)(np.ones(3)), TraceError, r"data-dependent Python control flow.*np.where"),
    ("ad-jvp-shape", lambda: ad.jvp(lambda x: x * 2, (np.ones(2),), (np.ones(3),)), ValueError, r"`tangents\[0\]`"),
    # -- solve_argmin ------------------------------------------------------------------------------
    ("am-theta-str", lambda: argmin(theta="abc"), TypeError, r"`theta` must be an array of real numbers"),
    ("am-x-init-str", lambda: argmin(x_init="abc"), TypeError, r"`x_init` must be an array of real numbers"),
    ("am-mode", lambda: argmin(mode="foo"), ValueError, r"`mode` must be one of \('implicit', 'unrolled'\)"),
    ("am-linear-solver", lambda: argmin(linear_solver="qr"), ValueError, r"`linear_solver` must be 'cg' or 'dense'"),
    ("am-inner-tol", lambda: argmin(inner_tol="x"), TypeError, r"`inner_tol` must be a positive number"),
    ("am-inner-max-iter", lambda: argmin(inner_max_iter=0), ValueError, r"`inner_max_iter` must be an integer >= 1"),
    ("am-energy", lambda: argmin(energy="E"), TypeError, r"`energy` must be a function energy\(x, theta\)"),
    ("am-theta-nan", lambda: argmin(theta=np.array([np.nan, 1, 1])), ValueError, r"`theta` must be finite"),
    ("am-on-failure", lambda: argmin(on_failure="ignore"), ValueError, r"`on_failure` must be 'raise' or 'warn'"),
    (
        "am-dense-saddle",
        lambda: argmin(saddle, np.ones(2), np.zeros(2), linear_solver="dense"),
        adjoint.ArgminConvergenceError,
        r"not positive definite",
    ),
    (
        "am-dense-start-at-maximum",
        lambda: argmin(maximum, linear_solver="dense"),
        adjoint.ArgminConvergenceError,
        r"not positive definite",
    ),
    ("am-cg-start-at-maximum", lambda: argmin(maximum), adjoint.ArgminConvergenceError, r"not positive definite"),
    # -- Sinkhorn ----------------------------------------------------------------------------------
    (
        "sk-eps-zero",
        lambda: adjoint.solve_sinkhorn(A3, B2, np.ones((3, 2)), 0.0),
        ValueError,
        r"`eps` must be a positive",
    ),
    (
        "sk-negative-weight",
        lambda: adjoint.solve_sinkhorn(np.array([1.0, -0.5, 0.5]), B2, np.ones((3, 2)), 0.1),
        ValueError,
        r"`a` must be nonnegative.*normalise",
    ),
    (
        "sk-cost-shape",
        lambda: adjoint.solve_sinkhorn(B2, B2, np.ones((3, 2)), 0.1),
        ValueError,
        r"`cost` must have shape",
    ),
    (
        "sk-cost-nan",
        lambda: adjoint.solve_sinkhorn(A3, B2, np.full((3, 2), np.nan), 0.1),
        ValueError,
        r"`cost` must be finite",
    ),
    ("sk-method", lambda: adjoint.solve_sinkhorn(A3, B2, np.ones((3, 2)), 0.1, method="fast"), ValueError, r"`method`"),
    (
        "sk-max-iter",
        lambda: adjoint.solve_sinkhorn(A3, B2, np.ones((3, 2)), 0.1, max_iter=0),
        ValueError,
        r"`max_iter` must be a positive integer",
    ),
    (
        "skg-mode",
        lambda: adjoint.sinkhorn_value_and_grad(A3, B2, np.zeros((3, 2)), np.ones((2, 2)), 0.1, mode="magic"),
        ValueError,
        r"`mode` must be one of",
    ),
    (
        "skg-x-nan",
        lambda: adjoint.sinkhorn_value_and_grad(A3, B2, np.full((3, 2), np.nan), np.ones((2, 2)), 0.1),
        ValueError,
        r"`x` must be finite",
    ),
    (
        "skg-dims",
        lambda: adjoint.sinkhorn_value_and_grad(A3, B2, np.zeros((3, 2)), np.ones((2, 3)), 0.1),
        ValueError,
        r"`y` must have the same dimension",
    ),
]


@pytest.mark.parametrize("thunk, exc, phrase", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input(thunk, exc, phrase):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overflow warnings of numpy on the way to the error
        with pytest.raises(exc, match=phrase):
            thunk()


def test_a_sweep_planned_for_hours_warns_before_it_starts():
    # turned into an error, the warning stops the call before any step is taken
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(RuntimeWarning, match=r"1e\+12 adjoint steps .*recomputation ratio .*at least ~"):
            adjoint.solve_adjoint(HUGE, params=P0)


def test_there_are_sixty_cases_or_more():
    assert len(CASES) + len(CLI_CASES) >= 60


# -- the command line, in subprocesses -------------------------------------------------------------

CLI_CASES = [
    ("cli-max-iter-zero", ["solve", "lqr", "--max-iter", "0"], "--max-iter must be >= 1"),
    ("cli-max-iter-negative", ["solve", "lqr", "--maxiter", "-5"], "--max-iter must be >= 1"),
    ("cli-steps-zero", ["solve", "lqr", "--steps", "0"], "--steps must be >= 1"),
    ("cli-steps-not-int", ["solve", "lqr", "--steps", "ten"], "--steps: invalid int value"),
    ("cli-unknown-problem", ["solve", "nope"], "unknown problem 'nope'"),
    ("cli-option-not-taken", ["solve", "ridge", "--method", "rk4"], "does not take --method"),
    ("cli-out-is-a-file", ["solve", "lqr", "--out", "{file}"], "exists and is not a folder"),
    ("cli-out-below-a-file", ["solve", "lqr", "--out", "{file}/sub"], "cannot be created"),
]


@pytest.mark.parametrize("argv, phrase", [pytest.param(*c[1:], id=c[0]) for c in CLI_CASES])
def test_cli_bad_input(argv, phrase, tmp_path):
    afile = tmp_path / "a_file"
    afile.write_text("")
    argv = [a.replace("{file}", str(afile)) for a in argv]
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(
        [sys.executable, "-m", "adjoint", *argv], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300
    )
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert phrase in out.stderr
    assert "Traceback" not in out.stderr
    assert "iter" not in out.stdout  # refused before any optimisation ran


# -- indices out of the declared bounds: in a subprocess, so that a heap corruption would fail it ----

OOB_SCRIPT = r"""
import numpy as np, numba, adjoint


@numba.njit
def f_reads_p3(x, c, p, t, out):
    out[0] = p[0] * x[0] - p[1] * x[0] * x[1]
    out[1] = p[2] * x[0] * x[1] - p[3] * x[1]


@numba.njit
def f_writes_out2(x, c, p, t, out):
    out[0] = x[1]
    out[1] = -x[0]
    out[2] = 0.0


@numba.njit
def f_swap(x, c, p, t, out):
    out[0] = x[1]
    out[1] = -x[0]


@numba.njit
def vjp(x, c, p, t, z, out_x, out_c, out_p):
    out_x[0] = z[0]
    out_x[1] = z[1]
    out_p[:] = 0.0


@numba.njit
def L(x, c, p, t):
    return 0.5 * (x[0] ** 2 + x[1] ** 2)


@numba.njit
def dL(x, c, p, t, out_x, out_c, out_p):
    out_x[0] = x[0]
    out_x[1] = x[1]
    out_p[:] = 0.0


@numba.njit
def L_reads_x2(x, c, p, t):
    return x[2]


for name, dyn, cost, params in [
    ("read", adjoint.Dynamics(f_reads_p3, vjp, state_dim=2, param_dim=3), adjoint.Cost(L, dL), [1.0, 0.4, 0.4]),
    ("write", adjoint.Dynamics(f_writes_out2, vjp, state_dim=2), adjoint.Cost(L, dL), None),
    ("cost", adjoint.Dynamics(f_swap, vjp, state_dim=2), adjoint.Cost(L_reads_x2, dL), None),
]:
    for backend in ("auto", "generic"):
        prob = adjoint.ControlProblem(dyn, x0=[1.0, 1.0], t_span=(0.0, 5.0), steps=1000, terminal_cost=cost)
        try:
            adjoint.solve_adjoint(prob, params=params, backend=backend)
            print(name, backend, "NO ERROR")
        except IndexError as exc:
            print(name, backend, "IndexError:", exc)
"""


def test_indices_out_of_bounds_raise_before_any_kernel(tmp_path):
    script = tmp_path / "oob.py"
    script.write_text(OOB_SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]  # a corrupted heap aborts the process (SIGABRT)
    assert "NO ERROR" not in out.stdout
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 6, out.stdout
    for backend in ("auto", "generic"):
        assert f"read {backend} IndexError: `dynamics.f` reads p[3], but `p` has 3 entries (param_dim=3" in out.stdout
        assert f"write {backend} IndexError: `dynamics.f` writes out[2], but `out` has 2 entries (state_dim=2" in (
            out.stdout
        )
        assert f"cost {backend} IndexError: `terminal_cost.value` reads x[2], but `x` has 2 entries" in out.stdout


@numba.njit
def _shift(x, c, p, t, out):  # reads x[n] at the last i
    for i in range(x.shape[0]):
        out[i] = x[i + 1] - x[i]


@numba.njit
def _spill(x, c, p, t, out):  # writes out[n]
    for i in range(x.shape[0] + 1):
        out[i] = p[0] * x[i - 1]


@numba.njit
def _reads_p1(x, c, p, t, out):  # reads p[1] with one parameter
    for i in range(x.shape[0]):
        out[i] = -p[0] * x[i] + p[1]


@numba.njit
def _noisy(x, c, p, t, out):  # in bounds, but not deterministic
    for i in range(x.shape[0]):
        out[i] = -p[0] * x[i] + 1e-3 * np.random.standard_normal()


@numba.njit
def _decay(x, c, p, t, out):
    for i in range(x.shape[0]):
        out[i] = -p[0] * x[i]


def test_large_states_are_probed_by_the_compiled_function_on_guarded_arrays():
    from adjoint._bounds import PYTHON_PROBE_MAX, probe_bounds

    n = PYTHON_PROBE_MAX + 1

    def args():
        return (np.linspace(1.0, 2.0, n), np.zeros(0), np.array([0.7]), 0.0, np.zeros(n))

    with pytest.raises(
        IndexError, match=r"`dynamics.f` reads past the end of `x`, which has 20001 entries \(state_dim"
    ):
        probe_bounds("`dynamics.f`", _shift, "f", args())
    with pytest.raises(IndexError, match=r"`dynamics.f` writes past the end of `out`, which has 20001 entries"):
        probe_bounds("`dynamics.f`", _spill, "f", args())
    with pytest.raises(IndexError, match=r"`dynamics.f` reads past the end of `p`, which has 1 entries \(param_dim=1"):
        probe_bounds("`dynamics.f`", _reads_p1, "f", args())
    probe_bounds("`dynamics.f`", _noisy, "f", args())  # random draws are not taken for a read past the end
    probe_bounds("`dynamics.f`", _decay, "f", args())
    # small arrays: the Python source names the index
    with pytest.raises(IndexError, match=r"`dynamics.f` reads x\[100\], but `x` has 100 entries \(state_dim=100"):
        probe_bounds("`dynamics.f`", _shift, "f", (np.ones(100), np.zeros(0), np.zeros(0), 0.0, np.zeros(100)))
