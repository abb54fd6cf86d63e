"""Run directory: config, one JSON per generation, evaluation cache, atomic checkpoints.

Everything is JSON written through temp file + rename, so a run killed at any point leaves
files that are whole; the evaluation log is append-only, and a torn last line (a run killed
mid-write) is cut off when a run starts on the directory, so the next record starts a line
of its own instead of being glued onto the torn one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ecad.files import atomic_write_json  # noqa: F401 - re-exported: the run store's writer
from ecad.search.genome import bits_to_hex, hex_to_bits
from ecad.search.nsga2 import EngineState, Evaluation


class RunError(ValueError):
    """A run directory cannot be used as asked; the message says why and what to do."""


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"  {k}: {json.dumps(old.get(k))[:80]} (run) != {json.dumps(new.get(k))[:80]} (now)"
            for k in keys if old.get(k) != new.get(k)]


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


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class RunStore:
    """results/<run>/: config.json, gen_NNN.json, evaluations.jsonl, checkpoint.json, frontier/."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def config_path(self) -> Path:
        return self.root / "config.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.root / "checkpoint.json"

    @property
    def evaluations_path(self) -> Path:
        return self.root / "evaluations.jsonl"

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
                raise RunError(f"{self.root} already holds a run; resume it with `--resume {self.root}`, choose "
                               "another --out, or pass --force to overwrite it")
        elif any(self.root.iterdir()):
            raise RunError(f"{self.root} is not empty and not an ecad run (no config.json), so it is left alone even "
                           "with --force; choose a new --out (a directory that does not exist yet, or is empty)")

    def create(self, config: dict[str, Any], force: bool = False, inputs: dict[str, Any] | None = None) -> None:
        """Start the run directory. `inputs` fingerprints what the config only names (the prompt
        file's prompts, the space file's text), so a resume can tell when they changed."""
        self.check_new(force)
        if self.config_path.exists():  # a run, and --force was given
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, {"config": config, "config_hash": config_hash(config),
                                             "inputs": inputs or {}})

    def _read_config_file(self) -> dict[str, Any]:
        if not self.config_path.exists():
            raise RunError(f"{self.root} is not an ecad run (no config.json); check the path")
        return json.loads(self.config_path.read_text())

    def load_config(self) -> dict[str, Any]:
        return self._read_config_file()["config"]

    def check_resumable(self, config: dict[str, Any], inputs: dict[str, Any] | None = None,
                        genome_size: int | None = None) -> None:
        """Refuse a resume whose results would not continue the run: other settings, other
        prompts or another space behind the same names, or genomes of another length."""
        stored = self._read_config_file()
        diff = config_diff(stored["config"], config)
        if diff:
            raise RunError("cannot resume with a different configuration:\n" + "\n".join(diff) +
                           f"\nresume with the run's own settings (`ecad search --resume {self.root}` alone), "
                           "or start a new run with another --out")
        old_inputs = stored.get("inputs") or {}  # runs of older versions recorded none
        for key, what in (("prompts_sha256", f"the prompts read from {config.get('prompts')!r}"),
                          ("space_sha256", f"the search space file of {config.get('space')!r}")):
            if key in old_inputs and inputs and key in inputs and old_inputs[key] != inputs[key]:
                raise RunError(f"cannot resume {self.root}: {what} changed since the run started, so new results "
                               "would not compare with the recorded ones; restore the file as it was, or start a "
                               "new run with another --out")
        if genome_size is not None and self.checkpoint_path.exists():
            size = json.loads(self.checkpoint_path.read_text()).get("genome_size")
            if size and size != genome_size:
                raise RunError(f"cannot resume {self.root}: its checkpoint holds genomes of {size} bits, but the "
                               f"space now makes {genome_size} (steps x blocks x components, plus steps when "
                               "[timesteps] is enabled); restore the space file, or start a new run with another --out")

    # ---------------------------------------------------------- evaluations
    def append_evaluation(self, key: str, evaluation: Evaluation, generation: int, genome: str) -> None:
        line = json.dumps({"key": key, "generation": generation, "genome": genome, **evaluation.to_json()})
        with open(self.evaluations_path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def load_evaluations(self) -> dict[str, Evaluation]:
        """The evaluation cache, called when a run starts on this directory (before it appends):
        a torn last line is mended first, so it cannot swallow the next record."""
        mend_torn_tail(self.evaluations_path)
        return {d["key"]: Evaluation.from_json(d) for d in self.evaluation_records()}

    def evaluation_records(self) -> list[dict[str, Any]]:
        """Every whole line of the evaluation log (key, generation, genome hex, result)."""
        return read_evaluation_records(self.evaluations_path)

    # ---------------------------------------------------------- generations
    def write_generation(self, generation: int, record: dict[str, Any]) -> None:
        atomic_write_json(self.root / f"gen_{generation:03d}.json", record)

    def write_checkpoint(self, state: EngineState) -> None:
        atomic_write_json(self.checkpoint_path, {
            "generation": state.generation,
            "population": [bits_to_hex(g) for g in state.population],
            "genome_size": int(state.population[0].size) if state.population else 0,
            "labels": state.labels,
            "rng_state": state.rng_state,
            "hv_ref": state.hv_ref,
            "hv_history": state.hv_history,
        })

    def load_checkpoint(self) -> EngineState | None:
        if not self.checkpoint_path.exists():
            return None
        d = json.loads(self.checkpoint_path.read_text())
        return EngineState(d["generation"], [hex_to_bits(h, d["genome_size"]) for h in d["population"]],
                           d["labels"], d["rng_state"], d["hv_ref"], d["hv_history"])
