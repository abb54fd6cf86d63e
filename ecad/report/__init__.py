"""Reports of a search run: PNG plots to watch a running search, one self-contained HTML page.

`ecad.runs.load_run` reads a run directory (config.json, gen_NNN.json, evaluations.jsonl, frontier/) into
plain Python objects; `ecad.report.plots` and `ecad.report.html` only ever read those. Every
reader tolerates a run that is still going (no frontier/ yet, a torn last log line).
"""

from __future__ import annotations

from ecad.frontier import Point
from ecad.report.html import render_samples, write_report
from ecad.report.plots import plot_frontier, plot_hypervolume, plot_schedule_heatmap, write_run_plots
from ecad.runs import RunData, load_run

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
