"""Hooks that make a transformer follow a `Schedule`, through diffusers' hook registry.

Three named hooks share one `ScheduleState` that belongs to the transformer instance:
`ecad.step` on the transformer counts denoising steps per guidance branch, `ecad.block` on each
block takes the family's block path when some component is reused (skipping norms and
modulation that only feed reused components), and `ecad.component` on each cached sub-module
computes-and-stores or returns its cached output (taken before the adaLN gate, so gates, norms
and modulation of computed components are recomputed: a cached output is re-gated with this
step's modulation).

The branch of a call is the name of diffusers' cache context when the caller sets one
(`with transformer.cache_context("uncond")`, as FLUX and Wan pipelines do around each of their
CFG calls); calls outside any context are one branch (CFG as a doubled batch). Each branch counts
its own steps and keeps its own cache. `ecad.step` is stateful: diffusers'
`reset_stateful_hooks()` (or `reset_schedule`) starts the next generation.

`apply_schedule_to_transformer` is for users with their own denoising loop; `ecad.apply_schedule`
on a pipeline (ecad.cache.pipeline) installs the same hooks and sets the step count for each call.

The state also records what the hooks did in the latest generation (`CallRecord`: per transformer
call, which components computed and which were served from the cache, the batch rows and tokens the
first block saw; the most bytes the cache held; the wall-clock time), which `ecad.summary` reads.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from ecad.cache import check
from ecad.cache.branches import DEFAULT_BRANCH, CacheContextListener
from ecad.cache.branches import listen_for_branches as listen_for_branches  # re-exported
from ecad.cache.guidance import (
    GUIDANCE_HOOK,
    GuidanceReuseConfig,
    GuidanceReuseHook,
    apply_guidance_reuse,
    doubles_guidance_batch,
)
from ecad.cache.plan import CachePlan
from ecad.cache.text_kv import TextKVCache, TextKVCacheConfig, apply_text_kv_cache
from ecad.layouts import BlockGroup
from ecad.models import FamilyAdapter, adapter_for_transformer
from ecad.models.base import BlockPath
from ecad.schedule import Schedule, ScheduleError

logger = logging.getLogger(__name__)

STEP_HOOK = "ecad.step"
BLOCK_HOOK = "ecad.block"
COMPONENT_HOOK = "ecad.component"


def output_nbytes(out: Any) -> int:
    """Bytes of the tensors in a component's output (a tensor, or a tuple/list/dict of them)."""
    if isinstance(out, torch.Tensor):
        return out.numel() * out.element_size()
    if isinstance(out, (tuple, list)):
        return sum(output_nbytes(x) for x in out)
    if isinstance(out, dict):
        return sum(output_nbytes(x) for x in out.values())
    return 0


@dataclass
class StepRecord:
    """What the hooks did in one transformer call (one executed step of one guidance branch)."""

    step: int  # index among the executed steps
    computed: np.ndarray  # [blocks, components] bool: the component's own forward ran
    reused: np.ndarray  # [blocks, components] bool: its output was served from the cache
    rows: int = 0  # batch rows the first block saw
    image_tokens: int | None = None  # hidden_states tokens the first block saw
    text_tokens: int | None = None  # encoder_hidden_states tokens the first block saw (None: none passed)
    text_kv: np.ndarray | None = None  # [blocks, components] bool: the component's text K/V projections ran
    forecast: np.ndarray | None = None  # [blocks, components] bool: served by a forecast (a subset of `reused`)


@dataclass
class CallRecord:
    """What the hooks did in one generation: a scheduled pipeline's call (timed between the
    wrapper's begin() and end()), or a directly scheduled transformer's calls until its next reset
    (timed from the start of its first call to the end of its last)."""

    schedule: Schedule
    by_pipeline: bool
    started: float  # time.perf_counter()
    finished: float | None = None
    closed: bool = False  # no further transformer call belongs to it
    steps: dict[str, list[StepRecord]] = field(default_factory=dict)  # branch -> its calls, in order
    peak_cached_bytes: int = 0  # most bytes of cached outputs held at once

    @property
    def seconds(self) -> float:
        return (self.finished if self.finished is not None else time.perf_counter()) - self.started


