"""Wall-clock cost of apply_schedule against its limit, on a full-size random-weight transformer.

Setting (issue 2): PixArt-alpha XL/2 transformer, fp16, 256 px, 20 DPM-Solver steps, CFG, batch
100, from precomputed embeddings, VAE decode included. For each schedule: ms/image, speedup, peak
memory, and the limit speedup T_full / (T_fixed + f * T_blocks), with T_blocks the time inside the
transformer blocks and T_fixed the rest, both measured in the uncached run, and f the schedule's
fraction of block MACs computed. Random weights time exactly like trained ones.

    python benchmarks/bench_apply.py --out benchmarks/results/apply_pixart_256_b100_h100.json  # GPU
    python benchmarks/bench_apply.py --family flux --height 1024 --batch 1 --steps 28          # FLUX.1-dev size
    python benchmarks/bench_apply.py --tiny                                                    # CPU smoke run
    python benchmarks/bench_apply.py --tiny --tiny-blocks 28 --batch 1 --steps 20              # dispatch-bound
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

import ecad
from ecad.cache.macs import FLUX_DEV_DIMS, PIXART_ALPHA_DIMS, TransformerDims, component_macs
from ecad.layouts import Layout
from ecad.models import adapter_for_pipeline
from ecad.schedule import Schedule

from bench_io import write_result


def build_pipeline(family: str, tiny: bool, device: str, dtype: torch.dtype, tiny_blocks: int = 4):
    """Stock diffusers pipeline without text encoders (embeddings are precomputed)."""

    from ecad.models.tiny import build_tiny_flux, build_tiny_pixart

    if tiny:
        if family == "pixart":
            pipe = build_tiny_pixart(num_blocks=tiny_blocks)
        else:
            pipe = build_tiny_flux(num_double=tiny_blocks // 2, num_single=tiny_blocks - tiny_blocks // 2)
        pipe.text_encoder = pipe.tokenizer = None
        if family == "flux":
            pipe.text_encoder_2 = pipe.tokenizer_2 = None
        return pipe.to(device)
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build in the target dtype: FLUX in fp32 first would need 48 GB
    try:
        return _build_full(family, device, dtype)
    finally:
        torch.set_default_dtype(previous)


def _build_full(family: str, device: str, dtype: torch.dtype):
    """Full-size models built directly on the device; schedulers outside the device context
    (their tables are numpy-backed and must stay on the CPU)."""
    from diffusers import (AutoencoderKL, DPMSolverMultistepScheduler, FlowMatchEulerDiscreteScheduler,
                           FluxPipeline, FluxTransformer2DModel, PixArtAlphaPipeline, PixArtTransformer2DModel)

    latent = 4 if family == "pixart" else 16
    vae_kw = dict(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=2, latent_channels=latent)
    if family == "flux":
        vae_kw.update(use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.1159, scaling_factor=0.3611)
    with torch.device(device):
        if family == "pixart":
            transformer = PixArtTransformer2DModel(sample_size=32, caption_channels=4096)
        else:
            transformer = FluxTransformer2DModel(guidance_embeds=True)
        vae = AutoencoderKL(**vae_kw)
    transformer, vae = transformer.to(dtype), vae.to(dtype)
    if family == "pixart":
        return PixArtAlphaPipeline(tokenizer=None, text_encoder=None, vae=vae, transformer=transformer,
                                   scheduler=DPMSolverMultistepScheduler())
    return FluxPipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=None, tokenizer=None,
                        text_encoder_2=None, tokenizer_2=None, transformer=transformer)


def call_kwargs(pipe, family: str, batch: int, size: int, text_len: int, device: str, dtype) -> dict:
    g = torch.Generator(device="cpu").manual_seed(0)
    width = pipe.transformer.config.get("caption_channels") or pipe.transformer.config.joint_attention_dim
    embeds = torch.randn(batch, text_len, width, generator=g).to(device, dtype)
    kw = dict(height=size, width=size, output_type="pt", return_dict=True)
    if family == "pixart":
        neg = torch.randn(batch, text_len, width, generator=g).to(device, dtype)
        mask = torch.ones(batch, text_len, device=device, dtype=torch.long)
        return {**kw, "prompt_embeds": embeds, "prompt_attention_mask": mask, "negative_prompt_embeds": neg,
                "negative_prompt_attention_mask": mask, "negative_prompt": None, "guidance_scale": 4.5,
                "use_resolution_binning": False}
    pooled_dim = pipe.transformer.config.pooled_projection_dim
    pooled = torch.randn(batch, pooled_dim, generator=g).to(device, dtype)
    return {**kw, "prompt_embeds": embeds, "pooled_prompt_embeds": pooled, "guidance_scale": 3.5}


class BlockTimer:
    """CUDA events around every transformer block (no syncs inside the run) to split the
    uncached time into T_blocks and T_fixed."""

    def __init__(self, transformer, layout: Layout, cuda: bool):
        self.cuda, self.pairs, self.handles = cuda, [], []
        blocks = [getattr(transformer, g.name)[i] for g, i in layout.blocks()]
        self.handles += [blocks[0].register_forward_pre_hook(lambda m, a: self._start())]
        self.handles += [blocks[-1].register_forward_hook(lambda m, a, o: self._stop())]

    def _now(self):
        if self.cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def _start(self):
        self.pairs.append([self._now(), None])

    def _stop(self):
        self.pairs[-1][1] = self._now()

    def total_ms(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
            return sum(a.elapsed_time(b) for a, b in self.pairs)
        return sum(b - a for a, b in self.pairs) * 1e3

    def remove(self):
        for h in self.handles:
            h.remove()


class NaiveCache:
    """The baseline issue 2 measured: each component's latest output kept for the whole call,
    reused by replacing the module's forward; norms, modulation and gating run as in the stock block."""

    def __init__(self, pipe, schedule: Schedule):
        adapter = adapter_for_pipeline(pipe)
        self.grid, self.step, self.store, self.patched = schedule.executed_grid(), -1, {}, []
        self.handle = pipe.transformer.register_forward_pre_hook(lambda m, a: self._next_step())
        for b, (group, i) in enumerate(schedule.layout.blocks()):
            mods = adapter.component_modules(getattr(pipe.transformer, group.name)[i], group)
            for c, name in enumerate(group.components):
                module = mods[name]
                self.patched.append((module, module.forward))
                module.forward = self._wrap(module.forward, b, c)

    def _next_step(self):
        self.step = (self.step + 1) % len(self.grid)  # one transformer call per step (CFG is batched)

    def _wrap(self, forward, b, c):
        def cached_forward(*args, **kwargs):
            if self.grid[self.step, b, c]:
                self.store[(b, c)] = forward(*args, **kwargs)
            return self.store[(b, c)]
        return cached_forward

    def remove(self):
        self.handle.remove()
        for module, forward in self.patched:
            module.forward = forward


