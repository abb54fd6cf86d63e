"""What racing and screening save: hypervolume of fully evaluated points against images
generated, plain search vs racing vs racing + screening (issue: racing, paired estimates and cheap
screening).

For each search seed, the same search (space, metric, prompts x seeds, population, generations)
runs once per method in this process (`--workers 0`: no Ray, so the runs differ only in the method):

  plain      racing off: every candidate on the whole protocol
  racing     racing on (ecad.search.racing), then extended generation by generation (`--resume
             --generations`) until it has generated at least as many images as the plain run
  screening  racing + screening (ecad.search.screening: each generation's races ordered by a
             ridge model of quality fitted to the earlier generations), extended the same way
  tolerance  racing with `--racing-tolerance` (`--tolerance`, default 0.001): a race also stops once
             even its optimistic point would add at most that share of the hypervolume; extended
             the same way (not in the default --methods)

Each run's curve is read back from its run directory: after each generation, the images
generated so far (gen_NNN.json `images_total`) and the hypervolume of every fully evaluated
feasible point so far (the archive, not the population: the search keeps every point it
measured), all curves of a setting against one reference point (the worst quality and cost of
any complete point of any of its runs, plus 10% of the range), so they compare. Reported:

  images_to_95          images a method needs until its archive reaches 95% of the plain run's
                        final hypervolume (None: never within its images), per seed and the median
  ratio_95              plain's images_to_95 over the method's: how many times fewer images (target >= 4)
  images_to_95_of_gain  the same for 95% of the hypervolume the plain search gains over generation
                        0 (the same population in every method: the seeds' heuristics already hold
                        most of the final hypervolume on short searches, so images_to_95 mostly
                        times generation 0)
  hv_at_plain_images    the method's hypervolume at the plain run's total images vs plain's final
                        one (target: not lower)

`--space` and `--metric` choose the landscape: the trained offline models (`shapes-pixart`,
`shapes-flux`, with `fidelity` and `shapes-score`), or the random-weight tiny spaces, which only
exercise the machinery.

    python benchmarks/bench_search_cost.py --space shapes-flux --prompts calibration_prompts/shapes_100.txt \
        --num-prompts 32 --seeds 2 --population 12 --generations 15 --batch-size 8 \
        --methods plain,racing,tolerance --tolerance 0.005 \
        --out benchmarks/results/search_cost_shapes-flux_fidelity_15gen.json

The planning figure (`--plan-generations`, ECAD's protocol: 100 prompts x 10 seeds, population
72) scales the measured images-per-candidate of the last method to that search, and turns images
into GPU-hours with the no-caching ms/image of PixArt-alpha 256 px (an upper bound per image, since
searched candidates compute less): the `[measured]` time of the pixart-alpha-256 space (H200, from
bench_apply.py) where the space records one, else the roofline prediction for an H100
(results/roofline_pixart_256_b100_h100.json), labelled as such. `--replan RESULT.json` recomputes
only that figure in a recorded result (and its Markdown), from the share it recorded.
"""

from __future__ import annotations

import os

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import moocore  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from bench_io import models_of, write_result  # noqa: E402

from ecad.frontier import pareto_front  # noqa: E402
from ecad.runs import load_run, read_evaluation_records  # noqa: E402
from ecad.search.run import ExecConfig, SearchConfig, SearchRun, resume_config  # noqa: E402
from ecad.spaces import load_space  # noqa: E402

ROOT = Path(__file__).resolve().parent
ROOFLINE = ROOT / "results" / "roofline_pixart_256_b100_h100.json"
PLANNING_SPACE = "pixart-alpha-256"
TARGET_RATIO = 4.0
ECAD_PROTOCOL = {"prompts": 100, "seeds": 10, "population": 72}
# the methods compared: what each sets on top of the common search settings
METHODS: dict[str, dict[str, Any]] = {
    "plain": {"racing": False},
    "racing": {"racing": True},
    "screening": {"racing": True, "screening": True},
    "tolerance": {"racing": True},  # + racing_tolerance=--tolerance
}
DEFAULT_TOLERANCE = 0.001


