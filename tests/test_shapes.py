"""The captioned-shapes data set, the shipped shapes models and their trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from ecad.errors import EcadError
from ecad.models import shapes as data
from ecad.resources import shapes_models_dir

# caption adherence of the shipped models at no caching, on a small held-out sample (the full
# numbers are in benchmarks/results/shapes_cpu.md); floors a little under what they measure
ADHERENCE = {"shapes-pixart": (0.75, 0.9), "shapes-flux": (0.7, 0.9)}  # (shapes-score, dominant colours)


# ------------------------------------------------------------------ data set
def test_sample_is_deterministic_and_seeded():
    a, b, c = data.sample(12, "train", seed=3), data.sample(12, "train", seed=3), data.sample(12, "train", seed=4)
    assert a.images.dtype == np.uint8 and a.images.shape == (12, data.IMAGE_SIZE, data.IMAGE_SIZE, 3)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    assert not np.array_equal(a.images, c.images)
    x = a.tensor()
    assert x.shape == (12, 3, 32, 32) and x.dtype == torch.float32 and 0 <= float(x.min()) <= float(x.max()) <= 1


def test_captions_attributes_and_split_agree():
    every = data.all_attributes()
    captions = [a.caption for a in every]
    assert len(set(captions)) == len(every) == 5 * 8 * 7 * 2 * 5
    for a in every:
        assert data.parse_caption(a.caption) == a
        assert data.parse_caption(f"  {a.caption.upper()} ") == a  # the pipelines lower-case and strip too
        assert all(data.ATTRIBUTE_VALUES[k][i] == getattr(a, k) for k, i in a.labels().items())
    train, held = data.split_attributes("train"), data.split_attributes("held-out")
    assert set(train).isdisjoint(held) and len(train) + len(held) == len(every)
    assert len(held) == round(len(every) * data.HELD_OUT_FRACTION)
    batch = data.sample(50, "held-out", seed=1)
    assert set(batch.attributes) <= set(held)
    labels = batch.labels
    for k, values in data.ATTRIBUTE_VALUES.items():
        assert [values[i] for i in labels[k]] == [getattr(a, k) for a in batch.attributes]


def test_the_shipped_calibration_prompts_are_held_out_captions():
    """`ecad search`'s default prompts: captions the shapes models never trained on, all distinct."""
    from ecad.prompts import read_prompts

    prompts = read_prompts("calibration_prompts/shapes_100.txt", None)
    held = set(data.split_attributes("held-out"))
    assert len(prompts) == len(set(prompts)) == 100
    assert all(data.parse_caption(p) in held for p in prompts)


@pytest.mark.parametrize(
    "caption",
    [
        "a cat in a hat",
        "a small red circle in the top left on a red background",  # invisible: same colours
        "a huge red circle in the top left on a blue background",
        "a small red hexagon in the center on a blue background",
        "a small red circle in the middle on a blue background",
        "a small red circle in the top left on a blue sky",
        "",
    ],
)
def test_captions_outside_the_grammar_are_refused(caption):
    with pytest.raises(data.CaptionError, match="not in the shapes grammar") as info:
        data.parse_caption(caption)
    assert isinstance(info.value, EcadError)


def test_pictures_show_their_captions_colours():
    """Read off the pixels with no model: every rendered picture has the colours its caption names,
    and the shape sits in the named quadrant."""
    batch = data.sample(300, "all", seed=5)
    for image, a in zip(batch.images, batch.attributes):
        assert data.dominant_colours(image) == (a.colour, a.background)
        bg = np.array(data.COLOURS[a.background], dtype=float)
        ys, xs = np.nonzero(np.abs(image.astype(float) - bg).sum(-1) > 60)
        cy, cx = ys.mean() / 32, xs.mean() / 32
        want_x, want_y = {"center": (0.5, 0.5), "top left": (0.27, 0.27), "top right": (0.73, 0.27),
                          "bottom left": (0.27, 0.73), "bottom right": (0.73, 0.73)}[a.position]  # fmt: skip
        assert abs(cx - want_x) < 0.1 and abs(cy - want_y) < 0.1, (a.caption, cx, cy)


# ------------------------------------------------------------------ shipped weights
def test_shipped_weights_are_small_and_safetensors_only():
    root = shapes_models_dir()
    files = [p for p in root.rglob("*") if p.is_file()]
    assert {p.suffix for p in files} <= {".json", ".safetensors"}
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    for sub in ("shapes-pixart", "shapes-flux"):
        assert json.loads((root / sub / "model_index.json").read_text())["_class_name"] in (
            "PixArtAlphaPipeline",
            "FluxPipeline",
        )
    for p in files:
        if p.suffix == ".safetensors":
            assert all(t.dtype == torch.float32 for t in load_file(str(p)).values()), p


