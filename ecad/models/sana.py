"""Sana: `SanaTransformerBlock`s with attn1 (linear self-attention), attn2 (cross-attention) and
ff (GLUMBConv, a convolutional MLP on the token grid).

The PixArt team's successor keeps PixArt's conventions: CFG as a doubled batch (one transformer
call per step) and modulation `scale_shift_table_b + e(t)` shared by all blocks, so runs of fully
reused steps fold the same way. Its deep-compression VAE has 32 pixels per latent cell.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ecad.layouts import BlockGroup, Layout
from ecad.models.base import (
    BlockKind,
    BlockPath,
    FamilyAdapter,
    Tokens,
    TransformerDims,
    UnsupportedModelError,
    signature_default,
)
from ecad.models.common import (
    TIME_PROJ,
    apply_folded_step,
    fold_shared_modulation,
    gated_add,
    masked_caption_embeds,
    modulate,
    shared_modulation,
)
from ecad.models.tiny import TINY_PREFIX, TINY_VOCAB, amplify_blocks, byte_tokenizer

COMPONENTS = ("attn1", "attn2", "ff")
# DC-AE f32c32 (Sana 1.0's VAE): 32x downsampling, 32 latent channels.
DC_AE_F32C32_CONFIG = dict(
    latent_channels=32,
    attention_head_dim=32,
    encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * 3,
    encoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    decoder_block_out_channels=(128, 256, 512, 512, 1024, 1024),
    encoder_layers_per_block=(2, 2, 2, 3, 3, 3),
    decoder_layers_per_block=(3, 3, 3, 3, 3, 3),
    encoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    decoder_qkv_multiscales=((), (), (), (5,), (5,), (5,)),
    upsample_block_type="interpolate",
    downsample_block_type="Conv",
    decoder_norm_types="rms_norm",
    decoder_act_fns="silu",
    scaling_factor=0.41407,
)


@dataclass(frozen=True, kw_only=True)
class SanaDims(TransformerDims):
    family: str = "sana"
    num_blocks: int = 20
    patch_size: int = 1
    in_channels: int = 32
    out_channels: int = 32
    ff_hidden: int = 0  # GLUMBConv hidden channels: int(mlp_ratio * hidden)
    cross_inner: int = 0  # cross-attention heads x head dim
    cross_dim: int = 0  # input width of attn2's to_k/to_v (the projected caption)
    caption_channels: int = 2304  # Gemma-2's width
    head_dim: int = 32  # linear self-attention head width
    vae_scale_factor: int = 32
    text_len: int = 300


class SanaAdapter(FamilyAdapter):
    family = "sana"
    display_name = "Sana"
    block_kinds = (BlockKind("transformer_blocks", COMPONENTS, "blocks"),)
    pipeline_classes = {None: "SanaPipeline"}
    transformer_classes = ("SanaTransformer2DModel",)
    roles = {"attn1": "attention", "attn2": "cross_attention", "ff": "mlp"}
    folds_reused_steps = True
    vae_class = "AutoencoderDC"
    preset_vae_scale_factor = 32
    size_multiple = 32
    benchmark_space = "sana-1600m-1024"

    @property
    def tiny_models(self):
        return {f"{TINY_PREFIX}sana": build_tiny_sana}

    def build_tiny(self, num_blocks: int | None = None):
        return build_tiny_sana(num_blocks=num_blocks or 4)

    # ------------------------------------------------------------ block path
    def block_path(self, block: nn.Module, group: BlockGroup) -> BlockPath | None:
        if getattr(block, "attn2", None) is None or not hasattr(block, "scale_shift_table"):
            return None
        return BlockPath(_compose_block, partial=True)

    def step_reuse_prepare(self, blocks, cached):
        return fold_shared_modulation(blocks, cached, ff_tokens=_tokens)

    def step_reuse_apply(self, blocks, kwargs, consts):
        return apply_folded_step(kwargs, consts)

    # ------------------------------------------------------------ pipeline calls
    def encode_prompts(self, pipe, prompts, call, device):
        """As SanaPipeline's call encodes them: with its complex human instruction (the call's
        default unless the space sets one; an empty list switches it off)."""
        instruction = call.get(
            "complex_human_instruction", signature_default(type(pipe).__call__, "complex_human_instruction")
        )
        pe, pm, ne, nm = pipe.encode_prompt(
            prompts,
            do_classifier_free_guidance=True,
            negative_prompt=call.get("negative_prompt", ""),
            device=device,
            clean_caption=call.get("clean_caption", False),
            max_sequence_length=call["max_sequence_length"],
            complex_human_instruction=instruction,
        )
        return {
            "prompt_embeds": pe,
            "prompt_attention_mask": pm,
            "negative_prompt_embeds": ne,
            "negative_prompt_attention_mask": nm,
        }

    def embeds_call_kwargs(self) -> dict[str, Any]:
        return {"negative_prompt": None}  # SanaPipeline refuses a negative prompt next to its embeddings

    def random_prompt_kwargs(self, pipe, batch: int, text_len: int, generator) -> dict[str, Any]:
        return masked_caption_embeds(batch, text_len, pipe.transformer.config.caption_channels, generator)

    # ------------------------------------------------------------ MACs
    def dims_from_config(
        self, config: Mapping[str, Any], vae_scale_factor: int = 32, text_len: int | None = None
    ) -> SanaDims:
        c = dict(config)
        if c.get("guidance_embeds"):
            raise UnsupportedModelError(
                "Sana transformers with guidance embeddings (Sana-Sprint) are not counted; "
                "ecad's Sana MACs cover the guidance-free Sana 1.x transformers"
            )
        heads, head_dim = int(c.get("num_attention_heads", 70)), int(c.get("attention_head_dim", 32))
        hidden = heads * head_dim
        in_ch = int(c.get("in_channels", 32))
        return SanaDims(
            hidden=hidden,
            num_blocks=int(c.get("num_layers", 20)),
            patch_size=int(c.get("patch_size", 1)),
            in_channels=in_ch,
            out_channels=int(c.get("out_channels") or in_ch),
            ff_hidden=int(float(c.get("mlp_ratio", 2.5)) * hidden),
            cross_inner=int(c.get("num_cross_attention_heads", 20)) * int(c.get("cross_attention_head_dim", 112)),
            cross_dim=int(c.get("cross_attention_dim") or hidden),
            caption_channels=int(c.get("caption_channels", 2304)),
            head_dim=head_dim,
            vae_scale_factor=vae_scale_factor,
            text_len=text_len or 300,
        )

    def preset_config(self, space) -> dict[str, Any]:
        """Sana 1.x 1600M: the class defaults; the latent size is the resolution / 32."""
        return {"sample_size": space.height // 32}

    def layout_of_dims(self, dims: SanaDims) -> Layout:
        return self.layout([dims.num_blocks])

    def group_macs(
        self, dims: SanaDims, group: BlockGroup, tokens: Tokens, attention_matmuls: bool
    ) -> dict[str, float]:
        n, l, d = tokens.image, tokens.text, dims.hidden
        a = 1.0 if attention_matmuls else 0.0
        h, ci = dims.ff_hidden, dims.cross_inner
        return {
            # q, k, v, out; linear attention: V_pad K^T then (.) Q, per head (head_dim + 1) x head_dim x N each
            "attn1": 4 * n * d * d + a * 2 * n * d * (dims.head_dim + 1),
            "attn2": 2 * n * d * ci + 2 * l * dims.cross_dim * ci + a * 2 * n * l * ci,  # q, out; k, v on text
            "ff": n * (d * 2 * h + 2 * h * 9 + h * d),  # 1x1 conv to 2h, 3x3 depthwise, 1x1 conv back
        }

    def text_projections(self, block: nn.Module, group: BlockGroup) -> dict[str, list[nn.Module]]:
        """attn2's keys and values read only the projected, normed caption (no timestep)."""
        return {"attn2": [block.attn2.to_k, block.attn2.to_v]}

    def text_kv_macs(self, dims: SanaDims, group: BlockGroup, tokens: Tokens) -> dict[str, float]:
        return {"attn2": 2 * tokens.text * dims.cross_dim * dims.cross_inner}

    def fixed_macs(self, dims: SanaDims, tokens: Tokens) -> float:
        n, l, d, p2 = tokens.image, tokens.text, dims.hidden, dims.patch_size**2
        embed = TIME_PROJ * d + d * d + 6 * d * d  # AdaLayerNormSingle: TimestepEmbedding, then D -> 6D
        caption = l * (dims.caption_channels * d + d * d)  # PixArtAlphaTextProjection
        return float(n * dims.in_channels * p2 * d + embed + caption + n * d * p2 * dims.out_channels)

    def vae_config(self, space) -> dict[str, Any]:
        return DC_AE_F32C32_CONFIG

    def scheduler_config(self, space) -> dict[str, Any]:
        return {"use_flow_sigmas": True, "flow_shift": 3.0, "prediction_type": "flow_prediction"}