class ScheduleState:
    """Mutable per-transformer state: the plan, where the current generation is, and the cache.
    `active`: whether calls follow the schedule (a pipeline's wrapper turns it on for its calls;
    a transformer scheduled directly is always active)."""

    def __init__(
        self,
        schedule: Schedule,
        adapter: FamilyAdapter,
        exact: bool = False,
        always_active: bool = False,
        text_kv_cache: bool = True,
    ):
        self.adapter, self.always_active = adapter, always_active
        self.text_kv_cache = text_kv_cache  # compute cross-attention's text K/V once per call and branch
        self.text_cache: TextKVCache | None = None  # its hooks, while installed
        self.guidance_hook: GuidanceReuseHook | None = None  # installed where CFG is one doubled batch
        self.guidance_rows: int | None = None  # during a call that skips the unconditional rows: their count
        self.paths: list[BlockPath | None] = [None] * schedule.layout.num_blocks  # per block; set on install
        self.set_schedule(schedule, exact)
        self.cache: dict[tuple[int, int, str], Any] = {}  # the latest computed output a later step reads
        self.cache_step: dict[tuple[int, int, str], int] = {}  # executed step that computed it
        self.older: dict[tuple[int, int, str], list[tuple[int, Any]]] = {}  # earlier points forecasts still read
        self.fused: dict[str, Any] = {}  # branch -> sums folded for the next (fully reused) step
        self.steps_done: dict[str, int] = {}  # branch -> transformer calls so far in this generation
        self.last_steps_done: dict[str, int] = {}
        self.active = always_active
        self.step, self.branch = 0, DEFAULT_BRANCH
        self.cached_bytes = 0  # bytes of the outputs in `cache`
        self.record: CallRecord | None = None  # the latest generation (ecad.summary)
        self.in_call = False  # inside a pipeline call (between begin() and end())
        self._step_record: StepRecord | None = None

    def set_schedule(self, schedule: Schedule, exact: bool) -> None:
        self.schedule, self.exact = schedule, exact
        self.plan = CachePlan.from_schedule(schedule)
        self.components = [group.components for group, _ in schedule.layout.blocks()]  # per block
        self._derive_paths()

    def set_paths(self, paths: list[BlockPath | None]) -> None:
        self.paths = paths
        self._derive_paths()

    def _derive_paths(self) -> None:
        """Per step and block, which path runs. Folding costs about two block-by-block steps of
        memory traffic, so only runs of at least two fully reused steps are folded; it assumes
        every block's maths, so it needs every block on its path."""
        plan = self.plan
        self.partial_ok = np.array([p is not None and p.partial for p in self.paths], dtype=bool)
        self.block_path = plan.block_reused | (plan.any_reused & self.partial_ok[None])
        foldable = not self.exact and self.adapter.folds_reused_steps and None not in self.paths
        self.fold = (plan.reused_run >= 2) & foldable

    def take(self, b: int, c: int) -> Any:
        """A reused output, or a forecast cell's extrapolation; each output is dropped from the
        cache at its last read."""
        key, s, plan = (b, c, self.branch), self.step, self.plan
        if self._step_record is not None:
            self._step_record.reused[b, c] = True
        forecasting = plan.forecast is not None and plan.forecast[s, b, c]
        if forecasting:
            if self._step_record is not None and self._step_record.forecast is not None:
                self._step_record.forecast[b, c] = True
            points = [*self.older.get(key, []), (self.cache_step[key], self.cache[key])][-(plan.order + 1) :]
            out = extrapolate([plan.positions[p] for p, _ in points], [o for _, o in points], plan.positions[s])
        else:
            out = self.cache[key]
        if plan.drop[s, b, c]:
            self.uncache(key)
        if plan.until is not None and key in self.older:
            self._prune_older(key)
        if self.guidance_rows is not None:  # this call runs the conditional rows only
            out = _rows_from(out, self.guidance_rows)
        return out

    def store(self, b: int, c: int, out: Any) -> None:
        """Keep a computed output for later steps' reads (the latest; with forecast cells, an
        earlier latest that a forecast still reads becomes an older point)."""
        key = (b, c, self.branch)
        if self.guidance_rows is not None:  # conditional rows only: keep the last unconditional ones beside them
            out = _full_rows(self.cache.get(key), out, self.guidance_rows)
        if key in self.cache:
            if self.plan.until is not None and self.cache_step[key] != self.step:
                self.older.setdefault(key, []).append((self.cache_step[key], self.cache.pop(key)))
                self._prune_older(key)
            else:  # a block path's check runs the block twice: the same output again
                self.uncache(key)
        self.cache[key] = out
        self.cache_step[key] = self.step
        self.cached_bytes += output_nbytes(out)
        if self.record is not None:
            self.record.peak_cached_bytes = max(self.record.peak_cached_bytes, self.cached_bytes)

    def _prune_older(self, key: tuple[int, int, str]) -> None:
        """Drop the older points of `key` that no step after this one reads."""
        b, c, _ = key
        keep = []
        for point, out in self.older[key]:
            if self.plan.until[point, b, c] > self.step:
                keep.append((point, out))
            else:
                self.cached_bytes -= output_nbytes(out)
        if keep:
            self.older[key] = keep
        else:
            del self.older[key]

    def uncache(self, key: tuple[int, int, str]) -> None:
        """Drop a cached output (if held), keeping `cached_bytes` exact."""
        self.cached_bytes -= output_nbytes(self.cache.pop(key, None))
        self.cache_step.pop(key, None)

    def computed(self, b: int, c: int) -> None:
        """Component (b, c) ran its own forward in this step."""
        if self._step_record is not None:
            self._step_record.computed[b, c] = True

    def all_reused(self) -> None:
        """Every component of this step was served from the cache (a folded step)."""
        if self._step_record is not None:
            self._step_record.reused[:] = self.schedule.layout.cell_mask()

    def skips_unconditional(self) -> bool:
        """The transformer call now running skips the unconditional rows (the schedule's guidance reuse)."""
        g = self.plan.guidance_reuse
        return self.active and g is not None and bool(g[self.step])

    def begin_conditional_only(self, rows: int) -> None:
        self.guidance_rows = rows
        if self.text_cache is not None:
            self.text_cache.state.row_select = lambda t: t[rows:]

    def end_conditional_only(self) -> None:
        self.guidance_rows = None
        if self.text_cache is not None:
            self.text_cache.state.row_select = None

    def text_computed(self, b: int, c: int) -> None:
        """A text K/V projection of component (b, c) ran in this step (the rest were the call's cache)."""
        if self._step_record is not None and self._step_record.text_kv is not None:
            self._step_record.text_kv[b, c] = True

    def saw_block_input(self, hidden: Any, encoder: Any) -> None:
        """The first block's inputs of this step: the batch rows and tokens its MACs are priced at."""
        record = self._step_record
        if record is None or not isinstance(hidden, torch.Tensor) or hidden.dim() < 2:
            return
        record.rows, record.image_tokens = int(hidden.shape[0]), int(hidden.shape[1])
        if isinstance(encoder, torch.Tensor) and encoder.dim() >= 2:
            record.text_tokens = int(encoder.shape[1])

    def clear(self) -> None:
        """Forget the current generation: cache, folded sums, step counts (the counts stay readable
        as `last_steps_done`: pipelines reset stateful hooks at the end of their own call). Outside
        a pipeline call this also ends the generation's record (a transformer's own loop resets
        between generations)."""
        self.cache.clear()
        self.cache_step.clear()
        self.older.clear()
        self.cached_bytes = 0
        self.fused.clear()
        if self.text_cache is not None:
            self.text_cache.state.clear()
        if self.guidance_hook is not None:
            self.guidance_hook.delta = None
        self.guidance_rows = None
        if self.steps_done:
            self.last_steps_done = dict(self.steps_done)
        self.steps_done.clear()
        self.step, self.branch = 0, DEFAULT_BRANCH
        self._step_record = None
        if self.record is not None and not self.in_call:
            self.record.closed = True

    def begin(self) -> None:
        self.in_call = False
        self.clear()
        self.last_steps_done: dict[str, int] = {}
        self.active = True
        self.record = CallRecord(self.schedule, by_pipeline=True, started=time.perf_counter())
        self.in_call = True

    def end(self) -> None:
        if self.in_call and self.record is not None:
            self.record.finished = time.perf_counter()
        self.in_call = False
        self.clear()
        self.active = self.always_active

    def after_transformer_call(self) -> None:
        if self.record is not None and not self.record.by_pipeline:
            self.record.finished = time.perf_counter()

    def on_transformer_call(self, branch: str) -> None:
        step = self.steps_done.get(branch, 0)
        if step >= self.plan.num_steps:
            raise ScheduleError(
                f"the transformer was called for more than the schedule's {self.plan.num_steps} steps"
                + ("" if branch == DEFAULT_BRANCH else f" in cache context {branch!r}")
                + "; run exactly that many steps (a scheduled pipeline sets the count itself: do not pass "
                "num_inference_steps), and start each generation of your own loop with ecad.reset_schedule"
                "(transformer) or the registry's reset_stateful_hooks()"
            )
        self.steps_done[branch] = step + 1
        self.step, self.branch = step, branch
        if self.record is None or self.record.closed:  # a transformer's own loop: its first call
            self.record = CallRecord(self.schedule, by_pipeline=False, started=time.perf_counter())
        shape = self.plan.compute.shape[1:]
        self._step_record = StepRecord(
            step,
            np.zeros(shape, dtype=bool),
            np.zeros(shape, dtype=bool),
            text_kv=np.zeros(shape, dtype=bool) if self.text_cache is not None else None,
            forecast=np.zeros(shape, dtype=bool) if self.plan.forecast is not None else None,
        )
        self.record.steps.setdefault(branch, []).append(self._step_record)


