"""The Ray pool when workers die, hang or fail: a candidate that keeps killing or hanging its
worker, a worker that raises for every candidate, a slot that cannot restart, and more workers
than the cluster (or a machine's GPUs) can hold."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from ecad.distributed.pool import (
    DEADLINE_FLOOR_S,
    DEADLINE_MULTIPLIER,
    DIED_TWICE,
    FIRST_DEADLINE_S,
    HUNG_TWICE,
    MAX_WORKER_ERRORS,
    PoolError,
    RayPool,
    auto_worker_count,
    candidate_deadline,
    local_worker_count,
    make_pool,
    worker_environment,
)
from ecad.distributed.worker import WorkerConfig
from ecad.resources import shipped_file
from ecad.search.progress import workers_text
from tests.conftest import candidate_tasks

PROMPTS = ("a red cube", "a cat")


def test_a_candidate_that_kills_its_worker_every_time_ends_infeasible(idle_cluster):
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


def _stop(pid: int, stopped: list[int]) -> None:
    """Freeze a worker process as a stuck CUDA call would: alive, holding its slot, never answering."""
    os.kill(pid, signal.SIGSTOP)
    stopped.append(pid)


def _reap(stopped: list[int]) -> None:
    """Ray kills a stopped worker a few seconds after `ray.kill`; make sure none outlives the test
    (a process still stopped is one of ours: a process id reused meanwhile would be running)."""
    for pid in stopped:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "T":
                os.kill(pid, signal.SIGKILL)
        except (OSError, IndexError):
            pass


def test_a_hung_worker_is_killed_at_its_deadline_and_its_candidate_completes_on_another(idle_cluster):
    tasks = candidate_tasks("tiny-pixart", 4)
    pool = RayPool(WorkerConfig("tiny-pixart", PROMPTS, (0,), batch_size=2), 2, candidate_timeout_s=3)
    stopped: list[int] = []
    hung_worker = pool.workers[0].info["worker"]
    results: dict[str, list[dict]] = {}
    try:
        _stop(pool.actor_pids()[0], stopped)  # slot 0 takes the first candidate and never answers
        t0 = time.perf_counter()
        pool.evaluate(tasks, lambda key, r: results.setdefault(key, []).append(r))
        seconds = time.perf_counter() - t0
    finally:
        pool.shutdown()
        _reap(stopped)
    assert sorted(results) == sorted(k for k, _ in tasks)
    assert all(len(v) == 1 for v in results.values()), "a candidate was completed twice"
    assert all(r[0]["feasible"] for r in results.values())
    hung = results[tasks[0][0]][0]
    assert hung["worker"] != hung_worker and hung["worker"] == pool.workers[1].info["worker"]
    assert seconds >= 3
    assert pool.workers[0].restarts == 1 and pool.workers[1].restarts == 0
    assert pool.workers[0].last_replaced == "hung: no result within 3 s, killed"


def test_a_candidate_that_hangs_its_worker_twice_ends_infeasible(idle_cluster):
    """A hang counts like a death: the candidate is re-queued once, then given up."""
    tasks = candidate_tasks("tiny-pixart", 4)
    poison = tasks[0][0]
    pool = RayPool(WorkerConfig("tiny-pixart", PROMPTS, (0,), batch_size=2), 2, candidate_timeout_s=3)
    stopped: list[int] = []
    second = pool.actor_pids()[1]

    def on_progress() -> None:
        # once slot 0 is killed, freeze slot 1 before it takes the re-queued candidate
        if pool.workers[0].restarts and pool.workers[1].state == "idle" and second not in stopped:
            _stop(second, stopped)

    results: dict[str, list[dict]] = {}
    try:
        _stop(pool.actor_pids()[0], stopped)
        pool.evaluate(tasks, lambda key, r: results.setdefault(key, []).append(r), on_progress)
    finally:
        pool.shutdown()
        _reap(stopped)
    assert sorted(results) == sorted(k for k, _ in tasks)
    assert all(len(v) == 1 for v in results.values()), "a candidate was completed twice"
    assert results[poison][0] == {"feasible": False, "reason": HUNG_TWICE}
    assert all(r[0]["feasible"] for k, r in results.items() if k != poison)
    assert [w.restarts for w in pool.workers] == [1, 1]


def _sick_when_flagged(flags: Path):
    """FID features (a user's own extractor) that fail in every worker process flagged in `flags`,
    as a sick GPU does: an exception out of `evaluate`, not an infeasible result."""
    import torch

    from tests.test_metric_fid import conv_features

    class SickWhenFlagged(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = conv_features()

        def forward(self, x):
            if (flags / str(os.getpid())).exists():
                raise RuntimeError("CUDA error: an illegal memory access was encountered")
            return self.inner(x)

    return SickWhenFlagged()


def test_a_worker_that_fails_every_candidate_is_replaced_and_they_are_evaluated_elsewhere(idle_cluster, tmp_path):
    import torch

    references = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    options = {"feature": _sick_when_flagged(tmp_path), "reference": references}
    config = WorkerConfig("tiny-pixart", PROMPTS, (0,), metric="fid", metric_options=options, batch_size=2)
    tasks = candidate_tasks("tiny-pixart", 6)
    pool = RayPool(config, 2)
    sick_worker = pool.workers[0].info["worker"]
    results: dict[str, list[dict]] = {}
    try:
        (tmp_path / str(pool.actor_pids()[0])).touch()
        pool.evaluate(tasks, lambda key, r: results.setdefault(key, []).append(r))
    finally:
        pool.shutdown()
    assert sorted(results) == sorted(k for k, _ in tasks)
    assert all(len(v) == 1 for v in results.values()), "a candidate was completed twice"
    assert all(r[0]["feasible"] for r in results.values()), "a worker's failure was recorded against a candidate"
    assert all(r[0]["worker"] != sick_worker for r in results.values())
    sick = pool.workers[0]
    assert sick.restarts == 1 and sick.done == 0
    assert sick.last_replaced == (
        f"{MAX_WORKER_ERRORS} worker errors in a row, the last: "
        "RuntimeError('CUDA error: an illegal memory access was encountered')"
    )


def test_a_candidate_that_raises_on_every_worker_ends_infeasible(idle_cluster):
    """An exception out of evaluate on two different workers: the candidate, not the worker."""
    tasks = candidate_tasks("tiny-pixart", 3)
    broken = (tasks[1][0], {**tasks[1][1], "num_steps": "many"})  # fails to load on the worker
    pool = RayPool(WorkerConfig("tiny-pixart", PROMPTS, (0,), batch_size=2), 2)
    results: dict[str, list[dict]] = {}
    try:
        pool.evaluate([tasks[0], broken, tasks[2]], lambda key, r: results.setdefault(key, []).append(r))
    finally:
        pool.shutdown()
    assert all(len(v) == 1 for v in results.values()) and len(results) == 3
    verdict = results[broken[0]][0]
    assert not verdict["feasible"] and verdict["reason"].startswith("worker error on 2 workers: ScheduleError("), (
        verdict
    )
    assert all(results[k][0]["feasible"] for k in (tasks[0][0], tasks[2][0]))
    assert [w.restarts for w in pool.workers] == [0, 0]


def test_more_workers_than_the_cluster_holds_start_with_what_fits_and_grow(idle_cluster, capsys):
    """The cluster's second CPU is taken (by another job): one worker starts, with a warning, and
    the second joins the running evaluation once the CPU frees."""
    ray = idle_cluster

    @ray.remote(num_cpus=1)
    class OtherJob:
        def ping(self) -> bool:
            return True

    other = OtherJob.remote()
    ray.get(other.ping.remote())
    pool = None
    try:
        pool = RayPool(WorkerConfig("tiny-pixart", PROMPTS, (0,), batch_size=2), 2)
        err = capsys.readouterr().err
        assert (
            "2 workers requested, 1 placed (no free CPU in the Ray cluster for the others now); the pool grows" in err
        )
        # Ray places either pending actor first: which slot got the CPU is not part of the contract
        assert sorted(w.state for w in pool.workers) == ["idle", "starting"]
        late = next(i for i, w in enumerate(pool.workers) if w.state == "starting")
        results: dict[str, list[dict]] = {}

        def on_result(key: str, result: dict) -> None:
            if not results:  # the other job ends: the second worker can be placed
                ray.kill(other)
                ray.get(pool.actors[late].pid.remote(), timeout=120)  # returns once it has loaded
            results.setdefault(key, []).append(result)

        tasks = candidate_tasks("tiny-pixart", 8)
        pool.evaluate(tasks, on_result)
    finally:
        ray.kill(other)
        if pool:
            pool.shutdown()
    assert sorted(results) == sorted(k for k, _ in tasks)
    assert all(len(v) == 1 for v in results.values()) and all(r[0]["feasible"] for r in results.values())
    assert [w.state for w in pool.workers] == ["idle", "idle"] and pool.workers[late].done >= 1


def test_a_slot_that_cannot_be_placed_waits_while_the_others_work(idle_cluster, capsys):
    pool = RayPool(WorkerConfig("tiny-pixart", PROMPTS, (0,), batch_size=2), 3)  # the cluster has 2 CPUs
    try:
        assert "3 workers requested, 2 placed" in capsys.readouterr().err
        assert [w.state for w in pool.workers] == ["idle", "idle", "waiting"]
        assert pool.workers[2].note.startswith("no free CPU in the cluster (2 in all, 2 used by live workers)")
        results: dict[str, dict] = {}
        pool.evaluate(candidate_tasks("tiny-pixart", 4), results.__setitem__)
    finally:
        pool.shutdown()
    assert len(results) == 4 and all(r["feasible"] for r in results.values())
    assert pool.workers[2].state == "waiting" and pool.workers[2].done == 0


def test_the_candidate_deadline_follows_the_median_candidate_time():
    assert candidate_deadline([]) == FIRST_DEADLINE_S
    assert candidate_deadline([1.0, 2.0, 300.0]) == DEADLINE_FLOOR_S  # 5 x 2 s is under the floor
    assert candidate_deadline([30.0, 20.0, 900.0, 25.0, 30.0]) == DEADLINE_MULTIPLIER * 30.0
    assert candidate_deadline([30.0], override=7) == 7.0 and candidate_deadline([], override=7) == 7.0


def test_auto_asks_for_every_gpu_or_cpu_slot_of_the_cluster():
    assert auto_worker_count({"CPU": 64.0, "GPU": 8.0}, use_gpu=True, local=False) == 8
    assert auto_worker_count({"CPU": 16.0}, use_gpu=False, local=False) == 16
    assert auto_worker_count({"CPU": 16.0}, use_gpu=False, local=True) == 15  # one CPU for the driver
    assert auto_worker_count({"CPU": 1.0}, use_gpu=False, local=True) == 1
    with pytest.raises(PoolError, match="no GPU"):
        auto_worker_count({"CPU": 4.0}, use_gpu=True, local=False)
    with pytest.raises(PoolError, match="workers must be a count >= 1 or 'auto'"):
        make_pool(WorkerConfig("tiny-pixart", PROMPTS, (0,)), "many")


def test_the_drivers_cache_and_hub_settings_reach_the_workers(idle_cluster, tmp_path, monkeypatch):
    """Workers on other nodes start with their node's environment, not the driver's: ECAD_CACHE,
    HF_* and the like set in the user's shell are forwarded with each actor (here set after the
    cluster started, so only forwarding can bring them), and --worker-env adds more."""
    forwarded = tmp_path / "driver-cache"
    monkeypatch.setenv("ECAD_CACHE", str(forwarded))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    env = worker_environment({"ECAD_EXTRA": "x"})
    assert env["ECAD_CACHE"] == str(forwarded) and env["HF_HUB_OFFLINE"] == "1" and env["ECAD_EXTRA"] == "x"
    assert worker_environment({"ECAD_CACHE": "/elsewhere"})["ECAD_CACHE"] == "/elsewhere"  # the user's word wins
    pool = RayPool(WorkerConfig("tiny-pixart", ("a cat",), (0,), batch_size=1), 1, env=env)
    try:
        results = {}
        pool.evaluate(candidate_tasks("tiny-pixart", 1), lambda key, r: results.setdefault(key, r))
    finally:
        pool.shutdown()
    assert all(r["feasible"] for r in results.values())
    assert list((forwarded / "references").glob("*.safetensors")), "the worker wrote its references elsewhere"


def test_only_a_list_returned_by_on_result_adds_follow_up_tasks():
    from ecad.distributed.pool import follow_ups

    task = ("k:1", {"format": "ecad-schedule/1"}, 1)
    assert follow_ups([task]) == [task]
    assert follow_ups(None) == [] and follow_ups({"feasible": True}) == []  # e.g. dict.setdefault's value
