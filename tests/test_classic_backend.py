"""The classic backend through the public interface (engine.correspondence.get_backend("classic"))."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.correspondence import DenseMatch, get_backend, list_backends, visualise
from engine.errors import InputError

from test_classic_flow import known_warp, render_b, texture  # noqa: E402  (tests/ is on sys.path under pytest)

H = W = 192


@pytest.fixture(scope="module")
def backend():
    return get_backend("classic")


@pytest.fixture(scope="module")
def pair():
    a = texture(H, W, seed=11)
    fx, fy = known_warp("translate")        # A(p) = B(p + (9, -5))
    return a, render_b(a, fx, fy)


def test_registered_first_and_usable():
    names = [n for n, _ in list_backends()]
    assert names[0] == "classic"
    be = get_backend("classic")
    ok, message = be.status()
    assert ok and "weights" in message
    assert be.needs_reference and be.canvas() is None


def test_match_returns_a_dense_flow_into_b(backend, pair):
    a, b = pair
    m = backend.match(a, b)
    assert isinstance(m, DenseMatch)
    assert m.flow.shape == (H, W, 2) and m.flow.dtype == np.float32
    assert m.confidence.shape == (H, W) and 0 <= m.confidence.min() and m.confidence.max() <= 1
    c = slice(40, 150)
    d = m.flow[c, c] - np.stack(np.meshgrid(np.arange(W), np.arange(H)), -1)[c, c]
    np.testing.assert_allclose(np.median(d.reshape(-1, 2), 0), [9.0, -5.0], atol=2.0)


def test_match_accepts_other_sizes_and_rgba(backend, pair):
    a, b = pair
    a_big = cv2.resize(a, (W * 2, H * 2))
    rgba = np.dstack([b, np.full((H, W), 255, np.uint8)])
    m = backend.match(a_big, rgba)
    assert m.flow.shape == (H * 2, W * 2, 2)
    # a pixel of A (at twice the size) maps to about half its position + the shift in B
    np.testing.assert_allclose(m.flow[200, 180], [90 + 9, 100 - 5], atol=4)


def test_point_heatmap_peaks_at_the_match(backend, pair):
    a, b = pair
    heat = backend.point_heatmap(a, b, 100, 90)
    assert heat.shape == (H, W)
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    assert abs(x - 109) <= 4 and abs(y - 85) <= 4
    sim = backend.similarity(a, b, 100, 90)
    assert sim.min() >= 0 and sim.max() <= 1
    with pytest.raises(InputError):
        backend.point_heatmap(a, b, W + 5, 10)


def test_propagate_moves_the_edit_with_the_content(backend, pair):
    a, b = pair
    edit = np.zeros((H, W, 4), np.uint8)
    cv2.circle(edit, (90, 100), 18, (255, 0, 0, 255), -1)
    out_b, out_a = backend.propagate(edit, [b, a], reference=a, opacity=1.0)
    red = lambda img: (img[..., 0].astype(int) - img[..., 1].astype(int) > 120) & (img[..., 2] < 100)  # noqa: E731
    want_b = np.zeros((H, W), np.uint8)
    cv2.circle(want_b, (99, 95), 18, 1, -1)
    assert visualise.mask_iou(red(out_b), want_b > 0) > 0.75
    assert visualise.mask_iou(red(out_a), edit[..., 3] > 0) > 0.85   # onto the reference itself: in place
    # outside the edit the target is untouched
    far = np.ones((H, W), bool)
    far[50:150, 50:150] = False
    assert np.abs(out_b[far].astype(int) - b[far].astype(int)).max() <= 1


def test_opacity_mixes(backend, pair):
    a, _ = pair
    edit = np.zeros((H, W, 4), np.uint8)
    edit[80:120, 80:120] = (255, 0, 0, 255)
    (half,) = backend.propagate(edit, [a], reference=a, opacity=0.5)
    inner = (slice(90, 110), slice(90, 110))
    want = (a[inner].astype(float) + np.array([255.0, 0, 0])) / 2
    assert np.abs(half[inner].astype(float) - want).mean() < 12


def test_bad_inputs_are_input_errors(backend, pair):
    a, b = pair
    with pytest.raises(InputError):
        backend.match(None, b)
    with pytest.raises(InputError):
        backend.match(a, np.zeros((5, 300, 3), np.uint8))
    with pytest.raises(InputError):
        backend.match(a, np.zeros((10, 10, 10), np.uint8))
    edit = np.zeros((H, W, 4), np.uint8)
    with pytest.raises(InputError):
        backend.propagate(edit, [b], reference=a)            # nothing painted
    edit[10:20, 10:20] = 255
    with pytest.raises(InputError):
        backend.propagate(edit, [b], reference=None)
    with pytest.raises(InputError):
        backend.propagate(edit, [], reference=a)


def test_progress_is_reported(backend, pair):
    a, b = pair
    seen = []
    edit = np.zeros((H, W, 4), np.uint8)
    edit[50:60, 50:60] = 255
    backend.propagate(edit, [b, b], reference=a, progress=lambda f, d: seen.append(f))
    assert seen and seen[-1] == pytest.approx(1.0) and all(0 <= f <= 1 for f in seen)
    assert seen == sorted(seen)
