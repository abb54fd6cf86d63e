"""Pareto frontier of evaluated candidates, picking one schedule by constraint, and the schedule
each frontier point stands for. Pure: it reads and writes no file (the run directory is
`ecad.runs`'s).

`--pick "speedup>=2"` keeps frontier points meeting every condition and returns the best of
them on the other objective (highest quality under a cost condition, cheapest under a quality
condition), so a user states what they need rather than scanning a table.

`Frontier` is a run's frontier as Python code sees it (`ecad.search.api.search` and `load_run`
return one): its points with their numbers and schedules, `.pick`, `.to_pandas` and `.plot`
(which writes through `ecad.report.plots`, the one place this module's objects touch a file).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ecad.errors import EcadError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from matplotlib.figure import Figure

    from ecad.runs import RunData
    from ecad.schedule import Schedule


class FrontierError(EcadError, ValueError):
    """A run cannot be read or a pick cannot be met; the message says why and what to do."""


class MissingPackageError(EcadError, ImportError):
    """An optional package a method needs is not installed; the message names the pip command."""


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
    def complete(self) -> bool:
        """Whether it was evaluated on the whole protocol: a race stopped early (ecad.search.racing)
        records `details.racing.complete: false` and an estimate; it never enters a frontier. Runs
        without racing details are complete."""
        racing = self.details.get("racing")
        return not isinstance(racing, dict) or racing.get("complete", True) is not False

    @property
    def kind(self) -> str:
        """'no_caching', 'seed' (a heuristic or --seed-from schedule), 'random' or 'evolved'."""
        return label_kind(self.label)


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


def pareto_front(points: list[Point], higher_is_better: bool) -> list[Point]:
    """Non-dominated feasible points (quality by its direction, cost minimised), by increasing cost.
    Only completely evaluated points count: a stopped race's quality is an estimate."""
    pts = [p for p in points if p.feasible and p.complete and math.isfinite(p.quality) and math.isfinite(p.cost)]
    if not pts:
        return []
    sign = -1.0 if higher_is_better else 1.0
    arr = np.array([[sign * p.quality, p.cost] for p in pts])
    front = [pts[i] for i in pareto_indices(arr)]
    return sorted(front, key=lambda p: (p.cost, sign * p.quality))


def decode_genome(genome_hex: str, spec, space, **kw):
    from ecad.schedule import ScheduleError
    from ecad.search.genome import hex_to_bits

    try:
        return spec.to_schedule(hex_to_bits(genome_hex, spec.size), space, **kw)
    except (ScheduleError, ValueError):
        return None


NO_FEASIBLE = "no feasible candidate in the run(s); check the evaluations' reasons in evaluations.jsonl"
COMPARABLE = ("space", "metric", "metric_options", "cost", "prompts", "num_prompts", "seeds")


def frontier(runs: list[RunData]) -> list[Point]:
    """Non-dominated feasible points across runs scored alike (same space, metric, cost, prompts
    and seeds: otherwise their numbers do not compare), cheapest first."""
    for key in COMPARABLE:
        values = {json.dumps(r.config.get(key), sort_keys=True) for r in runs}
        if len(values) > 1:
            raise FrontierError(
                f"runs differ in {key!r} ({', '.join(sorted(values))}); their numbers do not "
                "compare, so merge only runs searched with the same settings"
            )
    front = pareto_front([p for r in runs for p in r.points], runs[0].higher_is_better)
    if not front:
        raise FrontierError(NO_FEASIBLE)
    return front


def baseline_quality(runs: list[RunData]) -> float | None:
    """Quality of the no-caching schedule (every bit set), if it was evaluated. It is found by the
    search's label, not by its MACs: under the text K/V cache (on by default) no caching costs a
    little under the stock pipeline's MACs. The MACs fallback is for runs that counted without the
    text K/V cache and labelled a --seed-from file equal to no caching by the file's name (the
    search now labels it `no_caching`)."""
    for r in runs:
        for p in r.points:
            if p.feasible and p.label == NO_CACHING:
                return p.quality
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
        v = {
            "speedup": p.speedup,
            "quality": p.quality,
            "macs": macs_of(p),
            "cost": p.cost,
            "latency": p.latency_ms if p.latency_ms is not None else float("nan"),
        }[self.field]
        t = self.threshold(baseline)
        return {">=": v >= t, "<=": v <= t, ">": v > t, "<": v < t}[self.op]