def test_a_wheel_install_ships_every_weights_file():
    """pyproject's data-files list each directory by hand: a file no entry matches would be left
    out of a wheel, and the pipeline would not load there."""
    import tomllib
    from pathlib import Path, PurePosixPath

    def globbed(rel: str, pattern: str) -> bool:  # as setuptools' glob: `*` stays within one directory
        return len(PurePosixPath(pattern).parts) == len(PurePosixPath(rel).parts) and PurePosixPath(rel).match(pattern)

    root = Path(__file__).resolve().parents[1]
    entries = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["data-files"]
    for p in (root / "shapes_models").rglob("*"):
        if p.is_file():
            rel = p.relative_to(root).as_posix()
            homes = [dest for dest, globs in entries.items() if any(globbed(rel, g) for g in globs)]
            assert homes == ["share/ecad/" + p.parent.relative_to(root).as_posix()], rel


@pytest.mark.parametrize("space_name", ["shapes-pixart", "shapes-flux"])
def test_shipped_models_load_offline_and_render_deterministically(space_name, monkeypatch):
    from ecad.generation import Renderer
    from ecad.models import ADAPTERS
    from ecad.spaces import load_space

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    space = load_space(space_name)
    prompts = ["a large red circle in the center on a blue background"]
    call = {"num_inference_steps": 6} if space.family == "flux" else None  # FLUX's 28 steps: the same path, slower
    first = Renderer(space, prompts, device="cpu", call=call)
    assert type(first.pipe).__name__ == space.pipeline_class
    assert ADAPTERS[space.family].layout_of(first.pipe.transformer) == space.layout
    second = Renderer(space, prompts, device="cpu", call=call)  # a second, independent load
    items = first.items([0, 1])
    a, b = first.render(items, 2).images, second.render(items, 2).images
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1]), "different seeds give different pictures"


@pytest.mark.parametrize("space_name", sorted(ADHERENCE))
def test_caption_adherence_floor(space_name):
    """A small held-out sample at no caching: the classifier reads the captions' attributes, and
    the colours are right by a model-free pixel check."""
    from ecad.generation import Renderer
    from ecad.metrics import get_metric
    from ecad.spaces import load_space

    held = data.split_attributes("held-out")
    prompts = [a.caption for a in held[::14]]  # 20 of the 280
    renderer = Renderer(load_space(space_name), prompts, device="cpu")
    images = renderer.render(renderer.items([0]), 20).images
    result = get_metric("shapes-score").score(images, prompts)
    colours = [data.dominant_colours(im) for im in images.permute(0, 2, 3, 1).numpy()]
    right = np.mean([c == (a.colour, a.background) for c, a in zip(colours, held[::14])])
    score_floor, colour_floor = ADHERENCE[space_name]
    assert result.summary >= score_floor and right >= colour_floor, (result.summary, right)


def test_loading_prints_no_deprecation_of_torch_dtype():
    """Loading passes diffusers' `dtype`, so a user's every load is not followed by a FutureWarning."""
    import warnings

    from ecad.models import load_shapes_pipeline

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_shapes_pipeline("ecad-tiny/shapes-pixart")
    assert not [w for w in caught if "torch_dtype" in str(w.message)]


def test_missing_weights_name_the_trainer(monkeypatch, tmp_path):
    import ecad.resources
    from ecad.models import ModelWeightsError, load_shapes_pipeline

    monkeypatch.setattr(ecad.resources, "shapes_models_dir", lambda: tmp_path)
    with pytest.raises(ModelWeightsError, match="python -m ecad.models.train_shapes --model pixart"):
        load_shapes_pipeline("ecad-tiny/shapes-pixart")


# ------------------------------------------------------------------ trainer
def _train(*argv: str) -> int:
    from ecad.models.train_shapes import main

    return main([*argv, "--threads", "1"])  # more threads than free cores are many times slower