class TransformerStepHook(CacheContextListener):
    """Advances the step counter of the call's branch; clears the state if a call raises."""

    def __init__(self, state: ScheduleState):
        super().__init__()
        self.state = state

    def new_forward(self, module: nn.Module, *args, **kwargs):
        state = self.state
        if not state.active:
            return self.fn_ref.original_forward(*args, **kwargs)
        try:
            state.on_transformer_call(self.branch())
            out = self.fn_ref.original_forward(*args, **kwargs)
        except BaseException:
            state.clear()
            raise
        state.after_transformer_call()
        return out

    def reset_state(self, module: nn.Module) -> nn.Module:
        self.state.clear()
        return module


class BlockReuseHook(ModelHook):
    """When some component of the block is reused, run the family's block path with the cached
    outputs (reused components' norms skipped); in a folded run of fully reused steps, the first
    block produces the whole step's output and the others pass their input through. Each path is
    checked against the stock forward on its first real call (ecad.cache.check)."""

    def __init__(
        self,
        state: ScheduleState,
        block_index: int,
        group: BlockGroup,
        path: BlockPath | None,
        arg_names: tuple[str, ...],
        blocks: list[tuple[nn.Module, BlockGroup]],
    ):
        super().__init__()
        self.state, self.block_index, self.group, self.path = state, block_index, group, path
        self.arg_names = arg_names
        self.blocks = blocks  # every block of the transformer with its group, in layout order (fused path)

    def new_forward(self, module: nn.Module, *args, **kwargs):
        state = self.state
        if state.active and self.block_index == 0:
            bound = dict(zip(self.arg_names, args))
            hidden = kwargs.get("hidden_states", bound.get("hidden_states", args[0] if args else None))
            state.saw_block_input(hidden, kwargs.get("encoder_hidden_states", bound.get("encoder_hidden_states")))
        if not state.active or not state.block_path[state.step, self.block_index] or self.path is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        if state.fold[state.step] and self.block_index != 0:
            return args[0] if args else kwargs["hidden_states"]  # block 0 added every block's contribution
        if args:  # bind positionals to names so block paths read kwargs only
            kwargs = {**dict(zip(self.arg_names, args)), **kwargs}
        if state.fold[state.step]:
            return self._fused_step(kwargs)
        b, plan = self.block_index, state.plan
        cached = {
            name: state.take(b, c) for c, name in enumerate(state.components[b]) if not plan.compute[state.step, b, c]
        }
        adapter, mode = state.adapter, "exact" if state.exact else "fast"
        key = check.check_key(adapter, module, self.group, kwargs, mode)
        verdict = check.VERDICTS.get(key)
        if verdict is False:  # the path did not agree with this block: reuse through the stock forward
            return check.stock_with_outputs(adapter, module, self.group, kwargs, cached)
        out = self.path.fn(module, kwargs, cached, state.exact)
        if verdict is None:  # first real call of its kind: the stock forward beside it, same arguments and outputs
            reference = check.stock_with_outputs(adapter, module, self.group, kwargs, cached)
            if not check.record(key, check.agrees(out, reference, state.exact), "block path"):
                return reference
        return out

    def _fused_step(self, kwargs):
        state, s, branch = self.state, self.state.step, self.state.branch
        plan, adapter = state.plan, state.adapter
        block, group = self.blocks[0]
        # the fold assumes every block's maths: its verdict holds for this exact sequence of block classes
        key = check.check_key(adapter, block, group, kwargs, "fold") + (tuple(type(m) for m, _ in self.blocks),)
        verdict = check.VERDICTS.get(key)
        consts = state.fused.pop(branch, None)
        cached = None
        if consts is None:  # first step of a run of fully reused steps: fold the cache once
            cached = [
                {name: state.cache[(b, c, branch)] for c, name in enumerate(names)}
                for b, names in enumerate(state.components)
            ]
            if verdict is not False:
                consts = adapter.step_reuse_prepare([m for m, _ in self.blocks], cached)
        out = None if consts is None else adapter.step_reuse_apply([m for m, _ in self.blocks], kwargs, consts)
        if verdict is not True and cached is not None:  # unchecked, or known to differ: block by block
            reference = kwargs["hidden_states"]
            for (module, grp), outputs in zip(self.blocks, cached):
                reference = check.stock_with_outputs(
                    adapter, module, grp, {**kwargs, "hidden_states": reference}, outputs
                )
            if verdict is False or not check.record(key, check.agrees(out, reference, False), "folded steps"):
                state.fold[s + 1 :] = False  # this step's other blocks still pass through; later steps do not fold
                out, consts = reference, None
        state.all_reused()
        for b, c in zip(*np.nonzero(plan.drop[s])):  # keep the per-component bookkeeping exact
            state.uncache((int(b), int(c), branch))
        if consts is not None and s + 1 < plan.num_steps and state.fold[s + 1]:
            state.fused[branch] = consts  # the next step reuses the same folded sums
        return out


