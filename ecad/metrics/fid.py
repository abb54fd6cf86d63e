"""Frechet Inception Distance of a set of images against a reference set (lower is better).

FID compares two *distributions* of image features (mean and covariance of 2048-d Inception pool
features), so it is a set metric: per-image scores are NaN and only the summary means anything.
It needs many images - thousands (FID-5k/10k/30k) for a stable value; with a few dozen images it
is dominated by estimator bias and noise. Use it for the final evaluation of a chosen schedule,
not to rank candidates inside a search (use ``fidelity``, ``clip``, ``pickscore`` or ``hpsv2``).

References are a directory of images (PNG/JPG, e.g. a real-image set; sizes may differ) or a
tensor of images (e.g. the uncached model's outputs for the same prompts). Reference statistics
``(mu, sigma, n)`` are cached on disk as safetensors (never pickle) under
``fid/`` under ecad's cache root (``ECAD_CACHE``, default ``~/.cache/ecad``; ``cache_dir=``), keyed
by the SHA-256 of the reference image bytes and the feature extractor's identity, so they are
computed once. Within one metric object that digest is itself memoised: for a directory on
(resolved path, each file's name, size and mtime), for a tensor on the tensor object and its
in-place version counter, so repeated calls hash nothing.

Feature extractor, in order of preference (weights are never downloaded):
1. any ``nn.Module`` passed as ``feature=`` (image batch in [0, 1] -> [N, D] features);
2. the standard FID Inception (``weights-inception-2015-12-05-6726825d.pth``, TF-ported) through
   torchmetrics, when torch-fidelity is installed and the file is in the torch hub cache;
3. torchvision's ImageNet InceptionV3 (``inception_v3_google-0cc3c7bd.pth`` in the torch hub
   cache or ``weights=``), 2048-d average-pool features of 299x299 bilinear-resized inputs. Its
   values track the standard FID but are not numerically identical to published FIDs.

Resizing to 299x299 follows torchmetrics by default (antialiased bilinear in front of the
extractor); ``resize="clean"`` (``--metric-option resize=clean``) uses clean-fid's PIL bicubic
instead (Parmar et al. 2022), which is what "clean-FID" numbers use.
"""

from __future__ import annotations

import hashlib
import os
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecad.files import atomic_write
from ecad.files import cache_dir as ecad_cache_dir
from ecad.metrics.base import (
    MetricError,
    MetricResult,
    MissingWeightsError,
    QualityMetric,
    check_images,
    register_metric,
)
from ecad.metrics.images import list_image_files, load_image

TORCHVISION_INCEPTION = "inception_v3_google-0cc3c7bd.pth"
TORCHVISION_INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
FIDELITY_INCEPTION = "weights-inception-2015-12-05-6726825d.pth"
STATS_FORMAT = "ecad-fid-stats/1"


def default_cache_dir() -> Path:
    return ecad_cache_dir("fid")


class TorchvisionInceptionFeatures(nn.Module):
    """torchvision's InceptionV3 (ImageNet weights from a local file) -> 2048-d pool features.

    Input: float images [N, 3, H, W] in [0, 1]; resized to 299x299 (bilinear, antialias) and scaled
    to [-1, 1], the input range the Google weights were trained with. Always in eval mode.
    """

    num_features = 2048

    def __init__(self, weights: str | os.PathLike):
        super().__init__()
        from torchvision.models import Inception3

        self.net = Inception3(aux_logits=True, transform_input=False, init_weights=False)
        try:
            state = torch.load(str(weights), map_location="cpu", weights_only=True)
            self.net.load_state_dict(state)
        except Exception as exc:  # noqa: BLE001 - one clear message for a wrong or corrupt file
            raise MetricError(f"fid: {weights} is not torchvision's InceptionV3 checkpoint ({exc})") from exc
        self.net.fc = nn.Identity()
        self.eval()

    def train(self, mode: bool = True) -> TorchvisionInceptionFeatures:
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[-2:] != (299, 299):
            x = nn.functional.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        return self.net(x * 2 - 1)


