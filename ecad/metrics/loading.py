"""Helpers shared by the metrics that load model weights (clip, pickscore, hpsv2, image-reward):
where the local caches are, dtype names, and test-only random weights. Written once so the
metrics cannot drift apart on where they look or what they accept."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch

from ecad.metrics.base import MetricError

_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def hf_cache_dir() -> str:
    """The Hugging Face hub cache, read from the environment at call time (HF_HUB_CACHE, HF_HOME):
    huggingface_hub resolves it once at import, which tests and long-lived workers outlive."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var])
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return os.path.join(os.path.expanduser(home), "hub")


def find_hf_file(repo: str, filenames: Sequence[str], repo_type: str | None = None) -> str | None:
    """Path of the first of `filenames` already in the local hub cache for `repo`; never downloads."""
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        return None
    for name in filenames:
        try:
            return hf_hub_download(repo, name, repo_type=repo_type, cache_dir=hf_cache_dir(), local_files_only=True)
        except Exception:  # noqa: BLE001 - any failure means "not here"
            continue
    return None


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """A torch dtype from a name (float32/fp32, float16/fp16, bfloat16/bf16) or a dtype; a clear
    MetricError for anything else (metrics run in these three only)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return _DTYPES[dtype]
    except KeyError:
        raise MetricError(f"unknown dtype {dtype!r}; use float32, float16 or bfloat16") from None


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Seed torch's CPU generator inside the block only (random test weights are reproducible)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def warn_random(what: str) -> None:
    """Random weights are never silent: they make every score meaningless."""
    warnings.warn(
        f"{what}: random weights (allow_random_weights=True) - scores are meaningless, for tests only", stacklevel=3
    )
