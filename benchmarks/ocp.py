"""Constrained optimal control: ``adjoint.solve_ocp`` against CasADi + IPOPT, side by side.

Run::

    python benchmarks/ocp.py            # every problem and size
    python benchmarks/ocp.py --quick    # the smallest size of each problem

Every configuration solves the same discrete problem (explicit Euler on the same grid) from the
same initial guess, in this process, pinned to one CPU (``benchmarks/_util.pin_to_one_cpu``).

* ours: ``solve_ocp`` with SLSQP (scipy) and with IPOPT (through CasADi, limited-memory Hessian),
  single shooting, and IPOPT with multiple shooting (``segments = K / 50``: a sparse Jacobian);
  objective gradients by ``solve_adjoint``, constraint Jacobians by ``constraint_jacobian`` (one
  block sweep per segment).
* CasADi: the idiomatic formulation, direct multiple shooting with the Euler steps as equality
  constraints (``Opti``, SX-free MX graph, exact Hessian), IPOPT with its defaults
  (``print_level 0``).

Reported: ``build`` (problem set-up and compilation, first solve minus a warm solve: numba kernels
from an empty cache for ours, CasADi's graph construction), the median wall time of 5 further
solves, IPOPT / SLSQP iterations, the objective, and ``ours / CasADi`` ratios of the medians.

Problems: Bryson-Denham (state constraint x <= 1/9, K = 100, 400, 1000; optimum -> 4) and the
minimum-time double integrator (free final time, |u| <= 1, K = 50, 200; optimum T = 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import pin_to_one_cpu  # noqa: E402

REPEAT = 5


def _median(fn, repeat=REPEAT):
    ts = []
    out = None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)), out


# -- ours ------------------------------------------------------------------------------------------


def ours_bryson_denham(K, solver, segments=1):
    import adjoint
    from adjoint.problems import bryson_denham as bd

    def run():
        prob = bd.make_problem(K)
        r = adjoint.solve_ocp(prob, controls=np.zeros((K, 1)), solver=solver, segments=segments, options={"tol": 1e-8})
        return r.value, r.nit, r.success

    return run


def ours_min_time(K, solver, segments=1):
    import adjoint

    def run():
        prob = adjoint.ControlProblem(
            lambda x, c, p, t: np.array([x[1], c[0]]),
            [0.0, 0.0],
            (0.0, adjoint.Free(3.0, lower=0.5, upper=10.0)),
            K,
            running_cost=lambda x, c, p, t: 1.0,
            control_dim=1,
            constraints=[adjoint.Terminal(lambda x, p: x - np.array([1.0, 0.0]))],
        )
        r = adjoint.solve_ocp(
            prob,
            controls=np.zeros((K, 1)),
            bounds={"controls": (-1.0, 1.0)},
            solver=solver,
            segments=segments,
            options={"tol": 1e-8},
        )
        return r.final_time, r.nit, r.success

    return run


# -- CasADi: direct multiple shooting, exact Hessian ----------------------------------------------


def casadi_bryson_denham(K):
    import casadi as ca

    def run():
        opti = ca.Opti()
        X = opti.variable(2, K + 1)
        U = opti.variable(1, K)
        tau = 1.0 / K
        opti.minimize(tau * ca.sumsqr(U) * 0.5)
        opti.subject_to(X[:, 0] == ca.DM([0.0, 1.0]))
        for k in range(K):
            opti.subject_to(X[:, k + 1] == X[:, k] + tau * ca.vertcat(X[1, k], U[0, k]))
            opti.subject_to(X[0, k] <= 1.0 / 9.0)
        opti.subject_to(X[:, K] == ca.DM([0.0, -1.0]))
        opti.set_initial(U, 0.0)
        opti.solver("ipopt", {"print_time": False}, {"print_level": 0, "sb": "yes", "tol": 1e-8})
        sol = opti.solve()
        return float(sol.value(opti.f)), int(sol.stats()["iter_count"]), bool(sol.stats()["success"])

    return run


def casadi_min_time(K):
    import casadi as ca

    def run():
        opti = ca.Opti()
        X = opti.variable(2, K + 1)
        U = opti.variable(1, K)
        T = opti.variable()
        tau = T / K
        opti.minimize(T)
        opti.subject_to(X[:, 0] == ca.DM([0.0, 0.0]))
        for k in range(K):
            opti.subject_to(X[:, k + 1] == X[:, k] + tau * ca.vertcat(X[1, k], U[0, k]))
        opti.subject_to(opti.bounded(-1.0, U, 1.0))
        opti.subject_to(opti.bounded(0.5, T, 10.0))
        opti.subject_to(X[:, K] == ca.DM([1.0, 0.0]))
        opti.set_initial(T, 3.0)
        opti.set_initial(U, 0.0)
        opti.solver("ipopt", {"print_time": False}, {"print_level": 0, "sb": "yes", "tol": 1e-8})
        sol = opti.solve()
        return float(sol.value(T)), int(sol.stats()["iter_count"]), bool(sol.stats()["success"])

    return run


def jacobian_cost(quick):
    """A constraint Jacobian of r rows (one block sweep) against r separate solve_adjoint gradients."""
    import adjoint
    from adjoint.problems import bryson_denham as bd

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from _util import block_medians

    print()
    print("Constraint Jacobian (one block sweep) vs r separate gradients (solve_adjoint), medians in turns")
    head = f"{'case':<44}{'rows r':>7}{'Jacobian ms':>13}{'gradient ms':>13}{'Jac / (r grad)':>16}"
    print(head)
    print("-" * len(head))
    rng = np.random.default_rng(0)
    n = 8
    A = rng.normal(size=(n, n)) / np.sqrt(n)

    def chain(x, c, p, t):
        return A @ x - 0.1 * x**3 + np.concatenate([c, np.zeros(n - 1)])

    cases = []
    for K in (1000,) if quick else (1000, 10000):
        prob = adjoint.ControlProblem(
            chain, np.ones(n), (0.0, 1.0), K, running_cost=lambda x, c, p, t: c[0] ** 2, control_dim=1,
            constraints=[adjoint.Terminal(lambda x, p: x)],
        )  # fmt: skip
        cases.append((f"8 states, terminal x_K (8 rows), K={K}", prob, rng.normal(size=(K, 1))))
    for K in (100,) if quick else (100, 400):
        cases.append((f"Bryson-Denham, path every step, K={K}", bd.make_problem(K), rng.normal(size=(K, 1))))
    for label, prob, C in cases:
        jac = lambda: adjoint.constraint_jacobian(prob, controls=C)  # noqa: E731
        grad = lambda: adjoint.solve_adjoint(prob, controls=C)  # noqa: E731
        r = jac().values.shape[0]
        tj, tg = block_medians([jac, grad], rounds=7, block=5)
        print(f"{label:<44}{r:>7}{tj * 1e3:>13.3f}{tg * 1e3:>13.3f}{tj / (r * tg):>16.3f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="the smallest size of each problem")
    ap.add_argument("--jacobian-only", action="store_true", help="only the Jacobian-cost table")
    args = ap.parse_args(argv)
    os.environ.setdefault("ADJOINT_CACHE_DIR", tempfile.mkdtemp(prefix="adjoint-ocp-bench-"))
    cpu = pin_to_one_cpu()
    try:
        import casadi  # noqa: F401
    except ImportError:
        print('CasADi is not installed: pip install -e ".[bench]"')
        return 1
    cases = [
        ("bryson_denham", K, ours_bryson_denham, casadi_bryson_denham, "objective")
        for K in ((100,) if args.quick else (100, 400, 1000))
    ] + [("min_time", K, ours_min_time, casadi_min_time, "T") for K in ((50,) if args.quick else (50, 200))]
    print(f"pinned to CPU {cpu}; medians of {REPEAT} solves after one warm-up solve")
    if args.jacobian_only:
        jacobian_cost(args.quick)
        return 0
    head = (
        f"{'problem':<14}{'K':>6}  {'solver':<28}{'build s':>9}{'median s':>10}{'iter':>6}  {'result':>14}  ours/CasADi"
    )
    print(head)
    print("-" * len(head))
    for name, K, ours, peer, what in cases:
        rows = []
        S = max(2, K // 50)
        for label, run in (
            ("CasADi+IPOPT (MS, exact H)", peer(K)),
            ("ours SLSQP", ours(K, "slsqp")),
            ("ours IPOPT (L-BFGS)", ours(K, "ipopt")),
            (f"ours IPOPT, {S} segments", ours(K, "ipopt", S)),
        ):
            t = time.perf_counter()
            run()
            first = time.perf_counter() - t
            med, (val, nit, ok) = _median(run)
            rows.append((label, first - med, med, nit, val, ok))
        base = rows[0][2]
        for label, build, med, nit, val, ok in rows:
            ratio = "" if label.startswith("CasADi") else f"{med / base:.2f}x"
            flag = "" if ok else " (not converged)"
            print(f"{name:<14}{K:>6}  {label:<28}{build:>9.3f}{med:>10.4f}{nit:>6}  {what} {val:>12.8f}  {ratio}{flag}")
    jacobian_cost(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
