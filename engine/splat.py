"""Gaussian point splatting in plain PyTorch (CPU and GPU), the "soft scatter" used to carry labels painted in
GANgealing's congealed space back onto images.

Semantics (those of GANgealing's Splat2D op, Peebles et al., CVPR 2022): a point at sub-pixel position (x, y)
(pixel centres at integer coordinates) with value v adds ``g = exp(-((px - x)^2 + (py - y)^2) / (2 sigma^2))``
to the weight of every pixel (px, py) with ``floor(x - 2 sigma) <= px <= ceil(x + 2 sigma)`` (same for y) inside
the image, and ``g * v`` to that pixel's accumulated value. Points outside [0, W) x [0, H) are ignored. The result
is the accumulated value divided by the accumulated weight (+1e-8); with ``soft_normalize`` the weight is first
clamped to at least 1, so sparse coverage fades out instead of being boosted (used for alpha / masks).

Implementation (:func:`splat`): the footprint of every point is a fixed K x K block of offsets from its anchor
pixel (floor(x), floor(y)), K = 2 ceil(2 sigma) + 2; separable per-axis Gaussian weights (zero outside the window
or the image) are multiplied into K^2 weights per point and added with one flat 1-D ``index_add_`` per channel
(on CPU a 1-D index_add is several times faster than a 2-D one or than ``F.fold`` over a per-anchor buffer). No
Python loop over points or offsets; identical code on CUDA. :func:`splat_reference` is the plain first version
(one scatter per footprint offset and channel), kept as the benchmark baseline. :func:`splat_fast` is an
approximation for live video: a bilinear 4-pixel splat followed by a separable Gaussian blur.
"""
from __future__ import annotations

import math
from typing import Optional, Union

import torch
import torch.nn.functional as F

Sigma = Union[float, torch.Tensor]


def _sigma(sigma: Sigma, n: int, like: torch.Tensor) -> torch.Tensor:
    s = torch.as_tensor(sigma, dtype=like.dtype, device=like.device).reshape(-1)
    if s.numel() == 1:
        s = s.expand(n)
    if s.numel() != n:
        raise ValueError(f"sigma must be a float or have one value per image ({n}); got {s.numel()}")
    if bool((s <= 0).any()):
        raise ValueError("sigma must be > 0")
    return s


def _check(points: torch.Tensor, values: torch.Tensor) -> None:
    if points.dim() != 3 or points.shape[-1] != 2:
        raise ValueError(f"points must be (N, P, 2); got {tuple(points.shape)}")
    if values.dim() != 3 or values.shape[:2] != points.shape[:2]:
        raise ValueError(f"values must be (N, P, C) matching points; got {tuple(values.shape)}")


def _axis_weights(coord, anchor, offsets, reach, norm, limit):
    """Per point and footprint offset along one axis: Gaussian weight (0 outside the window / image), position."""
    pos = anchor.unsqueeze(-1) + offsets  # (N, P, K)
    inside = (pos >= (coord - reach).floor().unsqueeze(-1)) & (pos <= (coord + reach).ceil().unsqueeze(-1))
    inside &= (pos >= 0) & (pos <= limit - 1)
    weight = torch.exp(norm * (pos - coord.unsqueeze(-1)).pow(2)) * inside
    return weight, pos.clamp(0, limit - 1).long()


