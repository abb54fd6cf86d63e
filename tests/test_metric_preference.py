"""PickScore and HPSv2 on tiny random models: the formulas, batching, local-only weights."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from ecad.metrics import MetricError, MissingWeightsError, get_metric
from ecad.metrics.preference import HPSv2Metric, PickScoreMetric
from ecad.models.tiny import TINY_VOCAB, byte_tokenizer

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_STD = [0.26862954, 0.26130258, 0.27577711]
PROMPTS = [
    "a red cube",
    "a photo of a cat sitting on a very long wooden bench",
    "sky",
    "an astronaut riding a horse",
    "two dogs",
]
TINY_CLIP = dict(
    text_config=dict(
        vocab_size=TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=77,
        bos_token_id=0,
        eos_token_id=1,
        pad_token_id=0,
    ),
    vision_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
    ),
    projection_dim=16,
)
TINY_OPEN_CLIP = dict(
    embed_dim=16,
    vision_cfg=dict(image_size=32, layers=2, width=32, patch_size=8, head_width=16),
    text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=2),
)


@pytest.fixture(scope="module")
def images():
    """8-bit images (as ecad's generations are), given to metrics in [0, 1]."""
    return (torch.rand(len(PROMPTS), 3, 36, 48, generator=torch.Generator().manual_seed(1)) * 255).round() / 255


def hf_clip_pixels(images: torch.Tensor, size: int) -> torch.Tensor:
    """The upstream way for PickScore: transformers' CLIPImageProcessor on 8-bit images (it resizes
    them with PIL's bicubic)."""
    from transformers import CLIPImageProcessor

    processor = CLIPImageProcessor(
        size={"shortest_edge": size},
        crop_size={"height": size, "width": size},
        image_mean=OPENAI_MEAN,
        image_std=OPENAI_STD,
    )
    arrays = list((images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())
    return processor(images=arrays, return_tensors="pt")["pixel_values"]


# one instance shared by all tests (the reference computations must tokenize exactly as the metric does)
TOKENIZER = byte_tokenizer(77)


def _pick(**kw) -> PickScoreMetric:
    with pytest.warns(UserWarning, match="random weights"):
        return get_metric("pickscore", allow_random_weights=True, config=TINY_CLIP, tokenizer=TOKENIZER, **kw)


def _hps(**kw) -> HPSv2Metric:
    with pytest.warns(UserWarning, match="random weights"):
        return get_metric("hpsv2", allow_random_weights=True, model_config=TINY_OPEN_CLIP, **kw)


# ---------------------------------------------------------------------- PickScore
def test_pickscore_is_logit_scale_times_cosine_by_hand(images):
    metric = _pick(batch_size=8)
    result = metric.score(images, PROMPTS)
    model, tok = metric.model, TOKENIZER
    x = hf_clip_pixels(images, 32)
    grey_levels = (metric.image_input(images) - x).abs() * torch.tensor(OPENAI_STD).view(3, 1, 1) * 255
    assert grey_levels.max() <= 1.001  # PIL's fixed-point rounding, at most one level
    with torch.no_grad():
        img = model.visual_projection(model.vision_model(pixel_values=x).pooler_output)
        scores = []
        for i, p in enumerate(PROMPTS):  # one prompt at a time: no padding involved
            t = tok([p], return_tensors="pt")
            txt = model.text_projection(model.text_model(**t).pooler_output)
            scores.append(model.logit_scale.exp() * F.cosine_similarity(img[i : i + 1], txt)[0])
    expected = torch.stack(scores).double()
    assert result.name == "pickscore" and result.higher_is_better
    torch.testing.assert_close(torch.from_numpy(result.per_image), expected, atol=5e-3, rtol=1e-3)  # 1-level pixels


def test_pickscore_batched_equals_unbatched(images):
    one, many = _pick(batch_size=1).score(images, PROMPTS), _pick(batch_size=3).score(images, PROMPTS)
    torch.testing.assert_close(torch.from_numpy(one.per_image), torch.from_numpy(many.per_image), atol=1e-4, rtol=1e-4)


def test_pickscore_random_needs_config_and_tokenizer():
    with pytest.raises(MetricError, match="config= and tokenizer="):
        PickScoreMetric(allow_random_weights=True)


def test_pickscore_missing_weights(empty_caches):
    with pytest.raises(MissingWeightsError) as err:
        get_metric("pickscore")
    msg = str(err.value)
    assert "yuvalkirstain/PickScore_v1" in msg and "3.9 GB" in msg and "hf download yuvalkirstain/PickScore_v1" in msg


def test_pickscore_missing_processor(empty_caches, tmp_path):
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    CLIPModel(CLIPConfig(**TINY_CLIP)).save_pretrained(tmp_path / "pick")
    with pytest.raises(MissingWeightsError, match="laion/CLIP-ViT-H-14-laion2B-s32B-b79K"):
        PickScoreMetric(weights=tmp_path / "pick")
    # a local model directory with an explicit tokenizer needs no processor download
    metric = PickScoreMetric(weights=tmp_path / "pick", tokenizer=TOKENIZER)
    assert metric.score(torch.rand(2, 3, 32, 32), PROMPTS[:2]).per_image.shape == (2,)


# ---------------------------------------------------------------------- HPSv2
def test_hpsv2_is_100_times_cosine_by_hand(images):
    metric = _hps(batch_size=8)
    result = metric.score(images, PROMPTS)
    # HPSv2's eval transform on a tensor: longest side -> 32 (torchvision's float bicubic, which does
    # not clip its overshoot), pad to a square with black, OpenAI mean/std
    x = TF.resize(images, [24, 32], interpolation=TF.InterpolationMode.BICUBIC, antialias=True)
    assert x.min() < 0 or x.max() > 1  # noise overshoots: a clamp would change these pixels
    torch.testing.assert_close(
        metric.image_input(images), TF.normalize(TF.pad(x, [0, 4, 0, 4]), OPENAI_MEAN, OPENAI_STD)
    )
    x = TF.pad(x, [0, 4, 0, 4], fill=0.0)
    x = TF.normalize(x, mean=OPENAI_MEAN, std=OPENAI_STD)
    with torch.no_grad():
        img = F.normalize(metric.model.encode_image(x), dim=-1)
        txt = F.normalize(metric.model.encode_text(metric.tokenizer(PROMPTS)), dim=-1)
    cos = (img * txt).sum(-1).double()
    assert result.name == "hpsv2" and result.higher_is_better
    torch.testing.assert_close(torch.from_numpy(result.per_image), 100 * cos, atol=1e-3, rtol=1e-4)
    with torch.no_grad():
        metric.model.text_projection.mul_(-1)  # flips every cosine: HPSv2 does not clamp, unlike CLIP score
    metric.clear_prompt_cache()  # prompt embeddings are cached per instance: drop them after editing weights
    torch.testing.assert_close(
        torch.from_numpy(metric.score(images, PROMPTS).per_image), -100 * cos, atol=1e-3, rtol=1e-4
    )


def test_hpsv2_batched_equals_unbatched(images):
    one, many = _hps(batch_size=1).score(images, PROMPTS), _hps(batch_size=4).score(images, PROMPTS)
    torch.testing.assert_close(torch.from_numpy(one.per_image), torch.from_numpy(many.per_image), atol=1e-4, rtol=1e-4)


def test_hpsv2_loads_a_state_dict_checkpoint(tmp_path, images):
    ref = _hps()
    path = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": ref.model.state_dict()}, path)
    loaded = HPSv2Metric(weights=path, model_config=TINY_OPEN_CLIP, seed=7)
    torch.testing.assert_close(
        torch.from_numpy(loaded.score(images, PROMPTS).per_image),
        torch.from_numpy(ref.score(images, PROMPTS).per_image),
        atol=1e-4,
        rtol=1e-4,
    )


def test_hpsv2_missing_weights(empty_caches):
    with pytest.raises(MissingWeightsError) as err:
        get_metric("hpsv2")
    msg = str(err.value)
    assert "xswu/HPSv2" in msg and "HPS_v2.1_compressed.pt" in msg and "1.9 GB" in msg
    assert "hf download xswu/HPSv2 HPS_v2.1_compressed.pt" in msg
    with pytest.raises(MetricError, match="unknown version"):
        get_metric("hpsv2", version="v3")


def test_pickscore_shares_the_clip_machinery_and_caches_prompts(images):
    from ecad.metrics.clip import OpenClipSimilarity

    metric = _pick(batch_size=2)
    assert isinstance(metric, OpenClipSimilarity) and metric.needs_prompts
    seen: list[int] = []
    metric.model.text_model.register_forward_hook(
        lambda mod, args, kw, out: seen.append(kw["input_ids"].shape[0]), with_kwargs=True
    )
    prompts = [PROMPTS[0], PROMPTS[1], PROMPTS[0], PROMPTS[1], PROMPTS[2]]
    first = metric.score(images, prompts)
    assert seen == [2, 1]  # three unique prompts, batches of 2
    again = metric.score(images, prompts)
    assert seen == [2, 1] and (first.per_image == again.per_image).all()
    torch.testing.assert_close(
        torch.from_numpy(first.per_image),
        torch.from_numpy(_pick(batch_size=1).score(images, prompts).per_image),
        atol=1e-4,
        rtol=1e-4,
    )
