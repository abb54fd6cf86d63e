"""Command-line parsing: bad numbers and options fail at once, naming the option and the fix."""

from __future__ import annotations

import pytest

from ecad.cli import build_parser, main
from ecad.models import FAMILIES, adapter_for
from ecad.schedule import Schedule
from ecad.spaces import load_space


def test_metric_options_are_typed_so_false_means_false():
    args = build_parser().parse_args(
        [
            "search",
            "--metric-option",
            "lpips=false",
            "--metric-option",
            "batch_size=8",
            "--metric-option",
            "weights=/ckpt/model.pt",
        ]
    )
    assert dict(args.metric_option) == {"lpips": False, "batch_size": 8, "weights": "/ckpt/model.pt"}


@pytest.mark.parametrize(
    "argv, message",
    [
        (["search", "--batch-size", "0"], "argument --batch-size: '0' is not a whole number >= 1"),
        (["generate", "--schedule", "s.json", "--prompt", "x", "--num-seeds", "0"], "argument --num-seeds"),
        (["compare", "--space", "tiny-pixart", "--seeds", "none"], "argument --seeds: 'none' is not a whole number"),
        (["search", "--metric-option", "weights"], "'weights' is not KEY=VALUE"),
    ],
)
def test_bad_numbers_and_options_fail_before_anything_loads(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_macs_of_one_image_reproduces_ecads_no_caching_total(capsys):
    """ECAD's paper: no caching at PixArt-alpha 256 px, 20 steps = 5.714 TMACs per image (CFG doubles the batch)."""
    from pathlib import Path

    example = Path(__file__).parent / "data" / "ecad_pixart_every3.json"
    assert main(["macs", str(example), "--space", "pixart-alpha-256", "--ecad-convention"]) == 0
    out = capsys.readouterr().out
    assert "vs 5.714 uncached" in out and "transformer batch 2" in out


@pytest.mark.parametrize("family", FAMILIES)
def test_macs_of_a_schedule_for_every_familys_spaces(family, tmp_path, capsys):
    """`ecad macs` counts any family's schedule against its own no-caching total, tiny or full size."""
    adapter = adapter_for(family)
    for name in (f"tiny-{family}", adapter.benchmark_space):
        space = load_space(name)
        path = Schedule.every_n(space.layout, space.steps, 2).save(tmp_path / f"{name}.json")
        assert main(["macs", str(path), "--space", name, "--images", "3"]) == 0
        out = capsys.readouterr().out
        ratio = float(out.split("(")[1].split("x fewer")[0])
        assert 1.3 < ratio <= 2.0, out  # every-2 computes about half of the blocks' MACs (fixed MACs every step)
        assert f"transformer batch {adapter.transformer_batch(3, space.guidance_scale)}" in out


@pytest.mark.parametrize(
    "example, space",
    [("ecad_pixart_step0_reuse.json", "pixart-alpha-256"), ("ecad_flux_step0_reuse.json", "flux-dev-256")],
)
def test_ecad_files_with_reuse_flags_at_step_0_count_exactly_as_ecad_does(example, space, capsys):
    """ECAD's headline files reuse something at step 0, where nothing is cached: ECAD counts (and runs)
    that step in full. The files' own per-step MACs, measured with a profiler over the real transformer
    (tests/data/make_step0_examples.py), are reproduced exactly, batch 2 as ECAD counts, FLUX included."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / example
    assert main(["macs", str(path), "--space", space, "--ecad-convention"]) == 0
    out = capsys.readouterr().out
    assert "matches the file's metrics.by_inference_step exactly at all 20 steps" in out, out
    assert "2 reuse flag(s) count as compute" in out and "transformer batch 2" in out
