"""`ecad.summary(pipe)`: what the last call of a scheduled pipeline (or transformer) did.

Everything here is measured by ecad's hooks during the call (ecad.cache.hooks `CallRecord`): which
components ran their forward and which were served from the cache, per transformer call; the
batch rows and tokens the first block saw; the most bytes the cache held; the wall-clock time. MACs
are those counts priced by ecad's MACs model (the family's `group_macs` / `fixed_macs` for the
transformer's config, at the tokens the call really had: the same model as `schedule_macs`, which
prices a schedule from its grid instead), so under a schedule the two agree. A computed
cross-attention's text K/V projections are priced only where the hooks saw them run (once per call
and branch under the text K/V cache).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import nn

from ecad.cache.hooks import CallRecord, installation_of
from ecad.models.base import Tokens, TransformerDims, block_costs, text_kv_costs
from ecad.schedule import ScheduleError

__all__ = ["StepSummary", "Summary", "summary"]


@dataclass(frozen=True)
class StepSummary:
    """One transformer call: one executed step of one guidance branch."""

    branch: str
    step: int  # index in the schedule's base grid
    computed: int  # components whose forward ran
    reused: int  # components served from the cache
    components: int  # components of the transformer (padding cells not counted)
    block_macs: float  # MACs of the computed components
    all_block_macs: float  # MACs of every component (no caching)
    macs: float  # block_macs plus the fixed part (embedders, modulation, head)

    @property
    def component_fraction(self) -> float:
        return self.computed / self.components if self.components else 1.0

    @property
    def block_macs_fraction(self) -> float:
        return self.block_macs / self.all_block_macs if self.all_block_macs else 1.0


@dataclass(frozen=True)
class Summary:
    """The last call of a scheduled pipeline or transformer, as ecad's hooks measured it.

    Fractions are relative to running all `num_steps` base steps uncached at the call's batch and
    resolution (as `Schedule.compute_fraction` and `schedule_macs` count); `speedup_bound` is the
    speed-up if time were proportional to MACs. `seconds` is measured wall-clock time: the pipeline
    call, or for a transformer scheduled directly, from its generation's first call to its last."""

    schedule_name: str
    num_steps: int  # base-grid steps of the schedule
    executed_steps: int  # transformer calls per guidance branch (the most of any branch)
    branches: tuple[str, ...]  # guidance branches seen (cache contexts; "default" outside any)
    steps: tuple[StepSummary, ...]  # every transformer call, branch by branch in order
    rows: int  # batch rows the transformer ran (per call, first call)
    image_tokens: int | None
    text_tokens: int | None
    computed: int  # component outputs computed over the call
    cache_hits: int  # component outputs served from the cache over the call
    component_fraction: float
    macs: float  # MACs computed over the call
    full_macs: float  # MACs of all base steps uncached, every branch
    peak_cached_bytes: int
    seconds: float
    timed: str  # what `seconds` measured

    @property
    def macs_fraction(self) -> float:
        return self.macs / self.full_macs if self.full_macs else 1.0

    @property
    def speedup_bound(self) -> float:
        return self.full_macs / self.macs if self.macs else float("inf")

    @property
    def block_macs_fraction(self) -> float:
        """Share of block MACs computed (the fixed part excluded), over the executed calls."""
        done = sum(s.block_macs for s in self.steps)
        every = sum(s.all_block_macs for s in self.steps)
        return done / every if every else 1.0

    def __str__(self) -> str:
        name = self.schedule_name or "(unnamed schedule)"
        branches = ", ".join(self.branches)
        tokens = f"{self.image_tokens} image" + (f" + {self.text_tokens} text" if self.text_tokens else "")
        lines = [
            f"ecad summary: schedule {name}, {self.executed_steps} of {self.num_steps} steps run, "
            f"{len(self.branches)} guidance branch(es) ({branches}); batch rows {self.rows}, tokens {tokens}",
        ]
        many = len(self.branches) > 1
        head = f"  {'step':>4}  " + (f"{'branch':<10}  " if many else "") + f"{'components':>16}  {'block MACs':>10}"
        lines.append(head)
        for s in self.steps:
            branch = f"{s.branch[:10]:<10}  " if many else ""
            lines.append(
                f"  {s.step:>4}  {branch}{s.computed:>4}/{s.components:<4} {s.component_fraction:>6.1%}"
                f"  {s.block_macs_fraction:>10.1%}"
            )
        lines += [
            f"  components computed: {self.component_fraction:.1%} ({self.computed} computed, "
            f"{self.cache_hits} cache hits)",
            f"  transformer MACs computed: {self.macs_fraction:.1%} of the stock pipeline's ({self.macs / 1e9:.4g} of "
            f"{self.full_macs / 1e9:.4g} GMACs); speed-up bound {self.speedup_bound:.2f}x",
            f"  peak cached: {_size(self.peak_cached_bytes)}",
            f"  time: {self.seconds:.3f} s measured ({self.timed})",
        ]
        return "\n".join(lines)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


