"""The Ray pool when workers die: a candidate that keeps killing its worker, a slot that cannot
restart, and more workers than a machine has GPUs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from ecad.distributed.pool import DIED_TWICE, PoolError, RayPool, local_worker_count
from ecad.distributed.worker import WorkerConfig
from ecad.resources import shipped_file
from ecad.search.run import workers_text
from tests.conftest import candidate_tasks

PROMPTS = ("a red cube", "a cat")


def test_a_candidate_that_kills_its_worker_every_time_ends_infeasible(ray_cluster):
    """Like a schedule that runs its worker out of host memory: the OOM killer ends the actor
    whenever it evaluates that candidate. It must be given up after two deaths, not retried for ever."""
    tasks = candidate_tasks("tiny-pixart", 4)
    poison = tasks[1][0]
    # 4 images at batch 1: each evaluation runs long enough for the killer (polling every 20 ms) to find it
    config = WorkerConfig("tiny-pixart", PROMPTS, (0, 1), batch_size=1)
    pool = RayPool(config, 2)
    done = threading.Event()
    kills: list[int] = []

    def killer() -> None:
        while not done.is_set():
            for w in pool.workers:
                pid = w.info.get("pid")
                if w.state == "busy" and w.task == poison and pid and pid not in kills:
                    kills.append(pid)
                    os.kill(pid, signal.SIGKILL)
            done.wait(0.02)

    results: dict[str, list[dict]] = {}
    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        pool.evaluate(tasks, lambda key, r: results.setdefault(key, []).append(r))
        text = workers_text(pool)
    finally:
        done.set()
        thread.join()
        pool.shutdown()
    assert sorted(results) == sorted(k for k, _ in tasks)
    assert all(len(v) == 1 for v in results.values()), "a candidate was completed twice"
    assert results[poison][0] == {"feasible": False, "reason": DIED_TWICE}
    assert all(r[0]["feasible"] for k, r in results.items() if k != poison)
    assert len(kills) == 2 and sum(w.restarts for w in pool.workers) == 2
    assert text.endswith("(2 restarts)"), text


def test_a_slot_whose_replacement_cannot_start_stops_the_run_with_the_reason(ray_cluster, tmp_path):
    space_file = tmp_path / "tiny-pixart.toml"
    shutil.copy(shipped_file(Path("search_spaces/tiny-pixart.toml")), space_file)
    pool = RayPool(WorkerConfig(str(space_file), PROMPTS, (0,), batch_size=2), 1)
    try:
        space_file.unlink()  # e.g. a shared file system went away: no replacement can load the space
        os.kill(pool.actor_pids()[0], signal.SIGKILL)
        with pytest.raises(
            PoolError,
            match=r"worker 0 died and 3 replacements failed to start: .*search space file "
            r".* does not exist.*; fix that and resume the run with --resume",
        ):
            pool.evaluate(candidate_tasks("tiny-pixart", 2), lambda key, r: None)
    finally:
        pool.shutdown()


def test_more_workers_than_gpus_on_one_machine_are_lowered_with_a_warning(capsys):
    assert local_worker_count(1, 1.0) == 1 and local_worker_count(2, 4.0) == 2
    assert capsys.readouterr().err == ""
    assert local_worker_count(2, 1.0) == 1
    assert "--workers 2 but this machine has 1 GPU; using 1 worker (pass --workers 1" in capsys.readouterr().err


def test_the_default_two_workers_start_on_a_one_gpu_machine():
    """Ray's own GPU count, declared: the pool must not wait for a second GPU that never comes."""
    code = (
        "import os, ray\n"
        "os.environ['RAY_AUTH_MODE'] = 'disabled'\n"
        "ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False, configure_logging=False,\n"
        "         _node_ip_address='127.0.0.1')\n"
        "from ecad.distributed.pool import RayPool\n"
        "from ecad.distributed.worker import WorkerConfig\n"
        "pool = RayPool(WorkerConfig('tiny-pixart', ('a cat',), (0,), batch_size=1, device='cpu'), 2)\n"
        "print('workers', len(pool.workers))\n"
        "pool.shutdown()\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "workers 1" in proc.stdout
    assert "--workers 2 but this machine has 1 GPU; using 1 worker" in proc.stderr


def test_a_metric_that_cannot_score_stops_the_run_instead_of_failing_every_candidate(ray_cluster):
    """FID without references fails for every candidate alike: a set-up error, reported once."""
    from tests.test_metric_fid import conv_features

    config = WorkerConfig(
        "tiny-pixart", PROMPTS, (0,), metric="fid", metric_options={"feature": conv_features()}, batch_size=2
    )
    pool = RayPool(config, 1)
    try:
        with pytest.raises(PoolError, match="the metric cannot score on the workers: fid: needs references"):
            pool.evaluate(candidate_tasks("tiny-pixart", 2), lambda key, r: None)
    finally:
        pool.shutdown()
