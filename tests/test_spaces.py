"""Search spaces: shipped TOML files, bit-vector order, and error messages."""

from __future__ import annotations

import collections
import copy
import dataclasses
import datetime
import json
import math
import random
import signal
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from ecad.layouts import MAX_BLOCKS
from ecad.models.flux import flux_layout
from ecad.models.pixart import pixart_layout
from ecad.resources import shipped_dir
from ecad.schedule import MAX_GUIDANCE, MAX_SIDE, MAX_STEPS, Schedule, ScheduleError
from ecad.spaces import (
    ENV_VAR,
    MAX_FRAMES,
    MAX_TEXT_LENGTH,
    RESERVED_KWARGS,
    TOP_LEVEL_KEYS,
    SearchSpace,
    SpaceError,
    list_spaces,
    load_space,
)

SHIPPED = {
    # name: (family, variant, hub id, blocks per group, steps, resolution, dtype, text length)
    "pixart-alpha-256": ("pixart", "alpha", "PixArt-alpha/PixArt-XL-2-256x256", (28,), 20, 256, "float16", 120),
    "pixart-alpha-512": ("pixart", "alpha", "PixArt-alpha/PixArt-XL-2-512x512", (28,), 20, 512, "float16", 120),
    "pixart-alpha-1024": ("pixart", "alpha", "PixArt-alpha/PixArt-XL-2-1024-MS", (28,), 20, 1024, "float16", 120),
    "pixart-sigma-512": ("pixart", "sigma", "PixArt-alpha/PixArt-Sigma-XL-2-512-MS", (28,), 20, 512, "float16", 300),
    "pixart-sigma-1024": ("pixart", "sigma", "PixArt-alpha/PixArt-Sigma-XL-2-1024-MS", (28,), 20, 1024, "float16", 300),
    "flux-dev-256": ("flux", None, "black-forest-labs/FLUX.1-dev", (19, 38), 28, 256, "bfloat16", 512),
    "flux-dev-1024": ("flux", None, "black-forest-labs/FLUX.1-dev", (19, 38), 28, 1024, "bfloat16", 512),
    "tiny-pixart": ("pixart", "alpha", "ecad-tiny/pixart-alpha", (4,), 8, 16, "float32", 16),
    "tiny-flux": ("flux", None, "ecad-tiny/flux", (2, 2), 8, 16, "float32", 16),
}


