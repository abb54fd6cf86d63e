"""`ecad search`: wire space, seeds, engine, worker pool and run store together.

Config fields that change results are hashed and must match on resume; execution details
(number of workers, Ray address) may differ, because results do not depend on them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecad.cache.macs import dims_for_space, schedule_macs
from ecad.distributed.pool import make_pool, worker_environment
from ecad.distributed.worker import WorkerConfig
from ecad.errors import EcadError
from ecad.files import read_json
from ecad.frontier import Point, frontier_entries, pareto_front
from ecad.prompts import read_prompts
from ecad.runs import (
    CONFIG_RECOVERY,
    DAMAGED_EVALUATIONS_FILE,
    EVALUATIONS_FILE,
    LOCK_FILE,
    RunData,
    RunError,
    RunStore,
    config_hash,
    damage_of,
    generation_file,
    read_config_record,
    run_data,
    sha256_text,
    with_legacy_defaults,
)
from ecad.search.genome import (
    DEFAULT_CELLS,
    GeneOptionError,
    GenomeSpec,
    bits_to_hex,
    check_gene_options,
    genome_hash,
    hex_to_bits,
)
from ecad.search.interrupt import InterruptFlag, catch_interrupts
from ecad.search.nsga2 import NSGA2, EngineConfig, EngineDataError, EngineState, Evaluation
from ecad.search.progress import Progress, workers_text
from ecad.search.racing import (
    DEFAULT_CONFIDENCE,
    WAVES,
    RaceState,
    RacingError,
    auto_chunk_size,
    chunk_bounds,
    dominated,
    metric_can_race,
    negligible,
    race_wave,
    raced_in,
)
from ecad.search.screening import fit_quality_model, screened_waves
from ecad.search.seeds import initial_population, load_seed_schedules
from ecad.spaces import load_space

COSTS = ("macs", "latency")


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C during a search; the message says how far it got and how to resume."""


class SearchError(EcadError, ValueError):
    """Bad search input; the message names the problem and the fix."""


@dataclass
class SearchConfig:
    """Everything that decides a run's results (hashed; must match on resume)."""

    # the defaults are the offline demo: the trained shapes PixArt (shipped; its pictures are
    # recognisable) on held-out captions of its grammar, judged by fidelity to its own uncached
    # images: paired per image, so 8 images rank candidates (shapes-score on 8 images is mostly
    # noise: a selected schedule read 0.79 against 0.41 uncached)
    space: str = "shapes-pixart"
    prompts: str = "calibration_prompts/shapes_100.txt"
    num_prompts: int | None = 4
    seeds: int = 2
    metric: str = "fidelity"
    metric_options: dict[str, Any] = field(default_factory=dict)
    cost: str = "macs"
    population: int = 12
    generations: int = 4
    seed: int = 0
    batch_size: int = 8
    max_macs_fraction: float | None = None
    seed_from: list[str] = field(default_factory=list)
    # racing (ecad.search.racing): evaluate candidates chunk by chunk of a stratified order and stop
    # those whose optimistic bound is dominated by a fully evaluated point; off = every candidate
    # on the whole protocol, exactly as before racing existed
    racing: bool = True
    racing_chunk: int | None = None  # images per chunk; None: about a tenth of the protocol, whole batches
    racing_confidence: float = DEFAULT_CONFIDENCE  # one-sided, for a candidate's whole race
    # also stop a race once even its optimistic point would add at most this share of the frontier's
    # hypervolume (ecad.search.racing.negligible); 0: only dominated races stop
    racing_tolerance: float = 0.0
    # screening (ecad.search.screening): race each generation's most promising candidates first, by a
    # ridge model of quality fitted to the earlier generations; off: waves by genome hash
    screening: bool = False
    # the genes (ecad.search.genome): which cells a schedule may hold (forecast: extrapolate from the
    # component's last computed outputs, of `forecast_order`), and per-step guidance-branch reuse
    cells: list[str] = field(default_factory=lambda: list(DEFAULT_CELLS))
    forecast_order: int = 1
    guidance_reuse: bool = False
    # MACs with cross-attention's text K/V computed once per call (lossless; what the workers run)
    text_kv_cache: bool = True

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class ExecConfig:
    """How to run, not what: may change between a run and its resume."""

    out: str | None = None
    workers: int | str = 2  # or "auto": every GPU (or CPU slot) of the cluster
    ray_address: str | None = None
    device: str | None = None
    force: bool = False
    quiet: bool = False
    worker_env: dict[str, str] = field(default_factory=dict)  # added to the variables forwarded to workers
    candidate_timeout_s: float | None = None  # None: derived from the observed candidate times


