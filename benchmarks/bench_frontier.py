"""Does a searched frontier beat the heuristic schedules at matched MACs, on prompts it never saw?

One search on a trained offline shapes model (`shapes-pixart` by default) with `shapes-score`
vs MACs on the first `--num-prompts` captions of calibration_prompts/shapes_100.txt, seeds
0..S-1. Then one `ecad compare` pass (`run_compare`, the command's own code) on *other*
captions of the same file and other seeds (`--test-prompts`, seeds 100..): no caching, every
frontier schedule, the heuristics every search starts from, diffusers' caches and cache-dit,
all rendered and scored in the same process with realised MACs (counted forwards). Measuring
the frontier on the calibration captions would flatter it: the heuristics are in its initial
population, so in-sample it has beaten them by construction.

Reported per non-frontier contender: whether a frontier schedule dominates it (quality >= and
MACs <=, one of them strictly) and the quality gap at matched MACs (the best frontier quality at
MACs <= the contender's, minus its quality; positive: the frontier is better). The compare grid
(compare_grid.png: the first captions under every contender) is kept beside the result, so the
pictures along the frontier can be looked at.

    python benchmarks/bench_frontier.py --out benchmarks/results/frontier_shapes-pixart_shapes-score.json
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from bench_io import models_of, write_result  # noqa: E402

import ecad  # noqa: E402
from ecad.compare import CompareSettings, run_compare, write_compare  # noqa: E402
from ecad.prompts import read_prompts  # noqa: E402

PROMPTS = "calibration_prompts/shapes_100.txt"


def dominates(a, b, higher_is_better: bool) -> bool:
    """Row `a` dominates row `b`: no worse in quality and MACs, better in one."""
    qa, qb = (a.quality, b.quality) if higher_is_better else (-a.quality, -b.quality)
    return qa >= qb and a.macs_fraction <= b.macs_fraction and (qa > qb or a.macs_fraction < b.macs_fraction)


def gap_at_matched_macs(frontier, row, higher_is_better: bool) -> float | None:
    """Best frontier quality at MACs <= the row's, minus the row's (signed so positive = frontier better)."""
    cheaper = [f.quality for f in frontier if f.macs_fraction <= row.macs_fraction + 1e-12]
    if not cheaper:
        return None
    best = max(cheaper) if higher_is_better else min(cheaper)
    return (best - row.quality) if higher_is_better else (row.quality - best)


def per_image_sd(run_dir: Path) -> float | None:
    """Median over the search's complete evaluations of the per-image standard deviation of the
    metric (racing's running statistics: n, mean, sum of squared deviations): what one row's
    mean over n images is uncertain by, about sd / sqrt(n)."""
    from ecad.runs import load_run

    sds = []
    for p in load_run(run_dir).points:
        stats = (p.details.get("racing") or {}).get("quality") if p.complete else None
        if stats and stats[0] > 1:
            sds.append((stats[2] / (stats[0] - 1)) ** 0.5)
    return float(torch.tensor(sds).median()) if sds else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="shapes-pixart")
    ap.add_argument("--metric", default="shapes-score")
    ap.add_argument("--num-prompts", type=int, default=16, help="search captions: the file's first N")
    ap.add_argument("--seeds", type=int, default=2, help="search images per caption")
    ap.add_argument("--test-prompts", type=int, default=32, help="compare captions: the file's last N")
    ap.add_argument("--test-seeds", type=int, default=2, help="compare images per caption (seeds 100..)")
    ap.add_argument("--population", type=int, default=12)
    ap.add_argument("--generations", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0, help="search seed")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--keep", default=None, help="keep the run directory here (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="JSON result; a Markdown table and the compare grid beside it")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

    every = read_prompts(PROMPTS)
    if args.num_prompts + args.test_prompts > len(every):
        raise SystemExit(f"--num-prompts + --test-prompts must be <= {len(every)} (the captions of {PROMPTS})")
    test_prompts = tuple(every[-args.test_prompts :])
    run_dir = Path(args.keep or tempfile.mkdtemp(prefix="bench_frontier_")) / f"search_{args.seed}"

    t0 = time.perf_counter()
    frontier = ecad.search(
        space=args.space,
        metric=args.metric,
        prompts=PROMPTS,
        num_prompts=args.num_prompts,
        seeds=args.seeds,
        population=args.population,
        generations=args.generations,
        seed=args.seed,
        batch_size=args.batch_size,
        workers=0,
        out=str(run_dir),
        force=True,
    )
    search_s = time.perf_counter() - t0
    schedules = []
    for rank, point in enumerate(frontier):
        schedule = point.schedule
        schedule.name = f"frontier_{rank}"
        schedules.append(schedule)

    t0 = time.perf_counter()
    settings = CompareSettings(
        space=args.space,
        prompts=test_prompts,
        seeds=tuple(range(100, 100 + args.test_seeds)),
        metric=args.metric,
        batch_size=args.batch_size,
        baselines=True,
        repeats=1,
        warmup=0,
        grid_prompts=6,
    )
    result = run_compare(settings, schedules)
    compare_s = time.perf_counter() - t0

    rows = [r for r in result.rows if r.feasible]
    ours = [r for r in rows if r.kind == "schedule"]
    others = [r for r in rows if r.kind not in ("schedule", "no caching")]
    uncached = next(r for r in rows if r.kind == "no caching")
    out_rows = []
    for r in others:
        out_rows.append(
            {
                "name": r.name,
                "kind": r.kind,
                "quality": r.quality,
                "macs_fraction": r.macs_fraction,
                "dominated_by_frontier": any(dominates(f, r, result.higher_is_better) for f in ours),
                "frontier_gap_at_matched_macs": gap_at_matched_macs(ours, r, result.higher_is_better),
            }
        )
    by_kind: dict[str, list[int]] = {}
    for row in out_rows:
        counts = by_kind.setdefault(row["kind"], [0, 0])
        counts[0] += row["dominated_by_frontier"]
        counts[1] += 1
    gaps = [row["frontier_gap_at_matched_macs"] for row in out_rows if row["frontier_gap_at_matched_macs"] is not None]
    result_json = {
        "benchmark": "frontier vs heuristics and peers at matched MACs, on held-out captions",
        "space": args.space,
        "metric": args.metric,
        "device": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)",
        "torch": torch.__version__,
        **models_of(args.space),
        "search": {
            "prompts": f"{PROMPTS}, first {args.num_prompts}",
            "seeds": args.seeds,
            "population": args.population,
            "generations": args.generations,
            "seed": args.seed,
            "seconds": round(search_s, 1),
            "frontier_size": len(ours),
        },
        "compare": {
            "prompts": f"{PROMPTS}, last {args.test_prompts} (none of the search's)",
            "seeds": list(settings.seeds),
            "seconds": round(compare_s, 1),
            "notes": result.notes,
        },
        "uncached_quality": uncached.quality,
        "per_image_sd": per_image_sd(run_dir),
        "images_per_row": len(test_prompts) * args.test_seeds,
        "frontier": [{"name": f.name, "quality": f.quality, "macs_fraction": f.macs_fraction} for f in ours],
        "dominated": {kind: {"dominated": d, "of": n} for kind, (d, n) in sorted(by_kind.items())},
        "dominated_total": {"dominated": sum(d for d, _ in by_kind.values()), "of": len(out_rows)},
        "median_gap_at_matched_macs": float(torch.tensor(gaps).median()) if gaps else None,
        "infeasible": [{"name": r.name, "reason": r.reason} for r in result.rows if not r.feasible],
        "rows": out_rows,
    }
    out = Path(args.out) if args.out else None
    if out:
        result_json["grid"] = out.stem + "_grid.png"
    write_result(result_json, out)
    if out:
        out.with_suffix(".md").write_text(markdown(result_json))
        compare_dir = Path(tempfile.mkdtemp(prefix="bench_frontier_compare_"))
        write_compare(result, compare_dir)
        (compare_dir / "compare_grid.png").replace(out.with_name(result_json["grid"]))


def markdown(r: dict) -> str:
    s, c = r["search"], r["compare"]
    lines = [
        f"# Searched frontier vs heuristics and peers: {r['space']}, {r['metric']}",
        "",
        f"{r['device']}; torch {r['torch']}. Search: {s['prompts']} x {s['seeds']} seeds, population "
        f"{s['population']}, {s['generations']} generations, seed {s['seed']} ({s['seconds']} s, "
        f"{s['frontier_size']} frontier schedules). Measured with `ecad compare`'s code on {c['prompts']} x seeds "
        f"{c['seeds']} ({c['seconds']} s): every row in the same process, MACs realised (counted forwards) "
        "as a fraction of no caching's.",
        "",
        f"No caching: {r['metric']} {r['uncached_quality']:.4f}.",
        "",
        "| frontier schedule | quality | MACs |",
        "|---|---|---|",
        *[f"| {f['name']} | {f['quality']:.4f} | {f['macs_fraction']:.1%} |" for f in r["frontier"]],
        "",
        "| contender | kind | quality | MACs | dominated by the frontier | frontier gap at matched MACs |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["rows"]:
        gap = row["frontier_gap_at_matched_macs"]
        lines.append(
            f"| {row['name']} | {row['kind']} | {row['quality']:.4f} | {row['macs_fraction']:.1%} | "
            f"{'yes' if row['dominated_by_frontier'] else 'no'} | {'-' if gap is None else f'{gap:+.4f}'} |"
        )
    total = r["dominated_total"]
    kinds = ", ".join(f"{k}: {v['dominated']} of {v['of']}" for k, v in r["dominated"].items())
    median = r["median_gap_at_matched_macs"]
    sd, n = r.get("per_image_sd"), r.get("images_per_row")
    noise = (
        f" Noise: the metric's per-image standard deviation is {sd:.3f} (median over the search's evaluations), so "
        f"one row's mean over {n} images is uncertain by about {sd / n**0.5:.3f} (one standard error); a gap "
        "smaller than that is not a measured difference."
        if sd and n
        else ""
    )
    lines += [
        "",
        f"Dominated by the frontier: {total['dominated']} of {total['of']} ({kinds}). Median frontier gap at "
        f"matched MACs: {'-' if median is None else f'{median:+.4f}'} (positive: the frontier is better; '-' in a "
        "row: no frontier schedule is that cheap)." + noise,
    ]
    if r["infeasible"]:
        lines += ["", "Not run: " + "; ".join(f"{x['name']} ({x['reason']})" for x in r["infeasible"])]
    if r.get("grid"):
        lines += ["", f"Pictures (the first captions under every contender): `{r['grid']}`."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