@pytest.fixture(autouse=True)
def _default_dir(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


def test_list_spaces_has_every_shipped_space():
    assert set(SHIPPED) <= set(list_spaces())


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_space_loads_with_documented_shape(name):
    family, variant, hub, counts, steps, res, dtype, text_length = SHIPPED[name]
    space = load_space(name)
    assert space.name == name and space.source == shipped_dir("search_spaces") / f"{name}.toml"
    assert space.family == family and space.variant == variant and space.model == hub == space.hub_id
    assert space.layout == (pixart_layout(*counts) if family == "pixart" else flux_layout(*counts))
    assert space.steps == steps and (space.height, space.width) == (res, res)
    assert space.dtype == dtype and space.torch_dtype == getattr(torch, dtype)
    assert space.text_length == text_length
    assert (
        space.pipeline_class
        == {"alpha": "PixArtAlphaPipeline", "sigma": "PixArtSigmaPipeline", None: "FluxPipeline"}[variant]
    )
    assert space.scheduler == (
        "DPMSolverMultistepScheduler" if family == "pixart" else "FlowMatchEulerDiscreteScheduler"
    )
    assert space.guidance_scale == (4.5 if family == "pixart" else 3.5)
    assert space.description
    if family == "pixart":
        assert space.pipeline_kwargs.get("clean_caption") is False
    assert space.num_bits == steps * sum(counts) * 3
    full = space.full_schedule()
    assert full.compute_fraction() == 1.0 and full.model == hub and full.height == res
    assert space.check_schedule(full) is full


def test_load_by_path_and_env_override(tmp_path, monkeypatch):
    src = (shipped_dir("search_spaces") / "tiny-pixart.toml").read_text()
    (tmp_path / "tiny-pixart.toml").write_text(src.replace("steps = 8", "steps = 6"))
    assert load_space(tmp_path / "tiny-pixart.toml").steps == 6
    assert load_space(str(tmp_path / "tiny-pixart.toml")).steps == 6
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert list_spaces() == ["tiny-pixart"]
    assert load_space("tiny-pixart").steps == 6


@pytest.mark.parametrize("name,bits", [("pixart-alpha-256", 20 * 28 * 3), ("flux-dev-256", 28 * 57 * 3)])
def test_bits_round_trip_in_ecad_order(name, bits):
    space = load_space(name)
    assert space.num_bits == bits
    rng = np.random.default_rng(0)
    vec = rng.random(bits) < 0.5
    nb, nc = space.layout.num_blocks, space.layout.num_components
    vec[: nb * nc] = True  # step 0 computes everything
    sched = Schedule.from_bits(vec, space)
    assert np.array_equal(sched.to_bits(), vec)
    assert (sched.height, sched.width, sched.model, sched.variant) == (
        space.height,
        space.width,
        space.model,
        space.variant,
    )
    # ECAD order: step-major, then blocks in layout order, then components in ECAD order.
    ecad = sched.to_ecad_json()["cache_schedule"]["schedule"]
    comps = [g.components for g, _ in space.layout.blocks()]
    flat = [
        ecad[f"{s:03d}"][space.layout.block_key(b)][c] for s in range(space.steps) for b in range(nb) for c in comps[b]
    ]
    assert flat == vec.tolist()
    # One bit, located by hand: step 1, the last block, its last component.
    one = np.ones(bits, dtype=bool)
    one[2 * nb * nc - 1] = False
    s1 = Schedule.from_bits(one, space).to_ecad_json()["cache_schedule"]["schedule"]["001"]
    last_key = "single_37" if space.family == "flux" else "27"
    last_comp = "single_proj_out" if space.family == "flux" else "ff"
    assert s1[last_key][last_comp] is False
    assert sum(not v for blk in s1.values() for v in blk.values()) == 1
    with pytest.raises(ScheduleError, match=f"the space needs {bits}"):
        Schedule.from_bits(vec[:-1], space)


def test_unknown_space_lists_available():
    with pytest.raises(SpaceError) as err:
        load_space("pixart-alpha-999")
    msg = str(err.value)
    assert "pixart-alpha-999" in msg
    for name in SHIPPED:
        assert name in msg


def test_missing_toml_path():
    with pytest.raises(SpaceError, match="does not exist"):
        load_space("/nonexistent/dir/space.toml")


@pytest.mark.parametrize("name", ["a" * 5000, "a" * 5000 + ".toml", "x\x00y", "x\x00y.toml"])
def test_impossible_space_name_is_a_space_error(name):
    with pytest.raises(SpaceError, match="unknown search space|does not exist"):
        load_space(name)


def _write(tmp_path: Path, text: str, name: str = "bad") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _variant(tmp_path: Path, base: str, old: str, new: str, name: str | None = None) -> Path:
    src = (shipped_dir("search_spaces") / f"{base}.toml").read_text()
    assert old in src, old
    name = name or base
    return _write(tmp_path, src.replace(old, new), name)


@pytest.mark.parametrize(
    "base,old,new,needles",
    [
        ("tiny-pixart", "steps = 8\n", "", ["'steps'", "missing"]),
        ("tiny-pixart", "height = 16", 'height = "16"', ["'height'", "integer"]),
        ("tiny-pixart", "guidance_scale = 4.5", "guidance_scale = true", ["'guidance_scale'", "number"]),
        ("tiny-pixart", '"attn2", "ff"]', '"attn2", "mlp"]', ["unknown component 'mlp'", "attn1"]),
        ("tiny-pixart", '["attn1", "attn2", "ff"]', '["attn2", "attn1", "ff"]', ["order"]),
        ("tiny-pixart", 'dtype = "float32"', 'dtype = "fp32"', ["dtype", "bfloat16"]),
        ("tiny-pixart", 'family = "pixart"', 'family = "hunyuan"', ["family", "flux"]),
        ("tiny-pixart", 'variant = "alpha"', 'variant = "beta"', ["variant", "sigma"]),
        (
            "tiny-pixart",
            'pipeline_class = "PixArtAlphaPipeline"',
            'pipeline_class = "PixArtSigmaPipeline"',
            ["pipeline_class", "PixArtAlphaPipeline"],
        ),
        ("tiny-pixart", "height = 16", "height = 20", ["'height'", "multiple of 16"]),
        ("tiny-pixart", "count = 4", "count = 0", ["blocks[0].count", ">= 1"]),
        ("tiny-pixart", "min_steps = 4", "min_steps = 9", ["timesteps.min_steps", "between 2 and steps"]),
        ("tiny-pixart", "[timesteps]", "[timesteps]\nenable = true", ["'enable'", "[timesteps]"]),
        ("tiny-pixart", "clean_caption = false", "clean_caption = false\nheight = 32", ["pipeline_kwargs", "'height'"]),
        ("tiny-pixart", "steps = 8", "steps = 8\nnum_steps = 8", ["unknown field 'num_steps'"]),
        ("tiny-pixart", 'name = "tiny-pixart"', 'name = "other"', ["name 'other'", "file name"]),
        (
            "tiny-pixart",
            "[timesteps]",
            "[constraints]\nmax_macs_fraction = 1.5\n\n[timesteps]",
            ["constraints.max_macs_fraction", "(0, 1]"],
        ),
        (
            "tiny-pixart",
            "[timesteps]",
            "[constraints]\nmax_flops = 1\n\n[timesteps]",
            ["'max_flops'", "max_macs_fraction"],
        ),
        (
            "tiny-flux",
            'name = "single_transformer_blocks"',
            'name = "single_blocks"',
            ["blocks[1].name", "single_transformer_blocks"],
        ),
        ("tiny-flux", 'family = "flux"', 'family = "flux"\nvariant = "alpha"', ["variant", "not used by FLUX.1"]),
    ],
)
def test_malformed_space_names_file_and_field(tmp_path, base, old, new, needles):
    path = _variant(tmp_path, base, old, new)
    with pytest.raises(SpaceError) as err:
        load_space(path)
    msg = str(err.value)
    assert str(path) in msg
    for needle in needles:
        assert needle in msg, msg


def test_invalid_toml_syntax_names_file(tmp_path):
    path = _write(tmp_path, 'name = "bad"\nsteps = = 3\n')
    with pytest.raises(SpaceError, match=r"bad\.toml: not valid TOML"):
        load_space(path)


def test_flux_missing_group(tmp_path):
    src = (shipped_dir("search_spaces") / "tiny-flux.toml").read_text()
    cut = src.index("[[blocks]]  # single-stream")
    path = _write(tmp_path, src[:cut], "tiny-flux")
    with pytest.raises(SpaceError, match="has 1 group.*needs 2.*single_transformer_blocks"):
        load_space(path)


def test_timesteps_and_constraints_parsed(tmp_path):
    path = _variant(tmp_path, "tiny-pixart", "enabled = false", "enabled = true")
    text = path.read_text().replace("[timesteps]", "[constraints]\nmax_macs_fraction = 0.4\n\n[timesteps]")
    path.write_text(text)
    space = load_space(path)
    assert space.timesteps_enabled and space.min_steps == 4
    assert space.constraints == {"max_macs_fraction": 0.4}
    grid = np.ones((8, 4, 3), dtype=bool)
    assert space.check_schedule(Schedule(space.layout, grid, timesteps=[0, 2, 4, 6]))
    with pytest.raises(SpaceError, match="fewer than the space's min_steps 4"):
        space.check_schedule(Schedule(space.layout, grid, timesteps=[0, 4, 7]))
    off = load_space("tiny-pixart")
    assert not off.timesteps_enabled and off.constraints == {}
    with pytest.raises(SpaceError, match="enabled = true"):
        off.check_schedule(Schedule(off.layout, grid, timesteps=[0, 2, 4, 6]))


def test_check_schedule_mismatches():
    space = load_space("tiny-pixart")
    with pytest.raises(SpaceError, match="has 5 steps.*runs 8"):
        space.check_schedule(Schedule.full(space.layout, 5))
    with pytest.raises(SpaceError, match="layout"):
        space.check_schedule(Schedule.full(pixart_layout(28), 8))
    with pytest.raises(SpaceError, match="layout"):
        space.check_schedule(load_space("tiny-flux").full_schedule())


def test_space_is_frozen():
    space = load_space("tiny-pixart")
    assert isinstance(space, SearchSpace)
    with pytest.raises(dataclasses.FrozenInstanceError):
        space.steps = 3  # type: ignore[misc]


@pytest.mark.parametrize("name", ["tiny-pixart", "tiny-flux"])
def test_tiny_space_matches_tiny_pipeline(name):
    """The tiny spaces describe the real tiny pipelines: same layout, and their call kwargs run."""
    from ecad.models import ADAPTERS, build_tiny

    space = load_space(name)
    pipe = build_tiny(space.hub_id)
    assert type(pipe).__name__ == space.pipeline_class
    assert type(pipe.scheduler).__name__ == space.scheduler
    assert ADAPTERS[space.family].layout_of(pipe.transformer) == space.layout
    kwargs = {**space.call_kwargs(), "num_inference_steps": 2}
    out = pipe("a cat", output_type="pt", generator=torch.Generator().manual_seed(0), **kwargs)
    assert out.images.shape == (1, 3, space.height, space.width)


# ------------------------------------------------------------- hostile files
# Every bad space file is refused with a SpaceError naming the file and the field, before anything
# it sizes is made; nothing else escapes (no UnicodeDecodeError, RecursionError, OverflowError, ...).
_DEEP_ARRAY = "[" * 5000 + "]" * 5000
_DEEP_TABLE = "{a = " * 5000 + "1" + "}" * 5000


@pytest.mark.parametrize(
    "base,old,new,needles",
    [
        ("tiny-pixart", 'description = "Tiny', b'description = "\xffTiny', ["not UTF-8", "line 6"]),
        ("tiny-pixart", "steps = 8", f"steps = {_DEEP_ARRAY}", ["nested too deeply"]),
        ("tiny-pixart", "[timesteps]", f"deep = {_DEEP_TABLE}\n[timesteps]", ["nested too deeply"]),
        ("tiny-pixart", "steps = 8", "steps = 100000000000000000", ["'steps'", "1..1000", "100000000000000000"]),
        ("tiny-pixart", "steps = 8", "steps = 1001", ["'steps'", "1..1000"]),
        ("tiny-pixart", "steps = 8", "steps = " + "9" * 5000, ["not valid TOML", "4,300 digits"]),
        ("tiny-pixart", "height = 16", "height = 1000000000", ["'height'", "16..16384"]),
        ("tiny-pixart", "width = 16", "width = 8", ["'width'", "16..16384"]),
        ("tiny-pixart", "guidance_scale = 4.5", "guidance_scale = 1e308", ["'guidance_scale'", "0..100"]),
        ("tiny-pixart", "guidance_scale = 4.5", "guidance_scale = nan", ["'guidance_scale'", "finite"]),
        ("tiny-pixart", "guidance_scale = 4.5", "guidance_scale = inf", ["'guidance_scale'", "finite"]),
        ("tiny-pixart", "guidance_scale = 4.5", "guidance_scale = -1.0", ["'guidance_scale'", "0..100"]),
        ("tiny-pixart", "guidance_scale = 4.5", "guidance_scale = 1" + "0" * 400, ["'guidance_scale'", "range"]),
        ("tiny-pixart", "text_length = 16", "text_length = 100000", ["'text_length'", "1..4096"]),
        ("tiny-wan", "frames = 9", "frames = 100000", ["'frames'", "1..1000"]),
        (
            "tiny-pixart",
            'scheduler = "DPMSolverMultistepScheduler"',
            'scheduler = "NoSuchScheduler"',
            ["'scheduler'", "NoSuchScheduler", "DPMSolverMultistepScheduler", "SchedulerMixin"],
        ),
        (
            "tiny-pixart",
            'scheduler = "DPMSolverMultistepScheduler"',
            'scheduler = "PixArtAlphaPipeline"',  # a diffusers class, but no scheduler
            ["'scheduler'", "PixArtAlphaPipeline", "FlowMatchEulerDiscreteScheduler"],
        ),
        (
            "tiny-pixart",
            "clean_caption = false",
            "clean_captions = false",
            ["'pipeline_kwargs.clean_captions'", "PixArtAlphaPipeline", "use_resolution_binning"],
        ),
        ("tiny-pixart", "clean_caption = false", "generator = 0", ["pipeline_kwargs", "'generator'"]),
        (
            "tiny-pixart",
            "clean_caption = false",
            "clean_caption = 1979-05-27T07:32:00Z",
            ["'pipeline_kwargs.clean_caption'", "datetime"],
        ),
        (
            "tiny-pixart",
            "clean_caption = false",
            "clean_caption = 07:32:00",
            ["'pipeline_kwargs.clean_caption'", "time"],
        ),
        (
            "tiny-pixart",
            "clean_caption = false",
            "clean_caption = [1.0, {x = nan}]",
            ["'pipeline_kwargs.clean_caption[1].x'", "finite"],
        ),
        (
            "tiny-pixart",
            "clean_caption = false",
            'clean_caption = {"' + "k" * 100_000 + '" = [' + "1, " * 20_000 + "]}",
            ["'pipeline_kwargs.clean_caption'", "more than 10000 values"],
        ),
        ("tiny-pixart", "count = 4", "count = 5000", ["blocks[0].count", "1..1000", "5000"]),
        ("tiny-flux", "count = 2\n", "count = 600\n", ["blocks[1].count", "1200 blocks", "1000 in all"]),
        (
            "tiny-pixart",
            "[timesteps]",
            "[constraints]\nmax_macs_fraction = inf\n\n[timesteps]",
            ["constraints.max_macs_fraction", "(0, 1]"],
        ),
        ("tiny-pixart", 'hub_id = "ecad-tiny/pixart-alpha"', 'hub_id = ""', ["'hub_id'", "1 to 4096"]),
        ("tiny-pixart", 'description = "Tiny', 'description = "' + "x" * 5000, ["'description'", "at most 4096"]),
        ("tiny-pixart", 'dtype = "float32"', 'dtype = "' + "f" * 100_000 + '"', ["'dtype'", "at most 200"]),
    ],
)
def test_hostile_value_is_refused_naming_file_and_field(tmp_path, base, old, new, needles):
    src = (shipped_dir("search_spaces") / f"{base}.toml").read_bytes()
    old, new = (s if isinstance(s, bytes) else s.encode() for s in (old, new))
    assert old in src, old
    path = tmp_path / f"{base}.toml"
    path.write_bytes(src.replace(old, new))
    with pytest.raises(SpaceError) as err:
        load_space(path)
    msg = str(err.value)
    assert str(path) in msg, msg
    for needle in needles:
        assert needle in msg, msg
    assert len(msg) < 2000, "an error shows a bad value shortened, never all of it"


@pytest.mark.parametrize(
    "old,new,read,expected",
    [
        ("steps = 8", "steps = 1000", lambda s: s.steps, 1000),
        ("height = 16", "height = 16384", lambda s: s.height, 16384),
        ("guidance_scale = 4.5", "guidance_scale = 100", lambda s: s.guidance_scale, 100.0),
        ("guidance_scale = 4.5", "guidance_scale = 0", lambda s: s.guidance_scale, 0.0),
        ("text_length = 16", "text_length = 4096", lambda s: s.text_length, 4096),
        ("count = 4", "count = 1000", lambda s: s.layout.num_blocks, 1000),
        (
            "clean_caption = false",
            'clean_caption = false\neta = 0.5\nnegative_prompt = "blurry"',
            lambda s: s.call_kwargs(),
            {"eta": 0.5, "negative_prompt": "blurry", "clean_caption": False},
        ),
    ],
)
def test_values_at_the_bounds_load(tmp_path, old, new, read, expected):
    """The bounds are inclusive, and pipeline_kwargs takes any argument of the pipeline's call that
    ecad does not set itself."""
    got = read(load_space(_variant(tmp_path, "tiny-pixart", old, new)))
    if isinstance(expected, dict):
        got = {k: got[k] for k in expected}
    assert got == expected


def test_every_shipped_space_loads():
    names = list_spaces()
    assert len(names) >= 15
    for name in names:
        _assert_valid(load_space(name))


def _assert_valid(space: SearchSpace) -> None:
    """What every loaded space guarantees to the code that runs it."""
    import diffusers

    assert 1 <= space.steps <= MAX_STEPS and 1 <= space.min_steps <= space.steps
    m = space.adapter.size_multiple
    for side in (space.height, space.width):
        assert isinstance(side, int) and m <= side <= MAX_SIDE and side % m == 0
    assert isinstance(space.guidance_scale, float) and math.isfinite(space.guidance_scale)
    assert 0 <= space.guidance_scale <= MAX_GUIDANCE
    assert 1 <= space.text_length <= MAX_TEXT_LENGTH
    assert space.frames is None or 1 <= space.frames <= MAX_FRAMES
    assert 1 <= space.layout.num_blocks <= MAX_BLOCKS
    assert issubclass(getattr(diffusers, space.scheduler), diffusers.SchedulerMixin)
    assert not set(space.pipeline_kwargs) & set(RESERVED_KWARGS)
    assert space.hub_id and isinstance(space.description, str)
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in space.constraints.values())
    assert space.call_kwargs()["num_inference_steps"] == space.steps


