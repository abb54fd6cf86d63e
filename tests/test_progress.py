"""The search's progress display: timestamped lines in logs, a live bar on a terminal."""

from __future__ import annotations

import io
import re
import time

from ecad.search.progress import Progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _run_generations(progress: Progress, generations: int, candidates: int) -> None:
    for g in range(1, generations + 1):
        progress.generation_started(g, candidates)
        for _ in range(candidates):
            progress.evals += 1
            progress.images += 8
            progress.workers = "2 busy/2"
            progress.update()
        progress.gen = g
        progress.gen_times.append(0.01)
        progress.frontier, progress.hv = 3, 0.25
        progress.update(final=not progress.tty)
    progress.close()


def test_a_log_gets_one_timestamped_line_per_generation():
    stream = io.StringIO()
    _run_generations(Progress(3, stream=stream), 3, 4)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3
    stamp = r"^\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] "
    for g, line in enumerate(lines, 1):
        assert re.match(stamp + rf"gen {g}/3 \| evals {4 * g} \| ", line), line
        assert "workers 2 busy/2" in line and "frontier 3" in line and "HV 0.2500" in line
        assert f"images {32 * g} |" in line  # racing off: no count of stopped candidates
    assert "\r" not in stream.getvalue()


def test_a_terminal_gets_a_bar_with_candidates_done_of_the_generation(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # a wide terminal: nothing is cut short
    stream = _Terminal()
    _run_generations(Progress(2, stream=stream), 2, 5)
    text = stream.getvalue()
    assert "gen 0/2" not in text  # the bar names the generation it evaluates
    assert "gen 1/2" in text and "gen 2/2" in text and "5/5" in text and "candidates" in text
    assert "evals/s" in text and "ETA" in text and "workers 2 busy/2" in text


def test_quiet_shows_nothing():
    stream = _Terminal()
    _run_generations(Progress(2, quiet=True, stream=stream), 2, 3)
    assert stream.getvalue() == ""


def test_the_rate_leaves_start_up_out():
    progress = Progress(1, stream=io.StringIO())
    time.sleep(0.3)  # workers loading the model
    progress.generation_started(1, 10)
    progress.evals += 10
    # 10 evaluations in well under the start-up time: counting start-up would give < 34/s
    assert progress.rate() > 40


def test_a_racing_search_shows_how_many_candidates_it_stopped():
    stream = io.StringIO()
    progress = Progress(1, stream=stream)
    progress.stopped = 0
    progress.generation_started(1, 4)
    progress.evals, progress.images, progress.stopped = 4, 20, 3
    progress.gen = 1
    progress.update(final=True)
    assert "images 20 (3 stopped early) |" in stream.getvalue()
