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


__all__ = ["ADAPTERS", "FamilyAdapter", "ModelWeightsError", "adapter_for_pipeline", "load_pretrained"]
