"""The run directory: its layout (every file name is here and nowhere else), writing, reading,
locking and repair.

    results/<run>/
      config.json         the config, its hash, fingerprints of the inputs it names
      gen_NNN.json        one record per generation: population, fitness, timings, workers, and
                          the engine state (RNG, genome size, hypervolume history), so a damaged
                          checkpoint can be rebuilt from the last whole one
      evaluations.jsonl   the evaluation cache, append-only (a torn last line is mended on open)
      evaluations.damaged.jsonl  lines of the cache that were damaged, moved out of it on a
                          resume (each with its line number and what was wrong); not read again
      checkpoint.json     population and RNG state after the last finished generation
      frontier/           one schedule file per frontier point, and frontier.json, their index
      plots/, report.html the watchable plots and the HTML page (ecad.report)
      .lock               held while a search writes the run

Everything is JSON written through temp file + rename, so a run killed at any point leaves
files that are whole; the evaluation log is append-only, and a torn last line (a run killed
mid-write) is cut off when a run starts on the directory, so the next record starts a line of
its own instead of being glued onto the torn one.

Every file is read strictly (`ecad.files.read_json`) and checked against what ecad writes, so a
damaged run (a flipped byte, a truncated file, a hand edit gone wrong) either resumes or fails
with one `RunError` naming the file: a damaged evaluation line is moved to the sidecar file and
its candidate evaluated again; a damaged gen_NNN.json is skipped; a damaged checkpoint is rebuilt
from the gen_NNN.json records (ecad.search.run); only config.json, which nothing else can
replace, stops a resume.
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
from typing import Any, NamedTuple

from ecad.errors import EcadError
from ecad.files import atomic_write, atomic_write_json, is_finite_number, is_integer, json_safe, parse_json, read_json
from ecad.frontier import Point, decode_genome, pareto_front
from ecad.search.genome import genome_hash, hex_to_bits

CONFIG_FILE = "config.json"
CHECKPOINT_FILE = "checkpoint.json"
EVALUATIONS_FILE = "evaluations.jsonl"
DAMAGED_EVALUATIONS_FILE = "evaluations.damaged.jsonl"  # damaged lines moved out of the log, as found
GENERATION_GLOB = "gen_*.json"
FRONTIER_DIR = "frontier"
FRONTIER_INDEX = "frontier.json"
PLOTS_DIR = "plots"
REPORT_FILE = "report.html"
LOCK_FILE = ".lock"
FRONTIER_SCHEDULE = re.compile(r"^\d{3}_[0-9a-f]{8}\.json$")  # what write_frontier names a schedule
GENERATION_NAME = re.compile(r"^gen_(\d{3,})\.json$")  # what generation_file names a record
KEY = re.compile(r"^[0-9a-f]{24}$")  # what genome_hash makes: 24 lowercase hex digits
HEX = re.compile(r"^(?:[0-9a-f]{2})+$")  # what bits_to_hex makes: whole bytes, lowercase
# one line of evaluations.jsonl, exactly as the search writes it: the candidate, then Evaluation.to_json()
EVALUATION_FIELDS = ("key", "generation", "genome", "values", "feasible", "reason", "details")
MEMBER_FIELDS = ("key", "genome", "label", "values", "feasible", "reason", "details")  # a gen record's member


def generation_file(generation: int) -> str:
    return f"gen_{generation:03d}.json"


def frontier_file(rank: int, key: str) -> str:
    return f"{rank:03d}_{key[:8]}.json"


def is_run_record(name: str) -> bool:
    """A JSON file of the run's own (config, checkpoint, index, generations), not a schedule."""
    return name in (CONFIG_FILE, CHECKPOINT_FILE, FRONTIER_INDEX) or (
        name.startswith("gen_") and name.endswith(".json")
    )


EXTENDABLE = "generations"  # the one config field a resume may change (upwards): `--resume RUN --generations 30`
# config fields added after runs were first written, with the value that reproduces what runs
# without them did: such a run is read, compared and resumed as if it had recorded these
LEGACY_DEFAULTS: dict[str, Any] = {
    "racing": False,
    "racing_chunk": None,
    "racing_confidence": 0.95,
    "racing_tolerance": 0.0,
    "screening": False,
    # runs from before forecast cells, guidance reuse and the text K/V cache: compute/reuse genomes,
    # and MACs with the text K/V counted at every computed step (so their fractions stay as recorded)
    "cells": ["compute", "reuse"],
    "forecast_order": 1,
    "guidance_reuse": False,
    "text_kv_cache": False,
}


