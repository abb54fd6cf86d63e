"""Reports of a search run: PNG plots to watch a running search, one self-contained HTML page.

`load_run` reads a run directory (config.json, gen_NNN.json, evaluations.jsonl, frontier/) into
plain Python objects; `ecad.report.plots` and `ecad.report.html` only ever read those. Every
reader tolerates a run that is still going (no frontier/ yet, a torn last log line).
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

GEN_LABEL = re.compile(r"^gen\d+$")
NO_CACHING = "no_caching"


@dataclass
class Point:
    """One evaluated candidate of a run."""

    key: str
    generation: int  # generation it was first evaluated in
    genome: str  # hex of the packed genome bits
    quality: float
    cost: float
    feasible: bool
    reason: str | None
    label: str
    macs_fraction: float | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        """Estimated speedup over no caching: 1 / cost (MACs fraction or relative latency)."""
        return 1.0 / self.cost if self.cost and self.cost > 0 else float("nan")

    @property
    def kind(self) -> str:
        """'no_caching', 'seed' (a heuristic or --seed-from schedule), 'random' or 'evolved'."""
        return label_kind(self.label)


@dataclass
class RunData:
    """Everything the plots and the HTML page show, read from one run directory."""

    root: Path
    config: dict[str, Any]
    config_hash: str | None
    generations: list[dict[str, Any]]  # the gen_NNN.json records, in order
    points: list[Point]  # every evaluated candidate, each key once, in evaluation order
    frontier: list[Point]  # non-dominated feasible points, by increasing cost
    frontier_files: dict[str, str]  # key -> schedule file name in frontier/ (final frontier only)
    higher_is_better: bool

    @property
    def metric(self) -> str:
        return str(self.config.get("metric", "quality"))

    @property
    def cost_kind(self) -> str:
        return str(self.config.get("cost", "macs"))

    @property
    def feasible(self) -> list[Point]:
        return [p for p in self.points if p.feasible]

    @property
    def hypervolume(self) -> list[tuple[int, float]]:
        return [(int(g.get("generation", i)), float(g["hypervolume"])) for i, g in enumerate(self.generations)
                if g.get("hypervolume") is not None]

    def quality_label(self) -> str:
        return f"{self.metric} ({'higher' if self.higher_is_better else 'lower'} is better)"

    def cost_label(self) -> str:
        if self.cost_kind == "latency":
            return "relative latency (fraction of no caching)"
        return "MACs (fraction of no caching)"

    def frontier_stem(self, point: Point, rank: int) -> str:
        """File stem of a frontier schedule: the one in frontier/ when written, else what it will be."""
        name = self.frontier_files.get(point.key)
        return Path(name).stem if name else f"{rank:03d}_{point.key[:8]}"


def label_kind(label: str) -> str:
    if label == NO_CACHING:
        return "no_caching"
    if not label or label == "random" or GEN_LABEL.match(label):
        return "random" if label == "random" else "evolved"
    return "seed"


def seed_family(label: str) -> str:
    """Group heuristic seed labels for legends: every_3 -> every_n, cache_c1_k2_m2 -> cache_c1, ..."""
    if label.startswith("seed:"):
        return "seed file"
    if label.startswith("attention_every_"):
        return "attention_every_n"
    if label.startswith("every_"):
        return "every_n (FORA-like)"
    if label.startswith("tgate_"):
        return "tgate (T-GATE-like)"
    m = re.match(r"^cache_c(\d+)_", label)
    if m:
        return "single component"
    return label


def _finite(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line of a run that is still writing
    return out


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def pareto_front(points: list[Point], higher_is_better: bool) -> list[Point]:
    """Non-dominated feasible points (quality by its direction, cost minimised), by increasing cost."""
    from ecad.frontier import pareto_indices

    pts = [p for p in points if p.feasible and math.isfinite(p.quality) and math.isfinite(p.cost)]
    if not pts:
        return []
    sign = -1.0 if higher_is_better else 1.0
    arr = np.array([[sign * p.quality, p.cost] for p in pts])
    front = [pts[i] for i in pareto_indices(arr)]
    return sorted(front, key=lambda p: (p.cost, sign * p.quality))


def load_run(run_dir: str | os.PathLike) -> RunData:
    """Read a (finished or running) run directory; raises FileNotFoundError if it is not a run."""
    root = Path(run_dir)
    cfg_path = root / "config.json"
    if not cfg_path.exists():
        raise FileNotFoundError(f"{root} is not an ecad run (no config.json); pass the directory `ecad search` wrote")
    cfg = _read_json(cfg_path) or {}
    config = cfg.get("config", cfg) if isinstance(cfg, dict) else {}
    generations = []
    for path in sorted(root.glob("gen_*.json")):
        rec = _read_json(path)
        if isinstance(rec, dict):
            generations.append(rec)

    labels: dict[str, str] = {}
    for rec in generations:  # the label a candidate had when it first appeared
        for m in rec.get("population", []):
            labels.setdefault(m.get("key", ""), m.get("label", ""))

    higher = None
    by_key: dict[str, Point] = {}
    records = _read_jsonl(root / "evaluations.jsonl")
    if not records:  # no log (yet): fall back to the populations
        records = [{**m, "generation": rec.get("generation", 0)} for rec in generations for m in rec.get("population", [])]
    for r in records:
        key = r.get("key")
        if not key or key in by_key:
            continue
        details = r.get("details") or {}
        if higher is None and "higher_is_better" in details:
            higher = bool(details["higher_is_better"])
        values = r.get("values") or [float("nan"), float("nan")]
        gen = int(r.get("generation", 0))
        quality, cost = _finite(values[0]), _finite(values[1])
        feasible = bool(r.get("feasible")) and math.isfinite(quality) and math.isfinite(cost)
        by_key[key] = Point(
            key=key, generation=gen, genome=str(r.get("genome", "")), quality=quality, cost=cost, feasible=feasible,
            reason=r.get("reason"), label=labels.get(key) or (f"gen{gen}" if gen > 0 else ""),
            macs_fraction=_finite(details["macs_fraction"]) if "macs_fraction" in details else None, details=details,
        )
    if higher is None:
        higher = str(config.get("metric", "")) != "fid"
    points = list(by_key.values())

    frontier_files: dict[str, str] = {}
    fj = _read_json(root / "frontier" / "frontier.json")
    if isinstance(fj, dict):
        for row in fj.get("points", []):
            if row.get("key") and row.get("schedule") and (root / "frontier" / row["schedule"]).exists():
                frontier_files[row["key"]] = row["schedule"]
    return RunData(root=root, config=config, config_hash=cfg.get("config_hash") if isinstance(cfg, dict) else None,
                   generations=generations, points=points, frontier=pareto_front(points, higher),
                   frontier_files=frontier_files, higher_is_better=higher)


def run_space(run: RunData):
    """The run's SearchSpace, or None when it cannot be loaded here (a space file that moved)."""
    from ecad.spaces import load_space

    name = run.config.get("space")
    if not name:
        return None
    try:
        return load_space(name)
    except (ValueError, OSError):
        return None


