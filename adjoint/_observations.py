"""Observations of a trajectory and their residuals: ``ControlProblem(..., observations=...)``.

A problem with observations has the objective

    J = L(x_K, p) + tau sum_k l(x_k, c_k, p, t_k) + 1/2 sum_j |r_j|^2,
    r_j = w_j * (observe(x(t_j), p) - y_j),

with the observation times ``t_j`` on the step grid. The engine needs nothing new for it: the data
enter the sweep as per-step inputs. :func:`observed_problem` derives a problem whose controls are
the original ones followed by two columns per observed component, ``y_k`` and ``W_k`` (``W_k =
w_j^2 / tau`` at the node ``k`` of an observation ``j``, zero elsewhere and where a datum is
missing), and whose running cost adds ``1/2 sum_i W_k,i (observe_i(x_k, p) - y_k,i)^2``; an
observation at the final time goes into the terminal cost as constants. ``solve_adjoint``,
``Objective``, ``Objective.hessp`` and every schedule and backend then run that problem; the
gradient with respect to the data columns is dropped. (Multiplying by ``tau`` in the quadrature
undoes the ``1/tau`` up to rounding.)

The same derived problem with a linear data term, ``sum_i W_k,i observe_i(x_k, p)`` with ``W =
u_j w_j / tau``, has the gradient ``J_r^T u`` (``J_r`` the Jacobian of the residuals): one adjoint
sweep for the transposed half of a Gauss-Newton product.
"""

from __future__ import annotations

import numpy as np

__all__ = ["Observations", "Residuals"]


