"""Checkpoint schedules: which states the backward sweep keeps, and what it recomputes."""
from ._schedules import StoreAll, Schedule

__all__ = ["StoreAll", "Schedule"]
