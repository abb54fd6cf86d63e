"""Apply a saved schedule at inference: the same `apply_schedule` the search workers use, so
what was searched is exactly what runs in production."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ecad.cache.pipeline import apply_schedule
from ecad.distributed.worker import to_uint8
from ecad.metrics.latency import CallTimer
from ecad.schedule import Schedule, ScheduleError

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
        return (space.family == schedule.family and space.layout == schedule.layout
                and space.steps == schedule.num_steps and all(a is None or a == b for a, b in wanted))

    for name in list_spaces():
        space = load_space(name)
        if fits(space):
            return space
    raise ScheduleError(
        f"no search space matches this schedule ({schedule.layout.describe()}, {schedule.num_steps} steps, "
        f"variant {schedule.variant}, model {schedule.model}, {schedule.height}x{schedule.width}); "
        + ("pass --space NAME" if model else "pass --space NAME or --model ID")
    )


def generate(schedule: Schedule, prompts: list[str], seeds: list[int], space_name: str | None = None,
             model: str | None = None, device: str | None = None, batch_size: int = 4,
             guidance_scale: float | None = None) -> GenerateResult:
    """Images for every prompt x seed with `schedule` applied, one CPU generator per image (the
    same noise the search used for that seed), plus timing and settings."""
    import dataclasses

    from ecad.models import load_pipeline

    space = space_for_schedule(schedule, space_name, model)
    if model:
        space = dataclasses.replace(space, hub_id=model)
    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    pipe = load_pipeline(space, device=dev)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0
    apply_schedule(pipe, schedule)
    adapter = space.adapter
    call = space.call_kwargs()
    call["height"] = schedule.height or call["height"]
    call["width"] = schedule.width or call["width"]
    for value in (schedule.guidance_scale, guidance_scale):  # 0 is a valid guidance scale
        if value is not None:
            call["guidance_scale"] = value
    items = [(p, s) for p in prompts for s in seeds]
    chunks, ms = [], []
    timer = CallTimer(dev)
    with torch.inference_mode():
        for i in range(0, len(items), batch_size):
            batch = items[i: i + batch_size]
            gens = [torch.Generator("cpu").manual_seed(s) for _, s in batch]
            out, call_ms = timer(lambda: adapter.output_images(
                pipe([p for p, _ in batch], generator=gens, output_type="pt", **call)))
            ms.append(call_ms / len(batch))
            chunks.append(to_uint8(out).cpu())
    images = torch.cat(chunks)
    settings = {
        "schedule": schedule.name, "space": space.name, "model": space.model, "device": dev,
        "dtype": str(pipe.transformer.dtype), "batch_size": batch_size, "steps": len(schedule.executed_steps),
        "timesteps": schedule.timesteps, "compute_fraction": schedule.compute_fraction(),
        "call": {k: v for k, v in call.items()}, "load_seconds": round(load_s, 3),
        "ms_per_image": [round(x, 3) for x in ms],
    }
    frames = images.shape[0] // len(items)
    if frames > 1:
        settings["frames"] = frames
    return GenerateResult(images, [p for p, _ in items], [s for _, s in items], settings, frames)


def save_result(result: GenerateResult, out_dir: Path) -> list[Path]:
    """One PNG per image; a video is a folder of PNG frames plus an animated WebP (GIF where
    Pillow has no WebP) beside it. generate.json lists every file with its prompt and seed."""
    from PIL import Image, features

    def pil(frame: torch.Tensor):
        return Image.fromarray(frame.permute(1, 2, 0).numpy())

    out_dir.mkdir(parents=True, exist_ok=True)
    paths, entries = [], []
    for i, (sample, prompt, seed) in enumerate(zip(result.samples(), result.prompts, result.seeds)):
        stem = f"{i:04d}_seed{seed}"
        if result.frames == 1:
            path = out_dir / f"{stem}.png"
            pil(sample).save(path)
            entries.append({"file": path.name, "prompt": prompt, "seed": seed})
        else:
            (out_dir / stem).mkdir(exist_ok=True)
            frames = [out_dir / stem / f"frame_{f:03d}.png" for f in range(len(sample))]
            for frame, fpath in zip(sample, frames):
                pil(frame).save(fpath)
            webp = features.check("webp")
            path = out_dir / f"{stem}.{'webp' if webp else 'gif'}"
            first, *rest = [pil(frame) for frame in sample]
            first.save(path, save_all=True, append_images=rest, duration=1000 // VIDEO_FPS, loop=0,
                       **({"lossless": True} if webp else {}))
            entries.append({"file": path.name, "frames": [f"{stem}/{p.name}" for p in frames], "prompt": prompt,
                            "seed": seed})
        paths.append(path)
    meta = {**result.settings, "images": entries}
    (out_dir / "generate.json").write_text(json.dumps(meta, indent=1) + "\n")
    return paths
