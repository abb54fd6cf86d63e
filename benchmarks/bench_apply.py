"""Wall-clock cost of apply_schedule against its limit, on a full-size random-weight transformer.

Setting (issue 2): PixArt-alpha XL/2 transformer, fp16, 256 px, 20 DPM-Solver steps, CFG, batch
100, from precomputed embeddings, VAE decode included. For each schedule: ms/image, speedup, peak
memory, and the limit speedup T_full / (T_fixed + f * T_blocks), with T_blocks the time inside the
transformer blocks and T_fixed the rest, both measured in the uncached run, and f the schedule's
fraction of block MACs computed. Random weights time exactly like trained ones.

    python benchmarks/bench_apply.py --out benchmarks/results/apply_pixart_256_b100_h100.json  # GPU
    python benchmarks/bench_apply.py --family flux --height 1024 --batch 1 --steps 28          # FLUX.1-dev size
    python benchmarks/bench_apply.py --space sd3.5-medium-1024 --batch 1                        # any shipped space
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
from bench_io import write_result

import ecad
from ecad.cache.hooks import listen_for_branches
from ecad.cache.macs import TransformerDims, block_macs
from ecad.layouts import Layout
from ecad.models import FAMILIES, adapter_for, adapter_for_pipeline
from ecad.schedule import Schedule
from ecad.spaces import SearchSpace, load_space

SCHEDULES = ("every-2", "every-3", "every-5", "random-20")


def bench_space(family: str, tiny: bool) -> SearchSpace:
    """The setting a family is timed in: its benchmark space, or its tiny space for CPU runs."""
    return load_space(f"tiny-{family}" if tiny else adapter_for(family).benchmark_space)


def build_pipeline(space: SearchSpace, device: str, dtype: torch.dtype, tiny_blocks: int | None = None):
    """Stock diffusers pipeline without text encoders (embeddings are precomputed)."""
    adapter = space.adapter
    if space.is_tiny:
        pipe = adapter.build_tiny(tiny_blocks)
        for name in [n for n in pipe.components if n.startswith(("text_encoder", "tokenizer"))]:
            setattr(pipe, name, None)
        return pipe.to(device)
    return adapter.random_pipeline(space, device, dtype)


def call_kwargs(pipe, space: SearchSpace, batch: int, size: int, text_len: int, device: str, dtype) -> dict:
    """The space's call with random prompt embeddings of the right shapes and size x size output."""
    adapter = space.adapter
    g = torch.Generator(device="cpu").manual_seed(0)
    prompts = adapter.random_prompt_kwargs(pipe, batch, text_len, g)
    prompts = {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in prompts.items()}
    call = {k: v for k, v in space.call_kwargs().items() if k not in ("num_inference_steps", "max_sequence_length")}
    return {
        **call,
        "height": size,
        "width": size,
        "output_type": "pt",
        "return_dict": True,
        **prompts,
        **adapter.embeds_call_kwargs(),
    }


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
    reused by replacing the module's forward; norms, modulation and gating run as in the stock
    block. Steps count per guidance branch (the caller's cache context), as ecad's do."""

    def __init__(self, pipe, schedule: Schedule):
        adapter = adapter_for_pipeline(pipe)
        self.transformer = pipe.transformer
        self.grid, self.store, self.patched = schedule.executed_grid(), {}, []
        self.steps: dict[str, int] = {}
        self.step, self.branch = 0, ""
        self.listener = listen_for_branches(self.transformer, "bench.naive_branch")
        self.handle = self.transformer.register_forward_pre_hook(lambda m, a: self._next_call())
        for b, (group, i) in enumerate(schedule.layout.blocks()):
            mods = adapter.component_modules(getattr(self.transformer, group.name)[i], group)
            for c, name in enumerate(group.components):
                module = mods[name]
                self.patched.append((module, module.forward))
                module.forward = self._wrap(module.forward, b, c)

    def _next_call(self):
        self.branch = self.listener.branch()
        self.step = self.steps.get(self.branch, 0) % len(self.grid)  # a new pipeline call starts over
        self.steps[self.branch] = self.step + 1

    def _wrap(self, forward, b, c):
        def cached_forward(*args, **kwargs):
            if self.grid[self.step, b, c]:
                self.store[(b, c, self.branch)] = forward(*args, **kwargs)
            return self.store[(b, c, self.branch)]

        return cached_forward

    def remove(self):
        self.handle.remove()
        self.transformer._diffusers_hook.remove_hook("bench.naive_branch", recurse=False)
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
    weights = block_macs(dims, size, size, 1, text_len)
    done = (schedule.executed_grid() * weights[None]).sum()
    return float(done / (weights.sum() * schedule.num_steps))


def schedules_for(layout: Layout, steps: int, names=SCHEDULES) -> list[Schedule]:
    """No caching first (every speedup's baseline), then `names`: every-N, or random-P (P% computed)."""
    out = [Schedule.full(layout, steps, name="no_caching")]
    for name in names:
        kind, _, value = name.partition("-")
        if kind == "every":
            out.append(Schedule.every_n(layout, steps, int(value)))
        elif kind == "random":
            grid = np.random.default_rng(0).random((steps, layout.num_blocks, layout.num_components)) < int(value) / 100
            grid[0] = True
            out.append(Schedule(layout, grid, name=f"random_{value}pct"))
        else:
            raise SystemExit(f"--schedules: {name!r} is neither every-N nor random-P")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--family",
        choices=FAMILIES,
        default="pixart",
        help="time this family in its benchmark space (or its tiny space with --tiny)",
    )
    ap.add_argument("--space", default=None, help="a search space instead of the family's benchmark space")
    ap.add_argument(
        "--schedules",
        default=",".join(SCHEDULES),
        help=f"comma-separated every-N / random-P schedules to time after no caching (default {','.join(SCHEDULES)})",
    )
    ap.add_argument("--tiny", action="store_true", help="tiny random model on CPU: checks the script runs")
    ap.add_argument(
        "--tiny-blocks",
        type=int,
        default=None,
        help="blocks of the tiny model (28 = PixArt's depth: a dispatch-bound stand-in for batch 1)",
    )
    ap.add_argument("--height", type=int, default=None, help="default: the space's")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=None, help="default: the space's")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--text-len", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument(
        "--naive",
        action="store_true",
        help="also time a naive keep-everything cache (the baseline issue 2 measured) per schedule",
    )
    ap.add_argument(
        "--exact", action="store_true", help="apply_schedule(exact=True): the stock block's op order, no folded steps"
    )
    args = ap.parse_args()

    cuda = torch.cuda.is_available() and not args.tiny
    device = "cuda" if cuda else "cpu"
    space = load_space(args.space) if args.space else bench_space(args.family, args.tiny)
    if args.tiny and not space.is_tiny:
        raise SystemExit(f"--tiny runs a tiny space; {space.name} is not one")
    adapter = space.adapter
    dtype = space.torch_dtype
    size = args.height or space.height
    steps = args.steps or space.steps
    text_len = args.text_len or space.text_length
    pipe = build_pipeline(space, device, dtype, args.tiny_blocks)
    pipe.set_progress_bar_config(disable=True)
    layout = adapter_for_pipeline(pipe).layout_of(pipe.transformer)
    dims = adapter.dims_for_pipeline(pipe, space) if space.is_tiny else adapter.preset_dims(space)
    kwargs = call_kwargs(pipe, space, args.batch, size, text_len, device, dtype)

    with torch.inference_mode():
        stock_call = {**kwargs, "num_inference_steps": steps}
        pipe(**stock_call)  # warm-up (cuDNN/cuBLAS autotune, allocator)
        t_stock = timed(pipe, stock_call, cuda, args.repeats)  # no ecad: what the hooks cost when nothing is reused
        ecad.apply_schedule(pipe, Schedule.full(layout, steps))
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
            rows.append(
                dict(
                    schedule=name,
                    block_macs_fraction=round(f, 4),
                    ms_per_call=round(ms, 2),
                    ms_per_image=round(ms / args.batch, 3),
                    speedup=round(ref / ms, 3),
                    limit_speedup=round(limit, 3),
                    of_limit=round(ref / ms / limit, 3),
                    peak_gib=round(peak, 2),
                )
            )
            print(json.dumps(rows[-1]))

        schedules = schedules_for(layout, steps, [n for n in args.schedules.split(",") if n])
        for schedule in schedules:
            ecad.apply_schedule(pipe, schedule, exact=args.exact)
            measure(schedule.name, schedule, kwargs)  # the schedule sets the step count
        ecad.remove_schedule(pipe)
        for schedule in schedules[1:] if args.naive else []:
            naive = NaiveCache(pipe, schedule)
            try:
                measure(f"naive_{schedule.name}", schedule, {**kwargs, "num_inference_steps": steps})
            finally:
                naive.remove()
    result = dict(
        device=torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
        torch=torch.__version__,
        family=space.family,
        space=space.name,
        tiny=args.tiny,
        dtype=str(dtype),
        resolution=size,
        batch=args.batch,
        steps=steps,
        cfg=adapter.transformer_batch(1, kwargs.get("guidance_scale")) > 1,
        exact=args.exact,
        text_len=text_len,
        repeats=args.repeats,
        naive=args.naive,
        tiny_blocks=layout.num_blocks if args.tiny else None,
        blocks=layout.num_blocks,
        t_stock_ms=round(t_stock, 2),
        hook_overhead=round(rows[0]["ms_per_call"] / t_stock - 1, 4),
        t_full_ms=round(t_full, 2),
        t_blocks_ms=round(t_blocks, 2),
        t_fixed_ms=round(t_fixed, 2),
        rows=rows,
    )
    write_result(result, args.out)


if __name__ == "__main__":
    main()
