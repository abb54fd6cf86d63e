"""Images for metrics: reading files (`ecad score`, FID references) and in-graph preprocessing
for the CLIP-style models (one implementation for clip, pickscore, hpsv2 and image-reward)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ecad.metrics.base import MetricError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
# OpenAI CLIP's normalisation (also ImageReward's and HPSv2's eval transforms)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def list_image_files(path: str | os.PathLike) -> list[Path]:
    """PNG/JPG files of a directory, sorted by name (the order prompts files follow)."""
    path = Path(path)
    if not path.is_dir():
        raise MetricError(f"{path} is not a directory of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MetricError(f"{path} holds no PNG/JPG images")
    return files


def load_image(path: str | os.PathLike) -> torch.Tensor:
    """One image file as RGB uint8 [3, H, W]; an unreadable file is a MetricError naming it (not a
    PIL traceback). Kept 8-bit: metrics convert once, on their own device."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            arr = np.array(im.convert("RGB"), dtype=np.uint8)  # a writable copy
    except OSError as exc:
        raise MetricError(f"cannot read image {path}: {exc}") from exc
    return torch.from_numpy(arr).permute(2, 0, 1)


def channel_tensor(values: Sequence[float] | torch.Tensor, device: str | torch.device | None = None) -> torch.Tensor:
    """Per-channel constants (mean, std) as a float32 [1, C, 1, 1] tensor; metrics build theirs once
    instead of on every batch."""
    return torch.as_tensor(values, dtype=torch.float32, device=device).view(1, -1, 1, 1)


def preprocess_images(
    images: torch.Tensor,
    size: int | tuple[int, int],
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    resize_mode: str = "shortest",
) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> the model's normalised input, in-graph (bicubic + antialias).

    resize_mode: "shortest" (shortest side to size, then center crop: CLIP / HF CLIPImageProcessor),
    "longest" (longest side to size, then pad with black to a square: HPSv2's eval transform),
    "squash" (resize both sides to size). `mean`/`std` may be prebuilt `channel_tensor`s.
    """
    th, tw = (size, size) if isinstance(size, int) else tuple(size)
    h, w = images.shape[-2:]
    x = images.float()
    if resize_mode == "squash":
        if (h, w) != (th, tw):
            x = F.interpolate(x, size=(th, tw), mode="bicubic", align_corners=False, antialias=True)
    elif resize_mode == "longest":
        scale = max(th, tw) / max(h, w)
        nh, nw = round(h * scale), round(w * scale)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        ph, pw = th - nh, tw - nw
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    elif resize_mode == "shortest":
        short = max(th, tw)  # as torchvision's Resize(int): long side = int(short * long / short_in)
        nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
        top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
        x = x[..., top : top + th, left : left + tw]
    else:
        raise MetricError(f"unknown resize_mode {resize_mode!r}; use shortest, longest or squash")
    x = x.clamp(0, 1)  # bicubic overshoots; PIL-based pipelines clip to [0, 255] too
    m = mean.to(x) if isinstance(mean, torch.Tensor) else channel_tensor(mean, x.device)
    s = std.to(x) if isinstance(std, torch.Tensor) else channel_tensor(std, x.device)
    return (x - m) / s
