"""diffusers' own caches as `ecad compare` contenders, set up so they act on the model at hand.

Out of the box several of them do nothing on a given model: TaylorSeer's default module patterns
miss PixArt's `attn1`/`attn2`, and FirstBlockCache's 0.05 or MagCache's 0.06 thresholds skip no
step on a model whose residuals change faster. So each is configured for this model: TaylorSeer
and the attention broadcasts hook the family's own component modules (from its adapter), and
the thresholds are calibrated on the same prompts (`ecad.compare.calibration`). Whatever a cache
then does is counted, not assumed (`ecad.cache.realised`).
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ecad.compare.calibration import first_block_residual_changes, mag_cache_errors, thresholds
from ecad.compare.contenders import Contender, Unavailable

CONTEXT_HOOK = "ecad.peer_context"
TAYLORSEER = {"cache_interval": 3, "disable_cache_before_step": 2, "max_order": 1}
PAB = {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (100, 800)}
FASTER_CACHE = {"spatial_attention_block_skip_range": 2, "spatial_attention_timestep_skip_range": (-1, 681)}


class PeerContextHook(ModelHook):
    """Pipelines whose transformer has no CacheMixin (PixArt, SD3, Sana) set neither a cache
    context nor the current timestep, which diffusers' cache hooks need: this hook sets both on
    every transformer call, through CacheMixin's own context manager. Stateful, so the renderer's
    reset before each pipeline call starts its step count over."""

    _is_stateful = True

    def __init__(self, num_steps: int):
        super().__init__()
        self.num_steps, self.calls, self.timestep = num_steps, 0, None

    def reset_state(self, module):
        self.calls, self.timestep = 0, None
        return module

    def new_forward(self, module, *args, **kwargs):
        from diffusers.models.cache_utils import CacheMixin

        t = kwargs.get("timestep")
        self.timestep = float(t.flatten()[0]) if isinstance(t, torch.Tensor) else t
        context = CacheMixin.cache_context(
            module, "cond_uncond", step_index=self.calls, num_inference_steps=self.num_steps, timestep=self.timestep
        )
        self.calls += 1
        with context:
            return self.fn_ref.original_forward(*args, **kwargs)


def _apply_function(config) -> Callable:
    from diffusers import hooks

    return {
        hooks.FasterCacheConfig: hooks.apply_faster_cache,
        hooks.FirstBlockCacheConfig: hooks.apply_first_block_cache,
        hooks.MagCacheConfig: hooks.apply_mag_cache,
        hooks.PyramidAttentionBroadcastConfig: hooks.apply_pyramid_attention_broadcast,
        hooks.TaylorSeerCacheConfig: hooks.apply_taylorseer_cache,
    }[type(config)]


def _remove_all(transformer) -> None:
    """Remove every non-ecad hook diffusers registered on the transformer and its sub-modules."""
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    names = set(registry.hooks)
    for module in transformer.modules():
        sub = getattr(module, "_diffusers_hook", None)
        if sub is not None:
            names.update(sub.hooks)
    for name in names:
        if not name.startswith("ecad."):
            registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()


@dataclass
class DiffusersCache(Contender):
    """One of diffusers' cache configs. CacheMixin transformers (FLUX, Wan) take it through
    `enable_cache`; the others get diffusers' `apply_*` function and a `PeerContextHook`."""

    make_config: Callable[[Callable[[], Any]], Any] | None = None  # timestep callback -> config
    _context: PeerContextHook | None = field(default=None, repr=False)

    def enable(self, renderer) -> None:
        pipe, transformer = renderer.pipe, renderer.pipe.transformer
        if hasattr(transformer, "enable_cache"):
            transformer.enable_cache(self.make_config(lambda: pipe.current_timestep))
            return
        context = self._context = PeerContextHook(renderer.space.steps)
        config = self.make_config(lambda: context.timestep)
        _apply_function(config)(transformer, config)
        # registered last, so outermost: the cache's own transformer-level hooks (FasterCache's) run
        # inside the context and read the timestep this hook has just set
        HookRegistry.check_if_exists_or_initialize(transformer).register_hook(context, CONTEXT_HOOK)

    def disable(self, renderer) -> None:
        transformer = renderer.pipe.transformer
        if hasattr(transformer, "disable_cache"):
            transformer.disable_cache()
            return
        # outermost first: diffusers' remove_hook, taking out an inner hook first, leaves the outer
        # one's saved "original" forward pointing at the removed hook
        HookRegistry.check_if_exists_or_initialize(transformer).remove_hook(CONTEXT_HOOK, recurse=False)
        _remove_all(transformer)
        self._context = None


def component_module_names(space, transformer, roles: Sequence[str] | None = None) -> list[str]:
    """Full module names of the family's cacheable components (those of `roles`, or all), as
    regexes that match exactly those modules: what TaylorSeer's `cache_identifiers` and the
    attention broadcasts' identifiers need to act on this family."""
    names = {id(m): n for n, m in transformer.named_modules()}
    out = []
    for group, i in space.layout.blocks():
        block = getattr(transformer, group.name)[i]
        for comp, module in space.adapter.component_modules(block, group).items():
            if roles is None or space.adapter.roles[comp] in roles:
                out.append(f"^{re.escape(names[id(module)])}$")
    return out


