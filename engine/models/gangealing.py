"""GANgealing's congealing spatial transformer (test time), in plain PyTorch.

Paper: William Peebles, Jun-Yan Zhu, Richard Zhang, Antonio Torralba, Alexei A. Efros, Eli Shechtman,
"GAN-Supervised Dense Visual Alignment", CVPR 2022 (https://www.wpeebles.com/gangealing).
This is our own implementation of the test-time network; module and parameter names follow the official release
so that the ``t_ema`` (and ``classifier``) state dicts of its pretrained checkpoints load with ``strict=True``.

Conventions
-----------
* Images entering the networks are float32 (N, 3, S, S) in [-1, 1] (the official range). S is the "supersize":
  the resolution pixels are sampled from (256 by default, any multiple of ``flow_size``); the regression
  branch always sees a ``flow_size`` (128) image, anti-alias down-sampled with a tent filter.
* A *sampling grid* (N, R, R, 2) gives, for every pixel of the congealed output (R x R), the position it samples
  in the input, in normalised coordinates (x, y) in [-1, 1] with ``align_corners=False`` (pixel centres at
  (2i + 1) / size - 1). This is the congealed -> image map; the image -> congealed map is obtained by splatting.
* ``delta_flow`` (N, 128, 128, 2) is the residual flow predicted by the flow STN (before the similarity warp is
  composed); its total variation is the official smoothness score used for flip inference and quality.

Architecture (flow_size 128, channel multiplier m = 0.5; widths: 512 for <= 32 px, 256 m at 64, 128 m at 128)
-----------------------------------------------------------------------------------------------------------
``ComposedSTN.stns[0]`` (similarity): ``convs.0`` 1x1 ConvLayer 3 -> 64, ``convs.1..5`` down-sampling ResBlocks
128 px -> 4 px (64 -> 128 -> 512 -> 512 -> 512 -> 512), ``final_conv`` 3x3 512 -> 512, ``final_linear``
EqualLinear 8192 -> 512 (+ leaky ReLU), ``warp_head.linear`` nn.Linear 512 -> 4K (rotation, log-scale, shift x,
shift y; output index = parameter * K + head), ``warp_head.one_hot`` (1, 1, 1, 3) and
``warp_head.warper.blur_filter`` (1, 1, 4, 4) buffers.
``ComposedSTN.stns[1]`` (flow): ``convs.0`` as above, ``convs.1..3`` down-sampling ResBlocks 128 -> 16 px,
``convs.4`` a ResBlock without down-sampling, ``final_conv`` 3x3 512 -> 512, ``warp_head.flow_out`` /
``warp_head.mask_out`` (EqualConv2d 3x3 512 -> 512, ReLU, EqualConv2d 3x3 -> 2K / 576K channels): a 16x16
residual flow, up-sampled x8 by RAFT's convex combination (softmax over the 3x3 neighbours, with the flow scaled
by 8 as in the release), added to the identity grid, then composed with the similarity matrix.
Both STNs also carry ``input_downsample.kernel_horz/kernel_vert`` (3, 1, 1, 2f) / (3, 1, 2f, 1) buffers when
supersize > flow_size (f = supersize / flow_size); the official loader ignores them and so do we (they are
rebuilt for the resolution in use).

The cluster classifier of the clustering models (car, horse: K = 4 heads) is a StyleGAN2-discriminator-style
ResNet with 2K logits (cluster k, or cluster k mirrored: index k + K).
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2_ops import ConvLayer, EqualConv2d, EqualLinear, ResBlock

FLOW_SIZE = 128
CHANNEL_MULTIPLIER = 0.5
FLOW_DOWNSAMPLE = 8
PADDING_MODES = ("border", "reflection", "zeros")


def stn_channels(multiplier: float = CHANNEL_MULTIPLIER, max_channels: int = 512) -> dict[int, int]:
    """Width per feature resolution. ``max_channels`` < 512 gives narrow test-only networks (official: 512)."""
    ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: int(256 * multiplier), 128: int(128 * multiplier),
          256: int(64 * multiplier), 512: int(32 * multiplier), 1024: int(16 * multiplier)}
    return {k: min(v, max_channels) for k, v in ch.items()}


# --------------------------------------------------------------------------------------------------------------
# Sampling helpers
# --------------------------------------------------------------------------------------------------------------

def tent_kernel(stride: int) -> torch.Tensor:
    """1-D tent filter of length 2 * stride ([1, 3, ..., 2s - 1, 2s - 1, ..., 3, 1], normalised)."""
    ramp = torch.arange(1, 2 * stride + 1, 2, dtype=torch.float32)
    k = torch.cat([ramp, ramp.flip(0)])
    return k / k.sum()


def tent_downsample(x: torch.Tensor, stride: int) -> torch.Tensor:
    """Anti-aliased down-sampling by an integer factor: reflection pad stride // 2, separable tent filter."""
    if stride == 1:
        return x
    c = x.shape[1]
    k = tent_kernel(stride).to(device=x.device, dtype=x.dtype)
    pad = stride // 2
    x = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, k.numel()), stride=(1, stride), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, k.numel(), 1), stride=(stride, 1), groups=c)


