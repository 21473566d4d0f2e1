"""Ready problems with known answers, each in its own module.

Every module has a docstring describing the problem and a ``make_problem(...)`` function; the
registry below is what ``python -m adjoint list`` shows.
"""
