"""Named schedules: speed-up without a search.

Two kinds of names resolve to a `Schedule`:
- built-in heuristics, made for whatever layout and step count they are applied to: `every-N`
  (FORA-like), `attention-only` / `attention-every-N`, `tgate` (T-GATE-like), `delta-dit`
  (Δ-DiT-like), `no-caching`, and beyond compute-or-reuse `taylorseer-N` / `taylorseer2-N`
  (TaylorSeer-like forecast cells) and `fastercache` (FasterCache-like guidance-branch reuse);
- searched schedules shipped with ecad, `SPACE:LABEL` (e.g. `pixart-alpha-256:fast`): files
  `schedules/SPACE__LABEL.json` in the repository (installed to `<prefix>/share/ecad/schedules`),
  each carrying the run that produced it, its metrics and the machine it was measured on.

The heuristics' grids live here and nowhere else: the search seeds its first population with the
same ones (ecad.search.seeds), so a named schedule is always a point the search has considered.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecad.layouts import Layout
from ecad.resources import shipped_dir
from ecad.schedule import Schedule, ScheduleError, load_schedule, repair_forecast

# Component roles (the family adapter's `roles`) each heuristic caches: attention-only caching
# reuses attention of either kind; T-GATE-like caching freezes what carries the text into the
# image (cross-attention, or the text stream's MLP in joint blocks).
ATTENTION_ROLES = ("attention", "cross_attention")
TEXT_ROLES = ("cross_attention", "text_mlp")
SHIPPED_SEPARATOR = "__"  # file stem SPACE__LABEL for the name SPACE:LABEL (":" is not portable in file names)


def role_mask(layout: Layout, roles: tuple[str, ...]) -> np.ndarray:
    """[blocks, components] mask of the components whose role (the family adapter's) is in `roles`."""
    from ecad.models import adapter_for

    of = adapter_for(layout.family).roles
    mask = np.zeros((layout.num_blocks, layout.num_components), dtype=bool)
    for b, (group, _) in enumerate(layout.blocks()):
        for c, comp in enumerate(group.components):
            mask[b, c] = of[comp] in roles
    return mask


def every_n_grid(layout: Layout, steps: int, n: int) -> np.ndarray:
    """FORA-like: every component computes on every n-th step and is reused in between."""
    grid = np.zeros((steps, layout.num_blocks, layout.num_components), dtype=bool)
    grid[::n] = True
    return grid


def attention_grid(layout: Layout, steps: int, n: int) -> np.ndarray:
    """Attention (self and cross) reused except on every n-th step; the MLPs always compute."""
    grid = np.ones((steps, layout.num_blocks, layout.num_components), dtype=bool)
    grid[np.arange(steps) % n != 0] &= ~role_mask(layout, ATTENTION_ROLES)
    return grid


def tgate_step(steps: int, fraction: float = 0.5) -> int:
    return max(1, int(round(steps * fraction)))


def tgate_grid(layout: Layout, steps: int, fraction: float = 0.5) -> np.ndarray:
    """T-GATE-like: what carries the text into the image is frozen after the gate step (its last
    output reused to the end): the image's layout is fixed by then."""
    grid = np.ones((steps, layout.num_blocks, layout.num_components), dtype=bool)
    grid[tgate_step(steps, fraction) :] &= ~role_mask(layout, TEXT_ROLES)
    return grid


def delta_dit_grid(layout: Layout, steps: int, n: int = 2) -> np.ndarray:
    """Δ-DiT-like: early steps shape the outline, which the front blocks carry, so the rear blocks
    are reused there; late steps refine detail, carried by the rear blocks, so the front blocks are
    reused there. Every n-th step computes everything."""
    grid = np.ones((steps, layout.num_blocks, layout.num_components), dtype=bool)
    half = layout.num_blocks // 2
    off = np.arange(steps) % n != 0
    early = np.arange(steps) < steps // 2
    grid[np.ix_(off & early, np.arange(half, layout.num_blocks))] = False
    grid[np.ix_(off & ~early, np.arange(half))] = False
    return grid


def taylorseer_grid(layout: Layout, steps: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """TaylorSeer-like: every component computes on steps 0 and 1 (two points for the first
    forecast) and every n-th step, and is forecast in between (grid, forecast)."""
    grid = every_n_grid(layout, steps, n)
    grid[: min(2, steps)] = True
    return grid, ~grid


FASTERCACHE_START = 0.36  # diffusers' FasterCache skips the unconditional branch below t = 641 of 1000
FASTERCACHE_EVERY = 5  # ... except on every 5th step (its unconditional_batch_skip_range)


def fastercache_guidance(steps: int) -> np.ndarray:
    """FasterCache-like guidance reuse: from 36% of the steps on, the unconditional branch runs
    only on every 5th step and is taken from the last (uncond - cond) difference in between."""
    s = np.arange(steps)
    return (s >= max(1, int(round(FASTERCACHE_START * steps)))) & (s % FASTERCACHE_EVERY != 0)


@dataclass(frozen=True)
class Builtin:
    """A named heuristic: its description and its grid for a layout and step count (`planes`:
    the Schedule's other fields it sets, forecast cells or guidance reuse)."""

    pattern: str  # the name, N standing for a whole number >= 2
    description: str
    grid: Callable[[Layout, int, int], np.ndarray]  # (layout, steps, N) -> grid
    planes: Callable[[Layout, int, int], dict] | None = None  # (layout, steps, N) -> Schedule keyword arguments


BUILTINS = (
    Builtin("no-caching", "every component at every step (the reference)", lambda lay, s, n: np.ones(
        (s, lay.num_blocks, lay.num_components), dtype=bool)),
    Builtin("every-N", "FORA-like: everything computes every N-th step, reused in between", every_n_grid),
    Builtin("attention-only", "attention reused every other step, MLPs always computed", lambda lay, s, n: (
        attention_grid(lay, s, 2))),
    Builtin("attention-every-N", "attention computed every N-th step, MLPs always computed", attention_grid),
    Builtin("tgate", "T-GATE-like: cross-attention (or text MLPs) frozen after half the steps", lambda lay, s, n: (
        tgate_grid(lay, s))),
    Builtin("delta-dit", "Δ-DiT-like: rear blocks reused in early steps, front blocks in late ones, every 2nd step "
            "full", lambda lay, s, n: delta_dit_grid(lay, s)),
    Builtin("taylorseer-N", "TaylorSeer-like: everything computes on steps 0, 1 and every N-th, first-order "
            "forecast in between", lambda lay, s, n: taylorseer_grid(lay, s, n)[0],
            lambda lay, s, n: {"forecast": taylorseer_grid(lay, s, n)[1]}),
    Builtin("taylorseer2-N", "TaylorSeer-like with second-order forecasts (three computed points where there are)",
            lambda lay, s, n: taylorseer_grid(lay, s, n)[0],
            lambda lay, s, n: {"forecast": taylorseer_grid(lay, s, n)[1], "forecast_order": 2}),
    Builtin("fastercache", "FasterCache-like: late steps skip the unconditional branch except every 5th (CFG as "
            "one doubled batch only)", lambda lay, s, n: np.ones((s, lay.num_blocks, lay.num_components), dtype=bool),
            lambda lay, s, n: {"guidance_reuse": fastercache_guidance(s)}),
)  # fmt: skip
EXAMPLES = ("no-caching", "every-2", "every-3", "attention-only", "tgate", "delta-dit", "taylorseer-3")


def _builtin(name: str) -> tuple[Builtin, int] | None:
    for b in BUILTINS:
        regex = re.escape(b.pattern).replace("N", r"(\d+)")
        m = re.fullmatch(regex, name)
        if m:
            return b, int(m.group(1)) if m.groups() else 0
    return None


def describe(name: str) -> str:
    """What the built-in `name` does."""
    found = _builtin(name)
    return found[0].description if found else ""


def is_named(name: str) -> bool:
    """Whether `name` is a catalog name (a built-in, or SPACE:LABEL), not a file path."""
    return _builtin(name) is not None or (":" in name and "/" not in name and not name.endswith(".json"))


def builtin_schedule(name: str, layout: Layout, steps: int, **meta) -> Schedule:
    """The built-in heuristic `name` for `layout` and `steps` (meta: height, width, ...)."""
    found = _builtin(name)
    if found is None:
        raise ScheduleError(
            f"{name!r} is not a named schedule; built-ins are {', '.join(b.pattern for b in BUILTINS)} "
            f"(N a whole number >= 2), shipped ones are {', '.join(shipped_names()) or '(none)'}"
        )
    builtin, n = found
    if "N" in builtin.pattern and not 2 <= n < steps:
        raise ScheduleError(f"{name!r}: N must be between 2 and {steps - 1} for a {steps}-step schedule")
    if builtin.planes is not None:
        planes = builtin.planes(layout, steps, n)
        grid = builtin.grid(layout, steps, n)
        if "forecast" in planes:  # a step count too short for two computed points: those cells reuse
            planes["forecast"] = repair_forecast(grid, planes["forecast"])
        return Schedule(layout, grid, name=name, **planes, **meta)
    return Schedule(layout, builtin.grid(layout, steps, n), name=name, **meta)


# ------------------------------------------------------------------ shipped
def schedules_dir() -> Path:
    return shipped_dir("schedules")


def shipped_names() -> list[str]:
    """SPACE:LABEL of every searched schedule shipped with ecad."""
    folder = schedules_dir()
    stems = sorted(p.stem for p in folder.glob("*.json")) if folder.is_dir() else []
    return [stem.replace(SHIPPED_SEPARATOR, ":", 1) for stem in stems if SHIPPED_SEPARATOR in stem]


def shipped_schedule(name: str) -> Schedule:
    """The shipped searched schedule SPACE:LABEL."""
    space, _, label = name.partition(":")
    path = schedules_dir() / f"{space}{SHIPPED_SEPARATOR}{label}.json"
    if not path.is_file():
        raise ScheduleError(
            f"no shipped schedule {name!r}; shipped ones are {', '.join(shipped_names()) or '(none)'}, built-ins "
            f"are {', '.join(b.pattern for b in BUILTINS)}"
        )
    return load_schedule(path)


def resolve(name: str, layout: Layout | None = None, steps: int | None = None, **meta) -> Schedule:
    """A catalog name as a Schedule: SPACE:LABEL as shipped; a built-in for `layout` and `steps`."""
    if ":" in name:
        return shipped_schedule(name)
    if layout is None or steps is None:
        raise ScheduleError(f"the built-in schedule {name!r} needs the model's layout and step count")
    return builtin_schedule(name, layout, steps, **meta)
