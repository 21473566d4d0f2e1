"""The store-all kernel with a tape of forward intermediates (adjoint._tape), used for traced
vector fields too large for the fused scalar kernel: bitwise equal to the generic kernels and to
checkpointing, exact against an independent hand-written adjoint and central differences, and
only used when the schedule stores everything and the tape fits the memory budget."""

import re

import numpy as np
import pytest

import adjoint
from adjoint import _tape
from adjoint._fused import MAX_SCALAR_OPS
from adjoint._solve import _materialize
from benchmarks.traced import make_node, node_params, node_tuned

H = 32
TARGET = np.array([0.8, 1.3])


def terminal(x, c, p, t):
    return 0.5 * np.sum((x - TARGET) ** 2)


def node_problem(K=150, H=H):
    q = 5 * H + 2
    dyn = adjoint.vector_field(make_node(H), state_dim=2, param_dim=q)
    cst = adjoint.cost(terminal, state_dim=2, param_dim=q)
    return adjoint.ControlProblem(dyn, np.array([1.0, 0.5]), (0.0, 2.0), K, terminal_cost=cst), node_params(H)


# a controlled, time-dependent field with several transcendental functions and a running cost
HC = 24


def controlled(x, c, p, t):
    W1 = p[: 2 * HC].reshape(HC, 2)
    B = p[2 * HC : 3 * HC]
    W2 = p[3 * HC : 5 * HC].reshape(2, HC)
    h = np.tanh(W1 @ x + B * c[0] + np.sin(t))
    g = np.exp(-0.5 * (W1 @ x) ** 2)
    return W2 @ (h * g) + np.array([np.cos(x[1]), np.log1p(x[0] * x[0])]) * p[5 * HC]


def running(x, c, p, t):
    return 0.5 * c[0] ** 2 + 0.1 * np.sum(np.sin(x) ** 2)


def controlled_problem(K=120, method=None):
    q = 5 * HC + 1
    dyn = adjoint.vector_field(controlled, state_dim=2, control_dim=1, param_dim=q)
    run = adjoint.cost(running, state_dim=2, control_dim=1, param_dim=q)
    cst = adjoint.cost(terminal, state_dim=2, param_dim=q)
    prob = adjoint.ControlProblem(dyn, np.array([0.3, -0.2]), (0.0, 1.0), K, terminal_cost=cst, running_cost=run)
    rng = np.random.default_rng(3)
    return prob, 0.3 * rng.normal(size=q), 0.5 * rng.normal(size=(K, 1))


def _tape_for(prob, p, C=None, method=None, checkpoint=None):
    comp = _materialize(prob, 0 if C is None else C.shape[1], p.shape[0])
    method = method or adjoint.Euler()
    checkpoint = checkpoint or adjoint.StoreAll()
    return _tape.tape_kernels(
        comp, method, checkpoint, prob.steps, prob.state_dim, 0 if C is None else C.shape[1], p.shape[0]
    )


def _same(a, b):
    assert a.value == b.value
    for u, v in ((a.grad.params, b.grad.params), (a.grad.controls, b.grad.controls), (a.grad.x0, b.grad.x0)):
        assert np.array_equal(u, v)


def test_node_uses_the_tape_and_stores_only_the_activations():
    prob, p = node_problem()
    assert prob.dynamics.traced.scalar_ops > MAX_SCALAR_OPS  # too large for the fused scalar kernel
    assert _tape_for(prob, p) is not None
    plan = _tape.tape_plan(prob.dynamics.traced)
    assert plan.width == H
    assert {plan.graph.nodes[v].prim for v, _, _ in plan.stored} == {"tanh"}


def test_node_bitwise_equal_to_generic_kernels_and_checkpointing():
    prob, p = node_problem()
    tape = adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.StoreAll())
    auto = adjoint.solve_adjoint(prob, params=p)
    _same(tape, auto)
    generic = adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.StoreAll(), backend="generic")
    _same(tape, generic)
    for sched in (adjoint.Revolve(snapshots=7), adjoint.Uniform(snapshots=12), adjoint.MemoryBudget("1 kB")):
        _same(tape, adjoint.solve_adjoint(prob, params=p, checkpoint=sched))


