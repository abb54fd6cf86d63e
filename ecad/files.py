"""Files are written atomically (temp file, fsync, rename); `json_safe` makes data strict JSON."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """A reader (or a killed writer) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


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
