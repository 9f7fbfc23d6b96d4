"""StyleGAN2 building blocks used by discriminator-like encoders, in plain PyTorch (no custom CUDA ops).

These layers follow "Analyzing and Improving the Image Quality of StyleGAN" (Karras et al., CVPR 2020):
equalised learning-rate convolutions and linear layers (weights stored with unit variance and scaled by
1/sqrt(fan_in) at run time), a leaky ReLU with a per-channel bias and a gain of sqrt(2), and an FIR low-pass
filter ([1, 3, 3, 1] binomial) applied before strided convolutions.

Parameter and buffer names mirror the widely used "rosinality" StyleGAN2 port (which GANgealing builds on), so
their checkpoints load with ``strict=True``:

* ``EqualConv2d``: ``weight`` (out, in, k, k), optional ``bias`` (out,)
* ``EqualLinear``: ``weight`` (out, in), optional ``bias`` (out,)
* ``FusedLeakyReLU``: ``bias`` (channels,)
* ``Blur``: buffer ``kernel`` (k, k), normalised to sum 1
* ``ConvLayer`` is an ``nn.Sequential``: [Blur] + EqualConv2d + [FusedLeakyReLU | ScaledLeakyReLU], so keys are
  ``<i>.kernel`` / ``<i>.weight`` / ``<i>.bias`` by position.
* ``ResBlock``: ``conv1``, ``conv2`` (optionally down-sampling), ``skip`` (1x1, no bias, no activation);
  output = (conv2(conv1(x)) + skip(x)) / sqrt(2).

The FIR filtering ("upfirdn2d" with up = down = 1) is a zero pad followed by a depthwise ``conv2d`` with the
flipped kernel, which is exactly what the reference CUDA kernel computes.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def make_blur_kernel(taps: Sequence[float]) -> torch.Tensor:
    """Separable FIR taps -> normalised 2-D kernel (outer product divided by its sum)."""
    k = torch.tensor(list(taps), dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


def fir_filter(x: torch.Tensor, kernel: torch.Tensor, pad: tuple[int, int]) -> torch.Tensor:
    """upfirdn2d with up = down = 1: zero-pad (pad0 before, pad1 after, both axes), then filter depthwise.

    x: (N, C, H, W); kernel: (kh, kw). Output: (N, C, H + pad0 + pad1 - kh + 1, W + pad0 + pad1 - kw + 1).
    """
    n, c, h, w = x.shape
    p0, p1 = pad
    x = F.pad(x, (p0, p1, p0, p1))
    weight = torch.flip(kernel, (0, 1)).to(dtype=x.dtype, device=x.device)
    weight = weight[None, None].expand(c, 1, *kernel.shape)
    return F.conv2d(x, weight, groups=c)


def fused_leaky_relu(x: torch.Tensor, bias: torch.Tensor, negative_slope: float = 0.2,
                     scale: float = SQRT2) -> torch.Tensor:
    """leaky_relu(x + bias) * scale, with ``bias`` broadcast over channel dim 1."""
    shape = [1, bias.shape[0]] + [1] * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape).to(x.dtype), negative_slope) * scale


class FusedLeakyReLU(nn.Module):
    def __init__(self, channels: int, negative_slope: float = 0.2, scale: float = SQRT2):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))
        self.negative_slope = negative_slope
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fused_leaky_relu(x, self.bias, self.negative_slope, self.scale)


class ScaledLeakyReLU(nn.Module):
    def __init__(self, negative_slope: float = 0.2):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope) * SQRT2


class Blur(nn.Module):
    """FIR low-pass filter with zero padding ``pad`` = (before, after)."""

    def __init__(self, taps: Sequence[float], pad: tuple[int, int]):
        super().__init__()
        self.register_buffer("kernel", make_blur_kernel(taps))
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fir_filter(x, self.kernel, self.pad)


class EqualConv2d(nn.Module):
    """Conv2d whose weight is scaled by 1/sqrt(in * k * k) at run time (equalised learning rate)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 bias: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.scale = 1.0 / math.sqrt(in_channels * kernel_size ** 2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        o, i, k, _ = self.weight.shape
        return f"{i}, {o}, kernel_size={k}, stride={self.stride}, padding={self.padding}, bias={self.bias is not None}"


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; ``activation='fused_lrelu'`` applies the biased leaky ReLU."""

    def __init__(self, in_dim: int, out_dim: int, bias: bool = True, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activation: str | None = None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init))) if bias else None
        self.activation = activation
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.scale
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            out = F.linear(x, weight)
            return fused_leaky_relu(out, bias) if bias is not None else F.leaky_relu(out, 0.2) * SQRT2
        return F.linear(x, weight, bias)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[1]}, {self.weight.shape[0]}, activation={self.activation}"


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [activation]; with ``downsample`` the conv has stride 2 after a [1,3,3,1] blur."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, downsample: bool = False,
                 blur_taps: Sequence[float] = (1, 3, 3, 1), bias: bool = True, activate: bool = True):
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (len(blur_taps) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_taps, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        layers.append(EqualConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                                  bias=bias and not activate))
        if activate:
            layers.append(FusedLeakyReLU(out_channels) if bias else ScaledLeakyReLU(0.2))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Residual block of StyleGAN2's discriminator (halves the resolution when ``downsample``)."""

    def __init__(self, in_channels: int, out_channels: int, blur_taps: Sequence[float] = (1, 3, 3, 1),
                 downsample: bool = True):
        super().__init__()
        self.conv1 = ConvLayer(in_channels, in_channels, 3, blur_taps=blur_taps)
        self.conv2 = ConvLayer(in_channels, out_channels, 3, downsample=downsample, blur_taps=blur_taps)
        self.skip = ConvLayer(in_channels, out_channels, 1, downsample=downsample, blur_taps=blur_taps,
                              activate=False, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.conv2(self.conv1(x)) + self.skip(x)) / SQRT2
