"""Checkpoint schedules: which states the backward sweep keeps, and what it recomputes."""

from ._plan import Action
from ._reversible import Reversible
from ._schedules import (
    DEFAULT_MEMORY_BUDGET,
    MemoryBudget,
    Plan,
    Revolve,
    Schedule,
    StoreAll,
    Uniform,
    as_schedule,
    auto,
    parse_bytes,
)

__all__ = [
    "StoreAll",
    "Uniform",
    "Revolve",
    "MemoryBudget",
    "Reversible",
    "Schedule",
    "Plan",
    "Action",
    "DEFAULT_MEMORY_BUDGET",
    "auto",
    "as_schedule",
    "parse_bytes",
]
