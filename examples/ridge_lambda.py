"""Find the best ridge penalty lambda with scipy and the implicit hyper-gradient.

The inner problem is the ridge fit on training data, the outer one the validation error
(``problems/ridge.py``). ``adjoint.solve_argmin`` gives ``L(x(theta))`` and ``dL/dtheta`` for
``theta = log lambda``; ``scipy.optimize.minimize`` (L-BFGS-B) follows it, warm-starting each inner
solve at the previous solution. The plot shows the validation error against lambda with the
optimiser's path, and the hyper-gradient against the closed form.

Usage::

    PYTHONPATH=. python examples/ridge_lambda.py [output_dir]
"""

from __future__ import annotations

import os
import sys

import numpy as np
from scipy.optimize import minimize

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from adjoint.problems import ridge  # noqa: E402

try:
    from adjoint import solve_argmin  # noqa: E402
except ImportError:  # until adjoint/__init__.py re-exports it
    from adjoint._argmin import solve_argmin  # noqa: E402


def main(output_dir=None):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    output_dir = output_dir or os.path.dirname(os.path.abspath(__file__))
    prob = ridge.make_problem(n_features=30, n_train=40, n_val=60, noise=1.0)
    kw = prob.derivatives()
    warm = [np.zeros(prob.n)]
    path = []

    def fun(theta):
        r = solve_argmin(prob.energy, prob.loss, theta, warm[0], **kw)
        warm[0] = r.x
        path.append((float(theta[0]), r.value, float(r.grad[0])))
        return r.value, r.grad

    theta0 = np.array([np.log(10.0)])
    best = minimize(fun, theta0, jac=True, method="L-BFGS-B")
    lam_best = float(np.exp(best.x[0]))
    g_cf = prob.closed_form_grad(best.x)[0]
    print(
        f"best lambda = {lam_best:.6g} (theta = {best.x[0]:.6f}) after {best.nit} iterations, "
        f"{best.nfev} hyper-gradients; validation error {best.fun:.6g}"
    )
    print(f"hyper-gradient there: implicit {path[-1][2]:.3e}, closed form {g_cf:.3e}")

    pts = np.array(path)
    thetas = np.linspace(min(-7.0, pts[:, 0].min() - 0.5), max(4.0, pts[:, 0].max() + 0.5), 200)
    vals = np.array([prob.closed_form_value([t]) for t in thetas])
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    ax1.semilogx(np.exp(thetas), vals, label="validation error (closed form)")
    ax1.semilogx(np.exp(pts[:, 0]), pts[:, 1], "o-", c="C3", ms=4, label="L-BFGS-B evaluations (in order)")
    for k, (t, v, _) in enumerate(path):
        ax1.annotate(str(k), (np.exp(t), v), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax1.axvline(lam_best, ls="--", c="k", lw=0.8, label=f"best lambda = {lam_best:.3g}")
    ax1.set_xlabel("lambda")
    ax1.set_ylabel("L(x(lambda))")
    ax1.legend(fontsize=8)
    tg = thetas[::8]
    ax2.semilogx(np.exp(thetas), [prob.closed_form_grad([t])[0] for t in thetas], label="closed form")
    ax2.semilogx(
        np.exp(tg),
        [solve_argmin(prob.energy, prob.loss, t, np.zeros(prob.n), **kw).grad[0] for t in tg],
        "o",
        ms=4,
        label="implicit (solve_argmin)",
    )
    ax2.axhline(0.0, c="k", lw=0.5)
    ax2.set_xlabel("lambda")
    ax2.set_ylabel("dL / d log(lambda)")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    out = os.path.join(output_dir, "ridge_lambda.png")
    fig.savefig(out, dpi=110)
    plt.close(fig)
    print(f"saved {out}")
    return lam_best, out


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
