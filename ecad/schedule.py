"""`Schedule`: which components to compute at which step, and which steps to run at all.

A schedule is data, never code: users share it, diff it and load it in production, so it
carries the layout, resolution and guidance it was searched for and validates on load.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecad.errors import EcadError, shown
from ecad.files import atomic_write_text, json_safe, read_json
from ecad.layouts import MAX_BLOCKS, Layout

FORMAT = "ecad-schedule/1"  # compute/reuse grids: what every schedule without the newer cells is written as
FORMAT_V2 = "ecad-schedule/2"  # one symbol per cell (C compute, R reuse, F forecast), guidance reuse per step
FORMATS = (FORMAT, FORMAT_V2)
COMPUTE, REUSE, FORECAST = "C", "R", "F"
FORECAST_ORDERS = (1, 2)
# Bounds every schedule (and every search space) is held to; real ones are far inside them
# (ECAD's longest run is 50 steps, the largest DiT images 4096 px), and they keep a hostile file
# from allocating or looping for minutes before it is refused.
MAX_STEPS = 1000
MAX_SIDE = 16384  # pixels, height and width
MAX_GUIDANCE = 100.0
MAX_TEXT = 10_000  # characters of a name or model id
OUR_FIELDS = (
    "format",
    "name",
    "family",
    "variant",
    "model",
    "layout",
    "num_steps",
    "timesteps",
    "height",
    "width",
    "guidance_scale",
    "grid",
    "metrics",
    "attributes",
    "ecad_config",
)
OUR_V2_FIELDS = OUR_FIELDS + ("forecast_order", "guidance_reuse")
ECAD_FIELDS = ("cache_schedule", "config", "metrics")
ECAD_SCHEDULE_FIELDS = ("num_inference_steps", "name", "attributes", "schedule")


class ScheduleError(EcadError, ValueError):
    """A schedule file or object is invalid; the message names the field and the fix."""


def _adapter(family: str, where: str = "schedule"):
    """The family's adapter (imported here, not at module level: adapters import torch, and
    reading a schedule file should not need the model code until it is used)."""
    from ecad.models import adapter_for

    try:
        return adapter_for(family)
    except ValueError as exc:
        raise ScheduleError(f"{where}: {exc}") from None


@dataclass
class Schedule:
    """Boolean compute grid [steps, blocks, components] (True = compute and refresh the cache,
    False = reuse the last computed output) plus an optional subset of the base steps to run."""

    layout: Layout
    grid: np.ndarray
    timesteps: list[int] | None = None  # indices into the base grid of `num_steps` steps, increasing
    name: str = ""
    variant: str | None = None  # the family's pipeline variant (PixArt: "alpha" / "sigma"); None if it has one
    model: str | None = None  # hub id or path the schedule was searched on
    height: int | None = None
    width: int | None = None
    guidance_scale: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)
    ecad_config: dict[str, Any] | None = None  # ECAD's `config` block, kept verbatim for exact export
    # [steps, blocks, components] bool: where `grid` does not compute, True = forecast the output
    # from the component's last computed ones (polynomial extrapolation over step positions, of
    # `forecast_order`) instead of reusing the last; None = no forecast cells
    forecast: np.ndarray | None = None
    forecast_order: int = 1
    # [steps] bool: skip classifier-free guidance's unconditional rows on that step and take them as
    # the conditional output plus the last computed (unconditional - conditional) difference
    guidance_reuse: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.grid = np.asarray(self.grid)
        if self.forecast is not None:
            self.forecast = np.asarray(self.forecast)
        if self.guidance_reuse is not None:
            self.guidance_reuse = np.asarray(self.guidance_reuse)
        self.validate()
        if self.layout.ragged:  # padding cells hold no component: nothing to reuse, so they compute
            self.grid = self.grid | ~self.layout.cell_mask()[None]
        if self.forecast is not None and not self.forecast.any():
            self.forecast = None
        if self.guidance_reuse is not None and not self.guidance_reuse.any():
            self.guidance_reuse = None

    # ----------------------------------------------------------------- basics
    @property
    def family(self) -> str:
        return self.layout.family

    @property
    def num_steps(self) -> int:
        """Steps of the base grid (rows of `grid`)."""
        return int(self.grid.shape[0])

    @property
    def executed_steps(self) -> list[int]:
        return list(self.timesteps) if self.timesteps is not None else list(range(self.num_steps))

    def executed_grid(self) -> np.ndarray:
        """Rows of the steps actually run, in order, as they run: what the cache logic walks through
        and what MACs count. The first row computes everything whatever its flags say."""
        rows = self.grid[self.executed_steps]
        rows[0] = True
        return rows

    def executed_forecast(self) -> np.ndarray:
        """[executed steps, blocks, components] bool: the forecast cells of the steps that run."""
        if self.forecast is None:
            return np.zeros((len(self.executed_steps),) + self.grid.shape[1:], dtype=bool)
        return self.forecast[self.executed_steps] & ~self.executed_grid()

    def executed_guidance_reuse(self) -> np.ndarray:
        """[executed steps] bool: the steps that skip the unconditional branch."""
        if self.guidance_reuse is None:
            return np.zeros(len(self.executed_steps), dtype=bool)
        return self.guidance_reuse[self.executed_steps].copy()

    @property
    def uses_v2(self) -> bool:
        """Has cells or flags only format 2 can hold (forecast cells, guidance reuse)."""
        return self.forecast is not None or self.guidance_reuse is not None

    def cells(self) -> np.ndarray:
        """[steps, blocks, components] of "C" (compute), "R" (reuse), "F" (forecast)."""
        out = np.where(self.grid, COMPUTE, REUSE).astype("<U1")
        if self.forecast is not None:
            out[self.forecast] = FORECAST
        return out

    def without_forecast(self) -> Schedule:
        """The lossy compute/reuse schedule: forecast cells reuse, every step runs both guidance
        branches (what ECAD's format, and every cache without forecasting, can express)."""
        kw = {k: getattr(self, k) for k in ("timesteps", "name", "variant", "model", "height", "width")}
        kw.update(guidance_scale=self.guidance_scale, metrics=dict(self.metrics), attributes=dict(self.attributes))
        return Schedule(self.layout, self.grid.copy(), ecad_config=self.ecad_config, **kw)

    def effective_grid(self) -> np.ndarray:
        """The base grid as it runs: the first executed step computes every component (its reuse
        flags, as some ECAD files carry, have nothing to reuse)."""
        grid = self.grid.copy()
        grid[self.executed_steps[0]] = True
        return grid

    @property
    def first_step_flags_ignored(self) -> int:
        """How many reuse flags the first executed step carries (kept in files, run as compute)."""
        mask = self.layout.cell_mask()
        return int((~self.grid[self.executed_steps[0]] & mask).sum())

    def compute_fraction(self) -> float:
        """Share of block components computed, relative to running all base steps uncached."""
        mask = self.layout.cell_mask()
        return float((self.executed_grid() & mask).sum()) / float(self.num_steps * mask.sum())

    @classmethod
    def full(cls, layout: Layout, num_steps: int, **kw) -> Schedule:
        """The no-caching schedule."""
        return cls(layout, np.ones((num_steps, layout.num_blocks, layout.num_components), dtype=bool), **kw)

    @classmethod
    def every_n(cls, layout: Layout, num_steps: int, n: int, **kw) -> Schedule:
        """FORA-like: recompute everything every n-th step, reuse in between."""
        grid = np.zeros((num_steps, layout.num_blocks, layout.num_components), dtype=bool)
        grid[::n] = True
        return cls(layout, grid, name=kw.pop("name", f"every_{n}"), **kw)

    def validate(self) -> None:
        """Every field's type and range, so a schedule that exists can be applied, saved and
        generated with: a bad value fails here, naming the field, not later inside diffusers."""
        g = self.grid
        expect = (self.layout.num_blocks, self.layout.num_components)
        if g.ndim != 3 or g.shape[1:] != expect:
            raise ScheduleError(
                f"grid: shape {tuple(g.shape)} does not match the layout {self.layout.describe()}; "
                f"expected (steps, {expect[0]}, {expect[1]})"
            )
        if g.dtype != np.bool_:
            raise ScheduleError(f"grid: cells must be booleans, got dtype {g.dtype}; convert with grid.astype(bool)")
        if not 1 <= g.shape[0] <= MAX_STEPS:
            raise ScheduleError(f"grid: a schedule has 1 to {MAX_STEPS} steps, got {g.shape[0]}")
        adapter = _adapter(self.family)
        if self.timesteps is not None:
            ts = self.timesteps
            if not isinstance(ts, (list, tuple)):
                raise ScheduleError(f"timesteps: must be a list of step indices or null, got {shown(ts)}")
            if not ts:
                raise ScheduleError(
                    "timesteps: the selection is empty; list at least one step index or use null for all"
                )
            bad = [
                t for t in ts if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or not 0 <= t < g.shape[0]
            ]
            if bad:
                raise ScheduleError(
                    f"timesteps: {shown(bad[:5])} out of range; indices must be integers in [0, {g.shape[0] - 1}] "
                    "of the base grid"
                )
            if any(b <= a for a, b in zip(ts, ts[1:])):
                raise ScheduleError(f"timesteps: {shown(list(ts))} must be strictly increasing without repeats")
            self.timesteps = [int(t) for t in ts]
        runs = len(self.executed_steps)
        fewest, why = adapter.min_run_steps(self.variant)
        if runs < fewest:
            raise ScheduleError(
                f"timesteps: the schedule runs {runs} step(s), but {adapter.display_name} needs at least "
                f"{fewest} ({why}); select more steps"
            )
        if not isinstance(self.name, str) or len(self.name) > MAX_TEXT:
            raise ScheduleError(f"name: must be a string of at most {MAX_TEXT} characters, got {shown(self.name)}")
        if self.variant is not None and adapter.variant_error(self.variant):
            raise ScheduleError(adapter.variant_error(self.variant).replace("field 'variant'", "variant:", 1))
        if self.model is not None and (not isinstance(self.model, str) or not 0 < len(self.model) <= MAX_TEXT):
            raise ScheduleError(
                f"model: must be a hub id or path (a non-empty string), or null, got {shown(self.model)}"
            )
        for key in ("height", "width"):
            value = getattr(self, key)
            if value is None:
                continue
            m = adapter.size_multiple
            if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or not m <= value <= MAX_SIDE:
                raise ScheduleError(f"{key}: must be an integer number of pixels {m}..{MAX_SIDE}, got {shown(value)}")
            if value % m:
                raise ScheduleError(
                    f"{key}: {value} is not a multiple of {m}, which {adapter.display_name} needs (VAE scale x patch "
                    f"size); use {value // m * m or m}"
                )
            setattr(self, key, int(value))
        gs = self.guidance_scale
        if gs is not None:
            if not isinstance(gs, (int, float, np.floating, np.integer)) or isinstance(gs, bool):
                raise ScheduleError(f"guidance_scale: must be a number or null, got {shown(gs)}")
            if not (math.isfinite(gs) and 0 <= gs <= MAX_GUIDANCE):
                raise ScheduleError(f"guidance_scale: must be a finite number 0..{MAX_GUIDANCE:g}, got {gs}")
            self.guidance_scale = float(gs)
        for key in ("metrics", "attributes"):
            if not isinstance(getattr(self, key), dict):
                raise ScheduleError(f"{key}: must be an object (a dict), got {shown(getattr(self, key))}")
        if self.ecad_config is not None and not isinstance(self.ecad_config, dict):
            raise ScheduleError(f"ecad_config: must be an object or absent, got {shown(self.ecad_config)}")
        self._validate_forecast(adapter)
        self._validate_guidance_reuse(adapter)
        # A reuse flag on the first step that runs is kept as written (ECAD's own files have some, and
        # must round-trip) but means "compute": nothing is cached yet. `executed_grid` applies that.

    def _validate_forecast(self, adapter) -> None:
        order = self.forecast_order
        if not isinstance(order, (int, np.integer)) or isinstance(order, bool) or order not in FORECAST_ORDERS:
            raise ScheduleError(f"forecast_order: must be 1 or 2 (the extrapolation's order), got {shown(order)}")
        self.forecast_order = int(order)
        f = self.forecast
        if f is None:
            return
        if f.shape != self.grid.shape or f.dtype != np.bool_:
            raise ScheduleError(
                f"forecast: must be a boolean grid of the grid's shape {tuple(self.grid.shape)}, got "
                f"{f.dtype} {tuple(f.shape)}"
            )
        both = f & self.grid & self.layout.cell_mask()[None]
        if both.any():
            s, b, c = (int(i) for i in np.argwhere(both)[0])
            raise ScheduleError(f"forecast: {self._cell_name(s, b, c)} is marked both compute and forecast; pick one")
        bad = forecast_without_history(self.executed_grid(), self.executed_forecast())
        if bad.any():
            s, b, c = (int(i) for i in np.argwhere(bad)[0])
            raise ScheduleError(
                f"forecast: {self._cell_name(self.executed_steps[s], b, c)} forecasts with fewer than 2 computed "
                f"outputs of that component before it ({int(bad.sum())} such cell(s)); compute the component at "
                "two earlier steps, or make the cell a reuse (ecad.schedule.repair_forecast does this)"
            )

    def _validate_guidance_reuse(self, adapter) -> None:
        g = self.guidance_reuse
        if g is None:
            return
        if g.shape != (self.num_steps,) or g.dtype != np.bool_:
            raise ScheduleError(
                f"guidance_reuse: must be one boolean per step ({self.num_steps}), got {g.dtype} {tuple(g.shape)}"
            )
        if not g.any():
            return
        from ecad.cache.guidance import doubles_guidance_batch

        if not doubles_guidance_batch(adapter) or (self.guidance_scale is not None and self.guidance_scale <= 1):
            raise ScheduleError(
                f"guidance_reuse: {adapter.display_name} does not run classifier-free guidance as one doubled "
                "batch, so there is no unconditional half to skip; remove guidance_reuse"
            )
        if g[self.executed_steps[0]]:
            raise ScheduleError(
                f"guidance_reuse: the first step that runs (step {self.executed_steps[0]}) has no earlier "
                "unconditional output to reuse; it must run both branches"
            )

    def _cell_name(self, step: int, b: int, c: int) -> str:
        group = self.layout.blocks()[b][0]
        return f"step {step} block {self.layout.block_key(b)} component {group.components[c]!r}"

    # ------------------------------------------------------------- bit vectors
    def to_bits(self) -> np.ndarray:
        """Flat bool vector in ECAD's order: step-major, then blocks, then components."""
        return self.grid.reshape(-1).copy()

    @classmethod
    def from_bits(cls, bits, space, **kw) -> Schedule:
        """Inverse of `to_bits` for a SearchSpace (or anything with `layout` and `steps`)."""
        layout, steps = space.layout, space.steps
        bits = np.asarray(bits, dtype=bool)
        n = steps * layout.num_blocks * layout.num_components
        if bits.size != n:
            raise ScheduleError(
                f"bits: got {bits.size} bits, the space needs {n} ({steps} steps x {layout.describe()})"
            )
        for key in ("height", "width", "guidance_scale", "model", "variant"):
            kw.setdefault(key, getattr(space, key, None))
        return cls(layout, bits.reshape(steps, layout.num_blocks, layout.num_components), **kw)

    # ------------------------------------------------------------------- JSON
    def to_json(self) -> dict[str, Any]:
        """Our format: one line-friendly string per step, blocks separated by spaces. Format 1
        (0/1 per cell) unless the schedule has forecast cells or guidance reuse, which need 2."""
        return self._to_json_v2() if self.uses_v2 else self.to_v1_json()

    def to_v1_json(self) -> dict[str, Any]:
        """Format 1 (the compute grid alone: forecast cells written as reuse)."""
        return {
            "format": FORMAT,
            "name": self.name,
            "family": self.family,
            "variant": self.variant,
            "model": self.model,
            "layout": self.layout.to_json(),
            "num_steps": self.num_steps,
            "timesteps": self.timesteps,
            "height": self.height,
            "width": self.width,
            "guidance_scale": self.guidance_scale,
            "grid": self._grid_rows(),
            "metrics": self.metrics,
            "attributes": self.attributes,
            **({"ecad_config": self.ecad_config} if self.ecad_config is not None else {}),
        }

    def _to_json_v2(self) -> dict[str, Any]:
        out = self.to_v1_json()
        out["format"] = FORMAT_V2
        out["grid"] = self._cell_rows()
        extra = {
            "forecast_order": self.forecast_order,
            "guidance_reuse": None
            if self.guidance_reuse is None
            else "".join("1" if g else "0" for g in self.guidance_reuse),
        }
        at = list(out).index("grid") + 1  # after the grid, before metrics
        items = list(out.items())
        return dict(items[:at] + list(extra.items()) + items[at:])

    def _cell_rows(self) -> list[str]:
        """Format 2: one string per step, a group of C/R/F per block, one symbol per component."""
        widths = [len(group.components) for group, _ in self.layout.blocks()]
        return [" ".join("".join(blk[:w]) for blk, w in zip(step, widths)) for step in self.cells()]

    def _grid_rows(self) -> list[str]:
        """One string per step: a group of 0/1 per block, one digit per component of its group."""
        widths = [len(group.components) for group, _ in self.layout.blocks()]
        return [
            " ".join("".join("1" if c else "0" for c in blk[:w]) for blk, w in zip(step, widths)) for step in self.grid
        ]

    def to_ecad_json(self, lossy: bool = False) -> dict[str, Any]:
        """ECAD's layout: `cache_schedule` (steps '000'.., blocks by key, components by name),
        `config`, `metrics`. ECAD has PixArt and FLUX only; other families are refused. ECAD's cells
        are compute or reuse: forecast cells and guidance reuse are refused unless `lossy`, which
        writes forecast cells as reuse and runs both guidance branches at every step."""
        from ecad.models import UnsupportedModelError

        if self.uses_v2:
            if not lossy:
                raise ScheduleError(self._v2_refusal())
            return self.without_forecast().to_ecad_json()

        adapter = _adapter(self.family)
        try:
            cs: dict[str, Any] = adapter.ecad_block_counts(self.layout)
        except UnsupportedModelError as exc:
            raise ScheduleError(str(exc)) from None
        sched: dict[str, Any] = {}
        keys = [self.layout.block_key(i) for i in range(self.layout.num_blocks)]
        comps = [g.components for g, _ in self.layout.blocks()]
        for s in range(self.num_steps):
            sched[f"{s:03d}"] = {
                k: {c: bool(self.grid[s, b, j]) for j, c in enumerate(comps[b])} for b, k in enumerate(keys)
            }
        attributes = dict(self.attributes)
        if self.timesteps is not None:
            attributes["ecad_timesteps"] = list(self.timesteps)
        cs.update(num_inference_steps=self.num_steps, name=self.name, attributes=attributes, schedule=sched)
        return {"cache_schedule": cs, "config": self._ecad_config(), "metrics": self.metrics}

    def _v2_refusal(self) -> str:
        what = []
        if self.forecast is not None:
            s, b, c = (int(i) for i in np.argwhere(self.forecast)[0])
            what.append(f"{int(self.forecast.sum())} forecast cell(s) (the first: {self._cell_name(s, b, c)})")
        if self.guidance_reuse is not None:
            what.append(f"guidance reuse on {int(self.guidance_reuse.sum())} step(s)")
        return (
            f"ECAD's schedule format has only compute and reuse cells; this schedule has {' and '.join(what)}. "
            "Keep ecad's format, or export lossily (ecad convert --lossy; Schedule.save(path, 'ecad', lossy=True)), "
            "which writes forecast cells as reuse and runs both guidance branches (its quality differs)"
        )

    def _ecad_config(self) -> dict[str, Any]:
        if self.ecad_config is not None:
            return self.ecad_config
        cfg: dict[str, Any] = {}
        if self.height is not None:
            cfg["height"] = self.height
        if self.width is not None:
            cfg["width"] = self.width
        if self.guidance_scale is not None:
            cfg["guidance_scale"] = self.guidance_scale
        if self.model is not None:
            cfg["pipeline_weights"] = self.model
        adapter = _adapter(self.family)
        names = adapter.ecad_pipeline_names
        cfg["pipeline"] = {"name": names.get(self.variant, names[adapter.default_variant]), "kwargs": {}}
        return cfg

    def save(self, path: str | os.PathLike, format: str = "ecad-schedule", lossy: bool = False) -> Path:
        """Write atomically; `format="ecad"` writes ECAD's layout (`lossy`: see `to_ecad_json`), anything
        else ours."""
        data = json_safe(self.to_ecad_json(lossy) if format == "ecad" else self.to_json())  # NaN metrics -> null
        text = json.dumps(data, indent=1, allow_nan=False) if format == "ecad" else _dumps_ours(data)
        return atomic_write_text(path, text)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Schedule):
            return NotImplemented
        a, b = self.to_json(), other.to_json()
        return a == b


