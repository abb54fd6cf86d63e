"""Pareto frontier of one or more runs, and picking one schedule by constraint.

`--pick "speedup>=2"` keeps frontier points meeting every condition and returns the best of
them on the other objective (highest quality under a cost condition, cheapest under a quality
condition), so a user states what they need rather than scanning a table.
"""

from __future__ import annotations

import json
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


@dataclass
class Point:
    """One evaluated candidate of a run."""

    run: Path
    key: str
    genome: str
    generation: int
    quality: float
    cost: float  # relative to no caching (MACs fraction or latency ratio)
    feasible: bool
    label: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def macs_fraction(self) -> float:
        return float(self.details.get("macs_fraction", self.cost))

    @property
    def speedup(self) -> float:
        return 1.0 / self.cost if self.cost > 0 else float("inf")

    @property
    def latency_ms(self) -> float | None:
        v = self.details.get("ms_per_image")
        return float(v) if v is not None else None


@dataclass
class RunPoints:
    run: Path
    config: dict[str, Any]
    points: list[Point]

    @property
    def higher_is_better(self) -> bool:
        return self.config.get("metric") != "fid"


def load_run(run_dir: str | Path) -> RunPoints:
    run = Path(run_dir)
    if not run.is_dir():
        raise FrontierError(f"{run}: no such run directory; give the folder `ecad search --out` wrote")
    cfg_path = run / "config.json"
    if not cfg_path.exists():
        raise FrontierError(f"{run}: not an ecad run (no config.json)")
    config = json.loads(cfg_path.read_text())["config"]
    log = run / "evaluations.jsonl"
    if not log.exists() or not (run / "gen_000.json").exists():
        raise FrontierError(f"{run}: no generation has been evaluated yet; let the search finish its first "
                            f"generation or resume it with `ecad search --resume {run}`")
    labels: dict[str, str] = {}
    for gen in sorted(run.glob("gen_*.json")):
        for m in json.loads(gen.read_text())["population"]:
            labels.setdefault(m["key"], m.get("label", ""))
    points = []
    for line in log.read_text().splitlines():
        try:
            d = json.loads(line)
        except json.JSONDecodeError:
            continue
        q, c = d["values"]
        points.append(Point(run, d["key"], d["genome"], d["generation"], float("nan") if q is None else q,
                            float("nan") if c is None else c, d["feasible"], labels.get(d["key"], f"gen{d['generation']}"),
                            d.get("details") or {}))
    return RunPoints(run, config, points)


def frontier(runs: list[RunPoints]) -> list[Point]:
    """Non-dominated feasible points across runs (same metric and cost), cheapest first."""
    metrics = {(r.config["metric"], r.config["cost"], r.config["space"]) for r in runs}
    if len(metrics) > 1:
        raise FrontierError(f"runs use different metric/cost/space {sorted(metrics)}; merge only comparable runs")
    sign = 1.0 if runs[0].higher_is_better else -1.0
    pts = [p for r in runs for p in r.points if p.feasible]
    if not pts:
        raise FrontierError("no feasible candidate in the run(s); check the evaluations' reasons in evaluations.jsonl")
    arr = np.array([[-sign * p.quality, p.cost] for p in pts])
    return sorted((pts[i] for i in pareto_indices(arr)), key=lambda p: (p.cost, -sign * p.quality))


def baseline_quality(runs: list[RunPoints]) -> float | None:
    """Quality of the no-caching schedule (cost 1.0, every bit set), if it was evaluated."""
    for r in runs:
        for p in r.points:
            if p.feasible and abs(p.macs_fraction - 1.0) < 1e-9:  # only no caching computes everything
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
        v = {"speedup": p.speedup, "quality": p.quality, "macs": p.macs_fraction, "cost": p.cost,
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
def schedule_of(point: Point, config: dict[str, Any]):
    """The Schedule a point stands for, with its numbers in `metrics`."""
    from ecad.search.genome import GenomeSpec, hex_to_bits
    from ecad.spaces import load_space

    space = load_space(config["space"])
    spec = GenomeSpec.for_space(space)
    bits = hex_to_bits(point.genome, spec.size)
    metrics = {"quality": point.quality, "metric": config["metric"], "cost": point.cost, "cost_kind": config["cost"],
               "macs_fraction": point.macs_fraction, "macs_speedup": 1.0 / point.macs_fraction,
               "run": str(point.run), "key": point.key}
    if point.latency_ms is not None:
        metrics["ms_per_image"] = point.latency_ms
    return spec.to_schedule(bits, space, name=f"{space.name}-{point.key[:8]}", metrics=metrics)


def export_frontier(points: list[Point], config: dict[str, Any], out_dir: Path, fmt: str = "ecad-schedule") -> list[Path]:
    """Every frontier point as its own schedule file, cheapest first."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for rank, p in enumerate(points):
        path = out_dir / f"{rank:03d}_{p.key[:8]}.json"
        schedule_of(p, config).save(path, format=fmt)
        paths.append(path)
    return paths
