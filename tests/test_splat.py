"""engine.splat against a direct per-point loop (the Splat2D semantics written out in plain Python)."""
import math

import numpy as np
import pytest
import torch

from engine.splat import gaussian_taps, normalize, splat, splat_fast, splat_reference


def loop_splat(points, values, height, width, sigma):
    """Per point, per covered pixel: weight and weighted value accumulation (numpy, float64)."""
    n, p, c = values.shape
    acc = np.zeros((n, c, height, width))
    wsum = np.zeros((n, 1, height, width))
    for b in range(n):
        s = float(sigma[b])
        r = 2 * s
        for i in range(p):
            x, y = float(points[b, i, 0]), float(points[b, i, 1])
            if not (0 <= x < width and 0 <= y < height):
                continue
            for py in range(max(0, math.floor(y - r)), min(height - 1, math.ceil(y + r)) + 1):
                for px in range(max(0, math.floor(x - r)), min(width - 1, math.ceil(x + r)) + 1):
                    g = math.exp(-((px - x) ** 2 + (py - y) ** 2) / (2 * s * s))
                    wsum[b, 0, py, px] += g
                    acc[b, :, py, px] += g * values[b, i]
    return acc, wsum


@pytest.fixture(scope="module")
def case():
    gen = torch.Generator().manual_seed(3)
    n, p, c, h, w = 2, 60, 3, 13, 17
    pts = torch.rand(n, p, 2, generator=gen) * torch.tensor([w + 6.0, h + 6.0]) - 3.0  # some points outside
    pts[0, :4] = torch.tensor([[0.0, 0.0], [w - 1e-3, h - 1e-3], [5.5, 6.5], [3.0, 4.0]])  # corners, halves, integers
    vals = torch.rand(n, p, c, generator=gen) * 2 - 1
    sigma = torch.tensor([0.8, 1.7])
    ref_acc, ref_w = loop_splat(pts.numpy(), vals.numpy(), h, w, sigma.numpy())
    return pts, vals, sigma, h, w, ref_acc, ref_w


@pytest.mark.parametrize("fn", [splat, splat_reference])
def test_matches_the_per_point_loop(case, fn):
    pts, vals, sigma, h, w, ref_acc, ref_w = case
    acc, weight = fn(pts, vals, h, w, sigma)
    assert acc.shape == (2, 3, h, w) and weight.shape == (2, 1, h, w)
    np.testing.assert_allclose(weight.numpy(), ref_w, atol=1e-5)
    np.testing.assert_allclose(acc.numpy(), ref_acc, atol=1e-5)
    assert ref_w[0].max() > 0.5  # the reference really covered pixels


def test_valid_mask_and_small_chunks(case):
    pts, vals, sigma, h, w, _, _ = case
    valid = torch.rand(pts.shape[:2], generator=torch.Generator().manual_seed(1)) > 0.5
    acc, weight = splat(pts, vals, h, w, sigma, valid=valid, max_entries=300)  # forces many point chunks
    ref_acc, ref_w = loop_splat(torch.where(valid[..., None], pts, torch.full_like(pts, -10)).numpy(), vals.numpy(),
                                h, w, sigma.numpy())
    np.testing.assert_allclose(weight.numpy(), ref_w, atol=1e-5)
    np.testing.assert_allclose(acc.numpy(), ref_acc, atol=1e-5)


def test_normalisation():
    pts = torch.tensor([[[4.0, 4.0]]])
    vals = torch.tensor([[[0.6]]])
    acc, weight = splat(pts, vals, 9, 9, 1.0)
    colour = normalize(acc, weight)
    alpha = normalize(acc, weight, soft=True)
    assert colour[0, 0, 4, 4] == pytest.approx(0.6, abs=1e-5)       # one point: its own value where it lands
    assert colour[0, 0, 2, 4] == pytest.approx(0.6, abs=1e-5)       # ... across its footprint (weight-normalised)
    assert alpha[0, 0, 2, 4] == pytest.approx(0.6 * math.exp(-2.0), abs=1e-5)  # soft: fades with the weight
    assert float(weight[0, 0, 0, 0]) == 0.0                          # beyond 2 sigma: untouched


def test_nan_points_are_ignored_and_bad_sigma_rejected():
    pts = torch.tensor([[[float("nan"), 2.0], [3.0, 3.0]]])
    acc, weight = splat(pts, torch.ones(1, 2, 1), 7, 7, 1.0)
    assert torch.isfinite(acc).all() and float(weight.sum()) > 0
    with pytest.raises(ValueError):
        splat(pts, torch.ones(1, 2, 1), 7, 7, 0.0)
    with pytest.raises(ValueError):
        splat(pts, torch.ones(1, 3, 1), 7, 7, 1.0)


def loop_fast(points, values, height, width, sigma):
    """Bilinear 4-pixel scatter, then a direct 2-D convolution with the truncated Gaussian (numpy, float64)."""
    n, p, c = values.shape
    grid = np.zeros((n, c + 1, height, width))
    for b in range(n):
        for i in range(p):
            x, y = float(points[b, i, 0]), float(points[b, i, 1])
            if not (0 <= x < width and 0 <= y < height):
                continue
            x0, y0 = math.floor(x), math.floor(y)
            for px, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
                for py, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
                    if px < width and py < height:
                        grid[b, :c, py, px] += wx * wy * values[b, i]
                        grid[b, c, py, px] += wx * wy
    r = math.ceil(2 * sigma)
    out = np.zeros_like(grid)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            g = math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))
            shifted = np.zeros_like(grid)
            ys, yd = ((slice(0, height - dy), slice(dy, height)) if dy >= 0
                      else (slice(-dy, height), slice(0, height + dy)))
            xs, xd = ((slice(0, width - dx), slice(dx, width)) if dx >= 0
                      else (slice(-dx, width), slice(0, width + dx)))
            shifted[:, :, yd, xd] = grid[:, :, ys, xs]
            out += g * shifted
    return out[:, :c], out[:, c:]


def test_fast_matches_its_loop_and_approximates_exact(case):
    pts, vals, _, h, w, _, _ = case
    acc, weight = splat_fast(pts, vals, h, w, 1.3)
    ref_acc, ref_w = loop_fast(pts.numpy(), vals.numpy(), h, w, 1.3)
    np.testing.assert_allclose(weight.numpy(), ref_w, atol=1e-5)
    np.testing.assert_allclose(acc.numpy(), ref_acc, atol=1e-5)
    assert gaussian_taps(1.3).numel() == 7
    # a dense jittered lattice (what propagation splats): normalised colours agree with the exact footprint
    gen = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.arange(40.0), torch.arange(40.0), indexing="ij")
    lattice = torch.stack([xs * 0.9 + 2, ys * 0.9 + 2], -1).reshape(1, -1, 2)
    lattice = lattice + torch.rand(1, 1600, 2, generator=gen) * 0.3
    colour = torch.sin(lattice[..., :1] / 5.0) * 0.5 + 0.5
    exact = normalize(*splat(lattice, colour, 40, 40, 1.3))
    fast = normalize(*splat(lattice, colour, 40, 40, 1.3, method="fast"))
    assert float((exact - fast)[..., 3:-3, 3:-3].abs().max()) < 0.03


@pytest.mark.gpu
def test_cuda_matches_cpu(case):
    pts, vals, sigma, h, w, ref_acc, ref_w = case
    acc, weight = splat(pts.cuda(), vals.cuda(), h, w, sigma.cuda())
    np.testing.assert_allclose(weight.cpu().numpy(), ref_w, atol=1e-4)
    np.testing.assert_allclose(acc.cpu().numpy(), ref_acc, atol=1e-4)
