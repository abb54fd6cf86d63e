"""`ecad search` end to end: engine + workers + run store, in-process and on Ray."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import ecad
from ecad.cli import main
from ecad.distributed.pool import PoolError, RayPool, check_ray_address
from ecad.distributed.worker import WorkerConfig
from ecad.runs import RunError
from ecad.search.run import ExecConfig, SearchConfig, SearchError, SearchRun
from tests.conftest import SMALL, candidate_tasks, evaluation_steps


def _population(run_dir: Path) -> list[str]:
    return json.loads((run_dir / "checkpoint.json").read_text())["population"]


def test_in_process_search_writes_run_files_and_a_usable_frontier(tmp_path, tiny_pixart):
    run = SearchRun(SearchConfig(**SMALL), ExecConfig(out=str(tmp_path / "run"), workers=0, quiet=True))
    root = run.run()
    assert (root / "config.json").exists() and (root / "checkpoint.json").exists()
    assert sorted(p.name for p in root.glob("gen_*.json")) == ["gen_000.json", "gen_001.json", "gen_002.json"]
    keys = evaluation_steps(root)
    assert len(keys) == len(set(keys)), "a genome was evaluated twice"
    gen = json.loads((root / "gen_002.json").read_text())
    assert gen["hypervolume"] >= json.loads((root / "gen_000.json").read_text())["hypervolume"]
    front = json.loads((root / "frontier" / "frontier.json").read_text())["points"]
    assert front and all((root / "frontier" / p["schedule"]).exists() for p in front)
    schedule = ecad.load_schedule(root / "frontier" / front[0]["schedule"])
    ecad.apply_schedule(tiny_pixart, schedule)  # a frontier schedule applies to a stock pipeline
    assert "quality" in schedule.metrics and schedule.metrics["macs_fraction"] < 1.0
    assert "rank" in run.summary() and "hypervolume" in run.summary()


def test_ray_search_with_two_workers_matches_one_worker(tmp_path, idle_cluster):
    pops = []
    for workers in (2, 1):
        out = tmp_path / f"w{workers}"
        SearchRun(SearchConfig(**SMALL), ExecConfig(out=str(out), workers=workers, quiet=True)).run()
        pops.append(_population(out))
        keys = evaluation_steps(out)
        assert len(keys) == len(set(keys))
    assert pops[0] == pops[1], "populations depend on the number of workers"


def test_killed_worker_candidate_is_requeued_and_evaluated_once(idle_cluster):
    tasks = candidate_tasks("tiny-pixart", 8)
    config = WorkerConfig("tiny-pixart", ("a red cube", "a cat"), (0, 1), batch_size=2)
    pool = RayPool(config, 2)
    victim = pool.actor_pids()[0]
    results: dict[str, list] = {}
    killed = threading.Event()

    def on_result(key, result):
        results.setdefault(key, []).append(result)
        if not killed.is_set():
            os.kill(victim, signal.SIGKILL)  # a worker dies while it may hold a candidate
            killed.set()

    try:
        pool.evaluate(tasks, on_result)
    finally:
        pool.shutdown()
    assert killed.is_set()
    assert sorted(results) == sorted(k for k, _ in tasks)
    assert all(len(v) == 1 for v in results.values()), "a candidate was completed twice"
    assert all(r[0]["feasible"] for r in results.values())


def test_resume_after_killing_the_driver_reaches_the_same_population(tmp_path):
    args = [
        "search",
        "--workers",
        "0",
        "--population",
        "8",
        "--generations",
        "4",
        "--num-prompts",
        "2",
        "--seeds",
        "1",
        "--quiet",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    subprocess.run(
        [sys.executable, "-m", "ecad.cli", *args, "--out", str(tmp_path / "whole")],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    cut = tmp_path / "cut"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ecad.cli", *args, "--out", str(cut)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (cut / "gen_001.json").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (cut / "gen_004.json").exists(), "the run finished before it could be killed"
    before = set(evaluation_steps(cut))
    subprocess.run(
        [sys.executable, "-m", "ecad.cli", "search", "--resume", str(cut), "--workers", "0", "--quiet"],
        check=True,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert _population(cut) == _population(tmp_path / "whole")
    keys = evaluation_steps(cut)
    assert len(keys) == len(set(keys)) and before <= set(keys)


def test_resume_with_a_different_config_is_refused(tmp_path):
    out = tmp_path / "run"
    SearchRun(SearchConfig(**SMALL), ExecConfig(out=str(out), workers=0, quiet=True)).run()
    with pytest.raises(RunError, match=r"different configuration:\n  population: 6 \(run\) != 10 \(now\)"):
        SearchRun(SearchConfig(**{**SMALL, "population": 10}), ExecConfig(out=str(out), workers=0), resume=True)


def test_existing_run_is_not_overwritten_without_force(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}")
    with pytest.raises(RunError, match="already holds a run; resume it with `--resume"):
        SearchRun(SearchConfig(**SMALL), ExecConfig(out=str(out), workers=0))
    SearchRun(SearchConfig(**SMALL), ExecConfig(out=str(out), workers=0, force=True, quiet=True)).run()
    assert json.loads((out / "config.json").read_text())["config"]["population"] == 6


def test_a_run_whose_workers_cannot_start_leaves_nothing_behind(tmp_path, monkeypatch):
    from ecad.metrics import MissingWeightsError

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "run"
    run = SearchRun(SearchConfig(**{**SMALL, "metric": "image-reward"}), ExecConfig(out=str(out), workers=0))
    with pytest.raises(MissingWeightsError, match="hf download THUDM/ImageReward"):
        run.run()
    assert not out.exists()  # not even the lock, taken before the workers start


def test_infeasible_candidates_are_recorded_with_their_reason(tmp_path):
    config = SearchConfig(**{**SMALL, "max_macs_fraction": 0.5})
    run = SearchRun(config, ExecConfig(out=str(tmp_path / "run"), workers=0, quiet=True))
    run.run()
    recs = [json.loads(line) for line in (tmp_path / "run" / "evaluations.jsonl").read_text().splitlines()]
    bad = [r for r in recs if not r["feasible"]]
    assert bad and all("constraint: MACs" in r["reason"] for r in bad)
    front = json.loads((tmp_path / "run" / "frontier" / "frontier.json").read_text())["points"]
    assert all(p["macs_fraction"] <= 0.5 for p in front)


def test_nan_images_make_a_candidate_infeasible_not_a_crash():
    import torch

    from ecad.distributed.worker import CandidateEvaluator

    evaluator = CandidateEvaluator(WorkerConfig("tiny-pixart", ("a cat",), (0,), batch_size=1))
    with torch.no_grad():
        evaluator.pipe.transformer.transformer_blocks[0].ff.net[2].weight.fill_(float("nan"))
    result = evaluator.evaluate(evaluator.space.full_schedule().to_json())
    assert result == {**result, "feasible": False, "reason": "non-finite images"}


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--space", "no-such-space"], "unknown search space 'no-such-space'"),
        (["--population", "3"], "argument --population: '3' is not a whole number 4..100000"),
        (["--metric", "nope"], "unknown; available:"),
        (["--prompts", "EMPTY"], "has no prompts; put one prompt per line"),
        (["--prompts", "/no/such/file.txt"], "not found; pass --prompts FILE"),
    ],
)
def test_bad_search_input_gives_a_clear_error(argv, message, tmp_path, capsys):
    argv = [str(tmp_path / "empty.txt") if a == "EMPTY" else a for a in argv]
    (tmp_path / "empty.txt").write_text("\n\n")
    try:
        code = main(["search", "--workers", "0", "--out", str(tmp_path / "r"), *argv])
    except SystemExit as exc:  # refused while parsing the command line
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_unreachable_ray_address_fails_fast():
    t0 = time.time()
    with pytest.raises(PoolError, match="cannot reach the Ray cluster at 127.0.0.1:1 .* `ray start --head`"):
        check_ray_address("127.0.0.1:1", timeout=1)
    with pytest.raises(PoolError, match="is not HOST:PORT"):
        check_ray_address("nonsense")
    assert time.time() - t0 < 10


def test_search_errors_are_search_errors():
    with pytest.raises(SearchError):
        SearchRun(SearchConfig(population=2), ExecConfig(workers=0))


def test_out_of_memory_retries_with_a_smaller_batch_then_gives_up_as_infeasible():
    """Fault injection in the (stock) transformer: OOM above a batch size, or always."""
    import torch

    from ecad.distributed.worker import CandidateEvaluator

    evaluator = CandidateEvaluator(WorkerConfig("tiny-pixart", ("a cat", "a dog"), (0, 1), batch_size=4))
    expected = evaluator.evaluate(evaluator.space.full_schedule().to_json())
    transformer = evaluator.pipe.transformer
    original = transformer.forward
    limit = {"batch": 2}  # transformer batch = 2 x images (CFG): only 1 image per call fits

    def forward(*args, **kwargs):
        hidden = kwargs.get("hidden_states", args[0] if args else None)
        if hidden.shape[0] > limit["batch"]:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return original(*args, **kwargs)

    transformer.forward = forward
    try:
        result = evaluator.evaluate(evaluator.space.full_schedule().to_json())
        assert result["feasible"] and result["batch_size"] == 1
        assert result["quality"] == pytest.approx(expected["quality"])
        limit["batch"] = 0
        result = evaluator.evaluate(evaluator.space.full_schedule().to_json())
        assert result == {**result, "feasible": False, "reason": "CUDA out of memory even at batch size 1"}
    finally:
        transformer.forward = original


def test_a_space_file_only_the_driver_has_reaches_the_workers(tmp_path, idle_cluster):
    """`--space my.toml` exists on the driver's disk alone: the workers get the parsed space in
    their config, so removing the file once the driver read it changes nothing."""
    text = (Path(ecad.spaces.load_space("tiny-pixart").source)).read_text()
    space_file = tmp_path / "my-space.toml"
    space_file.write_text(text.replace('name = "tiny-pixart"', 'name = "my-space"'))
    config = SearchConfig(**{**SMALL, "generations": 0, "population": 4, "space": str(space_file)})
    run = SearchRun(config, ExecConfig(out=str(tmp_path / "run"), workers=1, quiet=True))
    space_file.unlink()
    root = run.run()
    records = [json.loads(line) for line in (root / "evaluations.jsonl").read_text().splitlines()]
    assert records and all(r["feasible"] for r in records)


def test_the_progress_line_says_when_slots_wait_for_the_cluster():
    from types import SimpleNamespace

    from ecad.distributed.pool import WorkerStatus
    from ecad.search.run import workers_text

    pool = SimpleNamespace(workers=[WorkerStatus("worker-0", "busy"), WorkerStatus("worker-1", "waiting", restarts=1)])
    assert workers_text(pool) == "1 busy/2 (1 waiting, 1 restart)"


def test_ctrl_c_ends_in_one_line_saying_how_far_it_got_and_how_to_resume(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["search", "--workers", "0", "--population", "6", "--generations", "20", "--num-prompts", "2"]
    argv += ["--seeds", "1", "--out", str(out)]

    # Ctrl-C a few generations in: a real SIGINT, which may land anywhere (a garbage-collector callback
    # that ignores the KeyboardInterrupt it raises included; the search must stop all the same)
    ctrl_c = threading.Timer(8.0, os.kill, (os.getpid(), signal.SIGINT))
    ctrl_c.start()
    try:
        code = main(argv)
    finally:
        ctrl_c.cancel()
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 130
    assert re.fullmatch(
        rf"ecad search: interrupted (after generation \d+|before generation 0 finished); resume with ecad search "
        rf"--resume {re.escape(str(out))}",
        err[-1],
    ), err


def test_a_finished_run_is_extended_by_resuming_with_more_generations(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["search", "--workers", "0", "--population", "4", "--num-prompts", "1", "--seeds", "1", "--out", str(out)]
    assert main([*argv, "--generations", "1"]) == 0
    assert main(["search", "--resume", str(out), "--generations", "2"]) == 0
    assert "extending" in capsys.readouterr().err
    assert (out / "gen_002.json").exists() and json.loads((out / "config.json").read_text())["config"][
        "generations"
    ] == 2
    assert main(["search", "--resume", str(out), "--generations", "1"]) == 2  # shortening is refused
    assert "may extend a run, not shorten it" in capsys.readouterr().err


def test_runs_from_before_the_new_genes_resume_with_their_macs_and_genomes(tmp_path):
    """A config.json without cells, forecast_order, guidance_reuse and text_kv_cache resumes as it
    ran: compute/reuse genomes and the text K/V priced at every computed step, so its no-caching
    point stays at exactly 1.0 of the stock pipeline's MACs. A new run (text K/V cache on) shows no
    caching a little below 1, and its baseline is still found."""
    from ecad.frontier import baseline_quality
    from ecad.runs import config_hash, load_run
    from ecad.search.run import resume_config

    small = dict(SMALL, generations=1, racing=False)
    old = tmp_path / "old"
    SearchRun(SearchConfig(**small, text_kv_cache=False), ExecConfig(out=str(old), workers=0, quiet=True)).run()
    record = json.loads((old / "config.json").read_text())
    new_fields = ("cells", "forecast_order", "guidance_reuse", "text_kv_cache")
    config = {k: v for k, v in record["config"].items() if k not in new_fields}
    (old / "config.json").write_text(json.dumps({**record, "config": config, "config_hash": config_hash(config)}))
    resumed = resume_config(str(old), {"generations": 2})
    assert (resumed.cells, resumed.forecast_order, resumed.guidance_reuse, resumed.text_kv_cache) == (
        ["compute", "reuse"],
        1,
        False,
        False,
    )
    SearchRun(resumed, ExecConfig(out=str(old), workers=0, quiet=True), resume=True).run()
    run = load_run(old)
    no_caching = [p for p in run.points if p.label == "no_caching"]
    assert no_caching and no_caching[0].macs_fraction == 1.0 and baseline_quality([run]) == no_caching[0].quality
    new = tmp_path / "new"
    SearchRun(SearchConfig(**small), ExecConfig(out=str(new), workers=0, quiet=True)).run()
    run = load_run(new)
    no_caching = [p for p in run.points if p.label == "no_caching"][0]
    assert 0.9 < no_caching.macs_fraction < 1.0  # tiny-pixart's cross-attention K/V once per call
    assert baseline_quality([run]) == no_caching.quality
