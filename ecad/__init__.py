"""ecad: search and apply caching/timestep schedules for diffusion transformers."""

from ecad.cache.hooks import reset_schedule
from ecad.cache.pipeline import apply_schedule, current_schedule, remove_schedule
from ecad.catalog import builtin_schedule
from ecad.layouts import Layout
from ecad.models.flux import flux_layout
from ecad.models.pixart import pixart_layout
from ecad.schedule import Schedule, ScheduleError, load_schedule

__version__ = "0.1.0"

__all__ = [
    "Layout",
    "Schedule",
    "ScheduleError",
    "apply_schedule",
    "builtin_schedule",
    "current_schedule",
    "flux_layout",
    "load_schedule",
    "pixart_layout",
    "remove_schedule",
    "reset_schedule",
]
