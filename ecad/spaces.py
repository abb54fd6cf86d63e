"""Search spaces: one TOML file per (model, resolution, steps) setting a schedule is searched for.

A space fixes everything a candidate schedule is evaluated under (model, pipeline, scheduler,
steps, resolution, guidance, dtype, text length) plus the compute grid the search chooses bits
in: `steps x blocks x components`, flattened in ECAD's order (step-major, then blocks in
layout order, then components in ECAD order). Shipped spaces live in the repo's
`search_spaces/` directory (installed to `<prefix>/share/ecad/`); `ECAD_SEARCH_SPACES` (one
directory, or several joined with `os.pathsep`) replaces it.
"""

from __future__ import annotations

import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecad.errors import EcadError
from ecad.layouts import Layout
from ecad.resources import shipped_dir
from ecad.schedule import Schedule

ENV_VAR = "ECAD_SEARCH_SPACES"

DTYPES = ("float16", "bfloat16", "float32")
# Call arguments a space sets through its own fields; pipeline_kwargs may not override them.
RESERVED_KWARGS = {
    "height": "height",
    "width": "width",
    "num_inference_steps": "steps",
    "guidance_scale": "guidance_scale",
    "max_sequence_length": "text_length",
    "timesteps": "[timesteps]",
    "sigmas": "[timesteps]",
    "num_frames": "frames",
}
# Known [constraints] keys -> (description, check(value) -> bool).
CONSTRAINTS = {
    "max_macs_fraction": (
        "a number in (0, 1]: the most transformer MACs a schedule may use, relative to no caching",
        lambda v: 0 < v <= 1,
    ),
}
TOP_LEVEL_KEYS = (
    "name",
    "description",
    "family",
    "variant",
    "hub_id",
    "pipeline_class",
    "dtype",
    "scheduler",
    "steps",
    "height",
    "width",
    "frames",
    "guidance_scale",
    "text_length",
    "pipeline_kwargs",
    "timesteps",
    "constraints",
    "blocks",
)


class SpaceError(EcadError, ValueError):
    """A search space is missing, malformed or does not fit a schedule; the message names the fix."""


