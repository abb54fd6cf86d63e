"""Apply a `Schedule` to a stock diffusers pipeline through diffusers' hook registry.

Three named hooks, all sharing one `ScheduleState` that belongs to the pipeline instance:
`ecad.step` on the transformer counts denoising steps, `ecad.block` on each block takes the
family's block path when some component is reused (skipping norms and modulation that only
feed reused components), and `ecad.component` on each cached sub-module computes-and-stores or
returns its cached output (taken before the adaLN gate, so gates, norms and modulation of
computed components are recomputed: a cached output re-gated with this step's modulation).
"""

from __future__ import annotations

import contextlib
import inspect
import itertools
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
from diffusers.hooks import HookRegistry, ModelHook
from torch import nn

from ecad.models import FamilyAdapter, adapter_for_pipeline
from ecad.models.base import BlockPath, checked_block_path
from ecad.schedule import Schedule, ScheduleError

logger = logging.getLogger(__name__)

STEP_HOOK = "ecad.step"
BLOCK_HOOK = "ecad.block"
COMPONENT_HOOK = "ecad.component"


@dataclass(frozen=True)
class CachePlan:
    """Per executed step: what to compute, what to keep for later, what to drop after use.

    Keeping only outputs that the next step reuses (and dropping each after its last reuse)
    bounds memory by what the schedule needs instead of by everything ever computed.
    """

    compute: np.ndarray  # [S, B, C] bool, executed steps only
    keep: np.ndarray  # computed at s and reused at s+1
    drop: np.ndarray  # reused at s and not reused at s+1 (last reuse)
    block_reused: np.ndarray  # [S, B] every component reused
    any_reused: np.ndarray  # [S, B] some component reused
    step_reused: np.ndarray  # [S] every block fully reused
    reused_run: np.ndarray  # [S] length of the run of fully reused steps that step s belongs to (0: none)

    @classmethod
    def from_schedule(cls, schedule: Schedule) -> "CachePlan":
        g = schedule.executed_grid()  # padding cells (ragged layouts) always compute
        reused_next = np.zeros_like(g)
        reused_next[:-1] = ~g[1:]
        block_reused = ~(g & schedule.layout.cell_mask()[None]).any(axis=2)
        step_reused = block_reused.all(axis=1)
        run, start = np.zeros(len(g), dtype=int), 0
        for reused, steps in itertools.groupby(step_reused):
            n = len(list(steps))
            run[start:start + n] = n if reused else 0
            start += n
        return cls(compute=g, keep=g & reused_next, drop=~g & ~reused_next, block_reused=block_reused,
                   any_reused=~g.all(axis=2), step_reused=step_reused, reused_run=run)

    @property
    def num_steps(self) -> int:
        return int(self.compute.shape[0])

    def max_live(self) -> int:
        """Most cached outputs alive at the end of a step (per CFG branch). Within a step a block
        can keep its new output before a later block drops its old one, so the peak may be higher
        by up to the outputs of one step."""
        live = np.cumsum(self.keep.sum(axis=(1, 2)) - self.drop.sum(axis=(1, 2)))
        return int(live.max()) if live.size else 0


class ScheduleState:
    """Mutable per-pipeline state: the plan, where the current call is, and the cache."""

    def __init__(self, schedule: Schedule, adapter: FamilyAdapter, exact: bool = False):
        self.adapter = adapter
        self.paths: list[BlockPath | None] = [None] * schedule.layout.num_blocks  # per block; set on install
        self.set_schedule(schedule, exact)
        self.cache: dict[tuple[int, int, int], Any] = {}
        self.fused: dict[int, Any] = {}  # branch -> sums folded for the next (fully reused) step
        self.active = False
        self.calls = 0
        self.calls_per_step = 1

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
        """A reused output; dropped from the cache at its last reuse."""
        key = (b, c, self.branch)
        return self.cache.pop(key) if self.plan.drop[self.step, b, c] else self.cache[key]

    def begin(self, calls_per_step: int) -> None:
        self.reset()
        self.calls_per_step = calls_per_step
        self.active = True

    def reset(self) -> None:
        self.cache.clear()
        self.fused.clear()
        self.active = False
        self.calls = 0
        self.step = 0
        self.branch = 0

    def on_transformer_call(self) -> None:
        self.step, self.branch = divmod(self.calls, self.calls_per_step)
        self.calls += 1
        if self.step >= self.plan.num_steps:
            raise ScheduleError(
                f"the pipeline ran more than the schedule's {self.plan.num_steps} steps; call it with "
                f"num_inference_steps={self.plan.num_steps} (or let ecad set it: do not pass it)"
            )


