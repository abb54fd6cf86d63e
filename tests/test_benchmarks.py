"""The benchmark scripts keep running (tiny CPU mode); their numbers are recorded, not asserted."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_bench_apply_tiny_runs_and_reports_every_schedule(tmp_path):
    out = tmp_path / "r.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_apply.py"),
            "--tiny",
            "--batch",
            "2",
            "--steps",
            "6",
            "--repeats",
            "1",
            "--naive",
            "--out",
            str(out),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    result = json.loads(out.read_text())
    names = [r["schedule"] for r in result["rows"]]
    ecad_rows = ["no_caching", "every_2", "every_3", "every_5", "random_20pct"]
    assert names == ecad_rows + [f"naive_{n}" for n in ecad_rows[1:]]
    assert all(r["limit_speedup"] >= 1.0 for r in result["rows"])
    assert result["rows"][0]["block_macs_fraction"] == 1.0
    # the two above hold by construction; these check the numbers the limit is built from
    rows = {r["schedule"]: r for r in result["rows"]}
    # every_2 at 6 steps computes steps 0, 2, 4: half the block MACs, for ecad and the naive cache alike
    assert rows["every_2"]["block_macs_fraction"] == rows["naive_every_2"]["block_macs_fraction"] == 0.5
    assert all(0 < r["block_macs_fraction"] < 1 for r in result["rows"][1:])
    assert all(math.isfinite(r["of_limit"]) and r["of_limit"] > 0 for r in result["rows"])
    assert math.isfinite(result["t_stock_ms"]) and result["t_stock_ms"] > 0
    assert math.isfinite(result["hook_overhead"])
    assert 0 < result["t_blocks_ms"] < result["t_full_ms"], "the block timer saw the blocks run, inside the call"
    # the settings the numbers were taken with are recorded next to them
    assert (result["batch"], result["steps"], result["repeats"], result["naive"]) == (2, 6, 1, True)
    assert result["tiny_blocks"] == result["blocks"] == 4


def test_bench_search_help_runs():
    """The throughput benchmark at least imports and parses its arguments (a real run takes minutes)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_search.py"), "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "--dry-run-gpu-setup" in done.stdout and "candidates" in done.stdout


def test_roofline_recorder_counts_a_linear_and_sdpa_as_kernels(monkeypatch):
    """The roofline model's inputs: FLOPs and bytes per kernel on meta tensors, SDPA as one fused kernel.
    benchmarks/ is put on sys.path only for this test (the scripts import each other as top-level modules)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch
    import torch.nn.functional as F
    from roofline_apply import FusedAttention, OpRecorder

    lin = torch.nn.Linear(64, 32, device="meta", dtype=torch.float16)
    x = torch.empty(2, 10, 64, device="meta", dtype=torch.float16)
    q = torch.empty(2, 4, 16, 8, device="meta", dtype=torch.float16)
    rec = OpRecorder()
    with torch.inference_mode(), FusedAttention(rec), rec:
        y = lin(x)
        y.view(-1)  # a view launches nothing
        F.scaled_dot_product_attention(q, q, q)
    assert len(rec.rows) == 2
    (_, _, lin_flops, lin_bytes), (_, _, attn_flops, attn_bytes) = rec.rows
    assert lin_flops == 2 * 20 * 64 * 32
    assert lin_bytes == 2 * (20 * 64 + 64 * 32 + 32 + 20 * 32)
    assert attn_flops == 4 * 8 * 16 * 16 * 8
    assert attn_bytes == 4 * q.numel() * 2


def test_bench_apply_times_every_family_from_its_adapter(monkeypatch, tmp_path):
    """Nothing in the benchmark is family-specific: each registered family's tiny space runs through
    the same script (in-process here, to skip four interpreter start-ups)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_apply

    from ecad.models import FAMILIES

    for family in FAMILIES:
        out = tmp_path / f"{family}.json"
        monkeypatch.setattr(
            sys,
            "argv",
            [
                "bench_apply.py",
                "--tiny",
                "--family",
                family,
                "--batch",
                "1",
                "--steps",
                "4",
                "--repeats",
                "1",
                "--schedules",
                "every-2",
                "--naive",
                "--out",
                str(out),
            ],
        )
        bench_apply.main()
        result = json.loads(out.read_text())
        assert result["family"] == family and result["space"] == f"tiny-{family}"
        assert [r["schedule"] for r in result["rows"]] == ["no_caching", "every_2", "naive_every_2"]
        assert result["rows"][1]["block_macs_fraction"] == result["rows"][2]["block_macs_fraction"] == 0.5