def parse_pick(expr: str) -> list[Condition]:
    conds = []
    for part in expr.split(","):
        m = _COND.match(part)
        if not m:
            raise FrontierError(
                f'--pick {part.strip()!r} not understood; write e.g. "speedup>=2", '
                '"quality>=0.95*baseline", "macs<=0.4"; join several with commas'
            )
        try:
            value = float(m.group(3))
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise FrontierError(f"--pick {part.strip()!r}: {m.group(3)!r} is not a number; write e.g. 2 or 0.95")
        conds.append(Condition(m.group(1), m.group(2), value, bool(m.group(4))))
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
    """MACs as a fraction of the stock pipeline's (the cost itself for a MACs-cost run)."""
    return float(p.macs_fraction if p.macs_fraction is not None else p.cost)


def schedule_of(point: Point, config: dict[str, Any], run: Path | None = None, space=None):
    """The Schedule a point stands for, with its numbers in `metrics` (`space`: the run's, when
    the caller already has it, so exporting a frontier parses the space file once)."""
    from ecad.search.genome import GenomeSpec, hex_to_bits
    from ecad.spaces import load_space

    space = space if space is not None else load_space(config["space"])
    spec = GenomeSpec.for_config(space, config)
    bits = hex_to_bits(point.genome, spec.size)
    metrics = {
        "quality": point.quality,
        "metric": config["metric"],
        "cost": point.cost,
        "cost_kind": config["cost"],
        "macs_fraction": macs_of(point),
        "macs_speedup": 1.0 / macs_of(point),
        "key": point.key,
    }
    if run is not None:
        metrics["run"] = str(run)
    if point.latency_ms is not None:
        metrics["ms_per_image"] = point.latency_ms
    if point.details.get("extras"):
        metrics["extras"] = point.details["extras"]
    return spec.to_schedule(bits, space, name=f"{space.name}-{point.key[:8]}", metrics=metrics)


def frontier_entries(
    points: list[Point], config: dict[str, Any], space=None
) -> list[tuple[Point, Any, dict[str, Any]]]:
    """(point, Schedule, index row) for each frontier point, cheapest first: what the run store
    writes as frontier/ (one schedule file per point plus frontier.json)."""
    from ecad.spaces import load_space

    space = space if space is not None else load_space(config["space"])
    out = []
    for rank, p in enumerate(points):
        row = {
            "rank": rank,
            "key": p.key,
            "quality": p.quality,
            "cost": p.cost,
            "macs_fraction": macs_of(p),
            "label": p.label,
        }
        out.append((p, schedule_of(p, config, space=space), row))
    return out


# ------------------------------------------------------------------- Frontier
SPEEDUP_KINDS = {"latency": "measured", "macs": "estimated"}  # by the run's cost: timed, or from MACs


@dataclass
class FrontierPoint:
    """One schedule of a Frontier: its numbers, and its Schedule (built on first use, with the
    numbers in its `metrics`, as the run's frontier/ files hold it), ready for `ecad.apply_schedule`."""

    rank: int  # 0 = cheapest
    point: Point
    speedup_kind: str  # "measured" (the run's cost was latency) or "estimated" (from MACs)
    schedule_file: Path | None  # the run's frontier/ file of this schedule, when written
    frontier: Frontier = field(repr=False, compare=False)

    key = property(lambda self: self.point.key)
    quality = property(lambda self: self.point.quality)
    cost = property(lambda self: self.point.cost)
    label = property(lambda self: self.point.label)
    kind = property(lambda self: self.point.kind)
    generation = property(lambda self: self.point.generation)
    latency_ms = property(lambda self: self.point.latency_ms, doc="measured ms per image, where the run timed it")

    @property
    def macs_fraction(self) -> float:
        """MACs of this schedule as a fraction of the stock pipeline's (no cache of any kind)."""
        return macs_of(self.point)

    @property
    def speedup(self) -> float:
        """Speedup over no caching, 1 / cost: measured where the cost was latency, else from MACs
        (`speedup_kind` says which)."""
        return self.point.speedup

    @property
    def macs_speedup(self) -> float:
        """1 / MACs fraction, whatever the run's cost."""
        m = self.macs_fraction
        return 1.0 / m if m > 0 else float("nan")

    @property
    def schedule(self) -> Schedule:
        return self.frontier.schedule(self)

    def row(self) -> dict[str, Any]:
        """This point as one table row (`Frontier.to_pandas`)."""
        return {
            "rank": self.rank,
            "key": self.key,
            "quality": self.quality,
            "macs_fraction": self.macs_fraction,
            "speedup": self.speedup,
            "speedup_kind": self.speedup_kind,
            "latency_ms": self.latency_ms,
            "cost": self.cost,
            "label": self.label,
            "kind": self.kind,
            "generation": self.generation,
            "schedule_file": str(self.schedule_file) if self.schedule_file is not None else None,
        }


