"""What every model-family adapter provides: its layout, component modules and fast paths."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ecad.layouts import BlockGroup, Layout


logger = logging.getLogger(__name__)


class ModelWeightsError(RuntimeError):
    """Weights are not available locally; the message says which and how to fetch them."""


# A block path computes a block's output when some of its components are reused at this step:
# fn(block, kwargs, cached, exact) -> block output. `cached` holds the reused components' outputs;
# the others it computes by calling the (hooked) component modules. It skips the norms and
# modulation that only feed reused components. `exact`: keep the block's own op order, so results
# are bit-identical to running the stock block with cached outputs; otherwise fused multiply-adds.
BlockPathFn = Callable[[nn.Module, dict, dict[str, Any], bool], Any]


@dataclass(frozen=True)
class BlockPath:
    fn: BlockPathFn
    partial: bool  # also takes blocks where only some components are reused (else: fully reused only)


@dataclass(frozen=True)
class FamilyAdapter:
    """How ecad sees one model family; one instance per family, stateless."""

    family: str
    pipeline_classes: tuple[str, ...]
    layout_of: Callable[[nn.Module], Layout]
    component_modules: Callable[[nn.Module, BlockGroup], dict[str, nn.Module]]
    # The block's path for reused components, or None where this block's configuration is one the
    # path does not know (the stock forward then runs, with cached component outputs).
    block_path: Callable[[nn.Module, BlockGroup], BlockPath | None]
    timestep_kwargs: Callable[[Any, list[int], int], dict]  # (pipe, selected steps, base steps) -> call kwargs
    # Optional fused path for runs of steps where every block is fully reused: `step_reuse_prepare(blocks,
    # cached)` folds the cached outputs of all blocks into a few tensors once per run,
    # `step_reuse_apply(blocks, kwargs, consts)` gives the last block's output from the first block's
    # input. None where the family's gates do not allow it (FLUX: per-block gate projections).
    step_reuse_prepare: Callable[[list[nn.Module], list[dict[str, Any]]], Any] | None = None
    step_reuse_apply: Callable[[list[nn.Module], dict, Any], Any] | None = None
    # Tiny random inputs for one block and outputs for each of its components (on the block's
    # device and dtype): what `checked_block_path` runs the stock forward and the path on.
    block_probe: Callable[[nn.Module, BlockGroup], tuple[dict, dict[str, Any]]] | None = None


_AGREES: dict[tuple[str, type, str], bool] = {}


def checked_block_path(adapter: FamilyAdapter, block: nn.Module, group: BlockGroup) -> BlockPath | None:
    """The adapter's block path, if it agrees bit for bit with the stock block forward (checked
    once per block class): with every component reused, and with every component computed where
    the path takes partly reused blocks. A diffusers release that changed the block makes ecad
    warn and run the stock forward (correct, slower) instead of silently diverging."""
    path = adapter.block_path(block, group)
    if path is None or adapter.block_probe is None:
        return path
    if any(p.is_meta for p in block.parameters()):
        return path  # nothing to compare on meta tensors (cost models)
    key = (adapter.family, type(block), group.name)
    if key not in _AGREES:
        kwargs, outputs = adapter.block_probe(block, group)
        with torch.no_grad():
            agree = _same(_stock_with_outputs(adapter, block, group, kwargs, outputs), path.fn(block, kwargs, outputs, True))
            if path.partial:
                agree = agree and _same(type(block).forward(block, **kwargs), path.fn(block, kwargs, {}, True))
        _AGREES[key] = agree
        if not agree:
            logger.warning("%s.forward differs from ecad's %s block path (a diffusers change?); blocks with reused "
                           "components run the stock forward (correct, slower)", type(block).__name__, adapter.family)
    return path if _AGREES[key] else None


def _stock_with_outputs(adapter: FamilyAdapter, block: nn.Module, group: BlockGroup, kwargs: dict,
                        outputs: dict[str, Any]) -> Any:
    """The stock forward with each component module returning the given output (reuse by hand)."""
    modules = adapter.component_modules(block, group)
    saved = {name: m.__dict__.get("forward") for name, m in modules.items()}
    try:
        for name, m in modules.items():
            m.forward = lambda *a, _out=outputs[name], **k: _out
        return type(block).forward(block, **kwargs)
    finally:
        for name, m in modules.items():
            if saved[name] is None:
                del m.forward
            else:
                m.forward = saved[name]


def _same(a: Any, b: Any) -> bool:
    a, b = (a,) if torch.is_tensor(a) else tuple(a), (b,) if torch.is_tensor(b) else tuple(b)
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def load_pretrained(pipeline_cls, hub_id: str, dtype: torch.dtype, device: str | torch.device | None, **kwargs):
    """from_pretrained with a user-facing error when weights are missing offline."""
    try:
        pipe = pipeline_cls.from_pretrained(hub_id, torch_dtype=dtype, **kwargs)
    except (OSError, ValueError) as exc:  # hub errors subclass OSError; offline misses may raise ValueError
        local = os.path.isdir(hub_id)
        hint = (
            f"the directory {hub_id!r} does not hold a complete diffusers pipeline"
            if local
            else f"the weights of {hub_id!r} are not in the local Hugging Face cache and cannot be downloaded "
            f"(offline or no access). Fetch them on a machine with internet: `hf download {hub_id}` "
            f"(accept the model's licence on the Hub first if it is gated), then copy the cache "
            f"(~/.cache/huggingface) here or pass a local directory as the model id"
        )
        raise ModelWeightsError(f"cannot load {pipeline_cls.__name__}: {hint}. Cause: {exc}") from exc
    return pipe.to(device) if device is not None else pipe
