"""Analytic multiply-accumulate counts (MACs) of a transformer under a schedule.

Counting by formula instead of by profiling lets search score millions of schedules at any
resolution, batch and text length without running the model. 1 MAC = 2 FLOPs. The formulas
themselves are each family's (its adapter's `group_macs` / `fixed_macs`, read from the model
config); this module adds them up over a schedule.

Two conventions: `attention_matmuls=True` also counts the attention matmuls (QK^T and AV, or a
linear attention's KV and QKV products): what torch.utils.flop_counter.FlopCounterMode reports
for SDPA's math/flash/efficient kernels (in torch 2.14 it does not count the fused CPU kernel, so
profile CPU runs under `sdpa_kernel(SDPBackend.MATH)`); `attention_matmuls=False` counts only
Linear/Conv layers, which is ECAD's convention. Elementwise ops (norms, activations, modulation)
count as 0.

`batch` is always the *transformer* batch: PixArt with classifier-free guidance runs 2x the
user batch, see `transformer_batch`.

A MACs fraction is always of the stock pipeline (`full`: every base step computed, no cache of any
kind, what the pipeline runs without ecad). ecad's lossless text K/V cache (`text_kv_cache=True`,
as `ecad.apply_schedule` runs by default) computes cross-attention's text keys and values once per
call and branch, so even ecad's no-caching schedule costs a little under 1 of it; ECAD's published
convention counts them at every computed step (`text_kv_cache=False`). A step that skips the
unconditional branch (guidance reuse) runs half the rows. A forecast cell costs what a reuse costs in
the transformer; its element-wise extrapolation is reported apart (`MacsReport.forecast`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ecad.models.base import TransformerDims, block_costs, output_sizes, text_kv_costs
from ecad.schedule import Schedule

__all__ = [
    "MacsReport",
    "TransformerDims",
    "block_macs",
    "component_macs",
    "dims_for_space",
    "fixed_macs",
    "full_macs",
    "latent_tokens",
    "schedule_macs",
    "text_kv_macs",
    "transformer_batch",
]


def _adapter(dims: TransformerDims):
    from ecad.models import adapter_for

    return adapter_for(dims.family)


def transformer_batch(family: str, batch: int = 1, guidance_scale: float | None = None) -> int:
    """Transformer rows per step for a user batch: CFG doubles it for families that run an
    unconditional branch (PixArt, SD3, Sana: doubled batch; Wan: a second call); guidance-distilled
    FLUX.1-dev embeds the guidance scale instead."""
    from ecad.models import adapter_for

    return adapter_for(family).transformer_batch(batch, guidance_scale)


def latent_tokens(dims: TransformerDims, height: int, width: int) -> int:
    """Image tokens one transformer call sees (video: all frames)."""
    return _adapter(dims).tokens(dims, height, width).image


def block_macs(
    dims: TransformerDims,
    height: int,
    width: int,
    batch: int = 1,
    text_len: int | None = None,
    attention_matmuls: bool = True,
) -> np.ndarray:
    """[blocks, components] MACs of every block's cacheable components, in grid order (padding 0)."""
    adapter = _adapter(dims)
    tokens = adapter.tokens(dims, height, width, text_len)
    return batch * block_costs(adapter, dims, adapter.layout_of_dims(dims), tokens, attention_matmuls)


def text_kv_macs(
    dims: TransformerDims, height: int, width: int, batch: int = 1, text_len: int | None = None
) -> np.ndarray:
    """[blocks, components] MACs of the text K/V projections inside each block's components (part
    of `block_macs`; 0 for families with joint attention, which project no text alone)."""
    adapter = _adapter(dims)
    tokens = adapter.tokens(dims, height, width, text_len)
    return batch * text_kv_costs(adapter, dims, adapter.layout_of_dims(dims), tokens)


def component_macs(
    dims: TransformerDims,
    height: int,
    width: int,
    batch: int = 1,
    text_len: int | None = None,
    attention_matmuls: bool = True,
) -> dict[str, float]:
    """MACs of ONE block's cacheable components, by component name (every group of the family).
    A family whose blocks of one component name differ in cost (SD3's last block) has no such
    table: use `block_macs`."""
    adapter = _adapter(dims)
    tokens = adapter.tokens(dims, height, width, text_len)
    out: dict[str, float] = {}
    for group in adapter.layout_of_dims(dims).groups:
        for name, macs in adapter.group_macs(dims, group, tokens, attention_matmuls).items():
            if out.setdefault(name, float(macs * batch)) != float(macs * batch):
                raise ValueError(
                    f"{adapter.display_name}: component {name!r} costs differ between block groups; use block_macs"
                )
    return out


def fixed_macs(dims: TransformerDims, height: int, width: int, batch: int = 1, text_len: int | None = None) -> float:
    """MACs run every step whatever the schedule: embedders, text projection, adaLN linears, output head."""
    adapter = _adapter(dims)
    return float(batch * adapter.fixed_macs(dims, adapter.tokens(dims, height, width, text_len)))


def full_macs(
    dims: TransformerDims,
    height: int,
    width: int,
    batch: int = 1,
    text_len: int | None = None,
    attention_matmuls: bool = True,
    num_steps: int = 1,
) -> float:
    """MACs of `num_steps` uncached steps: the baseline every schedule is compared against."""
    blocks = float(block_macs(dims, height, width, batch, text_len, attention_matmuls).sum())
    return num_steps * (blocks + fixed_macs(dims, height, width, batch, text_len))


