"""Wan 2.1 text-to-video: `WanTransformerBlock`s with attn1 (self-attention over all frames),
attn2 (cross-attention to the umT5 text) and ffn.

The latent has a time axis: tokens are (latent frames x patches), so one step costs far more than
an image model's, which is where caching matters most. WanPipeline runs classifier-free guidance
as two transformer calls per step (cond, then uncond), each with its own cache here. The block
does its residual adds and modulation in float32 whatever the model dtype; the block path keeps
that. Modulation is `scale_shift_table_b + e(t)` like PixArt's, but cast per block, so runs of
fully reused steps are not folded.
"""

from __future__ import annotations

import math
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
from ecad.models.common import modulate
from ecad.models.tiny import TINY_PREFIX, amplify_blocks, byte_tokenizer, t5_encoder

COMPONENTS = ("attn1", "attn2", "ffn")


@dataclass(frozen=True, kw_only=True)
class WanDims(TransformerDims):
    family: str = "wan"
    num_blocks: int = 30
    ffn_dim: int = 8960
    text_dim: int = 4096  # umT5-XXL width
    freq_dim: int = 256
    patch: tuple[int, int, int] = (1, 2, 2)  # (frames, height, width) per token
    in_channels: int = 16
    out_channels: int = 16
    temporal_scale: int = 4  # frames per latent frame (after the first)
    frames: int = 81  # video frames generated
    text_len: int = 512


