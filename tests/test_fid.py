"""FID (pytorch-fid protocol): the Fréchet distance against closed forms, and the feature pipeline with a tiny
random feature network (the real FID Inception weights are not available here)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from engine import fid, registry
from engine.errors import InputError, WeightsCorruptError


def _sqrtm_psd(a):
    w, v = np.linalg.eigh(a)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def test_frechet_distance_of_diagonal_gaussians_is_closed_form():
    rng = np.random.default_rng(0)
    d = 6
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    v1, v2 = rng.uniform(0.2, 3.0, d), rng.uniform(0.2, 3.0, d)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert fid.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-9)


def test_frechet_distance_of_general_gaussians_matches_the_symmetric_form():
    rng = np.random.default_rng(1)
    d = 8
    a, b = rng.normal(size=(d, d)), rng.normal(size=(d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    r1 = _sqrtm_psd(s1)
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(_sqrtm_psd(r1 @ s2 @ r1))
    got = fid.frechet_distance(mu1, s1, mu2, s2)
    assert got == pytest.approx(expected, rel=1e-7)
    assert fid.frechet_distance(mu2, s2, mu1, s1) == pytest.approx(got, rel=1e-7)     # symmetric
    assert fid.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_one_dimensional_case_and_shape_checks():
    # N(0, 4) vs N(3, 1): 9 + (2 - 1)^2 = 10
    assert fid.frechet_distance([0.0], [[4.0]], [3.0], [[1.0]]) == pytest.approx(10.0)
    with pytest.raises(ValueError):
        fid.frechet_distance(np.zeros(3), np.eye(3), np.zeros(2), np.eye(2))


def test_singular_covariances_stay_finite():
    # fewer samples than dimensions: rank-deficient covariances, the case the eps offset exists for
    rng = np.random.default_rng(2)
    f1, f2 = rng.normal(size=(5, 32)), rng.normal(size=(5, 32)) + 0.5
    mu1, s1 = fid.statistics(f1)
    mu2, s2 = fid.statistics(f2)
    value = fid.frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(value) and value > 0
    np.testing.assert_allclose(s1, np.cov(f1, rowvar=False))
    with pytest.raises(InputError):
        fid.statistics(f1[:1])


class TinyFeatures(nn.Module):
    """A random stand-in for the Inception: conv -> ReLU -> global average pool, 16-d features."""

    input_size = 32

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, stride=2))

    def forward(self, x):
        assert x.shape[-2:] == (32, 32), "activations() must resize to input_size first"
        return self.body(x).mean(dim=(2, 3))


def _images(n, seed, shift=0.0, size=(40, 52)):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        img = rng.random((*size, 3)) * 0.6 + 0.2 + shift
        out.append((np.clip(img, 0, 1) * 255).astype(np.uint8))
    return out


def test_activations_resize_per_image_and_do_not_depend_on_batch_size():
    net = TinyFeatures().eval()
    imgs = _images(3, 0) + _images(2, 1, size=(64, 30))       # mixed sizes share batches
    a = fid.activations(imgs, net, batch_size=1)
    b = fid.activations(imgs, net, batch_size=4)
    assert a.shape == (5, 16)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_fid_grows_with_the_distribution_shift():
    net = TinyFeatures().eval()
    base = _images(24, 10)
    same = fid.fid_of_sets(base, _images(24, 11), net)
    small = fid.fid_of_sets(base, _images(24, 12, shift=0.1), net)
    large = fid.fid_of_sets(base, _images(24, 13, shift=0.25), net)
    assert 0 <= same < small < large
    assert fid.fid_of_sets(base, base, net) == pytest.approx(0.0, abs=1e-6)


def test_fid_inception_pooling_quirks():
    from torchvision.models.inception import InceptionA

    mixed_a = fid._fid_blocks()[0]
    torch.manual_seed(0)
    stock = InceptionA(192, pool_features=32).eval()
    patched = mixed_a(192, pool_features=32).eval()
    patched.load_state_dict(stock.state_dict())
    x = torch.rand(1, 192, 9, 9)
    with torch.no_grad():
        ys, yp = stock(x), patched(x)
    # identical except where the 3x3 average pool touches the zero padding (the border of the pool branch)
    pool = slice(224, 256)
    assert torch.allclose(ys[:, :224], yp[:, :224], atol=1e-5)
    assert torch.allclose(ys[:, pool, 1:-1, 1:-1], yp[:, pool, 1:-1, 1:-1], atol=1e-5)
    assert not torch.allclose(ys[:, pool, 0], yp[:, pool, 0], atol=1e-4)


@pytest.mark.slow
def test_fid_inception_strict_load_and_pool3_features(tmp_path):
    net = fid.build_fid_inception()
    state = net.inception.state_dict()
    assert state["fc.weight"].shape == (1008, 2048)
    assert not any(k.startswith("AuxLogits") for k in state)
    torch.save(state, tmp_path / "pt_inception.pth")
    loaded = fid.load_fid_inception(tmp_path / "pt_inception.pth", device="cpu")
    with torch.inference_mode():
        feats = loaded(torch.rand(2, 3, 64, 80))
    assert feats.shape == (2, 2048)
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(WeightsCorruptError):
        fid.load_fid_inception(tmp_path / "bad.pth", device="cpu")


def test_evaluate_translation_code_path(tmp_path, monkeypatch):
    from PIL import Image

    monkeypatch.setenv("ENGINE_RANDOM_WEIGHTS", "1")
    registry.clear_cache()
    try:
        for folder, seed in (("A", 0), ("B", 1)):
            (tmp_path / folder).mkdir()
            for i, arr in enumerate(_images(4, seed, size=(24, 32))):
                Image.fromarray(arr).save(tmp_path / folder / f"{i}.png")
        (tmp_path / "A" / "broken.jpg").write_bytes(b"not a jpeg")
        res = fid.evaluate_translation("gancompression-horse2zebra", tmp_path / "A", tmp_path / "B",
                                       TinyFeatures().eval(), device="cpu")
    finally:
        registry.clear_cache()
    assert res["n_fake"] == 4 and res["n_real"] == 4
    assert res["fid"] >= 0 and res["fid_untranslated"] >= 0
    assert len(res["skipped"]) == 1 and "broken.jpg" in res["skipped"][0]


def test_cli_without_inception_weights_says_how_to_get_them(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("ENGINE_OFFLINE", "1")
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    code = fid.main(["--real", str(tmp_path), "--fake", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "pt_inception-2015-12-05" in err
    # the message advises --weights-dir: the CLI must accept it (and search that folder)
    assert "--weights-dir" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fid.main(["--weights-dir", str(empty), "--real", str(tmp_path), "--fake", str(tmp_path)]) == 2
    assert "pt_inception-2015-12-05" in capsys.readouterr().err