SANA = SanaAdapter()


def _tokens(ff_out: torch.Tensor) -> torch.Tensor:
    """GLUMBConv's [B, C, H, W] output in the block's token layout [B, H*W, C]."""
    return ff_out.flatten(2, 3).permute(0, 2, 1)


def _compose_block(block, kwargs, cached, exact):
    """h + g_msa*attn1 + attn2 + g_mlp*ff with each term cached or computed; the norm and
    modulation feeding a reused term are skipped. `exact` keeps the stock block's op order."""
    hidden_states, timestep = kwargs["hidden_states"], kwargs["timestep"]
    batch = hidden_states.shape[0]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = shared_modulation(block, timestep, batch)
    attn = cached.get("attn1")
    if attn is None:
        norm = modulate(block.norm1(hidden_states), scale_msa, shift_msa, exact).to(hidden_states.dtype)
        attn = block.attn1(norm)
    hidden_states = gated_add(hidden_states, gate_msa, attn, exact)
    cross = cached.get("attn2")
    if cross is None:
        cross = block.attn2(
            hidden_states,
            encoder_hidden_states=kwargs.get("encoder_hidden_states"),
            attention_mask=kwargs.get("encoder_attention_mask"),
        )
    hidden_states = cross + hidden_states
    ff = cached.get("ff")
    if ff is None:
        norm = modulate(block.norm2(hidden_states), scale_mlp, shift_mlp, exact)
        ff = block.ff(norm.unflatten(1, (kwargs["height"], kwargs["width"])).permute(0, 3, 1, 2))
    return gated_add(hidden_states, gate_mlp, _tokens(ff), exact)


