"""How every benchmark records its result: indented JSON (under benchmarks/results/) and a
one-line summary of everything but the per-row numbers."""

from __future__ import annotations

import json
from pathlib import Path


def write_result(result: dict, out: Path | None) -> None:
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}))


def shapes_models_id() -> str:
    """Which trained shapes models a result was measured on: the first 12 hex digits of a SHA-256
    over the shipped weight files and configs (names and bytes; a scheduler's config changes the
    pictures as much as its weights do), not the training log. Retraining changes it, so a recorded
    result whose id differs from the checkout's was measured on models the repo no longer ships."""
    import hashlib

    from ecad.resources import shapes_models_dir

    root = shapes_models_dir()
    digest = hashlib.sha256()
    files = [*root.rglob("*.safetensors"), *(p for p in root.rglob("*.json") if p.name != "training.json")]
    for path in sorted(files):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def models_of(space: str) -> dict:
    """The `shapes_models` field of a result measured on a shapes space (nothing for other spaces)."""
    return {"shapes_models": shapes_models_id()} if space.startswith("shapes-") else {}
