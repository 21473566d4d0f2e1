"""Checkpoint schedules: invariants of every action, optimal step counts, bitwise gradients, budgets.

The schedules are checked by a simulated executor that follows the actions of the compiled planner
(the same code the gradient kernel runs) and checks after every action that the state an adjoint
step needs is present, that no more than ``s`` slots are used and that every step is reversed once,
in order. Forward-step counts are compared with Griewank and Walther's formula, computed here.
"""

from __future__ import annotations

from math import comb

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import adjoint
from adjoint.checkpointing import MemoryBudget, Revolve, StoreAll, Uniform, parse_bytes
from adjoint.problems import lotka_volterra as lv
from adjoint.problems import pendulum

# --------------------------------------------------------------------------------------------
# reference formula and simulated executor
# --------------------------------------------------------------------------------------------


def optimal_forward_steps(K: int, s: int) -> int:
    """``t(K, s) + 1``, ``t(l, s) = r l - C(s + r, s + 1)``, ``C(s + r - 1, s) < l <= C(s + r, s)``."""
    r = 0
    while comb(s + r, s) < K:
        r += 1
    return r * K - comb(s + r, s + 1) + 1


def simulate(schedule, K: int, s: int):
    """Execute ``schedule.plan(K)`` on symbolic states; return ``(forward_steps, peak_slots)``.

    The working state and the slots hold state indices. Invariants checked after every action.
    """
    work = 0  # index of the state in the working register (x0 at the start)
    slots = {}  # slot -> state index
    next_adjoint = K - 1
    terminal_done = False
    fwd = 0
    peak = 0
    for i, a in enumerate(schedule.plan(K)):
        where = f"action {i} ({a}) of {schedule!r} with K={K}"
        if a.op == "store":
            assert work == a.k, where
            assert 0 <= a.arg < s, where
            slots[a.arg] = a.k
        elif a.op == "restore":
            assert slots.get(a.arg) == a.k, where
            work = a.k
        elif a.op == "advance":
            assert work == a.k and a.arg > a.k, where
            assert a.arg <= next_adjoint, where  # never past the next state the adjoint needs
            fwd += a.arg - a.k
            work = a.arg
        elif a.op == "terminal":
            assert not terminal_done and work == K - 1 == a.k, where
            terminal_done = True
            fwd += 1
        elif a.op == "adjoint":
            assert terminal_done, where
            assert a.k == next_adjoint, where  # every step reversed once, in descending order
            assert work == a.k, where  # its input state is present
            next_adjoint -= 1
            # states after the reversed step are no longer needed: their slots are free
            slots = {sl: k for sl, k in slots.items() if k <= a.k}
        else:  # pragma: no cover
            raise AssertionError(f"unknown action {a}")
        if i == 0:
            assert a.op == "store" and a.k == 0, "the plan must start by storing x0"
        assert len(slots) <= s, where
        peak = max(peak, len(slots))
    assert next_adjoint == -1, f"{schedule!r} with K={K} did not reverse every step"
    return fwd, peak


# --------------------------------------------------------------------------------------------
# schedules, exhaustively for small cases and with hypothesis for larger ones
# --------------------------------------------------------------------------------------------


