"""`ecad score` through its parser and run_score on directories of PNGs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ecad.cli import build_parser
from ecad.metrics import MetricError, register_metric
from ecad.metrics.clip import ClipScoreMetric
from ecad.metrics.fid import FIDMetric
from ecad.metrics.score import load_image_dir, run_score

TINY = dict(
    embed_dim=16,
    vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
)
PROMPTS = [
    "a red cube on a table",
    "a photo of a cat",
    "an astronaut riding a horse on the moon, digital art, highly detailed, trending",
    "two dogs",
]


@register_metric("test-tiny-clip", "tiny random open_clip (tests only)")
def _tiny_clip(device="cpu", **options):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return ClipScoreMetric(device, allow_random_weights=True, model_config=TINY, **options)


@register_metric("test-tiny-fid", "FID with a seeded conv net (tests only)")
def _tiny_fid(device="cpu", **options):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return FIDMetric(device, feature=net, use_cache=False, **options)


def _parse(argv):
    return build_parser().parse_args(["score", *argv])


def _write_pngs(folder, n, size=(16, 16), seed=0):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    arrays = []
    for i in reversed(range(n)):  # written out of order: the loader sorts by name
        arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(arr).save(folder / f"img_{i:02d}.png")
        arrays.append((f"img_{i:02d}.png", arr))
    return dict(arrays)


@pytest.fixture
def image_dir(tmp_path):
    arrays = _write_pngs(tmp_path / "images", len(PROMPTS))
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n\n")
    return tmp_path, arrays


def test_load_image_dir_sorted_in_unit_range(image_dir):
    tmp, arrays = image_dir
    images, names = load_image_dir(tmp / "images")
    assert names == sorted(arrays) and images.shape == (4, 3, 16, 16) and images.dtype == torch.float32
    np.testing.assert_allclose(images[1].permute(1, 2, 0).numpy() * 255, arrays[names[1]], atol=1e-3)
    Image.fromarray(np.zeros((8, 12, 3), np.uint8)).save(tmp / "images" / "zz.jpg")
    with pytest.raises(MetricError, match="differ in size"):
        load_image_dir(tmp / "images")
    with pytest.raises(MetricError, match="no PNG/JPG"):
        load_image_dir(tmp)


def test_clip_table_summary_and_json(image_dir, capsys):
    tmp, _ = image_dir
    out = tmp / "out" / "scores.json"
    args = _parse(
        [
            "--metric",
            "test-tiny-clip",
            "--images",
            str(tmp / "images"),
            "--prompts",
            str(tmp / "prompts.txt"),
            "--json",
            str(out),
            "--device",
            "cpu",
            "--batch-size",
            "3",
        ]
    )
    assert run_score(args) == 0
    text = capsys.readouterr().out
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["file", "prompt", "clip", "cosine"]
    assert all(f"img_{i:02d}.png" in text for i in range(4))
    assert "an astronaut riding a horse on the mo..." in text  # long prompts are truncated
    assert "over 4 images (higher is better)" in text
    data = json.loads(out.read_text())
    assert data["metric"] == "clip" and data["higher_is_better"] is True
    assert data["files"] == [f"img_{i:02d}.png" for i in range(4)] and data["prompts"] == PROMPTS
    assert len(data["per_image"]) == 4 and len(data["extras"]["cosine"]) == 4
    assert data["summary"] == pytest.approx(np.mean(data["per_image"]))


def test_prompt_count_mismatch_is_a_clear_error(image_dir, capsys):
    tmp, _ = image_dir
    (tmp / "three.txt").write_text("\n".join(PROMPTS[:3]))
    args = _parse(["--metric", "test-tiny-clip", "--images", str(tmp / "images"), "--prompts", str(tmp / "three.txt")])
    assert run_score(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("ecad score: error:") and "4 images" in err and "3 prompts" in err


def test_prompt_metric_without_prompts(image_dir, capsys):
    tmp, _ = image_dir
    assert run_score(_parse(["--metric", "test-tiny-clip", "--images", str(tmp / "images")])) == 2
    assert "--prompts" in capsys.readouterr().err


def test_fidelity_with_reference_dir(image_dir, capsys):
    tmp, _ = image_dir
    out = tmp / "fidelity.json"
    args = _parse(
        [
            "--metric",
            "fidelity",
            "--images",
            str(tmp / "images"),
            "--reference",
            str(tmp / "images"),
            "--prompts",
            str(tmp / "prompts.txt"),
            "--json",
            str(out),
        ]
    )
    assert run_score(args) == 0
    assert "fidelity: mean 1.0000 over 4 images (higher is better)" in capsys.readouterr().out
    assert json.loads(out.read_text())["per_image"] == pytest.approx([1.0] * 4)
    assert run_score(_parse(["--metric", "fidelity", "--images", str(tmp / "images")])) == 2
    assert "--reference" in capsys.readouterr().err


def test_fid_set_metric_prints_na_and_lower_is_better(image_dir, tmp_path, capsys):
    tmp, _ = image_dir
    _write_pngs(tmp / "real", 6, size=(20, 20), seed=1)
    out = tmp / "fid.json"
    args = _parse(
        [
            "--metric",
            "test-tiny-fid",
            "--images",
            str(tmp / "images"),
            "--reference",
            str(tmp / "real"),
            "--json",
            str(out),
        ]
    )
    assert run_score(args) == 0
    text = capsys.readouterr().out
    assert "n/a" in text and "over the set of 4 images (lower is better)" in text
    data = json.loads(out.read_text())
    assert data["per_image"] == [None] * 4 and data["summary"] > 0 and data["higher_is_better"] is False


def test_metric_options_reach_the_metric(image_dir, capsys):
    tmp, _ = image_dir
    _write_pngs(tmp / "real", 6, size=(20, 20), seed=1)
    base = ["--metric", "test-tiny-fid", "--images", str(tmp / "images"), "--reference", str(tmp / "real")]
    assert run_score(_parse([*base, "--metric-option", "resize=clean"])) == 0
    clean = capsys.readouterr().out
    assert run_score(_parse(base)) == 0
    assert clean != capsys.readouterr().out  # clean-fid's resize gives another value
    assert run_score(_parse([*base, "--metric-option", "resize=box"])) == 2
    assert "unknown resize 'box'; use --metric-option resize=torchmetrics" in capsys.readouterr().err
    assert run_score(_parse([*base, "--metric-option", "colour=red"])) == 2
    assert "does not take --metric-option colour=..." in capsys.readouterr().err


def test_unknown_metric_and_unsupported_option(image_dir, capsys):
    tmp, _ = image_dir
    assert run_score(_parse(["--metric", "nope", "--images", str(tmp / "images")])) == 2
    assert "unknown metric" in capsys.readouterr().err
    args = _parse(
        [
            "--metric",
            "fidelity",
            "--images",
            str(tmp / "images"),
            "--reference",
            str(tmp / "images"),
            "--weights",
            str(tmp / "w.bin"),
        ]
    )
    assert run_score(args) == 2
    assert "does not take --weights" in capsys.readouterr().err


def test_prompt_metric_fails_before_loading_any_weights(image_dir, tmp_path, monkeypatch, capsys):
    for var in ("HF_HOME", "HF_HUB_CACHE", "TORCH_HOME", "XDG_CACHE_HOME"):  # no weights anywhere
        monkeypatch.setenv(var, str(tmp_path / "empty" / var))
    monkeypatch.setenv("HOME", str(tmp_path / "empty"))
    tmp, _ = image_dir
    for name in ("image-reward", "clip", "pickscore", "hpsv2"):
        assert run_score(_parse(["--metric", name, "--images", str(tmp / "images")])) == 2
        err = capsys.readouterr().err
        assert "--prompts" in err and "weights" not in err and "hf download" not in err, err


def test_unreadable_image_is_a_clear_error(image_dir, capsys):
    tmp, _ = image_dir
    (tmp / "images" / "img_01.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(MetricError, match=r"cannot read image .*img_01\.png"):
        load_image_dir(tmp / "images")
    assert (
        run_score(_parse(["--metric", "fidelity", "--images", str(tmp / "images"), "--reference", str(tmp / "images")]))
        == 2
    )
    assert "img_01.png" in capsys.readouterr().err


def test_only_the_refused_option_is_named_as_a_flag(image_dir, capsys):
    tmp, _ = image_dir
    args = _parse(
        [
            "--metric",
            "fidelity",
            "--images",
            str(tmp / "images"),
            "--reference",
            str(tmp / "images"),
            "--batch-size",
            "2",
            "--weights",
            str(tmp / "w.bin"),
        ]
    )
    assert run_score(args) == 2
    err = capsys.readouterr().err
    assert "does not take --weights" in err and "--batch-size" not in err  # fidelity takes --batch-size (LPIPS)


def test_a_generated_directory_needs_no_prompts_file(tmp_path, capsys):
    """`ecad generate` records each image's prompt in generate.json; `ecad score` reads it."""
    from ecad.cli import main

    prompts = ["a red circle", "a blue square on green", "a small yellow triangle"]
    (tmp_path / "prompts.txt").write_text("\n".join(prompts))
    out = tmp_path / "generated"
    argv = ["generate", "--schedule", "every-2", "--space", "tiny-pixart", "--prompts", str(tmp_path / "prompts.txt")]
    assert main([*argv, "--num-seeds", "2", "--out", str(out), "--device", "cpu"]) == 0
    scores = tmp_path / "scores.json"
    args = _parse(["--metric", "test-tiny-clip", "--images", str(out), "--json", str(scores), "--device", "cpu"])
    assert run_score(args) == 0
    data = json.loads(scores.read_text())
    record = {e["file"]: e["prompt"] for e in json.loads((out / "generate.json").read_text())["images"]}
    assert len(data["files"]) == 6 and data["prompts"] == [record[f] for f in data["files"]]
    assert sorted(set(data["prompts"])) == sorted(prompts)


def test_a_generate_record_missing_an_image_is_refused(image_dir, capsys):
    tmp, _ = image_dir
    entries = [{"file": f"img_{i:02d}.png", "prompt": p} for i, p in enumerate(PROMPTS[:3])]
    (tmp / "images" / "generate.json").write_text(json.dumps({"images": entries}))
    assert run_score(_parse(["--metric", "test-tiny-clip", "--images", str(tmp / "images")])) == 2
    err = capsys.readouterr().err
    assert "generate.json lists no prompt for 1 of the 4 images (first img_03.png)" in err and "--prompts" in err
