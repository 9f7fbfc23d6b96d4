"""U-GAT-IT: the attention (CAM) generator with AdaLIN, its CAM discriminators, and checkpoint loading.

Paper: J. Kim, M. Kim, H. Kang, K. Lee. "U-GAT-IT: Unsupervised Generative Attentional Networks with Adaptive
Layer-Instance Normalization for Image-to-Image Translation." ICLR 2020. The layout (module names, order, biases,
initial values) follows the authors' PyTorch code, znxlwm/UGATIT-pytorch (MIT, ``networks.py``), so its
``genA2B`` / ``genB2A`` state dicts load with ``strict=True``; the code here is our own.

Generator (``UGATITGenerator``; ngf = 64, 4 residual blocks and 256² in the official runs), keys in brackets:
- encoder ``DownBlock``: reflect-pad 3 · 7×7 conv (no bias) · IN · ReLU, then twice reflect-pad 1 · 3×3 stride-2
  conv (no bias) · IN · ReLU, then ``n_blocks`` residual blocks (two 3×3 convs without bias, IN, no affine);
- CAM attention: the encoder features x (N, 4·ngf, H/4, W/4) are average-pooled and max-pooled; each pooled vector
  goes through its own bias-free 1-unit linear layer (``gap_fc``, ``gmp_fc``) giving the two CAM logits; the same
  weights re-weight x channel-wise, the two re-weighted maps are concatenated and fused by a 1×1 conv
  (``conv1x1``, with bias) and a ReLU. The attention heat map is the channel sum of that fused map (N, 1, H/4, W/4);
- ``FC`` (two bias-free linear layers with ReLU) turns the fused map into the AdaLIN parameters via the linear
  heads ``gamma`` and ``beta``. *Full* mode feeds the whole flattened map, so the input size is fixed (``img_size``²,
  256² officially; the first FC layer alone has (img_size/4)²·4ngf·4ngf = 268 M weights at 256²); *light* mode feeds
  the globally average-pooled map, so any size (a multiple of 4) works;
- decoder: ``UpBlock1_1 .. UpBlock1_n`` residual blocks whose two norms are AdaLIN (ρ initialised 0.9), then
  ``UpBlock2``: twice nearest ×2 up-sampling · reflect-pad 1 · 3×3 conv (no bias) · LIN (ρ initialised 0, γ 1,
  β 0) · ReLU, then reflect-pad 3 · 7×7 conv (no bias) · tanh.

AdaLIN / LIN, exactly as the official code: per image, x̂_IN uses the mean and variance over (H, W) of each channel,
x̂_LN those over (C, H, W); ``torch.var``'s default, i.e. the *unbiased* variance (divisor n − 1), with ε = 1e-5
added to the variance inside the square root: x̂ = (x − μ) / √(σ²_unbiased + 1e-5). Output
γ·(ρ·x̂_IN + (1 − ρ)·x̂_LN) + β, with ρ per channel, kept in [0, 1] by clipping after every optimiser step
(:func:`clip_rho`), not inside the forward pass.

Discriminator (``CAMDiscriminator``, training only): reflect-pad 1 · 4×4 stride-2 conv blocks with spectral norm and
LeakyReLU 0.2 (``n_layers`` − 2 of them, doubling the width), one stride-1 block, then the same CAM head (spectral-
normalised ``gap_fc`` / ``gmp_fc``, ``conv1x1``, LeakyReLU) and a final spectral-normalised 4×4 conv to one channel.
U-GAT-IT uses a global (7 layers) and a local (5 layers) one per domain. As in the official code, the channel
re-weighting takes the *un-normalised* weight (``weight_orig``, the first parameter of the spectral-normalised layer)
while the logit uses the normalised one.

Shapes and ranges: images (N, 3, H, W) in [-1, 1] in and out (tanh); H and W multiples of 4 (light mode) or exactly
``img_size`` (full mode). ``forward(x)`` returns the image; ``forward(x, cam=True)`` returns the official triple
(image, CAM logits (N, 2), heat map (N, 1, H/4, W/4)); ``forward_with_maps(x)`` returns (image, {"attention": heat
map}) for the translation pipeline, which shows such maps beside the output.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

EPS = 1e-5                  # official adaILN / ILN eps, added to the (unbiased) variance inside the sqrt
ADALIN_RHO_INIT = 0.9
LIN_RHO_INIT = 0.0
DIRECTIONS = ("A2B", "B2A")


def instance_layer_stats(x: torch.Tensor, eps: float = EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """(x̂_IN, x̂_LN) of (N, C, H, W): normalised over (H, W) per channel and over (C, H, W) per image, with the
    unbiased variance and ``eps`` inside the square root (the official formula). Low-precision inputs (autocast)
    are normalised in float32 and returned in their own dtype."""
    dtype = x.dtype
    xf = x.float() if dtype in (torch.float16, torch.bfloat16) else x
    mean_in, var_in = xf.mean(dim=(2, 3), keepdim=True), xf.var(dim=(2, 3), keepdim=True)
    mean_ln, var_ln = xf.mean(dim=(1, 2, 3), keepdim=True), xf.var(dim=(1, 2, 3), keepdim=True)
    x_in = (xf - mean_in) / torch.sqrt(var_in + eps)
    x_ln = (xf - mean_ln) / torch.sqrt(var_ln + eps)
    return x_in.to(dtype), x_ln.to(dtype)


class AdaILN(nn.Module):
    """Adaptive layer-instance norm: γ·(ρ·x̂_IN + (1−ρ)·x̂_LN) + β with γ, β (N, C) from the generator's MLP and a
    learned ρ (key ``rho``, shape (1, C, 1, 1), initialised 0.9). (N, C, H, W) -> same shape."""

    def __init__(self, num_features: int, eps: float = EPS):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), ADALIN_RHO_INIT))

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        x_in, x_ln = instance_layer_stats(x, self.eps)
        rho = self.rho.to(x_in.dtype)
        out = rho * x_in + (1 - rho) * x_ln
        return out * gamma[:, :, None, None] + beta[:, :, None, None]


class ILN(nn.Module):
    """Layer-instance norm with learned per-channel ρ (init 0 = pure layer norm), γ (init 1) and β (init 0), all of
    shape (1, C, 1, 1) (keys ``rho``, ``gamma``, ``beta``). (N, C, H, W) -> same shape."""

    def __init__(self, num_features: int, eps: float = EPS):
        super().__init__()
        self.eps = eps
        self.rho = nn.Parameter(torch.full((1, num_features, 1, 1), LIN_RHO_INIT))
        self.gamma = nn.Parameter(torch.ones(1, num_features, 1, 1))
        self.beta = nn.Parameter(torch.zeros(1, num_features, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x_in, x_ln = instance_layer_stats(x, self.eps)
        rho = self.rho.to(x_in.dtype)
        out = rho * x_in + (1 - rho) * x_ln
        return out * self.gamma.to(out.dtype) + self.beta.to(out.dtype)


def clip_rho(module: nn.Module, low: float = 0.0, high: float = 1.0) -> nn.Module:
    """Clamp every ``rho`` of the AdaLIN / LIN layers in ``module`` to [low, high] in place (official: after each
    generator step)."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (AdaILN, ILN)):
                m.rho.clamp_(low, high)
    return module


