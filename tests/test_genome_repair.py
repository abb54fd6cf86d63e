"""Repair puts a genome with timestep selection in canonical form: one schedule, one hash."""

from __future__ import annotations

import numpy as np

from ecad.search.genome import GenomeSpec, genome_hash
from ecad.spaces import load_space

SPEC = GenomeSpec(steps=8, blocks=4, components=3, timesteps=True, min_steps=4)


def test_rows_of_steps_that_do_not_run_do_not_change_the_hash():
    rng = np.random.default_rng(0)
    bits = SPEC.repair(rng.random(SPEC.size) < 0.5, rng)
    skipped = np.flatnonzero(~SPEC.selected(bits))
    assert skipped.size, "the test needs a genome that skips a step"
    other = bits.copy()
    SPEC.grid(other)[skipped] = rng.random((skipped.size, SPEC.blocks, SPEC.components)) < 0.5
    other = SPEC.repair(other, rng)
    assert genome_hash(other) == genome_hash(bits)
    assert SPEC.grid(bits)[skipped].all()  # canonical: a skipped step's row is all set


def test_repair_is_idempotent_and_keeps_the_schedule_that_runs():
    space = load_space("tiny-pixart")
    spec = GenomeSpec(space.steps, space.layout.num_blocks, space.layout.num_components, True, 3)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        raw = rng.random(spec.size) < 0.4
        bits = spec.repair(raw, rng)
        assert np.array_equal(spec.repair(bits, rng), bits)
        schedule = spec.to_schedule(bits, space)
        executed = spec.selected(bits)
        assert np.array_equal(schedule.executed_grid()[1:], spec.grid(raw)[executed][1:])  # step 0 always computes
        assert np.array_equal(spec.from_schedule(schedule), bits)


def test_without_timestep_selection_repair_only_forces_step_zero():
    spec = GenomeSpec(steps=8, blocks=4, components=3)
    raw = np.random.default_rng(1).random(spec.size) < 0.3
    bits = spec.repair(raw, np.random.default_rng(1))
    assert spec.grid(bits)[0].all() and np.array_equal(spec.grid(bits)[1:], spec.grid(raw)[1:])
