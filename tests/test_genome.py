"""Genome encoding, repair, operators and heuristic seeds."""

from __future__ import annotations

import numpy as np
import pytest

from ecad.schedule import Schedule
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
from ecad.search.seeds import heuristic_grids, initial_population
from ecad.spaces import load_space

SPEC = GenomeSpec(steps=8, blocks=4, components=3, timesteps=True, min_steps=4)


def _rand(seed, spec=SPEC):
    return spec.repair(np.random.default_rng(seed).random(spec.size) < 0.3, np.random.default_rng(seed))


def test_repair_forces_step_zero_and_min_steps():
    bits = SPEC.repair(np.zeros(SPEC.size, dtype=bool), np.random.default_rng(0))
    assert SPEC.grid(bits)[0].all() and SPEC.selected(bits)[0]
    assert SPEC.selected(bits).sum() == 4


def test_genome_to_schedule_and_back_with_timestep_selection():
    space = load_space("tiny-pixart")
    spec = GenomeSpec(space.steps, space.layout.num_blocks, space.layout.num_components, True, 3)
    bits = spec.repair(np.random.default_rng(1).random(spec.size) < 0.4, np.random.default_rng(1))
    schedule = spec.to_schedule(bits, space)
    assert schedule.timesteps == [int(i) for i in np.flatnonzero(spec.selected(bits))] or schedule.timesteps is None
    assert np.array_equal(spec.from_schedule(schedule), bits)


def test_step_crossover_moves_whole_steps():
    a, b = _rand(1), _rand(2)
    c1, c2 = crossover_steps(a, b, SPEC, np.random.default_rng(0), k=2)
    for s in range(SPEC.steps):
        row1 = SPEC.grid(c1)[s]
        from_a = np.array_equal(row1, SPEC.grid(a)[s])
        from_b = np.array_equal(row1, SPEC.grid(b)[s])
        assert from_a or from_b
        assert SPEC.selected(c1)[s] == (SPEC.selected(a)[s] if from_a else SPEC.selected(b)[s]) or from_a and from_b
    assert np.array_equal(c1 ^ c2, a ^ b)  # bits are exchanged, never invented


def test_uniform_crossover_and_mutations_change_bits_at_their_rate():
    a, b = _rand(3), _rand(4)
    c1, c2 = crossover_uniform(a, b, SPEC, np.random.default_rng(0))
    assert np.array_equal(c1 ^ c2, a ^ b)
    flipped = mutate_bits(a, np.random.default_rng(0), 0.1) ^ a
    assert 0.03 < flipped.mean() < 0.2
    structured = [mutate_structured(a, SPEC, np.random.default_rng(s)) for s in range(20)]
    assert any((m ^ a).any() for m in structured)
    assert all(SPEC.grid(m)[0].all() for m in structured)  # step 0 stays fully computed


def test_hash_and_hex_round_trip():
    a = _rand(5)
    assert np.array_equal(hex_to_bits(bits_to_hex(a), a.size), a)
    assert genome_hash(a) == genome_hash(a.copy()) != genome_hash(~a)


def test_initial_population_mixes_heuristics_and_random_without_duplicates():
    space = load_space("tiny-pixart")
    spec = GenomeSpec.for_space(space)
    seed_schedule = Schedule.every_n(space.layout, space.steps, 3, name="mine")
    genomes, labels = initial_population(space, spec, 16, np.random.default_rng(0), [seed_schedule])
    assert len(genomes) == 16 and len({genome_hash(g) for g in genomes}) == 16
    assert labels[0] == "seed:mine" and "no_caching" in labels and "random" in labels
    assert any(label.startswith("every_") for label in labels)
    names = {n for n, _ in heuristic_grids(space)}
    assert {"every_2", "attention_every_2", "tgate_2"} <= names
    assert all(spec.grid(g)[0].all() for g in genomes)


def test_a_seed_file_equal_to_no_caching_is_labelled_no_caching():
    """The frontier reads a run's baseline quality off the `no_caching` label, so a --seed-from
    schedule that computes everything carries that label, not its file's name."""
    space = load_space("tiny-pixart")
    spec = GenomeSpec.for_space(space)
    full = Schedule.every_n(space.layout, space.steps, 1, name="mine")
    genomes, labels = initial_population(space, spec, 8, np.random.default_rng(0), [full])
    assert labels[0] == "no_caching" and spec.grid(genomes[0]).all()
    assert labels.count("no_caching") == 1 and not any(label.startswith("seed:") for label in labels)


