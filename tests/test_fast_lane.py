"""The fast lane of ``solve_adjoint`` (repeated calls skip the general Python path).

Every result that comes through the lane must be bitwise the result of the general path, and
every bad input that reaches it must still raise the general path's error.
"""

import numpy as np
import pytest

import adjoint
from adjoint import _solve
from adjoint.problems import lotka_volterra as lv
from adjoint.problems import pendulum


@pytest.fixture
def lane_calls(monkeypatch):
    """Counts the calls answered by a lane (a result, not a fallback to the general path)."""
    calls = {"hit": 0, "miss": 0}
    orig = _solve._Lane.run

    def counted(self, *args):
        res = orig(self, *args)
        calls["hit" if res is not None else "miss"] += 1
        return res

    monkeypatch.setattr(_solve._Lane, "run", counted)
    return calls


def general(prob, **kw):
    """The general path (``return_trajectory=True`` never takes the lane)."""
    return adjoint.solve_adjoint(prob, return_trajectory=True, **kw)


def assert_same(a, b):
    assert a.value == b.value
    for nm in ("params", "controls", "x0"):
        ga, gb = getattr(a.grad, nm), getattr(b.grad, nm)
        assert ga.shape == gb.shape and ga.dtype == gb.dtype
        np.testing.assert_array_equal(ga, gb)
    np.testing.assert_array_equal(a.x_final, b.x_final)
    for f in (
        "forward_steps",
        "adjoint_steps",
        "peak_stored_states",
        "peak_stored_bytes",
        "snapshots",
        "recomputation_ratio",
        "schedule",
        "reversal_drift",
        "fallback",
    ):
        assert getattr(a.stats, f) == getattr(b.stats, f), f


@pytest.mark.parametrize("checkpoint", ["auto", adjoint.StoreAll(), None])
def test_pendulum_controls_bitwise(lane_calls, checkpoint):
    prob = pendulum.make_problem(300)
    rng = np.random.default_rng(0)
    u = rng.normal(size=(300, 1))
    first = adjoint.solve_adjoint(prob, controls=u, checkpoint=checkpoint)
    assert lane_calls["hit"] == 0
    # compiled by the first call: a fresh process would otherwise pay it at the second call
    assert len(_solve._all_finite.signatures) == 1
    for _ in range(3):
        u = rng.normal(size=(300, 1))
        got = adjoint.solve_adjoint(prob, controls=u, checkpoint=checkpoint)
        ref = general(prob, controls=u, checkpoint=checkpoint)
        assert_same(got, ref)
        assert got.trajectory is None and got.times is None and got.stats.compile_seconds == 0.0
        assert got.stats.seconds > 0.0
    assert lane_calls["hit"] == 3
    # results are fresh arrays, not shared buffers
    again = adjoint.solve_adjoint(prob, controls=u, checkpoint=checkpoint)
    assert again.grad.controls is not got.grad.controls
    assert not np.shares_memory(again.grad.controls, got.grad.controls)
    assert first.stats.schedule == got.stats.schedule
    # one compiled specialisation serves both paths (problem.x0 is read-only: the lane must not pass it)
    for lane in prob._cache.lanes.values():
        assert len(lane.kernel.signatures) == 1
    # the lane's finiteness check has one specialisation whatever the array shapes
    assert len(_solve._all_finite.signatures) == 1


def test_lotka_volterra_params_and_x0_bitwise(lane_calls):
    prob = lv.make_problem(500)
    p = lv.initial_guess()
    adjoint.solve_adjoint(prob, params=p)
    for scale in (1.0, 1.05, 0.9):
        x0 = np.array([1.2, 0.8]) * scale
        got = adjoint.solve_adjoint(prob, params=p * scale, x0=x0)
        assert_same(got, general(prob, params=p * scale, x0=x0))
        got = adjoint.solve_adjoint(prob, params=p * scale)
        assert_same(got, general(prob, params=p * scale))
    assert lane_calls["hit"] == 6
    # RK4 gets its own lane; Euler's is not reused for it
    got = adjoint.solve_adjoint(prob, params=p, method=adjoint.RK4())
    got2 = adjoint.solve_adjoint(prob, params=p, method=adjoint.RK4())
    assert_same(got2, general(prob, params=p, method=adjoint.RK4()))
    assert got.value == got2.value
    assert got.value != adjoint.solve_adjoint(prob, params=p).value


