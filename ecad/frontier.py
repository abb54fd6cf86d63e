"""Pareto frontier of one or more runs, and picking one schedule by constraint.

`--pick "speedup>=2"` keeps frontier points meeting every condition and returns the best of
them on the other objective (highest quality under a cost condition, cheapest under a quality
condition), so a user states what they need rather than scanning a table.
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


class FrontierError(ValueError):
    """A run cannot be read or a pick cannot be met; the message says why and what to do."""


def pareto_indices(points: np.ndarray) -> list[int]:
    """Indices of the non-dominated rows (all objectives minimised). Of exact duplicates only
    the first is kept, so a frontier never lists the same trade-off twice."""
    pts = np.asarray(points, dtype=float)
    keep: list[int] = []
    for i in range(len(pts)):
        p = pts[i]
        dominated = np.any(np.all(pts <= p, axis=1) & np.any(pts < p, axis=1))
        duplicate = any(np.array_equal(pts[j], p) for j in keep)
        if not dominated and not duplicate:
            keep.append(i)
    return keep


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
    def latency_ms(self) -> float | None:
        """Measured ms per image on the worker, when the run recorded it."""
        v = self.details.get("ms_per_image")
        return float(v) if v is not None else None

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


def as_run(run: str | os.PathLike | RunData) -> RunData:
    """Readers take a loaded run or its directory, so a caller that has one loads it once."""
    return run if isinstance(run, RunData) else load_run(run)


def _finite(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def pareto_front(points: list[Point], higher_is_better: bool) -> list[Point]:
    """Non-dominated feasible points (quality by its direction, cost minimised), by increasing cost."""
    pts = [p for p in points if p.feasible and math.isfinite(p.quality) and math.isfinite(p.cost)]
    if not pts:
        return []
    sign = -1.0 if higher_is_better else 1.0
    arr = np.array([[sign * p.quality, p.cost] for p in pts])
    front = [pts[i] for i in pareto_indices(arr)]
    return sorted(front, key=lambda p: (p.cost, sign * p.quality))


def load_run(run_dir: str | os.PathLike, require_evaluated: bool = False) -> RunData:
    """Read a (finished or running) run directory. `require_evaluated` refuses a run whose first
    generation has not finished (what `ecad frontier` needs)."""
    from ecad.runs import read_evaluation_records

    root = Path(run_dir)
    if not root.is_dir():
        raise FrontierError(f"{root}: no such run directory; give the folder `ecad search --out` wrote")
    cfg_path = root / "config.json"
    if not cfg_path.exists():
        raise FrontierError(f"{root} is not an ecad run (no config.json); pass the directory `ecad search` wrote")
    if require_evaluated and not ((root / "evaluations.jsonl").exists() and (root / "gen_000.json").exists()):
        raise FrontierError(f"{root}: no generation has been evaluated yet; let the search finish its first "
                            f"generation or resume it with `ecad search --resume {root}`")
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
    records = read_evaluation_records(root / "evaluations.jsonl")
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


COMPARABLE = ("space", "metric", "metric_options", "cost", "prompts", "num_prompts", "seeds")


def frontier(runs: list[RunData]) -> list[Point]:
    """Non-dominated feasible points across runs scored alike (same space, metric, cost, prompts
    and seeds: otherwise their numbers do not compare), cheapest first."""
    for key in COMPARABLE:
        values = {json.dumps(r.config.get(key), sort_keys=True) for r in runs}
        if len(values) > 1:
            raise FrontierError(f"runs differ in {key!r} ({', '.join(sorted(values))}); their numbers do not "
                                "compare, so merge only runs searched with the same settings")
    front = pareto_front([p for r in runs for p in r.points], runs[0].higher_is_better)
    if not front:
        raise FrontierError("no feasible candidate in the run(s); check the evaluations' reasons in evaluations.jsonl")
    return front


def baseline_quality(runs: list[RunData]) -> float | None:
    """Quality of the no-caching schedule (cost 1.0, every bit set), if it was evaluated."""
    for r in runs:
        for p in r.points:
            if p.feasible and abs(macs_of(p) - 1.0) < 1e-9:  # only no caching computes everything
                return p.quality
    return None


# ------------------------------------------------------------------------ pick
_COND = re.compile(r"^\s*(speedup|quality|macs|cost|latency)\s*(>=|<=|>|<)\s*([0-9.eE+-]+)\s*(\*\s*baseline)?\s*$")


@dataclass(frozen=True)
class Condition:
    field: str
    op: str
    value: float
    relative: bool

    def threshold(self, baseline: float | None) -> float:
        if not self.relative:
            return self.value
        if baseline is None:
            raise FrontierError("'baseline' needs the no-caching schedule's quality, but the run did not evaluate it")
        return self.value * baseline

    def holds(self, p: Point, baseline: float | None) -> bool:
        v = {"speedup": p.speedup, "quality": p.quality, "macs": macs_of(p), "cost": p.cost,
             "latency": p.latency_ms if p.latency_ms is not None else float("nan")}[self.field]
        t = self.threshold(baseline)
        return {">=": v >= t, "<=": v <= t, ">": v > t, "<": v < t}[self.op]


def parse_pick(expr: str) -> list[Condition]:
    conds = []
    for part in expr.split(","):
        m = _COND.match(part)
        if not m:
            raise FrontierError(f"--pick {part.strip()!r} not understood; write e.g. \"speedup>=2\", "
                                "\"quality>=0.95*baseline\", \"macs<=0.4\"; join several with commas")
        conds.append(Condition(m.group(1), m.group(2), float(m.group(3)), bool(m.group(4))))
    return conds


def pick(points: list[Point], expr: str, baseline: float | None, higher_is_better: bool = True) -> Point:
    conds = parse_pick(expr)
    ok = [p for p in points if all(c.holds(p, baseline) for c in conds)]
    if not ok:
        best_q = max(points, key=lambda p: p.quality if higher_is_better else -p.quality)
        fastest = max(points, key=lambda p: p.speedup)
        raise FrontierError(
            f"no frontier schedule satisfies {expr!r}: the frontier reaches at most speedup {fastest.speedup:.2f}x "
            f"(quality {fastest.quality:.4g}) and at best quality {best_q.quality:.4g} (speedup {best_q.speedup:.2f}x)"
            + (f"; baseline quality {baseline:.4g}" if baseline is not None else "")
        )
    if any(c.field == "quality" for c in conds) and not any(c.field != "quality" for c in conds):
        return max(ok, key=lambda p: (p.speedup, p.quality if higher_is_better else -p.quality))
    return max(ok, key=lambda p: (p.quality if higher_is_better else -p.quality, p.speedup))


# ------------------------------------------------------------------ schedules
def macs_of(p: Point) -> float:
    """MACs fraction of no caching (the cost itself for a MACs-cost run)."""
    return float(p.macs_fraction if p.macs_fraction is not None else p.cost)


def schedule_of(point: Point, config: dict[str, Any], run: Path | None = None, space=None):
    """The Schedule a point stands for, with its numbers in `metrics` (`space`: the run's, when
    the caller already has it, so exporting a frontier parses the space file once)."""
    from ecad.search.genome import GenomeSpec, hex_to_bits
    from ecad.spaces import load_space

    space = space if space is not None else load_space(config["space"])
    spec = GenomeSpec.for_space(space)
    bits = hex_to_bits(point.genome, spec.size)
    metrics = {"quality": point.quality, "metric": config["metric"], "cost": point.cost, "cost_kind": config["cost"],
               "macs_fraction": macs_of(point), "macs_speedup": 1.0 / macs_of(point), "key": point.key}
    if run is not None:
        metrics["run"] = str(run)
    if point.latency_ms is not None:
        metrics["ms_per_image"] = point.latency_ms
    if point.details.get("extras"):
        metrics["extras"] = point.details["extras"]
    return spec.to_schedule(bits, space, name=f"{space.name}-{point.key[:8]}", metrics=metrics)


FRONTIER_FILE = re.compile(r"^\d{3}_[0-9a-f]{8}\.json$")


def export_frontier(points: list[Point], config: dict[str, Any], out_dir: Path,
                    fmt: str = "ecad-schedule") -> list[Path]:
    """Every frontier point as its own schedule file, cheapest first, plus frontier.json. The
    folder then holds exactly this frontier: schedule files of an earlier export are removed
    (`--seed-from RUN` reads the folder whole); nothing else in it is touched."""
    from ecad.files import atomic_write_json
    from ecad.spaces import load_space

    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.json"):
        if FRONTIER_FILE.match(old.name):
            old.unlink()
    space = load_space(config["space"])
    paths = []
    for rank, p in enumerate(points):
        path = out_dir / f"{rank:03d}_{p.key[:8]}.json"
        schedule_of(p, config, space=space).save(path, format=fmt)
        paths.append(path)
    rows = [{"rank": rank, "key": p.key, "quality": p.quality, "cost": p.cost, "macs_fraction": macs_of(p),
             "label": p.label, "schedule": path.name} for rank, (p, path) in enumerate(zip(points, paths))]
    atomic_write_json(out_dir / "frontier.json", {"metric": config["metric"], "cost": config["cost"], "points": rows})
    return paths