def test_node_matches_independent_hand_written_adjoint():
    prob, p = node_problem()
    res = adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.StoreAll())
    val, gp, gx = node_tuned(np.array(prob.x0), p, H, prob.tau, prob.steps, TARGET)
    assert res.value == pytest.approx(val, rel=1e-13)
    np.testing.assert_allclose(res.grad.params, gp, rtol=1e-11, atol=1e-13 * np.max(np.abs(gp)))
    np.testing.assert_allclose(res.grad.x0, gx, rtol=1e-11)


def test_controlled_field_bitwise_and_against_central_differences():
    prob, p, C = controlled_problem()
    assert prob.dynamics.traced.scalar_ops > MAX_SCALAR_OPS
    assert _tape_for(prob, p, C) is not None
    plan = _tape.tape_plan(prob.dynamics.traced)
    assert {"tanh", "exp"} <= {plan.graph.nodes[v].prim for v, _, _ in plan.stored}
    res = adjoint.solve_adjoint(prob, params=p, controls=C, checkpoint=adjoint.StoreAll())
    _same(res, adjoint.solve_adjoint(prob, params=p, controls=C, checkpoint=adjoint.StoreAll(), backend="generic"))
    _same(res, adjoint.solve_adjoint(prob, params=p, controls=C, checkpoint=adjoint.Revolve(snapshots=5)))
    h = 1e-6
    for j in (0, 7, 2 * HC + 3, 3 * HC + 1, 5 * HC):
        e = np.zeros_like(p)
        e[j] = h
        fd = (adjoint.evaluate(prob, params=p + e, controls=C) - adjoint.evaluate(prob, params=p - e, controls=C)) / (
            2 * h
        )
        assert res.grad.params[j] == pytest.approx(fd, rel=1e-6, abs=1e-9)
    for k in (0, 50, prob.steps - 1):
        e = np.zeros_like(C)
        e[k, 0] = h
        fd = (adjoint.evaluate(prob, params=p, controls=C + e) - adjoint.evaluate(prob, params=p, controls=C - e)) / (
            2 * h
        )
        assert res.grad.controls[k, 0] == pytest.approx(fd, rel=1e-6, abs=1e-9)


def test_discrete_map_bitwise():
    prob, p, C = controlled_problem(K=60)
    m = adjoint.DiscreteMap()
    assert _tape_for(prob, p, C, method=m) is not None
    res = adjoint.solve_adjoint(prob, params=0.2 * p, controls=C, method=m, checkpoint=adjoint.StoreAll())
    _same(
        res,
        adjoint.solve_adjoint(
            prob, params=0.2 * p, controls=C, method=m, checkpoint=adjoint.StoreAll(), backend="generic"
        ),
    )
    _same(
        res, adjoint.solve_adjoint(prob, params=0.2 * p, controls=C, method=m, checkpoint=adjoint.Revolve(snapshots=4))
    )


def test_tape_only_when_store_all_and_within_the_memory_budget():
    prob, p = node_problem(K=1000)
    K = prob.steps
    traj, tape = 8 * (K + 1) * 2, 8 * K * H
    assert _tape_for(prob, p, checkpoint=adjoint.MemoryBudget(traj + tape)) is not None
    # the states fit (store-all runs) but not the tape: generic store-all
    assert _tape_for(prob, p, checkpoint=adjoint.MemoryBudget(traj + tape - 1)) is None
    assert _tape_for(prob, p, checkpoint=adjoint.Revolve(snapshots=10)) is None
    assert _tape_for(prob, p, checkpoint=adjoint.Revolve(snapshots=K + 1)) is not None
    assert _tape_for(prob, p, method=adjoint.RK4()) is None
    small = adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.MemoryBudget(traj + tape - 1))
    _same(small, adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.StoreAll()))
    assert small.stats.schedule == "StoreAll"


def test_backend_option_selects_and_reports_the_path():
    prob, p = node_problem()
    assert adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.StoreAll()).stats.backend == "tape"
    assert adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.StoreAll(), backend="tape").stats.backend == "tape"
    res = adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.StoreAll(), backend="generic")
    assert res.stats.backend == "generic"
    assert adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.Revolve(snapshots=7)).stats.backend == "generic"
    with pytest.raises(ValueError, match=r"backend='tape'.*cannot run.*Revolve.*Use backend='auto' or 'generic'"):
        adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.Revolve(snapshots=7), backend="tape")
    with pytest.raises(ValueError, match=r"backend='scalar'.*cannot run.*scalar operations"):
        adjoint.solve_adjoint(prob, params=p, backend="scalar")


