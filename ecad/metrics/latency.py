"""Latency as a cost: warm-up, then timed calls, median ms per image, with the settings recorded.

On a GPU each call is bracketed by CUDA events (no host-side noise); on CPU by perf_counter.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class LatencyResult:
    ms_per_image: float  # median over timed calls
    calls_ms: list[float]
    batch: int
    device: str
    dtype: str = ""
    resolution: tuple[int, int] | None = None
    steps: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


class CallTimer:
    """Times one call: CUDA events on GPU, wall clock elsewhere."""

    def __init__(self, device: torch.device | str):
        self.cuda = torch.device(device).type == "cuda"

    def __call__(self, fn: Callable[[], Any]) -> tuple[Any, float]:
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn()
            end.record()
            torch.cuda.synchronize()
            return out, float(start.elapsed_time(end))
        t0 = time.perf_counter()
        out = fn()
        return out, (time.perf_counter() - t0) * 1e3


def measure_latency(
    fn: Callable[[], Any], batch: int, device: torch.device | str, warmup: int = 1, repeats: int = 3, **settings: Any
) -> LatencyResult:
    """Warm-up calls (autotuning, allocator), then `repeats` timed calls of `fn` (one batch each)."""
    timer = CallTimer(device)
    for _ in range(warmup):
        fn()
    calls = [timer(fn)[1] for _ in range(repeats)]
    return LatencyResult(float(np.median(calls)) / batch, calls, batch, device_name(device), **settings)