class BilinearDownsample(nn.Module):
    """Holds the official ``kernel_horz`` / ``kernel_vert`` buffers; forward = :func:`tent_downsample`."""

    def __init__(self, stride: int, channels: int = 3):
        super().__init__()
        self.stride = stride
        k = tent_kernel(stride)
        self.register_buffer("kernel_horz", k.view(1, 1, 1, -1).repeat(channels, 1, 1, 1))
        self.register_buffer("kernel_vert", k.view(1, 1, -1, 1).repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tent_downsample(x, self.stride)


def identity_grid(size: int, batch: int = 1, device=None, dtype=torch.float32) -> torch.Tensor:
    """(batch, size, size, 2) identity sampling grid (pixel centres, align_corners=False)."""
    eye = torch.eye(2, 3, device=device, dtype=dtype).unsqueeze(0).expand(batch, 2, 3)
    return F.affine_grid(eye, [batch, 1, size, size], align_corners=False)


def apply_affine(matrix: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Apply (N, 2, 3) affine matrices to a (N, H, W, 2) grid of points: M[:, :2] @ p + M[:, 2]."""
    return torch.einsum("nij,nhwj->nhwi", matrix[:, :, :2], grid) + matrix[:, None, None, :, 2]


def resize_grid(grid: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinearly resize a (N, H, W, 2) sampling grid to (N, size, size, 2) (align_corners=False)."""
    if grid.shape[1] == size and grid.shape[2] == size:
        return grid
    out = F.interpolate(grid.permute(0, 3, 1, 2), size=(size, size), mode="bilinear", align_corners=False)
    return out.permute(0, 2, 3, 1)


def total_variation(delta_flow: torch.Tensor) -> torch.Tensor:
    """Official smoothness score of a (N, H, W, 2) residual flow, per image (N,): Huber(|d|, 1) means of the
    vertical and horizontal neighbour differences, summed. Lower = smoother."""
    def huber(a: torch.Tensor) -> torch.Tensor:
        return torch.where(a <= 1.0, 0.5 * a.pow(2), a - 0.5).mean(dim=(1, 2, 3))

    dy = (delta_flow[:, :-1] - delta_flow[:, 1:]).abs()
    dx = (delta_flow[:, :, :-1] - delta_flow[:, :, 1:]).abs()
    return huber(dx) + huber(dy)


class MipmapWarp(nn.Module):
    """Anti-aliased ``grid_sample``: each output pixel reads a Gaussian-stack level chosen from how far apart its
    neighbours' sampling positions are (log2 of the largest neighbour distance in input pixels, at most
    ``max_num_levels - 1``), linearly blending the two nearest levels."""

    def __init__(self, max_num_levels: float = 3.5):
        super().__init__()
        self.max_num_levels = max_num_levels
        taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
        k = taps[:, None] * taps[None, :]
        self.register_buffer("blur_filter", (k / k.sum())[None, None])

    def levels(self, grid: torch.Tensor, height: int, width: int) -> torch.Tensor:
        x = (width - 1.0) * (grid[..., 0] + 1.0) / 2.0
        y = (height - 1.0) * (grid[..., 1] + 1.0) / 2.0
        coords = torch.stack([x, y], dim=1)  # (N, 2, H, W)
        padded = F.pad(coords, (1, 1, 1, 1), mode="replicate")
        neighbours = (padded[:, :, 1:-1, :-2], padded[:, :, 1:-1, 2:], padded[:, :, :-2, 1:-1], padded[:, :, 2:, 1:-1])
        dist = torch.stack([(n - coords).pow(2).sum(1).clamp(min=1.0).sqrt() for n in neighbours]).amax(0)
        return torch.log2(dist).clamp(0.0, self.max_num_levels - 1.0)

    def _half(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        k = self.blur_filter.to(x.dtype).expand(c, 1, 4, 4)
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="reflect"), k, stride=2, groups=c)

    def _stack(self, x: torch.Tensor, num_levels: int) -> torch.Tensor:
        h, w = x.shape[-2:]
        th, tw = 2 ** math.ceil(math.log2(h)), 2 ** math.ceil(math.log2(w))
        pt, pl = (th - h) // 2, (tw - w) // 2
        if th != h or tw != w:
            x = F.pad(x, (pl, tw - w - pl, pt, th - h - pt), mode="reflect")
        levels = [x]
        level = x
        for i in range(1, num_levels):
            level = self._half(level)
            levels.append(F.interpolate(level, scale_factor=2.0 ** i, mode="bilinear", align_corners=False))
        stack = torch.stack(levels, dim=2)
        return stack[..., pt:pt + h, pl:pl + w]

    def forward(self, x: torch.Tensor, grid: torch.Tensor, padding_mode: str = "border") -> torch.Tensor:
        n, c, h, w = x.shape
        levels = self.levels(grid, h, w)
        num_levels = int(math.ceil(float(levels.detach().max()))) + 1
        if num_levels == 1:  # no minification anywhere: plain bilinear sampling is exactly level 0
            return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)
        stack = self._stack(x, num_levels)
        d = stack.shape[2]
        ho, wo = grid.shape[1:3]
        warped = F.grid_sample(stack.reshape(n, c * d, h, w), grid, mode="bilinear", padding_mode=padding_mode,
                               align_corners=False).view(n, c, d, ho, wo)
        lv = levels[:, None, None].expand(n, c, 1, ho, wo)
        lo = torch.gather(warped, 2, lv.floor().long())
        hi = torch.gather(warped, 2, lv.ceil().long())
        return (lo + (lv - lv.floor()) * (hi - lo))[:, :, 0]


