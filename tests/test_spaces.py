"""Search spaces: shipped TOML files, bit-vector order, and error messages."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from ecad.models.flux import flux_layout
from ecad.models.pixart import pixart_layout
from ecad.resources import shipped_dir
from ecad.schedule import Schedule, ScheduleError
from ecad.spaces import ENV_VAR, SearchSpace, SpaceError, list_spaces, load_space

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
        ("tiny-pixart", "min_steps = 4", "min_steps = 9", ["timesteps.min_steps", "between 1 and steps"]),
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
