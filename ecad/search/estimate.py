"""`ecad search --dry-run`: what a search would cost before a GPU is booked.

The counts are bounds a user can plan with, not guesses: the engine evaluates the initial
population and then at most one population of new offspring per generation (it never evaluates
a genome twice), each candidate on every prompt x seed, so the candidates, images and
transformer MACs printed are upper bounds (MACs at no caching: searched candidates cost less).
The time is a roofline figure from the MACs and a stated GPU's dense throughput, labelled as
such, because no machine measured it; a measured ms/image for the space replaces it when given.
"""

from __future__ import annotations

from dataclasses import dataclass

from ecad.search.run import ExecConfig, SearchConfig, SearchError, validate
from ecad.units import si_units

# The GPU the roofline assumes: ECAD's and most users' class of machine. Dense fp16/bf16
# tensor-core peak of an H100 SXM at a typical 70% efficiency, in multiply-accumulates per second.
ROOFLINE_GPU = "H100-class GPU at 70% of 989 TFLOP/s dense fp16"
ROOFLINE_MACS_PER_S = 0.70 * 989e12 / 2


@dataclass(frozen=True)
class SearchEstimate:
    """A search's plan and its cost bounds (`str()` is what `--dry-run` prints)."""

    space: str
    model: str
    metric: str
    cost: str
    genome_bits: int
    population: int
    generations: int
    prompts: int
    seeds: int
    workers: int | str
    candidates: int  # at most: the initial population plus one population per generation
    images: int  # at most: candidates x prompts x seeds (reference images not included)
    reference_images: int  # the uncached images of the same prompts and seeds, once per worker and cached
    macs_per_image: float  # transformer MACs of one image at no caching (CFG rows included)
    ms_per_image: float | None  # measured for this space, when given
    ms_per_image_source: str

    @property
    def transformer_macs(self) -> float:
        """An upper bound: every candidate's every image at no caching."""
        return self.images * self.macs_per_image

    @property
    def gpu_hours(self) -> float:
        ms = self.ms_per_image if self.ms_per_image is not None else self.macs_per_image / ROOFLINE_MACS_PER_S * 1e3
        return (self.images + self.reference_images) * ms / 3.6e6

    def __str__(self) -> str:
        workers = self.workers if isinstance(self.workers, int) and self.workers > 0 else None
        wall = f", about {_duration(self.gpu_hours / workers)} on {workers} workers" if workers else ""
        return "\n".join(
            [
                f"plan: search {self.space} ({self.model}): {self.metric} vs {self.cost}, "
                f"{self.genome_bits}-bit genomes, population {self.population}, {self.generations} generations",
                f"  candidates   at most {self.candidates:,} "
                f"(initial population + {self.generations} x {self.population} offspring; none evaluated twice)",
                f"  images       at most {self.images:,} ({self.prompts} prompts x {self.seeds} seeds per candidate)"
                f" + {self.reference_images:,} uncached reference images per worker (cached across runs)",
                f"  transformer  at most {si_units(self.transformer_macs)}MACs "
                f"({si_units(self.macs_per_image)}MACs per image at no caching)",
                f"  GPU time     at most {_duration(self.gpu_hours)} of one GPU{wall}, {self.ms_per_image_source}",
                "nothing was run (--dry-run); drop --dry-run to start the search",
            ]
        )


def _duration(hours: float) -> str:
    """Hours as a planner reads them: "41.7 GPU-hours" down to "3 s" for a tiny demo."""
    if hours >= 1:
        return f"{hours:.3g} h"
    if hours * 60 >= 1:
        return f"{hours * 60:.3g} min"
    return f"{max(hours * 3600, 0.001):.3g} s"


def estimate_search(config: SearchConfig, exec_config: ExecConfig) -> SearchEstimate:
    """The plan of `config` with its bounds; reads the space and the prompt file, starts nothing."""
    from ecad.cache.macs import dims_for_space, schedule_macs, transformer_batch
    from ecad.prompts import read_prompts
    from ecad.search.genome import GenomeSpec
    from ecad.spaces import load_space

    validate(config)
    try:
        space = load_space(config.space)
    except ValueError as exc:
        raise SearchError(str(exc)) from None
    prompts = len(read_prompts(config.prompts, config.num_prompts))
    per_candidate = prompts * config.seeds
    candidates = config.population * (config.generations + 1)
    macs = schedule_macs(
        space.full_schedule(),
        dims_for_space(space),
        batch=transformer_batch(space.family, 1, space.guidance_scale),
        text_kv_cache=config.text_kv_cache,
    ).total
    if space.measured_ms_per_image is not None:
        source = f"from the space's measured {space.measured_ms_per_image:g} ms/image ({space.measured_on})"
    else:
        source = f"roofline estimate (transformer MACs on an {ROOFLINE_GPU}; not measured)"
    return SearchEstimate(
        space=space.name,
        model=space.model,
        metric=config.metric,
        cost=config.cost,
        genome_bits=GenomeSpec.for_config(space, config.to_json()).size,
        population=config.population,
        generations=config.generations,
        prompts=prompts,
        seeds=config.seeds,
        workers=exec_config.workers,
        candidates=candidates,
        images=candidates * per_candidate,
        reference_images=per_candidate,
        macs_per_image=macs,
        ms_per_image=space.measured_ms_per_image,
        ms_per_image_source=source,
    )