def calibrate_mag_ratios(renderer, items) -> list[float]:
    """MagCache's per-step magnitude ratios for this pipeline: diffusers' own calibration mode,
    on one batch of the compared prompts; its logged ratios are read back."""
    from diffusers.hooks import MagCacheConfig

    found: list[float] = []

    class Grab(logging.Handler):
        def emit(self, record):
            m = re.search(r"\[(.*)\]", record.getMessage())
            if m and not found:
                found.extend(float(x) for x in m.group(1).split(","))

    steps = renderer.space.steps
    logger = logging.getLogger("diffusers.hooks.mag_cache")
    handler, level, propagate = Grab(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # keep the calibration printout off the user's terminal
    calibration = DiffusersCache(
        "MagCache calibration",
        "diffusers",
        make_config=lambda _: MagCacheConfig(calibrate=True, num_inference_steps=steps),
    )
    try:
        calibration.enable(renderer)
        with contextlib.redirect_stdout(io.StringIO()):
            renderer.images(items)
    finally:
        calibration.disable(renderer)
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    return found[:steps]


def _failed(name: str, what: str, exc: Exception) -> Unavailable:
    return Unavailable(name, "diffusers", {}, reason=f"{what} failed: {type(exc).__name__}: {exc}"[:240])


def diffusers_contenders(renderer, items, batch_size: int, quantiles: Sequence[float]) -> list[Contender]:
    """FirstBlockCache and MagCache at calibrated thresholds, TaylorSeer on the family's
    components, Pyramid Attention Broadcast and FasterCache on its attention. The pipeline must be
    stock; calibration runs on `items`."""
    from diffusers import hooks

    space, transformer = renderer.space, renderer.pipe.transformer
    adapter, steps = space.adapter, space.steps
    out: list[Contender] = []

    try:
        changes = first_block_residual_changes(renderer, items, batch_size)
    except Exception as exc:  # noqa: BLE001 - the rows say what went wrong
        out.append(_failed("FirstBlockCache", "calibration", exc))
    else:
        found = thresholds(changes, quantiles)
        if not found:
            out.append(Unavailable("FirstBlockCache", "diffusers", {}, reason="calibration observed no step"))
        for t in found:
            out.append(
                DiffusersCache(
                    f"FirstBlockCache({t.label()})",
                    "diffusers",
                    {"threshold": t.value, **t.to_json()},
                    make_config=lambda _, t=t: hooks.FirstBlockCacheConfig(threshold=t.value),
                )
            )

    retention = hooks.MagCacheConfig.retention_ratio
    published = adapter.mag_ratios(steps)
    try:
        ratios = published or calibrate_mag_ratios(renderer, items[:batch_size])
    except Exception as exc:  # noqa: BLE001
        out.append(_failed("MagCache", "calibration", exc))
    else:
        source = "published by diffusers for this model" if published else "calibrated on this pipeline"
        if not ratios:
            out.append(Unavailable("MagCache", "diffusers", {}, reason="calibration reported no ratios"))
        for t in thresholds(mag_cache_errors(ratios, retention, steps), quantiles):
            out.append(
                DiffusersCache(
                    f"MagCache({t.label()})",
                    "diffusers",
                    {"threshold": t.value, **t.to_json(), "mag_ratios": source, "retention_ratio": retention},
                    make_config=lambda _, t=t: hooks.MagCacheConfig(
                        threshold=t.value, num_inference_steps=steps, mag_ratios=list(ratios)
                    ),
                )
            )

    components = component_module_names(space, transformer)
    out.append(
        DiffusersCache(
            f"TaylorSeer(interval {TAYLORSEER['cache_interval']})",
            "diffusers",
            {**TAYLORSEER, "modules": f"{len(components)} components (every block's {', '.join(_kinds(space))})"},
            make_config=lambda _: hooks.TaylorSeerCacheConfig(
                **TAYLORSEER, taylor_factors_dtype=torch.float32, cache_identifiers=components
            ),
        )
    )
    attention = component_module_names(space, transformer, roles=("attention", "cross_attention"))
    out.append(
        DiffusersCache(
            f"PAB(spatial {PAB['spatial_attention_block_skip_range']})",
            "diffusers",
            {**PAB, "modules": f"{len(attention)} attention components"},
            make_config=lambda timestep: hooks.PyramidAttentionBroadcastConfig(
                **PAB, spatial_attention_block_identifiers=attention, current_timestep_callback=timestep
            ),
        )
    )
    if adapter.unconditional_call:
        out.append(
            Unavailable(
                "FasterCache",
                "diffusers",
                {},
                reason=f"{adapter.display_name} runs the unconditional branch as its own transformer call; "
                "FasterCache splits it from a batch that holds both",
            )
        )
    else:
        distilled = adapter.transformer_batch(1, space.guidance_scale) == 1
        out.append(
            DiffusersCache(
                f"FasterCache(spatial {FASTER_CACHE['spatial_attention_block_skip_range']})",
                "diffusers",
                {**FASTER_CACHE, "guidance_distilled": distilled, "modules": f"{len(attention)} attention components"},
                make_config=lambda timestep: hooks.FasterCacheConfig(
                    **FASTER_CACHE,
                    spatial_attention_block_identifiers=attention,
                    current_timestep_callback=timestep,
                    tensor_format="BCFHW" if adapter.video else "BCHW",
                    is_guidance_distilled=distilled,
                    _unconditional_conditional_input_kwargs_identifiers=list(adapter.cfg_batched_inputs),
                ),
            )
        )
    return out


def _kinds(space) -> list[str]:
    seen: dict[str, None] = {}
    for group in space.layout.groups:
        seen.update(dict.fromkeys(group.components))
    return list(seen)