def validate(config: SearchConfig) -> None:
    if config.population < 4:
        raise SearchError(f"--population {config.population} is too small for NSGA-II; use at least 4 (ECAD: 72)")
    if config.generations < 0:
        raise SearchError("--generations must be >= 0")
    if config.seeds < 1:
        raise SearchError("--seeds must be >= 1 (images per prompt)")
    if config.cost not in COSTS:
        raise SearchError(f"--cost {config.cost!r} unknown; use one of {', '.join(COSTS)}")
    if config.max_macs_fraction is not None and not 0 < config.max_macs_fraction <= 1:
        raise SearchError(
            "--max-macs-fraction must be in (0, 1], e.g. 0.4 for at most 40% of the stock pipeline's MACs"
        )
    if not isinstance(config.racing, bool):
        raise SearchError(f"racing must be true or false (--racing on|off), got {config.racing!r}")
    if not isinstance(config.screening, bool):
        raise SearchError(f"screening must be true or false (--screening on|off), got {config.screening!r}")
    if config.screening and not config.racing:
        raise SearchError("--screening on orders the races of a generation, so it needs --racing on")
    if config.racing_chunk is not None and config.racing_chunk < 1:
        raise SearchError(f"--racing-chunk {config.racing_chunk} must be >= 1 image (or left out: auto)")
    if not 0.5 < config.racing_confidence < 1:
        raise SearchError(f"--racing-confidence {config.racing_confidence} must be in (0.5, 1), e.g. 0.95 (one-sided)")
    tolerance = config.racing_tolerance
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or not 0 <= tolerance <= 0.5:
        raise SearchError(
            f"--racing-tolerance {tolerance!r} must be a share of the hypervolume in [0, 0.5], e.g. 0.001; "
            "0 turns it off"
        )
    try:
        check_gene_options(config.cells, config.forecast_order, config.guidance_reuse)
    except GeneOptionError as exc:
        raise SearchError(str(exc)) from None
    if not isinstance(config.text_kv_cache, bool):
        raise SearchError(f"text_kv_cache must be true or false (--text-kv-cache on|off), got {config.text_kv_cache!r}")
    from ecad.metrics import list_metrics

    if config.metric not in list_metrics():
        raise SearchError(f"--metric {config.metric!r} unknown; available: {', '.join(list_metrics())}")