def test_bench_search_cost_help_runs():
    """The search-cost benchmark at least imports and parses its arguments (a real run takes minutes)."""
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_search_cost.py"), "--help"], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert "--space" in done.stdout and "--metric" in done.stdout


def test_replan_changes_only_the_planning_figure_of_a_recorded_result(monkeypatch, tmp_path, capsys):
    """A recorded search-cost result keeps every measured number when its planning figure is
    recomputed; the figure uses the shipped space's measured GPU time and says so."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_search_cost

    from ecad.spaces import load_space

    src = ROOT / "benchmarks" / "results" / "search_cost_shapes-pixart_fidelity.json"
    path = tmp_path / src.name
    path.write_text(src.read_text())
    md = [
        ("Planning: stale" if x.startswith("Planning:") else x) for x in src.with_suffix(".md").read_text().splitlines()
    ]
    path.with_suffix(".md").write_text("\n".join(md) + "\n")
    before = json.loads(path.read_text())
    before["plan"]["ms_per_image"] = 1.0  # a stale figure
    path.write_text(json.dumps(before))
    after = bench_search_cost.main(["--replan", str(path)])
    assert {k: v for k, v in after.items() if k != "plan"} == {k: v for k, v in before.items() if k != "plan"}
    plan, ms = after["plan"], load_space("pixart-alpha-256").measured_ms_per_image
    assert plan["ms_per_image"] == ms and plan["ms_per_image_source"].startswith("measured")
    assert plan["gpu_hours_plain"] == round(plan["images_plain"] * ms / 3.6e6, 1)
    assert plan["images_share_used"] == before["plan"]["images_share_used"] and plan["generations"] == 50
    new_md = path.with_suffix(".md").read_text().splitlines()
    changed = [(a, b) for a, b in zip(md, new_md) if a != b]
    assert len(new_md) == len(md) and [a for a, _ in changed] == ["Planning: stale"]
    assert f"{plan['gpu_hours_plain']} GPU-h plain" in changed[0][1] and "measured: pixart-alpha-256" in changed[0][1]


def test_racing_projection_replays_the_stop_rule_without_stopping_a_frontier_candidate(monkeypatch):
    """The projection replays ecad's stop rule on per-image scores: on constructed candidates (a
    frontier of good ones, then clearly worse ones at the same costs) the exact rule stops only
    dominated candidates and keeps the whole hypervolume; a tolerance stops at least as many."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_racing_projection as projection

    rng = np.random.default_rng(3)
    rows = []
    for cost in np.linspace(0.2, 0.9, 8):  # the frontier: quality rising with cost
        rows.append({"cost": float(cost), "per_image": (0.5 + 0.4 * cost + rng.normal(0, 0.05, 200)).tolist()})
    for cost in np.linspace(0.25, 0.95, 8):  # a tenth worse than their cheaper neighbours
        rows.append({"cost": float(cost), "per_image": (0.4 + 0.4 * cost + rng.normal(0, 0.05, 200)).tolist()})
    for r in rows:
        r["reference"] = None
    data = {"higher_is_better": True, "images": 200, "rows": rows}
    exact = projection.replay(data, 200, 20, 0.0, np.arange(200))
    assert exact["stopped"] >= 6 and exact["stopped_but_not_dominated"] == 0
    assert exact["hv_complete_over_all"] == pytest.approx(1.0) and exact["images_share"] < 0.8
    loose = projection.replay(data, 200, 20, 0.05, np.arange(200))
    assert loose["stopped"] >= exact["stopped"] and loose["images_share"] <= exact["images_share"]


