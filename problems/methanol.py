"""Methanol to hydrocarbons (COPS 3.0 #13): fit 5 rate constants to 17 measurements with least_squares.

Model (Maria 1989; Tjoa & Biegler 1991), state ``y = (y1, y2, y3)`` = mass fractions of three
lumped species, rate constants ``theta = (theta1, ..., theta5) >= 0``, ``t`` in ``[0, 1.122]``::

    d   = (theta2 + theta5) * y1 + y2
    y1' = -(2 theta2 - theta1 y2 / d + theta3 + theta4) * y1
    y2' =  theta1 y1 (theta2 y1 - y2) / d + theta3 y1
    y3' =  theta1 y1 (y2 + theta5 y1) / d + theta4 y1,          y(0) = (1, 0, 0)  (fixed)

Data: problem 13 of COPS 3.0 (E. D. Dolan, J. J. More, T. S. Munson, "Benchmarking Optimization
Software with COPS 3.0", ANL/MCS-TM-273, 2004), from Tjoa & Biegler, Ind. Eng. Chem. Res. 30
(1991) 376-385 (and Maria, Can. J. Chem. Eng. 67 (1989) 825): ``DATA[j] = (y1, y2, y3)`` at
``TIMES[j]``, 17 times including ``t = 0``; identical in the GAMS, CUTEst SIF and JuMP versions.

Objective (COPS): the plain sum of squares ``f(theta) = sum_j |y(TIMES[j]; theta) - DATA[j]|^2``,
bounds ``theta >= 0``, start ``THETA0 = (1, 1, 1, 1, 1)``. Published optimum ``f* = 9.02228e-3``
(COPS collocation, nh = 50 ... 400; ``PUBLISHED_OPTIMUM``). The optimum has ``theta5 = 0``: the
bound is active. The objective of the ``adjoint.ControlProblem`` with
``observations=adjoint.Observations(TIMES, DATA)`` and least_squares' ``cost`` are ``1/2 f``; the
summaries report ``2 * cost``. ``residuals()`` gives the residuals and their exact Jacobian (one
tangent sweep with 5 directions).

Discretisation: classical RK4 (``adjoint.RK4()``) on a uniform grid. The observation times are
multiples of 0.001 = 1.122 / 1122 (0.065 and 0.123 have no larger common divisor with the others),
so ``steps`` must be a multiple of 1122; the default is ``DEFAULT_STEPS = 1122`` (tau = 0.001).
Convergence in ``steps`` of ``f`` at the optimum (relative difference to 71808 steps): 1122:
-3.8e-12, 2244: -2.4e-13, 4488: -1.2e-14, then rounding level. The smallest admissible grid is
thus already exact to 12 digits.

Result (``solve()``: ``least_squares(res, THETA0, jac=res.jac, bounds=(0, inf))``, method
``trf``, default tolerances, 1122 steps): ``theta* = (1.775182, 2.167983, 1.857559, 1.802447,
7.9e-19)``, ``f* = 9.0222899e-3`` (relative difference to the published 9.02228e-3: +1.1e-6, the
rounding of the published value; an independent Radau integration gives 9.02228985e-3), 12
residual and 11 Jacobian evaluations, 0.02-0.04 s after compilation.

Exact Jacobian vs finite differences (``compare_fd()``): ``jac="2-point"`` takes the same 12/11
iterations to the same ``f*`` (to 11 digits), with 67 residual sweeps instead of 12 residual and
11 tangent sweeps (5 directions); the wall times are about equal here (a tangent sweep with 5
directions costs about as much as 5 residual sweeps).
"""

from __future__ import annotations

import numpy as np

import adjoint

from . import _cops

NAME = "methanol"