# ---------------------------------------------------------------------- tiny
def build_tiny_sana(num_blocks: int = 4, seed: int = 0, text_length: int = 16):
    """A Sana pipeline with `num_blocks` blocks, hidden size 16, a 3-level DC-AE (4 px per latent
    cell) and a 2-layer Gemma-2 text encoder, all random. SanaPipeline wants sizes in multiples of 32."""
    from diffusers import AutoencoderDC, DPMSolverMultistepScheduler, SanaPipeline, SanaTransformer2DModel
    from transformers import Gemma2Config, Gemma2Model

    torch.manual_seed(seed)
    transformer = SanaTransformer2DModel(
        patch_size=1,
        in_channels=4,
        out_channels=4,
        num_layers=num_blocks,
        num_attention_heads=2,
        attention_head_dim=8,
        num_cross_attention_heads=2,
        cross_attention_head_dim=8,
        cross_attention_dim=16,
        caption_channels=32,
        sample_size=8,
        mlp_ratio=2.5,
    ).eval()
    amplify_blocks(transformer, seed, std=0.5)
    torch.manual_seed(seed + 2)
    vae = AutoencoderDC(
        in_channels=3,
        latent_channels=4,
        attention_head_dim=2,
        encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock"),
        encoder_block_out_channels=(8, 8, 8),
        decoder_block_out_channels=(8, 8, 8),
        encoder_qkv_multiscales=((), (), (5,)),
        decoder_qkv_multiscales=((), (), (5,)),
        encoder_layers_per_block=(1, 1, 1),
        decoder_layers_per_block=(1, 1, 1),
        downsample_block_type="conv",
        upsample_block_type="interpolate",
        decoder_norm_types="rms_norm",
        decoder_act_fns="silu",
        scaling_factor=0.41407,
    ).eval()
    torch.manual_seed(seed + 1)
    text_encoder = Gemma2Model(
        Gemma2Config(
            vocab_size=TINY_VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=512,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=1,
            attn_implementation="eager",
        )
    ).eval()
    scheduler = DPMSolverMultistepScheduler(**SANA.scheduler_config(None))
    return SanaPipeline(
        tokenizer=byte_tokenizer(text_length),
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    )
