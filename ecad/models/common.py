"""Arithmetic the block paths of several families share: adaLN modulation and gated residuals.

Each function has two forms: `exact` reproduces the stock block's op order (bit-identical
results), the default fuses the multiply and the add into one kernel (same maths, rounding only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TIME_PROJ = 256  # sinusoidal timestep / guidance / size projection width feeding TimestepEmbedding


def modulate(norm: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, exact: bool) -> torch.Tensor:
    """`norm * (1 + scale) + shift`, the adaLN modulation (scale and shift already broadcastable)."""
    return norm * (1 + scale) + shift if exact else torch.addcmul(shift, norm, 1 + scale)


def gated_add(hidden_states: torch.Tensor, gate: torch.Tensor, out: torch.Tensor, exact: bool) -> torch.Tensor:
    """The residual `h + gate * out` (two kernels), or one fused multiply-add; gate broadcastable."""
    return hidden_states + gate * out if exact else torch.addcmul(hidden_states, gate, out)


def adaln_chunks(
    norm: nn.Module, temb: torch.Tensor, n: int, which: tuple[int, ...], exact: bool
) -> list[torch.Tensor]:
    """Chunks `which` (of `n`) of an adaLN-Zero modulation `linear(silu(temb))`, without the norm
    of the activations. Fast mode reads only those rows of a plain Linear's weight: at batch 1
    these GEMVs are weight reads, and a fully reused block needs only its gates."""
    x = norm.silu(temb)
    linear = norm.linear
    if exact or type(linear) is not nn.Linear:  # LoRA/quantised wrappers: through the module
        chunks = linear(x).chunk(n, dim=1)
        return [chunks[i] for i in which]
    d = linear.out_features // n
    bias = linear.bias
    return [
        F.linear(x, linear.weight[i * d : (i + 1) * d], None if bias is None else bias[i * d : (i + 1) * d])
        for i in which
    ]


def shared_modulation(block: nn.Module, timestep: torch.Tensor, batch: int) -> tuple[torch.Tensor, ...]:
    """PixArt's and Sana's six modulation chunks, `scale_shift_table + e(t)`: shift, scale and gate
    of the attention, then of the MLP, each [B, 1, D]."""
    return (block.scale_shift_table[None] + timestep.reshape(batch, 6, -1)).chunk(6, dim=1)


def masked_caption_embeds(batch: int, text_len: int, width: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Random prompt and negative-prompt embeddings with all-ones masks (T5/Gemma-captioned pipelines)."""
    embeds, neg = (torch.randn(batch, text_len, width, generator=generator) for _ in range(2))
    mask = torch.ones(batch, text_len, dtype=torch.long)
    return {
        "prompt_embeds": embeds,
        "prompt_attention_mask": mask,
        "negative_prompt_embeds": neg,
        "negative_prompt_attention_mask": mask,
    }


def clip_fp16(hidden_states: torch.Tensor) -> torch.Tensor:
    """FLUX-style blocks clip float16 residuals to the representable range."""
    return hidden_states.clip(-65504, 65504) if hidden_states.dtype == torch.float16 else hidden_states


# --------------------------------------------- folded steps (shared-embedding modulation)
def fold_shared_modulation(blocks, cached, ff_tokens=lambda f: f):
    """Fold a run of fully reused steps for blocks whose modulation is `table_b + e(t)` with one
    embedding e(t) shared by all blocks (PixArt, Sana): then
    sum_b(g_msa_b*A_b + C_b + g_mlp_b*F_b) = K + e_msa(t)*sum(A) + e_mlp(t)*sum(F), with K and the
    sums fixed while nothing is recomputed. In-place multiply-adds: 5 reads of a block's outputs.
    `ff_tokens` puts a cached MLP output in token layout (Sana's conv MLP returns [B, C, H, W])."""
    k = sa = sf = None
    for block, c in zip(blocks, cached):
        table = block.scale_shift_table  # (6, D): shift/scale/gate for msa, then for mlp
        a, x, f = c["attn1"], c["attn2"], ff_tokens(c["ff"])
        if k is None:
            k, sa, sf = torch.addcmul(x, table[2], a), a.clone(), f.clone()
        else:
            k.addcmul_(table[2], a).add_(x)
            sa.add_(a)
            sf.add_(f)
        k.addcmul_(table[5], f)
    return k, sa, sf


def apply_folded_step(kwargs, consts):
    """A folded step's output from the first block's input: three element-wise ops."""
    hidden_states, timestep = kwargs["hidden_states"], kwargs["timestep"]
    k, sa, sf = consts
    e = timestep.reshape(hidden_states.shape[0], 6, -1)
    return (hidden_states + k).addcmul_(e[:, 2:3], sa).addcmul_(e[:, 5:6], sf)
