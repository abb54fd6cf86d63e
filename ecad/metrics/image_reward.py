"""ImageReward-v1.0 (Xu et al., 2023) as a metric: a BLIP reward model scoring how well an image
matches human preference for its prompt (higher is better, roughly zero-mean / unit-std).

The model is rebuilt here from transformers' BLIP parts so the published checkpoint
(`ImageReward.pt` in the hub repo THUDM/ImageReward, a plain torch state dict) loads one to one:

* image encoder: ViT-L/16 at 224 px (width 1024, 24 blocks, 16 heads, LayerNorm eps 1e-6, exact
  GELU), written in the checkpoint with timm names (`blip.visual_encoder.blocks.N.attn.qkv`, ...);
  transformers' `BlipVisionModel` keeps the same fused qkv layout ([q; k; v] rows, heads inside),
  so every tensor maps by renaming alone.
* text encoder: BLIP's "med" BERT (`med_config.json`: width 768, 12 layers, 12 heads, vocab 30524 =
  bert-base-uncased + [DEC] + [ENC]) with a cross-attention block in every layer whose keys and
  values read the 1024-wide image tokens; no token-type embeddings and no pooler. transformers'
  `BlipTextModel` uses the same names; it only creates the cross-attention blocks when its config
  says `is_decoder=True`, and is then called with `is_decoder=False` (bidirectional self-attention,
  as the original encoder).
* `blip.vision_proj` / `blip.text_proj` (contrastive projections of BLIP_Pretrain, unused to score)
  are kept so the mapping stays one to one.
* reward head `mlp.layers`: Linear(768,1024), Dropout, Linear(1024,128), Dropout, Linear(128,64),
  Dropout, Linear(64,16), Linear(16,1) -- no activations (they are commented out upstream).

Scoring follows upstream `ImageReward.score`: BERT tokens of the prompt (padding to 35, truncation;
the [CLS] token is *not* replaced by [ENC] there), the text encoder cross-attending to all image
tokens (CLS included), `last_hidden_state[:, 0]` in float32 through the head, then
`(raw - 0.16717362830052426) / 1.0333394966054072`. Images are resized (shorter side) to 224 with
bicubic filtering, centre-cropped and normalised with CLIP's mean/std.

Weights are never downloaded and never replaced by random ones: missing files raise
`MissingWeightsError` with the command that fetches them. Random weights exist only for tests,
behind `allow_random_weights=True` together with an explicit tiny `ImageRewardConfig`.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ecad.metrics.base import MetricError, MetricResult, MissingWeightsError, QualityMetric, register_metric
from ecad.metrics.images import OPENAI_MEAN, OPENAI_STD, channel_tensor
from ecad.metrics.images import preprocess_images as clip_preprocess
from ecad.metrics.loading import find_hf_file, hf_cache_dir, parse_dtype

HUB_REPO = "THUDM/ImageReward"
CHECKPOINT_FILE = "ImageReward.pt"
MED_CONFIG_FILE = "med_config.json"
TOKENIZER_REPOS = ("bert-base-uncased", "google-bert/bert-base-uncased")
TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json")

CHECKPOINT_SIZE = "about 1.8 GB (ImageReward.pt, ~447M float32 parameters)"
TOKENIZER_SIZE = "about 0.5 MB (vocab.txt 232 kB, tokenizer.json 466 kB)"
FETCH_WEIGHTS = f"hf download {HUB_REPO} {CHECKPOINT_FILE} {MED_CONFIG_FILE}"
FETCH_TOKENIZER = "hf download bert-base-uncased tokenizer.json vocab.txt tokenizer_config.json"

# Upstream ImageReward.__init__ (ImageReward/ImageReward.py): score = (raw - mean) / std.
REWARD_MEAN = 0.16717362830052426
REWARD_STD = 1.0333394966054072
# Upstream MLP(768): widths after the input; dropouts sit after the first three linears.
HEAD_WIDTHS = (1024, 128, 64, 16, 1)
HEAD_DROPOUTS = (0.2, 0.2, 0.1)
TINY_PARAM_LIMIT = 20_000_000  # random weights are refused for anything bigger than a test model


@dataclass(frozen=True)
class ImageRewardConfig:
    """Architecture of ImageReward-v1.0; defaults are the published model (create_vit('large', 224)
    and BLIP's med_config.json with encoder_width set to the ViT width, as BLIP_Pretrain does)."""

    image_size: int = 224
    patch_size: int = 16
    vision_width: int = 1024
    vision_layers: int = 24
    vision_heads: int = 16
    vision_mlp_ratio: float = 4.0
    vision_layer_norm_eps: float = 1e-6
    vocab_size: int = 30524
    text_width: int = 768
    text_layers: int = 12
    text_heads: int = 12
    text_intermediate: int = 3072
    max_position_embeddings: int = 512
    text_layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    hidden_act: str = "gelu"
    embed_dim: int = 256  # BLIP_Pretrain's vision_proj / text_proj width
    max_length: int = 35  # tokenizer max_length in ImageReward.score
    reward_mean: float = REWARD_MEAN
    reward_std: float = REWARD_STD

    @property
    def vision_intermediate(self) -> int:
        return int(self.vision_width * self.vision_mlp_ratio)

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def with_med_config(self, med: Mapping[str, Any] | str | os.PathLike) -> ImageRewardConfig:
        """This config with the text encoder described by a BLIP `med_config.json` (path or dict)."""
        if not isinstance(med, Mapping):
            med = json.loads(Path(med).read_text())
        if not med.get("add_cross_attention", False):
            raise MetricError("med_config.json: ImageReward's text encoder needs add_cross_attention=true")
        if med.get("position_embedding_type", "absolute") != "absolute":
            raise MetricError("med_config.json: only absolute position embeddings are supported")
        names = {
            "hidden_size": "text_width",
            "num_hidden_layers": "text_layers",
            "num_attention_heads": "text_heads",
            "intermediate_size": "text_intermediate",
            "vocab_size": "vocab_size",
            "max_position_embeddings": "max_position_embeddings",
            "layer_norm_eps": "text_layer_norm_eps",
            "pad_token_id": "pad_token_id",
            "hidden_act": "hidden_act",
        }
        # encoder_width is ignored on purpose: BLIP_Pretrain overwrites it with the ViT width.
        return replace(self, **{ours: med[theirs] for theirs, ours in names.items() if theirs in med})


# ----------------------------------------------------------------------------- the model
class ImageRewardModel(nn.Module):
    """ImageReward-v1.0 built from transformers' BlipVisionModel + BlipTextModel and the reward head."""

    def __init__(self, config: ImageRewardConfig | None = None):
        super().__init__()
        from transformers import BlipTextConfig, BlipVisionConfig
        from transformers.models.blip.modeling_blip import BlipVisionModel
        from transformers.models.blip.modeling_blip_text import BlipTextModel

        self.config = config = config or ImageRewardConfig()
        self.vision = BlipVisionModel(
            BlipVisionConfig(
                hidden_size=config.vision_width,
                intermediate_size=config.vision_intermediate,
                num_hidden_layers=config.vision_layers,
                num_attention_heads=config.vision_heads,
                image_size=config.image_size,
                patch_size=config.patch_size,
                hidden_act=config.hidden_act,
                layer_norm_eps=config.vision_layer_norm_eps,
                attention_dropout=0.0,
            )
        )
        self.text = BlipTextModel(
            BlipTextConfig(
                vocab_size=config.vocab_size,
                hidden_size=config.text_width,
                encoder_hidden_size=config.vision_width,
                intermediate_size=config.text_intermediate,
                num_hidden_layers=config.text_layers,
                num_attention_heads=config.text_heads,
                max_position_embeddings=config.max_position_embeddings,
                hidden_act=config.hidden_act,
                layer_norm_eps=config.text_layer_norm_eps,
                pad_token_id=config.pad_token_id,
                bos_token_id=None,
                eos_token_id=None,
                sep_token_id=None,
                hidden_dropout_prob=0.0,
                attention_probs_dropout_prob=0.0,
                is_decoder=True,  # makes BlipTextLayer build its cross-attention; forward runs bidirectionally
                use_cache=False,
            ),
            add_pooling_layer=False,
        )
        self.vision_proj = nn.Linear(config.vision_width, config.embed_dim)  # unused to score
        self.text_proj = nn.Linear(config.text_width, config.embed_dim)  # unused to score
        layers: list[nn.Module] = []
        width = config.text_width
        for i, out in enumerate(HEAD_WIDTHS):
            layers.append(nn.Linear(width, out))
            if i < len(HEAD_DROPOUTS):
                layers.append(nn.Dropout(HEAD_DROPOUTS[i]))
            width = out
        self.reward_head = nn.Sequential(*layers)  # indices 0,2,4,6,7 are the linears, as upstream
        self.eval()

    def image_embeddings(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """All ViT tokens after the final LayerNorm, [B, 1 + patches, vision_width]."""
        dtype = self.vision.embeddings.patch_embedding.weight.dtype
        return self.vision(pixel_values=pixel_values.to(dtype)).last_hidden_state

    def text_features(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, image_embeds: torch.Tensor
    ) -> torch.Tensor:
        """First-token output of the text encoder cross-attending to the image, in float32."""
        out = self.text(
            input_ids=input_ids,
            attention_mask=attention_mask,
            encoder_hidden_states=image_embeds,
            is_decoder=False,
            use_cache=False,
        )
        return out.last_hidden_state[:, 0, :].float()

    def raw_reward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """The head's output before normalisation, [B] float32."""
        features = self.text_features(input_ids, attention_mask, self.image_embeddings(pixel_values))
        head_dtype = self.reward_head[0].weight.dtype
        return self.reward_head(features.to(head_dtype)).float().squeeze(-1)

    def normalize(self, raw: torch.Tensor) -> torch.Tensor:
        return (raw - self.config.reward_mean) / self.config.reward_std

    def forward(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        return self.normalize(self.raw_reward(pixel_values, input_ids, attention_mask))


# ----------------------------------------------------------------------------- checkpoint names
def official_key_shapes(config: ImageRewardConfig | None = None) -> dict[str, tuple[int, ...]]:
    """Key names and shapes of the upstream checkpoint (the state dict of ImageReward/ImageReward.py's
    `ImageReward` module) for `config`, derived from the upstream module definitions (BLIP vit.py,
    med.py, blip_pretrain.py, ImageReward.MLP), not from our module. Includes the persistent
    `position_ids` buffer that med.py's BertEmbeddings registers."""
    c = config or ImageRewardConfig()
    shapes: dict[str, tuple[int, ...]] = {}
    v, d, hid = "blip.visual_encoder.", c.vision_width, c.vision_intermediate
    shapes[v + "cls_token"] = (1, 1, d)
    shapes[v + "pos_embed"] = (1, c.num_patches + 1, d)
    shapes[v + "patch_embed.proj.weight"] = (d, 3, c.patch_size, c.patch_size)
    shapes[v + "patch_embed.proj.bias"] = (d,)
    for i in range(c.vision_layers):
        b = f"{v}blocks.{i}."
        for name, shape in (
            ("norm1.weight", (d,)),
            ("norm1.bias", (d,)),
            ("attn.qkv.weight", (3 * d, d)),
            ("attn.qkv.bias", (3 * d,)),
            ("attn.proj.weight", (d, d)),
            ("attn.proj.bias", (d,)),
            ("norm2.weight", (d,)),
            ("norm2.bias", (d,)),
            ("mlp.fc1.weight", (hid, d)),
            ("mlp.fc1.bias", (hid,)),
            ("mlp.fc2.weight", (d, hid)),
            ("mlp.fc2.bias", (d,)),
        ):
            shapes[b + name] = shape
    shapes[v + "norm.weight"] = (d,)
    shapes[v + "norm.bias"] = (d,)

    t, h, inter = "blip.text_encoder.", c.text_width, c.text_intermediate
    shapes[t + "embeddings.position_ids"] = (1, c.max_position_embeddings)
    shapes[t + "embeddings.word_embeddings.weight"] = (c.vocab_size, h)
    shapes[t + "embeddings.position_embeddings.weight"] = (c.max_position_embeddings, h)
    shapes[t + "embeddings.LayerNorm.weight"] = (h,)
    shapes[t + "embeddings.LayerNorm.bias"] = (h,)
    for i in range(c.text_layers):
        b = f"{t}encoder.layer.{i}."
        for block, kv_in in (("attention", h), ("crossattention", c.vision_width)):
            shapes[f"{b}{block}.self.query.weight"] = (h, h)
            shapes[f"{b}{block}.self.query.bias"] = (h,)
            for kv in ("key", "value"):
                shapes[f"{b}{block}.self.{kv}.weight"] = (h, kv_in)
                shapes[f"{b}{block}.self.{kv}.bias"] = (h,)
            shapes[f"{b}{block}.output.dense.weight"] = (h, h)
            shapes[f"{b}{block}.output.dense.bias"] = (h,)
            shapes[f"{b}{block}.output.LayerNorm.weight"] = (h,)
            shapes[f"{b}{block}.output.LayerNorm.bias"] = (h,)
        shapes[b + "intermediate.dense.weight"] = (inter, h)
        shapes[b + "intermediate.dense.bias"] = (inter,)
        shapes[b + "output.dense.weight"] = (h, inter)
        shapes[b + "output.dense.bias"] = (h,)
        shapes[b + "output.LayerNorm.weight"] = (h,)
        shapes[b + "output.LayerNorm.bias"] = (h,)

    shapes["blip.vision_proj.weight"] = (c.embed_dim, c.vision_width)
    shapes["blip.vision_proj.bias"] = (c.embed_dim,)
    shapes["blip.text_proj.weight"] = (c.embed_dim, h)
    shapes["blip.text_proj.bias"] = (c.embed_dim,)

    width, index = h, 0
    for i, out in enumerate(HEAD_WIDTHS):
        shapes[f"mlp.layers.{index}.weight"] = (out, width)
        shapes[f"mlp.layers.{index}.bias"] = (out,)
        index += 2 if i < len(HEAD_DROPOUTS) else 1
        width = out
    return shapes


# Buffers of the upstream checkpoint that our module recomputes (non-persistent in transformers).
_OPTIONAL_BUFFERS = ("blip.text_encoder.embeddings.position_ids",)

_VISION_BLOCK = {
    "norm1": "layer_norm1",
    "attn.qkv": "self_attn.qkv",
    "attn.proj": "self_attn.projection",
    "norm2": "layer_norm2",
    "mlp.fc1": "mlp.fc1",
    "mlp.fc2": "mlp.fc2",
}
_RULES: list[tuple[re.Pattern, Any]] = [
    (re.compile(r"blip\.visual_encoder\.cls_token"), "vision.embeddings.class_embedding"),
    (re.compile(r"blip\.visual_encoder\.pos_embed"), "vision.embeddings.position_embedding"),
    (
        re.compile(r"blip\.visual_encoder\.patch_embed\.proj\.(weight|bias)"),
        lambda m: f"vision.embeddings.patch_embedding.{m[1]}",
    ),
    (
        re.compile(
            r"blip\.visual_encoder\.blocks\.(\d+)\.(norm1|attn\.qkv|attn\.proj|norm2|mlp\.fc1|mlp\.fc2)"
            r"\.(weight|bias)"
        ),
        lambda m: f"vision.encoder.layers.{m[1]}.{_VISION_BLOCK[m[2]]}.{m[3]}",
    ),
    (re.compile(r"blip\.visual_encoder\.norm\.(weight|bias)"), lambda m: f"vision.post_layernorm.{m[1]}"),
    (
        re.compile(
            r"blip\.text_encoder\.(embeddings\.(?:word_embeddings|position_embeddings)\.weight"
            r"|embeddings\.LayerNorm\.(?:weight|bias))"
        ),
        lambda m: f"text.{m[1]}",
    ),
    (
        re.compile(
            r"blip\.text_encoder\.(encoder\.layer\.\d+\."
            r"(?:(?:attention|crossattention)\.(?:self\.(?:query|key|value)|output\.dense|output\.LayerNorm)"
            r"|intermediate\.dense|output\.dense|output\.LayerNorm)\.(?:weight|bias))"
        ),
        lambda m: f"text.{m[1]}",
    ),
    (re.compile(r"blip\.(vision_proj|text_proj)\.(weight|bias)"), lambda m: f"{m[1]}.{m[2]}"),
    (re.compile(r"mlp\.layers\.(\d+)\.(weight|bias)"), lambda m: f"reward_head.{m[1]}.{m[2]}"),
]


def official_to_ours(key: str) -> str | None:
    """Our module's name for one upstream checkpoint key (None: not a parameter we know)."""
    for pattern, target in _RULES:
        m = pattern.fullmatch(key)
        if m:
            return target if isinstance(target, str) else target(m)
    return None


def convert_official_state_dict(
    sd: Mapping[str, torch.Tensor], config: ImageRewardConfig | None = None
) -> dict[str, torch.Tensor]:
    """Rename an upstream ImageReward state dict to `ImageRewardModel`'s names (tensors are not copied).

    Every key must map (the `position_ids` buffer is checked and dropped: our module rebuilds it);
    with `config`, the key set and every shape must equal `official_key_shapes(config)`. Raises
    `MetricError` naming the offending keys otherwise. A DDP `module.` prefix is stripped."""
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
    out: dict[str, torch.Tensor] = {}
    unmapped: list[str] = []
    for key, value in sd.items():
        if key in _OPTIONAL_BUFFERS:
            if value.device.type != "meta":
                expected = torch.arange(value.shape[-1], device=value.device)
                if value.ndim != 2 or not torch.equal(value.reshape(-1).long(), expected):
                    raise MetricError(f"ImageReward checkpoint: {key} is not 0..{value.shape[-1] - 1}")
            continue
        ours = official_to_ours(key)
        if ours is None:
            unmapped.append(key)
        else:
            out[ours] = value
    if unmapped:
        raise MetricError(f"ImageReward checkpoint: {len(unmapped)} keys have no counterpart: {_few(unmapped)}")
    if config is not None:
        expected = official_key_shapes(config)
        required = set(expected) - set(_OPTIONAL_BUFFERS)
        missing = sorted(required - set(sd))
        if missing:
            raise MetricError(f"ImageReward checkpoint: {len(missing)} keys are missing: {_few(missing)}")
        wrong = [f"{k} {tuple(sd[k].shape)} != {expected[k]}" for k in sd if tuple(sd[k].shape) != expected[k]]
        if wrong:
            raise MetricError(f"ImageReward checkpoint does not match the configuration: {_few(wrong)}")
    return out


def _few(items: list[str], n: int = 8) -> str:
    return ", ".join(items[:n]) + (f" (+{len(items) - n} more)" if len(items) > n else "")


def _param_count(config: ImageRewardConfig) -> int:
    return sum(math.prod(s) for k, s in official_key_shapes(config).items() if k not in _OPTIONAL_BUFFERS)


# ----------------------------------------------------------------------------- images and text
def preprocess_images(
    images: torch.Tensor,
    size: int = 224,
    quantize_8bit: bool = True,
    mean: Sequence[float] | torch.Tensor = OPENAI_MEAN,
    std: Sequence[float] | torch.Tensor = OPENAI_STD,
) -> torch.Tensor:
    """Upstream `_transform(size)` on a float batch [N,3,H,W] in [0,1]: shorter side to `size` (bicubic,
    antialiased like PIL), centre crop, CLIP normalisation (upstream's constants are OpenAI CLIP's).

    With `quantize_8bit` (default) the resize is PIL's on 8-bit images, as upstream does it
    (`ecad.metrics.images.pil_bicubic_8bit`); without it, one float resize."""
    return clip_preprocess(images, size, mean, std, "shortest", "pil" if quantize_8bit else "float")


def prepare_tokenizer(tokenizer):
    """Upstream `init_tokenizer`: add [DEC] as bos and [ENC] as an extra special token (ids 30522 and
    30523 for bert-base-uncased). Prompts never use them, but the vocabulary then matches."""
    if "[DEC]" not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    if "[ENC]" not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": ["[ENC]"]})
    tokenizer.enc_token_id = tokenizer.convert_tokens_to_ids("[ENC]")
    return tokenizer


def tokenize(tokenizer, prompts: list[str], max_length: int = 35, device: str | torch.device = "cpu"):
    """Prompts as in ImageReward.score: padding to max_length, truncation; [CLS] kept first."""
    enc = tokenizer(list(prompts), padding="max_length", truncation=True, max_length=max_length, return_tensors="pt")
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


# ----------------------------------------------------------------------------- loading
def _find_checkpoint(path_or_repo: str | os.PathLike | None) -> tuple[Path, Path | None]:
    """(ImageReward.pt, med_config.json or None) from a local path, the hub cache, or the upstream
    package's own download folder (~/.cache/ImageReward); MissingWeightsError if absent."""
    if path_or_repo is not None and Path(path_or_repo).expanduser().exists():
        p = Path(path_or_repo).expanduser()
        ckpt = p / CHECKPOINT_FILE if p.is_dir() else p
        if not ckpt.is_file():
            raise MissingWeightsError("ImageReward-v1.0", HUB_REPO, CHECKPOINT_SIZE, FETCH_WEIGHTS, where=str(p))
        med = ckpt.parent / MED_CONFIG_FILE
        return ckpt, med if med.is_file() else None
    repo = str(path_or_repo) if path_or_repo is not None else HUB_REPO
    looks_like_path = repo.startswith((".", "~", "/")) or repo.endswith((".pt", ".pth"))
    if looks_like_path or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo):  # a missing local path, not a repo id
        raise MissingWeightsError("ImageReward-v1.0", HUB_REPO, CHECKPOINT_SIZE, FETCH_WEIGHTS, where=repo)
    ckpt = find_hf_file(repo, [CHECKPOINT_FILE])
    if ckpt is not None:
        med = find_hf_file(repo, [MED_CONFIG_FILE])
        return Path(ckpt), Path(med) if med is not None else None
    legacy = Path.home() / ".cache" / "ImageReward"
    if repo == HUB_REPO and (legacy / CHECKPOINT_FILE).is_file():
        med = legacy / MED_CONFIG_FILE
        return legacy / CHECKPOINT_FILE, med if med.is_file() else None
    raise MissingWeightsError(
        "ImageReward-v1.0",
        repo,
        CHECKPOINT_SIZE,
        FETCH_WEIGHTS,
        where=f"the Hugging Face cache ({hf_cache_dir()}) or {legacy}",
    )


def load_tokenizer(tokenizer=None):
    """The BERT tokenizer: an object (used as is), a local folder, or bert-base-uncased from the HF
    cache; with ImageReward's [DEC]/[ENC] tokens added. MissingWeightsError when absent."""
    if tokenizer is not None and not isinstance(tokenizer, (str, os.PathLike)):
        return prepare_tokenizer(tokenizer)
    from transformers import BertTokenizer

    if tokenizer is not None and Path(tokenizer).expanduser().is_dir():
        return prepare_tokenizer(
            BertTokenizer.from_pretrained(str(Path(tokenizer).expanduser()), local_files_only=True)
        )
    repos = (str(tokenizer),) if tokenizer is not None else TOKENIZER_REPOS
    for repo in repos:
        if find_hf_file(repo, ["vocab.txt", "tokenizer.json"]) is None:
            continue
        try:
            tok = BertTokenizer.from_pretrained(repo, cache_dir=hf_cache_dir(), local_files_only=True)
        except Exception:  # noqa: BLE001 - incomplete cache entry: report it as missing below
            continue
        return prepare_tokenizer(tok)
    where = f"the Hugging Face cache ({hf_cache_dir()})" if tokenizer is None else str(tokenizer)
    raise MissingWeightsError(
        "BERT tokenizer (bert-base-uncased, for ImageReward)",
        "bert-base-uncased",
        TOKENIZER_SIZE,
        FETCH_TOKENIZER,
        where=where,
    )


def _check_config_against_med(config: ImageRewardConfig, med_path: Path | None) -> ImageRewardConfig:
    if med_path is None:
        return config
    from_med = config.with_med_config(med_path)
    if from_med != config:
        diff = [
            f"{f.name}: {getattr(config, f.name)} vs {getattr(from_med, f.name)}"
            for f in fields(config)
            if getattr(config, f.name) != getattr(from_med, f.name)
        ]
        raise MetricError(f"ImageReward: the given config disagrees with {med_path}: {_few(diff)}")
    return config


def load_image_reward(
    path_or_repo: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = torch.float32,
    *,
    tokenizer=None,
    config: ImageRewardConfig | None = None,
    allow_random_weights: bool = False,
) -> tuple[ImageRewardModel, Any]:
    """(model in eval mode on `device`, tokenizer).

    `path_or_repo`: a folder holding ImageReward.pt (+ med_config.json), the .pt file itself, or a
    hub repo id looked up in the local HF cache only (default THUDM/ImageReward; the upstream
    package's ~/.cache/ImageReward is tried too). `config`: defaults to ImageReward-v1.0 (text part
    from med_config.json when present); the checkpoint must match it exactly. The reward head
    stays float32 whatever `dtype` (upstream casts the features to float before it).

    `allow_random_weights=True` (tests only) builds a seeded-by-caller random model instead, and
    only for an explicitly given tiny `config`; weights are never replaced silently."""
    device, dtype = torch.device(device), parse_dtype(dtype)
    if allow_random_weights:
        if path_or_repo is not None:
            raise MetricError("ImageReward: allow_random_weights=True conflicts with a weights path")
        if config is None or _param_count(config) > TINY_PARAM_LIMIT:
            raise MetricError(
                "ImageReward: random weights are for tests only and need an explicit tiny "
                "ImageRewardConfig (they would make the score meaningless)"
            )
        tok = load_tokenizer(tokenizer)
        model = ImageRewardModel(config)
        _check_vocab(tok, config)
        return _finish(model, device, dtype), tok

    ckpt, med = _find_checkpoint(path_or_repo)
    tok = load_tokenizer(tokenizer)
    config = (
        ImageRewardConfig().with_med_config(med)
        if config is None and med is not None
        else _check_config_against_med(config or ImageRewardConfig(), med)
    )
    _check_vocab(tok, config)
    try:
        sd = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError:  # legacy (non-zip) serialisation cannot be memory-mapped
        sd = torch.load(ckpt, map_location="cpu", weights_only=True)
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict):
        raise MetricError(f"ImageReward: {ckpt} is not a state dict")
    converted = convert_official_state_dict(sd, config)
    with torch.device("meta"):
        model = ImageRewardModel(config)
    model.load_state_dict(converted, strict=True, assign=True)
    # non-persistent buffers are not in the checkpoint: rebuild them off the meta device
    model.text.embeddings.position_ids = torch.arange(config.max_position_embeddings).expand((1, -1))
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    if left:
        raise MetricError(f"ImageReward: tensors left unloaded: {_few(left)}")
    return _finish(model, device, dtype), tok


def _check_vocab(tokenizer, config: ImageRewardConfig) -> None:
    if len(tokenizer) > config.vocab_size:
        raise MetricError(
            f"ImageReward: tokenizer has {len(tokenizer)} tokens but the text encoder only "
            f"{config.vocab_size}; use bert-base-uncased's tokenizer"
        )


def _finish(model: ImageRewardModel, device: torch.device, dtype: torch.dtype) -> ImageRewardModel:
    model = model.to(device=device, dtype=dtype)
    model.reward_head.float()
    return model.eval().requires_grad_(False)


# ----------------------------------------------------------------------------- metric
class ImageRewardMetric(QualityMetric):
    """ImageReward-v1.0 score of each image for its prompt (higher is better)."""

    name = "image-reward"
    higher_is_better = True
    needs_reference = False
    needs_prompts = True

    def __init__(
        self,
        model: ImageRewardModel,
        tokenizer,
        device: str | torch.device = "cpu",
        batch_size: int = 16,
        quantize_8bit: bool = True,
    ):
        super().__init__(device)
        if batch_size < 1:
            raise MetricError(f"image-reward: batch_size must be >= 1, got {batch_size}")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.batch_size = int(batch_size)
        self.quantize_8bit = quantize_8bit
        self._mean = channel_tensor(OPENAI_MEAN, self.device)
        self._std = channel_tensor(OPENAI_STD, self.device)

    def _score(self, images, prompts, references) -> MetricResult:
        cfg = self.model.config
        raw = []
        for start in range(0, images.shape[0], self.batch_size):
            pixels = preprocess_images(
                images[start : start + self.batch_size], cfg.image_size, self.quantize_8bit, self._mean, self._std
            )
            ids, mask = tokenize(self.tokenizer, prompts[start : start + self.batch_size], cfg.max_length, self.device)
            raw.append(self.model.raw_reward(pixels, ids, mask))
        raw_t = torch.cat(raw) if raw else torch.zeros(0, device=self.device)
        scores = self.model.normalize(raw_t).cpu().numpy().astype(np.float64)
        summary = float(np.mean(scores)) if scores.size else float("nan")
        return MetricResult(self.name, scores, summary, True, {"raw_reward": raw_t.cpu().numpy().astype(np.float64)})


@register_metric(
    "image-reward", "ImageReward-v1.0 human-preference score of image vs prompt (THUDM/ImageReward)", ImageRewardMetric
)
def _image_reward(
    device: str | torch.device = "cpu",
    *,
    weights: str | os.PathLike | None = None,
    tokenizer: Any = None,
    batch_size: int = 16,
    dtype: str | torch.dtype = "float32",
    config: ImageRewardConfig | None = None,
    allow_random_weights: bool = False,
    quantize_8bit: bool = True,
) -> QualityMetric:
    """Options are explicit so get_metric names any unknown one (and lists these) before loading.
    `config`, `allow_random_weights` and `quantize_8bit` are for tests; see `load_image_reward`."""
    model, tok = load_image_reward(
        weights, device, dtype, tokenizer=tokenizer, config=config, allow_random_weights=allow_random_weights
    )
    return ImageRewardMetric(model, tok, device, batch_size, quantize_8bit=quantize_8bit)
