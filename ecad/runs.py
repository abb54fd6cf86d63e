"""The run directory: its layout (every file name is here and nowhere else), writing, reading,
locking and repair.

    results/<run>/
      config.json         the config, its hash, fingerprints of the inputs it names
      gen_NNN.json        one record per generation: population, fitness, timings, workers
      evaluations.jsonl   the evaluation cache, append-only (a torn last line is mended on open)
      checkpoint.json     population and RNG state after the last finished generation
      frontier/           one schedule file per frontier point, and frontier.json, their index
      plots/, report.html the watchable plots and the HTML page (ecad.report)
      .lock               held while a search writes the run

Everything is JSON written through temp file + rename, so a run killed at any point leaves
files that are whole; the evaluation log is append-only, and a torn last line (a run killed
mid-write) is cut off when a run starts on the directory, so the next record starts a line of
its own instead of being glued onto the torn one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ecad.errors import EcadError
from ecad.files import atomic_write_json, json_safe
from ecad.frontier import Point, decode_genome, pareto_front

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.json"
EVALUATIONS_FILE = "evaluations.jsonl"
GENERATION_GLOB = "gen_*.json"
FRONTIER_DIR = "frontier"
FRONTIER_INDEX = "frontier.json"
PLOTS_DIR = "plots"
REPORT_FILE = "report.html"
LOCK_FILE = ".lock"
FRONTIER_SCHEDULE = re.compile(r"^\d{3}_[0-9a-f]{8}\.json$")  # what write_frontier names a schedule


def generation_file(generation: int) -> str:
    return f"gen_{generation:03d}.json"


def frontier_file(rank: int, key: str) -> str:
    return f"{rank:03d}_{key[:8]}.json"


def is_run_record(name: str) -> bool:
    """A JSON file of the run's own (config, checkpoint, index, generations), not a schedule."""
    return name in (CONFIG_FILE, CHECKPOINT_FILE, FRONTIER_INDEX) or (
        name.startswith("gen_") and name.endswith(".json")
    )


class RunError(EcadError, ValueError):
    """A run directory cannot be used as asked; the message says why and what to do."""


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [
        f"  {k}: {json.dumps(old.get(k))[:80]} (run) != {json.dumps(new.get(k))[:80]} (now)"
        for k in keys
        if old.get(k) != new.get(k)
    ]


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def read_evaluation_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every whole line of an evaluation log (key, generation, genome hex, result), in order.

    Read-only, so it is safe on the log of a search that is still writing: a line that does not
    parse (the torn tail of a write in progress, or of a killed run) is skipped."""
    path = Path(path)
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def mend_torn_tail(path: Path) -> None:
    """Make the log end with a newline before anything is appended to it. A last line without
    one was cut off by a kill: when it parses it only lacks the newline, otherwise it is
    dropped (that candidate is evaluated again). Only the run's own writer may call this."""
    if not path.exists():
        return
    with open(path, "r+b") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        try:
            json.loads(data[start:])
            f.write(b"\n")
        except ValueError:  # json.JSONDecodeError and UnicodeDecodeError alike
            f.truncate(start)
        f.flush()
        os.fsync(f.fileno())


