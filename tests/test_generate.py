"""`ecad generate` reproduces what the search evaluated, bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import ecad
from ecad.cli import main
from ecad.distributed.worker import CandidateEvaluator, WorkerConfig
from ecad.models import FAMILIES
from ecad.search.run import ExecConfig, SearchConfig, SearchRun


@pytest.mark.parametrize("space", [f"tiny-{family}" for family in FAMILIES])
def test_generate_reproduces_the_search_images_for_the_same_seed(space, tmp_path):
    run = SearchRun(
        SearchConfig(space=space, population=6, generations=1, num_prompts=2, seeds=2, batch_size=4),
        ExecConfig(out=str(tmp_path / "run"), workers=0, quiet=True),
    )
    run.run()
    schedule_path = sorted((tmp_path / "run" / "frontier").glob("0*.json"))[0]
    schedule = ecad.load_schedule(schedule_path)
    # the images the search scored for this schedule, from a worker like the search's
    worker = CandidateEvaluator(WorkerConfig(space, run.prompts, (0, 1), batch_size=4))
    worker.renderer.apply(schedule)
    searched = worker.renderer.render(worker.items, 4).images
    out = tmp_path / "gen"
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(run.prompts) + "\n")
    assert (
        main(
            [
                "generate",
                "--schedule",
                str(schedule_path),
                "--prompts",
                str(prompts),
                "--num-seeds",
                "2",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    meta = json.loads((out / "generate.json").read_text())
    assert meta["space"] == space and len(meta["images"]) == 4
    # an image is one PNG; a video is PNG frames (and an animation beside them), frame by frame
    files = [f for m in meta["images"] for f in m.get("frames", [m["file"]])]
    pngs = [torch.from_numpy(np.array(Image.open(out / f))).permute(2, 0, 1) for f in files]
    assert torch.equal(torch.stack(pngs), searched)
    for m in meta["images"]:
        if "frames" in m:
            assert Image.open(out / m["file"]).n_frames == len(m["frames"]) == meta["frames"]


def test_generate_needs_a_prompt(tmp_path, capsys):
    s = ecad.Schedule.full(ecad.pixart_layout(4), 8)
    s.save(tmp_path / "s.json")
    assert main(["generate", "--schedule", str(tmp_path / "s.json")]) == 2
    assert "--prompt" in capsys.readouterr().err


def test_schedule_for_an_unknown_model_needs_space_or_model(tmp_path, capsys):
    s = ecad.Schedule.full(ecad.pixart_layout(5), 8)
    s.save(tmp_path / "s.json")
    assert main(["generate", "--schedule", str(tmp_path / "s.json"), "--prompt", "x"]) == 2
    assert "pass --space NAME or --model ID" in capsys.readouterr().err


def test_a_schedule_is_matched_to_a_space_of_its_variant_and_model_override():
    """A Sigma schedule never runs in an Alpha space; --model lets a schedule of other weights match."""
    from ecad.generate import space_for_schedule
    from ecad.spaces import load_space

    alpha = load_space("pixart-alpha-512")
    s = alpha.full_schedule()
    assert space_for_schedule(s).name == "pixart-alpha-512"
    s.variant = "sigma"
    s.model = None
    assert space_for_schedule(s).name == "pixart-sigma-512"
    s.model = "/my/finetune"
    with pytest.raises(ecad.ScheduleError, match="pass --space NAME or --model ID"):
        space_for_schedule(s)
    assert space_for_schedule(s, model="/my/finetune").name == "pixart-sigma-512"
