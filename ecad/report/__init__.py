"""Reports of a search run: PNG plots to watch a running search, one self-contained HTML page.

`ecad.frontier.load_run` reads a run directory (config.json, gen_NNN.json, evaluations.jsonl, frontier/) into
plain Python objects; `ecad.report.plots` and `ecad.report.html` only ever read those. Every
reader tolerates a run that is still going (no frontier/ yet, a torn last log line).
"""

from __future__ import annotations

import re

from ecad.frontier import (Point, RunData, decode_genome, frontier_schedules, label_kind, load_run,  # noqa: F401
                           pareto_front, run_space)


def seed_family(label: str) -> str:
    """Group heuristic seed labels for legends: every_3 -> every_n, cache_c1_k2_m2 -> cache_c1, ..."""
    if label.startswith("seed:"):
        return "seed file"
    if label.startswith("attention_every_"):
        return "attention_every_n"
    if label.startswith("every_"):
        return "every_n (FORA-like)"
    if label.startswith("tgate_"):
        return "tgate (T-GATE-like)"
    m = re.match(r"^cache_c(\d+)_", label)
    if m:
        return "single component"
    return label


from ecad.report.plots import plot_frontier, plot_hypervolume, plot_schedule_heatmap, write_run_plots  # noqa: E402
from ecad.report.html import render_samples, write_report  # noqa: E402

__all__ = [
    "Point",
    "RunData",
    "load_run",
    "plot_frontier",
    "plot_hypervolume",
    "plot_schedule_heatmap",
    "render_samples",
    "write_report",
    "write_run_plots",
]
