"""FID with a small seeded conv feature extractor: identity, monotone in noise, batching, stats cache."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from ecad.metrics import MetricError, MissingWeightsError, get_metric
from ecad.metrics.fid import FIDMetric, TorchvisionInceptionFeatures, module_identity


def conv_features(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    ).eval()


class Counting(nn.Module):
    """Wraps an extractor and counts the images it has seen."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.seen = inner, 0

    def forward(self, x):
        self.seen += x.shape[0]
        return self.inner(x)


@pytest.fixture(scope="module")
def reference():
    return torch.rand(48, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def _noisy(x, level, seed=1):
    return (x + level * torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))).clamp(0, 1)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_noise(reference, tmp_path):
    metric = get_metric("fid", feature=conv_features(), cache_dir=tmp_path, batch_size=16)
    same = metric.score(reference, references=reference)
    assert metric.name == "fid" and not same.higher_is_better
    assert np.isnan(same.per_image).all() and same.per_image.shape == (48,)
    values = [metric.score(_noisy(reference, s), references=reference).summary for s in (0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert abs(same.summary) < 1e-3 * values[0]


def test_batched_equals_unbatched(reference, tmp_path):
    images = _noisy(reference, 0.1)
    one = FIDMetric(feature=conv_features(), batch_size=1, use_cache=False).score(images, references=reference)
    many = FIDMetric(feature=conv_features(), batch_size=20, use_cache=False).score(images, references=reference)
    assert one.summary == pytest.approx(many.summary, rel=1e-4, abs=1e-12)


def test_reference_statistics_are_cached_as_safetensors_and_reused(reference, tmp_path):
    images = _noisy(reference, 0.2)
    first_net = Counting(conv_features())
    first = FIDMetric(feature=first_net, cache_dir=tmp_path, batch_size=16)
    first_net.seen = 0  # torchmetrics probes the output size with one image
    r1 = first.score(images, references=reference)
    path = first.last_stats_path
    assert path is not None and path.is_file() and path.parent == tmp_path and path.suffix == ".safetensors"
    assert first.last_stats_cached is False and first_net.seen == 96
    assert not path.read_bytes().startswith(b"\x80")  # not a pickle

    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {"mu", "sigma", "n"}
        assert f.metadata()["format"] == "ecad-fid-stats/1"
        assert f.get_tensor("sigma").shape == (32, 32) and int(f.get_tensor("n")[0]) == 48
    mtime = path.stat().st_mtime_ns

    # a fresh metric (new process, same extractor weights) reads the file and only embeds the images
    second_net = Counting(conv_features())
    second = FIDMetric(feature=second_net, cache_dir=tmp_path, batch_size=16)
    second_net.seen = 0
    r2 = second.score(images, references=reference)
    assert second.last_stats_path == path and second.last_stats_cached is True
    assert second_net.seen == 48 and path.stat().st_mtime_ns == mtime
    assert r2.summary == pytest.approx(r1.summary, rel=1e-9)

    # another extractor (other seed) or other references get their own statistics
    third = FIDMetric(feature=conv_features(seed=1), cache_dir=tmp_path)
    third.score(images, references=reference)
    fourth = FIDMetric(feature=conv_features(), cache_dir=tmp_path)
    fourth.score(images, references=reference[:40])
    assert len({path, third.last_stats_path, fourth.last_stats_path}) == 3
    assert module_identity(conv_features()) == module_identity(conv_features()) != module_identity(conv_features(1))


def test_reference_directory_matches_reference_tensor(reference, tmp_path):
    ref_dir = tmp_path / "refs"
    ref_dir.mkdir()
    quantised = []
    for i, img in enumerate(reference[:24]):
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(arr).save(ref_dir / f"{i:03d}.png")
        quantised.append(torch.from_numpy(arr).permute(2, 0, 1).float() / 255)
    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(ref_dir / "zz_other_size.jpg")  # sizes may differ
    quantised.append(torch.zeros(3, 40, 40))
    images = _noisy(reference[24:], 0.1)
    from_dir = get_metric("fid", feature=conv_features(), reference=ref_dir, cache_dir=tmp_path / "c", batch_size=8)
    value = from_dir.score(images).summary
    uncached = FIDMetric(feature=conv_features(), use_cache=False)
    uncached._compute_stats(torch.stack(quantised[:24]))  # smoke: tensors of one size work too
    mu, sigma, n = from_dir.reference_stats(ref_dir)
    assert n == 25 and from_dir.last_stats_cached is True
    feats = torch.cat([conv_features()(q[None]) for q in quantised]).double()
    torch.testing.assert_close(mu, feats.mean(0), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(sigma, torch.cov(feats.T), atol=1e-6, rtol=1e-4)
    assert value > 0


def test_needs_references_and_two_images(reference):
    metric = FIDMetric(feature=conv_features(), use_cache=False)
    with pytest.raises(MetricError, match="needs references"):
        metric.score(reference)
    with pytest.raises(MetricError, match="at least 2"):
        metric.score(reference[:1], references=reference)


def test_missing_inception_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError) as err:
        get_metric("fid", reference=tmp_path)
    msg = str(err.value)
    assert "inception_v3_google-0cc3c7bd.pth" in msg and "104 MB" in msg and str(tmp_path) in msg


def test_torchvision_inception_extractor_from_a_local_file(tmp_path, monkeypatch):
    from torchvision.models import Inception3

    torch.manual_seed(0)
    net = Inception3(aux_logits=True, transform_input=False, init_weights=False)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / "inception_v3_google-0cc3c7bd.pth")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    metric = FIDMetric(cache_dir=tmp_path / "c")  # found in the torch hub cache
    assert metric.feature_id.startswith("torchvision-inception_v3/inception_v3_google-0cc3c7bd.pth")
    feats = metric.fid.inception(torch.rand(2, 3, 64, 48))
    assert feats.shape == (2, 2048) and not metric.fid.inception.training
    with pytest.raises(MetricError, match="not torchvision's InceptionV3"):
        (tmp_path / "bad.pth").write_bytes(b"junk")
        TorchvisionInceptionFeatures(tmp_path / "bad.pth")


def _write_refs(folder, tensors):
    folder.mkdir(exist_ok=True)
    for i, img in enumerate(tensors):
        Image.fromarray((img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)).save(folder / f"{i:03d}.png")


def test_reference_digest_is_memoised_but_follows_changes(reference, tmp_path):
    import os

    ref_dir = tmp_path / "refs"
    _write_refs(ref_dir, reference[:12])
    metric = FIDMetric(feature=conv_features(), cache_dir=tmp_path / "c", batch_size=8)
    images = _noisy(reference[12:24], 0.1)
    metric.reference = ref_dir
    metric.score(images)
    path = metric.last_stats_path
    assert metric.last_stats_cached is False
    metric.score(images)
    assert metric.last_stats_path == path and metric.last_stats_cached is True
    # a changed file (new content and mtime) is a new reference set: new digest, new statistics
    target = ref_dir / "003.png"
    _write_refs(tmp_path / "other", reference[30:31])
    target.write_bytes((tmp_path / "other" / "000.png").read_bytes())
    st = target.stat()
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    metric.score(images)
    assert metric.last_stats_path != path and metric.last_stats_cached is False
    fresh = FIDMetric(feature=conv_features(), cache_dir=tmp_path / "c2")
    assert fresh._reference_digest(ref_dir) == metric._reference_digest(ref_dir)  # memo == full hash

    # tensors: the same object is not re-hashed; an in-place edit is noticed
    ref = reference[:16].clone()
    metric.score(images, references=ref)
    tensor_path = metric.last_stats_path
    metric.score(images, references=ref)
    assert metric.last_stats_path == tensor_path and metric.last_stats_cached is True
    ref[0].mul_(0.5)
    metric.score(images, references=ref)
    assert metric.last_stats_path != tensor_path and metric.last_stats_cached is False
    assert fresh._reference_digest(ref) == metric._reference_digest(ref)
    uint8 = (ref * 255).round().to(torch.uint8)  # 8-bit references hash like their float form
    assert fresh._reference_digest(uint8) == fresh._reference_digest(uint8.float() / 255)


def test_unreadable_reference_image_names_the_file(reference, tmp_path):
    ref_dir = tmp_path / "refs"
    _write_refs(ref_dir, reference[:4])
    (ref_dir / "002.png").write_bytes(b"not a png")
    metric = FIDMetric(feature=conv_features(), reference=ref_dir, use_cache=False)
    with pytest.raises(MetricError, match=r"cannot read image .*002\.png"):
        metric.score(reference[4:8])


class Recording(nn.Module):
    """Wraps an extractor and keeps the last batch it was given."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.last = inner, None

    def forward(self, x):
        self.last = x
        return self.inner(x)


def test_clean_resize_is_clean_fids_pil_bicubic_on_float_channels(reference, tmp_path):
    """resize=clean hands the extractor what clean-fid computes: per channel, a float PIL image
    resized with bicubic to 299, clipped to 0..255."""
    images = (reference[:3] * 255).round() / 255  # 8-bit images, as ecad writes them
    want = []
    for image in (images * 255).numpy():
        channels = [
            np.asarray(Image.fromarray(c.astype(np.float32), mode="F").resize((299, 299), Image.BICUBIC)).clip(0, 255)
            for c in image
        ]
        want.append(np.stack(channels) / 255)
    feature = Recording(conv_features())
    metric = FIDMetric(feature=feature, resize="clean", use_cache=False)
    metric.score(images, references=reference[:8])
    assert feature.last.shape == (3, 3, 299, 299)
    np.testing.assert_allclose(feature.last.numpy(), np.stack(want), atol=1e-6)
    # the default leaves resizing to the extractor, and the two are cached apart
    as_given = Recording(conv_features())
    default = FIDMetric(feature=as_given, use_cache=False)
    default.score(images, references=reference[:8])
    assert as_given.last.shape[-2:] == (32, 32)
    assert metric.feature_id == f"{default.feature_id}/resize=clean"


def test_an_unknown_resize_names_the_option_and_its_values():
    with pytest.raises(MetricError, match=r"unknown resize 'lanczos'; use --metric-option resize=torchmetrics"):
        FIDMetric(feature=conv_features(), resize="lanczos")
