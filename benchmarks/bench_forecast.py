"""Does forecasting beat reuse at the same MACs? And what does guidance-branch reuse cost in quality?

For each interval N: the TaylorSeer-like schedule (steps 0, 1 and every N-th compute, forecast in
between; orders 1 and 2) against the same grid with reuse instead of forecast: the same block MACs
by construction (a forecast cell adds only element-wise work, reported as `forecast_macs`), so
quality differences are forecast vs reuse alone. Then FasterCache-like guidance reuse on top of no
caching and of every-2, where the family runs CFG as one doubled batch. Quality: PSNR and SSIM
against the uncached images of the same prompts and seeds; memory: the peak bytes the cache held
(forecast history included), as ecad's hooks measured it.

    python benchmarks/bench_forecast.py --space tiny-pixart --out benchmarks/results/forecast_cpu_tiny_pixart.json
    python benchmarks/bench_forecast.py --space shapes-pixart --prompt-file calibration_prompts/shapes_100.txt \
        --prompts 16 --seeds 2 --out benchmarks/results/forecast_cpu_shapes_pixart.json   # trained shapes model

On the random-weight tiny models the numbers only show the script works; the trained shapes models
(and GPU runs of the real spaces) are what answers the question (recorded for shapes-pixart: forecast
beat reuse only at every 2).
"""

from __future__ import annotations

import argparse
import platform
from pathlib import Path

import torch
from bench_io import models_of, write_result

import ecad
from ecad.cache.guidance import doubles_guidance_batch
from ecad.cache.macs import dims_for_space, schedule_macs, transformer_batch
from ecad.catalog import builtin_schedule
from ecad.metrics.fidelity import psnr, ssim
from ecad.models import load_pipeline
from ecad.prompts import read_prompts
from ecad.schedule import Schedule
from ecad.spaces import load_space

PROMPTS = (
    "a red circle on a blue background",
    "two yellow squares",
    "a green triangle above a white line",
    "a small black star in the corner",
    "a purple ring on grey",
    "three orange dots in a row",
    "a blue cross on yellow",
    "a large pink square",
)


def contenders(space) -> list[tuple[str, str, Schedule]]:
    """(label, kind, schedule): reuse and forecast at the same grid, then guidance reuse."""
    meta = space.schedule_meta()
    out = []
    for n in (2, 3, 4, 5):
        if n >= space.steps:
            continue
        forecast = builtin_schedule(f"taylorseer-{n}", space.layout, space.steps, **meta)
        out.append((f"reuse, compute every {n}", "reuse", forecast.without_forecast()))
        out.append((f"forecast order 1, every {n}", "forecast", forecast))
        out.append(
            (
                f"forecast order 2, every {n}",
                "forecast2",
                builtin_schedule(f"taylorseer2-{n}", space.layout, space.steps, **meta),
            )
        )
    if doubles_guidance_batch(space.adapter):
        fc = builtin_schedule("fastercache", space.layout, space.steps, **meta)
        out.append(("guidance reuse (FasterCache-like)", "guidance", fc))
        every2 = Schedule.every_n(space.layout, space.steps, 2, **meta)
        both = Schedule(space.layout, every2.grid, guidance_reuse=fc.guidance_reuse, name="every_2+guidance", **meta)
        out.append(("every 2", "reuse", every2))
        out.append(("every 2 + guidance reuse", "guidance", both))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="tiny-pixart")
    ap.add_argument(
        "--prompts", type=int, default=4, help="how many prompts (of the built-in ones, or of --prompt-file)"
    )
    ap.add_argument("--prompt-file", help="prompt file, one per line (e.g. calibration_prompts/shapes_100.txt)")
    ap.add_argument("--seeds", type=int, default=2, help="seeds per prompt")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()

    space = load_space(args.space)
    pipe = load_pipeline(space, device=args.device)
    pipe.set_progress_bar_config(disable=True)
    call = space.call_kwargs()
    chosen = list(read_prompts(args.prompt_file, args.prompts)) if args.prompt_file else PROMPTS[: args.prompts]
    prompts = [p for p in chosen for _ in range(args.seeds)]
    seeds = [s for _ in chosen for s in range(args.seeds)]

    def images() -> torch.Tensor:
        gens = [torch.Generator(device="cpu").manual_seed(s) for s in seeds]
        out = pipe(
            prompts, generator=gens, output_type="pt", **{k: v for k, v in call.items() if k != "num_inference_steps"}
        )
        return space.adapter.output_images(out).float().cpu()

    reference = (
        space.adapter.output_images(
            pipe(prompts, generator=[torch.Generator().manual_seed(s) for s in seeds], output_type="pt", **call)
        )
        .float()
        .cpu()
    )
    dims = dims_for_space(space)
    rows = transformer_batch(space.family, 1, space.guidance_scale)
    results = []
    for label, kind, schedule in contenders(space):
        ecad.apply_schedule(pipe, schedule)
        got = images()
        summary = ecad.summary(pipe)
        ecad.remove_schedule(pipe)
        macs = schedule_macs(schedule, dims, batch=rows)
        results.append(
            {
                "label": label,
                "kind": kind,
                "macs_fraction": macs.total / macs.full,
                "forecast_macs_fraction": macs.forecast / macs.full,
                "forecast_cells": macs.forecast_cells,
                "psnr": float(psnr(got, reference).mean()),
                "ssim": float(ssim(got, reference).mean()),
                "peak_cached_mib": summary.peak_cached_bytes / 2**20,
            }
        )
        r = results[-1]
        print(f"{label:38s} MACs {r['macs_fraction']:6.1%}  PSNR {r['psnr']:6.2f}  SSIM {r['ssim']:.4f}  "
              f"cache {r['peak_cached_mib']:.2f} MiB")  # fmt: skip
    write_result(
        {
            "benchmark": "forecast",
            "space": space.name,
            **models_of(space.name),
            "device": args.device,
            "machine": platform.processor() or platform.machine(),
            "prompts": args.prompt_file or "built-in",
            "images": len(prompts),
            "steps": space.steps,
            "rows": results,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