@pytest.mark.parametrize("space_name", ["tiny-pixart", "tiny-flux", "tiny-sd3"])
def test_every_baseline_compare_shows_is_in_the_initial_population(space_name):
    """every-n for n = 2..5, attention-only and T-GATE-like: a search always starts from the
    heuristics `ecad compare` puts beside its frontier, even with a small population."""
    from ecad.search.seeds import baseline_grids, initial_population
    from ecad.spaces import load_space

    space = load_space(space_name)
    spec = GenomeSpec.for_space(space)
    _, labels = initial_population(space, spec, 12, np.random.default_rng(0))
    wanted = [name for name, _ in baseline_grids(space)]
    assert {"every_2", "every_3", "every_4", "every_5"} <= set(wanted)
    assert set(wanted) <= set(labels) and labels[0] == "no_caching" and "random" in labels


# ------------------------------------------------------------ forecast plane and guidance bits
def test_default_genomes_are_unchanged_by_the_optional_genes():
    """Old runs resume: without --cells forecast or --guidance-reuse the spec, its size and its
    genomes' hashes are the ones every earlier run used."""
    space = load_space("tiny-pixart")
    spec = GenomeSpec.for_space(space)
    assert spec == GenomeSpec(space.steps, space.layout.num_blocks, space.layout.num_components, False, 1, ())
    assert spec.size == space.steps * space.layout.num_blocks * space.layout.num_components
    bits = _rand(3, spec)
    assert spec.compose(spec.grid(bits)).tolist() == bits.tolist()
    assert genome_hash(bits) == genome_hash(spec.repair(bits, np.random.default_rng(9)))
    pop, labels = initial_population(space, spec, 20, np.random.default_rng(0))
    assert not any(label.startswith(("taylorseer", "fastercache")) for label in labels)


def test_forecast_and_guidance_planes_repair_decode_and_cross_by_step():
    space = load_space("tiny-pixart")
    spec = GenomeSpec.for_space(space, cells=("compute", "reuse", "forecast"), guidance_reuse=True)
    base = GenomeSpec.for_space(space)
    assert spec.size == base.size + base.grid_size + space.steps
    rng = np.random.default_rng(2)
    bits = spec.repair(rng.random(spec.size) < 0.5, rng)
    grid, plane, guidance = spec.grid(bits), spec.forecast_plane(bits), spec.guidance_bits(bits)
    assert not (plane & grid).any() and not guidance[0]
    before = np.cumsum(grid, axis=0) - grid
    assert (before[plane] >= 2).all()  # every forecast has two computed outputs before it
    schedule = spec.to_schedule(bits, space)
    assert np.array_equal(schedule.executed_forecast(), plane) or schedule.forecast is None
    assert np.array_equal(spec.from_schedule(schedule), bits)
    a, b = bits, spec.repair(rng.random(spec.size) < 0.5, rng)
    c1, _ = crossover_steps(a, b, spec, np.random.default_rng(5))
    for step in range(space.steps):  # every plane of a step comes from one parent
        src = a if np.array_equal(spec.grid(c1)[step], spec.grid(a)[step]) else b
        assert np.array_equal(spec.forecast_plane(c1)[step], spec.forecast_plane(src)[step]) or np.array_equal(
            spec.grid(a)[step], spec.grid(b)[step]
        )
        assert spec.guidance_bits(c1)[step] == spec.guidance_bits(src)[step] or np.array_equal(
            spec.grid(a)[step], spec.grid(b)[step]
        )
    moved = [mutate_structured(bits, spec, np.random.default_rng(i)) for i in range(60)]
    assert any(not np.array_equal(spec.forecast_plane(m), plane) for m in moved)
    assert any(not np.array_equal(spec.guidance_bits(m), guidance) for m in moved)
    with pytest.raises(ValueError, match="--guidance-reuse: FLUX.1 does not run classifier-free guidance"):
        GenomeSpec.for_space(load_space("tiny-flux"), guidance_reuse=True)
    with pytest.raises(ValueError, match="--cells: compute,forecast is not a choice"):
        GenomeSpec.for_space(space, cells=("compute", "forecast"))


def test_seeds_include_taylorseer_and_fastercache_like_genomes():
    space = load_space("tiny-pixart")
    spec = GenomeSpec.for_space(space, cells=("compute", "reuse", "forecast"), guidance_reuse=True)
    pop, labels = initial_population(space, spec, 40, np.random.default_rng(0))
    assert {"taylorseer_2", "taylorseer_3", "fastercache", "taylorseer_3_fastercache"} <= set(labels)
    ts = pop[labels.index("taylorseer_3")]
    assert spec.forecast_plane(ts).any() and not spec.guidance_bits(ts).any()
    fc = pop[labels.index("fastercache")]
    assert spec.grid(fc).all() and spec.guidance_bits(fc).any()
    no = pop[labels.index("no_caching")]
    assert not spec.forecast_plane(no).any() and not spec.guidance_bits(no).any()
    for bits in pop:
        spec.to_schedule(bits, space)  # every seed is a valid schedule
