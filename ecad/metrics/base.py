"""One interface for every quality metric: a batch of images in, per-image scores and a summary out.

Metrics are built once per worker (models loaded once, moved to the worker's device) and then
called on batch after batch in inference mode.
"""

from __future__ import annotations

import abc
import inspect
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ecad.errors import EcadError


class MetricError(EcadError, RuntimeError):
    """A metric cannot run (unknown name, missing weights, wrong input); the message says the fix."""


class MissingWeightsError(MetricError):
    """Weights for a metric are not available locally; never fall back to other weights silently."""

    def __init__(self, what: str, repo: str, size: str, fetch: str, where: str = "the Hugging Face cache"):
        super().__init__(
            f"{what} weights are not in {where} and cannot be downloaded here. They are {repo} ({size}). "
            f"Fetch them on a machine with internet: `{fetch}`, then copy them here (or pass a local path)."
        )
        self.repo = repo


class UnknownOptionError(MetricError, TypeError):
    """Options a metric does not take. A MetricError (the CLI prints it as one line) and a TypeError
    (what Python callers expect from an unexpected keyword); `options` names the refused ones."""

    def __init__(self, message: str, options: list[str]):
        super().__init__(message)
        self.options = options


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
    """Base class: subclasses set `name`, `higher_is_better`, `needs_reference`, `needs_prompts`,
    `per_image` and implement `_score`. `score` checks inputs and runs in inference mode on the
    metric's device."""

    name: str = ""
    higher_is_better: bool = True
    needs_reference: bool = False
    needs_prompts: bool = False  # a class attribute, so `ecad score` can check it before loading weights
    # whether the summary is the mean of per-image scores: racing estimates it from a subset of
    # images; a statistic of the whole set (FID) has no per-image scores and is evaluated whole
    per_image: bool = True

    def __init__(self, device: str | torch.device = "cpu"):
        self.device = torch.device(device)

    def score(
        self, images: torch.Tensor, prompts: list[str] | None = None, references: torch.Tensor | None = None
    ) -> MetricResult:
        if self.needs_prompts and prompts is None:
            raise MetricError(prompts_required_message(self.name))
        images = check_images(images, "images", self.device)
        if prompts is not None and len(prompts) != images.shape[0]:
            raise MetricError(
                f"{self.name}: {images.shape[0]} images but {len(prompts)} prompts; give one prompt per image"
            )
        if self.needs_reference:
            if references is None:
                raise MetricError(
                    f"{self.name}: needs reference images (the uncached outputs of the same prompts and seeds)"
                )
            references = check_images(references, "references", self.device)
            if references.shape != images.shape:
                raise MetricError(
                    f"{self.name}: references {tuple(references.shape)} differ from images {tuple(images.shape)}"
                )
        with torch.inference_mode():
            return self._score(images, prompts, references if self.needs_reference else None)

    @abc.abstractmethod
    def _score(self, images: torch.Tensor, prompts: list[str] | None, references: torch.Tensor | None) -> MetricResult:
        """Score checked images already on `self.device`; called in inference mode."""


def prompts_required_message(name: str) -> str:
    """One wording for "this metric needs prompts", from the API and from `ecad score` alike."""
    return (
        f"{name}: scores each image against its own prompt; pass one prompt per image "
        "(prompts=[...]; `ecad score --prompts FILE`)"
    )


def check_images(x: torch.Tensor, what: str, device: torch.device | None = None) -> torch.Tensor:
    """[N, 3, H, W] float32 in [0, 1] on `device`. Integer images (8-bit) are moved first, then
    converted once; float images are copied only when a conversion or a clamp is needed."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise MetricError(f"{what}: expected a float tensor [N, 3, H, W] in [0, 1], got {shape}")
    if device is not None:
        x = x.to(device)
    if not x.is_floating_point():
        return x.float().div_(255)
    x = x.float()  # no-op for float32
    if x.numel():
        low, high = torch.aminmax(x)
        if low < 0 or high > 1:
            x = x.clamp(0, 1)
    return x


# ---------------------------------------------------------------------- registry
MetricFactory = Callable[..., QualityMetric]
_REGISTRY: dict[str, MetricFactory] = {}
_DESCRIPTIONS: dict[str, str] = {}
_CLASSES: dict[str, type[QualityMetric]] = {}


def register_metric(
    name: str, description: str = "", metric_class: type[QualityMetric] | None = None
) -> Callable[[MetricFactory], MetricFactory]:
    """Register a factory under `name`; `metric_class` (the class it builds) lets callers read class
    attributes such as `needs_prompts` before loading any weights."""

    def deco(factory: MetricFactory) -> MetricFactory:
        _REGISTRY[name] = factory
        _DESCRIPTIONS[name] = description or (factory.__doc__ or "").strip().splitlines()[0]
        if metric_class is not None:
            _CLASSES[name] = metric_class
        else:
            _CLASSES.pop(name, None)
        return factory

    return deco


def registered_class(name: str) -> type[QualityMetric] | None:
    """The class a registered metric builds, when its registration names one (None otherwise)."""
    _load_builtins()
    return _CLASSES.get(name)


def higher_is_better(name: str) -> bool | None:
    """Which way metric `name` is better, from the registry (None for a name it does not know): the
    one place a run, its frontier and its report take the direction from."""
    cls = registered_class(name)
    return None if cls is None else bool(cls.higher_is_better)


def list_metrics() -> dict[str, str]:
    _load_builtins()
    return dict(sorted(_DESCRIPTIONS.items()))


def get_metric(name: str, device: str | torch.device = "cpu", **options: Any) -> QualityMetric:
    """Build a metric by name (`--metric NAME`); options are the metric's own (weights paths...)."""
    _load_builtins()
    if name not in _REGISTRY:
        raise MetricError(f"unknown metric {name!r}; available: {', '.join(sorted(_REGISTRY))}")
    factory = _REGISTRY[name]
    known = _keyword_parameters(factory)
    if known is not None:  # an explicit signature: name every refused option, and the accepted ones
        unknown = sorted(set(options) - known)
        if unknown:
            raise UnknownOptionError(f"{name}: unknown options {unknown}; known: {', '.join(sorted(known))}", unknown)
    try:
        return factory(device=device, **options)
    except TypeError as exc:  # a factory forwarding **options: the class refused one of the caller's options
        m = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
        if m is None or m[1] not in options or isinstance(exc, UnknownOptionError):
            raise
        raise UnknownOptionError(f"{name}: unknown options [{m[1]!r}] ({exc})", [m[1]]) from exc


def _keyword_parameters(factory: MetricFactory) -> set[str] | None:
    """Option names an explicit factory signature takes (device aside); None if it forwards **options."""
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)} - {"device"}


def _load_builtins() -> None:
    import importlib

    for module in ("fidelity", "clip", "fid", "image_reward", "preference", "shapes"):
        try:
            importlib.import_module(f"ecad.metrics.{module}")
        except ModuleNotFoundError as exc:
            if exc.name != f"ecad.metrics.{module}":
                raise