# ------------------------------------------------------------------ runs
def run_search(config: SearchConfig, out: Path, budget: int | None = None, step: int = 2) -> float:
    """Run the search into `out`; with `budget`, extend it (resume with more generations) until
    it has generated at least `budget` images. Returns the wall seconds."""
    t0 = time.perf_counter()
    SearchRun(config, ExecConfig(out=str(out), workers=0, quiet=True)).run()
    generations = config.generations
    while budget is not None and images_total(out) < budget and generations < 20 * max(1, config.generations):
        generations += step
        resumed = resume_config(str(out), {"generations": generations})
        SearchRun(resumed, ExecConfig(out=str(out), workers=0, quiet=True), resume=True).run()
    return time.perf_counter() - t0


def images_total(out: Path) -> int:
    gens = sorted(out.glob("gen_*.json"))
    return int(json.loads(gens[-1].read_text())["images_total"]) if gens else 0


def curve_points(out: Path) -> tuple[list[int], list[list[tuple[float, float]]], bool]:
    """Per generation: images so far and the complete feasible (quality, cost) points so far."""
    run = load_run(out)
    gens = sorted(run.generations, key=lambda g: g["generation"])
    images = [int(g["images_total"]) for g in gens]
    points: list[list[tuple[float, float]]] = []
    for g in gens:
        upto = [p for p in run.points if p.feasible and p.complete and p.generation <= g["generation"]]
        # a race completed in a later generation than it started counts from when it completed
        upto = [p for p in upto if _completed_in(p) <= g["generation"]]
        points.append([(p.quality, p.cost) for p in upto])
    return images, points, run.higher_is_better


def _completed_in(point) -> int:
    racing = point.details.get("racing")
    return int(racing.get("generation", point.generation)) if isinstance(racing, dict) else point.generation


def completions(out: Path) -> dict[str, Any]:
    """How a racing run's complete candidates stood when they completed: those not dominated by the
    archive they were judged against had to be evaluated whole under any rule that puts only
    complete points on the frontier, so their images bound what racing can save on this landscape."""
    from ecad.search.racing import dominated, raced_in

    latest: dict[str, dict] = {}
    for r in read_evaluation_records(out / "evaluations.jsonl"):
        latest[r["key"]] = r
    races = {k: r for k, r in latest.items() if r["feasible"] and isinstance(r["details"].get("racing"), dict)}
    done = {k: r for k, r in races.items() if r["details"]["racing"]["complete"]}

    higher = load_run(out).higher_is_better
    needed = 0
    for k, r in done.items():
        archive = [
            (o["values"][0], o["values"][1])
            for k2, o in done.items()
            if k2 != k and raced_in(k2, o["details"]) < raced_in(k, r["details"])
        ]
        needed += not dominated(r["values"][0], r["values"][1], archive, higher)
    per = next(iter(races.values()))["details"]["racing"]["total_images"] if races else 0
    return {
        "candidates": len(races),
        "complete": len(done),
        "complete_and_not_dominated_when_done": needed,
        "images": sum(r["details"]["racing"]["n"] for r in races.values()),
        "images_floor": needed * per,
    }


def prefix_share(out: Path) -> float:
    """Issue item 3, measured before building it: the share of denoising steps, over the images a run
    rendered for candidates, that precede each candidate's first reused (or forecast) component or
    skipped timestep. Up to there a candidate's trajectory is the uncached one, so stored no-caching
    latents could replace those steps exactly; what prefix sharing could save at most."""
    from ecad.search.genome import GenomeSpec, hex_to_bits
    from ecad.spaces import load_space

    run = load_run(out)
    space = load_space(run.config["space"])
    spec = GenomeSpec.for_space(space)
    saved = total = 0.0
    counted: dict[str, int] = {}  # a race writes one record per chunk: count each chunk's images once
    for r in read_evaluation_records(out / "evaluations.jsonl"):
        if not r["feasible"]:
            continue
        racing = r["details"].get("racing")
        if isinstance(racing, dict):
            images = racing["n"] - counted.get(r["key"], 0)
            counted[r["key"]] = racing["n"]
        else:
            images = len_protocol(run)
        schedule = spec.to_schedule(hex_to_bits(r["genome"], spec.size), space)
        steps = schedule.grid.shape[0]
        reused = [s for s in range(steps) if not schedule.grid[s].all()]
        first = min([reused[0]] if reused else [steps])
        if schedule.timesteps is not None:
            skipped = [i for i, t in enumerate(schedule.timesteps) if t != i]
            first = min([first] + ([skipped[0]] if skipped else []))
        saved += images * first / steps
        total += images
    return saved / total if total else 0.0


