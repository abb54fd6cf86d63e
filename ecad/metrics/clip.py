"""CLIP score with open_clip: how well each image matches its own prompt.

Score per image is ``100 * max(cos(image_embedding, text_embedding), 0)`` (the usual CLIPScore
scale, as in torchmetrics); the summary is the mean; higher is better. Default model ViT-B-32 with
OpenAI's weights; any open_clip model name and pretrained tag can be chosen.

Weights are only ever read from the local Hugging Face cache (or the file passed as ``weights=``);
when they are missing a :class:`MissingWeightsError` names the repository, the size and the
``hf download`` command. Random weights exist for tests only, behind ``allow_random_weights=True``.

Images are preprocessed in-graph on the metric's device (no PIL round trip) but with PIL's pixels:
open_clip's transform resizes PIL images, so the bicubic resize reproduces PIL's 8-bit passes
(`ecad.metrics.images.pil_bicubic_8bit`); then center crop (or pad/squash, as the model's
preprocessing says) and the model's mean and std.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ecad.metrics.base import MetricError, MetricResult, MissingWeightsError, QualityMetric, register_metric
from ecad.metrics.images import OPENAI_MEAN, OPENAI_STD, channel_tensor, preprocess_images
from ecad.metrics.loading import find_hf_file, parse_dtype, seeded, warn_random

# approximate download sizes of full open_clip checkpoints, by architecture (fp32)
_APPROX_SIZES = {
    "RN50": "~400 MB",
    "RN101": "~480 MB",
    "ViT-B-32": "~600 MB",
    "ViT-B-16": "~600 MB",
    "ViT-L-14": "~1.7 GB",
    "ViT-L-14-336": "~1.7 GB",
    "ViT-H-14": "~3.9 GB",
    "ViT-g-14": "~5.5 GB",
    "ViT-bigG-14": "~10 GB",
}


# ---------------------------------------------------------------------- open_clip loading
def resolve_open_clip_weights(model_name: str, pretrained: str) -> tuple[str, dict[str, Any]]:
    """Local checkpoint path and pretrained config for an open_clip model/tag, or MissingWeightsError."""
    import open_clip
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(model_name, pretrained)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(model_name)
        raise MetricError(
            f"open_clip has no pretrained tag {pretrained!r} for {model_name!r}; "
            f"known tags: {', '.join(tags) or 'none'} (or pass weights=PATH)"
        )
    size = _APPROX_SIZES.get(model_name.replace("-quickgelu", ""), "size: see the hub page")
    what = f"open_clip {model_name} ({pretrained})"
    hub = cfg.get("hf_hub", "")
    if hub:
        repo, filename = os.path.split(hub)  # "org/name/" -> default file names; "org/name/file" -> that file
        if filename:
            candidates = [filename]
            if filename.endswith((".bin", ".pth")):
                candidates.insert(0, filename[:-4] + ".safetensors")
        else:
            candidates = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
        path = find_hf_file(repo, candidates)
        if path is None:
            # for "org/name/" entries suggest the safetensors file (never pickle); both names are accepted
            raise MissingWeightsError(what, repo, size, f"hf download {repo} {filename or HF_SAFE_WEIGHTS_NAME}")
        return path, cfg
    url = cfg.get("url", "")
    if url:  # open_clip's own URL cache
        path = Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
        if path.is_file():
            return str(path), cfg
        raise MissingWeightsError(what, url, size, f"curl -L --create-dirs -o {path} {url}", where=str(path.parent))
    raise MetricError(f"{what}: the pretrained config names no hub repository or URL; pass weights=PATH")


def open_clip_architecture(
    model_name: str, model_config: dict | None, seed: int, default_resize_mode: str = "shortest"
):
    """(model, tokenizer, preprocess) with seeded random weights: a named open_clip architecture or a
    config dict (embed_dim, vision_cfg, text_cfg). Callers load real weights on top or warn."""
    import open_clip

    preprocess = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "resize_mode": default_resize_mode}
    if model_config is not None:
        cfg = dict(model_config)
        with seeded(seed):
            model = open_clip.CLIP(
                embed_dim=cfg["embed_dim"],
                vision_cfg=cfg["vision_cfg"],
                text_cfg=cfg["text_cfg"],
                quick_gelu=cfg.get("quick_gelu", False),
            )
        tokenizer = open_clip.SimpleTokenizer(context_length=cfg["text_cfg"].get("context_length", 77))
        preprocess["size"] = cfg["vision_cfg"].get("image_size", 224)
        return model.eval(), tokenizer, preprocess
    if open_clip.get_model_config(model_name) is None:
        raise MetricError(
            f"open_clip has no model config {model_name!r}; available: {', '.join(open_clip.list_models())}"
        )
    with seeded(seed):
        model = open_clip.create_model(model_name, pretrained=None)
    tokenizer = open_clip.get_tokenizer(model_name)
    preprocess["size"] = open_clip.get_model_preprocess_cfg(model).get("size", 224)
    return model.eval(), tokenizer, preprocess


def build_open_clip(
    model_name: str,
    pretrained: str | None,
    weights: str | os.PathLike | None,
    allow_random_weights: bool,
    model_config: dict | None,
    seed: int,
    default_resize_mode: str = "shortest",
):
    """(model, tokenizer, preprocess dict) from local weights only; random only when explicitly allowed."""
    import open_clip

    preprocess = {"mean": OPENAI_MEAN, "std": OPENAI_STD, "resize_mode": default_resize_mode}
    if model_config is not None:
        if not allow_random_weights and weights is None:
            raise MetricError(
                "model_config builds a model from scratch; pass weights=PATH, or allow_random_weights=True in tests"
            )
        model, tokenizer, preprocess = open_clip_architecture(model_name, model_config, seed, default_resize_mode)
        if weights is not None:
            load_open_clip_file(model, weights)
        else:
            warn_random(f"open_clip custom config {model_config.get('name', '(dict)')}")
        return model, tokenizer, preprocess

    if open_clip.get_model_config(model_name) is None:
        raise MetricError(
            f"open_clip has no model config {model_name!r}; available: {', '.join(open_clip.list_models())}"
        )
    if weights is not None:
        if not Path(weights).is_file():
            raise MetricError(f"weights file {weights} does not exist")
        path, tag_cfg = str(weights), (open_clip.get_pretrained_cfg(model_name, pretrained) if pretrained else {}) or {}
    elif allow_random_weights:
        path, tag_cfg = None, {}
    else:
        if not pretrained:
            raise MetricError(f"open_clip {model_name}: give a pretrained tag or weights=PATH")
        path, tag_cfg = resolve_open_clip_weights(model_name, pretrained)
    force_pp = {k: tag_cfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in tag_cfg}
    try:
        with seeded(seed):
            model = open_clip.create_model(
                model_name,
                pretrained=path,
                force_quick_gelu=bool(tag_cfg.get("quick_gelu")),
                force_preprocess_cfg=force_pp or None,
            )
    except (RuntimeError, KeyError) as exc:
        raise MetricError(f"open_clip {model_name}: cannot load {path}: {exc}") from exc
    if path is None:
        warn_random(f"open_clip {model_name}")
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:  # noqa: BLE001 - HF tokenizers would need a download
        raise MetricError(f"open_clip {model_name}: its tokenizer is not available offline ({exc})") from exc
    pp = open_clip.get_model_preprocess_cfg(model)
    preprocess.update({k: pp[k] for k in ("mean", "std", "size") if k in pp})
    if pp.get("resize_mode") in ("shortest", "longest", "squash"):
        preprocess["resize_mode"] = pp["resize_mode"]
    return model.eval(), tokenizer, preprocess


def load_open_clip_file(model, weights) -> None:
    """Load an open_clip state dict file into `model`, strictly, with one clear error for a bad file
    (CLIP here; PickScore and HPSv2 ship open_clip checkpoints too)."""
    from open_clip.factory import load_checkpoint

    if not Path(weights).is_file():
        raise MetricError(f"weights file {weights} does not exist")
    try:
        load_checkpoint(model, str(weights), strict=True, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - one clear message for any bad checkpoint
        raise MetricError(f"cannot load {weights} into the open_clip model: {exc}") from exc


# ---------------------------------------------------------------------- the metric
class OpenClipSimilarity(QualityMetric):
    """Cosine similarity of each image with its own prompt under a CLIP-style model, scaled and clamped.

    score = logit_scale() * cos (clamped at 0 when `clamp` is set). Subclasses change the loading,
    the constants, and - for models that are not open_clip (PickScore) - the `encode_images` /
    `encode_texts` hooks. Prompt embeddings are cached per instance: a search scores the same
    prompts thousands of times. The cache assumes the weights do not change after construction
    (call `clear_prompt_cache()` after editing them).
    """

    higher_is_better = True
    needs_reference = False
    needs_prompts = True
    scale = 100.0
    clamp = True

    def __init__(
        self,
        device="cpu",
        model=None,
        tokenizer=None,
        preprocess: dict | None = None,
        batch_size: int = 16,
        dtype: str | torch.dtype = "float32",
    ):
        super().__init__(device)
        if batch_size < 1:
            raise MetricError(f"{self.name}: batch_size must be >= 1, got {batch_size}")
        self.batch_size = int(batch_size)
        self.dtype = parse_dtype(dtype)
        self.model = model.to(self.device, self.dtype).eval()
        self.tokenizer = tokenizer
        self.preprocess = dict(preprocess or {})
        self._mean = channel_tensor(self.preprocess.get("mean", OPENAI_MEAN), self.device)
        self._std = channel_tensor(self.preprocess.get("std", OPENAI_STD), self.device)
        self._prompt_cache: dict[str, torch.Tensor] = {}

    # hooks: raw (unnormalised) features from the model
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """Image features of preprocessed pixels (already in `self.dtype`)."""
        return self.model.encode_image(pixels)

    def encode_texts(self, prompts: list[str]) -> torch.Tensor:
        """Text features of a batch of prompts."""
        return self.model.encode_text(self.tokenizer(prompts).to(self.device))

    def logit_scale(self) -> float | torch.Tensor:
        """The factor in front of the cosine (a constant here; a learnt scalar for PickScore)."""
        return self.scale

    # shared machinery
    def image_input(self, images: torch.Tensor) -> torch.Tensor:
        p = self.preprocess
        x = preprocess_images(
            images, p["size"], self._mean, self._std, p.get("resize_mode", "shortest"), p.get("resample", "pil")
        )
        return x.to(self.dtype)

    def image_embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised image embeddings, float32, batched by `batch_size`."""
        out = [
            F.normalize(self.encode_images(self.image_input(images[i : i + self.batch_size])).float(), dim=-1)
            for i in range(0, images.shape[0], self.batch_size)
        ]
        return torch.cat(out) if out else torch.zeros(0, device=self.device)

    def text_embeddings(self, prompts: list[str]) -> torch.Tensor:
        """L2-normalised text embeddings, float32; only prompts not seen before are encoded."""
        unseen = list(dict.fromkeys(p for p in prompts if p not in self._prompt_cache))
        for i in range(0, len(unseen), self.batch_size):
            chunk = unseen[i : i + self.batch_size]
            for prompt, emb in zip(chunk, F.normalize(self.encode_texts(chunk).float(), dim=-1)):
                self._prompt_cache[prompt] = emb
        if not prompts:
            return torch.zeros(0, device=self.device)
        return torch.stack([self._prompt_cache[p] for p in prompts])

    def clear_prompt_cache(self) -> None:
        """Forget cached prompt embeddings (needed only if the model's weights were changed)."""
        self._prompt_cache.clear()

    def embed(self, images: torch.Tensor, prompts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """L2-normalised (image, text) embeddings, float32."""
        return self.image_embeddings(images), self.text_embeddings(list(prompts))

    def _score(self, images, prompts, references) -> MetricResult:
        img, txt = self.embed(images, prompts)
        cos = (img * txt).sum(-1)
        score = self.logit_scale() * (cos.clamp(min=0) if self.clamp else cos)
        per = score.cpu().double().numpy()
        return MetricResult(
            self.name, per, float(np.mean(per)) if len(per) else math.nan, True, {"cosine": cos.cpu().double().numpy()}
        )


class ClipScoreMetric(OpenClipSimilarity):
    """CLIP score: 100 * max(cos(image, prompt), 0) with an open_clip model (default ViT-B-32 / openai)."""

    name = "clip"

    def __init__(
        self,
        device="cpu",
        model: str = "ViT-B-32",
        pretrained: str | None = "openai",
        weights: str | os.PathLike | None = None,
        batch_size: int = 16,
        dtype: str | torch.dtype = "float32",
        allow_random_weights: bool = False,
        model_config: dict | None = None,
        seed: int = 0,
    ):
        """
        Args:
            model: open_clip architecture name (``open_clip.list_models()``).
            pretrained: open_clip pretrained tag; the checkpoint must already be in the HF cache.
            weights: a local checkpoint file instead (the tag's settings - QuickGELU, mean/std - still apply).
            batch_size: images per forward pass.
            allow_random_weights: TEST ONLY - random weights when no checkpoint is given.
            model_config: TEST ONLY - an open_clip model config dict (embed_dim, vision_cfg, text_cfg)
                built from scratch (random unless `weights` is given).
        """
        self.model_name, self.pretrained = model, pretrained
        net, tokenizer, preprocess = build_open_clip(
            model, pretrained, weights, allow_random_weights, model_config, seed
        )
        super().__init__(device, net, tokenizer, preprocess, batch_size, dtype)


@register_metric(
    "clip", "CLIP score (open_clip, default ViT-B-32/openai): 100*max(cos,0), higher is better", ClipScoreMetric
)
def _clip(device="cpu", **options) -> QualityMetric:
    return ClipScoreMetric(device, **options)
