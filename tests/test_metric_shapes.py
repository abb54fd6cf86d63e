"""The toy shapes metrics: shapes-score (caption adherence) and shapes-fid (feature-space Fréchet distance)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecad.errors import EcadError
from ecad.metrics import get_metric
from ecad.metrics.base import MetricError, higher_is_better, list_metrics, registered_class
from ecad.metrics.shapes import (
    ClassifierConfig,
    ShapesClassifier,
    frechet_distance,
    load_classifier,
    save_classifier,
)
from ecad.models import shapes as data


@pytest.fixture(scope="module")
def score():
    return get_metric("shapes-score")


@pytest.fixture(scope="module")
def fid():
    return get_metric("shapes-fid", reference_images=500)


def test_registered_with_their_directions():
    names = list_metrics()
    assert "toy" in names["shapes-score"] and "toy" in names["shapes-fid"]
    assert registered_class("shapes-score").needs_prompts and not registered_class("shapes-fid").needs_prompts
    assert higher_is_better("shapes-score") is True and higher_is_better("shapes-fid") is False


def test_score_is_high_for_the_data_sets_pictures_and_low_for_wrong_captions(score):
    batch = data.sample(120, "held-out", seed=11)
    result = score.score(batch.tensor(), batch.captions)
    assert result.per_image.shape == (120,) and np.all((0 <= result.per_image) & (result.per_image <= 1))
    assert result.summary > 0.85, result.summary
    for name in data.ATTRIBUTE_VALUES:
        assert result.extras[f"{name}_correct"].mean() > 0.9, name
    # the product of the five probabilities is what each image scores
    joint = np.prod([result.extras[k] for k in data.ATTRIBUTE_VALUES], axis=0)
    np.testing.assert_allclose(result.per_image, joint, rtol=1e-6)
    # each picture against another picture's caption: one wrong attribute is enough to score low
    wrong = [
        data.Attributes(a.shape, a.colour, a.background, a.size, "center" if a.position != "center" else "top left")
        for a in batch.attributes
    ]
    low = score.score(batch.tensor(), [a.caption for a in wrong])
    assert low.summary < 0.1 and np.all(low.per_image < result.per_image + 1e-9)


def test_score_takes_8_bit_images_like_float_ones(score):
    batch = data.sample(8, "train", seed=2)
    u8 = torch.from_numpy(batch.images).permute(0, 3, 1, 2).contiguous()
    a, b = score.score(u8, batch.captions), score.score(batch.tensor(), batch.captions)
    np.testing.assert_allclose(a.per_image, b.per_image, rtol=1e-5, atol=1e-7)


def test_score_needs_prompts_in_the_grammar(score):
    images = data.sample(2, seed=0).tensor()
    with pytest.raises(MetricError, match="prompt"):
        score.score(images)
    with pytest.raises(EcadError, match="not in the shapes grammar"):
        score.score(images, ["an astronaut riding a horse", "a cat"])


def test_fid_ranks_distributions(fid):
    same = data.sample(300, "held-out", seed=21).tensor()  # other pictures of the reference's captions
    train = data.sample(300, "train", seed=21).tensor()
    reds = data.sample(2000, "all", seed=22)
    only_red = reds.tensor()[[a.colour == "red" for a in reds.attributes]][:300]
    noise = torch.rand(300, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    values = [fid.score(x).summary for x in (same, train, only_red, noise)]
    assert np.all(np.isnan(fid.score(same).per_image))
    assert values[0] < values[2] < values[3], values
    assert values[1] < values[2], values  # unseen attribute combinations are still the same kind of picture
    assert all(v >= 0 for v in values)


def test_frechet_distance_matches_the_textbook_formula():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(200, 6)), rng.normal(size=(150, 6)) @ rng.normal(size=(6, 6)) + 0.5
    m1, s1, m2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    # Tr (S1 S2)^1/2 as the sum of the square roots of S1 S2's eigenvalues (real, >= 0)
    trace_sqrt = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)).sum()
    want = ((m1 - m2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace_sqrt
    assert frechet_distance(m1, s1, m2, s2) == pytest.approx(want, rel=1e-6)
    assert frechet_distance(m1, s1, m1, s1) == pytest.approx(0, abs=1e-8)


def test_fid_needs_two_images(fid):
    with pytest.raises(MetricError, match="at least 2"):
        fid.score(data.sample(1, seed=0).tensor())


def test_classifier_round_trip_and_missing_weights(tmp_path):
    torch.manual_seed(0)
    model = ShapesClassifier(ClassifierConfig(channels=(8, 8, 8), features=16)).eval()
    save_classifier(model, tmp_path / "c")
    again = load_classifier(tmp_path / "c")
    x = data.sample(3, seed=0).tensor()
    with torch.no_grad():
        assert all(torch.equal(model(x)[k], again(x)[k]) for k in data.ATTRIBUTE_VALUES)
    with pytest.raises(MetricError, match="python -m ecad.models.train_shapes --model classifier"):
        get_metric("shapes-score", weights=tmp_path / "missing")
    (tmp_path / "c" / "config.json").write_text('{"format": "something else"}')
    with pytest.raises(MetricError, match="not a shapes classifier config"):
        load_classifier(tmp_path / "c")
