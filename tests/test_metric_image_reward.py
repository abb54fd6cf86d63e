"""ImageReward metric: checkpoint name mapping, a reference forward written against the upstream
key names, batching, score normalisation, preprocessing, and the no-silent-fallback rules.

Everything runs offline on a tiny configuration with random weights; the full-size checks use
shapes only (meta tensors)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ecad.metrics import MetricError, MissingWeightsError, get_metric
from ecad.metrics.image_reward import (
    REWARD_MEAN,
    REWARD_STD,
    ImageRewardConfig,
    ImageRewardMetric,
    ImageRewardModel,
    convert_official_state_dict,
    load_image_reward,
    official_key_shapes,
    preprocess_images,
    tokenize,
)
from ecad.metrics.images import OPENAI_MEAN, OPENAI_STD

TINY = ImageRewardConfig(
    image_size=32,
    patch_size=16,
    vision_width=32,
    vision_layers=2,
    vision_heads=2,
    vocab_size=100,
    text_width=32,
    text_layers=2,
    text_heads=2,
    text_intermediate=64,
    max_position_embeddings=64,
    embed_dim=16,
    max_length=12,
)
WORDS = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "a",
    "an",
    "photo",
    "of",
    "cat",
    "dog",
    "red",
    "blue",
    "cube",
    "on",
    "the",
    "table",
    "sitting",
    "painting",
    "astronaut",
    "riding",
    "horse",
    "##s",
    "in",
    "space",
]
PROMPTS = [
    "a photo of a cat",
    "a red cube on the table",
    "an astronaut riding a horse in space",
    "a painting of a blue dog sitting on the table a cat a cat",
    "cats",
]


@pytest.fixture
def tokenizer_dir(tmp_path):
    d = tmp_path / "bert-tiny"
    d.mkdir()
    (d / "vocab.txt").write_text("\n".join(WORDS) + "\n")
    return d


def fake_official_state_dict(config: ImageRewardConfig, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the upstream checkpoint's names (LayerNorm weights near 1)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in official_key_shapes(config).items():
        if key.endswith("position_ids"):
            sd[key] = torch.arange(shape[-1]).expand(shape).clone()
        elif ("norm" in key.lower()) and key.endswith("weight"):
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            sd[key] = 0.2 * torch.randn(shape, generator=g)
    return sd


def tiny_model(seed: int = 0) -> tuple[ImageRewardModel, dict[str, torch.Tensor]]:
    official = fake_official_state_dict(TINY, seed)
    model = ImageRewardModel(TINY)
    model.load_state_dict(convert_official_state_dict(official, TINY), strict=True)
    return model.eval(), official


# ----------------------------------------------------------------------------- name mapping
def test_official_checkpoint_maps_one_to_one_tiny():
    official = fake_official_state_dict(TINY)
    converted = convert_official_state_dict(official, TINY)
    model = ImageRewardModel(TINY)
    ours = model.state_dict()
    assert set(converted) == set(ours)  # every parameter of ours comes from exactly one upstream key
    assert len(converted) == len(official) - 1  # only the position_ids buffer is dropped (rebuilt)
    model.load_state_dict(converted, strict=True)
    loaded = model.state_dict()
    for key, value in converted.items():
        assert torch.equal(loaded[key], value), key
    # the fused timm qkv goes over as is: transformers' BlipAttention splits rows [q; k; v] like timm
    qkv = official["blip.visual_encoder.blocks.1.attn.qkv.weight"]
    assert torch.equal(model.vision.encoder.layers[1].self_attn.qkv.weight, qkv)


def test_full_size_names_and_shapes_without_allocating():
    c = ImageRewardConfig()
    shapes = official_key_shapes(c)
    # derived by hand from BLIP vit.py (timm names), med.py (BertModel without pooler, cross-attention
    # in every layer), blip_pretrain.py (vision_proj, text_proj) and ImageReward.MLP(768)
    vision_keys = 4 + 24 * 12 + 2
    text_keys = 5 + 12 * (10 + 10 + 6)
    assert len(shapes) == vision_keys + text_keys + 4 + 10 == 625
    expected = {
        "blip.visual_encoder.cls_token": (1, 1, 1024),
        "blip.visual_encoder.pos_embed": (1, 197, 1024),
        "blip.visual_encoder.patch_embed.proj.weight": (1024, 3, 16, 16),
        "blip.visual_encoder.blocks.23.attn.qkv.weight": (3072, 1024),
        "blip.visual_encoder.blocks.23.mlp.fc1.weight": (4096, 1024),
        "blip.visual_encoder.norm.bias": (1024,),
        "blip.text_encoder.embeddings.position_ids": (1, 512),
        "blip.text_encoder.embeddings.word_embeddings.weight": (30524, 768),
        "blip.text_encoder.encoder.layer.11.crossattention.self.key.weight": (768, 1024),
        "blip.text_encoder.encoder.layer.11.crossattention.self.query.weight": (768, 768),
        "blip.text_encoder.encoder.layer.0.intermediate.dense.weight": (3072, 768),
        "blip.vision_proj.weight": (256, 1024),
        "blip.text_proj.weight": (256, 768),
        "mlp.layers.0.weight": (1024, 768),
        "mlp.layers.2.weight": (128, 1024),
        "mlp.layers.4.weight": (64, 128),
        "mlp.layers.6.weight": (16, 64),
        "mlp.layers.7.weight": (1, 16),
    }
    for key, shape in expected.items():
        assert shapes[key] == shape, key
    assert "blip.visual_encoder.blocks.24.norm1.weight" not in shapes
    assert "blip.text_encoder.encoder.layer.12.output.dense.weight" not in shapes
    assert not any("pooler" in k or "token_type" in k for k in shapes)

    d, h, v, e, i = 1024, 768, 30524, 1024, 3072
    vision = (1 + 197 + 3 * 16 * 16 + 1) * d + 24 * (12 * d * d + 13 * d) + 2 * d
    text = (v + 512 + 2) * h + 12 * ((4 * h * h + 6 * h) + (2 * h * h + 2 * e * h + 6 * h) + (2 * i * h + i + 3 * h))
    proj = (d + 1) * 256 + (h + 1) * 256
    head = (768 + 1) * 1024 + (1024 + 1) * 128 + (128 + 1) * 64 + (64 + 1) * 16 + 17
    n_params = sum(math.prod(s) for k, s in shapes.items() if not k.endswith("position_ids"))
    assert n_params == vision + text + proj + head == 446_665_953
    assert 1.7e9 < 4 * n_params < 1.9e9  # float32 ImageReward.pt is published as ~1.8 GB

    with torch.device("meta"):
        model = ImageRewardModel(c)
        official = {k: torch.empty(s) for k, s in shapes.items()}
    assert sum(p.numel() for p in model.parameters()) == n_params
    model.load_state_dict(convert_official_state_dict(official, c), strict=True, assign=True)


def test_converter_refuses_unknown_missing_and_misshapen_keys():
    official = fake_official_state_dict(TINY)
    with pytest.raises(MetricError, match="no counterpart.*pooler"):
        convert_official_state_dict({**official, "blip.text_encoder.pooler.dense.weight": torch.zeros(32, 32)}, TINY)
    missing = dict(official)
    del missing["blip.text_encoder.encoder.layer.1.crossattention.self.value.bias"]
    with pytest.raises(MetricError, match="missing.*crossattention.self.value.bias"):
        convert_official_state_dict(missing, TINY)
    wrong = {**official, "mlp.layers.7.weight": torch.zeros(1, 17)}
    with pytest.raises(MetricError, match="does not match"):
        convert_official_state_dict(wrong, TINY)
    bad_ids = {**official, "blip.text_encoder.embeddings.position_ids": torch.zeros(1, 64, dtype=torch.long)}
    with pytest.raises(MetricError, match="position_ids"):
        convert_official_state_dict(bad_ids, TINY)
    prefixed = {f"module.{k}": t for k, t in official.items()}  # DDP-saved checkpoints
    assert set(convert_official_state_dict(prefixed, TINY)) == set(convert_official_state_dict(official, TINY))


# ----------------------------------------------------------------------------- numerics
def _layer_norm(x, sd, prefix, eps):
    return F.layer_norm(x, x.shape[-1:], sd[prefix + ".weight"], sd[prefix + ".bias"], eps)


def _linear(x, sd, prefix):
    return F.linear(x, sd[prefix + ".weight"], sd[prefix + ".bias"])


def _heads(x, n):
    b, t, c = x.shape
    return x.view(b, t, n, c // n).transpose(1, 2)


def reference_raw_reward(sd, c: ImageRewardConfig, pixels, ids, mask):
    """Upstream forward written directly on the upstream names: BLIP VisionTransformer (timm blocks,
    LayerNorm eps 1e-6) then med BertModel (additive -10000 padding mask, cross-attention to every
    image token), CLS through the MLP without activations."""
    v = "blip.visual_encoder."
    x = F.conv2d(pixels, sd[v + "patch_embed.proj.weight"], sd[v + "patch_embed.proj.bias"], stride=c.patch_size)
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([sd[v + "cls_token"].expand(x.shape[0], -1, -1), x], 1) + sd[v + "pos_embed"]
    for i in range(c.vision_layers):
        p = f"{v}blocks.{i}."
        h = _layer_norm(x, sd, p + "norm1", 1e-6)
        b, n, d = h.shape
        q, k, val = _linear(h, sd, p + "attn.qkv").reshape(b, n, 3, c.vision_heads, -1).permute(2, 0, 3, 1, 4)
        att = ((q @ k.transpose(-2, -1)) * (d // c.vision_heads) ** -0.5).softmax(-1)
        x = x + _linear((att @ val).transpose(1, 2).reshape(b, n, d), sd, p + "attn.proj")
        h = _layer_norm(x, sd, p + "norm2", 1e-6)
        x = x + _linear(F.gelu(_linear(h, sd, p + "mlp.fc1")), sd, p + "mlp.fc2")
    image = _layer_norm(x, sd, v + "norm", 1e-6)

    t = "blip.text_encoder."
    pos = sd[t + "embeddings.position_ids"][:, : ids.shape[1]]
    y = sd[t + "embeddings.word_embeddings.weight"][ids] + sd[t + "embeddings.position_embeddings.weight"][pos]
    y = _layer_norm(y, sd, t + "embeddings.LayerNorm", 1e-12)
    additive = (1.0 - mask[:, None, None, :].float()) * -10000.0
    hd = c.text_width // c.text_heads

    def attention(hs, p, kv, add_mask):
        q = _heads(_linear(hs, sd, p + ".self.query"), c.text_heads)
        k = _heads(_linear(kv, sd, p + ".self.key"), c.text_heads)
        vv = _heads(_linear(kv, sd, p + ".self.value"), c.text_heads)
        scores = q @ k.transpose(-1, -2) / math.sqrt(hd)
        if add_mask is not None:
            scores = scores + add_mask
        ctx = (scores.softmax(-1) @ vv).transpose(1, 2).reshape(hs.shape)
        return _layer_norm(_linear(ctx, sd, p + ".output.dense") + hs, sd, p + ".output.LayerNorm", 1e-12)

    for i in range(c.text_layers):
        p = f"{t}encoder.layer.{i}."
        y = attention(y, p + "attention", y, additive)
        y = attention(y, p + "crossattention", image, None)
        inter = F.gelu(_linear(y, sd, p + "intermediate.dense"))
        y = _layer_norm(_linear(inter, sd, p + "output.dense") + y, sd, p + "output.LayerNorm", 1e-12)
    z = y[:, 0, :].float()
    for idx in (0, 2, 4, 6, 7):
        z = _linear(z, sd, f"mlp.layers.{idx}")
    return z.squeeze(-1)


def test_model_matches_reference_forward_on_upstream_names(tokenizer_dir):
    from transformers import BertTokenizer

    torch.manual_seed(0)
    model, official = tiny_model()
    tok = BertTokenizer.from_pretrained(str(tokenizer_dir))
    ids, mask = tokenize(tok, PROMPTS[:4], TINY.max_length)
    assert (mask == 0).any() and (mask == 1).all(dim=1).any()  # padded and truncated prompts
    pixels = preprocess_images(torch.rand(4, 3, 32, 32), TINY.image_size)
    with torch.inference_mode():
        ours = model.raw_reward(pixels, ids, mask)
        ref = reference_raw_reward(official, TINY, pixels, ids, mask)
    assert ours.shape == (4,)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)
    assert ours.std() > 0  # prompts/images actually change the score


@pytest.mark.parametrize(
    "shape,size", [((40, 56), 32), ((56, 40), 32), ((32, 32), 32), ((20, 24), 32), ((300, 200), 224)]
)
def test_preprocessing_matches_upstream_pil_transform(shape, size):
    from PIL import Image
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    g = torch.Generator().manual_seed(sum(shape))
    img = (torch.rand(3, *shape, generator=g) * 255).round().to(torch.uint8)  # noise: worst case for clipping
    upstream = Compose(
        [
            Resize(size, interpolation=InterpolationMode.BICUBIC),
            CenterCrop(size),
            ToTensor(),
            Normalize(OPENAI_MEAN, OPENAI_STD),
        ]
    )
    ref = upstream(Image.fromarray(img.permute(1, 2, 0).numpy()))
    ours = preprocess_images(img[None].float() / 255, size)[0]
    assert ours.shape == ref.shape == (3, size, size)
    grey_levels = (ours - ref).abs() * torch.tensor(OPENAI_STD).view(3, 1, 1) * 255
    assert grey_levels.max() <= 1.001  # PIL's fixed-point rounding, rarely one level
    assert (grey_levels > 0.5).float().mean() < 0.01


# ----------------------------------------------------------------------------- the metric
def _metric(tokenizer_dir, batch_size, seed=0):
    model, _ = tiny_model(seed)
    from ecad.metrics.image_reward import load_tokenizer

    return ImageRewardMetric(model, load_tokenizer(str(tokenizer_dir)), "cpu", batch_size=batch_size)


def test_batched_equals_unbatched(tokenizer_dir):
    images = torch.rand(5, 3, 40, 48, generator=torch.Generator().manual_seed(2))
    one = _metric(tokenizer_dir, 1).score(images, PROMPTS)
    four = _metric(tokenizer_dir, 4).score(images, PROMPTS)
    assert one.name == "image-reward" and one.higher_is_better
    assert one.per_image.shape == (5,)
    np.testing.assert_allclose(one.per_image, four.per_image, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(one.extras["raw_reward"], four.extras["raw_reward"], rtol=1e-5, atol=1e-5)
    assert one.summary == pytest.approx(float(np.mean(one.per_image)))


def test_score_is_normalised_raw_reward(tokenizer_dir):
    assert (REWARD_MEAN, REWARD_STD) == (0.16717362830052426, 1.0333394966054072)  # ImageReward.__init__
    metric = _metric(tokenizer_dir, 2)
    images = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    res = metric.score(images, PROMPTS[:3])
    raw = res.extras["raw_reward"]
    np.testing.assert_allclose(res.per_image, (raw - REWARD_MEAN) / REWARD_STD, rtol=1e-6, atol=1e-7)
    ids, mask = tokenize(metric.tokenizer, PROMPTS[:3], TINY.max_length)
    with torch.inference_mode():
        direct = metric.model.raw_reward(preprocess_images(images, 32), ids, mask)
        full = metric.model(preprocess_images(images, 32), ids, mask)
    np.testing.assert_allclose(raw, direct.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.per_image, full.numpy(), rtol=1e-5, atol=1e-6)


def test_prompts_are_required(tokenizer_dir):
    metric = _metric(tokenizer_dir, 2)
    with pytest.raises(MetricError, match="prompt"):
        metric.score(torch.rand(2, 3, 32, 32))


# ----------------------------------------------------------------------------- loading rules
def test_missing_weights_name_the_repo_and_fetch_command(empty_caches, tokenizer_dir):
    with pytest.raises(MissingWeightsError) as err:
        load_image_reward(tokenizer=str(tokenizer_dir))
    msg = str(err.value)
    assert err.value.repo == "THUDM/ImageReward"
    assert "THUDM/ImageReward" in msg and "1.8 GB" in msg
    assert "`hf download THUDM/ImageReward ImageReward.pt med_config.json`" in msg
    with pytest.raises(MissingWeightsError, match="hf download THUDM/ImageReward"):
        get_metric("image-reward")
    with pytest.raises(MissingWeightsError, match="hf download THUDM/ImageReward"):
        get_metric("image-reward", weights=str(empty_caches / "nowhere" / "ImageReward.pt"))


def test_missing_tokenizer_is_reported(empty_caches):
    ckpt_dir = empty_caches / "ir"
    ckpt_dir.mkdir()
    torch.save(fake_official_state_dict(TINY), ckpt_dir / "ImageReward.pt")
    with pytest.raises(MissingWeightsError) as err:
        load_image_reward(ckpt_dir, config=TINY)
    assert err.value.repo == "bert-base-uncased"
    assert "hf download bert-base-uncased tokenizer.json vocab.txt tokenizer_config.json" in str(err.value)
    assert "0.5 MB" in str(err.value)


def test_loads_a_local_checkpoint_with_weights_only(empty_caches, tokenizer_dir):
    ckpt_dir = empty_caches / "ir"
    ckpt_dir.mkdir()
    official = fake_official_state_dict(TINY, seed=5)
    torch.save(official, ckpt_dir / "ImageReward.pt")
    med = {
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "vocab_size": 100,
        "max_position_embeddings": 64,
        "layer_norm_eps": 1e-12,
        "pad_token_id": 0,
        "hidden_act": "gelu",
        "encoder_width": 768,
        "add_cross_attention": True,
    }
    (ckpt_dir / "med_config.json").write_text(json.dumps(med))
    model, tok = load_image_reward(ckpt_dir, tokenizer=str(tokenizer_dir), config=TINY)
    assert torch.equal(
        model.vision.encoder.layers[0].self_attn.qkv.weight, official["blip.visual_encoder.blocks.0.attn.qkv.weight"]
    )
    assert torch.equal(model.reward_head[7].weight, official["mlp.layers.7.weight"])
    assert torch.equal(model.text.embeddings.position_ids, torch.arange(64)[None])
    assert tok.convert_tokens_to_ids(["[DEC]", "[ENC]"]) == [len(WORDS), len(WORDS) + 1]
    metric = get_metric(
        "image-reward",
        weights=str(ckpt_dir / "ImageReward.pt"),
        tokenizer=str(tokenizer_dir),
        config=TINY,
        batch_size=2,
    )
    res = metric.score(torch.rand(3, 3, 32, 32), PROMPTS[:3])
    assert np.isfinite(res.per_image).all()
    (ckpt_dir / "med_config.json").write_text(json.dumps({**med, "num_hidden_layers": 3}))
    with pytest.raises(MetricError, match="disagrees"):
        load_image_reward(ckpt_dir, tokenizer=str(tokenizer_dir), config=TINY)


def test_random_weights_need_the_explicit_flag_and_a_tiny_config(empty_caches, tokenizer_dir):
    tok = str(tokenizer_dir)
    with pytest.raises(MissingWeightsError):  # a config alone never means "random weights"
        get_metric("image-reward", tokenizer=tok, config=TINY)
    with pytest.raises(MetricError, match="tiny"):
        get_metric("image-reward", tokenizer=tok, allow_random_weights=True)
    with pytest.raises(MetricError, match="tiny"):
        get_metric("image-reward", tokenizer=tok, allow_random_weights=True, config=ImageRewardConfig())
    with pytest.raises(MetricError, match="unknown options"):
        get_metric("image-reward", tokenizer=tok, random=True)
    torch.manual_seed(0)
    metric = get_metric("image-reward", tokenizer=tok, allow_random_weights=True, config=TINY, batch_size=3)
    assert isinstance(metric, ImageRewardMetric) and not metric.needs_reference
    assert metric.score(torch.rand(2, 3, 32, 32), PROMPTS[:2]).per_image.shape == (2,)
