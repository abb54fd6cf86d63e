"""Search spaces: one TOML file per (model, resolution, steps) setting a schedule is searched for.

A space fixes everything a candidate schedule is evaluated under (model, pipeline, scheduler,
steps, resolution, guidance, dtype, text length) plus the compute grid the search chooses bits
in: `steps x blocks x components`, flattened in ECAD's order (step-major, then blocks in
layout order, then components in ECAD order). Shipped spaces live in the repo's
`search_spaces/` directory (installed to `<prefix>/share/ecad/`); `ECAD_SEARCH_SPACES` (one
directory, or several joined with `os.pathsep`) replaces it.
"""

from __future__ import annotations

import difflib
import functools
import inspect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecad.errors import EcadError, shown
from ecad.files import read_toml
from ecad.layouts import MAX_BLOCKS, Layout
from ecad.resources import shipped_dir
from ecad.schedule import MAX_GUIDANCE, MAX_SIDE, MAX_STEPS, Schedule

ENV_VAR = "ECAD_SEARCH_SPACES"

# Bounds of a space's fields, stated in its errors and shared with the readers of what a space
# sizes (schedules: steps x blocks). Far above any published setting (50 steps, 60 blocks, 4096 px),
# they keep a hostile or mistyped file from sizing a grid, a latent or a text encoding that no
# machine holds, and are checked before anything of that size is made.
MAX_FRAMES = 1000
MAX_TEXT_LENGTH = 4096  # tokens of the prompt encoding
MAX_NAME_CHARS = 200  # name, family, variant, pipeline_class, dtype, scheduler
MAX_TEXT_CHARS = 4096  # description, and hub_id (a local directory path can be long)
MAX_KWARGS_ITEMS = 10_000  # values in one pipeline_kwargs entry, nested ones included
MAX_KWARGS_CHARS = 100_000  # characters of one string in pipeline_kwargs

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
# Call arguments ecad passes itself on every call, or that only take tensors, images or functions
# (no TOML value is one); pipeline_kwargs may not set them either.
CALL_KWARGS = {
    **dict.fromkeys(
        (
            "prompt",
            "prompt_2",
            "prompt_3",
            "prompt_embeds",
            "prompt_attention_mask",
            "pooled_prompt_embeds",
            "negative_prompt_embeds",
            "negative_prompt_attention_mask",
            "negative_pooled_prompt_embeds",
        ),
        "ecad encodes the prompts itself and passes them as embeddings",
    ),
    **dict.fromkeys(
        ("generator", "num_images_per_prompt", "num_videos_per_prompt"),
        "ecad renders one image per (prompt, seed), each with its own generator",
    ),
    **dict.fromkeys(("output_type", "return_dict"), "ecad reads the images as tensors from the call's output"),
    **dict.fromkeys(
        (
            "latents",
            "callback",
            "callback_steps",
            "callback_on_step_end",
            "callback_on_step_end_tensor_inputs",
            "ip_adapter_image",
            "ip_adapter_image_embeds",
            "negative_ip_adapter_image",
            "negative_ip_adapter_image_embeds",
        ),
        "it takes tensors, images or functions, which no TOML value is",
    ),
}
# Schedulers an error suggests: those the shipped spaces use, and a common one.
SCHEDULER_EXAMPLES = (
    "DPMSolverMultistepScheduler",
    "FlowMatchEulerDiscreteScheduler",
    "UniPCMultistepScheduler",
    "EulerDiscreteScheduler",
)
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
    "measured",
    "blocks",
)
MAX_MS_PER_IMAGE = 1e7  # ten thousand seconds: far above any one image a GPU makes


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
    # that file's parsed TOML: what a run fingerprints to refuse a resume after the file changed,
    # kept here so nothing has to read the file a second time (and maybe get a newer version)
    settings: dict[str, Any] = field(default_factory=dict, hash=False, compare=False, repr=False)
    frames: int | None = None  # frames per video (video families only)
    # a measured no-caching time per image ([measured] table), which `ecad search --dry-run` plans
    # with instead of its roofline figure; `measured_on` says on what (GPU, batch, dtype)
    measured_ms_per_image: float | None = None
    measured_on: str = ""

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
        return Schedule.full(self.layout, self.steps, **{**self.schedule_meta(), **kw})

    def schedule_meta(self) -> dict[str, Any]:
        """The settings a schedule made for this space records (resolution, guidance, model, variant)."""
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


