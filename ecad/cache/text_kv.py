"""Lossless text K/V cache: cross-attention keys and values of the text, once per call and branch.

A cross-attention's keys and values are projections of the text alone (PixArt's, Sana's and Wan's
`attn2.to_k` / `attn2.to_v`, as each adapter's `text_projections` lists them), and the text does not
change between the denoising steps of a call. So each projection runs at the first step that needs
it and returns the same tensor at every later step: bit-identical outputs for 2 x text tokens x
width x inner MACs per block and step saved. FLUX and SD3 project text and image tokens together
(joint attention): there is nothing of the text alone to keep, so they have no text projections.

Validity is keyed on the transformer call's `encoder_hidden_states`: the very tensor object (a weak
reference, so a new tensor at a freed address is not mistaken for it), its in-place version, shape,
dtype and device (an inference-mode tensor has no version: changing one in place between steps of
a call is not seen), per guidance branch (diffusers' cache context: Wan runs each CFG branch as its own
call with its own text). A call with other text, a new pipeline call (ecad's pipeline wrapper clears
the state at both ends) or `reset_schedule` recomputes them. Each projection also checks that its
input has the shape it had when stored.

It is a diffusers hook like the others (`ecad.text_kv` on the transformer and on each projection)
and can be applied alone (`apply_text_kv_cache`) or, as `ecad.apply_schedule` does by default, under
a schedule (`text_kv_cache=False` there turns it off for comparisons).
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from ecad.cache.branches import DEFAULT_BRANCH, CacheContextListener
from ecad.models import FamilyAdapter, adapter_for_transformer

TEXT_KV_HOOK = "ecad.text_kv"


@dataclass(frozen=True)
class TextKVCacheConfig:
    """Settings of the text K/V cache. `on_compute(block, component)` is told each time a
    projection really runs (ecad's summary counts them); None tells nobody."""

    on_compute: Callable[[int, int], None] | None = None


def _tensor_key(x: Any) -> tuple | None:
    if not isinstance(x, torch.Tensor):
        return None
    version = None if x.is_inference() else x._version  # inference tensors keep no version counter
    return (version, tuple(x.shape), x.dtype, x.device, x.data_ptr())


class TextKVState:
    """The text each branch's calls see and the projections computed from it."""

    def __init__(self) -> None:
        self.text: dict[str, tuple[weakref.ref, tuple]] = {}  # branch -> (tensor ref, key)
        self.outputs: dict[tuple[str, int], tuple[tuple, torch.Tensor]] = {}  # (branch, proj) -> (input shape, out)
        self.branch = DEFAULT_BRANCH
        self.valid = False  # the current call passed a text tensor
        self.row_select: Callable[[torch.Tensor], torch.Tensor] | None = None  # rows this call runs (guidance reuse)

    def begin_call(self, branch: str, text: Any) -> None:
        """A transformer call in `branch` with `text` as encoder_hidden_states: keep what was
        computed from the same text, forget the rest of the branch."""
        self.branch = branch
        key = _tensor_key(text)
        self.valid = key is not None
        if not self.valid:
            return
        held = self.text.get(branch)
        if held is None or held[0]() is not text or held[1] != key:
            self.text[branch] = (weakref.ref(text), key)
            for k in [k for k in self.outputs if k[0] == branch]:
                del self.outputs[k]

    def clear(self) -> None:
        self.text.clear()
        self.outputs.clear()
        self.valid = False
        self.row_select = None

    @property
    def nbytes(self) -> int:
        return sum(out.numel() * out.element_size() for _, out in self.outputs.values())


class _TextKeyHook(CacheContextListener):
    """On the transformer: tells the state which text (and branch) this call has."""

    def __init__(self, state: TextKVState, arg_names: tuple[str, ...]):
        super().__init__()
        self.state, self.arg_names = state, arg_names

    def new_forward(self, module: nn.Module, *args, **kwargs):
        text = kwargs.get("encoder_hidden_states")
        if text is None and "encoder_hidden_states" in self.arg_names[: len(args)]:
            text = args[self.arg_names.index("encoder_hidden_states")]
        self.state.begin_call(self.branch(), text)
        return self.fn_ref.original_forward(*args, **kwargs)

    def reset_state(self, module: nn.Module) -> nn.Module:
        self.state.clear()
        return module


class _ProjectionHook(ModelHook):
    """On one text projection: the first run in a call computes and keeps, later runs return it."""

    def __init__(self, state: TextKVState, index: int, cell: tuple[int, int], config: TextKVCacheConfig):
        super().__init__()
        self.state, self.index, self.cell, self.config = state, index, cell, config

    def new_forward(self, module: nn.Module, x, *args, **kwargs):
        state = self.state
        if not state.valid or args or kwargs or not isinstance(x, torch.Tensor):
            return self._compute(x, *args, **kwargs)
        key = (state.branch, self.index)
        held = state.outputs.get(key)
        if state.row_select is not None and held is not None:  # a call on some rows of the stored text
            return state.row_select(held[1])
        if held is not None and held[0] == tuple(x.shape):
            return held[1]
        out = self._compute(x)
        state.outputs[key] = (tuple(x.shape), out)
        return out

    def _compute(self, *args, **kwargs):
        if self.config.on_compute is not None:
            self.config.on_compute(*self.cell)
        return self.fn_ref.original_forward(*args, **kwargs)


@dataclass
class TextKVCache:
    """What `apply_text_kv_cache` hooked, so `remove` takes exactly that off."""

    transformer: nn.Module
    state: TextKVState
    modules: list[nn.Module] = field(default_factory=list)

    def remove(self) -> None:
        for module in self.modules:
            registry = getattr(module, "_diffusers_hook", None)
            if registry is not None:
                registry.remove_hook(TEXT_KV_HOOK, recurse=False)
        self.modules.clear()
        self.state.clear()
        registry = getattr(self.transformer, "_diffusers_hook", None)
        if registry is not None:
            registry.invalidate_child_registries_cache()


def text_projection_modules(adapter: FamilyAdapter, transformer: nn.Module) -> list[tuple[int, int, nn.Module]]:
    """(block, component, projection) of every text projection, in layout order."""
    layout = adapter.layout_of(transformer)
    out = []
    for b, (group, i) in enumerate(layout.blocks()):
        for name, projections in adapter.text_projections(getattr(transformer, group.name)[i], group).items():
            out.extend((b, group.components.index(name), p) for p in projections)
    return out


def apply_text_kv_cache(
    transformer: nn.Module, config: TextKVCacheConfig | None = None, adapter: FamilyAdapter | None = None
) -> TextKVCache | None:
    """Hook the transformer's text projections (none for joint-attention families: returns None)."""
    config = config or TextKVCacheConfig()
    adapter = adapter or adapter_for_transformer(transformer)
    projections = text_projection_modules(adapter, transformer)
    if not projections:
        return None
    state = TextKVState()
    cache = TextKVCache(transformer, state)
    arg_names = tuple(inspect.signature(type(transformer).forward).parameters)[1:]
    HookRegistry.check_if_exists_or_initialize(transformer).register_hook(_TextKeyHook(state, arg_names), TEXT_KV_HOOK)
    cache.modules.append(transformer)
    for index, (b, c, module) in enumerate(projections):
        HookRegistry.check_if_exists_or_initialize(module).register_hook(
            _ProjectionHook(state, index, (b, c), config), TEXT_KV_HOOK
        )
        cache.modules.append(module)
    HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
    return cache