def default_feature_extractor(weights: str | os.PathLike | None = None) -> tuple[Any, str, dict]:
    """(feature argument for torchmetrics, identity string, extra FrechetInceptionDistance kwargs)."""
    from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE

    if weights is not None:
        path = Path(weights)
        if not path.is_file():
            raise MetricError(f"fid: weights file {path} does not exist")
        if path.name == FIDELITY_INCEPTION and _TORCH_FIDELITY_AVAILABLE:
            return 2048, "torch-fidelity-inception-2015-12-05/2048", {"feature_extractor_weights_path": str(path)}
        return TorchvisionInceptionFeatures(path), f"torchvision-inception_v3/{path.name}/{path.stat().st_size}", {}
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    if _TORCH_FIDELITY_AVAILABLE and (hub / FIDELITY_INCEPTION).is_file():  # pragma: no cover - not installed here
        return (
            2048,
            "torch-fidelity-inception-2015-12-05/2048",
            {"feature_extractor_weights_path": str(hub / FIDELITY_INCEPTION)},
        )
    path = hub / TORCHVISION_INCEPTION
    if path.is_file():
        return TorchvisionInceptionFeatures(path), f"torchvision-inception_v3/{path.name}/{path.stat().st_size}", {}
    raise MissingWeightsError(
        "InceptionV3 (FID feature extractor)",
        TORCHVISION_INCEPTION_URL,
        "~104 MB",
        f"curl -L --create-dirs -o {path} {TORCHVISION_INCEPTION_URL}",
        where=f"the torch hub cache ({hub})",
    )


RESIZES = ("torchmetrics", "clean")
INCEPTION_SIZE = 299


def clean_resize(images: torch.Tensor, size: int = INCEPTION_SIZE) -> torch.Tensor:
    """clean-fid's "clean" resize: each channel of each 8-bit image as a float PIL image (mode "F",
    values 0-255), PIL's bicubic to size x size, clipped to 0-255. PIL's float resize antialiases
    properly, where the bilinear resize in front of torchmetrics' Inception aliases on downscaling.
    Returns float images in [0, 1] on the input's device (the resize itself runs on the CPU)."""
    from PIL import Image

    pixels = (images.detach().float().cpu().clamp(0, 1) * 255).numpy()
    out = np.empty((pixels.shape[0], 3, size, size), dtype=np.float32)
    for n, image in enumerate(pixels):
        for c, channel in enumerate(image):
            resized = Image.fromarray(channel.astype(np.float32), mode="F").resize((size, size), Image.BICUBIC)
            out[n, c] = np.asarray(resized).clip(0, 255)
    return torch.from_numpy(out / 255).to(images.device)


def module_identity(module: nn.Module) -> str:
    """Class name + SHA-256 of the module's parameters and buffers (seeded test nets differ by seed)."""
    h = hashlib.sha256()
    for name, t in module.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    if not module.state_dict():
        h.update(repr(module).encode())
    cls = type(module)
    return f"{cls.__module__}.{cls.__qualname__}/{h.hexdigest()[:16]}"


