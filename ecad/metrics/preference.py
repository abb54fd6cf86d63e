"""Human-preference rewards: PickScore and HPSv2. Both score an image against its own prompt.

- ``pickscore`` (Kirstain et al. 2023): a CLIP-H model fine-tuned on Pick-a-Pic, loaded with
  transformers' ``CLIPModel`` (hub id ``yuvalkirstain/PickScore_v1``; tokenizer and image
  preprocessing from ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K``, as PickScore's own example does).
  Score = ``logit_scale.exp() * cos(image, prompt)`` (about 100 * cos; typical values ~18-23).
- ``hpsv2`` (Wu et al. 2023): an open_clip ViT-H-14 fine-tuned on HPD v2; the checkpoint
  ``HPS_v2.1_compressed.pt`` (hub repo ``xswu/HPSv2``) holds the whole state dict under
  ``"state_dict"``. HPSv2's ``score()`` returns the raw cosine; its benchmark tables report
  ``100 * cos``, which is what we report (raw cosine in extras["cosine"]). Preprocessing as HPSv2's
  eval transform: longest side to 224 (bicubic; on tensors, as torchvision resizes a float tensor:
  one pass, no clipping), pad to a square with black, OpenAI mean/std.

Weights only come from the local cache or explicit paths; missing weights raise
:class:`MissingWeightsError` with size and fetch command. Random weights are test-only
(``allow_random_weights=True``). Higher is better for both.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ecad.metrics.base import MetricError, MissingWeightsError, QualityMetric, register_metric
from ecad.metrics.clip import OpenClipSimilarity, load_open_clip_file, open_clip_architecture
from ecad.metrics.images import OPENAI_MEAN, OPENAI_STD
from ecad.metrics.loading import find_hf_file, hf_cache_dir, seeded, warn_random

PICKSCORE_MODEL = "yuvalkirstain/PickScore_v1"
PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
HPSV2_REPO = "xswu/HPSv2"
HPSV2_FILES = {"v2.1": "HPS_v2.1_compressed.pt", "v2.0": "HPS_v2_compressed.pt"}
_PROCESSOR_FILES = (
    "tokenizer.json tokenizer_config.json special_tokens_map.json vocab.json merges.txt preprocessor_config.json"
)


def _features(out: Any) -> torch.Tensor:
    """get_*_features returns a tensor (transformers 4) or an output whose pooler_output is the projection (5)."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if pooled is None:
        raise MetricError(f"unexpected CLIP feature output {type(out).__name__}")
    return pooled