def with_legacy_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """A stored config with the fields it predates filled in (`LEGACY_DEFAULTS`)."""
    return {**LEGACY_DEFAULTS, **config}


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


# ------------------------------------------------------------ record checks
_last_size = [0]  # the genome length the last key check found: every record of a run has the same


def genome_fits_key(key: str, genome: str, genome_size: int | None = None) -> int | None:
    """The genome length at which `genome` (hex) hashes to `key`, or None: a record whose key and
    genome disagree was damaged (a flipped digit in either). Without `genome_size`, every length
    the hex can hold is tried, the last one found first."""
    top = 4 * len(genome)
    if genome_size is not None:
        sizes = [genome_size] if top - 8 < genome_size <= top else []
    else:
        sizes = [s for s in (_last_size[0],) if top - 8 < s <= top] + list(range(top, top - 8, -1))
    for size in sizes:
        if size > 0 and genome_hash(hex_to_bits(genome, size)) == key:
            _last_size[0] = size
            return size
    return None


def evaluation_problem(d: dict[str, Any]) -> str | None:
    """What is wrong with the result fields of a record (what Evaluation.to_json writes), or None."""
    values = d.get("values")
    if not isinstance(values, list) or len(values) != 2 or not all(v is None or is_finite_number(v) for v in values):
        return "values is not a pair of numbers (or nulls)"
    if not isinstance(d.get("feasible"), bool):
        return "feasible is not true or false"
    if d.get("reason") is not None and not isinstance(d.get("reason"), str):
        return "reason is not a string or null"
    if not isinstance(d.get("details"), dict):
        return "details is not an object"
    return None


def _fields_problem(d: Any, fields: tuple[str, ...]) -> str | None:
    if not isinstance(d, dict):
        return f"not a JSON object but {type(d).__name__}"
    missing = [f for f in fields if f not in d]
    if missing:
        return f"lacks {', '.join(missing)}"
    unknown = sorted(set(d) - set(fields))
    if unknown:
        return f"has fields ecad does not write ({', '.join(unknown)[:80]})"
    return None


def evaluation_record_problem(record: Any, genome_size: int | None = None) -> str | None:
    """What is wrong with one line of evaluations.jsonl, or None when it is exactly what the search
    writes: key (genome_hash of the genome), generation (int >= 0), genome (hex), and the
    evaluation (values: two numbers or nulls, feasible: bool, reason: str or null, details: object)."""
    problem = _fields_problem(record, EVALUATION_FIELDS)
    if problem:
        return problem
    key, genome, generation = record["key"], record["genome"], record["generation"]
    if not isinstance(key, str) or not KEY.match(key):
        return "key is not 24 lowercase hex digits"
    if not is_integer(generation) or generation < 0:
        return "generation is not a whole number >= 0"
    if not isinstance(genome, str) or not HEX.match(genome):
        return "genome is not a hex string"
    problem = evaluation_problem(record)
    if problem:
        return problem
    if genome_fits_key(key, genome, genome_size) is None:
        return "key is not the hash of genome" + (f" ({genome_size} bits)" if genome_size else "")
    return None


@dataclass(frozen=True)
class DamagedLine:
    """A line of the evaluation log that is not a record: its 1-based number, what is wrong, its bytes."""

    number: int
    problem: str
    raw: bytes

    def to_json(self) -> dict[str, Any]:
        """The sidecar's line: nothing is lost (bytes that are not UTF-8 are kept as hex)."""
        try:
            content = {"text": self.raw.decode("utf-8")}
        except UnicodeDecodeError:
            content = {"bytes_hex": self.raw.hex()}
        return {"line": self.number, "problem": self.problem, **content}


def damage_of(exc: Exception) -> str:
    """A reader's message without its closing advice ("; fix the ...", "; save the ... as UTF-8"),
    for a report that says what ecad did about the damage instead."""
    return re.sub(r"; (fix|save|check) the [^;]*$", "", str(exc))


