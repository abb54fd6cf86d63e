"""Dispatch candidates to evaluators: Ray actors (one per GPU or CPU slot) or one in-process.

Every candidate is completed exactly once, and results are handed back as they arrive so the run
store records them immediately. What the Ray pool survives, and how:

- A worker that dies (its node lost, the OOM killer) or hangs (SIGSTOP, a stuck CUDA call: no
  result within the candidate deadline, `candidate_deadline`) is killed for good and replaced; its
  candidate is re-queued on another worker. A candidate that takes its worker down twice is
  recorded as infeasible (`DIED_TWICE`, `HUNG_TWICE`) instead of being retried for ever.
- An exception that escapes a worker's `evaluate` is a *worker* error (the evaluator returns bad
  candidates - NaN images, OOM at batch 1 - as infeasible results itself): the candidate is
  re-queued on another worker, and a worker that raises `MAX_WORKER_ERRORS` times in a row (a sick
  GPU) is replaced. A candidate that raises on `MAX_ERRORS_PER_CANDIDATE` different workers is
  infeasible, so one that really raises everywhere still ends. A `MetricError` stops the run: the
  metric's set-up fails alike for every candidate.
- A slot whose replacement cannot be placed (a node lost for good) or keeps failing to start is
  "waiting" (`WorkerStatus.state`, with a `note` saying why): the search carries on with the live
  workers, and Ray places the pending actor when capacity returns; it then joins. The run stops
  (`PoolError`, resume with --resume) only when no worker is alive and none starts within the
  start timeout, or every slot's replacements fail to start.
- The driver's environment does not reach workers on other nodes by itself: the variables that
  decide where weights and caches are and whether the Hub is reached (`FORWARDED_ENV`) are sent
  with every actor (Ray's `runtime_env`), plus any the user adds (`ecad search --worker-env`).
- More workers than the cluster can hold start with what fits (one warning line) and grow as
  resources appear; `workers="auto"` asks for one per GPU of the cluster (one per CPU slot
  without GPUs).

A task is (id, schedule JSON) for a whole candidate, or (id, schedule JSON, chunk) for one chunk
of a race (ecad.search.racing); `on_result` may return follow-up tasks (the race's next chunk),
which join the queue, so a race keeps every worker busy without waiting for the others.
"""

from __future__ import annotations

import os
import re
import socket
import statistics
import sys
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ecad.distributed.worker import CandidateEvaluator, WorkerConfig
from ecad.errors import EcadError
from ecad.metrics.base import MetricError

# Variables a worker reads that are usually set in the user's shell, not on every node: where the
# weights and ecad's caches live and whether the Hub may be reached. Ray starts a node's workers
# with that node's environment, so without these a worker on another machine would download (or
# fail offline) what the driver's machine has, or write its caches where the user did not ask.
FORWARDED_ENV = (
    "ECAD_CACHE",
    "XDG_CACHE_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_HUB_OFFLINE",
    "HF_ENDPOINT",
    "HF_TOKEN",
    "TRANSFORMERS_OFFLINE",
    "TORCH_HOME",
)

Task = tuple  # (id, schedule JSON) or (id, schedule JSON, chunk index): see the module docstring
OnResult = Callable[[str, dict[str, Any]], Any]  # may return a list of follow-up tasks (`follow_ups`)


def follow_ups(returned: Any) -> list[Task]:
    """The follow-up tasks an `on_result` returned: a list of tasks; anything else (None, or what a
    callback's last expression happens to give, such as dict.setdefault's value) adds nothing."""
    return returned if isinstance(returned, list) else []


def task_call(task: Task) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """The evaluator arguments of a task: its schedule, and its chunk when it is one of a race."""
    return (task[1],), ({"chunk": task[2]} if len(task) > 2 and task[2] is not None else {})


