"""Thresholds for dynamic caches, calibrated on the pipeline and prompts being compared.

A residual-difference threshold means nothing across models: FirstBlockCache's 0.05 caches nothing
on one model and everything on another. Their docs say to calibrate, so `ecad compare` does: one
uncached pass over the same prompts records the quantity each cache thresholds, and each
threshold is a quantile of what was observed (q = 0.5: about half the observed step-to-step
changes were smaller). The quantile is recorded beside the threshold in the table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Threshold:
    quantile: float
    value: float
    observed: int  # how many values it is a quantile of

    def label(self) -> str:
        return f"q{round(self.quantile * 100):02d}={self.value:.3g}"

    def to_json(self) -> dict:
        return {"quantile": self.quantile, "calibration_values": self.observed}


def thresholds(values: Sequence[float], quantiles: Sequence[float]) -> list[Threshold]:
    """One threshold per quantile of the finite `values` (none when nothing was observed)."""
    finite = np.asarray([v for v in values if np.isfinite(v)], dtype=np.float64)
    if finite.size == 0:
        return []
    return [Threshold(q, float(np.quantile(finite, q)), int(finite.size)) for q in quantiles]


def first_block_residual_changes(renderer, items, batch_size: int) -> list[float]:
    """What diffusers' FirstBlockCache thresholds, measured without it: at each transformer call,
    the mean absolute change of the first block's residual (its image output minus its input)
    since the same branch's previous step, relative to the previous residual's mean magnitude.
    Families that run the unconditional branch as a second call per step are compared call
    to call within each branch. The pipeline must be stock (no cache applied)."""
    space = renderer.space
    group, i = space.layout.blocks()[0]
    block = getattr(renderer.pipe.transformer, group.name)[i]
    residuals: list[torch.Tensor] = []

    def record(module, args, kwargs, output):
        x = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
        residuals.append((space.adapter.image_stream(output) - x).float())

    changes: list[float] = []
    handle = block.register_forward_hook(record, with_kwargs=True)
    try:
        for start in range(0, len(items), batch_size):
            residuals.clear()
            renderer.images(items[start : start + batch_size])
            per_step = 2 if space.adapter.unconditional_call and space.guidance_scale > 1 else 1
            for k in range(per_step, len(residuals)):
                prev, cur = residuals[k - per_step], residuals[k]
                changes.append(float((cur - prev).abs().mean() / prev.abs().mean()))
    finally:
        handle.remove()
    return changes


def mag_cache_errors(mag_ratios: Sequence[float], retention_ratio: float, steps: int) -> list[float]:
    """What MagCache thresholds for a one-step skip: |1 - ratio| of every step after its
    retention phase (its accumulated error starts from that when it skips one step)."""
    first = int(retention_ratio * steps + 0.5)
    return [abs(1.0 - float(r)) for r in list(mag_ratios)[first:steps]]