@dataclass(frozen=True)
class SpaceListing:
    """What `ecad spaces` shows of one space file, read without the model families' code (which
    imports torch): the listing answers in a blink, and a file it cannot read says why. Using a
    space (`load_space`) checks the rest: family, pipeline, scheduler, block kinds."""

    name: str
    path: Path
    family: str = ""
    blocks: int = 0
    steps: int = 0
    height: int = 0
    width: int = 0
    frames: int | None = None
    model: str = ""
    problem: str | None = None  # why the file cannot be a space; None when its header reads

    def __str__(self) -> str:
        if self.problem:
            return f"{self.name:22s} (not usable: {self.problem})"
        frames = f" x {self.frames} frames" if self.frames else ""
        return (
            f"{self.name:22s} {self.family:7s} {self.blocks:3d} blocks  {self.steps:3d} steps  "
            f"{self.height}x{self.width}{frames}  {self.model}"
        )


def list_space_files() -> list[SpaceListing]:
    """Every space `list_spaces` names (the first directory's file where names repeat), from
    each file's own fields, checked as `load_space` checks them."""
    listings = []
    for name in list_spaces():
        path = next(d / f"{name}.toml" for d in spaces_dirs() if _is_file(d / f"{name}.toml"))
        listings.append(_listing(name, path))
    return listings


def _listing(name: str, path: Path) -> SpaceListing:
    where = str(path)
    try:
        data = read_toml(path, SpaceError, "search space file")
        blocks = _get(data, "blocks", where, list)
        counts = [_int(b, "count", where, 1, MAX_BLOCKS, table="blocks") if isinstance(b, dict) else 0 for b in blocks]
        return SpaceListing(
            name=name,
            path=path,
            family=_text(data, "family", where, MAX_NAME_CHARS),
            blocks=sum(counts),
            steps=_int(data, "steps", where, 1, MAX_STEPS),
            height=_int(data, "height", where, 1, MAX_SIDE),
            width=_int(data, "width", where, 1, MAX_SIDE),
            frames=_int(data, "frames", where, 1, MAX_FRAMES) if "frames" in data else None,
            model=_text(data, "hub_id", where, MAX_TEXT_CHARS, min_chars=1),
        )
    except SpaceError as exc:
        return SpaceListing(name=name, path=path, problem=str(exc))


def load_space(name_or_path: str | os.PathLike) -> SearchSpace:
    """Load a space by bare name (looked up in `spaces_dirs()`) or by a path to a `.toml` file."""
    text = os.fspath(name_or_path)
    if text.endswith(".toml") or isinstance(name_or_path, Path):
        path = Path(text).expanduser()
        if not _is_file(path):
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
        if _is_file(path):
            return _parse(path)
    dirs = ", ".join(str(d) for d in spaces_dirs())
    available = list_spaces()
    close = difflib.get_close_matches(text.replace("_", "-").lower(), available, n=1, cutoff=0.6)
    raise SpaceError(
        f"unknown search space {text!r}"
        + (f" (did you mean {close[0]!r}?)" if close else "")
        + f" (looked in {dirs}); available spaces: "
        f"{', '.join(available) if available else '(none)'}. Pass one of them, a path to a .toml file, "
        f"or point {ENV_VAR} at a directory of space files"
    )


def _is_file(path: Path) -> bool:
    """Whether `path` is a file; False where it cannot be one (a name too long for the file system)."""
    try:
        return path.is_file()
    except OSError:
        return False


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
        if kind is not float:
            return value
        try:
            return float(value)
        except OverflowError:  # an integer beyond any float
            raise SpaceError(
                f"{where}: field {label!r} is {shown(value)}, out of range; use a smaller number"
            ) from None
    raise SpaceError(
        f"{where}: field {label!r} must be {_TYPE_NAMES[kind]}, got {shown(value)} ({type(value).__name__})"
    )


def _int(data: dict, key: str, where: str, lo: int, hi: int, *, default: Any = ..., table: str = "") -> int:
    """An integer field within lo..hi, checked before anything of that size exists."""
    value = _get(data, key, where, int, default=default, table=table)
    return _in_range(value, f"{table}.{key}" if table else key, where, lo, hi)


