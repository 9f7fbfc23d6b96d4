"""Azimuthally averaged power spectra (Durall et al. 2020) used by the translation tab's analysis panel."""
from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from engine import spectrum
from engine.errors import InputError


def _grating(h, w, fy, fx):
    y, x = np.mgrid[0:h, 0:w]
    return 0.5 + 0.4 * np.cos(2 * np.pi * (fy * y + fx * x))


@pytest.mark.parametrize("h,w,fy,fx", [(128, 128, 0.0, 0.125), (64, 160, 0.25, 0.0), (96, 96, 0.1, 0.1)])
def test_a_grating_peaks_at_its_radial_frequency(h, w, fy, fx):
    spec = spectrum.azimuthal_average(_grating(h, w, fy, fx), n_bins=32)
    peak = spec.frequency[np.argmax(spec.power)]
    assert abs(peak - np.hypot(fy, fx)) <= 0.5 / 32 + 1e-9


def test_white_noise_is_flat_and_its_high_band_share_is_the_area_share():
    rng = np.random.default_rng(0)
    noise = rng.random((256, 256))
    for window in (False, True):
        db = spectrum.azimuthal_average(noise, n_bins=16, window=window).power_db[2:]  # first rings: few samples
        assert db.max() - db.min() < 1.5                   # flat within 1.5 dB
    share = spectrum.high_frequency_ratio(noise, cutoff=0.25)
    assert share == pytest.approx(1 - np.pi * 0.25 ** 2, abs=0.02)


def test_blur_removes_high_frequencies_and_a_checkerboard_adds_them():
    rng = np.random.default_rng(1)
    img = gaussian_filter(rng.random((128, 192)), 1.0)
    blurred = gaussian_filter(img, 2.0)
    assert spectrum.high_frequency_ratio(blurred) < 0.2 * spectrum.high_frequency_ratio(img)
    # a period-2 checkerboard, the typical transposed-convolution artefact, lands in the last (Nyquist) bins
    y, x = np.mgrid[0:128, 0:192]
    artefact = img + 0.02 * ((x + y) % 2)
    a, b = spectrum.azimuthal_average(img, n_bins=32), spectrum.azimuthal_average(artefact, n_bins=32)
    assert b.frequency[-1] > 0.7                           # the corner rings are included
    assert b.power_db[-1] - a.power_db[-1] > 10
    assert abs(b.power_db[2] - a.power_db[2]) < 0.5
    inner = spectrum.azimuthal_average(artefact, n_bins=32, corners=False)
    assert inner.frequency.max() <= 0.5 and len(inner.frequency) == 32


def test_rgb_uint8_and_pil_inputs_agree():
    from PIL import Image

    rng = np.random.default_rng(2)
    rgb = (rng.random((40, 50, 3)) * 255).astype(np.uint8)
    a = spectrum.azimuthal_average(rgb)
    b = spectrum.azimuthal_average(Image.fromarray(rgb))
    np.testing.assert_allclose(a.power, b.power)
    assert a.frequency[19] < 0.5 < a.frequency[20] and a.frequency.max() <= 0.5 * np.sqrt(2) + 0.5 / 20


def test_spectrum_table_for_the_plot():
    rng = np.random.default_rng(3)
    a = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    b = gaussian_filter(a.astype(float), (1.5, 1.5, 0)).astype(np.uint8)
    table = spectrum.spectrum_table({"input": a, "output": b})
    assert list(table.columns) == ["frequency", "power_db", "image"]
    assert set(table["image"]) == {"input", "output"}
    first = table.groupby("image")["power_db"].first()
    assert np.allclose(first.values, 0.0)                  # relative: each curve starts at 0 dB
    last = table.groupby("image")["power_db"].last()
    assert last["output"] < last["input"] - 5              # the blurred one falls off faster


@pytest.mark.parametrize("bad", [np.zeros((2, 50)), np.zeros((10, 10, 2)), np.zeros((3, 3, 3, 3))])
def test_bad_inputs_are_rejected(bad):
    with pytest.raises(InputError):
        spectrum.azimuthal_average(bad)
