"""Style transfer with Magenta's arbitrary stylisation network (Ghiasi et al., BMVC 2017): images, video, webcam.

Same interface as :class:`engine.pipelines.style.StyleTransfer` (``run``, ``stylize_video``, ``stylize_frame``,
``cache_info``), selected by the registry entry's ``defaults["pipeline"]``.

    >>> from engine.pipelines.style import pipeline_for
    >>> st = pipeline_for("magenta")
    >>> img = st("content.jpg", ["style.jpg"], alpha=0.8)

What happens
1. Decoding and sizes as for AdaIN: the content's long side is shrunk to ``max_side`` (capped at MAX_SIDE_LIMIT);
   it is reflect-padded to a multiple of 4 (the network's two stride-2 convs and two x2 upsamplings) and cropped
   back. Each style is centre-cropped to a square and resized to 256 x 256 (the release's style input; the
   ``style_size`` setting of AdaIN does not apply).
2. Colour preservation: the style is recoloured to the content's colours with the same CORAL transform as AdaIN
   (``match_color``) before its style vector is predicted.
3. Style vectors (100-d) are cached per style image hash (+ the colour reference).
4. Interpolation: the weighted mean of the style vectors (weights normalised to sum 1), as in the paper (Sec. 5.3).
   Content-style trade-off ``alpha``: the paper's mix with the content image's own style vector,
   ``alpha * s + (1 - alpha) * v(content)`` (v(content) from the centre-cropped content at 256 px).
5. Spatial control (exactly two styles): per-pixel normalisation parameters -- every norm layer uses
   ``m * gamma(s1) + (1 - m) * gamma(s2)`` (and the same for beta) with the mask m area-resized to the layer; one
   pass, statistics over the whole image.
6. Large content (above ``tile_size`` per side): every convolution runs in tiles read from the reflect-padded
   whole feature map and the instance-norm statistics are taken over the whole map, so the result equals one pass
   (up to float rounding). This bounds convolution workspace, not activation memory (the feature maps are held
   whole: ~32 bytes per content pixel at the 8-channel full-resolution layers).
7. Video / webcam flicker smoothing: an EMA of every norm layer's mean and variance across frames (and of the
   content's style vector when alpha < 1), carried in the per-session state. Measured (160 px face, La Muse, 10
   frames): it does not reduce pixel-noise flicker (mean |frame-to-frame change| 9.45 -> 9.50 at smooth 0.8 with
   sigma-6 input noise; the network's local response to noise is not a statistics effect), and per-frame statistics
   already cancel global brightness jitter; it only keeps the normalisation steady when a frame's statistics jump.
Precision: float32 on every device. Autocast is not used: we could not measure its error on a GPU here, and the
network is small (0.82 G multiply-adds for the transformer per 256 x 256 content, 0.39 G for the style network,
counted per conv layer).
"""
from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import imageio, registry
from ..device import is_oom, select_device
from ..errors import InputError, ModelError
from ..models.magenta import MULTIPLE, STYLE_SIZE, NormStats
from ..queue import run_exclusive
from .style import (CACHE_SIZE, DEFAULT_TILE, MAX_SIDE_LIMIT, MIN_TILE, VIDEO_MAX_FRAMES, Progress, StyleResult,
                    VideoResult, _as_list, _image_hash, mask_array, match_color, normalise_weights,
                    plan_video, style_identity)

MODEL_NAME = "magenta"
MIN_SIDE = 16


@dataclass
class MagentaStreamState:
    """Per-session webcam state: the last frame's norm statistics, content vector and colour reference (CPU)."""

    stats: list | None = None
    content_vec: torch.Tensor | None = None
    color_ref: np.ndarray | None = None
    frames: int = 0


def square_style(img: Image.Image, size: int = STYLE_SIZE) -> Image.Image:
    """Centre square crop resized to ``size`` x ``size`` (Lanczos): the release's style preprocessing."""
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.LANCZOS)


