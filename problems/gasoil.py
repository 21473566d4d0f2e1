"""Catalytic cracking of gas oil (COPS 3.0 #12): fit 3 rate constants to 21 measurements with least_squares.

Model (Tjoa & Biegler 1991), state ``y = (y1, y2)`` = mass fractions of gas oil and gasoline,
rate constants ``theta = (theta1, theta2, theta3) >= 0``, ``t`` in ``[0, 0.95]``::

    y1' = -(theta1 + theta3) * y1^2
    y2' =  theta1 * y1^2 - theta2 * y2,          y(0) = (1, 0)  (fixed)

Data: problem 12 of COPS 3.0 (E. D. Dolan, J. J. More, T. S. Munson, "Benchmarking Optimization
Software with COPS 3.0", ANL/MCS-TM-273, 2004), from Tjoa & Biegler, Ind. Eng. Chem. Res. 30
(1991) 376-385: ``DATA[j] = (y1, y2)`` measured at ``TIMES[j]``, 21 times including ``t = 0``.
The numbers agree digit by digit in the AMPL, GAMS, CUTEst SIF and JuMP (COPSBenchmark.jl,
OptimizationProblems.jl) versions of the problem.

Objective (COPS): the plain sum of squares ``f(theta) = sum_j |y(TIMES[j]; theta) - DATA[j]|^2``
over both components, bounds ``theta >= 0``, start ``THETA0 = (0, 0, 0)``. Published optimum
``f* = 5.23659e-3`` (COPS collocation with nh = 100, 200, 400 elements; ``PUBLISHED_OPTIMUM``).
Here the problem is ``adjoint.ControlProblem(..., observations=adjoint.Observations(TIMES, DATA))``,
whose objective is ``1/2 f``; ``residuals()`` gives the residual vector and its exact Jacobian
(one tangent sweep with 3 directions) for ``scipy.optimize.least_squares``, whose ``cost`` is
also ``1/2 f``: the summaries report ``2 * cost``.

Discretisation: classical RK4 (``adjoint.RK4()``) on a uniform grid. The observation times are
multiples of 0.025 = 0.95 / 38, so ``steps`` must be a multiple of 38 (every datum is then a grid
point). The default ``DEFAULT_STEPS = 760`` (tau = 1/800). Convergence in ``steps`` of ``f`` at
the optimum (relative difference to 2432 steps): 38: -7.1e-4, 76: -6.6e-5, 152: -4.4e-6,
304: -2.8e-7, 608: -1.7e-8, 1216: -1.0e-9 (fourth order); at 760 steps the discretisation error
of ``f*`` is about 7e-9 relative, far below the 1e-4 to which COPS quotes it.

Result (``solve()``: ``least_squares(res, THETA0, jac=res.jac, bounds=(0, inf))``, method
``trf``, default tolerances, 760 steps): ``theta* = (11.846738, 8.344519, 1.001441)``,
``f* = 5.2365958e-3`` (relative difference to the published 5.23659e-3: +1.1e-6, the rounding of
the published value; an independent Radau integration gives 5.23659583e-3), 28 residual and 28
Jacobian evaluations, 0.03-0.05 s after compilation. The start lies on the bound: ``trf`` moves it
1e-10 inside and starts with a trust radius ``|x0 / sqrt(v)|`` of about 1e-5, which takes ~15
iterations of doubling before the fast convergence; from ``theta = (1, 1, 1)`` it takes 11.

Exact Jacobian vs finite differences (``compare_fd()``): from the COPS start, ``jac="2-point"``
stops after 2 evaluations at ``2 cost = 12.147`` (the starting value): at ``theta ~ 1e-10`` the
gradient entry of ``theta2`` is +9.06e-12 (complex step and the tangent sweep agree), below the
finite-difference noise, which gives -4.9e-12; with the wrong sign the Coleman-Li scaling of the
bound gives an initial trust radius of 1.7e-10, and the first step fails the ``ftol`` test. From
``theta = (1, 1, 1)`` both reach the optimum in 11 iterations (44 residual sweeps for finite
differences, 11 residual + 11 tangent sweeps for the exact Jacobian) in about the same time.
"""

