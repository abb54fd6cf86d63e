"""Genome: a search space's compute grid plus (optionally) its timestep selection, forecast plane
and guidance-reuse bits, as numpy bits.

Genomes are plain bool vectors so cloning is a copy of one array (deap's deepcopy clone was
most of the engine's time). Step 0 always runs and computes everything: repair, not rejection.

The optional planes come after the grid and timestep bits, so a spec without them is the one
every earlier run used (same size, same hashes: old runs resume): the forecast plane (one bit per
cell: where the grid does not compute, forecast instead of reuse) and one guidance-reuse bit per step
(skip the unconditional branch there).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ecad.errors import EcadError, shown
from ecad.schedule import Schedule, repair_forecast


class GeneOptionError(EcadError, ValueError):
    """The optional genes asked for (`--cells`, `--guidance-reuse`) do not fit the search space."""


CELL_KINDS = ("compute", "reuse", "forecast")
DEFAULT_CELLS = ("compute", "reuse")


def check_gene_options(cells, forecast_order, guidance_reuse) -> None:
    """The gene options' own values (not yet against a space), with the option to fix named."""
    if not isinstance(cells, (list, tuple)) or not all(isinstance(c, str) for c in cells):
        raise GeneOptionError(
            f"--cells: {cells!r} is not a list of cell kinds; use compute,reuse or compute,reuse,forecast"
        )
    unknown = sorted(set(cells) - set(CELL_KINDS))
    if unknown or not set(DEFAULT_CELLS) <= set(cells) or len(set(cells)) != len(cells):
        raise GeneOptionError(
            f"--cells: {shown(','.join(cells))} is not a choice of cells; use compute,reuse or compute,reuse,forecast"
        )
    if isinstance(forecast_order, bool) or forecast_order not in (1, 2):
        raise GeneOptionError(f"--forecast-order: {shown(forecast_order)} is not 1 or 2 (the extrapolation's order)")
    if forecast_order != 1 and "forecast" not in cells:
        raise GeneOptionError(
            f"--forecast-order {forecast_order}: only forecast cells use it; add --cells compute,reuse,forecast "
            "or leave the option out"
        )
    if not isinstance(guidance_reuse, bool):
        raise GeneOptionError(f"--guidance-reuse: {shown(guidance_reuse)} is not on or off")


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
    forecast: bool = False  # a forecast plane: each non-computed cell forecasts or reuses
    forecast_order: int = 1
    guidance_reuse: bool = False  # one bit per step: skip classifier-free guidance's unconditional branch

    @classmethod
    def for_space(
        cls,
        space,
        cells: tuple[str, ...] = ("compute", "reuse"),
        guidance_reuse: bool = False,
        forecast_order: int = 1,
    ) -> GenomeSpec:
        """The space's genome; `cells` containing "forecast" adds the forecast plane (`ecad search
        --cells compute,reuse,forecast`), `guidance_reuse` the per-step bits (`--guidance-reuse`;
        refused where the family does not run CFG as one doubled batch)."""
        from ecad.cache.guidance import doubles_guidance_batch

        unknown = sorted(set(cells) - set(CELL_KINDS))
        if unknown or not set(DEFAULT_CELLS) <= set(cells):
            raise GeneOptionError(
                f"--cells: {','.join(cells)} is not a choice of cells; use compute,reuse or compute,reuse,forecast"
            )
        if guidance_reuse and not doubles_guidance_batch(space.adapter):
            raise GeneOptionError(
                f"--guidance-reuse: {space.adapter.display_name} does not run classifier-free guidance as one "
                "doubled batch, so there is no unconditional branch to skip; leave the option out"
            )
        padding = tuple((int(b), int(c)) for b, c in zip(*np.nonzero(~space.layout.cell_mask())))
        return cls(
            space.steps,
            space.layout.num_blocks,
            space.layout.num_components,
            bool(space.timesteps_enabled),
            int(space.min_steps if space.timesteps_enabled else 1),
            padding,
            forecast="forecast" in cells,
            forecast_order=forecast_order,
            guidance_reuse=guidance_reuse,
        )

    @classmethod
    def for_config(cls, space, config: dict) -> GenomeSpec:
        """The genome a run's config (config.json's `config`, or SearchConfig.to_json()) searched:
        a config from before the optional genes has none of them."""
        return cls.for_space(
            space,
            cells=tuple(config.get("cells") or DEFAULT_CELLS),
            guidance_reuse=bool(config.get("guidance_reuse", False)),
            forecast_order=int(config.get("forecast_order", 1)),
        )

    @property
    def grid_size(self) -> int:
        return self.steps * self.blocks * self.components

    @property
    def _forecast_at(self) -> int:
        return self.grid_size + (self.steps if self.timesteps else 0)

    @property
    def _guidance_at(self) -> int:
        return self._forecast_at + (self.grid_size if self.forecast else 0)

    @property
    def size(self) -> int:
        return self._guidance_at + (self.steps if self.guidance_reuse else 0)

    def grid(self, bits: np.ndarray) -> np.ndarray:
        return bits[: self.grid_size].reshape(self.steps, self.blocks, self.components)

    def selected(self, bits: np.ndarray) -> np.ndarray:
        return bits[self.grid_size : self._forecast_at] if self.timesteps else np.ones(self.steps, dtype=bool)

    def forecast_plane(self, bits: np.ndarray) -> np.ndarray | None:
        """[steps, blocks, components] view of the forecast bits (None without the plane)."""
        if not self.forecast:
            return None
        return bits[self._forecast_at : self._guidance_at].reshape(self.steps, self.blocks, self.components)

    def guidance_bits(self, bits: np.ndarray) -> np.ndarray | None:
        """[steps] view of the guidance-reuse bits (None without them)."""
        return bits[self._guidance_at : self.size] if self.guidance_reuse else None

    def compose(
        self,
        grid: np.ndarray,
        selected: np.ndarray | None = None,
        forecast: np.ndarray | None = None,
        guidance: np.ndarray | None = None,
    ) -> np.ndarray:
        """Bits from planes (unrepaired); a plane not given is all steps run / no forecast / no
        guidance reuse, and a plane the spec does not have is left out."""
        parts = [np.asarray(grid, dtype=bool).reshape(-1)]
        if self.timesteps:
            parts.append(np.ones(self.steps, dtype=bool) if selected is None else np.asarray(selected, dtype=bool))
        if self.forecast:
            parts.append(np.zeros(self.grid_size, dtype=bool) if forecast is None else np.asarray(forecast).reshape(-1))
        if self.guidance_reuse:
            parts.append(np.zeros(self.steps, dtype=bool) if guidance is None else np.asarray(guidance, dtype=bool))
        return np.concatenate(parts)

    # ------------------------------------------------------------- conversion
    def to_schedule(self, bits: np.ndarray, space, **kw) -> Schedule:
        sel = self.selected(bits)
        timesteps = [int(i) for i in np.flatnonzero(sel)] if self.timesteps and not sel.all() else None
        if self.forecast:
            kw.update(forecast=self.forecast_plane(bits).copy(), forecast_order=self.forecast_order)
        if self.guidance_reuse:
            kw["guidance_reuse"] = self.guidance_bits(bits).copy()
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
        if self.forecast:  # a schedule's forecast cells become reuse in a genome without the plane
            plane = schedule.forecast if schedule.forecast is not None else np.zeros_like(schedule.grid)
            bits = np.concatenate([bits, plane.reshape(-1)])
        if self.guidance_reuse:
            g = schedule.guidance_reuse if schedule.guidance_reuse is not None else np.zeros(self.steps, dtype=bool)
            bits = np.concatenate([bits, g])
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
        sel = self.selected(bits)
        executed = np.flatnonzero(sel)
        plane = self.forecast_plane(bits)
        if plane is not None:  # canonical: forecast bits only on non-computed cells with two computed before
            plane &= ~grid
            rows = grid[executed].copy()
            rows[0] = True
            plane[executed] = repair_forecast(rows, plane[executed])
            plane[~sel] = False
        guidance = self.guidance_bits(bits)
        if guidance is not None:  # the first executed step runs both branches; skipped steps hold 0
            guidance[~sel] = False
            guidance[executed[0]] = False
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
    """Swap the `take` steps between two genomes: every plane of a step moves together."""
    c1, c2 = a.copy(), b.copy()
    for view in (spec.grid, spec.selected if spec.timesteps else None, spec.forecast_plane, spec.guidance_bits):
        if view is None or view(c1) is None:
            continue
        v1, v2 = view(c1), view(c2)
        v1[take], v2[take] = view(b)[take], view(a)[take]
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
    kinds += (["forecast"] if spec.forecast else []) + (["guidance"] if spec.guidance_reuse else [])
    kind = kinds[rng.integers(len(kinds))]
    lo = int(rng.integers(1, spec.steps)) if spec.steps > 1 else 0
    hi = int(rng.integers(lo, spec.steps)) + 1
    if kind == "step":
        grid[lo] = value
    elif kind == "block":
        grid[lo:hi, rng.integers(spec.blocks)] = value
    elif kind == "component":
        grid[lo:hi, :, rng.integers(spec.components)] = value
    elif kind == "timestep":
        out[spec.grid_size + lo] = ~out[spec.grid_size + lo]
    elif kind == "forecast":  # one component kind's non-computed cells over a step range: forecast or reuse
        spec.forecast_plane(out)[lo:hi, :, rng.integers(spec.components)] = value
    else:  # guidance reuse over a step range on or off
        spec.guidance_bits(out)[lo:hi] = value
    return out
