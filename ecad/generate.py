"""Apply a saved schedule at inference: the same `apply_schedule` the search workers use, so
what was searched is exactly what runs in production."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ecad.files import atomic_write, atomic_write_json
from ecad.generation import Renderer
from ecad.schedule import MAX_GUIDANCE, Schedule, ScheduleError

VIDEO_FPS = 16  # Wan 2.1's frame rate


@dataclass
class GenerateResult:
    images: torch.Tensor  # uint8 [N * frames, 3, H, W]: image by image (video by video, frame by frame)
    prompts: list[str]  # per image or video
    seeds: list[int]
    settings: dict[str, Any] = field(default_factory=dict)
    frames: int = 1  # frames per video; 1 for images

    def samples(self) -> list[torch.Tensor]:
        """Per prompt x seed: [3, H, W] for an image, [frames, 3, H, W] for a video."""
        if self.frames == 1:
            return list(self.images)
        return list(self.images.reshape(len(self.prompts), self.frames, *self.images.shape[1:]))


def space_for_schedule(schedule: Schedule, space_name: str | None = None, model: str | None = None):
    """The search space to run a schedule in: the one named, else the shipped space whose family,
    variant, layout, steps, resolution and model (unless `model` replaces it) match the schedule's."""
    from ecad.spaces import list_spaces, load_space

    if space_name:
        space = load_space(space_name)
        space.check_schedule(schedule)
        return space

    def fits(space) -> bool:
        wanted = [(schedule.variant, space.variant), (schedule.height, space.height), (schedule.width, space.width)]
        if model is None:
            wanted.append((schedule.model, space.model))
        return (
            space.family == schedule.family
            and space.layout == schedule.layout
            and space.steps == schedule.num_steps
            and all(a is None or a == b for a, b in wanted)
        )

    for name in list_spaces():
        space = load_space(name)
        if fits(space):
            space.check_schedule(schedule)  # a step subset runs only where the space permits one
            return space
    raise ScheduleError(
        f"no search space matches this schedule ({schedule.layout.describe()}, {schedule.num_steps} steps, "
        f"variant {schedule.variant}, model {schedule.model}, {schedule.height}x{schedule.width}); "
        + ("pass --space NAME" if model else "pass --space NAME or --model ID")
    )


def generate(
    schedule: Schedule,
    prompts: list[str],
    seeds: list[int],
    space_name: str | None = None,
    model: str | None = None,
    device: str | None = None,
    batch_size: int = 4,
    guidance_scale: float | None = None,
    text_kv_cache: bool = True,
) -> GenerateResult:
    """Images for every prompt x seed with `schedule` applied, rendered the way the search
    rendered them (one CPU generator per image: the same noise the search used for that seed),
    plus timing and settings. `text_kv_cache` (lossless, on by default) computes cross-attention's
    text keys and values once per call; it shows in the time and in `macs_fraction` (of the stock
    pipeline's MACs)."""
    import dataclasses

    if guidance_scale is not None and not (
        isinstance(guidance_scale, (int, float))
        and math.isfinite(guidance_scale)
        and 0 <= guidance_scale <= MAX_GUIDANCE
    ):
        raise ScheduleError(f"guidance_scale: must be a finite number 0..{MAX_GUIDANCE:g}, got {guidance_scale!r}")
    space = space_for_schedule(schedule, space_name, model)
    if model:
        space = dataclasses.replace(space, hub_id=model)
    overrides: dict[str, Any] = {"height": schedule.height or space.height, "width": schedule.width or space.width}
    for value in (schedule.guidance_scale, guidance_scale):  # 0 is a valid guidance scale
        if value is not None:
            overrides["guidance_scale"] = value
    renderer = Renderer(space, prompts, device, call=overrides, text_kv_cache=text_kv_cache)
    renderer.apply(schedule)
    items = renderer.items(seeds)
    rendered = renderer.render(items, batch_size)
    settings = {
        "schedule": schedule.name,
        "space": space.name,
        "model": space.model,
        "device": str(renderer.device),
        "dtype": str(renderer.pipe.transformer.dtype),
        "batch_size": batch_size,
        "steps": len(schedule.executed_steps),
        "timesteps": schedule.timesteps,
        "compute_fraction": schedule.compute_fraction(),  # of components
        "macs_fraction": _macs_fraction(schedule, space, overrides["height"], overrides["width"], text_kv_cache),
        "text_kv_cache": text_kv_cache,
        "call": dict(renderer.call),
        "load_seconds": round(renderer.load_seconds, 3),
        "ms_per_image": [round(x, 3) for x in rendered.ms_per_item],
    }
    if rendered.frames > 1:
        settings["frames"] = rendered.frames
    return GenerateResult(
        rendered.images.cpu(), [prompts[p] for p, _ in items], [s for _, s in items], settings, rendered.frames
    )


def _macs_fraction(schedule: Schedule, space, height: int, width: int, text_kv_cache: bool = True) -> float:
    """The share of the stock pipeline's transformer MACs the schedule runs, by ecad's MACs model
    (estimated)."""
    from ecad.cache.macs import dims_for_space, schedule_macs

    report = schedule_macs(
        schedule, dims_for_space(space), height=height, width=width, batch=1, text_kv_cache=text_kv_cache
    )
    return report.total / report.full


def _pil(frame: torch.Tensor):
    from PIL import Image

    return Image.fromarray(frame.permute(1, 2, 0).numpy())


def save_png(path: Path, image: torch.Tensor) -> Path:
    """One 8-bit [3, H, W] image as a PNG, written atomically."""
    pil = _pil(image)
    return atomic_write(path, lambda tmp: pil.save(tmp, format="PNG"))


def save_animation(path: Path, frames: torch.Tensor, webp: bool) -> Path:
    """[F, 3, H, W] frames as an animated (lossless) WebP, or a GIF where Pillow has no WebP."""
    first, *rest = [_pil(frame) for frame in frames]
    options = {"lossless": True} if webp else {}
    return atomic_write(
        path,
        lambda tmp: first.save(
            tmp,
            format="WEBP" if webp else "GIF",
            save_all=True,
            append_images=rest,
            duration=1000 // VIDEO_FPS,
            loop=0,
            **options,
        ),
    )


def save_result(result: GenerateResult, out_dir: Path) -> list[Path]:
    """One PNG per image; a video is a folder of PNG frames plus an animated WebP (GIF where
    Pillow has no WebP) beside it. generate.json lists every file with its prompt and seed."""
    from PIL import features

    webp = features.check("webp")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths, entries = [], []
    for i, (sample, prompt, seed) in enumerate(zip(result.samples(), result.prompts, result.seeds)):
        stem = f"{i:04d}_seed{seed}"
        if result.frames == 1:
            path = save_png(out_dir / f"{stem}.png", sample)
            entries.append({"file": path.name, "prompt": prompt, "seed": seed})
        else:
            (out_dir / stem).mkdir(exist_ok=True)
            frames = [save_png(out_dir / stem / f"frame_{f:03d}.png", frame) for f, frame in enumerate(sample)]
            path = save_animation(out_dir / f"{stem}.{'webp' if webp else 'gif'}", sample, webp)
            entries.append(
                {"file": path.name, "frames": [f"{stem}/{p.name}" for p in frames], "prompt": prompt, "seed": seed}
            )
        paths.append(path)
    meta = {**result.settings, "images": entries}
    atomic_write_json(out_dir / "generate.json", meta)
    return paths
