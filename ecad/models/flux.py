"""FLUX.1: 19 double-stream and 38 single-stream blocks, six component kinds."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ecad.layouts import BlockGroup, Layout, flux_layout
from ecad.models.base import BlockPath, FamilyAdapter
from ecad.schedule import ScheduleError


def _layout_of(transformer: nn.Module) -> Layout:
    return flux_layout(len(transformer.transformer_blocks), len(transformer.single_transformer_blocks))


def _component_modules(block: nn.Module, group: BlockGroup) -> dict[str, nn.Module]:
    if group.name == "transformer_blocks":
        return {"full_attn": block.attn, "full_ff": block.ff, "full_ff_context": block.ff_context}
    return {"single_attn": block.attn, "single_proj_mlp": block.proj_mlp, "single_proj_out": block.proj_out}


def _gates(norm: nn.Module, temb: torch.Tensor, n: int, which: tuple[int, ...], exact: bool) -> list[torch.Tensor]:
    """Chunks `which` of the adaLN modulation (of `n`), without the norm of the activations.
    Fast mode reads only those rows of a plain Linear's weight: at batch 1 these GEMVs are the
    weight reads, and a reused block needs only its gates (2 of 6 chunks, 1 of 3)."""
    x = norm.silu(temb)
    linear = norm.linear
    if exact or type(linear) is not nn.Linear:  # LoRA/quantised wrappers: through the module
        chunks = linear(x).chunk(n, dim=1)
        return [chunks[i] for i in which]
    d = linear.out_features // n
    bias = linear.bias
    return [F.linear(x, linear.weight[i * d:(i + 1) * d], None if bias is None else bias[i * d:(i + 1) * d])
            for i in which]


def _gated_add(hidden_states, gate, out, exact):
    """The stock block's `h + gate * out` (two kernels), or one fused multiply-add."""
    gate = gate.unsqueeze(1)
    return hidden_states + gate * out if exact else torch.addcmul(hidden_states, gate, out)


def _reuse_double(block, kwargs, cached, exact):
    """Fully reused double block: residual adds of re-gated cached outputs (`exact`: in the block's op order)."""
    hidden_states = kwargs["hidden_states"]
    encoder_hidden_states = kwargs["encoder_hidden_states"]
    temb = kwargs["temb"]
    gate_msa, gate_mlp = _gates(block.norm1, temb, 6, (2, 5), exact)
    c_gate_msa, c_gate_mlp = _gates(block.norm1_context, temb, 6, (2, 5), exact)
    attn_out = cached["full_attn"]
    attn_output, context_attn_output = attn_out[0], attn_out[1]
    hidden_states = _gated_add(hidden_states, gate_msa, attn_output, exact)
    hidden_states = _gated_add(hidden_states, gate_mlp, cached["full_ff"], exact)
    if len(attn_out) == 3:
        hidden_states = hidden_states + attn_out[2]
    encoder_hidden_states = _gated_add(encoder_hidden_states, c_gate_msa, context_attn_output, exact)
    encoder_hidden_states = _gated_add(encoder_hidden_states, c_gate_mlp, cached["full_ff_context"], exact)
    if encoder_hidden_states.dtype == torch.float16:
        encoder_hidden_states = encoder_hidden_states.clip(-65504, 65504)
    return encoder_hidden_states, hidden_states


def _reuse_single(block, kwargs, cached, exact):
    """Fully reused single block: only the gated proj_out output is added to the residual. The
    stock block concatenates text and image tokens and splits them again; adding to each part
    gives the same values per element without the copy."""
    hidden_states = kwargs["hidden_states"]
    encoder_hidden_states = kwargs["encoder_hidden_states"]
    (gate,) = _gates(block.norm, kwargs["temb"], 3, (2,), exact)
    out = cached["single_proj_out"]
    text_seq_len = encoder_hidden_states.shape[1]
    parts = []
    for residual, part in ((encoder_hidden_states, out[:, :text_seq_len]), (hidden_states, out[:, text_seq_len:])):
        residual = _gated_add(residual, gate, part, exact)
        parts.append(residual.clip(-65504, 65504) if residual.dtype == torch.float16 else residual)
    return parts[0], parts[1]


def _block_path(block: nn.Module, group: BlockGroup) -> BlockPath:
    """Fully reused blocks only: FLUX's partial reuse keeps the stock forward."""
    return BlockPath(_reuse_double if group.name == "transformer_blocks" else _reuse_single, partial=False)


def _block_probe(block: nn.Module, group: BlockGroup) -> tuple[dict, dict]:
    weight = block.norm1.linear.weight if group.name == "transformer_blocks" else block.norm.linear.weight
    dim, gen = weight.shape[1], torch.Generator().manual_seed(0)

    def rand(*shape):
        return torch.randn(*shape, generator=gen).to(weight.device, weight.dtype)

    kwargs = dict(hidden_states=rand(1, 4, dim), encoder_hidden_states=rand(1, 2, dim), temb=rand(1, dim))
    if group.name == "transformer_blocks":
        outputs = {"full_attn": (rand(1, 4, dim), rand(1, 2, dim)), "full_ff": rand(1, 4, dim),
                   "full_ff_context": rand(1, 2, dim)}
    else:
        outputs = {"single_attn": rand(1, 6, dim), "single_proj_mlp": rand(1, 6, block.proj_mlp.out_features),
                   "single_proj_out": rand(1, 6, dim)}
    return kwargs, outputs


def _timestep_kwargs(pipe, selected: list[int], base_steps: int) -> dict:
    """FluxPipeline accepts `sigmas=`: its default grid is linspace(1, 1/N, N); take the chosen ones."""
    if getattr(pipe.scheduler.config, "use_flow_sigmas", False):
        raise ScheduleError("this schedule selects timesteps, but the pipeline's scheduler has use_flow_sigmas=True, "
                            "under which FluxPipeline ignores sigmas=; use a scheduler without use_flow_sigmas")
    grid = np.linspace(1.0, 1 / base_steps, base_steps)
    return {"sigmas": [float(grid[i]) for i in selected], "num_inference_steps": len(selected)}


FLUX = FamilyAdapter(
    family="flux",
    pipeline_classes=("FluxPipeline",),
    layout_of=_layout_of,
    component_modules=_component_modules,
    block_path=_block_path,
    timestep_kwargs=_timestep_kwargs,
    block_probe=_block_probe,
)