# ---------------------------------------------------------------------- PickScore
class PickScoreMetric(OpenClipSimilarity):
    """PickScore: logit_scale.exp() * cos(image, prompt) with the PickScore_v1 CLIP-H model.

    An `OpenClipSimilarity` whose model is transformers' CLIPModel: only loading, the encode hooks
    and the (learnt) scale differ, so batching, preprocessing and the prompt cache are shared.
    """

    name = "pickscore"
    clamp = False

    def __init__(
        self,
        device="cpu",
        model: str = PICKSCORE_MODEL,
        processor: str = PICKSCORE_PROCESSOR,
        weights: str | os.PathLike | None = None,
        batch_size: int = 16,
        dtype: str | torch.dtype = "float32",
        max_length: int = 77,
        allow_random_weights: bool = False,
        config: Any = None,
        tokenizer: Any = None,
        image_size: int | None = None,
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
        seed: int = 0,
    ):
        """
        Args:
            model: hub id of the PickScore CLIPModel (read from the local HF cache only).
            processor: hub id (or local dir) of the tokenizer + image-preprocessing config.
            weights: a local directory holding the model (instead of the hub id).
            allow_random_weights: TEST ONLY - build ``CLIPModel(config)`` with random weights; needs
                ``config`` (a CLIPConfig or dict) and ``tokenizer``.
        """
        self.max_length = int(max_length)
        from transformers import CLIPConfig, CLIPModel

        mean, std, size, resize_mode = tuple(image_mean), tuple(image_std), image_size, "shortest"
        if allow_random_weights and weights is None:
            if config is None or tokenizer is None:
                raise MetricError("pickscore with random weights (tests) needs config= and tokenizer=")
            cfg = config if isinstance(config, CLIPConfig) else CLIPConfig(**config)
            with seeded(seed):
                net = CLIPModel(cfg)
            warn_random("pickscore")
            size = size or cfg.vision_config.image_size
        else:
            if weights is not None and not Path(weights).is_dir():
                raise MetricError(
                    f"pickscore: weights= must be a model directory (config.json + model.safetensors), got {weights}"
                )
            net = self._load_model(CLIPModel, weights or model)
            if tokenizer is None:
                tokenizer, pp = self._load_processor(processor)
                size, mean, std = size or pp["size"], pp["mean"], pp["std"]
                resize_mode = pp["resize_mode"]
            size = size or net.config.vision_config.image_size
        super().__init__(
            device,
            net,
            tokenizer,
            {"size": size, "mean": mean, "std": std, "resize_mode": resize_mode},
            batch_size,
            dtype,
        )

    @staticmethod
    def _load_model(cls, source):
        local = Path(source).is_dir()
        try:
            return cls.from_pretrained(str(source), cache_dir=None if local else hf_cache_dir(), local_files_only=True)
        except OSError as exc:
            if local:
                raise MetricError(f"pickscore: cannot load a CLIPModel from {source}: {exc}") from exc
            files = " config.json model.safetensors" if str(source) == PICKSCORE_MODEL else ""
            raise MissingWeightsError(
                f"PickScore ({source})", str(source), "~3.9 GB", f"hf download {source}{files}"
            ) from exc

    @staticmethod
    def _load_processor(source) -> tuple[Any, dict]:
        from transformers import CLIPImageProcessor, CLIPTokenizerFast

        local = Path(source).is_dir()
        kw = {"local_files_only": True, **({} if local else {"cache_dir": hf_cache_dir()})}
        try:
            tok = CLIPTokenizerFast.from_pretrained(str(source), **kw)
            ip = CLIPImageProcessor.from_pretrained(str(source), **kw)
        except OSError as exc:
            raise MissingWeightsError(
                f"PickScore processor ({source})",
                str(source),
                "a few MB (tokenizer + config only)",
                f"hf download {source} {_PROCESSOR_FILES}",
            ) from exc
        crop = getattr(ip, "crop_size", None) or {}
        short = (getattr(ip, "size", None) or {}).get("shortest_edge")
        size = (crop.get("height"), crop.get("width")) if crop.get("height") else short or 224
        if isinstance(size, tuple) and size[0] == size[1]:
            size = size[0]
        mode = "shortest" if getattr(ip, "do_center_crop", True) else "squash"
        return tok, {"size": size, "mean": tuple(ip.image_mean), "std": tuple(ip.image_std), "resize_mode": mode}

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        return _features(self.model.get_image_features(pixel_values=pixels))

    def encode_texts(self, prompts: list[str]) -> torch.Tensor:
        tok = self.tokenizer(
            list(prompts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        return _features(
            self.model.get_text_features(
                input_ids=tok["input_ids"].to(self.device), attention_mask=tok["attention_mask"].to(self.device)
            )
        )

    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp().float()


# ---------------------------------------------------------------------- HPSv2
def resolve_hpsv2_weights(version: str) -> str:
    """Local path of HPSv2's checkpoint: HF cache (xswu/HPSv2) or the hpsv2 package's own cache dir."""
    if version not in HPSV2_FILES:
        raise MetricError(f"hpsv2: unknown version {version!r}; use {', '.join(HPSV2_FILES)}")
    filename = HPSV2_FILES[version]
    path = find_hf_file(HPSV2_REPO, [filename])
    if path:
        return path
    root = Path(os.environ.get("HPS_ROOT") or os.path.expanduser("~/.cache/hpsv2"))
    if (root / filename).is_file():
        return str(root / filename)
    raise MissingWeightsError(
        f"HPSv{version[1:]} ({filename})",
        f"{HPSV2_REPO}/{filename}",
        "~1.9 GB; the ViT-H-14 config and tokenizer ship with open_clip",
        f"hf download {HPSV2_REPO} {filename}",
    )


class HPSv2Metric(OpenClipSimilarity):
    """HPSv2(.1): 100 * cos(image, prompt) with the HPSv2 open_clip ViT-H-14 (as HPSv2's benchmark tables)."""

    name = "hpsv2"
    scale = 100.0
    clamp = False

    def __init__(
        self,
        device="cpu",
        version: str = "v2.1",
        weights: str | os.PathLike | None = None,
        batch_size: int = 16,
        dtype: str | torch.dtype = "float32",
        allow_random_weights: bool = False,
        model_config: dict | None = None,
        seed: int = 0,
    ):
        """
        Args:
            version: "v2.1" (HPS_v2.1_compressed.pt, default) or "v2.0" (HPS_v2_compressed.pt).
            weights: a local HPSv2 checkpoint file instead of the HF cache.
            allow_random_weights: TEST ONLY - random weights; with `model_config` (an open_clip config dict)
                a tiny model instead of ViT-H-14.
        """
        path = None
        if weights is not None:
            path = str(weights)
        elif not allow_random_weights:
            path = resolve_hpsv2_weights(version)
        # the architecture (random init, no download), then HPSv2's full state dict on top
        net, tokenizer, pp = open_clip_architecture("ViT-H-14", model_config, seed, "longest")
        if path is not None:
            load_open_clip_file(net, path)
        else:
            warn_random("hpsv2")
        # HPSv2's ResizeMaxSize on a tensor: torchvision's float bicubic, no clipping (the others' PIL path clips)
        pp = {**pp, "mean": OPENAI_MEAN, "std": OPENAI_STD, "resize_mode": "longest", "resample": "float"}
        super().__init__(device, net, tokenizer, pp, batch_size, dtype)


@register_metric(
    "pickscore", "PickScore (yuvalkirstain/PickScore_v1): logit_scale*cos, higher is better", PickScoreMetric
)
def _pickscore(device="cpu", **options) -> QualityMetric:
    return PickScoreMetric(device, **options)


@register_metric("hpsv2", "HPSv2.1 (xswu/HPSv2, open_clip ViT-H-14): 100*cos, higher is better", HPSv2Metric)
def _hpsv2(device="cpu", **options) -> QualityMetric:
    return HPSv2Metric(device, **options)
