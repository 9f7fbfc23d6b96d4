"""ResNet-9-block image-to-image generators: CycleGAN and CUT / FastCUT.

Papers:
- J.-Y. Zhu, T. Park, P. Isola, A. A. Efros. "Unpaired Image-to-Image Translation using Cycle-Consistent
  Adversarial Networks." ICCV 2017 (CycleGAN). Generator after J. Johnson et al., "Perceptual Losses for Real-Time
  Style Transfer and Super-Resolution", ECCV 2016.
- T. Park, A. A. Efros, R. Zhang, J.-Y. Zhu. "Contrastive Learning for Unpaired Image-to-Image Translation."
  ECCV 2020 (CUT, FastCUT). Same generator with antialiased down-/up-sampling (R. Zhang, "Making Convolutional
  Networks Shift-Invariant Again", ICML 2019).

Module indices follow the official releases exactly so that ``latest_net_G*.pth`` files load with ``strict=True``
(see shared/specs/checkpoints.md, section 2). Instance norm has no affine parameters and no running statistics,
so norm layers contribute no keys.

Shapes and ranges: input (N, 3, H, W) RGB in [-1, 1]; output (N, 3, H, W) in [-1, 1] (tanh). H and W must be
multiples of 4 (:attr:`ResnetGenerator.size_multiple`); the pipeline pads and crops back.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def _binomial_2d(size: int) -> torch.Tensor:
    """Normalised outer product of the binomial row of length ``size`` ([1,2,1], [1,3,3,1], ...)."""
    row = torch.tensor([math.comb(size - 1, k) for k in range(size)], dtype=torch.float64)
    kernel = row[:, None] * row[None, :]
    return (kernel / kernel.sum()).float()


class Downsample(nn.Module):
    """Antialiased ×1/2 down-sampling: reflection pad 1, then a depthwise stride-2 blur with [1,2,1]ᵀ[1,2,1]/16.

    The kernel is a saved buffer ``filt`` of shape (C, 1, 3, 3), as in the official checkpoints.
    Output size: ceil(H / 2) × ceil(W / 2).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("filt", _binomial_2d(3)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="reflect")
        return F.conv2d(x, self.filt, stride=2, groups=x.shape[1])


class Upsample(nn.Module):
    """Antialiased ×2 up-sampling: replication pad 1, depthwise transposed conv (stride 2, padding 2) with the
    [1,3,3,1] binomial kernel ×4, then the first and last rows/columns are dropped: output exactly 2H × 2W.

    The kernel is a saved buffer ``filt`` of shape (C, 1, 4, 4).
    """

    def __init__(self, channels: int):
        super().__init__()
        self.channels = channels
        self.register_buffer("filt", (_binomial_2d(4) * 4.0)[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (1, 1, 1, 1), mode="replicate")
        y = F.conv_transpose2d(x, self.filt, stride=2, padding=2, groups=x.shape[1])
        return y[:, :, 1:-1, 1:-1]


class ResnetBlock(nn.Module):
    """``x + conv_block(x)``; conv_block = ReflPad1 · Conv3×3 · IN · ReLU · [Dropout] · ReflPad1 · Conv3×3 · IN.

    Without dropout the second pad sits at index 4 and the second conv at index 5 (official layout).
    """

    def __init__(self, dim: int, use_dropout: bool = False):
        super().__init__()
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), _norm(dim), nn.ReLU(True)]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), _norm(dim)]
        self.conv_block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetGenerator(nn.Module):
    """The CycleGAN / CUT ResNet generator (``model`` is one ``nn.Sequential``; keys ``model.<idx>...``).

    Args:
        input_nc, output_nc: image channels (3).
        ngf: width of the first conv (64 in the releases); the trunk runs at ``4 * ngf``.
        n_blocks: residual blocks (9 for the horse2zebra releases).
        antialias: CUT-style antialiased down-sampling (stride-1 conv + :class:`Downsample`) instead of stride-2 convs.
        antialias_up: CUT-style :class:`Upsample` + conv instead of transposed convs (defaults to ``antialias``).
        use_dropout: dropout inside residual blocks (off in the released models).

    ``forward(x)`` returns the translated image. ``forward(x, layers=[...])`` also collects the outputs of the
    modules of ``model`` at those indices (-1 = the final output) and returns ``(out, feats)``; with
    ``encode_only=True`` it stops after the last requested layer and returns just ``feats`` (what PatchNCE uses,
    e.g. CUT's ``layers=[0, 4, 8, 12, 16]``).
    """

    size_multiple = 4

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 antialias: bool = False, antialias_up: bool | None = None, use_dropout: bool = False):
        super().__init__()
        if n_blocks < 0 or ngf < 1:
            raise ValueError("ngf must be >= 1 and n_blocks >= 0")
        antialias_up = antialias if antialias_up is None else antialias_up
        self.ngf, self.n_blocks, self.antialias, self.antialias_up = ngf, n_blocks, antialias, antialias_up
        layers: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=True), _norm(ngf),
                                   nn.ReLU(True)]
        for i in range(2):
            c_in, c_out = ngf * 2 ** i, ngf * 2 ** (i + 1)
            if antialias:
                layers += [nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=True), _norm(c_out), nn.ReLU(True),
                           Downsample(c_out)]
            else:
                layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=True), _norm(c_out), nn.ReLU(True)]
        trunk = ngf * 4
        layers += [ResnetBlock(trunk, use_dropout) for _ in range(n_blocks)]
        for i in range(2):
            c_in, c_out = ngf * 2 ** (2 - i), ngf * 2 ** (1 - i)
            if antialias_up:
                layers += [Upsample(c_in), nn.Conv2d(c_in, c_out, 3, stride=1, padding=1, bias=True), _norm(c_out),
                           nn.ReLU(True)]
            else:
                layers += [nn.ConvTranspose2d(c_in, c_out, 3, stride=2, padding=1, output_padding=1, bias=True),
                           _norm(c_out), nn.ReLU(True)]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, bias=True), nn.Tanh()]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, layers: Sequence[int] | None = None, encode_only: bool = False):
        if not layers:
            return self.model(x)
        n = len(self.model)
        wanted = sorted({n - 1 if i == -1 else int(i) for i in layers})
        if wanted[0] < 0 or wanted[-1] >= n:
            raise ValueError(f"layer indices must be in [0, {n - 1}] (or -1); got {list(layers)}")
        feats: list[torch.Tensor] = []
        feat = x
        for idx, module in enumerate(self.model):
            feat = module(feat)
            if idx in wanted:
                feats.append(feat)
                if encode_only and idx == wanted[-1]:
                    return feats
        return feat, feats


