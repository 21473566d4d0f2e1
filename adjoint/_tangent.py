"""Forward sensitivities and second order: the tangent system, run by the one engine.

The tangent of an explicit step is the same step applied to the *variational system* (a
Runge-Kutta method, a discrete map and the leapfrog commute with linearisation): with ``d``
directions ``(dx0_j, dc_j, dp_j)``, the tangents ``dx_k^j = (d x_k / d v) dv_j`` of the discrete
trajectory are exactly the states of the augmented problem

    X = (x, dx^1, ..., dx^d),   X' = (u(x, c, p, t), J_u(x, c, p, t) (dx^j, dc^j, dp^j) for each j),

with controls ``(c, dc^1, ...)`` and parameters ``(p, dp^1, ...)``, integrated by the same method
on the same grid. :func:`tangent_problem` builds that problem from the traced functions (the
JVP ``J_u (dx, dc, dp)`` is written by the tracing AD, :func:`adjoint.ad.jvp`), so the forward
(tangent) sweep is the engine's forward sweep of a problem of size ``n (1 + d)``: every method,
every backend.

**Second order.** With one direction ``w`` and the costs replaced by their directional
derivatives, the augmented objective is ``J_w(v) = dJ(v) w``. Its exact discrete gradient is
``grad_v J_w = H w`` (the Hessian of the discrete objective times ``w``) on the first half of the
inputs and ``grad J`` on the second: one adjoint sweep of the tangent system, which carries the
first-order adjoint (of ``dx``) and the second-order adjoint (of ``x``) backwards together. This
is the classical second-order adjoint; forward over reverse gives the same numbers (the Hessian is
symmetric) and the engine needs no new sweep: every schedule (bitwise equal to StoreAll, as for
any gradient), every backend, the checks and the fast lane apply unchanged. The second
derivatives of the dynamics and costs come from the tracing AD (the VJP of the traced JVP).

Hand-written functions (``Dynamics``/``Cost`` with numba ``f``/``vjp``) carry no second
derivatives: a clear error asks for the model as a plain numpy function.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["solve_tangent", "TangentResult", "tangent_problem", "hessp"]

_BLOCKS = ("params", "controls", "x0")


def _hand_written(label, what):
    if what == "`observations`":
        need = (
            f"`observations` need {label} as a traceable function (the engine runs a derived problem whose "
            f"controls carry the data), and {label} is hand-written (numba functions with a VJP)."
        )
    else:
        need = (
            f"{what} needs the derivatives of {label} beyond its VJP, and {label} is hand-written (numba "
            "functions with a VJP)."
        )
    return ValueError(
        need + " Write it as a plain numpy function fn(x, c, p, t) (traced by adjoint.ad, which derives the "
        "JVP and the second derivatives) or build it with adjoint.vector_field / adjoint.cost; "
        "adjoint.solve_adjoint gives gradients of hand-written models."
    )


def traceable_field(problem, what="a tangent sweep"):
    """The problem's dynamics as a plain function ``u(x, c, p, t)`` that the tracing AD can trace:
    the user's plain function, or the traced graph of a ``vector_field``, replayed. (Separable
    dynamics: :func:`_separable_halves`.)"""
    from ._problem import Dynamics
    from ._separable import SeparableDynamics

    dyn = problem.dynamics
    if isinstance(dyn, SeparableDynamics):
        raise ValueError(
            f"{what} of adjoint.SeparableDynamics is not supported: give the field as a plain function of the "
            "whole state (with adjoint.RK4(), ...), or use solve_adjoint"
        )
    if isinstance(dyn, Dynamics):
        if dyn.traced is None:
            raise _hand_written("the dynamics", what)
        return _replayer(dyn.traced.graph)
    return dyn


def _separable_halves(dyn, what):
    """``(u, v)`` plain functions of a separable field (traced ones only)."""
    if dyn.plain is None:
        raise _hand_written("the separable dynamics (u, v)", what)
    return dyn.plain


def _state_order(problem, d):
    """``perm`` with ``X_tangent_system = X[perm]`` for ``X = (x, dx^1, ..., dx^d)``: the identity,
    except for separable dynamics, whose tangent system keeps its two halves apart,
    ``((x_a, dx_a^1, ...), (x_b, dx_b^1, ...))``, so that it is separable again."""
    from ._separable import SeparableDynamics

    n = problem.state_dim
    N = n * (1 + d)
    dyn = problem.dynamics
    if not isinstance(dyn, SeparableDynamics):
        return np.arange(N)
    na = dyn.x_dim
    blocks = np.arange(N).reshape(1 + d, n)
    return np.concatenate([blocks[:, :na].ravel(), blocks[:, na:].ravel()])


def _replayer(graph):
    from .ad import replay

    def fn(x, c, p, t):
        return replay(graph, [x, c, p, t])[0][0]

    return fn


def traceable_cost(label, cost, what="a tangent sweep"):
    """A cost as a plain ``fn(x, c, p, t)`` (None when absent)."""
    from ._problem import Cost, _arity

    if cost is None:
        return None
    if isinstance(cost, Cost):
        if cost.traced is None:
            raise _hand_written(label, what)
        return _replayer(cost.traced.graph)
    if _arity(cost) == 2:

        def two(x, c, p, t):
            return cost(x, p)

        return two
    return cost


def _split(v, size, d):
    """``v = (v0, dv^1, ..., dv^d)`` -> ``v0, [dv^j]`` (slices of traced arrays)."""
    return v[:size], [v[size + j * size : size + (j + 1) * size] for j in range(d)]


def _split_controls(C, m, d, mt):
    """``C = (c, dc^1, ..., dc^d)`` with ``c`` of size ``m`` and each ``dc^j`` of size ``mt <= m``
    (the tangents of the leading ``mt`` columns; the others, data columns, have none) -> ``c, [dc^j]``
    with each ``dc^j`` of size ``m`` (zeros appended)."""
    c = C[:m]
    dcs = [C[m + j * mt : m + (j + 1) * mt] for j in range(d)]
    if mt < m:
        pad = np.zeros(m - mt)
        dcs = [np.concatenate([dc, pad]) if mt else pad for dc in dcs]
    return c, dcs


def _jvps(fn, state, C, P, t, m, q, d, mt=None):
    """``(fn(x, c, p, t), [J_fn (dx^j, dc^j, dp^j) for j < d])`` (traced) with ``state = (x, [dx^j])``
    and the controls and parameters packed as ``(c, dc^1, ..)`` (see :func:`_split_controls`),
    ``(p, dp^1, ..)``."""
    from . import ad

    x, dxs = state
    c, dcs = _split_controls(C, m, d, m if mt is None else mt)
    p, dps = _split(P, q, d)
    value, tangents = None, []
    for j in range(d):
        v, dv = ad.jvp(fn, (x, c, p, t), (dxs[j], dcs[j], dps[j], 0.0))
        value = v if j == 0 else value
        tangents.append(dv)
    return value, tangents


def tangent_problem(
    problem, control_dim: int, param_dim: int, directions: int = 1, second_order: bool = True, tangent_controls=None
):
    """The tangent system of ``problem`` with ``directions`` directions (memoised): state
    ``(x, dx^1..dx^d)``, controls ``(c, dc^1..)``, parameters ``(p, dp^1..)``; its costs are the sums
    over the directions of the costs' directional derivatives (with ``d = 1``, ``J_w = dJ w``)."""
    from ._problem import ControlProblem, Dynamics

    dyn = problem.dynamics
    hand = type(dyn) is Dynamics and dyn.traced is None
    if hand and second_order:
        raise _hand_written("the dynamics", "A Hessian-vector product")
    if hand and dyn.jvp is None:
        raise ValueError(
            "a tangent sweep needs the JVP of the dynamics, and the dynamics is hand-written (numba f/vjp) without "
            "one: pass jvp=... to adjoint.Dynamics (jvp(x, c, p, t, dx, dc, dp, out) writes "
            "[d_x u] dx + [d_c u] dc + [d_p u] dp into out), or write the model as a plain numpy function "
            "fn(x, c, p, t) (traced by adjoint.ad)"
        )
    mt = control_dim if tangent_controls is None else tangent_controls
    key = ("tangent", control_dim, param_dim, directions, bool(hand), mt)
    got = problem._cache.derived.get(key)
    if got is not None:
        return got
    if hand:
        tp = _hand_written_tangent(problem, control_dim, param_dim, directions)
        problem._cache.derived[key] = tp
        return tp
    # constraints are solve_ocp's: the tangent system of the objective carries none
    from ._problem import Cost
    from ._separable import SeparableDynamics

    n, m, q, d = problem.state_dim, control_dim, param_dim, directions

    def cost_of(label, cost):
        if not second_order and isinstance(cost, Cost) and cost.traced is None:
            return None  # a forward sweep takes the value's tangents from the cost's gradient (_cost_jvps)
        return traceable_cost(label, cost)

    run = cost_of("the running cost", problem.running_cost)
    term = cost_of("the terminal cost", problem.terminal_cost)
    if run is None and term is None:

        def term(x, c, p, t):  # the tangent system needs a cost; its value is not used
            return x[0] * 0.0

    def jvp_field(f, size):
        def field(X, C, P, t):
            y, dys = _jvps(f, _split(X, size, d), C, P, t, m, q, d, mt)
            return np.concatenate([y, *dys])

        return field

    if isinstance(dyn, SeparableDynamics):
        u, v = _separable_halves(dyn, "a tangent sweep")
        na, nb = dyn.x_dim, dyn.y_dim
        dynamics = SeparableDynamics(
            jvp_field(u, nb),
            None,
            jvp_field(v, na),
            None,
            na * (1 + d),
            nb * (1 + d),
            m + d * mt,
            q * (1 + d),
            name=f"{dyn.name} (tangent)",
        )

        def state(X):  # the tangent system's state -> x, [dx^j] in the problem's layout
            xa, dxa = _split(X[: na * (1 + d)], na, d)
            xb, dxb = _split(X[na * (1 + d) :], nb, d)
            return np.concatenate([xa, xb]), [np.concatenate([dxa[j], dxb[j]]) for j in range(d)]

    else:
        dynamics = jvp_field(traceable_field(problem), n)

        def state(X):
            return _split(X, n, d)

    def directional(fn, mc, mct):
        if fn is None:
            return None

        def dcost(X, C, P, t):
            _, dvs = _jvps(fn, state(X), C, P, t, mc, q, d, mct)
            total = dvs[0]
            for dv in dvs[1:]:
                total = total + dv
            return total

        return dcost

    t1 = problem.t_span[1]
    tp = ControlProblem(
        dynamics,
        np.zeros(n * (1 + d)),
        (problem.t_span[0], t1),
        problem.steps,
        terminal_cost=directional(term, 0, 0),
        running_cost=directional(run, m, mt),
        control_dim=None if isinstance(dyn, SeparableDynamics) else m + d * mt,
        param_dim=None if isinstance(dyn, SeparableDynamics) else q * (1 + d),
        name=f"{problem.name} (tangent, {d} direction{'s' if d > 1 else ''})",
    )
    problem._cache.derived[key] = tp
    return tp