class Observations:
    """Observed data of a trajectory, for parameter estimation.

    Parameters
    ----------
    times : array_like, shape (J,)
        Distinct observation times. Each must be a point of the problem's step grid
        ``t0 + k tau`` (within 1e-9 of the horizon); otherwise constructing the problem raises an
        error that names the nearest grid points.
    data : array_like, shape (J, o) or (J,)
        The observed values ``y_j`` (``(J,)`` means one observed component). NaN marks a missing
        value: it is left out of the residuals.
    observe : callable ``observe(x, p) -> array (o,)``, optional
        What is observed of the state, as a plain numpy function (traced). Default: the state
        itself (``o = state_dim``).
    weights : float or array_like of shape (o,) or (J, o), optional
        The residuals are ``weights * (observe(x(t_j), p) - y_j)``. Default 1. Must be finite and
        non-negative.

    Notes
    -----
    The problem's objective gains ``1/2 sum_j |r_j|^2``. ``problem.residuals(...)`` gives the
    residual vector and its Jacobian for ``scipy.optimize.least_squares``.

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> obs = adjoint.Observations([0.5, 1.0], [[0.6], [0.37]])
    >>> prob = adjoint.ControlProblem(lambda x, c, p, t: -p[0] * x, [1.0], (0.0, 1.0), 10,
    ...                               observations=obs, param_dim=1)
    >>> res = prob.residuals(wrt="params")
    >>> res(np.array([1.0])).round(4).tolist()
    [-0.0095, -0.0213]
    """

    def __init__(self, times, data, observe=None, weights=None):
        try:
            t = np.array(times, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"Observations: `times` must be an array of numbers; got {times!r}") from None
        if t.ndim != 1 or t.size == 0:
            raise ValueError(f"Observations: `times` must be a non-empty 1-D array; got shape {t.shape}")
        if not np.all(np.isfinite(t)):
            raise ValueError("Observations: `times` must be finite")
        if np.unique(t).size != t.size:
            raise ValueError("Observations: `times` must be distinct (merge repeated observations into one row)")
        try:
            y = np.array(data, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError("Observations: `data` must be an array of numbers (NaN marks a missing value)") from None
        if y.ndim == 1:
            y = y.reshape(-1, 1)
        if y.ndim != 2 or y.shape[0] != t.size:
            raise ValueError(
                f"Observations: `data` must have shape (J, o) with J = len(times) = {t.size}; got shape {y.shape}"
            )
        if np.any(np.isinf(y)):
            raise ValueError("Observations: `data` must not contain inf (NaN marks a missing value)")
        if observe is not None and not callable(observe):
            raise TypeError(f"Observations: `observe` must be a function observe(x, p) -> array; got {observe!r}")
        o = y.shape[1]
        if weights is None:
            w = np.ones((t.size, o))
        else:
            try:
                w = np.array(np.broadcast_to(np.asarray(weights, dtype=np.float64), (t.size, o)))
            except ValueError:
                raise ValueError(
                    f"Observations: `weights` must be a number or have shape ({o},) or ({t.size}, {o}); "
                    f"got shape {np.shape(weights)}"
                ) from None
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise ValueError("Observations: `weights` must be finite and non-negative")
        order = np.argsort(t, kind="stable")
        self.times = t[order]
        self.data = y[order]
        self.weights = w[order]
        self.observe = observe
        #: where a datum is present (False: missing, NaN in ``data``)
        self.mask = ~np.isnan(self.data)
        for a in (self.times, self.data, self.weights, self.mask):
            a.setflags(write=False)

    @property
    def size(self) -> int:
        """The number of residuals (data present)."""
        return int(self.mask.sum())

    @property
    def observed_dim(self) -> int:
        return self.data.shape[1]

    def indices(self, t0: float, t1: float, steps: int) -> np.ndarray:
        """The grid indices ``k_j`` of the observation times on ``t0 + k (t1 - t0) / steps``;
        raises a ValueError naming the nearest grid points for a time that is not on the grid."""
        tau = (t1 - t0) / steps
        s = (self.times - t0) / tau
        k = np.rint(s).astype(np.int64)
        tol = 1e-9 * steps
        for j in range(self.times.size):
            tj = self.times[j]
            if tj < t0 - 1e-9 * (t1 - t0) or tj > t1 + 1e-9 * (t1 - t0):
                raise ValueError(f"Observations: times[{j}] = {tj!r} lies outside the horizon t_span = ({t0}, {t1})")
            if abs(s[j] - k[j]) > tol:
                lo = int(np.floor(s[j]))
                raise ValueError(
                    f"Observations: times[{j}] = {tj!r} is not a point of the step grid t0 + k tau (tau = {tau:g}); "
                    f"the nearest grid points are t_{lo} = {t0 + lo * tau:.12g} and t_{lo + 1} = "
                    f"{t0 + (lo + 1) * tau:.12g}. Choose `steps` so that every observation time is a grid point."
                )
        return np.clip(k, 0, steps)

    def __repr__(self):
        return f"Observations({self.times.size} times, {self.observed_dim} observed, {self.size} values)"


def check_observations(problem_steps, t_span, observations, final_time):
    """Validate ``ControlProblem(observations=...)`` (its times against the grid)."""
    if observations is None:
        return None
    if not isinstance(observations, Observations):
        raise TypeError(
            f"`observations` must be an adjoint.Observations(times, data, observe=None, weights=None); got "
            f"{type(observations).__name__}"
        )
    if final_time is not None:
        raise ValueError(
            "`observations` on a free final time are not supported: the observation times must be fixed grid points"
        )
    observations.indices(t_span[0], t_span[1], problem_steps)
    return observations


def _observe_fn(obs, n):
    if obs.observe is None:

        def ident(x, p):
            return x

        if obs.observed_dim != n:
            raise ValueError(
                f"Observations: `data` has {obs.observed_dim} columns but the state has {n} components and no "
                "`observe` is given (the default observes the whole state); pass observe=lambda x, p: ... "
            )
        return ident
    return obs.observe


def _data_columns(problem, linear_weights=None):
    """``(y, W)`` per-step columns (K, o) each (see the module docstring), and the final-time datum
    ``(y_K, w_K^2)`` or None. With ``linear_weights`` (J, o): ``W = u w / tau`` instead."""
    obs = problem.observations
    K, tau = problem.steps, problem.tau
    idx = obs.indices(*problem.t_span, K)
    o = obs.observed_dim
    Y = np.zeros((K, o))
    W = np.zeros((K, o))
    present = obs.mask
    if linear_weights is None:
        wk = np.where(present, obs.weights**2, 0.0)
    else:
        wk = np.where(present, obs.weights * linear_weights, 0.0)
    yk = np.where(present, obs.data, 0.0)
    final = None
    for j, k in enumerate(idx):
        if k == K:
            final = (yk[j].copy(), wk[j].copy())
        else:
            Y[k] = yk[j]
            W[k] = wk[j] / tau
    return Y, W, final


def observed_problem(problem, control_dim, param_dim, mode="squares"):
    """The plain problem the engine runs for a problem with observations (see the module
    docstring); memoised. ``mode="linear"``: the data term is ``sum W observe`` and the final-time
    observation weights ``u_K w_K`` are extra parameters (``param_dim + o`` parameters)."""
    from ._problem import ControlProblem
    from ._tangent import traceable_cost, traceable_field

    key = ("observed", mode, control_dim, param_dim)
    got = problem._cache.derived.get(key)
    if got is not None:
        return got
    obs = problem.observations
    what = "`observations`"
    f = traceable_field(problem, what)
    run = traceable_cost("the running cost", problem.running_cost, what)
    term = traceable_cost("the terminal cost", problem.terminal_cost, what)
    n, m, q, o = problem.state_dim, control_dim, param_dim, obs.observed_dim
    observe = _observe_fn(obs, n)
    _, _, final = _data_columns(problem)

    def dynamics(x, C, p, t):
        return f(x, C[:m], p[:q], t)

    if mode == "squares":

        def running(x, C, p, t):
            r = observe(x, p[:q]) - C[m : m + o]
            val = 0.5 * np.sum(C[m + o : m + 2 * o] * r * r)
            if run is not None:
                val = val + run(x, C[:m], p, t)
            return val

        if final is not None:
            yK = [float(v) for v in final[0]]
            wK = [float(v) for v in final[1]]

            def terminal(x, p):
                ob = observe(x, p)
                val = 0.0
                for i in range(o):
                    if wK[i] != 0.0:
                        val = val + 0.5 * wK[i] * (ob[i] - yK[i]) ** 2
                if term is not None:
                    val = val + term(x, np.zeros(0), p, 0.0)
                return val

        elif term is not None:

            def terminal(x, p):
                return term(x, np.zeros(0), p, 0.0)

        else:
            terminal = None
        pq = q
    else:

        def running(x, C, p, t):
            return np.sum(C[m + o : m + 2 * o] * observe(x, p[:q]))

        def terminal(x, p):
            return np.sum(p[q : q + o] * observe(x, p[:q]))

        pq = q + o
    derived = ControlProblem(
        dynamics,
        problem.x0,
        problem.t_span,
        problem.steps,
        terminal_cost=terminal,
        running_cost=running,
        control_dim=m + 2 * o,
        param_dim=pq,
        name=problem.name,
    )
    problem._cache.derived[key] = derived
    return derived


def _controls_array(problem, controls, m):
    K = problem.steps
    if m == 0:
        return np.zeros((K, 0))
    try:
        C = np.asarray(controls, dtype=np.float64)
        return C.reshape(K, m)
    except (TypeError, ValueError):
        raise ValueError(
            f"`controls` must have shape (steps, control_dim) = ({K}, {m}); got "
            f"{'None' if controls is None else np.shape(controls)}"
        ) from None


def expand_observed(problem, params, controls, control_dim):
    """``(base, params, controls)``: the problem the engine runs for ``problem`` and its inputs.
    Without observations, the problem itself and the inputs unchanged."""
    obs = getattr(problem, "observations", None)
    if obs is None:
        return problem, params, controls
    from ._validate import resolve_dims

    m, q = resolve_dims(problem, params, controls)
    if m < 0:
        raise ValueError(f"`controls` must have shape (steps, control_dim); got shape {np.shape(controls)}")
    base = observed_problem(problem, m, q)
    cols = problem._cache.derived.get(("observed_cols",))
    if cols is None:
        Y, W, _ = _data_columns(problem)
        cols = np.concatenate([Y, W], axis=1)
        problem._cache.derived[("observed_cols",)] = cols
    if m == 0:  # the data columns alone: the cached array, not copied (the sweeps only read it)
        return base, params, cols
    C = np.ascontiguousarray(np.concatenate([_controls_array(problem, controls, m), cols], axis=1))
    return base, params, C


def _observe_jvps(problem, m, q, d):
    """Compiled ``(observe, J_observe (dx^j, dp^j) for j < d)(X, C, P, t)`` on the tangent system's
    inputs (memoised); ``C`` is unused."""
    from . import ad
    from ._tangent import _split

    key = ("observe_jvps", m, q, d)
    got = problem._cache.derived.get(key)
    if got is not None:
        return got
    n = problem.state_dim
    observe = _observe_fn(problem.observations, n)

    def vec(X, C, P, t):
        x, dxs = _split(X, n, d)
        p, dps = _split(P, q, d)
        parts = [observe(x, p)]
        for j in range(d):
            parts.append(ad.jvp(observe, (x, p), (dxs[j], dps[j]))[1])
        return np.concatenate(parts) if d else parts[0] + 0.0 * x[0]

    fn = ad.compile_vector(vec, n * (1 + d), 0, max(q * (1 + d), 0)).f
    problem._cache.derived[key] = fn
    return fn


class Residuals:
    """The residuals ``r(v)`` of a problem's :class:`adjoint.Observations` and their Jacobian.

    Built by ``problem.residuals(wrt, params=..., controls=..., x0=..., method=...,
    checkpoint=...)`` (the arguments of ``problem.objective``). ``v`` concatenates the blocks named
    in ``wrt``; the others stay fixed. The residual vector lists ``weights * (observe(x(t_j), p) -
    data_j)`` for the data present (NaN in ``data`` is left out), time by time, component by
    component.

    Use as ``scipy.optimize.least_squares(res, v0, jac=res.jac)``. ``least_squares`` minimises
    ``1/2 |r|^2``, the objective of the problem when it has no other costs.

    Methods
    -------
    __call__(v) : ndarray (r,)
        The residuals (one forward sweep).
    jac(v) : ndarray (r, N)
        The exact Jacobian of the discrete residuals: by one forward (tangent) sweep with ``N``
        directions when ``N <= r`` (forward mode), else by ``r`` adjoint sweeps (reverse mode).
    gnp(v, w) : ndarray (N,)
        The Gauss-Newton product ``J^T J w``: one tangent sweep and one adjoint sweep.
    """

    def __init__(self, problem, wrt="params", *, params=None, controls=None, x0=None, method=None, checkpoint=None):
        from ._optimize import Objective

        if getattr(problem, "observations", None) is None:
            raise ValueError(
                "problem.residuals() needs data: build the problem with observations=adjoint.Observations(...)"
            )
        self.problem = problem
        self._obj = Objective(
            problem, wrt, params=params, controls=controls, x0=x0, method=method, checkpoint=checkpoint
        )
        self.wrt = self._obj.wrt
        self.method = method
        self.checkpoint = checkpoint
        obs = problem.observations
        self._idx = obs.indices(*problem.t_span, problem.steps)
        self.size = obs.size
        self.nfev = 0
        self.njev = 0

    def initial(self):
        """The starting vector built from the fixed values given."""
        return self._obj.initial()

    def unpack(self, v) -> dict:
        return self._obj.unpack(v)

    def _inputs(self, v):
        blocks = self._obj.unpack(v)
        fixed = self._obj._fixed
        out = {k: blocks.get(k, fixed[k]) for k in ("params", "controls", "x0")}
        sizes, m = self._obj._sizes()
        return out, sizes, m

    def _residuals_from(self, traj, P, d, m, q):
        """``(r, J)`` from the tangent system's trajectory (rows at the observation nodes)."""
        obs = self.problem.observations
        o = obs.observed_dim
        fn = _observe_jvps(self.problem, m, q, d)
        out = np.empty(o * (1 + d))
        c0 = np.zeros(0)
        rows, jrows = [], []
        for j in range(obs.times.size):
            fn(traj[j], c0, P, obs.times[j], out)
            mask = obs.mask[j]
            w = obs.weights[j]
            rows.append((w * (out[:o] - np.where(mask, obs.data[j], 0.0)))[mask])
            if d:
                jrows.append((w[:, None] * out[o:].reshape(d, o).T)[mask])
        r = np.concatenate(rows)
        return r, (np.concatenate(jrows, axis=0) if d else None)

    def __call__(self, v) -> np.ndarray:
        from ._solve import simulate

        kw, sizes, m = self._inputs(v)
        _, traj = simulate(self.problem, params=kw["params"], controls=kw["controls"], x0=kw["x0"], method=self.method)
        p = np.zeros(0) if kw["params"] is None else np.asarray(kw["params"], dtype=np.float64).ravel()
        self.nfev += 1
        return self._residuals_from(traj[self._idx], p, 0, m, sizes["params"])[0]

    def _forward(self, v, directions):
        """``(r, J D)`` for the directions ``D`` (N, d): one tangent sweep."""
        from ._tangent import _tangent_sweep, split_directions

        kw, sizes, m = self._inputs(v)
        q = sizes["params"]
        dP, dC, dX0, d = split_directions(self.problem, directions, self.wrt, m, q)
        traj, P, *_ = _tangent_sweep(
            self.problem, kw["params"], kw["controls"], kw["x0"], self.method, None, dP, dC, dX0, d, m, q
        )
        return self._residuals_from(traj[self._idx], P, d, m, q)

    def jac(self, v) -> np.ndarray:
        """The exact Jacobian ``dr/dv``, shape (r, N)."""
        self.njev += 1
        N = self._obj.size
        if N <= self.size:
            _, J = self._forward(v, np.eye(N))
            return J
        return self._jac_reverse(v)

    def _jac_reverse(self, v):
        rows = np.empty((self.size, self._obj.size))
        eye = np.eye(self.size)
        for i in range(self.size):
            rows[i] = self._jtu(v, eye[i])
        return rows

    def _jtu(self, v, u):
        """``J^T u``: one adjoint sweep of the linear-mode derived problem."""
        from ._solve import solve_adjoint

        kw, sizes, m = self._inputs(v)
        q = sizes["params"]
        prob = self.problem
        obs = prob.observations
        lin = observed_problem(prob, m, q, mode="linear")
        U = np.zeros(obs.data.shape)
        U[obs.mask] = u
        Y, W, final = _data_columns(prob, linear_weights=U)
        C = np.concatenate([_controls_array(prob, kw["controls"], m), Y, W], axis=1)
        p = np.zeros(0) if kw["params"] is None else np.asarray(kw["params"], dtype=np.float64).ravel()
        P = np.concatenate([p, np.zeros(obs.observed_dim) if final is None else final[1]])
        res = solve_adjoint(
            lin,
            params=P,
            controls=C,
            x0=kw["x0"],
            method=self.method,
            checkpoint="auto" if self.checkpoint is None else self.checkpoint,
        )
        g = {"params": res.grad.params[:q], "controls": res.grad.controls[:, :m].ravel(), "x0": res.grad.x0}
        return np.concatenate([g[w] for w in self.wrt])

    def gnp(self, v, w) -> np.ndarray:
        """The Gauss-Newton product ``J^T (J w)``: one tangent sweep, one adjoint sweep."""
        w = np.asarray(w, dtype=np.float64).reshape(-1, 1)
        _, Jw = self._forward(v, w)
        return self._jtu(v, Jw[:, 0])

    def __repr__(self):
        return f"Residuals({self.problem.name}, wrt={self.wrt}, {self.size} residuals, {self._obj.size} inputs)"
