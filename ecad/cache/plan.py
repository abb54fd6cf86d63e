"""What a schedule asks of each executed step, as numpy arrays: pure, no torch, no hooks.

Keeping only outputs that a later step reuses (and dropping each after its last reuse) bounds
memory by what the schedule needs instead of by everything ever computed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from ecad.schedule import Schedule


@dataclass(frozen=True)
class CachePlan:
    """Per executed step: what to compute, what to keep for later, what to drop after use.

    Keeping only outputs that the next step reuses (and dropping each after its last reuse)
    bounds memory by what the schedule needs instead of by everything ever computed.

    Forecast cells read the component's last `order + 1` computed outputs (at least 2): an output
    is kept until the last step that reads it, as the latest or as an older point (`until`), so a
    forecast holds exactly its history and nothing after its last use.
    """

    compute: np.ndarray  # [S, B, C] bool, executed steps only
    keep: np.ndarray  # computed at s and reused at s+1
    drop: np.ndarray  # reused at s and not reused at s+1 (last reuse)
    block_reused: np.ndarray  # [S, B] every component reused
    any_reused: np.ndarray  # [S, B] some component reused
    step_reused: np.ndarray  # [S] every block fully reused
    reused_run: np.ndarray  # [S] length of the run of fully reused steps that step s belongs to (0: none)
    forecast: np.ndarray | None = None  # [S, B, C] forecast cells (None: none)
    until: np.ndarray | None = None  # [S, B, C] int: last step reading the output computed there (-1: none)
    positions: tuple[int, ...] = ()  # base-grid index of each executed step (the forecast's abscissae)
    order: int = 1  # the forecast's polynomial order (fewer points where fewer were computed)
    guidance_reuse: np.ndarray | None = None  # [S] skip the unconditional rows (None: never)

    @classmethod
    def from_schedule(cls, schedule: Schedule) -> CachePlan:
        g = schedule.executed_grid()  # padding cells (ragged layouts) always compute
        forecast = schedule.executed_forecast() if schedule.forecast is not None else None
        reused_next = np.zeros_like(g)
        reused_next[:-1] = ~g[1:]
        block_reused = ~(g & schedule.layout.cell_mask()[None]).any(axis=2)
        step_reused = block_reused.all(axis=1)
        if forecast is not None:  # a step with a forecast is not the same outputs again: it does not fold
            step_reused &= ~forecast.any(axis=(1, 2))
        guidance = schedule.executed_guidance_reuse()
        step_reused &= ~guidance  # a halved step reads half of each cached output: it does not fold
        run, start = np.zeros(len(g), dtype=int), 0
        for reused, steps in itertools.groupby(step_reused):
            n = len(list(steps))
            run[start : start + n] = n if reused else 0
            start += n
        keep, drop, until = g & reused_next, ~g & ~reused_next, None
        if forecast is not None:
            until = lifetimes(g, forecast, schedule.forecast_order)
            keep = until >= 0
            drop = np.zeros_like(g)  # the latest output's last read: where its `until` is that step
            for s, b, c in zip(*np.nonzero(~g)):
                last = _last_compute(g[: s + 1, b, c])
                drop[s, b, c] = last >= 0 and until[last, b, c] == s
        return cls(
            compute=g,
            keep=keep,
            drop=drop,
            block_reused=block_reused,
            any_reused=~g.all(axis=2),
            step_reused=step_reused,
            reused_run=run,
            forecast=forecast,
            until=until,
            positions=tuple(schedule.executed_steps),
            order=schedule.forecast_order,
            guidance_reuse=guidance if guidance.any() else None,
        )

    @property
    def num_steps(self) -> int:
        return int(self.compute.shape[0])

    def history_peak(self) -> int:
        """Most component outputs held at once at the end of a step (per CFG branch): the latest
        and the older points forecasts still need."""
        if self.until is None:
            return self.max_live()
        delta = np.zeros(self.num_steps + 1, dtype=np.int64)
        s, b, c = np.nonzero(self.until >= 0)
        np.add.at(delta, s, 1)  # alive from the end of the step that computed it ...
        np.add.at(delta, self.until[s, b, c], -1)  # ... to its last read, where it is dropped
        return int(np.cumsum(delta)[:-1].max()) if self.num_steps else 0

    def max_live(self) -> int:
        """Most cached outputs alive at the end of a step (per CFG branch). Within a step a block
        can keep its new output before a later block drops its old one, so the peak may be higher
        by up to the outputs of one step."""
        live = np.cumsum(self.keep.sum(axis=(1, 2)) - self.drop.sum(axis=(1, 2)))
        return int(live.max()) if live.size else 0


def _last_compute(column: np.ndarray) -> int:
    hits = np.flatnonzero(column)
    return int(hits[-1]) if hits.size else -1


def lifetimes(compute: np.ndarray, forecast: np.ndarray, order: int) -> np.ndarray:
    """[S, B, C] int: for each computed cell, the last executed step that reads its output (a reuse
    reads the latest computed output, a forecast the latest `order + 1`), -1 where nothing does."""
    until = np.full(compute.shape, -1, dtype=np.int64)
    steps, blocks, comps = compute.shape
    for b in range(blocks):
        for c in range(comps):
            done: list[int] = []
            for s in range(steps):
                if compute[s, b, c]:
                    done.append(s)
                elif done:
                    for point in done[-(order + 1) :] if forecast[s, b, c] else done[-1:]:
                        until[point, b, c] = s
    return until
