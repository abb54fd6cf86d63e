"""`ecad compare`: searched schedules, heuristic baselines and diffusers' own caches, side by side.

Same pipeline, prompts and seeds for every contender; quality from one metric against the
uncached images, latency measured on this machine. This is the table users of every peer ask for.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.hooks import HookRegistry, ModelHook

from ecad.cache.macs import dims_for_space, schedule_macs
from ecad.distributed.worker import CandidateEvaluator, WorkerConfig
from ecad.files import atomic_write_json
from ecad.schedule import Schedule, load_schedule
from ecad.search.seeds import baseline_grids

CONTEXT_HOOK = "ecad.peer_context"


@dataclass
class Contender:
    """A schedule in the table: the user's, a heuristic baseline, or no caching."""

    name: str
    kind: str  # "schedule" | "heuristic" | "no caching"
    schedule: Schedule


class PeerContextHook(ModelHook):
    """Pipelines whose transformer has no CacheMixin (PixArt, SD3, Sana) set neither a cache
    context nor the current timestep, which diffusers' cache hooks need: this hook sets both on
    every transformer call, through CacheMixin's own context manager. Stateful, so the renderer's
    reset before each pipeline call starts its step count over."""

    _is_stateful = True

    def __init__(self, num_steps: int):
        super().__init__()
        self.num_steps, self.calls, self.timestep = num_steps, 0, None

    def reset_state(self, module):
        self.calls, self.timestep = 0, None
        return module

    def new_forward(self, module, *args, **kwargs):
        from diffusers.models.cache_utils import CacheMixin

        t = kwargs.get("timestep")
        self.timestep = float(t.flatten()[0]) if isinstance(t, torch.Tensor) else t
        context = CacheMixin.cache_context(
            module, "cond_uncond", step_index=self.calls, num_inference_steps=self.num_steps, timestep=self.timestep
        )
        self.calls += 1
        with context:
            return self.fn_ref.original_forward(*args, **kwargs)


def _peer_configs(steps: int, timestep_fn: Callable[[], Any], mag_ratios: list[float] | None):
    from diffusers.hooks import (
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
    )

    configs = {
        "FirstBlockCache(0.05)": FirstBlockCacheConfig(threshold=0.05),
        "TaylorSeer(interval 3)": TaylorSeerCacheConfig(
            cache_interval=3, disable_cache_before_step=2, max_order=1, taylor_factors_dtype=torch.float32
        ),
        "PAB(spatial 2)": PyramidAttentionBroadcastConfig(
            spatial_attention_block_skip_range=2,
            spatial_attention_timestep_skip_range=(100, 800),
            current_timestep_callback=timestep_fn,
        ),
    }
    if mag_ratios is not None:
        configs["MagCache(0.06)"] = MagCacheConfig(threshold=0.06, num_inference_steps=steps, mag_ratios=mag_ratios)
    return configs


def _apply_peer(transformer, config) -> None:
    """One cache at a time: FLUX has enable_cache; PixArt gets diffusers' apply_* directly."""
    if hasattr(transformer, "enable_cache"):
        transformer.enable_cache(config)
        return
    from diffusers.hooks import (
        FirstBlockCacheConfig,
        MagCacheConfig,
        PyramidAttentionBroadcastConfig,
        TaylorSeerCacheConfig,
        apply_first_block_cache,
        apply_mag_cache,
        apply_pyramid_attention_broadcast,
        apply_taylorseer_cache,
    )

    fn = {
        FirstBlockCacheConfig: apply_first_block_cache,
        MagCacheConfig: apply_mag_cache,
        PyramidAttentionBroadcastConfig: apply_pyramid_attention_broadcast,
        TaylorSeerCacheConfig: apply_taylorseer_cache,
    }[type(config)]
    fn(transformer, config)


def _remove_peer(transformer) -> None:
    if hasattr(transformer, "disable_cache"):
        transformer.disable_cache()
        return
    registry = HookRegistry.check_if_exists_or_initialize(transformer)
    for name in list(registry.hooks) + [
        n for m in transformer.modules() if hasattr(m, "_diffusers_hook") for n in m._diffusers_hook.hooks
    ]:
        if not name.startswith("ecad."):
            registry.remove_hook(name, recurse=True)
    registry.invalidate_child_registries_cache()


def calibrate_mag_cache(evaluator: CandidateEvaluator, steps: int) -> list[float]:
    """MagCache needs per-model magnitude ratios; run diffusers' own calibration pass once on
    this pipeline and read the ratios it reports."""
    from diffusers.hooks import MagCacheConfig

    found: list[float] = []

    class Grab(logging.Handler):
        def emit(self, record):
            m = re.search(r"\[(.*)\]", record.getMessage())
            if m and not found:
                found.extend(float(x) for x in m.group(1).split(","))

    logger = logging.getLogger("diffusers.hooks.mag_cache")
    handler, level, propagate = Grab(), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # keep the calibration printout off the user's terminal
    transformer = evaluator.pipe.transformer
    try:
        _apply_peer(transformer, MagCacheConfig(calibrate=True, num_inference_steps=steps))
        with contextlib.redirect_stdout(io.StringIO()):
            evaluator.renderer.images(evaluator.items[:1])
    finally:
        _remove_peer(transformer)
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate
    return found[:steps] if found else []


def contenders(space, schedules: list[Schedule], baselines: bool) -> list[Contender]:
    out = [Contender("no caching", "no caching", space.full_schedule())]
    for s in schedules:
        space.check_schedule(s)
        out.append(Contender(s.name or "schedule", "schedule", s))
    if baselines:  # the heuristics every search seeds its population with (a frontier has beaten them)
        for name, grid in baseline_grids(space):
            out.append(Contender(name, "heuristic", Schedule(space.layout, grid, name=name)))
    return out