def _scan_log(data: bytes, genome_size: int | None) -> tuple[list[tuple[bytes, dict[str, Any]]], list[DamagedLine]]:
    """Each line decoded and checked on its own: (raw line, record) for the good ones, and the damaged."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    good, damaged = [], []
    for number, raw in enumerate(lines, 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            damaged.append(DamagedLine(number, f"not UTF-8 (byte {exc.start + 1} of the line)", raw))
            continue
        if not text.strip():
            damaged.append(DamagedLine(number, "empty line", raw))
            continue
        try:
            record = parse_json(text, f"line {number}", RunError, "evaluation record")
        except RunError as exc:
            damaged.append(DamagedLine(number, damage_of(exc).removeprefix(f"line {number}: "), raw))
            continue
        problem = evaluation_record_problem(record, genome_size)
        if problem:
            damaged.append(DamagedLine(number, problem, raw))
        else:
            good.append((raw, record))
    return good, damaged


def _read_bytes(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise RunError(f"{path}: cannot be read as the {what} ({exc.strerror or exc}); check the file") from None


def read_evaluation_records(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Every whole, valid line of an evaluation log (key, generation, genome hex, result), in order.

    Read-only, so it is safe on the log of a search that is still writing: a line that is not a
    record (the torn tail of a write in progress, or a damaged line no resume has moved out yet)
    is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    good, _ = _scan_log(_read_bytes(path, "evaluation log"), None)
    return [record for _, record in good]


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


def _read_json_or_none(path: Path, what: str) -> Any:
    """A JSON file a reader can do without (a generation record, the frontier index): None when it
    is missing or damaged."""
    try:
        return read_json(path, RunError, what)
    except RunError:
        return None


def generation_record_problem(record: Any, generation: int) -> str | None:
    """What is wrong with gen_NNN.json, as far as a reader uses it, or None. The engine state it
    carries (rng_state, genome_size, hv_history; absent from older runs) is checked when a
    checkpoint is rebuilt from it."""
    if not isinstance(record, dict):
        return f"not a JSON object but {type(record).__name__}"
    if not is_integer(record.get("generation")) or record["generation"] != generation:
        return f"generation is not {generation}, the number in the file name"
    population = record.get("population")
    if not isinstance(population, list) or not population:
        return "population is not a list of members"
    for i, member in enumerate(population):
        problem = _fields_problem(member, MEMBER_FIELDS)
        if problem is None and not (isinstance(member["key"], str) and KEY.match(member["key"])):
            problem = "key is not 24 lowercase hex digits"
        if problem is None and not (isinstance(member["genome"], str) and HEX.match(member["genome"])):
            problem = "genome is not a hex string"
        if problem is None and not isinstance(member["label"], str):
            problem = "label is not a string"
        problem = problem or evaluation_problem(member)
        if problem:
            return f"population[{i}] {problem}"
    if record.get("hypervolume") is not None and not is_finite_number(record.get("hypervolume")):
        return "hypervolume is not a number"
    for name in ("evaluated", "frontier"):
        keys = record.get(name, [])
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            return f"{name} is not a list of keys"
    return None


class EvaluationLog(NamedTuple):
    """The evaluation cache as a run's writer opens it."""

    records: list[dict[str, Any]]  # the valid records, in order
    damaged: list[DamagedLine]  # the lines it moved out to the sidecar file


CONFIG_RECOVERY = (
    f"{CONFIG_FILE} holds the settings the run was started with and cannot be rebuilt from the other "
    "files: restore it (from a backup or a copy of the run), or start a new run with --out"
)


