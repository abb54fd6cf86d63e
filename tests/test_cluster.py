"""A real two-node Ray cluster started with the Ray CLI: both nodes on this machine, each with its
own cache directory (ECAD_CACHE) as if on its own disk. The workers land on both nodes; then the
second node is lost for good while candidates run, and the search carries on with the head's worker.

Everything listens on loopback only. Ray turns a node address of 127.0.0.1 into the machine's
public address (and then listens on every interface) unless it runs in its single-machine mode
(RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0), in which `ray start --address` refuses to add a node. So the
head and the driver run in single-machine mode, and the second node is started through the Ray CLI's
own entry point with that address translation turned off (`JOIN`).

The driver runs in a subprocess (`drive`): it connects with `ray_address` as `ecad search
--ray-address` does, and leaves this test session's own local cluster (the `ray_cluster` fixture)
alone.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
RAY = str(Path(sys.executable).with_name("ray"))
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
# `ray start --address ...`, with 127.0.0.1 kept as it is (see the module docstring)
JOIN = (
    "import sys, ray._private.services as services; services.resolve_ip_for_localhost = lambda host: host; "
    "from ray.scripts.scripts import main; sys.argv[0] = 'ray'; main()"
)
# the head notices a lost node within about 2 s instead of Ray's default 15-30 s
FAST_HEALTH_CHECKS = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def session_of(pid: int) -> int | None:
    """The session id of a live process (None once it has exited): every process of a node (its
    raylet, agents and workers) shares the session of the `ray start` that started it."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] in ("Z", "X") else int(fields[3])


def processes_of(session: int) -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit() and session_of(int(p)) == session]


def kill_session(session: int) -> None:
    """SIGKILL every process of one node, by process id: the node is gone as if powered off."""
    for pid in processes_of(session):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


@dataclasses.dataclass
class Node:
    proc: subprocess.Popen
    temp_dir: Path
    cache: Path

    @property
    def session(self) -> int:
        return self.proc.pid  # started with start_new_session


def _start_node(command: list[str], env: dict[str, str], timeout: float = 120.0) -> Node:
    temp_dir = Path(tempfile.mkdtemp(prefix="r", dir="/tmp"))  # short: Ray's unix socket paths live under it
    cache = temp_dir / "cache"
    log = temp_dir / "start.log"
    ports = ["--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port"]
    ports += ["--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port"]
    args = [*command, "--temp-dir", str(temp_dir), "--node-ip-address", "127.0.0.1", "--num-cpus", "1"]
    args += ["--num-gpus", "0", "--disable-usage-stats", "--block"]
    for flag in ports:
        args += [flag, str(_free_port())]
    with log.open("w") as out:
        proc = subprocess.Popen(
            args,
            env={**env, "ECAD_CACHE": str(cache)},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=ROOT,
        )
    node = Node(proc, temp_dir, cache)
    deadline = time.monotonic() + timeout
    while "Ray runtime started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            _stop_node(node)
            raise RuntimeError(f"ray start failed: {log.read_text(errors='replace')[-3000:]}")
        time.sleep(0.2)
    return node


def _stop_node(node: Node) -> None:
    kill_session(node.session)
    try:
        node.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass
    time.sleep(0.2)
    kill_session(node.session)  # anything that was starting while the first round went
    shutil.rmtree(node.temp_dir, ignore_errors=True)


@dataclasses.dataclass
class Cluster:
    address: str
    nodes: list[Node]
    env: dict[str, str]

    def join(self) -> Node:
        """Another node (a machine joining, or the lost one coming back): `ray start --address`."""
        command = [sys.executable, "-c", JOIN, "start", "--address", self.address]
        self.nodes.append(_start_node(command, {**self.env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "1"}))
        return self.nodes[-1]


@pytest.fixture
def two_nodes():
    """A head and a second node, one CPU each; every process of every node killed by pid at the end."""
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **FAST_HEALTH_CHECKS}
    port = _free_port()
    cluster = Cluster(f"127.0.0.1:{port}", [], env)
    try:
        head_cmd = [RAY, "start", "--head", "--port", str(port), "--include-dashboard", "false"]
        cluster.nodes.append(_start_node(head_cmd, {**env, **LOOPBACK}))
        cluster.join()
        yield cluster
    finally:
        for node in reversed(cluster.nodes):
            _stop_node(node)


def _nodes_alive() -> int:
    import ray

    return sum(n["Alive"] for n in ray.nodes())


