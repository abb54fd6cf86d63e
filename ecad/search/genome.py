"""Genome: a search space's compute grid plus (optionally) its timestep selection, as numpy bits.

Genomes are plain bool vectors so cloning is a copy of one array (deap's deepcopy clone was
most of the engine's time). Step 0 always runs and computes everything: repair, not rejection.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ecad.schedule import Schedule


@dataclass(frozen=True)
class GenomeSpec:
    """How bits map to a schedule: grid bits (step-major, ECAD order) then one bit per step."""

    steps: int
    blocks: int
    components: int
    timesteps: bool = False  # whether the search also chooses which steps run
    min_steps: int = 1
    # (block, component) cells that are padding in a ragged layout: no component, always "compute"
    padding: tuple[tuple[int, int], ...] = ()

    @classmethod
    def for_space(cls, space) -> GenomeSpec:
        padding = tuple((int(b), int(c)) for b, c in zip(*np.nonzero(~space.layout.cell_mask())))
        return cls(
            space.steps,
            space.layout.num_blocks,
            space.layout.num_components,
            bool(space.timesteps_enabled),
            int(space.min_steps if space.timesteps_enabled else 1),
            padding,
        )

    @property
    def grid_size(self) -> int:
        return self.steps * self.blocks * self.components

    @property
    def size(self) -> int:
        return self.grid_size + (self.steps if self.timesteps else 0)

    def grid(self, bits: np.ndarray) -> np.ndarray:
        return bits[: self.grid_size].reshape(self.steps, self.blocks, self.components)

    def selected(self, bits: np.ndarray) -> np.ndarray:
        return bits[self.grid_size :] if self.timesteps else np.ones(self.steps, dtype=bool)

    # ------------------------------------------------------------- conversion
    def to_schedule(self, bits: np.ndarray, space, **kw) -> Schedule:
        sel = self.selected(bits)
        timesteps = [int(i) for i in np.flatnonzero(sel)] if self.timesteps and not sel.all() else None
        return Schedule.from_bits(bits[: self.grid_size], space, timesteps=timesteps, **kw)

    def from_schedule(self, schedule: Schedule) -> np.ndarray:
        if schedule.grid.shape != (self.steps, self.blocks, self.components):
            raise ValueError(
                f"schedule grid {schedule.grid.shape} does not fit this space "
                f"({self.steps} steps x {self.blocks} blocks x {self.components})"
            )
        bits = schedule.to_bits()
        if self.timesteps:
            sel = np.zeros(self.steps, dtype=bool)
            sel[schedule.executed_steps] = True
            bits = np.concatenate([bits, sel])
        return self.repair(bits, np.random.default_rng(0))

    # ----------------------------------------------------------------- repair
    def repair(self, bits: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Step 0 runs and computes everything; at least `min_steps` steps run; the grid rows of
        steps that do not run, and padding cells, are all set (canonical form).

        A skipped step's row never reaches the schedule that runs, so without the last rule one
        schedule would have many genomes, each with its own hash: evaluated again under every
        hash, and listed as duplicates on the frontier."""
        bits = np.asarray(bits, dtype=bool).copy()
        grid = self.grid(bits)
        grid[0] = True
        if self.padding:  # canonical: padding cells hold no component, so they never reuse
            blocks, comps = zip(*self.padding)
            grid[:, list(blocks), list(comps)] = True
        if self.timesteps:
            sel = bits[self.grid_size :]
            sel[0] = True
            missing = self.min_steps - int(sel.sum())
            if missing > 0:
                off = np.flatnonzero(~sel)
                sel[rng.choice(off, size=min(missing, off.size), replace=False)] = True
            grid[~sel] = True
        return bits


def genome_hash(bits: np.ndarray) -> str:
    """Stable identity of a genome: a genome is never evaluated twice, across runs and resumes."""
    return hashlib.sha256(np.packbits(np.asarray(bits, dtype=bool)).tobytes() + str(len(bits)).encode()).hexdigest()[
        :24
    ]


def bits_to_hex(bits: np.ndarray) -> str:
    return np.packbits(np.asarray(bits, dtype=bool)).tobytes().hex()


def hex_to_bits(text: str, size: int) -> np.ndarray:
    return np.unpackbits(np.frombuffer(bytes.fromhex(text), dtype=np.uint8))[:size].astype(bool)


# ------------------------------------------------------------------ operators
def crossover_steps(a: np.ndarray, b: np.ndarray, spec: GenomeSpec, rng: np.random.Generator, k: int = 4):
    """k-point crossover with cuts on step boundaries (a step's grid row and its timestep bit move together)."""
    cuts = np.sort(rng.choice(np.arange(1, spec.steps), size=min(k, spec.steps - 1), replace=False))
    take = np.zeros(spec.steps, dtype=bool)
    for i, c in enumerate(cuts):
        if i % 2 == 0:
            end = cuts[i + 1] if i + 1 < len(cuts) else spec.steps
            take[c:end] = True
    return _swap_steps(a, b, take, spec)


def crossover_uniform(a: np.ndarray, b: np.ndarray, spec: GenomeSpec, rng: np.random.Generator, p: float = 0.5):
    mask = rng.random(a.size) < p
    c1, c2 = a.copy(), b.copy()
    c1[mask], c2[mask] = b[mask], a[mask]
    return c1, c2


def _swap_steps(a, b, take, spec: GenomeSpec):
    c1, c2 = a.copy(), b.copy()
    g1, g2 = spec.grid(c1), spec.grid(c2)
    g1[take], g2[take] = spec.grid(b)[take], spec.grid(a)[take]
    if spec.timesteps:
        s1, s2 = c1[spec.grid_size :], c2[spec.grid_size :]
        s1[take], s2[take] = b[spec.grid_size :][take], a[spec.grid_size :][take]
    return c1, c2


def mutate_bits(bits: np.ndarray, rng: np.random.Generator, rate: float) -> np.ndarray:
    out = bits.copy()
    out ^= rng.random(bits.size) < rate
    return out


def mutate_structured(bits: np.ndarray, spec: GenomeSpec, rng: np.random.Generator) -> np.ndarray:
    """One coarse move: set a whole step, a whole block over a step range, or one component
    kind over a step range, to compute or to reuse; or toggle whether a step runs."""
    out = bits.copy()
    grid = spec.grid(out)
    value = bool(rng.random() < 0.5)
    kinds = ["step", "block", "component"] + (["timestep"] if spec.timesteps else [])
    kind = kinds[rng.integers(len(kinds))]
    lo = int(rng.integers(1, spec.steps)) if spec.steps > 1 else 0
    hi = int(rng.integers(lo, spec.steps)) + 1
    if kind == "step":
        grid[lo] = value
    elif kind == "block":
        grid[lo:hi, rng.integers(spec.blocks)] = value
    elif kind == "component":
        grid[lo:hi, :, rng.integers(spec.components)] = value
    else:
        out[spec.grid_size + lo] = ~out[spec.grid_size + lo]
    return out