@dataclass(frozen=True)
class SearchSpace:
    """Everything a schedule search runs under; load with `load_space`."""

    name: str
    description: str
    family: str  # a registered adapter's family (`ecad.models.FAMILIES`)
    variant: str | None  # the family's pipeline variant (PixArt: "alpha" | "sigma"); None where it has one
    hub_id: str  # Hub id, local directory, or an "ecad-tiny/..." builder name
    pipeline_class: str  # diffusers pipeline class name
    layout: Layout
    steps: int
    height: int
    width: int
    guidance_scale: float
    dtype: str  # "float16" | "bfloat16" | "float32"
    scheduler: str  # diffusers scheduler class name
    text_length: int  # max_sequence_length of the (T5) prompt encoding
    pipeline_kwargs: dict[str, Any] = field(default_factory=dict, hash=False)
    timesteps_enabled: bool = False  # the search may also choose a subset of the base steps
    min_steps: int = 1  # fewest base steps a schedule may run; only read when timesteps_enabled
    constraints: dict[str, Any] = field(default_factory=dict, hash=False)
    source: Path | None = None  # the TOML file it was loaded from
    frames: int | None = None  # frames per video (video families only)

    @property
    def adapter(self):
        """The family's adapter: everything ecad knows about this model family."""
        from ecad.models import adapter_for

        return adapter_for(self.family)

    @property
    def model(self) -> str:
        """The hub id (what `Schedule.model` records)."""
        return self.hub_id

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    @property
    def num_bits(self) -> int:
        """Length of a schedule's bit vector: steps x blocks x components."""
        return self.steps * self.layout.num_blocks * self.layout.num_components

    @property
    def is_tiny(self) -> bool:
        from ecad.models.tiny import TINY_PREFIX

        return self.hub_id.startswith(TINY_PREFIX)

    def call_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for the pipeline call (prompt, generator, output_type not included)."""
        frames = {"num_frames": self.frames} if self.frames is not None else {}
        return {
            "height": self.height,
            "width": self.width,
            "num_inference_steps": self.steps,
            **frames,
            "guidance_scale": self.guidance_scale,
            "max_sequence_length": self.text_length,
            **self.pipeline_kwargs,
        }

    def full_schedule(self, **kw) -> Schedule:
        """The no-caching schedule of this space."""
        return Schedule.full(self.layout, self.steps, **{**self._schedule_meta(), **kw})

    def _schedule_meta(self) -> dict[str, Any]:
        return dict(
            height=self.height,
            width=self.width,
            guidance_scale=self.guidance_scale,
            model=self.model,
            variant=self.variant,
        )

    def check_schedule(self, schedule: Schedule, steps: bool = True) -> Schedule:
        """Raise SpaceError unless `schedule` has this space's layout and steps (and a permitted step
        subset). `steps=False` checks the layout only (counting MACs needs the model, not its sampler)."""
        where = f"schedule {schedule.name!r}" if schedule.name else "schedule"
        if schedule.layout != self.layout:
            raise SpaceError(
                f"{where} has layout {schedule.layout.describe()}, but space {self.name!r} uses "
                f"{self.layout.describe()}; use a schedule searched for a {self.adapter.display_name} model with that "
                "block layout"
            )
        if not steps:
            return schedule
        if schedule.num_steps != self.steps:
            raise SpaceError(
                f"{where} has {schedule.num_steps} steps, but space {self.name!r} runs {self.steps}; "
                f"use a schedule searched with {self.steps} steps or a space with {schedule.num_steps}"
            )
        if schedule.timesteps is not None and len(schedule.timesteps) != self.steps:
            if not self.timesteps_enabled:
                raise SpaceError(
                    f"{where} runs a subset of {len(schedule.timesteps)} of the {self.steps} steps, but space "
                    f"{self.name!r} does not allow step selection; set [timesteps] enabled = true in {self.source}"
                )
            if len(schedule.timesteps) < self.min_steps:
                raise SpaceError(
                    f"{where} runs {len(schedule.timesteps)} steps, fewer than the space's min_steps "
                    f"{self.min_steps}; select more steps or lower [timesteps] min_steps in {self.source}"
                )
        return schedule


# ------------------------------------------------------------------- locating
def spaces_dirs() -> list[Path]:
    """Directories searched for bare space names, in order."""
    env = os.environ.get(ENV_VAR)
    if env:
        return [Path(p).expanduser() for p in env.split(os.pathsep) if p]
    return [shipped_dir("search_spaces")]


def list_spaces() -> list[str]:
    """Names (file stems) of the spaces found in `spaces_dirs()`, sorted, first directory winning."""
    names: set[str] = set()
    for d in spaces_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.glob("*.toml"))
    return sorted(names)


def load_space(name_or_path: str | os.PathLike) -> SearchSpace:
    """Load a space by bare name (looked up in `spaces_dirs()`) or by a path to a `.toml` file."""
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or isinstance(name_or_path, Path):
        path = Path(text).expanduser()
        if not path.is_file():
            raise SpaceError(
                f"search space file {path} does not exist; check the path or pass a name from: "
                f"{', '.join(list_spaces()) or '(none found)'}"
            )
        return _parse(path)
    if os.sep in text or "/" in text:
        raise SpaceError(
            f"{text!r} is neither a space name nor a .toml path; pass a file ending in .toml "
            f"or a name from: {', '.join(list_spaces()) or '(none found)'}"
        )
    for d in spaces_dirs():
        path = d / f"{text}.toml"
        if path.is_file():
            return _parse(path)
    dirs = ", ".join(str(d) for d in spaces_dirs())
    available = list_spaces()
    raise SpaceError(
        f"unknown search space {text!r} (looked in {dirs}); available spaces: "
        f"{', '.join(available) if available else '(none)'}. Pass one of them, a path to a .toml file, "
        f"or point {ENV_VAR} at a directory of space files"
    )


# -------------------------------------------------------------------- parsing
_TYPE_NAMES = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "true or false",
    dict: "a table",
    list: "an array",
}


def _get(data: dict, key: str, where: str, kind: type, *, default: Any = ..., table: str = "") -> Any:
    label = f"{table}.{key}" if table else key
    if key not in data:
        if default is not ...:
            return default
        raise SpaceError(f"{where}: missing field {label!r}; add `{key} = ...` (see search_spaces/*.toml for examples)")
    value = data[key]
    accepted = (int, float) if kind is float else kind  # an integer is a fine number
    if isinstance(value, accepted) and not (kind in (int, float) and isinstance(value, bool)):
        return float(value) if kind is float else value
    raise SpaceError(f"{where}: field {label!r} must be {_TYPE_NAMES[kind]}, got {value!r} ({type(value).__name__})")


def _positive(value: int, label: str, where: str, minimum: int = 1) -> int:
    if value < minimum:
        raise SpaceError(f"{where}: field {label!r} must be >= {minimum}, got {value}")
    return value


def _check_keys(data: dict, allowed, where: str, table: str = "") -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        what = f"in [{table}]" if table else "at top level"
        raise SpaceError(f"{where}: unknown field {unknown[0]!r} {what}; allowed fields: {', '.join(allowed)}")


def _parse(path: Path) -> SearchSpace:
    where = str(path)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise SpaceError(f"{where}: not valid TOML ({exc}); fix the syntax") from None
    _check_keys(data, TOP_LEVEL_KEYS, where)

    name = _get(data, "name", where, str)
    if name != path.stem:
        raise SpaceError(f"{where}: name {name!r} differs from the file name {path.stem!r}; make them agree")
    description = _get(data, "description", where, str, default="")
    from ecad.models import FAMILIES, adapter_for

    family = _get(data, "family", where, str)
    if family not in FAMILIES:
        raise SpaceError(f"{where}: family {family!r} is unknown; use one of {', '.join(FAMILIES)}")
    adapter = adapter_for(family)
    variant = _get(data, "variant", where, str, default=None)
    problem = adapter.variant_error(variant)
    if problem:
        raise SpaceError(f"{where}: {problem}")
    hub_id = _get(data, "hub_id", where, str)
    pipeline_class = _get(data, "pipeline_class", where, str)
    expected_cls = adapter.pipeline_classes[variant]
    if pipeline_class != expected_cls:
        raise SpaceError(
            f"{where}: pipeline_class {pipeline_class!r} does not fit family {family!r}"
            + (f" variant {variant!r}" if variant else "")
            + f"; use {expected_cls!r}"
        )
    dtype = _get(data, "dtype", where, str)
    if dtype not in DTYPES:
        raise SpaceError(f"{where}: dtype {dtype!r} is unknown; use one of {', '.join(DTYPES)}")
    scheduler = _get(data, "scheduler", where, str)
    if not scheduler.isidentifier():
        raise SpaceError(
            f"{where}: scheduler {scheduler!r} must be a diffusers scheduler class name, "
            "e.g. 'DPMSolverMultistepScheduler'"
        )
    steps = _positive(_get(data, "steps", where, int), "steps", where)
    height = _positive(_get(data, "height", where, int), "height", where)
    width = _positive(_get(data, "width", where, int), "width", where)
    for key, value in (("height", height), ("width", width)):
        if value % adapter.size_multiple:
            raise SpaceError(
                f"{where}: field {key!r} is {value}; {adapter.display_name} needs a multiple of "
                f"{adapter.size_multiple} (VAE scale x patch size)"
            )
    guidance_scale = _get(data, "guidance_scale", where, float)
    if not math.isfinite(guidance_scale) or guidance_scale < 0:
        raise SpaceError(f"{where}: field 'guidance_scale' must be a finite number >= 0, got {guidance_scale}")
    text_length = _positive(_get(data, "text_length", where, int), "text_length", where)
    frames = None
    if adapter.video:
        frames = _positive(_get(data, "frames", where, int), "frames", where)
    elif "frames" in data:
        raise SpaceError(
            f"{where}: field 'frames' is only for video families; {adapter.display_name} makes images, remove it"
        )

    pipeline_kwargs = dict(_get(data, "pipeline_kwargs", where, dict, default={}))
    for key in pipeline_kwargs:
        if key in RESERVED_KWARGS:
            raise SpaceError(
                f"{where}: [pipeline_kwargs] may not set {key!r}; the space sets it through {RESERVED_KWARGS[key]!r}"
            )

    ts = _get(data, "timesteps", where, dict, default={})
    _check_keys(ts, ("enabled", "min_steps"), where, "timesteps")
    timesteps_enabled = _get(ts, "enabled", where, bool, default=False, table="timesteps")
    min_steps = _get(ts, "min_steps", where, int, default=1, table="timesteps")
    if not 1 <= min_steps <= steps:
        raise SpaceError(f"{where}: field 'timesteps.min_steps' must be between 1 and steps ({steps}), got {min_steps}")

    constraints = dict(_get(data, "constraints", where, dict, default={}))
    _check_keys(constraints, tuple(CONSTRAINTS), where, "constraints")
    for key, value in constraints.items():
        desc, ok = CONSTRAINTS[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
            raise SpaceError(f"{where}: field 'constraints.{key}' must be {desc}, got {value!r}")

    layout = _parse_blocks(data, adapter, where)
    return SearchSpace(
        name=name,
        description=description,
        family=family,
        variant=variant,
        hub_id=hub_id,
        pipeline_class=pipeline_class,
        layout=layout,
        steps=steps,
        height=height,
        width=width,
        guidance_scale=guidance_scale,
        dtype=dtype,
        scheduler=scheduler,
        text_length=text_length,
        pipeline_kwargs=pipeline_kwargs,
        timesteps_enabled=timesteps_enabled,
        min_steps=min_steps,
        constraints=constraints,
        source=path,
        frames=frames,
    )


def _parse_blocks(data: dict, adapter, where: str) -> Layout:
    """Read [[blocks]] and check it against the family's block kinds (group names, order, components)."""
    blocks = _get(data, "blocks", where, list)
    kinds, family = adapter.block_kinds, adapter.family
    expected = adapter.describe_kinds()
    n_min, n_max = sum(not k.optional for k in kinds), len(kinds)
    if not n_min <= len(blocks) <= n_max:
        needs = str(n_min) if n_min == n_max else f"{n_min} to {n_max}"
        raise SpaceError(
            f"{where}: [[blocks]] has {len(blocks)} group(s), family {family!r} needs {needs}, "
            f"in this order: {expected}"
        )
    groups = []
    for i, table in enumerate(blocks):
        label = f"blocks[{i}]"
        if not isinstance(table, dict):
            raise SpaceError(f"{where}: {label} must be a table ([[blocks]] with name, count, components)")
        _check_keys(table, ("name", "count", "components"), where, label)
        gname = _get(table, "name", where, str, table=label)
        same_name = [k for k in kinds if k.name == gname]
        if not same_name:
            position = kinds[min(i, len(kinds) - 1)].name
            raise SpaceError(
                f"{where}: {label}.name is {gname!r}; {family} block group {i + 1} is {position!r} "
                f"(groups in order: {expected})"
            )
        count = _positive(_get(table, "count", where, int, table=label), f"{label}.count", where)
        comps = _get(table, "components", where, list, table=label)
        valid = list(dict.fromkeys(c for k in same_name for c in k.components))
        unknown = [c for c in comps if c not in valid]
        if unknown:
            raise SpaceError(
                f"{where}: {label} ({gname}) has unknown component {unknown[0]!r}; valid components are {valid}"
            )
        if tuple(comps) not in {k.components for k in same_name}:
            sets = " or ".join(str(list(k.components)) for k in same_name)
            raise SpaceError(
                f"{where}: {label}.components is {comps}; {family} {gname} needs exactly {sets} in this (grid) order"
            )
        groups.append((gname, comps, count))
    try:
        return adapter.layout_from_groups(groups)
    except ValueError as exc:
        raise SpaceError(f"{where}: [[blocks]]: {exc}") from None


__all__ = ["SearchSpace", "SpaceError", "list_spaces", "load_space", "spaces_dirs", "ENV_VAR"]
