"""Do forecast cells and guidance reuse give a search a better frontier at the same budget?

The same search (space, metric, prompts x seeds, population, generations, search seed) runs once
per gene set, in this process, racing off so every candidate costs the same images and the
budgets are equal by construction:

  reuse      --cells compute,reuse (the default genome)
  forecast   --cells compute,reuse,forecast (first order)
  guidance   --cells compute,reuse --guidance-reuse on
  both       forecast cells and guidance reuse

Reported per search seed: each gene set's final hypervolume (every fully evaluated feasible
point of the run, all gene sets of a seed against one reference point: the worst quality and
cost of any of their points plus 10% of the range), and the best quality each reaches at or
under a few MACs budgets. The runs share the no-caching images, so the differences are the genes'.

    python benchmarks/bench_genes.py --out benchmarks/results/genes_shapes-pixart_fidelity.json
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
from bench_io import models_of, write_result  # noqa: E402
from bench_search_cost import curve_points, hypervolume, reference, run_search  # noqa: E402

from ecad.search.run import SearchConfig  # noqa: E402

GENE_SETS = {
    "reuse": {"cells": ["compute", "reuse"], "guidance_reuse": False},
    "forecast": {"cells": ["compute", "reuse", "forecast"], "guidance_reuse": False},
    "guidance": {"cells": ["compute", "reuse"], "guidance_reuse": True},
    "both": {"cells": ["compute", "reuse", "forecast"], "guidance_reuse": True},
}
BUDGETS = (0.25, 0.35, 0.5)  # MACs fractions of the stock pipeline


def best_under(points: list[tuple[float, float]], budget: float, higher: bool) -> float | None:
    qualities = [q for q, c in points if c <= budget]
    if not qualities:
        return None
    return max(qualities) if higher else min(qualities)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="shapes-pixart")
    ap.add_argument("--metric", default="fidelity")
    ap.add_argument("--prompts", default=SearchConfig().prompts)
    ap.add_argument("--num-prompts", type=int, default=8)
    ap.add_argument("--seeds", type=int, default=2, help="images per prompt")
    ap.add_argument("--population", type=int, default=12)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--search-seeds", default="0")
    ap.add_argument("--genes", default=",".join(GENE_SETS), help=f"gene sets to run, of {', '.join(GENE_SETS)}")
    ap.add_argument("--keep", default=None, help="keep the run directories here (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="JSON result; a Markdown table is written beside it")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    names = [g for g in args.genes.split(",") if g]
    unknown = [g for g in names if g not in GENE_SETS]
    if unknown:
        raise SystemExit(f"--genes: unknown {', '.join(unknown)}; use some of {', '.join(GENE_SETS)}")
    root = Path(args.keep or tempfile.mkdtemp(prefix="bench_genes_"))

    rows = []
    for seed in [int(s) for s in args.search_seeds.split(",")]:
        runs = {}
        for name in names:
            config = SearchConfig(
                space=args.space,
                prompts=args.prompts,
                num_prompts=args.num_prompts,
                seeds=args.seeds,
                metric=args.metric,
                population=args.population,
                generations=args.generations,
                seed=seed,
                batch_size=args.batch_size,
                racing=False,
                **GENE_SETS[name],
            )
            out = root / f"seed{seed}_{name}"
            seconds = run_search(config, out)
            images, points, higher = curve_points(out)
            runs[name] = {"seconds": round(seconds, 1), "images": images[-1], "points": points[-1]}
        ref = reference([p for r in runs.values() for p in r["points"]], higher)
        for name, r in runs.items():
            rows.append(
                {
                    "seed": seed,
                    "genes": name,
                    "hypervolume": hypervolume(r["points"], ref, higher),
                    "best_under": {str(b): best_under(r["points"], b, higher) for b in BUDGETS},
                    "candidates": len(r["points"]),
                    "images": r["images"],
                    "seconds": r["seconds"],
                }
            )
    reuse_hv = {r["seed"]: r["hypervolume"] for r in rows if r["genes"] == "reuse"}
    summary = {
        name: statistics.median(r["hypervolume"] / reuse_hv[r["seed"]] for r in rows if r["genes"] == name)
        for name in names
        if reuse_hv and all(reuse_hv.values())
    }
    result = {
        "benchmark": "search frontiers per gene set at equal budgets (racing off)",
        "space": args.space,
        "metric": args.metric,
        "device": f"{platform.machine()} CPU, {torch.get_num_threads()} thread(s)",
        "torch": torch.__version__,
        **models_of(args.space),
        "settings": {
            "prompts": f"{args.prompts}, first {args.num_prompts}",
            "seeds": args.seeds,
            "population": args.population,
            "generations": args.generations,
            "search_seeds": args.search_seeds,
        },
        "median_hv_ratio_to_reuse": summary,
        "rows": rows,
    }
    out = Path(args.out) if args.out else None
    write_result(result, out)
    if out:
        out.with_suffix(".md").write_text(markdown(result))


def markdown(r: dict) -> str:
    s = r["settings"]
    lines = [
        f"# Search frontiers per gene set: {r['space']}, {r['metric']}",
        "",
        f"{r['device']}; torch {r['torch']}. {s['prompts']} x {s['seeds']} seeds, population {s['population']}, "
        f"{s['generations']} generations, search seeds {s['search_seeds']}, racing off (equal images per run). "
        "Hypervolume of each run's fully evaluated points, one reference point per search seed; best quality at "
        "or under each MACs fraction of the stock pipeline.",
        "",
        "| seed | genes | hypervolume | " + " | ".join(f"best at <= {b:.0%} MACs" for b in BUDGETS) + " | images |",
        "|---|---|---|" + "---|" * len(BUDGETS) + "---|",
    ]
    for row in r["rows"]:
        best = [row["best_under"][str(b)] for b in BUDGETS]
        cells = " | ".join("-" if v is None else f"{v:.4f}" for v in best)
        lines.append(f"| {row['seed']} | {row['genes']} | {row['hypervolume']:.5f} | {cells} | {row['images']} |")
    ratios = ", ".join(f"{k}: {v:.3f}" for k, v in r["median_hv_ratio_to_reuse"].items())
    lines += ["", f"Median hypervolume ratio to the reuse-only genome: {ratios}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
