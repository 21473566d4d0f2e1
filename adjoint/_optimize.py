"""scipy.optimize plug-in: value-and-gradient objectives and bounds."""

from __future__ import annotations

import time

import numpy as np

from ._problem import ControlProblem

__all__ = ["Objective", "objective", "control_bounds"]

_BLOCKS = ("params", "controls", "x0")


class Objective:
    """``fun(v) -> (value, grad)`` for ``scipy.optimize.minimize(fun, v0, jac=True)``.

    The unknown vector ``v`` concatenates the blocks named in ``wrt`` (in that order): ``params``
    (param_dim,), ``controls`` flattened row-major (steps * control_dim,), ``x0`` (state_dim,).
    Blocks not in ``wrt`` stay fixed at the values given to :func:`objective`. Each point is
    evaluated once: a call with the same ``v`` as the previous one reuses its result (like scipy's
    ``MemoizeJac``), so ``fun.value(v)`` and ``fun.grad(v)`` can also be passed separately as
    ``fun=`` and ``jac=``.

    Attributes
    ----------
    nfev : int
        Number of gradient evaluations actually run.
    nhev : int
        Number of Hessian-vector products run (:meth:`hessp`).
    history : list of float
        Objective values of the evaluations, in order.
    last : AdjointResult or None
        Result of the latest evaluation.
    """

    def __init__(
        self,
        problem: ControlProblem,
        wrt,
        *,
        params=None,
        controls=None,
        x0=None,
        method=None,
        checkpoint=None,
        backend=None,
        ensemble=None,
        workers=None,
        executor=None,
    ):
        if not isinstance(problem, ControlProblem):
            raise TypeError(f"`problem` must be an adjoint.ControlProblem; got {type(problem).__name__}")
        if isinstance(wrt, str):
            wrt = (wrt,)
        wrt = tuple(wrt)
        if not wrt:
            raise ValueError("`wrt` must name at least one of 'params', 'controls', 'x0'")
        for w in wrt:
            if w not in _BLOCKS:
                raise ValueError(f"`wrt` entries must be 'params', 'controls' or 'x0'; got {w!r}")
        if len(set(wrt)) != len(wrt):
            raise ValueError(f"`wrt` names a block twice: {wrt}")
        self.problem = problem
        self.wrt = wrt
        self.method = method
        self.checkpoint = checkpoint
        self.backend = backend
        if ensemble is not None:
            if not isinstance(ensemble, dict) or not set(ensemble) <= {*_BLOCKS, "weights"} or not ensemble:
                raise ValueError(
                    "`ensemble` must be a dict with some of the keys 'params', 'controls', 'x0' (the per-member "
                    f"inputs with a leading batch axis, plus 'weights' optional); got {ensemble!r:.80}"
                    if not isinstance(ensemble, dict)
                    else f"`ensemble` keys must be among 'params', 'controls', 'x0', 'weights'; got {sorted(ensemble)}"
                )
            for w in wrt:
                if w in ensemble:
                    raise ValueError(
                        f"{w!r} is both optimised (wrt) and given per member in `ensemble`: the optimised blocks "
                        "are shared by all members"
                    )
        #: per-member inputs (:func:`adjoint.solve_ensemble`): the objective is their weighted sum
        self.ensemble = ensemble
        self._ensemble_run = {"workers": workers, "executor": executor}
        self._fixed = {"params": params, "controls": controls, "x0": problem.x0 if x0 is None else x0}
        self._key = None
        self._res = None
        self.nfev = 0
        #: number of Hessian-vector products run (:meth:`hessp`)
        self.nhev = 0
        self.history: list[float] = []
        self.last = None
        self._t0 = time.perf_counter()

    # --- layout -------------------------------------------------------------------------------
    def _sizes(self):
        prob = self.problem
        pdim = prob.param_dim
        if pdim is None:
            pdim = 0 if self._fixed["params"] is None else int(np.size(self._fixed["params"]))
        cdim = prob.control_dim
        if cdim is None:
            c = self._fixed["controls"]
            cdim = 0 if c is None else int(np.asarray(c).reshape(prob.steps, -1).shape[1])
        return {"params": pdim, "controls": prob.steps * cdim, "x0": prob.state_dim}, cdim

    @property
    def size(self) -> int:
        """Length of the unknown vector ``v``."""
        sizes, _ = self._sizes()
        return sum(sizes[w] for w in self.wrt)

    def unpack(self, v) -> dict:
        """Split ``v`` into its blocks: a dict with the keys of ``wrt``."""
        v = np.asarray(v, dtype=np.float64)
        sizes, cdim = self._sizes()
        if v.shape != (self.size,):
            raise ValueError(
                f"the optimisation vector must have shape ({self.size},) for wrt={self.wrt}; got shape {v.shape}"
            )
        out, i = {}, 0
        for w in self.wrt:
            blk = v[i : i + sizes[w]]
            out[w] = blk.reshape(self.problem.steps, cdim) if w == "controls" else blk
            i += sizes[w]
        return out

    def pack(self, **blocks) -> np.ndarray:
        """Concatenate blocks (default: the fixed values given at construction) into ``v``."""
        parts = []
        for w in self.wrt:
            val = blocks.get(w, self._fixed[w])
            if val is None:
                raise ValueError(f"no value for {w!r}: pass {w}=... to pack() or to objective()")
            parts.append(np.asarray(val, dtype=np.float64).ravel())
        return np.concatenate(parts) if parts else np.zeros(0)

    def initial(self) -> np.ndarray:
        """The starting vector built from the values given to :func:`objective`."""
        return self.pack()

    def bounds(self, **block_bounds):
        """L-BFGS-B bounds for ``v``: one ``(lower, upper)`` pair (scalars or arrays) per block.

        Blocks not mentioned are unbounded. Example: ``fun.bounds(controls=(-2.0, 2.0))``.
        """
        sizes, _ = self._sizes()
        for k in block_bounds:
            if k not in self.wrt:
                raise ValueError(f"bounds given for {k!r}, which is not in wrt={self.wrt}")
        out = []
        for w in self.wrt:
            lo, hi = block_bounds.get(w, (None, None))
            lo = (
                np.broadcast_to(np.nan if lo is None else np.asarray(lo, float), (sizes[w],)).ravel()
                if np.ndim(lo) == 0
                else np.asarray(lo, float).ravel()
            )
            hi = (
                np.broadcast_to(np.nan if hi is None else np.asarray(hi, float), (sizes[w],)).ravel()
                if np.ndim(hi) == 0
                else np.asarray(hi, float).ravel()
            )
            if lo.shape != (sizes[w],) or hi.shape != (sizes[w],):
                raise ValueError(f"bounds for {w!r} must be scalars or arrays of {sizes[w]} entries")
            out.extend((None if np.isnan(a) else float(a), None if np.isnan(b) else float(b)) for a, b in zip(lo, hi))
        return out

    # --- evaluation ---------------------------------------------------------------------------
    def _evaluate(self, v):
        from ._solve import solve_adjoint

        v = np.asarray(v, dtype=np.float64)
        key = v.tobytes()
        if key == self._key:
            return self._res
        blocks = self.unpack(v)
        kw = {k: blocks.get(k, self._fixed[k]) for k in _BLOCKS}
        if self.ensemble is not None:
            return self._evaluate_ensemble(key, kw)
        res = solve_adjoint(
            self.problem,
            params=kw["params"],
            controls=kw["controls"],
            x0=kw["x0"],
            method=self.method,
            checkpoint=self.checkpoint,
            backend=self.backend,
        )
        grads = {"params": res.grad.params, "controls": res.grad.controls.ravel(), "x0": res.grad.x0}
        g = np.concatenate([grads[w] for w in self.wrt])
        self._key, self._res = key, (res.value, g)
        self.nfev += 1
        self.history.append(res.value)
        self.last = res
        return self._res

    def _evaluate_ensemble(self, key, kw):
        from ._ensemble import solve_ensemble

        ens = dict(self.ensemble)
        weights = ens.pop("weights", None)
        kw.update(ens)
        res = solve_ensemble(
            self.problem,
            params=kw["params"],
            controls=kw["controls"],
            x0=kw["x0"],
            weights=weights,
            method=self.method,
            checkpoint="auto" if self.checkpoint is None else self.checkpoint,
            backend=self.backend,
            **self._ensemble_run,
        )
        grads = {"params": res.grad.params, "controls": res.grad.controls.ravel(), "x0": res.grad.x0}
        g = np.concatenate([grads[w] for w in self.wrt])
        self._key, self._res = key, (res.value, g)
        self.nfev += 1
        self.history.append(res.value)
        self.last = res
        return self._res

    def __call__(self, v):
        value, g = self._evaluate(v)
        return value, g.copy()

    def value(self, v) -> float:
        return self._evaluate(v)[0]

    def grad(self, v) -> np.ndarray:
        return self._evaluate(v)[1].copy()

    def hessp(self, v, w) -> np.ndarray:
        """The exact Hessian-vector product ``H(v) w`` of the discrete objective.

        For ``scipy.optimize.minimize(fun, v0, jac=True, hessp=fun.hessp, method="trust-krylov")``
        (or ``"Newton-CG"``, ``"trust-ncg"``, ``"trust-constr"``). Forward over reverse: one adjoint
        sweep of the problem's tangent system in the direction ``w`` (see :func:`adjoint.hessp`),
        with the same method, schedule and backend as the gradient; its cost is about two to three
        gradients. The problem's functions must be plain numpy (traced): their second derivatives
        come from the tracing AD.
        """
        from ._tangent import hessp

        if self.ensemble is not None:
            raise NotImplementedError(
                "hessp of an ensemble objective is not supported yet: sum the members' products "
                "(one objective per member) or use a gradient method"
            )
        blocks = self.unpack(v)
        dirs = self.unpack(w)
        if not np.all(np.isfinite(np.asarray(w, dtype=np.float64))):
            bad = int(np.flatnonzero(~np.isfinite(np.asarray(w, dtype=np.float64)))[0])
            raise ValueError(f"hessp: the direction `w` must be finite; entry {bad} is {np.asarray(w)[bad]}")
        kw = {k: blocks.get(k, self._fixed[k]) for k in _BLOCKS}
        sizes, cdim = self._sizes()
        zero = {
            "params": np.zeros(sizes["params"]),
            "controls": np.zeros((self.problem.steps, cdim)),
            "x0": np.zeros(sizes["x0"]),
        }
        dk = {k: dirs.get(k, zero[k]) for k in _BLOCKS}
        hw, _, _, _ = hessp(
            self.problem,
            params=kw["params"],
            controls=kw["controls"],
            x0=kw["x0"],
            dparams=dk["params"],
            dcontrols=dk["controls"],
            dx0=dk["x0"],
            method=self.method,
            checkpoint="auto" if self.checkpoint is None else self.checkpoint,
            backend=self.backend,
        )
        self.nhev += 1
        return np.concatenate([np.ravel(hw[k]) for k in self.wrt])

    def __repr__(self):
        return f"Objective({self.problem.name}, wrt={self.wrt}, size={self.size})"


