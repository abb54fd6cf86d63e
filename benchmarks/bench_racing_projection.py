"""What racing would save on a protocol larger than a CPU can render: replay the stop rule on the
per-image scores of a finished plain search's candidates, resampled to N images per candidate.

A plain run (racing off) records each candidate's mean only, so this script first renders every
feasible candidate of RUN_DIR once more on the run's own protocol, in the racing order, and keeps
the per-image scores (and, for a reference-free metric, the no-caching scores they pair with);
the means reproduce the recorded qualities (checked). Then, per replicate, it draws N of those
images with replacement (the same draw for every candidate, so pairs stay pairs) and replays
ecad.search.racing's rule in the run's evaluation order: chunks of `--chunk` images, the
confidence bound of RaceState, a stop when the optimistic point is dominated by an earlier
candidate's full-protocol point, or (with a tolerance) adds at most that share of the earlier
candidates' hypervolume. Reported per (N, tolerance): images racing generates as a share of
evaluating every candidate whole, candidates stopped, stops of candidates the full protocol puts
on the frontier (must be 0 at tolerance 0, within the error level), and the final hypervolume of
the complete points against that of all points (tolerance's price).

It is a projection, labelled as such: resampled images repeat the measured ones, and the replay
judges each candidate against all earlier ones, where a search judges a wave against the waves
before it. What it answers is how the image share moves with the protocol's size, which a
1,000-image protocol on a GPU would measure directly.

    python benchmarks/bench_racing_projection.py RUN_DIR --sizes 64,1000 --tolerances 0,0.001,0.005 \\
        --out benchmarks/results/racing_projection_shapes-pixart_shapes-score.json
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import moocore  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_io import models_of, write_result  # noqa: E402

from ecad.runs import load_run, read_evaluation_records  # noqa: E402
from ecad.search.racing import DEFAULT_CONFIDENCE, RaceState, chunk_bounds, dominated, negligible  # noqa: E402


def collect(run_dir: Path) -> dict[str, Any]:
    """Per-image scores in racing order of every feasible candidate of a finished run."""
    from ecad.distributed.worker import CandidateEvaluator, WorkerConfig
    from ecad.prompts import read_prompts
    from ecad.search.genome import GenomeSpec, hex_to_bits
    from ecad.spaces import load_space

    run = load_run(run_dir)
    cfg = run.config
    if cfg.get("racing"):
        raise SystemExit(f"{run_dir}: a raced run has partial candidates; give a run searched with --racing off")
    space = load_space(cfg["space"])
    spec = GenomeSpec.for_config(space, cfg)
    prompts = tuple(read_prompts(cfg["prompts"], cfg["num_prompts"]))
    seeds = tuple(range(int(cfg["seeds"])))
    n = len(prompts) * len(seeds)
    worker = CandidateEvaluator(
        WorkerConfig(
            space=space,
            prompts=prompts,
            seeds=seeds,
            metric=cfg["metric"],
            metric_options=cfg.get("metric_options") or {},
            batch_size=int(cfg["batch_size"]),
            chunk_size=n,  # one chunk: the whole protocol, in the racing order
            device="cpu",
        )
    )
    rows = []
    for r in read_evaluation_records(run_dir / "evaluations.jsonl"):
        if not r["feasible"]:
            continue
        schedule = spec.to_schedule(hex_to_bits(r["genome"], spec.size), space)
        res = worker.evaluate(schedule.to_json(), chunk=0)
        if abs(float(np.mean(res["per_image"])) - r["values"][0]) > 1e-6:
            raise SystemExit(
                f"{r['key']}: rendered again it scores {np.mean(res['per_image'])}, the run says {r['values'][0]}"
            )
        rows.append(
            {
                "key": r["key"],
                "cost": r["values"][1],
                "per_image": res["per_image"],
                "reference": res["reference_per_image"],
            }
        )
    return {"run": str(run_dir), "config": cfg, "higher_is_better": run.higher_is_better, "images": n, "rows": rows}


def replay(data: dict[str, Any], size: int, chunk: int, tolerance: float, draw: np.ndarray) -> dict[str, Any]:
    """The stop rule over the candidates in evaluation order, on the images `draw` picks."""
    higher = bool(data["higher_is_better"])
    scores = np.array([r["per_image"] for r in data["rows"]])[:, draw]
    reference = data["rows"][0]["reference"]
    reference = None if reference is None else np.asarray(reference)[draw]
    quality = scores.mean(axis=1)
    cost = np.array([r["cost"] for r in data["rows"]])
    sign = -1.0 if higher else 1.0
    pts = np.column_stack([sign * quality, cost])
    # worst + 10% of the range, as the search's reference point, but over every candidate (the search
    # fixes its own from generation 0's population)
    ref = pts.max(axis=0) + 0.1 * np.maximum(np.ptp(pts, axis=0), 1e-9)
    bounds = chunk_bounds(size, chunk)
    archive: list[tuple[float, float]] = []
    used = stopped = wrong = 0
    for i in range(len(quality)):
        state = RaceState(len(bounds), size)
        for k, (a, b) in enumerate(bounds):
            result: dict[str, Any] = {"chunk": k, "per_image": scores[i, a:b].tolist()}
            if reference is not None:
                result |= {"reference_per_image": reference[a:b].tolist(), "reference_summary": float(reference.mean())}
            state.add(result)
            if state.complete:
                break
            bound = state.bound(DEFAULT_CONFIDENCE, higher)
            if dominated(bound, cost[i], archive, higher) or negligible(
                bound, cost[i], archive, higher, ref, tolerance
            ):
                state.stopped = True
                break
        used += state.quality.n
        if state.stopped:
            stopped += 1
            wrong += not dominated(quality[i], cost[i], archive, higher)
        else:
            archive.append((float(quality[i]), float(cost[i])))

    def hv(points: list[tuple[float, float]]) -> float:
        p = np.array([[sign * q, c] for q, c in points]).reshape(-1, 2)
        p = p[(p < ref).all(axis=1)]
        return float(moocore.hypervolume(p, ref=ref)) if len(p) else 0.0

    everything = hv([(float(q), float(c)) for q, c in zip(quality, cost)])
    return {
        "images_share": used / (len(quality) * size),
        "stopped": stopped,
        "stopped_but_not_dominated": wrong,
        "hv_complete_over_all": hv(archive) / everything if everything else 1.0,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("run_dir", help="a finished search run with --racing off")
    ap.add_argument("--sizes", default="64,1000", help="images per candidate to project to (the run's own: its size)")
    ap.add_argument("--chunks", type=int, default=10, help="chunks per candidate at each size")
    ap.add_argument("--tolerances", default="0,0.001,0.005")
    ap.add_argument("--replicates", type=int, default=3)
    ap.add_argument("--scores", default=None, help="per-image scores JSON to reuse (written by an earlier call)")
    ap.add_argument("--out", default=None, help="JSON result; a Markdown table is written beside it")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    scores_file = Path(args.scores) if args.scores else None
    if scores_file is not None and scores_file.exists():
        data = json.loads(scores_file.read_text())
    else:
        data = collect(Path(args.run_dir))
        if scores_file is not None:
            scores_file.write_text(json.dumps(data))
    measured = data["images"]
    rows = []
    for size in (int(s) for s in args.sizes.split(",")):
        chunk = max(1, math.ceil(size / args.chunks))
        for tol in (float(t) for t in args.tolerances.split(",")):
            reps = []
            for rep in range(args.replicates if size != measured else 1):
                draw = (
                    np.arange(measured) if size == measured else np.random.default_rng(rep).integers(0, measured, size)
                )
                reps.append(replay(data, size, chunk, tol, draw))
            share = [r["images_share"] for r in reps]
            rows.append(
                {
                    "images_per_candidate": size,
                    "chunk": chunk,
                    "tolerance": tol,
                    "replicates": len(reps),
                    "images_share": float(np.mean(share)),
                    "images_share_range": [min(share), max(share)],
                    "fewer_images": 1.0 / float(np.mean(share)),
                    "stopped": float(np.mean([r["stopped"] for r in reps])),
                    "stopped_but_not_dominated": [r["stopped_but_not_dominated"] for r in reps],
                    "hv_complete_over_all": float(np.mean([r["hv_complete_over_all"] for r in reps])),
                    "resampled": size != measured,
                }
            )
    cfg = data["config"]
    result = {
        "device": platform.machine(),
        "cpu_count": os.cpu_count(),
        **models_of(cfg["space"]),
        "settings": {
            "run": data["run"],
            "space": cfg["space"],
            "metric": cfg["metric"],
            "measured_images_per_candidate": measured,
            "candidates": len(data["rows"]),
            "population": cfg["population"],
            "generations": cfg["generations"],
            "seed": cfg["seed"],
            "confidence": DEFAULT_CONFIDENCE,
            "chunks_per_candidate": args.chunks,
        },
        "rows": rows,
    }
    if args.out:
        write_result(result, Path(args.out))
        Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    lines = [
        f"Racing projection (replayed stop rule, not a search): {s['space']}, {s['metric']}, the "
        f"{s['candidates']} candidates of a plain search (population {s['population']}, {s['generations']} "
        f"generations, seed {s['seed']}) rendered on {s['measured_images_per_candidate']} images each; larger "
        f"protocols by resampling those images (labelled). {s['chunks_per_candidate']} chunks per candidate, "
        f"confidence {s['confidence']}.",
        "",
        "| images per candidate | tolerance | images share | fewer images | stopped | stopped yet not dominated "
        "| HV of complete points / all |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        size = f"{r['images_per_candidate']}" + (" (resampled)" if r["resampled"] else " (measured)")
        lo, hi = r["images_share_range"]
        spread = f" ({lo:.1%}-{hi:.1%})" if r["replicates"] > 1 else ""
        lines.append(
            f"| {size} | {r['tolerance']:g} | {r['images_share']:.1%}{spread} | {r['fewer_images']:.2f}x | "
            f"{r['stopped']:.0f} | {r['stopped_but_not_dominated']} | {r['hv_complete_over_all']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
