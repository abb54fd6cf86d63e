"""Dispatch candidates to evaluators: Ray actors (one per GPU or CPU slot) or one in-process.

Every candidate is completed exactly once: a task whose actor dies is re-queued on another
worker (a replacement actor is started), and results are handed back as they arrive so the
run store records them immediately.
"""

from __future__ import annotations

import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from ecad.distributed.worker import CandidateEvaluator, WorkerConfig

Task = tuple[str, dict[str, Any]]  # (genome key, schedule JSON)
OnResult = Callable[[str, dict[str, Any]], None]


class PoolError(RuntimeError):
    """The pool cannot start (unreachable Ray cluster, no resources); the message says the fix."""


@dataclass
class WorkerStatus:
    name: str
    state: str = "starting"  # starting | idle | busy | dead
    done: int = 0
    busy_s: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)


class LocalPool:
    """One evaluator in this process: same interface as RayPool, no Ray (single GPU, tests)."""

    def __init__(self, config: WorkerConfig):
        self.evaluator = CandidateEvaluator(config)
        self.workers = [WorkerStatus("local", "idle", info=self.evaluator.ready())]

    def evaluate(self, tasks: list[Task], on_result: OnResult, on_progress: Callable[[], None] | None = None) -> None:
        for key, schedule in tasks:
            self.workers[0].state = "busy"
            t0 = time.perf_counter()
            result = self.evaluator.evaluate(schedule)
            self.workers[0].busy_s += time.perf_counter() - t0
            self.workers[0].done += 1
            self.workers[0].state = "idle"
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
        raise PoolError(f"--ray-address {address!r} is not HOST:PORT (or ray://HOST:PORT); "
                        "use the address printed by `ray start --head`")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise PoolError(f"cannot reach the Ray cluster at {address} ({exc}); start it with `ray start --head` "
                        "on that machine, check the address/port and firewall, or leave --ray-address out to "
                        "start a local cluster") from None


def _root_cause(exc: BaseException) -> str:
    """The original error inside a Ray error (its last 'SomeError: message' line), without
    Ray's wrapping and remote traceback, so the user sees what to fix."""
    import re

    lines = [m.group(2) for m in re.finditer(r"(?m)^\s*([\w.]+(?:Error|Exception)): (.*)$", str(exc))]
    return lines[-1] if lines else str(exc)


class RayPool:
    """Ray actors holding one pipeline each; `num_gpus=1` per actor when GPUs exist, else one CPU slot."""

    def __init__(self, config: WorkerConfig, num_workers: int, address: str | None = None,
                 use_gpu: bool | None = None, on_status: Callable[[], None] | None = None):
        import ray

        self.ray, self.config = ray, config
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        if not ray.is_initialized():
            if address:
                check_ray_address(address)
                ray.init(address=address, log_to_driver=False, include_dashboard=False)
            else:
                ray.init(num_cpus=max(num_workers, os.cpu_count() or 1), include_dashboard=False,
                         log_to_driver=False, configure_logging=False)
        if use_gpu is None:
            use_gpu = ray.cluster_resources().get("GPU", 0) >= 1
        options = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
        self.actor_cls = ray.remote(**options, max_restarts=0, max_task_retries=0)(CandidateEvaluator)
        self.num_workers = num_workers
        self.actors: list[Any] = []
        self.workers: list[WorkerStatus] = []
        pending = {}
        for i in range(num_workers):
            actor = self.actor_cls.remote(config)
            self.actors.append(actor)
            self.workers.append(WorkerStatus(f"worker-{i}"))
            pending[actor.ready.remote()] = i
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=600)
            if not ready:
                raise PoolError(f"{len(pending)} worker(s) did not start within 10 minutes; check the cluster's "
                                "resources (`ray status`) and that ecad is installed on every node")
            i = pending.pop(ready[0])
            try:
                self.workers[i].info = ray.get(ready[0])
            except ray.exceptions.RayError as exc:
                raise PoolError(f"worker {i} failed to start: {_root_cause(exc)}") from None
            self.workers[i].state = "idle"
            if on_status:
                on_status()

    def _replace(self, i: int) -> None:
        """Start a fresh actor in slot i after its actor died (it reloads the pipeline)."""
        self.workers[i].state = "starting"
        self.actors[i] = self.actor_cls.remote(self.config)
        self.workers[i].info = {"restarted": True}

    def evaluate(self, tasks: list[Task], on_result: OnResult, on_progress: Callable[[], None] | None = None) -> None:
        ray = self.ray
        queue: deque[Task] = deque(tasks)
        inflight: dict[Any, tuple[int, Task, float]] = {}
        while queue or inflight:
            for i, status in enumerate(self.workers):
                if queue and status.state in ("idle", "starting") and not any(w == i for w, _, _ in inflight.values()):
                    task = queue.popleft()
                    inflight[self.actors[i].evaluate.remote(task[1])] = (i, task, time.perf_counter())
                    status.state = "busy"
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=1.0)
            for ref in ready:
                i, task, t0 = inflight.pop(ref)
                status = self.workers[i]
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError:
                    status.state = "dead"
                    queue.appendleft(task)  # re-queue on another (or the replacement) worker
                    self._replace(i)
                    continue
                except ray.exceptions.RayTaskError as exc:
                    result = {"feasible": False, "reason": f"worker error: {exc.cause!r}"[:500]}
                status.busy_s += time.perf_counter() - t0
                status.done += 1
                status.state = "idle"
                on_result(task[0], result)
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


def make_pool(config: WorkerConfig, workers: int, address: str | None = None, on_status=None):
    """`workers=0` evaluates in this process; otherwise Ray actors (local cluster unless `address`)."""
    if workers <= 0:
        return LocalPool(config)
    return RayPool(config, workers, address, on_status=on_status)
