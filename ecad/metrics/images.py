"""Images for metrics: reading files (`ecad score`, FID references) and in-graph preprocessing
for the CLIP-style models (one implementation for clip, pickscore, hpsv2 and image-reward), with
pixels resized the way each upstream package resizes them."""

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


def pil_bicubic_8bit(images: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """What PIL's bicubic resize does to an 8-bit image, in-graph: the input rounded to 8-bit levels,
    then a horizontal and a vertical antialiased pass, each clipped and rounded to 8 bits. This is
    the resize open_clip's and the HF CLIP processor's transforms apply (they resize PIL images);
    one float resize differs from it by up to 10 grey levels on sharp edges. Matches PIL to within
    one grey level (its fixed-point rounding)."""

    def levels(t: torch.Tensor) -> torch.Tensor:
        return (t.clamp(0, 1) * 255).round() / 255

    def bicubic(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return F.interpolate(t, size=(h, w), mode="bicubic", antialias=True, align_corners=False)

    h, w = images.shape[-2:]
    x = levels(images.float())
    if w != width:
        x = levels(bicubic(x, h, width))
    if h != height:
        x = levels(bicubic(x, height, width))
    return x


RESAMPLES = ("pil", "float")


def _resize(x: torch.Tensor, h: int, w: int, resample: str) -> torch.Tensor:
    if x.shape[-2:] == (h, w):
        return x
    if resample == "pil":
        return pil_bicubic_8bit(x, h, w)
    return F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False, antialias=True)


def preprocess_images(
    images: torch.Tensor,
    size: int | tuple[int, int],
    mean: Sequence[float] | torch.Tensor,
    std: Sequence[float] | torch.Tensor,
    resize_mode: str = "shortest",
    resample: str = "pil",
) -> torch.Tensor:
    """[N, 3, H, W] in [0, 1] -> the model's normalised input, in-graph.

    resize_mode: "shortest" (shortest side to size, then center crop: CLIP / HF CLIPImageProcessor),
    "longest" (longest side to size, then pad with black to a square: HPSv2's eval transform),
    "squash" (resize both sides to size). `mean`/`std` may be prebuilt `channel_tensor`s.
    resample: "pil" resizes as PIL does on 8-bit images (`pil_bicubic_8bit`: what the upstream
    transforms of open_clip, the HF processor and ImageReward see); "float" is one float bicubic
    pass with no clipping (what torchvision's resize does to a float tensor: HPSv2's tensor path).
    """
    if resample not in RESAMPLES:
        raise MetricError(f"unknown resample {resample!r}; use {' or '.join(RESAMPLES)}")
    th, tw = (size, size) if isinstance(size, int) else tuple(size)
    h, w = images.shape[-2:]
    x = images.float()
    if resize_mode == "squash":
        x = _resize(x, th, tw, resample)
    elif resize_mode == "longest":
        scale = max(th, tw) / max(h, w)
        nh, nw = round(h * scale), round(w * scale)
        x = _resize(x, nh, nw, resample)
        ph, pw = th - nh, tw - nw
        if ph or pw:
            x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=0.0)
    elif resize_mode == "shortest":
        short = max(th, tw)  # as torchvision's Resize(int): long side = int(short * long / short_in)
        nh, nw = (short, int(short * w / h)) if h <= w else (int(short * h / w), short)
        x = _resize(x, nh, nw, resample)
        top, left = int(round((nh - th) / 2.0)), int(round((nw - tw) / 2.0))
        x = x[..., top : top + th, left : left + tw]
    else:
        raise MetricError(f"unknown resize_mode {resize_mode!r}; use shortest, longest or squash")
    m = mean.to(x) if isinstance(mean, torch.Tensor) else channel_tensor(mean, x.device)
    s = std.to(x) if isinstance(std, torch.Tensor) else channel_tensor(std, x.device)
    return (x - m) / s