def len_protocol(run) -> int:
    return int(run.config["num_prompts"] or 0) * int(run.config["seeds"])


def hypervolume(points: list[tuple[float, float]], ref: np.ndarray, higher: bool) -> float:
    if not points:
        return 0.0
    sign = -1.0 if higher else 1.0
    pts = np.array([[sign * q, c] for q, c in points])
    pts = pts[(pts < ref).all(axis=1)]
    return float(moocore.hypervolume(pts, ref=ref)) if len(pts) else 0.0


def reference(all_points: list[tuple[float, float]], higher: bool) -> np.ndarray:
    sign = -1.0 if higher else 1.0
    pts = np.array([[sign * q, c] for q, c in all_points])
    hi, lo = pts.max(axis=0), pts.min(axis=0)
    return hi + 0.1 * np.maximum(hi - lo, 1e-9)


def first_reaching(images: list[int], hv: list[float], target: float) -> int | None:
    return next((n for n, h in zip(images, hv) if h >= target - 1e-15), None)


def hv_at(images: list[int], hv: list[float], budget: int) -> float:
    """The hypervolume after the last generation that ended within `budget` images."""
    within = [h for n, h in zip(images, hv) if n <= budget]
    return within[-1] if within else 0.0


# ------------------------------------------------------------------ planning
def planning_ms_per_image() -> tuple[float, str]:
    """The no-caching ms/image of PixArt-alpha 256 px: the space's measured GPU time (the same figure
    `ecad search --dry-run` plans with), else the roofline prediction, each labelled as what it is.
    No caching is an upper bound per candidate image, since searched candidates compute less."""
    space = load_space(PLANNING_SPACE)
    if space.measured_ms_per_image is not None:
        return space.measured_ms_per_image, (
            f"measured: {PLANNING_SPACE} ({space.steps} steps, CFG), {space.measured_on}, "
            "full-size transformer with random weights (an upper bound per candidate image)"
        )
    data = json.loads(ROOFLINE.read_text())
    row = next(r for r in data["rows"] if r["schedule"] == "no_caching" and r["gpu"].startswith("H100"))
    return float(row["ms_per_image"]), (
        f"roofline prediction (not a measurement): PixArt-alpha 256 px, batch {data['setting']['batch']}, "
        f"{data['setting']['steps']} steps, CFG, {row['gpu']}, no-caching ms/image (an upper bound per candidate image)"
    )


