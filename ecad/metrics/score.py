"""`ecad score`: score a directory of images with one quality metric, print a table, write JSON.

The command's usage and its rules for images, prompts and references are its help text
(ecad.cli.SCORE_USAGE), where the parser lives so that `ecad --help` need not import torch.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np
import torch

from ecad.files import atomic_write_json, check_output_file, read_json
from ecad.metrics.base import (
    MetricError,
    MetricResult,
    UnknownOptionError,
    get_metric,
    prompts_required_message,
    registered_class,
)
from ecad.metrics.images import list_image_files, load_image

PROMPT_WIDTH = 40


def load_image_dir(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """All PNG/JPG images of a directory, sorted by file name -> ([N, 3, H, W] float in [0, 1], names)."""
    path = Path(path)
    files = list_image_files(path)
    images: list[torch.Tensor] = []
    for f in files:
        img = load_image(f)
        if images and img.shape != images[0].shape:
            raise MetricError(
                f"images in {path} differ in size: {files[0].name} is {images[0].shape[2]}x"
                f"{images[0].shape[1]}, {f.name} is {img.shape[2]}x{img.shape[1]}; "
                "score images of one size at a time"
            )
        images.append(img)
    return torch.stack(images).float().div_(255), [f.name for f in files]


def read_prompts(path: str | Path) -> list[str]:
    """One prompt per line; trailing blank lines are ignored."""
    path = Path(path)
    if not path.is_file():
        raise MetricError(f"prompts file {path} does not exist")
    lines = [line.rstrip("\r") for line in path.read_text(encoding="utf-8").split("\n")]
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


GENERATE_RECORD = "generate.json"  # what `ecad generate` writes beside its images


def prompts_of_generated(image_dir: Path, names: list[str]) -> list[str] | None:
    """Each image's prompt from the directory's generate.json (`ecad generate`'s record), in
    `names` order; None when the directory has no such file. An image the record does not list
    is an error: a partial record would pair images with the wrong prompts."""
    record_path = image_dir / GENERATE_RECORD
    if not record_path.is_file():
        return None
    record = read_json(record_path, MetricError, "generate record")
    entries = record.get("images") if isinstance(record, dict) else None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("prompt"), str) for e in entries
    ):
        raise MetricError(
            f"{record_path}: 'images' is not a list of {{file, prompt}} entries as ecad generate writes; "
            "fix or remove it, or give --prompts"
        )
    by_file = {e["file"]: e["prompt"] for e in entries}
    missing = [n for n in names if n not in by_file]
    if missing:
        raise MetricError(
            f"{record_path} lists no prompt for {len(missing)} of the {len(names)} images (first {missing[0]}); "
            "give --prompts with one prompt per image, in file-name order"
        )
    return [by_file[n] for n in names]


def run_score(args: argparse.Namespace) -> int:
    """Run `ecad score`; returns the exit code (2 with one error line on stderr when it cannot run)."""
    try:
        return _run(args)
    except MetricError as exc:
        print(f"ecad score: error: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    if args.json_out is not None:
        check_output_file(args.json_out, "--json")
    cls = registered_class(args.metric)
    recorded = args.prompts is None and (Path(args.images) / GENERATE_RECORD).is_file()
    if cls is not None and cls.needs_prompts and args.prompts is None and not recorded:  # before loading weights
        raise MetricError(
            prompts_required_message(args.metric)
            + f" (or score a directory `ecad generate` wrote: its {GENERATE_RECORD} names each image's prompt)"
        )
    images, names = load_image_dir(args.images)
    prompts = read_prompts(args.prompts) if args.prompts is not None else prompts_of_generated(Path(args.images), names)
    if prompts is not None and len(prompts) != len(names):
        raise MetricError(
            f"{len(names)} images in {args.images} but {len(prompts)} prompts in {args.prompts}; "
            "give one prompt per line, in the images' file-name order"
        )
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    options = dict(getattr(args, "metric_option", None) or [])
    if args.batch_size is not None:
        options["batch_size"] = args.batch_size
    if args.weights is not None:
        options["weights"] = str(args.weights)
    try:
        metric = get_metric(args.metric, device=device, **options)
    except UnknownOptionError as exc:
        flags = {"batch_size": "--batch-size", "weights": "--weights"}
        given = ", ".join(flags.get(k, f"--metric-option {k}=...") for k in exc.options)
        raise MetricError(f"metric {args.metric!r} does not take {given}: {exc}") from exc
    references = None
    if metric.needs_reference:
        if args.reference is None:
            raise MetricError(f"metric {args.metric!r} needs --reference DIR (the uncached images, same file order)")
        references, ref_names = load_image_dir(args.reference)
        if len(ref_names) != len(names):
            raise MetricError(f"{len(names)} images but {len(ref_names)} reference images in {args.reference}")
    elif args.reference is not None:
        if not hasattr(metric, "reference"):  # set metrics (fid) take a reference directory of any size
            raise MetricError(f"metric {args.metric!r} takes no --reference")
        metric.reference = str(args.reference)

    result = metric.score(images, prompts, references)
    print(format_table(result, names, prompts))
    print(summary_line(result, len(names)))
    if args.json_out is not None:
        payload = {**result.to_json(), "files": names, "images": str(args.images)}
        if prompts is not None:
            payload["prompts"] = prompts
        if args.reference is not None:
            payload["reference"] = str(args.reference)
        atomic_write_json(args.json_out, payload)
        print(f"wrote {args.json_out}")
    return 0


def _fmt(x: float) -> str:
    x = float(x)
    return "n/a" if not math.isfinite(x) else f"{x:.4f}"


def _truncate(text: str, width: int = PROMPT_WIDTH) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


def format_table(result: MetricResult, names: list[str], prompts: list[str] | None) -> str:
    """Per-image table: file, prompt (truncated), score, extras."""
    extras = [k for k in result.extras if k != result.name]
    header = ["file"] + (["prompt"] if prompts is not None else []) + [result.name] + extras
    rows = []
    for i, name in enumerate(names):
        row = [name] + ([_truncate(prompts[i])] if prompts is not None else []) + [_fmt(result.per_image[i])]
        row += [_fmt(np.asarray(result.extras[k]).ravel()[i]) for k in extras]
        rows.append(row)
    widths = [max(len(str(r[c])) for r in [header] + rows) for c in range(len(header))]
    numeric = set(range(len(header) - 1 - len(extras), len(header)))

    def line(r):
        return "  ".join(
            str(v).rjust(w) if c in numeric else str(v).ljust(w) for c, (v, w) in enumerate(zip(r, widths))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def summary_line(result: MetricResult, n: int) -> str:
    direction = "higher is better" if result.higher_is_better else "lower is better"
    if np.all(~np.isfinite(np.asarray(result.per_image, dtype=float))):
        return f"{result.name}: {_fmt(result.summary)} over the set of {n} images ({direction})"
    return f"{result.name}: mean {_fmt(result.summary)} over {n} images ({direction})"
