"""Gradient checks against central differences and the complex step."""

from __future__ import annotations

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

    def __str__(self):
        cs = (
            ("n/a (" + (self.complex_step_error or "") + ")")
            if self.complex_rel_error is None
            else f"{self.complex_rel_error:.2e}"
        )
        return (
            f"GradientCheck(max_rel_error={self.max_rel_error:.2e}, central={self.central_rel_error:.2e}, "
            f"complex_step={cs})"
        )


_EULER = Euler()  # the default method (one instance: its cache_key is computed once)


def _rel(a, b):
    scale = np.maximum(np.maximum(np.abs(a), np.abs(b)), 1e-300)
    return float(np.max(np.abs(a - b) / scale))


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
    directions : int
        Number of random unit directions.
    h : float, optional
        Central-difference step (default ``1e-6 * max(1, |v|)``).
    complex_step : bool
        Also try the complex step (needs vector field and costs written for complex input).

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
        A,
        b,
        cn,
        traj,
        False,
    )
    if status:
        raise FloatingPointError(f"complex forward sweep became non-finite at step {status - 1}")
    return complex(val)