def plan(generations: int, images_share: float, method: str = "racing") -> dict[str, Any]:
    p = ECAD_PROTOCOL
    per_candidate = p["prompts"] * p["seeds"]
    candidates = p["population"] * (generations + 1)  # at most: one new population per generation
    plain = candidates * per_candidate
    ms, label = planning_ms_per_image()
    racing = plain * images_share
    return {
        "search": f"ECAD protocol: {p['prompts']} prompts x {p['seeds']} seeds, population {p['population']}, "
        f"{generations} generations (at most {candidates} candidates)",
        "generations": generations,
        "images_plain": plain,
        "images_racing": round(racing),
        "method": method,
        "images_share_used": images_share,
        "gpu_hours_plain": round(plain * ms / 3.6e6, 1),
        "gpu_hours_racing": round(racing * ms / 3.6e6, 1),
        "ms_per_image": ms,
        "ms_per_image_source": label,
        "caveat": "the share is the one measured here at equal generations, on this benchmark's protocol "
        "and space; on 1,000 images per candidate the bounds are tighter (more stops), on a real model's "
        "landscape the share may differ either way: it was measured on the small offline models, on a CPU",
    }


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--space", default="tiny-pixart")
    ap.add_argument("--metric", default="fidelity")
    ap.add_argument("--prompts", default=SearchConfig().prompts, help="prompt file (shapes models: shapes captions)")
    ap.add_argument("--num-prompts", type=int, default=20)
    ap.add_argument("--seeds", type=int, default=5, help="images per prompt")
    ap.add_argument("--population", type=int, default=16)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--batch-size", type=int, default=10)
    ap.add_argument("--racing-chunk", type=int, default=None, help="images per chunk (default: auto)")
    ap.add_argument("--search-seeds", default="0,1,2")
    ap.add_argument("--methods", default="plain,racing,screening", help="compared methods, plain first")
    ap.add_argument(
        "--tolerance", type=float, default=DEFAULT_TOLERANCE, help="the tolerance method's --racing-tolerance"
    )
    ap.add_argument("--plan-generations", type=int, default=50)
    ap.add_argument("--keep", default=None, help="keep the run directories here (default: a temporary folder)")
    ap.add_argument(
        "--reuse", action="store_true", help="read the runs already in --keep (from an earlier call) instead of running"
    )
    ap.add_argument("--out", default=None, help="JSON result; a Markdown table is written beside it")
    ap.add_argument(
        "--replan",
        default=None,
        metavar="RESULT.json",
        help="recompute only the planning figure of a recorded result (and its .md) from its recorded share",
    )
    args = ap.parse_args(argv)
    if args.replan:
        return replan(Path(args.replan))
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    seeds = [int(s) for s in args.search_seeds.split(",")]
    base = dict(
        space=args.space,
        metric=args.metric,
        prompts=args.prompts,
        num_prompts=args.num_prompts,
        seeds=args.seeds,
        population=args.population,
        generations=args.generations,
        batch_size=args.batch_size,
        racing_chunk=args.racing_chunk,
    )
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_search_cost_"))
    methods = [m for m in args.methods.split(",") if m]
    if methods[0] != "plain" or any(m not in METHODS for m in methods):
        ap.error(f"--methods must start with plain and name only {', '.join(METHODS)}")
    runs: dict[int, dict[str, tuple[Path, float]]] = {}
    for seed in seeds:
        walls_file = root / f"seed{seed}_wall.json"
        walls = json.loads(walls_file.read_text()) if walls_file.exists() else {}
        if isinstance(walls, list):  # written before screening: [plain, racing]
            walls = dict(zip(("plain", "racing"), walls))
        budget = None
        for m in methods:
            out = root / f"seed{seed}_{m}"
            if not (args.reuse and m in walls):
                settings = METHODS[m] | ({"racing_tolerance": args.tolerance} if m == "tolerance" else {})
                walls[m] = run_search(SearchConfig(**base, seed=seed, **settings), out, budget=budget)
                walls_file.write_text(json.dumps(walls))
            budget = images_total(root / f"seed{seed}_plain")  # the others are extended to plain's images
        runs[seed] = {m: (root / f"seed{seed}_{m}", walls[m]) for m in methods}
        print(f"seed {seed}: " + ", ".join(f"{m} {walls[m]:.0f} s" for m in methods), flush=True)

    rows = []
    for seed, dirs in runs.items():
        curves = {m: curve_points(d) for m, (d, _) in dirs.items()}
        higher = curves["plain"][2]
        everything = [pt for imgs, pts, _ in curves.values() for pt in pts[-1]]
        ref = reference(everything, higher)
        hv = {m: [hypervolume(p, ref, higher) for p in pts] for m, (imgs, pts, _) in curves.items()}
        img = {m: imgs for m, (imgs, _, _) in curves.items()}
        plain_final, budget = hv["plain"][-1], img["plain"][-1]
        # generation 0 is the same population in every method (the seeds' heuristics and random
        # genomes): what the search itself adds is the gain over it
        start = hv["plain"][0]
        to95 = {m: first_reaching(img[m], hv[m], 0.95 * plain_final) for m in hv}
        to95_gain = {m: first_reaching(img[m], hv[m], start + 0.95 * (plain_final - start)) for m in hv}
        g = args.generations  # equal generations: images share
        front_plain = pareto_front(load_run(dirs["plain"][0]).points, higher)
        per_method = {
            m: {
                "hv_at_plain_images": hv_at(img[m], hv[m], budget),
                "hv_at_equal_generations": hv[m][g],
                "images_at_equal_generations": img[m][g],
                "images_share_at_equal_generations": round(img[m][g] / img["plain"][g], 4),
                "ratio_95": ratio(to95, m),
                "ratio_95_of_gain": ratio(to95_gain, m),
                "completions": completions(d),
            }
            for m, (d, _) in dirs.items()
            if m != "plain"
        }
        racing = per_method.get("racing", {})
        rows.append(
            {
                "search_seed": seed,
                "plain_final_hv": plain_final,
                "plain_gen0_hv": start,
                "plain_images": budget,
                # the racing columns as results before screening had them
                "racing_hv_at_plain_images": racing.get("hv_at_plain_images"),
                "racing_hv_at_equal_generations": racing.get("hv_at_equal_generations"),
                "racing_images_at_equal_generations": racing.get("images_at_equal_generations"),
                "images_share_at_equal_generations": racing.get("images_share_at_equal_generations"),
                "images_to_95": to95,
                "ratio_95": racing.get("ratio_95"),
                "images_to_95_of_gain": to95_gain,
                "methods": per_method,
                "plain_frontier_points": len(front_plain),
                "racing_completions": racing.get("completions"),
                "prefix_share": {m: round(prefix_share(d), 4) for m, (d, _) in dirs.items()},
                "wall_s": {m: round(w, 1) for m, (_, w) in dirs.items()},
                "curves": {m: {"images": img[m], "hypervolume": hv[m]} for m in hv},
                "hv_ref": ref.tolist(),
            }
        )
    # the same schedule scores the same in every run of a setting (to rounding: plain and racing batch
    # the images differently); anything more means the model or the code changed between runs
    seen: dict[str, float] = {}
    worst = 0.0
    for dirs in runs.values():
        for d, _ in dirs.values():
            for pt in load_run(d).points:
                if pt.feasible and pt.complete:
                    worst = max(worst, abs(seen.setdefault(pt.key, pt.quality) - pt.quality))
    summary: dict[str, Any] = {"target_ratio_95": TARGET_RATIO}
    for m in methods[1:]:
        per = [r["methods"][m] for r in rows]
        med = median_of([p["ratio_95"] for p in per])
        summary[m] = {
            "median_ratio_95": med,
            "ratio_target_met": med is not None and med >= TARGET_RATIO,
            "median_ratio_95_of_gain": median_of([p["ratio_95_of_gain"] for p in per]),
            "median_images_share_at_equal_generations": statistics.median(
                p["images_share_at_equal_generations"] for p in per
            ),
            # to rounding: the runs batch images differently, which moves a quality in its 8th digit
            "hv_at_equal_images_not_lower": all(
                p["hv_at_plain_images"] >= r["plain_final_hv"] * (1 - 1e-6) for p, r in zip(per, rows)
            ),
        }
    if "racing" in summary:  # the keys results before screening had
        summary.update({k: summary["racing"][k] for k in ("median_ratio_95", "ratio_target_met")})
        summary["median_images_share_at_equal_generations"] = summary["racing"][
            "median_images_share_at_equal_generations"
        ]
        summary["hv_at_equal_images_not_lower"] = summary["racing"]["hv_at_equal_images_not_lower"]
    summary["same_schedule_max_quality_difference_across_runs"] = worst
    summary["runs_consistent"] = worst < 1e-4
    planned = methods[-1] if len(methods) > 1 else None
    result = {
        "device": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        **models_of(args.space),
        "settings": {
            **base,
            "images_per_candidate": args.num_prompts * args.seeds,
            "racing_confidence": SearchConfig().racing_confidence,
            **({"racing_tolerance": args.tolerance} if "tolerance" in methods else {}),
            "search_seeds": seeds,
            "workers": 0,
            "methods": methods,
        },
        "rows": rows,
        "summary": summary,
        "plan": plan(args.plan_generations, summary[planned]["median_images_share_at_equal_generations"], planned)
        if planned
        else None,
    }
    if args.out:
        write_result(result, Path(args.out))
        Path(args.out).with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    return result


