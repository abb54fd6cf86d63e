"""Initial population: hand-made heuristic schedules plus random ones across densities.

Heuristics put known-good trade-offs on the frontier from generation 0 (ECAD seeds the same
way); random schedules at several densities keep the population diverse.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ecad.catalog import attention_grid, every_n_grid, fastercache_guidance, taylorseer_grid, tgate_grid, tgate_step
from ecad.schedule import Schedule, ScheduleError, load_schedule
from ecad.search.genome import GenomeSpec, genome_hash


def heuristic_grids(space) -> list[tuple[str, np.ndarray]]:
    """(name, grid) of FORA-like every-n, attention-only caching, T-GATE-like and evenly spaced
    single-component caching, for this space's steps and layout."""
    S, B, C = space.steps, space.layout.num_blocks, space.layout.num_components
    out: list[tuple[str, np.ndarray]] = []
    for n in (2, 3, 4, 5):
        if n < S:
            out.append((f"every_{n}", every_n_grid(space.layout, S, n)))
    for n in (2, 3):
        out.append((f"attention_every_{n}", attention_grid(space.layout, S, n)))
    for frac in (0.3, 0.5):
        out.append((f"tgate_{tgate_step(S, frac)}", tgate_grid(space.layout, S, frac)))
    for c in range(C):
        for k in (max(1, B // 4), max(1, B // 2)):
            for m in (max(1, S // 4), max(1, S // 2)):
                g = np.ones((S, B, C), dtype=bool)
                blocks = np.unique(np.linspace(0, B - 1, k).round().astype(int))
                steps = np.unique(np.linspace(1, S - 1, m).round().astype(int))
                g[np.ix_(steps, blocks, [c])] = False
                out.append((f"cache_c{c}_k{k}_m{m}", g))
    return out


def baseline_grids(space) -> list[tuple[str, np.ndarray]]:
    """The heuristics every search starts from and `ecad compare` shows beside its schedules:
    every-n for n = 2..5, attention-only caching on every other step and the T-GATE-like ones. A
    heuristic the search never considered could otherwise beat its frontier."""
    keep = {f"every_{n}" for n in (2, 3, 4, 5)} | {"attention_every_2"}
    return [(name, grid) for name, grid in heuristic_grids(space) if name in keep or name.startswith("tgate_")]


def plane_seeds(space, spec: GenomeSpec) -> list[tuple[str, np.ndarray]]:
    """(name, unrepaired bits) of the seeds that use the optional genes, for a spec that has them:
    TaylorSeer-like (compute every N, forecast between; N = 2..5) with a forecast plane,
    FasterCache-like (the unconditional branch computed every 5th step late in the schedule) with
    guidance bits, and both together."""
    S, layout = space.steps, space.layout
    out: list[tuple[str, np.ndarray]] = []
    if spec.forecast:
        for n in (2, 3, 4, 5):
            if n < S:
                grid, forecast = taylorseer_grid(layout, S, n)
                out.append((f"taylorseer_{n}", spec.compose(grid, forecast=forecast)))
    if spec.guidance_reuse:
        full = np.ones((S, layout.num_blocks, layout.num_components), dtype=bool)
        out.append(("fastercache", spec.compose(full, guidance=fastercache_guidance(S))))
        out.append(("fastercache_every_2", spec.compose(every_n_grid(layout, S, 2), guidance=fastercache_guidance(S))))
        if spec.forecast:
            grid, forecast = taylorseer_grid(layout, S, 3)
            out.append(
                ("taylorseer_3_fastercache", spec.compose(grid, forecast=forecast, guidance=fastercache_guidance(S)))
            )
    return out


def random_genomes(spec: GenomeSpec, rng: np.random.Generator, n: int) -> list[np.ndarray]:
    """Random genomes with compute densities spread evenly over (0.05, 0.95)."""
    out = []
    for i in range(n):
        density = 0.05 + 0.9 * (i + 0.5) / max(n, 1)
        bits = rng.random(spec.size) < density
        if spec.timesteps:
            bits[spec.grid_size :] = rng.random(spec.steps) < max(density, 0.6)
        out.append(spec.repair(bits, rng))
    return out


def load_seed_schedules(paths: list[str | Path], space) -> list[Schedule]:
    """Schedules from files, directories of schedule JSONs, or a previous run (its frontier)."""
    from ecad.runs import schedule_files

    found: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise ScheduleError(f"--seed-from {p}: no such file or directory")
        found += schedule_files(p)
    out = []
    for f in found:
        s = load_schedule(f)
        space.check_schedule(s)
        out.append(s)
    return out


def initial_population(
    space, spec: GenomeSpec, size: int, rng: np.random.Generator, extra: list[Schedule] = ()
) -> tuple[list[np.ndarray], list[str]]:
    """Seeds first (user schedules, no caching, heuristics), topped up with random genomes;
    duplicates removed. Returns genomes and a label for each (for plots and reports). No caching is
    labelled `no_caching` whichever seed brings it first (a --seed-from file may equal it): the
    frontier finds the run's baseline quality by that label."""
    genomes, labels, seen = [], [], set()
    full = spec.compose(np.ones((spec.steps, spec.blocks, spec.components), dtype=bool))
    full_hash = genome_hash(spec.repair(full, rng))

    def add(bits: np.ndarray, label: str) -> None:
        bits = spec.repair(bits, rng)
        h = genome_hash(bits)
        if h not in seen and len(genomes) < size:
            seen.add(h)
            genomes.append(bits)
            labels.append("no_caching" if h == full_hash else label)

    def add_grid(name: str, grid: np.ndarray) -> None:
        add(spec.compose(grid), name)

    for s in extra:
        add(spec.from_schedule(s), f"seed:{s.name or 'file'}")
    add(full, "no_caching")
    baselines = baseline_grids(space)
    for name, grid in baselines:  # always: the search must have considered every baseline it is compared with
        add_grid(name, grid)
    for name, bits in plane_seeds(space, spec):  # only where the spec has the optional genes
        add(bits, name)
    taken = {name for name, _ in baselines}
    heur = [(n, g) for n, g in heuristic_grids(space) if n not in taken]
    budget = max(0, size // 2 - len(genomes))  # at most half heuristics, the rest random
    picks = np.linspace(0, len(heur) - 1, min(budget, len(heur))).round().astype(int) if heur and budget else []
    for i in picks:
        add_grid(*heur[i])
    attempts = 0
    while len(genomes) < size and attempts < 20:
        for bits in random_genomes(spec, rng, size - len(genomes)):
            add(bits, "random")
        attempts += 1
    return genomes, labels
