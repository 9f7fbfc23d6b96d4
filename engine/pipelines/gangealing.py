"""GANgealing at test time (Peebles et al., CVPR 2022): congeal images, dense correspondence through the
congealed space, and propagation of an edit painted on the model's average image to images, video and webcam.

    >>> from engine.pipelines.gangealing import congeal_image, Propagator
    >>> report = congeal_image("gangealing-cat", img)          # aligned image, flow colour map, quality score
    >>> prop = Propagator("gangealing-cat", edit_rgba)          # edit painted on the cat average (any size, square)
    >>> out = prop(frame)                                      # (H, W, 3) uint8 -> same, with the edit blended in

Procedure (official test-time settings, specs/checkpoints.md section 4)
1. Framing: the image is edge-padded to a centred square (the release's ``border_pad`` pre-processing, so nothing
   is cropped) and resized to the working resolution S (256 = the official ``real_size``; 512 for finer output).
2. Congealing: similarity STN iterated ``iters`` times, then the flow STN; padding mode per model. Single-head
   models run the image and its mirror and keep the smoother residual flow (flip inference); clustering models
   (car, horse) ask the cluster classifier for the cluster and the mirror. Result: the 128 x 128 sampling grid
   (congealed pixel -> position in the image) and the residual flow.
3. Flow up-sampling: the grid is bilinearly resized to the label resolution L (= S) and the positions of the edit's
   painted pixels are read from it (one gather).
4. Splat: each painted congealed pixel adds its colour and alpha at its image position with a Gaussian footprint
   (``engine.splat``); colour is weight-normalised, alpha soft-normalised (weights clamped to >= 1). The footprint
   sigma grows with the warp's magnification so zoomed-in objects get no holes.
5. Blend: the premultiplied edit layer is resized to the original image size and alpha-composited (opacity).

Edit preparation (resize to L, list painted pixels with their colours) is cached per edit (sha1 of its pixels +
L), so a video, a gallery or the webcam prepare it once. Models run in float32 (the warp geometry is sensitive to
reduced precision) under ``engine.queue``'s lock.
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .. import config, imageio, registry
from ..errors import InputError, ModelError
from ..models.gangealing import PRETRAINED, GANgealing, PretrainedSettings, identity_grid, resize_grid, total_variation
from ..queue import run_exclusive
from ..splat import normalize, splat

Progress = Optional[Callable[[float, str], None]]

ASSETS = ("gangealing-assets", "assets")
DEFAULT_RESOLUTION = 256
RESOLUTIONS = (128, 256, 512)
DEFAULT_SIGMA = 1.3          # official propagate_to_images default at 256
# Quality flags (heuristics, not calibrated against the official checkpoints, which are not available here).
# The score is the official smoothness measure, the total variation (TV) of the residual flow. For neighbour
# differences below one image half-width the Huber TV equals mean squared differences / 2, so
# roughness = flow_size * sqrt(TV) is the RMS local stretch of the residual warp in pixels per pixel.
ROUGHNESS_LIMIT = 0.5        # px/px: neighbouring congealed pixels' sources move 50 % apart -> folds / tears likely
TV_LIMIT = (ROUGHNESS_LIMIT / 128) ** 2   # the same limit on the TV score (flow_size 128): 1.5e-5
OUTSIDE_LIMIT = 0.5          # fraction of the congealed view sampled outside the image
FRAME_MAX_SIDE = 2048        # the padded square is never built larger: a bigger image is shrunk first (memory)


def model_settings(model: GANgealing | str) -> PretrainedSettings:
    if isinstance(model, GANgealing):
        return model.settings
    short = model.removeprefix("gangealing-")
    if short not in PRETRAINED:
        raise InputError(f"Unknown GANgealing model {model!r}; choose one of "
                         f"{', '.join('gangealing-' + n for n in PRETRAINED)}.")
    return PRETRAINED[short]


def get_model(model: GANgealing | str, device: torch.device | None = None) -> GANgealing:
    """A loaded model (registry name such as ``"gangealing-cat"``, or an already built GANgealing)."""
    if isinstance(model, GANgealing):
        return model
    model_settings(model)  # validates the name
    return registry.load_model(model if model.startswith("gangealing-") else f"gangealing-{model}", device)


def _device_of(model: torch.nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------------------------------
# Assets: average images (the painting canvas) and the official dense-label masks
# ---------------------------------------------------------------------------------------------------------------

def assets_dir() -> Optional[Path]:
    root = config.data_dir()
    path = root.joinpath(*ASSETS) if root is not None else None
    return path if path is not None and path.is_dir() else None


_asset_cache: dict[tuple[str, str], np.ndarray] = {}


def _asset(rel: str, mode: str) -> Optional[np.ndarray]:
    folder = assets_dir()
    if folder is None or not (folder / rel).is_file():
        return None
    key = (str(folder / rel), mode)
    if key not in _asset_cache:
        img = imageio.load_rgba(folder / rel) if mode == "RGBA" else imageio.load_image(folder / rel)
        _asset_cache[key] = np.asarray(img, dtype=np.uint8)
    return _asset_cache[key]


def average_image(model: str | GANgealing, cluster: int = 0) -> Optional[np.ndarray]:
    """The model's congealed average image (H, W, 3) uint8 (the canvas edits are painted on), or None."""
    files = model_settings(model).average_files()
    return _asset(files[min(cluster, len(files) - 1)], "RGB")


