"""Training-only networks for CUT / FastCUT: the PatchGAN discriminator and the PatchNCE projection heads.

Papers:
- T. Park, A. A. Efros, R. Zhang, J.-Y. Zhu. "Contrastive Learning for Unpaired Image-to-Image Translation."
  ECCV 2020 (CUT, FastCUT): the multi-layer PatchNCE loss, its 2-layer MLP heads and the training recipe.
- P. Isola, J.-Y. Zhu, T. Zhou, A. A. Efros. "Image-to-Image Translation with Conditional Adversarial Networks."
  CVPR 2017 (pix2pix): the 70×70 PatchGAN discriminator.
- R. Zhang. "Making Convolutional Networks Shift-Invariant Again." ICML 2019: the blur-pool down-sampling CUT's
  discriminator uses by default (stride-1 conv, then a [1,2,1] binomial stride-2 blur).

Shapes and ranges:
- :class:`PatchDiscriminator`: input (N, 3, H, W) in [-1, 1]; output (N, 1, h, w) raw scores (no sigmoid, the
  least-squares GAN loss is applied on them). For 256² input, h = w = 30 (each score sees a 70×70 patch in the
  classic stride-2 version).
- :class:`PatchSampleMLP`: a list of feature maps (N, C_l, H_l, W_l) -> a list of (N, P, nc) unit vectors, one row
  per sampled spatial position; the sampled positions are returned so the same ones can be taken from another
  image's features (real and translated share patch ids).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from .resnet_generator import Downsample


def _norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


class PatchDiscriminator(nn.Module):
    """PatchGAN discriminator with ``n_layers`` down-sampling stages (3 = the 70×70 PatchGAN).

    Layout (``model`` is one ``nn.Sequential``), with ``k`` = 4×4 convs, padding 1:
    conv(3→ndf) · LeakyReLU(0.2) · [blur-down] then for n = 1..n_layers-1: conv(→ndf·min(2ⁿ,8)) · IN · LReLU ·
    [blur-down]; then conv(stride 1) · IN · LReLU; then conv(→1, stride 1).
    ``antialias=True`` (CUT's default) uses stride-1 convs followed by :class:`Downsample`; ``False`` is the
    pix2pix/CycleGAN version with stride-2 convs. Both give a 30×30 map for a 256² input.
    Convs followed by instance norm keep their bias (instance norm has no affine parameters here).
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 3, antialias: bool = True):
        super().__init__()
        stride = 1 if antialias else 2
        layers: list[nn.Module] = [nn.Conv2d(input_nc, ndf, 4, stride=stride, padding=1), nn.LeakyReLU(0.2, True)]
        if antialias:
            layers.append(Downsample(ndf))
        mult = 1
        for n in range(1, n_layers):
            prev, mult = mult, min(2 ** n, 8)
            layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=stride, padding=1), _norm(ndf * mult),
                       nn.LeakyReLU(0.2, True)]
            if antialias:
                layers.append(Downsample(ndf * mult))
        prev, mult = mult, min(2 ** n_layers, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1), _norm(ndf * mult),
                   nn.LeakyReLU(0.2, True),
                   nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
        self.model = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def l2_normalize(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``x / (‖x‖₂ + eps)`` over the last dimension."""
    return x / (x.pow(2).sum(-1, keepdim=True).sqrt() + eps)


def sample_patch_ids(feat: torch.Tensor, num_patches: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random distinct spatial positions per image: (N, P) indices into H·W, P = min(num_patches, H·W).

    Each image of the batch gets its own positions (for the official batch size of 1 this is exactly the official
    sampling; the official code reuses one set of positions for every image of a batch).
    """
    n, _, h, w = feat.shape
    p = min(int(num_patches), h * w)
    return torch.rand(n, h * w, device=feat.device, generator=generator).argsort(dim=1)[:, :p]


def gather_patches(feat: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Feature vectors at the positions ``ids`` (N, P): (N, C, H, W) -> (N, P, C)."""
    n, c = feat.shape[:2]
    flat = feat.reshape(n, c, -1)
    return flat.gather(2, ids[:, None, :].expand(n, c, ids.shape[1])).transpose(1, 2)


class PatchSampleMLP(nn.Module):
    """One 2-layer MLP head per PatchNCE layer: Linear(C_l→nc) · ReLU · Linear(nc→nc), then L2 normalisation.

    ``forward(feats, num_patches, patch_ids=None)`` samples ``num_patches`` positions per image and layer (or takes
    the given ``patch_ids``; ``generator`` drives the sampling), projects them and returns ``(projected, patch_ids)`` with ``projected[l]`` of shape
    (N, P_l, nc), unit length along the last dimension (computed in float32).
    """

    def __init__(self, in_channels: Sequence[int], nc: int = 256):
        super().__init__()
        self.in_channels = tuple(int(c) for c in in_channels)
        self.nc = nc
        self.mlps = nn.ModuleList(
            nn.Sequential(nn.Linear(c, nc), nn.ReLU(True), nn.Linear(nc, nc)) for c in self.in_channels)

    def forward(self, feats: Sequence[torch.Tensor], num_patches: int = 256,
                patch_ids: Sequence[torch.Tensor] | None = None, generator: torch.Generator | None = None):
        if len(feats) != len(self.mlps):
            raise ValueError(f"expected {len(self.mlps)} feature maps, got {len(feats)}")
        out, ids_out = [], []
        for i, (feat, mlp) in enumerate(zip(feats, self.mlps)):
            ids = sample_patch_ids(feat, num_patches, generator) if patch_ids is None else patch_ids[i]
            x = mlp(gather_patches(feat, ids))
            out.append(l2_normalize(x.float()))
            ids_out.append(ids)
        return out, ids_out


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """CUT's default initialisation: Xavier-normal (gain 0.02) for conv / linear weights, zero biases."""
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            nn.init.xavier_normal_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net