class TransformerStepHook(ModelHook):
    """Advances the step counter once per transformer call; clears the cache if a call raises."""

    def __init__(self, state: ScheduleState):
        super().__init__()
        self.state = state

    def new_forward(self, module: nn.Module, *args, **kwargs):
        state = self.state
        if not state.active:
            return self.fn_ref.original_forward(*args, **kwargs)
        try:
            state.on_transformer_call()
            return self.fn_ref.original_forward(*args, **kwargs)
        except BaseException:
            state.reset()
            raise


class BlockReuseHook(ModelHook):
    """When some component of the block is reused, run the family's block path with the cached
    outputs (reused components' norms skipped); in a folded run of fully reused steps, the first
    block produces the whole step's output and the others pass their input through."""

    def __init__(self, state: ScheduleState, block_index: int, path: BlockPath | None, arg_names: tuple[str, ...],
                 blocks: list[nn.Module]):
        super().__init__()
        self.state, self.block_index, self.path = state, block_index, path
        self.arg_names = arg_names
        self.blocks = blocks  # every block of the transformer, in layout order (fused path)

    def new_forward(self, module: nn.Module, *args, **kwargs):
        state = self.state
        if not state.active or not state.block_path[state.step, self.block_index] or self.path is None:
            return self.fn_ref.original_forward(*args, **kwargs)
        if state.fold[state.step] and self.block_index != 0:
            return args[0] if args else kwargs["hidden_states"]  # block 0 added every block's contribution
        if args:  # bind positionals to names so block paths read kwargs only
            kwargs = {**dict(zip(self.arg_names, args)), **kwargs}
        if state.fold[state.step]:
            return self._fused_step(kwargs)
        b, plan = self.block_index, state.plan
        cached = {name: state.take(b, c) for c, name in enumerate(state.components[b]) if not plan.compute[state.step, b, c]}
        return self.path.fn(module, kwargs, cached, state.exact)

    def _fused_step(self, kwargs):
        state, s, branch = self.state, self.state.step, self.state.branch
        plan, adapter = state.plan, state.adapter
        consts = state.fused.pop(branch, None)
        if consts is None:  # first step of a run of fully reused steps: fold the cache once
            cached = [{name: state.cache[(b, c, branch)] for c, name in enumerate(names)}
                      for b, names in enumerate(state.components)]
            consts = adapter.step_reuse_prepare(self.blocks, cached)
        for (b, c) in zip(*np.nonzero(plan.drop[s])):  # keep the per-component bookkeeping exact
            state.cache.pop((int(b), int(c), branch), None)
        if s + 1 < plan.num_steps and state.fold[s + 1]:
            state.fused[branch] = consts  # the next step reuses the same folded sums
        return adapter.step_reuse_apply(self.blocks, kwargs, consts)


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
            if plan.keep[s, self.b, self.c]:
                state.cache[(self.b, self.c, state.branch)] = out
            return out
        return state.take(self.b, self.c)


# ----------------------------------------------------------------------- install
@dataclass
class _Installed:
    """What apply_schedule hooked, so remove and re-install touch exactly that."""

    transformer: nn.Module
    modules: list[tuple[nn.Module, str]]  # (module, hook name)
    components: list[nn.Module]  # in (block, component) order, to notice swapped-in modules (LoRA)


def _component_list(adapter: FamilyAdapter, transformer: nn.Module, layout) -> list[list[nn.Module]]:
    out = []
    for group, i in layout.blocks():
        block = getattr(transformer, group.name)[i]
        mods = adapter.component_modules(block, group)
        out.append([mods[name] for name in group.components])
    return out


