"""What `ecad compare` writes: compare.json (everything, raw timings included), compare.csv,
compare.md (a Markdown table to paste into an issue or paper), compare.png (quality against
realised MACs and against measured speedup, numbered labels that never overlap) and
compare_grid.png (rows = prompts, columns = contenders)."""

from __future__ import annotations

import csv
import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
from matplotlib.figure import Figure

from ecad.compare.run import CompareResult, CompareRow
from ecad.files import atomic_write, atomic_write_json, atomic_write_text
from ecad.report.plots import STYLE, place_labels, save_figure

MARKERS = {"no caching": "*", "schedule": "o", "heuristic": "s", "diffusers": "^", "cache-dit": "D"}
COLUMNS = ("#", "contender", "kind", "{metric}", "PSNR", "SSIM", "LPIPS", "MACs", "speedup", "parameters")


# ---------------------------------------------------------------------- cells
def _num(x: float | None, fmt: str) -> str:
    return "" if x is None else format(x, fmt)


def _params(row: CompareRow) -> str:
    def show(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={show(v)}" for k, v in row.params.items())


def _macs(row: CompareRow) -> str:
    text = f"{row.macs_fraction:.1%}"
    return text + (" (did nothing)" if row.did_nothing else "")


def _speedup(row: CompareRow) -> str:
    lo, hi = row.speedup_range
    return f"{row.speedup:.2f}x ({lo:.2f}-{hi:.2f})"


def cells(row: CompareRow) -> list[str]:
    """The row as the table columns show it (the reason in place of numbers when it did not run)."""
    head = [str(row.number), row.name, row.kind]
    if not row.feasible:
        return head + ["", "", "", "", "", "", f"not run: {row.reason}"]
    return head + [
        _num(row.quality, ".4f"),
        _num(row.psnr, ".2f"),
        _num(row.ssim, ".4f"),
        _num(row.lpips, ".4f"),
        _macs(row),
        _speedup(row),
        _params(row),
    ]


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _header(metric: str) -> list[str]:
    return [c.format(metric=metric) for c in COLUMNS]


# ---------------------------------------------------------------------- tables
def format_table(result: CompareResult) -> str:
    """The terminal table: fixed-width columns, parameters last."""
    lines = [_header(result.metric)] + [cells(r) for r in result.rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(COLUMNS) - 1)]
    out = ["  ".join(c.ljust(w) for c, w in zip(line[:-1], widths)) + "  " + line[-1] for line in lines]
    return "\n".join(out + [f"note: {n}" for n in result.notes])


def markdown_table(result: CompareResult) -> str:
    s = result.settings
    caption = (
        f"{s['space']} ({s['model']}), {s['steps']} steps, {s['resolution'][0]}x{s['resolution'][1]}, "
        f"{_count(len(s['prompts']), 'prompt')} x {_count(len(s['seeds']), 'seed')}, {s['device']}, {s['dtype']}, "
        f"batch {s['batch_size']}. "
        f"{result.metric}: {'higher' if result.higher_is_better else 'lower'} is better; PSNR/SSIM/LPIPS against "
        f"no caching. MACs: realised (counted forwards) as a share of the stock pipeline's (no caching). "
        f"Speedup: median of "
        f"{s['timed_rounds']} interleaved timed rounds after {s['warmup_rounds']} warm-up (range of per-round ratios)."
    )

    def line(values: Sequence[str]) -> str:
        return "| " + " | ".join(v.replace("|", "\\|") for v in values) + " |"

    body = [line(_header(result.metric)), line(["---"] * len(COLUMNS))] + [line(cells(r)) for r in result.rows]
    return "\n".join([caption, "", *body, *[f"\nNote: {n}" for n in result.notes]]) + "\n"


def csv_text(result: CompareResult) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    fields = [
        "number",
        "name",
        "kind",
        "feasible",
        "reason",
        "quality",
        "psnr",
        "ssim",
        "lpips",
        "did_nothing",
        "macs_fraction",
        "nominal_macs_fraction",
        "gmacs_per_image",
        "ms_per_image",
        "ms_min",
        "ms_max",
        "speedup",
        "speedup_min",
        "speedup_max",
        "parameters",
    ]
    writer.writerow(fields)
    for r in result.rows:
        ms, sp = r.ms_range or [None, None], r.speedup_range or [None, None]
        values = [r.number, r.name, r.kind, r.feasible, r.reason or "", r.quality, r.psnr, r.ssim, r.lpips]
        values += [r.did_nothing, r.macs_fraction, r.nominal_macs_fraction, r.gmacs_per_image]
        values += [r.ms_per_image, ms[0], ms[1], r.speedup, sp[0], sp[1], _params(r)]
        writer.writerow(["" if v is None else v for v in values])
    return buf.getvalue()