def objective(
    problem,
    wrt="params",
    *,
    params=None,
    controls=None,
    x0=None,
    method=None,
    checkpoint=None,
    backend=None,
    ensemble=None,
    workers=None,
    executor=None,
):
    """Value-and-gradient callable for ``scipy.optimize.minimize(..., jac=True)``.

    Parameters
    ----------
    problem : ControlProblem
    wrt : {"params", "controls", "x0"} or tuple of them
        The blocks optimised over, concatenated in this order.
    params, controls, x0 : array_like, optional
        Values of the blocks held fixed (and the defaults of :meth:`Objective.initial`).
    method, checkpoint, backend :
        Passed to :func:`adjoint.solve_adjoint`.
    ensemble : dict, optional
        Per-member inputs with a leading batch axis (keys among ``params``, ``controls``, ``x0``,
        and ``weights``): the objective becomes the weighted sum over the members, computed by
        :func:`adjoint.solve_ensemble` (with ``workers``, ``executor``); the optimised blocks are
        shared. For a multi-experiment fit: shared ``params``, per-experiment ``x0`` and data.

    Returns
    -------
    Objective

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> from scipy.optimize import minimize
    >>> from adjoint.problems import lqr
    >>> prob = lqr.make_problem(steps=50)
    >>> fun = prob.objective(wrt="controls", controls=np.zeros((50, 1)))
    >>> res = minimize(fun, fun.initial(), jac=True, method="L-BFGS-B")
    >>> bool(abs(res.fun - lqr.exact_optimum(50)[1]) < 1e-6 * abs(res.fun))
    True
    """
    return Objective(
        problem,
        wrt,
        params=params,
        controls=controls,
        x0=x0,
        method=method,
        checkpoint=checkpoint,
        backend=backend,
        ensemble=ensemble,
        workers=workers,
        executor=executor,
    )


def control_bounds(problem, lower, upper):
    """L-BFGS-B bounds for the flattened controls ``(steps * control_dim,)``.

    ``lower``/``upper`` are scalars or arrays of shape (control_dim,) (per control channel) or
    (steps, control_dim); ``None`` means unbounded.
    """
    K = problem.steps
    m = problem.control_dim
    if m is None or m == 0:
        raise ValueError("the problem has no controls (control_dim = 0)")

    def expand(b, name):
        if b is None:
            return np.full((K, m), np.nan)
        b = np.asarray(b, dtype=float)
        try:
            return np.broadcast_to(b, (K, m))
        except ValueError:
            raise ValueError(f"`{name}` must be a scalar or broadcast to ({K}, {m}); got shape {b.shape}") from None

    lo, hi = expand(lower, "lower").ravel(), expand(upper, "upper").ravel()
    if np.any(lo > hi):
        raise ValueError("`lower` must not exceed `upper`")
    return [(None if np.isnan(a) else float(a), None if np.isnan(b) else float(b)) for a, b in zip(lo, hi)]
