"""Dispatch candidates to evaluators: Ray actors (one per GPU or CPU slot) or one in-process.

Every candidate is completed exactly once: a task whose actor dies is re-queued on another
worker (the dead actor is killed for good and a replacement started), and results are handed
back as they arrive so the run store records them immediately. A candidate that takes its
worker down twice is recorded as infeasible instead of being retried for ever, and a slot whose
replacement cannot start stops the run with the reason instead of restarting in a loop.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ecad.distributed.worker import CandidateEvaluator, WorkerConfig
from ecad.errors import EcadError
from ecad.metrics.base import MetricError

Task = tuple[str, dict[str, Any]]  # (genome key, schedule JSON)
OnResult = Callable[[str, dict[str, Any]], None]

MAX_DEATHS_PER_CANDIDATE = 2  # a candidate that kills its worker this often is infeasible, not retried
MAX_FAILED_STARTS = 3  # consecutive replacement actors of one slot that may fail to start
START_TIMEOUT_S = 600.0
DIED_TWICE = "worker died evaluating this candidate twice"


class PoolError(EcadError, RuntimeError):
    """The pool cannot start (unreachable Ray cluster, no resources); the message says the fix."""


@dataclass
class WorkerStatus:
    """What the progress line and the generation records show about one worker slot."""

    name: str
    state: str = "starting"  # starting | idle | busy
    done: int = 0
    busy_s: float = 0.0
    restarts: int = 0  # replacement actors started in this slot after its actor died
    task: str | None = None  # key of the candidate it is evaluating, while busy
    info: dict[str, Any] = field(default_factory=dict)


class LocalPool:
    """One evaluator in this process: same interface as RayPool, no Ray (single GPU, tests)."""

    def __init__(self, config: WorkerConfig):
        self.evaluator = CandidateEvaluator(config)
        self.workers = [WorkerStatus("local", "idle", info=self.evaluator.ready())]

    def evaluate(self, tasks: list[Task], on_result: OnResult, on_progress: Callable[[], None] | None = None) -> None:
        status = self.workers[0]
        for key, schedule in tasks:
            status.state, status.task = "busy", key
            t0 = time.perf_counter()
            result = self.evaluator.evaluate(schedule)
            status.busy_s += time.perf_counter() - t0
            status.done += 1
            status.state, status.task = "idle", None
            on_result(key, result)
            if on_progress:
                on_progress()

    def shutdown(self) -> None:
        pass


def check_ray_address(address: str, timeout: float = 3.0) -> None:
    """Fail fast with a clear message instead of Ray's long retry loop."""
    if address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise PoolError(
            f"--ray-address {address!r} is not HOST:PORT (or ray://HOST:PORT); "
            "use the address printed by `ray start --head`"
        )
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise PoolError(
            f"cannot reach the Ray cluster at {address} ({exc}); start it with `ray start --head` "
            "on that machine, check the address/port and firewall, or leave --ray-address out to "
            "start a local cluster"
        ) from None


def _root_cause(exc: BaseException) -> str:
    """The original error inside a Ray error (its last 'SomeError: message' line), without
    Ray's wrapping and remote traceback, so the user sees what to fix."""
    lines = [m.group(2) for m in re.finditer(r"(?m)^\s*([\w.]+(?:Error|Exception)): (.*)$", str(exc))]
    return lines[-1] if lines else str(exc)


def local_worker_count(requested: int, gpus: float) -> int:
    """Workers a single machine can hold: one actor per GPU. More would wait for a GPU that never
    frees (the default `--workers 2` on a one-GPU machine), so the count is lowered with a warning."""
    available = int(gpus)
    if available < 1:
        raise PoolError(
            "this machine has no GPU for the workers; leave out use_gpu (CPU workers), or pass "
            "--ray-address to use a cluster with GPUs"
        )
    if requested <= available:
        return requested
    print(
        f"ecad: warning: --workers {requested} but this machine has {available} GPU"
        f"{'' if available == 1 else 's'}; using {available} worker{'' if available == 1 else 's'} "
        f"(pass --workers {available} to silence this, or --ray-address to use a cluster)",
        file=sys.stderr,
        flush=True,
    )
    return available