def _hand_written_tangent(problem, m, q, d):
    """The tangent system of a hand-written ``Dynamics`` with a ``jvp``, for forward sweeps only
    (its VJP is zero: it is never run backwards, ``hessp`` refuses hand-written models)."""
    from numba import njit as _njit

    from ._problem import ControlProblem, Cost, Dynamics

    dyn = problem.dynamics
    n = problem.state_dim
    f, jvp = dyn.f, dyn.jvp

    @_njit
    def field(X, C, P, t, out):  # pragma: no cover - compiled
        x, c, p = X[:n], C[:m], P[:q]
        f(x, c, p, t, out[:n])
        for j in range(d):
            a = n + j * n
            jvp(
                x, c, p, t, X[a : a + n], C[m + j * m : m + (j + 1) * m], P[q + j * q : q + (j + 1) * q], out[a : a + n]
            )

    @_njit
    def no_vjp(X, C, P, t, z, out_x, out_c, out_p):  # pragma: no cover - compiled
        out_x[:] = 0.0
        out_c[:] = 0.0
        out_p[:] = 0.0

    @_njit
    def zero(x, c, p, t):  # pragma: no cover - compiled
        return 0.0

    @_njit
    def zero_grad(x, c, p, t, out_x, out_c, out_p):  # pragma: no cover - compiled
        out_x[:] = 0.0
        out_c[:] = 0.0
        out_p[:] = 0.0

    tdyn = Dynamics(field, no_vjp, n * (1 + d), m * (1 + d), q * (1 + d), name=f"{dyn.name} (tangent)")
    return ControlProblem(
        tdyn,
        np.zeros(n * (1 + d)),
        problem.t_span,
        problem.steps,
        terminal_cost=Cost(zero, zero_grad, name="none"),
        name=f"{problem.name} (tangent, forward only)",
    )


