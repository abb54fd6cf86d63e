"""Fidelity to the uncached output of the same model, prompt and seed: the offline default.

Needs no extra weights, so the whole search loop runs anywhere. Score per image is SSIM
(higher is better, 1 = identical); PSNR (capped) and, where its weights are present, LPIPS
are recorded beside it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torchmetrics.functional.image import peak_signal_noise_ratio, structural_similarity_index_measure

from ecad.metrics.base import MetricError, MetricResult, QualityMetric, register_metric

PSNR_MAX_DB = 100.0  # identical images have infinite PSNR; we report this cap instead
LPIPS_MIN_SIZE = 31  # AlexNet's third pooling stage needs at least this many pixels per side


def psnr(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image PSNR in dB for images in [0, 1], capped at PSNR_MAX_DB."""
    value = peak_signal_noise_ratio(images, references, data_range=1.0, reduction="none", dim=(1, 2, 3))
    return value.nan_to_num(PSNR_MAX_DB, posinf=PSNR_MAX_DB).clamp(max=PSNR_MAX_DB)


def ssim(images: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM; the Gaussian window shrinks for images smaller than 11 px."""
    kernel = max(3, min(11, (min(images.shape[-2:]) // 2) * 2 - 1))
    return structural_similarity_index_measure(images, references, data_range=1.0, reduction="none", kernel_size=kernel)


def lpips(net: nn.Module, images: torch.Tensor, references: torch.Tensor, batch_size: int = 16) -> torch.Tensor:
    """Per-image LPIPS of images in [0, 1] with an LPIPS network (torchmetrics' `_LPIPS`: called as
    ``net(a, b, normalize=True)`` -> [N, 1, 1, 1]), whole batches at a time and stateless: no
    metric object accumulating scores, no host sync until the caller reads the result."""
    out = [
        net(images[i : i + batch_size], references[i : i + batch_size], normalize=True).reshape(-1)
        for i in range(0, images.shape[0], batch_size)
    ]
    return torch.cat(out) if out else images.new_zeros(0)


def _try_lpips(device: torch.device) -> nn.Module | None:
    """LPIPS needs AlexNet weights from the torch hub cache; absent offline, it is skipped."""
    from pathlib import Path

    if not (Path(torch.hub.get_dir()) / "checkpoints" / "alexnet-owt-7be5be79.pth").exists():
        return None  # never download at run time
    try:
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        # only its network is kept: the metric object's list state would grow with every call
        return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).net.to(device).eval()
    except Exception:  # noqa: BLE001 - any failure to fetch/load means "weights not available"
        return None


class FidelityMetric(QualityMetric):
    """SSIM/PSNR (and LPIPS) of each image against the uncached image of the same prompt and seed."""

    needs_reference = True

    def __init__(self, device="cpu", kind: str = "ssim", lpips: bool | nn.Module = True, batch_size: int = 16):
        """
        Args:
            lpips: True: AlexNet LPIPS where its weights are cached; False: none; or an LPIPS network
                (``net(a, b, normalize=True)``, e.g. torchmetrics' ``_NoTrainLpips``) to use as is.
            batch_size: images per LPIPS forward pass.
        """
        super().__init__(device)
        if batch_size < 1:
            raise MetricError(f"fidelity: batch_size must be >= 1, got {batch_size}")
        self.kind = kind
        self.name = {"ssim": "fidelity", "psnr": "psnr"}[kind]
        self.batch_size = int(batch_size)
        if isinstance(lpips, nn.Module):
            self.lpips: nn.Module | None = lpips.to(self.device).eval()
        else:
            self.lpips = _try_lpips(self.device) if lpips else None

    def _score(self, images, prompts, references) -> MetricResult:
        p = psnr(images, references).cpu().numpy()
        s = ssim(images, references).cpu().numpy()
        extras = {"psnr": p, "ssim": s}
        if self.lpips is not None and min(images.shape[-2:]) >= LPIPS_MIN_SIZE:
            extras["lpips"] = lpips(self.lpips, images, references, self.batch_size).cpu().double().numpy()
        main = s if self.kind == "ssim" else p
        return MetricResult(self.name, main, float(np.mean(main)), True, extras)


@register_metric(
    "fidelity", "SSIM to the uncached output of the same prompt and seed (offline default)", FidelityMetric
)
def _fidelity(device="cpu", **options) -> QualityMetric:
    return FidelityMetric(device, "ssim", **options)


@register_metric("psnr", f"PSNR (dB, capped at {PSNR_MAX_DB:g}) to the uncached output", FidelityMetric)
def _psnr(device="cpu", **options) -> QualityMetric:
    return FidelityMetric(device, "psnr", **options)
