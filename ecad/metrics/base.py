"""One interface for every quality metric: a batch of images in, per-image scores and a summary out.

Metrics are built once per worker (models loaded once, moved to the worker's device) and then
called on batch after batch in inference mode.
"""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch


class MetricError(RuntimeError):
    """A metric cannot run (unknown name, missing weights, wrong input); the message says the fix."""


class MissingWeightsError(MetricError):
    """Weights for a metric are not available locally; never fall back to other weights silently."""

    def __init__(self, what: str, repo: str, size: str, fetch: str, where: str = "the Hugging Face cache"):
        super().__init__(
            f"{what} weights are not in {where} and cannot be downloaded here. They are {repo} ({size}). "
            f"Fetch them on a machine with internet: `{fetch}`, then copy them here (or pass a local path)."
        )
        self.repo = repo


@dataclass
class MetricResult:
    """Per-image scores (NaN where a set metric has none), one summary, and which way is better."""

    name: str
    per_image: np.ndarray
    summary: float
    higher_is_better: bool
    extras: dict[str, np.ndarray] = field(default_factory=dict)  # e.g. psnr/ssim beside fidelity

    def to_json(self) -> dict[str, Any]:
        def clean(a):
            return [None if not math.isfinite(float(x)) else float(x) for x in np.asarray(a).ravel()]

        return {
            "metric": self.name,
            "summary": None if not math.isfinite(self.summary) else float(self.summary),
            "higher_is_better": self.higher_is_better,
            "per_image": clean(self.per_image),
            "extras": {k: clean(v) for k, v in self.extras.items()},
        }


class QualityMetric(abc.ABC):
    """Base class: subclasses set `name`, `higher_is_better`, `needs_reference` and implement
    `_score`. `score` checks inputs and runs in inference mode on the metric's device."""

    name: str = ""
    higher_is_better: bool = True
    needs_reference: bool = False

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def score(self, images: torch.Tensor, prompts: list[str] | None = None,
              references: torch.Tensor | None = None) -> MetricResult:
        images = _check_images(images, "images")
        if prompts is not None and len(prompts) != images.shape[0]:
            raise MetricError(f"{self.name}: {images.shape[0]} images but {len(prompts)} prompts; give one prompt per image")
        if self.needs_reference:
            if references is None:
                raise MetricError(f"{self.name}: needs reference images (the uncached outputs of the same prompts and seeds)")
            references = _check_images(references, "references")
            if references.shape != images.shape:
                raise MetricError(f"{self.name}: references {tuple(references.shape)} differ from images {tuple(images.shape)}")
        with torch.inference_mode():
            return self._score(images.to(self.device), prompts,
                               references.to(self.device) if references is not None else None)

    @abc.abstractmethod
    def _score(self, images: torch.Tensor, prompts: list[str] | None,
               references: torch.Tensor | None) -> MetricResult:
        """Score checked images already on `self.device`; called in inference mode."""


def _check_images(x: torch.Tensor, what: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise MetricError(f"{what}: expected a float tensor [N, 3, H, W] in [0, 1], got {shape}")
    if not x.is_floating_point():
        x = x.float() / 255.0
    return x.float().clamp(0, 1)


# ---------------------------------------------------------------------- registry
MetricFactory = Callable[..., QualityMetric]
_REGISTRY: dict[str, MetricFactory] = {}
_DESCRIPTIONS: dict[str, str] = {}


def register_metric(name: str, description: str = "") -> Callable[[MetricFactory], MetricFactory]:
    def deco(factory: MetricFactory) -> MetricFactory:
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description or (factory.__doc__ or "").strip().splitlines()[0]
        return factory

    return deco


def list_metrics() -> dict[str, str]:
    _load_builtins()
    return dict(sorted(_DESCRIPTIONS.items()))


def get_metric(name: str, device: str | torch.device = "cpu", **options: Any) -> QualityMetric:
    """Build a metric by name (`--metric NAME`); options are the metric's own (weights paths...)."""
    _load_builtins()
    if name not in _REGISTRY:
        raise MetricError(f"unknown metric {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](device=device, **options)


def _load_builtins() -> None:
    import importlib

    for module in ("fidelity", "clip", "fid", "image_reward", "preference"):
        try:
            importlib.import_module(f"ecad.metrics.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ecad.metrics.{module}":
                raise
