"""The search's live progress display: what a user watches while a run works.

On a terminal it is a rich progress bar per generation (candidates done of the generation's
total, the evaluation rate, ETA, images generated and candidates racing stopped, worker states,
frontier size and hypervolume). Anywhere else
(a log file, CI, a pipe) it is one timestamped plain line per generation, so a log reads as a
history rather than a smear of carriage returns. The rate excludes start-up: its clock starts
when the first generation starts evaluating, not when the workers began loading the model.
"""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

import numpy as np


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    """Counts the search reports (evaluations done, generation, frontier, hypervolume, workers)
    and shows them: a rich live view on a terminal, timestamped lines otherwise."""

    def __init__(self, total_gens: int, quiet: bool = False, stream: TextIO | None = None):
        self.total_gens, self.quiet = total_gens, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = time.perf_counter()
        self.rate_t0: float | None = None  # first evaluation's start: the rate leaves start-up out
        self.rate_evals0 = 0
        self.evals = 0
        self.gen = 0
        self.frontier = 0
        self.hv = 0.0
        self.workers = ""
        self.images = 0  # images generated for candidates, whole run
        self.stopped: int | None = None  # candidates racing stopped early; None: racing is off
        self.gen_times: list[float] = []
        self.running: int | None = None  # the generation being evaluated
        self.gen_total: int | None = None  # how many candidates it evaluates
        self.gen_evals0 = 0  # `evals` when it started
        self._live: Any = None  # rich.progress.Progress while a terminal view is shown
        self._task: Any = None

    # ------------------------------------------------------------ what the run reports
    def generation_started(self, generation: int, candidates: int) -> None:
        """A generation begins evaluating `candidates` new genomes (its bar's total)."""
        if self.rate_t0 is None:
            self.rate_t0, self.rate_evals0 = time.perf_counter(), self.evals
        self.running, self.gen_total, self.gen_evals0 = generation, candidates, self.evals
        if self._live is not None:
            self._live.reset(self._task, total=candidates, description=self._description(self.running))
        self.update()

    def rate(self) -> float:
        """Evaluations per second since the first generation started (start-up excluded)."""
        if self.rate_t0 is None:
            return 0.0
        elapsed = time.perf_counter() - self.rate_t0
        return (self.evals - self.rate_evals0) / elapsed if elapsed > 0 else 0.0

    def eta_s(self) -> float | None:
        """Seconds left: remaining generations at the mean generation time so far."""
        if not self.gen_times:
            return None
        return (self.total_gens - self.gen) * float(np.mean(self.gen_times))

    # ------------------------------------------------------------------- display
    def _description(self, generation: int | None = None) -> str:
        return f"gen {self.gen if generation is None else generation}/{self.total_gens}"

    def _status(self) -> str:
        eta = self.eta_s()
        stopped = f" ({self.stopped} stopped early)" if self.stopped is not None else ""
        return (
            f"{self.rate():.2f} evals/s"
            + (f" | ETA {_clock(eta)}" if eta is not None else "")
            + f" | images {self.images}{stopped}"
            + f" | workers {self.workers} | frontier {self.frontier} | HV {self.hv:.4f}"
        )

    def line(self) -> str:
        """The plain status line (what a log gets once per generation)."""
        return f"{self._description()} | evals {self.evals} | {self._status()}"

    def _start_live(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as RichProgress

        self._live = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("candidates | {task.fields[status]}"),
            console=Console(file=self.stream),
            transient=False,
        )
        # total None (a generation whose size was not announced): an indeterminate bar
        self._task = self._live.add_task(self._description(self.running), total=self.gen_total, status=self._status())
        self._live.start()

    def update(self, final: bool = False) -> None:
        if self.quiet:
            return
        if not self.tty:
            if final:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S")
                print(f"[{stamp}] {self.line()}", file=self.stream, flush=True)
            return
        if self._live is None:
            self._start_live()
        done = self.evals - self.gen_evals0
        self._live.update(
            self._task,
            completed=min(done, self.gen_total) if self.gen_total is not None else done,
            status=self._status(),
        )

    def close(self) -> None:
        """End the display (a live terminal view leaves its last state on screen)."""
        if self._live is not None:
            self._live.update(self._task, status=self._status())
            self._live.stop()
            self._live = None


def workers_text(pool) -> str:
    """'3 busy/4', plus slots waiting for the cluster and workers replaced, so a user sees a lost or sick node."""
    states = [w.state for w in pool.workers]
    restarts = sum(w.restarts for w in pool.workers)
    extras = [f"{states.count('waiting')} waiting"] if "waiting" in states else []
    if restarts:
        extras.append(f"{restarts} restart{'' if restarts == 1 else 's'}")
    return f"{states.count('busy')} busy/{len(states)}" + (f" ({', '.join(extras)})" if extras else "")
