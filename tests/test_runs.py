"""The run directory: what --force may replace, a torn evaluation log, and what a resume refuses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ecad.resources import shipped_file
from ecad.runs import RunError, RunStore, read_evaluation_records
from ecad.schedule import Schedule
from ecad.search.genome import bits_to_hex, genome_hash
from ecad.search.nsga2 import Evaluation
from ecad.search.run import ExecConfig, SearchConfig, SearchRun, resume_config
from ecad.spaces import load_space
from tests.conftest import SMALL


def _lines(run_dir: Path) -> list[str]:
    return (run_dir / "evaluations.jsonl").read_text().splitlines()


def _record(bits: list[int], evaluation: Evaluation, generation: int) -> dict:
    """An evaluation record as the search writes it, for a genome of these bits."""
    g = np.array(bits, dtype=bool)
    return {"key": genome_hash(g), "generation": generation, "genome": bits_to_hex(g), **evaluation.to_json()}


A, B = [1, 0, 1], [1, 1, 0]


def _resume(run_dir: Path) -> SearchRun:
    return SearchRun(resume_config(str(run_dir), {}), ExecConfig(out=str(run_dir), workers=0, quiet=True), resume=True)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """A finished run whose prompt file, space file and seed schedule live in a scratch folder,
    so tests can change or move them the way a user might between a run and its resume."""
    root = tmp_path_factory.mktemp("inputs")
    prompts = root / "prompts.txt"
    prompts.write_text("a red cube on a table\na photo of a cat\n")
    space_file = root / "tiny-pixart.toml"  # a space file's name must match its `name`
    shutil.copy(shipped_file(Path("search_spaces/tiny-pixart.toml")), space_file)
    space = load_space(space_file)
    seed = root / "mine.json"
    Schedule.every_n(space.layout, space.steps, 3, name="mine").save(seed)
    config = SearchConfig(
        **{**SMALL, "prompts": str(prompts), "num_prompts": 0, "space": str(space_file), "seed_from": [str(seed)]}
    )
    run = SearchRun(config, ExecConfig(out=str(root / "run"), workers=0, quiet=True)).run()
    return {"run": run, "prompts": prompts, "space": space_file, "seed": seed}


@pytest.fixture
def run_copy(inputs, tmp_path) -> Path:
    return Path(shutil.copytree(inputs["run"], tmp_path / "run"))


@pytest.fixture
def restore(inputs):
    """Put every input file back as it was after a test that edits one."""
    saved = {name: inputs[name].read_text() for name in ("prompts", "space")}
    yield
    for name, text in saved.items():
        inputs[name].write_text(text)


# --------------------------------------------------------------------- --force
def test_force_never_wipes_a_directory_that_is_not_a_run(tmp_path):
    results = tmp_path / "results"
    (results / "earlier").mkdir(parents=True)
    (results / "earlier" / "config.json").write_text("{}")
    (results / "notes.txt").write_text("keep me")
    with pytest.raises(RunError, match="is not empty and not an ecad run .*; choose a new --out"):
        SearchRun(SearchConfig(**SMALL), ExecConfig(out=str(results), workers=0, force=True))
    with pytest.raises(RunError, match="not an ecad run"):
        RunStore(results).create({"population": 6}, force=True)
    assert (results / "notes.txt").read_text() == "keep me" and (results / "earlier" / "config.json").exists()


def test_an_empty_or_missing_out_directory_is_a_new_run_and_a_file_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    RunStore(tmp_path / "empty").check_new()
    RunStore(tmp_path / "missing").check_new()
    (tmp_path / "file").write_text("x")
    with pytest.raises(RunError, match="is a file, not a directory; choose a new --out"):
        RunStore(tmp_path / "file").check_new(force=True)


def test_force_replaces_an_earlier_run_whole(run_copy):
    (run_copy / "stale.txt").write_text("from the old run")
    store = RunStore(run_copy)
    store.create({"population": 6}, force=True)
    assert sorted(p.name for p in run_copy.iterdir()) == [".lock", "config.json"]  # the lock file stays, unheld


# ------------------------------------------------------------- torn log lines
def test_a_torn_last_line_cannot_swallow_the_next_record(tmp_path):
    store = RunStore(tmp_path)
    a, b = store.append_evaluation(_record(A, Evaluation((0.9, 0.5)), 0)), _record(B, Evaluation((0.8, 0.4)), 1)
    with open(store.evaluations_path, "a") as f:
        f.write('{"key": "torn", "generation": 0, "val')  # the run was killed mid-write
    log = store.load_evaluation_records()  # what every run start does before appending
    assert [r["key"] for r in log.records] == [a["key"]] and not log.damaged  # a torn tail is no damage
    store.append_evaluation(b)
    assert [r["key"] for r in read_evaluation_records(store.evaluations_path)] == [a["key"], b["key"]]
    assert all(json.loads(line) for line in store.evaluations_path.read_text().splitlines())


def test_a_whole_last_record_without_its_newline_is_kept(tmp_path):
    store = RunStore(tmp_path)
    a, b = store.append_evaluation(_record(A, Evaluation((0.9, 0.5)), 0)), _record(B, Evaluation((0.8, 0.4)), 1)
    text = store.evaluations_path.read_text()
    store.evaluations_path.write_text(text.rstrip("\n"))  # killed between the record and its newline
    assert [r["key"] for r in store.load_evaluation_records().records] == [a["key"]]
    store.append_evaluation(b)
    assert [r["key"] for r in store.load_evaluation_records().records] == [a["key"], b["key"]]


def test_resume_after_a_torn_line_evaluates_the_lost_candidate_again(run_copy):
    population = json.loads((run_copy / "checkpoint.json").read_text())["population"]
    lines = _lines(run_copy)
    key_of = {json.loads(line)["genome"]: json.loads(line)["key"] for line in lines}
    lost = key_of[population[0]]
    # the population member's record was the last one written, and the kill cut it in half
    kept = [line for line in lines if json.loads(line)["key"] != lost]
    torn = next(line for line in lines if json.loads(line)["key"] == lost)
    raced = len(lines) - len(kept)  # one record per racing chunk it ran
    (run_copy / "evaluations.jsonl").write_text("\n".join(kept) + "\n" + torn[: len(torn) // 2])
    _resume(run_copy).run()
    records = [json.loads(line) for line in _lines(run_copy)]  # every line is whole again
    assert [r["key"] for r in records].count(lost) == raced
    assert json.loads((run_copy / "checkpoint.json").read_text())["population"] == population
    assert (run_copy / "frontier" / "frontier.json").exists()


# ------------------------------------------------------------------- resume
def test_resume_does_not_read_the_seed_schedules_again(inputs, run_copy, tmp_path):
    moved = tmp_path / "moved.json"
    shutil.move(inputs["seed"], moved)
    try:
        _resume(run_copy).run()  # the seeds shaped generation 0 only; a resume never needs them
    finally:
        shutil.move(moved, inputs["seed"])
    labels = [p["label"] for p in json.loads((run_copy / "frontier" / "frontier.json").read_text())["points"]]
    assert labels == [
        p["label"] for p in json.loads((inputs["run"] / "frontier" / "frontier.json").read_text())["points"]
    ]


def test_resume_is_refused_when_the_prompt_file_changed(inputs, run_copy, restore):
    inputs["prompts"].write_text("a red cube on a table\na photo of a dog\n")
    with pytest.raises(
        RunError,
        match=r"the prompts read from .*prompts\.txt' changed since the run started, .*; "
        r"restore the file as it was, or start a new run",
    ):
        _resume(run_copy)


def test_resume_is_refused_when_the_space_file_changed_but_not_for_a_comment(inputs, run_copy, restore):
    text = inputs["space"].read_text()
    inputs["space"].write_text("# a note added later\n" + text)
    _resume(run_copy)  # same settings: fine
    inputs["space"].write_text(text.replace("guidance_scale = 4.5", "guidance_scale = 7.0"))
    with pytest.raises(RunError, match=r"the search space file of .*tiny-pixart\.toml' changed since the run started"):
        _resume(run_copy)


def test_resume_of_a_run_without_fingerprints_still_checks_the_genome_size(inputs, run_copy, restore):
    config = json.loads((run_copy / "config.json").read_text())
    del config["inputs"]  # written by an ecad version that recorded none
    (run_copy / "config.json").write_text(json.dumps(config))
    inputs["space"].write_text(inputs["space"].read_text().replace("steps = 8", "steps = 6"))
    with pytest.raises(RunError, match="checkpoint holds genomes of 96 bits, but the space now makes 72"):
        _resume(run_copy)


# --------------------------------------------------------------------- lock
def test_a_run_being_written_is_refused_to_a_second_search(run_copy):
    """Two searches on one directory would interleave their records: the second is refused, naming
    the first, and the directory can be written again once the first lets go."""
    store = RunStore(run_copy)
    with store.lock():
        with pytest.raises(RunError, match=r"being written by another ecad search \(pid \d+\); wait for it"):
            _resume(run_copy).run()
    _resume(run_copy).run()  # released: the resume goes ahead
    assert (run_copy / "frontier" / "frontier.json").exists()


def test_the_search_builds_what_it_reports_from_memory_the_same_as_a_reader(inputs):
    """The frontier, plots and summary of a finished search come from what it held in memory; a
    reader of its directory sees the same run."""
    from ecad.files import json_safe
    from ecad.runs import load_run

    run = SearchRun(
        SearchConfig(**{**SMALL, "generations": 1}),
        ExecConfig(out=str(inputs["run"].parent / "mem"), workers=0, quiet=True),
    )
    root = run.run()
    mine, read = run.run_data(), load_run(root)
    assert [p.key for p in mine.points] == [p.key for p in read.points]
    assert [p.key for p in mine.frontier] == [
        p.key for p in read.frontier
    ] and mine.frontier_files == read.frontier_files
    as_written = json.loads(json.dumps(json_safe(mine.generations)))  # NaN -> null, as the files hold it
    assert as_written == read.generations and mine.higher_is_better is read.higher_is_better is True
    assert run.summary().count(".json") == min(len(mine.frontier), 10)
