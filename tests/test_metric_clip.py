"""CLIP score (open_clip): the formula, batching, local-only weights, random weights only on request."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from ecad.metrics import MetricError, MissingWeightsError, get_metric
from ecad.metrics.clip import ClipScoreMetric, resolve_open_clip_weights
from ecad.metrics.images import OPENAI_STD

TINY = dict(
    embed_dim=16,
    vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
)
PROMPTS = [
    "a red cube on a table",
    "a photo of a cat",
    "blue sky over mountains",
    "an astronaut riding a horse",
    "text",
    "two dogs playing in the snow, highly detailed, 8k",
]


def _tiny(**kw) -> ClipScoreMetric:
    with pytest.warns(UserWarning, match="random weights"):
        return get_metric("clip", allow_random_weights=True, model_config=TINY, **kw)


@pytest.fixture(scope="module")
def images():
    """8-bit images (as ecad's generations are), given to metrics in [0, 1]."""
    u8 = (torch.rand(len(PROMPTS), 3, 40, 52, generator=torch.Generator().manual_seed(0)) * 255).round()
    return u8 / 255


def open_clip_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """The upstream way: open_clip's own eval transform on PIL images."""
    from open_clip import image_transform
    from PIL import Image

    transform = image_transform(size, is_train=False)
    arrays = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return torch.stack([transform(Image.fromarray(a)) for a in arrays])


@pytest.fixture(scope="module")
def metric():
    return _tiny(batch_size=4)


def test_score_is_100_times_clamped_cosine_by_hand(metric, images):
    result = metric.score(images, PROMPTS)
    model, tok = metric.model, metric.tokenizer
    x = open_clip_pixels(images, 32)  # shortest side -> 32 with PIL's bicubic, center crop, normalise
    grey_levels = (metric.image_input(images) - x).abs() * torch.tensor(OPENAI_STD).view(3, 1, 1) * 255
    assert grey_levels.max() <= 1.001  # PIL's fixed-point rounding, at most one level
    with torch.no_grad():
        img = F.normalize(model.encode_image(x), dim=-1)
        txt = F.normalize(model.encode_text(tok(PROMPTS)), dim=-1)
    cos = (img * txt).sum(-1).double()
    expected = 100 * cos.clamp(min=0)
    assert result.name == "clip" and result.higher_is_better
    torch.testing.assert_close(torch.from_numpy(result.extras["cosine"]), cos, atol=2e-4, rtol=1e-3)
    torch.testing.assert_close(torch.from_numpy(result.per_image), expected, atol=2e-2, rtol=1e-3)
    assert result.summary == pytest.approx(float(expected.mean()), abs=2e-2)
    assert (result.per_image >= 0).all() and (result.per_image > 0).any()


def test_batched_equals_unbatched(metric, images):
    one = _tiny(batch_size=1).score(images, PROMPTS)
    many = metric.score(images, PROMPTS)
    torch.testing.assert_close(torch.from_numpy(one.per_image), torch.from_numpy(many.per_image), atol=1e-4, rtol=1e-4)


def test_prompt_count_and_missing_prompts(metric, images):
    with pytest.raises(MetricError, match="prompts"):
        metric.score(images, PROMPTS[:2])
    with pytest.raises(MetricError, match="prompt"):
        metric.score(images, None)


def test_random_weights_are_never_silent():
    with pytest.raises(MetricError, match="allow_random_weights"):
        ClipScoreMetric(model_config=TINY)


def test_missing_weights_name_repo_size_and_fetch_command(empty_caches):
    with pytest.raises(MissingWeightsError) as err:
        get_metric("clip")
    msg = str(err.value)
    assert "ViT-B-32" in msg and "openai" in msg
    assert "timm/vit_base_patch32_clip_224.openai" in msg and "600 MB" in msg
    assert "hf download timm/vit_base_patch32_clip_224.openai open_clip_model.safetensors" in msg
    assert err.value.repo == "timm/vit_base_patch32_clip_224.openai"


def test_weights_are_found_in_the_local_hub_cache(empty_caches):
    repo = empty_caches / "HF_HUB_CACHE" / "models--timm--vit_base_patch32_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    (snap / "open_clip_pytorch_model.bin").write_bytes(b"not really weights")
    path, cfg = resolve_open_clip_weights("ViT-B-32", "openai")
    assert path.endswith("open_clip_pytorch_model.bin") and cfg["quick_gelu"] is True
    (snap / "open_clip_model.safetensors").write_bytes(b"not really weights either")
    assert resolve_open_clip_weights("ViT-B-32", "openai")[0].endswith("open_clip_model.safetensors")


def test_local_weights_file_loads_named_and_dict_configs(tmp_path, metric, images):
    import open_clip

    weights = tmp_path / "tiny.bin"
    torch.save(metric.model.state_dict(), weights)
    expected = metric.score(images, PROMPTS).per_image
    # a config dict plus weights: no random-weights flag needed
    from_dict = ClipScoreMetric(model_config=TINY, weights=weights, seed=123)
    torch.testing.assert_close(
        torch.from_numpy(from_dict.score(images, PROMPTS).per_image), torch.from_numpy(expected), atol=1e-4, rtol=1e-4
    )
    # a registered open_clip config name plus a weights file (the path real checkpoints take)
    (tmp_path / "ecad-test-tiny-clip.json").write_text(json.dumps(TINY))
    open_clip.add_model_config(tmp_path / "ecad-test-tiny-clip.json")
    named = get_metric("clip", model="ecad-test-tiny-clip", pretrained=None, weights=str(weights))
    torch.testing.assert_close(
        torch.from_numpy(named.score(images, PROMPTS).per_image), torch.from_numpy(expected), atol=1e-4, rtol=1e-4
    )
    with pytest.raises(MetricError, match="does not exist"):
        ClipScoreMetric(model="ecad-test-tiny-clip", pretrained=None, weights=tmp_path / "missing.bin")


def test_negative_cosines_are_clamped_to_zero(images):
    metric = _tiny()
    with torch.no_grad():
        metric.model.text_projection.mul_(-1)  # flips every cosine's sign
    result = metric.score(images, PROMPTS)
    assert (result.extras["cosine"] < 0).all() and (result.per_image == 0).all() and result.summary == 0


def _count_text_rows(module: torch.nn.Module) -> list[int]:
    """Rows (prompts) each forward of `module` saw: a forward hook observes the real model."""
    seen: list[int] = []
    module.register_forward_hook(lambda mod, args, out: seen.append(int(args[0].shape[0])))
    return seen


def test_prompt_embeddings_are_encoded_once_per_unique_prompt(images):
    metric = _tiny(batch_size=4)
    seen = _count_text_rows(metric.model.token_embedding)
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[2], PROMPTS[1], PROMPTS[0]]
    first = metric.score(images, prompts)
    assert sum(seen) == 3 and seen == [3]  # unique prompts only, in batches of <= 4
    again = metric.score(images, prompts)
    assert sum(seen) == 3  # nothing re-encoded
    assert (first.per_image == again.per_image).all()
    metric.score(images, PROMPTS)
    assert sum(seen) == 3 + 3 and seen[1:] == [3]  # only the three new prompts
    fresh = _tiny(batch_size=1).score(images, prompts)  # cached == uncached
    torch.testing.assert_close(
        torch.from_numpy(fresh.per_image), torch.from_numpy(first.per_image), atol=1e-4, rtol=1e-4
    )
