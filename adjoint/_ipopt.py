"""IPOPT for :func:`adjoint.solve_ocp`, through CasADi's ``nlpsol`` (the ``ipopt`` extra).

The objective, its gradient, the constraints and their Jacobian are adjoint's own (compiled sweeps),
wrapped as CasADi callbacks; IPOPT runs with a limited-memory Hessian of the Lagrangian.
"""

from __future__ import annotations

import numpy as np

__all__ = ["solve_ipopt"]


def _dense(J):
    return J.toarray() if hasattr(J, "toarray") else np.asarray(J)


def _casadi():
    try:
        import casadi
    except ImportError:
        raise ImportError(
            'solver="ipopt" needs CasADi (which ships IPOPT): pip install -e ".[ipopt]" (or pip install casadi)'
        ) from None
    return casadi


def _callbacks(ca):
    class Jacobian(ca.Callback):
        """``(v, out) -> d out / d v`` (dense, rows x n)."""

        def __init__(self, name, n, rows, jac, opts, pattern=None):
            ca.Callback.__init__(self)
            self.n, self.rows, self.jac = n, rows, jac
            self._sp = (
                ca.Sparsity.dense(rows, n)
                if pattern is None
                else ca.Sparsity.triplet(rows, n, pattern[0].tolist(), pattern[1].tolist())
            )
            self.dense = pattern is None
            self.construct(name, opts)

        def get_n_in(self):
            return 2

        def get_n_out(self):
            return 1

        def get_sparsity_in(self, i):
            return ca.Sparsity.dense(self.n, 1) if i == 0 else ca.Sparsity.dense(self.rows, 1)

        def get_sparsity_out(self, i):
            return self._sp

        def eval(self, arg):
            J = self.jac(np.asarray(arg[0], dtype=np.float64).ravel())
            if self.dense:
                return [ca.DM(_dense(J))]
            # the values in CasADi's column-major order of the fixed pattern (entries kept explicitly,
            # zeros included, so the structure never changes)
            csc = J.tocsc()
            csc.sort_indices()
            assert csc.data.shape[0] == self._sp.nnz()
            return [ca.DM(self._sp, csc.data)]

    class Function(ca.Callback):
        """``v -> out`` (rows,), with its Jacobian from adjoint."""

        def __init__(self, name, n, rows, fun, jac, pattern=None):
            ca.Callback.__init__(self)
            self.n, self.rows, self.fun, self.jacf, self.pattern = n, rows, fun, jac, pattern
            self._jac = None
            self.construct(name, {"enable_fd": False})

        def get_n_in(self):
            return 1

        def get_n_out(self):
            return 1

        def get_sparsity_in(self, i):
            return ca.Sparsity.dense(self.n, 1)

        def get_sparsity_out(self, i):
            return ca.Sparsity.dense(self.rows, 1)

        def eval(self, arg):
            return [ca.DM(np.atleast_1d(self.fun(np.asarray(arg[0], dtype=np.float64).ravel())))]

        def has_jacobian(self, *args):
            return True

        def get_jacobian(self, name, inames, onames, opts):
            self._jac = Jacobian(name, self.n, self.rows, self.jacf, opts, self.pattern)  # kept alive with self
            return self._jac

    return Function


def solve_ipopt(obj, cons, v0, lo, hi, tol, max_iter, opts, verbose):
    """Run IPOPT; returns ``(v, nit, message, success, multipliers)`` like the scipy drivers."""
    ca = _casadi()
    Function = _callbacks(ca)
    n = v0.shape[0]
    f = Function("adjoint_objective", n, 1, obj.value, lambda v: obj.grad(v).reshape(1, n))
    X = ca.MX.sym("v", n)
    nlp = {"x": X, "f": f(X)}
    clo = chi = None
    if cons is not None:
        J0 = cons.evaluate(v0)
        rows = J0.values.shape[0]
        J = cons.jac(v0)
        pattern = None
        if hasattr(J, "tocsc"):  # a sparse Jacobian (multiple shooting): its fixed structure
            coo = J.tocsc().tocoo()
            pattern = (coo.row, coo.col)
        g = Function("adjoint_constraints", n, rows, cons.values, cons.jac, pattern)
        nlp["g"] = g(X)
        clo, chi = J0.lower, J0.upper
    ipopt = {
        "hessian_approximation": "limited-memory",
        "tol": tol,
        "constr_viol_tol": tol,
        "max_iter": max_iter,
        "print_level": 5 if verbose else 0,
        "sb": "yes",
    }
    ipopt.update(opts)
    solver = ca.nlpsol("adjoint_ocp", "ipopt", nlp, {"ipopt": ipopt, "print_time": False})
    args = {"x0": v0, "lbx": np.where(np.isfinite(lo), lo, -np.inf), "ubx": np.where(np.isfinite(hi), hi, np.inf)}
    if clo is not None:
        args["lbg"], args["ubg"] = clo, chi
    sol = solver(**args)
    st = solver.stats()
    v = np.asarray(sol["x"], dtype=np.float64).ravel()
    mult = np.asarray(sol["lam_g"], dtype=np.float64).ravel() if clo is not None else None
    return v, int(st.get("iter_count", -1)), str(st.get("return_status", "")), bool(st.get("success", False)), mult
