"""`ecad compare`: every contender on one pipeline, with realised MACs, interleaved timing and the
tables and plots users paste elsewhere."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from ecad.cli import main
from ecad.compare import CompareSettings, run_compare
from ecad.compare.calibration import first_block_residual_changes, thresholds
from ecad.compare.contenders import NO_CACHING, Contender
from ecad.compare.run import CompareRow, stock_state, time_interleaved
from ecad.generation import Renderer
from ecad.models import FAMILIES
from ecad.report.plots import place_labels
from ecad.schedule import Schedule
from ecad.spaces import load_space

# Peers that cannot run on a tiny model of the family, with the reason their row must give.
# diffusers' block caches know only the block classes diffusers registered (not Sana's); its
# FirstBlockCache trips over SD3's last block, which returns no text stream; cache-dit's TaylorSeer
# calibrator misses a state on SD3; FasterCache needs CFG as one batch, which Wan does not run;
# F8B0 needs more than the tiny models' 4 blocks.
PEER_GAPS = {
    "tiny-pixart": {},
    "tiny-flux": {},
    "tiny-sd3": {"FirstBlockCache": "TypeError", "cache-dit DBCache F1B0 + TaylorSeer": "AssertionError"},
    "tiny-sana": {"FirstBlockCache": "not registered", "MagCache": "not registered"},
    "tiny-wan": {"FasterCache": "own transformer call"},
}
EVERYWHERE = {"cache-dit DBCache F8B0": "needs more than 8 transformer blocks; this model has 4"}


def compare_cli(space: str, out, *extra: str) -> list[str]:
    return ["compare", "--space", space, "--num-prompts", "2", "--seeds", "1", "--out", str(out), *extra]


@pytest.mark.parametrize("space", [f"tiny-{family}" for family in FAMILIES])
def test_compare_runs_every_contender_and_counts_what_it_computed(space, tmp_path, capsys):
    sp = load_space(space)
    Schedule.every_n(sp.layout, sp.steps, 4, name="mine_every_4").save(tmp_path / "mine.json")
    Schedule.full(sp.layout, sp.steps, name="mine_full").save(tmp_path / "full.json")
    out = tmp_path / "cmp"
    args = compare_cli(space, out, "--schedules", str(tmp_path / "mine.json"), str(tmp_path / "full.json"))
    assert main([*args, "--baselines", "--repeats", "2"]) == 0
    table = capsys.readouterr().out
    data = json.loads((out / "compare.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    names = [r["name"] for r in data["rows"]]
    assert names[:3] == ["no caching", "mine_every_4", "mine_full"] and {"every_2", "every_3"} <= set(names)
    assert [r["number"] for r in data["rows"]] == list(range(1, len(names) + 1))

    base = rows[NO_CACHING]
    assert base["speedup"] == 1.0 and base["speedup_range"] == [1.0, 1.0] and len(base["timings_ms"]) == 2
    assert base["macs_fraction"] == 1.0 and base["quality"] == pytest.approx(1.0)
    # static schedules: the counted forwards are exactly what the schedule says it computes
    for r in data["rows"]:
        if r["kind"] in ("schedule", "heuristic"):
            assert r["macs_fraction"] == pytest.approx(r["nominal_macs_fraction"], rel=1e-12), r["name"]
    # no caching under ecad: bit-identical, at its own fraction of the stock pipeline's MACs (under 1 where
    # the text K/V cache computes cross-attention's text K/V once per call)
    full = rows["mine_full"]
    assert full["did_nothing"] is True and full["macs_fraction"] == pytest.approx(full["nominal_macs_fraction"])
    assert (full["macs_fraction"] < 1.0) == (sp.family in ("pixart", "sana", "wan")) and full["macs_fraction"] > 0.8
    assert rows["mine_every_4"]["did_nothing"] is False and rows["mine_every_4"]["quality"] < 1.0

    peers = [r for r in data["rows"] if r["kind"] in ("diffusers", "cache-dit")]
    kinds = {r["name"].split("(")[0] for r in peers}
    assert {"FirstBlockCache", "MagCache", "TaylorSeer", "PAB", "FasterCache"} <= kinds
    assert {"cache-dit DBCache F1B0", "cache-dit DBCache F1B0 + TaylorSeer", "cache-dit DBCache F8B0"} <= kinds
    assert {f"cache-dit SCM {p}" for p in ("slow", "medium", "fast", "ultra")} <= kinds
    gaps = {**EVERYWHERE, **PEER_GAPS[space]}
    failed = {r["name"].split("(")[0]: r["reason"] for r in peers if not r["feasible"]}
    assert set(failed) == set(gaps), failed
    assert all(gaps[n] in reason for n, reason in failed.items()), failed
    # every peer that ran was configured to act here: it computed less, and its images changed
    for r in peers:
        if r["feasible"]:
            assert r["macs_fraction"] < 1.0 and r["did_nothing"] is False, r["name"]
            assert len(r["timings_ms"]) == 2 and r["speedup_range"][0] <= r["speedup"] <= r["speedup_range"][1]
            assert r["params"], r["name"]
    calibrated = [r for r in peers if r["feasible"] and "quantile" in r["params"]]
    assert calibrated and all(r["params"]["quantile"] == 0.5 for r in calibrated)

    assert data["settings"]["timed_rounds"] == 2 and data["settings"]["versions"]["cache-dit"]
    md = (out / "compare.md").read_text().splitlines()
    assert md[2].startswith("| # | contender | kind | fidelity | PSNR | SSIM") and len(md) == 4 + len(names)
    with (out / "compare.csv").open() as f:
        assert [r["name"] for r in csv.DictReader(f)] == names
    assert (out / "compare.png").stat().st_size > 10_000 and (out / "compare_grid.png").stat().st_size > 10_000
    assert "mine_every_4" in table and "(did nothing)" in table and "not run: needs more than 8" in table


def test_thresholds_are_quantiles_of_what_calibration_observed():
    found = thresholds([0.4, 0.1, float("nan"), 0.3, 0.2], (0.25, 0.5))
    assert [(t.quantile, t.observed) for t in found] == [(0.25, 4), (0.5, 4)]
    assert [t.value for t in found] == pytest.approx([0.175, 0.25])
    assert found[1].label() == "q50=0.25" and thresholds([], (0.5,)) == []


@pytest.mark.parametrize("family, calls_per_step", [("pixart", 1), ("wan", 2)])
def test_first_block_calibration_compares_each_branch_with_its_own_previous_step(family, calls_per_step):
    space = load_space(f"tiny-{family}")
    renderer = Renderer(space, ["a red cube", "a blue ball", "a tree"], "cpu")
    changes = first_block_residual_changes(renderer, renderer.items([0]), batch_size=2)
    assert len(changes) == 2 * calls_per_step * (space.steps - 1)  # two pipeline calls (batches 2 + 1)
    assert all(np.isfinite(changes)) and min(changes) > 0


def test_cache_dit_leaves_the_stock_flux_transformer_behind_and_its_stats_match_the_count():
    """cache-dit's FLUX patch keeps its forward after disable_cache and its forward re-orders the
    block lists; ecad undoes both, so diffusers' FirstBlockCache still finds FLUX's first block.
    What cache-dit says it cached is what the counter saw skipped."""
    from diffusers.hooks import FirstBlockCacheConfig

    from ecad.cache.realised import ComputeCounter
    from ecad.compare.cachedit import CacheDitCache, import_cache_dit
    from ecad.compare.diffusers_caches import DiffusersCache

    cache_dit = import_cache_dit()
    space = load_space("tiny-flux")
    renderer = Renderer(space, ["a red cube"], "cpu")
    items = renderer.items([0])
    stock = stock_state(renderer.pipe.transformer)
    dbcache = CacheDitCache(
        "dbcache",
        "cache-dit",
        make_configs=lambda: {
            "cache_config": cache_dit.DBCacheConfig(
                Fn_compute_blocks=1, residual_diff_threshold=0.6, max_warmup_steps=1, num_inference_steps=space.steps
            )
        },
    )
    with ComputeCounter(renderer.pipe.transformer, space) as counter:
        dbcache.enable(renderer)
        renderer.images(items)
        cached = dbcache.stats(renderer)["cached_steps"]
        dbcache.disable(renderer)
        rows = counter.take().component_rows
    assert 0 < len(cached) < space.steps
    assert (rows[0] == space.steps).all()  # F1: the first block always computes
    assert (rows[1:] == space.steps - len(cached)).all()  # the others only at steps it did not cache
    assert stock_state(renderer.pipe.transformer) == stock
    fbc = DiffusersCache("fbc", "diffusers", make_config=lambda _: FirstBlockCacheConfig(threshold=0.5))
    fbc.enable(renderer)
    try:
        renderer.images(items)
    finally:
        fbc.disable(renderer)
    assert stock_state(renderer.pipe.transformer) == stock


class Recording(Contender):
    """A contender that runs the stock pipeline and logs when it is switched on."""

    def __init__(self, name: str, log: list[str]):
        super().__init__(name, NO_CACHING if name == "A" else "heuristic")
        self.log = log

    def enable(self, renderer) -> None:
        self.log.append(self.name)


def test_timing_interleaves_contenders_round_by_round():
    space = load_space("tiny-pixart")
    renderer = Renderer(space, ["a red cube"], "cpu")
    log: list[str] = []
    runnable = [(CompareRow(i, n, "heuristic", {}, True), Recording(n, log)) for i, n in enumerate("ABC", 1)]
    settings = CompareSettings(space="tiny-pixart", prompts=("a red cube",), seeds=(0,), repeats=3, warmup=1)
    time_interleaved(runnable, renderer, renderer.items([0]), settings)
    assert "".join(log) == "ABC" * 4
    a, b, _ = (row for row, _ in runnable)
    assert len(a.timings_ms) == 3 and a.speedup == 1.0 and a.speedup_range == [1.0, 1.0]
    assert b.speedup == pytest.approx(np.median(a.timings_ms) / np.median(b.timings_ms))
    ratios = np.asarray(a.timings_ms) / np.asarray(b.timings_ms)
    assert b.speedup_range == [pytest.approx(ratios.min()), pytest.approx(ratios.max())]


def test_plot_labels_never_overlap_even_for_clustered_points():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    xs, ys = 1.0 + 0.01 * rng.random(20), 0.99 + 0.001 * rng.random(20)  # twenty points in one spot
    ax.scatter(xs, ys)
    ax.set_xlim(0.9, 1.1)
    ax.set_ylim(0.98, 1.0)
    canvas.draw()
    texts = place_labels(ax, xs, ys, [str(i + 1) for i in range(20)])
    boxes = [t.get_window_extent(canvas.get_renderer()) for t in texts]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            assert not a.overlaps(b)


def test_run_compare_without_baselines_times_only_the_given_schedules():
    space = load_space("tiny-pixart")
    settings = CompareSettings(space="tiny-pixart", prompts=("a red cube", "a tree"), seeds=(0,), repeats=1)
    result = run_compare(settings, [Schedule.every_n(space.layout, space.steps, 2, name="e2")])
    assert [r.name for r in result.rows] == ["no caching", "e2"] and result.notes == []
    assert set(result.grid) == {"no caching", "e2"} and result.grid["e2"].dtype == torch.uint8
    assert result.grid["e2"].shape[0] == 2 and result.grid_prompts == ["a red cube", "a tree"]


def test_compare_rejects_a_schedule_of_another_space(tmp_path, capsys):
    Schedule.full(load_space("tiny-flux").layout, 8).save(tmp_path / "f.json")
    assert main(compare_cli("tiny-pixart", tmp_path / "o", "--schedules", str(tmp_path / "f.json"))) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("ecad compare: error: schedule has layout flux(")
        and "but space 'tiny-pixart' uses pixart(" in err
    )
    assert "use a schedule searched for a PixArt model" in err and "Traceback" not in err


@pytest.mark.parametrize("value", ["0", "1.5", "a,b", ""])
def test_compare_rejects_quantiles_outside_zero_one(value, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(compare_cli("tiny-pixart", tmp_path / "o", "--quantiles", value))
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--quantiles" in err and "quantiles between 0 and 1" in err