def replan(path: Path) -> dict[str, Any]:
    """Rewrite a recorded result's planning figure with today's ms/image; every measured number stays."""
    try:
        result = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise SystemExit(f"--replan {path}: cannot read a recorded result ({exc}); give a search_cost_*.json") from None
    old = result.get("plan")
    if not old or "generations" not in old:
        raise SystemExit(f"{path}: records no planning figure with its generations; rerun the benchmark instead")
    result["plan"] = plan(int(old["generations"]), float(old["images_share_used"]), old["method"])
    write_result(result, path)
    md = path.with_suffix(".md")
    if md.exists():  # only its planning line changes (results of older versions have other tables)
        lines = md.read_text().splitlines()
        md.write_text("\n".join(plan_line(result["plan"]) if x.startswith("Planning:") else x for x in lines) + "\n")
    print(plan_line(result["plan"]))
    return result


def ratio(images_to: dict[str, int | None], method: str) -> float | None:
    """plain's images to a target over the method's: how many times fewer images it needed."""
    a, b = images_to["plain"], images_to[method]
    return a / b if a and b else None


def median_of(values: list[float | None]) -> float | None:
    """The median over the seeds that reached the target; None when none did."""
    reached = [v for v in values if v is not None]
    return statistics.median(reached) if reached else None


