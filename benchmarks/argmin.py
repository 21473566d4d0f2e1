"""Implicit vs unrolled hyper-gradients of l2-regularised logistic regression (n = 1000 features).

For each target relative accuracy of ``d L(x(theta)) / d theta`` the script finds

* implicit: the loosest tolerances (``inner_tol = linear_tol``, from a ladder) whose gradient meets
  the target;
* unrolled: the fewest gradient-descent steps (step ``1/L``) whose gradient meets the target, run
  with ``StoreAll`` and with the checkpoint schedules available (``Revolve``, ``Uniform``);

then times each configuration (best of ``--repeat`` runs after a warm-up) and measures its peak
memory with ``tracemalloc`` (numpy allocations, including the stored states; allocations inside
numba kernels are not seen) beside the library's own ``peak_stored_bytes``. The reference gradient
is the implicit one with ``inner_tol = 1e-13`` and ``linear_tol = 1e-14``.

Usage::

    PYTHONPATH=. python benchmarks/argmin.py [--features 1000] [--train 500] [--theta -3]
        [--targets 1e-4 1e-8] [--repeat 3] [--snapshots 20] [--plot docs/argmin_benchmark.png]

Prints a markdown table; timings are from this one run on this machine (shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

# one BLAS thread: on a shared 2-core machine threaded BLAS made L-BFGS-B and numpy's matvecs ~10x
# slower (measured); every method here is single-threaded, so the comparison stays fair
for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import adjoint.checkpointing as ck  # noqa: E402
from adjoint._argmin import solve_argmin  # noqa: E402
from adjoint.problems import logistic  # noqa: E402

TOL_LADDER = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12]


def measure(call, repeat):
    """(best seconds, tracemalloc peak bytes, result) of ``call()``; one untimed warm-up first."""
    res = call()
    best = np.inf
    for _ in range(repeat):
        t = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - t)
    tracemalloc.start()
    tracemalloc.reset_peak()
    call()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return best, peak, res


def schedules(snapshots):
    out = [("StoreAll", lambda K: ck.StoreAll())]
    if hasattr(ck, "Revolve"):
        out.append((f"Revolve({snapshots})", lambda K: ck.Revolve(snapshots=snapshots)))
    if hasattr(ck, "Uniform"):
        out.append((f"Uniform({snapshots})", lambda K: ck.Uniform(snapshots=snapshots)))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--features", type=int, default=1000)
    ap.add_argument("--train", type=int, default=500)
    ap.add_argument("--theta", type=float, default=-3.0, help="log lambda")
    ap.add_argument("--targets", type=float, nargs="+", default=[1e-4, 1e-8])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--snapshots", type=int, default=20)
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "..", "docs", "argmin_benchmark.png"))
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    prob = logistic.make_problem(n_features=args.features, n_train=args.train, n_val=args.train)
    kw = prob.derivatives()
    theta = np.array([args.theta])
    x0 = np.zeros(prob.n)
    mu, L = prob.curvature_bounds(theta)
    ref = solve_argmin(prob.energy, prob.loss, theta, x0, inner_tol=1e-13, linear_tol=1e-14, **kw)
    g_ref = ref.grad[0]
    print(
        f"# logistic regression: n = {prob.n} features, m = {args.train} training rows, theta = {args.theta} "
        f"(lambda = {np.exp(args.theta):.3g}); mu >= {mu:.3g}, L <= {L:.3g}, step 1/L"
    )
    print(
        f"# reference gradient {g_ref:.15e} (inner residual {ref.stats.inner_residual:.1e}, "
        f"linear residual {ref.stats.linear_residual:.1e}); setup+compile {time.perf_counter() - t0:.1f} s"
    )

    def rel(g):
        return abs(g[0] - g_ref) / abs(g_ref)

    def unrolled(K, sched):
        return solve_argmin(
            prob.energy, prob.loss, theta, x0, mode="unrolled", steps=K, step_size=1.0 / L, checkpoint=sched, **kw
        )

    rows = []
    for target in args.targets:
        # implicit: loosest tolerance meeting the target
        for tol in TOL_LADDER:
            r = solve_argmin(prob.energy, prob.loss, theta, x0, inner_tol=tol, linear_tol=tol, **kw)
            if rel(r.grad) <= target:
                break
        sec, peak, r = measure(
            lambda: solve_argmin(prob.energy, prob.loss, theta, x0, inner_tol=tol, linear_tol=tol, **kw), args.repeat
        )
        rows.append(
            dict(
                target=target,
                method="implicit",
                setting=f"tol {tol:.0e}",
                seconds=sec,
                peak=peak,
                stored=0,
                err=rel(r.grad),
                work=f"{r.stats.inner_iterations} L-BFGS it + {r.stats.hvp_evaluations} hvp",
            )
        )
        # unrolled: fewest steps meeting the target (doubling, then bisection)
        K = 8
        while rel(unrolled(K, ck.StoreAll()).grad) > target:
            K *= 2
            if K > 200_000:
                raise RuntimeError("unrolled gradient descent does not reach the target")
        lo, hi = K // 2, K
        while hi - lo > max(1, hi // 50):
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if rel(unrolled(mid, ck.StoreAll()).grad) <= target else (mid, hi)
        K = hi
        for name, mk in schedules(args.snapshots):
            sec, peak, r = measure(lambda: unrolled(K, mk(K)), args.repeat)
            st = r.stats.adjoint
            rows.append(
                dict(
                    target=target,
                    method=f"unrolled {name}",
                    setting=f"K = {K}",
                    seconds=sec,
                    peak=peak,
                    stored=st.peak_stored_bytes,
                    err=rel(r.grad),
                    work=f"{st.forward_steps} fwd + {st.adjoint_steps} adj steps",
                )
            )

    print()
    print("| target | method | setting | rel. error | time (s) | peak traced memory | stored states | work |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['target']:.0e} | {r['method']} | {r['setting']} | {r['err']:.1e} | {r['seconds']:.3f} | "
            f"{r['peak'] / 2**20:.2f} MiB | {r['stored'] / 2**20:.2f} MiB | {r['work']} |"
        )
    for target in args.targets:
        sub = [r for r in rows if r["target"] == target]
        imp = sub[0]
        for r in sub[1:]:
            print(
                f"# target {target:.0e}: {r['method']} / implicit: time x{r['seconds'] / imp['seconds']:.1f}, "
                f"peak memory x{r['peak'] / max(imp['peak'], 1):.1f}"
            )

    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        methods = list(dict.fromkeys(r["method"] for r in rows))
        width = 0.8 / len(methods)
        for k, meth in enumerate(methods):
            sub = [r for r in rows if r["method"] == meth]
            xs = np.arange(len(sub)) + k * width
            axes[0].bar(xs, [r["seconds"] for r in sub], width, label=meth)
            axes[1].bar(xs, [r["peak"] / 2**20 for r in sub], width, label=meth)
        for ax, lab in zip(axes, ("time (s)", "peak traced memory (MiB)")):
            ax.set_xticks(np.arange(len(args.targets)) + 0.4 - width / 2)
            ax.set_xticklabels([f"rel. err <= {t:.0e}" for t in args.targets])
            ax.set_ylabel(lab)
            ax.set_yscale("log")
        axes[0].legend(fontsize=8)
        fig.suptitle(f"logistic regression hyper-gradient, n = {prob.n}: implicit vs unrolled")
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)
        print(f"# plot: {os.path.normpath(args.plot)}")


if __name__ == "__main__":
    main()
