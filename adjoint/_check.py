"""Gradient checks against central differences and the complex step."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np

from . import _kernels as kern
from ._optimize import Objective
from .integrators import Euler
from .integrators._steps import array_steps

__all__ = ["check_gradient", "GradientCheck"]


@dataclass(frozen=True)
class GradientCheck:
    """Result of :func:`check_gradient`.

    Attributes
    ----------
    max_rel_error : float
        Worst relative error over the directions, against the most accurate reference available
        (complex step when it ran, else central differences).
    adjoint : ndarray, shape (directions,)
        Directional derivatives ``<grad, d>`` from the adjoint gradient.
    central : ndarray, shape (directions,)
        Central differences ``(J(v + h d) - J(v - h d)) / 2h``.
    complex_step : ndarray or None
        ``Im J(v + i h d) / h`` (``h = 1e-20``) when the user's functions accept complex input.
    central_rel_error, complex_rel_error : float or None
    reference : str
        The reference ``max_rel_error`` was measured against: ``"complex step"`` (compiled
        complex-valued user functions, or the traced graphs evaluated in complex arithmetic) or
        ``"central differences"`` (when the complex step was not available; see
        ``complex_step_error``).
    expected_accuracy : float
        The relative error a correct gradient shows against that reference: about ``1e-13`` for the
        complex step (no subtractive cancellation), about ``1e-6`` for central differences (their
        truncation and rounding errors).
    method : str
        The method whose discrete gradient was checked.
    complex_step_error : str or None
        Why the complex step was not available.
    """

    max_rel_error: float
    adjoint: np.ndarray
    central: np.ndarray
    complex_step: np.ndarray | None
    central_rel_error: float
    complex_rel_error: float | None
    complex_step_error: str | None
    reference: str = "central differences"
    expected_accuracy: float = 1e-6
    method: str = "Euler()"

    def __str__(self):
        cs = (
            ("n/a (" + (self.complex_step_error or "") + ")")
            if self.complex_rel_error is None
            else f"{self.complex_rel_error:.2e}"
        )
        return (
            f"GradientCheck(max_rel_error={self.max_rel_error:.2e} against {self.reference} (a correct gradient: "
            f"~{self.expected_accuracy:.0e}), central={self.central_rel_error:.2e}, complex_step={cs}, "
            f"method={self.method})"
        )


_EULER = Euler()  # the default method (one instance: its cache_key is computed once)


def _rel(a, b):
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-300)
    return float(np.max(np.abs(a - b) / scale))


def _warn_if_solved_with_another_method(problem) -> None:
    cache = getattr(problem, "_cache", None)
    used = {run[0] for comp in getattr(cache, "compiled", {}).values() for run in getattr(comp, "runs", ())}
    if used and _EULER.cache_key not in used:
        warnings.warn(
            "check_gradient checks the explicit Euler gradient (method=None), but this problem was solved "
            "with another method only: pass method=... (e.g. adjoint.RK4()) to check the gradient you optimise",
            UserWarning,
            stacklevel=3,
        )


def check_gradient(
    problem,
    *,
    wrt=("params", "controls", "x0"),
    params=None,
    controls=None,
    x0=None,
    method=None,
    directions=4,
    h=None,
    seed=0,
    complex_step=True,
) -> GradientCheck:
    """Compare the adjoint gradient with finite differences in random directions.

    A tool for users with hand-written derivatives: a relative error near 1e-8 (central
    differences) or 1e-13 (complex step) means the ``vjp`` and cost gradients are right.

    Parameters
    ----------
    problem : ControlProblem
    wrt : str or tuple of str
        Blocks to check (those of size 0 are skipped).
    params, controls, x0 : array_like
        The point at which to check.
    method : Method, optional
        The method whose discrete gradient is checked. Default ``adjoint.Euler()``; when the
        problem was solved (in this process) only with other methods, a warning says so: pass the
        method you optimise with.
    directions : int
        Number of random unit directions.
    h : float, optional
        Central-difference step (default ``1e-6 * max(1, |v|)``).
    complex_step : bool
        Also try the complex step: hand-written numba functions are compiled for complex input
        (which they must support), traced problems are evaluated from their graphs in complex
        arithmetic (up to ``MAX_TRACED_COMPLEX_EVALUATIONS`` field evaluations). ``reference`` of the
        result says which reference ``max_rel_error`` used, ``expected_accuracy`` what a correct
        gradient shows against it.

    Returns
    -------
    GradientCheck

    Examples
    --------
    >>> import adjoint
    >>> from adjoint.problems import lotka_volterra as lv
    >>> chk = adjoint.check_gradient(lv.make_problem(steps=200), params=lv.initial_guess())
    >>> chk.max_rel_error < 1e-9
    True
    """
    if isinstance(directions, bool) or not isinstance(directions, (int, np.integer)) or directions < 1:
        raise ValueError(f"`directions` must be an integer >= 1 (the number of random directions); got {directions!r}")
    if h is not None:
        try:
            h = float(h)
        except (TypeError, ValueError):
            raise TypeError(f"`h` must be a positive float (the finite-difference step) or None; got {h!r}") from None
        if not (np.isfinite(h) and h > 0.0):
            raise ValueError(
                f"`h` must be a positive finite float (the finite-difference step), or None for "
                f"1e-6 * max(1, |v|); got {h!r}"
            )
    if method is None:
        _warn_if_solved_with_another_method(problem)
    method = _EULER if method is None else method
    if isinstance(wrt, str):
        wrt = (wrt,)
    probe = Objective(problem, tuple(wrt), params=params, controls=controls, x0=x0, method=method)
    sizes, _ = probe._sizes()
    wrt = tuple(w for w in wrt if sizes[w] > 0)
    if not wrt:
        raise ValueError("nothing to check: every block in `wrt` has size 0")
    fun = Objective(problem, wrt, params=params, controls=controls, x0=x0, method=method)
    v = fun.initial()
    _, g = fun(v)
    rng = np.random.default_rng(seed)
    D = rng.standard_normal((int(directions), v.size))
    D /= np.linalg.norm(D, axis=1, keepdims=True)
    hh = 1e-6 * max(1.0, float(np.linalg.norm(v))) if h is None else float(h)
    adj = D @ g
    central = np.array([(fun.value(v + hh * d) - fun.value(v - hh * d)) / (2 * hh) for d in D])
    cs, cs_err, cs_rel = None, None, None
    if complex_step:
        try:
            cs = np.array([_complex_value(fun, v + 1e-20j * d).imag / 1e-20 for d in D])
            cs_rel = _rel(adj, cs)
        except Exception as exc:  # user functions written for float64 only
            cs, cs_err = None, f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    cen_rel = _rel(adj, central)
    return GradientCheck(
        max_rel_error=cs_rel if cs_rel is not None else cen_rel,
        adjoint=adj,
        central=central,
        complex_step=cs,
        central_rel_error=cen_rel,
        complex_rel_error=cs_rel,
        complex_step_error=cs_err,
        reference="complex step" if cs_rel is not None else "central differences",
        expected_accuracy=1e-13 if cs_rel is not None else 1e-6,
        method=repr(method),
    )


def _complex_value(fun: Objective, v: np.ndarray) -> complex:
    """The objective at a complex point, by the forward kernel compiled for complex arrays."""
    from ._solve import _materialize

    prob = fun.problem
    sizes, cdim = fun._sizes()
    out, i = {}, 0
    for w in fun.wrt:
        out[w] = v[i : i + sizes[w]]
        i += sizes[w]

    def block(name, shape):
        val = out[name] if name in out else fun._fixed[name]
        if val is None:
            val = np.zeros(shape)
        return np.ascontiguousarray(np.asarray(val, dtype=np.complex128).reshape(shape))

    p = block("params", (sizes["params"],))
    C = block("controls", (prob.steps, cdim))
    x0 = block("x0", (prob.state_dim,))
    comp = _materialize(prob, cdim, sizes["params"])
    method = fun.method
    A, b, cn = method.tableau_arrays()
    if getattr(comp.dynamics, "traced", None) is not None and method.kind != kern.KIND_LEAPFROG:
        return _traced_complex_value(prob, comp, method, x0, C, p)
    traj = np.empty((1, prob.state_dim), dtype=np.complex128)
    val, _, status = kern.forward(
        array_steps(method)[0],
        comp.f,
        comp.g,
        comp.rv,
        comp.has_run,
        comp.tv,
        comp.has_term,
        x0,
        C,
        p,
        prob.t_span[0],
        prob.tau,
        prob.steps,
        prob.t_span[1],
        A,
        b,
        cn,
        traj,
        False,
    )
    if status:
        raise FloatingPointError(f"complex forward sweep became non-finite at step {status - 1}")
    return complex(val)


#: the interpreted complex sweep of a traced problem evaluates the graphs in Python (tens of
#: microseconds per evaluation): above this many field evaluations per direction it is not run
MAX_TRACED_COMPLEX_EVALUATIONS = 200_000


def _complex_callable(obj, graph_attr, compiled):
    """A function of (x, c, p, t) in complex arithmetic: the traced graph when there is one, else the
    user's compiled function (numba compiles it for complex arrays, or raises)."""
    traced = getattr(obj, "traced", None)
    graph = getattr(traced, graph_attr, None) if traced is not None else None
    if graph is not None:
        return lambda x, c, p, t: graph.evaluate(x, c, p, t, dtype=complex)[0]
    return compiled


