"""Writes ecad_{pixart,flux}_step0_reuse.json: ECAD-layout schedules whose step 0 carries reuse
flags (as ECAD's headline PixArt-alpha schedules do), with `metrics.by_inference_step` counted the
way ECAD counts: a profiler over the real transformer (FlopCounterMode on the full-size config, meta
tensors), Linear/Conv only, transformer batch 2, step 0 in full. Independent of ecad's formulas.

    python tests/data/make_step0_examples.py
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

HERE = Path(__file__).resolve().parent


def linear_counts(transformer, forward) -> dict[str, float]:
    """Module fqn -> Linear/Conv MACs (attention bmm left out), '' for the whole forward."""
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        forward()
    out = {}
    for key, ops in fc.get_flop_counts().items():
        name = "" if key == "Global" else key.split(".", 1)[1] if "." in key else None
        if name is not None:
            out[name] = sum(v for op, v in ops.items() if "bmm" not in str(op)) / 2
    return out


def write(
    name: str,
    counts: dict[str, float],
    groups: list[tuple[str, str, int, dict[str, str]]],
    steps: int,
    config: dict,
    rng: np.random.Generator,
) -> None:
    """groups: (key prefix, module list, count, component -> submodule)."""
    blocks = [(prefix, lst, i, comps) for prefix, lst, n, comps in groups for i in range(n)]
    cost = {f"{p}{i}": {c: counts[f"{lst}.{i}.{m}"] for c, m in comps.items()} for p, lst, i, comps in blocks}
    fixed = counts[""] - sum(v for b in cost.values() for v in b.values())
    schedule, by_step = {}, {}
    for s in range(steps):
        step = {k: {c: bool(s % 3 == 0) for c in comps} for k, comps in cost.items()}
        if s == 0:  # the pattern of ECAD's own fast/faster/fastest files: reuse flags where nothing is cached
            for k in rng.choice(sorted(step), size=2, replace=False):
                step[k][next(iter(step[k]))] = False
        schedule[f"{s:03d}"] = step
        computed = sum(v for k, b in cost.items() for c, v in b.items() if s == 0 or step[k][c])
        macs = fixed + computed
        by_step[f"{s:03d}"] = {"flops": 2 * macs, "macs": macs}
    total = sum(v["macs"] for v in by_step.values())
    cs = {"num_blocks": groups[0][2]}
    if len(groups) > 1:
        cs["num_single_blocks"] = groups[1][2]
    cs.update(num_inference_steps=steps, name="step0_reuse_every_003", attributes={}, schedule=schedule)
    data = {
        "cache_schedule": cs,
        "config": config,
        "metrics": {"by_inference_step": by_step, "total_macs": total, "total_macs_T": total / 1e12},
    }
    (HERE / name).write_text(json.dumps(data, indent=1))


def main() -> None:
    from diffusers import FluxTransformer2DModel, PixArtTransformer2DModel

    rng = np.random.default_rng(0)
    with torch.device("meta"):
        pixart = PixArtTransformer2DModel(num_layers=28, sample_size=32, caption_channels=4096)
        flux = FluxTransformer2DModel(guidance_embeds=True)
    b, text = 2, 120  # ECAD: batch 2 (PixArt's CFG pair), 256 px, T5 length 120
    x, enc = torch.randn(b, 4, 32, 32, device="meta"), torch.randn(b, text, 4096, device="meta")
    counts = linear_counts(
        pixart,
        lambda: pixart(
            x,
            encoder_hidden_states=enc,
            timestep=torch.full((b,), 500, device="meta"),
            added_cond_kwargs={"resolution": None, "aspect_ratio": None},
        ),
    )
    write(
        "ecad_pixart_step0_reuse.json",
        counts,
        [("", "transformer_blocks", 28, {"attn1": "attn1", "attn2": "attn2", "ff": "ff"})],
        20,
        {"height": 256, "width": 256, "guidance_scale": 4.5, "pipeline": {"name": "pixart_alpha", "kwargs": {}}},
        rng,
    )
    text, tokens = 512, 16 * 16  # FLUX.1-dev 256 px: 16x16 packed latent tokens, T5 length 512
    x, enc = torch.randn(b, tokens, 64, device="meta"), torch.randn(b, text, 4096, device="meta")
    kw = dict(
        encoder_hidden_states=enc,
        pooled_projections=torch.randn(b, 768, device="meta"),
        timestep=torch.full((b,), 0.5, device="meta"),
        img_ids=torch.zeros(tokens, 3, device="meta"),
        txt_ids=torch.zeros(text, 3, device="meta"),
        guidance=torch.full((b,), 3.5, device="meta"),
    )
    counts = linear_counts(flux, lambda: flux(x, **kw))
    write(
        "ecad_flux_step0_reuse.json",
        counts,
        [
            ("", "transformer_blocks", 19, {"full_attn": "attn", "full_ff": "ff", "full_ff_context": "ff_context"}),
            (
                "single_",
                "single_transformer_blocks",
                38,
                {"single_attn": "attn", "single_proj_mlp": "proj_mlp", "single_proj_out": "proj_out"},
            ),
        ],
        20,
        {"height": 256, "width": 256, "guidance_scale": 3.5, "pipeline": {"name": "flux", "kwargs": {}}},
        rng,
    )


if __name__ == "__main__":
    main()
