"""The search's live progress display: what a user watches while a run works."""

from __future__ import annotations

import sys
import time

import numpy as np


class Progress:
    """One live status line on a terminal, one line per generation otherwise."""

    def __init__(self, total_gens: int, quiet: bool = False):
        self.total_gens, self.quiet = total_gens, quiet
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self.evals = 0
        self.gen = 0
        self.frontier = 0
        self.hv = 0.0
        self.workers = ""
        self.gen_times: list[float] = []

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        rate = self.evals / elapsed if elapsed > 0 else 0.0
        eta = ""
        if self.gen_times:
            remaining = (self.total_gens - self.gen) * float(np.mean(self.gen_times))
            eta = f" | ETA {int(remaining // 60):d}:{int(remaining % 60):02d}"
        return (
            f"gen {self.gen}/{self.total_gens} | evals {self.evals} ({rate:.2f}/s){eta} | workers {self.workers}"
            f" | frontier {self.frontier} | HV {self.hv:.4f}"
        )

    def update(self, final: bool = False) -> None:
        if self.quiet:
            return
        if self.tty:
            print("\r" + self.line().ljust(100), end="\n" if final else "", file=sys.stderr, flush=True)
        elif final:
            print(self.line(), file=sys.stderr, flush=True)


def workers_text(pool) -> str:
    """'3 busy/4', plus slots waiting for the cluster and workers replaced, so a user sees a lost or sick node."""
    states = [w.state for w in pool.workers]
    restarts = sum(w.restarts for w in pool.workers)
    extras = [f"{states.count('waiting')} waiting"] if "waiting" in states else []
    if restarts:
        extras.append(f"{restarts} restart{'' if restarts == 1 else 's'}")
    return f"{states.count('busy')} busy/{len(states)}" + (f" ({', '.join(extras)})" if extras else "")

    def close(self) -> None:
        """End the display (a live terminal view leaves its last state on screen)."""