class ComponentCacheHook(ModelHook):
    """Compute (and keep, if a later step reuses it) or return the cached output."""

    def __init__(self, state: ScheduleState, block_index: int, component_index: int):
        super().__init__()
        self.state, self.b, self.c = state, block_index, component_index

    def new_forward(self, module: nn.Module, *args, **kwargs):
        state = self.state
        if not state.active:
            return self.fn_ref.original_forward(*args, **kwargs)
        s, plan = state.step, state.plan
        if plan.compute[s, self.b, self.c]:
            out = self.fn_ref.original_forward(*args, **kwargs)
            state.computed(self.b, self.c)
            if plan.keep[s, self.b, self.c]:
                state.store(self.b, self.c, out)
            return out
        return state.take(self.b, self.c)


def _rows_from(out: Any, start: int) -> Any:
    """Rows `start:` of every tensor of a component's output (its conditional half)."""
    if isinstance(out, torch.Tensor):
        return out[start:]
    if isinstance(out, (tuple, list)):
        return type(out)(_rows_from(o, start) for o in out)
    return out


def _full_rows(held: Any, cond: Any, rows: int) -> Any:
    """A conditional-rows output made whole for later full-batch steps: the unconditional rows of
    the output held before (its last full computation), or, with none held, the conditional rows."""
    if isinstance(cond, torch.Tensor):
        uncond = held[:rows] if isinstance(held, torch.Tensor) and held.shape[0] == 2 * rows else cond
        return torch.cat([uncond, cond])
    if isinstance(cond, (tuple, list)):
        helds = held if isinstance(held, (tuple, list)) else [None] * len(cond)
        return type(cond)(_full_rows(h, c, rows) for h, c in zip(helds, cond))
    return cond


