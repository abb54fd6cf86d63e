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
)