def forecast_without_history(compute: np.ndarray, forecast: np.ndarray, needed: int = 2) -> np.ndarray:
    """[steps, blocks, components] bool of the forecast cells (rows in execution order) that have
    fewer than `needed` computed outputs of their component at earlier steps."""
    before = np.cumsum(compute, axis=0) - compute  # computed outputs strictly before each step
    return forecast & ~compute & (before < needed)


def repair_forecast(compute: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """`forecast` with every cell that cannot forecast (a compute cell, or fewer than two earlier
    computed outputs) turned into a reuse; rows in execution order. Searches decode genomes with it."""
    forecast = forecast & ~compute
    return forecast & ~forecast_without_history(compute, forecast)


def _dumps_ours(data: dict) -> str:
    """Indented JSON, but each step of the grid on one line so diffs read step by step."""
    return json.dumps(data, indent=2, allow_nan=False) + "\n"


# ---------------------------------------------------------------------- loading
def load_schedule(path_or_data: str | os.PathLike | dict) -> Schedule:
    """Read a schedule in our format or ECAD's (PixArt and FLUX), validating every field: anything
    else raises ScheduleError naming the file, the field and the fix, in time linear in the file."""
    if isinstance(path_or_data, dict):
        data, where = path_or_data, "schedule"
    else:
        where = str(path_or_data)
        data = read_json(path_or_data, ScheduleError, "schedule file")
    if not isinstance(data, dict):
        raise ScheduleError(f"{where}: top level must be a JSON object, got {shown(data)}")
    if data.get("format") in FORMATS:
        return _from_ours(data, where)
    if "cache_schedule" in data:
        return _from_ecad(data, where)
    if "format" in data:
        raise ScheduleError(
            f"{where}: format {str(data['format'])[:40]!r} is not supported; this ecad reads {FORMAT!r} and "
            f"{FORMAT_V2!r}"
        )
    raise ScheduleError(
        f'{where}: neither an ecad schedule (needs "format": "{FORMAT}") nor an ECAD one (needs "cache_schedule")'
    )


def _require(data: dict, key: str, where: str, kind: type | tuple[type, ...]) -> Any:
    if key not in data:
        raise ScheduleError(f"{where}: missing field {key!r}")
    return _typed(data, key, where, kind)


def _typed(data: dict, key: str, where: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """`data[key]` if it has the type (bool is not an int), else ScheduleError; `default` when absent."""
    if key not in data:
        return default
    value = data[key]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = " or ".join({"NoneType": "null"}.get(k.__name__, k.__name__) for k in kinds)
        raise ScheduleError(f"{where}: field {key!r} must be {names}, got {shown(value)}")
    return value


def _count(data: dict, key: str, where: str, low: int, high: int) -> int:
    """A bounded integer field: checked before anything of that size is allocated."""
    value = _require(data, key, where, int)
    if not low <= value <= high:
        raise ScheduleError(f"{where}: field {key!r} must be an integer {low}..{high}, got {value}")
    return value


def _no_unknown(data: dict, allowed: tuple[str, ...], where: str) -> None:
    unknown = [k for k in data if k not in allowed]
    if unknown:
        raise ScheduleError(
            f"{where}: unknown field {unknown[0][:60]!r}; the fields are {', '.join(allowed)} (remove it, or "
            "check its spelling)"
        )


def _from_ours(data: dict, where: str) -> Schedule:
    v2 = data["format"] == FORMAT_V2
    _no_unknown(data, OUR_V2_FIELDS if v2 else OUR_FIELDS, where)
    family = _require(data, "family", where, str)
    adapter = _adapter(family, where)
    try:
        layout = Layout.from_json(_require(data, "layout", where, dict))
    except ValueError as exc:
        raise ScheduleError(
            f"{where}: field 'layout' is malformed ({exc}); copy it from a schedule ecad wrote"
        ) from None
    if layout.family != family:
        raise ScheduleError(f"{where}: layout.family {layout.family!r} differs from family {family!r}")
    try:
        reference = adapter.layout_from_groups([(g.name, g.components, g.num_blocks) for g in layout.groups])
    except (ValueError, TypeError) as exc:
        known = {c for k in adapter.block_kinds for c in k.components}
        unknown = sorted({c for g in layout.groups for c in g.components} - known)
        raise ScheduleError(
            f"{where}: field 'layout' is not a {family} layout: "
            + (f"unknown component(s) {unknown[:5]}; " if unknown else "")
            + f"{exc}; copy it from a schedule ecad wrote"
        ) from None
    if layout != reference:
        raise ScheduleError(
            f"{where}: field 'layout' lists groups {layout.to_json()['groups']} but a {family} layout "
            f"with these block counts is {reference.to_json()['groups']}; copy it from a schedule "
            "ecad wrote"
        )
    layout = reference  # the adapter's own, with its display labels
    num_steps = _count(data, "num_steps", where, 1, MAX_STEPS)
    rows = _require(data, "grid", where, list)
    if len(rows) != num_steps:
        raise ScheduleError(f"{where}: grid has {len(rows)} steps but num_steps is {num_steps}; make them agree")
    grid = np.ones((num_steps, layout.num_blocks, layout.num_components), dtype=bool)  # padding cells compute
    forecast = np.zeros_like(grid)
    symbols, kinds = (
        ({COMPUTE, REUSE, FORECAST}, "C (compute), R (reuse) or F (forecast)")
        if v2
        else ({"0", "1"}, "0 (reuse) or 1 (compute)")
    )
    widths = [len(group.components) for group, _ in layout.blocks()]
    row_length = sum(widths) + len(widths) - 1
    for s, row in enumerate(rows):
        if not isinstance(row, str):
            raise ScheduleError(f"{where}: grid[{s}] must be a string of groups of {kinds}, got {shown(row)}")
        if len(row) > 2 * row_length:  # far too long to be a row: refuse before splitting it
            raise ScheduleError(
                f"{where}: grid[{s}] is {len(row)} characters; a row of this layout is {row_length} "
                f"(one group of {kinds} per block, separated by spaces)"
            )
        blocks = row.split()
        if len(blocks) != layout.num_blocks:
            raise ScheduleError(
                f"{where}: grid[{s}] has {len(blocks)} blocks, the layout has {layout.num_blocks}; one group per block"
            )
        for b, cells in enumerate(blocks):
            if len(cells) != widths[b] or set(cells) - symbols:
                raise ScheduleError(
                    f"{where}: grid[{s}] block {b} is {cells[:20]!r}; it needs {widths[b]} cells of {kinds}, "
                    "one per component of its group"
                )
            grid[s, b, : widths[b]] = [c in ("1", COMPUTE) for c in cells]
            forecast[s, b, : widths[b]] = [c == FORECAST for c in cells]
    timesteps = _typed(data, "timesteps", where, (list, type(None)))
    if timesteps is not None and len(timesteps) > num_steps:
        raise ScheduleError(
            f"{where}: field 'timesteps' lists {len(timesteps)} steps of a {num_steps}-step base grid; "
            "list each step index once"
        )
    extra: dict[str, Any] = {}
    if v2:
        order = _typed(data, "forecast_order", where, int, 1)
        reuse = _typed(data, "guidance_reuse", where, (str, type(None)))
        if reuse is not None and (len(reuse) != num_steps or set(reuse) - {"0", "1"}):
            raise ScheduleError(
                f"{where}: field 'guidance_reuse' must be one 0/1 per step ({num_steps}), got {shown(reuse[:80])}"
            )
        extra = {
            "forecast": forecast,
            "forecast_order": order,
            "guidance_reuse": None if reuse is None else np.array([c == "1" for c in reuse]),
        }
    return _build(
        where,
        layout,
        grid,
        **extra,
        timesteps=timesteps,
        name=_typed(data, "name", where, str, ""),
        variant=_typed(data, "variant", where, (str, type(None))),
        model=_typed(data, "model", where, (str, type(None))),
        height=_typed(data, "height", where, (int, type(None))),
        width=_typed(data, "width", where, (int, type(None))),
        guidance_scale=_typed(data, "guidance_scale", where, (int, float, type(None))),
        metrics=_typed(data, "metrics", where, (dict, type(None))) or {},
        attributes=_typed(data, "attributes", where, (dict, type(None))) or {},
        ecad_config=_typed(data, "ecad_config", where, (dict, type(None))),
    )


def _build(where: str, layout: Layout, grid: np.ndarray, **kw) -> Schedule:
    try:
        return Schedule(layout, grid, **kw)
    except ScheduleError as exc:
        raise ScheduleError(f"{where}: {exc}") from None


def _from_ecad(data: dict, where: str) -> Schedule:
    _no_unknown(data, ECAD_FIELDS, where)
    cs = _require(data, "cache_schedule", where, dict)
    w = f"{where}: cache_schedule"
    from ecad.models import ADAPTERS

    ecad_families = sorted((a for a in ADAPTERS.values() if a.ecad_count_keys), key=lambda a: -len(a.ecad_count_keys))
    adapter = next((a for a in ecad_families if a.ecad_claims(cs)), None)  # the most specific first
    if adapter is None:
        raise ScheduleError(f"{w}: no model family ecad knows claims this schedule; export it from ECAD again")
    _no_unknown(cs, ECAD_SCHEDULE_FIELDS + adapter.ecad_count_keys, w)
    num_steps = _count(cs, "num_inference_steps", w, 1, MAX_STEPS)  # bounded before any loop over steps
    counts = [_count(cs, key, w, 0, MAX_BLOCKS) for key in adapter.ecad_count_keys]
    if sum(counts) > MAX_BLOCKS:
        raise ScheduleError(f"{w}: {' + '.join(adapter.ecad_count_keys)} is {sum(counts)}, more than {MAX_BLOCKS}")
    try:
        layout = adapter.layout(counts)
    except ValueError as exc:
        raise ScheduleError(f"{w}: {exc}") from None
    sched = _require(cs, "schedule", w, dict)
    expected_steps = [f"{s:03d}" for s in range(num_steps)]
    if len(sched) != num_steps or set(sched) != set(expected_steps):
        raise ScheduleError(
            f"{w}.schedule: has {len(sched)} steps {sorted(sched)[:3]}..., but num_inference_steps is {num_steps}; "
            f"expected keys '000'..'{num_steps - 1:03d}'"
        )
    keys = [layout.block_key(i) for i in range(layout.num_blocks)]
    comps = [g.components for g, _ in layout.blocks()]
    grid = np.zeros((num_steps, layout.num_blocks, layout.num_components), dtype=bool)
    for s, step_key in enumerate(expected_steps):
        step = sched[step_key]
        if not isinstance(step, dict):
            raise ScheduleError(f"{w}.schedule[{step_key!r}] must be an object of blocks, got {shown(step)}")
        if len(step) != len(keys) or set(step) != set(keys):
            missing, extra = sorted(set(keys) - set(step)), sorted(set(step) - set(keys))
            raise ScheduleError(
                f"{w}.schedule[{step_key!r}] has {len(step)} blocks, expected {len(keys)} "
                f"(missing {missing[:5]}, unexpected {[k[:20] for k in extra[:5]]}); "
                f"check {' and '.join(adapter.ecad_count_keys)}"
            )
        for b, key in enumerate(keys):
            cells = step[key]
            if not isinstance(cells, dict):
                raise ScheduleError(
                    f"{w}.schedule[{step_key!r}][{key!r}] must map component names to booleans, got {shown(cells)}"
                )
            unknown = sorted(set(cells) - set(comps[b]))
            if unknown:
                raise ScheduleError(
                    f"{w}.schedule[{step_key!r}][{key!r}]: unknown component {unknown[0][:40]!r}; "
                    f"valid components are {list(comps[b])}"
                )
            for j, c in enumerate(comps[b]):
                if c not in cells:
                    raise ScheduleError(f"{w}.schedule[{step_key!r}][{key!r}]: component {c!r} is missing")
                v = cells[c]
                if not isinstance(v, bool):
                    raise ScheduleError(
                        f"{w}.schedule[{step_key!r}][{key!r}][{c!r}] is {shown(v)}; use true (compute) or false (reuse)"
                    )
                grid[s, b, j] = v
    config = _typed(data, "config", where, (dict, type(None))) or {}
    wc = f"{where}: config"
    attributes = dict(_typed(cs, "attributes", w, (dict, type(None))) or {})
    timesteps = attributes.pop("ecad_timesteps", None)
    if timesteps is not None and (not isinstance(timesteps, list) or len(timesteps) > num_steps):
        raise ScheduleError(
            f"{w}.attributes: field 'ecad_timesteps' must be a list of at most {num_steps} step indices, "
            f"got {shown(timesteps)}"
        )
    pipeline = _typed(config, "pipeline", wc, (dict, type(None))) or {}
    pipeline_name = _typed(pipeline, "name", f"{wc}.pipeline", (str, type(None)))
    _typed(pipeline, "kwargs", f"{wc}.pipeline", (dict, type(None)))
    if pipeline_name is not None and pipeline_name not in adapter.ecad_pipeline_names.values():
        raise ScheduleError(
            f"{wc}.pipeline: name {pipeline_name[:40]!r} is not an ECAD {adapter.display_name} pipeline; use one of "
            f"{', '.join(adapter.ecad_pipeline_names.values())}"
        )
    variant = next((v for v, n in adapter.ecad_pipeline_names.items() if n == pipeline_name), None)
    weights = [_typed(config, k, wc, (str, type(None))) for k in ("pipeline_weights", "transformer_weights")]
    return _build(
        where,
        layout,
        grid,
        timesteps=timesteps,
        name=_typed(cs, "name", w, str, ""),
        variant=variant,
        model=weights[0] or weights[1],
        height=_typed(config, "height", wc, (int, type(None))),
        width=_typed(config, "width", wc, (int, type(None))),
        guidance_scale=_typed(config, "guidance_scale", wc, (int, float, type(None))),
        metrics=_typed(data, "metrics", where, (dict, type(None))) or {},
        attributes=attributes,
        ecad_config=config if "config" in data else None,
    )
