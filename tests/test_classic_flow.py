"""The weight-free matcher (engine/correspondence/classic.py): known synthetic warps are recovered with a small
end-point error, the belief propagation does what it claims, descriptors behave."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.correspondence import classic

H = W = 192          # = the matcher's working size, so errors are in working pixels
MARGIN = 24          # borders (and pixels that leave B) are not scored


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A colourful multi-scale noise texture: distinctive everywhere, like a cluttered photo."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for s in (2, 4, 8, 16):
        n = rng.random((h // s + 2, w // s + 2, 3)).astype(np.float32)
        img += cv2.resize(n, (w + 2 * s, h + 2 * s), interpolation=cv2.INTER_CUBIC)[s:s + h, s:s + w] * s
    img -= img.min()
    img /= img.max()
    return (img * 255).astype(np.uint8)


def grid(h=H, w=W):
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


def known_warp(kind: str):
    """Ground-truth correspondence f: pixel p of A matches f(p) in B."""
    gx, gy = grid()
    cx, cy = W / 2, H / 2
    if kind == "translate":
        return gx + 9.0, gy - 5.0
    if kind == "rotate":
        t = np.deg2rad(8)
        return (cx + np.cos(t) * (gx - cx) - np.sin(t) * (gy - cy),
                cy + np.sin(t) * (gx - cx) + np.cos(t) * (gy - cy))
    if kind == "scale":
        return cx + 1.15 * (gx - cx), cy + 1.15 * (gy - cy)
    if kind == "smooth":
        rng = np.random.default_rng(3)
        d = cv2.resize(rng.normal(0, 1, (4, 4, 2)).astype(np.float32), (W, H), interpolation=cv2.INTER_CUBIC) * 5
        return gx + d[..., 0], gy + d[..., 1]
    raise ValueError(kind)


def render_b(a: np.ndarray, fx: np.ndarray, fy: np.ndarray) -> np.ndarray:
    """B such that B(f(p)) = A(p): backward-warp A with the numerically inverted map."""
    gx, gy = grid()
    ix, iy = gx.copy(), gy.copy()
    for _ in range(30):
        ix -= cv2.remap(fx.astype(np.float32), ix, iy, cv2.INTER_LINEAR) - gx
        iy -= cv2.remap(fy.astype(np.float32), ix, iy, cv2.INTER_LINEAR) - gy
    return cv2.remap(a, ix, iy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


@pytest.mark.parametrize("kind", ["translate", "rotate", "scale", "smooth"])
def test_known_warp_is_recovered(kind):
    a = texture(H, W, seed=1)
    fx, fy = known_warp(kind)
    b = render_b(a, fx, fy)
    res = classic.dense_flow(a, b)
    gx, gy = grid()
    valid = ((gx >= MARGIN) & (gx < W - MARGIN) & (gy >= MARGIN) & (gy < H - MARGIN)
             & (fx >= MARGIN) & (fx < W - MARGIN) & (fy >= MARGIN) & (fy < H - MARGIN))
    assert valid.mean() > 0.3
    epe = np.hypot(res.flow[..., 0] - fx, res.flow[..., 1] - fy)[valid]
    assert epe.mean() < 2.5, f"{kind}: mean end-point error {epe.mean():.2f} px"
    assert np.percentile(epe, 90) < 4.0, f"{kind}: 90th percentile EPE {np.percentile(epe, 90):.2f} px"
    # with no occlusion inside the valid region, the forward-backward check should trust most pixels
    assert res.confidence[valid].mean() > 0.7


def test_spatial_prior_beats_nearest_neighbour_under_heavy_noise():
    """With strong sensor noise single descriptors mismatch; the smoothness prior keeps the flow right."""
    rng = np.random.default_rng(1)
    a = texture(H, W, seed=2)
    fx, fy = known_warp("smooth")
    b = render_b(a, fx, fy)
    a = np.clip(a + rng.normal(0, 50, a.shape), 0, 255).astype(np.uint8)
    b = np.clip(b + rng.normal(0, 50, b.shape), 0, 255).astype(np.uint8)
    gx, gy = grid()
    valid = (gx >= MARGIN) & (gx < W - MARGIN) & (gy >= MARGIN) & (gy < H - MARGIN)
    errs = {}
    for method in ("nn", "bp"):
        flow = classic.upsample_flow(classic.grid_match(a, b, method=method))
        errs[method] = float(np.hypot(flow[..., 0] - fx, flow[..., 1] - fy)[valid].mean())
    assert errs["bp"] < 6.0
    assert errs["nn"] > 3 * errs["bp"]


def test_self_match_is_identity():
    a = texture(150, 200, seed=4)
    gm = classic.grid_match(a, a)
    gx, gy = np.meshgrid((gm.xs_a + 0.5) / gm.scale_a - 0.5, (gm.ys_a + 0.5) / gm.scale_a - 0.5)
    err = np.hypot(gm.flow[..., 0] - gx, gm.flow[..., 1] - gy)
    assert err.max() < 2.0
    assert gm.alignment.scale == 1.0


def test_distance_transform_matches_brute_force():
    rng = np.random.default_rng(0)
    h = rng.random((5, 7, 3, 2)).astype(np.float32) * 3
    lam, trunc = 0.4, 2.5
    got = classic._message(h, lam, trunc)
    ly, lx = np.mgrid[0:5, 0:7]
    want = np.empty_like(h)
    for y in range(5):
        for x in range(7):
            pen = lam * np.minimum(np.abs(ly - y) + np.abs(lx - x), trunc)
            want[y, x] = (h + pen[..., None, None]).min(axis=(0, 1))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_bp_overrules_isolated_wrong_data():
    """Every node prefers the label 'displacement (2, 1)' except a few corrupted ones; BP repairs them."""
    rng = np.random.default_rng(0)
    ha, wa, hb, wb = 8, 9, 12, 14
    cost = rng.random((ha, wa, hb, wb)).astype(np.float32) * 0.3 + 0.7
    for y in range(ha):
        for x in range(wa):
            cost[y, x, y + 1, x + 2] = 0.0
    bad = [(2, 3), (5, 6), (6, 1)]
    for y, x in bad:
        cost[y, x, y + 1, x + 2] = 0.9
        cost[y, x, (y + 7) % hb, (x + 9) % wb] = 0.0   # a tempting outlier
    labels, _ = classic.bp_flow(cost, smooth=0.2, trunc=3.0, iterations=20)
    want = np.stack(np.meshgrid(np.arange(wa) + 2, np.arange(ha) + 1), -1)
    np.testing.assert_array_equal(labels, want)
    # without smoothness the corrupted nodes follow their data
    labels0, _ = classic.bp_flow(cost, smooth=0.0, trunc=3.0, iterations=2)
    assert any(tuple(labels0[y, x]) != tuple(want[y, x]) for y, x in bad)


def test_descriptors_are_normalised_and_robust_to_brightness():
    a = texture(96, 128, seed=5)
    d1, xs, ys = classic.dense_descriptors(a, 8)
    brighter = np.clip(a.astype(np.float32) * 0.6 + 60, 0, 255).astype(np.uint8)
    d2, _, _ = classic.dense_descriptors(brighter, 8)
    np.testing.assert_allclose(np.linalg.norm(d1, axis=-1), 1.0, atol=1e-4)
    assert d1.shape[:2] == (len(ys), len(xs))
    same = (d1 * d2).sum(-1).mean()
    other = (d1[:, :-2] * d2[:, 2:]).sum(-1).mean()   # two cells apart
    assert same > 0.95 and same > other + 0.1


def test_global_alignment_finds_scale_and_shift():
    a = texture(H, W, seed=6)
    # B: A's content shrunk to 63% and shifted, on a neutral background
    s = 0.63
    m = np.float32([[s, 0, 40], [0, s, 20]])
    b = cv2.warpAffine(a, m, (W, H), borderValue=(128, 128, 128))
    al = classic.global_alignment(a, b)[0][0]
    # B is enlarged by ``scale`` to bring its content to A's size
    assert abs(np.log(al.scale * s)) < 0.15
    # the shift maps A's working pixels to B's enlarged working pixels: q = p + t with q = scale * (s * p + c)
    assert abs(al.shift[0] - 40 * al.scale) < 12 and abs(al.shift[1] - 20 * al.scale) < 12
