"""Style transfer with AdaIN (Huang & Belongie, ICCV 2017): images, video files and webcam frames.

    >>> from engine.pipelines.style import StyleTransfer
    >>> st = StyleTransfer()                                   # the registry's "adain" model, loaded on first use
    >>> img = st("content.jpg", ["style.jpg"], alpha=0.8)      # -> PIL RGB image
    >>> img = st("content.jpg", ["a.jpg", "b.jpg"], weights=[3, 1])          # style interpolation
    >>> img = st("content.jpg", ["fg.jpg", "bg.jpg"], mask="mask.png")       # spatial control
    >>> res = st.stylize_video("in.mp4", ["style.jpg"], smooth=0.8, progress=print)   # res.path: an .mp4

What happens (test-time procedure of the paper's code, specs/checkpoints.md section 1):
1. Inputs are decoded (EXIF, alpha on white), the content is shrunk to ``max_side`` (the long side, aspect kept;
   the paper's code instead resizes the short side to 512), the style's *short* side is set to ``style_size``
   (as in the paper's code; 0 keeps the size; the long side is then capped at ``STYLE_MAX_SIDE``).
2. Colour preservation (optional): each style image is recoloured with the CORAL transform so that its RGB mean and
   covariance match the content's (:func:`match_color`).
3. Encoder (VGG-19 to relu4_1); style statistics (per-channel mean, std) are cached per style image (a hash of its
   pixels) + ``style_size`` (+ the colour reference when colours are preserved), so a second content with the same
   style skips the style encoding entirely.
4. Target features (:func:`target_features`): AdaIN with one style, a weighted mix of styles (weights normalised to
   sum 1), or two styles routed by a mask; then the content-style trade-off ``alpha * t + (1 - alpha) * f_c``.
5. Decoder; the output is clamped to [0, 1] and cropped back to the content's size.

Large images: the content side is capped at ``MAX_SIDE_LIMIT``; above ``tile_size`` the encoder and decoder run in
overlapping tiles whose halos cover their receptive fields, and statistics are taken over the whole assembled
feature map, so a tiled result equals the untiled one (up to float rounding) -- no seams. On an out-of-memory error
the tile size is halved and the work retried, down to ``MIN_TILE``.

Video and webcam frames can be smoothed against flicker with an exponential moving average of the *content's
feature statistics* (relu4_1 mean and std used to normalise each frame), not of output pixels, so moving objects do
not ghost.
"""
from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import imageio, registry
from ..device import autocast, is_oom, select_device
from ..errors import InputError, ModelError
from ..models.adain import DOWNSCALE, mean_std
from ..queue import run_exclusive

Progress = Callable[[float, str], None] | None

MODEL_NAME = "adain"
MAX_SIDE_LIMIT = 4096       # content long side is never processed above this (a request above is clamped)
STYLE_MAX_SIDE = 2048       # style long side cap after the short-side resize
DEFAULT_TILE = 1024         # content larger than this (either side) is processed in tiles of this size
MIN_TILE = 256
MIN_SIDE = 16               # smaller inputs are padded up to this (relu4_1 needs >= 2 positions per side)
ENCODER_HALO = 40           # px of context around an encoder tile (exact from 32 on: checked in the tests)
DECODER_HALO = 4            # feature px of context around a decoder tile (decoder radius is 3 feature px)
VIDEO_MAX_FRAMES = 300
CACHE_SIZE = 64
# Pre-processing (``preprocess``): "app" (default) or "official" (naoto0804/pytorch-AdaIN test.py; its spatial
# control comes from the authors' Torch test.lua, as test.py has none). See :func:`official_resize`,
# :func:`feature_mask` and :func:`feature_mask_nearest`.
PREPROCESS = ("app", "official")
OFFICIAL_SIZE = 512         # test.py's --content_size and --style_size defaults


# ---------------------------------------------------------------------------------------------------------------
# Pure functions (no model): weights, colour, masks, target features


def normalise_weights(weights: Sequence[float] | None, count: int) -> list[float]:
    """Interpolation weights for ``count`` styles, normalised to sum 1 (None = equal weights).

    Raises InputError for a wrong number of weights, negative or non-finite weights, or an all-zero list.
    """
    if count < 1:
        raise InputError("Give at least one style image.")
    if weights is None or len(weights) == 0:
        return [1.0 / count] * count
    if len(weights) != count:
        raise InputError(f"{len(weights)} interpolation weights for {count} style images; give one per style.")
    w = [float(x) for x in weights]
    if any(not math.isfinite(x) or x < 0 for x in w):
        raise InputError("Style weights must be finite and not negative.")
    total = sum(w)
    if total <= 0:
        raise InputError("At least one style weight must be above zero.")
    return [x / total for x in w]


