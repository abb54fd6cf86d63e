"""One `ecad compare` run: every contender on the same pipeline, prompts and seeds, measured the
same way in the same process.

Two passes. The quality pass renders every prompt x seed once per contender with a
`ComputeCounter` open, so each row's MACs are what its transformer actually computed (a dynamic
cache that skipped nothing reads 100%), and scores the images against the no-caching images of
this very pass. The timing pass then times one batch per contender in interleaved rounds (A B C ...
A B C ...), the first `warmup` rounds untimed, so drift of the machine's clock or load falls on
every contender alike; no counter is open while timing. A contender's speedup is the no-caching
median over its median, so the no-caching row is 1.00x by construction; the spread is the range
of per-round ratios.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from ecad.cache.macs import dims_for_space, schedule_macs
from ecad.cache.realised import ComputeCounter
from ecad.compare.cachedit import cache_dit_contenders, import_cache_dit
from ecad.compare.contenders import NO_CACHING, Contender, ScheduleContender, schedule_contenders
from ecad.compare.diffusers_caches import diffusers_contenders
from ecad.generation import Renderer
from ecad.metrics.latency import CallTimer, device_name
from ecad.schedule import Schedule


@dataclass(frozen=True)
class CompareSettings:
    space: str
    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    metric: str = "fidelity"
    metric_options: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 4  # images per pipeline call, in both passes; the timed call is the first batch
    device: str | None = None
    baselines: bool = False  # heuristics, diffusers' caches and cache-dit beside the given schedules
    repeats: int = 3  # timed rounds
    warmup: int = 1  # untimed rounds before them
    quantiles: tuple[float, ...] = (0.5,)  # of calibration values, one threshold each
    grid_prompts: int = 4  # rows of the image grid
    text_kv_cache: bool = True  # ecad's schedules compute cross-attention's text K/V once per call (lossless)


@dataclass
class CompareRow:
    """One contender's line in every output (json, csv, md, plot, grid)."""

    number: int  # its label in the plots and the grid
    name: str
    kind: str
    params: dict[str, Any]
    feasible: bool
    reason: str | None = None
    quality: float | None = None  # the chosen metric
    psnr: float | None = None
    ssim: float | None = None
    lpips: float | None = None
    did_nothing: bool | None = None  # images bit-identical to no caching
    macs_fraction: float | None = None  # realised: counted forwards x ecad's MACs model, over no caching's
    nominal_macs_fraction: float | None = None  # what a static schedule says it computes
    gmacs_per_image: float | None = None
    ms_per_image: float | None = None  # median over timed rounds
    ms_range: list[float] | None = None
    speedup: float | None = None  # no caching's median ms over this row's
    speedup_range: list[float] | None = None  # of per-round ratios
    timings_ms: list[float] = field(default_factory=list)  # raw: ms per image of each timed round
    peer_stats: dict[str, Any] = field(default_factory=dict)  # what the contender reports itself
    realised: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class CompareResult:
    settings: dict[str, Any]
    rows: list[CompareRow]
    notes: list[str]  # skipped peers and why
    grid: dict[str, torch.Tensor]  # contender name -> uint8 [grid prompts, 3, H, W] on the CPU
    grid_prompts: list[str]
    metric: str
    higher_is_better: bool


def _peers(renderer, items, settings: CompareSettings) -> tuple[list[Contender], list[str]]:
    peers = diffusers_contenders(renderer, items, settings.batch_size, settings.quantiles)
    dit, notes = cache_dit_contenders(renderer, items, settings.batch_size, settings.quantiles)
    return peers + dit, notes


def _quality_pass(c: Contender, renderer, items, batch_size: int, counter: ComputeCounter):
    """(images uint8, finite, peer stats, realised compute) of one contender over every item."""
    counter.take()  # nothing before this contender counts
    failed = True
    try:
        c.enable(renderer)
        rendered = renderer.render(items, batch_size)
        stats = c.stats(renderer)
        failed = False
    finally:
        with contextlib.suppress(Exception) if failed else contextlib.nullcontext():
            c.disable(renderer)  # after a failure, a disable that fails too must not hide it
    return rendered.images, rendered.finite, stats, counter.take()