def test_traced_tape_kernel_bitwise(lane_calls):
    H, N = 8, 2

    def field(x, c, p, t):
        W1 = p[: H * N].reshape(H, N)
        W2 = p[H * N + H : H * N + H + N * H].reshape(N, H)
        return W2 @ np.tanh(W1 @ x + p[H * N : H * N + H]) + p[H * N + H + N * H :]

    def terminal(x, c, p, t):
        return 0.5 * np.sum(x**2)

    prob = adjoint.ControlProblem(field, [1.0, 0.5], (0.0, 1.0), 200, terminal_cost=terminal, param_dim=5 * H + 2)
    rng = np.random.default_rng(1)
    adjoint.solve_adjoint(prob, params=0.3 * rng.normal(size=5 * H + 2))
    for _ in range(2):
        p = 0.3 * rng.normal(size=5 * H + 2)
        assert_same(adjoint.solve_adjoint(prob, params=p), general(prob, params=p))
    assert lane_calls["hit"] == 2


def test_unusual_arguments_take_the_general_path(lane_calls):
    prob = lv.make_problem(200)
    p = lv.initial_guess()
    adjoint.solve_adjoint(prob, params=p)
    ref = general(prob, params=p)
    # a list, a strided view, float32 and integer-valued input: same numbers, general path
    for params in (list(p), np.repeat(p, 2)[::2], p.astype(np.float32).astype(np.float64)):
        assert_same(adjoint.solve_adjoint(prob, params=params), general(prob, params=params))
    assert_same(adjoint.solve_adjoint(prob, params=p), ref)
    assert lane_calls["hit"] == 2  # the contiguous float64 arrays (the float32 round trip and p)


def test_errors_still_raised_after_the_lane_is_warm():
    prob = pendulum.make_problem(20)
    u = np.zeros((20, 1))
    adjoint.solve_adjoint(prob, controls=u)
    adjoint.solve_adjoint(prob, controls=u)
    bad = u.copy()
    bad[7] = np.nan
    with pytest.raises(ValueError, match=r"`controls` must be finite; row 7"):
        adjoint.solve_adjoint(prob, controls=bad)
    bad[7] = np.inf
    with pytest.raises(ValueError, match=r"`controls` must be finite; row 7"):
        adjoint.solve_adjoint(prob, controls=bad)
    with pytest.raises(ValueError, match=r"`controls` must have shape \(steps, control_dim\) = \(20, 1\)"):
        adjoint.solve_adjoint(prob, controls=np.zeros((19, 1)))
    with pytest.raises(ValueError, match=r"`controls` is required"):
        adjoint.solve_adjoint(prob)
    with pytest.raises(ValueError, match=r"`x0`"):
        adjoint.solve_adjoint(prob, controls=u, x0=np.array([np.nan, 0.0]))
    with pytest.raises(ValueError, match=r"`x0`"):
        adjoint.solve_adjoint(prob, controls=u, x0=np.zeros(3))
    with pytest.raises(TypeError, match=r"`method` must be an adjoint method"):
        adjoint.solve_adjoint(prob, controls=u, method="rk4")
    with pytest.raises(TypeError, match=r"`checkpoint` must be"):
        adjoint.solve_adjoint(prob, controls=u, checkpoint=3.5)
    with pytest.raises(TypeError, match=r"`checkpoint` must be"):
        adjoint.solve_adjoint(prob, controls=u, checkpoint=[1])  # unhashable


def test_params_errors_and_divergence_after_the_lane_is_warm():
    prob = lv.make_problem(200)
    p = lv.initial_guess()
    adjoint.solve_adjoint(prob, params=p)
    adjoint.solve_adjoint(prob, params=p)
    with pytest.raises(ValueError, match=r"`params`"):
        adjoint.solve_adjoint(prob, params=np.array([1.0, 2.0, np.inf, 1.0]))
    with pytest.raises(ValueError, match=r"`params`"):
        adjoint.solve_adjoint(prob, params=np.ones(5))
    # finite parameters whose solution blows up: the error names the step
    with pytest.raises(FloatingPointError, match=r"non-finite \(NaN or inf\) in step \d+ \(t = "):
        adjoint.solve_adjoint(prob, params=np.array([4000.0, 0.0, 0.0, 0.0]))
    # finite states but a gradient that overflows: the general path names the block
    with pytest.raises(FloatingPointError, match=r"gradient with respect to params is non-finite"):
        adjoint.solve_adjoint(prob, params=np.array([400.0, 0.0, 0.0, 0.0]))
    # huge but finite parameters: the lane's dot-product check overflows, the general path decides
    with pytest.raises(FloatingPointError):
        adjoint.solve_adjoint(prob, params=np.array([1e200, 0.0, 0.0, 0.0]))


