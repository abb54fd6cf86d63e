"""`ecad` command line: one subcommand per user task; errors print one clear line, exit 2."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from ecad.errors import EcadError
from ecad.files import check_output_dir, check_output_file
from ecad.options import (
    OptionTable,
    cell_kinds,
    environment_variable,
    number,
    on_off,
    parse_metric_option,
    whole_number,
    worker_count,
)
from ecad.schedule import load_schedule
from ecad.units import si_units


def _cmd_convert(args: argparse.Namespace) -> int:
    from ecad.schedule import FORMAT, FORMAT_V2

    if args.lossy and args.to != "ecad":
        raise EcadError("--lossy only applies to --to ecad (ECAD's format has no forecast cells); leave it out")
    check_output_file(args.output, "OUTPUT")
    schedule = load_schedule(args.input)
    fmt = "ecad" if args.to == "ecad" else "ecad-schedule"
    if fmt == "ecad" and schedule.uses_v2 and not args.lossy:
        what = []
        if schedule.forecast is not None:
            what.append(f"{int(schedule.forecast.sum())} forecast cell(s)")
        if schedule.guidance_reuse is not None:
            what.append(f"guidance reuse on {int(schedule.guidance_reuse.sum())} step(s)")
        raise EcadError(
            f"{args.input}: has {' and '.join(what)}, which ECAD's format (compute and reuse cells only) cannot "
            "hold; keep ecad's format (--to native), or add --lossy to write forecast cells as reuse and run both "
            "guidance branches at every step (its quality differs)"
        )
    out = schedule.save(args.output, format=fmt, lossy=args.lossy)
    kind = "ECAD layout" if fmt == "ecad" else (FORMAT_V2 if schedule.uses_v2 else FORMAT)
    print(f"wrote {out} ({kind}, {schedule.num_steps} steps, {schedule.compute_fraction():.1%} of components computed)")
    if fmt == "ecad" and schedule.uses_v2:
        lost = []
        if schedule.forecast is not None:
            lost.append(f"{int(schedule.forecast.sum())} forecast cells written as reuse")
        if schedule.guidance_reuse is not None:
            lost.append(f"guidance reuse on {int(schedule.guidance_reuse.sum())} step(s) dropped")
        print(f"  lossy: {'; '.join(lost)}")
    return 0


def _schedule_argument(text: str, space_name: str | None, option: str = "--schedule"):
    """A schedule file, or a catalog name: a built-in made for the space's layout and steps, or a
    shipped SPACE:LABEL."""
    from ecad.catalog import builtin_schedule, is_named, shipped_schedule

    if Path(text).exists() or not is_named(text):
        return load_schedule(text)
    if ":" in text:
        return shipped_schedule(text)
    if not space_name:
        raise EcadError(
            f"{option} {text}: a built-in schedule is made for a model and its step count; pass --space "
            "(e.g. --space pixart-alpha-256)"
        )
    from ecad.spaces import load_space

    space = load_space(space_name)
    return builtin_schedule(text, space.layout, space.steps, **space.schedule_meta())


def _cmd_schedules(args: argparse.Namespace) -> int:
    from ecad.cache.macs import dims_for_space, schedule_macs
    from ecad.catalog import EXAMPLES, builtin_schedule, describe, shipped_names, shipped_schedule
    from ecad.spaces import load_space

    space = load_space(args.space)
    dims = dims_for_space(space)
    print(
        f"built-in schedules, made for any model and step count; MACs estimated from the MACs model, as a share "
        f"of the stock pipeline's MACs (text K/V cache on), for {space.name} ({space.steps} steps):"
    )
    for name in EXAMPLES:
        report = schedule_macs(
            builtin_schedule(name, space.layout, space.steps, **space.schedule_meta()), dims, batch=1
        )
        print(f"  {name:16s} {report.total / report.full:6.1%} MACs  {describe(name)}")
    print("  (every-N and attention-every-N take any N >= 2)")
    names = shipped_names()
    print("searched schedules shipped with ecad (SPACE:LABEL):" + ("" if names else " none yet"))
    for name in names:
        schedule = shipped_schedule(name)
        metrics = schedule.metrics
        print(
            f"  {name:28s} {metrics.get('macs_fraction', float('nan')):6.1%} MACs  {metrics.get('metric', '')} "
            f"{metrics.get('quality', float('nan')):.4g}  {schedule.attributes.get('measured_on', '')}"
        )
    return 0


def _cmd_metrics(args: argparse.Namespace) -> int:
    from ecad.metrics import list_metrics

    for name, description in list_metrics().items():
        print(f"{name:14s} {description}")
    return 0


def _cmd_spaces(args: argparse.Namespace) -> int:
    """The listing reads each space's own fields only (no torch, so it is instant); `--check`
    loads every space in full, as a search would."""
    from ecad.spaces import list_space_files, load_space

    bad = 0
    for listing in list_space_files():
        if args.check and listing.problem is None:
            try:
                load_space(listing.path)
            except ValueError as exc:
                listing = dataclasses.replace(listing, problem=str(exc))
        bad += listing.problem is not None
        print(listing)
    return 2 if args.check and bad else 0


def _cmd_macs(args: argparse.Namespace) -> int:
    from ecad.cache.macs import dims_for_space, schedule_macs, transformer_batch
    from ecad.spaces import load_space

    schedule = _schedule_argument(args.schedule, args.space, "schedule")  # a file or a name of `ecad schedules`
    space = load_space(args.space)
    space.check_schedule(schedule, steps=False)  # the schedule's own steps are counted
    # ECAD counts a transformer batch of 2 (PixArt's CFG pair; two prompts for FLUX), whatever the family
    batch = 2 if args.ecad_convention else transformer_batch(space.family, args.images, space.guidance_scale)
    # ECAD's convention counts the text K/V at every computed step; ecad runs them once per call
    text_kv = args.text_kv_cache if args.text_kv_cache is not None else not args.ecad_convention
    report = schedule_macs(
        schedule,
        dims_for_space(space),
        height=space.height,
        width=space.width,
        batch=batch,
        attention_matmuls=not args.ecad_convention,
        text_kv_cache=text_kv,
    )
    images = "ECAD's convention" if args.ecad_convention else f"{args.images} image(s)"
    print(
        f"{schedule.name or args.schedule}: {si_units(report.total)}MACs vs {si_units(report.full)}MACs uncached "
        f"({report.speedup_bound:.2f}x fewer; {report.fraction:.1%} of the stock pipeline's MACs), {images} = "
        f"transformer batch {batch}, {space.height}x{space.width}"
        + (", Linear/Conv only" if args.ecad_convention else "")
    )
    if report.text_kv and text_kv:
        print(f"  text K/V cache on: cross-attention's text K/V counted once per call ({si_units(report.text_kv)}MACs)")
    if report.forecast_cells:
        print(
            f"  {report.forecast_cells} forecast cell(s): {si_units(report.forecast)}MACs of element-wise "
            "extrapolation, not in the total"
        )
    if schedule.first_step_flags_ignored:
        print(
            f"  the first step's {schedule.first_step_flags_ignored} reuse flag(s) count as compute: nothing is "
            "cached before it runs"
        )
    recorded = (schedule.metrics or {}).get("by_inference_step") if isinstance(schedule.metrics, dict) else None
    if args.ecad_convention and isinstance(recorded, dict):
        ours = report.to_ecad_metrics()["by_inference_step"]
        differ = [
            k
            for k in sorted(set(recorded) | set(ours))
            if k not in ours or not isinstance(recorded.get(k), dict) or recorded[k].get("macs") != ours[k]["macs"]
        ]
        if differ:
            k = differ[0]
            print(
                f"  differs from the file's metrics.by_inference_step at {len(differ)} step(s), first {k}: "
                f"ours {ours.get(k, {}).get('macs')} vs the file's {(recorded.get(k) or {}).get('macs')}"
            )
        else:
            print(f"  matches the file's metrics.by_inference_step exactly at all {len(ours)} steps")
    return 0


# config.json's field names that differ from the options that set them
CONFIG_ALIASES = {"metric_options": "metric_option", "candidate_timeout_s": "candidate_timeout"}


def _cmd_search(args: argparse.Namespace) -> int:
    from ecad.search.api import search

    if args.config:
        for dest, value in args.option_table.from_file(args.config, aliases=CONFIG_ALIASES).items():
            if getattr(args, dest) in (None, False):  # the command line wins
                setattr(args, dest, value)
    if args.resume:
        check_output_dir(args.resume, "--resume")
    elif args.out:
        check_output_dir(args.out, "--out")  # the CLI's own option names in the message
    options = {
        "space": args.space,
        "prompts": args.prompts,
        "num_prompts": args.num_prompts,
        "seeds": args.seeds,
        "metric": args.metric,
        "cost": args.cost,
        "population": args.population,
        "generations": args.generations,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "max_macs_fraction": args.max_macs_fraction,
        "seed_from": args.seed_from,
        "metric_options": dict(args.metric_option) if args.metric_option else None,
        "ray_address": args.ray_address,
        "device": args.device,
        "candidate_timeout_s": args.candidate_timeout,
        "racing": args.racing,
        "racing_chunk": args.racing_chunk,
        "racing_confidence": args.racing_confidence,
        "racing_tolerance": args.racing_tolerance,
        "screening": args.screening,
        "cells": args.cells,
        "forecast_order": args.forecast_order,
        "guidance_reuse": args.guidance_reuse,
        "text_kv_cache": args.text_kv_cache,
    }
    frontier = search(
        **{k: v for k, v in options.items() if v is not None},
        # on a cluster every GPU (or CPU slot) by default; on one machine two workers
        workers=args.workers if args.workers is not None else ("auto" if args.ray_address else 2),
        out=None if args.resume else args.out,  # a resume continues in its own directory
        resume=args.resume,
        force=args.force,
        quiet=args.quiet,
        worker_env=dict(args.worker_env or []),
        dry_run=args.dry_run,
    )
    print(frontier if args.dry_run else frontier.summary)
    return 0


def _cmd_frontier(args: argparse.Namespace) -> int:
    import numpy as np

    from ecad.cache.macs import dims_for_space, schedule_macs, transformer_batch
    from ecad.frontier import baseline_quality, frontier, frontier_entries, macs_of, pick, schedule_of
    from ecad.runs import FRONTIER_DIR, load_run, write_frontier_dir
    from ecad.search.nsga2 import Evaluation, hypervolume
    from ecad.spaces import load_space

    if args.out:
        check_output_file(args.out, "--out")
    if args.export:
        check_output_dir(args.export, "--export")
    runs = [load_run(r, require_evaluated=True) for r in args.runs]
    config = runs[0].config
    points = frontier(runs)
    space = load_space(config["space"])
    full_macs = schedule_macs(  # fractions are of the stock pipeline's MACs
        space.full_schedule(), dims_for_space(space), batch=transformer_batch(space.family, 1, space.guidance_scale)
    ).full
    weights = (1.0 if runs[0].higher_is_better else -1.0, -1.0)
    # each run's reference point is fixed at its generation 0; merged runs take the loosest of them
    hv_ref = np.max([r.generations[0]["hv_ref"] for r in runs], axis=0)
    hv = hypervolume([Evaluation((p.quality, p.cost)) for p in points], weights, hv_ref)
    base = baseline_quality(runs)
    print(
        f"frontier of {', '.join(str(r.root) for r in runs)}: {len(points)} schedules, {config['metric']} vs "
        f"{config['cost']}, hypervolume {hv:.4f}" + (f", no-caching quality {base:.5g}" if base is not None else "")
    )
    has_latency = any(p.latency_ms is not None for p in points)
    speed = "measured" if config["cost"] == "latency" else "est."
    print(
        f"{'rank':>4} {config['metric']:>12} {'MACs/img':>10} {speed + ' speedup':>15}"
        + (f" {'ms/img':>8}" if has_latency else "")
        + "  label / schedule"
    )
    folder = (FRONTIER_DIR if args.format == "native" else f"{FRONTIER_DIR}_ecad") + (
        "_merged" if len(runs) > 1 else ""
    )
    out_dir = Path(args.export) if args.export else runs[0].root / folder
    files = write_frontier_dir(
        out_dir,
        frontier_entries(points, config, space),
        {"metric": config["metric"], "cost": config["cost"]},
        "ecad" if args.format == "ecad" else "ecad-schedule",
    )
    paths = [out_dir / files[p.key] for p in points]
    shown_ranks, page_size = _page(len(points), args.page, args.all)
    for rank, (p, path) in enumerate(zip(points, paths)):
        if rank not in shown_ranks:
            continue
        lat = f" {p.latency_ms:>8.2f}" if has_latency and p.latency_ms is not None else (" " * 9 if has_latency else "")
        print(
            f"{rank:>4} {p.quality:>12.5f} {si_units(macs_of(p) * full_macs):>10} {p.speedup:>14.2f}x{lat}  "
            f"{p.label:12s} {path}"
        )
    if len(shown_ranks) < len(points):
        pages = -(-len(points) // page_size)  # the last page may be short: count by the full one
        print(
            f"ranks {shown_ranks.start}-{shown_ranks.stop - 1} of {len(points)} (page {args.page or 1} of {pages}); "
            f"--page N shows another, --all every point (every file is in {out_dir})"
        )
    if args.pick:
        chosen = pick(points, args.pick, base, runs[0].higher_is_better)
        out = Path(args.out) if args.out else runs[0].root / "picked.json"
        source = next(r.root for r in runs if any(q.key == chosen.key for q in r.points))
        schedule = schedule_of(chosen, config, source, space=space)
        schedule.attributes["picked_by"] = args.pick
        replaced = out.exists()
        schedule.save(out, format="ecad" if args.format == "ecad" else "ecad-schedule")
        if replaced:
            print(f"replaced the earlier {out} (give --out to keep both)")
        print(f"picked ({args.pick}): quality {chosen.quality:.5g}, speedup {chosen.speedup:.2f}x -> {out}")
    return 0


def _page(rows: int, page: int | None, show_all: bool) -> tuple[range, int]:
    """The ranks `ecad frontier` prints and the page size: every one into a pipe or a file, or with
    --all; on a terminal one screenful (--page N for the N-th), so the header and the notes stay in view."""
    import shutil

    if show_all or (page is None and not sys.stdout.isatty()):
        return range(rows), max(rows, 1)
    size = max(3, shutil.get_terminal_size().lines - 8)
    first = ((page or 1) - 1) * size
    if first >= rows and rows:
        raise ValueError(f"--page {page}: the frontier has {-(-rows // size)} page(s) of {size}; give a smaller page")
    return range(first, min(rows, first + size)), size


def _cmd_generate(args: argparse.Namespace) -> int:
    from ecad.generate import generate, save_result

    if bool(args.prompt) == bool(args.prompts):
        raise EcadError("give exactly one of --prompt TEXT or --prompts FILE")
    check_output_dir(args.out, "--out")  # before the model loads: a bad --out must not cost the images
    schedule = _schedule_argument(args.schedule, args.space)
    from ecad.prompts import read_prompts

    prompts = [args.prompt] if args.prompt else list(read_prompts(args.prompts))
    seeds = list(range(args.seed, args.seed + args.num_seeds))
    result = generate(
        schedule,
        prompts,
        seeds,
        space_name=args.space,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        guidance_scale=args.guidance_scale,
        text_kv_cache=args.text_kv_cache is not False,
    )
    paths = save_result(result, Path(args.out))
    ms = sorted(result.settings["ms_per_image"])
    noun = "image" if result.frames == 1 else "video"
    frames = "" if result.frames == 1 else f" of {result.frames} frames"
    print(
        f"wrote {len(paths)} {noun}{'s' if len(paths) != 1 else ''}{frames} and generate.json to {args.out} "
        f"({result.settings['space']}, {result.settings['steps']} steps, "
        f"{result.settings['macs_fraction']:.1%} of the stock pipeline's transformer MACs (estimated; "
        f"{result.settings['compute_fraction']:.1%} of components), {ms[len(ms) // 2]:.1f} ms/{noun} measured on "
        f"{result.settings['device']}, median of {len(ms)} batch{'es' if len(ms) != 1 else ''})"
    )
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ecad.compare import CompareSettings, format_table, run_compare, write_compare
    from ecad.prompts import read_prompts

    check_output_dir(args.out, "--out")
    schedules = [_schedule_argument(p, args.space) for p in args.schedules or []]  # before any loading
    settings = CompareSettings(
        space=args.space,
        prompts=read_prompts(args.prompts, args.num_prompts),
        seeds=tuple(range(args.seeds)),
        metric=args.metric,
        metric_options=dict(args.metric_option or []),
        batch_size=args.batch_size,
        device=args.device,
        baselines=args.baselines,
        repeats=args.repeats,
        warmup=args.warmup,
        quantiles=args.quantiles,
        text_kv_cache=args.text_kv_cache is not False,
    )
    result = run_compare(settings, schedules)
    print(format_table(result))
    paths = write_compare(result, Path(args.out))
    print(f"wrote {', '.join(p.name for p in paths)} to {args.out}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from ecad.report import load_run, render_samples, write_report, write_run_plots

    if args.out:
        check_output_file(args.out, "--out")
    run = load_run(args.run)
    check_output_dir(run.root, "RUN")  # the plots go there
    samples = render_samples(run, num_prompts=args.samples, device=args.device) if args.samples else None
    write_run_plots(run)
    out = write_report(run, args.out, samples=samples)
    print(f"wrote {out}" + (f" with samples of {args.samples} prompts" if samples else ""))
    return 0


def _pick_expression(text: str) -> str:
    from ecad.frontier import parse_pick

    if not text.strip():
        raise argparse.ArgumentTypeError('is empty; write a constraint such as "speedup>=2"')
    try:
        parse_pick(text)
    except EcadError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("--pick ")) from None
    return text


_positive_int = whole_number(1)
_non_negative_int = whole_number(0)


def _text_kv_option(add) -> None:
    """`--text-kv-cache on|off`, the same for every command that applies schedules or counts MACs."""
    add(
        "--text-kv-cache",
        type=on_off,
        metavar="on|off",
        help="compute cross-attention's text keys and values once per call (lossless; PixArt, Sana, Wan); "
        "default on (off with --ecad-convention)",
    )


def _quantiles(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(q) for q in text.split(","))
    except ValueError:
        values = ()
    if not values or not all(0.0 < q < 1.0 for q in values):
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of quantiles between 0 and 1")
    return values


SCORE_USAGE = """score a directory of images with one quality metric, print a table, write JSON

    ecad score --metric clip --images out/ --prompts prompts.txt [--json scores.json]
    ecad score --metric fidelity --images cached/ --reference uncached/ --prompts prompts.txt
    ecad score --metric fid --images out/ --reference real_images/