def _in_range(value: int, label: str, where: str, lo: int, hi: int) -> int:
    if value < lo:
        raise SpaceError(f"{where}: field {label!r} must be >= {lo} (an integer {lo}..{hi}), got {shown(value)}")
    if value > hi:
        raise SpaceError(f"{where}: field {label!r} must be <= {hi} (an integer {lo}..{hi}), got {shown(value)}")
    return value


def _text(
    data: dict, key: str, where: str, max_chars: int, *, default: Any = ..., min_chars: int = 0, one_line: bool = True
) -> Any:
    """A string field of sane length; names and ids (one line) hold no control characters, which
    would only fail later, in a path or a Hub request."""
    value = _get(data, key, where, str, default=default)
    if value is None:
        return value
    if not min_chars <= len(value) <= max_chars:
        size = f"{min_chars} to {max_chars}" if min_chars else f"at most {max_chars}"
        raise SpaceError(f"{where}: field {key!r} must be {size} characters long, got {len(value)}")
    if one_line and any(ch < " " or ch == "\x7f" for ch in value):
        raise SpaceError(f"{where}: field {key!r} holds a control character ({shown(value)}); remove it")
    return value


def _check_keys(data: dict, allowed, where: str, table: str = "") -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        what = f"in [{table}]" if table else "at top level"
        raise SpaceError(f"{where}: unknown field {shown(unknown[0])} {what}; allowed fields: {', '.join(allowed)}")


def _parse(path: Path) -> SearchSpace:
    """Every field is checked (type, range, size) in one pass over the file's data, in time linear
    in it, before anything it sizes (a grid, a pipeline) is made."""
    where = str(path)
    data = read_toml(path, SpaceError, "search space file")
    _check_keys(data, TOP_LEVEL_KEYS, where)

    name = _text(data, "name", where, MAX_NAME_CHARS)
    if name != path.stem:
        raise SpaceError(f"{where}: name {name!r} differs from the file name {path.stem!r}; make them agree")
    description = _text(data, "description", where, MAX_TEXT_CHARS, default="", one_line=False)
    from ecad.models import FAMILIES, adapter_for

    family = _text(data, "family", where, MAX_NAME_CHARS)
    if family not in FAMILIES:
        raise SpaceError(f"{where}: family {family!r} is unknown; use one of {', '.join(FAMILIES)}")
    adapter = adapter_for(family)
    variant = _text(data, "variant", where, MAX_NAME_CHARS, default=None)
    problem = adapter.variant_error(variant)
    if problem:
        raise SpaceError(f"{where}: {problem}")
    hub_id = _text(data, "hub_id", where, MAX_TEXT_CHARS, min_chars=1)
    pipeline_class = _text(data, "pipeline_class", where, MAX_NAME_CHARS)
    expected_cls = adapter.pipeline_classes[variant]
    if pipeline_class != expected_cls:
        raise SpaceError(
            f"{where}: pipeline_class {pipeline_class!r} does not fit family {family!r}"
            + (f" variant {variant!r}" if variant else "")
            + f"; use {expected_cls!r}"
        )
    dtype = _text(data, "dtype", where, MAX_NAME_CHARS)
    if dtype not in DTYPES:
        raise SpaceError(f"{where}: dtype {dtype!r} is unknown; use one of {', '.join(DTYPES)}")
    scheduler = _scheduler(_text(data, "scheduler", where, MAX_NAME_CHARS), where)
    steps = _int(data, "steps", where, 1, MAX_STEPS)
    height, width = (_side(data, key, adapter, where) for key in ("height", "width"))
    guidance_scale = _get(data, "guidance_scale", where, float)
    if not (math.isfinite(guidance_scale) and 0 <= guidance_scale <= MAX_GUIDANCE):
        raise SpaceError(
            f"{where}: field 'guidance_scale' must be a finite number 0..{MAX_GUIDANCE:g}, got {guidance_scale}"
        )
    text_length = _int(data, "text_length", where, 1, MAX_TEXT_LENGTH)
    frames = None
    if adapter.video:
        frames = _int(data, "frames", where, 1, MAX_FRAMES)
    elif "frames" in data:
        raise SpaceError(
            f"{where}: field 'frames' is only for video families; {adapter.display_name} makes images, remove it"
        )

    pipeline_kwargs = _pipeline_kwargs(_get(data, "pipeline_kwargs", where, dict, default={}), pipeline_class, where)

    ts = _get(data, "timesteps", where, dict, default={})
    _check_keys(ts, ("enabled", "min_steps"), where, "timesteps")
    timesteps_enabled = _get(ts, "enabled", where, bool, default=False, table="timesteps")
    fewest, why = adapter.min_run_steps(variant)
    if steps < fewest:
        raise SpaceError(
            f"{where}: field 'steps' is {steps}, but {adapter.display_name} needs at least {fewest} ({why})"
        )
    min_steps = _get(ts, "min_steps", where, int, default=fewest, table="timesteps")
    if not fewest <= min_steps <= steps:
        raise SpaceError(
            f"{where}: field 'timesteps.min_steps' must be between {fewest} and steps ({steps}), got {shown(min_steps)}"
            + (f"; {adapter.display_name} needs at least {fewest} ({why})" if min_steps < fewest else "")
        )

    constraints = dict(_get(data, "constraints", where, dict, default={}))
    _check_keys(constraints, tuple(CONSTRAINTS), where, "constraints")
    for key, value in constraints.items():
        desc, ok = CONSTRAINTS[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not number or (isinstance(value, float) and not math.isfinite(value)) or not ok(value):
            raise SpaceError(f"{where}: field 'constraints.{key}' must be {desc}, got {shown(value)}")

    measured = _get(data, "measured", where, dict, default={})
    _check_keys(measured, ("ms_per_image", "on"), where, "measured")
    ms_per_image = None
    if measured:
        ms_per_image = _get(measured, "ms_per_image", where, float, table="measured")
        if not (math.isfinite(ms_per_image) and 0 < ms_per_image <= MAX_MS_PER_IMAGE):
            raise SpaceError(
                f"{where}: field 'measured.ms_per_image' must be a number of milliseconds in (0, {MAX_MS_PER_IMAGE:g}]"
                f", got {shown(ms_per_image)}"
            )
    measured_on = _text(measured, "on", where, MAX_TEXT_CHARS, default="")
    if measured and not measured_on:
        raise SpaceError(
            f"{where}: table [measured] needs 'on', what the time was measured on "
            '(e.g. on = "H100 SXM, batch 100, float16, no caching")'
        )

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
        settings=data,
        frames=frames,
        measured_ms_per_image=ms_per_image,
        measured_on=measured_on,
    )


