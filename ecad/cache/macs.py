"""Analytic multiply-accumulate counts (MACs) of PixArt and FLUX transformers under a schedule.

Counting by formula instead of by profiling lets search score millions of schedules at any
resolution, batch and text length without running the model. 1 MAC = 2 FLOPs.

Two conventions: `attention_matmuls=True` also counts the QK^T and AV matmuls of attention
(what torch.utils.flop_counter.FlopCounterMode reports for SDPA's math/flash/efficient kernels;
note that in torch 2.14 it does not count the fused CPU kernel, so profile CPU runs under
`sdpa_kernel(SDPBackend.MATH)`); `attention_matmuls=False` counts only Linear/Conv layers,
which is ECAD's convention. Elementwise ops (norms, activations, modulation) count as 0.

`batch` is always the *transformer* batch: PixArt with classifier-free guidance runs 2x the
user batch, see `transformer_batch`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ecad.layouts import Layout, layout_for
from ecad.schedule import Schedule

TIME_PROJ = 256  # sinusoidal timestep / guidance / size projection width feeding TimestepEmbedding


@dataclass(frozen=True)
class TransformerDims:
    """Shapes that determine a transformer's MACs; everything else (weights, heads split) does not."""

    family: str  # "pixart" | "flux"
    hidden: int  # D = heads * head_dim
    num_blocks: int  # PixArt blocks / FLUX double-stream blocks
    num_single_blocks: int = 0  # FLUX single-stream blocks
    ff_inner: int = 0  # feed-forward hidden width (FLUX single blocks: mlp_hidden_dim); 0 means 4 * hidden
    text_dim: int = 4096  # PixArt caption_channels (0 = no caption projection) / FLUX joint_attention_dim
    cross_dim: int = 0  # PixArt cross_attention_dim (input of attn2's to_k/to_v); 0 means hidden
    pooled_dim: int = 0  # FLUX pooled_projection_dim
    patch_size: int = 2
    in_channels: int = 4
    out_channels: int = 8
    guidance_embeds: bool = False  # FLUX-dev embeds the guidance scale
    additional_conditions: bool = False  # PixArt-alpha 1024 px resolution/aspect-ratio embedders
    vae_scale_factor: int = 8  # pixels per latent cell; not in the transformer config
    text_len: int = 120  # default text tokens: PixArt-alpha 120, PixArt-sigma 300, FLUX-dev 512

    def __post_init__(self) -> None:
        # Fill the "same as hidden" defaults so dims built either way compare equal.
        object.__setattr__(self, "ff_inner", self.ff_inner or 4 * self.hidden)
        if self.family == "pixart":
            object.__setattr__(self, "cross_dim", self.cross_dim or self.hidden)

    @classmethod
    def from_config(
        cls, config: Mapping[str, Any], vae_scale_factor: int = 8, text_len: int | None = None
    ) -> "TransformerDims":
        """From a diffusers PixArtTransformer2DModel / FluxTransformer2DModel config dict."""
        c = dict(config)
        hidden = int(c.get("num_attention_heads", 16)) * int(c.get("attention_head_dim", 72))
        common = dict(hidden=hidden, ff_inner=4 * hidden, vae_scale_factor=vae_scale_factor)
        if "joint_attention_dim" in c or "Flux" in str(c.get("_class_name", "")):
            in_ch = int(c.get("in_channels", 64))
            return cls(
                "flux", num_blocks=int(c.get("num_layers", 19)), num_single_blocks=int(c.get("num_single_layers", 38)),
                text_dim=int(c.get("joint_attention_dim", 4096)), pooled_dim=int(c.get("pooled_projection_dim", 768)),
                patch_size=int(c.get("patch_size", 1)), in_channels=in_ch,
                out_channels=int(c.get("out_channels") or in_ch),
                guidance_embeds=bool(c.get("guidance_embeds", False)), text_len=text_len or 512, **common,
            )
        if c.get("activation_fn", "gelu-approximate") not in ("gelu", "gelu-approximate"):
            raise ValueError(f"activation_fn {c['activation_fn']!r}: only GELU feed-forwards are counted")
        in_ch = int(c.get("in_channels", 4))
        extra = c.get("use_additional_conditions")  # diffusers: None means "sample_size == 128"
        return cls(
            "pixart", num_blocks=int(c.get("num_layers", 28)), text_dim=int(c.get("caption_channels") or 0),
            cross_dim=int(c.get("cross_attention_dim") or hidden), patch_size=int(c.get("patch_size", 2)),
            in_channels=in_ch, out_channels=int(c.get("out_channels") or in_ch),
            additional_conditions=bool(extra) if extra is not None else int(c.get("sample_size", 128)) == 128,
            text_len=text_len or 120, **common,
        )

    @classmethod
    def from_transformer(cls, module: Any, vae_scale_factor: int = 8, text_len: int | None = None) -> "TransformerDims":
        """From a loaded (or meta-device) diffusers transformer; pass the pipeline's vae_scale_factor."""
        config = dict(module.config)
        config.setdefault("_class_name", type(module).__name__)
        return cls.from_config(config, vae_scale_factor, text_len)


