"""`ecad.apply_schedule` on a stock diffusers pipeline: the transformer's schedule hooks
(ecad.cache.hooks) plus, around every call, the step count (or step subset) the schedule was
searched for and a fresh generation state.

The pipeline keeps its class name and signature: a same-named subclass wraps `__call__`, so
LoRA loading, `torch.compile`, offloading and everything else of the stock pipeline still work.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
from typing import Any

from torch import nn

from ecad.cache.hooks import (
    Installation,
    ScheduleState,
    apply_schedule_to_transformer,
    check_layout,
    installation_of,
    remove_schedule_from_transformer,
)
from ecad.catalog import builtin_schedule, shipped_schedule
from ecad.models import adapter_for_pipeline
from ecad.schedule import Schedule, ScheduleError

logger = logging.getLogger(__name__)

_WRAPPED_CLASSES: dict[type, type] = {}


def _scheduled_class(cls: type) -> type:
    """A same-named subclass of the *pipeline* whose __call__ brackets every call with the
    schedule's state (fresh on entry, cleared on exit, also on error). Cached per class, so
    swapping schedules a thousand times creates nothing new."""
    if cls in _WRAPPED_CLASSES:
        return _WRAPPED_CLASSES[cls]

    signature = inspect.signature(cls.__call__)

    def __call__(self, *args, **kwargs):
        handle: _Handle = self._ecad_handle
        if args:  # by name, so the step count checks see every argument
            kwargs = _as_kwargs(signature, self, args, kwargs)
        kwargs, context = handle.call_kwargs(self, kwargs)
        handle.refresh(self)
        state = handle.state
        state.begin()
        try:
            with context:
                out = cls.__call__(self, **kwargs)
            expected, done = state.plan.num_steps, state.steps_done or state.last_steps_done
            if not done or any(n != expected for n in done.values()):
                logger.warning(
                    "the pipeline made %s transformer calls per guidance branch where the schedule "
                    "expects %d in each; its steps did not line up with the schedule's",
                    dict(done) or 0,
                    expected,
                )
            return out
        finally:
            state.end()

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

    def __init__(self, installation: Installation, builtin: str | None = None, exact: bool = False):
        self.installation = installation
        self.builtin, self.exact = builtin, exact  # a built-in name is re-made for each call's step count

    @property
    def state(self) -> ScheduleState:
        return self.installation.state

    def refresh(self, pipe) -> None:
        """Follow a swapped-in transformer (same layout) or component module (a LoRA loaded after
        apply_schedule wraps Linear layers), so the hooks sit on what runs."""
        if pipe.transformer is not self.installation.transformer:
            check_layout(self.state.adapter, pipe.transformer, self.state.schedule)
            self.installation.uninstall()
            self.installation = Installation(pipe.transformer, self.state, by_pipeline=True).install()
        else:
            self.installation.refresh()

    def call_kwargs(self, pipe, kwargs: dict) -> tuple[dict, Any]:
        """The call's arguments with the step count (or timestep subset) the schedule was searched
        for, and the context to run the call in (a scheduler that keeps only the chosen steps)."""
        self.state.adapter.check_call(pipe, kwargs)
        if self.builtin is not None:  # made for this call's step count
            given = next((kwargs[k] for k in ("timesteps", "sigmas") if kwargs.get(k) is not None), None)
            steps = len(given) if given is not None else kwargs.get("num_inference_steps") or _default_steps(pipe)
            if steps != self.state.schedule.num_steps:
                layout = self.state.schedule.layout
                self.state.set_schedule(builtin_schedule(self.builtin, layout, steps), self.exact)
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


# --------------------------------------------------------------------- public API
def apply_schedule(target, schedule: Schedule | str, exact: bool = False, text_kv_cache: bool = True):
    """Make every later `pipe(...)` call follow `schedule`; given a transformer instead, make it
    follow the schedule in your own denoising loop (`apply_schedule_to_transformer`). Applying
    again swaps the schedule in place (no new hooks); `remove_schedule` restores the stock model.
    Returns `target`.

    `schedule` may be a name (ecad.catalog): a built-in such as "every-3", "tgate" or "delta-dit",
    made for the pipeline's own layout and, at every call, for the call's step count; or a shipped
    searched schedule "SPACE:LABEL".

    By default reused outputs are added back with fused multiply-adds, and on PixArt and Sana a run
    of two or more steps where every block is fully reused becomes a few element-wise ops on sums
    folded once per run (same maths; results differ from block-by-block reuse only by float
    rounding). `exact=True` keeps the stock block's op order: results bit-identical to running
    diffusers' blocks with the cached outputs.

    `text_kv_cache` (on by default; lossless, bit-identical) computes cross-attention's keys and
    values of the text once per call and guidance branch instead of at every step (PixArt, Sana,
    Wan; FLUX and SD3 use joint attention, where it does nothing). `False` is for comparisons."""
    builtin = None
    if isinstance(schedule, str):
        if ":" in schedule:
            schedule = shipped_schedule(schedule)
        elif isinstance(target, nn.Module):
            raise ScheduleError(
                f"a transformer alone does not say how many steps you run; build the schedule with "
                f"ecad.builtin_schedule({schedule!r}, layout, steps) and apply that"
            )
        else:
            builtin = schedule
            layout = adapter_for_pipeline(target).layout_of(target.transformer)
            schedule = builtin_schedule(builtin, layout, _default_steps(target))
    if isinstance(target, nn.Module):
        return apply_schedule_to_transformer(target, schedule, exact, text_kv_cache)
    pipe = target
    adapter = adapter_for_pipeline(pipe)
    check_layout(adapter, pipe.transformer, schedule)
    handle: _Handle | None = getattr(pipe, "_ecad_handle", None)
    if handle is not None and handle.state.adapter is adapter:
        handle.state.set_schedule(schedule, exact)
        handle.state.text_kv_cache = text_kv_cache
        handle.builtin, handle.exact = builtin, exact
        handle.refresh(pipe)
        return pipe
    if handle is not None:
        remove_schedule(pipe)
    installed = installation_of(pipe.transformer)
    if installed is not None:
        raise ScheduleError(
            "this pipeline's transformer already follows a schedule "
            + (
                "applied to another pipeline that shares it; call ecad.remove_schedule on that pipeline"
                if installed.by_pipeline
                else "applied to the transformer itself; call ecad.remove_schedule(transformer)"
            )
            + " first"
        )
    state = ScheduleState(schedule, adapter, exact, text_kv_cache=text_kv_cache)
    installation = Installation(pipe.transformer, state, by_pipeline=True).install()
    pipe._ecad_handle = _Handle(installation, builtin, exact)
    pipe.__class__ = _scheduled_class(type(pipe))
    return pipe


def _default_steps(pipe) -> int:
    """The step count a call runs when it is not given: the pipeline's own default."""
    default = inspect.signature(type(pipe).__call__).parameters.get("num_inference_steps")
    if default is None or not isinstance(default.default, int):
        raise ScheduleError(f"{type(pipe).__name__} has no default step count; apply a Schedule instead of a name")
    return default.default


def remove_schedule(target) -> None:
    """Remove ecad's hooks (and a pipeline's wrapper); a model with no schedule is left as it is."""
    if isinstance(target, nn.Module):
        remove_schedule_from_transformer(target)
        return
    handle: _Handle | None = getattr(target, "_ecad_handle", None)
    if handle is None:
        return
    handle.state.end()
    handle.installation.uninstall()
    target.__class__ = getattr(type(target), "_ecad_base", type(target))
    del target._ecad_handle


def current_schedule(target) -> Schedule | None:
    if isinstance(target, nn.Module):
        installed = installation_of(target)
        return installed.state.schedule if installed is not None else None
    handle = getattr(target, "_ecad_handle", None)
    return handle.state.schedule if handle is not None else None