class RayPool:
    """Ray actors holding one pipeline each; `num_gpus=1` per actor when GPUs exist, else one CPU slot."""

    def __init__(self, config: WorkerConfig, num_workers: int, address: str | None = None, use_gpu: bool | None = None):
        import ray

        self.ray, self.config = ray, config
        if not ray.is_initialized():
            if address:
                check_ray_address(address)
                ray.init(address=address, log_to_driver=False, include_dashboard=False)
            else:
                # a cluster of this machine only: nothing listens beyond loopback
                ray.init(
                    num_cpus=max(num_workers, os.cpu_count() or 1),
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    _node_ip_address="127.0.0.1",
                )
        gpus = ray.cluster_resources().get("GPU", 0)
        if use_gpu is None:
            use_gpu = gpus >= 1
        if use_gpu and not address:  # a local cluster cannot grow: never ask for more GPUs than it has
            num_workers = local_worker_count(num_workers, gpus)
        options = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
        self.actor_cls = ray.remote(**options, max_restarts=0, max_task_retries=0)(CandidateEvaluator)
        self.num_workers = num_workers
        self.actors: list[Any] = [self.actor_cls.remote(config) for _ in range(num_workers)]
        self.workers = [WorkerStatus(f"worker-{i}") for i in range(num_workers)]
        self._starting: dict[Any, tuple[int, float]] = {}  # replacement's ready ref -> (slot, start time)
        self._failed_starts = [0] * num_workers  # consecutive replacements of a slot that failed to start
        pending = {actor.ready.remote(): i for i, actor in enumerate(self.actors)}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=START_TIMEOUT_S)
            if not ready:
                raise PoolError(
                    f"{len(pending)} worker(s) did not start within {START_TIMEOUT_S / 60:.0f} minutes; "
                    "check the cluster's resources (`ray status`) and that ecad is installed on every node"
                )
            i = pending.pop(ready[0])
            try:
                self.workers[i].info = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                raise PoolError(f"worker {i} failed to start: {_root_cause(exc)}") from None
            self.workers[i].state = "idle"

    def _replace(self, i: int) -> Any:
        """Kill slot i's actor for good and start a fresh one (it reloads the pipeline).

        The kill matters: an actor Ray reports as unavailable may still be alive and hold its GPU,
        which the replacement then could never get. Returns the replacement's `ready` ref."""
        try:
            self.ray.kill(self.actors[i])
        except Exception:  # noqa: BLE001 - already gone
            pass
        status = self.workers[i]
        status.state, status.task, status.info = "starting", None, {}
        status.restarts += 1
        self.actors[i] = self.actor_cls.remote(self.config)
        return self.actors[i].ready.remote()

    def evaluate(self, tasks: list[Task], on_result: OnResult, on_progress: Callable[[], None] | None = None) -> None:
        """Run every task once; results (and infeasible verdicts for candidates that keep killing
        their worker) go to `on_result` as they arrive."""
        ray = self.ray
        queue: deque[Task] = deque(tasks)
        running: dict[Any, tuple[int, Task, float]] = {}  # evaluate ref -> (slot, task, start)
        starting, failed_starts = self._starting, self._failed_starts  # a replacement may outlive one call
        deaths: dict[str, int] = {}
        while queue or running:
            for i, status in enumerate(self.workers):
                if queue and status.state == "idle":
                    task = queue.popleft()
                    running[self.actors[i].evaluate.remote(task[1])] = (i, task, time.perf_counter())
                    status.state, status.task = "busy", task[0]
            ready, _ = ray.wait(list(running) + list(starting), num_returns=1, timeout=1.0)
            for ref in ready:
                if ref in starting:
                    i, _ = starting.pop(ref)
                    try:
                        self.workers[i].info = ray.get(ref)
                    except ray.exceptions.RayError as exc:
                        failed_starts[i] += 1
                        if failed_starts[i] >= MAX_FAILED_STARTS:
                            raise PoolError(
                                f"worker {i} died and {failed_starts[i]} replacements failed to start: "
                                f"{_root_cause(exc)}; fix that and resume the run with --resume"
                            ) from None
                        starting[self._replace(i)] = (i, time.perf_counter())
                        continue
                    failed_starts[i] = 0
                    self.workers[i].state = "idle"
                    continue
                i, task, t0 = running.pop(ref)
                status = self.workers[i]
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError:
                    key = task[0]
                    deaths[key] = deaths.get(key, 0) + 1
                    starting[self._replace(i)] = (i, time.perf_counter())
                    if deaths[key] < MAX_DEATHS_PER_CANDIDATE:
                        queue.appendleft(task)  # on another worker, or this slot's replacement
                    else:
                        on_result(key, {"feasible": False, "reason": DIED_TWICE})
                    continue
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, MetricError):  # the metric's set-up, not this candidate: stop
                        raise PoolError(
                            f"the metric cannot score on the workers: {exc.cause}; fix the metric "
                            "options, then resume the run with --resume"
                        ) from None
                    result = {"feasible": False, "reason": f"worker error: {exc.cause!r}"[:500]}
                status.busy_s += time.perf_counter() - t0
                status.done += 1
                status.state, status.task = "idle", None
                on_result(task[0], result)
            now = time.perf_counter()
            late = [i for i, t0 in starting.values() if now - t0 > START_TIMEOUT_S]
            if late:
                raise PoolError(
                    f"replacement for worker {late[0]} did not start within {START_TIMEOUT_S / 60:.0f} "
                    "minutes; check the cluster's resources (`ray status`), then resume with --resume"
                )
            if on_progress:
                on_progress()

    def actor_pids(self) -> list[int]:
        return [self.ray.get(a.pid.remote()) for a in self.actors]

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.actors = []


def make_pool(config: WorkerConfig, workers: int, address: str | None = None) -> LocalPool | RayPool:
    """`workers=0` evaluates in this process; otherwise Ray actors (local cluster unless `address`)."""
    if workers <= 0:
        return LocalPool(config)
    return RayPool(config, workers, address)
