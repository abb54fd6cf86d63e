"""ecad: search and apply caching/timestep schedules for diffusion transformers.

The names below load on first use (PEP 562), so `ecad --help` and the light commands do not pay for
importing torch and diffusers.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "Frontier": "ecad.frontier",
    "Layout": "ecad.layouts",
    "Schedule": "ecad.schedule",
    "Summary": "ecad.cache.summary",
    "ScheduleError": "ecad.schedule",
    "apply_schedule": "ecad.cache.pipeline",
    "builtin_schedule": "ecad.catalog",
    "current_schedule": "ecad.cache.pipeline",
    "flux_layout": "ecad.models.flux",
    "load_run": "ecad.search.api",
    "load_schedule": "ecad.schedule",
    "pixart_layout": "ecad.models.pixart",
    "remove_schedule": "ecad.cache.pipeline",
    "reset_schedule": "ecad.cache.hooks",
    "summary": "ecad.cache.summary",
}
__all__ = sorted([*_EXPORTS, "search"])


def __getattr__(name: str) -> Any:
    if name == "search":  # the package, callable as the function (see ecad/search/__init__.py)
        return importlib.import_module("ecad.search")
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ecad' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # once: later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