def _traced_complex_value(prob, comp, method, x0, C, p) -> complex:
    """The objective of a traced problem at a complex point: the engine's forward sweep and step
    (``kern.forward`` and the generated step, run as Python) with the traced field and costs
    evaluated in complex arithmetic, so traced problems get the complex step (about 1e-15) like
    hand-written ones, without a second copy of the step arithmetic."""
    K, tau, (t0, t1) = prob.steps, prob.tau, prob.t_span
    A, b, cn = method.tableau_arrays()
    stages = b.shape[0] if method.kind == kern.KIND_RK else 1
    if K * stages > MAX_TRACED_COMPLEX_EVALUATIONS:
        raise ValueError(
            f"{K} steps x {stages} stages: too many for the interpreted complex sweep of a traced problem "
            f"(at most {MAX_TRACED_COMPLEX_EVALUATIONS} field evaluations); check a problem with fewer steps"
        )
    graph = comp.dynamics.traced.graph

    def f(x, c, pp, t, out):
        out[:] = graph.evaluate(x, c, pp, t, dtype=complex)[0]

    def scalar(fn):
        return lambda x, c, pp, t: complex(np.asarray(fn(x, c, pp, t)).reshape(()))

    rv = scalar(_complex_callable(comp.running, "graph", comp.rv)) if comp.has_run else None
    tv = scalar(_complex_callable(comp.terminal, "graph", comp.tv)) if comp.has_term else None
    # the engine's own forward sweep and step, run by Python (their py_func) on these Python callables
    val, _, status = kern.forward.py_func(
        array_steps(method)[0].py_func,
        f,
        f,
        rv,
        comp.has_run,
        tv,
        comp.has_term,
        x0.astype(complex),
        C.astype(complex),
        p.astype(complex),
        t0,
        tau,
        K,
        t1,
        A,
        b,
        cn,
        np.empty((1, x0.shape[0]), dtype=complex),
        False,
    )
    if status:
        raise FloatingPointError(f"complex forward sweep became non-finite at step {status - 1}")
    return complex(val)