#: observation times (COPS ``tau``); the last one is the final time
TIMES = np.array(
    [0.0, 0.050, 0.065, 0.080, 0.123, 0.233, 0.273, 0.354, 0.397, 0.418, 0.502,
     0.553, 0.681, 0.750, 0.916, 0.937, 1.122]
)  # fmt: skip
#: observed (y1, y2, y3) at TIMES (COPS ``z``)
DATA = np.array(
    [[1.0000, 0.0000, 0.0000], [0.7085, 0.1621, 0.0811], [0.5971, 0.1855, 0.0965],
     [0.5537, 0.1989, 0.1198], [0.3684, 0.2845, 0.1535], [0.1712, 0.3491, 0.2097],
     [0.1198, 0.3098, 0.2628], [0.0747, 0.3576, 0.2467], [0.0529, 0.3347, 0.2884],
     [0.0415, 0.3388, 0.2757], [0.0261, 0.3557, 0.3167], [0.0208, 0.3483, 0.2954],
     [0.0085, 0.3836, 0.2950], [0.0053, 0.3611, 0.2937], [0.0019, 0.3609, 0.2831],
     [0.0018, 0.3485, 0.2846], [0.0006, 0.3698, 0.2899]]
)  # fmt: skip
X0 = np.array([1.0, 0.0, 0.0])
T_END = 1.122
#: COPS starting point
THETA0 = np.ones(5)
#: COPS 3.0 optimal sum of squares (no factor 1/2)
PUBLISHED_OPTIMUM = 9.02228e-3
#: theta >= 0 (no upper bounds), as ``least_squares(bounds=...)``
BOUNDS = _cops.BOUNDS
#: every observation time is a multiple of T_END / GRID_UNIT
GRID_UNIT = 1122
DEFAULT_STEPS = 1122
STATE_LABELS = ("y1", "y2", "y3")


def f(x, c, p, t):
    """The right-hand side (plain numpy, traced by adjoint)."""
    y1, y2 = x[0], x[1]
    d = (p[1] + p[4]) * y1 + y2
    return np.array(
        [
            -(2.0 * p[1] - p[0] * y2 / d + p[2] + p[3]) * y1,
            p[0] * y1 * (p[1] * y1 - y2) / d + p[2] * y1,
            p[0] * y1 * (y2 + p[4] * y1) / d + p[3] * y1,
        ]
    )


_COPS = _cops.Cops(NAME, f, X0, T_END, TIMES, DATA, THETA0, PUBLISHED_OPTIMUM, GRID_UNIT, DEFAULT_STEPS, STATE_LABELS)


def make_problem(steps: int = DEFAULT_STEPS) -> adjoint.ControlProblem:
    """The COPS problem on ``steps`` steps (a multiple of 1122) over ``[0, 1.122]``; unknowns: params."""
    return _COPS.make_problem(steps)


def residuals(steps: int = DEFAULT_STEPS, method=None) -> adjoint.Residuals:
    """``r(theta) = y(TIMES; theta) - DATA`` (flattened; ``f = |r|^2``) with ``.jac``; RK4 by default."""
    return _COPS.residuals(steps, method)


def solve(output_dir="out", steps=None, method=None, max_iter=100, verbose=True):
    """Fit theta with ``least_squares(res, THETA0, jac=res.jac, bounds=(0, inf))`` from the COPS
    start; print the iterations, save ``methanol.png`` (data and fit, residuals, objective history)
    and ``methanol.json`` into ``output_dir``. ``max_iter``: least_squares' ``max_nfev``.
    ``summary["objective"]`` is the COPS sum of squares ``2 * cost``."""
    return _COPS.solve(output_dir, steps, method, max_iter, verbose)


def compare_fd(steps=None, repeats=3, verbose=True, theta0=None):
    """least_squares with the exact Jacobian vs finite differences (``jac="2-point"``) from THETA0
    (or ``theta0``): iterations, wall time (median of ``repeats`` after a warm-up run), final sum of
    squares. Prints a table (verbose) and returns ``{label: {...}}``."""
    return _COPS.compare_fd(steps, repeats, verbose, theta0)
