"""The one path every image ecad makes takes: the search's workers, `ecad generate`, `ecad compare`
and the report's samples all render through a `Renderer`.

A renderer loads a search space's pipeline once and encodes its prompts once, as the pipeline's
own call would (then frees the text encoders: T5-XXL is most of PixArt's memory). It renders
(prompt, seed) items with one CPU generator per image seeded with the item's seed, so a prompt and
seed give the same image wherever they are rendered: what a search scored is what `ecad generate`
writes, bit for bit. Stateful hooks on the transformer (ecad's schedule, diffusers' caches) are
reset before every call, so no state crosses from one batch to the next.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from diffusers.hooks import HookRegistry

from ecad.cache.pipeline import apply_schedule, remove_schedule
from ecad.metrics.latency import CallTimer
from ecad.schedule import Schedule

Item = tuple[int, int]  # (prompt index, seed)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images as they are saved: 8-bit. Metrics compare these, so an uncached candidate
    reproduces its reference exactly."""
    return (images.float().clamp(0, 1) * 255).round().to(torch.uint8)


def quiet_library_logs() -> None:
    """Per-prompt truncation warnings of diffusers and transformers are noise in a batch run."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.set_verbosity_error()
    transformers_logging.set_verbosity_error()


@dataclass
class Rendered:
    """Images of items, rendered in batches."""

    images: torch.Tensor  # uint8 [items * frames, 3, H, W] on the renderer's device
    ms_per_item: list[float]  # per batch: its wall-clock ms divided by its items (CUDA events on GPU)
    full_batches: list[bool]  # per batch: whether it held batch_size items
    finite: bool  # every image was finite before the 8-bit cast
    frames: int  # frames per item: 1 for images


class Renderer:
    """A search space's pipeline, loaded once, with its prompts encoded once."""

    def __init__(
        self,
        space,
        prompts: Sequence[str],
        device: str | torch.device | None = None,
        dtype=None,
        call: dict[str, Any] | None = None,
        text_kv_cache: bool = True,
    ):
        from ecad.models import load_pipeline

        self.text_kv_cache = text_kv_cache  # schedules applied here compute the text K/V once per call
        quiet_library_logs()
        self.space, self.adapter = space, space.adapter
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        t0 = time.perf_counter()
        self.pipe = load_pipeline(space, device=str(self.device), dtype=dtype)
        self.pipe.set_progress_bar_config(disable=True)
        self.load_seconds = time.perf_counter() - t0
        self.call = {**space.call_kwargs(), **(call or {})}  # what every call runs with
        self.prompts = tuple(prompts)
        self.embeds = self._encode()

    def _encode(self) -> dict[str, torch.Tensor]:
        pipe = self.pipe
        with torch.inference_mode():
            embeds = self.adapter.encode_prompts(pipe, list(self.prompts), self.call, self.device)
        for name in [n for n in pipe.components if n.startswith("text_encoder")]:
            if getattr(pipe, name, None) is not None:
                setattr(pipe, name, None)
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        return embeds

    def items(self, seeds: Sequence[int]) -> list[Item]:
        """Every prompt x seed, prompt by prompt."""
        return [(p, s) for p in range(len(self.prompts)) for s in seeds]

    # ------------------------------------------------------------ what runs
    def apply(self, schedule: Schedule, exact: bool = False) -> None:
        apply_schedule(self.pipe, schedule, exact, text_kv_cache=self.text_kv_cache)

    def remove(self) -> None:
        remove_schedule(self.pipe)

    # ------------------------------------------------------------ rendering
    def images(self, items: Sequence[Item]) -> torch.Tensor:
        """One pipeline call: [items * frames, 3, H, W] in [0, 1] on the device (videos frame by frame)."""
        idx = torch.tensor([p for p, _ in items], device=self.device)
        embeds = {k: v[idx] for k, v in self.embeds.items()}
        generators = [torch.Generator("cpu").manual_seed(s) for _, s in items]
        call = {**self.call, **self.adapter.embeds_call_kwargs()}
        call.pop("max_sequence_length", None)  # used by the encoding only
        HookRegistry.check_if_exists_or_initialize(self.pipe.transformer).reset_stateful_hooks()
        with torch.inference_mode():
            out = self.pipe(generator=generators, output_type="pt", **call, **embeds)
        return self.adapter.output_images(out)

    def render(self, items: Sequence[Item], batch_size: int) -> Rendered:
        """Every item in batches of `batch_size`: 8-bit images on the device (scored there, no host
        round trip) and the time per item of each batch."""
        timer = CallTimer(self.device)
        chunks, ms, full, finite = [], [], [], True
        for i in range(0, len(items), batch_size):
            batch = list(items[i : i + batch_size])
            images, call_ms = timer(lambda batch=batch: self.images(batch))
            finite &= bool(torch.isfinite(images).all())
            chunks.append(to_uint8(images))
            ms.append(call_ms / len(batch))
            full.append(len(batch) == batch_size)
        images = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.uint8)
        return Rendered(images, ms, full, finite, images.shape[0] // max(1, len(items)))
