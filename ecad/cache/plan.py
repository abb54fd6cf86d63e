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
    """

    compute: np.ndarray  # [S, B, C] bool, executed steps only
    keep: np.ndarray  # computed at s and reused at s+1
    drop: np.ndarray  # reused at s and not reused at s+1 (last reuse)
    block_reused: np.ndarray  # [S, B] every component reused
    any_reused: np.ndarray  # [S, B] some component reused
    step_reused: np.ndarray  # [S] every block fully reused
    reused_run: np.ndarray  # [S] length of the run of fully reused steps that step s belongs to (0: none)

    @classmethod
    def from_schedule(cls, schedule: Schedule) -> CachePlan:
        g = schedule.executed_grid()  # padding cells (ragged layouts) always compute
        reused_next = np.zeros_like(g)
        reused_next[:-1] = ~g[1:]
        block_reused = ~(g & schedule.layout.cell_mask()[None]).any(axis=2)
        step_reused = block_reused.all(axis=1)
        run, start = np.zeros(len(g), dtype=int), 0
        for reused, steps in itertools.groupby(step_reused):
            n = len(list(steps))
            run[start : start + n] = n if reused else 0
            start += n
        return cls(
            compute=g,
            keep=g & reused_next,
            drop=~g & ~reused_next,
            block_reused=block_reused,
            any_reused=~g.all(axis=2),
            step_reused=step_reused,
            reused_run=run,
        )

    @property
    def num_steps(self) -> int:
        return int(self.compute.shape[0])

    def max_live(self) -> int:
        """Most cached outputs alive at the end of a step (per CFG branch). Within a step a block
        can keep its new output before a later block drops its old one, so the peak may be higher
        by up to the outputs of one step."""
        live = np.cumsum(self.keep.sum(axis=(1, 2)) - self.drop.sum(axis=(1, 2)))
        return int(live.max()) if live.size else 0
