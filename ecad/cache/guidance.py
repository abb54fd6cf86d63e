"""Guidance-branch reuse: on chosen steps, skip classifier-free guidance's unconditional rows.

Families that run CFG as one doubled batch (PixArt, Sana, SD3: rows [unconditional; conditional])
spend half of every step on the unconditional branch. FasterCache observed that the difference
between the two branches' outputs changes slowly; so on a step flagged in the schedule's
`guidance_reuse`, the transformer runs the conditional rows only (half the batch) and the
unconditional output is taken as this step's conditional output plus the last computed
(unconditional - conditional) difference: `uncond_t ~ cond_t + (uncond_s - cond_s)`, `s` the last
step that ran both. The pipeline still receives its doubled batch and applies guidance as usual.

The inputs halved are the adapter's `cfg_batched_inputs` (and the tensors of dict arguments such as
PixArt's `added_cond_kwargs`) whose leading size is the batch. Inside the call, ecad's schedule
hooks read the conditional rows of their cached outputs; see `ScheduleState.guidance_rows`.

`apply_guidance_reuse(transformer, config)` installs the hook (`ecad.guidance`); ecad's schedule
installation does it under the step hook, so `config.skip()` can read the step being run.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

GUIDANCE_HOOK = "ecad.guidance"


@dataclass(frozen=True)
class GuidanceReuseConfig:
    """`skip()`: whether the call now starting skips the unconditional rows. `begin(rows)` is told
    the conditional rows' offset before a skipping call runs, `end()` after it (None: nobody).
    `inputs`: the call arguments that hold the doubled batch."""

    skip: Callable[[], bool]
    inputs: tuple[str, ...]
    begin: Callable[[int], None] | None = None
    end: Callable[[], None] | None = None
    needed: Callable[[], bool] = lambda: True  # whether any step may skip (else full calls record nothing)


def _sample(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        return out[0]
    return out.sample


def _with_sample(out: Any, sample: torch.Tensor) -> Any:
    if isinstance(out, torch.Tensor):
        return sample
    if isinstance(out, tuple):
        return (sample, *out[1:])
    if isinstance(out, list):
        return [sample, *out[1:]]
    out.sample = sample
    return out


def cond_rows(value: Any, rows: int) -> Any:
    """The conditional half of `value` when its leading size is `rows` (tensors, and the tensors of
    a dict); anything else as it is."""
    if isinstance(value, torch.Tensor):
        return value[rows // 2 :] if value.dim() > 0 and value.shape[0] == rows else value
    if isinstance(value, dict):
        return {k: cond_rows(v, rows) for k, v in value.items()}
    return value


def doubles_guidance_batch(adapter: Any) -> bool:
    """The family runs classifier-free guidance as one doubled batch (not a second call, not a
    guidance-distilled model): the only case with an unconditional half to skip."""
    return (
        not adapter.unconditional_call and bool(adapter.cfg_batched_inputs) and adapter.transformer_batch(1, None) == 2
    )


class GuidanceReuseHook(ModelHook):
    """On the transformer: a full call records (uncond - cond); a skipping call runs the
    conditional rows and rebuilds the unconditional ones from that difference."""

    def __init__(self, config: GuidanceReuseConfig, arg_names: tuple[str, ...]):
        super().__init__()
        self.config, self.arg_names = config, arg_names
        self.delta: torch.Tensor | None = None  # last full call's (uncond - cond) output

    def new_forward(self, module: nn.Module, *args, **kwargs):
        if args:
            kwargs = {**dict(zip(self.arg_names, args)), **kwargs}
        hidden = kwargs.get("hidden_states")
        rows = int(hidden.shape[0]) if isinstance(hidden, torch.Tensor) else 0
        if not self.config.skip():
            out = self.fn_ref.original_forward(**kwargs)
            sample = _sample(out)
            if rows >= 2 and rows % 2 == 0 and sample.shape[0] == rows and self.config.needed():
                uncond, cond = sample.chunk(2)
                self.delta = uncond - cond
            return out
        if self.delta is None or rows < 2 or rows % 2:
            raise RuntimeError(
                "guidance reuse: this step skips the unconditional branch, but no earlier step of the call ran "
                f"both (or the batch of {rows} rows is not [unconditional; conditional]); the first step must "
                "run both branches with classifier-free guidance on"
            )
        halved = {
            k: cond_rows(v, rows) if k in self.config.inputs or isinstance(v, dict) else v for k, v in kwargs.items()
        }
        if self.config.begin is not None:
            self.config.begin(rows // 2)
        try:
            out = self.fn_ref.original_forward(**halved)
        finally:
            if self.config.end is not None:
                self.config.end()
        cond = _sample(out)
        return _with_sample(out, torch.cat([cond + self.delta, cond]))

    def reset_state(self, module: nn.Module) -> nn.Module:
        self.delta = None
        return module


def apply_guidance_reuse(transformer: nn.Module, config: GuidanceReuseConfig) -> GuidanceReuseHook:
    """Register the hook on `transformer` (innermost of the hooks registered so far is not implied:
    register it before hooks that must run outside it)."""
    arg_names = tuple(inspect.signature(type(transformer).forward).parameters)[1:]
    hook = GuidanceReuseHook(config, arg_names)
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(hook, GUIDANCE_HOOK)
    return hook