from __future__ import annotations

import numpy as np

import adjoint

from . import _cops

NAME = "gasoil"

#: observation times (COPS ``tau``); the last one is the final time
TIMES = np.array(
    [0.0, 0.025, 0.05, 0.075, 0.10, 0.125, 0.150, 0.175, 0.20, 0.225, 0.250,
     0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.65, 0.75, 0.85, 0.95]
)  # fmt: skip
#: observed (y1, y2) at TIMES (COPS ``z``)
DATA = np.array(
    [[1.0000, 0.0000], [0.8105, 0.2000], [0.6208, 0.2886], [0.5258, 0.3010], [0.4345, 0.3215],
     [0.3903, 0.3123], [0.3342, 0.2716], [0.3034, 0.2551], [0.2735, 0.2258], [0.2405, 0.1959],
     [0.2283, 0.1789], [0.2071, 0.1457], [0.1669, 0.1198], [0.1530, 0.0909], [0.1339, 0.0719],
     [0.1265, 0.0561], [0.1200, 0.0460], [0.0990, 0.0280], [0.0870, 0.0190], [0.0770, 0.0140],
     [0.0690, 0.0100]]
)  # fmt: skip
X0 = np.array([1.0, 0.0])
T_END = 0.95
#: COPS starting point
THETA0 = np.zeros(3)
#: COPS 3.0 optimal sum of squares (no factor 1/2)
PUBLISHED_OPTIMUM = 5.23659e-3
#: theta >= 0 (no upper bounds), as ``least_squares(bounds=...)``
BOUNDS = _cops.BOUNDS
#: every observation time is a multiple of T_END / GRID_UNIT
GRID_UNIT = 38
DEFAULT_STEPS = 760
STATE_LABELS = ("y1 (gas oil)", "y2 (gasoline)")


def f(x, c, p, t):
    """The right-hand side (plain numpy, traced by adjoint)."""
    return np.array([-(p[0] + p[2]) * x[0] ** 2, p[0] * x[0] ** 2 - p[1] * x[1]])


_COPS = _cops.Cops(NAME, f, X0, T_END, TIMES, DATA, THETA0, PUBLISHED_OPTIMUM, GRID_UNIT, DEFAULT_STEPS, STATE_LABELS)


def make_problem(steps: int = DEFAULT_STEPS) -> adjoint.ControlProblem:
    """The COPS problem on ``steps`` steps (a multiple of 38) over ``[0, 0.95]``; unknowns: params."""
    return _COPS.make_problem(steps)


def residuals(steps: int = DEFAULT_STEPS, method=None) -> adjoint.Residuals:
    """``r(theta) = y(TIMES; theta) - DATA`` (flattened; ``f = |r|^2``) with ``.jac``; RK4 by default."""
    return _COPS.residuals(steps, method)


def solve(output_dir="out", steps=None, method=None, max_iter=100, verbose=True):
    """Fit theta with ``least_squares(res, THETA0, jac=res.jac, bounds=(0, inf))`` from the COPS
    start; print the iterations, save ``gasoil.png`` (data and fit, residuals, objective history)
    and ``gasoil.json`` into ``output_dir``. ``max_iter``: least_squares' ``max_nfev``.
    ``summary["objective"]`` is the COPS sum of squares ``2 * cost``."""
    return _COPS.solve(output_dir, steps, method, max_iter, verbose)


def compare_fd(steps=None, repeats=3, verbose=True, theta0=None):
    """least_squares with the exact Jacobian vs finite differences (``jac="2-point"``) from THETA0
    (or ``theta0``): iterations, wall time (median of ``repeats`` after a warm-up run), final sum of
    squares. Prints a table (verbose) and returns ``{label: {...}}``."""
    return _COPS.compare_fd(steps, repeats, verbose, theta0)
