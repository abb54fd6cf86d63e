"""The NSGA-II engine on a synthetic problem with a known Pareto front."""

from __future__ import annotations

import numpy as np

from ecad.search.genome import GenomeSpec, genome_hash
from ecad.search.nsga2 import NSGA2, EngineConfig, Evaluation, hypervolume
from ecad.search.seeds import random_genomes

SPEC = GenomeSpec(steps=6, blocks=4, components=3)  # 72 bits, 12 of them (step 0) fixed
FREE = np.arange(12, 72)
A, B = FREE[:20], FREE[20:]


def synthetic(bits: np.ndarray) -> Evaluation:
    """quality = sqrt(share of ones in A) (max), cost = share in A + share in B (min):
    the front is B all zero, A anything -> quality = sqrt(cost) at 21 points."""
    a, b = bits[A].mean(), bits[B].mean()
    return Evaluation((float(np.sqrt(a)), float(a + b)))


def optimal_hv(ref):
    front = [Evaluation((np.sqrt(k / 20), k / 20)) for k in range(21)]
    return hypervolume(front, (1.0, -1.0), ref)


def run_engine(seed=0, generations=60, population=32):
    calls = []

    def evaluate(genomes, gen):
        calls.extend(genome_hash(g) for g in genomes)
        return [synthetic(g) for g in genomes]

    engine = NSGA2(SPEC, EngineConfig(population=population, seed=seed), evaluate)
    rng = np.random.default_rng(seed)
    init = random_genomes(SPEC, rng, population)
    engine.start(init, ["random"] * len(init))
    for _ in range(generations):
        engine.step()
    return engine, calls


def test_reaches_95_percent_of_the_optimal_hypervolume():
    engine, _ = run_engine()
    ref = [0.0 + 1e-9, 2.2]  # minimisation space: (-quality, cost)
    pop = [engine.evals[genome_hash(g)] for g in engine.state.population]
    got = hypervolume(pop, (1.0, -1.0), ref)
    assert got >= 0.95 * optimal_hv(ref), (got, optimal_hv(ref))


def test_same_seed_same_populations_and_no_genome_evaluated_twice():
    e1, calls1 = run_engine(seed=3, generations=8)
    e2, calls2 = run_engine(seed=3, generations=8)
    assert [genome_hash(g) for g in e1.state.population] == [genome_hash(g) for g in e2.state.population]
    assert len(calls1) == len(set(calls1))
    assert e1.state.hv_history == e2.state.hv_history
    assert all(b >= a - 1e-12 for a, b in zip(e1.state.hv_history, e1.state.hv_history[1:]))  # elitist


def test_population_has_no_duplicates_and_step_zero_always_computes():
    engine, _ = run_engine(seed=1, generations=5)
    hashes = [genome_hash(g) for g in engine.state.population]
    assert len(hashes) == len(set(hashes))
    assert all(SPEC.grid(g)[0].all() for g in engine.state.population)


def test_infeasible_candidates_never_beat_feasible_ones():
    def evaluate(genomes, gen):
        out = []
        for g in genomes:
            ev = synthetic(g)
            out.append(Evaluation(ev.values, feasible=False, reason="NaN images") if g[B].sum() == 0 else ev)
        return out

    engine = NSGA2(SPEC, EngineConfig(population=16, seed=0), evaluate)
    init = random_genomes(SPEC, np.random.default_rng(0), 16)
    engine.start(init, ["r"] * 16)
    for _ in range(5):
        engine.step()
    feasible = [engine.evals[genome_hash(g)].feasible for g in engine.state.population]
    assert all(feasible)
