"""Reading image folders for metrics that score files (`ecad score`, FID references)."""

from __future__ import annotations

import os
from pathlib import Path

from ecad.metrics.base import MetricError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


def list_image_files(path: str | os.PathLike) -> list[Path]:
    """PNG/JPG files of a directory, sorted by name (the order prompts files follow)."""
    path = Path(path)
    if not path.is_dir():
        raise MetricError(f"{path} is not a directory of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise MetricError(f"{path} holds no PNG/JPG images")
    return files
