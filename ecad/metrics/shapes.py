"""Toy reference-free metrics for the offline shapes models only: `shapes-score` and `shapes-fid`.

They are the offline stand-ins for a prompt-following score (ImageReward, CLIP) and for FID, so a
search on `shapes-pixart` / `shapes-flux` can be judged without the uncached images. Both read a
small CNN (`ShapesClassifier`) trained on the captioned-shapes data set (ecad/models/shapes.py) by
`python -m ecad.models.train_shapes --model classifier` and shipped in `shapes_models/`. They mean
nothing for any other model or for natural images: the classifier has only ever seen flat shapes.

- `shapes-score` (higher is better, needs prompts): per image, the probability the classifier
  gives to *everything* the caption says, i.e. the product of its five per-attribute
  probabilities (shape, colour, background colour, size, position). The per-attribute
  probabilities and whether each attribute's top guess is right are recorded beside it.
- `shapes-fid` (lower is better, set metric): the Fréchet distance between the Gaussian fits of
  the classifier's penultimate features (128-d) of the images and of held-out data-set pictures
  (`reference_images` of them, seeded; the statistics are computed once per metric object).
  With a few dozen images it is dominated by estimator bias, as FID is; compare like with like.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ecad.metrics.base import MetricError, MetricResult, QualityMetric, check_images, register_metric
from ecad.models import shapes as data

CLASSIFIER_DIR = "shapes-classifier"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
CLASSIFIER_FORMAT = "ecad-shapes-classifier/1"


@dataclass(frozen=True)
class ClassifierConfig:
    """The classifier's architecture; saved as config.json beside its weights."""

    image_size: int = data.IMAGE_SIZE
    channels: tuple[int, ...] = (32, 64, 64)
    features: int = 128
    heads: tuple[tuple[str, int], ...] = tuple((k, len(v)) for k, v in data.ATTRIBUTE_VALUES.items())

    def to_json(self) -> dict:
        return {"format": CLASSIFIER_FORMAT, **asdict(self)}

    @classmethod
    def from_json(cls, raw: dict, where: str) -> ClassifierConfig:
        if not isinstance(raw, dict) or raw.get("format") != CLASSIFIER_FORMAT:
            raise MetricError(f"{where}: not a shapes classifier config (format {CLASSIFIER_FORMAT!r} expected)")
        try:
            return cls(
                image_size=int(raw["image_size"]),
                channels=tuple(int(c) for c in raw["channels"]),
                features=int(raw["features"]),
                heads=tuple((str(k), int(n)) for k, n in raw["heads"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise MetricError(f"{where}: malformed shapes classifier config ({exc})") from exc


class ShapesClassifier(nn.Module):
    """A small CNN: three stride-2 conv stages, a 128-d feature layer, one linear head per attribute.
    Input: float images [N, 3, H, W] in [0, 1] (resized to `image_size` if they differ)."""

    def __init__(self, config: ClassifierConfig | None = None):
        super().__init__()
        self.config = config = config or ClassifierConfig()
        layers: list[nn.Module] = []
        cin = 3
        for c in config.channels:
            layers += [nn.Conv2d(cin, c, 3, padding=1), nn.SiLU(), nn.Conv2d(c, c, 3, stride=2, padding=1), nn.SiLU()]
            cin = c
        self.body = nn.Sequential(*layers)
        side = config.image_size // 2 ** len(config.channels)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(cin * side * side, config.features), nn.SiLU())
        self.heads = nn.ModuleDict({name: nn.Linear(config.features, n) for name, n in config.heads})

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features [N, features] (what shapes-fid compares)."""
        size = self.config.image_size
        if images.shape[-2:] != (size, size):
            images = nn.functional.interpolate(images, size=(size, size), mode="bilinear", antialias=True)
        return self.features(self.body(images * 2 - 1))

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per attribute head."""
        h = self.embed(images)
        return {name: head(h) for name, head in self.heads.items()}


def save_classifier(model: ShapesClassifier, directory: str | os.PathLike) -> Path:
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(out / WEIGHTS_FILE))
    (out / CONFIG_FILE).write_text(json.dumps(model.config.to_json(), indent=1) + "\n")
    return out


def default_classifier_dir() -> Path:
    from ecad.resources import shapes_models_dir

    return shapes_models_dir() / CLASSIFIER_DIR


def load_classifier(directory: str | os.PathLike | None = None, device="cpu") -> ShapesClassifier:
    """The shipped (or a given) classifier, in eval mode; a MetricError naming the fix if absent."""
    from safetensors.torch import load_file

    where = Path(directory) if directory is not None else default_classifier_dir()
    config_path, weights_path = where / CONFIG_FILE, where / WEIGHTS_FILE
    if not (config_path.is_file() and weights_path.is_file()):
        raise MetricError(
            f"shapes metrics: the shapes classifier is not in {where} (needs {CONFIG_FILE} and {WEIGHTS_FILE}); "
            "train it with `python -m ecad.models.train_shapes --model classifier`, or pass weights=DIR"
        )
    try:
        config = ClassifierConfig.from_json(json.loads(config_path.read_text()), str(config_path))
        model = ShapesClassifier(config)
        model.load_state_dict(load_file(str(weights_path)))
    except (OSError, ValueError, RuntimeError) as exc:
        if isinstance(exc, MetricError):
            raise
        raise MetricError(f"shapes metrics: cannot load the classifier in {where} ({exc}); retrain it") from exc
    return model.to(device).eval().requires_grad_(False)


def attribute_probabilities(
    model: ShapesClassifier, images: torch.Tensor, attributes: list[data.Attributes], batch_size: int = 256
) -> dict[str, torch.Tensor]:
    """Per attribute, the probability the classifier gives to the value the caption names, and
    (as "<name>_correct") whether its top guess is that value."""
    out: dict[str, list[torch.Tensor]] = {}
    labels = {k: torch.tensor([a.labels()[k] for a in attributes], device=images.device) for k in data.ATTRIBUTE_VALUES}
    for i in range(0, images.shape[0], batch_size):
        logits = model(images[i : i + batch_size])
        for name, lg in logits.items():
            want = labels[name][i : i + batch_size]
            prob = lg.softmax(-1).gather(1, want[:, None])[:, 0]
            out.setdefault(name, []).append(prob)
            out.setdefault(f"{name}_correct", []).append((lg.argmax(-1) == want).float())
    return {k: torch.cat(v) for k, v in out.items()}


class ShapesScoreMetric(QualityMetric):
    """Product of the classifier's probabilities of the caption's five attributes (toy; shapes models only)."""

    name = "shapes-score"
    higher_is_better = True
    needs_prompts = True

    def __init__(self, device="cpu", weights: str | os.PathLike | None = None, batch_size: int = 256):
        super().__init__(device)
        if batch_size < 1:
            raise MetricError(f"shapes-score: batch_size must be >= 1, got {batch_size}")
        self.model = load_classifier(weights, self.device)
        self.batch_size = batch_size

    def _score(self, images, prompts, references) -> MetricResult:
        attributes = [data.parse_caption(p) for p in prompts]
        probs = attribute_probabilities(self.model, images, attributes, self.batch_size)
        joint = torch.ones(images.shape[0], device=images.device, dtype=torch.float64)
        for name in data.ATTRIBUTE_VALUES:
            joint = joint * probs[name].double()
        per_image = joint.cpu().numpy()
        extras = {k: v.double().cpu().numpy() for k, v in probs.items()}
        summary = float(per_image.mean()) if per_image.size else float("nan")
        return MetricResult(self.name, per_image, summary, True, extras)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), the trace term through the eigenvalues of
    sqrt(S1) S2 sqrt(S1) (symmetric, so no complex square roots)."""
    w, v = np.linalg.eigh(sigma1)
    root1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    trace_sqrt = float(np.sqrt(np.clip(inner, 0, None)).sum())
    return float(((mu1 - mu2) ** 2).sum() + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)


def feature_statistics(features: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    f = features.double().cpu().numpy()
    if f.shape[0] < 2:
        raise MetricError(f"shapes-fid: needs at least 2 images for a covariance, got {f.shape[0]}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


class ShapesFIDMetric(QualityMetric):
    """Fréchet distance in the shapes classifier's feature space vs held-out data-set pictures (toy)."""

    name = "shapes-fid"
    higher_is_better = False
    per_image = False  # a statistic of the whole set, like FID

    def __init__(
        self,
        device="cpu",
        weights: str | os.PathLike | None = None,
        reference_images: int = 2000,
        seed: int = 0,
        batch_size: int = 256,
    ):
        super().__init__(device)
        if reference_images < 2:
            raise MetricError(f"shapes-fid: reference_images must be >= 2, got {reference_images}")
        if batch_size < 1:
            raise MetricError(f"shapes-fid: batch_size must be >= 1, got {batch_size}")
        self.model = load_classifier(weights, self.device)
        self.batch_size = batch_size
        self.reference_images, self.seed = int(reference_images), int(seed)
        self._reference: tuple[np.ndarray, np.ndarray] | None = None

    def _features(self, images: torch.Tensor) -> torch.Tensor:
        parts = [self.model.embed(images[i : i + self.batch_size]) for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(parts) if parts else images.new_zeros(0, self.model.config.features)

    def reference_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and covariance of the held-out pictures' features (computed once)."""
        if self._reference is None:
            batch = data.sample(self.reference_images, "held-out", seed=self.seed)
            with torch.inference_mode():
                feats = self._features(check_images(batch.tensor(), "shapes-fid references", self.device))
            self._reference = feature_statistics(feats)
        return self._reference

    def _score(self, images, prompts, references) -> MetricResult:
        mu, sigma = feature_statistics(self._features(images))
        value = frechet_distance(mu, sigma, *self.reference_statistics())
        return MetricResult(self.name, np.full(images.shape[0], np.nan), value, False)


@register_metric(
    "shapes-score",
    "toy, shapes models only: classifier probability that each image shows its caption (needs prompts)",
    ShapesScoreMetric,
)
def _shapes_score(device="cpu", weights=None, batch_size: int = 256) -> QualityMetric:
    return ShapesScoreMetric(device, weights=weights, batch_size=batch_size)


@register_metric(
    "shapes-fid",
    "toy, shapes models only: Frechet distance in the shapes classifier's features vs held-out shapes, lower is better",
    ShapesFIDMetric,
)
def _shapes_fid(device="cpu", weights=None, reference_images: int = 2000, seed: int = 0, batch_size: int = 256):
    return ShapesFIDMetric(device, weights=weights, reference_images=reference_images, seed=seed, batch_size=batch_size)
