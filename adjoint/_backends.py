"""How a sweep runs: one selection function and three named backends.

A gradient is a *plan* (store-all, streamed with a rule and slots, or reversible; see
:mod:`adjoint.checkpointing`) run by a *backend*:

- ``"scalar"``: kernels generated from the traced step (:mod:`adjoint._fused`) that keep a small
  state in scalar locals; store-all, streamed plans and the forward sweep;
- ``"tape"``: a store-all kernel generated from a traced vector field that stores the expensive
  intermediates of each step on a tape (:mod:`adjoint._tape`); for larger traced fields;
- ``"generic"``: the kernels of :mod:`adjoint._kernels` and :mod:`adjoint.checkpointing._streamed`,
  which call the user's compiled functions (bound by :mod:`adjoint._bind`); every method and plan.

All three perform the same floating-point operations in the same order, so their results agree bit
for bit. :func:`select` is the only place that chooses; ``Stats.backend`` says which one ran and
``solve_adjoint(backend=...)`` asks for one.
"""

from __future__ import annotations

from . import _kernels as kern
from .checkpointing import _streamed

__all__ = ["BACKENDS", "Backend", "GenericBackend", "ScalarBackend", "TapeBackend", "select", "check_name"]

#: the values ``backend=`` accepts
BACKENDS = ("auto", "scalar", "tape", "generic")


class Backend:
    """A way to run sweeps (internal). Subclasses implement the sweeps they support."""

    #: the name reported in ``Stats.backend``
    name = ""
    #: the store-all gradient kernel ``(x0, C, p, t0, tau, K, t1, traj, gC, gp, gx) -> (value, status)``
    #: that the fast lane of ``solve_adjoint`` may call directly, or None
    lane_kernel = None

    def store_all(self, sweep, traj):
        """Fill ``traj`` and the sweep's gradients; ``(value, status)``."""
        raise NotImplementedError

    def streamed(self, sweep, rule, snapshots, x_final, counters):
        """Run a streamed (checkpointed) plan; ``(value, status)``."""
        raise NotImplementedError

    def forward(self, x0, C, p, t0, tau, K, t1, traj, keep):
        """The forward sweep only (``traj`` filled when ``keep``); ``(value, status)``."""
        raise NotImplementedError

    def __repr__(self):
        return f"<adjoint backend {self.name!r}>"


class GenericBackend(Backend):
    """The kernels that call the user's compiled functions; every method and plan."""

    name = "generic"

    def __init__(self, comp=None, method=None):
        self._comp, self._method = comp, method

    def store_all(self, sweep, traj):
        return sweep.run(
            kern.gradient_store_all, traj, sweep.buffers.grad_c, sweep.buffers.grad_p, sweep.buffers.grad_x0
        )

    def streamed(self, sweep, rule, snapshots, x_final, counters):
        return sweep.run(
            _streamed.gradient_checkpointed,
            rule,
            snapshots,
            x_final,
            sweep.buffers.grad_c,
            sweep.buffers.grad_p,
            sweep.buffers.grad_x0,
            counters,
        )

    def forward(self, x0, C, p, t0, tau, K, t1, traj, keep):
        from ._bind import bound_kernel

        comp, method = self._comp, self._method
        A, b, cn = method.tableau_arrays()
        from .integrators._steps import array_steps

        fwd = bound_kernel(
            kern.forward,
            {"step": array_steps(method)[0], "f": comp.f, "g": comp.g, "rv": comp.rv, "tv": comp.tv},
            {"has_run": comp.has_run, "has_term": comp.has_term},
        )
        val, _, status = fwd(x0, C, p, t0, tau, K, t1, A, b, cn, traj, keep)
        return val, status


class _Generated(Backend):
    """A backend whose store-all gradient is one generated kernel (``lane_kernel``)."""

    def store_all(self, sweep, traj):
        return self.lane_kernel(
            sweep.grid.x0,
            sweep.grid.C,
            sweep.grid.p,
            sweep.grid.t0,
            sweep.grid.tau,
            sweep.grid.K,
            sweep.grid.t1,
            traj,
            sweep.buffers.grad_c,
            sweep.buffers.grad_p,
            sweep.buffers.grad_x0,
        )


