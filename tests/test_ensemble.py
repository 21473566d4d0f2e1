"""Ensembles (issue 19): every member bitwise equal to its own serial solve_adjoint, sums
independent of the number of workers, the ensemble objective against central differences."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import adjoint

K = 400
B = 13


def field(x, c, p, t):
    return np.array([p[0] * x[0] - p[1] * x[0] * x[1], p[2] * x[0] * x[1] - p[3] * x[1]])


def misfit(x, c, p, t):  # a member's data are its controls (one row per step)
    return 0.5 * ((x[0] - c[0]) ** 2 + (x[1] - c[1]) ** 2)


def final(x, p):
    return 0.5 * (x[0] - 1.0) ** 2


@pytest.fixture(scope="module")
def case():
    prob = adjoint.ControlProblem(field, [1.0, 1.0], (0.0, 4.0), K, running_cost=misfit, terminal_cost=final,
                                  param_dim=4, control_dim=2)  # fmt: skip
    rng = np.random.default_rng(0)
    P = np.array([1.0, 0.4, 0.4, 0.8]) * (1 + 0.1 * rng.standard_normal((B, 4)))
    X = 1.0 + 0.2 * rng.standard_normal((B, 2))
    D = 1.0 + 0.1 * rng.standard_normal((B, K, 2))
    serial = [adjoint.solve_adjoint(prob, params=P[b], controls=D[b], x0=X[b]) for b in range(B)]
    return prob, P, X, D, serial


def _same_as_serial(res, serial):
    for b, s in enumerate(serial):
        assert res.values[b] == s.value
        assert np.array_equal(res.grad_params[b], s.grad.params)
        assert np.array_equal(res.grad_controls[b], s.grad.controls)
        assert np.array_equal(res.grad_x0[b], s.grad.x0)


@pytest.mark.parametrize("workers", [1, 2, None])
def test_members_bitwise_equal_to_serial_threads(case, workers):
    prob, P, X, D, serial = case
    res = adjoint.solve_ensemble(prob, params=P, controls=D, x0=X, workers=workers)
    _same_as_serial(res, serial)
    assert res.batched == ("params", "controls", "x0")
    assert res.chunk_stats is not None and res.chunk_stats.backend == serial[0].stats.backend


def test_sums_bitwise_equal_across_workers_and_executors(case):
    prob, P, X, D, serial = case
    w = np.linspace(0.5, 2.0, B)
    ref = adjoint.solve_ensemble(prob, params=P[0], controls=D, x0=X, weights=w, workers=1)
    for kw in ({"workers": 2, "chunks": 5}, {"workers": 3}):
        got = adjoint.solve_ensemble(prob, params=P[0], controls=D, x0=X, weights=w, **kw)
        assert got.value == ref.value
        assert np.array_equal(got.grad.params, ref.grad.params)
    with ThreadPoolExecutor(2) as ex:
        got = adjoint.solve_ensemble(prob, params=P[0], controls=D, x0=X, weights=w, executor=ex, chunks=4)
    assert got.value == ref.value and np.array_equal(got.grad.params, ref.grad.params)
    # the shared parameters' gradient is the weighted sum, in member order
    acc = np.zeros(4)
    for b in range(B):
        acc += w[b] * ref.grad_params[b]
    assert np.array_equal(ref.grad.params, acc)
    assert np.array_equal(ref.grad.x0, w[:, None] * ref.grad_x0)


def test_generic_backend_members_through_solve_adjoint(case):
    prob, P, X, D, serial = case
    res = adjoint.solve_ensemble(prob, params=P, controls=D, x0=X, workers=2, backend="generic")
    ref = [adjoint.solve_adjoint(prob, params=P[b], controls=D[b], x0=X[b], backend="generic") for b in range(B)]
    _same_as_serial(res, ref)
    assert res.chunk_stats is None and res.stats[3].backend == "generic"


def test_dask_local_cluster(case):
    distributed = pytest.importorskip("dask.distributed")
    prob, P, X, D, serial = case
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        with distributed.Client(cl) as client:
            res = adjoint.solve_ensemble(prob, params=P, controls=D, x0=X, executor=client, chunks=4)
    _same_as_serial(res, serial)


def test_ensemble_objective_matches_central_differences(case):
    prob, P, X, D, serial = case
    fun = prob.objective(wrt="params", params=P[0], ensemble={"controls": D, "x0": X}, workers=2)
    v = P[0]
    val, g = fun(v)
    assert val == pytest.approx(sum(s for s in adjoint.solve_ensemble(prob, params=v, controls=D, x0=X).values))
    h = 1e-6
    fd = np.array([(fun(v + h * e)[0] - fun(v - h * e)[0]) / (2 * h) for e in np.eye(4)])
    assert np.abs(fd - g).max() <= 1e-7 * np.abs(g).max()


def test_bad_input(case):
    prob, P, X, D, serial = case
    with pytest.raises(ValueError, match=r"batch axes disagree: `params` has 13 members, `x0` has 12"):
        adjoint.solve_ensemble(prob, params=P, controls=D[0], x0=X[:12])
    with pytest.raises(ValueError, match="B = 0"):
        adjoint.solve_ensemble(prob, params=P[:0], controls=D[0])
    with pytest.raises(ValueError, match="needs a batch axis"):
        adjoint.solve_ensemble(prob, params=P[0], controls=D[0])
    with pytest.raises(TypeError, match="must have a submit"):
        adjoint.solve_ensemble(prob, params=P, controls=D[0], executor=object())
    Pn = P.copy()
    Pn[5, 1] = np.nan
    with pytest.raises(ValueError, match="`params` of member 5 is not finite"):
        adjoint.solve_ensemble(prob, params=Pn, controls=D[0])
    with pytest.raises(ValueError, match=r"`weights` must have shape \(13,\)"):
        adjoint.solve_ensemble(prob, params=P, controls=D[0], weights=np.ones(3))
    with pytest.raises(ValueError, match="both optimised"):
        prob.objective(wrt="params", params=P[0], ensemble={"params": P})


def test_dask_worker_killed_mid_run_same_bits(case):
    """One of two worker processes is killed while the tasks run: Dask reruns its tasks on the
    restarted worker and the call returns the serial bits."""
    distributed = pytest.importorskip("dask.distributed")
    import os
    import threading
    import time

    prob, P, X, D, serial = case
    Pk = np.tile(P, (4, 1))  # 52 members in 26 tasks: the kill lands while tasks are still queued
    import signal

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cl:
        with distributed.Client(cl) as client:
            before = sorted(client.scheduler_info()["workers"])
            pid = client.run(os.getpid)[before[0]]
            killed = []

            def kill():
                os.kill(pid, signal.SIGKILL)
                killed.append(time.perf_counter())

            timer = threading.Timer(0.3, kill)
            start = time.perf_counter()
            timer.start()
            res = adjoint.solve_ensemble(prob, params=Pk, controls=D[0], x0=X[0], executor=client, chunks=26)
            done = time.perf_counter()
            timer.join()
            # the kill landed before the results were all back, and the worker was replaced
            assert killed and killed[0] < done, (killed, start, done)
            time.sleep(0.5)
            assert sorted(client.scheduler_info()["workers"]) != before
    for b in range(Pk.shape[0]):
        s = serial_one(prob, Pk[b], D[0], X[0])
        assert res.values[b] == s.value and np.array_equal(res.grad_params[b], s.grad.params)


def serial_one(prob, p, c, x):
    return adjoint.solve_adjoint(prob, params=p, controls=c, x0=x)