def _x(value: float | None) -> str:
    return f"{value:.2f}x" if value else "n/a"


def markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    methods = s["methods"]
    others = methods[1:]
    lines = [
        f"Search cost, {' vs '.join(methods)}: {s['space']}, {s['metric']}, {s['num_prompts']} prompts x "
        f"{s['seeds']} seeds = {s['images_per_candidate']} images per candidate, population {s['population']}, "
        f"{s['generations']} generations (the others extended to the plain run's images), chunk "
        f"{s['racing_chunk'] or 'auto'}, confidence {s['racing_confidence']}, {result['device']} CPU "
        f"x{result['cpu_count']}, in-process worker. `screening` is racing + screening"
        + (
            f"; `tolerance` is racing with --racing-tolerance {s['racing_tolerance']}."
            if "racing_tolerance" in s
            else "."
        ),
        "",
        "| seed | method | final HV (plain) / HV at plain's images | images share (equal gens) "
        "| images to 95% | ratio | images to 95% of the gain over gen 0 | ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        t, tg = r["images_to_95"], r["images_to_95_of_gain"]
        lines.append(
            f"| {r['search_seed']} | plain | {r['plain_final_hv']:.5f} | 100% | {t['plain']} | 1x | "
            f"{tg['plain']} | 1x |"
        )
        for m in others:
            p = r["methods"][m]
            lines.append(
                f"| {r['search_seed']} | {m} | {p['hv_at_plain_images']:.5f} | "
                f"{p['images_share_at_equal_generations']:.1%} | {t[m]} | {_x(p['ratio_95'])} | {tg[m]} | "
                f"{_x(p['ratio_95_of_gain'])} |"
            )
    m = result["summary"]
    lines += ["", "Where the images went (whole run):", ""]
    for r in result["rows"]:
        for meth in others:
            c = r["methods"][meth]["completions"]
            lines.append(
                f"- seed {r['search_seed']}, {meth}: {c['candidates']} candidates, {c['complete']} evaluated whole, "
                f"of which {c['complete_and_not_dominated_when_done']} were not dominated by the archive when they "
                f"completed (any rule that only puts complete points on the frontier must evaluate those whole: "
                f"{c['images_floor']} of its {c['images']} images)"
            )
    shares = ", ".join(" / ".join(f"{r['prefix_share'][x]:.1%}" for x in methods) for r in result["rows"])
    lines += [
        "",
        f"Prefix sharing (issue item 3, not built): share of the candidates' denoising steps before their first "
        f"reused component, which stored no-caching latents could replace exactly, per seed "
        f"({' / '.join(methods)}): {shares}.",
        "",
    ]
    for meth in others:
        sm = m[meth]
        lines.append(
            f"- {meth}: median ratio of images to 95% of plain's final HV {_x(sm['median_ratio_95'])} "
            f"(target >= {m['target_ratio_95']:g}x: {'met' if sm['ratio_target_met'] else 'NOT met'}); to 95% of "
            f"the gain over generation 0 {_x(sm['median_ratio_95_of_gain'])}; median images share at equal "
            f"generations {sm['median_images_share_at_equal_generations']:.1%}; HV at equal images not lower in "
            f"every seed: {sm['hv_at_equal_images_not_lower']}."
        )
    lines += [
        "",
        f"Same schedule, same quality in every run (max difference "
        f"{m['same_schedule_max_quality_difference_across_runs']:.1e}): {m['runs_consistent']}.",
    ]
    if result["plan"]:
        lines += ["", plan_line(result["plan"])]
    return "\n".join(lines) + "\n"


def plan_line(p: dict[str, Any]) -> str:
    return (
        f"Planning: {p['search']}: {p['images_plain']:,} images / {p['gpu_hours_plain']} GPU-h plain, "
        f"about {p['images_racing']:,} / {p['gpu_hours_racing']} GPU-h with {p['method']} "
        f"({p['images_share_used']:.0%} of the images, the share measured here). "
        f"GPU-hours: {p['ms_per_image_source']}. "
        f"{p['caveat']}."
    )


if __name__ == "__main__":
    main()
