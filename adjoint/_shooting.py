"""Multiple shooting for :func:`adjoint.solve_ocp` (``segments=S``).

The horizon is cut at grid points ``k_0 = 0 < k_1 < ... < k_S = K``. The states ``xi_s = x_{k_s}``
(``s = 1 .. S-1``) become unknowns beside the controls (and parameters), and continuity
constraints ``x_end(segment s) - xi_{s+1} = 0`` tie the segments. Each segment is an ordinary
problem on its piece of the grid: its objective gradient comes from ``solve_adjoint`` and its
constraints' Jacobian, the end state included (as a terminal constraint ``x``), from one block sweep
of ``constraint_jacobian``. The Jacobian is a ``scipy.sparse`` matrix with one dense block per
segment: long horizons stay sparse, and a diverging simulation (unstable dynamics) is cut into
pieces that each stay bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Shooting"]


@dataclass(frozen=True)
class _Values:
    values: np.ndarray
    lower: np.ndarray
    upper: np.ndarray

    @property
    def max_violation(self) -> float:
        if self.values.size == 0:
            return 0.0
        return float(max(0.0, np.max(self.lower - self.values), np.max(self.values - self.upper)))


def _identity(x, p):
    return x


def _zero_cost(x, c, p, t):
    return 0.0 * x[0]


def boundaries(K: int, S: int, every: int) -> list:
    """Segment boundaries on the path-constraint nodes ``0, every, 2 every, ...`` (so each segment's
    path nodes start at its first step), ``k_S = K``."""
    nodes = (K + every - 1) // every
    if S > nodes:
        raise ValueError(
            f"`segments`={S} exceeds the {nodes} grid points a segment can start at "
            f"(steps={K}" + (f", path constraints every={every}" if every > 1 else "") + ")"
        )
    ks = [every * int(round(s * nodes / S)) for s in range(S)] + [K]
    assert all(a < b for a, b in zip(ks, ks[1:]))
    return ks


class Shooting:
    """The segments of a problem and the objective / constraints of the shooting formulation, in the
    interface :mod:`adjoint._ocp` hands to the solvers (``obj(v) -> (value, grad)``, ``obj.value``,
    ``obj.grad``, ``obj.nfev``, ``obj.history``; ``cons.evaluate(v)``, ``cons.values``, ``cons.jac``
    (sparse), ``cons.njev``)."""

    def __init__(self, problem, S, *, params, controls, x0, method, checkpoint, optimise_params):
        from ._constraints import Path, Terminal
        from ._problem import ControlProblem
        from ._solve import simulate

        self.problem, self.S, self.method, self.checkpoint = problem, S, method, checkpoint
        K, n = problem.steps, problem.state_dim
        self.n = n
        paths = [c for c in problem.constraints if isinstance(c, Path)]
        terms = [c for c in problem.constraints if isinstance(c, Terminal)]
        every = paths[0].every if paths else 1
        self.ks = boundaries(K, S, every)
        C = np.asarray(controls, dtype=np.float64)
        self.m = C.shape[1] if C.ndim == 2 else (1 if C.size else 0)
        C = C.reshape(K, self.m)
        self.p = np.zeros(0) if params is None else np.asarray(params, dtype=np.float64).ravel()
        self.q = self.p.shape[0]
        self.optimise_params = bool(optimise_params and self.q)
        self.x0 = problem.x0 if x0 is None else np.asarray(x0, dtype=np.float64)
        t0, tau = problem.t_span[0], problem.tau
        self.segs = []
        for s in range(S):
            a, b = self.ks[s], self.ks[s + 1]
            last = s == S - 1
            cons = list(paths) + (terms if last else [Terminal(_identity, name="segment_end")])
            has_cost = problem.running_cost is not None or (last and problem.terminal_cost is not None)
            seg = ControlProblem(
                problem.dynamics,
                self.x0,
                (t0 + a * tau, problem.t_span[1] if last else t0 + b * tau),
                b - a,
                terminal_cost=problem.terminal_cost if last else None,
                running_cost=problem.running_cost if has_cost else _zero_cost,
                control_dim=problem.control_dim,
                param_dim=problem.param_dim,
                name=f"{problem.name} [segment {s}]",
                constraints=cons or None,
            )
            self.segs.append((seg, a, b, has_cost, bool(cons)))
        # layout of v: [params], controls (K m), xi_1 .. xi_{S-1} (n each)
        self.nv_p = self.q if self.optimise_params else 0
        self.nv = self.nv_p + K * self.m + (S - 1) * n
        # the initial states of the segments: a simulation with the initial controls
        _, traj = simulate(problem, params=self.p if self.q else None, controls=C, x0=self.x0, method=method)
        self.v0 = np.concatenate(
            [self.p if self.optimise_params else np.zeros(0), C.ravel()] + [traj[k] for k in self.ks[1:-1]]
        )
        self._key = None
        self._res = None
        self.nfev = 0
        self.njev = 0
        self.history: list = []

    # -- layout --------------------------------------------------------------------------------
    def unpack(self, v):
        v = np.asarray(v, dtype=np.float64)
        p = v[: self.nv_p] if self.optimise_params else self.p
        C = v[self.nv_p : self.nv_p + self.problem.steps * self.m].reshape(self.problem.steps, self.m)
        xi = v[self.nv_p + self.problem.steps * self.m :].reshape(self.S - 1, self.n)
        return p, C, xi

    def start(self, s, xi):
        return self.x0 if s == 0 else xi[s - 1]

    def bounds(self, lo_pc, hi_pc):
        """``(lower, upper)`` of ``v`` from those of ``[params], controls`` (the states are free)."""
        free = np.full((self.S - 1) * self.n, np.inf)
        return np.concatenate([lo_pc, -free]), np.concatenate([hi_pc, free])

    # -- objective -------------------------------------------------------------------------------
    def _evaluate(self, v):
        from ._solve import solve_adjoint

        key = np.asarray(v, dtype=np.float64).tobytes()
        if key == self._key:
            return self._res
        p, C, xi = self.unpack(v)
        value = 0.0
        g_p = np.zeros(self.q)
        g_c = np.zeros_like(C)
        g_xi = np.zeros_like(xi)
        for s, (seg, a, b, has_cost, _) in enumerate(self.segs):
            if not has_cost:
                continue
            r = solve_adjoint(
                seg, params=p if self.q else None, controls=C[a:b], x0=self.start(s, xi), method=self.method,
                checkpoint=self.checkpoint,
            )  # fmt: skip
            value += r.value
            g_p += r.grad.params
            g_c[a:b] = r.grad.controls
            if s > 0:
                g_xi[s - 1] = r.grad.x0
        grad = np.concatenate([g_p if self.optimise_params else np.zeros(0), g_c.ravel(), g_xi.ravel()])
        self._key, self._res = key, (float(value), grad)
        self.nfev += 1
        self.history.append(float(value))
        return self._res

    def __call__(self, v):
        value, g = self._evaluate(v)
        return value, g.copy()

    def value(self, v) -> float:
        return self._evaluate(v)[0]

    def grad(self, v) -> np.ndarray:
        return self._evaluate(v)[1].copy()

    # -- constraints -----------------------------------------------------------------------------
    def constraints(self):
        return _ShootingConstraints(self)

    def trajectory(self, v) -> np.ndarray:
        """The states of the segments, each simulated from its start state, stitched together."""
        from ._solve import simulate

        p, C, xi = self.unpack(v)
        out = np.empty((self.problem.steps + 1, self.n))
        for s, (seg, a, b, _, _) in enumerate(self.segs):
            _, tr = simulate(
                seg, params=p if self.q else None, controls=C[a:b], x0=self.start(s, xi), method=self.method
            )
            out[a : b + 1] = tr
        return out


class _ShootingConstraints:
    """Rows: continuity (n per inner boundary), then each segment's path rows, then the terminal rows."""

    def __init__(self, sh: Shooting):
        self.sh = sh
        self._key = None
        self._res = None
        self.njev = 0

    def _run(self, v):
        from scipy.sparse import coo_matrix

        from ._constraints import constraint_jacobian

        key = np.asarray(v, dtype=np.float64).tobytes()
        if key == self._key:
            return self._res
        sh = self.sh
        n, m, S = sh.n, sh.m, sh.S
        p, C, xi = sh.unpack(v)
        vals, los, his, rows, cols, data = [], [], [], [], [], []
        r0 = 0

        # continuity first (n rows per inner boundary), then the constraints of each segment
        seg_out = []
        for s, (seg, a, b, _, has_cons) in enumerate(sh.segs):
            if not has_cons:
                seg_out.append(None)
                continue
            J = constraint_jacobian(
                seg, params=p if sh.q else None, controls=C[a:b], x0=sh.start(s, xi), method=sh.method,
                checkpoint=sh.checkpoint,
            )  # fmt: skip
            seg_out.append(J)
        for s in range(S - 1):
            J = seg_out[s]
            assert J is not None
            sel = slice(0, n)  # the segment's end state: its terminal rows
            vals.append(J.values[sel] - xi[s])
            los.append(np.zeros(n))
            his.append(np.zeros(n))
            for cidx, blk in self._parts(J, s, sel):
                rr, cc = np.meshgrid(r0 + np.arange(n), cidx, indexing="ij")
                rows.append(rr.ravel()), cols.append(cc.ravel()), data.append(blk.ravel())
            base = sh.nv_p + sh.problem.steps * m + s * n  # -I for xi_{s+1}
            rows.append(r0 + np.arange(n)), cols.append(base + np.arange(n)), data.append(-np.ones(n))
            r0 += n
        for s, J in enumerate(seg_out):
            if J is None:
                continue
            last = s == S - 1
            sel = slice(0, J.values.shape[0]) if last else slice(n, J.values.shape[0])
            nr = sel.stop - sel.start
            if nr == 0:
                continue
            vals.append(J.values[sel])
            los.append(J.lower[sel])
            his.append(J.upper[sel])
            for cidx, blk in self._parts(J, s, sel):
                rr, cc = np.meshgrid(r0 + np.arange(nr), cidx, indexing="ij")
                rows.append(rr.ravel()), cols.append(cc.ravel()), data.append(blk.ravel())
            r0 += nr
        jac = coo_matrix(
            (np.concatenate(data), (np.concatenate(rows), np.concatenate(cols))), shape=(r0, sh.nv)
        ).tocsr()
        res = (_Values(np.concatenate(vals), np.concatenate(los), np.concatenate(his)), jac)
        self._key, self._res = key, res
        self.njev += 1
        return res

    def _parts(self, J, s, sel):
        sh = self.sh
        m, n = sh.m, sh.n
        a, b = sh.ks[s], sh.ks[s + 1]
        out = []
        if sh.optimise_params:
            out.append((np.arange(sh.nv_p), J.params[sel]))
        out.append((sh.nv_p + np.arange(a * m, b * m), J.controls[sel].reshape(sel.stop - sel.start, -1)))
        if s > 0:
            out.append((sh.nv_p + sh.problem.steps * m + (s - 1) * n + np.arange(n), J.x0[sel]))
        return out

    def evaluate(self, v) -> _Values:
        return self._run(v)[0]

    def values(self, v) -> np.ndarray:
        return self._run(v)[0].values.copy()

    def jac(self, v):
        return self._run(v)[1]
