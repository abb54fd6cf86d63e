"""`ecad compare`: searched schedules, heuristic baselines, diffusers' caches and cache-dit, side by side.

Same pipeline, prompts and seeds for every contender, in one process: quality against the
no-caching images of the same run, realised MACs counted from the forwards that actually ran,
and speed timed in interleaved rounds on this machine. This is the table users of every peer ask
for: `run_compare` measures, `write_compare` writes json, csv, Markdown, the plot and the grid.
"""

from ecad.compare.outputs import format_table, markdown_table, write_compare
from ecad.compare.run import CompareResult, CompareRow, CompareSettings, run_compare

__all__ = [
    "CompareResult",
    "CompareRow",
    "CompareSettings",
    "format_table",
    "markdown_table",
    "run_compare",
    "write_compare",
]
