"""The first-frame placement of a stream edit: one 2x3 map from a frame's pixels onto the reference's pixels.

Used by ``engine.correspondence.video.StreamEditPropagator`` when the reference is another instance (another
face): ``semantic_anchor`` (the classic matcher over wide scales, then one robust transform), ``plausible`` (is the
map believable: the reference's framing not blown up past 4 frames, the edit's box mostly in the frame) and
``padded_anchor`` (the retry against the reference padded with context). Transforms are 2x3 float64 affine
matrices in pixel coordinates; ``_fit`` is the robust (RANSAC) fit the tracker also uses per frame.
"""
from __future__ import annotations

from typing import Optional

import cv2
import numpy as np

WIDE_SCALES = (0.25, 0.32, 0.4, 0.5, 0.63, 0.79, 1.0, 1.26)   # the first match's scales (frame / reference)
PAD_RETRY = 0.5          # the implausible first match is retried with the reference padded by this share a side


def _affine(m: np.ndarray) -> np.ndarray:
    """2x3 -> 3x3."""
    return np.vstack([m, [0.0, 0.0, 1.0]])


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine map to (N, 2) points."""
    return pts @ m[:, :2].T + m[:, 2]


def _fit(src: np.ndarray, dst: np.ndarray, tol: float, model: str) -> tuple[Optional[np.ndarray], float]:
    """Robust (RANSAC) affine / similarity src -> dst; (2x3 or None, inlier fraction)."""
    if len(src) < 6:
        return None, 0.0
    fn = cv2.estimateAffinePartial2D if model == "similarity" else cv2.estimateAffine2D
    m, inl = fn(src.astype(np.float32), dst.astype(np.float32), method=cv2.RANSAC, ransacReprojThreshold=float(tol),
                maxIters=500, confidence=0.99, refineIters=10)
    if m is None or inl is None:
        return None, 0.0
    return m.astype(np.float64), float(inl.mean())


def semantic_anchor(frame: np.ndarray, reference: np.ndarray, model: str = "similarity",
                    params=None) -> tuple[Optional[np.ndarray], float]:
    """A 2x3 map of ``frame`` pixels onto ``reference`` pixels when the two show *different* instances (another
    face): the classic matcher (SIFT-Flow-style, engine/correspondence/classic.py) over a wide range of scales, a
    robust fit of one transform to its confident matches, then the same again on the frame resampled into the
    reference's framing (the face now at the reference's scale), composed. Returns (map or None, inlier share)."""
    from . import classic

    hr, wr = reference.shape[:2]
    base = params or classic.FlowParams()
    wide = classic.with_params(base, scales=WIDE_SCALES)

    def fit(res, tol):
        h, w = res.confidence.shape
        step = max(2, int(round(max(h, w) / 96)))
        ys, xs = np.mgrid[0:h:step, 0:w:step]
        sel = res.confidence[ys, xs] > 0.3
        src = np.stack([xs[sel], ys[sel]], -1).astype(np.float32)
        return _fit(src, res.flow[ys[sel], xs[sel]], tol, model)

    coarse = classic.dense_flow(frame, reference, wide, bidirectional=False)
    a1, share1 = fit(coarse, 0.04 * max(hr, wr))
    if a1 is None:
        return None, 0.0
    crop = cv2.warpAffine(frame, a1, (wr, hr), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    fine = classic.dense_flow(crop, reference, classic.with_params(base, scales=(0.79, 1.0, 1.26)),
                              bidirectional=False)
    a2, share2 = fit(fine, 0.03 * max(hr, wr))
    if a2 is None:
        return a1, share1
    return (_affine(a2) @ _affine(a1))[:2], share2


def plausible(a: Optional[np.ndarray], frame_shape: tuple[int, int], reference_shape: tuple[int, int],
              box: Optional[tuple[float, float, float, float]] = None) -> bool:
    """Whether a frame -> reference map ``a`` puts the reference's framing in the frame at a believable size: the
    reference brought into the frame covers at most 4 frames, and at least 60 % of ``box`` (x0, y0, x1, y1 in
    reference pixels, e.g. the edit's box; default the whole reference) lands inside the frame."""
    if a is None or abs(np.linalg.det(a[:, :2])) < 1e-9:
        return False
    h, w = frame_shape
    hr, wr = reference_shape
    inv = cv2.invertAffineTransform(a)
    area = abs(np.linalg.det(inv[:, :2])) * hr * wr
    x0, y0, x1, y1 = box if box is not None else (0, 0, wr, hr)
    gx, gy = np.meshgrid(np.linspace(x0, x1, 9), np.linspace(y0, y1, 9))
    pts = _apply(inv, np.stack([gx.ravel(), gy.ravel()], -1))
    inside = ((pts[:, 0] >= 0) & (pts[:, 0] < w) & (pts[:, 1] >= 0) & (pts[:, 1] < h)).mean()
    return bool(area <= 4.0 * h * w and inside >= 0.6)


def padded_anchor(frame: np.ndarray, reference: np.ndarray, model: str = "similarity",
                  pad: float = PAD_RETRY) -> Optional[np.ndarray]:
    """``semantic_anchor`` against the reference padded by ``pad`` of its size on each side (mid grey); the map is
    returned in the unpadded reference's pixels (frame px -> reference px), or None."""
    hr, wr = reference.shape[:2]
    py, px = int(round(pad * hr)), int(round(pad * wr))
    big = cv2.copyMakeBorder(reference, py, py, px, px, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    a, _ = semantic_anchor(frame, big, model)
    if a is None:
        return None
    a = a.copy()
    a[:, 2] -= (px, py)
    return a

