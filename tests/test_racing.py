"""Racing (ecad.search.racing): the chunk order, the paired estimate and its bound, the stop rule,
and racing inside real searches: frontier points complete, stopped races resumed exactly,
results independent of the number of workers, runs from before racing still load and resume."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ecad.distributed.worker import CandidateEvaluator, WorkerConfig
from ecad.metrics.base import MetricResult, QualityMetric, register_metric
from ecad.runs import config_hash, load_run, read_evaluation_records
from ecad.search.racing import (
    Moments,
    RaceState,
    auto_chunk_size,
    chunk_bounds,
    chunk_order,
    dominated,
    hypervolume_gain,
    metric_can_race,
    negligible,
    optimistic_bound,
    t_quantile,
)
from ecad.search.run import ExecConfig, SearchConfig, SearchInterrupted, SearchRun, resume_config
from tests.conftest import CutAfter

SPACE = "tiny-flux"
# 4 prompts x 2 seeds = 8 images in 4 chunks of 2: small enough for CPU, long enough to stop races
RACE = dict(space=SPACE, population=6, generations=2, num_prompts=4, seeds=2, batch_size=2, racing_chunk=2)


# ---------------------------------------------------------------- the rule
def test_t_quantiles_match_the_tables():
    assert t_quantile(0.975, 5) == pytest.approx(2.5706, abs=1e-4)
    assert t_quantile(0.95, 1) == pytest.approx(6.3138, abs=1e-4)
    assert t_quantile(0.995, 30) == pytest.approx(2.7500, abs=1e-4)
    assert t_quantile(0.95, 10_000) == pytest.approx(1.6450, abs=1e-3)


def test_the_chunk_order_is_a_stratified_permutation_of_the_protocol():
    order = chunk_order(10, [0, 1, 2])
    assert sorted(order) == sorted((p, s) for p in range(10) for s in range(3))
    for a in range(0, 30, 10):  # any 10 consecutive items from a pass start: every prompt once
        assert sorted(p for p, _ in order[a : a + 10]) == list(range(10))
    seeds_of_first = [s for _, s in order[:9]]
    assert max(seeds_of_first.count(s) for s in range(3)) == 3  # seeds spread evenly too
    assert order == chunk_order(10, [0, 1, 2])  # from the protocol alone
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert auto_chunk_size(1000, 8) == 104 and auto_chunk_size(80, 8) == 8
    assert auto_chunk_size(8, 8) == 4 and auto_chunk_size(2, 4) == 1 and auto_chunk_size(1, 4) == 1  # two looks


def test_moments_combined_chunk_by_chunk_equal_the_whole():
    x = np.random.default_rng(0).random(101)
    m = Moments()
    for a in range(0, 101, 7):
        m.add(x[a : a + 7])
    assert m.n == 101 and m.mean == pytest.approx(x.mean(), abs=1e-15)
    assert m.variance == pytest.approx(x.var(ddof=1), rel=1e-12)


def test_the_bound_narrows_with_images_and_collapses_on_the_whole_protocol():
    x = np.random.default_rng(1).normal(0.8, 0.05, 200)
    widths = []
    for n in (10, 50, 150, 199):
        m = Moments()
        m.add(x[:n])
        widths.append(optimistic_bound(m, 200, 0.95, 5, True) - m.mean)
    assert all(a > b > 0 for a, b in zip(widths, widths[1:]))
    whole = Moments()
    whole.add(x)
    assert optimistic_bound(whole, 200, 0.95, 5, True) == whole.mean
    low = Moments()
    low.add(x[:10])
    assert optimistic_bound(low, 200, 0.95, 5, False) < low.mean  # lower-is-better: optimism is down
    one = Moments()
    one.add(x[:1])
    assert optimistic_bound(one, 200, 0.95, 5, True) == math.inf  # one image says nothing


def test_dominance_is_strict():
    archive = [(0.9, 0.5)]
    assert dominated(0.8, 0.6, archive, True)
    assert dominated(0.9, 0.6, archive, True) and dominated(0.8, 0.5, archive, True)
    assert not dominated(0.9, 0.5, archive, True)  # the same point is not dominated
    assert not dominated(0.95, 0.6, archive, True) and not dominated(0.8, 0.4, archive, True)
    assert dominated(1.0, 0.6, [(0.9, 0.5)], False)  # lower quality is better


def test_a_point_between_two_frontier_neighbours_adds_little_hypervolume_and_can_be_negligible():
    """The tolerance rule (`--racing-tolerance`): a point squeezed between two archive neighbours
    adds a sliver of hypervolume, one well above the frontier adds much; outside the reference box,
    without a reference point (generation 0) or at tolerance 0, nothing is negligible."""
    archive = [(0.9, 0.8), (0.6, 0.3)]
    ref = [-0.5, 1.0]  # minimisation coordinates: (-quality, cost)
    base = (0.9 - 0.5) * (1.0 - 0.8) + (0.6 - 0.5) * (0.8 - 0.3)  # 0.08 + 0.05
    gain, hv = hypervolume_gain(0.61, 0.75, archive, True, ref)
    assert hv == pytest.approx(base) and gain == pytest.approx(0.01 * 0.05)  # 0.6..0.61 from cost 0.75 to 0.8
    assert hypervolume_gain(0.95, 0.3, archive, True, ref)[0] == pytest.approx(0.35 * 0.5 + 0.05 * 0.2)
    assert negligible(0.61, 0.75, archive, True, ref, 0.005)  # adds 0.38% of the hypervolume
    assert not negligible(0.61, 0.75, archive, True, ref, 0.003)
    assert not negligible(0.95, 0.3, archive, True, ref, 0.05)
    assert not negligible(0.61, 0.75, archive, True, ref, 0.0)
    assert not negligible(0.61, 0.75, archive, True, None, 0.05)
    assert hypervolume_gain(0.4, 0.1, archive, True, ref) is None  # worse than the reference quality
    assert not negligible(0.4, 0.1, archive, True, ref, 0.5)
    # lower-is-better metrics are mirrored: (quality, cost) -> (quality, cost), reference (worst q, worst c)
    assert negligible(0.39, 0.75, [(0.1, 0.8), (0.4, 0.3)], False, [0.5, 1.0], 0.05)


def _race(per_image: np.ndarray, chunk: int, archive, cost: float, reference=None) -> RaceState:
    """Run the racing rule over per-image values in racing order, as the search does."""
    state = RaceState(len(chunk_bounds(len(per_image), chunk)), len(per_image))
    for k, (a, b) in enumerate(chunk_bounds(len(per_image), chunk)):
        result = {"chunk": k, "per_image": per_image[a:b].tolist()}
        if reference is not None:
            result |= {"reference_per_image": reference[a:b].tolist(), "reference_summary": float(reference.mean())}
        state.add(result)
        if not state.complete and dominated(state.bound(0.95, True), cost, archive, True):
            state.stopped = True
            break
    return state


def test_racing_never_stops_a_candidate_that_the_full_protocol_puts_on_the_frontier():
    """Constructed case: 1,000 images of a heavy-tailed quality (a few images far off, as caching
    artefacts are), candidates just above and just below an archive point at a higher cost. Those
    whose full-protocol mean is not dominated always finish; the clearly dominated ones stop early."""
    rng = np.random.default_rng(7)
    archive = [(0.90, 0.50)]
    finished = stopped = 0
    for case in range(40):
        base = rng.beta(30, 3, 1000)  # mean ~0.909, long lower tail
        base[rng.integers(0, 1000, 20)] -= 0.4  # artefacts
        shift = 0.90 - base.mean() + rng.uniform(0.0005, 0.01)  # full mean just above the archive
        good = base + shift
        state = _race(good, 100, archive, cost=0.4)
        assert not dominated(good.mean(), 0.4, archive, True)
        assert state.complete and state.estimate() == pytest.approx(good.mean(), abs=1e-12), case
        finished += 1
        bad = base + (0.80 - base.mean())  # a tenth lower: dominated
        state = _race(bad, 100, archive, cost=0.6)
        stopped += state.stopped and state.chunks <= 2
    assert finished == 40 and stopped == 40


def test_the_paired_estimate_of_a_reference_free_metric_is_tighter_than_the_raw_mean():
    rng = np.random.default_rng(3)
    prompt_effect = rng.normal(0.0, 1.0, 1000)  # prompts differ a lot, the candidate's effect is small
    reference = 5.0 + prompt_effect
    candidate = reference - 0.05 + rng.normal(0.0, 0.02, 1000)
    raw = RaceState(10, 1000)
    paired = RaceState(10, 1000)
    raw.add({"chunk": 0, "per_image": candidate[:100].tolist()})
    paired.add(
        {
            "chunk": 0,
            "per_image": candidate[:100].tolist(),
            "reference_per_image": reference[:100].tolist(),
            "reference_summary": float(reference.mean()),
        }
    )
    raw_width = raw.bound(0.95, True) - raw.estimate()
    paired_width = paired.bound(0.95, True) - paired.estimate()
    assert paired_width < raw_width / 20
    assert abs(paired.estimate() - candidate.mean()) < 0.01 < abs(raw.estimate() - candidate.mean())


def test_a_race_continues_from_its_saved_state_exactly():
    x = np.random.default_rng(5).random(40)
    whole = RaceState(4, 40)
    for k in range(4):
        whole.add({"chunk": k, "per_image": x[10 * k : 10 * k + 10].tolist(), "extras": {"psnr": [k] * 10}})
    cut = RaceState(4, 40)
    for k in range(2):
        cut.add({"chunk": k, "per_image": x[10 * k : 10 * k + 10].tolist(), "extras": {"psnr": [k] * 10}})
    again = RaceState.from_json(json.loads(json.dumps(cut.to_json())))
    for k in range(2, 4):
        again.add({"chunk": k, "per_image": x[10 * k : 10 * k + 10].tolist(), "extras": {"psnr": [k] * 10}})
    assert again.to_json() == whole.to_json() and again.estimate() == whole.estimate()
    with pytest.raises(ValueError, match="chunk 3 arrived, chunk 2 was expected"):
        cut.add({"chunk": 3, "per_image": [0.5]})


def test_set_metrics_cannot_race():
    """Each metric class says whether it scores images one by one (`per_image`)."""
    assert metric_can_race("fidelity") and metric_can_race("clip") and metric_can_race("shapes-score")
    assert not metric_can_race("fid") and not metric_can_race("shapes-fid")


# ---------------------------------------------------------------- the worker
class Brightness(QualityMetric):
    """A reference-free per-image metric that needs no weights: mean pixel value."""

    name = "test-brightness"

    def _score(self, images, prompts, references):
        values = images.mean(dim=(1, 2, 3)).cpu().double().numpy()
        return MetricResult(self.name, values, float(values.mean()), True)


register_metric("test-brightness", "mean pixel value (tests)", Brightness)(lambda device="cpu": Brightness(device))


def test_worker_chunks_reproduce_the_whole_protocol_and_pair_reference_free_scores(tmp_path):
    prompts = ("a red cube", "a cat", "a blue ball")
    config = WorkerConfig(
        SPACE, prompts, (0, 1), metric="test-brightness", batch_size=2, chunk_size=2, reference_cache=str(tmp_path)
    )
    worker = CandidateEvaluator(config)
    assert worker.reference_scores is not None and len(worker.reference_scores) == 6
    full = worker.space.full_schedule().to_json()
    chunks = [worker.evaluate(full, chunk=k) for k in range(3)]
    for r in chunks:  # the no-caching schedule reproduces its references: every difference is 0
        assert r["feasible"] and np.array_equal(r["per_image"], r["reference_per_image"])
    whole = worker.evaluate(full)
    assert np.mean([v for r in chunks for v in r["per_image"]]) == pytest.approx(whole["quality"], abs=1e-12)
    fidelity = CandidateEvaluator(
        WorkerConfig(SPACE, prompts, (0, 1), batch_size=2, chunk_size=2, reference_cache=str(tmp_path))
    )
    r = fidelity.evaluate(full, chunk=1)
    assert r["per_image"] == [1.0, 1.0] and r["reference_per_image"] is None  # fidelity is paired already


# ---------------------------------------------------------------- searches
def _latest(run_dir: Path) -> dict[str, dict]:
    return {r["key"]: r for r in read_evaluation_records(run_dir / "evaluations.jsonl")}


def _racing(record: dict) -> dict:
    return record["details"]["racing"]


def _outcomes(run_dir: Path) -> dict[str, tuple]:
    """What each candidate's latest record decides, without what varies run to run (timings, pids)."""
    out = {}
    for key, r in _latest(run_dir).items():
        race = r["details"].get("racing") or {}
        fields = ("complete", "stopped", "chunks", "quality", "paired", "estimate", "bound", "generation")
        out[key] = (r["values"], r["feasible"], tuple(json.dumps(race.get(f)) for f in fields))
    return out


