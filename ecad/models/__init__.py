"""Model-family adapters (one module per family, registered below) and pipeline loading.

Adding a family: write `ecad/models/<family>.py` with a `FamilyAdapter` subclass, add one line to
`ADAPTERS`, add its search spaces (search_spaces/*.toml); the parametrised family suite in
tests/test_families.py then runs the same contract on it.
"""

from __future__ import annotations

from typing import Any

from ecad.models.base import FamilyAdapter, ModelWeightsError, TransformerDims, UnsupportedModelError, load_pretrained
from ecad.models.flux import FLUX
from ecad.models.pixart import PIXART
from ecad.models.sana import SANA
from ecad.models.sd3 import SD3
from ecad.models.tiny import TINY_PREFIX
from ecad.models.wan import WAN

ADAPTERS: dict[str, FamilyAdapter] = {a.family: a for a in (PIXART, FLUX, SD3, SANA, WAN)}
FAMILIES = tuple(ADAPTERS)


def adapter_for(family: str) -> FamilyAdapter:
    """The adapter registered under `family`, or a ValueError listing the known families."""
    adapter = ADAPTERS.get(family) if isinstance(family, str) else None
    if adapter is None:
        raise ValueError(f"unknown model family {family!r}; ecad knows {', '.join(FAMILIES)}")
    return adapter


def adapter_for_pipeline(pipe: Any) -> FamilyAdapter:
    """The adapter of a stock diffusers pipeline, found by its class (or a base class) name."""
    names = {cls.__name__ for cls in type(pipe).__mro__}
    for adapter in ADAPTERS.values():
        if names & set(adapter.pipeline_classes.values()):
            return adapter
    supported = sorted(n for a in ADAPTERS.values() for n in a.pipeline_classes.values())
    raise TypeError(f"ecad does not support {type(pipe).__name__}; supported pipelines: {', '.join(supported)}")


def adapter_for_transformer(module: Any) -> FamilyAdapter:
    names = {cls.__name__ for cls in type(module).__mro__}
    for adapter in ADAPTERS.values():
        if names & set(adapter.transformer_classes):
            return adapter
    supported = sorted(n for a in ADAPTERS.values() for n in a.transformer_classes)
    raise TypeError(f"ecad does not support {type(module).__name__}; supported transformers: {', '.join(supported)}")


# The trained offline shapes models (ecad/models/train_shapes.py), shipped in shapes_models/: named
# like the tiny models (they are offline, small and need no download), but loaded with
# from_pretrained from the shipped directory instead of built with random weights.
SHAPES_MODELS: dict[str, tuple[str, str]] = {
    f"{TINY_PREFIX}shapes-pixart": ("PixArtAlphaPipeline", "shapes-pixart"),
    f"{TINY_PREFIX}shapes-flux": ("FluxPipeline", "shapes-flux"),
}


def shapes_pipeline_dir(name: str):
    """The shipped directory of a shapes pipeline, or a ModelWeightsError naming the weights and the
    command that trains them when they are missing."""
    from ecad.resources import shapes_models_dir

    subdir = SHAPES_MODELS[name][1]
    where = shapes_models_dir() / subdir
    if not (where / "model_index.json").is_file():
        raise ModelWeightsError(
            f"the weights of {name!r} are not in {where} (a diffusers pipeline directory); train them with "
            f"`python -m ecad.models.train_shapes --model {subdir.removeprefix('shapes-')}` (it needs the VAE: "
            "`--model vae` first), or reinstall ecad, which ships them"
        )
    return where


def load_shapes_pipeline(name: str):
    """A shipped shapes pipeline (`ecad-tiny/shapes-pixart` or `ecad-tiny/shapes-flux`), float32,
    loaded offline from its directory."""
    import diffusers
    import torch

    where = shapes_pipeline_dir(name)
    return load_pretrained(getattr(diffusers, SHAPES_MODELS[name][0]), str(where), torch.float32, None)


def shapes_transformer_config(name: str) -> tuple[dict[str, Any], int]:
    """A shapes pipeline's transformer config and its VAE's scale factor, read from the shipped
    config files: what MACs and a plan need, without loading any weights (`--dry-run` starts nothing)."""
    import json

    where = shapes_pipeline_dir(name)
    try:
        config = json.loads((where / "transformer" / "config.json").read_text())
        vae = json.loads((where / "vae" / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise ModelWeightsError(
            f"the shipped configs of {name!r} in {where} cannot be read ({exc}); reinstall ecad"
        ) from None
    # diffusers' rule for every pipeline ecad ships: one 2x downsampling per VAE block after the first
    return config, 2 ** (len(vae["block_out_channels"]) - 1)


def tiny_builders() -> dict[str, Any]:
    builders = {name: build for a in ADAPTERS.values() for name, build in a.tiny_models.items()}
    builders.update({name: (lambda name=name: load_shapes_pipeline(name)) for name in SHAPES_MODELS})
    return builders


def build_tiny(name: str):
    """The tiny pipeline named `ecad-tiny/...`, or an error listing the ones there are."""
    builders = tiny_builders()
    if name not in builders:
        raise ValueError(f"unknown tiny model {name!r}; available: {', '.join(sorted(builders))}")
    return builders[name]()


__all__ = [
    "ADAPTERS",
    "FAMILIES",
    "FamilyAdapter",
    "SHAPES_MODELS",
    "ModelWeightsError",
    "TINY_PREFIX",
    "TransformerDims",
    "UnsupportedModelError",
    "adapter_for",
    "adapter_for_pipeline",
    "adapter_for_transformer",
    "build_tiny",
    "load_pipeline",
    "load_shapes_pipeline",
    "shapes_pipeline_dir",
    "shapes_transformer_config",
    "load_pretrained",
    "tiny_builders",
]


def load_pipeline(space, device: str | None = None, dtype=None):
    """The stock diffusers pipeline of a search space: tiny ones are built offline (the trained
    shapes ones loaded from ecad's shipped directory), real ones come from `from_pretrained` (hub
    id or local directory, the user's cache)."""
    import diffusers
    import torch

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
            raise ValueError(
                f"space {space.name!r}: scheduler {space.scheduler!r} is not a diffusers scheduler class; "
                "fix `scheduler` in its TOML"
            )
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    return pipe.to(device) if device is not None else pipe
