"""Image I/O and validation shared by every pipeline.

Conventions: PIL images in, numpy ``uint8`` (H, W, 3) or PIL out at the API boundary; tensors inside the engine are
float32 (N, 3, H, W) in [0, 1] unless a model's docstring says otherwise.

Alpha rule: transparent pixels are composited over white (what a viewer shows), never silently dropped to black.
16-bit images are scaled to 8 bits by their full range (value / 257), not clipped.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import config
from .errors import InputError

ImageSource = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]
MIN_SIDE = 8  # anything smaller cannot go through a generator's down-sampling
BACKGROUND = (255, 255, 255)


def _check_pixels(width: int, height: int, max_pixels: int | None) -> None:
    limit = max_pixels or config.max_pixels()
    if width * height > limit:
        raise InputError(
            f"Image is {width}x{height} = {width * height / 1e6:.1f} megapixels, over the limit of "
            f"{limit / 1e6:.0f} MP. Resize it first (or raise ENGINE_MAX_PIXELS).")


def _open(src: ImageSource, max_pixels: int | None) -> Image.Image:
    if isinstance(src, Image.Image):
        _check_pixels(*src.size, max_pixels)
        return src
    if isinstance(src, np.ndarray):
        return _from_array(src, max_pixels)
    if isinstance(src, (bytes, bytearray)):
        if len(src) == 0:
            raise InputError("The uploaded file is empty (0 bytes).")
        fp, name = io.BytesIO(src), "upload"
    else:
        path = Path(src)
        if not path.is_file():
            raise InputError(f"No such image file: {path.name}")
        if path.stat().st_size == 0:
            raise InputError(f"{path.name} is empty (0 bytes).")
        fp, name = path, path.name
    try:
        with warnings.catch_warnings():
            # the size check is ours (next line, before any pixel is decoded); PIL's error above twice its own
            # MAX_IMAGE_PIXELS still stops bombs (the app sets that to the engine limit: limit_decoders())
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(fp)
            _check_pixels(*img.size, max_pixels)
            img.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InputError(f"{name} is too large to decode safely (decompression bomb guard): {exc}") from exc
    except UnidentifiedImageError as exc:
        raise InputError(f"{name} is not an image format we can read (JPEG, PNG, WebP, BMP, GIF, TIFF...).") from exc
    except InputError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{name} could not be decoded (truncated or corrupt file): {exc}") from exc
    return img


def limit_decoders() -> None:
    """Make PIL refuse, before allocating, any image above twice the engine's pixel limit, wherever it is decoded
    (also in Gradio's own preprocessing of numpy/PIL-typed inputs such as webcam frames, which runs before a
    handler can check the size). Called once by the app."""
    Image.MAX_IMAGE_PIXELS = config.max_pixels()


def _from_array(arr: np.ndarray, max_pixels: int | None) -> Image.Image:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise InputError(f"Expected an image array of shape (H, W), (H, W, 3) or (H, W, 4); got {arr.shape}.")
    _check_pixels(arr.shape[1], arr.shape[0], max_pixels)
    if arr.dtype == np.uint16:
        arr = (arr.astype(np.float32) / 257.0).round()
    elif arr.dtype.kind == "f":
        scale = 255.0 if float(np.nanmax(arr, initial=0.0)) <= 1.0 + 1e-6 else 1.0
        arr = np.nan_to_num(arr.astype(np.float32)) * scale
    elif arr.dtype == bool:
        arr = arr.astype(np.float32) * 255.0
    arr = np.clip(arr, 0, 255).astype(np.uint8)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[arr.shape[2]]
    return Image.fromarray(arr[..., 0] if mode == "L" else arr, mode)


def _sixteen_to_eight(img: Image.Image) -> Image.Image:
    arr = np.asarray(img)
    if arr.dtype.kind in "iu" and arr.max(initial=0) > 255:
        arr = arr.astype(np.float32) / 257.0
    elif arr.dtype.kind == "f":
        top = float(arr.max(initial=0.0))
        arr = arr * (255.0 / top if top > 255 else (255.0 if top <= 1.0 else 1.0))
    return Image.fromarray(np.clip(arr, 0, 255).round().astype(np.uint8), "L")


def to_rgb(img: Image.Image, background: tuple[int, int, int] = BACKGROUND) -> Image.Image:
    """Any PIL mode (1, L, LA, P, PA, RGBA, CMYK, YCbCr, I;16, I, F, ...) -> RGB, alpha composited on ``background``."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _sixteen_to_eight(img).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("LA", "PA", "La", "RGBa"):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = Image.new("RGB", img.size, background)
        canvas.paste(img, mask=img.getchannel("A"))
        return canvas
    return img.convert("RGB")