def _installation(target: Any):
    """The Installation of a scheduled pipeline or transformer, else None."""
    if isinstance(target, nn.Module):
        return installation_of(target)
    handle = getattr(target, "_ecad_handle", None)
    if handle is not None:
        return handle.installation
    transformer = getattr(target, "transformer", None)
    return installation_of(transformer) if isinstance(transformer, nn.Module) else None


def summary(target: Any) -> Summary:
    """What the last call of `target` (a pipeline given to `ecad.apply_schedule`, or a transformer
    scheduled directly) computed and reused, its peak cache memory and its measured time."""
    installed = _installation(target)
    if installed is None:
        raise ScheduleError(
            f"no ecad schedule is applied to this {type(target).__name__}; call ecad.apply_schedule first"
        )
    record: CallRecord | None = installed.state.record
    if record is None or not any(record.steps.values()):
        raise ScheduleError(
            "no scheduled call has run yet: call the pipeline first (or, for a transformer scheduled "
            "directly, run your denoising loop), then ask for its summary"
        )
    return summarise(record, installed.state.adapter, installed.transformer)


def summarise(record: CallRecord, adapter: Any, transformer: nn.Module) -> Summary:
    schedule = record.schedule
    layout = schedule.layout
    mask = layout.cell_mask()
    cells = int(mask.sum())
    dims = TransformerDims.from_transformer(transformer)  # vae scale and text length: the call's tokens instead
    prices: dict[Tokens, tuple[np.ndarray, np.ndarray, float]] = {}

    def price(tokens: Tokens) -> tuple[np.ndarray, np.ndarray, float]:
        if tokens not in prices:  # per batch row: [blocks, components] (all, text K/V part) and the fixed part
            prices[tokens] = (
                block_costs(adapter, dims, layout, tokens, True),
                text_kv_costs(adapter, dims, layout, tokens),
                float(adapter.fixed_macs(dims, tokens)),
            )
        return prices[tokens]

    executed = schedule.executed_steps
    steps: list[StepSummary] = []
    full = 0.0
    for branch, calls in record.steps.items():
        branch_full = 0.0
        full_rows = max((c.rows for c in calls), default=0)  # a call that skipped the unconditional rows ran fewer
        for call in calls:
            tokens = Tokens(call.image_tokens or 0, call.text_tokens or dims.text_len)
            cost, kv, fixed = price(tokens)
            cost, kv, fixed = call.rows * cost, call.rows * kv, call.rows * fixed
            computed, reused = call.computed & mask, call.reused & mask
            text = computed if call.text_kv is None else call.text_kv & mask
            block = float((cost - kv)[computed].sum() + kv[text].sum())
            every = float(cost.sum())
            steps.append(
                StepSummary(
                    branch=branch,
                    step=executed[call.step] if call.step < len(executed) else call.step,
                    computed=int(computed.sum()),
                    reused=int(reused.sum()),
                    components=cells,
                    block_macs=block,
                    all_block_macs=every,
                    macs=block + fixed,
                )
            )
            branch_full += (every + fixed) * (full_rows / call.rows if call.rows else 1.0)
        full += branch_full * schedule.num_steps / len(calls) if calls else 0.0  # all base steps uncached
    first = steps[0]
    first_call = next(c for calls in record.steps.values() for c in calls)
    branches = tuple(record.steps)
    return Summary(
        schedule_name=schedule.name,
        num_steps=schedule.num_steps,
        executed_steps=max(len(c) for c in record.steps.values()),
        branches=branches,
        steps=tuple(steps),
        rows=first_call.rows,
        image_tokens=first_call.image_tokens,
        text_tokens=first_call.text_tokens,
        computed=sum(s.computed for s in steps),
        cache_hits=sum(s.reused for s in steps),
        component_fraction=sum(s.computed for s in steps) / (len(branches) * schedule.num_steps * first.components),
        macs=sum(s.macs for s in steps),
        full_macs=full,
        peak_cached_bytes=record.peak_cached_bytes,
        seconds=record.seconds,
        timed="pipeline call" if record.by_pipeline else "transformer calls, first to last",
    )