def extrapolate(positions: list[int], outputs: list[Any], at: int) -> Any:
    """The polynomial through (positions[i], outputs[i]) evaluated at `at` (Lagrange form: first
    order with two points is y1 + (y1 - y0) (at - p1) / (p1 - p0), TaylorSeer's first-order
    forecast); tensors of tuple/list outputs are extrapolated one by one, anything else is the
    latest output's."""
    weights = []
    for i, p in enumerate(positions):
        w = 1.0
        for j, q in enumerate(positions):
            if j != i:
                w *= (at - q) / (p - q)
        weights.append(w)
    return _combine(outputs, weights)


def _combine(outputs: list[Any], weights: list[float]) -> Any:
    latest = outputs[-1]
    if isinstance(latest, torch.Tensor):
        out = latest * weights[-1]
        for o, w in zip(outputs[:-1], weights[:-1]):
            out = out.add(o, alpha=w)
        return out
    if isinstance(latest, (tuple, list)):
        return type(latest)(_combine([o[i] for o in outputs], weights) for i in range(len(latest)))
    return latest


# ----------------------------------------------------------------------- install
@dataclass
class Installation:
    """What a schedule hooked on one transformer (kept on it as `_ecad_installation`), so removing
    and re-installing touch exactly that."""

    transformer: nn.Module
    state: ScheduleState
    by_pipeline: bool = False  # applied through a pipeline (which brackets its calls), else to the transformer
    modules: list[tuple[nn.Module, str]] = field(default_factory=list)  # (module, hook name)
    components: list[list[nn.Module]] = field(default_factory=list)  # per block: swapped-in modules show
    text_kv_applied: bool = False  # the text K/V cache was asked for at install (joint-attention families hook nothing)

    def component_modules(self) -> list[list[nn.Module]]:
        adapter, layout = self.state.adapter, self.state.schedule.layout
        out = []
        for group, i in layout.blocks():
            mods = adapter.component_modules(getattr(self.transformer, group.name)[i], group)
            out.append([mods[name] for name in group.components])
        return out

    def install(self) -> Installation:
        state, transformer = self.state, self.transformer
        adapter, layout = state.adapter, state.schedule.layout

        def register(module: nn.Module, hook: ModelHook, name: str) -> None:
            HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
            self.modules.append((module, name))

        if doubles_guidance_batch(adapter):
            config = GuidanceReuseConfig(
                skip=state.skips_unconditional,
                inputs=adapter.cfg_batched_inputs,
                begin=state.begin_conditional_only,
                end=state.end_conditional_only,
                needed=lambda: state.plan.guidance_reuse is not None,
            )
            state.guidance_hook = apply_guidance_reuse(transformer, config)  # inside the step hook: sees its step
            self.modules.append((transformer, GUIDANCE_HOOK))
        register(transformer, TransformerStepHook(state), STEP_HOOK)
        self.components = self.component_modules()
        blocks = [(getattr(transformer, group.name)[i], group) for group, i in layout.blocks()]
        state.set_paths([adapter.block_path(block, group) for block, group in blocks])  # checked on real calls
        for b, (block, group) in enumerate(blocks):
            arg_names = tuple(inspect.signature(type(block).forward).parameters)[1:]
            register(block, BlockReuseHook(state, b, group, state.paths[b], arg_names, blocks), BLOCK_HOOK)
            for c, module in enumerate(self.components[b]):
                register(module, ComponentCacheHook(state, b, c), COMPONENT_HOOK)
        self.text_kv_applied = state.text_kv_cache
        if state.text_kv_cache:
            state.text_cache = apply_text_kv_cache(
                transformer, TextKVCacheConfig(on_compute=state.text_computed), adapter
            )
        HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
        transformer._ecad_installation = self
        return self

    def uninstall(self) -> None:
        self.state.guidance_hook = None
        if self.state.text_cache is not None:
            self.state.text_cache.remove()
            self.state.text_cache = None
        # outermost first: diffusers' remove_hook re-links a hook's outer neighbour by `forward`, which a
        # new_forward hook does not call (it calls `original_forward`), so only the last hook is removed cleanly
        for module, name in reversed(self.modules):
            registry = getattr(module, "_diffusers_hook", None)
            if registry is not None:
                registry.remove_hook(name, recurse=False)
        self.modules.clear()
        registry = getattr(self.transformer, "_diffusers_hook", None)
        if registry is not None:
            registry.invalidate_child_registries_cache()
        if getattr(self.transformer, "_ecad_installation", None) is self:
            del self.transformer._ecad_installation

    def refresh(self) -> None:
        """Re-install if a component module was replaced (e.g. a LoRA loaded after the schedule
        wraps Linear layers), so the hooks sit on what runs."""
        now = self.component_modules()
        text_kv_changed = self.state.text_kv_cache != self.text_kv_applied
        if text_kv_changed or any(a is not b for new, old in zip(now, self.components) for a, b in zip(new, old)):
            self.uninstall()
            self.install()