def _hand_written_cost_jvp(cost, n, mc, q, d):
    """``(l, grad l . (dx^j, dc^j, dp^j))`` of a hand-written ``Cost`` from its gradient."""
    from numba import njit as _njit

    value, grad = cost.value, cost.grad

    @_njit
    def vec(X, C, P, t, out):  # pragma: no cover - compiled
        x, c, p = X[:n], C[:mc], P[:q]
        out[0] = value(x, c, p, t)
        gx, gc, gp = np.empty(n), np.empty(mc), np.empty(q)
        grad(x, c, p, t, gx, gc, gp)
        for j in range(d):
            acc = 0.0
            for i in range(n):
                acc += gx[i] * X[n + j * n + i]
            for i in range(mc):
                acc += gc[i] * C[mc + j * mc + i]
            for i in range(q):
                acc += gp[i] * P[q + j * q + i]
            out[1 + j] = acc

    return vec


def augment(p, C, x0, dP, dC, dX0):
    """The tangent system's inputs: ``p`` (q,), ``C`` (K, m), ``x0`` (n,) and directions ``dP``
    (q, d), ``dC`` (K, mt, d) (the leading ``mt <= m`` control columns), ``dX0`` (n, d). With
    ``mt = 0`` the controls are ``C`` itself (not copied)."""
    P = np.concatenate([p, dP.T.ravel()])
    K = C.shape[0]
    if dC.shape[1] == 0:
        Ca = C
    else:
        Ca = np.ascontiguousarray(np.concatenate([C, dC.transpose(0, 2, 1).reshape(K, -1)], axis=1))
    X0 = np.concatenate([x0, dX0.T.ravel()])
    return P, Ca, X0