@dataclass(repr=False)
class Frontier:
    """A run's Pareto frontier, cheapest first, with what it takes to use it: each point's
    schedule, the metric and its direction, the no-caching baseline. `Frontier.from_run(run)`
    from a RunData (read by `ecad.runs.load_run`, or built by a search from memory)."""

    run: RunData = field(repr=False)
    summary: str | None = field(default=None, repr=False)  # what `ecad search` prints at its end
    points: list[FrontierPoint] = field(init=False)
    baseline: float | None = field(init=False)  # no caching's quality, when the run evaluated it
    _schedules: dict[str, Any] = field(init=False, default_factory=dict, repr=False, compare=False)
    _space: Any = field(init=False, default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        from ecad.runs import FRONTIER_DIR

        kind = SPEEDUP_KINDS.get(self.run.cost_kind, "estimated")
        files = self.run.frontier_files
        self.points = [
            FrontierPoint(rank, p, kind, self.run.root / FRONTIER_DIR / files[p.key] if p.key in files else None, self)
            for rank, p in enumerate(self.run.frontier)
        ]
        self.baseline = baseline_quality([self.run])

    @classmethod
    def from_run(cls, run: RunData, summary: str | None = None) -> Frontier:
        return cls(run, summary)

    # ------------------------------------------------------------ the run
    @property
    def root(self) -> Path:
        """The run directory."""
        return self.run.root

    @property
    def config(self) -> dict[str, Any]:
        return self.run.config

    @property
    def metric(self) -> str:
        return self.run.metric

    @property
    def higher_is_better(self) -> bool:
        return self.run.higher_is_better

    @property
    def direction(self) -> str:
        """'higher' or 'lower' (is better), the metric's direction."""
        return "higher" if self.higher_is_better else "lower"

    @property
    def cost_kind(self) -> str:
        """'macs' or 'latency': the run's cost objective."""
        return self.run.cost_kind

    @property
    def speedup_kind(self) -> str:
        """'measured' (latency cost) or 'estimated' (from MACs): what the points' speedup is."""
        return SPEEDUP_KINDS.get(self.cost_kind, "estimated")

    @property
    def hypervolume(self) -> float | None:
        """The run's hypervolume after its last generation."""
        hv = self.run.hypervolume
        return hv[-1][1] if hv else None

    # ------------------------------------------------------------ sequence
    def __len__(self) -> int:
        return len(self.points)

    def __iter__(self) -> Iterator[FrontierPoint]:
        return iter(self.points)

    def __getitem__(self, rank: int) -> FrontierPoint:
        return self.points[rank]

    # ------------------------------------------------------------ schedules
    def schedule(self, point: FrontierPoint | Point) -> Schedule:
        """The Schedule of a frontier point (built once, then held): `schedule_of`, what the run's
        frontier/ files hold; from the file itself when the run's space cannot be loaded here."""
        p = point.point if isinstance(point, FrontierPoint) else point
        if p.key not in self._schedules:
            try:
                if self._space is None:
                    from ecad.spaces import load_space

                    self._space = load_space(self.config["space"])
            except (ValueError, OSError) as exc:
                path = next((q.schedule_file for q in self.points if q.key == p.key), None)
                if path is None or not path.exists():
                    raise FrontierError(
                        f"{self.root}: the schedule of {p.key[:8]} needs the run's search space "
                        f"{self.config.get('space')!r}, which cannot be loaded ({exc}); restore it"
                    ) from None
                from ecad.schedule import load_schedule

                self._schedules[p.key] = load_schedule(path)
            else:
                self._schedules[p.key] = schedule_of(p, self.config, self.root, space=self._space)
        return self._schedules[p.key]

    def pick(self, expr: str) -> FrontierPoint:
        """The frontier point `expr` picks, by `ecad frontier --pick`'s rule (and its messages):
        e.g. "speedup>=2", "quality>=0.95*baseline", "macs<=0.4"; FrontierError if none meets it."""
        if not self.points:
            raise FrontierError(NO_FEASIBLE)
        chosen = pick([p.point for p in self.points], expr, self.baseline, self.higher_is_better)
        return next(p for p in self.points if p.key == chosen.key)

    # ------------------------------------------------------------ views
    def to_pandas(self):
        """One row per point (rank, key, quality, macs_fraction, speedup, speedup_kind,
        latency_ms, cost, label, kind, generation, schedule_file) as a pandas DataFrame."""
        try:
            import pandas as pd
        except ImportError:
            raise MissingPackageError(
                "Frontier.to_pandas needs pandas, which is not installed: pip install pandas "
                "(or read the points directly: for p in frontier: p.quality, p.speedup, ...)"
            ) from None
        return pd.DataFrame([p.row() for p in self.points], columns=ROW_COLUMNS)

    def plot(self, path: str | Path | None = None) -> Path | Figure:
        """Quality vs cost of every candidate with the frontier drawn, as the run's own
        plots/frontier.png (`ecad.report.plots.plot_frontier`): written to `path` (returned),
        or, with no path, returned as a matplotlib Figure."""
        from ecad.report.plots import plot_frontier

        if path is not None:
            return plot_frontier(self.run, path)
        import tempfile

        import matplotlib.image
        from matplotlib.figure import Figure

        with tempfile.TemporaryDirectory(prefix="ecad-frontier-") as tmp:
            image = matplotlib.image.imread(plot_frontier(self.run, Path(tmp) / "frontier.png"))
        dpi = 110  # plot_frontier's
        fig = Figure(figsize=(image.shape[1] / dpi, image.shape[0] / dpi), dpi=dpi)
        fig.figimage(image, resize=False)
        return fig

    def __repr__(self) -> str:
        return (
            f"Frontier({str(self.root)!r}: {len(self)} points, {self.metric} ({self.direction} is better) "
            f"vs {self.cost_kind})"
        )

    def __str__(self) -> str:
        hv = self.hypervolume
        lines = [
            f"frontier of {self.root}: {len(self)} schedules, {self.metric} ({self.direction} is better) vs "
            f"{self.cost_kind}"
            + (f", hypervolume {hv:.4f}" if hv is not None else "")
            + (f", no-caching quality {self.baseline:.5g}" if self.baseline is not None else "")
        ]
        has_latency = any(p.latency_ms is not None for p in self.points)
        speed = "measured" if self.speedup_kind == "measured" else "est."
        lines.append(
            f"{'rank':>4} {self.metric:>12} {'MACs':>7} {speed + ' speedup':>15}"
            + (f" {'ms/img':>8}" if has_latency else "")
            + "  label / schedule"
        )
        for p in self.points:
            lat = f" {p.latency_ms:>8.2f}" if p.latency_ms is not None else (" " * 9 if has_latency else "")
            where = str(p.schedule_file) if p.schedule_file is not None else p.key[:8]
            lines.append(
                f"{p.rank:>4} {p.quality:>12.5f} {p.macs_fraction:>6.1%} {p.speedup:>14.2f}x{lat}  "
                f"{p.label:12s} {where}"
            )
        return "\n".join(lines)


ROW_COLUMNS = [
    "rank",
    "key",
    "quality",
    "macs_fraction",
    "speedup",
    "speedup_kind",
    "latency_ms",
    "cost",
    "label",
    "kind",
    "generation",
    "schedule_file",
]
