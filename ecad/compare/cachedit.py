"""cache-dit (PyPI `cache-dit`) as `ecad compare` contenders: the tool most users would pick instead.

Its DBCache computes the first n blocks (Fn) of every step and reuses the rest when their residual
changed less than a threshold since the last computed step; a TaylorSeer calibrator can
extrapolate the reused residual; step computation masks (SCM) fix which steps compute. Each is
applied through `cache_dit.enable_cache` / `disable_cache` on the pipeline, as its docs show.
Thresholds are calibrated like diffusers' (`ecad.compare.calibration`): one pass with a threshold
too small to cache anything reports, through cache-dit's own statistics, the residual differences
its threshold is compared with. Warm-up steps scale cache-dit's default of 8 (of 28 steps) to the
space's step count; SCM presets are scaled by cache-dit's `steps_mask` itself.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from ecad.compare.calibration import thresholds
from ecad.compare.contenders import Contender, Unavailable

VERSION = "1.5.3"  # the version CI tests (pinned in constraints.txt)
INSTALL = f"cache-dit is not installed, so its rows are skipped: `pip install cache-dit=={VERSION}` adds them"
FN_BLOCKS = (1, 8)  # DBCache F1B0 and F8B0
SCM_POLICIES = ("slow", "medium", "fast", "ultra")
DEFAULT_WARMUP, DEFAULT_STEPS = 8, 28  # cache-dit's max_warmup_steps default, and the step count it is meant for
PATCHED = ("forward", "_is_patched")  # module attributes cache-dit's patch functors set
MISSING = object()
CALIBRATION_THRESHOLD = 1e-12  # > 0 so the differences are measured and recorded; small enough to cache nothing


def import_cache_dit():
    """cache-dit, with its INFO logging (a table per pipeline call) turned down; None if absent."""
    os.environ.setdefault("CACHE_DIT_LOG_LEVEL", "error")
    try:
        import cache_dit
    except ImportError:
        return None
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("cache_dit"):
            logging.getLogger(name).setLevel(logging.ERROR)
    return cache_dit


@dataclass
class CacheDitCache(Contender):
    """One cache-dit configuration; `make_configs` builds fresh config objects per enable, since
    cache-dit fills in fields of the ones it is given."""

    make_configs: Callable[[], dict[str, Any]] | None = None
    _stock: dict[nn.Module, dict[str, Any]] = field(default_factory=dict, repr=False)

    def enable(self, renderer) -> None:
        self._stock = {
            m: ({a: vars(m).get(a, MISSING) for a in PATCHED}, list(m._modules))
            for m in renderer.pipe.transformer.modules()
        }
        import_cache_dit().enable_cache(renderer.pipe, **self.make_configs())

    def disable(self, renderer) -> None:
        """`disable_cache`, then undo what it leaves behind, which every later contender (no
        caching included) would otherwise run through: its patch functors (FLUX's) replace the
        transformer's forward and disabling keeps the replacement, and its forward re-assigns
        the block lists, which moves them to the end of the module's children (diffusers'
        FirstBlockCache then takes a single-stream block for FLUX's first block)."""
        import_cache_dit().disable_cache(renderer.pipe)
        for module, (attrs, children) in self._stock.items():
            for name, value in attrs.items():
                if value is MISSING:
                    vars(module).pop(name, None)
                else:
                    setattr(module, name, value)
            if list(module._modules) != children and set(module._modules) == set(children):
                module._modules = {name: module._modules[name] for name in children}
        self._stock = {}

    def stats(self, renderer) -> dict[str, Any]:
        """cache-dit's statistics of the last pipeline call: which steps it served from cache."""
        found = import_cache_dit().summary(renderer.pipe, logging=False)
        if not found:
            return {}
        s = found[0]
        return {"cached_steps": list(s.cached_steps), "cfg_cached_steps": list(s.cfg_cached_steps)}


def _warmup(steps: int) -> int:
    return max(1, round(DEFAULT_WARMUP * steps / DEFAULT_STEPS))


def residual_diffs(cache_dit, renderer, items, batch_size: int, fn_blocks: int) -> list[float]:
    """The residual differences DBCache F{fn}B0 thresholds, at every step of an uncached pass."""
    steps = renderer.space.steps
    found: list[float] = []
    contender = CacheDitCache(
        "calibration",
        "cache-dit",
        make_configs=lambda: {
            "cache_config": cache_dit.DBCacheConfig(
                Fn_compute_blocks=fn_blocks,
                Bn_compute_blocks=0,
                residual_diff_threshold=CALIBRATION_THRESHOLD,
                max_warmup_steps=0,
                num_inference_steps=steps,
            )
        },
    )
    contender.enable(renderer)
    try:
        for start in range(0, len(items), batch_size):
            renderer.images(items[start : start + batch_size])
            for s in cache_dit.summary(renderer.pipe, logging=False)[:1]:
                found.extend(float(v) for v in s.residual_diffs.values())
                found.extend(float(v) for v in s.cfg_residual_diffs.values())
    finally:
        contender.disable(renderer)
    return found


def cache_dit_contenders(
    renderer, items, batch_size: int, quantiles: Sequence[float]
) -> tuple[list[Contender], list[str]]:
    """(contenders, notes): DBCache F1B0 and F8B0 at calibrated thresholds, each with and without
    the TaylorSeer calibrator, and the SCM presets. No rows, and a note saying how to install
    it, when cache-dit is not importable."""
    cache_dit = import_cache_dit()
    if cache_dit is None:
        return [], [INSTALL]
    space = renderer.space
    steps, num_blocks = space.steps, space.layout.num_blocks
    warmup = _warmup(steps)
    out: list[Contender] = []
    for fn in FN_BLOCKS:
        name = f"cache-dit DBCache F{fn}B0"
        if fn >= num_blocks:
            reason = f"needs more than {fn} transformer blocks; this model has {num_blocks}"
            out.append(Unavailable(name, "cache-dit", {"Fn_compute_blocks": fn}, reason=reason))
            continue
        try:
            found = thresholds(residual_diffs(cache_dit, renderer, items, batch_size, fn), quantiles)
        except Exception as exc:  # noqa: BLE001 - the row says what went wrong
            out.append(Unavailable(name, "cache-dit", {}, reason=f"calibration failed: {type(exc).__name__}: {exc}"))
            continue
        for t in found:
            for taylorseer in (False, True):
                params = {
                    "Fn_compute_blocks": fn,
                    "Bn_compute_blocks": 0,
                    "residual_diff_threshold": t.value,
                    **t.to_json(),
                    "max_warmup_steps": warmup,
                    **({"calibrator": "TaylorSeer", "taylorseer_order": 1} if taylorseer else {}),
                }

                def make(t=t, fn=fn, taylorseer=taylorseer):
                    configs: dict[str, Any] = {
                        "cache_config": cache_dit.DBCacheConfig(
                            Fn_compute_blocks=fn,
                            Bn_compute_blocks=0,
                            residual_diff_threshold=t.value,
                            max_warmup_steps=warmup,
                            num_inference_steps=steps,
                        )
                    }
                    if taylorseer:
                        configs["calibrator_config"] = cache_dit.TaylorSeerCalibratorConfig(taylorseer_order=1)
                    return configs

                label = f"{name}{' + TaylorSeer' if taylorseer else ''}({t.label()})"
                out.append(CacheDitCache(label, "cache-dit", params, make_configs=make))
    for policy in SCM_POLICIES:
        mask = cache_dit.steps_mask(total_steps=steps, mask_policy=policy)

        def make_scm(mask=mask):
            return {
                "cache_config": cache_dit.DBCacheConfig(
                    Fn_compute_blocks=1,
                    Bn_compute_blocks=0,
                    max_warmup_steps=0,
                    num_inference_steps=steps,
                    steps_computation_mask=list(mask),
                    steps_computation_policy="static",
                )
            }

        params = {"steps_computation_mask": "".join(map(str, mask)), "steps_computation_policy": "static"}
        params |= {"Fn_compute_blocks": 1, "Bn_compute_blocks": 0}
        out.append(CacheDitCache(f"cache-dit SCM {policy}", "cache-dit", params, make_configs=make_scm))
    return out, []