# -- the value's tangents ----------------------------------------------------------------------------


@njit  # not cached: its argument `fn` is a compiled function of this process (a new type each run)
def _quadrature(fn, traj, C, P, t0, tau, K, r):  # pragma: no cover - compiled
    """``tau * sum_{k=K-1..0} fn(traj[k], C[k], P, t_k)`` (r values; descending k, as the gradient
    kernels sum the running cost)."""
    acc = np.zeros(r)
    out = np.empty(r)
    for k in range(K - 1, -1, -1):
        fn(traj[k], C[k], P, t0 + k * tau, out)
        for i in range(r):
            acc[i] += out[i]
    for i in range(r):
        acc[i] *= tau
    return acc


def _cost_jvps(problem, m, q, d, mt=None):
    """Compiled ``(l, dl^1..dl^d)(X, C, P, t)`` of the running and terminal costs (or None); the
    controls carry tangents of their leading ``mt`` columns (default all)."""
    from . import ad

    mt = m if mt is None else mt
    key = ("cost_jvps", m, q, d, mt)
    got = problem._cache.derived.get(key)
    if got is not None:
        return got
    n = problem.state_dim
    out = []
    from ._problem import Cost

    for label, cost, mc, mct in (
        ("the running cost", problem.running_cost, m, mt),
        ("the terminal cost", problem.terminal_cost, 0, 0),
    ):
        if isinstance(cost, Cost) and cost.traced is None:  # never with observations (mt == m)
            out.append(_hand_written_cost_jvp(cost, n, mc, q, d))
            continue
        fn = traceable_cost(label, cost)
        if fn is None:
            out.append(None)
            continue

        def vec(X, C, P, t, fn=fn, mc=mc, mct=mct):
            v, dvs = _jvps(fn, _split(X, n, d), C, P, t, mc, q, d, mct)
            return np.array([v, *dvs])

        out.append(ad.compile_vector(vec, n * (1 + d), mc + d * mct, q * (1 + d)).f)
    problem._cache.derived[key] = tuple(out)
    return tuple(out)


