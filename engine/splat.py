"""Gaussian point splatting in plain PyTorch (CPU and GPU), the "soft scatter" used to carry labels painted in
GANgealing's congealed space back onto images.

Semantics (those of GANgealing's Splat2D op, Peebles et al., CVPR 2022): a point at sub-pixel position (x, y)
(pixel centres at integer coordinates) with value v adds ``g = exp(-((px - x)^2 + (py - y)^2) / (2 sigma^2))``
to the weight of every pixel (px, py) with ``floor(x - 2 sigma) <= px <= ceil(x + 2 sigma)`` (same for y) inside
the image, and ``g * v`` to that pixel's accumulated value. Points outside [0, W) x [0, H) are ignored. The result
is the accumulated value divided by the accumulated weight (+1e-8); with ``soft_normalize`` the weight is first
clamped to at least 1, so sparse coverage fades out instead of being boosted (used for alpha / masks).

Implementation: every point is attached to its anchor pixel (floor(x), floor(y)); its K x K footprint weights
(K = 2 * (ceil(2 sigma) + 1) + 1) are scattered into a per-anchor buffer with one ``index_add_`` and the
overlapping footprints are summed onto the image with ``F.fold`` (col2im). This touches every value once,
needs no Python loop over points or offsets, and runs unchanged on CUDA. :func:`splat_reference` is the plain
first version (one scatter per footprint offset) kept as the benchmark baseline.
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


def splat(points: torch.Tensor, values: torch.Tensor, height: int, width: int, sigma: Sigma = 1.2, *,
          valid: Optional[torch.Tensor] = None, max_chunk: int = 1 << 21) -> tuple[torch.Tensor, torch.Tensor]:
    """Accumulate Gaussian splats of ``values`` at ``points``.

    points: (N, P, 2) float (x, y) pixel coordinates; values: (N, P, C); sigma: float or (N,) tensor;
    valid: optional (N, P) bool, False points are skipped.
    Returns (accumulated values (N, C, H, W), accumulated weights (N, 1, H, W)); see :func:`normalize`.
    """
    _check(points, values)
    n, p, c = values.shape
    dtype = torch.float32
    points = torch.nan_to_num(points.to(dtype), nan=-1.0, posinf=-1.0, neginf=-1.0)
    values = values.to(dtype)
    dev = points.device
    sig = _sigma(sigma, n, points)  # (N,)
    r = int(math.ceil(2.0 * float(sig.max()))) + 1
    k = 2 * r + 1
    out = torch.zeros(n, c + 1, height, width, dtype=dtype, device=dev)
    if p == 0:
        return out[:, :c], out[:, c:]
    offsets = torch.arange(-r, r + 1, dtype=dtype, device=dev)
    norm = (-0.5 / sig.pow(2)).view(n, 1, 1)
    reach = (2.0 * sig).view(n, 1)
    x, y = points[..., 0], points[..., 1]
    keep = (x >= 0) & (x < width) & (y >= 0) & (y < height)
    if valid is not None:
        keep = keep & valid.to(dev)
    ax, ay = x.floor().clamp(0, width - 1), y.floor().clamp(0, height - 1)

    def axis_weights(coord, anchor, limit):
        pos = anchor.unsqueeze(-1) + offsets  # (N, P, K)
        inside = (pos >= (coord - reach).floor().unsqueeze(-1)) & (pos <= (coord + reach).ceil().unsqueeze(-1))
        inside &= (pos >= 0) & (pos <= limit - 1)
        return torch.exp(norm * (pos - coord.unsqueeze(-1)).pow(2)) * inside

    wx = axis_weights(x, ax, width)
    wy = axis_weights(y, ay, height) * keep.unsqueeze(-1)
    anchor = (torch.arange(n, device=dev).view(n, 1) * (height * width) + ay.long() * width + ax.long()).reshape(-1)
    w = (wy.unsqueeze(-1) * wx.unsqueeze(-2)).reshape(n * p, k * k)  # (N*P, K*K)
    vals = values.reshape(n * p, c)
    chans = [None] + list(range(c))  # None = the weight channel
    step = max(1, max_chunk // (k * k))
    for ci, ch in enumerate(chans):
        buf = torch.zeros(n * height * width, k * k, dtype=dtype, device=dev)
        for s in range(0, n * p, step):
            contrib = w[s:s + step] if ch is None else w[s:s + step] * vals[s:s + step, ch:ch + 1]
            buf.index_add_(0, anchor[s:s + step], contrib)
        folded = F.fold(buf.view(n, height * width, k * k).transpose(1, 2), (height, width), k, padding=r)
        out[:, c if ch is None else ch] = folded[:, 0]
    return out[:, :c], out[:, c:]


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
