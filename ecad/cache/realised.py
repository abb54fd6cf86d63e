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

Cross-attention's text K/V projections (each adapter's `text_projections`) are counted on their own:
ecad's text K/V cache runs them once per call, any other cache whenever the cross-attention runs,
and their rows price the `text_kv_macs` part of a component's MACs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ecad.cache.macs import block_macs, dims_for_space, fixed_macs, text_kv_macs


@dataclass
class RealisedCompute:
    """Rows each component computed, and rows the transformer was called with, over some calls."""

    component_rows: np.ndarray  # [blocks, components] in grid order
    transformer_rows: int  # sum of batch rows over transformer calls (the fixed part runs every call)
    transformer_calls: int
    text_rows: np.ndarray | None = None  # [blocks, components] rows of text K/V projections (per projection, mean)

    def macs(self, space: Any) -> float:
        """MACs computed, by ecad's MACs model of the space's transformer (attention matmuls counted)."""
        dims = dims_for_space(space)
        per_row = block_macs(dims, space.height, space.width)
        kv = text_kv_macs(dims, space.height, space.width)
        text_rows = self.component_rows if self.text_rows is None else self.text_rows
        computed = (self.component_rows * (per_row - kv)).sum() + (text_rows * kv).sum()
        return float(computed) + self.transformer_rows * fixed_macs(dims, space.height, space.width)

    def to_json(self) -> dict[str, Any]:
        out = {
            "component_rows": self.component_rows.astype(int).tolist(),
            "transformer_rows": self.transformer_rows,
            "transformer_calls": self.transformer_calls,
        }
        if self.text_rows is not None:
            out["text_rows"] = self.text_rows.tolist()
        return out


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
        self._counting_call: Any = None
        self._handle: Any = None
        self._outer_rows = 0  # rows of the call now running, as the caller passed them
        self._open = False
        self._reset()

    def _reset(self) -> None:
        self._rows = np.zeros((self.layout.num_blocks, self.layout.num_components), dtype=np.int64)
        self._text_rows = np.zeros((self.layout.num_blocks, self.layout.num_components), dtype=np.float64)
        self._transformer_rows = 0
        self._calls = 0

    def _wrap(self, leaf: nn.Module, b: int, j: int, text_share: float = 0.0) -> None:
        """Count `leaf`'s rows for component (b, j): as the component's runs, or (`text_share` > 0)
        as that share of its text K/V projections' runs."""
        own = vars(leaf).get("forward")
        if own is not None and getattr(own, "__func__", None) is not type(leaf).forward:
            raise RuntimeError(
                f"{type(leaf).__name__} already has a hooked forward: open the ComputeCounter before applying a cache"
            )
        stock = leaf.forward

        def counting_forward(*args, **kwargs):
            if self._open and text_share:
                self._text_rows[b, j] += text_share * _rows(args, kwargs)
            elif self._open:
                self._rows[b, j] += _rows(args, kwargs)
            return stock(*args, **kwargs)

        leaf.forward = counting_forward
        self._wrapped.append((leaf, counting_forward))

    def _count_call(self, module, args, kwargs):
        self._outer_rows = _rows(args, kwargs)
        self._transformer_rows += self._outer_rows
        self._calls += 1

    def _wrap_transformer(self) -> None:
        """Calls and rows are counted as the caller passes them (a pre-hook: it sees every call,
        also through a forward a cache patched in, as cache-dit's FLUX patch is); where the
        transformer's own forward then runs on fewer rows (ecad's guidance reuse, FasterCache: the
        unconditional half skipped, so the fixed part runs on the rest), a wrapper under any hook
        applied later corrects the count to those rows."""
        self._handle = self.transformer.register_forward_pre_hook(self._count_call, with_kwargs=True)
        own = vars(self.transformer).get("forward")
        if own is not None and getattr(own, "__func__", None) is not type(self.transformer).forward:
            raise RuntimeError(
                "the transformer already has a hooked forward: open the ComputeCounter before applying a cache"
            )
        stock = self.transformer.forward

        def counting_call(*args, **kwargs):
            if self._open:
                hidden = kwargs.get("hidden_states", args[0] if args else None)
                if isinstance(hidden, torch.Tensor) and hidden.dim() > 0:
                    self._transformer_rows += int(hidden.shape[0]) - self._outer_rows
                    self._outer_rows = int(hidden.shape[0])
            return stock(*args, **kwargs)

        self._counting_call = counting_call
        self.transformer.forward = counting_call

    def __enter__(self) -> ComputeCounter:
        adapter = self.space.adapter
        for b, (group, i) in enumerate(self.layout.blocks()):
            block = getattr(self.transformer, group.name)[i]
            for name, component in adapter.component_modules(block, group).items():
                self._wrap(sentinel_leaf(component), b, group.components.index(name))
            for name, projections in adapter.text_projections(block, group).items():
                for projection in projections:
                    self._wrap(projection, b, group.components.index(name), 1.0 / len(projections))
        self._wrap_transformer()
        self._open = True
        return self

    def __exit__(self, *exc) -> None:
        self._open = False
        for leaf, counting_forward in self._wrapped:
            if vars(leaf).get("forward") is counting_forward:
                del leaf.forward
            # else a hook applied later still holds it as its original: it stays, inert
        self._wrapped.clear()
        if vars(self.transformer).get("forward") is self._counting_call:
            del self.transformer.forward
        self._handle.remove()

    def take(self) -> RealisedCompute:
        out = RealisedCompute(self._rows.copy(), self._transformer_rows, self._calls, self._text_rows.copy())
        self._reset()
        return out
