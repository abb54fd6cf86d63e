"""Analytic MACs against ECAD's published numbers and against torch's FlopCounterMode on real forwards."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ecad.cache.macs import (
    TransformerDims,
    component_macs,
    fixed_macs,
    full_macs,
    latent_tokens,
    schedule_macs,
    transformer_batch,
)
from ecad.models.flux import FLUX_DEV_DIMS, flux_layout
from ecad.models.pixart import PIXART_ALPHA_DIMS, PixArtDims, pixart_layout
from ecad.schedule import Schedule

PIXART_MODULES = {"attn1": "attn1", "attn2": "attn2", "ff": "ff"}
FLUX_MODULES = {
    "full_attn": "transformer_blocks.{i}.attn",
    "full_ff": "transformer_blocks.{i}.ff",
    "full_ff_context": "transformer_blocks.{i}.ff_context",
    "single_attn": "single_transformer_blocks.{i}.attn",
    "single_proj_mlp": "single_transformer_blocks.{i}.proj_mlp",
    "single_proj_out": "single_transformer_blocks.{i}.proj_out",
}


def close(got: float, want: float, rel: float) -> bool:
    """For ECAD's published numbers only: they are rounded (285.69e9), so they need a tolerance.
    Counts of real forwards are compared exactly: the analytic formulas count the same matmuls."""
    return abs(got - want) <= rel * abs(want)


# ------------------------------------------------------------------ counting real forwards
def _count(fn) -> dict[str, float]:
    """Module fqn (without the root class name) -> MACs; the MATH SDPA backend makes attention visible on CPU."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        fn()
    out = {}
    for key, ops in fc.get_flop_counts().items():
        name = "" if key == "Global" else key.split(".", 1)[1] if "." in key else None
        if name is not None:
            out[name] = sum(ops.values()) / 2
    return out