class WanAdapter(FamilyAdapter):
    family = "wan"
    display_name = "Wan 2.1"
    block_kinds = (BlockKind("blocks", COMPONENTS, "blocks"),)
    pipeline_classes = {None: "WanPipeline"}
    transformer_classes = ("WanTransformer3DModel",)
    roles = {"attn1": "attention", "attn2": "cross_attention", "ffn": "mlp"}
    video = True
    unconditional_call = True  # WanPipeline calls the transformer once per branch
    vae_class = "AutoencoderKLWan"
    benchmark_space = "wan2.1-t2v-1.3b-480p"

    @property
    def tiny_models(self):
        return {f"{TINY_PREFIX}wan": build_tiny_wan}

    def build_tiny(self, num_blocks: int | None = None):
        return build_tiny_wan(num_blocks=num_blocks or 4)

    # ------------------------------------------------------------ block path
    def block_path(self, block: nn.Module, group: BlockGroup) -> BlockPath | None:
        if getattr(block.attn2, "add_k_proj", None) is not None:
            return None  # image-conditioned (I2V) cross-attention: the stock forward
        return BlockPath(_compose_block, partial=True)

    # ------------------------------------------------------------ pipeline calls
    def check_call(self, pipe, kwargs: Mapping[str, Any]) -> None:
        if getattr(pipe, "transformer_2", None) is not None:
            raise UnsupportedModelError(
                "this Wan pipeline has a second transformer (Wan 2.2's low-noise expert); "
                "ecad schedules cover one transformer: use a Wan 2.1 pipeline"
            )
        if getattr(getattr(pipe, "config", None), "expand_timesteps", False):
            raise UnsupportedModelError(
                "this Wan pipeline expands timesteps per token (Wan 2.2 TI2V); ecad's Wan "
                "block path covers Wan 2.1's per-sample timesteps"
            )

    def encode_prompts(self, pipe, prompts, call, device):
        scale = call.get("guidance_scale", signature_default(type(pipe).__call__, "guidance_scale"))
        pe, ne = pipe.encode_prompt(
            prompts,
            negative_prompt=call.get("negative_prompt"),
            do_classifier_free_guidance=scale > 1.0,
            max_sequence_length=call["max_sequence_length"],
            device=device,
        )
        return {"prompt_embeds": pe} if ne is None else {"prompt_embeds": pe, "negative_prompt_embeds": ne}

    def output_images(self, out: Any) -> torch.Tensor:
        """Every frame of every video, video by video: [videos * frames, 3, H, W]."""
        return out.frames.flatten(0, 1)

    def random_prompt_kwargs(self, pipe, batch: int, text_len: int, generator) -> dict[str, Any]:
        width = pipe.transformer.config.text_dim
        return {
            "prompt_embeds": torch.randn(batch, text_len, width, generator=generator),
            "negative_prompt_embeds": torch.randn(batch, text_len, width, generator=generator),
        }

    # ------------------------------------------------------------ MACs
    def dims_from_config(
        self,
        config: Mapping[str, Any],
        vae_scale_factor: int = 8,
        text_len: int | None = None,
        frames: int = 81,
        temporal_scale: int = 4,
    ) -> WanDims:
        c = dict(config)
        if c.get("image_dim") is not None or c.get("added_kv_proj_dim") is not None:
            raise UnsupportedModelError(
                "image-conditioned Wan transformers (I2V) are not counted; ecad's Wan MACs cover text-to-video"
            )
        hidden = int(c.get("num_attention_heads", 40)) * int(c.get("attention_head_dim", 128))
        in_ch = int(c.get("in_channels", 16))
        return WanDims(
            hidden=hidden,
            num_blocks=int(c.get("num_layers", 40)),
            ffn_dim=int(c.get("ffn_dim", 13824)),
            text_dim=int(c.get("text_dim", 4096)),
            freq_dim=int(c.get("freq_dim", 256)),
            patch=tuple(int(p) for p in c.get("patch_size", (1, 2, 2))),
            in_channels=in_ch,
            out_channels=int(c.get("out_channels") or in_ch),
            vae_scale_factor=vae_scale_factor,
            temporal_scale=temporal_scale,
            frames=frames,
            text_len=text_len or 512,
        )

    def preset_config(self, space) -> dict[str, Any]:
        """Wan2.1-T2V-1.3B: 30 blocks, 12 heads x 128, FFN 8960."""
        return {"num_attention_heads": 12, "attention_head_dim": 128, "ffn_dim": 8960, "num_layers": 30}

    def preset_dims(self, space) -> WanDims:
        import dataclasses

        return dataclasses.replace(super().preset_dims(space), frames=space.frames)

    def dims_for_pipeline(self, pipe, space) -> WanDims:
        return self.dims_from_config(
            dict(pipe.transformer.config),
            pipe.vae_scale_factor_spatial,
            space.text_length,
            frames=space.frames,
            temporal_scale=pipe.vae_scale_factor_temporal,
        )

    def layout_of_dims(self, dims: WanDims) -> Layout:
        return self.layout([dims.num_blocks])

    def tokens(self, dims: WanDims, height: int, width: int, text_len: int | None = None) -> Tokens:
        pt, ph, pw = dims.patch
        latent_frames = (dims.frames - 1) // dims.temporal_scale + 1
        cell = dims.vae_scale_factor
        return Tokens((latent_frames // pt) * (height // cell // ph) * (width // cell // pw), text_len or dims.text_len)

    def group_macs(self, dims: WanDims, group: BlockGroup, tokens: Tokens, attention_matmuls: bool) -> dict[str, float]:
        n, l, d = tokens.image, tokens.text, dims.hidden
        a = 1.0 if attention_matmuls else 0.0
        return {
            "attn1": 4 * n * d * d + a * 2 * n * n * d,  # q, k, v, out + QK^T, AV over all frames' tokens
            "attn2": 2 * n * d * d + 2 * l * d * d + a * 2 * n * l * d,  # q, out on video; k, v on text
            "ffn": 2 * n * d * dims.ffn_dim,
        }

    def text_projections(self, block: nn.Module, group: BlockGroup) -> dict[str, list[nn.Module]]:
        """attn2's keys and values read only the embedded text (the condition embedder's text part
        has no timestep); each CFG call (its own cache context) has its own text."""
        return {"attn2": [block.attn2.to_k, block.attn2.to_v]}

    def text_kv_macs(self, dims: WanDims, group: BlockGroup, tokens: Tokens) -> dict[str, float]:
        return {"attn2": 2 * tokens.text * dims.hidden * dims.hidden}

    def fixed_macs(self, dims: WanDims, tokens: Tokens) -> float:
        n, l, d = tokens.image, tokens.text, dims.hidden
        cell = math.prod(dims.patch)
        embed = dims.freq_dim * d + d * d + 6 * d * d  # time embedder, then time_proj D -> 6D
        text = l * (dims.text_dim * d + d * d)  # text embedder (umT5 width -> D -> D)
        return float(n * dims.in_channels * cell * d + embed + text + n * d * cell * dims.out_channels)

    def vae_config(self, space) -> dict[str, Any]:
        return {}  # AutoencoderKLWan's defaults are Wan 2.1's VAE

    def scheduler_config(self, space) -> dict[str, Any]:
        return WAN_SCHEDULER


WAN = WanAdapter()
# Wan 2.1's sampler: UniPC on flow-matching sigmas, shift 3 (the 480p setting).
WAN_SCHEDULER = {"prediction_type": "flow_prediction", "use_flow_sigmas": True, "flow_shift": 3.0}


def _compose_block(block, kwargs, cached, exact):
    """h + g_msa*attn1 + attn2 + g_ff*ffn with each term cached or computed, residuals in float32
    as the stock block keeps them; the norms and modulation feeding a reused term are skipped."""
    hidden_states, temb = kwargs["hidden_states"], kwargs["temb"]
    if temb.ndim == 4:  # per-token timesteps (Wan 2.2 TI2V): the stock forward, cached outputs still served
        return type(block).forward(block, **kwargs)
    shift_msa, scale_msa, gate_msa, c_shift_msa, c_scale_msa, c_gate_msa = (
        block.scale_shift_table + temb.float()
    ).chunk(6, dim=1)
    attn = cached.get("attn1")
    if attn is None:
        norm = modulate(block.norm1(hidden_states.float()), scale_msa, shift_msa, exact).type_as(hidden_states)
        attn = block.attn1(norm, None, None, kwargs["rotary_emb"])
    hidden_states = _residual(hidden_states, attn, gate_msa, exact)
    cross = cached.get("attn2")
    if cross is None:
        norm = block.norm2(hidden_states.float()).type_as(hidden_states)
        cross = block.attn2(norm, kwargs["encoder_hidden_states"], None, None)
    hidden_states = hidden_states + cross
    ff = cached.get("ffn")
    if ff is None:
        norm = modulate(block.norm3(hidden_states.float()), c_scale_msa, c_shift_msa, exact).type_as(hidden_states)
        ff = block.ffn(norm)
    return _residual(hidden_states, ff.float(), c_gate_msa, exact)


def _residual(hidden_states, out, gate, exact):
    """`(h.float() + out * gate).type_as(h)`, the stock block's float32 residual."""
    h = hidden_states.float()
    summed = h + out * gate if exact else torch.addcmul(h, out, gate)
    return summed.type_as(hidden_states)


# ---------------------------------------------------------------------- tiny
def build_tiny_wan(num_blocks: int = 4, seed: int = 0, text_length: int = 16):
    """A Wan 2.1 pipeline with `num_blocks` blocks, hidden size 24, a small 3D VAE (8 px per latent
    cell, 4 frames per latent frame) and a 2-layer umT5, all random."""
    from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
    from transformers import UMT5Config, UMT5EncoderModel

    torch.manual_seed(seed)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=16,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=num_blocks,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    ).eval()
    amplify_blocks(transformer, seed, std=0.5, prefix="blocks.")
    torch.manual_seed(seed + 2)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    ).eval()
    return WanPipeline(
        tokenizer=byte_tokenizer(text_length),
        text_encoder=t5_encoder(seed + 1, cls=UMT5EncoderModel, config_cls=UMT5Config),
        vae=vae,
        transformer=transformer,
        scheduler=UniPCMultistepScheduler(**WAN_SCHEDULER),
    )
