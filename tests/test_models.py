"""Model loading: real from_pretrained path with a clear offline error; deterministic tiny models."""

from __future__ import annotations

import pytest
import torch

from ecad.models import ModelWeightsError, adapter_for_pipeline, load_pipeline
from ecad.models.flux import build_tiny_flux
from ecad.models.pixart import build_tiny_pixart
from ecad.spaces import load_space


@pytest.mark.parametrize("space", ["pixart-alpha-256", "pixart-sigma-512", "flux-dev-256"])
def test_missing_weights_name_the_repo_and_the_download_command(space, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    sp = load_space(space)
    with pytest.raises(ModelWeightsError) as info:
        load_pipeline(sp)
    msg = str(info.value)
    assert sp.model in msg and f"hf download {sp.model}" in msg


def test_a_local_directory_loads_through_from_pretrained(tmp_path):
    """The real loading path, fed a pipeline saved locally (what a user's download looks like)."""
    pipe = build_tiny_pixart()
    pipe.save_pretrained(tmp_path / "pipe")
    import dataclasses

    space = dataclasses.replace(load_space("pixart-alpha-256"), hub_id=str(tmp_path / "pipe"))
    loaded = load_pipeline(space, device="cpu", dtype=torch.float32)
    assert type(loaded).__name__ == "PixArtAlphaPipeline"
    assert torch.equal(
        loaded.transformer.transformer_blocks[0].ff.net[2].weight,
        pipe.transformer.transformer_blocks[0].ff.net[2].weight,
    )
    with pytest.raises(ModelWeightsError, match="does not hold a complete diffusers pipeline"):
        load_pipeline(dataclasses.replace(space, hub_id=str(tmp_path)), device="cpu")


def test_tiny_models_are_deterministic_and_have_at_least_four_blocks():
    a, b = build_tiny_pixart(), build_tiny_pixart()
    for pa, pb in zip(a.transformer.parameters(), b.transformer.parameters()):
        assert torch.equal(pa, pb)
    assert adapter_for_pipeline(a).layout_of(a.transformer).num_blocks >= 4
    f = build_tiny_flux()
    assert adapter_for_pipeline(f).layout_of(f.transformer).num_blocks >= 4
    tok = a.tokenizer
    assert tok("a cat").input_ids == b.tokenizer("a cat").input_ids


def test_the_space_sets_the_scheduler():
    """A space fixes the sampler a schedule is searched and applied with, whatever the checkpoint ships."""
    import dataclasses

    space = dataclasses.replace(load_space("tiny-pixart"), scheduler="EulerDiscreteScheduler")
    assert type(load_pipeline(space).scheduler).__name__ == "EulerDiscreteScheduler"
    assert type(load_pipeline(load_space("tiny-pixart")).scheduler).__name__ == "DPMSolverMultistepScheduler"
    with pytest.raises(ValueError, match="not a diffusers scheduler class"):
        load_pipeline(dataclasses.replace(space, scheduler="NoSuchScheduler"))
