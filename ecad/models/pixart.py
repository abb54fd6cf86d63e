"""PixArt-alpha / PixArt-Sigma: 28 `BasicTransformerBlock`s with attn1, attn2, ff."""

from __future__ import annotations

from torch import nn

from ecad.layouts import BlockGroup, Layout, pixart_layout
from ecad.models.base import FamilyAdapter


def _layout_of(transformer: nn.Module) -> Layout:
    return pixart_layout(len(transformer.transformer_blocks))


def _component_modules(block: nn.Module, group: BlockGroup) -> dict[str, nn.Module]:
    return {"attn1": block.attn1, "attn2": block.attn2, "ff": block.ff}


def _reuse_block(block, args, kwargs, cached):
    """Fully reused block: h + g_msa*attn1 + attn2 + g_mlp*ff, the ops of the block's own forward
    in its order (so results are bit-identical), minus norms and modulation nobody reads."""
    hidden_states = kwargs["hidden_states"] if "hidden_states" in kwargs else args[0]
    timestep = kwargs["timestep"]
    batch = hidden_states.shape[0]
    _, _, gate_msa, _, _, gate_mlp = (block.scale_shift_table[None] + timestep.reshape(batch, 6, -1)).chunk(6, dim=1)
    hidden_states = gate_msa * cached["attn1"] + hidden_states
    hidden_states = cached["attn2"] + hidden_states
    return gate_mlp * cached["ff"] + hidden_states


def _step_reuse_prepare(blocks, cached):
    """Every block's gate is `table_b + e(t)` with one embedding e(t) shared by all blocks, so
    sum_b(g_msa_b*A_b + C_b + g_mlp_b*F_b) = K + e_msa(t)*sum(A) + e_mlp(t)*sum(F), with K and the
    sums fixed while nothing is recomputed. Summed in float32 to keep fp16 runs accurate."""
    k = sa = sf = None
    for block, c in zip(blocks, cached):
        table = block.scale_shift_table.float()  # (6, D): shift/scale/gate for msa, then for mlp
        a, x, f = c["attn1"].float(), c["attn2"].float(), c["ff"].float()
        term = table[2] * a + x + table[5] * f
        k = term if k is None else k + term
        sa = a if sa is None else sa + a
        sf = f if sf is None else sf + f
    return k, sa, sf


def _step_reuse_apply(blocks, kwargs, consts):
    hidden_states, timestep = kwargs["hidden_states"], kwargs["timestep"]
    k, sa, sf = consts
    e = timestep.reshape(hidden_states.shape[0], 6, -1).float()
    out = hidden_states.float() + k + e[:, 2:3] * sa + e[:, 5:6] * sf
    return out.to(hidden_states.dtype)


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
    block_reuse=lambda group: _reuse_block,
    timestep_kwargs=_timestep_kwargs,
    step_reuse_prepare=_step_reuse_prepare,
    step_reuse_apply=_step_reuse_apply,
)