def test_trainer_resumes_exactly_and_refuses_to_overwrite(tmp_path, capsys):
    """A run stopped and resumed ends with the same weights as one that ran through."""
    common = ["--model", "classifier", "--steps", "20", "--batch", "4", "--pool", "32", "--save-every", "1000"]
    assert _train(*common, "--out", str(tmp_path / "a")) == 0
    assert _train(*common, "--out", str(tmp_path / "b"), "--stop-at", "10") == 0
    state = json.loads((tmp_path / "b" / "checkpoints" / "classifier" / "state.json").read_text())
    assert state["step"] == 10
    assert _train(*common, "--out", str(tmp_path / "b")) == 2  # a checkpoint is there: --resume or delete
    assert "--resume" in capsys.readouterr().err
    assert _train(*common, "--out", str(tmp_path / "b"), "--resume") == 0
    a = load_file(str(tmp_path / "a" / "shapes-classifier" / "model.safetensors"))
    b = load_file(str(tmp_path / "b" / "shapes-classifier" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_pixart_trainer_loss_falls_and_saves_a_loadable_pipeline(tmp_path):
    from diffusers import PixArtAlphaPipeline

    out = str(tmp_path)
    assert _train("--model", "vae", "--steps", "4", "--batch", "4", "--pool", "16", "--out", out) == 0
    assert _train("--model", "pixart", "--steps", "150", "--batch", "16", "--pool", "256", "--out", out) == 0
    history = json.loads((tmp_path / "training.json").read_text())["pixart"]["history"]
    assert [s for s, _ in history] == [50, 100, 150]
    assert history[-1][1] < 0.7 * history[0][1], history
    pipe = PixArtAlphaPipeline.from_pretrained(tmp_path / "shapes-pixart")
    assert pipe.transformer.config.num_layers == 6 and type(pipe.scheduler).__name__ == "DPMSolverMultistepScheduler"


def test_decoder_fine_tune_keeps_the_latents_and_the_pipelines_get_it(tmp_path):
    """The decoder step trains only the decoder: the encoder (hence every latent a transformer
    trains on) stays bit for bit, and the pipelines trained after it carry the tuned VAE."""
    out = str(tmp_path)
    small = ["--batch", "4", "--pool", "16", "--out", out]
    assert _train("--model", "vae", "--steps", "4", *small) == 0
    assert _train("--model", "decoder", "--steps", "30", "--lr", "3e-3", *small) == 0
    joint = load_file(str(tmp_path / "checkpoints" / "vae" / "final" / "diffusion_pytorch_model.safetensors"))
    tuned = load_file(str(tmp_path / "checkpoints" / "decoder" / "final" / "diffusion_pytorch_model.safetensors"))
    assert joint.keys() == tuned.keys()
    for key in joint:
        same = torch.equal(joint[key], tuned[key])
        assert same == (not key.startswith(("decoder.", "post_quant_conv."))), key
    record = json.loads((tmp_path / "training.json").read_text())["decoder"]
    assert record["psnr_db"] > record["psnr_db_before"], record
    assert _train("--model", "pixart", "--steps", "2", *small) == 0
    shipped = load_file(str(tmp_path / "shapes-pixart" / "vae" / "diffusion_pytorch_model.safetensors"))
    assert all(torch.equal(shipped[k], tuned[k]) for k in tuned)


def test_init_continues_a_saved_pipeline(tmp_path, capsys):
    """`--init DIR` starts the transformer from DIR's pipeline (not from random weights) and
    records where it came from; it is refused where there is nothing to continue."""
    from diffusers import FluxPipeline

    first, second = tmp_path / "first", tmp_path / "second"
    small = ["--batch", "4", "--pool", "16"]
    assert _train("--model", "vae", "--steps", "2", *small, "--out", str(first)) == 0
    assert _train("--model", "flux", "--steps", "20", *small, "--out", str(first)) == 0
    assert _train("--model", "flux", "--steps", "1", "--lr", "1e-12", *small, "--init", str(first),
                  "--out", str(second)) == 0  # fmt: skip
    before = FluxPipeline.from_pretrained(first / "shapes-flux").transformer.state_dict()
    after = FluxPipeline.from_pretrained(second / "shapes-flux").transformer.state_dict()
    assert all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)
    record = json.loads((second / "training.json").read_text())["flux"]
    assert record["continued_from"]["pipeline"] == str(first / "shapes-flux")
    assert [s for s, _ in record["continued_from"]["history"]] == [20]
    assert _train("--model", "pixart", "--init", str(tmp_path / "nowhere"), "--out", str(second), *small) == 2
    assert "no shapes-pixart/ pipeline there" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        _train("--model", "vae", "--init", str(first), "--out", str(second))
    assert "--init continues the pipelines' training" in capsys.readouterr().err


def test_trainer_without_a_vae_says_to_train_it(tmp_path, capsys):
    assert _train("--model", "flux", "--steps", "2", "--out", str(tmp_path), "--pool", "8", "--batch", "4") == 2
    assert "--model vae" in capsys.readouterr().err


@pytest.mark.slow
def test_full_training_run_reaches_the_shipped_quality(tmp_path):
    """The default run of every model (about three hours on one CPU thread), then the adherence
    floor on the models it wrote."""
    import ecad.resources
    from ecad.generation import Renderer
    from ecad.metrics import get_metric
    from ecad.spaces import load_space

    assert _train("--model", "all", "--out", str(tmp_path)) == 0
    record = json.loads((tmp_path / "training.json").read_text())
    assert min(record["classifier"]["held_out_accuracy"].values()) > 0.9
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ecad.resources, "shapes_models_dir", lambda: tmp_path)
        prompts = [a.caption for a in data.split_attributes("held-out")[::10]]
        for name, (floor, _) in ADHERENCE.items():
            renderer = Renderer(load_space(name), prompts, device="cpu")
            images = renderer.render(renderer.items([0]), 28).images
            assert (
                get_metric("shapes-score", weights=tmp_path / "shapes-classifier").score(images, prompts).summary
                >= floor
            )
