"""Candidate evaluations per hour of the search's worker pool, and where the workers' time goes.

Setting (issue: search throughput): the ECAD protocol scaled down to fit: N calibration prompts
x S seeds per candidate, metric fidelity (SSIM against the uncached images), M fixed random
candidate schedules (ecad.search.seeds.random_genomes, densities spread over 0.05-0.95) sent
through `RayPool.evaluate`, once with 1 worker and once with 2 (or more). Worker start-up
(pipeline load, prompt encoding, reference images) and one warm-up candidate per worker happen
before the clock starts. Reported per pool size: wall time, candidates/hour, and the share of
the workers' wall time (wall x workers) spent

  generate  applying the schedule and generating every prompt x seed (worker `timings`)
  score     scoring against the references (worker `timings`)
  dispatch  the rest of the driver-measured busy time: Ray call, argument/result transfer
  idle      no candidate in flight: driver loop, and the tail when fewer tasks than workers remain

busy = generate + score + dispatch. Targets: busy >= 0.9; with Ray on CPU, 2 workers >= 1.8x the
throughput of 1 on the tiny model.

    python benchmarks/bench_search.py --tiny --out benchmarks/results/search_cpu_tiny.json   # CPU
    python benchmarks/bench_search.py --out benchmarks/results/search_pixart_256_h100.json   # GPU
    python benchmarks/bench_search.py --dry-run-gpu-setup    # CPU check of the GPU mode's model set-up

GPU mode runs a PixArt-alpha-size transformer (XL/2, 28 blocks, hidden 1152) with random weights
at 256 px, 20 DPM-Solver steps, fp16, CFG (search_spaces/pixart-alpha-256.toml with `hub_id`
pointed at a random-weight pipeline this script saves first; random weights time exactly like
trained ones). Its text encoder is a one-layer random T5 with the real 4096-wide output and a
byte tokenizer, so prompts encode without downloads. One Ray worker per GPU.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import re  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_io import write_result  # noqa: E402

from ecad.prompts import read_prompts  # noqa: E402

PROMPTS = "calibration_prompts/image_reward_100.txt"  # SearchConfig's default; resolved like `ecad search --prompts`
GPU_SPACE = "pixart-alpha-256"
TARGET_BUSY, TARGET_SPEEDUP = 0.9, 1.8


# ------------------------------------------------------------------ GPU-mode model set-up
def save_random_pixart(directory: Path, text_length: int = 120) -> Path:
    """A PixArt-alpha XL/2 256 px pipeline with random weights, saved where `from_pretrained` reads it.

    Transformer and VAE come from bench_apply's builder, so both GPU benchmarks time the same model
    (real configs); the text encoder is a one-layer T5 with the real output width (4096) and the
    byte tokenizer of ecad.models.tiny, so prompts encode offline."""
    from bench_apply import build_pipeline
    from diffusers import PixArtAlphaPipeline
    from transformers import T5Config, T5EncoderModel

    from ecad.models.tiny import TINY_VOCAB, byte_tokenizer

    if (directory / "model_index.json").exists():
        return directory
    # built in fp32 on the CPU (saved in fp16 below); the builder seeds torch with 0 and draws the
    # transformer then the VAE, and the text encoder continues that random stream
    from ecad.spaces import load_space

    base = build_pipeline(load_space(GPU_SPACE), device="cpu", dtype=torch.float32)
    text_encoder = T5EncoderModel(
        T5Config(
            vocab_size=TINY_VOCAB,
            d_model=4096,
            d_kv=64,
            d_ff=256,
            num_layers=1,
            num_heads=2,
            relative_attention_num_buckets=8,
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
        )
    ).eval()
    pipe = PixArtAlphaPipeline(
        tokenizer=byte_tokenizer(text_length),
        text_encoder=text_encoder,
        vae=base.vae.eval(),
        transformer=base.transformer.eval(),
        scheduler=base.scheduler,
    )
    pipe.to(torch.float16)  # half the disk; the space loads fp16 on GPU (fp32 on CPU) anyway
    tmp = directory.with_name(directory.name + f".{os.getpid()}.tmp")
    pipe.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(directory)
    return directory


def write_random_space(workdir: Path, model_dir: Path) -> Path:
    """search_spaces/pixart-alpha-256.toml with its name and hub_id replaced: a space file for the random model."""
    from ecad.resources import shipped_dir

    text = (shipped_dir("search_spaces") / f"{GPU_SPACE}.toml").read_text()
    text = re.sub(r"(?m)^name = .*$", f'name = "{GPU_SPACE}-random"', text, count=1)  # not [[blocks]] name
    text = re.sub(r"(?m)^hub_id = .*$", lambda _: f"hub_id = {json.dumps(str(model_dir.resolve()))}", text, count=1)
    path = workdir / f"{GPU_SPACE}-random.toml"
    path.write_text(text)
    return path


def check_gpu_setup(space_path: Path, prompts: tuple[str, ...], run_call: bool) -> dict:
    """What the GPU mode relies on, checked on CPU: the space loads, `load_pipeline` reads the saved
    model, the layout matches the space, prompts encode to (n, text_length, 4096), and (optionally)
    a two-step 256 px call gives finite images."""
    from ecad.models import adapter_for_pipeline, load_pipeline
    from ecad.spaces import load_space

    t0 = time.perf_counter()
    space = load_space(space_path)
    pipe = load_pipeline(space, device="cpu")
    pipe.set_progress_bar_config(disable=True)
    layout = adapter_for_pipeline(pipe).layout_of(pipe.transformer)
    assert layout == space.layout, (layout.describe(), space.layout.describe())
    params = sum(p.numel() for p in pipe.transformer.parameters())
    with torch.inference_mode():
        pe, pm, ne, nm = pipe.encode_prompt(
            list(prompts[:2]),
            do_classifier_free_guidance=True,
            negative_prompt="",
            device="cpu",
            clean_caption=False,
            max_sequence_length=space.text_length,
        )
    assert pe.shape == (2, space.text_length, 4096), pe.shape
    out = {
        "space": space.name,
        "hub_id": space.hub_id,
        "transformer_params": params,
        "layout": space.layout.describe(),
        "prompt_embeds": list(pe.shape),
        "load_s": round(time.perf_counter() - t0, 1),
    }
    if run_call:
        t1 = time.perf_counter()
        call = {
            **space.call_kwargs(),
            "num_inference_steps": 2,
        }  # diffusers' 1-step PixArt path expects a DMD scheduler
        call.pop("max_sequence_length")
        with torch.inference_mode():
            images = pipe(
                prompt_embeds=pe[:1],
                prompt_attention_mask=pm[:1],
                negative_prompt_embeds=ne[:1],
                negative_prompt_attention_mask=nm[:1],
                negative_prompt=None,
                output_type="pt",
                generator=torch.Generator().manual_seed(0),
                **call,
            ).images
        out.update(
            two_step_image=list(images.shape),
            two_step_finite=bool(torch.isfinite(images).all()),
            two_step_s=round(time.perf_counter() - t1, 1),
        )
    return out


# ------------------------------------------------------------------ measurement
def make_tasks(space_name: str, n: int, seed: int = 0) -> list[tuple[str, dict]]:
    from ecad.search.genome import GenomeSpec, genome_hash
    from ecad.search.seeds import random_genomes
    from ecad.spaces import load_space

    space = load_space(space_name)
    spec = GenomeSpec.for_space(space)
    genomes = random_genomes(spec, np.random.default_rng(seed), n)
    return [(genome_hash(g), spec.to_schedule(g, space, name=genome_hash(g)).to_json()) for g in genomes]


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat (Linux), to see what else ran during a pass."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle, sum(fields[:8])


def _pass(pool, tasks, workers: int) -> dict:
    """One timed pass of all tasks through a warm pool."""
    for w in pool.workers:
        w.busy_s, w.done = 0.0, 0
    results: dict[str, dict] = {}
    ticks0 = _cpu_ticks()
    t0 = time.perf_counter()
    pool.evaluate(tasks, results.__setitem__)
    wall = time.perf_counter() - t0
    ticks1 = _cpu_ticks()
    assert len(results) == len(tasks), (len(results), len(tasks))
    capacity = wall * workers
    busy = sum(w.busy_s for w in pool.workers)
    timings = [r.get("timings", {}) for r in results.values()]  # a worker error comes back without timings
    gen = sum(t.get("generate_s", 0.0) for t in timings)
    score = sum(t.get("score_s", 0.0) for t in timings)
    per_candidate = [t.get("generate_s", 0.0) + t.get("score_s", 0.0) for t in timings]
    machine = None
    if ticks0 and ticks1 and ticks1[1] > ticks0[1]:
        machine = round((ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1]), 3)
    return dict(
        wall_s=round(wall, 3),
        per_hour=round(len(tasks) / wall * 3600, 1),
        busy_share=round(busy / capacity, 4),
        generate_share=round(gen / capacity, 4),
        score_share=round(score / capacity, 4),
        dispatch_share=round((busy - gen - score) / capacity, 4),
        idle_share=round(1 - busy / capacity, 4),
        candidate_s_mean=round(float(np.mean(per_candidate)), 4),
        candidate_s_min_max=[round(float(np.min(per_candidate)), 4), round(float(np.max(per_candidate)), 4)],
        feasible=sum(bool(r.get("feasible")) for r in results.values()),
        done_per_worker=[w.done for w in pool.workers],
        busy_s_per_worker=[round(w.busy_s, 3) for w in pool.workers],
        # share of all the machine's CPUs busy during the pass (every process): on a quiet 2-core
        # machine ~workers/2; more means other processes competed with the workers
        machine_cpu_busy=machine,
    )


def measure(config, workers: int, tasks, warmup, use_gpu: bool, repeats: int) -> dict:
    """One pool size: start (untimed), one warm-up candidate per worker (untimed), then `repeats`
    timed passes over all tasks; the row reports the fastest pass (least disturbed by other
    processes), every pass is kept under `passes`."""
    from ecad.distributed.pool import RayPool

    t0 = time.perf_counter()
    pool = RayPool(config, workers, use_gpu=use_gpu)
    start_s = time.perf_counter() - t0
    try:
        pool.evaluate(warmup[:workers], lambda key, result: None)  # one per worker: all start idle
        passes = [_pass(pool, tasks, workers) for _ in range(repeats)]
        init = [w.info.get("init_seconds") for w in pool.workers]
    finally:
        pool.shutdown()
    best = min(passes, key=lambda p: p["wall_s"])
    return dict(
        workers=workers,
        candidates=len(tasks),
        **best,
        per_hour_median=round(float(np.median([p["per_hour"] for p in passes])), 1),
        pool_start_s=round(start_s, 2),
        worker_init_s=init,
        passes=[{k: p[k] for k in ("wall_s", "per_hour", "busy_share", "machine_cpu_busy")} for p in passes],
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny-pixart on CPU (default when no GPU)")
    ap.add_argument(
        "--workers",
        type=int,
        nargs="+",
        default=None,
        help="pool sizes to measure (default: 1 2 on CPU; 1 and the GPU count on GPU)",
    )
    ap.add_argument("--prompts", type=int, default=None, help="N prompts (default 16 tiny, 32 GPU)")
    ap.add_argument("--seeds", type=int, default=None, help="seeds per prompt (default 4 tiny, 2 GPU)")
    ap.add_argument("--candidates", type=int, default=None, help="M candidates per pool size (default 48 tiny, 16 GPU)")
    ap.add_argument("--batch", type=int, default=None, help="generation batch size (default 16 tiny, 64 GPU)")
    ap.add_argument("--repeats", type=int, default=3, help="timed passes per pool size; the fastest is reported")
    ap.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="GPU mode: where the random-weight pipeline is saved/reused (default: a temporary directory)",
    )
    ap.add_argument(
        "--dry-run-gpu-setup",
        action="store_true",
        help="build, save and load the GPU mode's random full-size pipeline on CPU, encode prompts, "
        "run two 256 px steps, and exit (no Ray, no timing)",
    )
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    cuda = torch.cuda.is_available() and not args.tiny and not args.dry_run_gpu_setup
    tiny = not cuda and not args.dry_run_gpu_setup
    n_prompts = args.prompts or (16 if tiny else 32)
    n_seeds = args.seeds or (4 if tiny else 2)
    n_cand = args.candidates or (48 if tiny else 16)
    batch = args.batch or (16 if tiny else 64)
    prompts = read_prompts(PROMPTS, n_prompts)  # same reader as `ecad search`

    with tempfile.TemporaryDirectory(prefix="ecad-bench-search-") as tmp:
        tmp = Path(tmp)
        if args.dry_run_gpu_setup or cuda:
            model_dir = args.model_dir or (tmp / "pixart-alpha-256-random")
            t0 = time.perf_counter()
            save_random_pixart(model_dir)
            print(f"random PixArt-alpha XL/2 pipeline at {model_dir} ({time.perf_counter() - t0:.0f} s)", flush=True)
            space = str(write_random_space(tmp, model_dir))
            if args.dry_run_gpu_setup:
                print(json.dumps(check_gpu_setup(Path(space), prompts, run_call=True)))
                return
        else:
            space = "tiny-pixart"

        import ray

        from ecad.distributed.worker import WorkerConfig

        ngpu = torch.cuda.device_count() if cuda else 0
        sizes = args.workers or ([1, 2] if not cuda else sorted({1, ngpu}))
        if cuda:
            ray.init(num_gpus=ngpu, num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(num_cpus=max(2, max(sizes)), include_dashboard=False, log_to_driver=False)
        config = WorkerConfig(
            space=space,
            prompts=prompts,
            seeds=tuple(range(n_seeds)),
            metric="fidelity",
            cost="macs",
            batch_size=batch,
            reference_cache=str(tmp / "references"),
            threads=1,
        )
        tasks = make_tasks(space, n_cand + max(sizes), seed=0)
        warmup, tasks = tasks[-max(sizes) :], tasks[:n_cand]
        rows = []
        try:
            for w in sizes:
                rows.append(measure(config, w, tasks, warmup, use_gpu=cuda, repeats=args.repeats))
                print(json.dumps(rows[-1]), flush=True)
        finally:
            ray.shutdown()

    by = {r["workers"]: r for r in rows}
    speedup = round(by[2]["per_hour"] / by[1]["per_hour"], 3) if 1 in by and 2 in by else None
    speedup_median = round(by[2]["per_hour_median"] / by[1]["per_hour_median"], 3) if speedup else None
    result = dict(
        device=torch.cuda.get_device_name() if cuda else (platform.processor() or platform.machine() or "cpu"),
        cpu_count=os.cpu_count(),
        torch=torch.__version__,
        ray=ray.__version__,
        mode="gpu" if cuda else "tiny-cpu",
        settings=dict(
            space=GPU_SPACE + "-random" if cuda else space,
            prompts=n_prompts,
            seeds=n_seeds,
            images_per_candidate=n_prompts * n_seeds,
            batch_size=batch,
            candidates=n_cand,
            metric="fidelity",
            torch_threads_per_worker=1,
            pool="RayPool",
            repeats=args.repeats,
            timing="worker start-up and one warm-up candidate per worker excluded; rows give the "
            "fastest of `repeats` passes",
        ),
        rows=rows,
        speedup_2_vs_1=speedup,
        speedup_2_vs_1_median_passes=speedup_median,
        targets=dict(busy_share=TARGET_BUSY, speedup_2_vs_1=TARGET_SPEEDUP),
        met=dict(
            busy_share=all(r["busy_share"] >= TARGET_BUSY for r in rows),
            speedup_2_vs_1=None if speedup is None else speedup >= TARGET_SPEEDUP,
        ),
    )
    write_result(result, args.out)


if __name__ == "__main__":
    main()