def _wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def drive(address: str, lost_session: int, flag: str) -> None:
    """The driver (in its own process): a pool of every CPU slot of the cluster ("auto");
    generation 1: the second node is killed while one of its candidates runs; generation 2 on the
    head's worker alone; then (`flag` file: the test starts a node) generation 3 with the lost slot
    back. Prints what happened as JSON."""
    import ray

    from ecad.distributed.pool import RayPool
    from ecad.distributed.worker import WorkerConfig
    from tests.conftest import candidate_tasks

    pool = RayPool(WorkerConfig("tiny-pixart", ("a red cube", "a cat"), (0, 1), batch_size=1), "auto", address)
    placed = {w.name: "lost" if session_of(w.info["pid"]) == lost_session else "head" for w in pool.workers}
    lost = next(i for i, w in enumerate(pool.workers) if placed[w.name] == "lost")
    results: dict[str, list[dict]] = {}
    killed: list[str] = []

    def on_result(key: str, result: dict) -> None:
        results.setdefault(key, []).append(result)

    def on_progress() -> None:
        if not killed and pool.workers[lost].state == "busy":
            killed.append(pool.workers[lost].task)
            kill_session(lost_session)

    tasks = candidate_tasks("tiny-pixart", 18)
    pool.evaluate(tasks[:8], on_result, on_progress)
    _wait_until(lambda: _nodes_alive() == 1)  # the head marks the node dead (within about 2 s here)
    pool.evaluate(tasks[8:12], on_result)
    after_loss = dataclasses.asdict(pool.workers[lost])

    Path(flag).touch()  # the test starts a new node: the pending replacement is placed there
    _wait_until(lambda: _nodes_alive() == 2)

    def on_result_back(key: str, result: dict) -> None:
        if len(results) == 12:  # hold generation 3 until the lost slot's worker has loaded
            ray.get(pool.actors[lost].pid.remote(), timeout=120)
        on_result(key, result)

    pool.evaluate(tasks[12:], on_result_back)
    report = {
        "tasks": [k for k, _ in tasks],
        "placed": placed,
        "lost": lost,
        "killed": killed,
        "results": results,
        "after_loss": after_loss,
        "workers": [dataclasses.asdict(w) for w in pool.workers],
        "sessions": [session_of(w.info.get("pid", 0)) for w in pool.workers],  # the nodes the workers are on now
    }
    pool.shutdown()
    print("REPORT " + json.dumps(report, default=str))


def test_a_node_lost_for_good_leaves_the_search_running_and_its_slot_comes_back_with_a_new_node(two_nodes):
    head, second = two_nodes.nodes
    flag = head.temp_dir / "start-a-node"
    out, err = head.temp_dir / "driver.out", head.temp_dir / "driver.err"
    t0 = time.perf_counter()
    with out.open("w") as stdout, err.open("w") as stderr:
        driver = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"from tests.test_cluster import drive; drive({two_nodes.address!r}, {second.session}, {str(flag)!r})",
            ],
            stdout=stdout,
            stderr=stderr,
            cwd=ROOT,
            env={**os.environ, **LOOPBACK, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"},
        )
    try:
        _wait_until(lambda: flag.exists() or driver.poll() is not None, timeout=240)
        third = two_nodes.join() if flag.exists() else None
        driver.wait(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()
    seconds = time.perf_counter() - t0
    assert driver.returncode == 0, err.read_text()[-3000:]
    report = json.loads(out.read_text().split("REPORT ", 1)[1].splitlines()[0])
    assert sorted(report["placed"].values()) == ["head", "lost"], "auto did not put a worker on each node"
    assert not processes_of(second.session), "the second node is not gone"
    # each node made its own uncached references, on its own disk
    for node in (head, second, third):
        assert list((node.cache / "references").glob("*.safetensors")), node
    results = report["results"]
    assert sorted(results) == sorted(report["tasks"]), "a candidate was not evaluated"
    assert all(len(v) == 1 for v in results.values()), "a candidate was completed twice"
    assert all(r[0]["feasible"] for r in results.values())
    assert len(report["killed"]) == 1
    # while the node is lost: the slot waits, says why, and the head's worker does everything
    waiting, workers = report["after_loss"], report["workers"]
    alive = workers[1 - report["lost"]]
    assert waiting["state"] == "waiting" and waiting["restarts"] == 1, waiting
    assert waiting["note"].startswith("no free CPU in the cluster (1 in all, 1 used by live workers)"), waiting
    assert waiting["last_replaced"].startswith("its worker died"), waiting
    assert alive["restarts"] == 0
    assert all(results[k][0]["worker"] == alive["info"]["worker"] for k in report["tasks"][8:12])
    # a new node: the slot is back, on it, and takes candidates again
    back = workers[report["lost"]]
    assert back["state"] == "idle" and back["restarts"] == 1 and back["note"] == "", back
    assert report["sessions"][report["lost"]] == third.session
    assert any(results[k][0]["worker"] == back["info"]["worker"] for k in report["tasks"][12:])
    print(f"two-node cluster test: driver {seconds:.1f} s")