# -- loop fusion of the generated kernels (adjoint.ad._codegen.fuse_loops / accumulate_into) --------

from adjoint.ad._codegen import accumulate_into, fuse_loops  # noqa: E402


def _run(lines, n=8, extra=None):
    """Execute straight ``lines`` on fixed inputs; returns every array and scalar they leave."""
    import math

    rng = np.random.default_rng(0)
    env = {
        "math": math,
        "ws": np.zeros(4 * n),
        "a": rng.normal(size=2 * n),
        "out": np.zeros(2 * n),
        "gp": np.zeros(2 * n),
        "tau": 0.1,
        "x": 0.7,
        **(extra or {}),
    }
    exec("\n".join(lines), env)
    return {
        k: (v.copy() if isinstance(v, np.ndarray) else v)
        for k, v in env.items()
        if k != "__builtins__" and not callable(v) and k not in ("math", *(extra or {}))
    }


def _same_env(a, b):
    for k, v in a.items():
        if k.endswith("_s") or k not in b:
            continue
        if isinstance(v, np.ndarray):
            assert np.array_equal(v, b[k]), k
        else:
            assert v == b[k] or (v != v and b[k] != b[k]), k


def _loop_bodies(src):
    """The statements (stripped) of each loop of the generated ``src`` one level below its first indent."""
    lines = src.splitlines()
    out = []
    for i, ln in enumerate(lines):
        if ln.lstrip().startswith("for "):
            ind = len(ln) - len(ln.lstrip())
            body = []
            for b in lines[i + 1 :]:
                if b.strip() and len(b) - len(b.lstrip()) <= ind:
                    break
                body.append(b.strip())
            out.append(body)
    return out


def _loops(lines):
    return sum(1 for ln in lines if ln.lstrip().startswith("for "))


def test_fuse_elementwise_chain_and_reduction_into_one_loop_with_scalars():
    lines = [
        "b0 = ws[0:8]",
        "b1 = ws[8:16]",
        "for i1 in range(8):",
        "    b0[i1] = a[i1] * x",
        "for i2 in range(8):",
        "    b1[i2] = math.tanh(b0[i2]) + a[i2 + 8]",
        "acc = 0.0",
        "for j in range(8):",
        "    acc += a[2 * j] * b1[j]",
        "s = acc",
        "out[0] = s",
        "for i3 in range(8):",
        "    out[i3 + 1] = b1[i3] * 2.0",
    ]
    fused = fuse_loops(lines, scratch="ws")
    assert _loops(fused) == 1 and "ws" not in "\n".join(fused)  # buffers became scalars
    ref, got = _run(lines), _run(fused)
    ref.pop("ws"), got.pop("ws")
    _same_env(ref, got)
    # calls kept alone, and long loops not fused
    assert _loops(fuse_loops(lines, scratch="ws", calls=False)) == 3
    assert _loops(fuse_loops(lines, scratch="ws", max_trip=4)) == 4


