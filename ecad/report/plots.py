"""PNG plots of a search run (matplotlib, Agg): frontier, hypervolume, schedule heatmaps.

`write_run_plots(run_dir)` is cheap enough to call after every generation, so a running search
can be watched by reloading run_dir/plots/*.png; every file is written to a temp name and
renamed, so a viewer never sees half a PNG.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib
import numpy as np
from matplotlib.colors import BoundaryNorm, ListedColormap, Normalize
from matplotlib.figure import Figure  # bare Figures render with Agg: no pyplot, no global backend switch
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import FuncFormatter
from matplotlib.transforms import Bbox

from ecad.files import atomic_write, atomic_write_json, move
from ecad.frontier import seed_family
from ecad.runs import RunData, as_run, frontier_schedules

if TYPE_CHECKING:
    from ecad.schedule import Schedule

COMPUTE, REUSE, SKIPPED, ABSENT = "#1d3557", "#dbe6f2", "#b0b0b0", "#ffffff"  # ABSENT: no such component
FRONT = "#d62828"
SEED_MARKERS = {
    "every_n (FORA-like)": "s",
    "attention_every_n": "^",
    "tgate (T-GATE-like)": "v",
    "single component": "D",
    "seed file": "P",
}
# where a label goes, in points from its marker: rings of growing radius, the first free one
LABEL_OFFSETS = [
    (dx * r, dy * r)
    for r in (1, 2, 3, 4)
    for dx, dy in ((5, 4), (5, -11), (-12, 4), (-12, -11), (7, -3), (-15, -3), (-3, 8), (-3, -15))
]
RANK_OFFSETS = [  # a frontier rank, bold beside a ringed marker
    (dx * r, dy * r)
    for r in (1, 1.6, 2.4, 3.4)
    for dx, dy in ((6, 5), (6, -12), (-12, 5), (-12, -12), (8, -3), (-15, -3), (-3, 9), (-3, -16))
]
STYLE = {
    "font.size": 10,
    "axes.titlesize": 12,
    "axes.labelsize": 10.5,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.dpi": 100,
}


def save_figure(fig: Figure, out_png: str | os.PathLike, dpi: int = 110) -> Path:
    """A PNG written atomically (ecad.files.atomic_write)."""
    return atomic_write(
        out_png, lambda tmp: fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    )


def _run_title(run: RunData) -> str:
    space = run.config.get("space", "?")
    return f"{run.root.name}  ·  {space}  ·  {run.metric} vs {run.cost_kind}"


# ---------------------------------------------------------------------- frontier
def plot_frontier(run_dir: str | os.PathLike | RunData, out_png: str | os.PathLike) -> Path:
    """Every feasible candidate (quality vs cost) coloured by the generation it was first evaluated
    in, the Pareto frontier as a line with ringed markers, each labelled with its rank (the NNN of
    its file frontier/NNN_key.json and the # of the report's table), no caching as a star and the
    heuristic seeds with their own markers; a candidate that racing stopped early is hollow (its
    quality is an estimate on part of the images)."""
    fig = frontier_figure(run_dir)
    with matplotlib.rc_context(STYLE):
        return save_figure(fig, out_png)


def frontier_figure(run_dir: str | os.PathLike | RunData) -> Figure:
    """The figure `plot_frontier` saves (with an Agg canvas: its text can be measured)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    run = as_run(run_dir)
    feas = run.feasible
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(10, 7.0), layout="constrained")
        FigureCanvasAgg(fig)  # placing the rank labels measures text, which needs a renderer
        ax = fig.subplots()
        last_gen = max([p.generation for p in run.points] + [len(run.generations) - 1, 1])
        if last_gen <= 16:
            cmap = matplotlib.colormaps["viridis"].resampled(last_gen + 1)
            norm = BoundaryNorm(np.arange(-0.5, last_gen + 1.5), cmap.N)
        else:
            cmap, norm = matplotlib.colormaps["viridis"], Normalize(0, last_gen)
        plain = [p for p in feas if p.kind in ("random", "evolved") and p.complete]
        stopped = [p for p in feas if not p.complete]  # raced and stopped early: an estimate, drawn hollow
        sc = ax.scatter(
            [p.cost for p in plain],
            [p.quality for p in plain],
            c=[p.generation for p in plain],
            cmap=cmap,
            norm=norm,
            s=30,
            alpha=0.85,
            edgecolors="white",
            linewidths=0.4,
            zorder=2,
        )
        handles: list[Any] = [
            Line2D([], [], ls="", marker="o", mfc="#7f7f7f", mec="white", ms=7, label="searched candidate")
        ]
        if stopped:
            ax.scatter(
                [p.cost for p in stopped],
                [p.quality for p in stopped],
                facecolors="none",
                edgecolors=cmap(norm([p.generation for p in stopped])),
                s=30,
                linewidths=0.9,
                alpha=0.85,
                zorder=2,
            )
            handles.append(
                Line2D(
                    [],
                    [],
                    ls="",
                    marker="o",
                    mfc="none",
                    mec="#7f7f7f",
                    ms=7,
                    label=f"stopped by racing ({len(stopped)}): its estimate on part of the images",
                )
            )
        seeds = [p for p in feas if p.kind == "seed" and p.complete]
        fams: dict[str, list] = {}
        for p in seeds:
            fams.setdefault(seed_family(p.label), []).append(p)
        for fam, pts in sorted(fams.items()):
            marker = SEED_MARKERS.get(fam, "h")
            ax.scatter(
                [p.cost for p in pts],
                [p.quality for p in pts],
                c=[p.generation for p in pts],
                cmap=cmap,
                norm=norm,
                marker=marker,
                s=60,
                edgecolors="black",
                linewidths=0.9,
                zorder=3,
            )
            handles.append(
                Line2D(
                    [], [], ls="", marker=marker, mfc="white", mec="black", ms=7.5, label=f"seed: {fam} ({len(pts)})"
                )
            )
        front = run.frontier
        if front:
            xs, ys = [p.cost for p in front], [p.quality for p in front]
            ax.plot(xs, ys, color=FRONT, lw=1.6, alpha=0.9, zorder=4)
            ax.scatter(xs, ys, s=120, facecolors="none", edgecolors=FRONT, linewidths=1.8, zorder=5)
            handles.append(
                Line2D(
                    [],
                    [],
                    color=FRONT,
                    lw=1.6,
                    marker="o",
                    mfc="none",
                    mec=FRONT,
                    ms=10,
                    mew=1.8,
                    label=f"Pareto frontier ({len(front)}); number: rank, file frontier/NNN_key.json",
                )
            )
        base = [p for p in feas if p.kind == "no_caching"]
        if base:
            ax.scatter(
                [p.cost for p in base],
                [p.quality for p in base],
                marker="*",
                s=320,
                c="#ffb703",
                edgecolors="black",
                linewidths=1.0,
                zorder=6,
            )
            ax.annotate(
                "no caching",
                (base[0].cost, base[0].quality),
                xytext=(-10, 10),
                textcoords="offset points",
                ha="right",
                fontsize=9,
                color="#333333",
            )
            handles.append(Line2D([], [], ls="", marker="*", mfc="#ffb703", mec="black", ms=14, label="no caching"))
        infeasible = len(run.points) - len(feas)
        if not feas:
            ax.text(
                0.5,
                0.5,
                "no feasible candidates yet",
                transform=ax.transAxes,
                ha="center",
                va="center",
                fontsize=13,
                color="#777777",
            )
            ax.set_xlim(0, 1.05)
        else:
            xmax = max(p.cost for p in feas)
            ax.set_xlim(0, max(1.05, xmax * 1.05))
        ax.set_xlabel(f"cost: {run.cost_label()}  →  lower is better")
        ax.set_ylabel(f"quality: {run.quality_label()}")
        ax.grid(True, alpha=0.3, lw=0.6)
        sec = ax.secondary_xaxis("top", functions=(_inv, _inv))
        sec.set_xlabel("estimated speedup (1 / cost)", fontsize=9.5, color="#555555")
        sec.tick_params(labelsize=8.5, colors="#555555")
        sec.set_xticks([t for t in (1, 1.25, 1.5, 2, 3, 4, 6, 10) if 1 / t >= ax.get_xlim()[0] + 1e-9])
        sec.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
        cb = fig.colorbar(sc, ax=ax, pad=0.015, fraction=0.04)
        cb.set_label("generation first evaluated")
        if last_gen <= 16:
            cb.set_ticks(range(0, last_gen + 1, max(1, (last_gen + 1) // 8)))
        note = f"{len(feas)} feasible candidates" + (f", {infeasible} infeasible (not shown)" if infeasible else "")
        handles.append(Line2D([], [], ls="", label=note))
        fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8.5, frameon=False)
        ax.set_title(f"Quality vs cost — {_run_title(run)}", loc="left", pad=12)
        if front:
            _rank_labels(fig, ax, front)
        return fig


def _rank_labels(fig: Figure, ax, front) -> list:
    """Each frontier point's rank beside it (the NNN of its file and the table's #)."""
    fig.draw_without_rendering()  # settle the constrained layout first: labels are placed in pixels
    return place_labels(
        ax,
        [p.cost for p in front],
        [p.quality for p in front],
        [str(rank) for rank in range(len(front))],
        offsets=RANK_OFFSETS,
        marker_radius=7,  # the ringed markers
        fontsize=8,
        fontweight="bold",
        color=FRONT,
        zorder=7,
        gid="frontier-rank",
    )


def _overlaps(box: Bbox, others: list[Bbox]) -> float:
    """Total overlapping area of `box` with `others` (display units)."""
    total = 0.0
    for o in others:
        w = min(box.x1, o.x1) - max(box.x0, o.x0)
        h = min(box.y1, o.y1) - max(box.y0, o.y0)
        if w > 0 and h > 0:
            total += w * h
    return total


def place_labels(ax, xs, ys, labels, offsets=LABEL_OFFSETS, marker_radius: float = 4, **text: Any) -> list:
    """Text labels beside points, each at the first offset (rings of growing radius) where it
    overlaps no label placed before it, no point and nothing outside the axes; when none is free,
    the least overlapping one. Needs a figure with a canvas (Agg). Returns the Text artists.
    Shared by the run's frontier plot and `ecad compare`'s plot."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    r = marker_radius
    taken = [
        Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in (ax.transData.transform(p) for p in zip(xs, ys))
    ]
    style = {"fontsize": 7.5, "zorder": 6, **text}
    texts = []
    for x, y, label in zip(xs, ys, labels):
        artist = ax.annotate(label, (x, y), xytext=(0, 0), textcoords="offset points", **style)
        best, best_cost = offsets[0], math.inf
        for off in offsets:
            artist.set_position(off)
            box = artist.get_window_extent(renderer)
            outside = 0.0 if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) else 1e6
            cost = _overlaps(box, taken) + outside
            if cost < best_cost:
                best, best_cost = off, cost
            if cost == 0:
                break
        artist.set_position(best)
        taken.append(artist.get_window_extent(renderer))
        texts.append(artist)
    return texts


def _inv(x):
    x = np.asarray(x, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(x > 1e-6, 1.0 / np.maximum(x, 1e-6), 1e6)


# ---------------------------------------------------------------------- hypervolume
def plot_hypervolume(run_dir: str | os.PathLike | RunData, out_png: str | os.PathLike) -> Path:
    """Hypervolume of the population per generation, with new evaluations per generation as bars."""
    run = as_run(run_dir)
    hv = run.hypervolume
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=(8, 4.2))
        ax = fig.subplots()
        if hv:
            gens = [g for g, _ in hv]
            new = [len(rec.get("evaluated", [])) for rec in run.generations if rec.get("hypervolume") is not None]
            ax2 = ax.twinx()
            ax2.bar(gens, new, width=0.6, color="#cfd8e3", zorder=0, label="new evaluations")
            ax2.set_ylabel("new evaluations", color="#6b7a8f")
            ax2.tick_params(axis="y", colors="#6b7a8f")
            ax2.spines["right"].set_visible(True)
            ax2.set_ylim(0, max(new + [1]) * 3.0)
            ax.set_zorder(ax2.get_zorder() + 1)
            ax.patch.set_visible(False)
            ax.plot(gens, [v for _, v in hv], color="#1d3557", lw=2, marker="o", ms=6, zorder=3)
            ax.annotate(
                f"{hv[-1][1]:.4f}",
                (gens[-1], hv[-1][1]),
                xytext=(6, -14),
                textcoords="offset points",
                fontsize=9,
                color="#1d3557",
            )
            ax.set_xticks(gens if len(gens) <= 20 else np.linspace(gens[0], gens[-1], 11).round().astype(int))
            lo, hi = min(v for _, v in hv), max(v for _, v in hv)
            pad = (hi - lo) * 0.15 or max(abs(hi) * 0.05, 1e-3)
            ax.set_ylim(lo - pad, hi + pad)
        else:
            ax.text(
                0.5,
                0.5,
                "no generation recorded yet",
                transform=ax.transAxes,
                ha="center",
                va="center",
                color="#777777",
            )
        ref = run.generations[-1].get("hv_ref") if run.generations else None
        ax.set_xlabel("generation")
        ax.set_ylabel("hypervolume (higher is better)")
        ax.grid(True, alpha=0.3, lw=0.6)
        title = f"Hypervolume per generation — {run.root.name}"
        if isinstance(ref, (list, tuple)) and ref:
            title += "\nreference point (" + ", ".join(f"{float(v):.4g}" for v in ref) + "), objectives as minimised"
        ax.set_title(title, loc="left", fontsize=11)
        return save_figure(fig, out_png)


# ---------------------------------------------------------------------- heatmaps
def schedule_image(schedule: Schedule) -> np.ndarray:
    """[steps, blocks, components] of 0 = reuse, 1 = compute, 2 = step not run, 3 = no such
    component (padding of a block with fewer components than the grid is wide)."""
    img = schedule.effective_grid().astype(np.int8)  # a reuse flag on the first step runs as compute
    skipped = np.setdiff1d(np.arange(schedule.num_steps), schedule.executed_steps)
    img[skipped] = 2
    img[:, ~schedule.layout.cell_mask()] = 3
    return img


def plot_schedule_heatmap(
    schedule: Schedule, out_png: str | os.PathLike, title: str | None = None, note: str | None = None
) -> Path:
    """Steps (rows) x blocks (columns), one panel per component index. FLUX panels span the double
    blocks then the single blocks, with a divider between them and both component names in the
    panel title. Dark = compute, light = reuse, grey = step not run. The title is `title` or the
    schedule's name, then its compute fraction and `note` (default: quality/MACs from its metrics)."""
    fig = schedule_heatmap_figure(schedule, title=title, note=note)
    with matplotlib.rc_context(STYLE):
        return save_figure(fig, out_png, dpi=100)


def schedule_heatmap_figure(schedule: Schedule, title: str | None = None, note: str | None = None) -> Figure:
    """The figure `plot_schedule_heatmap` saves."""
    img = schedule_image(schedule)
    steps, blocks, comps = img.shape
    layout = schedule.layout
    cmap = ListedColormap([REUSE, COMPUTE, SKIPPED, ABSENT])
    vertical = blocks > 36  # wide panels (FLUX: 57 blocks) stack, narrow ones sit side by side
    if vertical:
        pw, ph = min(9.0, max(4.0, blocks * 0.14)), min(3.2, max(1.4, steps * 0.12))
        figsize, nrows, ncols = (pw + 1.0, comps * (ph + 0.7) + 0.9), comps, 1
    else:
        pw, ph = min(3.8, max(2.0, blocks * 0.3)), min(3.6, max(1.8, steps * 0.15))
        figsize, nrows, ncols = (comps * (pw + 0.5) + 0.6, ph + 1.5), 1, comps
    with matplotlib.rc_context(STYLE):
        fig = Figure(figsize=figsize, layout="constrained")
        axes = fig.subplots(nrows, ncols, squeeze=False)
        axes = axes.ravel()
        bounds = np.cumsum([g.num_blocks for g in layout.groups])[:-1]
        xlabel = "block"
        if len(layout.groups) > 1:
            xlabel += "  (" + "  |  ".join(f"{g.display} {g.num_blocks}" for g in layout.groups) + ")"
        for c, ax in enumerate(axes):
            ax.imshow(
                img[:, :, c],
                cmap=cmap,
                vmin=0,
                vmax=3,
                aspect="auto",
                interpolation="nearest",
                extent=(-0.5, blocks - 0.5, steps - 0.5, -0.5),
            )
            for b in bounds:
                ax.axvline(b - 0.5, color="#e63946", lw=1.6)
            names = [g.components[c] if c < len(g.components) else "\u2014" for g in layout.groups]
            if vertical and len(layout.groups) > 1:  # FLUX: say which group (double, single) each name is of
                names = [f"{g.display}: {n}" for g, n in zip(layout.groups, names)]
            names = "  |  ".join(names) if vertical else " | ".join(names)
            real = int((img[0, :, c] != 3).sum())
            frac = float((img[:, :, c] == 1).sum()) / max(1, steps * real)
            ax.set_title(f"{names}  ({frac:.0%} of cells computed)", fontsize=9.5)
            ax.set_xlabel(xlabel, fontsize=9)
            ax.set_ylabel("step", fontsize=9)
            ax.set_xticks(_ticks(blocks))
            ax.set_yticks(_ticks(steps))
            ax.tick_params(labelsize=7.5, length=2)
            for s in ("top", "right"):
                ax.spines[s].set_visible(True)
        executed = len(schedule.executed_steps)
        head = title or schedule.name or "schedule"
        sub = f"{schedule.compute_fraction():.1%} of block components computed"
        if executed != steps:
            sub += f"  ·  {executed} of {steps} steps run"
        if note is None:
            note = _metrics_note(schedule.metrics if isinstance(schedule.metrics, dict) else {})
        if note:
            sub += f"  ·  {note}"
        fig.suptitle(f"{head}\n{sub}", fontsize=11, x=0.02, ha="left")
        legend = [Patch(color=COMPUTE, label="compute"), Patch(color=REUSE, label="reuse cache")]
        if executed != steps:
            legend.append(Patch(color=SKIPPED, label="step not run"))
        if layout.ragged:
            legend.append(Patch(facecolor=ABSENT, edgecolor="#9aa5b1", label="no such component"))
        fig.legend(handles=legend, loc="outside lower center", ncol=len(legend), fontsize=8.5, frameon=False)
        if vertical:
            fig.get_layout_engine().set(h_pad=0.06)  # room between a panel's block label and the next title
        return fig


def _metrics_note(metrics: dict[str, Any]) -> str:
    parts = []
    q = metrics.get("quality")
    if isinstance(q, (int, float)) and math.isfinite(q):
        parts.append(f"{metrics.get('metric', 'quality')} {q:.4g}")
    mf = metrics.get("macs_fraction")
    if isinstance(mf, (int, float)) and mf > 0:
        parts.append(f"MACs {mf:.1%} ({1 / mf:.2f}× est.)")
    return "  ·  ".join(parts)


def _ticks(n: int) -> list[int]:
    step = 1 if n <= 12 else 2 if n <= 24 else 5 if n <= 60 else 10
    return list(range(0, n, step))


# ---------------------------------------------------------------------- all plots of a run
def write_run_plots(run_dir: str | os.PathLike | RunData) -> Path:
    """run_dir/plots/{frontier,hypervolume}.png and plots/heatmaps/<schedule stem>.png for every
    frontier schedule. Heatmaps already drawn for the same schedule are kept (renamed when a
    frontier rank shifts), so repeated calls during a search only draw what changed."""
    run = as_run(run_dir)
    out = run.plots_dir
    plot_frontier(run, out / "frontier.png")
    plot_hypervolume(run, out / "hypervolume.png")
    heat = out / "heatmaps"
    heat.mkdir(parents=True, exist_ok=True)
    index_path = heat / ".index.json"
    try:
        index: dict[str, str] = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError):
        index = {}
    new_index: dict[str, str] = {}
    wanted = set()
    space_name = Path(str(run.config.get("space", "schedule"))).stem
    for stem, point, schedule in frontier_schedules(run):
        # title and note come from the point, not the file name (which carries the frontier rank),
        # so a heatmap stays valid while ranks shift and when the run writes frontier/ at its end
        title = f"{space_name} · {point.key[:8]} · {point.label or 'candidate'}"
        if run.cost_kind == "macs":
            note = f"{run.metric} {point.quality:.4g}  ·  MACs {point.cost:.1%} ({point.speedup:.2f}× est.)"
        else:
            note = f"{run.metric} {point.quality:.4g}  ·  latency {point.cost:.3f} ({point.speedup:.2f}× est.)"
            if point.macs_fraction:
                note += f"  ·  MACs {point.macs_fraction:.1%}"
        sig = f"{point.key}|{title}|{note}"
        target = heat / f"{stem}.png"
        wanted.add(target.name)
        if index.get(target.name) == sig and target.exists():
            new_index[target.name] = sig
            continue
        moved = next(
            (
                name
                for name, s in index.items()
                if s == sig and name != target.name and name not in wanted and (heat / name).exists()
            ),
            None,
        )
        if moved is not None:
            move(heat / moved, target)
            index.pop(moved)
        else:
            plot_schedule_heatmap(schedule, target, title=title, note=note)
        new_index[target.name] = sig
    for stale in heat.glob("*.png"):
        if stale.name not in wanted:
            stale.unlink()
    atomic_write_json(index_path, new_index)
    return out