# ---------------------------------------------------------------------- plot
def plot_compare(result: CompareResult, out_png: Path) -> Path:
    """Left: quality vs realised MACs; right: quality vs measured speedup with its range. Each
    contender is its number in both panels; the key lists the numbers."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    rows = [r for r in result.rows if r.feasible]
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(13, 5.2), layout="constrained")
        canvas = FigureCanvasAgg(fig)  # label placement measures text, which needs a renderer
        left, right = fig.subplots(1, 2, sharey=True)
        for ax, x_of, label in (
            (left, lambda r: 100 * r.macs_fraction, "realised MACs, % of no caching (counted forwards)"),
            (right, lambda r: r.speedup, "measured speedup vs no caching (x, median; bars: range)"),
        ):
            for kind, marker in MARKERS.items():
                pts = [r for r in rows if r.kind == kind]
                if not pts:
                    continue
                xs, ys = [x_of(r) for r in pts], [r.quality for r in pts]
                ax.scatter(xs, ys, marker=marker, s=70 if marker == "*" else 40, label=kind, zorder=3)
                if ax is right:
                    lo = [r.speedup - r.speedup_range[0] for r in pts]
                    hi = [r.speedup_range[1] - r.speedup for r in pts]
                    ax.errorbar(xs, ys, xerr=[lo, hi], fmt="none", ecolor="#888", lw=0.8, zorder=2)
            ax.set_xlabel(label)
            ax.grid(alpha=0.3)
            ax.margins(0.12)
        left.set_ylabel(f"{result.metric} ({'higher' if result.higher_is_better else 'lower'} is better)")
        canvas.draw()  # settle the layout before measuring where labels go
        for ax, x_of in ((left, lambda r: 100 * r.macs_fraction), (right, lambda r: r.speedup)):
            place_labels(ax, [x_of(r) for r in rows], [r.quality for r in rows], [str(r.number) for r in rows])
        left.legend(fontsize=8, loc="best")
        key = "\n".join(textwrap.shorten(f"{r.number:>2}  {r.name}", 64) for r in result.rows)
        fig.text(1.0, 0.5, key, fontsize=7.5, family="monospace", va="center", ha="left")
        s = result.settings
        fig.suptitle(
            f"{s['space']}: {_count(len(s['prompts']), 'prompt')} x {_count(len(s['seeds']), 'seed')}, {s['device']}"
        )
        return save_figure(fig, out_png)


# ---------------------------------------------------------------------- image grid
TILE = 128


def image_grid(result: CompareResult) -> Any:
    """A PIL image: one row per grid prompt, one column per contender that ran, headers numbered
    as in the plot."""
    from PIL import Image, ImageDraw

    names = [r for r in result.rows if r.feasible and r.name in result.grid]
    label_w, head_h = 180, 34
    canvas = Image.new("RGB", (label_w + TILE * len(names), head_h + TILE * len(result.grid_prompts)), "white")
    draw = ImageDraw.Draw(canvas)
    for j, row in enumerate(names):
        head = textwrap.wrap(f"{row.number}. {row.name}", 22)[:2]
        draw.multiline_text((label_w + j * TILE + 3, 2), "\n".join(head), fill="black", spacing=1)
        images = result.grid[row.name]
        for i in range(images.shape[0]):
            tile = Image.fromarray(images[i].permute(1, 2, 0).numpy())
            size = tile.size
            resample = Image.NEAREST if max(size) < TILE else Image.LANCZOS
            tile = tile.resize((TILE, round(TILE * size[1] / size[0])), resample)
            canvas.paste(tile.crop((0, 0, TILE, TILE)), (label_w + j * TILE, head_h + i * TILE))
    for i, prompt in enumerate(result.grid_prompts):
        draw.multiline_text((3, head_h + i * TILE + 3), "\n".join(textwrap.wrap(prompt, 28)[:8]), fill="black")
    return canvas


def write_compare(result: CompareResult, out_dir: Path) -> list[Path]:
    """Every output, each written atomically; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "settings": result.settings,
        "metric": result.metric,
        "higher_is_better": result.higher_is_better,
        "notes": result.notes,
        "rows": [r.to_json() for r in result.rows],
    }
    paths = [
        atomic_write_json(out_dir / "compare.json", payload),
        atomic_write_text(out_dir / "compare.csv", csv_text(result)),
        atomic_write_text(out_dir / "compare.md", markdown_table(result)),
        plot_compare(result, out_dir / "compare.png"),
    ]
    grid = image_grid(result)
    paths.append(atomic_write(out_dir / "compare_grid.png", lambda tmp: grid.save(tmp, format="PNG")))
    return paths