def installation_of(transformer: nn.Module) -> Installation | None:
    return getattr(transformer, "_ecad_installation", None)


def check_layout(adapter: FamilyAdapter, transformer: nn.Module, schedule: Schedule) -> None:
    if schedule.family != adapter.family:
        raise ScheduleError(
            f"this schedule is for the {schedule.family!r} family but the model is {adapter.family!r}; "
            f"load a schedule searched for this model"
        )
    actual = adapter.layout_of(transformer)
    if actual != schedule.layout:
        raise ScheduleError(
            f"schedule layout {schedule.layout.describe()} does not match the pipeline's transformer "
            f"{actual.describe()}; load a schedule searched for this model"
        )


# -------------------------------------------------------------- transformer API
def apply_schedule_to_transformer(
    transformer: nn.Module, schedule: Schedule, exact: bool = False, text_kv_cache: bool = True
) -> nn.Module:
    """Make the transformer follow `schedule` in your own denoising loop: call it once per step
    (per guidance branch: inside `transformer.cache_context(name)` where the model has it, or the
    CFG rows in one batch), then `reset_schedule(transformer)` before the next generation.
    Applying again swaps the schedule in place. Returns the transformer. `text_kv_cache` (on by
    default, lossless) computes cross-attention's text keys and values once per generation and
    branch (ecad.cache.text_kv); pass the same text tensor at every step to benefit."""
    adapter = adapter_for_transformer(transformer)
    check_layout(adapter, transformer, schedule)
    installed = installation_of(transformer)
    if installed is not None and installed.by_pipeline:
        raise ScheduleError(
            "this transformer follows a schedule applied to its pipeline; call ecad.remove_schedule "
            "on that pipeline first"
        )
    if installed is not None:
        installed.state.set_schedule(schedule, exact)
        installed.state.text_kv_cache = text_kv_cache
        installed.state.clear()
        installed.refresh()
        return transformer
    state = ScheduleState(schedule, adapter, exact, always_active=True, text_kv_cache=text_kv_cache)
    Installation(transformer, state).install()
    return transformer


def reset_schedule(transformer: nn.Module) -> None:
    """Start the next generation: forget cached outputs and step counts."""
    installed = installation_of(transformer)
    if installed is not None:
        installed.state.clear()


def remove_schedule_from_transformer(transformer: nn.Module) -> None:
    installed = installation_of(transformer)
    if installed is not None:
        installed.state.clear()
        installed.uninstall()