def splat(points: torch.Tensor, values: torch.Tensor, height: int, width: int, sigma: Sigma = 1.2, *,
          valid: Optional[torch.Tensor] = None, method: str = "exact",
          max_entries: int = 1 << 21) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate Gaussian splats of ``values`` at ``points``.

    points: (N, P, 2) float (x, y) pixel coordinates; values: (N, P, C); sigma: float or (N,) tensor;
    valid: optional (N, P) bool, False points are skipped.
    method: "exact" (the Splat2D footprint) or "fast" (:func:`splat_fast`: bilinear splat + Gaussian blur).
    Returns (accumulated values (N, C, H, W), accumulated weights (N, 1, H, W)); see :func:`normalize`.
    """
    _check(points, values)
    if method == "fast":
        return splat_fast(points, values, height, width, sigma, valid=valid)
    if method != "exact":
        raise ValueError(f"method must be 'exact' or 'fast', not {method!r}")
    n, p, c = values.shape
    dtype = torch.float32
    points = torch.nan_to_num(points.to(dtype), nan=-1.0, posinf=-1.0, neginf=-1.0)
    values = values.to(dtype)
    dev = points.device
    sig = _sigma(sigma, n, points)  # (N,)
    out = torch.zeros(c + 1, n * height * width, dtype=dtype, device=dev)
    if p > 0:
        # offsets from the anchor floor(x): floor(fx - 2s) >= -ceil(2s), ceil(fx + 2s) <= ceil(2s) + 1 for fx in [0, 1)
        r = math.ceil(2.0 * float(sig.max()))
        offsets = torch.arange(-r, r + 2, dtype=dtype, device=dev)
        k = offsets.numel()
        norm = (-0.5 / sig.pow(2)).view(n, 1, 1)
        reach = (2.0 * sig).view(n, 1)
        base = (torch.arange(n, device=dev) * (height * width)).view(n, 1, 1)
        step = max(1, max_entries // (k * k))
        for s in range(0, p, step):
            pts, vals = points[:, s:s + step], values[:, s:s + step]
            x, y = pts[..., 0], pts[..., 1]
            keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
            if valid is not None:
                keep &= valid[:, s:s + step].to(dev)
            wx, px = _axis_weights(x, x.floor().clamp(0, width - 1), offsets, reach, norm, width)
            wy, py = _axis_weights(y, y.floor().clamp(0, height - 1), offsets, reach, norm, height)
            wy = wy * keep.unsqueeze(-1)
            m = pts.shape[1]
            w = (wy.unsqueeze(-1) * wx.unsqueeze(-2)).reshape(n, m, k * k)
            pix = ((py.unsqueeze(-1) * width + px.unsqueeze(-2)).reshape(n, m, k * k) + base).reshape(-1)
            out[c].index_add_(0, pix, w.reshape(-1))
            for ch in range(c):  # 1-D index_add per channel: much faster on CPU than one 2-D index_add
                out[ch].index_add_(0, pix, (w * vals[..., ch:ch + 1]).reshape(-1))
    out = out.view(c + 1, n, height, width).transpose(0, 1)
    return out[:, :c], out[:, c:]


def gaussian_taps(sigma: float, device=None) -> torch.Tensor:
    """1-D Gaussian exp(-d^2 / (2 sigma^2)) for integer d in [-ceil(2 sigma), ceil(2 sigma)] (not normalised)."""
    r = math.ceil(2.0 * sigma)
    d = torch.arange(-r, r + 1, dtype=torch.float32, device=device)
    return torch.exp(-d.pow(2) / (2.0 * sigma * sigma))


def splat_fast(points: torch.Tensor, values: torch.Tensor, height: int, width: int, sigma: Sigma = 1.2, *,
               valid: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Approximate splat: each point is split bilinearly over its 4 neighbouring pixels (4 scatters instead of
    ~(4 sigma + 2)^2), then values and weights are blurred with the separable Gaussian of ``sigma`` truncated at
    2 sigma. The footprint is the Gaussian convolved with a one-pixel tent: centred on the point like the exact one,
    slightly wider (variance sigma^2 + 1/6 per axis). One sigma per call (the largest when given per image)."""
    _check(points, values)
    n, p, c = values.shape
    dev = points.device
    points = torch.nan_to_num(points.float(), nan=-10.0, posinf=-10.0, neginf=-10.0)
    values = values.float()
    sig = float(_sigma(sigma, n, points).max())
    x, y = points[..., 0], points[..., 1]
    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    if valid is not None:
        keep &= valid.to(dev)
    x0, y0 = x.floor(), y.floor()
    fx, fy = x - x0, y - y0
    base = (torch.arange(n, device=dev) * (height * width)).view(n, 1)
    out = torch.zeros(c + 1, n * height * width, device=dev)
    vals = torch.cat([values, torch.ones_like(values[..., :1])], -1)
    for dy, wy in ((0, 1 - fy), (1, fy)):
        for dx, wx in ((0, 1 - fx), (1, fx)):
            px, py = x0 + dx, y0 + dy
            ok = keep & (px <= width - 1) & (py <= height - 1)
            w = wx * wy * ok
            pix = (base + py.clamp(0, height - 1).long() * width + px.clamp(0, width - 1).long()).reshape(-1)
            for ch in range(c + 1):
                out[ch].index_add_(0, pix, (w * vals[..., ch]).reshape(-1))
    img = separable_blur(out.view(c + 1, n, height, width), gaussian_taps(sig).tolist()).transpose(0, 1)
    return img[:, :c], img[:, c:]


