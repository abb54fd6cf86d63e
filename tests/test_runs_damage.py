"""Damaged runs: every one resumes to the result an undamaged run reaches, or fails with one RunError
naming the file, before any worker starts. Real small searches (in-process workers, tiny model);
the damage is what a fuzzing campaign found: bytes that are not UTF-8, records of the wrong shape,
truncated or emptied files, and two resumes of one run at the same time."""

from __future__ import annotations

import json
import multiprocessing
import random
import shutil
import signal
import time
from pathlib import Path

import pytest

from ecad.cli import main
from ecad.runs import (
    RunError,
    RunStore,
    config_hash,
    evaluation_record_problem,
    load_run,
    read_evaluation_records,
)
from ecad.search.run import (
    ExecConfig,
    SearchConfig,
    SearchRun,
    read_state_file,
    resume_config,
    state_from_generation,
)
from tests.conftest import SMALL, evaluation_steps

WARNING = "ecad search: warning: "


def _resume(run_dir: Path) -> SearchRun:
    return SearchRun(resume_config(str(run_dir), {}), ExecConfig(out=str(run_dir), workers=0, quiet=True), resume=True)


def _json(path: Path):
    return json.loads(path.read_text())


def _records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "evaluations.jsonl").read_text().splitlines()]


def _warnings(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith(WARNING)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The undamaged run every case must reach: SMALL, generation 0 and 2 more."""
    out = tmp_path_factory.mktemp("reference") / "run"
    return SearchRun(SearchConfig(**SMALL), ExecConfig(out=str(out), workers=0, quiet=True)).run()


@pytest.fixture(scope="module")
def stopped(reference, tmp_path_factory) -> Path:
    """The reference as it stood when killed right after generation 1: its checkpoint, gen_000 and
    gen_001, and the evaluations of generations 0 and 1; a resume still has generation 2 to run."""
    run = Path(shutil.copytree(reference, tmp_path_factory.mktemp("stopped") / "run"))
    for name in ("frontier", "plots"):
        shutil.rmtree(run / name, ignore_errors=True)
    (run / "report.html").unlink(missing_ok=True)
    (run / "gen_002.json").unlink()
    lines = (run / "evaluations.jsonl").read_text().splitlines(keepends=True)
    (run / "evaluations.jsonl").write_text("".join(line for line in lines if json.loads(line)["generation"] < 2))
    (run / "checkpoint.json").write_text(json.dumps(state_from_generation(_json(run / "gen_001.json")), indent=1))
    return run


@pytest.fixture
def stopped_copy(stopped, tmp_path) -> Path:
    return Path(shutil.copytree(stopped, tmp_path / "run"))


@pytest.fixture
def finished_copy(reference, tmp_path) -> Path:
    return Path(shutil.copytree(reference, tmp_path / "run"))


def assert_same_result(run_dir: Path, reference: Path) -> None:
    """The resumed run holds what the undamaged one does: the engine state, the last population,
    the frontier files, and every candidate evaluated exactly once."""
    assert _json(run_dir / "checkpoint.json") == _json(reference / "checkpoint.json")
    assert [m["key"] for m in _json(run_dir / "gen_002.json")["population"]] == [
        m["key"] for m in _json(reference / "gen_002.json")["population"]
    ]
    front, want = (_json(d / "frontier" / "frontier.json")["points"] for d in (run_dir, reference))
    assert [(p["key"], p["schedule"]) for p in front] == [(p["key"], p["schedule"]) for p in want]
    assert [p["quality"] for p in front] == pytest.approx([p["quality"] for p in want])
    steps = evaluation_steps(run_dir)
    assert len(steps) == len(set(steps)), "a candidate (or a racing chunk of it) was evaluated twice"

    # every candidate got as far as in the undamaged run (a lost chunk record whose later chunk
    # survived needs no re-run: each record holds the race's statistics so far)
    def furthest(pairs):
        return dict(sorted(pairs, key=lambda pair: (pair[0], pair[1] or 0)))

    assert furthest(steps) == furthest(evaluation_steps(reference))


def _population_lines(run_dir: Path) -> list[int]:
    """Indexes in evaluations.jsonl of the checkpoint population's records (a resume needs them)."""
    genomes = set(_json(run_dir / "checkpoint.json")["population"])
    return [i for i, r in enumerate(_records(run_dir)) if r["genome"] in genomes]


# --------------------------------------------------------------- the baseline
def test_each_generation_record_holds_the_checkpoint_and_an_undamaged_resume_matches(reference, stopped_copy, capsys):
    assert state_from_generation(_json(reference / "gen_002.json")) == _json(reference / "checkpoint.json")
    _resume(stopped_copy).run()
    assert_same_result(stopped_copy, reference)
    assert _warnings(capsys) == [] and not (stopped_copy / "evaluations.damaged.jsonl").exists()


# ------------------------------------------------------ 1, 2: evaluations.jsonl
def test_a_line_that_is_not_utf8_is_moved_out_and_its_candidate_evaluated_again(reference, stopped_copy, capsys):
    log = stopped_copy / "evaluations.jsonl"
    lines = log.read_bytes().splitlines(keepends=True)
    middle = [i for i in _population_lines(stopped_copy) if 0 < i < len(lines) - 1][0]
    lines[middle] = lines[middle][:30] + b"\xff\xfe" + lines[middle][32:]
    damaged = b"".join(lines)
    log.write_bytes(damaged)
    # a reader of a run still being written just skips it, and leaves the file alone
    assert len(read_evaluation_records(log)) == len(lines) - 1 and log.read_bytes() == damaged
    _resume(stopped_copy).run()
    assert_same_result(stopped_copy, reference)
    (warning,) = _warnings(capsys)
    assert "evaluations.jsonl: 1 damaged line(s) moved to evaluations.damaged.jsonl" in warning
    assert f"line {middle + 1}: not UTF-8" in warning
    (moved,) = [json.loads(line) for line in (stopped_copy / "evaluations.damaged.jsonl").read_text().splitlines()]
    assert moved["line"] == middle + 1 and bytes.fromhex(moved["bytes_hex"]) + b"\n" == lines[middle]


def test_lines_that_parse_but_are_not_records_are_moved_out(reference, stopped_copy, capsys):
    log = stopped_copy / "evaluations.jsonl"
    lines = log.read_text().splitlines()
    wrong = [
        lambda r: {},
        lambda r: {**r, "genome": "zz" + r["genome"][2:]},
        lambda r: {**r, "values": ["0.5", 1]},
        lambda r: {**r, "feasible": "yes"},
        lambda r: {**r, "generation": -1, "details": []},
    ]
    first = json.loads(lines[0])
    targets = _population_lines(stopped_copy)[: len(wrong)]
    for i, spoil in zip(targets, wrong):
        lines[i] = json.dumps(spoil(json.loads(lines[i])))
    spoilt = {lines[i] for i in targets}
    extra = [  # lines that are no record at all, between the others: nothing to evaluate again
        "[]",
        json.dumps({**first, "values": [1, 2, 3]}),
        json.dumps({**first, "key": first["key"].upper()}),
        json.dumps({**first, "reason": 5, "more": 1}),
    ]
    lines[2:2] = extra
    spoilt |= set(extra)
    log.write_text("\n".join(lines) + "\n")
    _resume(stopped_copy).run()
    assert_same_result(stopped_copy, reference)
    (warning,) = _warnings(capsys)
    assert f"{len(wrong) + len(extra)} damaged line(s) moved to evaluations.damaged.jsonl" in warning
    assert "and 6 more" in warning
    moved = [json.loads(line) for line in (stopped_copy / "evaluations.damaged.jsonl").read_text().splitlines()]
    assert [(m["line"], m["text"]) for m in moved] == [(n, t) for n, t in enumerate(lines, 1) if t in spoilt]
    problems = " | ".join(m["problem"] for m in moved)
    for text in (
        "genome is not a hex string",
        "values is not a pair",
        "feasible is not true or false",
        "lacks key",
        "not a JSON object but list",
        "key is not 24 lowercase hex digits",
        "has fields ecad does not write (more)",
    ):
        assert text in problems
    assert all(evaluation_record_problem(r, 96) is None for r in _records(stopped_copy))


# ---------------------------------------------------------- 3: checkpoint.json
def _non_hex(text: str) -> str:
    data = json.loads(text)
    data["population"][0] = "zz" + data["population"][0][2:]
    return json.dumps(data)


def _wrong_types(text: str) -> str:
    return json.dumps({**json.loads(text), "labels": 5, "rng_state": "PCG64"})


CHECKPOINT_DAMAGE = {
    "truncated": (lambda text: text[: len(text) // 2], "not valid JSON"),
    "empty": (lambda text: "", "not valid JSON"),
    "empty object": (lambda text: "{}", "lacks generation"),
    "non-hex genome": (_non_hex, "population[0] is not a genome of 96 bits"),
    "wrong types": (_wrong_types, "labels is not a list of strings"),
}


@pytest.mark.parametrize("damage", CHECKPOINT_DAMAGE)
def test_a_damaged_checkpoint_is_rebuilt_from_the_last_generation_record(damage, reference, finished_copy, capsys):
    spoil, problem = CHECKPOINT_DAMAGE[damage]
    path = finished_copy / "checkpoint.json"
    path.write_text(spoil(path.read_text()))
    _resume(finished_copy).run()
    assert_same_result(finished_copy, reference)
    (warning,) = _warnings(capsys)
    assert f"{path} is damaged (" in warning and problem in warning
    assert "rebuilt it from gen_002.json, the resume continues after generation 2" in warning


def test_a_damaged_checkpoint_mid_run_continues_to_the_same_result(reference, stopped_copy, capsys):
    path = stopped_copy / "checkpoint.json"
    path.write_text(path.read_text()[:100])
    _resume(stopped_copy).run()  # the RNG state comes from gen_001.json: generation 2 is the same
    assert_same_result(stopped_copy, reference)
    (warning,) = _warnings(capsys)
    assert "rebuilt it from gen_001.json, the resume continues after generation 1" in warning


def test_with_no_usable_checkpoint_or_generation_record_the_search_replays_from_generation_0(
    reference, stopped_copy, capsys
):
    (stopped_copy / "checkpoint.json").write_text("")
    (stopped_copy / "gen_000.json").write_text('{"generation": 0')
    (stopped_copy / "gen_001.json").write_text(json.dumps({**_json(stopped_copy / "gen_001.json"), "rng_state": 1}))
    before = len(_records(stopped_copy))
    _resume(stopped_copy).run()
    assert_same_result(stopped_copy, reference)
    assert len(_records(stopped_copy)) == len(_records(reference)) > before  # only generation 2 was evaluated
    damaged, replay = _warnings(capsys)
    assert "gen_000.json: not valid JSON" in damaged
    assert "is damaged (" in replay and "starts again from generation 0" in replay
    assert "nothing is evaluated twice" in replay
    replayed, original = _json(stopped_copy / "gen_000.json"), _json(reference / "gen_000.json")
    assert state_from_generation(replayed) == state_from_generation(original)
    assert replayed["hypervolume"] == original["hypervolume"]


def test_a_damaged_generation_record_is_skipped_and_reported(reference, stopped_copy, capsys):
    (stopped_copy / "gen_000.json").write_bytes(b'{"generation": 0, "population": \xff}')
    _resume(stopped_copy).run()
    assert_same_result(stopped_copy, reference)
    (warning,) = _warnings(capsys)
    assert "damaged generation record(s) skipped (gen_000.json: not UTF-8" in warning
    assert [g["generation"] for g in load_run(stopped_copy).generations] == [1, 2]


# ------------------------------------------------------------- 4: config.json
def _config_field(**fields):
    def spoil(text: str) -> str:
        data = json.loads(text)
        data["config"] = {**data["config"], **fields}
        data["config_hash"] = config_hash(data["config"])  # as if whole: the field itself is refused
        return json.dumps(data)

    return spoil


def _stale_hash(text: str) -> str:
    data = json.loads(text)
    data["config"]["population"] = 7  # one flipped digit: valid, but not the settings the run ran
    return json.dumps(data)


CONFIG_DAMAGE = {
    "truncated": (lambda text: text[: len(text) // 2], "not valid JSON"),
    "empty": (lambda text: "", "not valid JSON"),
    "empty object": (lambda text: "{}", "lacks config"),
    "empty config": (lambda text: json.dumps({"config": {}}), "its config lacks the field(s) space, prompts"),
    "population as text": (_config_field(population="12"), 'population is "12", not int'),
    "unknown field": (_config_field(workers=4), "has field(s) this ecad does not know (workers)"),
    "invalid value": (_config_field(population=2), "--population 2 is too small"),
    "changed after the start": (_stale_hash, "do not match the config_hash"),
}


@pytest.mark.parametrize("damage", CONFIG_DAMAGE)
def test_a_damaged_config_is_refused_naming_the_file_and_the_way_out(damage, finished_copy):
    spoil, problem = CONFIG_DAMAGE[damage]
    path = finished_copy / "config.json"
    path.write_text(spoil(path.read_text()))
    with pytest.raises(RunError) as error:
        resume_config(str(finished_copy), {})
    message = str(error.value)
    assert str(path) in message and problem in message, message
    assert "cannot be rebuilt from the other files: restore it" in message and "start a new run with --out" in message


def test_the_command_line_refuses_a_damaged_config_before_any_worker_starts(finished_copy, capsys):
    (finished_copy / "config.json").write_text('{"config": {"space": "tiny-pix')
    before = {p.name: p.stat().st_mtime_ns for p in finished_copy.iterdir()}
    t0 = time.perf_counter()
    assert main(["search", "--resume", str(finished_copy), "--workers", "0", "--quiet"]) == 2
    assert time.perf_counter() - t0 < 5
    err = capsys.readouterr().err
    assert "config.json: not valid JSON" in err and "restore it" in err and "Traceback" not in err
    assert {p.name: p.stat().st_mtime_ns for p in finished_copy.iterdir()} == before  # nothing touched


# ------------------------------------------------------------ 5: two resumes
def _hold_lock(run_dir: Path, held, release) -> None:
    with RunStore(run_dir).lock():
        held.set()
        release.wait(60)


def test_a_second_resume_is_refused_before_it_starts_workers(finished_copy):
    """Another process resumes the run (a forked one, holding the run's lock as a search does): this
    resume is refused at once, naming it, and starts no workers."""
    fork = multiprocessing.get_context("fork")
    held, release = fork.Event(), fork.Event()
    holder = fork.Process(target=_hold_lock, args=(finished_copy, held, release))
    holder.start()
    try:
        assert held.wait(30)
        run = _resume(finished_copy)
        with pytest.raises(RunError, match=rf"being written by another ecad search \(pid {holder.pid}\); wait for it"):
            run.run()
        assert run.pool is None, "the refused resume started its workers"
    finally:
        release.set()
        holder.join(30)
    run.run()  # once the other one is done, the resume goes ahead
    assert run.pool is not None


# ------------------------------------------------------------------ fuzzing
def _deep(levels: int) -> list:
    data: list = []
    for _ in range(levels):
        data = [data]
    return data


DEEP = _deep(40)  # past the readers' nesting bound
HOSTILE = [
    None,
    True,
    False,
    0,
    -1,
    2**64,
    2**200,
    10**400,
    1e308,
    -0.5,
    "",
    "zz",
    "0" * 300,
    "\udcff",
    [],
    {},
    [None, None],
    {"a": 1},
    DEEP,
]


def _paths(data, path=()):
    yield path
    items = data.items() if isinstance(data, dict) else enumerate(data) if isinstance(data, list) else ()
    for key, value in items:
        yield from _paths(value, (*path, key))


def _structural(rng: random.Random, data):
    """A copy of `data` with one value replaced by a hostile one, removed, or joined by an unknown key."""
    data = json.loads(json.dumps(data))
    path = rng.choice([p for p in _paths(data) if p])
    parent = data
    for key in path[:-1]:
        parent = parent[key]
    action = rng.random()
    if action < 0.15 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action < 0.25 and isinstance(parent, dict):
        parent["unexpected"] = rng.choice(HOSTILE)
    else:
        parent[path[-1]] = rng.choice(HOSTILE)
    return data


def _bytes(rng: random.Random, data: bytes) -> bytes:
    """`data` with a flipped bit, a cut, an inserted non-UTF-8 or JSON-breaking byte, or a lost range."""
    i = rng.randrange(len(data))
    action = rng.randrange(5)
    if action == 0:
        return data[:i] + bytes([data[i] ^ (1 << rng.randrange(8))]) + data[i + 1 :]
    if action == 1:
        return data[:i]
    if action == 2:
        return data[:i] + rng.choice([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\xef\xbb\xbf"]) + data[i:]
    if action == 3:
        return data[:i] + rng.choice([b'"', b"{", b",", b"\n", b"]", b"NaN", b"1e999"]) + data[i:]
    return data[:i] + data[i + rng.randrange(1, 40) :]


def test_fuzzed_run_files_are_read_or_refused_naming_the_file(reference, tmp_path):
    """A few hundred mutants of the files a resume reads, byte-level and structural: each is read
    (it was still valid) or refused with a RunError naming the file, never another exception."""
    rng = random.Random(20240611)
    config_text = (reference / "config.json").read_text()
    checkpoint = _json(reference / "checkpoint.json")
    log = (reference / "evaluations.jsonl").read_bytes()
    generation = _json(reference / "gen_001.json")
    outcomes: dict[str, dict[str, int]] = {}

    def expect(call, path: Path):
        counts = outcomes.setdefault(path.name, {"read": 0, "refused": 0})
        try:
            result = call()
        except RunError as exc:
            assert str(path) in str(exc), str(exc)
            counts["refused"] += 1
            return None
        counts["read"] += 1
        return result

    def on_alarm(signum, frame):
        raise TimeoutError("a reader hangs on a damaged file")

    previous = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(60)
    t0 = time.perf_counter()
    try:
        for n in range(100):  # checkpoint.json
            run = tmp_path / f"c{n}"
            run.mkdir()
            path = run / "checkpoint.json"
            if n % 2:
                path.write_text(json.dumps(_structural(rng, checkpoint)))
            else:
                path.write_bytes(_bytes(rng, (reference / "checkpoint.json").read_bytes()))
            expect(lambda path=path: read_state_file(path, genome_size=96), path)
            RunStore(run).recorded_genome_sizes()  # never raises: a damaged checkpoint is the resume's to repair

        for n in range(100):  # config.json
            run = tmp_path / f"k{n}"
            run.mkdir()
            path = run / "config.json"
            if n % 2:
                data = _structural(rng, json.loads(config_text))
                if n % 4 == 1 and isinstance(data.get("config"), dict):  # a matching hash: fields checked alone
                    data["config_hash"] = config_hash(data["config"])
                path.write_text(json.dumps(data))
            else:
                path.write_bytes(_bytes(rng, config_text.encode()))
            config = expect(lambda run=run: resume_config(str(run), {}), path)
            assert config is None or isinstance(config, SearchConfig)

        for n in range(100):  # evaluations.jsonl
            run = tmp_path / f"e{n}"
            run.mkdir()
            path = run / "evaluations.jsonl"
            if n % 2:
                lines = log.splitlines()
                i = rng.randrange(len(lines))
                lines[i] = json.dumps(_structural(rng, json.loads(lines[i]))).encode()
                mutant = b"\n".join(lines) + b"\n"
            else:
                mutant = _bytes(rng, log)
            path.write_bytes(mutant)
            assert all(evaluation_record_problem(r) is None for r in read_evaluation_records(path))
            opened = expect(lambda run=run: RunStore(run).load_evaluation_records(genome_size=96), path)
            total = len(mutant.splitlines())
            kept = len(opened.records) + len(opened.damaged)
            assert kept == total or (kept == total - 1 and not mutant.endswith(b"\n"))  # only a torn tail goes
            moved = run / "evaluations.damaged.jsonl"
            assert (len(moved.read_text().splitlines()) if moved.exists() else 0) == len(opened.damaged)
            again = RunStore(run).load_evaluation_records(genome_size=96)  # the log is clean now
            assert again.records == opened.records and not again.damaged
            outcomes["damaged lines"] = outcomes.get("damaged lines", 0) + len(opened.damaged)

        shutil.copy(reference / "config.json", tmp_path / "config.json")
        for n in range(100):  # gen_NNN.json, as the report and `ecad frontier` read it
            path = tmp_path / "gen_001.json"
            if n % 2:
                path.write_text(json.dumps(_structural(rng, generation)))
            else:
                path.write_bytes(_bytes(rng, (reference / "gen_001.json").read_bytes()))
            records, damaged = expect(lambda: RunStore(tmp_path).scan_generations(), path)
            assert len(records) + len(damaged) == 1
            read = load_run(tmp_path)  # what the plots and the report start from
            assert read.generations == records and len(read.hypervolume) <= 1
            outcomes["damaged generations"] = outcomes.get("damaged generations", 0) + len(damaged)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    elapsed = time.perf_counter() - t0
    # both outcomes were met: the mutants were not all trivially broken, nor all harmless
    assert all(outcomes[f]["read"] and outcomes[f]["refused"] for f in ("checkpoint.json", "config.json")), outcomes
    assert outcomes["evaluations.jsonl"]["read"] == outcomes["gen_001.json"]["read"] == 100, outcomes
    assert outcomes["damaged lines"] > 25 and 20 < outcomes["damaged generations"] < 100, outcomes
    assert elapsed < 30, f"{elapsed:.1f} s"
    print(f"fuzz: {elapsed:.2f} s, {outcomes}")
