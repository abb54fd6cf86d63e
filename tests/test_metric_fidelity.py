"""Fidelity (SSIM/PSNR to the uncached output), the registry, and latency as a cost."""

from __future__ import annotations

import time

import pytest
import torch

from ecad.metrics import MetricError, get_metric, list_metrics
from ecad.metrics.fidelity import PSNR_MAX_DB
from ecad.metrics.latency import measure_latency


def _images(n=6, seed=0):
    return torch.rand(n, 3, 24, 24, generator=torch.Generator().manual_seed(seed))


def test_identical_images_hit_the_documented_psnr_cap_and_ssim_one():
    x = _images()
    r = get_metric("fidelity").score(x, None, x)
    assert r.summary == pytest.approx(1.0)
    assert (r.extras["psnr"] == PSNR_MAX_DB).all()
    assert get_metric("psnr").score(x, None, x).summary == PSNR_MAX_DB


def test_fidelity_falls_as_noise_grows():
    x = _images()
    scores = [
        get_metric("fidelity").score((x + s * torch.randn_like(x)).clamp(0, 1), None, x).summary
        for s in (0.01, 0.05, 0.2)
    ]
    assert scores[0] > scores[1] > scores[2]


def test_batched_equals_unbatched():
    x, y = _images(seed=1), _images(seed=2)
    m = get_metric("fidelity")
    whole = m.score(x, None, y)
    single = [m.score(x[i : i + 1], None, y[i : i + 1]).per_image[0] for i in range(len(x))]
    torch.testing.assert_close(torch.tensor(whole.per_image), torch.tensor(single))


def test_inputs_are_checked():
    m = get_metric("fidelity")
    with pytest.raises(MetricError, match="needs reference images"):
        m.score(_images(), None, None)
    with pytest.raises(MetricError, match=r"expected a float tensor \[N, 3, H, W\]"):
        m.score(torch.rand(3, 24, 24), None, None)
    with pytest.raises(MetricError, match="unknown metric 'nope'; available:"):
        get_metric("nope")


def test_registry_lists_every_metric():
    assert {"fidelity", "psnr", "clip", "image-reward", "pickscore", "hpsv2", "fid"} <= set(list_metrics())


def test_latency_is_a_median_per_image_with_settings():
    calls = []
    r = measure_latency(
        lambda: (calls.append(1), time.sleep(0.02 if len(calls) > 2 else 0.0)),
        batch=4,
        device="cpu",
        warmup=2,
        repeats=5,
        steps=20,
    )
    assert len(calls) == 7 and len(r.calls_ms) == 5
    assert r.batch == 4 and r.steps == 20 and r.device.startswith("cpu")
    # each timed call sleeps 20 ms (warm-ups do not): the median per image is a quarter of it, not noise
    assert min(r.calls_ms) >= 20 and 5 <= r.ms_per_image < 5 * 4


def test_search_latency_cost_is_relative_to_the_workers_own_no_caching_time():
    from ecad.distributed.worker import CandidateEvaluator, WorkerConfig
    from ecad.schedule import Schedule

    w = CandidateEvaluator(WorkerConfig("tiny-pixart", ("a cat", "a dog"), (0,), cost="latency", batch_size=2))
    r = w.evaluate(Schedule.every_n(w.space.layout, w.space.steps, 4).to_json())
    assert r["relative_latency"] == pytest.approx(r["ms_per_image"] / w.reference_ms)
    assert r["latency_settings"]["resolution"] == [16, 16] and r["latency_settings"]["steps"] == 8


def test_lpips_is_scored_in_batches_equal_to_one_image_at_a_time():
    # a real torchmetrics LPIPS network with a random AlexNet backbone: no download needed
    from torchmetrics.functional.image.lpips import _NoTrainLpips

    torch.manual_seed(0)
    net = _NoTrainLpips(net="alex", pnet_rand=True)
    x, y = torch.rand(2, 5, 3, 40, 36, generator=torch.Generator().manual_seed(3))
    m = get_metric("fidelity", lpips=net, batch_size=2)
    r = m.score(x, None, y)
    with torch.inference_mode():  # what the per-image torchmetrics object computed for each image
        single = torch.stack([net(i[None], j[None], normalize=True).squeeze() for i, j in zip(x, y)])
    torch.testing.assert_close(torch.from_numpy(r.extras["lpips"]).float(), single, atol=1e-6, rtol=1e-5)
    assert (r.extras["lpips"] > 0).all()
    assert (m.score(x, None, x).extras["lpips"] == 0).all()
    assert "lpips" not in m.score(x[..., :24, :24], None, y[..., :24, :24]).extras  # too small for AlexNet


def test_integer_images_score_like_their_float_form():
    from ecad.metrics.base import check_images

    x, y = (torch.rand(2, 4, 3, 24, 24, generator=torch.Generator().manual_seed(4)) * 255).round().to(torch.uint8)
    m = get_metric("fidelity")
    as_uint8, as_float = m.score(x, None, y), m.score(x.float() / 255.0, None, y.float() / 255.0)
    assert (as_uint8.per_image == as_float.per_image).all()
    assert (as_uint8.extras["psnr"] == as_float.extras["psnr"]).all()
    f = torch.rand(2, 3, 8, 8)
    assert check_images(f, "x") is f  # in range, float32: no copy
    torch.testing.assert_close(check_images(f * 3 - 1, "x"), (f * 3 - 1).clamp(0, 1))


def test_prompt_metrics_declare_it_on_the_class():
    from ecad.metrics import registered_class

    assert {n for n in list_metrics() if registered_class(n) and registered_class(n).needs_prompts} == {
        "clip",
        "image-reward",
        "pickscore",
        "hpsv2",
        "shapes-score",
    }
    from ecad.metrics.fidelity import FidelityMetric

    class PromptedFidelity(FidelityMetric):
        needs_prompts = True

    with pytest.raises(MetricError, match="fidelity: .*--prompts FILE"):  # one check in QualityMetric.score
        PromptedFidelity().score(_images(), None, _images())
    assert PromptedFidelity().score(_images(), ["a"] * 6, _images()).per_image.shape == (6,)


def test_unknown_options_are_named():
    from ecad.metrics import UnknownOptionError

    with pytest.raises(UnknownOptionError, match=r"fidelity: unknown options \['weights'\]") as err:
        get_metric("fidelity", weights="w.bin")
    assert err.value.options == ["weights"] and isinstance(err.value, (MetricError, TypeError))