class ResnetBlock(nn.Module):
    """Encoder block ``x + conv_block(x)``: pad · conv3×3 · IN · ReLU · pad · conv3×3 · IN (no biases)."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False), nn.InstanceNorm2d(dim), nn.ReLU(True),
            nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=False), nn.InstanceNorm2d(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv_block(x)


class ResnetAdaILNBlock(nn.Module):
    """Decoder block ``x + norm2(conv2(pad(relu(norm1(conv1(pad(x)))))))`` with AdaLIN norms (keys ``conv1``,
    ``norm1.rho``, ``conv2``, ``norm2.rho``)."""

    def __init__(self, dim: int):
        super().__init__()
        self.pad1 = nn.ReflectionPad2d(1)
        self.conv1 = nn.Conv2d(dim, dim, 3, bias=False)
        self.norm1 = AdaILN(dim)
        self.relu1 = nn.ReLU(True)
        self.pad2 = nn.ReflectionPad2d(1)
        self.conv2 = nn.Conv2d(dim, dim, 3, bias=False)
        self.norm2 = AdaILN(dim)

    def forward(self, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.norm1(self.conv1(self.pad1(x)), gamma, beta))
        out = self.norm2(self.conv2(self.pad2(out)), gamma, beta)
        return out + x


class UGATITGenerator(nn.Module):
    """The U-GAT-IT generator in the official ``ResnetGenerator`` layout (see the module docstring).

    Args: ngf (64), n_blocks (4 in the official runs), img_size (training size; fixes full mode's input), light.
    """

    size_multiple = 4

    def __init__(self, ngf: int = 64, n_blocks: int = 4, img_size: int = 256, light: bool = False,
                 input_nc: int = 3, output_nc: int = 3):
        super().__init__()
        if ngf < 1 or n_blocks < 0 or img_size < 4:
            raise ValueError("ngf >= 1, n_blocks >= 0 and img_size >= 4 are required")
        self.ngf, self.n_blocks, self.img_size, self.light = ngf, n_blocks, img_size, light
        trunk = ngf * 4
        down: list[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(input_nc, ngf, 7, bias=False),
                                 nn.InstanceNorm2d(ngf), nn.ReLU(True)]
        for i in range(2):
            c = ngf * 2 ** i
            down += [nn.ReflectionPad2d(1), nn.Conv2d(c, 2 * c, 3, stride=2, bias=False), nn.InstanceNorm2d(2 * c),
                     nn.ReLU(True)]
        down += [ResnetBlock(trunk) for _ in range(n_blocks)]
        self.DownBlock = nn.Sequential(*down)

        self.gap_fc = nn.Linear(trunk, 1, bias=False)
        self.gmp_fc = nn.Linear(trunk, 1, bias=False)
        self.conv1x1 = nn.Conv2d(2 * trunk, trunk, 1, bias=True)
        self.relu = nn.ReLU(True)

        # official width of the first full-mode FC layer: img_size // 4 * img_size // 4 * 4ngf, left to right
        fc_in = trunk if light else img_size // 4 * img_size // 4 * trunk
        self.FC = nn.Sequential(nn.Linear(fc_in, trunk, bias=False), nn.ReLU(True),
                                nn.Linear(trunk, trunk, bias=False), nn.ReLU(True))
        self.gamma = nn.Linear(trunk, trunk, bias=False)
        self.beta = nn.Linear(trunk, trunk, bias=False)

        for i in range(n_blocks):
            setattr(self, f"UpBlock1_{i + 1}", ResnetAdaILNBlock(trunk))
        up: list[nn.Module] = []
        for i in range(2):
            c = ngf * 2 ** (2 - i)
            up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.ReflectionPad2d(1),
                   nn.Conv2d(c, c // 2, 3, bias=False), ILN(c // 2), nn.ReLU(True)]
        up += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, output_nc, 7, bias=False), nn.Tanh()]
        self.UpBlock2 = nn.Sequential(*up)

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(H, W) the model only accepts (full mode), or None (light mode: any multiple of 4)."""
        return None if self.light else (self.img_size, self.img_size)

    def attention(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Encoder + CAM: (fused features (N, 4ngf, h, w), CAM logits (N, 2) = [gap, gmp], heat map (N, 1, h, w))."""
        x = self.DownBlock(x)
        n = x.shape[0]
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(x, 1).view(n, -1))
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(x, 1).view(n, -1))
        gap = x * self.gap_fc.weight[:, :, None, None]
        gmp = x * self.gmp_fc.weight[:, :, None, None]
        x = self.relu(self.conv1x1(torch.cat([gap, gmp], 1)))
        return x, torch.cat([gap_logit, gmp_logit], 1), x.sum(dim=1, keepdim=True)

    def forward(self, x: torch.Tensor, cam: bool = False):
        if not self.light and tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"full U-GAT-IT takes {self.img_size}x{self.img_size} input, got "
                             f"{x.shape[-1]}x{x.shape[-2]}")
        feat, cam_logit, heatmap = self.attention(x)
        pooled = F.adaptive_avg_pool2d(feat, 1) if self.light else feat
        h = self.FC(pooled.reshape(feat.shape[0], -1))
        gamma, beta = self.gamma(h), self.beta(h)
        for i in range(self.n_blocks):
            feat = getattr(self, f"UpBlock1_{i + 1}")(feat, gamma, beta)
        out = self.UpBlock2(feat)
        return (out, cam_logit, heatmap) if cam else out

    def forward_with_maps(self, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(image, {"attention": CAM heat map (N, 1, H/4, W/4)}) for the translation pipeline."""
        out, _, heatmap = self.forward(x, cam=True)
        return out, {"attention": heatmap}


class CAMDiscriminator(nn.Module):
    """The official U-GAT-IT discriminator with ``n_layers`` (7 = global, 5 = local), spectral norm everywhere
    except ``conv1x1``. Keys: ``model.<i>.weight_orig`` ..., ``gap_fc.weight_orig``, ``conv1x1.*``, ``conv.*``.

    ``forward(x)`` -> (patch logits (N, 1, h, w), CAM logits (N, 2), heat map (N, 1, h', w')). For 256² input the
    global one gives 6×6 logits, the local one 30×30. The global one needs at least 128² input (its feature map
    must stay larger than its reflection padding).
    """

    def __init__(self, input_nc: int = 3, ndf: int = 64, n_layers: int = 5):
        super().__init__()
        if n_layers < 3:
            raise ValueError("n_layers must be >= 3")
        sn = nn.utils.spectral_norm
        layers: list[nn.Module] = [nn.ReflectionPad2d(1), sn(nn.Conv2d(input_nc, ndf, 4, stride=2, bias=True)),
                                   nn.LeakyReLU(0.2, True)]
        for i in range(1, n_layers - 2):
            c = ndf * 2 ** (i - 1)
            layers += [nn.ReflectionPad2d(1), sn(nn.Conv2d(c, 2 * c, 4, stride=2, bias=True)), nn.LeakyReLU(0.2, True)]
        c = ndf * 2 ** (n_layers - 3)
        layers += [nn.ReflectionPad2d(1), sn(nn.Conv2d(c, 2 * c, 4, stride=1, bias=True)), nn.LeakyReLU(0.2, True)]
        self.model = nn.Sequential(*layers)
        width = 2 * c
        self.gap_fc = sn(nn.Linear(width, 1, bias=False))
        self.gmp_fc = sn(nn.Linear(width, 1, bias=False))
        self.conv1x1 = nn.Conv2d(2 * width, width, 1, bias=True)
        self.leaky_relu = nn.LeakyReLU(0.2, True)
        self.pad = nn.ReflectionPad2d(1)
        self.conv = sn(nn.Conv2d(width, 1, 4, stride=1, bias=False))
        self.n_layers = n_layers

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.model(x)
        n = x.shape[0]
        gap_logit = self.gap_fc(F.adaptive_avg_pool2d(x, 1).view(n, -1))
        gmp_logit = self.gmp_fc(F.adaptive_max_pool2d(x, 1).view(n, -1))
        # official: the first *parameter* of a spectral-normalised layer, i.e. the un-normalised weight_orig
        gap = x * self.gap_fc.weight_orig[:, :, None, None]
        gmp = x * self.gmp_fc.weight_orig[:, :, None, None]
        x = self.leaky_relu(self.conv1x1(torch.cat([gap, gmp], 1)))
        heatmap = x.sum(dim=1, keepdim=True)
        return self.conv(self.pad(x)), torch.cat([gap_logit, gmp_logit], 1), heatmap


# ---- checkpoints ------------------------------------------------------------------------------------------------

def infer_arch(state: Mapping[str, torch.Tensor]) -> dict:
    """``{"ngf", "n_blocks", "light", "img_size"}`` of a generator state dict in the official layout."""
    try:
        ngf = int(state["DownBlock.1.weight"].shape[0])
        fc_in = int(state["FC.0.weight"].shape[1])
    except KeyError as exc:
        raise ValueError(f"not a U-GAT-IT generator state dict (no {exc.args[0]})") from exc
    n_blocks = len({m.group(1) for k in state if (m := re.match(r"UpBlock1_(\d+)\.", k))})
    trunk = 4 * ngf
    light = fc_in == trunk
    side = math.isqrt(fc_in // trunk) if not light else 64
    return {"ngf": ngf, "n_blocks": n_blocks, "light": light, "img_size": side * 4}


def generator_state(checkpoint: Mapping, direction: str, name: str = "checkpoint") -> dict[str, torch.Tensor]:
    """The ``genA2B`` / ``genB2A`` state dict of an official U-GAT-IT checkpoint (the discriminators, and anything
    else in the file, are ignored). Raises WeightsCorruptError when the file does not hold that generator."""
    from ..errors import WeightsCorruptError

    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    key = f"gen{direction}"
    state = checkpoint.get(key)
    if not isinstance(state, Mapping):
        held = ", ".join(sorted(str(k) for k in checkpoint)[:8]) or "nothing"
        raise WeightsCorruptError(f"{name} is not a U-GAT-IT checkpoint: it has no {key!r} generator "
                                  f"(it holds {held}).")
    return dict(state)


def load_generator(path: str | Path, direction: str = "A2B") -> UGATITGenerator:
    """Build the generator the checkpoint at ``path`` holds for ``direction`` (width, blocks, light/full and size
    read from its tensors) and load it with ``strict=True`` (``torch.load(weights_only=True)``)."""
    from .. import weights
    from ..errors import WeightsCorruptError

    path = Path(path)
    state = generator_state(weights.load_state_dict(path), direction, path.name)
    try:
        arch = infer_arch(state)
    except ValueError as exc:
        raise WeightsCorruptError(f"{path.name}: gen{direction} {exc}") from exc
    model = UGATITGenerator(**arch)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsCorruptError(f"{path.name}: gen{direction} does not match the official U-GAT-IT generator "
                                  f"layout ({arch}): {str(exc)[:600]}") from exc
    return model.eval()


def build_ugatit(files: Mapping[str, Path] | None = None, direction: str = "A2B", light: bool = True,
                 ngf: int = 64, n_blocks: int = 4, img_size: int = 256) -> UGATITGenerator:
    """Registry builder. With ``files`` (one checkpoint in the official layout) the architecture comes from the
    file; without (random weights) ``light``/``ngf``/``n_blocks``/``img_size`` are used (light by default: the full
    model's 268 M-weight FC layer is 1 GiB of float32)."""
    if files:
        if len(files) != 1:
            raise ValueError(f"expected one U-GAT-IT checkpoint, got {sorted(files)}")
        return load_generator(next(iter(files.values())), direction)
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {DIRECTIONS}, got {direction!r}")
    return UGATITGenerator(ngf=ngf, n_blocks=n_blocks, img_size=img_size, light=light).eval()