@pytest.fixture(scope="module")
def raced(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("raced") / "run"
    SearchRun(SearchConfig(**RACE), ExecConfig(out=str(out), workers=0, quiet=True)).run()
    return out


@pytest.mark.slow
def test_a_raced_search_stops_dominated_candidates_and_its_frontier_is_complete(raced):
    latest = _latest(raced)
    stopped = [r for r in latest.values() if r["feasible"] and not _racing(r)["complete"]]
    assert stopped, "nothing was stopped: the test shows nothing"
    for r in stopped:
        assert _racing(r)["stopped"] and _racing(r)["chunks"] < _racing(r)["total_chunks"]
        assert _racing(r)["n"] == 2 * _racing(r)["chunks"] and r["values"][0] == _racing(r)["estimate"]
    run = load_run(raced)
    assert run.frontier and all(p.complete and _racing({"details": p.details})["n"] == 8 for p in run.frontier)
    gens = [json.loads((raced / f"gen_{g:03d}.json").read_text()) for g in range(3)]
    chunk_records = read_evaluation_records(raced / "evaluations.jsonl")
    assert sum(g["images"] for g in gens) == gens[-1]["images_total"] == 2 * len(chunk_records)
    assert gens[-1]["images_total"] < 8 * len(latest)  # fewer images than evaluating every candidate whole


@pytest.mark.slow
def test_the_report_draws_stopped_candidates_hollow_and_says_what_they_are(raced, tmp_path):
    """A stopped race's quality is an estimate on part of the images: the plots and the page must
    not show it like a measured point."""
    from ecad.report import write_report
    from ecad.report.plots import frontier_figure

    run = load_run(raced)
    stopped = [p for p in run.feasible if not p.complete]
    assert stopped
    legend = [t.get_text() for t in frontier_figure(run).legends[0].get_texts()]
    assert f"stopped by racing ({len(stopped)}): its estimate on part of the images" in legend
    page = write_report(run, tmp_path / "report.html").read_text()
    assert page.count('"u":true') == len(stopped) and page.count('"u":false') == len(run.feasible) - len(stopped)


@pytest.mark.slow
def test_stopped_candidates_evaluated_whole_are_dominated_by_the_raced_frontier(raced, tmp_path):
    """What racing must never do: stop a candidate the full protocol would put on the frontier."""
    run = load_run(raced)
    latest = _latest(raced)
    config = SearchConfig(**RACE)
    stopped = [r for r in latest.values() if r["feasible"] and not _racing(r)["complete"]]
    worker = CandidateEvaluator(WorkerConfig(SPACE, _prompts(config), (0, 1), batch_size=2, chunk_size=2))
    from ecad.search.genome import GenomeSpec, hex_to_bits

    spec = GenomeSpec.for_space(worker.space)
    archive = [(p.quality, p.cost) for p in run.points if p.feasible and p.complete]
    for r in stopped:
        schedule = spec.to_schedule(hex_to_bits(r["genome"], spec.size), worker.space).to_json()
        full = np.mean([v for k in range(4) for v in worker.evaluate(schedule, chunk=k)["per_image"]])
        assert dominated(float(full), r["values"][1], archive, True), r["key"]


def _prompts(config: SearchConfig) -> tuple[str, ...]:
    from ecad.prompts import read_prompts

    return tuple(read_prompts(config.prompts, config.num_prompts))


@pytest.mark.slow
def test_a_run_interrupted_mid_race_resumes_to_the_same_results(raced, tmp_path):
    out = tmp_path / "cut"
    whole = _outcomes(raced)
    records = read_evaluation_records(raced / "evaluations.jsonl")
    # cut where some race is between chunks: its next chunk must continue, not restart
    cut = next(i for i in range(12, len(records)) if not _racing(records[i - 1])["complete"])
    with pytest.raises(SearchInterrupted):
        CutAfter(SearchConfig(**RACE), ExecConfig(out=str(out), workers=0, quiet=True), n=cut).run()
    before = read_evaluation_records(out / "evaluations.jsonl")
    assert len(before) == cut
    SearchRun(resume_config(str(out), {}), ExecConfig(out=str(out), workers=0, quiet=True), resume=True).run()
    after = read_evaluation_records(out / "evaluations.jsonl")
    assert _outcomes(out) == whole
    assert json.loads((out / "checkpoint.json").read_text()) == json.loads((raced / "checkpoint.json").read_text())
    # no chunk ran twice: each key's chunk counts rise one at a time across the cut
    chunks: dict[str, int] = {}
    for r in after:
        if r["feasible"]:
            assert _racing(r)["chunks"] == chunks.get(r["key"], 0) + 1, r["key"]
            chunks[r["key"]] = _racing(r)["chunks"]
    assert len(after) == len(records)


@pytest.mark.slow
def test_racing_gives_the_same_run_for_any_number_of_workers(raced, tmp_path, idle_cluster):
    runs = [raced]
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        SearchRun(SearchConfig(**RACE), ExecConfig(out=str(out), workers=workers, quiet=True)).run()
        runs.append(out)
    ckpt = [json.loads((r / "checkpoint.json").read_text())["population"] for r in runs]
    assert ckpt[0] == ckpt[1] == ckpt[2]
    decided = [
        {k: (_racing(r)["complete"], _racing(r)["chunks"]) for k, r in _latest(run).items() if r["feasible"]}
        for run in runs
    ]
    assert decided[0] == decided[1] == decided[2]


@pytest.mark.slow
def test_racing_off_evaluates_every_candidate_whole_once(tmp_path):
    out = tmp_path / "plain"
    SearchRun(SearchConfig(**{**RACE, "racing": False}), ExecConfig(out=str(out), workers=0, quiet=True)).run()
    records = read_evaluation_records(out / "evaluations.jsonl")
    assert len({r["key"] for r in records}) == len(records)
    assert all("racing" not in r["details"] for r in records)
    gens = [json.loads((out / f"gen_{g:03d}.json").read_text()) for g in range(3)]
    assert gens[-1]["images_total"] == 8 * len(records) and gens[-1]["racing"] is None


def test_a_run_from_before_racing_loads_and_resumes_without_racing(tmp_path):
    """Runs written before racing existed have no racing fields in config.json nor in their
    records: they read as complete evaluations, and resume with racing off (what they ran)."""
    out = tmp_path / "old"
    small = dict(space=SPACE, population=4, generations=1, num_prompts=2, seeds=1, batch_size=2)
    SearchRun(SearchConfig(**small, racing=False), ExecConfig(out=str(out), workers=0, quiet=True)).run()
    record = json.loads((out / "config.json").read_text())
    config = {k: v for k, v in record["config"].items() if not k.startswith("racing")}
    (out / "config.json").write_text(json.dumps({**record, "config": config, "config_hash": config_hash(config)}))
    run = load_run(out)
    assert run.frontier and all(p.complete for p in run.points)
    resumed = resume_config(str(out), {"generations": 2})
    assert resumed.racing is False
    SearchRun(resumed, ExecConfig(out=str(out), workers=0, quiet=True), resume=True).run()
    assert (out / "gen_002.json").exists()
    assert all("racing" not in r["details"] for r in read_evaluation_records(out / "evaluations.jsonl"))


def test_racing_settings_are_checked():
    from ecad.search.run import SearchError, validate

    with pytest.raises(SearchError, match="--racing-chunk"):
        validate(SearchConfig(racing_chunk=0))
    with pytest.raises(SearchError, match="--racing-confidence"):
        validate(SearchConfig(racing_confidence=1.0))
    for bad in (-0.1, 0.6, float("nan"), True, "0.01"):
        with pytest.raises(
            SearchError, match=r"--racing-tolerance .* must be a share of the hypervolume in \[0, 0.5\]"
        ):
            validate(SearchConfig(racing_tolerance=bad))


@pytest.mark.slow
def test_a_racing_tolerance_stops_more_races_and_keeps_the_frontier_complete(raced, tmp_path):
    """The same search with --racing-tolerance: generation 0 decides as without it (no reference
    point yet), later generations stop at least the same races and more, and every frontier point
    is still fully evaluated."""
    out = tmp_path / "tolerant"
    SearchRun(SearchConfig(**RACE, racing_tolerance=0.2), ExecConfig(out=str(out), workers=0, quiet=True)).run()
    exact, tolerant = _latest(raced), _latest(out)
    gen0 = {k for k, r in exact.items() if r["generation"] == 0}
    assert {k: _outcomes(raced)[k] for k in gen0} == {k: _outcomes(out)[k] for k in gen0}
    stops = [sum(not _racing(r)["complete"] for r in run.values() if r["feasible"]) for run in (exact, tolerant)]
    images = [json.loads((d / "gen_002.json").read_text())["images_total"] for d in (raced, out)]
    assert stops[1] > stops[0] and images[1] < images[0], (stops, images)
    run = load_run(out)
    assert run.frontier and all(p.complete and _racing({"details": p.details})["n"] == 8 for p in run.frontier)
    assert run.config["racing_tolerance"] == 0.2