def test_bench_forecast_compares_forecast_and_reuse_at_the_same_grid(monkeypatch):
    """Each forecast row has a reuse row of the same grid, so the two cost the same transformer MACs
    and differ only in forecast vs reuse (the forecast's element-wise work reported apart)."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_forecast

    from ecad.cache.macs import dims_for_space, schedule_macs
    from ecad.spaces import load_space

    space = load_space("tiny-pixart")
    rows = bench_forecast.contenders(space)
    dims = dims_for_space(space)
    reuse = {label.split("every ")[-1]: s for label, kind, s in rows if kind == "reuse" and "compute every" in label}
    forecasts = [(label, s) for label, kind, s in rows if kind.startswith("forecast")]
    assert reuse and forecasts
    for label, s in forecasts:
        twin = reuse[label.split("every ")[-1]]
        assert (twin.grid == s.grid).all() and twin.forecast is None and s.forecast is not None
        a, b = schedule_macs(s, dims, batch=2), schedule_macs(twin, dims, batch=2)
        assert a.total == b.total and a.forecast > 0 == b.forecast
    assert any(kind == "guidance" for _, kind, _ in rows)  # PixArt runs CFG as one doubled batch


def test_bench_frontier_counts_domination_and_matched_macs_gaps(monkeypatch):
    """The frontier-vs-heuristics benchmark's verdicts on constructed rows: a contender is
    dominated only by a frontier point no worse in both objectives, and the gap at matched MACs
    uses only frontier points at most as expensive as the contender."""
    from types import SimpleNamespace as Row

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_frontier

    front = [Row(quality=0.5, macs_fraction=0.2), Row(quality=0.8, macs_fraction=0.5)]
    assert bench_frontier.dominates(front[1], Row(quality=0.7, macs_fraction=0.6), True)
    assert not bench_frontier.dominates(front[1], Row(quality=0.9, macs_fraction=0.6), True)
    assert not bench_frontier.dominates(front[0], Row(quality=0.5, macs_fraction=0.2), True)  # equal: not dominated
    assert bench_frontier.dominates(front[0], Row(quality=0.6, macs_fraction=0.3), False)  # lower is better
    assert bench_frontier.gap_at_matched_macs(front, Row(quality=0.6, macs_fraction=0.4), True) == pytest.approx(-0.1)
    assert bench_frontier.gap_at_matched_macs(front, Row(quality=0.6, macs_fraction=0.5), True) == pytest.approx(0.2)
    assert bench_frontier.gap_at_matched_macs(front, Row(quality=0.6, macs_fraction=0.1), True) is None


def test_bench_genes_reads_the_best_quality_under_a_macs_budget(monkeypatch):
    """The gene-set benchmark's per-budget column: the best quality among points at or under it."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_genes

    points = [(0.9, 0.2), (0.95, 0.3), (0.99, 0.6)]
    assert bench_genes.best_under(points, 0.3, True) == 0.95
    assert bench_genes.best_under(points, 0.3, False) == 0.9
    assert bench_genes.best_under(points, 0.1, True) is None
    assert set(bench_genes.GENE_SETS) == {"reuse", "forecast", "guidance", "both"}


def test_results_on_shapes_models_name_the_models_they_were_measured_on(monkeypatch, tmp_path):
    """Retraining the shipped shapes models changes their id, and every recorded result measured on
    a shapes space names the id of the models it ran on (so a stale result can be told apart)."""
    import shutil

    import ecad.resources

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import bench_io

    shipped = bench_io.shapes_models_id()
    copy = tmp_path / "models"
    shutil.copytree(ecad.resources.shapes_models_dir(), copy)
    monkeypatch.setattr(ecad.resources, "shapes_models_dir", lambda: copy)
    assert bench_io.shapes_models_id() == shipped
    weights = next(copy.rglob("transformer/*.safetensors"))
    changed = bytearray(weights.read_bytes())
    changed[-1] ^= 1
    weights.write_bytes(bytes(changed))
    assert bench_io.shapes_models_id() != shipped
    assert bench_io.models_of("tiny-pixart") == {}

    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        result = json.loads(path.read_text())
        spaces = [result.get("space", ""), result.get("settings", {}).get("space", ""), *result.get("adherence", {})]
        if any(str(s).startswith("shapes-") for s in spaces):
            assert len(result.get("shapes_models", "")) == 12, f"{path.name} does not name its shapes models"
