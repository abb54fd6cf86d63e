"""Files are written atomically (temp file, fsync, rename), the cache has one root, and `json_safe`
makes data strict JSON."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> Path:
    """Every file ecad writes goes through here: `write(tmp)` fills a temporary file beside `path`,
    which then replaces `path` in one rename, so a reader (or a killed writer) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def move(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Rename a finished file in one step (the target is never half there)."""
    os.replace(source, target)
    return Path(target)


def cache_dir(*parts: str) -> Path:
    """ecad's one cache root: $ECAD_CACHE, else $XDG_CACHE_HOME/ecad, else ~/.cache/ecad (reference
    images, FID statistics, ...)."""
    root = os.environ.get("ECAD_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ecad"
    return Path(root).joinpath(*parts)


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    """Strict JSON (NaN and infinities become null: JSON.parse and other tools reject them)."""
    return atomic_write_text(path, json.dumps(json_safe(data), indent=1, allow_nan=False) + "\n")


def json_safe(x: Any) -> Any:
    """JSON-safe: NaN/inf become null (JSON.parse rejects NaN), numpy scalars become Python ones."""
    if isinstance(x, dict):
        return {str(k): json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, bool) or x is None or isinstance(x, str):
        return x
    if isinstance(x, int):
        return x
    try:
        f = float(x)
    except (TypeError, ValueError):
        return str(x)
    return f if math.isfinite(f) else None