def dense_label(model: str | GANgealing, cluster: int = 0) -> Optional[np.ndarray]:
    """The official propagation mask drawn on the average, coloured by congealed position (RGBA uint8): an edit
    that visualises dense correspondence when propagated."""
    files = model_settings(model).mask_files()
    mask = _asset(files[min(cluster, len(files) - 1)], "RGBA")
    if mask is None:
        return None
    h, w = mask.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    colours = position_colours(xx / max(w - 1, 1), yy / max(h - 1, 1))
    alpha = (mask[..., 3] > 0).astype(np.uint8) * 255
    return np.dstack([colours, alpha])


def position_colours(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Distinct colours for normalised positions u, v in [0, 1] (hue from the angle around the centre, brightness
    from the radius): nearby positions get nearby colours."""
    du, dv = u - 0.5, v - 0.5
    hue = (np.arctan2(dv, du) / (2 * np.pi)) % 1.0
    rad = np.clip(np.sqrt(du ** 2 + dv ** 2) / 0.71, 0, 1)
    return hsv_to_rgb(hue, 0.35 + 0.65 * rad, 1.0 - 0.35 * rad)


def hsv_to_rgb(h, s, v) -> np.ndarray:
    h, s, v = np.broadcast_arrays(np.asarray(h, np.float32), np.asarray(s, np.float32), np.asarray(v, np.float32))
    i = np.floor(h * 6).astype(int) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    rgb = np.zeros(h.shape + (3,), np.float32)
    for k, (r, g, b) in enumerate(table):
        m = i == k
        rgb[m] = np.stack([r[m], g[m], b[m]], -1)
    return (np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------------
# Framing: image <-> centred square at the working resolution
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Framed:
    x: torch.Tensor          # (1, 3, S, S) in [-1, 1]: what the STN sees
    image: torch.Tensor      # (1, 3, H, W) in [0, 1]: the original, for blending
    side: int                # S0 = max(H, W): the padded square in original pixels
    top: int
    left: int

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.image.shape[-2:])

    @property
    def resolution(self) -> int:
        return self.x.shape[-1]


def _as_rgb_array(img, what: str = "image") -> np.ndarray:
    if img is None:
        raise InputError(f"No {what} given.")
    if isinstance(img, np.ndarray) and img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8:
        arr = img
    else:
        arr = np.asarray(imageio.load_image(img), dtype=np.uint8)
    if min(arr.shape[:2]) < 8:
        raise InputError(f"The {what} is {arr.shape[1]}x{arr.shape[0]}; both sides must be at least 8 pixels.")
    if arr.shape[0] * arr.shape[1] > config.max_pixels():
        raise InputError(f"The {what} is {arr.shape[1]}x{arr.shape[0]}, over the limit of "
                         f"{config.max_pixels() / 1e6:.0f} megapixels; resize it first.")
    return arr


def frame(img, resolution: int, device: torch.device) -> Framed:
    """Edge-pad to a centred square and resize to ``resolution`` (anti-aliased).

    Memory stays bounded by the image itself: an image whose long side is above ``FRAME_MAX_SIDE`` is shrunk to
    that side before it is padded (a thin 20000 x 8 strip would otherwise become a 20000 x 20000 square first);
    the two-step resize moves the square's content by under 1/8 of a working pixel.
    """
    arr = _as_rgb_array(img)
    if not arr.flags.writeable or not arr.flags.c_contiguous:
        arr = np.array(arr, copy=True, order="C")
    t = torch.from_numpy(arr).to(device).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    h, w = arr.shape[:2]
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    src, sq_side = t, side
    if side > max(FRAME_MAX_SIDE, resolution):
        k = FRAME_MAX_SIDE / side
        src = F.interpolate(t, size=(max(1, round(h * k)), max(1, round(w * k))), mode="bilinear",
                            align_corners=False, antialias=True)
        sq_side = FRAME_MAX_SIDE
    sh, sw = src.shape[-2:]
    sq = src
    if sh != sw or sh != sq_side:
        st, sl = (sq_side - sh) // 2, (sq_side - sw) // 2
        sq = F.pad(src, (sl, sq_side - sw - sl, st, sq_side - sh - st), mode="replicate")
    if sq_side != resolution:
        sq = F.interpolate(sq, size=(resolution, resolution), mode="bilinear", align_corners=False,
                           antialias=sq_side > resolution)
    return Framed(x=sq.clamp(0, 1) * 2 - 1, image=t, side=side, top=top, left=left)


def _resample_axis(t: torch.Tensor, coords: torch.Tensor, dim: int) -> torch.Tensor:
    """Linear interpolation of ``t`` along ``dim`` at source positions ``coords`` (clamped to the edges)."""
    n = t.shape[dim]
    c = coords.to(t.device, torch.float32).clamp(0, n - 1)
    i0 = c.floor().long()
    i1 = (i0 + 1).clamp(max=n - 1)
    shape = [1] * t.dim()
    shape[dim] = -1
    a = t.index_select(dim, i0)
    return a + (t.index_select(dim, i1) - a) * (c - i0).view(shape)


def square_to_image(maps: torch.Tensor, fr: Framed) -> torch.Tensor:
    """Maps over the working square (N, C, S, S) -> over the original image's pixels (N, C, H, W).

    The same values as bilinearly resizing to the padded side x side square (align_corners=False) and cropping the
    image out, computed separably for the image's rows and columns only, so memory is O(H * W), not O(side^2).
    """
    h, w = fr.size
    s = maps.shape[-1]
    if fr.side == s:
        return maps[:, :, fr.top:fr.top + h, fr.left:fr.left + w]
    scale = s / fr.side
    rows = (torch.arange(h, dtype=torch.float64) + fr.top + 0.5) * scale - 0.5
    cols = (torch.arange(w, dtype=torch.float64) + fr.left + 0.5) * scale - 0.5
    return _resample_axis(_resample_axis(maps, rows, 2), cols, 3)


def grid_to_pixels(grid: torch.Tensor, size: int) -> torch.Tensor:
    """Normalised positions (align_corners=False) -> pixel coordinates of a size x size image."""
    return ((grid + 1.0) * size - 1.0) / 2.0


def square_to_original(px: torch.Tensor, fr: Framed) -> torch.Tensor:
    """Pixel coords in the S x S working square -> pixel coords of the original image (x, y last dim)."""
    scale = fr.side / fr.resolution
    out = (px + 0.5) * scale - 0.5
    return out - torch.tensor([fr.left, fr.top], dtype=out.dtype, device=out.device)


def original_to_square(px: torch.Tensor, fr: Framed) -> torch.Tensor:
    scale = fr.resolution / fr.side
    px = px + torch.tensor([fr.left, fr.top], dtype=px.dtype, device=px.device)
    return (px + 0.5) * scale - 0.5


def warp_magnification(grid: torch.Tensor, size: int) -> torch.Tensor:
    """(N,) median distance in image pixels between the sources of neighbouring congealed pixels."""
    px = grid_to_pixels(grid, size)
    dx = (px[:, :, 1:] - px[:, :, :-1]).norm(dim=-1).flatten(1)
    dy = (px[:, 1:] - px[:, :-1]).norm(dim=-1).flatten(1)
    return torch.cat([dx, dy], 1).median(dim=1).values


def footprint_sigma(grid: torch.Tensor, size: int, base: float) -> torch.Tensor:
    """Splat sigma per image: ``base``, widened to 0.75 x the point spacing when the warp magnifies."""
    return torch.clamp(0.75 * warp_magnification(grid, size), min=base)


# ---------------------------------------------------------------------------------------------------------------
# Edits: preparation (cached per edit)
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class PreparedEdit:
    key: str
    label_res: int
    idx: torch.Tensor        # (P,) long: flat indices of painted pixels in the L x L congealed lattice
    values: torch.Tensor     # (P, 4) float: r, g, b, a in [0, 1]
    _on: dict = field(default_factory=dict)

    @property
    def count(self) -> int:
        return int(self.idx.numel())

    def to(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        key = str(device)
        if key not in self._on:
            self._on[key] = (self.idx.to(device), self.values.to(device))
        return self._on[key]


EDIT_CACHE_SIZE = 16
_edit_cache: "OrderedDict[tuple[str, int], PreparedEdit]" = OrderedDict()
_edit_lock = threading.Lock()
edit_stats = {"prepared": 0, "hits": 0}


def edit_key(edit_rgba: np.ndarray) -> str:
    h = hashlib.sha1(np.ascontiguousarray(edit_rgba).tobytes())
    h.update(repr((edit_rgba.shape, str(edit_rgba.dtype))).encode())
    return h.hexdigest()


def _as_edit_array(edit) -> np.ndarray:
    if edit is None:
        raise InputError("No edit given: paint on the canvas (an RGBA image whose transparent parts are left alone).")
    if isinstance(edit, np.ndarray) and edit.ndim == 3 and edit.shape[2] == 4 and edit.dtype == np.uint8:
        arr = edit
    elif isinstance(edit, np.ndarray) and edit.ndim == 3 and edit.shape[2] == 3:
        raise InputError("The edit has no transparency: it must be RGBA, transparent where nothing is painted.")
    else:
        arr = np.asarray(imageio.load_rgba(edit), dtype=np.uint8)
    h, w = arr.shape[:2]
    if abs(h - w) > 0.02 * max(h, w):
        raise InputError(f"The edit is {w}x{h}; it must be painted on the square average image (same aspect).")
    return arr


def prepare_edit(edit_rgba, label_res: int) -> PreparedEdit:
    """List the painted pixels of an RGBA edit at label resolution L (cached per edit pixels + L)."""
    arr = _as_edit_array(edit_rgba)
    key = (edit_key(arr), int(label_res))
    with _edit_lock:
        if key in _edit_cache:
            _edit_cache.move_to_end(key)
            edit_stats["hits"] += 1
            return _edit_cache[key]
    t = torch.from_numpy(np.ascontiguousarray(arr)).permute(2, 0, 1).unsqueeze(0).float().div_(255.0)
    if t.shape[-1] != label_res or t.shape[-2] != label_res:
        # resize premultiplied colour so transparent pixels do not bleed their (arbitrary) colour into the edges
        a = t[:, 3:]
        pm = torch.cat([t[:, :3] * a, a], 1)
        pm = F.interpolate(pm, size=(label_res, label_res), mode="bilinear", align_corners=False,
                           antialias=t.shape[-1] > label_res)
        a = pm[:, 3:].clamp(0, 1)
        t = torch.cat([(pm[:, :3] / a.clamp(min=1e-6)).clamp(0, 1), a], 1)
    values = t[0].permute(1, 2, 0).reshape(-1, 4)
    idx = torch.nonzero(values[:, 3] > 0.5 / 255.0).squeeze(1)
    if idx.numel() == 0:
        raise InputError("The edit is empty: nothing is painted (every pixel is transparent).")
    prepared = PreparedEdit(key=key[0], label_res=int(label_res), idx=idx, values=values[idx].contiguous())
    with _edit_lock:
        edit_stats["prepared"] += 1
        _edit_cache[key] = prepared
        while len(_edit_cache) > EDIT_CACHE_SIZE:
            _edit_cache.popitem(last=False)
    return prepared


def clear_edit_cache() -> None:
    with _edit_lock:
        _edit_cache.clear()
        edit_stats.update(prepared=0, hits=0)


# ---------------------------------------------------------------------------------------------------------------
# The stages (tensors in, tensors out; callers hold the engine lock)
# ---------------------------------------------------------------------------------------------------------------

def stage_stn(model: GANgealing, x: torch.Tensor, *, flip: bool = True, cluster: Optional[int] = None,
              mirror: Optional[bool] = None):
    """Congealing grid at 128 px (no image sampled); ``mirror`` imposes the flip decision (one STN pass)."""
    m = None if mirror is None else torch.tensor([bool(mirror)], device=x.device)
    return model.congeal(x, flip=flip, cluster=cluster, return_image=False, mirror=m)


def stage_points(grid: torch.Tensor, edit: PreparedEdit, size: int, sigma: float):
    """Flow up-sampling: grid -> L x L, painted pixels' source positions in S x S pixels, splat sigma."""
    idx, _ = edit.to(grid.device)
    grid_l = resize_grid(grid, edit.label_res)
    pts = grid_l.reshape(grid.shape[0], -1, 2)[:, idx]
    sig = footprint_sigma(grid_l, size, sigma * max(1.0, size / edit.label_res))
    return grid_to_pixels(pts, size), sig


def stage_splat(points: torch.Tensor, edit: PreparedEdit, size: int, sigma,
                method: str = "exact") -> tuple[torch.Tensor, torch.Tensor]:
    """Edit layer at S x S: colour (N, 3, S, S) and alpha (N, 1, S, S) in [0, 1]."""
    _, values = edit.to(points.device)
    acc, weight = splat(points, values.unsqueeze(0).expand(points.shape[0], -1, -1), size, size, sigma,
                        method=method)
    return normalize(acc[:, :3], weight), normalize(acc[:, 3:], weight, soft=True)


def stage_blend(fr: Framed, colour: torch.Tensor, alpha: torch.Tensor, opacity: float) -> torch.Tensor:
    """Composite the edit layer over the original image: (1, 3, H, W) in [0, 1]."""
    layer = square_to_image(torch.cat([colour * alpha, alpha], 1), fr) * float(opacity)
    return (layer[:, :3] + (1 - layer[:, 3:]) * fr.image).clamp(0, 1)


def to_uint8(t: torch.Tensor) -> np.ndarray:
    return imageio.tensor_to_numpy(t)


# ---------------------------------------------------------------------------------------------------------------
# Propagation
# ---------------------------------------------------------------------------------------------------------------

class Propagator:
    """Carries one edit (painted on the model's average image) into images or a stream of frames.

    model: registry name ("gangealing-cat") or a GANgealing module; cluster: which cluster's average the edit was
    painted on (clustering models); resolution: working resolution S; smoothing in [0, 1): exponential moving
    average of the congealing grid across consecutive frames (video / webcam jitter); flip: flip inference for
    single-head models; flip_every: in a stream, decide the mirror (two STN passes) only every ``flip_every``
    frames and reuse the decision in between (one pass); method: "exact" Gaussian splat (the official footprint)
    or "fast" (bilinear splat + Gaussian blur, several times faster on CPU; for live video).
    """

    def __init__(self, model, edit_rgba, *, cluster: Optional[int] = None, resolution: int = DEFAULT_RESOLUTION,
                 opacity: float = 1.0, sigma: float = DEFAULT_SIGMA, flip: bool = True, smoothing: float = 0.0,
                 method: str = "exact", flip_every: int = 1, device: torch.device | None = None):
        if method not in ("exact", "fast"):
            raise InputError("method must be 'exact' or 'fast'.")
        if resolution not in RESOLUTIONS:
            raise InputError(f"resolution must be one of {RESOLUTIONS}, not {resolution}.")
        if not 0.0 <= float(opacity) <= 1.0:
            raise InputError("opacity must be between 0 and 1.")
        if not 0.0 <= float(smoothing) < 1.0:
            raise InputError("smoothing must be in [0, 1).")
        if sigma <= 0:
            raise InputError("sigma must be > 0.")
        self.model = get_model(model, device)
        self.settings = self.model.settings
        if self.settings.clustering:
            cluster = 0 if cluster is None else int(cluster)
            if not 0 <= cluster < self.settings.num_heads:
                raise InputError(f"cluster must be between 0 and {self.settings.num_heads - 1}.")
        else:
            cluster = None
        self.cluster = cluster
        self.device = _device_of(self.model)
        self.resolution = int(resolution)
        self.edit = prepare_edit(edit_rgba, self.resolution)
        self.opacity, self.sigma, self.flip, self.smoothing = float(opacity), float(sigma), bool(flip), float(smoothing)
        self.method = method
        if int(flip_every) < 1:
            raise InputError("flip_every must be >= 1.")
        self.flip_every = int(flip_every)
        self.timings: dict[str, float] = {}
        self.reset()

    def reset(self) -> None:
        self._grid: Optional[torch.Tensor] = None
        self._mirror: Optional[bool] = None
        self._since_flip = 0  # frames since the mirror was last decided with two passes

    def _timed(self, name: str, fn, *args, **kwargs):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - start
        return out

    @torch.inference_mode()
    def _run(self, img) -> np.ndarray:
        fr = self._timed("frame", frame, img, self.resolution, self.device)
        reuse = (self.flip and self.cluster is None and self._mirror is not None
                 and self._since_flip < self.flip_every - 1)
        res = self._timed("stn", stage_stn, self.model, fr.x, flip=self.flip, cluster=self.cluster,
                          mirror=self._mirror if reuse else None)
        self._since_flip = self._since_flip + 1 if reuse else 0
        grid, mirror = res.grid, bool(res.flipped[0])
        if self.smoothing > 0 and self._grid is not None and self._mirror == mirror:
            grid = torch.lerp(grid, self._grid, self.smoothing)
        self._grid, self._mirror = grid, mirror
        pts, sig = self._timed("upsample", stage_points, grid, self.edit, self.resolution, self.sigma)
        colour, alpha = self._timed("splat", stage_splat, pts, self.edit, self.resolution, sig, self.method)
        out = self._timed("blend", stage_blend, fr, colour, alpha, self.opacity)
        return to_uint8(out)

    def __call__(self, img) -> np.ndarray:
        """(H, W, 3) uint8 (or any image source) -> (H, W, 3) uint8 with the edit blended in."""
        try:
            return run_exclusive(self._run, img)
        except torch.OutOfMemoryError as exc:
            raise ModelError("Out of memory while propagating; use a lower resolution.") from exc

    def many(self, images: Sequence, progress: Progress = None) -> list[np.ndarray]:
        if not images:
            raise InputError("No target images given.")
        out = []
        for i, img in enumerate(images):
            self.reset()  # independent images: no temporal smoothing between them
            out.append(self(img))
            if progress is not None:
                progress((i + 1) / len(images), f"propagated {i + 1}/{len(images)}")
        return out


def propagate(model, edit_rgba, targets: Sequence, *, cluster: Optional[int] = None, opacity: float = 1.0,
              resolution: int = DEFAULT_RESOLUTION, progress: Progress = None, **kw) -> list[np.ndarray]:
    """Blend an edit painted on the model's average image into each target image."""
    return Propagator(model, edit_rgba, cluster=cluster, opacity=opacity, resolution=resolution, **kw).many(
        targets, progress)


# ---------------------------------------------------------------------------------------------------------------
# Congealing one image: aligned image, flow colour map, quality
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Quality:
    tv: float                # official smoothness score (total variation of the residual flow; lower = smoother)
    roughness: float         # flow_size * sqrt(tv): RMS local stretch of the residual warp, pixels per pixel
    outside: float           # fraction of the congealed view sampled outside the image
    flagged: bool
    message: str


def quality(delta_flow: torch.Tensor, grid: torch.Tensor, fr: Optional[Framed] = None) -> list[Quality]:
    """Per-image alignment quality; ``flagged`` when the TV score exceeds TV_LIMIT (a rough warp: folds) or the
    aligned view lies mostly outside the image."""
    fs = delta_flow.shape[1]
    tv = total_variation(delta_flow)
    rough = fs * tv.sqrt()
    tv_limit = (ROUGHNESS_LIMIT / fs) ** 2
    if fr is not None:  # outside the original image (the padded border counts as outside)
        px = square_to_original(grid_to_pixels(grid, fr.resolution), fr)
        h, w = fr.size
        out_mask = (px[..., 0] < -0.5) | (px[..., 0] > w - 0.5) | (px[..., 1] < -0.5) | (px[..., 1] > h - 0.5)
    else:
        out_mask = (grid.abs() > 1).any(-1)
    outside = out_mask.float().mean(dim=(1, 2))
    result = []
    for t, r, o in zip(tv.tolist(), rough.tolist(), outside.tolist()):
        reasons = []
        if t > tv_limit:
            reasons.append(f"the warp is rough (flow TV {t:.2g} > {tv_limit:.2g}, i.e. {r:.2f} px/px local "
                           f"stretch > {ROUGHNESS_LIMIT}): folds or tears")
        if o > OUTSIDE_LIMIT:
            reasons.append(f"{o:.0%} of the aligned view lies outside the image")
        msg = ("Alignment likely failed: " + "; ".join(reasons) + ".") if reasons else "Alignment looks plausible."
        result.append(Quality(tv=t, roughness=r, outside=o, flagged=bool(reasons), message=msg))
    return result


def flow_colours(displacement: np.ndarray, max_magnitude: Optional[float] = None) -> np.ndarray:
    """Colour-code a (H, W, 2) displacement field: hue = direction, saturation = magnitude (white = none)."""
    dx, dy = displacement[..., 0], displacement[..., 1]
    mag = np.sqrt(dx ** 2 + dy ** 2)
    top = max_magnitude or max(float(np.percentile(mag, 99)), 1e-6)
    hue = (np.arctan2(-dy, -dx) / (2 * np.pi) + 0.5) % 1.0
    return hsv_to_rgb(hue, np.clip(mag / top, 0, 1), 1.0)


@dataclass
class CongealReport:
    aligned: np.ndarray      # (R, R, 3) uint8 congealed image
    flow: np.ndarray         # (R, R, 3) uint8 colour-coded displacement (congealed pixel -> its source)
    quality: Quality
    mirrored: bool
    cluster: Optional[int]
    correspondence: Optional[np.ndarray] = None  # the input with the model's dense label propagated onto it
    max_displacement: float = 0.0                # the flow map's colour scale, in output pixels


def congeal_image(model, image, *, resolution: int = DEFAULT_RESOLUTION, flip: bool = True,
                  with_correspondence: bool = True) -> CongealReport:
    """Align one image with the model: the congealed image, a colour map of the dense flow and a quality score."""
    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {RESOLUTIONS}, not {resolution}.")
    gg = get_model(model)
    dev = _device_of(gg)

    @torch.inference_mode()
    def run() -> CongealReport:
        fr = frame(image, resolution, dev)
        res = gg.congeal(fr.x, output_resolution=resolution, flip=flip)
        q = quality(res.delta_flow, res.grid, fr)[0]
        aligned = to_uint8((res.image + 1) / 2)
        disp = (grid_to_pixels(res.grid, resolution) - grid_to_pixels(identity_grid(resolution, 1, dev), resolution))
        disp_np = disp[0].cpu().numpy()
        top = max(float(np.percentile(np.linalg.norm(disp_np, axis=-1), 99)), 1e-6)
        corr = None
        if with_correspondence:
            label = dense_label(gg, int(res.heads[0]))
            if label is not None:
                edit = prepare_edit(label, resolution)
                pts, sig = stage_points(res.grid, edit, resolution, DEFAULT_SIGMA)
                colour, alpha = stage_splat(pts, edit, resolution, sig)
                corr = to_uint8(stage_blend(fr, colour, alpha, 0.75))
        cluster = int(res.heads[0]) if gg.settings.clustering else None
        return CongealReport(aligned=aligned, flow=flow_colours(disp_np, top), quality=q,
                             mirrored=bool(res.flipped[0]), cluster=cluster, correspondence=corr,
                             max_displacement=top)

    return run_exclusive(run)


# ---------------------------------------------------------------------------------------------------------------
# Dense correspondence A -> congealed -> B
# ---------------------------------------------------------------------------------------------------------------

@dataclass
class Correspondence:
    flow: np.ndarray         # (Ha, Wa, 2) float32: matching (x, y) in B's pixels for every pixel of A
    confidence: np.ndarray   # (Ha, Wa) float32 in [0, 1]
    quality_a: Quality
    quality_b: Quality
    aligned_a: np.ndarray
    aligned_b: np.ndarray
    cluster: Optional[int]


def correspond(model, a, b, *, resolution: int = DEFAULT_RESOLUTION, flip: bool = True,
               sigma: float = DEFAULT_SIGMA) -> Correspondence:
    """Dense correspondence A -> B through the congealed space.

    A's congealing grid says where every congealed pixel comes from in A; splatting the congealed coordinates
    at those positions inverts it (A pixel -> congealed position, with a coverage weight). B's grid, sampled at
    that congealed position, gives the match in B. Confidence = coverage of the A pixel by the congealed view x
    whether the match falls inside B; halved when either alignment is flagged. Clustering models congeal B with
    A's cluster so both go through the same congealed space.
    """
    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {RESOLUTIONS}, not {resolution}.")
    gg = get_model(model)
    dev = _device_of(gg)

    @torch.inference_mode()
    def run() -> Correspondence:
        s = resolution
        fa, fb = frame(a, s, dev), frame(b, s, dev)
        ra = gg.congeal(fa.x, output_resolution=s, flip=flip)
        cluster = int(ra.heads[0]) if gg.settings.clustering else None
        rb = gg.congeal(fb.x, output_resolution=s, flip=flip, cluster=cluster)
        # invert A's warp: splat each congealed pixel's own normalised position at its source in A
        ident = identity_grid(s, 1, dev).reshape(1, -1, 2)
        pts_a = grid_to_pixels(ra.grid, s).reshape(1, -1, 2)
        sig = footprint_sigma(ra.grid, s, sigma)
        acc, weight = splat(pts_a, ident, s, s, sig)
        uv = normalize(acc, weight)  # (1, 2, S, S) congealed position of each A-square pixel
        coverage = weight.clamp(max=1.0)
        # into B
        gb = F.grid_sample(rb.grid.permute(0, 3, 1, 2), uv.permute(0, 2, 3, 1), mode="bilinear",
                           padding_mode="border", align_corners=False)  # (1, 2, S, S) normalised B-square
        pb = square_to_original(grid_to_pixels(gb.permute(0, 2, 3, 1), s), fb)  # (1, S, S, 2) B original px
        hb, wb = fb.size
        inside = ((pb[..., 0] >= -0.5) & (pb[..., 0] <= wb - 0.5) & (pb[..., 1] >= -0.5) & (pb[..., 1] <= hb - 0.5))
        conf = coverage[:, 0] * inside.float()
        qa = quality(ra.delta_flow, ra.grid, fa)[0]
        qb = quality(rb.delta_flow, rb.grid, fb)[0]
        if qa.flagged or qb.flagged:
            conf = conf * 0.5
        # A-square -> A original resolution
        maps = torch.cat([pb.permute(0, 3, 1, 2), conf.unsqueeze(1)], 1)
        maps = square_to_image(maps, fa)
        flow = maps[0, :2].permute(1, 2, 0).cpu().numpy().astype(np.float32)
        confidence = maps[0, 2].clamp(0, 1).cpu().numpy().astype(np.float32)
        return Correspondence(flow=flow, confidence=confidence, quality_a=qa, quality_b=qb,
                              aligned_a=to_uint8((ra.image + 1) / 2), aligned_b=to_uint8((rb.image + 1) / 2),
                              cluster=cluster)

    return run_exclusive(run)