# -- solve_tangent -----------------------------------------------------------------------------------


@dataclass
class TangentResult:
    """What :func:`solve_tangent` returns.

    Attributes
    ----------
    value : float
        The objective ``J``.
    value_tangent : ndarray, shape (d,)
        ``dJ/dv . direction_j`` for each direction (equal to ``solve_adjoint``'s gradient times the
        direction, to rounding).
    times : ndarray, shape (T,)
        The grid times requested (all grid times by default).
    states : ndarray, shape (T, state_dim)
        The states ``x(t)`` there.
    state_tangents : ndarray, shape (T, state_dim, d)
        Their directional derivatives ``dx(t)/dv . direction_j``.
    seconds : float
        Wall time of the call.
    backend : str
        What ran the forward sweep of the tangent system.
    """

    value: float
    value_tangent: np.ndarray
    times: np.ndarray
    states: np.ndarray
    state_tangents: np.ndarray
    seconds: float
    backend: str


def _layout(problem, wrt, m, q):
    if wrt is None:
        wrt = tuple(b for b, s in zip(_BLOCKS, (q, problem.steps * m, problem.state_dim)) if s)
    if isinstance(wrt, str):
        wrt = (wrt,)
    wrt = tuple(wrt)
    for w in wrt:
        if w not in _BLOCKS:
            raise ValueError(f"`wrt` entries must be 'params', 'controls' or 'x0'; got {w!r}")
    if not wrt or len(set(wrt)) != len(wrt):
        raise ValueError(f"`wrt` must name each of 'params', 'controls', 'x0' at most once, at least one; got {wrt}")
    sizes = {"params": q, "controls": problem.steps * m, "x0": problem.state_dim}
    return wrt, sizes


def split_directions(problem, directions, wrt, m, q):
    """``directions`` (N, d) in the layout of ``wrt`` -> ``dP`` (q, d), ``dC`` (K, m, d), ``dX0`` (n, d)."""
    wrt, sizes = _layout(problem, wrt, m, q)
    N = sum(sizes[w] for w in wrt)
    D = np.asarray(directions, dtype=np.float64)
    if D.ndim == 1:
        D = D.reshape(-1, 1)
    if D.ndim != 2 or D.shape[0] != N or D.shape[1] < 1:
        raise ValueError(
            f"`directions` must have shape (n_inputs, d) with n_inputs = {N} (wrt={wrt}: "
            + ", ".join(f"{w} {sizes[w]}" for w in wrt)
            + f"); got shape {np.shape(directions)}"
        )
    if not np.all(np.isfinite(D)):
        raise ValueError("`directions` must be finite")
    d = D.shape[1]
    K, n = problem.steps, problem.state_dim
    out = {"params": np.zeros((q, d)), "controls": np.zeros((K * m, d)), "x0": np.zeros((n, d))}
    i = 0
    for w in wrt:
        out[w] = D[i : i + sizes[w]]
        i += sizes[w]
    return out["params"], out["controls"].reshape(K, m, d), out["x0"], d


