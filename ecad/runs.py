"""Run directory: config, one JSON per generation, evaluation cache, atomic checkpoints.

Everything is JSON written through temp file + rename, so a run killed at any point leaves
files that are whole; the evaluation log is append-only and a torn last line is ignored.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from ecad.search.genome import bits_to_hex, hex_to_bits
from ecad.search.nsga2 import EngineState, Evaluation


class RunError(ValueError):
    """A run directory cannot be used as asked; the message says why and what to do."""


def atomic_write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def config_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    keys = sorted(set(old) | set(new))
    return [f"  {k}: {json.dumps(old.get(k))[:80]} (run) != {json.dumps(new.get(k))[:80]} (now)"
            for k in keys if old.get(k) != new.get(k)]


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
        """Refuse, before any work starts, to overwrite an existing run without --force."""
        if self.root.exists() and any(self.root.iterdir()) and not force:
            raise RunError(f"{self.root} already holds a run; resume it with `--resume {self.root}`, choose "
                           "another --out, or pass --force to overwrite it")

    def create(self, config: dict[str, Any], force: bool = False) -> None:
        self.check_new(force)
        if self.root.exists() and any(self.root.iterdir()):
            shutil.rmtree(self.root)
        self.root.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, {"config": config, "config_hash": config_hash(config)})

    def load_config(self) -> dict[str, Any]:
        if not self.config_path.exists():
            raise RunError(f"{self.root} is not an ecad run (no config.json); check the path")
        return json.loads(self.config_path.read_text())["config"]

    def check_resumable(self, config: dict[str, Any]) -> None:
        old = self.load_config()
        diff = config_diff(old, config)
        if diff:
            raise RunError("cannot resume with a different configuration:\n" + "\n".join(diff) +
                           f"\nresume with the run's own settings (`ecad search --resume {self.root}` alone), "
                           "or start a new run with another --out")

    # ---------------------------------------------------------- evaluations
    def append_evaluation(self, key: str, evaluation: Evaluation, generation: int, genome: str) -> None:
        line = json.dumps({"key": key, "generation": generation, "genome": genome, **evaluation.to_json()})
        with open(self.evaluations_path, "a") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def load_evaluations(self) -> dict[str, Evaluation]:
        # a torn last line of a killed run is skipped: that candidate is simply evaluated again
        return {d["key"]: Evaluation.from_json(d) for d in self.evaluation_records()}

    def evaluation_records(self) -> list[dict[str, Any]]:
        """Every whole line of the evaluation log (key, generation, genome hex, result)."""
        out = []
        if self.evaluations_path.exists():
            for line in self.evaluations_path.read_text().splitlines():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
        return out

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