Images are PNG/JPG files sorted by file name; the prompts file has one prompt per line in the same
order. A directory `ecad generate` wrote needs no --prompts: its generate.json names each image's
prompt. Metrics comparing to references use --reference DIR: per-image metrics (fidelity, psnr) take
the same number of images with the same file order, FID takes any reference set.
"""


def _cmd_score(args: argparse.Namespace) -> int:
    from ecad.metrics.score import run_score

    return run_score(args)


def _add_score_parser(subparsers) -> argparse.ArgumentParser:
    """`ecad score` (its module, and torch, load only when it runs)."""
    p = subparsers.add_parser(
        "score",
        help="score a directory of images with a quality metric",
        description=SCORE_USAGE,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--metric",
        required=True,
        help="metric name: fidelity, psnr, clip, pickscore, hpsv2, fid, ... (ecad.metrics.list_metrics())",
    )
    p.add_argument("--images", required=True, type=Path, help="directory of PNG/JPG images (sorted by name)")
    p.add_argument(
        "--prompts",
        type=Path,
        help="text file, one prompt per line in image order (required by clip, pickscore, hpsv2, unless the "
        "directory has ecad generate's generate.json)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        help="directory of reference images (fidelity/psnr: the uncached "
        "images, same names order; fid: any reference set)",
    )
    p.add_argument("--json", type=Path, dest="json_out", metavar="OUT", help="write scores as JSON here")
    p.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    p.add_argument(
        "--batch-size", type=whole_number(1), default=None, help="images per forward pass (metric default if unset)"
    )
    p.add_argument("--weights", type=Path, default=None, help="local weights file/directory for the metric's model")
    p.add_argument(
        "--metric-option",
        action="append",
        type=parse_metric_option,
        metavar="KEY=VALUE",
        help="any other option of the metric, e.g. resize=clean for fid (values read as JSON where they parse)",
    )
    p.set_defaults(func=_cmd_score)
    return p


class _HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it or there is none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ecad", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error (or set ECAD_DEBUG=1)")
    import ecad

    parser.add_argument("--version", action="version", version=f"ecad {ecad.__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("convert", help="convert a schedule between ecad-schedule/1 and ECAD's JSON layout")
    p.add_argument("input", type=Path)
    p.add_argument("output", type=Path)
    p.add_argument(
        "--to",
        choices=["ecad", "native"],
        default="native",
        help="ecad = ECAD's layout (cache_schedule/config/metrics); native = ecad-schedule/1, or /2 for a "
        "schedule with forecast cells or guidance reuse (default)",
    )
    p.add_argument(
        "--lossy",
        action="store_true",
        help="with --to ecad: write forecast cells as reuse and drop guidance reuse (ECAD's format has neither)",
    )
    p.set_defaults(func=_cmd_convert)

    p = sub.add_parser("search", help="search schedules with NSGA-II (no arguments: offline demo on shapes-pixart)")
    opts = OptionTable(p)  # kept, so --config files are checked by these same option types
    opts.add("--space", help="search space name or .toml path (default shapes-pixart; see `ecad spaces`)")
    opts.add("--prompts", help="prompt file, one per line (default: 4 of calibration_prompts/shapes_100.txt)")
    opts.add("--num-prompts", type=_non_negative_int, help="use only the first N prompts of the file (0: all)")
    opts.add("--seeds", type=_positive_int, help="images per prompt (seeds 0..N-1; default 2)")
    opts.add("--metric", help="quality metric (default fidelity; see `ecad metrics`)")
    opts.add(
        "--metric-option",
        action="append",
        type=parse_metric_option,
        metavar="KEY=VALUE",
        help="metric option, e.g. weights=PATH or batch_size=8 (values read as JSON where they parse)",
    )
    opts.add("--cost", choices=["macs", "latency"], help="cost objective (default macs)")
    opts.add("--population", type=whole_number(4, 100_000), help="population size (default 12; ECAD used 72)")
    opts.add("--generations", type=whole_number(0, 1_000_000), help="generations after the initial one (default 4)")
    opts.add("--seed", type=_non_negative_int, help="random seed of the search (default 0)")
    opts.add("--batch-size", type=_positive_int, help="images per pipeline call on a worker (default 8)")
    opts.add(
        "--max-macs-fraction",
        type=number(0, 1, low_open=True),
        help="constraint: MACs <= this share of the stock pipeline's MACs",
    )
    opts.add("--seed-from", action="append", help="schedule file, directory or previous run to seed from")
    opts.add(
        "--workers",
        type=worker_count,
        help="Ray workers (one per GPU, else per CPU slot; 0 = in-process; auto = every GPU, or CPU slot, of the "
        "cluster; default 2, or auto with --ray-address)",
    )
    opts.add(
        "--worker-env",
        action="append",
        type=environment_variable,
        metavar="KEY=VALUE",
        help="set an environment variable on every worker, beside the ones forwarded from this shell "
        "(ECAD_CACHE, HF_HOME, HF_HUB_OFFLINE, ...)",
    )
    opts.add(
        "--candidate-timeout",
        type=number(1, 7 * 24 * 3600),
        metavar="SECONDS",
        help="kill and replace a worker that has spent this long on one candidate (default: a multiple of the "
        "median candidate time, with a floor)",
    )
    opts.add("--ray-address", help="join an existing Ray cluster (HOST:PORT); default: start a local one")
    opts.add("--device", help="worker device (default cuda if available, else cpu)")
    opts.add("--out", help="run directory (default results/search-TIMESTAMP)")
    opts.add("--resume", metavar="RUN_DIR", help="continue an interrupted run exactly where it stopped")
    opts.add("--force", action="store_true", help="overwrite an existing run directory")
    opts.add("--quiet", action="store_true", help="no progress display")
    opts.add(
        "--racing",
        type=on_off,
        metavar="on|off",
        help="racing: evaluate candidates chunk by chunk and stop those whose confidence bound is dominated "
        "(default on; off: every candidate on every prompt x seed)",
    )
    opts.add(
        "--racing-chunk",
        type=_positive_int,
        metavar="N",
        help="images per racing chunk (default: about a tenth of the protocol, whole batches)",
    )
    opts.add(
        "--racing-confidence",
        type=number(0.5, 1, low_open=True),
        metavar="P",
        help="one-sided confidence of a candidate's whole race (default 0.95)",
    )
    opts.add(
        "--racing-tolerance",
        type=number(0, 0.5),
        metavar="T",
        help="also stop a race once even its optimistic point would add at most T x the frontier's hypervolume "
        "(e.g. 0.001; default 0: only dominated races stop). Trades at most that much hypervolume per stopped "
        "candidate for the candidates that would only squeeze between two frontier neighbours",
    )
    opts.add(
        "--screening",
        type=on_off,
        metavar="on|off",
        help="screening: race each generation's most promising candidates first, by a ridge model of quality "
        "on the genome fitted to the earlier generations (default off; needs --racing on)",
    )
    opts.add(
        "--cells",
        type=cell_kinds,
        metavar="compute,reuse[,forecast]",
        help="cell kinds a schedule may hold (default compute,reuse; forecast: extrapolate a component's output "
        "from its last computed ones, TaylorSeer-like)",
    )
    opts.add(
        "--forecast-order",
        type=whole_number(1, 2),
        metavar="1|2",
        help="order of the forecast's extrapolation (default 1; needs --cells ...,forecast)",
    )
    opts.add(
        "--guidance-reuse",
        type=on_off,
        metavar="on|off",
        help="a gene per step that skips the unconditional branch, approximated from its last difference to the "
        "conditional one (FasterCache-like; families with CFG as one doubled batch; default off)",
    )
    _text_kv_option(opts.add)
    opts.add(
        "--config",
        metavar="FILE",
        help="read options from a TOML file (population = 12, metric_options = {...}) or a run's config.json "
        "(or its directory); options given on the command line win",
    )
    opts.add(
        "--dry-run",
        action="store_true",
        help="print the plan and its cost bounds (candidates, images, transformer MACs, GPU-hours); run nothing",
    )
    p.set_defaults(func=_cmd_search, option_table=opts)

    p = sub.add_parser("frontier", help="Pareto frontier of one or more runs; --pick a schedule by constraint")
    p.add_argument("runs", nargs="+", help="run directories (several are merged)")
    p.add_argument(
        "--pick", type=_pick_expression, help='constraint(s), e.g. "speedup>=2" or "quality>=0.95*baseline,macs<=0.5"'
    )
    p.add_argument("--out", help="where --pick writes the chosen schedule (default RUN/picked.json)")
    p.add_argument("--format", choices=["native", "ecad"], default="native", help="schedule file format")
    p.add_argument(
        "--export",
        help="directory for the frontier's schedule files (default RUN/frontier[_ecad], or "
        "FIRST_RUN/frontier[_ecad]_merged for several runs)",
    )
    p.add_argument("--all", action="store_true", help="print every frontier point (the default into a pipe or file)")
    p.add_argument(
        "--page", type=_positive_int, help="on a terminal, print this screenful of points (default: the first)"
    )
    p.set_defaults(func=_cmd_frontier)

    p = sub.add_parser("generate", help="generate images with a saved schedule applied")
    p.add_argument(
        "--schedule",
        required=True,
        help="schedule JSON (ours or ECAD's), a built-in name (every-3, tgate, delta-dit, ...; with --space) or a "
        "shipped SPACE:LABEL (see `ecad schedules`)",
    )
    p.add_argument("--prompt", help="one prompt")
    p.add_argument("--prompts", help="prompt file, one per line")
    p.add_argument("--space", help="search space whose model and settings to use (default: the schedule's own)")
    p.add_argument("--model", help="hub id or local directory of the pipeline (default: the matching space's model)")
    p.add_argument("--seed", type=_non_negative_int, default=0, help="first seed (default 0)")
    p.add_argument("--num-seeds", type=_positive_int, default=1, help="images per prompt (seeds seed..seed+N-1)")
    p.add_argument("--guidance-scale", type=number(0, 100), help="override the schedule's guidance scale")
    p.add_argument("--batch-size", type=_positive_int, default=4, help="images per pipeline call")
    p.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    p.add_argument("--out", default="generated", help="output directory (default ./generated)")
    _text_kv_option(p.add_argument)
    p.set_defaults(func=_cmd_generate)

    p = sub.add_parser(
        "compare", help="schedules vs heuristics, diffusers' caches and cache-dit: same prompts, seeds and machine"
    )
    p.add_argument("--space", required=True, help="search space whose model and settings every contender runs")
    p.add_argument("--schedules", nargs="*", help="schedule files (or named schedules, see `ecad schedules`)")
    p.add_argument(
        "--baselines",
        action="store_true",
        help="add the heuristics every search seeds (every-n, attention-only, T-GATE-like), diffusers' caches "
        "(FirstBlockCache, MagCache, TaylorSeer, PAB, FasterCache) and cache-dit (DBCache, SCM) where installed",
    )
    p.add_argument("--prompts", default="calibration_prompts/image_reward_100.txt", help="prompt file, one per line")
    p.add_argument("--num-prompts", type=_positive_int, default=4, help="use the first N prompts")
    p.add_argument("--seeds", type=_positive_int, default=2, help="images per prompt (seeds 0..N-1)")
    p.add_argument("--metric", default="fidelity", help="quality metric (see `ecad metrics`)")
    p.add_argument(
        "--metric-option", action="append", type=parse_metric_option, metavar="KEY=VALUE", help="metric option"
    )
    p.add_argument("--batch-size", type=_positive_int, default=4, help="images per call; the timed call is one batch")
    p.add_argument("--repeats", type=_positive_int, default=3, help="timed rounds (default 3)")
    p.add_argument("--warmup", type=_non_negative_int, default=1, help="untimed rounds before them (default 1)")
    p.add_argument(
        "--quantiles",
        type=_quantiles,
        default=(0.5,),
        metavar="Q[,Q...]",
        help="dynamic caches' thresholds at these quantiles of their calibration values (default 0.5)",
    )
    p.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    p.add_argument("--out", default="compare", help="output directory (compare.json/.csv/.md/.png, compare_grid.png)")
    _text_kv_option(p.add_argument)
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("report", help="self-contained HTML report of a search run (plus its PNG plots)")
    p.add_argument("run", type=Path)
    p.add_argument("--out", type=Path, help="HTML file (default RUN/report.html)")
    p.add_argument(
        "--samples",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="render the first N prompts uncached and with each frontier schedule (loads the model)",
    )
    p.add_argument("--device", help="device for --samples (default cuda if available)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("metrics", help="list the quality metrics")
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser("spaces", help="list the search spaces")
    p.add_argument(
        "--check", action="store_true", help="load every space in full (family, pipeline, scheduler, blocks), slower"
    )
    p.set_defaults(func=_cmd_spaces)

    p = sub.add_parser("schedules", help="list the named schedules (built-in and shipped) with their MACs")
    p.add_argument("--space", default="pixart-alpha-256", help="space whose layout and steps the MACs are for")
    p.set_defaults(func=_cmd_schedules)

    p = sub.add_parser("macs", help="MACs of a schedule in a search space, against no caching")
    p.add_argument(
        "schedule", help="a schedule file, or a name `ecad schedules` lists (every-2, tiny-pixart:demo, ...)"
    )
    p.add_argument("--space", required=True, help="search space whose model dimensions and resolution count")
    p.add_argument(
        "--images",
        type=_positive_int,
        default=1,
        help="images per call (default 1; the transformer batch doubles where the family runs CFG as an "
        "unconditional branch)",
    )
    p.add_argument(
        "--ecad-convention",
        action="store_true",
        help="count Linear layers only and the text K/V at every computed step, as ECAD does",
    )
    _text_kv_option(p.add_argument)
    p.set_defaults(func=_cmd_macs)

    _add_score_parser(sub)
    for command in sub.choices.values():  # `ecad generate ... --debug` works as well as `ecad --debug generate`
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        if command.formatter_class is argparse.HelpFormatter:
            command.formatter_class = _HelpFormatter
    return parser


# The command line is an application, so it may choose process defaults the library must not:
# no Ray usage-stats prompt, no token-auth warning on a local cluster (set them yourself to change).
APP_ENVIRONMENT = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand. A failure a user can fix (a bad file or option, an OS error such as a
    full disk or a read-only folder) is one line on stderr and exit 2; anything else is a bug,
    reported in one line with exit 1. `--debug` (or ECAD_DEBUG=1) shows the traceback instead."""
    for key, value in APP_ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("ECAD_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:  # output piped into `head` and closed: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt as exc:
        if debug:
            raise
        print(f"ecad {args.command}: {exc or 'interrupted'}", file=sys.stderr)  # a search says how to resume
        return 130
    except (EcadError, OSError, ValueError) as exc:
        if debug:
            raise
        print(f"ecad {args.command}: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence: a bug is still one line
        if debug:
            raise
        print(
            f"ecad {args.command}: internal error: {type(exc).__name__}: {_one_line(exc)}; this is a bug in ecad: "
            "rerun with --debug (or ECAD_DEBUG=1) for the traceback and report it",
            file=sys.stderr,
        )
        return 1


def _one_line(exc: BaseException) -> str:
    """The error's message; an OSError as `strerror: filename`, the way a shell tool says it."""
    if isinstance(exc, OSError) and not isinstance(exc, EcadError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}; check the path, its permissions and free space"
    text = str(exc) or type(exc).__name__
    return text if "\n" not in text or isinstance(exc, EcadError) else text.splitlines()[0]


if __name__ == "__main__":
    sys.exit(main())