def check_image(src: ImageSource, max_pixels: int | None = None) -> tuple[int, int, str]:
    """Decode ``src`` fully with the checks of :func:`load_image` (empty, truncated or corrupt, not an image,
    decompression bombs in the pixels or in metadata chunks such as iCCP/zTXt, over the pixel limit), without
    converting it; returns (width, height, PIL mode). The app runs it on every uploaded image before Gradio decodes
    it."""
    img = _open(src, max_pixels)
    size = (*img.size, img.mode)
    if not isinstance(src, Image.Image):
        img.close()
    return size


def load_image(src: ImageSource, max_pixels: int | None = None, *, min_side: int = 1) -> Image.Image:
    """Open and validate an image from a path, bytes, PIL image or array; returns an upright RGB PIL image.

    EXIF orientation is applied; the first frame of an animation is used; alpha is composited on white.
    Raises InputError for empty, corrupt, non-image, too large or too small inputs.
    """
    img = _open(src, max_pixels)
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block must not make an otherwise good image unusable
        pass
    img = to_rgb(img)
    if min(img.size) < min_side:
        raise InputError(f"Image is {img.width}x{img.height}; both sides must be at least {min_side} pixels.")
    return img


def load_rgba(src: ImageSource, max_pixels: int | None = None) -> Image.Image:
    """Like load_image but keeps transparency (for edits, stickers and masks): returns RGBA."""
    img = _open(src, max_pixels)
    if getattr(img, "n_frames", 1) > 1:
        img.seek(0)
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        img = _sixteen_to_eight(img)
    return img.convert("RGBA")


def as_numpy_rgb(img: ImageSource) -> np.ndarray:
    """(H, W, 3) uint8 RGB from any accepted source."""
    return np.asarray(load_image(img), dtype=np.uint8)


def resize_max_side(img: Image.Image, max_side: int | None) -> Image.Image:
    """Shrink so that the longer side is at most ``max_side`` (aspect kept; never enlarges; 0/None = keep)."""
    if not max_side or max(img.size) <= max_side:
        return img
    scale = max_side / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


def resize_short_side(img: Image.Image, short_side: int | None) -> Image.Image:
    """Resize so that the shorter side equals ``short_side`` (0/None = keep)."""
    if not short_side or min(img.size) == short_side:
        return img
    scale = short_side / min(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    return img.resize(size, Image.Resampling.LANCZOS)


# ---- tensors (torch is imported lazily so that numpy/PIL-only callers stay light) ----

def pil_to_tensor(img: Image.Image | np.ndarray):
    """RGB PIL image or (H, W, 3) uint8 array -> float32 tensor (1, 3, H, W) in [0, 1]."""
    import torch

    arr = np.asarray(img.convert("RGB") if isinstance(img, Image.Image) else img, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"Expected an RGB image; got an array of shape {arr.shape}.")
    return torch.from_numpy(np.array(arr, dtype=np.uint8, copy=True)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)


UINT8_RULES = ("round", "truncate")


def tensor_to_numpy(t, rule: str = "round") -> np.ndarray:
    """(1, 3, H, W) or (3, H, W) tensor in [0, 1] -> (H, W, 3) uint8, clamped, then ``rule``:

    - "round" (default): to the nearest level, an unbiased quantisation;
    - "truncate": ``floor(x * 255)``, what the official pix2pix / CycleGAN / CUT / GAN Compression code does
      (``util.tensor2im``: ``(y + 1) / 2 * 255`` then ``astype(np.uint8)``). It is on average half a level darker
      than rounding; use it to reproduce the authors' saved images (and FIDs computed from them) exactly.
    """
    if rule not in UINT8_RULES:
        raise ValueError(f"uint8 rule must be one of {UINT8_RULES}; got {rule!r}")
    if t.dim() == 4:
        if t.shape[0] != 1:
            raise ValueError(f"tensor_to_numpy takes one image; got a batch of {t.shape[0]}")
        t = t[0]
    t = t.detach().float().clamp(0, 1).mul(255)
    t = t.round() if rule == "round" else t.floor()
    return t.byte().permute(1, 2, 0).cpu().numpy()


def tensor_to_pil(t) -> Image.Image:
    return Image.fromarray(tensor_to_numpy(t), "RGB")


def pad_to_multiple(t, multiple: int, mode: str = "reflect"):
    """Pad (N, C, H, W) on the bottom/right so H and W are multiples of ``multiple``.

    Returns (padded, (H, W)) where (H, W) is the original size for :func:`crop_to`. Reflection padding needs the
    pad to be smaller than the side, so very thin images fall back to replicate padding for the remainder.
    """
    import torch.nn.functional as F

    h, w = t.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return t, (h, w)
    if mode == "reflect" and (ph >= h or pw >= w):
        mode = "replicate"
    return F.pad(t, (0, pw, 0, ph), mode=mode), (h, w)


def crop_to(t, size: tuple[int, int]):
    """Undo :func:`pad_to_multiple`: keep the top-left ``size`` = (H, W)."""
    h, w = size
    return t[..., :h, :w]
