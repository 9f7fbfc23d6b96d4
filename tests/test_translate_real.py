"""The real GAN Compression horse→zebra generator on horse2zebra/testA: horses become zebras.

Measurable criteria (thresholds set with a margin from the values measured on these 12 images):

1. the colour statistics move toward testB: the distance between the set's CIELAB moments (per-channel mean and
   standard deviation over all pixels) and testB's drops by at least 30 % (measured: 11.4 -> 6.2);
2. stripe / high-frequency energy inside the images rises: the share of spectral power above 0.06 cycles/pixel
   grows by at least 10 % on average over the set (measured: +23 %) and rises for most images;
3. content is preserved: for every image the greyscale structure of output and input agrees (SSIM after a
   σ = 2 blur ≥ 0.75, measured ≥ 0.82; correlation of smoothed Sobel edge maps ≥ 0.7, measured ≥ 0.81) while
   the same measures between a horse and an unrelated zebra photo stay far below (control).
"""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter, sobel

from engine import registry, spectrum
from engine.pipelines import translate as T

MODEL = "gancompression-horse2zebra"
N_IMAGES = 12


def _gray(rgb):
    return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) / 255.0


def _edges(gray):
    g = gaussian_filter(gray, 1.5)
    return np.hypot(sobel(g, 0), sobel(g, 1))


def edge_correlation(a, b):
    return float(np.corrcoef(_edges(_gray(a)).ravel(), _edges(_gray(b)).ravel())[0, 1])


def blurred_ssim(a, b):
    from skimage.metrics import structural_similarity

    return float(structural_similarity(gaussian_filter(_gray(a), 2), gaussian_filter(_gray(b), 2), data_range=1.0))


def lab_moments(images):
    from skimage.color import rgb2lab

    lab = np.concatenate([rgb2lab(img).reshape(-1, 3) for img in images])
    return lab.mean(axis=0), lab.std(axis=0)


def moment_distance(images, reference):
    (m1, s1), (m2, s2) = lab_moments(images), reference
    return float(np.linalg.norm(m1 - m2) + np.linalg.norm(s1 - s2))


@pytest.fixture(scope="module")
def translated(shared_data, shared_weights):
    folder = shared_data / "horse2zebra"
    if not (folder / "testA").is_dir() or not (shared_weights / "gan-compression-horse2zebra").is_dir():
        pytest.skip("horse2zebra data or GAN Compression weights not present")
    mp = pytest.MonkeyPatch()
    mp.setenv("WEIGHTS_DIR", str(shared_weights))
    mp.delenv("ENGINE_RANDOM_WEIGHTS", raising=False)
    registry.clear_cache()
    try:
        files = T.list_images(folder / "testA")[::10][:N_IMAGES]
        res = T.translate_many(files, MODEL, max_side=None, device="cpu")
    finally:
        registry.clear_cache()
        mp.undo()
    assert res.ok == len(files) and not res.errors
    zebras = [np.asarray(Image.open(p).convert("RGB")) for p in T.list_images(folder / "testB")]
    return res.inputs, res.outputs, zebras


@pytest.mark.slow
def test_colour_statistics_move_toward_testB(translated):
    horses, outputs, zebras = translated
    reference = lab_moments(zebras)
    before, after = moment_distance(horses, reference), moment_distance(outputs, reference)
    assert after < 0.7 * before, (before, after)


@pytest.mark.slow
def test_stripe_energy_rises(translated):
    horses, outputs, _ = translated
    e_in = np.array([spectrum.band_energy(h, 0.06, 1.0) for h in horses])
    e_out = np.array([spectrum.band_energy(o, 0.06, 1.0) for o in outputs])
    assert e_out.mean() > 1.1 * e_in.mean(), (e_in.mean(), e_out.mean())
    assert (e_out > e_in).sum() >= (2 * len(e_in)) // 3


@pytest.mark.slow
def test_content_is_preserved(translated):
    horses, outputs, zebras = translated
    for h, o in zip(horses, outputs):
        assert o.shape == h.shape
        assert blurred_ssim(h, o) >= 0.75
        assert edge_correlation(h, o) >= 0.7
    # control: the measures do separate unrelated pictures
    control = [edge_correlation(h, z) for h, z in zip(horses, zebras)]
    assert max(control) < 0.4
    assert max(blurred_ssim(h, z) for h, z in zip(horses[:4], zebras[:4])) < 0.6


@pytest.mark.slow
def test_odd_sized_crop_of_a_real_photo(shared_data, shared_weights, monkeypatch):
    path = shared_data / "horse2zebra" / "testA" / "n02381460_1000.jpg"
    if not path.is_file() or not (shared_weights / "gan-compression-horse2zebra").is_dir():
        pytest.skip("horse2zebra data or GAN Compression weights not present")
    monkeypatch.setenv("WEIGHTS_DIR", str(shared_weights))
    monkeypatch.delenv("ENGINE_RANDOM_WEIGHTS", raising=False)
    registry.clear_cache()
    try:
        crop = np.asarray(Image.open(path).convert("RGB"))[13:214, 5:162]   # 201 x 157
        out = T.translate(crop, MODEL, max_side=None)
    finally:
        registry.clear_cache()
    assert out.shape == crop.shape
    assert edge_correlation(crop, out) >= 0.7