class ScalarBackend(_Generated):
    """Generated scalar kernels: ``(gradient, forward, checkpointed)`` of :func:`adjoint._fused.fused_kernels`."""

    name = "scalar"

    def __init__(self, kernels):
        self.lane_kernel, self._forward, self._checkpointed = kernels

    def streamed(self, sweep, rule, snapshots, x_final, counters):
        return self._checkpointed(
            sweep.grid.x0,
            sweep.grid.C,
            sweep.grid.p,
            sweep.grid.t0,
            sweep.grid.tau,
            sweep.grid.K,
            sweep.grid.t1,
            rule,
            snapshots,
            x_final,
            sweep.buffers.grad_c,
            sweep.buffers.grad_p,
            sweep.buffers.grad_x0,
            counters,
        )

    def forward(self, x0, C, p, t0, tau, K, t1, traj, keep):
        return self._forward(x0, C, p, t0, tau, K, t1, traj, keep)


class TapeBackend(_Generated):
    """A generated store-all kernel with a tape of forward intermediates (:mod:`adjoint._tape`)."""

    name = "tape"

    def __init__(self, gradient):
        self.lane_kernel = gradient


def check_name(backend) -> str:
    """The validated ``backend=`` argument (None means ``"auto"``)."""
    if backend is None:
        return "auto"
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(
            f"`backend` must be one of {', '.join(repr(b) for b in BACKENDS)} (default 'auto': the fastest that "
            f"applies); got {backend!r}"
        )
    return backend


_SCALAR_NEEDS = (
    "a vector field that can be traced (plain numpy, or a numba function the tracer can read) with at most "
    "{n} states and {ops} scalar operations per step, and method Euler(), an explicit RungeKutta or DiscreteMap()"
)
_TAPE_NEEDS = (
    "a field built by adjoint.vector_field (or a plain function), method Euler() or DiscreteMap(), at most "
    "{n} states and {m} controls, and a schedule that stores every state with the tape within its memory budget"
)


def select(comp, method, checkpoint, K, n, m, q, requested="auto", purpose="gradient") -> Backend:
    """The backend that runs a sweep: the one requested, or for ``"auto"`` the fastest that applies.

    Parameters
    ----------
    comp : adjoint._solve._Compiled
        The problem's compiled functions for these dimensions.
    method : Method
    checkpoint : Schedule or None
        The schedule of a gradient (None for a forward sweep).
    K, n, m, q : int
        Steps, state, control and parameter dimensions.
    requested : str
        ``"auto"``, ``"scalar"``, ``"tape"`` or ``"generic"`` (validated by :func:`check_name`).
    purpose : str
        ``"gradient"`` or ``"forward"`` (``evaluate`` and ``simulate``; the tape has no forward sweep
        of its own, so ``"tape"`` runs the generic one there).

    Raises
    ------
    ValueError
        A backend was requested that cannot run this problem, method or schedule; the message says
        what it needs.
    """
    from ._fused import MAX_SCALAR_OPS, fused_kernels
    from ._fused import MAX_STATE as SCALAR_MAX_STATE
    from ._tape import MAX_CONTROLS, MAX_STATE, tape_kernels

    if requested == "generic":
        return GenericBackend(comp, method)
    if requested in ("auto", "scalar"):
        fk = fused_kernels(comp, method, n, m, q)
        if fk is not None:
            return ScalarBackend(fk)
        if requested == "scalar":
            raise ValueError(
                "`backend='scalar'` cannot run this problem: it needs "
                + _SCALAR_NEEDS.format(n=SCALAR_MAX_STATE, ops=MAX_SCALAR_OPS)
                + f"; got state_dim={n}, method={method!r}"
                + "".join(f"; {note}" for note in comp.trust_notes.get((n, m, q), ()))
                + ". Use backend='auto' or 'generic'."
            )
    if purpose == "gradient" and requested in ("auto", "tape"):
        tk = tape_kernels(comp, method, checkpoint, K, n, m, q)
        if tk is not None:
            return TapeBackend(tk[0])
        if requested == "tape":
            raise ValueError(
                "`backend='tape'` cannot run this problem: it needs "
                + _TAPE_NEEDS.format(n=MAX_STATE, m=MAX_CONTROLS)
                + f"; got state_dim={n}, control_dim={m}, method={method!r}, checkpoint={checkpoint!r}. "
                "Use backend='auto' or 'generic'."
            )
    return GenericBackend(comp, method)