MAX_DEATHS_PER_CANDIDATE = 2  # a candidate that kills or hangs its worker this often is infeasible, not retried
MAX_FAILED_STARTS = 3  # consecutive replacements of a slot that may fail to start before it waits for a retry
RETRY_START_S = 60.0  # then a fresh replacement is tried this often (the cause may be a node that comes back)
START_TIMEOUT_S = 600.0  # no live worker for this long: stop the run
# RayPool() returns once the workers that fit the cluster's free resources are up; after the first
# one, it waits at most this long (or as long as the first took) for the rest, which then join later
START_GRACE_S = 60.0
# Candidate deadline: evaluations of one run cost about the same (same prompts, seeds and batch
# size; schedules differ by a few times in compute at most), so a candidate running several times
# the median of the finished ones is a hung worker, not a slow candidate. 5x leaves room for a
# slower GPU of a mixed cluster and for a worker's first candidate (cold kernels); the floor keeps
# tiny runs (sub-second candidates, where a scheduling hiccup is many medians) from killing
# healthy workers. Before any candidate has finished there is nothing to go by: a worker's first
# candidate may load lazy weights or tune kernels, so the first deadline is generous.
DEADLINE_MULTIPLIER = 5.0
DEADLINE_FLOOR_S = 60.0
FIRST_DEADLINE_S = 1800.0
DURATION_WINDOW = 200  # the median is taken over this many latest candidate times
MAX_WORKER_ERRORS = 3  # consecutive worker errors after which a slot's actor is replaced
MAX_ERRORS_PER_CANDIDATE = 2  # a candidate that raises on this many different workers is infeasible
DIED_TWICE = "worker died evaluating this candidate twice"
HUNG_TWICE = "worker hung evaluating this candidate twice (no result within the candidate deadline)"
LOST_TWICE = "worker died or hung evaluating this candidate twice"
LIVE = ("idle", "busy")


class PoolError(EcadError, RuntimeError):
    """The pool cannot start (unreachable Ray cluster, no resources); the message says the fix."""


@dataclass
class WorkerStatus:
    """What the progress line and the generation records show about one worker slot."""

    name: str
    state: str = "starting"  # starting | waiting (cannot be placed or start now) | idle | busy
    done: int = 0
    busy_s: float = 0.0
    restarts: int = 0  # replacement actors started in this slot after its actor died, hung or failed
    task: str | None = None  # key of the candidate it is evaluating, while busy
    info: dict[str, Any] = field(default_factory=dict)
    note: str = ""  # why the slot is starting again or waiting, while it is not live
    last_replaced: str = ""  # why the slot's actor was last replaced
    worker_errors: int = 0  # consecutive exceptions out of its evaluate (a sick worker)


class LocalPool:
    """One evaluator in this process: same interface as RayPool, no Ray (single GPU, tests)."""

    def __init__(self, config: WorkerConfig):
        self.evaluator = CandidateEvaluator(config)
        self.workers = [WorkerStatus("local", "idle", info=self.evaluator.ready())]

    def evaluate(self, tasks: list[Task], on_result: OnResult, on_progress: Callable[[], None] | None = None) -> None:
        status = self.workers[0]
        queue: deque[Task] = deque(tasks)
        while queue:
            task = queue.popleft()
            key = task[0]
            status.state, status.task = "busy", key
            t0 = time.perf_counter()
            args, kwargs = task_call(task)
            result = self.evaluator.evaluate(*args, **kwargs)
            status.busy_s += time.perf_counter() - t0
            status.done += 1
            status.state, status.task = "idle", None
            queue.extend(follow_ups(on_result(key, result)))
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


def auto_worker_count(resources: dict[str, float], use_gpu: bool, local: bool) -> int:
    """`workers="auto"`: one actor per GPU of the cluster, or without GPUs one per CPU slot, less
    one CPU for the driver on a local cluster (on a cluster the driver takes no Ray CPU)."""
    if use_gpu:
        gpus = int(resources.get("GPU", 0))
        if gpus < 1:
            raise PoolError("the Ray cluster has no GPU for the workers; leave out use_gpu for CPU workers")
        return gpus
    cpus = int(resources.get("CPU", 0))
    return max(1, cpus - 1 if local else cpus)


