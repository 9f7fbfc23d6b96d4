"""GAN Compression's compressed mobile ResNet generator ("sub_mobile_resnet_9blocks").

Paper: M. Li, J. Lin, Y. Ding, Z. Liu, J.-Y. Zhu, S. Han. "GAN Compression: Efficient Architectures for Interactive
Conditional GANs." CVPR 2020.

The CycleGAN ResNet-9 generator with every residual conv replaced by a depthwise-separable conv and every width
chosen by the once-for-all search. The widths follow the official ``SubMobileResnetGenerator``
(models/modules/resnet_architecture/sub_mobile_resnet_generator.py). A channel configuration string lists eight
widths, e.g. the released horse→zebra model's ``16_16_32_16_32_32_16_16`` (356,867 parameters):

    c[0]          first 7×7 conv                    (16)
    2·c[1]        first stride-2 conv               (32)
    4·c[2]        second stride-2 conv = the trunk  (128)
    4·c[3+i//3]   hidden width of residual block i (blocks 0-2, 3-5, 6-8: 64, 128, 128)
    2·c[6]        first transposed conv             (32)
    c[7]          second transposed conv            (16)

Module indices follow the CycleGAN layout (``model.1``, ``model.4``, ``model.7``, ``model.10``..``model.18``,
``model.19``, ``model.22``, ``model.26``), so the official ``latest_net_G.pth`` loads with ``strict=True``
(shared/specs/checkpoints.md, section 3). Instance norm without affine parameters everywhere.

Shapes and ranges: input (N, 3, H, W) RGB in [-1, 1] (clamped to that range, as the official forward does);
output (N, 3, H, W) in [-1, 1]. H and W must be multiples of 4.
"""
from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn as nn

HORSE2ZEBRA_CONFIG = "16_16_32_16_32_32_16_16"


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class SeparableConv2d(nn.Module):
    """``conv`` = depthwise k×k conv (+bias) · instance norm · pointwise 1×1 conv (+bias)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3):
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv2d(in_channels, in_channels, kernel_size, groups=in_channels, bias=True),
            _norm(in_channels),
            nn.Conv2d(in_channels, out_channels, 1, bias=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class MobileResnetBlock(nn.Module):
    """``x + conv_block(x)``; conv_block = ReflPad1 · SepConv(dim→hidden) · IN · ReLU · Dropout(0) · ReflPad1 ·
    SepConv(hidden→dim) · IN (indices 0..7; separable convs at 1 and 6)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), SeparableConv2d(dim, hidden), _norm(hidden), nn.ReLU(True), nn.Dropout(dropout),
            nn.ReflectionPad2d(1), SeparableConv2d(hidden, dim), _norm(dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


def parse_config(config: str | Sequence[int]) -> list[int]:
    """``"16_16_32_16_32_32_16_16"`` -> [16, 16, 32, 16, 32, 32, 16, 16] (eight positive ints)."""
    widths = [int(c) for c in config.split("_")] if isinstance(config, str) else [int(c) for c in config]
    if len(widths) != 8 or min(widths) < 1:
        raise ValueError(f"a mobile ResNet config needs eight positive widths; got {config!r}")
    return widths


class MobileResnetGenerator(nn.Module):
    """Compressed CycleGAN generator (GAN Compression's sub-mobile ResNet with 9 blocks)."""

    size_multiple = 4

    def __init__(self, config: str | Sequence[int] = HORSE2ZEBRA_CONFIG, input_nc: int = 3, output_nc: int = 3,
                 n_blocks: int = 9):
        super().__init__()
        c = parse_config(config)
        self.config = "_".join(map(str, c))
        self.n_blocks = n_blocks
        if n_blocks < 0 or 3 + (n_blocks - 1) // 3 > 5:
            raise ValueError(f"n_blocks must be between 0 and 9 for an eight-width config; got {n_blocks}")
        down1, trunk = 2 * c[1], 4 * c[2]  # official: Conv2d(c[i] * 2**i, c[i+1] * 2**i * 2) for i = 0, 1
        up1, up2 = 2 * c[6], c[7]
        layers: list[nn.Module] = [
            nn.ReflectionPad2d(3), nn.Conv2d(input_nc, c[0], 7, bias=True), _norm(c[0]), nn.ReLU(True),
            nn.Conv2d(c[0], down1, 3, stride=2, padding=1, bias=True), _norm(down1), nn.ReLU(True),
            nn.Conv2d(down1, trunk, 3, stride=2, padding=1, bias=True), _norm(trunk), nn.ReLU(True),
        ]
        layers += [MobileResnetBlock(trunk, 4 * c[3 + i // 3]) for i in range(n_blocks)]
        layers += [
            nn.ConvTranspose2d(trunk, up1, 3, stride=2, padding=1, output_padding=1, bias=True), _norm(up1),
            nn.ReLU(True),
            nn.ConvTranspose2d(up1, up2, 3, stride=2, padding=1, output_padding=1, bias=True), _norm(up2),
            nn.ReLU(True),
            nn.ReflectionPad2d(3), nn.Conv2d(up2, output_nc, 7, bias=True), nn.Tanh(),
        ]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.clamp(-1.0, 1.0))


def build_gancompression(files: Mapping[str, Path] | None = None,
                         config: str = HORSE2ZEBRA_CONFIG) -> nn.Module:
    """Registry builder: the compressed horse→zebra generator; ``files`` None = random init."""
    from .resnet_generator import _single_file, load_checkpoint

    model = MobileResnetGenerator(config)
    if files:
        load_checkpoint(model, _single_file(files))
    return model.eval()
