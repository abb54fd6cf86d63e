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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ecad.models.base import TransformerDims, block_costs
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
    full: float  # no caching, all base steps
    attention_matmuls: bool = True

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
) -> MacsReport:
    """MACs of running `schedule` (an ecad Schedule): fixed part + computed components of executed steps."""
    layout = schedule.layout
    expected = _adapter(dims).layout_of_dims(dims) if dims.family == layout.family else None
    if layout != expected:
        raise ValueError(f"schedule layout {layout.describe()} does not match dims {dims}")
    height, width = height or schedule.height, width or schedule.width
    if not height or not width:
        raise ValueError("height/width: the schedule carries none; pass them explicitly")
    cost = block_macs(dims, height, width, batch, text_len, attention_matmuls)
    grid = schedule.executed_grid().astype(np.float64)  # [steps, blocks, components]; padding costs 0
    fixed = fixed_macs(dims, height, width, batch, text_len)
    per_step = [fixed + float(x) for x in (grid * cost).sum(axis=(1, 2))]
    per_component: dict[str, float] = {}
    for b, (group, _) in enumerate(layout.blocks()):
        for j, c in enumerate(group.components):
            per_component[c] = per_component.get(c, 0.0) + float(grid[:, b, j].sum() * cost[b, j])
    full = schedule.num_steps * (float(cost.sum()) + fixed)
    return MacsReport(
        schedule.executed_steps, per_step, per_component, fixed * len(per_step), sum(per_step), full, attention_matmuls
    )


def dims_for_space(space: Any) -> TransformerDims:
    """Dimensions of a search space's transformer without loading weights: the family's presets
    for the published models, the config itself for the offline tiny ones."""
    adapter = space.adapter
    if space.is_tiny:
        from ecad.models import build_tiny

        return adapter.dims_for_pipeline(build_tiny(space.model), space)
    return adapter.preset_dims(space)