# PixArt-XL-2 (alpha, 256/512 px checkpoints: sample_size 32/64, no size embedders), 16 heads x 72.
PIXART_ALPHA_DIMS = TransformerDims("pixart", 1152, 28, text_dim=4096, cross_dim=1152, patch_size=2, in_channels=4,
                                    out_channels=8, text_len=120)
PIXART_SIGMA_DIMS = TransformerDims("pixart", 1152, 28, text_dim=4096, cross_dim=1152, patch_size=2, in_channels=4,
                                    out_channels=8, text_len=300)
# FLUX.1-dev: 24 heads x 128, 19 double + 38 single blocks, 2x2-packed 16-channel latents.
FLUX_DEV_DIMS = TransformerDims("flux", 3072, 19, 38, text_dim=4096, pooled_dim=768, patch_size=1, in_channels=64,
                                out_channels=64, guidance_embeds=True, text_len=512)


def transformer_batch(family: str, batch: int = 1, guidance_scale: float | None = None) -> int:
    """Transformer batch for a user batch: PixArt doubles it for CFG (guidance_scale > 1); FLUX-dev embeds guidance."""
    return 2 * batch if family == "pixart" and (guidance_scale is None or guidance_scale > 1.0) else batch


def latent_tokens(dims: TransformerDims, height: int, width: int) -> int:
    """Image tokens: PixArt patchifies the latent; FLUX packs 2x2 latent cells into one token."""
    cell = dims.vae_scale_factor * (2 if dims.family == "flux" else 1) * dims.patch_size
    return (height // cell) * (width // cell)


def _family(dims: TransformerDims, family: str | None) -> str:
    if family is not None and family != dims.family:
        raise ValueError(f"family {family!r} does not match dims.family {dims.family!r}")
    return dims.family


def component_macs(dims: TransformerDims, family: str | None, height: int, width: int, batch: int = 1,
                   text_len: int | None = None, attention_matmuls: bool = True) -> dict[str, float]:
    """MACs of ONE block's cacheable components, keyed by ECAD component name (both FLUX groups)."""
    family = _family(dims, family)
    n, l, d, f = latent_tokens(dims, height, width), text_len or dims.text_len, dims.hidden, dims.ff_inner
    a = 1.0 if attention_matmuls else 0.0
    if family == "pixart":
        out = {
            "attn1": 4 * n * d * d + a * 2 * n * n * d,  # q, k, v, out + QK^T, AV
            "attn2": 2 * n * d * d + 2 * l * dims.cross_dim * d + a * 2 * n * l * d,  # q, out on image; k, v on text
            "ff": 2 * n * d * f,
        }
    else:
        s = n + l  # joint sequence
        out = {
            "full_attn": 4 * s * d * d + a * 2 * s * s * d,  # image q,k,v,out + context q,k,v,add_out
            "full_ff": 2 * n * d * f,
            "full_ff_context": 2 * l * d * f,
            "single_attn": 3 * s * d * d + a * 2 * s * s * d,  # pre_only: no output projection
            "single_proj_mlp": s * d * f,
            "single_proj_out": s * (d + f) * d,
        }
    return {k: float(v * batch) for k, v in out.items()}


def fixed_macs(dims: TransformerDims, family: str | None, height: int, width: int, batch: int = 1,
               text_len: int | None = None) -> float:
    """MACs run every step whatever the schedule: embedders, text projection, adaLN linears, output head."""
    family = _family(dims, family)
    n, l, d = latent_tokens(dims, height, width), text_len or dims.text_len, dims.hidden
    p2 = dims.patch_size**2
    embed = TIME_PROJ * d + d * d  # timestep TimestepEmbedding
    head = n * d * p2 * dims.out_channels  # proj_out
    if family == "pixart":
        s = d // 3
        size = 3 * (TIME_PROJ * s + s * s) if dims.additional_conditions else 0  # 2 resolution rows + 1 aspect row
        caption = l * (dims.text_dim * d + d * d) if dims.text_dim else 0
        total = n * dims.in_channels * p2 * d + embed + size + 6 * d * d + caption + head  # adaln_single: D -> 6D
    else:
        embed += (TIME_PROJ * d + d * d if dims.guidance_embeds else 0) + dims.pooled_dim * d + d * d
        modulation = dims.num_blocks * 2 * 6 * d * d + dims.num_single_blocks * 3 * d * d + 2 * d * d  # + norm_out
        total = n * dims.in_channels * d + embed + l * dims.text_dim * d + modulation + head
    return float(total * batch)


def _block_costs(layout: Layout, comp: dict[str, float]) -> np.ndarray:
    """[blocks, components] cost matrix in the layout's order."""
    return np.array([[comp[c] for c in group.components] for group, _ in layout.blocks()], dtype=np.float64)


def full_macs(dims: TransformerDims, family: str | None, height: int, width: int, batch: int = 1,
              text_len: int | None = None, attention_matmuls: bool = True, num_steps: int = 1) -> float:
    """MACs of `num_steps` uncached steps: the baseline every schedule is compared against."""
    comp = component_macs(dims, family, height, width, batch, text_len, attention_matmuls)
    blocks = _block_costs(layout_for(dims.family, dims.num_blocks, dims.num_single_blocks), comp).sum()
    return num_steps * (float(blocks) + fixed_macs(dims, family, height, width, batch, text_len))


@dataclass
class MacsReport:
    """What a schedule computes, in MACs; `per_step` includes the fixed part of each step."""

    steps: list[int]  # base-grid indices of the executed steps
    per_step: list[float]
    per_component: dict[str, float]  # summed over executed steps and blocks
    fixed: float  # fixed MACs summed over executed steps
    total: float
    full: float  # no caching, all base steps
    attention_matmuls: bool = True

    @property
    def speedup_bound(self) -> float:
        """Upper bound on speed-up if time were proportional to MACs."""
        return self.full / self.total

    def to_ecad_metrics(self) -> dict[str, Any]:
        """ECAD's metrics dict shape (flops = 2 x MACs)."""
        return {
            "by_inference_step": {f"{s:03d}": {"flops": 2 * m, "macs": m} for s, m in zip(self.steps, self.per_step)},
            "total_macs": self.total,
            "total_macs_T": self.total / 1e12,
        }


def schedule_macs(schedule: Schedule, dims: TransformerDims, height: int | None = None, width: int | None = None,
                  batch: int = 1, text_len: int | None = None, attention_matmuls: bool = True) -> MacsReport:
    """MACs of running `schedule` (an ecad Schedule): fixed part + computed components of executed steps."""
    layout = schedule.layout
    if layout.family != dims.family or layout.groups[0].num_blocks != dims.num_blocks or (
        dims.family == "flux" and layout.groups[1].num_blocks != dims.num_single_blocks
    ):
        raise ValueError(f"schedule layout {layout.describe()} does not match dims {dims}")
    height, width = height or schedule.height, width or schedule.width
    if not height or not width:
        raise ValueError("height/width: the schedule carries none; pass them explicitly")
    comp = component_macs(dims, None, height, width, batch, text_len, attention_matmuls)
    cost = _block_costs(layout, comp)
    grid = schedule.executed_grid().astype(np.float64)  # [steps, blocks, components]
    fixed = fixed_macs(dims, None, height, width, batch, text_len)
    per_step = [fixed + float(x) for x in (grid * cost).sum(axis=(1, 2))]
    per_component: dict[str, float] = {}
    for b, (group, _) in enumerate(layout.blocks()):
        for j, c in enumerate(group.components):
            per_component[c] = per_component.get(c, 0.0) + float(grid[:, b, j].sum() * cost[b, j])
    full = full_macs(dims, None, height, width, batch, text_len, attention_matmuls, schedule.num_steps)
    return MacsReport(schedule.executed_steps, per_step, per_component, fixed * len(per_step), sum(per_step), full,
                      attention_matmuls)


def dims_for_space(space: Any) -> TransformerDims:
    """Dimensions of a search space's transformer without loading weights: presets for the
    published models, the config itself for the offline tiny ones."""
    if space.is_tiny:
        from ecad.models.tiny import build_tiny

        pipe = build_tiny(space.model)
        return TransformerDims.from_transformer(pipe.transformer, vae_scale_factor=pipe.vae_scale_factor,
                                                text_len=space.text_length)
    if space.family == "flux":
        preset = FLUX_DEV_DIMS
    else:
        preset = PIXART_SIGMA_DIMS if space.variant == "sigma" else PIXART_ALPHA_DIMS
        preset = dataclasses.replace(preset, additional_conditions=space.height >= 1024 and space.variant == "alpha")
    return dataclasses.replace(preset, text_len=space.text_length)