def _sqrtm_psd(m: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive-definite matrix via SVD (U diag(sqrt s) V^T)."""
    u, s, vh = torch.linalg.svd(m)
    return u @ torch.diag(s.sqrt()) @ vh


def match_color(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CORAL colour transfer: ``source`` recoloured so its RGB mean and covariance match ``target``'s.

    Both (3, H, W) or (1, 3, H, W) float in [0, 1] (sizes may differ). With F the 3xN pixel colours standardised per
    channel (std with Bessel's correction) and C = F F^T + I (a sum over pixels): out = C_t^1/2 C_s^-1/2 F_s, then
    scaled by the target's per-channel std and shifted by its mean. Computed in float64; not clamped (as in the
    paper's code). Returns the source's shape and dtype.
    """
    shape, dtype = source.shape, source.dtype
    src = source.reshape(3, -1).double()
    tgt = target.reshape(3, -1).double()
    if src.shape[1] < 2 or tgt.shape[1] < 2:
        raise InputError("Images are too small for colour preservation.")

    def standardise(x):
        mean = x.mean(dim=1, keepdim=True)
        std = x.std(dim=1, keepdim=True).clamp_min(1e-8)  # a flat channel stays 0 instead of NaN
        return (x - mean) / std, mean, std

    src_n, _, _ = standardise(src)
    tgt_n, tgt_mean, tgt_std = standardise(tgt)
    eye = torch.eye(3, dtype=torch.float64, device=src.device)
    cov_s = src_n @ src_n.T + eye
    cov_t = tgt_n @ tgt_n.T + eye
    transfer = _sqrtm_psd(cov_t) @ torch.linalg.inv(_sqrtm_psd(cov_s))
    out = (transfer @ src_n) * tgt_std + tgt_mean
    return out.reshape(shape).to(dtype)


def mask_array(mask: Any, size: tuple[int, int]) -> np.ndarray:
    """A binary mask (H, W) bool at ``size`` = (W, H) from an upload or a painted layer.

    Accepts a path, bytes, PIL image or array. RGBA with real transparency (a painted layer): painted = alpha > 0.
    Otherwise (a black-and-white mask file): selected = luminance > 127. Resized with nearest neighbour.
    """
    if isinstance(mask, np.ndarray) and mask.ndim == 2 and mask.dtype == bool:
        img = Image.fromarray(mask.astype(np.uint8) * 255, "L")
    elif isinstance(mask, np.ndarray) and mask.ndim == 2 and mask.dtype.kind == "f":
        img = Image.fromarray((np.clip(mask, 0, 1) * 255).astype(np.uint8), "L")
    else:
        rgba = imageio.load_rgba(mask)
        alpha = np.asarray(rgba.getchannel("A"))
        if alpha.min() < 255:
            img = Image.fromarray(((alpha > 0) * 255).astype(np.uint8), "L")
        else:
            img = rgba.convert("L")
    if img.size != tuple(size):
        img = img.resize(tuple(size), Image.Resampling.NEAREST)
    return np.asarray(img) > 127


def mask_from_layers(layers: Sequence[Any] | None, size: tuple[int, int]) -> np.ndarray | None:
    """Union of the painted pixels (alpha > 0) of image-editor layers (RGBA arrays / images) at ``size`` = (W, H);
    None when nothing is painted."""
    mask = np.zeros((size[1], size[0]), bool)
    for layer in layers or []:
        if layer is None:
            continue
        arr = np.asarray(layer)
        if arr.ndim != 3 or arr.shape[2] != 4:
            continue
        painted = arr[..., 3] > 0
        if painted.any():
            mask |= mask_array(painted, size)
    return mask if mask.any() else None


def official_size(w: int, h: int, size: int | None) -> tuple[int, int]:
    """(W, H) after test.py's ``transforms.Resize(size)``: the shorter side becomes ``size``, the longer
    ``int(size * long / short)`` (truncated); unchanged for 0/None."""
    if not size:
        return w, h
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = int(size), int(int(size) * long / short)
    return (new_short, new_long) if w <= h else (new_long, new_short)


def official_resize(img: Image.Image, size: int | None) -> Image.Image:
    """The resize of the official test.py (``transforms.Resize(size)`` on a PIL image): :func:`official_size`,
    PIL bilinear; unchanged when the size already matches. Enlarges small images, as test.py does."""
    new = official_size(*img.size, size)
    return img if new == img.size else img.resize(new, Image.Resampling.BILINEAR)


def resize_capped(img: Image.Image, size: int | None, cap: int) -> Image.Image:
    """:func:`official_resize`, except that when its long side would exceed ``cap`` the image is instead scaled
    (one bilinear resize, sides rounded) so that its long side is ``cap``."""
    w, h = img.size
    new = official_size(w, h, size)
    if max(new) > cap:
        scale = cap / max(w, h)
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return img if new == img.size else img.resize(new, Image.Resampling.BILINEAR)


def _app_resize(img: Image.Image, limit: int) -> Image.Image:
    """The app's content rule: shrink so the longer side is at most ``limit`` (never enlarge), with the same
    filter as the official resize (PIL bilinear); the other side rounded."""
    if max(img.size) <= limit:
        return img
    scale = limit / max(img.size)
    return img.resize((max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                      Image.Resampling.BILINEAR)


def feature_mask_nearest(mask: np.ndarray, feat_hw: tuple[int, int]) -> torch.Tensor:
    """The official spatial-control mask rule (test.lua: ``image.scale(mask, W, H, 'simple')``): nearest-neighbour
    sampling of the (H, W) bool mask, whatever its size, at the feature grid -- feature cell (j, i) takes mask pixel
    (int(j * H / h), int(i * W / w)) computed in float32, i.e. the top-left pixel of its 8x8 block for a mask of
    the content's size. Returns (1, 1, h, w) float 0/1."""
    h, w = feat_hw
    H, W = mask.shape
    rows = np.minimum((np.arange(h, dtype=np.float32) * (np.float32(H) / np.float32(h))).astype(np.int64), H - 1)
    cols = np.minimum((np.arange(w, dtype=np.float32) * (np.float32(W) / np.float32(w))).astype(np.int64), W - 1)
    return torch.from_numpy(mask[np.ix_(rows, cols)].astype(np.float32))[None, None]


def feature_mask(mask: np.ndarray, feat_hw: tuple[int, int]) -> torch.Tensor:
    """(H, W) bool image mask -> (1, 1, h, w) float 0/1 at feature resolution (area average >= 0.5).

    The app's rule: each feature cell (an 8x8 pixel block) goes to the region covering most of it. Unlike the
    official nearest-neighbour sampling (:func:`feature_mask_nearest`, which reads only the block's top-left pixel)
    it does not shift a boundary by up to 7 px, and a stroke thinner than 8 px is kept or
    dropped by how much of a block it covers, not by where it happens to cross the sampling grid."""
    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    h, w = feat_hw
    ph, pw = h * DOWNSCALE - m.shape[-2], w * DOWNSCALE - m.shape[-1]
    if ph > 0 or pw > 0:
        m = F.pad(m, (0, max(pw, 0), 0, max(ph, 0)), mode="replicate")
    m = F.interpolate(m, size=(h, w), mode="area")
    return (m >= 0.5).float()


Stats = tuple[torch.Tensor, torch.Tensor]  # (mean, std), each (1, C, 1, 1) float32


def target_features(fc: torch.Tensor, style_stats: Sequence[Stats], weights: Sequence[float] | None = None,
                    alpha: float = 1.0, mask: torch.Tensor | None = None,
                    content_stats: Stats | None = None, biased: bool = False) -> torch.Tensor:
    """The decoder's input t for content features ``fc`` (1, C, h, w).

    - one style: AdaIN(f_c, s) = sigma_s (f_c - mu_c) / sigma_c + mu_s;
    - several styles: sum_k w_k AdaIN(f_c, s_k) with w normalised to sum 1 (AdaIN is affine in (mu_s, sigma_s), so
      this equals one AdaIN with the weighted statistics, which is how it is computed);
    - ``mask`` (1, 1, h, w) 0/1 with exactly two styles: where mask = 1, AdaIN with style 0 using the content's
      statistics over the masked positions; elsewhere style 1 with the statistics of the rest;
    - then t = alpha t + (1 - alpha) f_c.
    ``content_stats`` overrides the content's own (whole-image) statistics (temporal smoothing).
    ``biased`` (with a mask; the official test.lua rule): each region's content is normalised by its biased
    variance, ``(f - mu) / sqrt(var_N + eps)``, as the Torch code's batch-norm does; the style statistics passed
    in are then expected biased too (:func:`lua_style_stats`).
    """
    fc = fc.float()
    if mask is None:
        w = normalise_weights(weights, len(style_stats))
        s_mean = sum(wk * m for wk, (m, _) in zip(w, style_stats))
        s_std = sum(wk * s for wk, (_, s) in zip(w, style_stats))
        c_mean, c_std = content_stats if content_stats is not None else mean_std(fc)
        t = (fc - c_mean) / c_std * s_std + s_mean
    else:
        if len(style_stats) != 2:
            raise InputError("Spatial control needs exactly two styles: one for the painted region, one for the rest.")
        m = mask.to(fc.device, fc.dtype)
        t = torch.zeros_like(fc)
        for region, (s_mean, s_std) in ((m, style_stats[0]), (1.0 - m, style_stats[1])):
            c_mean, c_std = _biased_masked_stats(fc, region) if biased else mean_std(fc, region)
            t = t + region * ((fc - c_mean) / c_std * s_std + s_mean)
    if alpha >= 1.0:
        return t
    return alpha * t + (1.0 - alpha) * fc


def _biased_masked_stats(feat: torch.Tensor, region: torch.Tensor, eps: float = 1e-5) -> Stats:
    """Mean and sqrt(biased variance + eps) of (1, C, h, w) features over the positions where ``region`` = 1."""
    m = region.reshape(1, 1, -1)
    flat = feat.reshape(feat.shape[0], feat.shape[1], -1)
    count = m.sum(dim=2, keepdim=True)
    mean = (flat * m).sum(dim=2, keepdim=True) / count
    var = (((flat - mean) ** 2) * m).sum(dim=2, keepdim=True) / count
    return mean.unsqueeze(-1), (var + eps).sqrt().unsqueeze(-1)


def lua_style_stats(feat: torch.Tensor) -> Stats:
    """Style statistics as the official Torch AdaIN module takes them: mean and *biased* std, no eps."""
    flat = feat.float().reshape(feat.shape[0], feat.shape[1], -1)
    var, mean = torch.var_mean(flat, dim=2, unbiased=False)
    return mean[..., None, None], var.sqrt()[..., None, None]


# ---------------------------------------------------------------------------------------------------------------
# Tiling


def _spans(length: int, tile: int) -> list[tuple[int, int]]:
    return [(start, min(start + tile, length)) for start in range(0, length, tile)]


def _ceil8(n: int) -> int:
    return -(-n // DOWNSCALE)


def _pad_input(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (bottom/right) a side shorter than MIN_SIDE up to it (reflect where possible, else replicate).

    Other sizes are left alone, as in the paper's code: the ceil-mode pools give ceil(H/8) feature rows and the
    decoder 8 * ceil(H/8) output rows, which are cropped back to H.
    """
    h, w = x.shape[-2:]
    ph, pw = max(0, MIN_SIDE - h), max(0, MIN_SIDE - w)
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


def encode_tiled(encoder: torch.nn.Module, x: torch.Tensor, tile: int | None, halo: int = ENCODER_HALO) -> torch.Tensor:
    """relu4_1 features of ``x`` (1, 3, H, W), computed in tiles of ``tile`` px.

    Each tile is encoded with ``halo`` px of real context on every side (clipped at the image border, where the
    encoder's own reflection padding and ceil-mode pooling act exactly as for the whole image); its core is pasted
    into the output. Tile origins are multiples of 8 so the max-pool grids line up.
    Returns float32 (1, 512, ceil(H/8), ceil(W/8)).
    """
    h, w = x.shape[-2:]
    if tile is None or (h <= tile and w <= tile):
        return encoder(x).float()
    tile = max(DOWNSCALE, tile // DOWNSCALE * DOWNSCALE)
    out = None
    for y0, y1 in _spans(h, tile):
        for x0, x1 in _spans(w, tile):
            ya, yb, xa, xb = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
            f = encoder(x[..., ya:yb, xa:xb]).float()
            if out is None:
                out = torch.empty(1, f.shape[1], _ceil8(h), _ceil8(w), device=f.device)
            d = DOWNSCALE
            fy, fx = (y0 - ya) // d, (x0 - xa) // d
            ny, nx = _ceil8(y1) - y0 // d, _ceil8(x1) - x0 // d
            out[..., y0 // d:y0 // d + ny, x0 // d:x0 // d + nx] = f[..., fy:fy + ny, fx:fx + nx]
    return out


def decode_tiled(decoder: torch.nn.Module, t: torch.Tensor, tile: int | None, halo: int = DECODER_HALO) -> torch.Tensor:
    """Decode features (1, 512, h, w) in tiles of ``tile`` output px (``tile / 8`` feature px) with ``halo``
    feature px of context. Returns float32 (1, 3, 8h, 8w)."""
    h, w = t.shape[-2:]
    if tile is None or (h * DOWNSCALE <= tile and w * DOWNSCALE <= tile):
        return decoder(t).float()
    ft = max(2, tile // DOWNSCALE)
    out = torch.empty(1, 3, h * DOWNSCALE, w * DOWNSCALE, device=t.device)
    d = DOWNSCALE
    for y0, y1 in _spans(h, ft):
        for x0, x1 in _spans(w, ft):
            ya, yb, xa, xb = max(0, y0 - halo), min(h, y1 + halo), max(0, x0 - halo), min(w, x1 + halo)
            img = decoder(t[..., ya:yb, xa:xb]).float()
            out[..., y0 * d:y1 * d, x0 * d:x1 * d] = \
                img[..., (y0 - ya) * d:(y1 - ya) * d, (x0 - xa) * d:(x1 - xa) * d]
    return out


# ---------------------------------------------------------------------------------------------------------------
# Results and state


@dataclass
class StyleResult:
    image: Image.Image
    info: dict = field(default_factory=dict)


@dataclass
class VideoResult:
    path: Path
    frames: int
    fps: float
    size: tuple[int, int] | None     # (W, H) of the processed frames
    info: dict = field(default_factory=dict)


@dataclass
class StreamState:
    """Per-session webcam state: EMA of the content statistics and the colour reference (numpy, CPU)."""

    mean: np.ndarray | None = None
    std: np.ndarray | None = None
    color_ref: np.ndarray | None = None
    frames: int = 0


def _image_hash(img: Image.Image) -> str:
    digest = hashlib.blake2b(digest_size=16)
    digest.update(f"{img.mode}{img.size}".encode())
    digest.update(img.tobytes())
    return digest.hexdigest()


_FILE_HASHES: OrderedDict[tuple, str] = OrderedDict()   # (path, size, mtime_ns) -> _image_hash of its pixels
_FILE_HASHES_LOCK = threading.Lock()
FILE_HASHES_SIZE = 64


def style_identity(style: Any) -> tuple[str, Callable[[], Image.Image]]:
    """(hash of the style's decoded pixels, a function that returns the decoded image).

    A style given as a file path is decoded and hashed once per (path, size, modification time): a webcam stream
    passes the same style file with every frame, and decoding + hashing a 512 px style each time cost 16 ms of
    Magenta's 84 ms per 384 px frame (in-process, 2-core CPU). Other inputs (arrays, PIL images, bytes) are
    hashed each call. The hash is of pixels, so two files with the same picture share cached statistics."""
    key = None
    if isinstance(style, (str, Path)):
        path = Path(style)
        try:
            st = path.stat()
            key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        except OSError:
            pass           # load_image below reports the missing / unreadable file
    with _FILE_HASHES_LOCK:
        known = _FILE_HASHES.get(key) if key is not None else None
        if known is not None:
            _FILE_HASHES.move_to_end(key)
            return known, lambda: imageio.load_image(style)
    img = imageio.load_image(style)
    digest = _image_hash(img)
    if key is not None:
        with _FILE_HASHES_LOCK:
            _FILE_HASHES[key] = digest
            while len(_FILE_HASHES) > FILE_HASHES_SIZE:
                _FILE_HASHES.popitem(last=False)
    return digest, lambda: img


def _resize_style(img: Image.Image, style_size: int | None, preprocess: str = "app") -> Image.Image:
    """The official resize (short side ``style_size``, long side truncated, PIL bilinear; 0/None = keep) in both
    modes, in one resize with the long side capped -- at STYLE_MAX_SIDE in the app (bounded cost for panoramas),
    at MAX_SIDE_LIMIT in the official mode -- applied before anything is enlarged, so a thin 4000 x 8 strip
    becomes 2048 x 4, never 256000 x 512 first."""
    return resize_capped(img, style_size, STYLE_MAX_SIDE if preprocess == "app" else MAX_SIDE_LIMIT)


def check_preprocess(preprocess: str | None) -> str:
    preprocess = preprocess or "app"
    if preprocess not in PREPROCESS:
        raise InputError(f"pre-processing must be one of {', '.join(PREPROCESS)}; got {preprocess!r}.")
    return preprocess


def _own_size(mask: Any) -> tuple[int, int]:
    """(W, H) of a mask given as an array, PIL image, path or bytes."""
    if isinstance(mask, np.ndarray):
        return mask.shape[1], mask.shape[0]
    return imageio.load_rgba(mask).size


def _as_list(styles) -> list:
    if styles is None:
        return []
    if isinstance(styles, (list, tuple)):
        return [s for s in styles if s is not None]
    return [styles]


def plan_video(video, styles, *, weights, alpha, smooth, max_side, max_frames, max_seconds):
    """Validate a style-video request and plan it (shared by the AdaIN and Magenta pipelines and the Ray client).

    Returns ``(styles, weights, limit, info, fps, total)``: the style list, normalised weights, the frame max side,
    the probed video, its frame rate and the number of frames that will be processed (0 when unknown).
    """
    from .. import videoio

    styles = _as_list(styles)
    if not styles:
        raise InputError("Give at least one style image.")
    if video is None:
        raise InputError("Give a video file (MP4, WebM, MOV, AVI, ...).")
    if not 0.0 <= smooth < 1.0:
        raise InputError("smooth must be in [0, 1).")
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"alpha must be between 0 and 1; got {alpha}.")
    norm_w = normalise_weights(weights, len(styles))
    limit = min(int(max_side), MAX_SIDE_LIMIT) if max_side else MAX_SIDE_LIMIT
    info = videoio.probe(video)
    fps = float(info.fps)
    total = info.frames or (int(info.seconds * fps) if info.seconds else 0)
    if max_seconds and max_seconds > 0:
        total = min(total or 10**9, max(1, int(max_seconds * fps + 1e-6)))
    if max_frames and max_frames > 0:
        total = min(total or 10**9, max_frames)
    return styles, norm_w, limit, info, fps, total


# ---------------------------------------------------------------------------------------------------------------
# The pipeline


class StyleTransfer:
    """AdaIN style transfer; one instance per model. Thread-safe; model work runs under the engine lock.

    ``model``: an ``engine.models.adain.AdaIN`` (default: ``registry.load_model("adain")`` on first use).
    ``precision``: "auto" (autocast bf16/fp16 on an accelerator, fp32 on CPU) or "fp32".
    ``tile_size``: content above this many px (either side) is processed in tiles; None disables tiling.
    ``cache_size``: how many style statistics are kept (LRU); 0 disables the cache.
    """

    def __init__(self, model: torch.nn.Module | None = None, device: str | torch.device | None = None, *,
                 precision: str = "auto", tile_size: int | None = DEFAULT_TILE, cache_size: int = CACHE_SIZE):
        if precision not in ("auto", "fp32"):
            raise ValueError("precision must be 'auto' or 'fp32'")
        self._model = model
        self._device = torch.device(device) if device is not None else None
        self.precision = precision
        self.tile_size = tile_size
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple, Stats] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_hits = 0
        self.cache_misses = 0

    # ---- model / device ----
    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = registry.load_model(MODEL_NAME, self._device)
        return self._model

    @property
    def device(self) -> torch.device:
        if self._model is not None:
            return next(self._model.parameters()).device
        return self._device or select_device()

    def _autocast(self):
        return autocast(self.device, enabled=self.precision == "auto")

    # ---- cache ----
    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self.cache_hits = self.cache_misses = 0

    def cache_info(self) -> dict:
        with self._cache_lock:
            return {"entries": len(self._cache), "hits": self.cache_hits, "misses": self.cache_misses,
                    "max": self.cache_size}

    def _cache_get(self, key):
        with self._cache_lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                self.cache_hits += 1
                return self._cache[key]
            self.cache_misses += 1
            return None

    def _cache_put(self, key, value: Stats) -> None:
        if self.cache_size <= 0:
            return
        with self._cache_lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    # ---- model steps (call under the engine lock) ----
    def _run_tiled(self, fn, arg: torch.Tensor, full_px: int):
        """Run fn(arg, tile); on out-of-memory halve the tile size and retry (down to MIN_TILE)."""
        tile = self.tile_size
        while True:
            try:
                with torch.inference_mode(), self._autocast():
                    return fn(arg, tile)
            except (RuntimeError, MemoryError) as exc:
                if not is_oom(exc):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                current = min(tile or full_px, full_px)
                if current <= MIN_TILE:
                    raise ModelError("Out of memory even with the smallest tiles: lower the max-side setting.") from exc
                tile = max(MIN_TILE, current // 2 // DOWNSCALE * DOWNSCALE)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """relu4_1 features (float32) of an image tensor (1, 3, H, W) in [0, 1] (tiled above ``tile_size``)."""
        x = x.to(self.device)
        return self._run_tiled(lambda img, tile: encode_tiled(self.model.encoder, img, tile), x, max(x.shape[-2:]))

    def decode(self, t: torch.Tensor) -> torch.Tensor:
        """Decoder output (float32, 8x the feature size) of target features (tiled above ``tile_size``)."""
        return self._run_tiled(lambda feat, tile: decode_tiled(self.model.decoder, feat, tile), t,
                               max(t.shape[-2:]) * DOWNSCALE)

    def _model_token(self) -> int:
        model = self.model
        token = getattr(model, "_style_cache_token", None)
        if token is None:
            token = int.from_bytes(hashlib.blake2b(str((id(model), time.time_ns())).encode(), digest_size=8).digest(),
                                   "big")
            model._style_cache_token = token
        return token

    def style_stats(self, style: Any, *, style_size: int | None = 512, color_ref: torch.Tensor | None = None,
                    color_key: str | None = None, preprocess: str = "app",
                    biased: bool = False) -> tuple[Stats, bool]:
        """(mean, std) of a style image's relu4_1 features, and whether they came from the cache.

        Key: the model, a hash of the decoded style pixels, ``style_size``, and (with colour preservation) the key
        of the colour reference ``color_ref`` (1, 3, H, W) the style is recoloured to, the pre-processing and the
        statistics rule (``biased``: :func:`lua_style_stats`, for the official spatial control).
        """
        digest, load = style_identity(style)
        key = (self._model_token(), digest, int(style_size or 0), color_key if color_ref is not None else None,
               check_preprocess(preprocess), bool(biased))
        cached = self._cache_get(key) if self.cache_size > 0 else None
        if cached is not None:
            return cached, True
        img = load()
        x = imageio.pil_to_tensor(_resize_style(img, style_size, preprocess))
        if color_ref is not None:
            x = match_color(x, color_ref)
        x, _ = _pad_input(x)
        stats = (lua_style_stats if biased else mean_std)(run_exclusive(self.encode, x))
        self._cache_put(key, stats)
        return stats, False

    # ---- images ----
    def stylize_tensor(self, content: torch.Tensor, style_stats: Sequence[Stats], *, weights=None, alpha: float = 1.0,
                       mask: np.ndarray | None = None, content_stats: Stats | None = None,
                       return_stats: bool = False, mask_rule: str = "area"):
        """Stylise a content tensor (1, 3, H, W) in [0, 1] with precomputed style statistics.

        Returns the decoder output (1, 3, H, W) float32 on the engine device, not clamped (and, with
        ``return_stats``, the content's whole-image feature statistics, used for temporal smoothing).
        ``mask_rule``: "area" (the app's, :func:`feature_mask`) or "official" (test.lua: nearest-neighbour sampling
        of the mask at its own size, :func:`feature_mask_nearest`, and biased region statistics; the style
        statistics must then come from ``style_stats(..., biased=True)``).
        """
        if not 0.0 <= alpha <= 1.0:
            raise InputError(f"alpha must be between 0 and 1; got {alpha}.")

        stats_list, fmask_needed = list(style_stats), mask is not None

        def work():
            x, (h, w) = _pad_input(content.to(self.device))
            fc = self.encode(x)
            use, fmask = stats_list, None
            if fmask_needed and mask_rule == "official":
                fmask = feature_mask_nearest(mask, fc.shape[-2:]).to(fc.device)
            elif fmask_needed:
                m = mask
                if x.shape[-2:] != (h, w):
                    m = np.pad(m, ((0, x.shape[-2] - h), (0, x.shape[-1] - w)), mode="edge")
                fmask = feature_mask(m, fc.shape[-2:]).to(fc.device)
            if fmask_needed:
                n_fg = int(fmask.sum())
                if n_fg < 2 or n_fg > fmask.numel() - 2:  # (almost) one region only: its style everywhere
                    use, fmask = [stats_list[0] if n_fg * 2 >= fmask.numel() else stats_list[1]], None
            own = mean_std(fc) if return_stats else None
            t = target_features(fc, use, weights if not fmask_needed else None, alpha, fmask, content_stats,
                                biased=mask_rule == "official")
            out = self.decode(t)[..., :h, :w]
            return out, own

        out, stats_c = run_exclusive(work)
        return (out, stats_c) if return_stats else out

    def run(self, content: Any, styles: Any, *, weights: Sequence[float] | None = None, alpha: float = 1.0,
            preserve_color: bool = False, mask: Any = None, max_side: int | None = 512,
            style_size: int | None = 512, progress: Progress = None, preprocess: str = "app",
            content_size: int | None = OFFICIAL_SIZE) -> StyleResult:
        """Stylise ``content`` with one or more ``styles`` (paths, bytes, PIL images or arrays).

        ``weights``: interpolation weights (normalised); ``mask``: with exactly two styles, the region (white /
        painted) that gets ``styles[0]``; the rest gets ``styles[1]``. Returns the image and an info dict.

        ``preprocess``:
        - "app" (default): the content's *longer* side is shrunk to ``max_side`` (0/None = keep; capped at
          MAX_SIDE_LIMIT; never enlarged), so the cost is bounded whatever the aspect ratio and small images stay
          sharp; the style's shorter side is set to ``style_size`` as in test.py (long side capped at
          STYLE_MAX_SIDE); masks go to the feature grid by area majority (:func:`feature_mask`);
        - "official": exactly test.py's sizes and filters -- content and style with the *shorter* side set to
          ``content_size`` / ``style_size`` (512 by default; small images are enlarged), the longer side
          truncated, PIL bilinear (:func:`official_resize`); ``max_side`` is ignored (the content's long side is
          still capped at MAX_SIDE_LIMIT, noted in the info). Spatial control (not in test.py) follows the
          authors' test.lua: the mask sampled nearest-neighbour at the feature grid and biased statistics.
        Both modes crop the decoder output to the content's size: test.py saves the uncropped 8*ceil(side/8)
        output, whose top-left part is the same image.
        """
        start = time.perf_counter()
        styles = _as_list(styles)
        if not styles:
            raise InputError("Give at least one style image.")
        if content is None:
            raise InputError("Give a content image.")
        if not 0.0 <= float(alpha) <= 1.0:
            raise InputError(f"alpha must be between 0 and 1; got {alpha}.")
        if mask is not None and len(styles) != 2:
            raise InputError("Spatial control needs exactly two styles: one for the masked region, one for the rest.")
        norm_w = None if mask is not None else normalise_weights(weights, len(styles))
        if norm_w is not None and 0.0 in norm_w:  # a style with weight 0 contributes nothing: do not encode it
            styles, norm_w = zip(*[(s, w) for s, w in zip(styles, norm_w) if w > 0])
            styles, norm_w = list(styles), list(norm_w)
        preprocess = check_preprocess(preprocess)
        info: dict[str, Any] = {"preprocess": preprocess}
        img = imageio.load_image(content)
        original = img.size
        if preprocess == "official":
            if max(official_size(*img.size, content_size)) > MAX_SIDE_LIMIT:
                info["capped_at"] = MAX_SIDE_LIMIT
            img = resize_capped(img, content_size, MAX_SIDE_LIMIT)
            if img.size != original:
                info["resized_from"] = original
        else:
            limit = min(int(max_side), MAX_SIDE_LIMIT) if max_side else MAX_SIDE_LIMIT
            if max(img.size) > limit:
                info["resized_from"] = img.size
            img = _app_resize(img, limit)
            if "resized_from" in info and (not max_side or int(max_side) > MAX_SIDE_LIMIT):
                info["capped_at"] = MAX_SIDE_LIMIT
        x = imageio.pil_to_tensor(img)
        if mask is None:
            mask_np = None
        elif preprocess == "official":  # test.lua samples the mask at its own size (that of the original content)
            mask_np = mask_array(mask, _own_size(mask))
        else:
            mask_np = mask_array(mask, img.size)
        official_mask = preprocess == "official" and mask_np is not None

        color_key = _image_hash(img) if preserve_color else None
        stats, hits = [], 0
        for k, s in enumerate(styles):
            if progress:
                progress(0.6 * k / len(styles), f"style {k + 1}/{len(styles)}")
            st, hit = self.style_stats(s, style_size=style_size, color_ref=x if preserve_color else None,
                                       color_key=color_key, preprocess=preprocess, biased=official_mask)
            stats.append(st)
            hits += hit
        if progress:
            progress(0.6, "stylising")
        out = self.stylize_tensor(x, stats, weights=norm_w, alpha=float(alpha), mask=mask_np,
                                  mask_rule="official" if official_mask else "area")
        if progress:
            progress(1.0, "done")
        tile = self.tile_size
        info.update({
            "size": img.size, "styles": len(styles), "weights": norm_w, "style_cache_hits": hits,
            "tiled": bool(tile and max(img.size) > tile), "tile_size": tile,
            "spatial_control": mask_np is not None, "preserve_color": bool(preserve_color),
            "mask_rule": None if mask_np is None else ("nearest, biased statistics (test.lua)" if official_mask
                                                       else "area majority"),
            "seconds": round(time.perf_counter() - start, 3), "device": str(self.device),
        })
        return StyleResult(imageio.tensor_to_pil(out), info)

    def __call__(self, content, styles, **kwargs) -> Image.Image:
        return self.run(content, styles, **kwargs).image

    # ---- video ----
    def stylize_video(self, video: str | Path, styles: Any, *, out_path: str | Path | None = None,
                      weights: Sequence[float] | None = None, alpha: float = 1.0, preserve_color: bool = False,
                      max_side: int | None = 512, style_size: int | None = 512,
                      max_frames: int | None = VIDEO_MAX_FRAMES, max_seconds: float | None = None,
                      smooth: float = 0.0, progress: Progress = None) -> VideoResult:
        """Stylise a video file frame by frame into a browser-playable MP4 (engine.videoio: H.264, yuv420p).

        At most ``max_frames`` frames / ``max_seconds`` seconds are processed; audio is not copied. ``smooth`` in
        [0, 1): EMA factor of the content feature statistics across frames (0 = off). With ``preserve_color`` the
        styles are recoloured once, to the first frame's colours (so the style statistics are encoded once).
        """
        from .. import videoio

        styles, norm_w, limit, info, fps, total = plan_video(
            video, styles, weights=weights, alpha=alpha, smooth=smooth, max_side=max_side, max_frames=max_frames,
            max_seconds=max_seconds)
        start = time.perf_counter()
        stats, ema, size = None, None, None
        if progress:
            progress(0.0, "encoding styles")
        with videoio.VideoWriter(out_path, info.fps) as writer:
            for frame in videoio.read_frames(video, max_frames=max_frames or None, max_seconds=max_seconds or None,
                                             max_side=limit):
                x = imageio.pil_to_tensor(frame)
                if stats is None:
                    size = (frame.shape[1], frame.shape[0])
                    ref = Image.fromarray(frame)
                    color_key = _image_hash(ref) if preserve_color else None
                    stats = [self.style_stats(s, style_size=style_size, color_ref=x if preserve_color else None,
                                              color_key=color_key)[0] for s in styles]
                y, own = self.stylize_tensor(x, stats, weights=norm_w, alpha=float(alpha),
                                             content_stats=ema if smooth > 0 else None, return_stats=True)
                if smooth > 0:
                    ema = own if ema is None else (smooth * ema[0] + (1 - smooth) * own[0],
                                                   smooth * ema[1] + (1 - smooth) * own[1])
                writer.write(imageio.tensor_to_numpy(y))
                if progress:
                    progress(min(writer.frames / max(total, 1), 1.0), f"frame {writer.frames}/{total or '?'}")
        seconds = time.perf_counter() - start
        if progress:
            progress(1.0, "done")
        return VideoResult(writer.path, writer.frames, fps, size,
                           {"seconds": round(seconds, 2), "smooth": smooth,
                            "frames_per_second": round(writer.frames / max(seconds, 1e-9), 2),
                            "source_frames": info.frames, "source_seconds": info.seconds})

    # ---- webcam ----
    def stylize_frame(self, frame: Any, styles: Any, state: StreamState | None = None, *,
                      weights: Sequence[float] | None = None, alpha: float = 1.0, preserve_color: bool = False,
                      max_side: int | None = 384, style_size: int | None = 256,
                      smooth: float = 0.0) -> tuple[np.ndarray, StreamState]:
        """One webcam frame -> (stylised frame (H, W, 3) uint8, new state). ``smooth``: EMA factor of the content
        feature statistics carried in ``state`` (0 = off). With ``preserve_color`` the styles are recoloured to the
        first frame of the stream (kept in the state) so the cached statistics stay valid."""
        state = state if isinstance(state, StreamState) else StreamState()
        styles = _as_list(styles)
        if frame is None:
            raise InputError("No webcam frame.")
        if not styles:
            raise InputError("Give at least one style image.")
        if not 0.0 <= smooth < 1.0:
            raise InputError("smooth must be in [0, 1).")
        limit = min(int(max_side), MAX_SIDE_LIMIT) if max_side else MAX_SIDE_LIMIT
        img = imageio.resize_max_side(imageio.load_image(frame), limit)
        x = imageio.pil_to_tensor(img)
        color_ref = color_key = None
        if preserve_color:
            if state.color_ref is None:
                state.color_ref = np.asarray(img)
            ref = Image.fromarray(state.color_ref)
            color_ref, color_key = imageio.pil_to_tensor(ref), _image_hash(ref)
        stats = [self.style_stats(s, style_size=style_size, color_ref=color_ref, color_key=color_key)[0]
                 for s in styles]
        ema = None
        if smooth > 0 and state.mean is not None and state.mean.shape[1] == stats[0][0].shape[1]:
            ema = (torch.from_numpy(state.mean).to(self.device), torch.from_numpy(state.std).to(self.device))
        y, own = self.stylize_tensor(x, stats, weights=weights, alpha=float(alpha), content_stats=ema,
                                     return_stats=True)
        if smooth > 0:
            new = own if ema is None else (smooth * ema[0] + (1 - smooth) * own[0], smooth * ema[1] + (1 - smooth) * own[1])
            state.mean, state.std = new[0].cpu().numpy(), new[1].cpu().numpy()
        else:
            state.mean = state.std = None
        state.frames += 1
        return imageio.tensor_to_numpy(y), state


_default: StyleTransfer | None = None
_default_lock = threading.Lock()


def default_pipeline() -> StyleTransfer:
    """The process-wide pipeline on the engine device (one style cache shared by the app's tabs and API calls)."""
    global _default
    with _default_lock:
        if _default is None:
            _default = StyleTransfer()
        return _default


_pipelines: dict[str, Any] = {}


def pipeline_for(name: str | None = None):
    """The process-wide pipeline of style model ``name`` (None = "adain"). A registry entry names its pipeline
    class in ``defaults["pipeline"]`` ("module:Class", constructed with ``model_name=name``); default: AdaIN's."""
    if not name or name == MODEL_NAME:
        return default_pipeline()
    import importlib

    spec = registry.spec(name)
    if spec.task != "style":
        raise InputError(f"{name!r} is not a style-transfer model.")
    with _default_lock:
        if name not in _pipelines:
            module, cls = spec.defaults.get("pipeline", "engine.pipelines.style:StyleTransfer").split(":")
            factory = getattr(importlib.import_module(module), cls)
            _pipelines[name] = factory(model_name=name) if cls != "StyleTransfer" else factory()
        return _pipelines[name]


def stylize(content, styles, model: str | None = None, **kwargs) -> Image.Image:
    """One-call API: ``stylize(content, styles, alpha=..., weights=..., preserve_color=..., mask=..., max_side=...,
    model="adain" | "magenta")``."""
    return pipeline_for(model)(content, styles, **kwargs)