def _read_json(path: Path) -> Any:
    """A JSON file, or None when it is missing or not (yet) whole."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


# ---------------------------------------------------------------- the writer
class RunStore:
    """Writes (and, for its own run, reads back) one run directory."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    @property
    def checkpoint_path(self) -> Path:
        return self.root / CHECKPOINT_FILE

    @property
    def evaluations_path(self) -> Path:
        return self.root / EVALUATIONS_FILE

    @property
    def frontier_dir(self) -> Path:
        return self.root / FRONTIER_DIR

    @property
    def plots_dir(self) -> Path:
        return self.root / PLOTS_DIR

    # ----------------------------------------------------------- lifecycle
    def check_new(self, force: bool = False) -> None:
        """Refuse, before any work starts, to overwrite an existing run without --force, and to
        overwrite anything that is not a run at all (--force replaces runs, never other files:
        `--out results --force` must not wipe every earlier run under results/)."""
        if not self.root.exists():
            return
        if not self.root.is_dir():
            raise RunError(f"--out {self.root} is a file, not a directory; choose a new --out")
        if self.config_path.exists():
            if not force:
                raise RunError(
                    f"{self.root} already holds a run; resume it with `--resume {self.root}`, choose "
                    "another --out, or pass --force to overwrite it"
                )
        elif any(p.name != LOCK_FILE for p in self.root.iterdir()):
            raise RunError(
                f"{self.root} is not empty and not an ecad run (no config.json), so it is left alone even "
                "with --force; choose a new --out (a directory that does not exist yet, or is empty)"
            )

    def create(self, config: dict[str, Any], force: bool = False, inputs: dict[str, Any] | None = None) -> None:
        """Start the run directory. `inputs` fingerprints what the config only names (the prompt
        file's prompts, the space file's text), so a resume can tell when they changed."""
        self.check_new(force)
        if self.config_path.exists():  # a run, and --force was given: all of it goes but the lock held now
            for child in self.root.iterdir():
                if child.name != LOCK_FILE:
                    shutil.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            self.config_path, {"config": config, "config_hash": config_hash(config), "inputs": inputs or {}}
        )

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run while writing it: a second search on the same directory (a resume started
        twice, two nodes given one --out) is refused instead of interleaving both runs' records."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / LOCK_FILE, "a+") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise RunError(
                    f"{self.root} is being written by another ecad search ({holder}); wait for it to end "
                    "or give this one another --out"
                ) from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _read_config_file(self) -> dict[str, Any]:
        if not self.config_path.exists():
            raise RunError(f"{self.root} is not an ecad run (no config.json); check the path")
        return json.loads(self.config_path.read_text())

    def load_config(self) -> dict[str, Any]:
        return self._read_config_file()["config"]

    def check_resumable(
        self, config: dict[str, Any], inputs: dict[str, Any] | None = None, genome_size: int | None = None
    ) -> None:
        """Refuse a resume whose results would not continue the run: other settings, other
        prompts or another space behind the same names, or genomes of another length."""
        stored = self._read_config_file()
        diff = config_diff(stored["config"], config)
        if diff:
            raise RunError(
                "cannot resume with a different configuration:\n"
                + "\n".join(diff)
                + f"\nresume with the run's own settings (`ecad search --resume {self.root}` alone), "
                "or start a new run with another --out"
            )
        old_inputs = stored.get("inputs") or {}  # runs of older versions recorded none
        for key, what in (
            ("prompts_sha256", f"the prompts read from {config.get('prompts')!r}"),
            ("space_sha256", f"the search space file of {config.get('space')!r}"),
        ):
            if key in old_inputs and inputs and key in inputs and old_inputs[key] != inputs[key]:
                raise RunError(
                    f"cannot resume {self.root}: {what} changed since the run started, so new results "
                    "would not compare with the recorded ones; restore the file as it was, or start a "
                    "new run with another --out"
                )
        if genome_size is not None and self.checkpoint_path.exists():
            size = json.loads(self.checkpoint_path.read_text()).get("genome_size")
            if size and size != genome_size:
                raise RunError(
                    f"cannot resume {self.root}: its checkpoint holds genomes of {size} bits, but the "
                    f"space now makes {genome_size} (steps x blocks x components, plus steps when "
                    "[timesteps] is enabled); restore the space file, or start a new run with another --out"
                )

    # ---------------------------------------------------------- evaluations
    def append_evaluation(self, record: dict[str, Any]) -> dict[str, Any]:
        """One evaluation record (key, generation, genome hex, result), durable before it returns;
        returns it as written (strict JSON: NaN as null)."""
        record = json_safe(record)
        with open(self.evaluations_path, "a") as f:
            f.write(json.dumps(record, allow_nan=False) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return record

    def load_evaluation_records(self) -> list[dict[str, Any]]:
        """The evaluation cache, read when a run starts on this directory (before it appends): a
        torn last line is mended first, so it cannot swallow the next record."""
        mend_torn_tail(self.evaluations_path)
        return read_evaluation_records(self.evaluations_path)

    # ---------------------------------------------------------- generations
    def write_generation(self, generation: int, record: dict[str, Any]) -> dict[str, Any]:
        """Returns the record as written (strict JSON)."""
        record = json_safe(record)
        atomic_write_json(self.root / generation_file(generation), record)
        return record

    def read_generations(self) -> list[dict[str, Any]]:
        """The gen_NNN.json records there are, in order (a resume continues them)."""
        records = (_read_json(p) for p in sorted(self.root.glob(GENERATION_GLOB)))
        return [r for r in records if isinstance(r, dict)]

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.checkpoint_path, state)

    def read_checkpoint(self) -> dict[str, Any] | None:
        return json.loads(self.checkpoint_path.read_text()) if self.checkpoint_path.exists() else None

    def write_frontier(self, entries, meta: dict[str, Any], fmt: str = "ecad-schedule") -> dict[str, str]:
        return write_frontier_dir(self.frontier_dir, entries, meta, fmt)


