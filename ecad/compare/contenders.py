"""What `ecad compare` puts side by side: each contender knows how to switch itself on and off
on a loaded pipeline, and what parameters it ran with.

Contenders are enabled and disabled many times in one run (quality pass, then interleaved timing
rounds), so enabling must be cheap and disabling must leave the stock pipeline behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ecad.schedule import Schedule
from ecad.search.seeds import baseline_grids

NO_CACHING = "no caching"


@dataclass
class Contender:
    """A way to run the pipeline. The base class runs it stock: the "no caching" row."""

    name: str
    kind: str  # "no caching" | "schedule" | "heuristic" | "diffusers" | "cache-dit"
    params: dict[str, Any] = field(default_factory=dict)

    def enable(self, renderer) -> None:
        """Set the pipeline up to run this contender (it is stock before)."""

    def disable(self, renderer) -> None:
        """Back to the stock pipeline."""

    def stats(self, renderer) -> dict[str, Any]:
        """What the contender itself reports about its last pipeline call (a peer's cache statistics)."""
        return {}

    @property
    def unavailable(self) -> str | None:
        """Why this contender cannot run here, or None."""
        return None


@dataclass
class ScheduleContender(Contender):
    """An ecad schedule: a searched one, or a heuristic baseline every search seeds."""

    schedule: Schedule | None = None

    def enable(self, renderer) -> None:
        renderer.apply(self.schedule)

    def disable(self, renderer) -> None:
        renderer.remove()


@dataclass
class Unavailable(Contender):
    """A contender that cannot run on this model or install; its row says why."""

    reason: str = ""

    @property
    def unavailable(self) -> str | None:
        return self.reason


def schedule_contenders(space, schedules: list[Schedule], baselines: bool) -> list[Contender]:
    """No caching, the user's schedules (checked against the space), then, with `baselines`, the
    heuristics every search starts from (so a frontier has already beaten them)."""
    out: list[Contender] = [Contender(NO_CACHING, NO_CACHING)]
    for s in schedules:
        space.check_schedule(s)
        name = s.name or "schedule"
        out.append(ScheduleContender(name, "schedule", {"file": name}, schedule=s))
    if baselines:
        for name, grid in baseline_grids(space):
            out.append(ScheduleContender(name, "heuristic", {}, schedule=Schedule(space.layout, grid, name=name)))
        out += beyond_reuse_contenders(space)
    return out


def beyond_reuse_contenders(space) -> list[Contender]:
    """ecad's own TaylorSeer-like schedule (forecast cells at the interval diffusers' TaylorSeer row
    runs with, so the two rows differ only in who forecasts what) and, where CFG is one doubled
    batch, its FasterCache-like guidance reuse: the rows beside diffusers' and cache-dit's."""
    from ecad.cache.guidance import doubles_guidance_batch
    from ecad.catalog import builtin_schedule
    from ecad.compare.diffusers_caches import TAYLORSEER

    n = TAYLORSEER["cache_interval"]
    out: list[Contender] = []
    if n < space.steps:
        name = f"taylorseer-{n}"
        s = builtin_schedule(name, space.layout, space.steps, **space.schedule_meta())
        params = {"interval": n, "order": 1, "forecast": "every component, between computed steps"}
        out.append(ScheduleContender(f"ecad {name}", "heuristic", params, schedule=s))
    if doubles_guidance_batch(space.adapter):
        s = builtin_schedule("fastercache", space.layout, space.steps, **space.schedule_meta())
        params = {"guidance_reuse_steps": int(s.executed_guidance_reuse().sum())}
        out.append(ScheduleContender("ecad fastercache", "heuristic", params, schedule=s))
    return out