def stock_state(transformer) -> list[tuple[str, ...]]:
    """What disabling a contender must restore: per module, whether its forward is its class's
    own, its children's order, and the names of diffusers hooks on it. Every contender runs on
    the pipeline the previous one left, so one that leaks state changes all later rows."""
    out = []
    for name, module in transformer.named_modules():
        own = vars(module).get("forward")
        stock = own is None or getattr(own, "__func__", None) is type(module).forward
        registry = vars(module).get("_diffusers_hook")
        hooks = tuple(registry.hooks) if registry is not None else ()
        out.append((name, "stock forward" if stock else "patched forward", *module._modules, *hooks))
    return out


def _infeasible(number: int, c: Contender, reason: str) -> CompareRow:
    return CompareRow(number, c.name, c.kind, c.params, False, reason=reason)


def run_compare(settings: CompareSettings, schedules: Sequence[Schedule]) -> CompareResult:
    """Every contender through both passes; `schedules` are checked against the space before
    the pipeline loads."""
    from ecad.metrics import get_metric
    from ecad.spaces import load_space

    space = load_space(settings.space)
    static = schedule_contenders(space, list(schedules), settings.baselines)
    renderer = Renderer(space, settings.prompts, settings.device, text_kv_cache=settings.text_kv_cache)
    device = renderer.device
    metric = get_metric(settings.metric, device=device, **settings.metric_options)
    fidelity = metric if settings.metric == "fidelity" else get_metric("fidelity", device=device)
    items = renderer.items(settings.seeds)
    dims = dims_for_space(space)
    grid_items = [k for k, (p, s) in enumerate(items) if s == settings.seeds[0] and p < settings.grid_prompts]

    rows: list[CompareRow] = []
    grid: dict[str, torch.Tensor] = {}
    notes: list[str] = []
    runnable: list[tuple[CompareRow, Contender]] = []
    references = reference_macs = None
    stock = stock_state(renderer.pipe.transformer)
    with ComputeCounter(renderer.pipe.transformer, space) as counter:
        counted = stock_state(renderer.pipe.transformer)  # the counter's own wrappers included
        contenders = list(static)
        if settings.baselines:
            peers, notes = _peers(renderer, items, settings)
            contenders += peers
        for number, c in enumerate(contenders, start=1):
            if c.unavailable:
                rows.append(_infeasible(number, c, c.unavailable))
                continue
            try:
                images, finite, stats, realised = _quality_pass(c, renderer, items, settings.batch_size, counter)
            except Exception as exc:  # noqa: BLE001 - a peer that does not run here is reported, not fatal
                if c.kind == NO_CACHING:
                    raise
                rows.append(_infeasible(number, c, f"{type(exc).__name__}: {exc}"[:240]))
                continue
            finally:
                if stock_state(renderer.pipe.transformer) != counted:
                    raise RuntimeError(f"ecad compare: {c.name} left the transformer changed after it was disabled")
            if not finite:
                rows.append(_infeasible(number, c, "non-finite images"))
                continue
            frames = images.shape[0] // len(items)
            if references is None:  # the first contender is no caching
                references, reference_macs = images, realised.macs(space)
            prompts = [settings.prompts[p] for p, _ in items for _ in range(frames)]
            score = metric.score(images, prompts, references if metric.needs_reference else None)
            extras = score.extras if fidelity is metric else fidelity.score(images, prompts, references).extras
            macs = realised.macs(space)
            row = CompareRow(
                number,
                c.name,
                c.kind,
                c.params,
                True,
                quality=float(score.summary),
                psnr=float(np.mean(extras["psnr"])),
                ssim=float(np.mean(extras["ssim"])),
                lpips=float(np.mean(extras["lpips"])) if "lpips" in extras else None,
                did_nothing=None if c.kind == NO_CACHING else bool(torch.equal(images, references)),
                macs_fraction=macs / reference_macs,
                gmacs_per_image=macs / len(items) / 1e9,
                peer_stats=stats,
                realised=realised.to_json(),
            )
            if isinstance(c, ScheduleContender):
                nominal = schedule_macs(
                    c.schedule, dims, space.height, space.width, text_kv_cache=settings.text_kv_cache
                )
                row.nominal_macs_fraction = nominal.total / nominal.full
            rows.append(row)
            runnable.append((row, c))
            grid[c.name] = images[[k * frames for k in grid_items]].cpu()
    if stock_state(renderer.pipe.transformer) != stock:
        raise RuntimeError("ecad compare: the transformer was left changed after the quality pass")
    time_interleaved(runnable, renderer, items[: settings.batch_size], settings)
    return CompareResult(
        settings=_settings_record(settings, renderer),
        rows=rows,
        notes=notes,
        grid=grid,
        grid_prompts=[settings.prompts[items[k][0]] for k in grid_items],
        metric=metric.name,
        higher_is_better=metric.higher_is_better,
    )