def _install(state: ScheduleState, transformer: nn.Module) -> _Installed:
    adapter, layout = state.adapter, state.schedule.layout
    hooked: list[tuple[nn.Module, str]] = []

    def register(module: nn.Module, hook: ModelHook, name: str) -> None:
        HookRegistry.check_if_exists_or_initialize(module).register_hook(hook, name)
        hooked.append((module, name))

    register(transformer, TransformerStepHook(state), STEP_HOOK)
    components = _component_list(adapter, transformer, layout)
    blocks = [getattr(transformer, group.name)[i] for group, i in layout.blocks()]
    paths = [checked_block_path(adapter, blocks[b], group) for b, (group, _) in enumerate(layout.blocks())]
    state.set_paths(paths)
    for b, block in enumerate(blocks):
        arg_names = tuple(inspect.signature(type(block).forward).parameters)[1:]
        register(block, BlockReuseHook(state, b, paths[b], arg_names, blocks), BLOCK_HOOK)
        for c, module in enumerate(components[b]):
            register(module, ComponentCacheHook(state, b, c), COMPONENT_HOOK)
    HookRegistry.check_if_exists_or_initialize(transformer).invalidate_child_registries_cache()
    return _Installed(transformer, hooked, [m for mods in components for m in mods])


def _uninstall(installed: _Installed) -> None:
    for module, name in installed.modules:
        registry = getattr(module, "_diffusers_hook", None)
        if registry is not None:
            registry.remove_hook(name, recurse=False)
    registry = getattr(installed.transformer, "_diffusers_hook", None)
    if registry is not None:
        registry.invalidate_child_registries_cache()


# ------------------------------------------------------------- pipeline wrapper
_WRAPPED_CLASSES: dict[type, type] = {}


def _scheduled_class(cls: type) -> type:
    """A same-named subclass of the *pipeline* whose __call__ brackets every call with the
    schedule's state (reset on entry and exit, also on error). Cached per class, so swapping
    schedules a thousand times creates nothing new."""
    if cls in _WRAPPED_CLASSES:
        return _WRAPPED_CLASSES[cls]

    signature = inspect.signature(cls.__call__)

    def __call__(self, *args, **kwargs):
        handle: _Handle = self._ecad_handle
        if args:  # by name, so the step count and CFG checks see every argument
            kwargs = _as_kwargs(signature, self, args, kwargs)
        kwargs, context = handle.call_kwargs(self, kwargs)
        handle.refresh(self)
        state = handle.state
        state.begin(handle.calls_per_step(self, kwargs))
        try:
            with context:
                out = cls.__call__(self, **kwargs)
            expected = state.plan.num_steps * state.calls_per_step
            if state.calls != expected:
                logger.warning("the pipeline made %d transformer calls where the schedule expects %d (%d steps x %d); "
                               "its steps did not line up with the schedule's", state.calls, expected,
                               state.plan.num_steps, state.calls_per_step)
            return out
        finally:
            state.reset()

    __call__.__doc__ = cls.__call__.__doc__
    __call__.__signature__ = signature  # type: ignore[attr-defined]
    wrapped = type(cls.__name__, (cls,), {"__call__": __call__, "__module__": cls.__module__, "_ecad_base": cls})
    wrapped.__qualname__ = cls.__qualname__
    _WRAPPED_CLASSES[cls] = wrapped
    return wrapped


def _as_kwargs(signature: inspect.Signature, pipe, args: tuple, kwargs: dict) -> dict:
    bound = signature.bind_partial(pipe, *args, **kwargs).arguments
    out: dict = {}
    for name, value in list(bound.items())[1:]:  # without self
        kind = signature.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            raise ScheduleError(f"pass {name} by name to a scheduled pipeline")
        if kind is inspect.Parameter.VAR_KEYWORD:
            out.update(value)
        else:
            out[name] = value
    return out