def test_formula_examples():
    assert optimal_forward_steps(5, 2) == 7
    assert optimal_forward_steps(20, 3) == 46
    assert optimal_forward_steps(20, 4) == 40
    assert all(optimal_forward_steps(K, 1) == K * (K - 1) // 2 + 1 for K in range(1, 40))


def test_all_small_schedules():
    for K in range(1, 61):
        for s in range(1, 9):
            fwd, peak = simulate(Revolve(snapshots=s), K, s)
            assert fwd == optimal_forward_steps(K, s) == Revolve(snapshots=s).forward_steps(K), (K, s)
            assert peak <= s
            fwd, peak = simulate(Uniform(snapshots=s), K, s)
            assert fwd == Uniform(snapshots=s).forward_steps(K), (K, s)
            assert fwd >= optimal_forward_steps(K, s) and peak <= s
        assert simulate(StoreAll(), K, K) == (K, K)


@settings(max_examples=60, deadline=None)
@given(K=st.integers(61, 5000), s=st.integers(1, 60))
def test_random_larger_schedules(K, s):
    if s == 1:
        K = min(K, 400)  # l (l - 1) / 2 steps; the actions stay O(K) but keep the test short
    fwd, peak = simulate(Revolve(snapshots=s), K, s)
    assert fwd == optimal_forward_steps(K, s)
    assert peak <= s
    fwd, peak = simulate(Uniform(snapshots=s), K, s)
    assert fwd == Uniform(snapshots=s).forward_steps(K) and peak <= s


def _action_stream(K: int, s: int, rule: int, compound: bool):
    """The compiled planner's actions ``(op, arg0, arg1)``, primitive or in compound mode."""
    from adjoint.checkpointing import _streamed as sm

    stack, meta = (sm.plan_compound if compound else sm.plan_init)(K, s, rule)
    cap = max(sm.CHUNK, 2 * min(s, K) + 16)
    ops, a0, a1 = (np.empty(cap, dtype=np.int64) for _ in range(3))
    out = []
    while True:
        n = sm.plan_chunk(stack, meta, ops, a0, a1)
        assert n >= 0
        if n == 0:
            return out
        out += zip(ops[:n].tolist(), a0[:n].tolist(), a1[:n].tolist())


def _check_compound(K: int, s: int):
    """The executors' compound actions stand for exactly the primitive actions users print."""
    from adjoint.checkpointing._streamed import (
        OP_MASK,
        OP_ONESLOT,
        OP_SWEEP,
        RULE_BINOMIAL,
        RULE_UNIFORM,
        expand_compound,
    )

    for rule in (RULE_BINOMIAL, RULE_UNIFORM):
        prim = _action_stream(K, s, rule, False)
        comp = _action_stream(K, s, rule, True)
        expanded = [e for c in comp for e in expand_compound(*c)]
        assert expanded == prim, (K, s, rule)
        if rule == RULE_BINOMIAL and K > s + 2:
            assert len(comp) < len(prim), (K, s)
        for op, a, b in comp:
            if op & OP_MASK > 4:
                assert b < K and b - a >= 2
                if op & OP_MASK != OP_ONESLOT:  # slots used stay inside the s slots
                    assert (op >> 3) + b - a - (0 if op & OP_MASK == OP_SWEEP else 1) <= min(s, K)


def test_compound_actions_are_the_primitive_schedule():
    for K in range(1, 61):
        for s in range(1, 9):
            _check_compound(K, s)


@settings(max_examples=30, deadline=None)
@given(K=st.integers(61, 20000), s=st.integers(1, 60))
def test_compound_actions_random_larger(K, s):
    _check_compound(min(K, 400) if s == 1 else K, s)


def test_snapshots_at_least_steps_is_store_all():
    for K in (1, 2, 7):
        for s in (K, K + 1, 10 * K):
            assert simulate(Revolve(snapshots=s), K, s) == (K, K)
            assert Revolve(snapshots=s).forward_steps(K) == K


def test_plan_is_printable():
    text = str(Revolve(snapshots=2).plan(5))
    assert text.splitlines()[0] == "Plan(Revolve(snapshots=2), steps=5: forward_steps=7, peak_stored_states<=2)"
    assert "store x_0 in slot 0" in text and "adjoint step 0" in text
    acts = list(Revolve(snapshots=2).plan(5))
    assert [a.op for a in acts].count("adjoint") == 5
    assert acts[0] == ("store", 0, 0)


def test_plan_for_ten_million_steps_is_streamed():
    """Planning K = 10^7 with s = 20 keeps O(s) state: the first actions come at once."""
    from adjoint.checkpointing._streamed import plan_init

    stack, meta = plan_init(10**7, 20, 0)
    assert stack.nbytes < 1000 and meta.nbytes < 100
    plan = Revolve(snapshots=20).plan(10**7)
    first = []
    for a in plan:
        first.append(a)
        if len(first) == 50:
            break
    assert first[0].op == "store" and first[1].op == "advance"
    assert plan.forward_steps == optimal_forward_steps(10**7, 20)


@pytest.mark.slow
def test_ten_million_step_plan_counts():
    K, s = 10**7, 20
    fwd = sum(a.arg - a.k for a in Revolve(snapshots=s).plan(K) if a.op == "advance") + 1
    assert fwd == optimal_forward_steps(K, s)


# --------------------------------------------------------------------------------------------
# gradients: bitwise equal to store-all, stats
# --------------------------------------------------------------------------------------------

SCHEDULES = [
    Revolve(snapshots=1),
    Revolve(snapshots=2),
    Revolve(snapshots=5),
    Revolve(snapshots=30),
    Uniform(snapshots=1),
    Uniform(snapshots=3),
    Uniform(snapshots=12),
    MemoryBudget(16 * 9),
]


@pytest.fixture(scope="session")
def lv_problem():
    return lv.make_problem(steps=157)


@pytest.fixture(scope="session")
def pendulum_problem():
    return pendulum.make_problem(steps=123)


def _same(a, b):
    return (
        a.value == b.value
        and np.array_equal(a.grad.params, b.grad.params)
        and np.array_equal(a.grad.controls, b.grad.controls)
        and np.array_equal(a.grad.x0, b.grad.x0)
        and np.array_equal(a.x_final, b.x_final)
    )


@pytest.mark.parametrize("method", [adjoint.Euler(), adjoint.RK4()], ids=["euler", "rk4"])
def test_bitwise_lotka_volterra(lv_problem, method):
    p = lv.initial_guess()
    ref = adjoint.solve_adjoint(lv_problem, params=p, method=method, checkpoint=StoreAll())
    K = lv_problem.steps
    for sch in SCHEDULES:
        res = adjoint.solve_adjoint(lv_problem, params=p, method=method, checkpoint=sch)
        assert _same(res, ref), sch
        st_ = res.stats
        s = sch.snapshots if not isinstance(sch, MemoryBudget) else 9
        assert st_.peak_stored_states <= s
        assert st_.peak_stored_bytes == st_.peak_stored_states * 2 * 8
        assert st_.recomputation_ratio == st_.forward_steps / K
        if not isinstance(sch, Uniform):
            assert st_.forward_steps == optimal_forward_steps(K, min(s, K)), sch
        else:
            assert st_.forward_steps == sch.forward_steps(K)


@pytest.mark.parametrize("method", [adjoint.Euler(), adjoint.RK4()], ids=["euler", "rk4"])
def test_bitwise_pendulum_controls(pendulum_problem, method):
    K = pendulum_problem.steps
    c = pendulum.initial_guess(K)
    ref = adjoint.solve_adjoint(pendulum_problem, controls=c, method=method, checkpoint=StoreAll())
    assert np.any(ref.grad.controls != 0.0)
    for sch in (Revolve(snapshots=3), Revolve(snapshots=9), Uniform(snapshots=4), Uniform(snapshots=20)):
        res = adjoint.solve_adjoint(pendulum_problem, controls=c, method=method, checkpoint=sch)
        assert _same(res, ref), sch
        assert res.stats.peak_stored_states <= sch.snapshots


@pytest.mark.parametrize("method", [adjoint.Euler(), adjoint.RK4()], ids=["euler", "rk4"])
def test_fused_compound_executor_matches_generic(lv_problem, method):
    """The generated executor (compound actions) and the generic one (primitive actions): same
    bits, same forward steps, same peak slot."""
    p = lv.initial_guess()
    schedules = (Revolve(snapshots=2), Revolve(snapshots=4), Revolve(snapshots=11), Uniform(snapshots=5))
    fused = [adjoint.solve_adjoint(lv_problem, params=p, method=method, checkpoint=sch) for sch in schedules]
    for sch, a in zip(schedules, fused):
        b = adjoint.solve_adjoint(lv_problem, params=p, method=method, checkpoint=sch, backend="generic")
        assert _same(a, b), sch
        assert a.stats.forward_steps == b.stats.forward_steps, sch
        assert a.stats.peak_stored_states == b.stats.peak_stored_states, sch


def test_stats_of_store_all_and_degenerate(lv_problem):
    p = lv.initial_guess()
    K = lv_problem.steps
    for sch in (StoreAll(), Revolve(snapshots=K + 1), Uniform(snapshots=10**6), "auto", None):
        res = adjoint.solve_adjoint(lv_problem, params=p, checkpoint=sch)
        assert res.stats.schedule == "StoreAll"
        assert res.stats.forward_steps == K and res.stats.recomputation_ratio == 1.0
    res = adjoint.solve_adjoint(lv_problem, params=p, checkpoint=Revolve(snapshots=K))
    assert res.stats.forward_steps == K and res.stats.peak_stored_states == K


def test_trajectory_with_checkpointing(lv_problem):
    p = lv.initial_guess()
    ref = adjoint.solve_adjoint(lv_problem, params=p, checkpoint=StoreAll(), return_trajectory=True)
    res = adjoint.solve_adjoint(lv_problem, params=p, checkpoint=Revolve(snapshots=4), return_trajectory=True)
    np.testing.assert_array_equal(res.trajectory, ref.trajectory)


def test_divergence_is_reported_at_the_same_step():
    p = np.array([400.0, 0.0, 0.0, 0.0])  # Euler: prey *= 1 + 400 * 0.025 = 11 per step, inf near step 296
    msgs = []
    for sch in (StoreAll(), Revolve(snapshots=3), Uniform(snapshots=3)):
        with pytest.raises(FloatingPointError, match=r"non-finite") as info:
            adjoint.solve_adjoint(lv.make_problem(steps=400), params=p, checkpoint=sch)
        msgs.append(str(info.value))
    assert msgs[0] == msgs[1] == msgs[2]


# --------------------------------------------------------------------------------------------
# memory budgets and "auto"
# --------------------------------------------------------------------------------------------


def test_parse_bytes():
    assert parse_bytes("200 MB") == 200 * 10**6
    assert parse_bytes("200MB") == 200 * 10**6
    assert parse_bytes("1.5 GiB") == int(1.5 * 2**30)
    assert parse_bytes("512 kB") == 512000
    assert parse_bytes(4096) == 4096
    assert parse_bytes(2e8) == 2 * 10**8
    assert MemoryBudget("200 MB") == MemoryBudget(200 * 10**6)


def test_budget_picks_largest_fitting_snapshot_count():
    assert MemoryBudget("1 kB").resolve(steps=1000, state_dim=2) == Revolve(snapshots=62)
    assert MemoryBudget(16 * 1001).resolve(steps=1000, state_dim=2) == StoreAll()
    assert MemoryBudget(16 * 1001 - 1).resolve(steps=1000, state_dim=2) == Revolve(snapshots=1000)
    assert MemoryBudget(16).resolve(steps=1000, state_dim=2) == Revolve(snapshots=1)


def test_budget_run_uses_revolve_within_budget(lv_problem):
    p = lv.initial_guess()
    res = adjoint.solve_adjoint(lv_problem, params=p, checkpoint=MemoryBudget("100 B"))
    assert res.stats.schedule == "Revolve(snapshots=6)" and res.stats.snapshots == 6
    assert res.stats.peak_stored_bytes <= 100
    assert res.stats.forward_steps == optimal_forward_steps(lv_problem.steps, 6)


def test_auto_is_default_budget():
    assert adjoint.checkpointing.auto() == MemoryBudget() == MemoryBudget(adjoint.checkpointing.DEFAULT_MEMORY_BUDGET)
    big = 10**8
    assert MemoryBudget().resolve(steps=big, state_dim=2) == Revolve(snapshots=MemoryBudget().nbytes // 16)


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [Revolve, Uniform])
def test_bad_snapshot_counts(cls):
    with pytest.raises(ValueError, match=r"`snapshots` must be an integer >= 1 .*got 0"):
        cls(snapshots=0)
    with pytest.raises(ValueError, match=r"`snapshots` must be an integer >= 1 .*got -3"):
        cls(snapshots=-3)
    for bad in (2.5, 20.0, "20", True, None):
        with pytest.raises(TypeError, match=r"`snapshots` must be an integer >= 1"):
            cls(snapshots=bad)
    assert cls(snapshots=np.int64(4)).snapshots == 4


def test_bad_budgets(lv_problem):
    with pytest.raises(ValueError, match=r"too small for one state: the state has dimension 2, i\.e\. 16 bytes"):
        adjoint.solve_adjoint(lv_problem, params=lv.initial_guess(), checkpoint=MemoryBudget(15))
    with pytest.raises(ValueError, match=r"`bytes` string must be a number with an optional unit"):
        MemoryBudget("200 parsecs")
    with pytest.raises(ValueError, match=r"`bytes` must be a positive, finite number"):
        MemoryBudget(0)
    with pytest.raises(ValueError, match=r"`bytes` must be a positive, finite number"):
        MemoryBudget(float("inf"))
    with pytest.raises(TypeError, match=r"`bytes` must be a number of bytes"):
        MemoryBudget([1])


def test_bad_checkpoint_argument(lv_problem):
    with pytest.raises(TypeError, match=r"`checkpoint` must be \"auto\" or a schedule"):
        adjoint.solve_adjoint(lv_problem, params=lv.initial_guess(), checkpoint="revolve")
    with pytest.raises(TypeError, match=r"`steps` must be an integer >= 1"):
        Revolve(snapshots=3).plan(2.0)
    with pytest.raises(ValueError, match=r"`steps` must be an integer >= 1"):
        Revolve(snapshots=3).plan(0)
