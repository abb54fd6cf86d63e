"""Stable Diffusion 3 / 3.5: MM-DiT `JointTransformerBlock`s.

Each block runs a joint attention over image and text tokens ("attn"), an image MLP ("ff") and a
text-stream MLP ("ff_context", FLUX's full_ff_context). SD3.5-medium's first blocks add a second,
image-only self-attention ("attn2", MMDiT-X); the last block only reads the text (context_pre_only:
no text MLP, no text output). So an SD3 layout has up to three block groups over one module list:
dual-attention blocks (4 components), joint blocks (3), the final block (2); the grid pads the
shorter ones. Components are ordered so one index means one kind in every group.

CFG runs as a doubled batch (one transformer call per step). Every block has its own adaLN
projection of the timestep embedding, so runs of fully reused steps are not folded.
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
)
from ecad.models.common import TIME_PROJ, adaln_chunks, gated_add, modulate
from ecad.models.tiny import TINY_PREFIX, amplify_blocks, byte_tokenizer, clip_text_encoder, kl_vae, t5_encoder

DUAL = BlockKind("transformer_blocks", ("attn", "ff", "ff_context", "attn2"), "dual", optional=True)
JOINT = BlockKind("transformer_blocks", ("attn", "ff", "ff_context"), "joint", optional=True)
FINAL = BlockKind("transformer_blocks", ("attn", "ff"), "final")
# SD3's VAE: 8x downsampling, 16 latent channels.
SD3_VAE_CONFIG = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=16,
    use_quant_conv=False,
    use_post_quant_conv=False,
    shift_factor=0.0609,
    scaling_factor=1.5305,
)


@dataclass(frozen=True, kw_only=True)
class SD3Dims(TransformerDims):
    family: str = "sd3"
    num_blocks: int = 24
    num_dual: int = 0  # leading blocks with a second (image-only) attention
    joint_dim: int = 4096  # text embedding width (T5-XXL; CLIP features are zero-padded to it)
    caption_dim: int = 0  # context_embedder's output; 0 means hidden
    pooled_dim: int = 2048  # CLIP-L + CLIP-G pooled features
    in_channels: int = 16
    out_channels: int = 16
    clip_len: int = 77  # CLIP tokens ahead of the T5 tokens in the joint sequence
    text_len: int = 256  # T5 tokens (max_sequence_length)

    def __post_init__(self) -> None:
        object.__setattr__(self, "caption_dim", self.caption_dim or self.hidden)


class SD3Adapter(FamilyAdapter):
    family = "sd3"
    display_name = "SD3"
    block_kinds = (DUAL, JOINT, FINAL)
    pipeline_classes = {None: "StableDiffusion3Pipeline"}
    transformer_classes = ("SD3Transformer2DModel",)
    image_output_index = 1  # joint blocks return (encoder_hidden_states, hidden_states); the last one (None, ...)
    roles = {"attn": "attention", "attn2": "attention", "ff": "mlp", "ff_context": "text_mlp"}
    cfg_batched_inputs = FamilyAdapter.cfg_batched_inputs + ("pooled_projections",)
    benchmark_space = "sd3.5-medium-1024"

    @property
    def tiny_models(self):
        return {f"{TINY_PREFIX}sd3": build_tiny_sd3}

    def build_tiny(self, num_blocks: int | None = None):
        return build_tiny_sd3(num_blocks=num_blocks or 4)

    def block_kind_of(self, block: nn.Module, list_name: str) -> BlockKind:
        dual, pre = bool(getattr(block, "use_dual_attention", False)), bool(block.context_pre_only)
        if dual and pre:
            raise UnsupportedModelError(
                "an SD3 block with dual attention that is also context_pre_only; ecad's SD3 layouts have no such block"
            )
        return DUAL if dual else FINAL if pre else JOINT

    # ------------------------------------------------------------ block path
    def block_path(self, block: nn.Module, group: BlockGroup) -> BlockPath | None:
        if getattr(block, "_chunk_size", None) is not None:
            return None
        return BlockPath(_compose_block, partial=True)

    # ------------------------------------------------------------ pipeline calls
    def check_call(self, pipe, kwargs: Mapping[str, Any]) -> None:
        if kwargs.get("skip_guidance_layers"):
            raise UnsupportedModelError(
                "skip_guidance_layers adds transformer calls to some steps, which a schedule "
                "made for one call per step cannot follow; leave it out"
            )

    def encode_prompts(self, pipe, prompts, call, device):
        pe, ne, pooled, neg_pooled = pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=device,
            do_classifier_free_guidance=True,
            negative_prompt=call.get("negative_prompt"),
            clip_skip=call.get("clip_skip"),
            max_sequence_length=call["max_sequence_length"],
        )
        return {
            "prompt_embeds": pe,
            "negative_prompt_embeds": ne,
            "pooled_prompt_embeds": pooled,
            "negative_pooled_prompt_embeds": neg_pooled,
        }

    def random_prompt_kwargs(self, pipe, batch: int, text_len: int, generator) -> dict[str, Any]:
        config = pipe.transformer.config
        length = getattr(pipe, "tokenizer_max_length", 77) + text_len
        return {
            "prompt_embeds": torch.randn(batch, length, config.joint_attention_dim, generator=generator),
            "negative_prompt_embeds": torch.randn(batch, length, config.joint_attention_dim, generator=generator),
            "pooled_prompt_embeds": torch.randn(batch, config.pooled_projection_dim, generator=generator),
            "negative_pooled_prompt_embeds": torch.randn(batch, config.pooled_projection_dim, generator=generator),
        }

    # ------------------------------------------------------------ MACs
    def dims_from_config(
        self, config: Mapping[str, Any], vae_scale_factor: int = 8, text_len: int | None = None, clip_len: int = 77
    ) -> SD3Dims:
        c = dict(config)
        dual = tuple(int(i) for i in (c.get("dual_attention_layers") or ()))
        if dual != tuple(range(len(dual))):
            raise UnsupportedModelError(
                f"SD3 dual-attention layers {list(dual)} are not the leading blocks; ecad's SD3 layouts have them first"
            )
        hidden = int(c.get("num_attention_heads", 18)) * int(c.get("attention_head_dim", 64))
        in_ch = int(c.get("in_channels", 16))
        return SD3Dims(
            hidden=hidden,
            num_blocks=int(c.get("num_layers", 18)),
            num_dual=len(dual),
            joint_dim=int(c.get("joint_attention_dim", 4096)),
            caption_dim=int(c.get("caption_projection_dim") or hidden),
            pooled_dim=int(c.get("pooled_projection_dim", 2048)),
            patch_size=int(c.get("patch_size", 2)),
            in_channels=in_ch,
            out_channels=int(c.get("out_channels") or in_ch),
            vae_scale_factor=vae_scale_factor,
            clip_len=clip_len,
            text_len=text_len or 256,
        )

    def preset_config(self, space) -> dict[str, Any]:
        """stable-diffusion-3.5-medium: 24 blocks (the first 13 with dual attention), 24 heads x 64."""
        return {
            "num_layers": 24,
            "num_attention_heads": 24,
            "attention_head_dim": 64,
            "caption_projection_dim": 1536,
            "pos_embed_max_size": 384,
            "dual_attention_layers": tuple(range(13)),
            "qk_norm": "rms_norm",
        }

    def dims_for_pipeline(self, pipe, space) -> SD3Dims:
        return self.dims_from_config(
            dict(pipe.transformer.config), pipe.vae_scale_factor, space.text_length, clip_len=pipe.tokenizer_max_length
        )

    def layout_of_dims(self, dims: SD3Dims) -> Layout:
        return self.layout([dims.num_dual, dims.num_blocks - dims.num_dual - 1, 1])

    def tokens(self, dims: SD3Dims, height: int, width: int, text_len: int | None = None) -> Tokens:
        cell = dims.vae_scale_factor * dims.patch_size
        return Tokens((height // cell) * (width // cell), dims.clip_len + (text_len or dims.text_len))

    def group_macs(self, dims: SD3Dims, group: BlockGroup, tokens: Tokens, attention_matmuls: bool) -> dict[str, float]:
        n, l, d = tokens.image, tokens.text, dims.hidden
        s, a, f = n + l, 1.0 if attention_matmuls else 0.0, 4 * dims.hidden
        text_out = 0 if group.components == FINAL.components else l * d * d  # the last block has no to_add_out
        macs = {
            "attn": 4 * n * d * d + 3 * l * d * d + text_out + a * 2 * s * s * d,  # image q,k,v,out; text q,k,v(,out)
            "attn2": 4 * n * d * d + a * 2 * n * n * d,  # image-only self-attention
            "ff": 2 * n * d * f,
            "ff_context": 2 * l * d * f,
        }
        return {c: float(macs[c]) for c in group.components}

    def output_elements(self, dims: SD3Dims, group: BlockGroup, tokens: Tokens) -> dict[str, float]:
        n, l, d = tokens.image, tokens.text, dims.hidden
        text = 0 if group.components == FINAL.components else l * d  # the last block returns no text stream
        sizes = {"attn": n * d + text, "attn2": n * d, "ff": n * d, "ff_context": l * d}
        return {c: float(sizes[c]) for c in group.components}

    def fixed_macs(self, dims: SD3Dims, tokens: Tokens) -> float:
        n, l, d, p2 = tokens.image, tokens.text, dims.hidden, dims.patch_size**2
        embed = TIME_PROJ * d + d * d + dims.pooled_dim * d + d * d  # timestep + pooled text embedders
        joint = dims.num_blocks - dims.num_dual - 1
        modulation = (
            dims.num_dual * (9 + 6) * d * d + joint * (6 + 6) * d * d + (6 + 2) * d * d
        )  # norm1 + norm1_context
        head = 2 * d * d + n * d * p2 * dims.out_channels  # norm_out, proj_out
        return float(n * dims.in_channels * p2 * d + embed + l * dims.joint_dim * dims.caption_dim + modulation + head)

    def vae_config(self, space) -> dict[str, Any]:
        return SD3_VAE_CONFIG

    def scheduler_config(self, space) -> dict[str, Any]:
        return {"shift": 3.0}


SD3 = SD3Adapter()


def _compose_block(block, kwargs, cached, exact):
    """A joint block with each component cached or computed. The adaLN modulation is read only as
    far as the computed components need it (gates alone when only reused outputs are re-gated);
    `exact` keeps the stock block's op order."""
    hidden_states, encoder_hidden_states, temb = (
        kwargs["hidden_states"],
        kwargs["encoder_hidden_states"],
        kwargs["temb"],
    )
    attn_kwargs = kwargs.get("joint_attention_kwargs") or {}
    dual, pre = block.use_dual_attention, block.context_pre_only
    need_attn, need_attn2, need_ff = "attn" not in cached, dual and "attn2" not in cached, "ff" not in cached

    if need_attn or need_attn2:  # the norm feeds an attention: the stock modulation, norms included
        out = block.norm1(hidden_states, emb=temb)
        norm_hidden, gate_msa, shift_mlp, scale_mlp, gate_mlp = out[:5]
        norm_hidden2, gate_msa2 = out[5:] if dual else (None, None)
    else:
        which = (2, 5) + ((3, 4) if need_ff else ()) + ((8,) if dual else ())
        got = dict(zip(which, adaln_chunks(block.norm1, temb, 9 if dual else 6, which, exact)))
        gate_msa, gate_mlp, shift_mlp, scale_mlp, gate_msa2 = got[2], got[5], got.get(3), got.get(4), got.get(8)

    if pre:
        norm_context = block.norm1_context(encoder_hidden_states, temb) if need_attn else None
    else:
        need_ffc = "ff_context" not in cached
        if need_attn:
            norm_context, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = block.norm1_context(
                encoder_hidden_states, emb=temb
            )
        else:
            which = (2, 5) + ((3, 4) if need_ffc else ())
            got = dict(zip(which, adaln_chunks(block.norm1_context, temb, 6, which, exact)))
            c_gate_msa, c_gate_mlp, c_shift_mlp, c_scale_mlp = got[2], got[5], got.get(3), got.get(4)

    if need_attn:
        attn_output, context_attn_output = block.attn(
            hidden_states=norm_hidden, encoder_hidden_states=norm_context, **attn_kwargs
        )
    else:
        attn_output, context_attn_output = cached["attn"]
    hidden_states = gated_add(hidden_states, gate_msa.unsqueeze(1), attn_output, exact)
    if dual:
        attn2 = block.attn2(hidden_states=norm_hidden2, **attn_kwargs) if need_attn2 else cached["attn2"]
        hidden_states = gated_add(hidden_states, gate_msa2.unsqueeze(1), attn2, exact)
    if need_ff:
        ff = block.ff(modulate(block.norm2(hidden_states), scale_mlp[:, None], shift_mlp[:, None], exact))
    else:
        ff = cached["ff"]
    hidden_states = gated_add(hidden_states, gate_mlp.unsqueeze(1), ff, exact)

    if pre:
        return None, hidden_states
    encoder_hidden_states = gated_add(encoder_hidden_states, c_gate_msa.unsqueeze(1), context_attn_output, exact)
    if need_ffc:
        norm = modulate(block.norm2_context(encoder_hidden_states), c_scale_mlp[:, None], c_shift_mlp[:, None], exact)
        ff_context = block.ff_context(norm)
    else:
        ff_context = cached["ff_context"]
    return gated_add(encoder_hidden_states, c_gate_mlp.unsqueeze(1), ff_context, exact), hidden_states


