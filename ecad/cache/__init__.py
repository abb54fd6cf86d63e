"""Applying schedules (hooks) and counting what they compute (MACs)."""

from ecad.cache.hooks import CachePlan, apply_schedule, current_schedule, remove_schedule

__all__ = ["CachePlan", "apply_schedule", "current_schedule", "remove_schedule"]