def frontier_schedules(run: RunData, space=None) -> list[tuple[str, Point, Any]]:
    """(file stem, point, Schedule) for each frontier point: from frontier/ when the run wrote it,
    else decoded from the genome with the run's search space (a search that is still going)."""
    from ecad.schedule import ScheduleError, load_schedule

    out = []
    spec = None
    for rank, p in enumerate(run.frontier):
        stem = run.frontier_stem(p, rank)
        schedule = None
        if p.key in run.frontier_files:
            try:
                schedule = load_schedule(run.root / "frontier" / run.frontier_files[p.key])
            except ScheduleError:
                schedule = None
        if schedule is None and p.genome:
            if space is None:
                space = run_space(run)
                if space is None:
                    continue
            if spec is None:
                from ecad.search.genome import GenomeSpec

                spec = GenomeSpec.for_space(space)
            schedule = decode_genome(p.genome, spec, space, name=f"{space.name}-{p.key[:8]}")
        if schedule is not None:
            out.append((stem, p, schedule))
    return out


def decode_genome(genome_hex: str, spec, space, **kw):
    from ecad.schedule import ScheduleError
    from ecad.search.genome import hex_to_bits

    try:
        return spec.to_schedule(hex_to_bits(genome_hex, spec.size), space, **kw)
    except (ScheduleError, ValueError):
        return None


from ecad.report.plots import plot_frontier, plot_hypervolume, plot_schedule_heatmap, write_run_plots  # noqa: E402
from ecad.report.html import render_samples, write_report  # noqa: E402

__all__ = [
    "Point",
    "RunData",
    "load_run",
    "plot_frontier",
    "plot_hypervolume",
    "plot_schedule_heatmap",
    "render_samples",
    "write_report",
    "write_run_plots",
]
