"""What every gradient sweep takes: the compiled functions, the grid and inputs, the output buffers.

Schedules (``adjoint.checkpointing``) receive a :class:`Sweep` and run its plan on its backend;
this keeps ``solve_adjoint`` independent of how states are stored or rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Functions:
    """The compiled functions of a sweep and the constants that specialise its kernels.

    ``f, vjp`` (and ``g, gvjp``: the second half of separable dynamics, else the same pair), the
    running cost ``rv, rg`` and the terminal cost ``tv, tg`` (placeholders when absent). ``kind`` (the
    method code), ``has_run`` and ``has_term`` are compiled into the kernels as constants.
    """

    kind: int
    f: Any
    vjp: Any
    g: Any
    gvjp: Any
    rv: Any
    rg: Any
    has_run: bool
    tv: Any
    tg: Any
    has_term: bool


@dataclass(frozen=True)
class Grid:
    """The inputs of one computation: initial state, controls (K, m), parameters, the time grid
    ``t0 + k tau`` for ``k < K``, the final time ``t1`` (``t_span[1]``: the terminal cost's time,
    which ``t0 + K tau`` can miss in the last bit) and the method's tableau ``(A, b, cn)``."""

    x0: np.ndarray
    C: np.ndarray
    p: np.ndarray
    t0: float
    tau: float
    K: int
    t1: float
    A: np.ndarray
    b: np.ndarray
    cn: np.ndarray


@dataclass(frozen=True)
class Buffers:
    """The gradient outputs, preallocated and filled by the sweep: ``grad_c`` (K, m), ``grad_p`` (q,),
    ``grad_x0`` (n,)."""

    grad_c: np.ndarray
    grad_p: np.ndarray
    grad_x0: np.ndarray


@dataclass(frozen=True)
class Sweep:
    """Everything a gradient sweep needs (internal): functions, grid and buffers, the method, and the
    backend that runs it (:mod:`adjoint._backends`). Schedules receive a Sweep and run its plan."""

    functions: Functions
    grid: Grid
    buffers: Buffers
    method: Any
    #: the :class:`adjoint._backends.Backend` that runs the sweeps (chosen by ``adjoint._backends.select``)
    backend: Any
    want_trajectory: bool = False

    @property
    def state_dim(self) -> int:
        return self.grid.x0.shape[0]

    def run(self, kernel, *extra, actions=None):
        """Call a compiled kernel of the generic backend, filling its parameters by name.

        Parameters named like the fields of :class:`Functions` receive the user's functions (bound
        through :mod:`adjoint._bind`, so the kernel is cached on disk when they are importable),
        ``step``, ``adjoint_step``, ``inverse_step``, ``stages_adjoint`` the method's (generated from
        its description) or,
        for ``kind, has_run, has_term``, are compiled in as constants (so numba prunes the branches
        they rule out); parameters named like the fields of :class:`Grid` receive those; the remaining
        parameters take ``extra`` in order. ``actions`` (global name -> numba function) replaces
        functions the kernel calls (a block of cotangents: ``adjoint._kernels.BLOCK_ACTIONS``).
        """
        import inspect

        from ._bind import bound_kernel

        names = _SIGNATURES.get(kernel)
        if names is None:
            names = list(inspect.signature(kernel.py_func).parameters)
            _SIGNATURES[kernel] = names
        fs, grid = self.functions, self.grid
        funcs = {n: getattr(fs, n) for n in names if n in _FUNCTION_FIELDS}
        if set(_STEP_FIELDS).intersection(names):
            from .integrators._steps import array_steps

            funcs.update((n, f) for n, f in zip(_STEP_FIELDS, array_steps(self.method)) if n in names)
        literals = {n: getattr(fs, n) for n in names if n in _LITERAL_FIELDS}
        fn = bound_kernel(kernel, funcs, literals, actions)
        it = iter(extra)
        args = []
        for n in names:
            if n in _FUNCTION_FIELDS or n in _LITERAL_FIELDS or n in _STEP_FIELDS:
                continue
            if n in _DATA_FIELDS:
                args.append(getattr(grid, n))
            else:
                try:
                    args.append(next(it))
                except StopIteration:
                    raise TypeError(f"kernel {kernel.py_func.__name__} needs argument {n!r}") from None
        if next(it, _END) is not _END:
            raise TypeError(f"too many arguments for kernel {kernel.py_func.__name__}")
        return fn(*args)


_LITERAL_FIELDS = frozenset(("kind", "has_run", "has_term"))
_FUNCTION_FIELDS = frozenset(f for f in Functions.__dataclass_fields__ if f not in _LITERAL_FIELDS)
_DATA_FIELDS = frozenset(Grid.__dataclass_fields__)
#: the method's compiled step functions, in the order of adjoint.integrators._steps.array_steps
_STEP_FIELDS = ("step", "adjoint_step", "inverse_step", "stages_adjoint")
_SIGNATURES: dict = {}
_END = object()


@dataclass
class SweepOutcome:
    """What a schedule's run returns (internal). ``status`` follows ``adjoint._kernels``."""

    value: float
    status: int
    x_final: np.ndarray
    forward_steps: int
    peak_stored_states: int
    snapshots: int
    schedule: str
    trajectory: np.ndarray | None = None
    #: the name of the backend that ran (``Stats.backend``)
    backend: str = ""
    extra: dict | None = None
