"""Search from Python: `search(...)` runs exactly what `ecad search` runs (the same SearchConfig,
ExecConfig and SearchRun) and returns the run's `Frontier`, built from what the search holds in
memory; `load_run(path)` gives the same Frontier for a finished run directory.

    import ecad
    frontier = ecad.search(population=12, generations=4)  # shapes-pixart, fidelity, in-process
    print(frontier)
    point = frontier.pick("speedup>=2")
    ecad.apply_schedule(pipe, point.schedule)
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import sys
from pathlib import Path
from typing import Any

from ecad.files import check_output_dir
from ecad.frontier import Frontier
from ecad.runs import load_run as load_run_data
from ecad.search.estimate import SearchEstimate, estimate_search
from ecad.search.run import ExecConfig, SearchConfig, SearchError, SearchRun, resume_config

SEARCH_OPTIONS = tuple(f.name for f in dataclasses.fields(SearchConfig))
EXEC_OPTIONS = tuple(f.name for f in dataclasses.fields(ExecConfig))
PATH_OPTIONS = ("space", "prompts", "out")  # a Path is recorded as its string (config.json is JSON)


def search(
    space: str | os.PathLike | None = None,
    metric: str | None = None,
    population: int | None = None,
    generations: int | None = None,
    workers: int | str = 0,
    out: str | os.PathLike | None = None,
    *,
    resume: str | os.PathLike | None = None,
    quiet: bool = True,
    dry_run: bool = False,
    **options: Any,
) -> Frontier | SearchEstimate:
    """Run a search and return its Frontier.

    Every keyword is a field of SearchConfig (what decides the results: space, prompts,
    num_prompts, seeds, metric, metric_options, cost, population, generations, seed, batch_size,
    max_macs_fraction, seed_from) or ExecConfig (how it runs: out, workers, ray_address, device,
    force, quiet, worker_env, candidate_timeout_s); one left out takes `ecad search`'s default
    (shapes-pixart, fidelity, population 12, 4 generations; `workers=0`: in-process). An unknown
    keyword raises SearchError naming it and the valid ones. A `prompts` file is used whole
    unless `num_prompts` says otherwise, as on the command line.

    `resume=RUN_DIR` continues that run where it stopped, with its own settings (give only the
    ones that match, or execution options). `quiet=False` shows the progress line on stderr.
    `dry_run=True` runs nothing and returns the plan's SearchEstimate (candidates, images,
    transformer MACs and GPU-hours, as bounds).
    """
    given = {"space": space, "metric": metric, "population": population, "generations": generations}
    overrides: dict[str, Any] = {k: v for k, v in given.items() if v is not None}
    run_options: dict[str, Any] = {"workers": workers, "quiet": quiet}
    for name, value in options.items():
        if name in SEARCH_OPTIONS:
            overrides[name] = value
        elif name in EXEC_OPTIONS:
            run_options[name] = value
        else:
            raise SearchError(unknown_option(name))
    for name in PATH_OPTIONS:
        if isinstance(overrides.get(name), os.PathLike):
            overrides[name] = os.fspath(overrides[name])
    if isinstance(overrides.get("seed_from"), (str, os.PathLike)):
        overrides["seed_from"] = [overrides["seed_from"]]
    if overrides.get("seed_from") is not None:
        overrides["seed_from"] = [os.fspath(s) for s in overrides["seed_from"]]
    if resume is not None:
        if out is not None and Path(out) != Path(resume):
            raise SearchError(
                f"give resume={os.fspath(resume)!r} alone, without out={os.fspath(out)!r}: "
                "a resumed run continues in its own directory"
            )
        check_output_dir(resume, "resume")
        config = resume_config(os.fspath(resume), overrides)
        out = resume
    else:
        if out is not None:
            check_output_dir(out, "out")
        if overrides.get("prompts") is not None and overrides.get("num_prompts") is None:
            overrides["num_prompts"] = 0  # a given prompt file is used whole unless num_prompts says otherwise
        config = SearchConfig(**{k: v for k, v in overrides.items() if v is not None})
    exec_config = ExecConfig(out=os.fspath(out) if out is not None else None, **run_options)
    if dry_run:
        return estimate_search(config, exec_config)
    run = SearchRun(config, exec_config, resume=resume is not None)
    if not quiet:
        print(
            f"ecad search: {config.space}, {config.metric} vs {config.cost}, population {config.population}, "
            f"{config.generations} generations, {exec_config.workers or 'in-process'} workers -> {run.store.root}",
            file=sys.stderr,
        )
    run.run()
    return Frontier.from_run(run.run_data(), summary=run.summary())


def unknown_option(name: str) -> str:
    """The message for a keyword `search` does not take: the closest valid ones first, then all."""
    valid = ("resume", *SEARCH_OPTIONS, *(n for n in EXEC_OPTIONS if n != "out"), "out")
    close = difflib.get_close_matches(name, valid, n=2)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    return f"search() got an unknown argument {name!r}{hint}; valid arguments: {', '.join(sorted(set(valid)))}"


def load_run(path: str | os.PathLike) -> Frontier:
    """The Frontier of a run directory `ecad search` (or `search`) wrote."""
    return Frontier.from_run(load_run_data(path, require_evaluated=True))