class CUTGenerator(ResnetGenerator):
    """CUT / FastCUT generator: :class:`ResnetGenerator` with antialiased down- and up-sampling.

    CUT and FastCUT share this architecture (they differ only in training losses), hence one layout.
    """

    #: generator layers whose outputs CUT's PatchNCE loss reads (RGB, two down-sampling convs, res-blocks 1 and 5)
    nce_layers = (0, 4, 8, 12, 16)

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 use_dropout: bool = False):
        super().__init__(input_nc, output_nc, ngf, n_blocks, antialias=True, antialias_up=True,
                         use_dropout=use_dropout)


class CycleGANGenerator(ResnetGenerator):
    """CycleGAN's ``resnet_9blocks`` generator (strided convs, transposed convs, no antialiasing)."""

    def __init__(self, input_nc: int = 3, output_nc: int = 3, ngf: int = 64, n_blocks: int = 9,
                 use_dropout: bool = False):
        super().__init__(input_nc, output_nc, ngf, n_blocks, antialias=False, antialias_up=False,
                         use_dropout=use_dropout)


# ---- checkpoint loading -------------------------------------------------------------------------------------

_NORM_STAT_SUFFIXES = (".running_mean", ".running_var", ".num_batches_tracked")


def clean_state_dict(state: Mapping[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Normalise an official checkpoint: unwrap ``{'state_dict': ...}``, strip a ``module.`` prefix, and drop
    instance-norm running statistics that some old CycleGAN files carry (only for keys the model does not have)."""
    if "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    own = set(model.state_dict().keys())
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key.startswith("module."):
            key = key[len("module."):]
        if key not in own and key.endswith(_NORM_STAT_SUFFIXES):
            continue
        out[key] = value
    return out


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load ``path`` into ``model`` with ``strict=True`` (via engine.weights.load_state_dict, weights_only)."""
    from .. import weights
    from ..errors import WeightsCorruptError

    state = weights.load_state_dict(Path(path))
    try:
        model.load_state_dict(clean_state_dict(state, model), strict=True)
    except RuntimeError as exc:
        raise WeightsCorruptError(
            f"{Path(path).name} does not match the {type(model).__name__} layout "
            f"(ngf={getattr(model, 'ngf', '?')}, blocks={getattr(model, 'n_blocks', '?')}): {exc}") from exc
    return model


def _single_file(files: Mapping[str, Path]) -> Path:
    if len(files) != 1:
        raise ValueError(f"expected exactly one checkpoint file, got {sorted(files)}")
    return Path(next(iter(files.values())))


def _finish(model: nn.Module, files: Mapping[str, Path] | None) -> nn.Module:
    if files:
        load_checkpoint(model, _single_file(files))
    return model.eval()


def build_cyclegan(files: Mapping[str, Path] | None = None) -> nn.Module:
    """Registry builder: CycleGAN ResNet-9 generator (ngf 64); ``files`` None = random init."""
    return _finish(CycleGANGenerator(), files)


def build_cut(files: Mapping[str, Path] | None = None) -> nn.Module:
    """Registry builder: CUT / FastCUT ResNet-9 generator with antialiasing (ngf 64); None = random init."""
    return _finish(CUTGenerator(), files)


build_fastcut = build_cut