class _Handle:
    """Everything apply_schedule attached to one pipeline."""

    def __init__(self, state: ScheduleState, installed: _Installed):
        self.state, self.installed = state, installed

    def refresh(self, pipe) -> None:
        """Re-install if the transformer or a component module was replaced (e.g. a LoRA
        loaded after apply_schedule wraps Linear layers), so the hooks sit on what runs."""
        transformer = pipe.transformer
        if transformer is not self.installed.transformer or any(
            a is not b for a, b in zip(self._components(transformer), self.installed.components)
        ):
            _uninstall(self.installed)
            _check_layout(self.state.adapter, transformer, self.state.schedule)
            self.installed = _install(self.state, transformer)

    def _components(self, transformer) -> list[nn.Module]:
        return [m for mods in _component_list(self.state.adapter, transformer, self.state.schedule.layout) for m in mods]

    def calls_per_step(self, pipe, kwargs: dict) -> int:
        """Transformer calls per step (the family's CFG convention: a doubled batch is one call,
        separate cond/uncond branches are two)."""
        return self.state.adapter.calls_per_step(pipe, kwargs)

    def call_kwargs(self, pipe, kwargs: dict) -> tuple[dict, Any]:
        """The call's arguments with the step count (or timestep subset) the schedule was searched
        for, and the context to run the call in (a scheduler that keeps only the chosen steps)."""
        self.state.adapter.check_call(pipe, kwargs)
        schedule = self.state.schedule
        n_exec = len(schedule.executed_steps)
        user_steps = kwargs.get("num_inference_steps")
        if schedule.timesteps is not None:
            for k in ("timesteps", "sigmas"):
                if kwargs.get(k) is not None:
                    raise ScheduleError(
                        f"the schedule selects its own timesteps ({schedule.timesteps} of {schedule.num_steps}); "
                        f"do not pass {k}="
                    )
            if user_steps not in (None, schedule.num_steps, n_exec):
                raise ScheduleError(
                    f"num_inference_steps={user_steps} conflicts with the schedule's {schedule.num_steps}-step base "
                    f"grid; leave it out"
                )
            selection = self.state.adapter.select_steps(pipe, schedule.executed_steps, schedule.num_steps)
            return {**kwargs, **selection.kwargs}, selection.context()
        given = kwargs.get("timesteps") if kwargs.get("timesteps") is not None else kwargs.get("sigmas")
        n_given = len(given) if given is not None else user_steps
        if n_given is not None and n_given != schedule.num_steps:
            raise ScheduleError(
                f"the schedule was made for {schedule.num_steps} steps but this call runs {n_given}; "
                f"pass num_inference_steps={schedule.num_steps} or leave it out"
            )
        if given is None:
            kwargs = {**kwargs, "num_inference_steps": schedule.num_steps}
        return kwargs, contextlib.nullcontext()


def _check_layout(adapter: FamilyAdapter, transformer: nn.Module, schedule: Schedule) -> None:
    if schedule.family != adapter.family:
        raise ScheduleError(
            f"this schedule is for the {schedule.family!r} family but the pipeline is {adapter.family!r}; "
            f"load a schedule searched for this model"
        )
    actual = adapter.layout_of(transformer)
    if actual != schedule.layout:
        raise ScheduleError(
            f"schedule layout {schedule.layout.describe()} does not match the pipeline's transformer "
            f"{actual.describe()}; load a schedule searched for this model"
        )


# --------------------------------------------------------------------- public API
def apply_schedule(pipe, schedule: Schedule, exact: bool = False):
    """Make every later `pipe(...)` call follow `schedule`. Applying again swaps the schedule in
    place (no new hooks); `remove_schedule` restores the stock pipeline. Returns `pipe`.

    By default reused outputs are added back with fused multiply-adds, and on PixArt a run of two
    or more steps where every block is fully reused becomes a few element-wise ops on sums folded
    once per run (same maths; results differ from block-by-block reuse only by float rounding).
    `exact=True` keeps the stock block's op order: results bit-identical to running diffusers'
    blocks with the cached outputs."""
    adapter = adapter_for_pipeline(pipe)
    _check_layout(adapter, pipe.transformer, schedule)
    handle: _Handle | None = getattr(pipe, "_ecad_handle", None)
    if handle is not None and handle.state.adapter is adapter:
        handle.state.set_schedule(schedule, exact)
        handle.refresh(pipe)
        return pipe
    if handle is not None:
        remove_schedule(pipe)
    registry = getattr(pipe.transformer, "_diffusers_hook", None)
    if registry is not None and registry.get_hook(STEP_HOOK) is not None:
        raise ScheduleError("this pipeline's transformer already follows a schedule applied to another pipeline "
                            "that shares it; call ecad.remove_schedule on that pipeline first")
    state = ScheduleState(schedule, adapter, exact)
    pipe._ecad_handle = _Handle(state, _install(state, pipe.transformer))
    pipe.__class__ = _scheduled_class(type(pipe))
    return pipe


def remove_schedule(pipe) -> None:
    """Remove ecad's hooks and wrapper; a pipeline with no schedule is left as it is."""
    handle: _Handle | None = getattr(pipe, "_ecad_handle", None)
    if handle is None:
        return
    handle.state.reset()
    _uninstall(handle.installed)
    pipe.__class__ = getattr(type(pipe), "_ecad_base", type(pipe))
    del pipe._ecad_handle


def current_schedule(pipe) -> Schedule | None:
    handle = getattr(pipe, "_ecad_handle", None)
    return handle.state.schedule if handle is not None else None