def run_compare(
    space_name: str,
    schedule_paths: list[str],
    baselines: bool,
    prompts: tuple[str, ...],
    seeds: tuple[int, ...],
    metric: str = "fidelity",
    batch_size: int = 4,
    device: str | None = None,
) -> list[dict[str, Any]]:
    from ecad.spaces import load_space

    space = load_space(space_name)
    entries = contenders(space, [load_schedule(p) for p in schedule_paths], baselines)  # bad files fail before loading
    evaluator = CandidateEvaluator(
        WorkerConfig(space_name, prompts, seeds, metric=metric, cost="latency", batch_size=batch_size, device=device)
    )
    dims = dims_for_space(space)
    rows = []
    for c in entries:
        r = evaluator.evaluate(c.schedule.to_json(), warmup=True)
        macs = schedule_macs(c.schedule, dims, height=space.height, width=space.width)
        rows.append(_row(c.name, c.kind, r, evaluator.reference_ms, macs.total / macs.full))
    if baselines:
        evaluator.renderer.remove()
        transformer = evaluator.pipe.transformer
        context = None
        if not hasattr(transformer, "enable_cache"):
            context = PeerContextHook(space.steps)
            HookRegistry.check_if_exists_or_initialize(transformer).register_hook(context, CONTEXT_HOOK)
        timestep_fn = (lambda: context.timestep) if context else (lambda: evaluator.pipe.current_timestep)
        try:
            ratios, calibration = (
                space.adapter.mag_ratios(space.steps) or calibrate_mag_cache(evaluator, space.steps),
                None,
            )
        except Exception as exc:  # noqa: BLE001 - MagCache's row reports it
            ratios, calibration = None, f"calibration failed: {type(exc).__name__}: {exc}"[:200]
        configs: dict[str, Any] = _peer_configs(space.steps, timestep_fn, ratios or None)
        if calibration is not None:
            configs["MagCache(0.06)"] = calibration
        for name, cfg in configs.items():
            if isinstance(cfg, str):  # could not even be set up
                rows.append(_row(name, "diffusers", {"feasible": False, "reason": cfg}, evaluator.reference_ms, None))
                continue
            try:
                _apply_peer(transformer, cfg)
                r = evaluator.evaluate_current(warmup=True)
            except Exception as exc:  # noqa: BLE001 - a peer that does not run here is reported, not fatal
                r = {"feasible": False, "reason": f"{type(exc).__name__}: {exc}"[:200]}
            finally:
                _remove_peer(transformer)
            rows.append(_row(name, "diffusers", r, evaluator.reference_ms, None))
        if context is not None:
            HookRegistry.check_if_exists_or_initialize(transformer).remove_hook(CONTEXT_HOOK, recurse=False)
    return rows


def _row(name: str, kind: str, r: dict[str, Any], reference_ms: float, macs_fraction: float | None) -> dict[str, Any]:
    ok = r.get("feasible", False)
    return {
        "name": name,
        "kind": kind,
        "feasible": ok,
        "reason": r.get("reason"),
        "quality": r.get("quality") if ok else None,
        "extras": r.get("extras", {}),
        "ms_per_image": r.get("ms_per_image"),
        "speedup": (reference_ms / r["ms_per_image"]) if ok and r.get("ms_per_image") else None,
        "macs_fraction": macs_fraction,
    }


def format_table(rows: list[dict[str, Any]], metric: str) -> str:
    lines = [f"{'contender':28s} {'kind':11s} {metric:>10s} {'ms/img':>8s} {'speedup':>8s} {'MACs':>7s}"]
    for r in rows:
        if not r["feasible"]:
            lines.append(f"{r['name']:28s} {r['kind']:11s} {'failed: ' + str(r['reason'])[:60]}")
            continue
        macs = f"{r['macs_fraction']:.1%}" if r["macs_fraction"] is not None else "dynamic"
        lines.append(
            f"{r['name']:28s} {r['kind']:11s} {r['quality']:>10.4f} {r['ms_per_image']:>8.2f} "
            f"{r['speedup']:>7.2f}x {macs:>7s}"
        )
    return "\n".join(lines)


def plot_compare(rows: list[dict[str, Any]], metric: str, out_png: Path) -> None:
    """A bare Figure (no pyplot): the caller's matplotlib backend is left alone."""
    from matplotlib.figure import Figure

    from ecad.report.plots import save_figure

    fig = Figure(figsize=(7, 4.5))
    ax = fig.add_subplot()
    markers = {"no caching": "*", "schedule": "o", "heuristic": "s", "diffusers": "^"}
    for kind, marker in markers.items():
        pts = [r for r in rows if r["kind"] == kind and r["feasible"]]
        if pts:
            ax.scatter([r["speedup"] for r in pts], [r["quality"] for r in pts], marker=marker, s=60, label=kind)
            for r in pts:
                ax.annotate(
                    r["name"], (r["speedup"], r["quality"]), fontsize=7, xytext=(4, 3), textcoords="offset points"
                )
    ax.set_xlabel("measured speedup vs no caching (x)")
    ax.set_ylabel(metric)
    ax.set_title("quality vs measured speed, same prompts and seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(fig, out_png)


def write_compare(rows: list[dict[str, Any]], metric: str, out_dir: Path, settings: dict[str, Any]) -> None:
    atomic_write_json(out_dir / "compare.json", {"settings": settings, "rows": rows})
    plot_compare(rows, metric, out_dir / "compare.png")