@dataclass
class MacsReport:
    """What a schedule computes, in MACs; `per_step` includes the fixed part of each step."""

    steps: list[int]  # base-grid indices of the executed steps
    per_step: list[float]
    per_component: dict[str, float]  # summed over executed steps and blocks
    fixed: float  # fixed MACs summed over executed steps
    total: float
    full: float  # the stock pipeline: no caching of any kind, all base steps
    attention_matmuls: bool = True
    text_kv: float = 0.0  # MACs of cross-attention's text K/V projections computed (part of `total`)
    forecast: float = 0.0  # element-wise MACs of the forecast cells' extrapolation (not in `total`)
    forecast_cells: int = 0  # forecast cells run (executed steps x blocks x components)

    @property
    def fraction(self) -> float:
        """`total` as a fraction of the stock pipeline's MACs."""
        return self.total / self.full if self.full else 1.0

    @property
    def speedup_bound(self) -> float:
        """Upper bound on speed-up if time were proportional to MACs."""
        return self.full / self.total

    def to_ecad_metrics(self) -> dict[str, Any]:
        """ECAD's metrics dict shape (flops = 2 x MACs)."""
        return {
            "by_inference_step": {f"{s:03d}": {"flops": 2 * m, "macs": m} for s, m in zip(self.steps, self.per_step)},
            "total_macs": self.total,
            "total_macs_T": self.total / 1e12,
        }


def schedule_macs(
    schedule: Schedule,
    dims: TransformerDims,
    height: int | None = None,
    width: int | None = None,
    batch: int = 1,
    text_len: int | None = None,
    attention_matmuls: bool = True,
    text_kv_cache: bool = True,
) -> MacsReport:
    """MACs of running `schedule` (an ecad Schedule): fixed part + computed components of executed
    steps, at half the rows on steps that skip the unconditional branch. `text_kv_cache`: the text
    K/V projections count once per call (at the first step a component computes) instead of at each
    computed step. `full` is the stock pipeline's, whatever the options."""
    layout = schedule.layout
    expected = _adapter(dims).layout_of_dims(dims) if dims.family == layout.family else None
    if layout != expected:
        raise ValueError(f"schedule layout {layout.describe()} does not match dims {dims}")
    height, width = height or schedule.height, width or schedule.width
    if not height or not width:
        raise ValueError("height/width: the schedule carries none; pass them explicitly")
    cost = block_macs(dims, height, width, batch, text_len, attention_matmuls)
    grid = schedule.executed_grid()  # [steps, blocks, components]; padding costs 0
    rows = np.where(schedule.executed_guidance_reuse(), 0.5, 1.0)  # share of the batch each step runs
    kv = text_kv_macs(dims, height, width, batch, text_len) if text_kv_cache else np.zeros_like(cost)
    first = grid & (np.cumsum(grid, axis=0) == 1)  # the first step each component computes: its K/V
    per_cell = grid * (cost - kv) + first * kv  # [steps, blocks, components]
    per_cell = per_cell * rows[:, None, None]
    fixed = fixed_macs(dims, height, width, batch, text_len)
    per_step = [fixed * r + float(x) for r, x in zip(rows, per_cell.sum(axis=(1, 2)))]
    per_component: dict[str, float] = {}
    for b, (group, _) in enumerate(layout.blocks()):
        for j, c in enumerate(group.components):
            per_component[c] = per_component.get(c, 0.0) + float(per_cell[:, b, j].sum())
    if text_kv_cache:
        text = float((first * kv * rows[:, None, None]).sum())
    else:
        text = float((grid * text_kv_macs(dims, height, width, batch, text_len) * rows[:, None, None]).sum())
    forecast, cells = _forecast_macs(schedule, dims, height, width, batch, text_len, rows)
    full = schedule.num_steps * (float(cost.sum()) + fixed)
    return MacsReport(
        schedule.executed_steps,
        per_step,
        per_component,
        float(fixed * rows.sum()),
        sum(per_step),
        full,
        attention_matmuls,
        text_kv=text,
        forecast=forecast,
        forecast_cells=cells,
    )


def _forecast_macs(schedule: Schedule, dims, height, width, batch, text_len, rows) -> tuple[float, int]:
    """Element-wise MACs of the forecast cells: one multiply-add per element of the output for
    each computed point the extrapolation combines (order + 1, fewer where fewer were computed)."""
    if schedule.forecast is None:
        return 0.0, 0
    adapter = _adapter(dims)
    tokens = adapter.tokens(dims, height, width, text_len)
    size = batch * output_sizes(adapter, dims, adapter.layout_of_dims(dims), tokens)
    grid, forecast = schedule.executed_grid(), schedule.executed_forecast()
    before = np.cumsum(grid, axis=0) - grid  # computed outputs strictly before each step
    points = np.minimum(before, schedule.forecast_order + 1) * forecast
    return float((points * size * rows[:, None, None]).sum()), int(forecast.sum())


def dims_for_space(space: Any) -> TransformerDims:
    """Dimensions of a search space's transformer without loading weights: the family's presets
    for the published models, the shipped configs for the trained shapes models, the config
    itself for the offline random tiny ones."""
    adapter = space.adapter
    from ecad.models import SHAPES_MODELS

    if space.model in SHAPES_MODELS:  # the shipped configs: no weights are loaded
        from ecad.models import shapes_transformer_config

        config, vae_scale_factor = shapes_transformer_config(space.model)
        return adapter.dims_from_config(config, vae_scale_factor, space.text_length)
    if space.is_tiny:
        from ecad.models import build_tiny

        return adapter.dims_for_pipeline(build_tiny(space.model), space)
    return adapter.preset_dims(space)