def _side(data: dict, key: str, adapter, where: str) -> int:
    """Height or width: a multiple of what the family's pipelines take, at most MAX_SIDE pixels."""
    multiple = adapter.size_multiple
    value = _int(data, key, where, multiple, MAX_SIDE // multiple * multiple)
    if value % multiple:
        raise SpaceError(
            f"{where}: field {key!r} is {value}; {adapter.display_name} needs a multiple of "
            f"{multiple} (VAE scale x patch size)"
        )
    return value


def _scheduler(name: str, where: str) -> str:
    """The name of a diffusers scheduler class (checked now, not when the model has loaded)."""
    import diffusers

    cls = None
    if name.isidentifier() and not name.startswith("_"):
        try:
            cls = getattr(diffusers, name, None)
        except (ImportError, RuntimeError):  # a lazily imported module whose dependencies are missing
            cls = None
    if not (
        isinstance(cls, type) and issubclass(cls, diffusers.SchedulerMixin) and cls is not diffusers.SchedulerMixin
    ):
        raise SpaceError(
            f"{where}: field 'scheduler' is {shown(name)}, not a diffusers scheduler class; use one such as "
            f"{', '.join(SCHEDULER_EXAMPLES)} (any subclass of diffusers.SchedulerMixin that this diffusers ships)"
        )
    return name


@functools.cache
def _call_parameters(pipeline_class: str) -> tuple[str, ...]:
    """The keyword arguments a pipeline class's call takes by name (**kwargs catch-alls not included)."""
    import diffusers

    params = inspect.signature(getattr(diffusers, pipeline_class).__call__).parameters.values()
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return tuple(p.name for p in params if p.kind in named and p.name != "self")


def _pipeline_kwargs(table: dict, pipeline_class: str, where: str) -> dict[str, Any]:
    """[pipeline_kwargs]: arguments the pipeline's call takes by name, holding plain data only."""
    params = _call_parameters(pipeline_class)
    for key, value in table.items():
        if key in RESERVED_KWARGS:
            raise SpaceError(
                f"{where}: [pipeline_kwargs] may not set {key!r}; the space sets it through {RESERVED_KWARGS[key]!r}"
            )
        if key in CALL_KWARGS:
            raise SpaceError(f"{where}: [pipeline_kwargs] may not set {key!r}: {CALL_KWARGS[key]}; remove it")
        if key not in params:
            accepted = [p for p in params if p not in RESERVED_KWARGS and p not in CALL_KWARGS]
            raise SpaceError(
                f"{where}: field {shown(f'pipeline_kwargs.{key}')} is not an argument of {pipeline_class}'s call; "
                f"it takes {', '.join(accepted)}"
            )
        _check_plain(value, key, where)
    return dict(table)


def _check_plain(value: Any, key: str, where: str) -> None:
    """`pipeline_kwargs.KEY` is plain TOML data (strings, booleans, 64-bit integers, finite numbers,
    arrays and tables of these) of bounded size. Iterative, so any depth is safe, and linear: a
    value's place is a (parent, part) chain, spelled out only for the error."""
    root = (((), "pipeline_kwargs"), key)
    stack, items = [(value, root)], 0
    while stack:
        node, at = stack.pop()
        items += 1
        if items > MAX_KWARGS_ITEMS:
            raise SpaceError(f"{where}: field {_label(root)!r} holds more than {MAX_KWARGS_ITEMS} values; pass fewer")
        if isinstance(node, dict):
            stack.extend((v, (at, k)) for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, (at, i)) for i, v in enumerate(node))
        elif isinstance(node, str):
            if len(node) > MAX_KWARGS_CHARS:
                raise SpaceError(
                    f"{where}: field {_label(at)!r} is a string of {len(node)} characters; "
                    f"at most {MAX_KWARGS_CHARS} are taken"
                )
        elif isinstance(node, bool):
            pass
        elif isinstance(node, int):
            if not -(2**63) <= node < 2**63:
                raise SpaceError(
                    f"{where}: field {_label(at)!r} is {shown(node)}; TOML integers are 64-bit, use a smaller one"
                )
        elif isinstance(node, float):
            if not math.isfinite(node):
                raise SpaceError(f"{where}: field {_label(at)!r} is {node}; pipeline arguments take finite numbers")
        else:
            raise SpaceError(
                f"{where}: field {_label(at)!r} is a {type(node).__name__} ({shown(node)}); pipeline arguments "
                "take strings, booleans, integers, finite numbers, and arrays or tables of these"
            )


