"""Applying schedules (hooks) and counting what they compute (MACs)."""

from ecad.cache.hooks import apply_schedule_to_transformer, reset_schedule
from ecad.cache.pipeline import apply_schedule, current_schedule, remove_schedule
from ecad.cache.plan import CachePlan

__all__ = [
    "CachePlan",
    "apply_schedule",
    "apply_schedule_to_transformer",
    "current_schedule",
    "remove_schedule",
    "reset_schedule",
]