def test_fuse_respects_dependences():
    cases = [
        # reads an element the earlier loop writes in a later iteration
        ["b0 = ws[0:8]", "for i in range(8):", "    b0[i] = a[i] * x", "for j in range(8):", "    out[j] = b0[7 - j]"],
        [
            "for i in range(8):",
            "    ws[i] = a[i]",
            "for j in range(7):",
            "    ws[j] = ws[j + 1]",
            "for i in range(7):",
            "    out[i] = ws[i] + ws[i + 1]",
        ],
        # overwrites what the earlier loop still reads later
        ["for i in range(8):", "    out[i] = a[7 - i] * a[i]", "for j in range(8):", "    a[j] = 0.5 * j"],
        # a negative index wraps around: not an element of its own
        ["for i in range(8):", "    out[i] = a[i - 1] * a[i]", "for j in range(8):", "    a[j] = 0.5 * j"],
        # reads an accumulator of the earlier loop, or a scalar computed from it
        ["s = 0.0", "for i in range(8):", "    s += a[i]", "for j in range(8):", "    out[j] = a[j] / s"],
        ["s = 0.0", "for i in range(8):", "    s += a[i]", "r = s * x", "for j in range(8):", "    out[j] = r"],
        # writes a scalar the earlier loop reads
        ["for i in range(8):", "    out[i] = a[i] * x", "x = 3.0", "for j in range(8):", "    gp[j] = x"],
        # a statement in between that reads what the next loop writes
        [
            "for i in range(8):",
            "    ws[i] = a[i]",
            "y = ws[3] + out[3]",
            "for j in range(8):",
            "    out[j] = ws[j] + 1.0",
            "out[9] = y",
        ],
    ]
    fine = ["for i in range(8):", "    out[i] = a[i + 1] * a[i]", "for j in range(8):", "    a[j] = 0.5 * j"]
    assert _loops(fuse_loops(fine)) == 1  # each a[j] is overwritten after its last read
    _same_env(_run(fine), _run(fuse_loops(fine)))
    for lines in cases:
        fused = fuse_loops(lines, scratch="ws")
        _same_env(_run(lines), _run(fused))
        assert _loops(fused) == _loops(lines), lines


def test_accumulate_into():
    lines = [
        "g = gp[4:16]",
        "gp[0] = x",
        "for i in range(3):",
        "    gp[i + 1] = a[i] * x",
        "for j in range(12):",
        "    g[j] = a[j] - x",
    ]
    acc = accumulate_into(lines, "gp", "out", "tau", 16)
    assert acc is not None and "gp" not in "\n".join(acc)
    ref = _run(lines + ["for k in range(16):", "    out[k] += tau * gp[k]"])
    got = _run(acc)
    assert np.array_equal(ref["out"], got["out"])
    # not every element written once, an element read back, an update in place: left alone
    assert accumulate_into(lines, "gp", "out", "tau", 17) is None
    assert accumulate_into(lines + ["gp[2] = x"], "gp", "out", "tau", 16) is None
    assert accumulate_into(lines[:-1] + ["    g[j] = gp[0] - x"], "gp", "out", "tau", 16) is None
    assert accumulate_into(lines[:-1] + ["    g[j] += x"], "gp", "out", "tau", 16) is None


@pytest.mark.parametrize("hidden", [20, 40])
def test_fused_tape_kernel_bitwise_equal_to_generic(hidden):
    prob, p = node_problem(K=80, H=hidden)
    assert _tape_for(prob, p) is not None
    res = adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.StoreAll())
    _same(res, adjoint.solve_adjoint(prob, params=p, checkpoint=adjoint.StoreAll(), backend="generic"))


def test_node_backward_is_one_elementwise_loop_and_one_reduction_accumulating_into_grad_p():
    prob, p = node_problem()
    comp = _materialize(prob, 0, p.shape[0])
    src, _ = _tape.gradient_source(
        _tape.tape_plan(prob.dynamics.traced), 2, 0, p.shape[0], adjoint.Euler().kind, _tape._cost_refs(comp, {}, {})
    )
    fwd, bwd = src.split("for k in range(K - 1, -1, -1):")
    loops = _loop_bodies(bwd)
    assert len(loops) == 2
    # the elementwise loop (the grad_p updates with unit stride: vectorised) first, then the two dot
    # products with the updates of W1's gradient (stride 2) in the shadow of their additions
    assert any(ln.startswith("grad_p[") for ln in loops[0]) and not any("_jacc" in ln for ln in loops[0])
    assert not any(re.match(r"grad_p\[\w+ \* 2", ln) for ln in loops[0])
    assert len(loops[1]) == 4 and sum(ln.startswith("_jacc") and " += " in ln for ln in loops[1]) == 2
    assert sum(bool(re.match(r"grad_p\[\w+ \* 2( \+ 1)?\] \+= ", ln)) for ln in loops[1]) == 2
    assert "_gp[" not in src and "_gp = " not in src and "grad_p[" in bwd
    # the tape rows are indexed through the opaque step index, in both sweeps
    assert "tape[k" not in src and fwd.count("_row = _adj_tp._row_index(k)") == 1
    assert bwd.count("_row = _adj_tp._row_index(k)") == 1


