"""Pictures for the Correspondence and Propagation tabs (numpy / OpenCV only, any backend).

Conventions: images are (H, W, 3) uint8 RGB; a dense match maps every pixel (x, y) of A to (x', y') in B
(``DenseMatch.flow``, absolute pixel positions) with a confidence in [0, 1].
"""
from __future__ import annotations

import hashlib

import numpy as np

from ..errors import InputError


def position_colours(h: int, w: int) -> np.ndarray:
    """A colour per position, distinct across the image: red grows to the right, green downwards, blue falls
    along the diagonal. (H, W, 3) uint8."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    u, v = x / max(w - 1, 1), y / max(h - 1, 1)
    rgb = np.stack([0.15 + 0.85 * u, 0.15 + 0.85 * v, 1.0 - 0.85 * (u + v) / 2], -1)
    return (rgb * 255).round().astype(np.uint8)


def _grey(img: np.ndarray, strength: float = 0.35) -> np.ndarray:
    g = img.astype(np.float32).mean(-1, keepdims=True)
    return (g * strength + 255 * (1 - strength)).repeat(3, -1)


def dense_view(a: np.ndarray, b: np.ndarray, flow: np.ndarray, confidence: np.ndarray,
               min_confidence: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Colour-coded dense correspondence: A painted with position colours, and the same colours carried to where
    each pixel of A lands in B (confident matches only), over a faded B. Returns (view_a, view_b)."""
    ha, wa = a.shape[:2]
    hb, wb = b.shape[:2]
    if flow.shape[:2] != (ha, wa):
        raise InputError(f"flow is {flow.shape[:2]}, image A is {(ha, wa)}")
    colours = position_colours(ha, wa).astype(np.float32)
    view_a = (0.55 * colours + 0.45 * a.astype(np.float32)).astype(np.uint8)
    acc = np.zeros((hb, wb, 3), np.float32)
    weight = np.zeros((hb, wb), np.float32)
    xs = np.rint(flow[..., 0]).astype(np.int64)
    ys = np.rint(flow[..., 1]).astype(np.int64)
    keep = (confidence >= min_confidence) & (xs >= 0) & (xs < wb) & (ys >= 0) & (ys < hb)
    idx = ys[keep] * wb + xs[keep]
    conf = confidence[keep].astype(np.float32)
    for c in range(3):
        np.add.at(acc[..., c].reshape(-1), idx, colours[..., c][keep] * conf)
    np.add.at(weight.reshape(-1), idx, conf)
    covered = weight > 0
    view_b = _grey(b)
    view_b[covered] = 0.25 * view_b[covered] + 0.75 * (acc[covered] / weight[covered, None])
    return view_a, view_b.astype(np.uint8)


def heat_image(values: np.ndarray, base: np.ndarray | None = None, alpha: float = 0.6) -> np.ndarray:
    """A [0, 1] map as a colour heat map (blue = low, yellow = high), optionally over ``base``."""
    import cv2

    v = np.clip(np.nan_to_num(values.astype(np.float32)), 0, 1)
    heat = cv2.applyColorMap((v * 255).astype(np.uint8), cv2.COLORMAP_VIRIDIS)[..., ::-1]
    if base is None:
        return heat
    if base.shape[:2] != heat.shape[:2]:
        heat = cv2.resize(heat, (base.shape[1], base.shape[0]), interpolation=cv2.INTER_LINEAR)
    return (alpha * heat + (1 - alpha) * _grey(base, 0.8)).astype(np.uint8)


def mark(img: np.ndarray, x: float, y: float, colour=(255, 40, 40), radius: int | None = None) -> np.ndarray:
    """Copy of ``img`` with a ring and cross-hair at (x, y)."""
    import cv2

    out = np.ascontiguousarray(img.copy())
    r = radius or max(4, round(min(img.shape[:2]) / 40))
    centre = (int(round(x)), int(round(y)))
    cv2.circle(out, centre, r, (255, 255, 255), max(2, r // 3) + 2, cv2.LINE_AA)
    cv2.circle(out, centre, r, colour, max(2, r // 3), cv2.LINE_AA)
    cv2.line(out, (centre[0] - 2 * r, centre[1]), (centre[0] + 2 * r, centre[1]), colour, 1, cv2.LINE_AA)
    cv2.line(out, (centre[0], centre[1] - 2 * r), (centre[0], centre[1] + 2 * r), colour, 1, cv2.LINE_AA)
    return out


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
    import cv2

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
    import cv2

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
