"""AdaIN arbitrary style transfer: the normalised VGG-19 encoder, the decoder and the AdaIN operation.

Paper: Xun Huang and Serge Belongie, "Arbitrary Style Transfer in Real-time with Adaptive Instance
Normalization", ICCV 2017 (https://arxiv.org/abs/1703.06868). Checkpoint layout: the official PyTorch port's
``vgg_normalised.pth`` and ``decoder.pth`` (github.com/naoto0804/pytorch-AdaIN), described in
``specs/checkpoints.md`` section 1. This file is our own implementation of that layout.

Tensors
- encoder input: (N, 3, H, W) float RGB in [0, 1] (the 1x1 first conv folds in the RGB->BGR swap and the Caffe
  mean, so no normalisation is applied here). Output: relu4_1 features (N, 512, ceil(H/8), ceil(W/8)).
- decoder input: (N, 512, h, w) features; output (N, 3, 8h, 8w), unbounded (clamp to [0, 1] to display).

Encoder loading (strict): the official ``vgg_normalised.pth`` holds the whole VGG-19 conv stack up to relu5_4
(conv keys 0 ... 51). We build that whole 53-layer ``nn.Sequential`` *on the meta device* (no memory), load the
file into it with ``strict=True, assign=True`` -- so every key and shape of the file is checked -- and then keep
its first 31 modules (up to relu4_1), the only part inference uses. A file that already holds exactly the
31-module prefix is also accepted (checked strictly against that prefix). Random init (``files=None``) builds only
the 31-module prefix.

Decoder layout: the official ``decoder.pth`` is the state dict of a 29-module ``nn.Sequential`` (indices 0-28):
ReflPad, Conv 512->256, ReLU, Upsample x2, then (ReflPad, Conv, ReLU) x3 at 256, ReflPad, Conv 256->128, ReLU,
Upsample, (ReflPad, Conv, ReLU) 128->128 and 128->64, Upsample, ReflPad, Conv 64->64, ReLU, ReflPad, Conv 64->3.
Conv keys: 1, 5, 8, 11, 14, 18, 21, 25, 28. (specs/checkpoints.md section 1 lists 31 modules with conv keys
1, 5, 8, 11, 16, 20, 23, 27, 30; that table is inconsistent -- it has a ReLU directly after a ReflPad at 13/14 --
and does not match the official ``net.py`` the file was saved from, which loads it strictly. We follow net.py.)
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

ENCODER_LAYERS_USED = 31  # modules 0..30 of the VGG stack: up to relu4_1
FEATURE_CHANNELS = 512
DOWNSCALE = 8  # three 2x2 max-pools between the input and relu4_1
EPS = 1e-5  # added to the (unbiased) variance, as in the paper's code

# Channel plan of the normalised VGG-19 after the 1x1 colour conv: "M" = 2x2 max-pool (ceil_mode).
_VGG_PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]
# Decoder plan: (in, out) per 3x3 conv, "U" = nearest x2 upsampling. No ReLU after the last conv.
_DECODER_PLAN = [(512, 256), "U", (256, 256), (256, 256), (256, 256), (256, 128), "U", (128, 128), (128, 64), "U",
                 (64, 64), (64, 3)]

# Indices of conv layers in the official files (the tests check our modules against these).
ENCODER_CONV_INDICES = (0, 2, 5, 9, 12, 16, 19, 22, 25, 29, 32, 35, 38, 42, 45, 48, 51)
DECODER_CONV_INDICES = (1, 5, 8, 11, 14, 18, 21, 25, 28)
# Feature taps of the style loss (module index of relu1_1, relu2_1, relu3_1, relu4_1).
RELU_TAPS = {"relu1_1": 3, "relu2_1": 10, "relu3_1": 17, "relu4_1": 30}


def build_vgg_encoder(full: bool = False) -> nn.Sequential:
    """The normalised VGG-19 as an ``nn.Sequential`` in the official indexing.

    ``full=True`` gives all 53 modules (up to relu5_4, the layout of ``vgg_normalised.pth``);
    otherwise the first 31 (up to relu4_1).
    """
    layers: list[nn.Module] = [nn.Conv2d(3, 3, kernel_size=1)]
    channels = 3
    for item in _VGG_PLAN:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2, padding=0, ceil_mode=True))
        else:
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(channels, item, kernel_size=3), nn.ReLU()]
            channels = item
    assert len(layers) == 53
    return nn.Sequential(*(layers if full else layers[:ENCODER_LAYERS_USED]))


def build_decoder() -> nn.Sequential:
    """The AdaIN decoder: 29 modules, conv keys 1, 5, 8, 11, 14, 18, 21, 25, 28 (see the module docstring)."""
    layers: list[nn.Module] = []
    for i, item in enumerate(_DECODER_PLAN):
        if item == "U":
            layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
            continue
        cin, cout = item
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, kernel_size=3)]
        if i != len(_DECODER_PLAN) - 1:
            layers.append(nn.ReLU())
    assert len(layers) == 29
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------------------------
# The AdaIN operation


def mean_std(feat: torch.Tensor, mask: torch.Tensor | None = None, eps: float = EPS):
    """Per-sample, per-channel mean and std over spatial positions.

    ``feat`` (N, C, H, W). std = sqrt(unbiased variance + eps) (Bessel's correction; eps on the variance).
    With ``mask`` (N or 1, 1, H, W) of 0/1 the statistics are taken over the positions where mask == 1 only.
    Returns (mean, std), each (N, C, 1, 1), in float32 (or float64 when ``feat`` is float64).
    """
    if feat.dim() != 4:
        raise ValueError(f"mean_std expects (N, C, H, W); got {tuple(feat.shape)}")
    if feat.dtype not in (torch.float32, torch.float64):
        feat = feat.float()
    n, c = feat.shape[:2]
    flat = feat.reshape(n, c, -1)
    if mask is None:
        if flat.shape[-1] < 2:
            raise ValueError("need at least 2 spatial positions for an unbiased variance")
        var, mean = torch.var_mean(flat, dim=2, unbiased=True)
    else:
        m = mask.to(flat.dtype).reshape(mask.shape[0], 1, -1).expand(n, 1, flat.shape[-1])
        count = m.sum(dim=2)  # (N, 1)
        if bool((count < 2).any()):
            raise ValueError("the mask selects fewer than 2 feature positions")
        mean = (flat * m).sum(dim=2) / count
        var = (((flat - mean.unsqueeze(-1)) ** 2) * m).sum(dim=2) / (count - 1)
    std = (var + eps).sqrt()
    return mean.reshape(n, c, 1, 1), std.reshape(n, c, 1, 1)


def adain_with_stats(content: torch.Tensor, content_mean: torch.Tensor, content_std: torch.Tensor,
                     style_mean: torch.Tensor, style_std: torch.Tensor) -> torch.Tensor:
    """sigma_s * (c - mu_c) / sigma_c + mu_s, with all statistics given (N or 1, C, 1, 1)."""
    return (content - content_mean) / content_std * style_std + style_mean


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = EPS) -> torch.Tensor:
    """AdaIN(c, s) on feature maps (N, C, H, W); the style's spatial size may differ from the content's."""
    if content.shape[:2] != style.shape[:2]:
        raise ValueError(f"content {tuple(content.shape)} and style {tuple(style.shape)} differ in N or C")
    cm, cs = mean_std(content, eps=eps)
    sm, ss = mean_std(style, eps=eps)
    return adain_with_stats(content.float(), cm, cs, sm, ss)


# ---------------------------------------------------------------------------------------------------------------
# The network pair


class AdaIN(nn.Module):
    """Encoder (VGG-19 up to relu4_1, 31 modules) + decoder. ``forward(content, style, alpha)`` is the paper's
    single-style test path; the pipeline (engine/pipelines/style.py) adds caching, interpolation, masks, tiling.
    """

    def __init__(self, encoder: nn.Sequential | None = None, decoder: nn.Sequential | None = None):
        super().__init__()
        self.encoder = encoder if encoder is not None else build_vgg_encoder(full=False)
        self.decoder = decoder if decoder is not None else build_decoder()
        if len(self.encoder) != ENCODER_LAYERS_USED:
            raise ValueError(f"encoder must have {ENCODER_LAYERS_USED} modules (up to relu4_1)")
        self.eval().requires_grad_(False)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, t: torch.Tensor) -> torch.Tensor:
        return self.decoder(t)

    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError("alpha must be in [0, 1]")
        fc = self.encode(content)
        t = adain(fc, self.encode(style))
        t = alpha * t + (1.0 - alpha) * fc.float()
        return self.decode(t.to(fc.dtype))


# ---------------------------------------------------------------------------------------------------------------
# Loading


def _layout_error(what: str, exc: Exception):
    from ..errors import WeightsCorruptError

    return WeightsCorruptError(f"{what} does not have the layout of the official AdaIN release: {exc}")


def encoder_from_state_dict(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """Strictly load a ``vgg_normalised.pth`` state dict; returns the 31-module encoder up to relu4_1.

    The full file (conv keys up to 51) is loaded into the whole 53-module stack built on the meta device
    (strict, assign=True: the file's tensors become the parameters), which is then cut to its first 31 modules.
    A state dict of exactly the 31-module prefix (keys < 31) is loaded strictly into that prefix.
    """
    indices = {int(k.split(".", 1)[0]) for k in state if k.split(".", 1)[0].isdigit()}
    full = bool(indices) and max(indices) >= ENCODER_LAYERS_USED
    with torch.device("meta"):
        stack = build_vgg_encoder(full=full)
    try:
        stack.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise _layout_error("vgg_normalised.pth", exc) from exc
    return nn.Sequential(*list(stack.children())[:ENCODER_LAYERS_USED]).float()


def decoder_from_state_dict(state: dict[str, torch.Tensor]) -> nn.Sequential:
    """Strictly load a ``decoder.pth`` state dict."""
    with torch.device("meta"):
        dec = build_decoder()
    try:
        dec.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as exc:
        raise _layout_error("decoder.pth", exc) from exc
    return dec.float()


def build_adain(files: dict[str, Path] | None = None) -> AdaIN:
    """Registry builder. ``files`` maps the roles "encoder" and "decoder" (the registry's names; the manifest keys
    "adain-vgg" / "adain-decoder" are accepted too) to ``vgg_normalised.pth`` and ``decoder.pth``.
    None = random init (only the 31-module encoder prefix is built, so this is fast on CPU)."""
    if files is None:
        return AdaIN()
    from .. import weights

    def pick(*names: str) -> Path:
        for name in names:
            if name in files:
                return Path(files[name])
        raise KeyError(f"build_adain needs one of {names} in files; got {sorted(files)}")

    encoder = encoder_from_state_dict(weights.load_state_dict(pick("encoder", "adain-vgg")))
    decoder = decoder_from_state_dict(weights.load_state_dict(pick("decoder", "adain-decoder")))
    return AdaIN(encoder, decoder)


def random_state_dicts(seed: int = 0, full_encoder: bool = True) -> tuple[dict, dict]:
    """Random state dicts in the official layout (tests and benchmarks): (vgg_normalised, decoder)."""
    gen = torch.Generator().manual_seed(seed)

    def fill(module: nn.Module) -> dict:
        out = {}
        for k, v in module.state_dict().items():
            fan_in = v[0].numel() if v.dim() > 1 else 1
            out[k] = (torch.randn(v.shape, generator=gen) * (2.0 / fan_in) ** 0.5 if v.dim() > 1
                      else torch.randn(v.shape, generator=gen) * 0.01)
        return out

    with torch.device("meta"):
        enc, dec = build_vgg_encoder(full=full_encoder), build_decoder()
    return fill(enc), fill(dec)
