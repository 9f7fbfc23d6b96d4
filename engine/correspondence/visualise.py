"""Pictures of correspondences and edit blending, shared by every correspondence backend.

All functions take and return numpy arrays: images are (H, W, 3) uint8 RGB, edits (H, W, 4) uint8 RGBA, flows
(H, W, 2) float32 *absolute* positions (x, y) in the other image (see base.DenseMatch). Nothing here depends on
how a flow was computed, so the GANgealing backend can use the same helpers.
"""
from __future__ import annotations

import hashlib
from typing import Optional

import cv2
import numpy as np

from ..errors import InputError


# ---- colour coding ---------------------------------------------------------------------------------------------

def coordinate_colors(h: int, w: int) -> np.ndarray:
    """A smooth 2D colour map of an image plane: every position gets a distinct colour, (h, w, 3) uint8.

    Hue follows the angle around the centre and saturation the distance to it, value is constant, so nearby
    positions have nearby colours and far ones differ.
    """
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u = (x + 0.5) / w * 2 - 1
    v = (y + 0.5) / h * 2 - 1
    ang = (np.arctan2(v, u) + np.pi) / (2 * np.pi)           # [0, 1]
    rad = np.clip(np.sqrt(u * u + v * v) / np.sqrt(2), 0, 1)
    hsv = np.stack([ang * 179, 40 + rad * 215, np.full_like(u, 235)], -1).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def correspondence_colors(flow: np.ndarray, shape_b: tuple[int, int],
                          confidence: Optional[np.ndarray] = None) -> tuple[np.ndarray, np.ndarray]:
    """Dense colour-coded view: (A coloured by where each pixel lands in B, B's colour key).

    Pixels of A with the same colour as a region of B correspond to it. Low confidence fades to grey.
    """
    hb, wb = shape_b[:2]
    key = coordinate_colors(hb, wb)
    a_view = cv2.remap(key, flow[..., 0].astype(np.float32), flow[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE)
    if confidence is not None:
        c = np.clip(confidence, 0, 1)[..., None]
        a_view = (a_view * c + 128 * (1 - c)).astype(np.uint8)
    return a_view, key


def flow_to_rgb(displacement: np.ndarray, max_magnitude: Optional[float] = None) -> np.ndarray:
    """Displacement field (H, W, 2) -> colour wheel image (hue = direction, saturation = magnitude)."""
    dx, dy = displacement[..., 0], displacement[..., 1]
    mag = np.sqrt(dx * dx + dy * dy)
    top = max_magnitude or max(float(np.percentile(mag, 99)), 1e-6)
    ang = (np.arctan2(dy, dx) + np.pi) / (2 * np.pi)
    hsv = np.stack([ang * 179, np.clip(mag / top, 0, 1) * 255, np.full_like(mag, 255)], -1).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def colorize(values: np.ndarray, vmin: Optional[float] = None, vmax: Optional[float] = None) -> np.ndarray:
    """Scalar map -> (H, W, 3) uint8 with the turbo colour map (blue = low, red = high)."""
    v = values.astype(np.float32)
    lo = float(np.nanmin(v)) if vmin is None else vmin
    hi = float(np.nanmax(v)) if vmax is None else vmax
    norm = np.clip((v - lo) / max(hi - lo, 1e-6), 0, 1)
    bgr = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def overlay(image: np.ndarray, color: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """Blend a colour map over an image (both (H, W, 3) uint8; the map is resized when needed)."""
    if color.shape[:2] != image.shape[:2]:
        color = cv2.resize(color, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
    return cv2.addWeighted(image, 1 - alpha, color, alpha, 0)


def draw_marker(image: np.ndarray, x: float, y: float, color=(255, 40, 40), radius: Optional[int] = None,
                label: Optional[str] = None) -> np.ndarray:
    """A ring + cross at (x, y) on a copy of the image, sized to the image."""
    out = np.ascontiguousarray(image.copy())
    r = radius or max(4, int(round(max(image.shape[:2]) / 60)))
    c = (int(round(x)), int(round(y)))
    t = max(1, r // 3)
    cv2.circle(out, c, r + t, (255, 255, 255), t + 1, cv2.LINE_AA)
    cv2.circle(out, c, r, tuple(int(v) for v in color), t, cv2.LINE_AA)
    cv2.drawMarker(out, c, tuple(int(v) for v in color), cv2.MARKER_CROSS, r, max(1, t // 2), cv2.LINE_AA)
    if label:
        cv2.putText(out, label, (c[0] + r + 2, c[1] - r), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, r / 12),
                    (255, 255, 255), t + 1, cv2.LINE_AA)
        cv2.putText(out, label, (c[0] + r + 2, c[1] - r), cv2.FONT_HERSHEY_SIMPLEX, max(0.4, r / 12),
                    tuple(int(v) for v in color), t, cv2.LINE_AA)
    return out


# ---- RGBA edits ----------------------------------------------------------------------------------------------

def as_rgba(edit: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 from an RGBA or RGB (opaque) array."""
    if edit.ndim != 3 or edit.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3|4) edit; got {edit.shape}")
    if edit.shape[2] == 3:
        return np.concatenate([edit, np.full(edit.shape[:2] + (1,), 255, np.uint8)], -1)
    return edit.astype(np.uint8)


def premultiply(edit_rgba: np.ndarray) -> np.ndarray:
    """(H, W, 4) uint8 -> float32 (H, W, 4) with colour multiplied by alpha (all in [0, 1])."""
    e = edit_rgba.astype(np.float32) / 255.0
    return np.concatenate([e[..., :3] * e[..., 3:], e[..., 3:]], -1)


def warp_rgba(edit_rgba: np.ndarray, mapping: np.ndarray, premultiplied: Optional[np.ndarray] = None) -> np.ndarray:
    """Backward-warp an edit: out[y, x] = edit[mapping[y, x]] with premultiplied bilinear sampling.

    mapping: (H, W, 2) float positions in the edit's pixels. Positions outside the edit are transparent.
    Returns float32 (H, W, 4) premultiplied RGBA in [0, 1] (what :func:`composite` takes).
    """
    pm = premultiply(edit_rgba) if premultiplied is None else premultiplied
    return cv2.remap(pm, mapping[..., 0].astype(np.float32), mapping[..., 1].astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))


def composite(target: np.ndarray, warped_pm: np.ndarray, opacity: float = 1.0,
              weight: Optional[np.ndarray] = None) -> np.ndarray:
    """Blend a premultiplied RGBA layer (H, W, 4 float in [0, 1]) over an RGB uint8 image.

    weight (H, W) in [0, 1] scales the layer's alpha per pixel (confidence: occluded pixels fade, not smear).
    """
    if warped_pm.shape[:2] != target.shape[:2]:
        warped_pm = cv2.resize(warped_pm, (target.shape[1], target.shape[0]), interpolation=cv2.INTER_LINEAR)
    k = float(np.clip(opacity, 0.0, 1.0))
    if weight is not None:
        if weight.shape[:2] != target.shape[:2]:
            weight = cv2.resize(weight.astype(np.float32), (target.shape[1], target.shape[0]))
        k = k * np.clip(weight, 0, 1)[..., None]
    rgb_pm = warped_pm[..., :3] * k
    alpha = warped_pm[..., 3:] * k
    out = target.astype(np.float32) / 255.0 * (1.0 - alpha) + rgb_pm
    return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)


def blend_rgba(target: np.ndarray, edit_rgba: np.ndarray, opacity: float = 1.0,
               weight: Optional[np.ndarray] = None) -> np.ndarray:
    """Paste an RGBA edit of the target's size over it (straight alpha), with opacity and per-pixel weight."""
    edit = as_rgba(edit_rgba)
    if edit.shape[:2] != target.shape[:2]:
        edit = cv2.resize(edit, (target.shape[1], target.shape[0]), interpolation=cv2.INTER_LINEAR)
    return composite(target, premultiply(edit), opacity, weight)


def edit_mask(edit_rgba: np.ndarray, threshold: int = 16) -> np.ndarray:
    """Boolean mask of the painted pixels (alpha above threshold)."""
    return as_rgba(edit_rgba)[..., 3] > threshold


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    a, b = a.astype(bool), b.astype(bool)
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


__all__ = ["as_rgba", "blend_rgba", "colorize", "composite", "coordinate_colors", "correspondence_colors",
           "draw_marker", "edit_mask", "flow_to_rgb", "mask_iou", "overlay", "premultiply", "warp_rgba"]


# ---- tab helpers: points, editor layers, stickers, cache keys --------------------------------------------

def match_point(flow: np.ndarray, confidence: np.ndarray, x: float, y: float) -> tuple[float, float, float]:
    """The match in B of pixel (x, y) of A, and its confidence."""
    h, w = flow.shape[:2]
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"Point ({x:.0f}, {y:.0f}) is outside image A ({w}x{h}).")
    xi, yi = int(x), int(y)
    return float(flow[yi, xi, 0]), float(flow[yi, xi, 1]), float(confidence[yi, xi])


def edit_from_layers(layers, size: tuple[int, int]) -> np.ndarray | None:
    """Flatten image-editor layers (RGBA arrays, painted over the canvas) into one RGBA edit of ``size`` = (W, H);
    None when nothing is painted."""
    w, h = size
    out = np.zeros((h, w, 4), np.float32)
    for layer in layers or []:
        if layer is None:
            continue
        arr = np.asarray(layer)
        if arr.ndim != 3 or arr.shape[2] != 4:
            continue
        if arr.shape[:2] != (h, w):
            arr = cv2.resize(arr, (w, h), interpolation=cv2.INTER_NEAREST)
        src = arr.astype(np.float32) / 255.0
        a = src[..., 3:4]
        out[..., :3] = src[..., :3] * a + out[..., :3] * (1 - a)
        out[..., 3:4] = a + out[..., 3:4] * (1 - a)
    if out[..., 3].max() <= 0:
        return None
    return (out * 255).round().astype(np.uint8)


def fit_edit(edit: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An uploaded RGBA edit (sticker) resized to the canvas ``size`` = (W, H)."""
    if edit.ndim != 3 or edit.shape[2] != 4:
        raise InputError("An edit must be an RGBA image (transparent where nothing is drawn).")
    if edit[..., 3].max() == 0:
        raise InputError("The edit is fully transparent: nothing would be propagated.")
    if edit.shape[:2] != (size[1], size[0]):
        edit = cv2.resize(edit, size, interpolation=cv2.INTER_LINEAR)
    return edit


def array_key(*arrays) -> str:
    """A short content hash of arrays (for caching per edit / per image)."""
    digest = hashlib.sha1()
    for arr in arrays:
        if arr is None:
            digest.update(b"none")
            continue
        arr = np.ascontiguousarray(arr)
        digest.update(str(arr.shape).encode())
        digest.update(arr.tobytes())
    return digest.hexdigest()[:16]
