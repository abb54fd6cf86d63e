"""PixArt-alpha / PixArt-Sigma: `BasicTransformerBlock`s with attn1 (self), attn2 (cross), ff.

CFG runs as a doubled batch (one transformer call per step). Every block's modulation is
`scale_shift_table_b + e(t)` with one embedding shared by all blocks, which lets a run of fully
reused steps fold into a few element-wise ops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ecad.layouts import BlockGroup, Layout
from ecad.models.base import BlockKind, BlockPath, FamilyAdapter, StepSelection, Tokens, TransformerDims
from ecad.models.common import (
    TIME_PROJ,
    apply_folded_step,
    fold_shared_modulation,
    gated_add,
    masked_caption_embeds,
    modulate,
    shared_modulation,
)
from ecad.models.tiny import TINY_PREFIX, amplify_blocks, byte_tokenizer, kl_vae, t5_encoder


@dataclass(frozen=True, kw_only=True)
class PixArtDims(TransformerDims):
    family: str = "pixart"
    num_blocks: int = 28
    ff_inner: int = 0  # 0 means 4 * hidden
    text_dim: int = 4096  # caption_channels (0 = no caption projection)
    cross_dim: int = 0  # input of attn2's to_k/to_v; 0 means hidden
    out_channels: int = 8
    additional_conditions: bool = False  # PixArt-alpha 1024 px resolution/aspect-ratio embedders

    def __post_init__(self) -> None:  # fill "same as hidden" defaults so dims built either way compare equal
        object.__setattr__(self, "ff_inner", self.ff_inner or 4 * self.hidden)
        object.__setattr__(self, "cross_dim", self.cross_dim or self.hidden)


# PixArt-XL-2 (alpha, 256/512 px checkpoints: sample_size 32/64, no size embedders), 16 heads x 72.
PIXART_ALPHA_DIMS = PixArtDims(hidden=1152, num_blocks=28, text_dim=4096, cross_dim=1152, text_len=120)
PIXART_SIGMA_DIMS = PixArtDims(hidden=1152, num_blocks=28, text_dim=4096, cross_dim=1152, text_len=300)

COMPONENTS = ("attn1", "attn2", "ff")
# Stable Diffusion's KL VAE (PixArt's): 8x downsampling, 4 latent channels.
SD_VAE_CONFIG = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=4,
)


def pixart_layout(num_blocks: int = 28) -> Layout:
    return PIXART.layout([num_blocks])


class PixArtAdapter(FamilyAdapter):
    family = "pixart"
    display_name = "PixArt"
    block_kinds = (BlockKind("transformer_blocks", COMPONENTS, "blocks"),)
    pipeline_classes = {"alpha": "PixArtAlphaPipeline", "sigma": "PixArtSigmaPipeline"}
    transformer_classes = ("PixArtTransformer2DModel",)
    roles = {"attn1": "attention", "attn2": "cross_attention", "ff": "mlp"}
    ecad_pipeline_names = {"alpha": "pixart_alpha", "sigma": "pixart_sigma"}
    folds_reused_steps = True
    benchmark_space = "pixart-alpha-256"

    def min_run_steps(self, variant: str | None) -> tuple[int, str]:
        if (variant or self.default_variant) == "alpha":
            # at one step PixArt-alpha's call takes the second output of scheduler.step (PixArt-DMD's
            # one-step path), which DPM-Solver and the other multistep schedulers do not return
            return 2, "at one step its call expects a one-step scheduler such as PixArt-DMD's"
        return 1, ""

    @property
    def tiny_models(self):
        return {
            f"{TINY_PREFIX}pixart-alpha": lambda: build_tiny_pixart("alpha"),
            f"{TINY_PREFIX}pixart-sigma": lambda: build_tiny_pixart("sigma"),
        }

    def build_tiny(self, num_blocks: int | None = None):
        return build_tiny_pixart(num_blocks=num_blocks or 4)

    def vae_config(self, space) -> dict[str, Any]:
        return SD_VAE_CONFIG

    def random_prompt_kwargs(self, pipe, batch: int, text_len: int, generator) -> dict[str, Any]:
        return masked_caption_embeds(batch, text_len, pipe.transformer.config.caption_channels, generator)

    # ------------------------------------------------------------ block path
    def block_path(self, block: nn.Module, group: BlockGroup) -> BlockPath | None:
        """PixArt's configuration of diffusers' BasicTransformerBlock; anything else keeps the stock forward."""
        plain = (
            getattr(block, "norm_type", None) == "ada_norm_single"
            and getattr(block, "pos_embed", None) is None
            and not getattr(block, "only_cross_attention", True)
            and getattr(block, "attn2", None) is not None
            and getattr(block, "_chunk_size", 0) is None
        )
        return BlockPath(_compose_block, partial=True) if plain else None

    def step_reuse_prepare(self, blocks, cached):
        return fold_shared_modulation(blocks, cached)

    def step_reuse_apply(self, blocks, kwargs, consts):
        return apply_folded_step(kwargs, consts)

    # ------------------------------------------------------------ pipeline calls
    def select_steps(self, pipe, selected: list[int], base_steps: int) -> StepSelection:
        """PixArt pipelines accept explicit `timesteps=`: take the chosen ones of the base grid."""
        scheduler = pipe.scheduler
        scheduler.set_timesteps(base_steps)
        grid = [int(t) for t in scheduler.timesteps]
        return StepSelection({"timesteps": [grid[i] for i in selected], "num_inference_steps": None})

    def encode_prompts(self, pipe, prompts, call, device):
        pe, pm, ne, nm = pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=True,
            negative_prompt="",
            device=device,
            clean_caption=call.get("clean_caption", False),
            max_sequence_length=call["max_sequence_length"],
        )
        return {
            "prompt_embeds": pe,
            "prompt_attention_mask": pm,
            "negative_prompt_embeds": ne,
            "negative_prompt_attention_mask": nm,
        }

    def embeds_call_kwargs(self) -> dict[str, Any]:
        return {"negative_prompt": None}  # the pipeline would otherwise encode "" again

    # ------------------------------------------------------------ MACs
    def dims_from_config(
        self, config: Mapping[str, Any], vae_scale_factor: int = 8, text_len: int | None = None
    ) -> PixArtDims:
        c = dict(config)
        if c.get("activation_fn", "gelu-approximate") not in ("gelu", "gelu-approximate"):
            raise ValueError(f"activation_fn {c['activation_fn']!r}: only GELU feed-forwards are counted")
        hidden = int(c.get("num_attention_heads", 16)) * int(c.get("attention_head_dim", 72))
        in_ch = int(c.get("in_channels", 4))
        extra = c.get("use_additional_conditions")  # diffusers: None means "sample_size == 128"
        return PixArtDims(
            hidden=hidden,
            num_blocks=int(c.get("num_layers", 28)),
            ff_inner=4 * hidden,
            text_dim=int(c.get("caption_channels") or 0),
            cross_dim=int(c.get("cross_attention_dim") or hidden),
            patch_size=int(c.get("patch_size", 2)),
            in_channels=in_ch,
            out_channels=int(c.get("out_channels") or in_ch),
            additional_conditions=bool(extra) if extra is not None else int(c.get("sample_size", 128)) == 128,
            vae_scale_factor=vae_scale_factor,
            text_len=text_len or 120,
        )

    def preset_config(self, space) -> dict[str, Any]:
        """PixArt-XL-2: 28 blocks, 16 heads x 72, T5-XXL captions; one checkpoint per resolution
        (sample_size = latent size). Alpha's 1024 px checkpoint adds resolution/aspect embedders
        (diffusers turns them on for sample_size 128); Sigma's does not."""
        config: dict[str, Any] = {"sample_size": space.height // 8, "caption_channels": 4096}
        if space.variant == "sigma":
            config["use_additional_conditions"] = False
        return config

    def layout_of_dims(self, dims: PixArtDims) -> Layout:
        return self.layout([dims.num_blocks])

    def group_macs(
        self, dims: PixArtDims, group: BlockGroup, tokens: Tokens, attention_matmuls: bool
    ) -> dict[str, float]:
        n, l, d, f = tokens.image, tokens.text, dims.hidden, dims.ff_inner
        a = 1.0 if attention_matmuls else 0.0
        return {
            "attn1": 4 * n * d * d + a * 2 * n * n * d,  # q, k, v, out + QK^T, AV
            "attn2": 2 * n * d * d + 2 * l * dims.cross_dim * d + a * 2 * n * l * d,  # q, out on image; k, v on text
            "ff": 2 * n * d * f,
        }

    def text_projections(self, block: nn.Module, group: BlockGroup) -> dict[str, list[nn.Module]]:
        """attn2's keys and values read only the projected caption (caption_projection has no timestep)."""
        return {"attn2": [block.attn2.to_k, block.attn2.to_v]}

    def text_kv_macs(self, dims: PixArtDims, group: BlockGroup, tokens: Tokens) -> dict[str, float]:
        return {"attn2": 2 * tokens.text * dims.cross_dim * dims.hidden}

    def fixed_macs(self, dims: PixArtDims, tokens: Tokens) -> float:
        n, l, d, p2 = tokens.image, tokens.text, dims.hidden, dims.patch_size**2
        embed = TIME_PROJ * d + d * d  # timestep TimestepEmbedding
        s = d // 3
        size = 3 * (TIME_PROJ * s + s * s) if dims.additional_conditions else 0  # 2 resolution rows + 1 aspect row
        caption = l * (dims.text_dim * d + d * d) if dims.text_dim else 0
        head = n * d * p2 * dims.out_channels  # proj_out
        return float(n * dims.in_channels * p2 * d + embed + size + 6 * d * d + caption + head)  # adaln_single: D -> 6D

    # ------------------------------------------------------------ ECAD's files
    ecad_count_keys = ("num_blocks",)

    def ecad_claims(self, cache_schedule) -> bool:
        return True  # ECAD has two families; what FLUX (asked first: more block kinds) does not claim is PixArt's


PIXART = PixArtAdapter()


def _compose_block(block, kwargs, cached, exact):
    """h + g_msa*attn1 + attn2 + g_mlp*ff with each term cached or computed; the norm and
    modulation feeding a reused term are skipped. `exact` keeps the stock block's op order."""
    hidden_states, timestep = kwargs["hidden_states"], kwargs["timestep"]
    batch = hidden_states.shape[0]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = shared_modulation(block, timestep, batch)
    attn_kwargs = kwargs.get("cross_attention_kwargs") or {}
    attn = cached.get("attn1")
    if attn is None:
        norm = modulate(block.norm1(hidden_states), scale_msa, shift_msa, exact)
        attn = block.attn1(norm, encoder_hidden_states=None, attention_mask=kwargs.get("attention_mask"), **attn_kwargs)
    hidden_states = _squeeze(gated_add(hidden_states, gate_msa, attn, exact))
    cross = cached.get("attn2")
    if cross is None:
        cross = block.attn2(
            hidden_states,
            encoder_hidden_states=kwargs.get("encoder_hidden_states"),
            attention_mask=kwargs.get("encoder_attention_mask"),
            **attn_kwargs,
        )
    hidden_states = cross + hidden_states
    ff = cached.get("ff")
    if ff is None:
        ff = block.ff(modulate(block.norm2(hidden_states), scale_mlp, shift_mlp, exact))
    return _squeeze(gated_add(hidden_states, gate_mlp, ff, exact))


def _squeeze(hidden_states):
    return hidden_states.squeeze(1) if hidden_states.ndim == 4 else hidden_states


# ---------------------------------------------------------------------- tiny
def build_tiny_pixart(variant: str = "alpha", num_blocks: int = 4, seed: int = 0, text_length: int = 16):
    """A PixArt-alpha/sigma pipeline with `num_blocks` blocks, hidden size 16, 8x8 latents."""
    from diffusers import (
        DPMSolverMultistepScheduler,
        PixArtAlphaPipeline,
        PixArtSigmaPipeline,
        PixArtTransformer2DModel,
    )

    torch.manual_seed(seed)
    transformer = PixArtTransformer2DModel(
        num_attention_heads=2,
        attention_head_dim=8,
        in_channels=4,
        out_channels=8,
        num_layers=num_blocks,
        cross_attention_dim=16,
        sample_size=8,
        patch_size=2,
        caption_channels=32,
        norm_num_groups=1,
    ).eval()
    amplify_blocks(transformer, seed, std=0.6)
    cls = PixArtAlphaPipeline if variant == "alpha" else PixArtSigmaPipeline
    return cls(
        tokenizer=byte_tokenizer(text_length),
        text_encoder=t5_encoder(seed + 1),
        vae=kl_vae(seed + 2, 1, 4),
        transformer=transformer,
        scheduler=DPMSolverMultistepScheduler(),
    )
