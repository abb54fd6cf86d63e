"""FLUX.1: double-stream (MM-DiT) blocks, then single-stream blocks; six component kinds.

FLUX.1-dev is guidance-distilled: the guidance scale is embedded, one transformer call per step.
With `true_cfg_scale > 1` and a negative prompt, FluxPipeline calls the transformer twice per
step (cond, then uncond).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ecad.layouts import BlockGroup, Layout
from ecad.models.base import (
    BlockKind,
    BlockPath,
    FamilyAdapter,
    StepSelection,
    Tokens,
    TransformerDims,
    UnsupportedModelError,
)
from ecad.models.common import TIME_PROJ, adaln_chunks, clip_fp16, gated_add
from ecad.models.tiny import TINY_PREFIX, amplify_blocks, byte_tokenizer, clip_text_encoder, kl_vae, t5_encoder

DOUBLE_COMPONENTS = ("full_attn", "full_ff", "full_ff_context")
# FLUX.1's VAE: 8x downsampling, 16 latent channels (packed 2x2 into 64-channel tokens).
FLUX_VAE_CONFIG = dict(
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    latent_channels=16,
    use_quant_conv=False,
    use_post_quant_conv=False,
    shift_factor=0.1159,
    scaling_factor=0.3611,
)
SINGLE_COMPONENTS = ("single_attn", "single_proj_mlp", "single_proj_out")


@dataclass(frozen=True, kw_only=True)
class FluxDims(TransformerDims):
    family: str = "flux"
    num_blocks: int = 19  # double-stream blocks
    num_single_blocks: int = 38
    ff_inner: int = 0  # feed-forward hidden width (single blocks: mlp_hidden_dim); 0 means 4 * hidden
    text_dim: int = 4096  # joint_attention_dim
    pooled_dim: int = 768
    patch_size: int = 1
    in_channels: int = 64
    out_channels: int = 64
    guidance_embeds: bool = False  # FLUX-dev embeds the guidance scale
    text_len: int = 512

    def __post_init__(self) -> None:
        object.__setattr__(self, "ff_inner", self.ff_inner or 4 * self.hidden)


# FLUX.1-dev: 24 heads x 128, 19 double + 38 single blocks, 2x2-packed 16-channel latents.
FLUX_DEV_DIMS = FluxDims(
    hidden=3072, num_blocks=19, num_single_blocks=38, text_dim=4096, pooled_dim=768, guidance_embeds=True, text_len=512
)


def flux_layout(num_double: int = 19, num_single: int = 38) -> Layout:
    return FLUX.layout([num_double, num_single])


class FluxAdapter(FamilyAdapter):
    family = "flux"
    display_name = "FLUX.1"
    block_kinds = (
        BlockKind("transformer_blocks", DOUBLE_COMPONENTS, "double"),
        BlockKind("single_transformer_blocks", SINGLE_COMPONENTS, "single", key_prefix="single_"),
    )
    pipeline_classes = {None: "FluxPipeline"}
    transformer_classes = ("FluxTransformer2DModel",)
    roles = {
        "full_attn": "attention",
        "full_ff": "mlp",
        "full_ff_context": "text_mlp",
        "single_attn": "attention",
        "single_proj_mlp": "mlp",
        "single_proj_out": "mlp",
    }
    ecad_pipeline_names = {None: "flux"}
    ecad_count_keys = ("num_blocks", "num_single_blocks")
    image_output_index = 1  # both block kinds return (encoder_hidden_states, hidden_states)

    benchmark_space = "flux-dev-256"

    @property
    def tiny_models(self):
        return {f"{TINY_PREFIX}flux": build_tiny_flux}

    def build_tiny(self, num_blocks: int | None = None):
        n = num_blocks or 4
        return build_tiny_flux(num_double=n // 2, num_single=n - n // 2)

    def vae_config(self, space) -> dict[str, Any]:
        return FLUX_VAE_CONFIG

    def random_prompt_kwargs(self, pipe, batch: int, text_len: int, generator) -> dict[str, Any]:
        config = pipe.transformer.config
        return {
            "prompt_embeds": torch.randn(batch, text_len, config.joint_attention_dim, generator=generator),
            "pooled_prompt_embeds": torch.randn(batch, config.pooled_projection_dim, generator=generator),
        }

    def component_modules(self, block: nn.Module, group: BlockGroup) -> dict[str, nn.Module]:
        if group.name == "transformer_blocks":
            return {"full_attn": block.attn, "full_ff": block.ff, "full_ff_context": block.ff_context}
        return {"single_attn": block.attn, "single_proj_mlp": block.proj_mlp, "single_proj_out": block.proj_out}

    # ------------------------------------------------------------ block path
    def block_path(self, block: nn.Module, group: BlockGroup) -> BlockPath:
        """Fully reused blocks only: FLUX's partial reuse keeps the stock forward."""
        return BlockPath(_reuse_double if group.name == "transformer_blocks" else _reuse_single, partial=False)

    # ------------------------------------------------------------ pipeline calls
    def transformer_batch(self, batch: int, guidance_scale: float | None) -> int:
        """FLUX.1-dev is guidance-distilled: the scale is embedded, no unconditional rows."""
        return batch

    def select_steps(self, pipe, selected: list[int], base_steps: int) -> StepSelection:
        """FluxPipeline accepts `sigmas=`: its default grid is linspace(1, 1/N, N); take the chosen ones."""
        if getattr(pipe.scheduler.config, "use_flow_sigmas", False):
            raise UnsupportedModelError(
                "this schedule selects timesteps, but the pipeline's scheduler has "
                "use_flow_sigmas=True, under which FluxPipeline ignores sigmas=; use a "
                "scheduler without use_flow_sigmas"
            )
        grid = np.linspace(1.0, 1 / base_steps, base_steps)
        return StepSelection({"sigmas": [float(grid[i]) for i in selected], "num_inference_steps": len(selected)})

    def encode_prompts(self, pipe, prompts, call, device):
        pe, pooled, _ = pipe.encode_prompt(
            prompt=prompts, prompt_2=None, device=device, max_sequence_length=call["max_sequence_length"]
        )
        return {"prompt_embeds": pe, "pooled_prompt_embeds": pooled}

    # ------------------------------------------------------------ MACs
    def dims_from_config(
        self, config: Mapping[str, Any], vae_scale_factor: int = 8, text_len: int | None = None
    ) -> FluxDims:
        c = dict(config)
        hidden = int(c.get("num_attention_heads", 24)) * int(c.get("attention_head_dim", 128))
        in_ch = int(c.get("in_channels", 64))
        return FluxDims(
            hidden=hidden,
            num_blocks=int(c.get("num_layers", 19)),
            num_single_blocks=int(c.get("num_single_layers", 38)),
            ff_inner=4 * hidden,
            text_dim=int(c.get("joint_attention_dim", 4096)),
            pooled_dim=int(c.get("pooled_projection_dim", 768)),
            patch_size=int(c.get("patch_size", 1)),
            in_channels=in_ch,
            out_channels=int(c.get("out_channels") or in_ch),
            guidance_embeds=bool(c.get("guidance_embeds", False)),
            vae_scale_factor=vae_scale_factor,
            text_len=text_len or 512,
        )

    def preset_config(self, space) -> dict[str, Any]:
        return {"guidance_embeds": True}  # FLUX.1-dev; the class defaults are its sizes

    def layout_of_dims(self, dims: FluxDims) -> Layout:
        return self.layout([dims.num_blocks, dims.num_single_blocks])

    def tokens(self, dims: FluxDims, height: int, width: int, text_len: int | None = None) -> Tokens:
        cell = dims.vae_scale_factor * 2 * dims.patch_size  # 2x2 latent cells packed into one token
        return Tokens((height // cell) * (width // cell), text_len or dims.text_len)

    def group_macs(
        self, dims: FluxDims, group: BlockGroup, tokens: Tokens, attention_matmuls: bool
    ) -> dict[str, float]:
        n, l, d, f = tokens.image, tokens.text, dims.hidden, dims.ff_inner
        a = 1.0 if attention_matmuls else 0.0
        s = n + l  # joint sequence
        if group.name == "transformer_blocks":
            return {
                "full_attn": 4 * s * d * d + a * 2 * s * s * d,  # image q,k,v,out + context q,k,v,add_out
                "full_ff": 2 * n * d * f,
                "full_ff_context": 2 * l * d * f,
            }
        return {
            "single_attn": 3 * s * d * d + a * 2 * s * s * d,  # pre_only: no output projection
            "single_proj_mlp": s * d * f,
            "single_proj_out": s * (d + f) * d,
        }

    def output_elements(self, dims: FluxDims, group: BlockGroup, tokens: Tokens) -> dict[str, float]:
        n, l, d, f = tokens.image, tokens.text, dims.hidden, dims.ff_inner
        if group.name == "transformer_blocks":  # joint attention returns (image, text) outputs
            return {"full_attn": float((n + l) * d), "full_ff": float(n * d), "full_ff_context": float(l * d)}
        s = n + l
        return {"single_attn": float(s * d), "single_proj_mlp": float(s * f), "single_proj_out": float(s * d)}

    def fixed_macs(self, dims: FluxDims, tokens: Tokens) -> float:
        n, l, d, p2 = tokens.image, tokens.text, dims.hidden, dims.patch_size**2
        embed = (
            TIME_PROJ * d + d * d + (TIME_PROJ * d + d * d if dims.guidance_embeds else 0) + dims.pooled_dim * d + d * d
        )
        modulation = dims.num_blocks * 2 * 6 * d * d + dims.num_single_blocks * 3 * d * d + 2 * d * d  # + norm_out
        head = n * d * p2 * dims.out_channels
        return float(n * dims.in_channels * d + embed + l * dims.text_dim * d + modulation + head)

    def mag_ratios(self, steps: int) -> list[float] | None:
        if steps != 28:
            return None
        from diffusers.hooks.mag_cache import FLUX_MAG_RATIOS

        return FLUX_MAG_RATIOS.tolist()

    def ecad_claims(self, cache_schedule) -> bool:
        sched = cache_schedule.get("schedule")
        return "num_single_blocks" in cache_schedule or (
            isinstance(sched, dict)
            and any(isinstance(v, dict) and any(str(k).startswith("single_") for k in v) for v in sched.values())
        )


FLUX = FluxAdapter()


def _reuse_double(block, kwargs, cached, exact):
    """Fully reused double block: residual adds of re-gated cached outputs (`exact`: in the block's op order)."""
    hidden_states = kwargs["hidden_states"]
    encoder_hidden_states = kwargs["encoder_hidden_states"]
    temb = kwargs["temb"]
    gate_msa, gate_mlp = (g.unsqueeze(1) for g in adaln_chunks(block.norm1, temb, 6, (2, 5), exact))
    c_gate_msa, c_gate_mlp = (g.unsqueeze(1) for g in adaln_chunks(block.norm1_context, temb, 6, (2, 5), exact))
    attn_out = cached["full_attn"]
    attn_output, context_attn_output = attn_out[0], attn_out[1]
    hidden_states = gated_add(hidden_states, gate_msa, attn_output, exact)
    hidden_states = gated_add(hidden_states, gate_mlp, cached["full_ff"], exact)
    if len(attn_out) == 3:
        hidden_states = hidden_states + attn_out[2]
    encoder_hidden_states = gated_add(encoder_hidden_states, c_gate_msa, context_attn_output, exact)
    encoder_hidden_states = gated_add(encoder_hidden_states, c_gate_mlp, cached["full_ff_context"], exact)
    return clip_fp16(encoder_hidden_states), hidden_states


def _reuse_single(block, kwargs, cached, exact):
    """Fully reused single block: only the gated proj_out output is added to the residual. The
    stock block concatenates text and image tokens and splits them again; adding to each part
    gives the same values per element without the copy."""
    hidden_states = kwargs["hidden_states"]
    encoder_hidden_states = kwargs["encoder_hidden_states"]
    (gate,) = adaln_chunks(block.norm, kwargs["temb"], 3, (2,), exact)
    gate = gate.unsqueeze(1)
    out = cached["single_proj_out"]
    text_seq_len = encoder_hidden_states.shape[1]
    parts = [
        clip_fp16(gated_add(residual, gate, part, exact))
        for residual, part in ((encoder_hidden_states, out[:, :text_seq_len]), (hidden_states, out[:, text_seq_len:]))
    ]
    return parts[0], parts[1]


# ---------------------------------------------------------------------- tiny
def build_tiny_flux(num_double: int = 2, num_single: int = 2, seed: int = 0, text_length: int = 16):
    """A FLUX pipeline (guidance-distilled like FLUX.1-dev) with 2+2 blocks, hidden size 16."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel

    torch.manual_seed(seed)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=num_double,
        num_single_layers=num_single,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=16,
        axes_dims_rope=(2, 2, 4),
        guidance_embeds=True,
    ).eval()
    amplify_blocks(transformer, seed, std=0.5)
    clip = clip_text_encoder(seed + 3)
    vae = kl_vae(
        seed + 2, 2, 4, shift_factor=0.0609, scaling_factor=1.5035, use_quant_conv=False, use_post_quant_conv=False
    )
    return FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip,
        tokenizer=byte_tokenizer(77),
        text_encoder_2=t5_encoder(seed + 1),
        tokenizer_2=byte_tokenizer(text_length),
        transformer=transformer,
    )
