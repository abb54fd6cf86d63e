"""Model-family adapters and pipeline loading."""

from __future__ import annotations

from typing import Any

from ecad.models.base import FamilyAdapter, ModelWeightsError, load_pretrained
from ecad.models.flux import FLUX
from ecad.models.pixart import PIXART

ADAPTERS: dict[str, FamilyAdapter] = {"pixart": PIXART, "flux": FLUX}


def adapter_for_pipeline(pipe: Any) -> FamilyAdapter:
    """The adapter of a stock diffusers pipeline, found by its class (or a base class) name."""
    names = {cls.__name__ for cls in type(pipe).__mro__}
    for adapter in ADAPTERS.values():
        if names & set(adapter.pipeline_classes):
            return adapter
    supported = sorted(n for a in ADAPTERS.values() for n in a.pipeline_classes)
    raise TypeError(f"ecad does not support {type(pipe).__name__}; supported pipelines: {', '.join(supported)}")


__all__ = ["ADAPTERS", "FamilyAdapter", "ModelWeightsError", "adapter_for_pipeline", "load_pipeline", "load_pretrained"]


def load_pipeline(space, device: str | None = None, dtype=None):
    """The stock diffusers pipeline of a search space: tiny ones are built offline, real ones
    come from `from_pretrained` (hub id or local directory, the user's cache)."""
    import diffusers
    import torch

    from ecad.models.tiny import build_tiny

    model = space.model
    if space.is_tiny:
        pipe = build_tiny(model)
    else:
        torch_dtype = dtype if dtype is not None else space.torch_dtype
        if device in (None, "cpu") and torch_dtype == torch.float16:
            torch_dtype = torch.float32  # fp16 kernels are missing or slow on CPU
        pipe = load_pretrained(getattr(diffusers, space.pipeline_class), model, torch_dtype, None)
    if type(pipe.scheduler).__name__ != space.scheduler:  # the space fixes the sampler, not the checkpoint
        scheduler_cls = getattr(diffusers, space.scheduler, None)
        if scheduler_cls is None:
            raise ValueError(f"space {space.name!r}: scheduler {space.scheduler!r} is not a diffusers scheduler class; "
                             "fix `scheduler` in its TOML")
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    return pipe.to(device) if device is not None else pipe