# --------------------------------------------------------------------------------------------------------------
# Warping heads
# --------------------------------------------------------------------------------------------------------------

def _select_heads(x: torch.Tensor, heads: Optional[torch.Tensor], num_heads: int) -> torch.Tensor:
    """x: (N, K, ...) -> (N, ...) picking heads[n] for each n (head 0 when heads is None and K == 1)."""
    if heads is None:
        if num_heads != 1:
            raise ValueError("this clustering model needs a cluster index per image (heads=...)")
        return x[:, 0]
    return x[torch.arange(x.shape[0], device=x.device), heads.to(x.device)]


class SimilarityHead(nn.Module):
    """Regresses rotation, uniform scale and translation per head and applies the similarity warp."""

    def __init__(self, in_features: int, num_heads: int = 1):
        super().__init__()
        self.num_heads = num_heads
        self.linear = nn.Linear(in_features, 4 * num_heads)
        nn.init.zeros_(self.linear.weight)  # identity transform at initialisation
        nn.init.zeros_(self.linear.bias)
        self.warper = MipmapWarp(3.5)
        self.register_buffer("one_hot", torch.tensor([0.0, 0.0, 1.0]).view(1, 1, 1, 3))

    @staticmethod
    def params_to_matrix(params: torch.Tensor) -> torch.Tensor:
        """(N, 4) raw [rotation, log-scale, shift x, shift y] -> (N, 2, 3) similarity matrix."""
        rot = torch.tanh(params[:, 0]) * math.pi
        scale = torch.exp(params[:, 1])
        cos, sin = torch.cos(rot) * scale, torch.sin(rot) * scale
        row0 = torch.stack([cos, -sin, params[:, 2]], 1)
        row1 = torch.stack([sin, cos, params[:, 3]], 1)
        return torch.stack([row0, row1], 1)

    def matrix(self, features: torch.Tensor, heads: Optional[torch.Tensor] = None,
               base_warp: Optional[torch.Tensor] = None) -> torch.Tensor:
        params = self.linear(features).view(features.shape[0], 4, self.num_heads).permute(0, 2, 1)  # (N, K, 4)
        m = self.params_to_matrix(_select_heads(params, heads, self.num_heads))
        if base_warp is not None:  # compose: sample the base warp at the new warp's output positions
            m = base_warp @ torch.cat([m, self.one_hot[0].expand(m.shape[0], 1, 3)], 1)
        return m


