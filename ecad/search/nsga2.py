"""NSGA-II over genomes with deap's selection; all randomness from one seeded numpy generator.

The engine knows nothing of pipelines or Ray: it asks an `evaluate` callable for objective
values, so the same loop runs the synthetic test problem and a distributed search, and a run
with the same config and seed gives the same populations whatever the number of workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import moocore
import numpy as np
from deap import base, creator, tools

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


@dataclass
class Evaluation:
    """One candidate's result. `values` follow the engine's objective weights."""

    values: tuple[float, ...]
    feasible: bool = True
    reason: str | None = None  # why infeasible (NaN images, OOM, constraint)
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "values": [None if not math.isfinite(v) else v for v in self.values],
            "feasible": self.feasible,
            "reason": self.reason,
            "details": self.details,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Evaluation:
        return cls(
            tuple(float("nan") if v is None else float(v) for v in d["values"]),
            bool(d["feasible"]),
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
    """Objective vectors turned into 'lower is better' for hypervolume."""
    feasible = [e for e in evals if e.feasible]
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
    def from_json(cls, d: dict[str, Any]) -> EngineState:
        return cls(
            d["generation"],
            [hex_to_bits(h, d["genome_size"]) for h in d["population"]],
            d["labels"],
            d["rng_state"],
            d["hv_ref"],
            d["hv_history"],
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
        todo, seen = [], set()
        for g in genomes:
            h = genome_hash(g)
            if h not in self.evals and h not in seen:
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
