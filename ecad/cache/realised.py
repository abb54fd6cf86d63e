"""Realised compute: what a transformer actually computed in some calls, whatever cache ran it.

A dynamic cache (diffusers' FirstBlockCache, MagCache, TaylorSeer; cache-dit's DBCache) decides at
run time what to skip, so its cost cannot be read from a schedule: it has to be counted. Every
cache skips a component (or a whole block) by not running it, so the counter watches one
parameterised leaf per component, the first in the component's module tree (its `to_q`, its
`net.0.proj`, or the component itself when it is one Linear): that leaf's own forward runs if and
only if the component computes, whichever hook sits above it.
Each run adds the leaf's input rows (its batch: classifier-free guidance doubles it where a family
batches the unconditional branch). Rows times ecad's per-row MACs model (`block_macs`,
`fixed_macs`) gives the MACs actually computed, on the same scale as `schedule_macs`: under an ecad
schedule the two agree exactly, which the tests check for every family.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ecad.cache.macs import block_macs, dims_for_space, fixed_macs


@dataclass
class RealisedCompute:
    """Rows each component computed, and rows the transformer was called with, over some calls."""

    component_rows: np.ndarray  # [blocks, components] in grid order
    transformer_rows: int  # sum of batch rows over transformer calls (the fixed part runs every call)
    transformer_calls: int

    def macs(self, space: Any) -> float:
        """MACs computed, by ecad's MACs model of the space's transformer (attention matmuls counted)."""
        dims = dims_for_space(space)
        per_row = block_macs(dims, space.height, space.width)
        return float((self.component_rows * per_row).sum()) + self.transformer_rows * fixed_macs(
            dims, space.height, space.width
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "component_rows": self.component_rows.astype(int).tolist(),
            "transformer_rows": self.transformer_rows,
            "transformer_calls": self.transformer_calls,
        }


def _rows(args: tuple, kwargs: dict) -> int:
    x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
    return int(x.shape[0]) if isinstance(x, torch.Tensor) and x.dim() > 0 else 1


def sentinel_leaf(component: nn.Module) -> nn.Module:
    """The first module in `component`'s tree that holds parameters of its own (the component
    itself when it is a plain Linear)."""
    for module in component.modules():
        if next(module.parameters(recurse=False), None) is not None:
            return module
    raise ValueError(f"{type(component).__name__} has no parameters: its runs cannot be counted")


class ComputeCounter:
    """Counts what a transformer computes while it is open. It wraps each sentinel leaf's
    `forward` itself, so it must be opened before any cache is applied: diffusers' and ecad's
    hooks then keep the counting forward as the "original" they call only when the component
    really computes (a forward pre-hook would fire even when a hook on the leaf returns a cached
    value). A plain pre-hook on the transformer counts its calls. `take()` returns the tally since
    the last take and starts a new one."""

    def __init__(self, transformer: nn.Module, space: Any):
        self.transformer, self.space = transformer, space
        self.layout = space.layout
        self._wrapped: list[tuple[nn.Module, Any]] = []
        self._handle: Any = None
        self._open = False
        self._reset()

    def _reset(self) -> None:
        self._rows = np.zeros((self.layout.num_blocks, self.layout.num_components), dtype=np.int64)
        self._transformer_rows = 0
        self._calls = 0

    def _wrap(self, leaf: nn.Module, b: int, j: int) -> None:
        own = vars(leaf).get("forward")
        if own is not None and getattr(own, "__func__", None) is not type(leaf).forward:
            raise RuntimeError(
                f"{type(leaf).__name__} already has a hooked forward: open the ComputeCounter before applying a cache"
            )
        stock = leaf.forward

        def counting_forward(*args, **kwargs):
            if self._open:
                self._rows[b, j] += _rows(args, kwargs)
            return stock(*args, **kwargs)

        leaf.forward = counting_forward
        self._wrapped.append((leaf, counting_forward))

    def _count_call(self, module, args, kwargs):
        self._transformer_rows += _rows(args, kwargs)
        self._calls += 1

    def __enter__(self) -> ComputeCounter:
        adapter = self.space.adapter
        for b, (group, i) in enumerate(self.layout.blocks()):
            block = getattr(self.transformer, group.name)[i]
            for name, component in adapter.component_modules(block, group).items():
                self._wrap(sentinel_leaf(component), b, group.components.index(name))
        self._handle = self.transformer.register_forward_pre_hook(self._count_call, with_kwargs=True)
        self._open = True
        return self

    def __exit__(self, *exc) -> None:
        self._open = False
        for leaf, counting_forward in self._wrapped:
            if vars(leaf).get("forward") is counting_forward:
                del leaf.forward
            # else a hook applied later still holds it as its original: it stays, inert
        self._wrapped.clear()
        self._handle.remove()

    def take(self) -> RealisedCompute:
        out = RealisedCompute(self._rows.copy(), self._transformer_rows, self._calls)
        self._reset()
        return out
