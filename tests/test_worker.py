"""The candidate evaluator's reference images: made only when used, cached per batch size,
and scored as the uint8 images they are."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ecad.distributed.worker import CandidateEvaluator, WorkerConfig
from ecad.schedule import Schedule

PROMPTS = ("a red cube", "a cat")
TINY_CLIP = dict(
    allow_random_weights=True,
    seed=0,  # TEST ONLY options of the clip metric: no download
    model_config=dict(
        embed_dim=16,
        vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16),
        text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
    ),
)


def test_no_reference_pass_when_neither_the_metric_nor_the_cost_needs_it(tmp_path):
    with pytest.warns(UserWarning, match="random weights"):
        w = CandidateEvaluator(
            WorkerConfig(
                "tiny-pixart",
                PROMPTS,
                (0,),
                metric="clip",
                metric_options=TINY_CLIP,
                batch_size=2,
                reference_cache=str(tmp_path),
            )
        )
    assert w.references is None and math.isnan(w.reference_ms)
    assert not list(tmp_path.iterdir()), "reference images were generated and cached for nothing"
    r = w.evaluate(Schedule.every_n(w.space.layout, w.space.steps, 2).to_json())
    assert r["feasible"] and r["quality"] > 0


def test_reference_cache_tells_batch_sizes_apart(tmp_path):
    for batch in (1, 2):
        CandidateEvaluator(WorkerConfig("tiny-pixart", PROMPTS, (0,), batch_size=batch, reference_cache=str(tmp_path)))
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
    again = CandidateEvaluator(WorkerConfig("tiny-pixart", PROMPTS, (0,), batch_size=2, reference_cache=str(tmp_path)))
    assert len(list(tmp_path.glob("*.safetensors"))) == 2  # the same set-up reads its own file
    assert again.references.dtype == torch.uint8  # kept as saved; the metric converts per call


def test_scores_of_uint8_images_equal_those_of_the_float_images(tmp_path):
    w = CandidateEvaluator(WorkerConfig("tiny-pixart", PROMPTS, (0, 1), batch_size=4, reference_cache=str(tmp_path)))
    schedule = Schedule.every_n(w.space.layout, w.space.steps, 3)
    r = w.evaluate(schedule.to_json())
    images = w.renderer.render(w.items, 4).images  # the schedule is still applied
    prompts = [PROMPTS[p] for p, _ in w.items]
    as_float = w.metric.score(images.float() / 255.0, prompts, w.references.float() / 255.0)
    assert r["quality"] == as_float.summary
    assert r["extras"] == {k: float(np.nanmean(v)) for k, v in as_float.extras.items()}
