"""Ready problems with known answers, each in its own module (installed as ``adjoint.problems``).

Every module has a docstring describing the problem, a ``make_problem(...)`` function (or the data
of its argmin / transport problem) and ``solve(output_dir, ...)``, which optimises it, prints its
progress, writes ``<name>.png`` and ``<name>.json`` into ``output_dir`` and returns a
:class:`ProblemResult` (see :mod:`adjoint.cli`, whose registry ``PROBLEMS`` is what
``python -m adjoint list`` shows)::

    from adjoint.problems import pendulum

    prob = pendulum.make_problem(steps=200)
    res = pendulum.solve("out", max_iter=50)  # res.summary["objective"], res.figure, res.json

Inside this package the modules import each other relatively (``from . import _common``), so the
folder also works under its source-checkout name ``problems``.
"""

from adjoint.cli import ProblemResult

__all__ = ["ProblemResult"]