class FlowHead(nn.Module):
    """Regresses a coarse residual flow (per head) and RAFT-style convex up-sampling weights."""

    def __init__(self, channels: int, num_heads: int = 1, flow_downsample: int = FLOW_DOWNSAMPLE):
        super().__init__()
        self.num_heads = num_heads
        self.flow_downsample = flow_downsample
        self.flow_out = nn.Sequential(EqualConv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                      EqualConv2d(channels, num_heads * 2, 3, padding=1))
        self.mask_out = nn.Sequential(EqualConv2d(channels, channels, 3, padding=1), nn.ReLU(),
                                      EqualConv2d(channels, num_heads * 9 * flow_downsample ** 2, 3, padding=1))
        nn.init.zeros_(self.flow_out[-1].weight)  # identity at initialisation
        nn.init.zeros_(self.flow_out[-1].bias)
        self.warper = MipmapWarp(3.5)

    def upsample(self, flow: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(N, h, w, 2) coarse flow, (N, 9 f^2, h, w) logits -> (N, f h, f w, 2) (the release scales flow by f)."""
        n, h, w, _ = flow.shape
        f = self.flow_downsample
        weights = mask.view(n, 1, 9, f, f, h, w).softmax(dim=2)
        nb = F.unfold(f * flow.permute(0, 3, 1, 2), [3, 3], padding=1).view(n, 2, 9, 1, 1, h, w)
        up = (weights * nb).sum(dim=2)  # (N, 2, f, f, h, w)
        return up.permute(0, 4, 2, 5, 3, 1).reshape(n, f * h, f * w, 2)

    def residual_flow(self, features: torch.Tensor, heads: Optional[torch.Tensor] = None) -> torch.Tensor:
        n, _, h, w = features.shape
        flow = self.flow_out(features).view(n, self.num_heads, 2, h, w).permute(0, 1, 3, 4, 2)  # (N, K, h, w, 2)
        mask = self.mask_out(features).view(n, self.num_heads, -1, h, w)
        return self.upsample(_select_heads(flow, heads, self.num_heads), _select_heads(mask, heads, self.num_heads))


# --------------------------------------------------------------------------------------------------------------
# Spatial transformers
# --------------------------------------------------------------------------------------------------------------

class SpatialTransformer(nn.Module):
    """One STN: a StyleGAN2-discriminator-like regressor and a similarity or flow warping head."""

    def __init__(self, transform: str, flow_size: int = FLOW_SIZE, supersize: int = 256,
                 channel_multiplier: float = CHANNEL_MULTIPLIER, num_heads: int = 1,
                 flow_downsample: int = FLOW_DOWNSAMPLE, max_channels: int = 512):
        super().__init__()
        if transform not in ("similarity", "flow"):
            raise ValueError(f"unknown transform {transform!r}")
        self.transform = transform
        self.is_flow = transform == "flow"
        self.flow_size = flow_size
        self.num_heads = num_heads
        if supersize > flow_size:
            self.input_downsample = BilinearDownsample(supersize // flow_size, 3)
        ch = stn_channels(channel_multiplier, max_channels)
        log_size = int(math.log2(flow_size))
        log_down = int(math.log2(flow_downsample))
        convs: list[nn.Module] = [ConvLayer(3, ch[flow_size], 1)]
        in_ch = ch[flow_size]
        end_log = log_size - 4 if self.is_flow else 2
        done = 0
        for i in range(log_size, end_log, -1):
            down = (not self.is_flow) or done < log_down
            done += int(down)
            out_ch = ch[2 ** (i - 1)]
            convs.append(ResBlock(in_ch, out_ch, downsample=down))
            in_ch = out_ch
        self.convs = nn.Sequential(*convs)
        self.final_conv = ConvLayer(in_ch, ch[4], 3)
        if self.is_flow:
            self.warp_head = FlowHead(in_ch, num_heads, flow_downsample)
        else:
            self.final_linear = EqualLinear(ch[4] * 16, ch[4], activation="fused_lrelu")
            self.warp_head = SimilarityHead(ch[4], num_heads)

    def regression_input(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-1]
        if size == self.flow_size:
            return x
        if size > self.flow_size and size % self.flow_size == 0:
            return tent_downsample(x, size // self.flow_size)
        return F.interpolate(x, size=(self.flow_size, self.flow_size), mode="bilinear", align_corners=False,
                             antialias=size > self.flow_size)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        out = self.final_conv(self.convs(self.regression_input(x)))
        if not self.is_flow:
            out = self.final_linear(out.reshape(out.shape[0], -1))
        return out


class ComposedSTN(nn.Module):
    """Similarity STN followed by a flow STN (``stns.0``, ``stns.1``), the official test-time composition."""

    def __init__(self, flow_size: int = FLOW_SIZE, supersize: int = 256, channel_multiplier: float = CHANNEL_MULTIPLIER,
                 num_heads: int = 1, max_channels: int = 512):
        super().__init__()
        kw = dict(flow_size=flow_size, supersize=supersize, channel_multiplier=channel_multiplier, num_heads=num_heads,
                  max_channels=max_channels)
        self.stns = nn.ModuleList([SpatialTransformer("similarity", **kw), SpatialTransformer("flow", **kw)])
        self.flow_size = flow_size
        self.num_heads = num_heads

    def forward(self, x: torch.Tensor, *, iters: int = 1, padding_mode: str = "border",
                output_resolution: Optional[int] = None, heads: Optional[torch.Tensor] = None,
                return_image: bool = True) -> "Congealed":
        """Congeal ``x`` (N, 3, S, S) in [-1, 1].

        iters: recursive passes of the similarity STN (each re-reads its own 128 px output, composing matrices).
        heads: (N,) cluster index per image for clustering models (None for single-head models).
        Returns a :class:`Congealed` with the output image (R x R, R = output_resolution or 128), the sampling
        grid at R, the 128 px residual flow and the similarity matrix.
        """
        if padding_mode not in PADDING_MODES:
            raise ValueError(f"padding_mode must be one of {PADDING_MODES}")
        sim, flow_stn = self.stns
        fs = self.flow_size
        ident = identity_grid(fs, x.shape[0], x.device, x.dtype)
        # (1) similarity, iterated on its own output, always sampling the full-resolution input
        matrix = None
        out = x
        for _ in range(max(1, int(iters))):
            matrix = sim.warp_head.matrix(sim.features(out), heads, matrix)
            grid = F.affine_grid(matrix, [x.shape[0], 3, fs, fs], align_corners=False)
            out = sim.warp_head.warper(x, grid, padding_mode)
        # (2) flow STN on the similarity-aligned 128 px image
        delta = flow_stn.warp_head.residual_flow(flow_stn.features(out), heads)
        grid = apply_affine(matrix, ident + delta)
        res = output_resolution or fs
        grid = resize_grid(grid, res)
        image = flow_stn.warp_head.warper(x, grid, padding_mode) if return_image else None
        return Congealed(image=image, grid=grid, delta_flow=delta, matrix=matrix)


@dataclass
class Congealed:
    image: Optional[torch.Tensor]  # (N, 3, R, R) in the input's range, or None
    grid: torch.Tensor  # (N, R, R, 2) congealed pixel -> normalised input position
    delta_flow: torch.Tensor  # (N, 128, 128, 2) residual flow of the flow STN
    matrix: torch.Tensor  # (N, 2, 3) composed similarity matrix
    flipped: Optional[torch.Tensor] = None  # (N,) bool: the input was mirrored before congealing
    heads: Optional[torch.Tensor] = None  # (N,) cluster index used


class ResnetClassifier(nn.Module):
    """Cluster classifier of the clustering models: logits (N, 2K); index k = cluster k, k + K = cluster k mirrored."""

    def __init__(self, size: int = FLOW_SIZE, channel_multiplier: float = CHANNEL_MULTIPLIER, num_heads: int = 8,
                 supersize: Optional[int] = 256, max_channels: int = 512):
        super().__init__()
        self.size = size
        self.num_heads = num_heads
        if supersize is not None and supersize > size:
            self.input_downsample = BilinearDownsample(supersize // size, 3)
        ch = stn_channels(channel_multiplier, max_channels)
        convs: list[nn.Module] = [ConvLayer(3, ch[size], 1)]
        in_ch = ch[size]
        for i in range(int(math.log2(size)), 2, -1):
            convs.append(ResBlock(in_ch, ch[2 ** (i - 1)]))
            in_ch = ch[2 ** (i - 1)]
        self.convs = nn.Sequential(*convs)
        self.final_conv = ConvLayer(in_ch, ch[4], 3)
        self.to_logits = EqualLinear(ch[4] * 16, num_heads, activation="fused_lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.shape[-1]
        if s > self.size and s % self.size == 0:
            x = tent_downsample(x, s // self.size)
        elif s != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False,
                              antialias=s > self.size)
        out = self.final_conv(self.convs(x))
        return self.to_logits(out.reshape(out.shape[0], -1))


# --------------------------------------------------------------------------------------------------------------
# Pretrained models: test-time settings, checkpoint loading, registry builders
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PretrainedSettings:
    """Official test-time settings of a released checkpoint, and its assets (names inside gangealing-assets)."""

    name: str
    padding_mode: str
    iters: int
    num_heads: int = 1
    asset: str = ""  # stem of the average / mask image; cub's assets are named "bird"

    @property
    def clustering(self) -> bool:
        return self.num_heads > 1

    def average_files(self) -> list[str]:
        stem = self.asset or self.name
        if self.clustering:
            return [f"averages/{stem}_cluster{k}.png" for k in range(self.num_heads)]
        return [f"averages/{stem}.png"]

    def mask_files(self) -> list[str]:
        stem = self.asset or self.name
        if self.clustering:
            return [f"masks/{stem}_mask_cluster{k}.png" for k in range(self.num_heads)]
        return [f"masks/{stem}_mask.png"]


PRETRAINED: dict[str, PretrainedSettings] = {s.name: s for s in (
    PretrainedSettings("bicycle", "reflection", 3),
    PretrainedSettings("car", "reflection", 3, num_heads=4),
    PretrainedSettings("cat", "border", 3),
    PretrainedSettings("cat_ssl_mix6", "border", 3),
    PretrainedSettings("celeba", "border", 1),
    PretrainedSettings("cub", "border", 1, asset="bird"),
    PretrainedSettings("dog", "border", 3),
    PretrainedSettings("horse", "reflection", 3, num_heads=4),
    PretrainedSettings("tvmonitor", "reflection", 3),
)}
PRETRAINED_URL = "http://efrosgans.eecs.berkeley.edu/gangealing/pretrained/{name}.pt"


class GANgealing(nn.Module):
    """A pretrained GANgealing model at test time: ``t_ema`` (ComposedSTN) and, for clustering models,
    ``classifier``. Its state dict mirrors the checkpoint: keys ``t_ema.*`` and ``classifier.*``."""

    def __init__(self, settings: PretrainedSettings, supersize: int = 256, max_channels: int = 512):
        super().__init__()
        self.settings = settings
        self.t_ema = ComposedSTN(supersize=supersize, num_heads=settings.num_heads, max_channels=max_channels)
        self.classifier = (ResnetClassifier(num_heads=2 * settings.num_heads, supersize=supersize,
                                            max_channels=max_channels) if settings.clustering else None)

    @property
    def num_heads(self) -> int:
        return self.settings.num_heads

    def choose_clusters(self, x: torch.Tensor, cluster: Optional[int] = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Clustering models: (heads (N,), mirror (N,) bool) from the classifier; ``cluster`` fixes the head and
        only asks whether to mirror (the official run_flip_target)."""
        k = self.num_heads
        logits = self.classifier(x)
        if cluster is None:
            cls = logits.argmax(1)
            return cls % k, cls >= k
        if not 0 <= cluster < k:
            raise ValueError(f"cluster must be in [0, {k - 1}]")
        mirror = logits[:, cluster + k] > logits[:, cluster]
        return torch.full_like(mirror, cluster, dtype=torch.long), mirror

    @torch.no_grad()
    def congeal(self, x: torch.Tensor, *, output_resolution: Optional[int] = None, flip: bool = True,
                cluster: Optional[int] = None, iters: Optional[int] = None, padding_mode: Optional[str] = None,
                return_image: bool = True, mirror: Optional[torch.Tensor] = None) -> Congealed:
        """Congeal with the official test settings and flip inference.

        Single-head models try the image and its mirror and keep the smoother residual flow (``flip``), unless
        ``mirror`` (N,) bool imposes the decision (one pass; streams reuse a recent decision); clustering models
        ask the classifier for the cluster and the mirror. The returned grid always refers to the *unmirrored*
        input (x is negated where the mirror was used).
        """
        s = self.settings
        kw = dict(iters=iters or s.iters, padding_mode=padding_mode or s.padding_mode,
                  output_resolution=output_resolution, return_image=return_image)
        n = x.shape[0]
        if self.classifier is not None:
            heads, mirror = self.choose_clusters(x, cluster)
            src = torch.where(mirror.view(n, 1, 1, 1), x.flip(3), x)
            res = self.t_ema(src, heads=heads, **kw)
        elif mirror is not None:
            mirror = torch.as_tensor(mirror, dtype=torch.bool, device=x.device).reshape(-1).expand(n)
            res = self.t_ema(torch.where(mirror.view(n, 1, 1, 1), x.flip(3), x), **kw)
            heads = torch.zeros(n, dtype=torch.long, device=x.device)
        elif flip:
            both = self.t_ema(torch.cat([x, x.flip(3)], 0), **kw)
            tv = total_variation(both.delta_flow).view(2, n)
            mirror = tv[1] < tv[0]
            pick = lambda t: None if t is None else torch.where(  # noqa: E731
                mirror.view(n, *[1] * (t.dim() - 1)), t[n:], t[:n])
            res = Congealed(image=pick(both.image), grid=pick(both.grid), delta_flow=pick(both.delta_flow),
                            matrix=pick(both.matrix))
            heads = torch.zeros(n, dtype=torch.long, device=x.device)
        else:
            res = self.t_ema(x, **kw)
            mirror = torch.zeros(n, dtype=torch.bool, device=x.device)
            heads = torch.zeros(n, dtype=torch.long, device=x.device)
        grid = res.grid.clone()
        grid[..., 0] = torch.where(mirror.view(n, 1, 1), -grid[..., 0], grid[..., 0])
        res.grid, res.flipped, res.heads = grid, mirror, heads
        return res


# ---- checkpoint loading -----------------------------------------------------------------------------------------

# Keys the official loader filters out before loading (constant or resolution-dependent buffers, a legacy param).
_IGNORED_SUFFIXES = ("input_downsample.kernel_horz", "input_downsample.kernel_vert", "warp_head.rebias")
# Constant buffers: recomputed by our modules; when a file carries them they must hold the same values.
_CONSTANT_SUFFIXES = (".kernel", "warp_head.one_hot", "warper.blur_filter")


def read_checkpoint(path: str | Path) -> dict:
    """Read an official GANgealing ``.pt`` safely (``torch.load(weights_only=True)``).

    The files hold ``args``, an ``argparse.Namespace`` of the training flags; the safe unpickler refuses unknown
    classes, so ``argparse.Namespace`` is allowed for this call only (a Namespace is rebuilt by setting its
    ``__dict__`` from plain values: no code runs). Anything else that is not plain data still fails with
    WeightsCorruptError instead of being executed.
    """
    from ..errors import WeightsCorruptError
    from .. import weights as weights_mod

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            ckpt = weights_mod.load_state_dict(Path(path))
    except WeightsCorruptError:
        raise
    except Exception as exc:  # pickle.UnpicklingError and friends
        raise WeightsCorruptError(
            f"{Path(path).name} cannot be read as a GANgealing checkpoint with the safe loader: {exc}") from exc
    if not isinstance(ckpt, dict) or "t_ema" not in ckpt:
        keys = sorted(ckpt)[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise WeightsCorruptError(f"{Path(path).name} is not a GANgealing checkpoint (no 't_ema' entry; has {keys}).")
    return ckpt


def _adapt(module: nn.Module, sd: dict, what: str) -> dict:
    """Official state dict -> one our module loads with strict=True (drop ignored keys, check constants)."""
    from ..errors import WeightsCorruptError

    own = module.state_dict()
    out = {}
    for key, value in sd.items():
        if key.endswith(_IGNORED_SUFFIXES):
            continue
        if key.endswith(_CONSTANT_SUFFIXES) and key in own:
            if own[key].shape != value.shape or not torch.allclose(own[key], value.float(), atol=1e-6):
                raise WeightsCorruptError(f"{what}: constant buffer {key} does not match the expected filter.")
        out[key] = value
    for key, value in own.items():  # constants (and resolution-dependent kernels) the file may omit
        if key.endswith(_CONSTANT_SUFFIXES + _IGNORED_SUFFIXES[:2]) and key not in out:
            out[key] = value
    return out


def load_pretrained_state(model: GANgealing, ckpt: dict) -> None:
    """Load ``ckpt['t_ema']`` (and ``ckpt['classifier']``) into ``model`` with strict=True."""
    from ..errors import WeightsCorruptError

    parts = [("t_ema", model.t_ema)]
    if model.classifier is not None:
        if "classifier" not in ckpt:
            raise WeightsCorruptError(f"The {model.settings.name} checkpoint has no 'classifier' entry, which this "
                                      "clustering model needs.")
        parts.append(("classifier", model.classifier))
    for name, module in parts:
        sd = ckpt[name]
        if not isinstance(sd, dict):
            raise WeightsCorruptError(f"ckpt[{name!r}] is not a state dict.")
        sd = {k[7:] if k.startswith("module.") else k: v for k, v in sd.items()}
        try:
            module.load_state_dict(_adapt(module, sd, name), strict=True)
        except RuntimeError as exc:
            raise WeightsCorruptError(f"ckpt[{name!r}] does not match the {model.settings.name} GANgealing layout "
                                      f"(num_heads={model.num_heads}): {exc}") from exc


def build_gangealing(files: Optional[dict] = None, *, name: Optional[str] = None, num_heads: int = 1,
                     supersize: int = 256, max_channels: int = 512) -> GANgealing:
    """Registry builder: random init when ``files`` is None, else strictly load ``files['checkpoint']``.

    ``name`` selects the official test settings (``PRETRAINED``); without it (a user's own checkpoint) the
    settings are border padding, 1 iteration and ``num_heads`` heads.
    """
    if name is not None:
        settings = PRETRAINED[name]
        if settings.num_heads != num_heads:
            raise ValueError(f"{name} has {settings.num_heads} heads, not {num_heads}")
    else:
        settings = PretrainedSettings("custom", "border", 1, num_heads=num_heads)
    model = GANgealing(settings, supersize=supersize, max_channels=max_channels)
    if files:
        path = files.get("checkpoint") or next(iter(files.values()))
        load_pretrained_state(model, read_checkpoint(path))
    return model.eval()
