"""Constrained optimal control: ``adjoint.solve_ocp`` against CasADi + IPOPT, side by side.

Run::

    python benchmarks/ocp.py                       # every problem at 100, 200, 400 steps
    python benchmarks/ocp.py --quick               # 100 steps only
    python benchmarks/ocp.py --only goddard        # some problems (bryson_denham, double_integrator,
                                                   # goddard, robot_arm)
    python benchmarks/ocp.py --jacobian-only       # the Jacobian-cost table alone

Every configuration solves the problem from the same initial guess in this process, pinned to one
CPU (``benchmarks/_util.pin_to_one_cpu``), tolerance 1e-8.

* ours: ``solve_ocp`` on the explicit-Euler grid with SLSQP (scipy), with IPOPT (through CasADi,
  limited-memory Hessian: a gradient-only library has no exact Hessian), single shooting, and
  IPOPT with multiple shooting (``segments = steps / 50``, a sparse Jacobian).
* CasADi + IPOPT with exact Hessians: direct multiple shooting on the same explicit-Euler grid (the
  same discrete problem as ours, so the same optimum), and trapezoidal direct collocation (another
  discretisation: its optimum differs in the last digits).

Reported: ``build`` (the first solve minus the median: numba compilation from an empty cache for
ours, nothing for CasADi whose graph is rebuilt in every solve), the median of 3 further solves
(problem construction included for both), iterations, the result and ``ours / CasADi MS``. A
configuration whose first solve exceeds 30 s is not repeated (its first time is shown, marked
``*``).

A second table compares a constraint Jacobian of ``r`` rows (one block sweep, generic backend) with
``r`` separate ``solve_adjoint`` gradients (the target: at most 0.5x for r >= 8), on the backend
``"auto"`` picks (scalar-generated for these small traced fields) and on the generic backend the
block runs on.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _util import block_medians, pin_to_one_cpu  # noqa: E402

REPEAT = 3
SLOW = 30.0
TOL = 1e-8


# -- the problems: ours (from adjoint.problems) and CasADi's formulation of the same equations -----


def _ours(name, K):
    import adjoint  # noqa: F401
    from adjoint.problems import bryson_denham, double_integrator, goddard, robot_arm

    if name == "bryson_denham":
        return bryson_denham.make_problem(K), np.zeros((K, 1)), None, "objective"
    if name == "double_integrator":
        return double_integrator.make_problem(K), np.zeros((K, 1)), {"controls": (-1.0, 1.0)}, "T"
    if name == "goddard":
        return goddard.make_problem(K), np.full((K, 1), goddard.U_MAX / 2), {"controls": (0.0, goddard.U_MAX)}, "h(T)"
    return robot_arm.make_problem(K), np.zeros((K, 3)), {"controls": (-1.0, 1.0)}, "T"


def _casadi_spec(name):
    """``(n, m, x0, f(x, u), l(x, u) or None, L(x, T), terminal g(x) == 0 rows, g bounds, path(x) <= ub,
    u bounds, free T (guess, lo, hi) or None, T fixed, u guess, result(x, T, J))`` in CasADi terms."""
    import casadi as ca

    from adjoint.problems import goddard as gd
    from adjoint.problems import robot_arm as ra

    if name == "bryson_denham":
        return dict(
            n=2, m=1, x0=[0.0, 1.0], f=lambda x, u: ca.vertcat(x[1], u[0]), l=lambda x, u: 0.5 * u[0] ** 2,
            L=None, g=lambda x: x - ca.DM([0.0, -1.0]), glo=0.0, ghi=0.0, path=lambda x: x[0], path_ub=1.0 / 9.0,
            ulo=-np.inf, uhi=np.inf, free=None, T=1.0, u0=0.0, result=lambda x, T, J: J,
        )  # fmt: skip
    if name == "double_integrator":
        return dict(
            n=2, m=1, x0=[1.0, 0.0], f=lambda x, u: ca.vertcat(x[1], u[0]), l=lambda x, u: 1.0, L=None,
            g=lambda x: x, glo=0.0, ghi=0.0, path=None, path_ub=None, ulo=-1.0, uhi=1.0, free=(4.0, 0.1, 20.0),
            T=None, u0=0.0, result=lambda x, T, J: T,
        )  # fmt: skip
    if name == "goddard":

        def f(x, u):
            drag = gd.D_C * x[1] ** 2 * ca.exp(-gd.H_C * (x[0] - gd.H0) / gd.H0)
            return ca.vertcat(x[1], (u[0] - drag) / x[2] - 1.0 / x[0] ** 2, -u[0] / gd.C)

        return dict(
            n=3, m=1, x0=[gd.H0, gd.V0, gd.M0], f=f, l=None, L=lambda x: -x[0], g=lambda x: x[2] - gd.M_FINAL,
            glo=0.0, ghi=0.0, path=None, path_ub=None, ulo=0.0, uhi=gd.U_MAX, free=(0.2, 0.05, 1.0), T=None,
            u0=gd.U_MAX / 2, result=lambda x, T, J: -J,
        )  # fmt: skip

    def f_arm(x, u):
        inertia = ((ra.L - x[0]) ** 3 + x[0] ** 3) / 3.0
        return ca.vertcat(x[1], u[0] / ra.L, x[3], u[1] / (inertia * ca.sin(x[4]) ** 2), x[5], u[2] / inertia)

    return dict(
        n=6, m=3, x0=list(ra.X0), f=f_arm, l=lambda x, u: 1.0, L=None, g=lambda x: x - ca.DM(ra.X_FINAL), glo=0.0,
        ghi=0.0, path=None, path_ub=None, ulo=-1.0, uhi=1.0, free=(9.0, 1.0, 20.0), T=None, u0=0.0,
        result=lambda x, T, J: T,
    )  # fmt: skip


def casadi_solve(name, K, transcription):
    """``transcription``: ``"ms"`` (explicit Euler, the same discrete problem as ours) or ``"trap"``
    (trapezoidal collocation, controls at the nodes)."""
    import casadi as ca

    sp = _casadi_spec(name)
    n, m = sp["n"], sp["m"]

    def run():
        opti = ca.Opti()
        X = opti.variable(n, K + 1)
        U = opti.variable(m, K + 1 if transcription == "trap" else K)
        if sp["free"] is not None:
            T = opti.variable()
            opti.subject_to(opti.bounded(sp["free"][1], T, sp["free"][2]))
            opti.set_initial(T, sp["free"][0])
        else:
            T = sp["T"]
        tau = T / K
        J = 0
        opti.subject_to(X[:, 0] == ca.DM(sp["x0"]))
        for k in range(K):
            xk, uk = X[:, k], U[:, k]
            if transcription == "trap":
                x1, u1 = X[:, k + 1], U[:, k + 1]
                opti.subject_to(x1 == xk + tau / 2 * (sp["f"](xk, uk) + sp["f"](x1, u1)))
                if sp["l"] is not None:
                    J = J + tau / 2 * (sp["l"](xk, uk) + sp["l"](x1, u1))
            else:
                opti.subject_to(X[:, k + 1] == xk + tau * sp["f"](xk, uk))
                if sp["l"] is not None:
                    J = J + tau * sp["l"](xk, uk)
            if sp["path"] is not None:
                opti.subject_to(sp["path"](xk) <= sp["path_ub"])
        if sp["L"] is not None:
            J = J + sp["L"](X[:, K])
        opti.subject_to(sp["g"](X[:, K]) == 0)
        if np.isfinite(sp["ulo"]):
            opti.subject_to(opti.bounded(sp["ulo"], U, sp["uhi"]))
        opti.set_initial(U, sp["u0"])
        opti.set_initial(X, np.tile(np.asarray(sp["x0"], dtype=float)[:, None], (1, K + 1)))
        opti.minimize(J)
        opti.solver("ipopt", {"print_time": False}, {"print_level": 0, "sb": "yes", "tol": TOL, "max_iter": 3000})
        try:
            sol = opti.solve()
            ok = bool(sol.stats()["success"])
            get = sol.value
            st = sol.stats()
        except RuntimeError:  # IPOPT failed: report its last iterate
            ok = False
            get = opti.debug.value
            st = opti.stats()
        Tv = float(get(T)) if sp["free"] is not None else sp["T"]
        return float(sp["result"](None, Tv, float(get(J)))), int(st["iter_count"]), ok

    return run


def ours_solve(name, K, solver, segments=1):
    import adjoint

    def run():
        prob, C0, bounds, _ = _ours(name, K)
        r = adjoint.solve_ocp(
            prob, controls=C0, bounds=bounds, solver=solver, segments=segments, options={"tol": TOL, "max_iter": 3000}
        )
        value = -r.value if name == "goddard" else (r.final_time if prob.final_time is not None else r.value)
        return value, r.nit, r.success

    return run


def _measure(run):
    t = time.perf_counter()
    out = run()
    first = time.perf_counter() - t
    if first > SLOW:
        return first, None, out
    ts = []
    for _ in range(REPEAT):
        t = time.perf_counter()
        out = run()
        ts.append(time.perf_counter() - t)
    return first, float(np.median(ts)), out


def solve_table(names, sizes):
    head = (
        f"{'problem':<18}{'K':>5}  {'solver':<30}{'build s':>9}{'median s':>10}{'iter':>6}  "
        f"{'result':>16}  ours/CasADi MS"
    )
    print(head)
    print("-" * len(head))
    for name in names:
        what = _ours(name, 10)[3]
        for K in sizes:
            S = max(2, K // 50)
            rows = []
            for label, run in (
                ("CasADi+IPOPT MS (exact H)", casadi_solve(name, K, "ms")),
                ("CasADi+IPOPT trapezoidal", casadi_solve(name, K, "trap")),
                ("ours SLSQP", ours_solve(name, K, "slsqp")),
                ("ours IPOPT (L-BFGS)", ours_solve(name, K, "ipopt")),
                (f"ours IPOPT, {S} segments", ours_solve(name, K, "ipopt", S)),
            ):
                first, med, (val, nit, ok) = _measure(run)
                rows.append((label, first, med, nit, val, ok))
            base = rows[0][2] if rows[0][2] is not None else rows[0][1]
            for label, first, med, nit, val, ok in rows:
                shown = med if med is not None else first
                build = f"{first - med:9.3f}" if med is not None else f"{'-':>9}"
                ratio = "" if label.startswith("CasADi") else f"{shown / base:.2f}x"
                flag = ("" if med is not None else " *") + ("" if ok else " (not converged)")
                print(
                    f"{name:<18}{K:>5}  {label:<30}{build}{shown:>10.4f}{nit:>6}  {what:>5} {val:>10.6f}  {ratio}{flag}",
                    flush=True,
                )


def jacobian_cost(quick):
    """A constraint Jacobian of r rows (one block sweep) against r separate solve_adjoint gradients."""
    import adjoint
    from adjoint.problems import bryson_denham as bd

    print()
    print("Constraint Jacobian (one block sweep) vs r separate gradients (solve_adjoint), medians in turns")
    head = (
        f"{'case':<44}{'rows r':>7}{'Jacobian ms':>13}{'gradient ms':>13}{'Jac / (r grad)':>16}"
        f"{'generic grad ms':>17}{'Jac / (r generic)':>19}"
    )
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
        ggen = lambda: adjoint.solve_adjoint(prob, controls=C, backend="generic")  # noqa: E731
        r = jac().values.shape[0]
        tj, tg, tgg = block_medians([jac, grad, ggen], rounds=7, block=5)
        print(
            f"{label:<44}{r:>7}{tj * 1e3:>13.3f}{tg * 1e3:>13.3f}{tj / (r * tg):>16.3f}"
            f"{tgg * 1e3:>17.3f}{tj / (r * tgg):>19.3f}",
            flush=True,
        )


NAMES = ("bryson_denham", "double_integrator", "goddard", "robot_arm")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 steps only")
    ap.add_argument("--only", nargs="+", choices=NAMES, help="some problems")
    ap.add_argument("--jacobian-only", action="store_true", help="only the Jacobian-cost table")
    args = ap.parse_args(argv)
    os.environ.setdefault("ADJOINT_CACHE_DIR", tempfile.mkdtemp(prefix="adjoint-ocp-bench-"))
    cpu = pin_to_one_cpu()
    try:
        import casadi  # noqa: F401
    except ImportError:
        print('CasADi is not installed: pip install -e ".[bench]"')
        return 1
    print(f"pinned to CPU {cpu}; medians of {REPEAT} solves after one first solve; tolerance {TOL}")
    if not args.jacobian_only:
        solve_table(args.only or NAMES, (100,) if args.quick else (100, 200, 400))
    jacobian_cost(args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
