"""NSGA-II over genomes with deap's selection; all randomness from one seeded numpy generator.

The engine knows nothing of pipelines or Ray: it asks an `evaluate` callable for objective
values, so the same loop runs the synthetic test problem and a distributed search, and a run
with the same config and seed gives the same populations whatever the number of workers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import moocore
import numpy as np
from deap import base, creator, tools

from ecad.errors import EcadError
from ecad.files import is_finite_number, is_integer
from ecad.search.genome import (
    GenomeSpec,
    bits_to_hex,
    crossover_steps,
    crossover_uniform,
    genome_hash,
    hex_to_bits,
    mutate_bits,
    mutate_structured,
)

WORST = 1e12  # objective value of an infeasible candidate: dominated by every feasible one
STATE_FIELDS = ("generation", "population", "genome_size", "labels", "rng_state", "hv_ref", "hv_history")
_HEX = re.compile(r"^[0-9a-f]*$")


class EngineDataError(EcadError, ValueError):
    """A saved engine state or evaluation that is not what the engine writes; the message names the
    field (the caller adds the file)."""


def _numbers(x: Any, name: str, length: int | None = None) -> list[float]:
    if not isinstance(x, list) or not all(is_finite_number(v) for v in x):
        raise EngineDataError(f"{name} is not a list of numbers")
    if length is not None and len(x) != length:
        raise EngineDataError(f"{name} holds {len(x)} numbers, not {length}")
    return [float(v) for v in x]


def check_rng_state(state: Any) -> dict[str, Any]:
    """The numpy generator state the engine saved (PCG64, which np.random.default_rng makes), or
    EngineDataError: numpy itself would quietly accept a float or a missing field."""
    name = type(np.random.default_rng(0).bit_generator).__name__
    fields = {"bit_generator", "state", "has_uint32", "uinteger"}
    if not isinstance(state, dict) or set(state) != fields or state["bit_generator"] != name:
        raise EngineDataError(f"rng_state is not a {name} generator state ({', '.join(sorted(fields))})")
    inner = state["state"]
    if not isinstance(inner, dict) or set(inner) != {"state", "inc"}:
        raise EngineDataError("rng_state.state is not {state, inc}")
    for key in ("state", "inc"):
        if not is_integer(inner[key]) or not 0 <= inner[key] < 2**128:
            raise EngineDataError(f"rng_state.state.{key} is not a 128-bit whole number")
    if state["has_uint32"] not in (0, 1) or not is_integer(state["has_uint32"]):
        raise EngineDataError("rng_state.has_uint32 is not 0 or 1")
    if not is_integer(state["uinteger"]) or not 0 <= state["uinteger"] < 2**32:
        raise EngineDataError("rng_state.uinteger is not a 32-bit whole number")
    try:
        np.random.default_rng(0).bit_generator.state = state
    except (TypeError, ValueError, OverflowError) as exc:
        raise EngineDataError(f"rng_state is refused by numpy ({exc})") from None
    return state


@dataclass
class Evaluation:
    """One candidate's result. `values` follow the engine's objective weights."""

    values: tuple[float, ...]
    feasible: bool = True
    reason: str | None = None  # why infeasible (NaN images, OOM, constraint)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether the candidate was evaluated on the whole protocol. A race (ecad.search.racing)
        that stopped early, or was interrupted, leaves `details["racing"]["complete"]` false; its
        values are then an estimate: the engine selects with them, but only complete evaluations
        count for the hypervolume and the frontier. Records without racing details are complete."""
        racing = self.details.get("racing")
        return not isinstance(racing, dict) or racing.get("complete", True) is not False

    def to_json(self) -> dict[str, Any]:
        return {
            "values": [None if not math.isfinite(v) else v for v in self.values],
            "feasible": self.feasible,
            "reason": self.reason,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Evaluation:
        """What to_json wrote, or EngineDataError naming the field that is not."""
        if not isinstance(d, dict):
            raise EngineDataError("an evaluation is not a JSON object")
        values = d.get("values")
        if not isinstance(values, list) or not values or not all(v is None or is_finite_number(v) for v in values):
            raise EngineDataError("values is not a list of numbers or nulls")
        if not isinstance(d.get("feasible"), bool):
            raise EngineDataError("feasible is not true or false")
        if d.get("reason") is not None and not isinstance(d.get("reason"), str):
            raise EngineDataError("reason is not a string or null")
        if d.get("details") is not None and not isinstance(d.get("details"), dict):
            raise EngineDataError("details is not an object")
        return cls(
            tuple(float("nan") if v is None else float(v) for v in values),
            d["feasible"],
            d.get("reason"),
            d.get("details") or {},
        )


@dataclass(frozen=True)
class EngineConfig:
    population: int = 24
    seed: int = 0
    weights: tuple[float, ...] = (1.0, -1.0)  # maximise quality, minimise cost
    crossover_prob: float = 0.9
    uniform_share: float = 0.3  # share of crossovers that are uniform (rest: k-point on steps)
    k_points: int = 4
    bit_rate: float | None = None  # per-bit flip rate; default 1 / genome size (weak, as ECAD)
    structured_prob: float = 0.3


def _fitness_class(weights: tuple[float, ...]):
    name = "EcadFitness_" + "_".join("max" if w > 0 else "min" for w in weights)
    if not hasattr(creator, name):
        creator.create(name, base.Fitness, weights=weights)
    return getattr(creator, name)


class Individual:
    """A numpy genome with a deap fitness: cloning copies one array, not a deepcopy tree."""

    __slots__ = ("bits", "fitness", "key", "rank")

    def __init__(self, bits: np.ndarray, fitness_cls):
        self.bits = bits
        self.fitness = fitness_cls()
        self.key = genome_hash(bits)


def minimisation_points(evals: Sequence[Evaluation], weights: Sequence[float]) -> np.ndarray:
    """Objective vectors of the complete feasible evaluations, turned into 'lower is better' for
    hypervolume (a race stopped early has an estimate, not a measured point)."""
    feasible = [e for e in evals if e.feasible and e.complete]
    if not feasible:
        return np.zeros((0, len(weights)))
    return np.array([[-np.sign(w) * v for w, v in zip(weights, e.values)] for e in feasible], dtype=float)


def hypervolume(evals: Sequence[Evaluation], weights: Sequence[float], ref: Sequence[float]) -> float:
    pts = minimisation_points(evals, weights)
    pts = pts[(pts < np.asarray(ref)).all(axis=1)] if len(pts) else pts
    return float(moocore.hypervolume(pts, ref=np.asarray(ref, dtype=float))) if len(pts) else 0.0


def reference_point(evals: Sequence[Evaluation], weights: Sequence[float]) -> list[float]:
    """Fixed once from generation 0 (worst feasible value plus 10% of the range) so
    hypervolumes of later generations are comparable."""
    pts = minimisation_points(evals, weights)
    if not len(pts):
        return [1.0] * len(weights)
    hi, lo = pts.max(axis=0), pts.min(axis=0)
    return list(hi + 0.1 * np.maximum(hi - lo, 1e-9) + 1e-12)


@dataclass
class EngineState:
    """Everything needed to continue a run exactly: the population and the RNG."""

    generation: int
    population: list[np.ndarray]
    labels: list[str]
    rng_state: dict[str, Any]
    hv_ref: list[float] | None = None
    hv_history: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The checkpoint's content: genomes as hex, so it is plain JSON."""
        return {
            "generation": self.generation,
            "population": [bits_to_hex(g) for g in self.population],
            "genome_size": int(self.population[0].size) if self.population else 0,
            "labels": self.labels,
            "rng_state": self.rng_state,
            "hv_ref": self.hv_ref,
            "hv_history": self.hv_history,
        }

    @classmethod
    def from_json(cls, d: Any, genome_size: int | None = None, objectives: int | None = None) -> EngineState:
        """What to_json wrote, checked whole, or EngineDataError naming the field that is not: every
        field there and no other, genomes as hex of `genome_size` bits (when given: the space's),
        one label per genome, a numpy generator state, `objectives` numbers in hv_ref, and one
        hypervolume (>= 0) per generation so far."""
        if not isinstance(d, dict):
            raise EngineDataError(f"not a JSON object but {type(d).__name__}")
        missing = [f for f in STATE_FIELDS if f not in d]
        if missing:
            raise EngineDataError(f"lacks {', '.join(missing)}")
        unknown = sorted(set(d) - set(STATE_FIELDS))
        if unknown:
            raise EngineDataError(f"has fields the engine does not write ({', '.join(unknown)[:80]})")
        generation, size = d["generation"], d["genome_size"]
        if not is_integer(generation) or generation < 0:
            raise EngineDataError("generation is not a whole number >= 0")
        if not is_integer(size) or size <= 0:
            raise EngineDataError("genome_size is not a whole number > 0")
        if genome_size is not None and size != genome_size:
            raise EngineDataError(f"genome_size is {size}, but the space makes genomes of {genome_size} bits")
        population, labels = d["population"], d["labels"]
        if not isinstance(population, list) or not population:
            raise EngineDataError("population is not a list of genomes")
        width = 2 * -(-size // 8)
        for i, h in enumerate(population):
            if not isinstance(h, str) or len(h) != width or not _HEX.match(h):
                raise EngineDataError(f"population[{i}] is not a genome of {size} bits ({width} lowercase hex digits)")
        if not isinstance(labels, list) or not all(isinstance(label, str) for label in labels):
            raise EngineDataError("labels is not a list of strings")
        if len(labels) != len(population):
            raise EngineDataError(f"labels holds {len(labels)} labels for {len(population)} genomes")
        hv_ref = _numbers(d["hv_ref"], "hv_ref", objectives)  # set by start(), before any state is saved
        hv_history = _numbers(d["hv_history"], "hv_history", generation + 1)
        if any(hv < 0 for hv in hv_history):
            raise EngineDataError("hv_history holds a negative hypervolume")
        return cls(
            generation,
            [hex_to_bits(h, size) for h in population],
            list(labels),
            check_rng_state(d["rng_state"]),
            hv_ref,
            hv_history,
        )


Evaluator = Callable[[list[np.ndarray], int], list[Evaluation]]


class NSGA2:
    """ask/tell-free loop: `step()` makes offspring, evaluates them, selects the next population."""

    def __init__(self, spec: GenomeSpec, config: EngineConfig, evaluate: Evaluator):
        self.spec, self.config, self.evaluate = spec, config, evaluate
        self.fitness_cls = _fitness_class(tuple(config.weights))
        self.bit_rate = config.bit_rate if config.bit_rate is not None else 1.0 / spec.size
        self.evals: dict[str, Evaluation] = {}
        self.state: EngineState | None = None
        self.rng = np.random.default_rng(config.seed)

    # ------------------------------------------------------------ life cycle
    def start(self, genomes: list[np.ndarray], labels: list[str]) -> EngineState:
        """Evaluate generation 0."""
        self._evaluate(genomes, 0)
        pop = self._select(self._individuals(genomes), self.config.population)
        keep = {ind.key for ind in pop}
        pairs = [(g, l) for g, l in zip(genomes, labels) if genome_hash(g) in keep]
        self.state = EngineState(0, [p[0] for p in pairs], [p[1] for p in pairs], self.rng.bit_generator.state)
        pop_evals = [self.evals[genome_hash(g)] for g in self.state.population]
        self.state.hv_ref = reference_point(pop_evals, self.config.weights)
        self.state.hv_history.append(hypervolume(pop_evals, self.config.weights, self.state.hv_ref))
        return self.state

    def resume(self, state: EngineState, evals: dict[str, Evaluation]) -> None:
        """Continue from a checkpoint. A population member without an evaluation (its log line
        was lost when a run was killed mid-write) is evaluated again; that draws nothing from
        the RNG, so the run still continues exactly."""
        self.state, self.evals = state, dict(evals)
        self.rng.bit_generator.state = state.rng_state
        self._evaluate(state.population, state.generation)

    def step(self) -> EngineState:
        """One generation: variation, evaluation, NSGA-II survival."""
        assert self.state is not None, "call start() or resume() first"
        gen = self.state.generation + 1
        parents = self._individuals(self.state.population)
        self._assign_crowding(parents)
        offspring = self._offspring(parents)
        self._evaluate(offspring, gen)
        label_of = dict(zip((genome_hash(g) for g in self.state.population), self.state.labels))
        merged = parents + self._individuals(offspring)
        survivors = self._select(merged, self.config.population)
        self.state = EngineState(
            gen,
            [ind.bits for ind in survivors],
            [label_of.get(ind.key, f"gen{gen}") for ind in survivors],
            self.rng.bit_generator.state,
            self.state.hv_ref,
            self.state.hv_history,
        )
        pop_evals = [self.evals[ind.key] for ind in survivors]
        self.state.hv_history = self.state.hv_history + [hypervolume(pop_evals, self.config.weights, self.state.hv_ref)]
        return self.state

    # --------------------------------------------------------------- helpers
    def _evaluate(self, genomes: list[np.ndarray], generation: int) -> None:
        """Evaluate the genomes that have no evaluation yet, and hand back those whose evaluation is
        incomplete (a race stopped or interrupted): the evaluator continues them where they got to,
        or returns them as they are."""
        todo, seen = [], set()
        for g in genomes:
            h = genome_hash(g)
            known = self.evals.get(h)
            if (known is None or (known.feasible and not known.complete)) and h not in seen:
                seen.add(h)
                todo.append(g)
        if todo:
            for g, ev in zip(todo, self.evaluate(todo, generation)):
                self.evals[genome_hash(g)] = ev

    def _individuals(self, genomes: list[np.ndarray]) -> list[Individual]:
        out = []
        for g in genomes:
            ind = Individual(g, self.fitness_cls)
            ev = self.evals[ind.key]
            ind.fitness.values = ev.values if ev.feasible else tuple(-np.sign(w) * WORST for w in self.config.weights)
            out.append(ind)
        return out

    @staticmethod
    def _select(individuals: list[Individual], k: int) -> list[Individual]:
        unique, seen = [], set()
        for ind in individuals:  # duplicates never take two places in the population
            if ind.key not in seen:
                seen.add(ind.key)
                unique.append(ind)
        return tools.selNSGA2(unique, min(k, len(unique)))

    def _assign_crowding(self, pop: list[Individual]) -> None:
        fronts = tools.sortNondominated(pop, len(pop))
        for rank, front in enumerate(fronts):
            tools.emo.assignCrowdingDist(front)
            for ind in front:
                ind.rank = rank  # type: ignore[attr-defined]

    def _tournament(self, pop: list[Individual]) -> Individual:
        a, b = (pop[i] for i in self.rng.integers(len(pop), size=2))
        if a.rank != b.rank:  # type: ignore[attr-defined]
            return a if a.rank < b.rank else b  # type: ignore[attr-defined]
        return a if a.fitness.crowding_dist >= b.fitness.crowding_dist else b

    def _offspring(self, pop: list[Individual]) -> list[np.ndarray]:
        cfg, spec, rng = self.config, self.spec, self.rng
        taken = {ind.key for ind in pop}
        children: list[np.ndarray] = []
        attempts = 0
        while len(children) < cfg.population and attempts < 50 * cfg.population:  # tiny spaces run out
            attempts += 1
            p1, p2 = self._tournament(pop).bits, self._tournament(pop).bits
            if rng.random() < cfg.crossover_prob:
                if rng.random() < cfg.uniform_share:
                    c1, c2 = crossover_uniform(p1, p2, spec, rng)
                else:
                    c1, c2 = crossover_steps(p1, p2, spec, rng, cfg.k_points)
            else:
                c1, c2 = p1.copy(), p2.copy()
            for child in (c1, c2):
                child = self._mutate(child)
                for _ in range(10):  # eliminate duplicates: mutate again until new
                    if genome_hash(child) not in taken:
                        break
                    child = spec.repair(mutate_structured(child, spec, rng), rng)
                h = genome_hash(child)
                if h not in taken and len(children) < cfg.population:
                    taken.add(h)
                    children.append(child)
        return children

    def _mutate(self, bits: np.ndarray) -> np.ndarray:
        bits = mutate_bits(bits, self.rng, self.bit_rate)
        if self.rng.random() < self.config.structured_prob:
            bits = mutate_structured(bits, self.spec, self.rng)
        return self.spec.repair(bits, self.rng)