def _pad4(x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad bottom/right to a multiple of 4 and at least MIN_SIDE (reflect where possible, else replicate)."""
    h, w = x.shape[-2:]
    th, tw = max(MIN_SIDE, -(-h // MULTIPLE) * MULTIPLE), max(MIN_SIDE, -(-w // MULTIPLE) * MULTIPLE)
    ph, pw = th - h, tw - w
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    return x, (h, w)


class MagentaStyleTransfer:
    """Magenta arbitrary stylisation; one instance per model. Thread-safe; model work runs under the engine lock."""

    def __init__(self, model: torch.nn.Module | None = None, device: str | torch.device | None = None, *,
                 tile_size: int | None = DEFAULT_TILE, cache_size: int = CACHE_SIZE, model_name: str = MODEL_NAME):
        self._model = model
        self._device = torch.device(device) if device is not None else None
        self.model_name = model_name
        self.tile_size = tile_size
        self.cache_size = cache_size
        self.precision = "fp32"
        self._cache: OrderedDict[tuple, torch.Tensor] = OrderedDict()
        self._cache_lock = threading.Lock()
        self.cache_hits = self.cache_misses = 0

    @property
    def model(self) -> torch.nn.Module:
        if self._model is None:
            self._model = registry.load_model(self.model_name, self._device)
        return self._model

    @property
    def device(self) -> torch.device:
        if self._model is not None:
            return next(self._model.parameters()).device
        return self._device or select_device()

    # ---- cache ----
    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self.cache_hits = self.cache_misses = 0

    def cache_info(self) -> dict:
        with self._cache_lock:
            return {"entries": len(self._cache), "hits": self.cache_hits, "misses": self.cache_misses,
                    "max": self.cache_size}

    def _cached(self, key, compute) -> tuple[torch.Tensor, bool]:
        if self.cache_size > 0:
            with self._cache_lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    self.cache_hits += 1
                    return self._cache[key], True
                self.cache_misses += 1
        value = compute()
        if self.cache_size > 0:
            with self._cache_lock:
                self._cache[key] = value
                while len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return value, False

    # ---- model steps ----
    def _predict(self, img: Image.Image, color_ref: torch.Tensor | None = None) -> torch.Tensor:
        x = imageio.pil_to_tensor(square_style(img))
        if color_ref is not None:
            x = match_color(x, color_ref).clamp(0, 1)

        def work():
            with torch.inference_mode():
                return self.model.predict(x.to(self.device)).float()

        return run_exclusive(work)

    def style_vector(self, style: Any, *, color_ref: torch.Tensor | None = None,
                     color_key: str | None = None) -> tuple[torch.Tensor, bool]:
        """(1, 100, 1, 1) style vector of an image and whether it came from the cache."""
        digest, load = style_identity(style)
        key = (id(self.model), "style", digest, color_key if color_ref is not None else None)
        return self._cached(key, lambda: self._predict(load(), color_ref))

    def content_vector(self, img: Image.Image) -> torch.Tensor:
        return self._cached((id(self.model), "content", _image_hash(img)), lambda: self._predict(img))[0]

    def _transform(self, x: torch.Tensor, style, stats: NormStats | None) -> torch.Tensor:
        tile = self.tile_size
        full = max(x.shape[-2:])
        while True:
            try:
                with torch.inference_mode():
                    return self.model.transform(x, style, stats=stats, tile=tile).float()
            except (RuntimeError, MemoryError) as exc:
                if not is_oom(exc):
                    raise
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                current = min(tile or full, full)
                if current <= MIN_TILE:
                    raise ModelError("Out of memory even with the smallest tiles: lower the max-side setting.") from exc
                tile = max(MIN_TILE, current // 2)
                if stats is not None:
                    stats.used.clear()

    def stylize_tensor(self, content: torch.Tensor, vectors: Sequence[torch.Tensor], *, weights=None,
                       mask: np.ndarray | None = None, stats: NormStats | None = None) -> torch.Tensor:
        """Content (1, 3, H, W) in [0, 1] + style vectors -> (1, 3, H, W) float32 in (0, 1) on the engine device.

        One vector set is mixed with ``weights``; with ``mask`` (H, W bool) exactly two vectors: per-pixel params.
        """
        def work():
            x, (h, w) = _pad4(content.to(self.device))
            if mask is not None:
                if len(vectors) != 2:
                    raise InputError("Spatial control needs exactly two styles.")
                m = torch.from_numpy(np.asarray(mask, np.float32))[None, None].to(self.device)
                if m.shape[-2:] != x.shape[-2:]:
                    m = F.pad(m, (0, x.shape[-1] - w, 0, x.shape[-2] - h), mode="replicate")
                style = (torch.cat([vectors[0], vectors[1]]).to(self.device), torch.cat([m, 1 - m], dim=1))
            else:
                wts = normalise_weights(weights, len(vectors))
                style = sum(wk * v.to(self.device) for wk, v in zip(wts, vectors))
            return self._transform(x, style, stats)[..., :h, :w]

        return run_exclusive(work)

    # ---- images ----
    def _prepare(self, content, styles, weights, alpha, mask, max_side):
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
        if norm_w is not None and 0.0 in norm_w:
            styles, norm_w = map(list, zip(*[(s, w) for s, w in zip(styles, norm_w) if w > 0]))
        limit = min(int(max_side), MAX_SIDE_LIMIT) if max_side else MAX_SIDE_LIMIT
        return styles, norm_w, limit

    def _mix_content(self, vectors: list[torch.Tensor], norm_w, alpha: float, c_vec: torch.Tensor | None):
        """Apply the trade-off to each vector: alpha * s + (1 - alpha) * v(content) (mixing commutes with it)."""
        if alpha >= 1.0 or c_vec is None:
            return vectors
        return [alpha * v + (1.0 - alpha) * c_vec.to(v) for v in vectors]

    def run(self, content: Any, styles: Any, *, weights: Sequence[float] | None = None, alpha: float = 1.0,
            preserve_color: bool = False, mask: Any = None, max_side: int | None = 512,
            style_size: int | None = None, progress: Progress = None) -> StyleResult:
        """Stylise ``content`` with ``styles``; same arguments as StyleTransfer.run (``style_size`` is ignored:
        the style network takes a 256 x 256 crop)."""
        start = time.perf_counter()
        styles, norm_w, limit = self._prepare(content, styles, weights, alpha, mask, max_side)
        info: dict[str, Any] = {}
        img = imageio.load_image(content)
        if max(img.size) > limit:
            info["resized_from"] = img.size
        img = imageio.resize_max_side(img, limit)
        if "resized_from" in info and (not max_side or int(max_side) > MAX_SIDE_LIMIT):
            info["capped_at"] = MAX_SIDE_LIMIT
        x = imageio.pil_to_tensor(img)
        mask_np = mask_array(mask, img.size) if mask is not None else None
        color_key = _image_hash(img) if preserve_color else None
        vectors, hits = [], 0
        for k, s in enumerate(styles):
            if progress:
                progress(0.5 * k / len(styles), f"style {k + 1}/{len(styles)}")
            v, hit = self.style_vector(s, color_ref=x if preserve_color else None, color_key=color_key)
            vectors.append(v)
            hits += hit
        c_vec = self.content_vector(img) if float(alpha) < 1.0 else None
        vectors = self._mix_content(vectors, norm_w, float(alpha), c_vec)
        if mask_np is not None and (mask_np.all() or not mask_np.any()):
            vectors, mask_np = [vectors[0] if mask_np.all() else vectors[1]], None
        if progress:
            progress(0.5, "stylising")
        out = self.stylize_tensor(x, vectors, weights=norm_w if mask is None else None, mask=mask_np)
        if progress:
            progress(1.0, "done")
        tile = self.tile_size
        info.update({
            "size": img.size, "styles": len(styles), "weights": norm_w, "style_cache_hits": hits,
            "tiled": bool(tile and max(img.size) > tile), "tile_size": tile,
            "spatial_control": mask is not None, "preserve_color": bool(preserve_color),
            "seconds": round(time.perf_counter() - start, 3), "device": str(self.device), "model": self.model_name,
        })
        return StyleResult(imageio.tensor_to_pil(out), info)

    def __call__(self, content, styles, **kwargs) -> Image.Image:
        return self.run(content, styles, **kwargs).image

    # ---- video / webcam ----
    def _frame(self, img: Image.Image, styles, norm_w, alpha, color_ref, color_key, state: MagentaStreamState,
               smooth: float) -> np.ndarray:
        x = imageio.pil_to_tensor(img)
        vectors = [self.style_vector(s, color_ref=color_ref, color_key=color_key)[0] for s in styles]
        c_vec = None
        if alpha < 1.0:
            c_vec = self._predict(img).cpu()
            if smooth > 0 and state.content_vec is not None:
                c_vec = smooth * state.content_vec + (1 - smooth) * c_vec
            state.content_vec = c_vec if smooth > 0 else None
        vectors = self._mix_content(vectors, norm_w, alpha, c_vec)
        stats = NormStats(state.stats if smooth > 0 else None, smooth)
        y = self.stylize_tensor(x, vectors, weights=norm_w, stats=stats)
        state.stats = [(m.cpu(), v.cpu()) for m, v in stats.used] if smooth > 0 else None
        state.frames += 1
        return imageio.tensor_to_numpy(y)

    def stylize_video(self, video: str | Path, styles: Any, *, out_path: str | Path | None = None,
                      weights: Sequence[float] | None = None, alpha: float = 1.0, preserve_color: bool = False,
                      max_side: int | None = 512, style_size: int | None = None,
                      max_frames: int | None = VIDEO_MAX_FRAMES, max_seconds: float | None = None,
                      smooth: float = 0.0, progress: Progress = None) -> VideoResult:
        """Stylise a video file frame by frame into an MP4 (as StyleTransfer.stylize_video). ``smooth``: EMA of
        the norm statistics across frames; colours are preserved relative to the first frame."""
        from .. import videoio

        styles, norm_w, limit, info, fps, total = plan_video(
            video, styles, weights=weights, alpha=alpha, smooth=smooth, max_side=max_side, max_frames=max_frames,
            max_seconds=max_seconds)
        start = time.perf_counter()
        state, size, color_ref, color_key = MagentaStreamState(), None, None, None
        if progress:
            progress(0.0, "predicting style vectors")
        with videoio.VideoWriter(out_path, info.fps) as writer:
            for frame in videoio.read_frames(video, max_frames=max_frames or None, max_seconds=max_seconds or None,
                                             max_side=limit):
                img = Image.fromarray(frame)
                if size is None:
                    size = img.size
                    if preserve_color:
                        color_ref, color_key = imageio.pil_to_tensor(img), _image_hash(img)
                writer.write(self._frame(img, styles, norm_w, float(alpha), color_ref, color_key, state, smooth))
                if progress:
                    progress(min(writer.frames / max(total, 1), 1.0), f"frame {writer.frames}/{total or '?'}")
        seconds = time.perf_counter() - start
        if progress:
            progress(1.0, "done")
        return VideoResult(writer.path, writer.frames, fps, size,
                           {"seconds": round(seconds, 2), "smooth": smooth,
                            "frames_per_second": round(writer.frames / max(seconds, 1e-9), 2),
                            "source_frames": info.frames, "source_seconds": info.seconds})

    def stylize_frame(self, frame: Any, styles: Any, state: MagentaStreamState | None = None, *,
                      weights: Sequence[float] | None = None, alpha: float = 1.0, preserve_color: bool = False,
                      max_side: int | None = 384, style_size: int | None = None,
                      smooth: float = 0.0) -> tuple[np.ndarray, MagentaStreamState]:
        """One webcam frame -> (stylised frame (H, W, 3) uint8, new state); ``smooth`` = EMA factor of the norm
        statistics carried in ``state`` (a state of another model is replaced by a fresh one)."""
        state = state if isinstance(state, MagentaStreamState) else MagentaStreamState()
        styles = _as_list(styles)
        if frame is None:
            raise InputError("No webcam frame.")
        if not styles:
            raise InputError("Give at least one style image.")
        if not 0.0 <= smooth < 1.0:
            raise InputError("smooth must be in [0, 1).")
        limit = min(int(max_side), MAX_SIDE_LIMIT) if max_side else MAX_SIDE_LIMIT
        img = imageio.resize_max_side(imageio.load_image(frame), limit)
        color_ref = color_key = None
        if preserve_color:
            if state.color_ref is None:
                state.color_ref = np.asarray(img)
            ref = Image.fromarray(state.color_ref)
            color_ref, color_key = imageio.pil_to_tensor(ref), _image_hash(ref)
        norm_w = normalise_weights(weights, len(styles))
        return self._frame(img, styles, norm_w, float(alpha), color_ref, color_key, state, smooth), state