def separable_blur(img: torch.Tensor, taps: list[float]) -> torch.Tensor:
    """Zero-padded separable filter over the last two dims as in-place shifted adds (a one-channel ``conv2d``
    is slow on CPU, and fewer temporaries mean fewer fresh page-faulting allocations)."""
    r = (len(taps) - 1) // 2
    h, w = img.shape[-2:]
    padded = F.pad(img, (r, r, r, r))
    rows = padded[..., :, 0:w] * taps[0]
    for k in range(1, len(taps)):
        rows.add_(padded[..., :, k:k + w], alpha=taps[k])
    out = rows[..., 0:h, :] * taps[0]
    for k in range(1, len(taps)):
        out.add_(rows[..., k:k + h, :], alpha=taps[k])
    return out


def normalize(acc: torch.Tensor, weight: torch.Tensor, soft: bool = False) -> torch.Tensor:
    """acc / (weight + 1e-8); ``soft`` clamps the weight to >= 1 first (alpha channels)."""
    if soft:
        weight = weight.clamp(min=1.0)
    return acc / (weight + 1e-8)


def splat_reference(points: torch.Tensor, values: torch.Tensor, height: int, width: int, sigma: Sigma = 1.2, *,
                    valid: Optional[torch.Tensor] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The straightforward first version (benchmark baseline): one ``index_put_`` per footprint offset and
    channel, no anchor buffer. Same results as :func:`splat`."""
    _check(points, values)
    n, p, c = values.shape
    points = torch.nan_to_num(points.float(), nan=-1.0, posinf=-1.0, neginf=-1.0)
    values = values.float()
    dev = points.device
    sig = _sigma(sigma, n, points).view(n, 1)
    x, y = points[..., 0], points[..., 1]
    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    if valid is not None:
        keep = keep & valid.to(dev)
    x0, x1 = (x - 2 * sig).floor().clamp(min=0), (x + 2 * sig).ceil().clamp(max=width - 1)
    y0, y1 = (y - 2 * sig).floor().clamp(min=0), (y + 2 * sig).ceil().clamp(max=height - 1)
    span = int(math.floor(4 * float(sig.max()))) + 3
    acc = torch.zeros(n, c, height * width, device=dev)
    wsum = torch.zeros(n, height * width, device=dev)
    batch = torch.arange(n, device=dev).view(n, 1).expand(n, p)
    for dy in range(span):
        py = y0 + dy
        for dx in range(span):
            px = x0 + dx
            m = keep & (py <= y1) & (px <= x1)
            g = torch.exp(-((px - x) ** 2 + (py - y) ** 2) / (2 * sig ** 2)) * m
            flat = (py.clamp(max=height - 1) * width + px.clamp(max=width - 1)).long()
            wsum.index_put_((batch, flat), g, accumulate=True)
            for ch in range(c):
                acc[:, ch].index_put_((batch, flat), g * values[..., ch], accumulate=True)
    return acc.view(n, c, height, width), wsum.view(n, 1, height, width)