class SearchRun:
    """One search run: create or resume, run generations, write the frontier."""

    def __init__(self, config: SearchConfig, exec_config: ExecConfig, resume: bool = False):
        validate(config)
        self.config, self.exec = config, exec_config
        try:
            self.space = load_space(config.space)
        except ValueError as exc:
            raise SearchError(str(exc)) from None
        self.prompts = read_prompts(config.prompts, config.num_prompts)
        try:
            self.spec = GenomeSpec.for_config(self.space, config.to_json())
        except GeneOptionError as exc:
            raise SearchError(str(exc)) from None
        self.dims = dims_for_space(self.space)
        out = exec_config.out or f"results/search-{time.strftime('%Y%m%d-%H%M%S')}"
        self.store = RunStore(out)
        self.resume = resume
        self.inputs = self._inputs()
        if resume:
            self.store.check_resumable(config.to_json(), self.inputs, genome_size=self.spec.size)
        else:  # written once the workers are up, so a failed start leaves no half-made run behind
            self.store.check_new(force=exec_config.force)
        # seeds only shape generation 0: a resume never reads them (the files may have moved since)
        self.extra_seeds = load_seed_schedules(config.seed_from, self.space) if config.seed_from and not resume else []
        self.progress = Progress(config.generations, exec_config.quiet)
        from ecad.metrics import higher_is_better

        # quality's direction is the metric's (registry), cost is always minimised
        self.weights: tuple[float, float] = (1.0 if higher_is_better(config.metric) is not False else -1.0, -1.0)
        self.pool = None
        self.engine: NSGA2 | None = None
        # what the run directory holds, kept in memory as it is written: the frontier, the plots
        # and the summary are built from these, never read back from disk
        self.records: list[dict[str, Any]] = []  # evaluations.jsonl
        self.interrupt = InterruptFlag()  # replaced by the one that records Ctrl-C while run() runs
        self.generation_records: list[dict[str, Any]] = []  # gen_NNN.json
        self.frontier_files: dict[str, str] = {}
        self.frontier_rows: list[dict[str, Any]] = []
        # racing: on when asked and the metric scores images one by one (FID cannot race)
        self.total_images = len(self.prompts) * config.seeds
        self.racing = config.racing and metric_can_race(config.metric)
        self.chunk_size = (
            (config.racing_chunk or auto_chunk_size(self.total_images, config.batch_size)) if self.racing else None
        )
        self.num_chunks = len(chunk_bounds(self.total_images, self.chunk_size)) if self.chunk_size else 1
        self.progress.stopped = 0 if self.racing else None
        self.images = 0  # images generated for candidates in the generation being run
        self.images_before = 0  # ... in all generations before it
        self.screening_fits: dict[int, dict[str, Any]] = {}  # generation -> the screening model's fit

    def _inputs(self) -> dict[str, str]:
        """Fingerprints of what the config names but does not contain: the prompts actually
        read and the space file's settings. A resume compares them, since editing either file
        changes every result while the config stays the same. The space counts as parsed TOML
        (as loaded, not re-read), so editing a comment does not block a resume."""
        space = self.space.settings if self.space.source is not None else repr(self.space)
        return {
            "prompts_sha256": sha256_text(json.dumps(list(self.prompts))),
            "space_sha256": sha256_text(json.dumps(space, sort_keys=True)),
        }

    # ---------------------------------------------------------------- cost
    def macs_fraction(self, schedule) -> float:
        report = schedule_macs(schedule, self.dims, batch=1, text_kv_cache=self.config.text_kv_cache)
        return report.total / report.full  # of the stock pipeline's MACs

    # ------------------------------------------------------------ evaluate
    def _over_macs_limit(self, frac: float) -> Evaluation | None:
        """The infeasible result of a candidate above --max-macs-fraction (it is never rendered), or None."""
        limit = self.config.max_macs_fraction
        if limit is None or frac <= limit + 1e-12:
            return None
        return Evaluation(
            (float("nan"), frac),
            False,
            f"constraint: MACs {frac:.1%} of the stock pipeline's > {limit:.0%}",
            {"macs_fraction": frac},
        )

    def _evaluate(self, genomes: list[np.ndarray], generation: int) -> list[Evaluation]:
        self.progress.generation_started(generation, len(genomes))
        if self.racing:
            return self._race(genomes, generation)
        results: dict[str, Evaluation] = {}
        tasks = []
        fractions = {}
        hexes = {genome_hash(g): bits_to_hex(g) for g in genomes}
        for g in genomes:
            key = genome_hash(g)
            schedule = self.spec.to_schedule(g, self.space, name=key)
            frac = self.macs_fraction(schedule)
            fractions[key] = frac
            over = self._over_macs_limit(frac)
            if over is not None:
                results[key] = over
                self._log(key, over, generation, hexes[key])
                continue
            tasks.append((key, schedule.to_json()))

        def on_result(key: str, r: dict[str, Any]) -> None:
            frac = fractions[key]
            details = {"macs_fraction": frac, **{k: v for k, v in r.items() if k not in ("feasible", "reason")}}
            if r.get("feasible"):
                cost = r["relative_latency"] if self.config.cost == "latency" else frac
                ev = Evaluation((float(r["quality"]), float(cost)), True, None, details)
            else:
                ev = Evaluation((float("nan"), frac), False, r.get("reason", "unknown failure"), details)
            results[key] = ev
            self._log(key, ev, generation, hexes[key])
            self.progress.evals += 1
            self.images += self.total_images
            self.progress.images = self.images_before + self.images

        self.pool.evaluate(tasks, on_result, self._on_progress)
        return [results[genome_hash(g)] for g in genomes]

    def _on_progress(self) -> None:
        self.interrupt.check()  # a Ctrl-C that something in between swallowed still stops the run here
        self.progress.workers = workers_text(self.pool)
        self.progress.update()

    # -------------------------------------------------------------- racing
    def _archive(self, generation: int, wave: int, extra: dict[str, Evaluation]) -> list[tuple[float, float]]:
        """The fully evaluated feasible points a race of `generation` is judged against: those
        completed in earlier generations, and those the earlier waves of this generation completed.

        It is fixed for a wave, whatever order chunks finish in, so the stop decisions, and with
        them the run, are the same for any number of workers; and it is rebuilt from the evaluation
        log alone (each complete record names the generation it completed in), so a run resumed
        mid-generation decides as the uninterrupted one did."""
        points = []
        for key, ev in {**self.engine.evals, **extra}.items():
            if not (ev.feasible and ev.complete) or not all(np.isfinite(ev.values)):
                continue
            done, its_wave = raced_in(key, ev.details)  # its wave as recorded: screening may have chosen it
            if done < generation or (done == generation and its_wave < wave):
                points.append((float(ev.values[0]), float(ev.values[1])))
        return points

    def _race_cost(self, state: RaceState, fraction: float) -> float:
        if self.config.cost == "latency":  # measured: known after the first chunk, refined by each
            return state.relative_latency()
        return fraction

    def _waves(self, bits: dict[str, np.ndarray], fractions: dict[str, float], generation: int) -> dict[str, int]:
        """Each racing candidate's wave in this generation: by screening (ecad.search.screening)
        when it is on and enough earlier evaluations are complete, else by genome hash. The model
        sees only evaluations completed in earlier generations, so a resume fits the same one.
        Promise is judged at MACs, known before any image, whatever the run's cost."""
        if not self.config.screening:
            return {k: race_wave(k) for k in bits}
        # the complete points of earlier generations, by key (the fit does not depend on log order)
        earlier = sorted(
            (key, ev)
            for key, ev in self.engine.evals.items()
            if ev.feasible and ev.complete and all(np.isfinite(ev.values)) and raced_in(key, ev.details)[0] < generation
        )
        model = None
        if earlier:
            genomes = {r["key"]: r["genome"] for r in self.records}
            x = np.stack([hex_to_bits(genomes[k], self.spec.size) for k, _ in earlier])
            model = fit_quality_model(x, np.array([ev.values[0] for _, ev in earlier]))
        if model is not None:
            self.screening_fits[generation] = model.to_json()
        archive = [(ev.values[0], ev.details.get("macs_fraction", ev.values[1])) for _, ev in earlier]
        return screened_waves(bits, fractions, model, archive, self.weights[0] > 0)

    def _race_evaluation(
        self, state: RaceState, fraction: float, last: dict[str, Any], generation: int, wave: int
    ) -> Evaluation:
        """What the engine and the log get after a chunk: a complete evaluation as the whole-protocol
        path makes it (its quality the mean over every image), or a partial one (an estimate)."""
        higher = self.weights[0] > 0
        racing = {
            "complete": state.complete,
            "estimate": state.estimate(),
            "bound": state.bound(self.config.racing_confidence, higher),
            "generation": generation,
            "wave": wave,
            **state.to_json(),
        }
        details = {
            "macs_fraction": fraction,
            "higher_is_better": last.get("higher_is_better", higher),
            "extras": state.extras_means(),
            "ms_per_image": state.ms_per_image(),
            "batch_size": last.get("batch_size"),
            "worker": last.get("worker"),
            "timings": last.get("timings"),
            "racing": racing,
        }
        if self.config.cost == "latency":
            details["relative_latency"] = state.relative_latency()
            details["reference_ms_per_image"] = state.reference_ms
        return Evaluation((state.estimate(), self._race_cost(state, fraction)), True, None, details)

    def _race(self, genomes: list[np.ndarray], generation: int) -> list[Evaluation]:
        """Race the genomes (ecad.search.racing): each runs chunk after chunk of the racing order,
        and after each chunk it stops when its optimistic quality bound, at its cost, is dominated
        by the archive (`_archive`); the others run every chunk and are complete. A candidate that
        comes back incomplete (stopped in an earlier generation, or interrupted with the run)
        continues from its next chunk unless it is still dominated. A generation races in waves (by
        key, `race_wave`), each judged against the complete points of the waves before it too:
        generation 0 would have no archive to stop anything against otherwise."""
        higher = self.weights[0] > 0
        confidence = self.config.racing_confidence
        results: dict[str, Evaluation] = {}
        states: dict[str, RaceState] = {}
        fractions: dict[str, float] = {}
        schedules: dict[str, dict[str, Any]] = {}
        genome_of: dict[str, np.ndarray] = {}
        hexes = {genome_hash(g): bits_to_hex(g) for g in genomes}
        for g in genomes:
            key = genome_hash(g)
            if key in fractions or key in results:
                continue
            schedule = self.spec.to_schedule(g, self.space, name=key)
            frac = self.macs_fraction(schedule)
            over = self._over_macs_limit(frac)
            if over is not None:
                results[key] = over
                self._log(key, over, generation, hexes[key])
                continue
            fractions[key], schedules[key], genome_of[key] = frac, schedule.to_json(), g
            known = self.engine.evals.get(key)
            racing = known.details.get("racing") if known is not None else None
            if isinstance(racing, dict) and racing.get("total_chunks") == self.num_chunks:
                states[key] = RaceState.from_json(racing)
                results[key] = known  # until a chunk changes it
            else:
                states[key] = RaceState(self.num_chunks, self.total_images)

        def task(key: str) -> tuple[str, dict[str, Any], int]:
            return (f"{key}:{states[key].chunks}", schedules[key], states[key].chunks)

        wave_of = self._waves({key: genome_of[key] for key in states}, fractions, generation)
        # the tolerance measures hypervolume against the run's reference point, fixed by generation 0
        # (whose races therefore stop on dominance alone, in a resumed run as in an uninterrupted one)
        tolerance = self.config.racing_tolerance
        ref = self.engine.state.hv_ref if generation > 0 and self.engine.state is not None else None
        for wave in range(WAVES):
            keys = [k for k in states if wave_of[k] == wave]
            if not keys:
                continue
            archive = self._archive(generation, wave, results)

            def cannot_pay(state: RaceState, cost: float, archive=archive) -> bool:
                """The stop rule: the optimistic bound is dominated, or adds a negligible hypervolume."""
                bound = state.bound(confidence, higher)
                return dominated(bound, cost, archive, higher) or negligible(
                    bound, cost, archive, higher, ref, tolerance
                )

            tasks = []
            for key in keys:
                state = states[key]
                cost = self._race_cost(state, fractions[key])
                if state.chunks and cannot_pay(state, cost):
                    continue  # stopped before and still cannot pay: nothing to continue
                state.stopped = False
                tasks.append(task(key))

            def on_result(task_key: str, r: dict[str, Any], cannot_pay=cannot_pay) -> list[tuple]:
                key = task_key.rsplit(":", 1)[0]
                state, frac = states[key], fractions[key]
                self.images += int(r.get("images", 0))
                self.progress.images = self.images_before + self.images
                if not r.get("feasible"):
                    details = {"macs_fraction": frac, **{k: v for k, v in r.items() if k not in ("feasible", "reason")}}
                    ev = Evaluation((float("nan"), frac), False, r.get("reason", "unknown failure"), details)
                    results[key] = ev
                    self._log(key, ev, generation, hexes[key])
                    self.progress.evals += 1
                    return []
                try:
                    state.add(r)
                except RacingError as exc:
                    raise SearchError(f"--metric {self.config.metric}: {exc}") from None
                if not state.complete:
                    state.stopped = cannot_pay(state, self._race_cost(state, frac))
                ev = self._race_evaluation(state, frac, r, generation, wave_of[key])
                results[key] = ev
                self._log(key, ev, generation, hexes[key])
                if state.complete or state.stopped:
                    self.progress.evals += 1
                    self.progress.stopped += state.stopped
                    return []
                return [task(key)]

            self.pool.evaluate(tasks, on_result, self._on_progress)
        return [results[genome_hash(g)] for g in genomes]

    def _racing_lines(self) -> list[str]:
        """The summary's account of what racing did: candidates stopped, images generated."""
        total = self.images_before + self.images
        if not self.racing:
            why = "off" if not self.config.racing else f"off ({self.config.metric} scores no single images)"
            return [f"racing     {why}; {total} images generated"]
        evals = [e for e in self.engine.evals.values() if e.feasible]
        stopped = sum(not e.complete for e in evals)
        whole = len(evals) * self.total_images
        share = f" ({total / whole:.0%} of evaluating each candidate whole)" if whole else ""
        lines = [
            f"racing     chunks of {self.chunk_size} images, {self.num_chunks} per candidate; {stopped} of "
            f"{len(evals)} candidates stopped early; {total} images generated{share}"
        ]
        fits = self.screening_fits
        if self.config.screening:
            line = f"screening  a ridge model of {self.config.metric} on the genome ordered {len(fits)} generation(s)"
            if fits:
                last = fits[max(fits)]
                line += (
                    f"; last fit on {last['samples']} evaluations, leave-one-out error {last['loo_rmse']:.4g} "
                    f"(qualities' spread {last['spread']:.4g})"
                )
            lines.append(line)
        return lines

    def _racing_summary(self, state: EngineState) -> dict[str, Any] | None:
        """How the races of the population stand: complete, stopped (with the chunks they ran)."""
        if not self.racing:
            return None
        members = [self.engine.evals[genome_hash(b)] for b in state.population]
        partial = [m for m in members if m.feasible and not m.complete]
        return {
            "chunk_size": self.chunk_size,
            "chunks": self.num_chunks,
            "population_complete": sum(m.feasible and m.complete for m in members),
            "population_stopped": len(partial),
            # the screening model that ordered this generation's races (None: waves by genome hash)
            "screening": self.screening_fits.get(state.generation),
        }

    def _log(self, key: str, evaluation: Evaluation, generation: int, genome: str) -> None:
        record = {"key": key, "generation": generation, "genome": genome, **evaluation.to_json()}
        self.records.append(self.store.append_evaluation(record))

    # ------------------------------------------------------------------ run
    def run(self) -> Path:
        cfg = self.config
        worker_config = WorkerConfig(
            space=self.space,  # parsed here, sent whole: the workers read no space file
            prompts=self.prompts,
            seeds=tuple(range(cfg.seeds)),
            metric=cfg.metric,
            metric_options=cfg.metric_options,
            cost=cfg.cost,
            batch_size=cfg.batch_size,
            device=self.exec.device,
            chunk_size=self.chunk_size,
            text_kv_cache=cfg.text_kv_cache,
        )
        made_dir = not self.store.root.exists()
        # the lock first: a second search on this run is refused before it starts workers or reads a file
        with self.store.lock():
            try:
                state = self._open() if self.resume else None  # reads and repairs the run: no worker yet
                self.pool = make_pool(
                    worker_config,
                    self.exec.workers,
                    self.exec.ray_address,
                    candidate_timeout_s=self.exec.candidate_timeout_s,
                    env=worker_environment(self.exec.worker_env),
                )
                try:
                    if not self.resume:
                        self.store.create(cfg.to_json(), force=self.exec.force, inputs=self.inputs)
                    with catch_interrupts() as self.interrupt:
                        self._run(state)
                except KeyboardInterrupt:
                    done = self.engine.state.generation if self.engine and self.engine.state else None
                    after = f"after generation {done}" if done is not None else "before generation 0 finished"
                    raise SearchInterrupted(
                        f"interrupted {after}; resume with ecad search --resume {self.store.root}"
                    ) from None
                finally:
                    self.progress.close()
                    self.pool.shutdown()
            except BaseException:
                if made_dir and not self.store.config_path.exists():  # a failed start leaves nothing behind
                    (self.store.root / LOCK_FILE).unlink(missing_ok=True)
                    with contextlib.suppress(OSError):
                        self.store.root.rmdir()
                raise
        return self.store.root

    # --------------------------------------------------------------- resume
    def _open(self) -> EngineState | None:
        """Read the run back for a resume, repairing what is damaged (each repair is one warning
        line on stderr): damaged lines of the evaluation log are moved to the sidecar file and
        their candidates evaluated again when needed; damaged gen_NNN.json records are skipped; a
        damaged or missing checkpoint is rebuilt from the newest generation record that holds the
        engine state. Returns the state to continue from, or None to start at generation 0."""
        log = self.store.load_evaluation_records(genome_size=self.spec.size)
        self.records = log.records
        if log.damaged:
            shown = "; ".join(f"line {d.number}: {d.problem}" for d in log.damaged[:3])
            more = f"; and {len(log.damaged) - 3} more" if len(log.damaged) > 3 else ""
            warn(
                f"{self.store.evaluations_path}: {len(log.damaged)} damaged line(s) moved to "
                f"{DAMAGED_EVALUATIONS_FILE} ({shown}{more}); their candidates are evaluated again when needed"
            )
        generations, damaged = self.store.scan_generations()
        if damaged:
            shown = "; ".join(f"{path.name}: {problem}" for path, problem in damaged[:3])
            more = f"; and {len(damaged) - 3} more" if len(damaged) > 3 else ""
            warn(f"damaged generation record(s) skipped ({shown}{more}); a generation run again rewrites its record")
        state = self._resume_state(generations)
        if self.store.extend(self.config.to_json()) and not self.exec.quiet:
            print(f"ecad search: extending {self.store.root} to {self.config.generations} generations", file=sys.stderr)
        if not self.exec.quiet:
            where = f"after generation {state.generation}" if state is not None else "at generation 0"
            print(
                f"ecad search: resuming {self.store.root} {where} ({len(self.records)} candidates already evaluated)",
                file=sys.stderr,
                flush=True,
            )
        if state is None:
            self.generation_records = []
            self._load_seeds_again()
        else:
            self.generation_records = [g for g in generations if g["generation"] <= state.generation]
            last = self.generation_records[-1] if self.generation_records else {}
            self.images_before = int(last.get("images_total") or 0)  # 0 for runs that did not count
            self.progress.images = self.images_before
        return state

    def _resume_state(self, generations: list[dict[str, Any]]) -> EngineState | None:
        """The checkpoint's state; when it is damaged (or missing while generation records exist),
        the state saved in the newest generation record that holds a usable one, written back as
        the checkpoint: it is exactly what the checkpoint held after that generation, so the run
        continues to the same result.

        When neither is usable, the search starts again from generation 0 rather than refusing:
        the first population and every later one follow from the config's seed alone, and every
        candidate evaluated so far is in the evaluation cache, so the replay evaluates nothing
        twice and reaches the same generations again, while the user keeps every result without
        hand editing. (Only seed schedules that can no longer be read stop it, see
        `_load_seeds_again`.)"""
        path = self.store.checkpoint_path
        problem = None
        try:
            data = self.store.read_checkpoint()
            if data is not None:
                return engine_state(data, path, self.spec.size, len(self.weights))
        except RunError as exc:
            problem = damage_of(exc).removeprefix(f"{path}: ")
        if problem is None and not generations:
            return None  # stopped before generation 0 finished: start it
        for record in reversed(generations):
            source = self.store.root / generation_file(record["generation"])
            try:
                state = engine_state(state_from_generation(record), source, self.spec.size, len(self.weights))
            except RunError:
                continue  # written by an ecad version that saved no engine state there, or damaged
            self.store.write_checkpoint(state.to_json())
            warn(
                f"{path} {'is damaged (' + problem + ')' if problem else 'is missing'}; rebuilt it from "
                f"{source.name}, the resume continues after generation {state.generation}"
            )
            return state
        warn(
            f"{path} {'is damaged (' + problem + ')' if problem else 'is missing'} and no generation record holds "
            f"the engine state to rebuild it, so the search starts again from generation 0, taking every result "
            f"already in {EVALUATIONS_FILE} from there (nothing is evaluated twice)"
        )
        return None

    def _load_seeds_again(self) -> None:
        """A resume that starts generation 0 (again) builds the first population as the run did,
        from the `seed_from` schedules too; if they cannot be read any more, a first population
        without them would start another run on top of this one's records, so it is refused."""
        if not self.config.seed_from:
            return
        try:
            self.extra_seeds = load_seed_schedules(self.config.seed_from, self.space)
        except (EcadError, OSError) as exc:
            raise RunError(
                f"cannot resume {self.store.root} from generation 0 (it has no usable checkpoint): its first "
                f"population was built from the seed schedules {self.config.seed_from}, which cannot be read now "
                f"({exc}); restore them, or start a new run with another --out"
            ) from None

    def _run(self, state: EngineState | None) -> None:
        cfg = self.config
        self.engine = NSGA2(
            self.spec, EngineConfig(population=cfg.population, seed=cfg.seed, weights=self.weights), self._evaluate
        )
        cached = {d["key"]: Evaluation.from_json(d) for d in self.records}
        if state is not None:
            self.engine.resume(state, cached)
        else:
            self.engine.evals = dict(cached)
            self.images = 0
            # the engine's own generator (seeded with cfg.seed): one random stream for the whole run
            genomes, labels = initial_population(
                self.space, self.spec, cfg.population, self.engine.rng, self.extra_seeds
            )
            t0 = time.perf_counter()
            state = self.engine.start(genomes, labels)
            self._record(state, time.perf_counter() - t0, [genome_hash(g) for g in genomes])
        while self.engine.state.generation < cfg.generations:
            self.interrupt.check()
            t0 = time.perf_counter()
            self.images = 0
            before = set(self.engine.evals)
            state = self.engine.step()
            self._record(state, time.perf_counter() - t0, sorted(set(self.engine.evals) - before))
        if self.progress.tty:
            self.progress.update(final=True)
        self.write_frontier()
        self._write_plots()  # once, after frontier/ exists: the last generation skipped them

    def _record(self, state: EngineState, seconds: float, new_keys: list[str]) -> None:
        evals = self.engine.evals
        members = []
        for bits, label in zip(state.population, state.labels):
            key = genome_hash(bits)
            ev = evals[key]
            members.append({"key": key, "genome": bits_to_hex(bits), "label": label, **ev.to_json()})
        front = self.frontier_keys()
        record = {
            "generation": state.generation,
            "population": members,
            "evaluated": new_keys,
            "hypervolume": state.hv_history[-1],
            "hv_ref": state.hv_ref,
            "seconds": round(seconds, 3),
            # images rendered for candidates (the search's cost; the workers' no-caching references,
            # made once per worker or read from their disk cache, are not counted)
            "images": self.images,
            "images_total": self.images_before + self.images,
            "racing": self._racing_summary(state),
            "frontier": front,
            "workers": [dataclasses.asdict(w) for w in self.pool.workers],
            # the rest of the engine state, so a damaged checkpoint can be rebuilt from this record
            "genome_size": self.spec.size,
            "rng_state": state.rng_state,
            "hv_history": state.hv_history,
        }
        self.generation_records.append(self.store.write_generation(state.generation, record))
        self.images_before += self.images
        self.images = 0
        self.store.write_checkpoint(state.to_json())
        self.progress.gen = state.generation
        self.progress.gen_times.append(seconds)
        self.progress.frontier = len(front)
        self.progress.hv = state.hv_history[-1]
        self.progress.workers = workers_text(self.pool)
        if state.generation < self.config.generations:  # the last generation's plots follow write_frontier
            self._write_plots()
        self.progress.update(final=not self.progress.tty)

    def run_data(self) -> RunData:
        """The run as the plots, the report and `ecad frontier` see it, from what this search holds."""
        config = self.config.to_json()
        return run_data(
            self.store.root, config, config_hash(config), self.generation_records, self.records, self.frontier_files
        )

    def _write_plots(self) -> None:
        """PNG plots after every generation, so a running search can be watched."""
        try:
            from ecad.report import write_run_plots

            write_run_plots(self.run_data())
        except Exception as exc:  # noqa: BLE001 - plots are a convenience: never stop a search for them
            print(f"ecad search: warning: plots not written ({exc})", file=sys.stderr)

    # ------------------------------------------------------------- frontier
    def frontier_keys(self) -> list[str]:
        """Keys of the current frontier, by the same rule as the final one (ecad.frontier)."""
        points = [
            Point(
                key=k,
                generation=0,
                genome="",
                quality=e.values[0],
                cost=e.values[1],
                feasible=e.feasible,
                reason=e.reason,
                label="",
                macs_fraction=None,
                details=e.details,  # a stopped race is not complete and cannot be on the frontier
            )
            for k, e in self.engine.evals.items()
        ]
        return [p.key for p in pareto_front(points, higher_is_better=self.weights[0] > 0)]

    def write_frontier(self) -> None:
        """Every non-dominated schedule of the run as its own JSON file, plus frontier.json
        (labels as `ecad frontier` and the report show them)."""
        run = self.run_data()
        entries = frontier_entries(run.frontier, run.config, self.space)
        self.frontier_files = self.store.write_frontier(
            entries, {"metric": self.config.metric, "cost": self.config.cost}
        )
        self.frontier_rows = [{**row, "schedule": self.frontier_files[p.key]} for p, _, row in entries]

    def summary(self) -> str:
        evals = self.engine.evals
        front = self.frontier_rows
        lines = [
            f"run        {self.store.root}",
            f"space      {self.space.name} ({self.space.model}), "
            f"{len(self.prompts)} prompts x {self.config.seeds} seeds",
            f"search     {self.engine.state.generation} generations, population {self.config.population}, "
            f"{len(evals)} candidates evaluated ({sum(not e.feasible for e in evals.values())} infeasible) "
            f"in {time.perf_counter() - self.progress.t0:.0f} s",
            f"objectives {self.config.metric} ({'max' if self.weights[0] > 0 else 'min'}) vs {self.config.cost} (min)",
            f"hypervolume {self.engine.state.hv_history[0]:.4f} -> {self.engine.state.hv_history[-1]:.4f}",
            *self._racing_lines(),
            f"frontier   {len(front)} schedules in {self.store.frontier_dir}",
            # the speedup here is 1 / MACs fraction whatever the run's cost: an estimate, and labelled so
            f"  {'rank':>4} {self.config.metric:>12} {'MACs':>7} {'est. speedup':>12}  schedule",
        ]
        for row in front[:: max(1, len(front) // 8)][:10]:
            lines.append(
                f"  {row['rank']:>4} {row['quality']:>12.5f} {row['macs_fraction']:>6.1%} "
                f"{1 / row['macs_fraction']:>11.2f}x  {row['schedule']}  {row['label']}"
            )
        return "\n".join(lines)


def warn(message: str) -> None:
    print(f"ecad search: warning: {message}", file=sys.stderr, flush=True)


def engine_state(
    data: Any, where: str | os.PathLike, genome_size: int | None = None, objectives: int | None = None
) -> EngineState:
    """EngineState.from_json, its complaint turned into RunError naming `where` (the file)."""
    try:
        return EngineState.from_json(data, genome_size=genome_size, objectives=objectives)
    except EngineDataError as exc:
        raise RunError(f"{where}: {exc}") from None


def read_state_file(path: str | os.PathLike, genome_size: int | None = None, objectives: int | None = 2) -> EngineState:
    """An engine state file (checkpoint.json) read and checked whole, or RunError naming it."""
    return engine_state(read_json(path, RunError, "run checkpoint"), path, genome_size, objectives)


def state_from_generation(record: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint a generation record stands for (what EngineState.to_json wrote after that
    generation): its population's genomes and labels, and the engine state saved beside them."""
    members = record.get("population")
    members = members if isinstance(members, list) else []
    state = {
        "generation": record.get("generation"),
        "population": [m.get("genome") if isinstance(m, dict) else None for m in members],
        "labels": [m.get("label") if isinstance(m, dict) else None for m in members],
    }
    return {**state, **{k: record[k] for k in ("genome_size", "rng_state", "hv_ref", "hv_history") if k in record}}


def _fits(value: Any, kind: Any) -> bool:
    """Whether a JSON value has a config field's annotated type (str, int, float, X | None,
    list[str], dict[str, Any])."""
    if kind is Any:
        return True
    origin = typing.get_origin(kind)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arm) for arm in typing.get_args(kind))
    if kind is type(None):
        return value is None
    if kind is bool:
        return isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is str:
        return isinstance(value, str)
    if origin is list:
        (arm,) = typing.get_args(kind) or (Any,)
        return isinstance(value, list) and all(_fits(v, arm) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, kind)


def check_stored_config(stored: dict[str, Any], path: Path) -> SearchConfig:
    """The config a run recorded, as a SearchConfig, or RunError naming the file and the field:
    every field of this ecad version there, none it does not know, each of its type and value."""
    kinds = typing.get_type_hints(SearchConfig)
    stored = with_legacy_defaults(stored)  # a run from before racing existed ran without it
    missing = [name for name in kinds if name not in stored]
    unknown = sorted(set(stored) - set(kinds))
    wrong = [name for name in kinds if name in stored and not _fits(stored[name], kinds[name])]
    if missing or unknown or wrong:
        problem = (
            f"lacks the field(s) {', '.join(missing)}"
            if missing
            else f"has field(s) this ecad does not know ({', '.join(unknown)[:120]})"
            if unknown
            else "; ".join(f"{n} is {json.dumps(stored[n])[:40]}, not {_type_name(kinds[n])}" for n in wrong)
        )
        raise RunError(f"{path}: its config {problem}; {CONFIG_RECOVERY}")
    config = SearchConfig(**stored)
    try:
        validate(config)
    except SearchError as exc:
        raise RunError(f"{path}: its config is not valid ({exc}); {CONFIG_RECOVERY}") from None
    return config


def _type_name(kind: Any) -> str:
    text = kind.__name__ if isinstance(kind, type) else str(kind)
    return text.replace("typing.", "").replace("NoneType", "None")


def resume_config(store_dir: str, overrides: dict[str, Any]) -> SearchConfig:
    """The run's own config (config.json checked whole: RunError naming the file and field before
    any work starts), with any explicitly given option that differs refused later."""
    store = RunStore(store_dir)
    check_stored_config(read_config_record(store.config_path)["config"], store.config_path)  # the field named
    stored = with_legacy_defaults(store.load_config())  # then its hash: a config changed since is refused
    merged = {**stored, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return SearchConfig(**merged)
    except TypeError as exc:
        raise RunError(f"{store_dir}: an option does not fit this ecad version ({exc})") from None