def _linear_only(fn) -> float:
    """MACs of Linear/Conv only (ECAD's convention): the FlopCounter total minus attention bmm."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        fn()
    ops = fc.get_flop_counts()["Global"]
    return sum(v for k, v in ops.items() if "bmm" not in str(k)) / 2


def _pixart_forward(transformer, batch: int, h: int, w: int, text_len: int, device: str = "cpu"):
    c = transformer.config
    x = torch.randn(batch, c.in_channels, h, w, device=device)
    enc = torch.randn(batch, text_len, c.caption_channels, device=device)
    t = torch.full((batch,), 500, device=device)
    return lambda: transformer(
        x, encoder_hidden_states=enc, timestep=t, added_cond_kwargs={"resolution": None, "aspect_ratio": None}
    )


def _flux_forward(transformer, batch: int, h: int, w: int, text_len: int, device: str = "cpu"):
    c = transformer.config
    x = torch.randn(batch, h * w, c.in_channels, device=device)
    enc = torch.randn(batch, text_len, c.joint_attention_dim, device=device)
    pooled = torch.randn(batch, c.pooled_projection_dim, device=device)
    img_ids, txt_ids = torch.zeros(h * w, 3, device=device), torch.zeros(text_len, 3, device=device)
    t, g = torch.full((batch,), 0.5, device=device), torch.full((batch,), 3.5, device=device)
    return lambda: transformer(
        x,
        encoder_hidden_states=enc,
        pooled_projections=pooled,
        timestep=t,
        img_ids=img_ids,
        txt_ids=txt_ids,
        guidance=g,
    )


def _check_against_counter(
    counts: dict[str, float],
    dims: TransformerDims,
    height: int,
    width: int,
    batch: int,
    text_len: int,
    modules: dict[str, str],
) -> None:
    """Exact equality: every MAC is an integer count (well below 2**53), so any difference means the
    analytic model misses or double-counts an op, not rounding."""
    comp = component_macs(dims, height, width, batch, text_len)
    total = full_macs(dims, height, width, batch, text_len)
    assert total == counts[""], (total, counts[""])
    blocks = 0.0
    for name, pattern in modules.items():
        single = name.startswith("single_")
        n = dims.num_single_blocks if single else dims.num_blocks
        for i in range(n):
            path = pattern.format(i=i) if "{i}" in pattern else f"transformer_blocks.{i}.{pattern}"
            assert comp[name] == counts[path], (name, path, comp[name], counts[path])
            blocks += counts[path]
    fixed = fixed_macs(dims, height, width, batch, text_len)
    assert fixed == counts[""] - blocks, (fixed, counts[""] - blocks)


def test_tiny_pixart_matches_flop_counter():
    from ecad.models.pixart import build_tiny_pixart

    transformer = build_tiny_pixart(num_blocks=3).transformer
    dims = TransformerDims.from_transformer(transformer, vae_scale_factor=1)  # 1-level tiny VAE: no downsampling
    batch, h, w, text_len = 2, 8, 12, 10  # non-square, N=24 != L so swapped axes would show
    assert latent_tokens(dims, h, w) == (h // 2) * (w // 2)
    counts = _count(_pixart_forward(transformer, batch, h, w, text_len))
    _check_against_counter(counts, dims, h, w, batch, text_len, PIXART_MODULES)


def test_tiny_flux_matches_flop_counter():
    from ecad.models.flux import build_tiny_flux

    transformer = build_tiny_flux().transformer
    dims = TransformerDims.from_transformer(transformer, vae_scale_factor=2)  # 2-level tiny VAE
    batch, h, w, text_len = 2, 3, 5, 7  # packed latent grid 3x5 <- 12x20 px
    assert latent_tokens(dims, 4 * h, 4 * w) == h * w
    counts = _count(_flux_forward(transformer, batch, h, w, text_len))
    _check_against_counter(counts, dims, 4 * h, 4 * w, batch, text_len, FLUX_MODULES)


def test_full_size_pixart_alpha_on_meta_matches_flop_counter():
    from diffusers import PixArtTransformer2DModel

    with torch.device("meta"):
        transformer = PixArtTransformer2DModel(num_layers=28, sample_size=32, caption_channels=4096)
    dims = TransformerDims.from_transformer(transformer)
    assert dims == PIXART_ALPHA_DIMS
    fwd = _pixart_forward(transformer, 2, 32, 32, 120, device="meta")
    _check_against_counter(_count(fwd), dims, 256, 256, 2, 120, PIXART_MODULES)
    ecad = full_macs(dims, 256, 256, 2, 120, attention_matmuls=False)
    assert ecad == _linear_only(fwd), (ecad, _linear_only(fwd))


def test_pixart_1024_size_embedders_non_square_on_meta():
    from diffusers import PixArtTransformer2DModel

    with torch.device("meta"):  # sample_size 128 switches on the resolution/aspect-ratio embedders
        transformer = PixArtTransformer2DModel(num_layers=2, sample_size=128, caption_channels=4096)
    dims = TransformerDims.from_transformer(transformer, text_len=300)
    assert dims.additional_conditions
    b = 2
    x, enc = torch.randn(b, 4, 64, 96, device="meta"), torch.randn(b, 300, 4096, device="meta")
    cond = {"resolution": torch.ones(b, 2, device="meta"), "aspect_ratio": torch.ones(b, 1, device="meta")}
    counts = _count(
        lambda: transformer(
            x, encoder_hidden_states=enc, timestep=torch.full((b,), 5, device="meta"), added_cond_kwargs=cond
        )
    )
    _check_against_counter(counts, dims, 512, 768, b, 300, PIXART_MODULES)


def test_full_size_flux_dev_on_meta_matches_flop_counter():
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        transformer = FluxTransformer2DModel(guidance_embeds=True)
    dims = TransformerDims.from_transformer(transformer)
    assert dims == FLUX_DEV_DIMS
    fwd = _flux_forward(transformer, 1, 16, 16, 512, device="meta")
    _check_against_counter(_count(fwd), dims, 256, 256, 1, 512, FLUX_MODULES)
    linear = full_macs(dims, 256, 256, 1, attention_matmuls=False)
    assert linear == _linear_only(fwd), (linear, _linear_only(fwd))


# ------------------------------------------------------------------ ECAD's reference numbers
def test_ecad_reference_pixart_alpha_256():
    b = transformer_batch("pixart", 1, guidance_scale=4.5)
    assert b == 2
    full = full_macs(PIXART_ALPHA_DIMS, 256, 256, b, 120, attention_matmuls=False)
    assert close(full, 285.69e9, 0.01), full
    layout = pixart_layout(28)
    grid = np.zeros((2, 28, 3), dtype=bool)
    grid[0] = True
    report = schedule_macs(
        Schedule(layout, grid, height=256, width=256), PIXART_ALPHA_DIMS, batch=b, attention_matmuls=False
    )
    assert close(report.per_step[0], 285.69e9, 0.01)
    assert close(report.per_step[1], 1.50e9, 0.02), report.per_step[1]
    assert close(fixed_macs(PIXART_ALPHA_DIMS, 256, 256, b), 1.50e9, 0.02)


def test_ecad_reference_flux_dev_256_20_steps():
    report = schedule_macs(Schedule.full(flux_layout(), 20), FLUX_DEV_DIMS, 256, 256, batch=2, attention_matmuls=False)
    assert close(report.total, 198.69e12, 0.01), report.total
    metrics = report.to_ecad_metrics()
    assert close(metrics["total_macs_T"], 198.69, 0.01)
    assert sorted(metrics["by_inference_step"]) == [f"{s:03d}" for s in range(20)]
    assert metrics["by_inference_step"]["007"]["flops"] == 2 * metrics["by_inference_step"]["007"]["macs"]


# ------------------------------------------------------------------ schedules
TINY = PixArtDims(hidden=16, num_blocks=4, text_dim=32, cross_dim=16, vae_scale_factor=1, text_len=16)


def test_schedule_counts_only_computed_components():
    layout = pixart_layout(4)
    comp = component_macs(TINY, 16, 16)
    fixed = fixed_macs(TINY, 16, 16)
    step = 4 * sum(comp.values())
    report = schedule_macs(Schedule.every_n(layout, 5, 2), TINY, 16, 16, text_kv_cache=False)  # K/V per step
    assert report.per_step == pytest.approx([fixed + step, fixed, fixed + step, fixed, fixed + step])
    assert report.total == pytest.approx(5 * fixed + 3 * step)
    assert report.fixed == pytest.approx(5 * fixed)
    assert report.per_component == pytest.approx({k: 3 * 4 * v for k, v in comp.items()})
    assert report.speedup_bound == pytest.approx(5 * (fixed + step) / (5 * fixed + 3 * step))

    grid = np.ones((3, 4, 3), dtype=bool)
    grid[1:, :, 1] = False  # attn2 reused after step 0
    grid[2, 2:, :] = False  # blocks 2, 3 fully reused at step 2
    report = schedule_macs(
        Schedule(layout, grid, timesteps=[0, 2]), TINY, 16, 16, attention_matmuls=False, text_kv_cache=False
    )
    comp = component_macs(TINY, 16, 16, attention_matmuls=False)
    assert report.steps == [0, 2]
    want2 = fixed + 2 * (comp["attn1"] + comp["ff"])
    assert report.per_step == pytest.approx([fixed + 4 * sum(comp.values()), want2])
    assert report.per_component["attn2"] == pytest.approx(4 * comp["attn2"])
    assert list(report.to_ecad_metrics()["by_inference_step"]) == ["000", "002"]


def test_all_compute_schedule_is_steps_times_full_step():
    for dims, layout in ((TINY, pixart_layout(4)), (FLUX_DEV_DIMS, flux_layout())):
        report = schedule_macs(Schedule.full(layout, 7, height=512, width=768), dims, batch=3)
        one = full_macs(dims, 512, 768, 3)
        assert report.total == pytest.approx(7 * one)
        assert report.full == pytest.approx(report.total)
        assert report.speedup_bound == pytest.approx(1.0)


def test_mismatched_layout_is_rejected():
    with pytest.raises(ValueError, match="does not match"):
        schedule_macs(Schedule.full(pixart_layout(4), 2), PIXART_ALPHA_DIMS, 256, 256)
    with pytest.raises(ValueError, match="height"):
        schedule_macs(Schedule.full(pixart_layout(28), 2), PIXART_ALPHA_DIMS)
    with pytest.raises(ValueError, match="unknown model family 'hunyuan'"):
        component_macs(TransformerDims(family="hunyuan", hidden=8), 256, 256)


@pytest.mark.parametrize("space_name", ["shapes-pixart", "shapes-flux"])
def test_shapes_dims_from_the_shipped_configs_equal_the_loaded_pipelines(space_name):
    """`--dry-run` and the MACs of a shapes space read the shipped config files instead of loading
    the weights; the dimensions must be the ones the loaded pipeline has."""
    from ecad.cache.macs import dims_for_space
    from ecad.models import load_shapes_pipeline
    from ecad.spaces import load_space

    space = load_space(space_name)
    pipe = load_shapes_pipeline(space.model)
    assert dims_for_space(space) == space.adapter.dims_for_pipeline(pipe, space)