# A tiny TOML writer for the fuzz test (the standard library reads TOML but does not write it):
# everything as `"key" = value` lines with inline tables and arrays, which tomllib reads back as written.
class _Raw(str):
    """TOML text written as it is: values no writer should recurse through (5000-deep nesting)."""


def _toml(value) -> str:
    if isinstance(value, _Raw):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, str):  # JSON's escapes are TOML's, but for DEL, which TOML wants escaped too
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, (datetime.date, datetime.time)):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_toml(str(k))} = {_toml(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def _toml_document(data: dict) -> str:
    return "".join(f"{_toml(str(k))} = {_toml(v)}\n" for k, v in data.items())


FUZZ_BASES = ("tiny-pixart", "tiny-flux")
FUZZ_MUTANTS = 300
NON_UTF8 = (b"\xff", b"\xfe", b"\x80", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82")
HOSTILE = (
    # wrong types, signs and sizes
    "",
    "x",
    "x" * 100_000,
    "\x00\x1f",
    "../../etc/passwd",
    True,
    False,
    -1,
    0,
    1,
    2,
    10**17,
    2**63,
    -(2**63) - 1,
    10**400,  # beyond any float
    _Raw("9" * 5000),  # beyond int()'s digit limit
    0.5,
    -0.0,
    1e308,
    -1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    [],
    {},
    [1, "a", 2.5],
    {"a": {"b": [1, {"c": float("nan")}]}},
    [[[[[[[[1]]]]]]]],
    datetime.datetime(1979, 5, 27, 7, 32, tzinfo=datetime.UTC),
    datetime.date(1979, 5, 27),
    datetime.time(7, 32),
    _Raw(_DEEP_ARRAY),
    _Raw(_DEEP_TABLE),
    _Raw("[" * 40 + "]" * 40),  # past the reader's nesting bound, well inside Python's
    # values at and just past the bounds
    8,
    16,
    32,
    1000,
    1001,
    4096,
    16384,
    16400,
    100.0,
    100.5,
    "DPMSolverMultistepScheduler",
    "EulerDiscreteScheduler",
    "SchedulerMixin",
    "transformer_blocks",
)
KNOWN_KEYS = (
    *TOP_LEVEL_KEYS,
    "timesteps.enabled",
    "timesteps.min_steps",
    "constraints.max_macs_fraction",
    "pipeline_kwargs.clean_caption",
    "pipeline_kwargs.eta",
    "pipeline_kwargs.prompt",
    "pipeline_kwargs.joint_attention_kwargs",
    "pipeline_kwargs.complex_human_instruction",
    "blocks.0.count",
    "blocks.0.components",
    "blocks.1.name",
)


def _hostile(rng: random.Random):
    return copy.deepcopy(rng.choice(HOSTILE))


def _containers(data, out=None) -> list:
    """Every table and array in `data`, outermost first."""
    out = [] if out is None else out
    out.append(data)
    for v in data.values() if isinstance(data, dict) else data:
        if isinstance(v, (dict, list)):
            _containers(v, out)
    return out


def _set_path(data: dict, dotted: str, value) -> None:
    *parents, last = dotted.split(".")
    node = data
    for part in parents:
        if isinstance(node, list):
            if not node:
                return
            node = node[int(part) % len(node)]
        else:
            node = node.setdefault(part, {})
        if not isinstance(node, (dict, list)):
            return
    if isinstance(node, list):
        if node:
            node[int(last) % len(node)] = value
    else:
        node[last] = value


def _structural_mutant(rng: random.Random, data: dict) -> tuple[str, dict]:
    data = copy.deepcopy(data)
    op = rng.choice(("replace", "replace", "delete", "unknown", "set"))
    nonempty = [c for c in _containers(data) if c]
    if op == "set":
        key = rng.choice(KNOWN_KEYS)
        value = _hostile(rng)
        _set_path(data, key, value)
        return f"set {key} = {_toml(value)[:80]}", data
    if op == "unknown":
        target = rng.choice([c for c in _containers(data) if isinstance(c, dict)])
        value = _hostile(rng)
        target[rng.choice(("unknown_field", "Steps", "steps ", "\u00e9t\u00e9"))] = value
        return f"unknown field = {_toml(value)[:80]}", data
    container = rng.choice(nonempty)
    key = rng.choice(list(container) if isinstance(container, dict) else range(len(container)))
    if op == "delete":
        del container[key]
        return f"delete {key!r}", data
    container[key] = _hostile(rng)
    return f"replace {key!r} with {_toml(container[key])[:80]}", data


def _byte_mutant(rng: random.Random, src: bytes) -> tuple[str, bytes]:
    data = bytearray(src)
    op = rng.choice(("flip", "insert", "delete", "non-utf8", "truncate"))
    at = rng.randrange(len(data))
    if op == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
    elif op == "insert":
        data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif op == "delete":
        del data[at : at + rng.randint(1, 40)]
    elif op == "non-utf8":
        data[at:at] = rng.choice(NON_UTF8)
    else:
        del data[at:]
    return f"bytes: {op} at {at}", bytes(data)


def _file_stem(rng: random.Random, data: dict, base: str) -> str:
    """The mutant's `name` where it is still a usable file name (so the checks after the name
    check run too); the base name otherwise, and now and then on purpose."""
    name = data.get("name")
    usable = isinstance(name, str) and 0 < len(name) <= 100 and name.isprintable() and "/" not in name
    if rng.random() < 0.1:
        return "renamed"
    return name if usable and name not in (".", "..") else base


class _Hang(Exception):
    pass


def _on_alarm(signum, frame):
    raise _Hang("loading took longer than 5 s")


def test_fuzzed_space_files_load_valid_or_raise_space_error(tmp_path):
    """A few hundred seeded mutants of shipped spaces, byte-level and structural: each loads as a
    valid space or raises SpaceError naming its file; a hang or any other exception fails."""
    rng = random.Random(0)
    sources = {base: (shipped_dir("search_spaces") / f"{base}.toml").read_bytes() for base in FUZZ_BASES}
    parsed = {base: tomllib.loads(src.decode()) for base, src in sources.items()}
    for base, data in parsed.items():  # the writer is faithful, so a mutant is what it says
        assert tomllib.loads(_toml_document(data)) == data, base
    outcomes = collections.Counter()
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    try:
        for i in range(FUZZ_MUTANTS):
            base = FUZZ_BASES[i % len(FUZZ_BASES)]
            if rng.random() < 0.4:
                what, text = _byte_mutant(rng, sources[base])
                stem = base
            else:
                what, data = _structural_mutant(rng, parsed[base])
                text, stem = _toml_document(data).encode(), _file_stem(rng, data, base)
            path = tmp_path / f"{stem}.toml"
            path.write_bytes(text)
            signal.alarm(5)
            try:
                space = load_space(path)
            except SpaceError as exc:
                assert str(path) in str(exc), f"mutant {i} ({what}): {exc}"
                outcomes["refused"] += 1
            except Exception as exc:
                shown = text.decode("utf-8", "backslashreplace")[:3000]
                pytest.fail(f"mutant {i} of {base} ({what}) raised {exc!r}, not SpaceError:\n{shown}")
            else:
                _assert_valid(space)
                outcomes["loaded"] += 1
            finally:
                signal.alarm(0)
            path.unlink()
    finally:
        signal.signal(signal.SIGALRM, previous)
    assert outcomes["loaded"] >= 10 and outcomes["refused"] >= 100, outcomes