def time_interleaved(runnable: list[tuple[CompareRow, Contender]], renderer, batch, settings: CompareSettings) -> None:
    """Interleaved rounds; fills each row's timings, median, range and speedup. A contender that
    fails here (it ran in the quality pass) leaves the rounds and its row says so."""
    timer = CallTimer(renderer.device)
    timing = list(runnable)
    for r in range(settings.warmup + settings.repeats):
        for row, c in list(timing):
            try:
                c.enable(renderer)
                try:
                    _, ms = timer(lambda: renderer.images(batch))
                finally:
                    c.disable(renderer)
            except Exception as exc:  # noqa: BLE001 - reported in the row
                if c.kind == NO_CACHING:
                    raise
                row.feasible, row.reason = False, f"timing failed: {type(exc).__name__}: {exc}"[:240]
                timing.remove((row, c))
                continue
            if r >= settings.warmup:
                row.timings_ms.append(ms / len(batch))
    if not timing:
        return
    reference = np.asarray(timing[0][0].timings_ms)  # no caching
    for row, _ in timing:
        t = np.asarray(row.timings_ms)
        ratios = reference / t
        row.ms_per_image = float(np.median(t))
        row.ms_range = [float(t.min()), float(t.max())]
        row.speedup = float(np.median(reference) / np.median(t))
        row.speedup_range = [float(ratios.min()), float(ratios.max())]


def _settings_record(settings: CompareSettings, renderer) -> dict[str, Any]:
    import diffusers

    space = renderer.space
    cache_dit = import_cache_dit() if settings.baselines else None
    return {
        "space": space.name,
        "model": space.model,
        "prompts": list(settings.prompts),
        "seeds": list(settings.seeds),
        "metric": settings.metric,
        "metric_options": settings.metric_options,
        "steps": space.steps,
        "resolution": [space.height, space.width],
        "device": device_name(renderer.device),
        "dtype": str(renderer.pipe.transformer.dtype),
        "batch_size": settings.batch_size,
        "timed_call": f"one pipeline call (transformer and VAE decode) of the first {settings.batch_size} "
        "prompt x seed items, per contender per round, interleaved",
        "warmup_rounds": settings.warmup,
        "timed_rounds": settings.repeats,
        "calibration_quantiles": list(settings.quantiles),
        "macs": "realised: component forwards counted in the quality pass x ecad's MACs model "
        "(attention matmuls included), as a fraction of the stock pipeline's (no caching) counted the same way",
        "text_kv_cache": settings.text_kv_cache,
        "versions": {
            "torch": torch.__version__,
            "diffusers": diffusers.__version__,
            "cache-dit": getattr(cache_dit, "__version__", None),
        },
    }