class FIDMetric(QualityMetric):
    """FID of the images against reference images (directory or tensor); lower is better, set metric."""

    name = "fid"
    higher_is_better = False
    needs_reference = False  # references are handled here: a directory, or a tensor of any count
    per_image = False  # a statistic of the whole set

    def __init__(
        self,
        device="cpu",
        reference: str | os.PathLike | torch.Tensor | None = None,
        feature: nn.Module | None = None,
        weights: str | os.PathLike | None = None,
        feature_id: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        batch_size: int = 32,
        use_cache: bool = True,
        resize: str = "torchmetrics",
    ):
        """
        Args:
            reference: default references - a directory of PNG/JPG images or a [M, 3, H, W] tensor in [0, 1];
                ``score(..., references=tensor)`` overrides it per call.
            feature: a feature extractor module (float images in [0, 1] -> [N, D]); default InceptionV3.
            weights: local InceptionV3 checkpoint file (torchvision's or torch-fidelity's FID weights).
            feature_id: identity of `feature` for the statistics cache (default: class + weight hash).
            cache_dir: where reference statistics are cached (default fid/ under ecad's cache root).
            batch_size: images per feature-extractor call.
            use_cache: read/write cached reference statistics.
            resize: how images reach the extractor's 299x299: "torchmetrics" (its own resize,
                antialiased bilinear, as torchmetrics' FID does) or "clean" (clean-fid's PIL bicubic,
                `clean_resize`). Published FIDs differ by resize; say which one you report.
        """
        super().__init__(device)
        from torchmetrics.image.fid import FrechetInceptionDistance

        if batch_size < 1:
            raise MetricError(f"fid: batch_size must be >= 1, got {batch_size}")
        if resize not in RESIZES:
            raise MetricError(
                f"fid: unknown resize {resize!r}; use --metric-option resize=torchmetrics (the default) or resize=clean"
            )
        self.resize = resize
        self.batch_size = int(batch_size)
        if feature is not None:
            if not isinstance(feature, nn.Module):
                raise MetricError(f"fid: feature must be an nn.Module, got {type(feature).__name__}")
            feature.eval()
            feat, ident, extra = feature, feature_id or module_identity(feature), {}
        else:
            feat, ident, extra = default_feature_extractor(weights)
            ident = feature_id or ident
        self.feature_id = ident if resize == "torchmetrics" else f"{ident}/resize={resize}"  # keys the stats cache
        with torch.random.fork_rng(devices=[]):  # torchmetrics probes a module without num_features with torch.rand
            self.fid = FrechetInceptionDistance(feature=feat, normalize=True, **extra).to(self.device)
        self.reference = reference
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.use_cache = use_cache
        self.last_stats_path: Path | None = None
        self.last_stats_cached: bool | None = None  # True when the last call read statistics from disk
        self._memo: dict[str, tuple[torch.Tensor, torch.Tensor, int]] = {}
        # reference digests: directory path -> (signature, digest); id(tensor) -> (weakref, version, digest)
        self._dir_digests: dict[str, tuple[tuple, str]] = {}
        self._tensor_digests: dict[int, tuple[weakref.ref, int, str]] = {}

    # ------------------------------------------------------------------ public
    def score(
        self, images: torch.Tensor, prompts: list[str] | None = None, references: torch.Tensor | None = None
    ) -> MetricResult:
        images = check_images(images, "images", self.device)
        reference = references if references is not None else self.reference
        if reference is None:
            raise MetricError(
                "fid: needs references - a directory of reference images (reference=DIR / "
                "--reference DIR) or reference images as a tensor"
            )
        with torch.no_grad():  # not inference_mode: torchmetrics states are updated in place across calls
            return self._score(images, prompts, reference)  # a tensor reference is checked where it is read

    def reference_stats(self, reference: str | os.PathLike | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(mu, sigma, n) of the reference features: from memory, the disk cache, or computed (then cached)."""
        digest = self._reference_digest(reference)
        key = hashlib.sha256(f"{STATS_FORMAT}\n{self.feature_id}\n{digest}".encode()).hexdigest()
        path = self.cache_dir / f"{key}.safetensors"
        self.last_stats_path = path if self.use_cache else None
        if key in self._memo:
            self.last_stats_cached = True
            return self._memo[key]
        if self.use_cache and path.is_file():
            stats = self._read_stats(path)
            self.last_stats_cached = True
        else:
            stats = self._compute_stats(reference)
            self.last_stats_cached = False
            if self.use_cache:
                self._write_stats(path, stats, digest)
        self._memo[key] = stats
        return stats

    # ------------------------------------------------------------------ internals
    def _score(self, images, prompts, references) -> MetricResult:
        n = images.shape[0]
        if n < 2:
            raise MetricError(f"fid: needs at least 2 images (thousands for a meaningful value), got {n}")
        mu, sigma, m = self.reference_stats(references)
        self.fid.reset()
        self._set_real(mu, sigma, m)
        for i in range(0, n, self.batch_size):
            self.fid.update(self._sized(images[i : i + self.batch_size]), real=False)
        value = float(self.fid.compute())
        return MetricResult(self.name, np.full(n, np.nan), value, False)

    def _sized(self, images: torch.Tensor) -> torch.Tensor:
        """Images as the extractor gets them: as they are (it resizes), or clean-resized to 299."""
        return clean_resize(images) if self.resize == "clean" else images

    def _reference_digest(self, reference) -> str:
        """SHA-256 of the reference images (the disk cache key), memoised: re-reading thousands of
        files, or copying a reference tensor to the host, on every call would dominate a score."""
        if isinstance(reference, torch.Tensor):
            return self._tensor_digest(reference)
        files = list_image_files(reference)
        path = str(Path(reference).resolve())
        signature = tuple((f.name, st.st_size, st.st_mtime_ns) for f in files for st in (f.stat(),))
        memo = self._dir_digests.get(path)
        if memo is not None and memo[0] == signature:
            return memo[1]
        h = hashlib.sha256()
        for f in files:
            data = f.read_bytes()
            h.update(f"file:{len(data)}:".encode())
            h.update(data)
        self._dir_digests[path] = (signature, h.hexdigest())
        return h.hexdigest()

    def _tensor_digest(self, reference: torch.Tensor) -> str:
        """Digest of a reference tensor, memoised on the object itself plus its version counter (bumped
        by any in-place edit). Inference-mode tensors have no version counter: hashed every call."""
        version = None if reference.is_inference() else reference._version
        memo = self._tensor_digests.get(id(reference))
        if memo is not None and memo[0]() is reference and memo[1] == version:
            return memo[2]
        t = check_images(reference, "references").detach().cpu().contiguous()
        h = hashlib.sha256()
        h.update(f"tensor:{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
        digest = h.hexdigest()
        if version is not None:
            self._tensor_digests = {k: v for k, v in self._tensor_digests.items() if v[0]() is not None}
            self._tensor_digests[id(reference)] = (weakref.ref(reference), version, digest)
        return digest

    def _compute_stats(self, reference) -> tuple[torch.Tensor, torch.Tensor, int]:
        self.fid.reset()
        if isinstance(reference, torch.Tensor):
            for i in range(0, reference.shape[0], self.batch_size):
                batch = check_images(reference[i : i + self.batch_size], "references", self.device)
                self.fid.update(self._sized(batch), real=True)
        else:
            files = list_image_files(reference)
            for i in range(0, len(files), self.batch_size):
                groups: dict[tuple[int, int], list[torch.Tensor]] = {}
                for f in files[i : i + self.batch_size]:
                    img = load_image(f)  # uint8: a quarter of the host-to-device traffic
                    groups.setdefault(tuple(img.shape[-2:]), []).append(img)
                for imgs in groups.values():  # reference images may differ in size; the extractor resizes
                    self.fid.update(self._sized(check_images(torch.stack(imgs), "references", self.device)), real=True)
        n = int(self.fid.real_features_num_samples)
        if n < 2:
            raise MetricError(f"fid: needs at least 2 reference images, got {n}")
        s = self.fid.real_features_sum.double().cpu()
        mu = s / n
        sigma = (self.fid.real_features_cov_sum.double().cpu() - n * torch.outer(mu, mu)) / (n - 1)
        self.fid.reset()
        return mu, sigma, n

    def _set_real(self, mu: torch.Tensor, sigma: torch.Tensor, n: int) -> None:
        f = self.fid
        dev = f.real_features_sum.device
        if mu.shape != f.real_features_sum.shape:
            raise MetricError(
                f"fid: cached statistics have {mu.shape[0]} features, the extractor gives "
                f"{f.real_features_sum.shape[0]}"
            )
        mu, sigma = mu.double().to(dev), sigma.double().to(dev)
        f.real_features_sum = mu * n
        f.real_features_cov_sum = sigma * (n - 1) + n * torch.outer(mu, mu)
        f.real_features_num_samples = torch.tensor(n, dtype=torch.long, device=dev)

    def _write_stats(self, path: Path, stats, digest: str) -> None:
        from safetensors.torch import save_file

        mu, sigma, n = stats
        tensors = {"mu": mu.contiguous(), "sigma": sigma.contiguous(), "n": torch.tensor([n], dtype=torch.int64)}
        metadata = {
            "format": STATS_FORMAT,
            "feature_extractor": self.feature_id,
            "reference_sha256": digest,
            "num_images": str(n),
        }
        atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))

    @staticmethod
    def _read_stats(path: Path) -> tuple[torch.Tensor, torch.Tensor, int]:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                if (f.metadata() or {}).get("format") != STATS_FORMAT:
                    raise MetricError(f"fid: {path} is not an {STATS_FORMAT} file")
                return f.get_tensor("mu").double(), f.get_tensor("sigma").double(), int(f.get_tensor("n")[0])
        except MetricError:
            raise
        except Exception as exc:  # noqa: BLE001 - a corrupt cache file: say which one to delete
            raise MetricError(f"fid: cannot read cached statistics {path} ({exc}); delete it to recompute") from exc


@register_metric(
    "fid", "FID against reference images (set metric, needs thousands of images), lower is better", FIDMetric
)
def _fid(device="cpu", **options) -> QualityMetric:
    return FIDMetric(device, **options)