def timed(pipe, kwargs, cuda: bool, repeats: int) -> float:
    """Median wall-clock ms of a whole pipeline call (VAE decode included)."""
    times = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        pipe(**kwargs)
        if cuda:
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def block_mac_fraction(schedule: Schedule, dims: TransformerDims, size: int, text_len: int) -> float:
    comp = component_macs(dims, schedule.family, size, size, 1, text_len)
    weights = np.array([[comp[c] for c in g.components] for g, _ in schedule.layout.blocks()])
    done = (schedule.executed_grid() * weights[None]).sum()
    return float(done / (weights.sum() * schedule.num_steps))


def schedules_for(layout: Layout, steps: int, family: str) -> list[Schedule]:
    rng = np.random.default_rng(0)
    grid = rng.random((steps, layout.num_blocks, layout.num_components)) < 0.2
    grid[0] = True
    out = [Schedule.full(layout, steps, name="no_caching")]
    ns = (3,) if family == "flux" else (2, 3, 5)
    out += [Schedule.every_n(layout, steps, n) for n in ns]
    if family == "pixart":
        out.append(Schedule(layout, grid, name="random_20pct"))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--family", choices=["pixart", "flux"], default="pixart")
    ap.add_argument("--tiny", action="store_true", help="tiny random model on CPU: checks the script runs")
    ap.add_argument("--tiny-blocks", type=int, default=4,
                    help="blocks of the tiny model (28 = PixArt's depth: a dispatch-bound stand-in for batch 1)")
    ap.add_argument("--height", type=int, default=256)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--text-len", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--naive", action="store_true",
                    help="also time a naive keep-everything cache (the baseline issue 2 measured) per schedule")
    ap.add_argument("--exact", action="store_true",
                    help="apply_schedule(exact=True): the stock block's op order, no folded steps")
    args = ap.parse_args()

    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    dtype = torch.float32 if args.tiny else (torch.float16 if args.family == "pixart" else torch.bfloat16)
    size = 16 if args.tiny else args.height
    text_len = args.text_len or (16 if args.tiny else (120 if args.family == "pixart" else 512))
    pipe = build_pipeline(args.family, args.tiny, device, dtype, args.tiny_blocks)
    pipe.set_progress_bar_config(disable=True)
    layout = adapter_for_pipeline(pipe).layout_of(pipe.transformer)
    dims = TransformerDims.from_transformer(pipe.transformer, pipe.vae_scale_factor, text_len) if args.tiny else (
        PIXART_ALPHA_DIMS if args.family == "pixart" else FLUX_DEV_DIMS)
    kwargs = call_kwargs(pipe, args.family, args.batch, size, text_len, device, dtype)

    with torch.inference_mode():
        stock_call = {**kwargs, "num_inference_steps": args.steps}
        pipe(**stock_call)  # warm-up (cuDNN/cuBLAS autotune, allocator)
        t_stock = timed(pipe, stock_call, cuda, args.repeats)  # no ecad: what the hooks cost when nothing is reused
        ecad.apply_schedule(pipe, Schedule.full(layout, args.steps))
        pipe(**kwargs)
        timer = BlockTimer(pipe.transformer, layout, cuda)
        t_full = timed(pipe, kwargs, cuda, 1)
        t_blocks = timer.total_ms()
        timer.remove()
        t_fixed = t_full - t_blocks
        rows = []

        def measure(name: str, schedule: Schedule, call: dict) -> None:
            pipe(**call)
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            ms = timed(pipe, call, cuda, args.repeats)
            peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
            f = block_mac_fraction(schedule, dims, size, text_len)
            ref = rows[0]["ms_per_call"] if rows else ms
            limit = t_full / (t_fixed + f * t_blocks)
            rows.append(dict(schedule=name, block_macs_fraction=round(f, 4), ms_per_call=round(ms, 2),
                             ms_per_image=round(ms / args.batch, 3), speedup=round(ref / ms, 3),
                             limit_speedup=round(limit, 3), of_limit=round(ref / ms / limit, 3),
                             peak_gib=round(peak, 2)))
            print(json.dumps(rows[-1]))

        schedules = schedules_for(layout, args.steps, args.family)
        for schedule in schedules:
            ecad.apply_schedule(pipe, schedule, exact=args.exact)
            measure(schedule.name, schedule, kwargs)  # the schedule sets the step count
        ecad.remove_schedule(pipe)
        for schedule in schedules[1:] if args.naive else []:
            naive = NaiveCache(pipe, schedule)
            try:
                measure(f"naive_{schedule.name}", schedule, {**kwargs, "num_inference_steps": args.steps})
            finally:
                naive.remove()
    result = dict(
        device=torch.cuda.get_device_name() if cuda else platform.processor() or "cpu", torch=torch.__version__,
        family=args.family, tiny=args.tiny, dtype=str(dtype), resolution=size, batch=args.batch, steps=args.steps,
        cfg=args.family == "pixart", exact=args.exact, text_len=text_len, repeats=args.repeats, naive=args.naive,
        tiny_blocks=args.tiny_blocks if args.tiny else None, blocks=layout.num_blocks, t_stock_ms=round(t_stock, 2),
        hook_overhead=round(rows[0]["ms_per_call"] / t_stock - 1, 4), t_full_ms=round(t_full, 2),
        t_blocks_ms=round(t_blocks, 2), t_fixed_ms=round(t_fixed, 2), rows=rows,
    )
    write_result(result, args.out)


if __name__ == "__main__":
    main()
