"""Python view of streamed schedules: actions to print or iterate, and predicted costs.

The actions come from the compiled planner of :mod:`adjoint.checkpointing._streamed`, the same code
the gradient kernel runs.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterator, NamedTuple

import numpy as np

from ._streamed import CHUNK, OP_NAMES, binomial_steps_r, plan_chunk, plan_init, uniform_pieces


class Action(NamedTuple):
    """One action of a schedule: ``op`` in ``advance, store, restore, terminal, adjoint``.

    ``advance``: ``k`` -> ``arg`` (states); ``store``/``restore``: state ``k``, slot ``arg``;
    ``terminal``: step ``k = K - 1`` into scratch; ``adjoint``: adjoint step ``k``.
    """

    op: str
    k: int
    arg: int

    def __str__(self) -> str:
        if self.op == "advance":
            return f"advance x_{self.k} -> x_{self.arg}"
        if self.op == "store":
            return f"store x_{self.k} in slot {self.arg}"
        if self.op == "restore":
            return f"restore x_{self.k} from slot {self.arg}"
        if self.op == "terminal":
            return f"terminal x_{self.k} -> x_{self.k + 1}, seed z_{self.k + 1} = grad L"
        return f"adjoint step {self.k}"


def iter_actions(steps: int, slots: int, rule: int) -> Iterator[Action]:
    """Stream the actions of a schedule (the compiled planner, chunk by chunk)."""
    stack, meta = plan_init(steps, slots, rule)
    cap = max(CHUNK, 2 * min(slots, steps) + 16)
    ops = np.empty(cap, dtype=np.int64)
    a0 = np.empty(cap, dtype=np.int64)
    a1 = np.empty(cap, dtype=np.int64)
    while True:
        n = plan_chunk(stack, meta, ops, a0, a1)
        if n < 0:  # pragma: no cover - planner bug
            raise RuntimeError("checkpoint planner stack overflow (please report)")
        if n == 0:
            return
        for op, x, y in zip(ops[:n].tolist(), a0[:n].tolist(), a1[:n].tolist()):
            yield Action(OP_NAMES[op], x, y)


@lru_cache(maxsize=4096)
def _uniform_cost(l: int, f: int) -> int:
    """Forward steps (terminal step excluded) of the uniform rule on ``l`` steps with ``f`` slots."""
    if l <= 1:
        return 0
    if f == 1:
        return l * (l - 1) // 2
    if l <= f:
        return l - 1
    c = uniform_pieces.py_func(l, f)
    cuts = [(i * l) // c for i in range(c)] + [l]
    return cuts[c - 1] + sum(_uniform_cost(cuts[i + 1] - cuts[i], f - i) for i in range(c))


def binomial_forward_steps(steps: int, slots: int) -> int:
    """``p(K, s) + 1`` with ``p(l, s) = r l - C(s + r, s + 1)`` (Griewank and Walther 2000)."""
    from math import comb

    if steps <= 0:
        return 0
    r = binomial_steps_r(steps, slots)
    return r * steps - comb(slots + r, slots + 1) + 1


def uniform_forward_steps(steps: int, slots: int) -> int:
    """Forward steps of :class:`Uniform` (exact, by the same rule the planner uses)."""
    if steps <= 0:
        return 0
    if slots > steps:
        return steps
    import sys

    old = sys.getrecursionlimit()
    try:
        sys.setrecursionlimit(max(old, 10_000))
        return _uniform_cost(steps, min(slots, steps)) + 1
    finally:
        sys.setrecursionlimit(old)