def write_frontier_dir(out_dir: Path, entries, meta: dict[str, Any], fmt: str = "ecad-schedule") -> dict[str, str]:
    """Every (point, schedule, index row) entry as its own schedule file, cheapest first, plus the
    index frontier.json. The folder then holds exactly this frontier: schedule files of an earlier
    export are removed (`--seed-from RUN` reads the folder whole); nothing else in it is touched.
    Returns key -> file name."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*.json"):
        if FRONTIER_SCHEDULE.match(old.name):
            old.unlink()
    files, rows = {}, []
    for rank, (point, schedule, row) in enumerate(entries):
        name = frontier_file(rank, point.key)
        schedule.save(out_dir / name, format=fmt)
        files[point.key] = name
        rows.append({**row, "schedule": name})
    atomic_write_json(out_dir / FRONTIER_INDEX, {**meta, "points": rows})
    return files


def schedule_files(path: Path) -> list[Path]:
    """The schedule files `--seed-from PATH` names: a file; a run (its frontier/); or a folder of
    schedule JSONs (the run's own records left out)."""
    if not path.is_dir():
        return [path]
    folder = path / FRONTIER_DIR if (path / FRONTIER_DIR).is_dir() else path
    return [p for p in sorted(folder.glob("*.json")) if not is_run_record(p.name)]


# ---------------------------------------------------------------- the reader
@dataclass
class RunData:
    """Everything the plots and the HTML page show of one run: read from its directory
    (`load_run`), or built by the search from what it holds in memory (`run_data`)."""

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
        return [
            (int(g.get("generation", i)), float(g["hypervolume"]))
            for i, g in enumerate(self.generations)
            if g.get("hypervolume") is not None
        ]

    @property
    def plots_dir(self) -> Path:
        return self.root / PLOTS_DIR

    @property
    def report_path(self) -> Path:
        return self.root / REPORT_FILE

    def quality_label(self) -> str:
        return f"{self.metric} ({'higher' if self.higher_is_better else 'lower'} is better)"

    def cost_label(self) -> str:
        if self.cost_kind == "latency":
            return "relative latency (fraction of no caching)"
        return "MACs (fraction of no caching)"

    def frontier_stem(self, point: Point, rank: int) -> str:
        """File stem of a frontier schedule: the one in frontier/ when written, else what it will be."""
        return Path(self.frontier_files.get(point.key) or frontier_file(rank, point.key)).stem


def _finite(x: Any) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def metric_direction(config: dict[str, Any], records: list[dict[str, Any]]) -> bool:
    """Whether higher quality is better: the metric registry's word; for a metric this ecad does
    not know, what the run's evaluations recorded."""
    from ecad.metrics import higher_is_better

    known = higher_is_better(str(config.get("metric", "")))
    if known is not None:
        return known
    recorded = [(r.get("details") or {}).get("higher_is_better") for r in records]
    return bool(next((h for h in recorded if h is not None), True))


def run_data(
    root: Path,
    config: dict[str, Any],
    config_hash: str | None,
    generations: list[dict[str, Any]],
    records: list[dict[str, Any]],
    frontier_files: dict[str, str] | None = None,
) -> RunData:
    """A run's content from its records: the one way both a reader and the running search build it."""
    labels: dict[str, str] = {}
    for rec in generations:  # the label a candidate had when it first appeared
        for m in rec.get("population", []):
            labels.setdefault(m.get("key", ""), m.get("label", ""))
    if not records:  # no log (yet): fall back to the populations
        records = [
            {**m, "generation": rec.get("generation", 0)} for rec in generations for m in rec.get("population", [])
        ]
    by_key: dict[str, Point] = {}
    for r in records:
        key = r.get("key")
        if not key or key in by_key:
            continue
        details = r.get("details") or {}
        values = r.get("values") or [float("nan"), float("nan")]
        gen = int(r.get("generation", 0))
        quality, cost = _finite(values[0]), _finite(values[1])
        feasible = bool(r.get("feasible")) and math.isfinite(quality) and math.isfinite(cost)
        by_key[key] = Point(
            key=key,
            generation=gen,
            genome=str(r.get("genome", "")),
            quality=quality,
            cost=cost,
            feasible=feasible,
            reason=r.get("reason"),
            label=labels.get(key) or (f"gen{gen}" if gen > 0 else ""),
            macs_fraction=_finite(details["macs_fraction"]) if "macs_fraction" in details else None,
            details=details,
        )
    higher = metric_direction(config, records)
    points = list(by_key.values())
    return RunData(
        root=Path(root),
        config=config,
        config_hash=config_hash,
        generations=generations,
        points=points,
        frontier=pareto_front(points, higher),
        frontier_files=dict(frontier_files or {}),
        higher_is_better=higher,
    )


def load_run(run_dir: str | os.PathLike, require_evaluated: bool = False) -> RunData:
    """Read a (finished or running) run directory. `require_evaluated` refuses a run whose first
    generation has not finished (what `ecad frontier` needs)."""
    from ecad.frontier import FrontierError

    root = Path(run_dir)
    if not root.is_dir():
        raise FrontierError(f"{root}: no such run directory; give the folder `ecad search --out` wrote")
    if not (root / CONFIG_FILE).exists():
        raise FrontierError(f"{root} is not an ecad run (no config.json); pass the directory `ecad search` wrote")
    if require_evaluated and not ((root / EVALUATIONS_FILE).exists() and (root / generation_file(0)).exists()):
        raise FrontierError(
            f"{root}: no generation has been evaluated yet; let the search finish its first "
            f"generation or resume it with `ecad search --resume {root}`"
        )
    cfg = _read_json(root / CONFIG_FILE) or {}
    config = cfg.get("config", cfg) if isinstance(cfg, dict) else {}
    store = RunStore(root)
    frontier_files: dict[str, str] = {}
    index = _read_json(root / FRONTIER_DIR / FRONTIER_INDEX)
    if isinstance(index, dict):
        for row in index.get("points", []):
            if row.get("key") and row.get("schedule") and (root / FRONTIER_DIR / row["schedule"]).exists():
                frontier_files[row["key"]] = row["schedule"]
    return run_data(
        root,
        config,
        cfg.get("config_hash") if isinstance(cfg, dict) else None,
        store.read_generations(),
        read_evaluation_records(root / EVALUATIONS_FILE),
        frontier_files,
    )


def as_run(run: str | os.PathLike | RunData) -> RunData:
    """Readers take a loaded run or its directory, so a caller that has one loads it once."""
    return run if isinstance(run, RunData) else load_run(run)


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
                schedule = load_schedule(run.root / FRONTIER_DIR / run.frontier_files[p.key])
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