def test_with_steps_and_modified_problems_do_not_reuse_a_lane(lane_calls):
    prob = lv.make_problem(200)
    p = lv.initial_guess()
    adjoint.solve_adjoint(prob, params=p)
    adjoint.solve_adjoint(prob, params=p)
    assert lane_calls["hit"] == 1
    finer = prob.with_steps(400)
    got = adjoint.solve_adjoint(finer, params=p)
    assert got.stats.forward_steps == 400
    assert_same(got, general(lv.make_problem(400), params=p))
    assert_same(adjoint.solve_adjoint(finer, params=p), general(finer, params=p))
    # the coarse problem still gets its own answers
    assert_same(adjoint.solve_adjoint(prob, params=p), general(prob, params=p))
    assert lane_calls["hit"] == 3


def test_revolve_and_trajectory_requests_are_not_laned(lane_calls):
    prob = lv.make_problem(300)
    p = lv.initial_guess()
    for _ in range(2):
        rev = adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.Revolve(snapshots=5))
        tr = adjoint.solve_adjoint(prob, params=p, return_trajectory=True)
    assert lane_calls["hit"] == 0
    assert rev.stats.forward_steps > 300 and tr.trajectory.shape == (301, 2)
    np.testing.assert_array_equal(rev.grad.params, tr.grad.params)


def test_x0_modified_in_place_is_seen(lane_calls):
    """problem.x0 is read-only; a user who unlocks and edits it still gets the new initial state."""
    prob = lv.make_problem(200)
    p = lv.initial_guess()
    adjoint.solve_adjoint(prob, params=p)
    before = adjoint.solve_adjoint(prob, params=p)
    prob.x0.setflags(write=True)
    prob.x0[0] *= 1.1
    prob.x0.setflags(write=False)
    after = adjoint.solve_adjoint(prob, params=p)
    assert lane_calls["hit"] == 2
    assert after.value != before.value
    assert_same(after, general(prob, params=p))


def test_problem_keeps_a_private_copy_of_x0():
    """ControlProblem copies x0: the caller's array stays writable and unaliased."""
    x0 = np.array([1.0, 0.5])
    prob = adjoint.ControlProblem(lv.DYNAMICS, x0, (0.0, 1.0), 10, terminal_cost=lv.TERMINAL)
    assert x0.flags.writeable and not prob.x0.flags.writeable
    assert not np.shares_memory(x0, prob.x0)
    x0[0] = 7.0
    assert prob.x0[0] == 1.0


def test_read_only_inputs_share_the_compiled_kernel(lane_calls):
    """Read-only params/x0/controls (an Objective passes the problem's read-only x0 back) must not
    compile a second specialisation of the kernel (0.45 s in a fresh process), on either path."""
    prob = lv.make_problem(300)
    p = lv.initial_guess()
    p_ro, x0_ro = p.copy(), prob.x0.copy()
    p_ro.flags.writeable = False
    x0_ro.flags.writeable = False
    first = adjoint.solve_adjoint(prob, params=p_ro, x0=x0_ro)  # general path, read-only
    lane = adjoint.solve_adjoint(prob, params=p_ro, x0=x0_ro)  # lane, read-only
    rw = adjoint.solve_adjoint(prob, params=p.copy(), x0=prob.x0.copy())
    assert lane_calls["hit"] == 2
    assert_same(first, lane)
    assert_same(first, rw)
    for ln in prob._cache.lanes.values():
        assert len(ln.kernel.signatures) == 1
    pp = pendulum.make_problem(100)
    u = np.random.default_rng(1).normal(size=(100, 1))
    u_ro = u.copy()
    u_ro.flags.writeable = False
    r = [adjoint.solve_adjoint(pp, controls=c) for c in (u_ro, u_ro, u)]
    assert_same(r[0], r[1])
    assert_same(r[0], r[2])
    for ln in pp._cache.lanes.values():
        assert len(ln.kernel.signatures) == 1
    fun = pp.objective(wrt="controls", controls=u)
    v = fun.initial()
    fun(v)
    fun(0.5 * v)
    for ln in pp._cache.lanes.values():
        assert len(ln.kernel.signatures) == 1