def test_fuse_split_keeps_elementwise_loops_and_reductions_apart():
    lines = [
        "b0 = ws[0:8]",
        "b1 = ws[8:16]",
        "for i1 in range(8):",
        "    b0[i1] = a[i1] * x",
        "for i2 in range(8):",
        "    b1[i2] = _adj_vm.tanh(b0[i2]) + a[i2 + 8]",
        "acc = 0.0",
        "for j in range(8):",
        "    acc += a[2 * j] * b1[j]",
        "s = acc",
        "out[0] = s",
        "for i3 in range(8):",
        "    out[i3 + 1] = b1[i3] * 2.0",
        "acc2 = 0.0",
        "for j2 in range(8):",
        "    acc2 += b1[j2]",
        "out[10] = acc2",
        "for i4 in range(8):",
        "    gp[i4] = math.sin(b1[i4])",
    ]
    fused = fuse_loops(lines, scratch="ws", split=True)
    loops = _loop_bodies("\n".join(fused))
    # i1 alone (elementwise), the tanh of i2, the two sums, i3 (elementwise: it cannot move above the
    # tanh it reads), the libm call alone
    assert [len(b) for b in loops] == [1, 1, 2, 1, 1], fused
    assert "tanh" in loops[1][0] and all(ln.startswith("acc") for ln in loops[2]) and "math.sin" in loops[4][0]
    env = {"_adj_vm": __import__("adjoint._vecmath", fromlist=["tanh"])}
    ref, got = _run(lines, extra=env), _run(fused, extra=env)
    ref.pop("ws"), got.pop("ws")
    _same_env(ref, got)
    # the dependence cases keep their loops in split mode too
    for case in (
        ["s = 0.0", "for i in range(8):", "    s += a[i]", "for j in range(8):", "    out[j] = a[j] / s"],
        ["for i in range(8):", "    out[i] = a[7 - i] * a[i]", "for j in range(8):", "    a[j] = 0.5 * j"],
    ):
        fused = fuse_loops(case, scratch="ws", split=True)
        _same_env(_run(case), _run(fused))
        assert _loops(fused) == _loops(case), case
    # a reduction reading the sum of an earlier one stays apart; the elementwise loops join
    case = [
        "s = 0.0",
        "for i in range(8):",
        "    s += a[i]",
        "for j in range(8):",
        "    ws[j] = a[j] * 2.0",
        "t = 0.0",
        "for i2 in range(8):",
        "    t += ws[i2] * s",
        "for j2 in range(8):",
        "    out[j2] = ws[j2]",
    ]
    fused = fuse_loops(case, scratch="ws", split=True)
    _same_env(_run(case), _run(fused))
    assert [len(b) for b in _loop_bodies("\n".join(fused))] == [1, 2, 1]


def test_fuse_moves_a_loop_above_the_statements_it_needs_only_when_allowed():
    # the second reduction joins the first: its initialisation moves above the fused loop
    lines = [
        "s = 0.0",
        "for i in range(8):",
        "    s += a[i]",
        "y = out[3]",
        "t = 0.0",
        "for j in range(8):",
        "    t += a[j] * a[j]",
        "out[0] = s + t + y",
    ]
    fused = fuse_loops(lines, split=True)
    assert _loops(fused) == 1
    _same_env(_run(lines), _run(fused))
    # ... but not when the initialisation reads what the first loop writes
    lines = ["for i in range(8):", "    ws[i] = a[i] * x", "t = ws[2]", "for j in range(8):", "    out[j] = ws[j] + t"]
    fused = fuse_loops(lines, split=True)
    assert _loops(fused) == 2
    _same_env(_run(lines), _run(fused))


