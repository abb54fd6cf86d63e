"""`ecad search --dry-run`: the plan and its cost bounds, with nothing run."""

from __future__ import annotations

import pytest

from ecad.cache.macs import dims_for_space, schedule_macs, transformer_batch
from ecad.cli import main
from ecad.search.estimate import ROOFLINE_MACS_PER_S, estimate_search
from ecad.search.run import ExecConfig, SearchConfig, SearchError
from ecad.spaces import load_space


def _full_macs(name: str) -> float:
    space = load_space(name)
    batch = transformer_batch(space.family, 1, space.guidance_scale)
    return schedule_macs(space.full_schedule(), dims_for_space(space), batch=batch).total


def test_the_bounds_follow_the_protocol():
    # pixart-alpha-512 records no measured time, so the plan falls back to the roofline figure
    config = SearchConfig(space="pixart-alpha-512", num_prompts=100, seeds=10, population=72, generations=50)
    est = estimate_search(config, ExecConfig(workers=8))
    assert est.candidates == 72 * 51
    assert est.images == 72 * 51 * 1000 and est.reference_images == 1000
    assert est.macs_per_image == pytest.approx(_full_macs("pixart-alpha-512"))
    assert est.transformer_macs == pytest.approx(est.images * est.macs_per_image)
    assert est.gpu_hours == pytest.approx((est.images + 1000) * est.macs_per_image / ROOFLINE_MACS_PER_S / 3600)
    text = str(est)
    assert "at most 3,672 " in text and "at most 3,672,000 " in text and "on 8 workers" in text
    assert "roofline estimate" in text and "not measured" in text


def test_a_measured_time_replaces_the_roofline(tmp_path):
    source = load_space("tiny-pixart").source.read_text()
    path = tmp_path / "timed.toml"
    path.write_text(
        source.replace('name = "tiny-pixart"', 'name = "timed"')
        + '\n[measured]\nms_per_image = 36.0\non = "H100 SXM, batch 100, float16"\n'
    )
    est = estimate_search(SearchConfig(space=str(path), num_prompts=2, seeds=1), ExecConfig())
    assert est.gpu_hours == pytest.approx((est.images + est.reference_images) * 36.0 / 3.6e6)
    assert "measured 36 ms/image (H100 SXM, batch 100, float16)" in str(est)


def test_the_shipped_pixart_space_plans_with_its_measured_gpu_time():
    est = estimate_search(SearchConfig(space="pixart-alpha-256", num_prompts=100, seeds=10), ExecConfig())
    space = load_space("pixart-alpha-256")
    assert est.ms_per_image == space.measured_ms_per_image and "H200" in space.measured_on
    assert "measured" in est.ms_per_image_source and "roofline" not in str(est)


def test_a_measured_table_without_its_machine_is_refused(tmp_path):
    source = load_space("tiny-pixart").source.read_text()
    path = tmp_path / "timed.toml"
    path.write_text(source.replace('name = "tiny-pixart"', 'name = "timed"') + "\n[measured]\nms_per_image = 36.0\n")
    with pytest.raises(SearchError, match=r"\[measured\] needs 'on'"):
        estimate_search(SearchConfig(space=str(path)), ExecConfig())


def test_dry_run_prints_the_plan_and_starts_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--dry-run", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith("plan: search shapes-pixart") and "nothing was run (--dry-run)" in text
    assert not out.exists()