def read_config_record(path: Path) -> dict[str, Any]:
    """config.json as create() writes it ({"config": {...}, "config_hash": "...", "inputs": {...}}),
    or RunError naming the file and how to recover. The config's own fields are checked by the
    search (ecad.search.run.resume_config), which knows them."""
    if not path.exists():
        raise RunError(f"{path.parent} is not an ecad run (no {CONFIG_FILE}); check the path")
    try:
        record = read_json(path, RunError, "run config")
    except RunError as exc:
        raise RunError(f"{damage_of(exc)}; {CONFIG_RECOVERY}") from None
    unknown = sorted(set(record) - {"config", "config_hash", "inputs"}) if isinstance(record, dict) else []
    if not isinstance(record, dict):
        problem = f"not a JSON object but {type(record).__name__}"
    elif "config" not in record:  # (older versions wrote no inputs)
        problem = "lacks config"
    elif unknown:
        problem = f"has fields ecad does not write ({', '.join(unknown)[:80]})"
    elif not isinstance(record["config"], dict):
        problem = "config is not an object"
    elif not isinstance(record.get("config_hash", ""), str):
        problem = "config_hash is not a string"
    elif not isinstance(record.get("inputs", {}), dict):
        problem = "inputs is not an object"
    else:
        return record
    raise RunError(f"{path}: {problem}; {CONFIG_RECOVERY}")


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

    def extend(self, config: dict[str, Any]) -> bool:
        """Record a resume's larger generation count (the one setting a resume may change: the
        generations already run are the same either way). Returns whether config.json changed."""
        record = self._read_config_file()
        if record["config"].get(EXTENDABLE) == config.get(EXTENDABLE):
            return False
        updated = {**record["config"], EXTENDABLE: config[EXTENDABLE]}
        atomic_write_json(self.config_path, {**record, "config": updated, "config_hash": config_hash(updated)})
        return True

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
        """config.json checked whole (read_config_record), and its config against the hash written
        with it: a config that no longer matches was changed after the run started (a flipped digit,
        a hand edit), and a resume would silently run other settings on top of the old records."""
        record = read_config_record(self.config_path)
        recorded = record.get("config_hash")
        if recorded is not None and recorded != config_hash(record["config"]):
            raise RunError(
                f"{self.config_path}: its settings do not match the config_hash written with them, so the file "
                f"was damaged or edited after the run started; {CONFIG_RECOVERY}"
            )
        return record

    def load_config(self) -> dict[str, Any]:
        return self._read_config_file()["config"]

    def check_resumable(
        self, config: dict[str, Any], inputs: dict[str, Any] | None = None, genome_size: int | None = None
    ) -> None:
        """Refuse a resume whose results would not continue the run: other settings, other
        prompts or another space behind the same names, or genomes of another length."""
        stored = self._read_config_file()
        old_generations, new_generations = stored["config"].get(EXTENDABLE), config.get(EXTENDABLE)
        if isinstance(new_generations, int) and isinstance(old_generations, int) and new_generations < old_generations:
            raise RunError(
                f"cannot resume {self.root} with --generations {new_generations}: the run was set to "
                f"{old_generations}; a resume may extend a run, not shorten it"
            )
        diff = config_diff({**with_legacy_defaults(stored["config"]), EXTENDABLE: new_generations}, config)
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
        recorded = self.recorded_genome_sizes() if genome_size is not None else []
        if recorded and genome_size not in {size for _, size in recorded}:
            path, size = recorded[0]
            raise RunError(
                f"cannot resume {self.root}: its checkpoint holds genomes of {size} bits, but the "
                f"space now makes {genome_size} (steps x blocks x components, plus steps when "
                "[timesteps] is enabled); restore the space file, or start a new run with another --out "
                f"({path} records the size)"
            )

    def recorded_genome_sizes(self) -> list[tuple[Path, int]]:
        """(file, genome length) of the checkpoint and of each generation record that states one and
        whose genomes have that length, newest first. The space changed when none of them matches
        it; one damaged file that disagrees with the others is left to the resume to repair."""
        found = []
        for path in [self.checkpoint_path, *reversed(self.generation_paths())]:
            data = _read_json_or_none(path, "run record")
            if not isinstance(data, dict) or not is_integer(data.get("genome_size")) or data["genome_size"] <= 0:
                continue
            size = data["genome_size"]
            genomes = data.get("population")
            if path != self.checkpoint_path and isinstance(genomes, list):
                genomes = [m.get("genome") if isinstance(m, dict) else None for m in genomes]
            width = 2 * -(-size // 8)
            if isinstance(genomes, list) and genomes and all(isinstance(g, str) and len(g) == width for g in genomes):
                found.append((path, size))
        return found

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

    @property
    def damaged_evaluations_path(self) -> Path:
        return self.root / DAMAGED_EVALUATIONS_FILE

    def load_evaluation_records(self, genome_size: int | None = None) -> EvaluationLog:
        """The evaluation cache, read when a run starts on this directory (before it appends). Only
        the run's own writer may call this, because it repairs the log: a torn last line is mended
        first, so it cannot swallow the next record; then every line that is not a valid record (not
        UTF-8, not JSON, wrong fields or types, a key that is not its genome's hash at `genome_size`
        bits) is appended to evaluations.damaged.jsonl with its line number and problem, and the log
        is rewritten (atomically) without them, so nothing is lost and no later reader sees them.
        Their candidates are evaluated again when the search needs them."""
        path = self.evaluations_path
        mend_torn_tail(path)
        if not path.exists():
            return EvaluationLog([], [])
        good, damaged = _scan_log(_read_bytes(path, "evaluation log"), genome_size)
        if damaged:
            with open(self.damaged_evaluations_path, "ab") as f:
                for line in damaged:
                    f.write(json.dumps(line.to_json()).encode() + b"\n")
                f.flush()
                os.fsync(f.fileno())
            atomic_write(path, lambda tmp: tmp.write_bytes(b"".join(raw + b"\n" for raw, _ in good)))
        return EvaluationLog([record for _, record in good], damaged)

    # ---------------------------------------------------------- generations
    def write_generation(self, generation: int, record: dict[str, Any]) -> dict[str, Any]:
        """Returns the record as written (strict JSON)."""
        record = json_safe(record)
        atomic_write_json(self.root / generation_file(generation), record)
        return record

    def generation_paths(self) -> list[Path]:
        """The gen_NNN.json files there are, by generation."""
        numbered = []
        for path in self.root.glob(GENERATION_GLOB):
            match = GENERATION_NAME.match(path.name)
            if match:
                numbered.append((int(match.group(1)), path))
        return [path for _, path in sorted(numbered)]

    def scan_generations(self) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
        """The valid gen_NNN.json records, in order, and (file, problem) for each damaged one."""
        records, damaged = [], []
        for path in self.generation_paths():
            generation = int(GENERATION_NAME.match(path.name).group(1))
            try:
                record = read_json(path, RunError, "generation record")
            except RunError as exc:
                damaged.append((path, damage_of(exc).removeprefix(f"{path}: ")))
                continue
            problem = generation_record_problem(record, generation)
            if problem:
                damaged.append((path, problem))
            else:
                records.append(record)
        return records, damaged

    def read_generations(self) -> list[dict[str, Any]]:
        """The valid gen_NNN.json records there are, in order (damaged ones are skipped)."""
        return self.scan_generations()[0]

    def write_checkpoint(self, state: dict[str, Any]) -> None:
        atomic_write_json(self.checkpoint_path, state)

    def read_checkpoint(self) -> Any:
        """checkpoint.json as strict JSON (None when there is none), or RunError naming the file; what
        it holds is checked by EngineState.from_json."""
        if not self.checkpoint_path.exists() and not self.checkpoint_path.is_symlink():
            return None
        return read_json(self.checkpoint_path, RunError, "run checkpoint")

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
        return "MACs (fraction of the stock pipeline's)"

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
    first_generation: dict[str, int] = {}
    for r in records:  # a race continued later writes its key again: the last record is its result
        key = r.get("key")
        if not key:
            continue
        details = r.get("details") or {}
        values = r.get("values") or [float("nan"), float("nan")]
        gen = first_generation.setdefault(key, int(r.get("generation", 0)))
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
    cfg = read_config_record(root / CONFIG_FILE)
    config = cfg["config"]
    store = RunStore(root)
    frontier_files: dict[str, str] = {}
    index = _read_json_or_none(root / FRONTIER_DIR / FRONTIER_INDEX, "frontier index")
    rows = index.get("points") if isinstance(index, dict) else None
    for row in rows if isinstance(rows, list) else []:
        key, name = (row.get("key"), row.get("schedule")) if isinstance(row, dict) else (None, None)
        if isinstance(key, str) and isinstance(name, str) and FRONTIER_SCHEDULE.match(name):
            if (root / FRONTIER_DIR / name).exists():
                frontier_files[key] = name
    return run_data(
        root,
        config,
        cfg.get("config_hash"),
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

                spec = GenomeSpec.for_config(space, run.config)
            schedule = decode_genome(p.genome, spec, space, name=f"{space.name}-{p.key[:8]}")
        if schedule is not None:
            out.append((stem, p, schedule))
    return out