def test_fuse_sinks_strided_stores_into_a_later_reduction():
    lines = [
        "b = ws[0:8]",
        "for i in range(8):",
        "    b[i] = a[i] * x",
        "    gp[2 * i] = b[i] * tau",
        "    out[i] = b[i] + 1.0",
        "s = 0.0",
        "for j in range(8):",
        "    s += a[j + 8] * b[j]",
        "out[9] = s",
    ]
    fused = fuse_loops(lines, scratch="ws", split=True)
    assert [len(b) for b in _loop_bodies("\n".join(fused))] == [2, 2] and "gp[2 * j] = b[j] * tau" in fused[-2]
    _same_env(_run(lines), _run(fused))
    # not past a statement that reads what it writes, nor into a reduction that reads it or has
    # another length
    for case in (
        lines[:5] + ["y = gp[4]"] + lines[5:] + ["out[10] = y"],
        lines[:6] + ["for j in range(8):", "    s += a[j + 8] * gp[2 * j]", "out[9] = s"],
        lines[:6] + ["for j in range(7):", "    s += a[j + 8] * b[j]", "out[9] = s"],
    ):
        fused = fuse_loops(case, scratch="ws", split=True)
        assert [len(b) for b in _loop_bodies("\n".join(fused))] == [3, 1], fused
        ref, got = _run(case), _run(fused)
        ref.pop("ws"), got.pop("ws")  # b may live in a scalar
        _same_env(ref, got)


def test_fuse_does_not_sink_a_store_an_earlier_statement_reads_in_a_later_iteration():
    # gp[2 * i + 2], written in iteration i, is read by the first statement of iteration i + 1
    lines = [
        "for i in range(7):",
        "    out[i] = gp[2 * i] * x",
        "    gp[2 * i + 2] = a[i] * tau",
        "s = 0.0",
        "for j in range(7):",
        "    s += a[j] * out[j]",
        "out[9] = s",
    ]
    fused = fuse_loops(lines, split=True)
    assert [len(b) for b in _loop_bodies("\n".join(fused))] == [2, 1], fused
    _same_env(_run(lines), _run(fused))
    # without that dependence it moves
    lines[1] = "    out[i] = gp[2 * i + 1] * x"
    fused = fuse_loops(lines, split=True)
    assert [len(b) for b in _loop_bodies("\n".join(fused))] == [1, 2], fused
    _same_env(_run(lines), _run(fused))


def _random_lines(rnd, n=6):
    """Random straight code of the emitted shape: loops (elementwise, with tanh, or accumulating
    into a scalar) over affine subscripts of a few arrays and workspace views, statements between."""
    arrays, scal = ["a", "out", "gp", "w0", "w1"], ["x", "y"]

    def sub(v):
        c, s = rnd.randint(0, 3), rnd.choice([1, 1, 1, 2, -1, 0])
        return f"{n - 1 + c} - {v}" if s == -1 else (f"{c}" if s == 0 else f"{s} * {v} + {c}")

    lines = ["w0 = ws[0:16]", "w1 = ws[16:32]"]
    for L in range(rnd.randint(2, 6)):
        v = f"i{L}"
        for _ in range(rnd.randint(0, 2)):
            if rnd.random() < 0.5:
                lines.append(
                    f"{rnd.choice(['x', 'y', 'z'])} = {rnd.choice(arrays)}[{rnd.randint(0, 2 * n)}] * 0.5 "
                    f"+ {rnd.choice(scal)}"
                )
            else:
                lines.append(f"{rnd.choice(arrays)}[{rnd.randint(0, 2 * n)}] = {rnd.choice(scal)} + 1.0")
        head = f"for {v} in range({rnd.choice([n, n, n - 1])}):"
        if rnd.random() < 0.3:
            lines += [
                f"s{L} = 0.0",
                head,
                f"    s{L} += {rnd.choice(arrays)}[{sub(v)}] * {rnd.choice(arrays)}[{sub(v)}]",
            ]
            scal.append(f"s{L}")
            continue
        lines.append(head)
        for _ in range(rnd.randint(1, 3)):
            e = f"{rnd.choice(arrays)}[{sub(v)}] * {rnd.choice(scal)}"
            e = f"_adj_vm.tanh({e})" if rnd.random() < 0.3 else e
            lines.append(f"    {rnd.choice(arrays)}[{sub(v)}] {rnd.choice(['=', '+='])} {e}")
    return lines + ["out[0] = " + " + ".join(scal)]


def test_fuse_random_programs_unchanged():
    import random

    env = {"_adj_vm": __import__("adjoint._vecmath", fromlist=["tanh"]), "y": -0.7, "z": 0.1}
    for seed in range(300):
        lines = _random_lines(random.Random(seed))
        ref = _run(lines, extra=env)
        ref.pop("ws")
        for split in (False, True):
            got = _run(fuse_loops(lines, scratch="ws", split=split), extra=env)
            got.pop("ws")
            _same_env(ref, got)