def candidate_deadline(durations: list[float] | deque[float], override: float | None = None) -> float:
    """Seconds a candidate may run before its worker counts as hung: `override` when given, else
    `DEADLINE_MULTIPLIER` x the median of the finished candidates' times, at least
    `DEADLINE_FLOOR_S`; `FIRST_DEADLINE_S` before any has finished (see the constants)."""
    if override is not None:
        return float(override)
    if not durations:
        return FIRST_DEADLINE_S
    return max(DEADLINE_FLOOR_S, DEADLINE_MULTIPLIER * statistics.median(durations))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


class RayPool:
    """Ray actors holding one pipeline each; `num_gpus=1` per actor when GPUs exist, else one CPU slot.

    `num_workers` is a count or "auto" (`auto_worker_count`). `candidate_timeout_s` overrides the
    candidate deadline (`candidate_deadline`); `start_timeout_s` is how long the pool may have no
    live worker before it gives up."""

    def __init__(
        self,
        config: WorkerConfig,
        num_workers: int | str,
        address: str | None = None,
        use_gpu: bool | None = None,
        candidate_timeout_s: float | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        env: dict[str, str] | None = None,
    ):
        if not (num_workers == "auto" or (isinstance(num_workers, int) and num_workers >= 1)):
            raise PoolError(f"workers must be a count >= 1 or 'auto', got {num_workers!r}")
        if candidate_timeout_s is not None and not candidate_timeout_s > 0:
            raise PoolError(f"the candidate timeout must be > 0 seconds, got {candidate_timeout_s!r}")
        if not address and "ray" not in sys.modules:
            # Ray resolves 127.0.0.1 to the machine's public address and then listens on every
            # interface; in its single-machine mode it keeps a local cluster on loopback
            os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        import ray

        self.ray, self.config = ray, config
        self.candidate_timeout_s, self.start_timeout_s = candidate_timeout_s, start_timeout_s
        if not ray.is_initialized():
            if address:
                check_ray_address(address)
                ray.init(address=address, log_to_driver=False, include_dashboard=False)
            else:
                # a cluster of this machine only: nothing listens beyond loopback
                wanted = num_workers if isinstance(num_workers, int) else 0
                ray.init(
                    num_cpus=max(wanted, os.cpu_count() or 1),
                    include_dashboard=False,
                    log_to_driver=False,
                    configure_logging=False,
                    _node_ip_address="127.0.0.1",
                )
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0)
        if use_gpu is None:
            use_gpu = gpus >= 1
        if num_workers == "auto":
            num_workers = auto_worker_count(resources, use_gpu, local=not address)
        elif use_gpu and not address:  # a local cluster cannot grow: never ask for more GPUs than it has
            num_workers = local_worker_count(num_workers, gpus)
        self.kind = "GPU" if use_gpu else "CPU"
        free = int(ray.available_resources().get(self.kind, 0))
        options: dict[str, Any] = {"num_gpus": 1, "num_cpus": 1} if use_gpu else {"num_cpus": 1}
        if env:  # set in each actor's process before it imports anything (the Hub reads HF_* on import)
            options["runtime_env"] = {"env_vars": dict(env)}
        self.env = dict(env or {})
        self.actor_cls = ray.remote(**options, max_restarts=0, max_task_retries=0)(CandidateEvaluator)
        self.num_workers = num_workers
        self.workers = [WorkerStatus(f"worker-{i}") for i in range(num_workers)]
        self.actors: list[Any] = [None] * num_workers
        self._starting: dict[Any, int] = {}  # a starting actor's ready ref -> slot (may outlive one evaluate)
        self._started_at = [0.0] * num_workers  # when the slot's current actor was created
        self._slowest_start = 0.0  # longest creation-to-ready time seen: when a start counts as stuck
        self._failed_starts = [0] * num_workers  # consecutive replacements of a slot that failed to start
        self._start_errors = [""] * num_workers
        self._retry_at: dict[int, float] = {}  # slot -> when to try again, after MAX_FAILED_STARTS
        self._durations: deque[float] = deque(maxlen=DURATION_WINDOW)
        self._no_live_since: float | None = None
        self._labelled_at = 0.0
        for i in range(num_workers):
            self._start(i)
        if free < 1:
            print(
                f"ecad: warning: the Ray cluster has no free {self.kind} now; waiting up to "
                f"{start_timeout_s / 60:.0f} minutes for one of the {_plural(num_workers, 'worker')}",
                file=sys.stderr,
                flush=True,
            )
        try:
            self._await_start(min(num_workers, free))
        except BaseException:  # no half-started pool behind: its actors would hold their GPUs
            self.shutdown()
            raise

    # ------------------------------------------------------------ slots
    def _start(self, i: int) -> None:
        self.actors[i] = self.actor_cls.remote(self.config)
        self._starting[self.actors[i].ready.remote()] = i
        self._started_at[i] = time.perf_counter()

    def _replace(self, i: int, reason: str) -> None:
        """Kill slot i's actor for good and start a fresh one (it reloads the pipeline).

        The kill matters: an actor Ray reports as unavailable, or a hung one, may still be alive
        and hold its GPU, which the replacement then could never get."""
        try:
            self.ray.kill(self.actors[i])
        except Exception:  # noqa: BLE001 - already gone
            pass
        status = self.workers[i]
        status.state, status.task, status.info = "starting", None, {}
        status.restarts += 1
        status.worker_errors = 0
        status.note = status.last_replaced = reason[:300]
        self._start(i)

    def _live(self) -> int:
        return sum(w.state in LIVE for w in self.workers)

    def _started(self, ref: Any) -> None:
        """A starting actor answered `ready` (or failed to start)."""
        ray = self.ray
        i = self._starting.pop(ref)
        status = self.workers[i]
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as exc:
            reason = _root_cause(exc)
            self._failed_starts[i] += 1
            self._start_errors[i] = reason
            if self._failed_starts[i] < MAX_FAILED_STARTS:
                self._replace(i, f"replacement failed to start: {reason}")
                return
            try:
                ray.kill(self.actors[i])
            except Exception:  # noqa: BLE001 - already gone
                pass
            status.state = "waiting"
            status.note = (
                f"{self._failed_starts[i]} replacements failed to start: {reason}; "
                f"trying again every {RETRY_START_S:.0f} s"
            )[:300]
            self._retry_at[i] = time.perf_counter() + RETRY_START_S
            return
        self._slowest_start = max(self._slowest_start, time.perf_counter() - self._started_at[i])
        self._failed_starts[i] = 0
        status.info, status.state, status.note = info, "idle", ""

    def _await_start(self, expected: int) -> None:
        """Wait for the workers that fit (`expected`, at least one); the others join in evaluate()."""
        ray = self.ray
        t0 = time.perf_counter()
        first: float | None = None
        while self._starting and self._live() < max(1, expected):
            now = time.perf_counter()
            if first is not None and now - first > max(START_GRACE_S, first - t0):
                break
            if now - t0 > self.start_timeout_s:
                raise PoolError(
                    f"no worker started within {self.start_timeout_s / 60:.0f} minutes; check the cluster's "
                    "resources (`ray status`) and that ecad is installed on every node"
                )
            ready, _ = ray.wait(list(self._starting), num_returns=1, timeout=1.0)
            for ref in ready:
                i = self._starting[ref]
                try:
                    ray.get(ref)
                except ray.exceptions.RayError as exc:
                    raise PoolError(f"worker {i} failed to start: {_root_cause(exc)}") from None
                self._started(ref)
                first = first or time.perf_counter()
        self._label_pending(force=True)
        live = self._live()
        if live < self.num_workers:
            print(
                f"ecad: warning: {_plural(self.num_workers, 'worker')} requested, {live} placed "
                f"(no free {self.kind} in the Ray cluster for the others now); the pool grows as "
                "resources appear",
                file=sys.stderr,
                flush=True,
            )

    def _label_pending(self, force: bool = False) -> None:
        """Tell slots that are starting from those waiting for capacity: a pending actor beyond
        what the cluster holds besides the live workers (a node lost), or one not up after twice
        the slowest start (resources taken by others)."""
        now = time.perf_counter()
        pending = [
            i for i, w in enumerate(self.workers) if w.state in ("starting", "waiting") and i not in self._retry_at
        ]
        if not pending or (not force and now - self._labelled_at < 2.0):
            return
        self._labelled_at = now
        total = int(self.ray.cluster_resources().get(self.kind, 0))
        live = self._live()
        stuck_after = max(START_GRACE_S, 2 * self._slowest_start)
        for n, i in enumerate(sorted(pending, key=lambda i: self._started_at[i])):
            status, age = self.workers[i], now - self._started_at[i]
            if n >= total - live:
                status.state = "waiting"
                status.note = (
                    f"no free {self.kind} in the cluster ({total} in all, {live} used by live workers); "
                    "it starts when capacity returns"
                )
            elif age > stuck_after:
                status.state = "waiting"
                status.note = f"not started after {age:.0f} s: no free {self.kind} in the cluster? (`ray status`)"
            elif status.state == "waiting":  # room again: it is being placed or loading
                status.state, status.note = "starting", status.last_replaced

    def _retry_due(self) -> None:
        now = time.perf_counter()
        for i, at in list(self._retry_at.items()):
            if now >= at:
                del self._retry_at[i]
                self._replace(i, f"retrying after: {self._start_errors[i]}")

    def _check_alive(self) -> None:
        """Stop when no worker is alive and none will be: every slot's replacements fail to
        start, or none has started within the start timeout."""
        if self._live():
            self._no_live_since = None
            return
        now = time.perf_counter()
        if self._no_live_since is None:
            self._no_live_since = now
        if len(self._retry_at) == len(self.workers):
            i = min(self._retry_at)
            raise PoolError(
                f"worker {i} died and {self._failed_starts[i]} replacements failed to start: "
                f"{self._start_errors[i]}; fix that and resume the run with --resume"
            )
        if now - self._no_live_since > self.start_timeout_s:
            notes = "; ".join(f"{w.name}: {w.note or w.state}" for w in self.workers)
            raise PoolError(
                f"no worker is alive and none started within {self.start_timeout_s / 60:.0f} minutes ({notes}); "
                "check the cluster's resources (`ray status`), then resume the run with --resume"
            )

    # ------------------------------------------------------------ evaluation
    def _ident(self, i: int) -> tuple[int, int]:
        """One actor: a slot's replacement is another worker."""
        return i, self.workers[i].restarts

    def _pick(self, queue: deque[Task], i: int, errored: dict[str, set]) -> Task | None:
        """The first queued task for slot i: not one that raised on this very worker while another
        live worker, which has not failed it, can take it."""
        live = {self._ident(j) for j, w in enumerate(self.workers) if w.state in LIVE}
        for n, task in enumerate(queue):
            failed_on = errored.get(task[0], set())
            if self._ident(i) not in failed_on or not live - failed_on:
                del queue[n]
                return task
        return None

    def evaluate(self, tasks: list[Task], on_result: OnResult, on_progress: Callable[[], None] | None = None) -> None:
        """Run every task once; results (and infeasible verdicts for candidates that keep killing,
        hanging or failing their workers) go to `on_result` as they arrive."""
        ray = self.ray
        queue: deque[Task] = deque(tasks)
        running: dict[Any, tuple[int, Task, float, float]] = {}  # evaluate ref -> (slot, task, start, deadline)
        losses: dict[str, list[str]] = {}  # key -> "died" / "hung", one per worker it took down
        errored: dict[str, set] = {}  # key -> workers (`_ident`) on which its evaluation raised

        def lose(i: int, task: Task, kind: str, reason: str) -> None:
            self._replace(i, reason)
            kinds = losses.setdefault(task[0], [])
            kinds.append(kind)
            if len(kinds) < MAX_DEATHS_PER_CANDIDATE:
                queue.appendleft(task)  # on another worker, or this slot's replacement
            else:
                seen = set(kinds)
                why = DIED_TWICE if seen == {"died"} else HUNG_TWICE if seen == {"hung"} else LOST_TWICE
                queue.extend(follow_ups(on_result(task[0], {"feasible": False, "reason": why})))

        while queue or running:
            for i, status in enumerate(self.workers):
                if queue and status.state == "idle":
                    task = self._pick(queue, i, errored)
                    if task is None:
                        continue
                    deadline = candidate_deadline(self._durations, self.candidate_timeout_s)
                    args, kwargs = task_call(task)
                    ref = self.actors[i].evaluate.remote(*args, **kwargs)
                    running[ref] = (i, task, time.perf_counter(), deadline)
                    status.state, status.task = "busy", task[0]
            refs = list(running) + list(self._starting)
            if refs:
                ready, _ = ray.wait(refs, num_returns=1, timeout=1.0)
            else:  # every slot waits for a retry
                ready = []
                time.sleep(1.0)
            for ref in ready:
                if ref in self._starting:
                    self._started(ref)
                    continue
                i, task, t0, _ = running.pop(ref)
                key, status = task[0], self.workers[i]
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    lose(i, task, "died", f"its worker died: {_root_cause(exc)}")
                    continue
                except ray.exceptions.RayTaskError as exc:
                    if isinstance(exc.cause, MetricError):  # the metric's set-up, not this candidate: stop
                        raise PoolError(
                            f"the metric cannot score on the workers: {exc.cause}; fix the metric "
                            "options, then resume the run with --resume"
                        ) from None
                    cause = repr(exc.cause) if exc.cause is not None else _root_cause(exc)
                    failed_on = errored.setdefault(key, set())
                    failed_on.add(self._ident(i))
                    if len(failed_on) >= MAX_ERRORS_PER_CANDIDATE:
                        reason = f"worker error on {_plural(len(failed_on), 'worker')}: {cause}"
                        queue.extend(follow_ups(on_result(key, {"feasible": False, "reason": reason[:500]})))
                    else:
                        queue.appendleft(task)  # the worker may be the problem: try it on another one
                    status.worker_errors += 1
                    if status.worker_errors >= MAX_WORKER_ERRORS:
                        self._replace(i, f"{status.worker_errors} worker errors in a row, the last: {cause}")
                    else:
                        status.state, status.task = "idle", None
                    continue
                except ray.exceptions.RayError as exc:  # the result is lost with its worker's node
                    lose(i, task, "died", f"its result was lost: {_root_cause(exc)}")
                    continue
                elapsed = time.perf_counter() - t0
                self._durations.append(elapsed)
                status.busy_s += elapsed
                status.done += 1
                status.worker_errors = 0
                status.state, status.task = "idle", None
                queue.extend(follow_ups(on_result(key, result)))
            now = time.perf_counter()
            for ref, (i, task, t0, deadline) in list(running.items()):
                if now - t0 > deadline:
                    del running[ref]
                    lose(i, task, "hung", f"hung: no result within {deadline:.0f} s, killed")
            self._retry_due()
            self._label_pending()
            if queue or running:
                self._check_alive()
            if on_progress:
                on_progress()
        self._label_pending(force=True)

    def actor_pids(self) -> list[int | None]:
        """Process id of each slot's worker, as it reported when it started (None while not started)."""
        return [w.info.get("pid") for w in self.workers]

    def shutdown(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor)
            except Exception:  # noqa: BLE001 - already dead
                pass
        self.actors, self._starting, self._retry_at = [], {}, {}


def worker_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """What every worker's process gets: the `FORWARDED_ENV` variables set here, then `extra`."""
    return {**{k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}, **(extra or {})}


def make_pool(
    config: WorkerConfig,
    workers: int | str,
    address: str | None = None,
    candidate_timeout_s: float | None = None,
    env: dict[str, str] | None = None,
) -> LocalPool | RayPool:
    """`workers=0` evaluates in this process; otherwise Ray actors (local cluster unless `address`):
    a count, or "auto" for one per GPU of the cluster (one per CPU slot without GPUs, less one for
    the driver on a local cluster). `candidate_timeout_s` overrides the candidate deadline; `env`
    is set in every worker's process (`worker_environment()` builds the usual one)."""
    if isinstance(workers, int) and workers <= 0:
        return LocalPool(config)
    return RayPool(config, workers, address, candidate_timeout_s=candidate_timeout_s, env=env)