def _label(at: tuple) -> str:
    """'pipeline_kwargs.KEY[1].x' of a (parent, part) chain, each name shortened."""
    parts = []
    while at:
        at, part = at
        parts.append(f"[{part}]" if isinstance(part, int) else "." + (part if len(part) <= 40 else part[:40] + "..."))
    return "".join(reversed(parts))[1:]


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
    groups, total = [], 0
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
                f"{where}: {label}.name is {shown(gname)}; {family} block group {i + 1} is {position!r} "
                f"(groups in order: {expected})"
            )
        count = _int(table, "count", where, 1, MAX_BLOCKS, table=label)
        total += count
        if total > MAX_BLOCKS:
            raise SpaceError(
                f"{where}: field '{label}.count' brings [[blocks]] to {total} blocks; a space has at most "
                f"{MAX_BLOCKS} in all"
            )
        comps = _get(table, "components", where, list, table=label)
        valid = list(dict.fromkeys(c for k in same_name for c in k.components))
        unknown = [c for c in comps if not isinstance(c, str) or c not in valid]
        if unknown:
            raise SpaceError(
                f"{where}: {label} ({gname}) has unknown component {shown(unknown[0])}; valid components are {valid}"
            )
        if tuple(comps) not in {k.components for k in same_name}:
            sets = " or ".join(str(list(k.components)) for k in same_name)
            raise SpaceError(
                f"{where}: {label}.components is {shown(comps)}; {family} {gname} needs exactly {sets} "
                "in this (grid) order"
            )
        groups.append((gname, comps, count))
    try:
        return adapter.layout_from_groups(groups)
    except ValueError as exc:
        raise SpaceError(f"{where}: [[blocks]]: {exc}") from None


__all__ = [
    "SearchSpace",
    "SpaceError",
    "list_spaces",
    "load_space",
    "spaces_dirs",
    "ENV_VAR",
    "MAX_TEXT_LENGTH",
    "MAX_FRAMES",
]