def _grid_indices(problem, times):
    K = problem.steps
    if times is None:
        return np.arange(K + 1), problem.times
    from ._observations import Observations

    t = np.atleast_1d(np.asarray(times, dtype=np.float64))
    if t.ndim != 1:
        raise ValueError(f"`times` must be a 1-D array of grid times; got shape {t.shape}")
    idx = Observations(t, np.zeros(t.size)).indices(*problem.t_span, K)
    # in the caller's order
    order = np.argsort(t, kind="stable")
    out = np.empty_like(idx)
    out[order] = idx
    return out, problem.times[out]


def _tangent_sweep(problem, params, controls, x0, method, backend, dP, dC, dX0, d, m, q):
    """One forward sweep of the tangent system: ``(trajectory (K+1, n (1 + d)) in the layout
    (x, dx^1, ..), P, C, base problem, its control_dim, backend name)``."""
    from ._observations import expand_observed
    from ._solve import _forward
    from ._validate import _EULER, _prepare

    method = _EULER if method is None else method
    base, params, controls = expand_observed(problem, params, controls, m)
    mb = m if base is problem else m + 2 * problem.observations.observed_dim
    # the base inputs, validated as solve_adjoint validates them
    _, p, C, xa = _prepare(base, params, controls, x0, method, "auto" if backend is None else backend)
    mt = m if np.any(dC) else 0  # no control directions: the tangent system carries no dc columns
    tp = tangent_problem(base, mb, q, d, second_order=False, tangent_controls=mt)
    P, Ca, X0 = augment(p, C, xa, dP, dC[:, :mt], dX0)
    perm = _state_order(base, d)
    _, traj_t, be = _forward(tp, P, Ca, X0[perm], method, backend, True, with_backend=True)
    if perm.size and np.array_equal(perm, np.arange(perm.size)):
        return traj_t, P, Ca, base, mb, mt, be
    traj = np.empty_like(traj_t)
    traj[:, perm] = traj_t
    return traj, P, Ca, base, mb, mt, be


