"""Screening (ecad.search.screening): the ridge model of quality on genome bits, the wave order it
gives, and screening inside real searches: it only reorders races (the frontier stays complete),
and a run interrupted mid-generation resumes to the same results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ecad.runs import read_evaluation_records
from ecad.search.racing import WAVES, race_wave
from ecad.search.run import ExecConfig, SearchConfig, SearchError, SearchInterrupted, SearchRun, resume_config, validate
from ecad.search.screening import MIN_SAMPLES, fit_quality_model, screened_waves
from tests.conftest import CutAfter

# 4 prompts x 2 seeds = 8 images in 4 chunks of 2, on the random tiny FLUX: a few seconds per run
SCREENED = dict(
    space="tiny-flux",
    population=6,
    generations=2,
    num_prompts=4,
    seeds=2,
    batch_size=2,
    racing_chunk=2,
    screening=True,
)


# ---------------------------------------------------------------- the model
def test_the_model_recovers_per_cell_sensitivities_from_few_evaluations():
    """An additive landscape (each reused cell costs its own quality) is what the model assumes:
    from fewer evaluations than bits it ranks unseen genomes much as the truth does."""
    rng = np.random.default_rng(0)
    cost_of_reuse = rng.exponential(0.01, 60)  # a few cells matter, most barely
    bits = rng.random((60, 60)) < 0.7  # 1 = compute

    def truth(b):
        return 1.0 - (~b) @ cost_of_reuse

    model = fit_quality_model(bits[:40], truth(bits[:40]) + rng.normal(0, 1e-3, 40))
    assert model is not None and model.samples == 40
    held_out = model.predict(bits[40:])
    assert np.corrcoef(held_out, truth(bits[40:]))[0, 1] > 0.8
    assert model.loo_rmse < model.spread  # it says it is better than the mean


def test_on_noise_the_model_says_it_knows_nothing():
    rng = np.random.default_rng(1)
    model = fit_quality_model(rng.random((30, 100)) < 0.5, rng.normal(0, 1, 30))
    assert model is not None and model.loo_rmse >= 0.95 * model.spread
    assert fit_quality_model(np.ones((MIN_SAMPLES - 1, 5)), np.zeros(MIN_SAMPLES - 1)) is None


def test_waves_race_the_predicted_frontier_first_and_the_dominated_last():
    rng = np.random.default_rng(2)
    bits = rng.random((40, 12)) < 0.5
    weights = np.linspace(0.1, 1.2, 12)
    model = fit_quality_model(bits, bits @ weights)
    keys = [f"{i:024x}" for i in range(8)]
    # the same cost for all: promise is then predicted quality alone
    cand = {k: b for k, b in zip(keys, rng.random((8, 12)) < 0.5)}
    waves = screened_waves(cand, {k: 0.5 for k in keys}, model, [], higher_is_better=True)
    assert sorted(waves.values()) == [w for w in range(WAVES) for _ in range(8 // WAVES)]  # equal waves
    quality = {k: float(model.predict(cand[k])[0]) for k in keys}
    best, worst = max(keys, key=quality.get), min(keys, key=quality.get)
    assert waves[best] == 0 and waves[worst] == WAVES - 1
    # a measured point that dominates every prediction: promise falls to the predicted order again
    assert screened_waves(cand, {k: 0.5 for k in keys}, model, [(1e9, 0.1)], True) == waves
    # no model: the genome hash decides, as without screening
    assert screened_waves(cand, {k: 0.5 for k in keys}, None, [], True) == {k: race_wave(k) for k in keys}


# ---------------------------------------------------------------- searches
def _outcomes(run_dir: Path) -> dict[str, tuple]:
    latest = {r["key"]: r for r in read_evaluation_records(run_dir / "evaluations.jsonl")}
    fields = ("complete", "stopped", "chunks", "quality", "paired", "estimate", "generation", "wave")
    return {
        k: (r["values"], r["feasible"], tuple(json.dumps((r["details"].get("racing") or {}).get(f)) for f in fields))
        for k, r in latest.items()
    }


@pytest.fixture(scope="module")
def screened(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("screened") / "run"
    SearchRun(SearchConfig(**SCREENED), ExecConfig(out=str(out), workers=0, quiet=True)).run()
    return out


def test_a_screened_search_records_its_model_and_waves_and_keeps_the_frontier_complete(screened):
    gens = [json.loads((screened / f"gen_{g:03d}.json").read_text()) for g in range(3)]
    assert gens[0]["racing"]["screening"] is None  # nothing measured yet: hash waves
    for g in gens[1:]:
        fit = g["racing"]["screening"]
        assert fit["samples"] >= MIN_SAMPLES and fit["loo_rmse"] >= 0 and fit["alpha"] > 0
    records = read_evaluation_records(screened / "evaluations.jsonl")
    raced = [r for r in records if r["feasible"]]
    assert all(0 <= r["details"]["racing"]["wave"] < WAVES for r in raced)
    later = [r for r in raced if r["details"]["racing"]["generation"] > 0]
    assert any(r["details"]["racing"]["wave"] != race_wave(r["key"]) for r in later), "screening changed no wave"
    from ecad.runs import load_run

    run = load_run(screened)
    assert run.frontier and all(p.complete for p in run.frontier)


@pytest.mark.slow
def test_a_screened_run_interrupted_mid_generation_resumes_to_the_same_results(screened, tmp_path):
    records = read_evaluation_records(screened / "evaluations.jsonl")
    # a cut inside the last generation, whose waves the model decides
    cut = next(i for i, r in enumerate(records) if r["generation"] == 2) + 3
    out = tmp_path / "cut"
    with pytest.raises(SearchInterrupted):
        CutAfter(SearchConfig(**SCREENED), ExecConfig(out=str(out), workers=0, quiet=True), n=cut).run()
    SearchRun(resume_config(str(out), {}), ExecConfig(out=str(out), workers=0, quiet=True), resume=True).run()
    assert _outcomes(out) == _outcomes(screened)
    assert json.loads((out / "checkpoint.json").read_text()) == json.loads((screened / "checkpoint.json").read_text())


def test_screening_needs_racing():
    with pytest.raises(SearchError, match="--racing on"):
        validate(SearchConfig(screening=True, racing=False))
    with pytest.raises(SearchError, match="--screening"):
        validate(SearchConfig(screening="yes"))  # type: ignore[arg-type]
