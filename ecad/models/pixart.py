"""PixArt-alpha / PixArt-Sigma: 28 `BasicTransformerBlock`s with attn1, attn2, ff."""

from __future__ import annotations

import torch
from torch import nn

from ecad.layouts import BlockGroup, Layout, pixart_layout
from ecad.models.base import BlockPath, FamilyAdapter


def _layout_of(transformer: nn.Module) -> Layout:
    return pixart_layout(len(transformer.transformer_blocks))


def _component_modules(block: nn.Module, group: BlockGroup) -> dict[str, nn.Module]:
    return {"attn1": block.attn1, "attn2": block.attn2, "ff": block.ff}


def _block_path(block: nn.Module, group: BlockGroup) -> BlockPath | None:
    """PixArt's configuration of diffusers' BasicTransformerBlock; anything else keeps the stock forward."""
    plain = (getattr(block, "norm_type", None) == "ada_norm_single" and getattr(block, "pos_embed", None) is None
             and not getattr(block, "only_cross_attention", True) and getattr(block, "attn2", None) is not None
             and getattr(block, "_chunk_size", 0) is None)
    return BlockPath(_compose_block, partial=True) if plain else None


def _block_probe(block: nn.Module, group: BlockGroup) -> tuple[dict, dict]:
    table = block.scale_shift_table
    dim, gen = table.shape[-1], torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(table.device, table.dtype)

    kwargs = dict(hidden_states=rand(1, 4, dim), encoder_hidden_states=rand(1, 2, block.attn2.to_k.in_features),
                  timestep=rand(1, 6 * dim))
    return kwargs, {name: rand(1, 4, dim) for name in ("attn1", "attn2", "ff")}


def _compose_block(block, kwargs, cached, exact):
    """h + g_msa*attn1 + attn2 + g_mlp*ff with each term cached or computed; the norm and
    modulation feeding a reused term are skipped. `exact` keeps the stock block's op order."""
    hidden_states, timestep = kwargs["hidden_states"], kwargs["timestep"]
    batch = hidden_states.shape[0]
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = (
        block.scale_shift_table[None] + timestep.reshape(batch, 6, -1)
    ).chunk(6, dim=1)
    attn_kwargs = kwargs.get("cross_attention_kwargs") or {}
    attn = cached.get("attn1")
    if attn is None:
        norm = _modulate(block.norm1(hidden_states), scale_msa, shift_msa, exact)
        attn = block.attn1(norm, encoder_hidden_states=None, attention_mask=kwargs.get("attention_mask"), **attn_kwargs)
    hidden_states = _gated_add(hidden_states, gate_msa, attn, exact)
    cross = cached.get("attn2")
    if cross is None:
        cross = block.attn2(hidden_states, encoder_hidden_states=kwargs.get("encoder_hidden_states"),
                            attention_mask=kwargs.get("encoder_attention_mask"), **attn_kwargs)
    hidden_states = cross + hidden_states
    ff = cached.get("ff")
    if ff is None:
        ff = block.ff(_modulate(block.norm2(hidden_states), scale_mlp, shift_mlp, exact))
    return _gated_add(hidden_states, gate_mlp, ff, exact)


def _modulate(norm, scale, shift, exact):
    return norm * (1 + scale) + shift if exact else torch.addcmul(shift, norm, 1 + scale)


def _gated_add(hidden_states, gate, out, exact):
    """The stock block's `gate * out + h` (two kernels), or one fused multiply-add."""
    hidden_states = gate * out + hidden_states if exact else torch.addcmul(hidden_states, gate, out)
    return hidden_states.squeeze(1) if hidden_states.ndim == 4 else hidden_states


def _step_reuse_prepare(blocks, cached):
    """Every block's gate is `table_b + e(t)` with one embedding e(t) shared by all blocks, so
    sum_b(g_msa_b*A_b + C_b + g_mlp_b*F_b) = K + e_msa(t)*sum(A) + e_mlp(t)*sum(F), with K and the
    sums fixed while nothing is recomputed. In-place multiply-adds: 5 reads of a block's outputs."""
    k = sa = sf = None
    for block, c in zip(blocks, cached):
        table = block.scale_shift_table  # (6, D): shift/scale/gate for msa, then for mlp
        a, x, f = c["attn1"], c["attn2"], c["ff"]
        if k is None:
            k, sa, sf = torch.addcmul(x, table[2], a), a.clone(), f.clone()
        else:
            k.addcmul_(table[2], a).add_(x)
            sa.add_(a)
            sf.add_(f)
        k.addcmul_(table[5], f)
    return k, sa, sf


def _step_reuse_apply(blocks, kwargs, consts):
    hidden_states, timestep = kwargs["hidden_states"], kwargs["timestep"]
    k, sa, sf = consts
    e = timestep.reshape(hidden_states.shape[0], 6, -1)
    return (hidden_states + k).addcmul_(e[:, 2:3], sa).addcmul_(e[:, 5:6], sf)


def _timestep_kwargs(pipe, selected: list[int], base_steps: int) -> dict:
    """PixArt pipelines accept explicit `timesteps=`: take the chosen ones of the base grid."""
    scheduler = pipe.scheduler
    scheduler.set_timesteps(base_steps)
    grid = [int(t) for t in scheduler.timesteps]
    return {"timesteps": [grid[i] for i in selected], "num_inference_steps": None}


PIXART = FamilyAdapter(
    family="pixart",
    pipeline_classes=("PixArtAlphaPipeline", "PixArtSigmaPipeline"),
    layout_of=_layout_of,
    component_modules=_component_modules,
    block_path=_block_path,
    timestep_kwargs=_timestep_kwargs,
    step_reuse_prepare=_step_reuse_prepare,
    step_reuse_apply=_step_reuse_apply,
    block_probe=_block_probe,
)
