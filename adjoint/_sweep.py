"""The bundle of compiled functions and arrays that every gradient sweep takes.

Schedules (``adjoint.checkpointing``) receive a :class:`Sweep` and run one compiled kernel on it;
this keeps ``solve_adjoint`` independent of how states are stored or rebuilt.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sweep:
    """Everything a gradient kernel needs (internal).

    Outputs ``grad_c`` (K, m), ``grad_p`` (npar,), ``grad_x0`` (n,) are preallocated and filled by
    the schedule. ``kernel_args()`` is the common leading argument tuple of the kernels in
    ``adjoint._kernels``: ``(kind, f, vjp, g, gvjp, rv, rg, has_run, tv, tg, has_term, x0, C, p,
    t0, tau, K, A, b, cn)``.
    """

    kind: int
    f: object
    vjp: object
    g: object
    gvjp: object
    rv: object
    rg: object
    has_run: bool
    tv: object
    tg: object
    has_term: bool
    x0: np.ndarray
    C: np.ndarray
    p: np.ndarray
    t0: float
    tau: float
    K: int
    A: np.ndarray
    b: np.ndarray
    cn: np.ndarray
    method: object
    grad_c: np.ndarray
    grad_p: np.ndarray
    grad_x0: np.ndarray
    want_trajectory: bool = False
    #: the :class:`adjoint._backends.Backend` that runs the sweeps (chosen by ``adjoint._backends.select``)
    backend: object = None

    @property
    def state_dim(self) -> int:
        return self.x0.shape[0]

    def run(self, kernel, *extra):
        """Call a compiled kernel, filling its parameters by name from this sweep.

        Parameters named ``f, vjp, g, gvjp, rv, rg, tv, tg`` receive the user's functions (bound
        through :mod:`adjoint._bind`, so the kernel is cached on disk when they are importable);
        ``kind, has_run, has_term`` are compiled in as constants (so numba prunes the branches they
        rule out); parameters named like the sweep's fields (``x0, C, p, t0, tau, K, A, b, cn``)
        receive those; the remaining parameters take ``extra`` in order.
        """
        import inspect

        from ._bind import bound_kernel

        names = _SIGNATURES.get(kernel)
        if names is None:
            names = list(inspect.signature(kernel.py_func).parameters)
            _SIGNATURES[kernel] = names
        funcs = {n: getattr(self, n) for n in names if n in _FUNCTION_FIELDS}
        literals = {n: getattr(self, n) for n in names if n in _LITERAL_FIELDS}
        fn = bound_kernel(kernel, funcs, literals)
        it = iter(extra)
        args = []
        for n in names:
            if n in _FUNCTION_FIELDS or n in _LITERAL_FIELDS:
                continue
            if n in _DATA_FIELDS:
                args.append(getattr(self, n))
            else:
                try:
                    args.append(next(it))
                except StopIteration:
                    raise TypeError(f"kernel {kernel.py_func.__name__} needs argument {n!r}") from None
        if next(it, _END) is not _END:
            raise TypeError(f"too many arguments for kernel {kernel.py_func.__name__}")
        return fn(*args)

    def kernel_args(self) -> tuple:
        return (
            self.kind,
            self.f,
            self.vjp,
            self.g,
            self.gvjp,
            self.rv,
            self.rg,
            self.has_run,
            self.tv,
            self.tg,
            self.has_term,
            self.x0,
            self.C,
            self.p,
            self.t0,
            self.tau,
            self.K,
            self.A,
            self.b,
            self.cn,
        )


_FUNCTION_FIELDS = frozenset(("f", "vjp", "g", "gvjp", "rv", "rg", "tv", "tg"))
_LITERAL_FIELDS = frozenset(("kind", "has_run", "has_term"))
_DATA_FIELDS = frozenset(("x0", "C", "p", "t0", "tau", "K", "A", "b", "cn"))
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