def solve_tangent(
    problem,
    *,
    directions,
    wrt=None,
    params=None,
    controls=None,
    x0=None,
    method=None,
    times=None,
    backend=None,
) -> TangentResult:
    """Forward (tangent-linear) sensitivities: the directional derivatives of the objective and of
    the states, several directions in one forward sweep.

    Parameters
    ----------
    problem : ControlProblem
        Its dynamics and costs must be plain numpy functions (or built by ``adjoint.vector_field``
        / ``adjoint.cost``): the JVPs come from the tracing AD.
    directions : array_like, shape (n_inputs, d) or (n_inputs,)
        ``d`` directions in the space of the inputs named by ``wrt``, laid out as in
        :func:`adjoint.objective`: params, controls (flattened row-major), x0.
    wrt : str or tuple of {"params", "controls", "x0"}, optional
        The inputs the directions refer to. Default: every block the problem has.
    params, controls, x0, method, backend :
        As for :func:`adjoint.solve_adjoint`.
    times : array_like, optional
        Grid times at which to return the states and their tangents (default: every grid time);
        a time off the grid is an error that names the nearest grid points.

    Returns
    -------
    TangentResult

    Notes
    -----
    The sweep integrates the variational system beside the state with the same method (see
    :mod:`adjoint._tangent`): the tangents are those of the discrete scheme, exact to rounding.
    Its cost grows with ``d`` (forward mode); a gradient (``d`` = all inputs) is cheaper by
    :func:`adjoint.solve_adjoint` (reverse mode) unless the inputs are few.

    Examples
    --------
    >>> import numpy as np, adjoint
    >>> prob = adjoint.ControlProblem(lambda x, c, p, t: -p[0] * x, [1.0], (0.0, 1.0), 100,
    ...                               terminal_cost=lambda x, p: x[0], param_dim=1)
    >>> tan = adjoint.solve_tangent(prob, params=[0.5], directions=[[1.0]], wrt="params")
    >>> grad = adjoint.solve_adjoint(prob, params=[0.5]).grad.params
    >>> bool(abs(tan.value_tangent[0] - grad[0]) < 1e-14)
    True
    """
    from ._validate import resolve_dims

    start = time.perf_counter()
    m, q = resolve_dims(problem, params, controls)
    dP, dC, dX0, d = split_directions(problem, directions, wrt, m, q)
    traj, P, Ca, base, mb, mt, be = _tangent_sweep(problem, params, controls, x0, method, backend, dP, dC, dX0, d, m, q)
    idx, ts = _grid_indices(problem, times)
    n, K = problem.state_dim, problem.steps
    run, term = _cost_jvps(base, mb, q, d, mt)
    vals = np.zeros(1 + d)
    if run is not None:
        vals += _quadrature(run, traj, Ca, P, problem.t_span[0], problem.tau, K, 1 + d)
    if term is not None:
        out = np.empty(1 + d)
        term(traj[K], np.zeros(0), P, problem.t_span[1], out)
        vals = out + vals
    sel = traj[idx]
    return TangentResult(
        value=float(vals[0]),
        value_tangent=vals[1:].copy(),
        times=ts,
        states=sel[:, :n].copy(),
        state_tangents=sel[:, n:].reshape(len(idx), d, n).transpose(0, 2, 1).copy(),
        seconds=time.perf_counter() - start,
        backend=be,
    )


# -- Hessian-vector products -------------------------------------------------------------------------


def hessp(problem, *, params, controls, x0, dparams, dcontrols, dx0, method=None, checkpoint="auto", backend=None):
    """``(H w, grad, value, result)`` of the problem's objective at ``(params, controls, x0)`` for the
    direction ``w = (dparams, dcontrols, dx0)``: one adjoint sweep of the tangent system (see the
    module docstring). ``H w`` and ``grad`` are dicts with keys params, controls, x0 (``grad["controls"]``
    is None when the direction has no control part: the tangent system then carries no control
    tangents, which is cheaper)."""
    from ._solve import solve_adjoint
    from ._validate import _EULER, _prepare, resolve_dims

    method = _EULER if method is None else method
    m, q = resolve_dims(problem, params, controls)
    from ._observations import expand_observed

    base, params, controls = expand_observed(problem, params, controls, m)
    mb = m if base is problem else m + 2 * problem.observations.observed_dim
    _, p, C, xa = _prepare(base, params, controls, x0, method, "auto" if backend is None else backend)
    K, n = problem.steps, problem.state_dim
    dC = np.asarray(dcontrols, dtype=np.float64).reshape(K, m, 1)
    dP = np.asarray(dparams, dtype=np.float64).reshape(q, 1)
    dX = np.asarray(dx0, dtype=np.float64).reshape(n, 1)
    mt = m if np.any(dC) else 0  # no control direction: no dc columns (then grad["controls"] is None)
    dC = dC[:, :mt]
    tp = tangent_problem(base, mb, q, 1, tangent_controls=mt)
    P, Ca, X0 = augment(p, C, xa, dP, dC, dX)
    perm = _state_order(base, 1)
    res = solve_adjoint(tp, params=P, controls=Ca, x0=X0[perm], method=method, checkpoint=checkpoint, backend=backend)
    g = res.grad
    gx = np.empty_like(g.x0)
    gx[perm] = g.x0
    hw = {"params": g.params[:q], "controls": g.controls[:, :m], "x0": gx[:n]}
    grad = {"params": g.params[q:], "controls": g.controls[:, mb : mb + m] if mt else None, "x0": gx[n:]}
    return hw, grad, res.value, res