# ---------------------------------------------------------------------- tiny
def build_tiny_sd3(num_blocks: int = 4, seed: int = 0, text_length: int = 16):
    """An SD3.5-style pipeline with `num_blocks` blocks (the first with dual attention, the last
    context-only), hidden size 16, two tiny CLIPs and a tiny T5, all random."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    torch.manual_seed(seed)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        num_layers=num_blocks,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        caption_projection_dim=16,
        pooled_projection_dim=16,
        out_channels=16,
        pos_embed_max_size=16,
        dual_attention_layers=(0,),
        qk_norm="rms_norm",
    ).eval()
    amplify_blocks(transformer, seed, std=0.5)

    vae = kl_vae(
        seed + 2, 2, 16, shift_factor=0.0609, scaling_factor=1.5305, use_quant_conv=False, use_post_quant_conv=False
    )
    return StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(**SD3.scheduler_config(None)),
        vae=vae,
        text_encoder=clip_text_encoder(seed + 3, 8, with_projection=True),
        tokenizer=byte_tokenizer(16),
        text_encoder_2=clip_text_encoder(seed + 4, 8, with_projection=True),
        tokenizer_2=byte_tokenizer(16),
        text_encoder_3=t5_encoder(seed + 1),
        tokenizer_3=byte_tokenizer(text_length),
    )
