"""How well an edit is carried through a video: coverage, wholeness, stability (jitter) and speed.

A propagation method is judged frame by frame from its *placement*: for every pixel of the frame, its position in
the reference the edit was painted on (``mapping``, (H, W, 2) reference pixels) and how much of the edit is drawn
there (``weight``, (H, W) in [0, 1]). From it:

* **coverage** — the share of the edit's painted alpha that lands in the frame: reference pixels hit by some frame
  pixel drawn with weight > 0.5 (the map is supersampled so that a face smaller in the frame than in the
  reference leaves no holes), weighted by the edit's alpha. A lens that fades out or a sticker half outside the
  frame lowers it.
* **pieces** — connected pieces of the drawn edit seen at the edit's own scale: its alpha blurred by 1.5 % of the
  edit's size (bounding-box diagonal, in the frame: the reference's divided by the map's local scale) and cut at
  0.1, so a line drawing counts as one piece per drawing, not one per stroke or per dot of a thin line. Compared
  with the edit's own count on the reference: a fragmenting propagation (half a lens here, a bit on the cheek
  there) has more pieces, a vanished part fewer. Specks under 3 % of the cut area are not counted.
* **jitter** — between consecutive frames, the displacement of the edit (its alpha-weighted centroid) minus the
  motion of the face under it at that point: an independent estimate (not the tracker's DIS flow) from corner
  features of the previous frame around the edit (its box grown by a quarter) tracked by pyramidal Lucas-Kanade,
  kept when they pass a 0.5 px forward-backward check, one robust affine fitted to them and evaluated at the
  edit's centroid. Zero when the edit moves exactly with the face; the face's own motion when the edit stays put.
  (The first version averaged Farnebäck flow over the edit's pixels: on a frame shifted by a known 10 px it reads
  0.8-1 px short — the smoothing at the region's edges — so on fast heads it reported the measure's own error:
  2.9 px on d12 where this estimate gives 0.5 px; see ``face_motion``.)

numpy / OpenCV only; used by ``benchmarks/bench_stream_quality.py`` and ``tests/test_stream_quality.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

BLUR_FRACTION = 0.015   # pieces are counted on the alpha blurred by this share of the edit's size
MIN_PIECE_SHARE = 0.03  # pieces smaller than this share of the edit's cut area are specks, not fragments


def warped_alpha(edit_alpha: np.ndarray, mapping: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """The edit's alpha (reference, float [0, 1]) drawn on the frame through ``mapping`` and ``weight``."""
    a = cv2.remap(edit_alpha.astype(np.float32), mapping[..., 0].astype(np.float32),
                  mapping[..., 1].astype(np.float32), cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return a * weight


def local_scale(mapping: np.ndarray, where: np.ndarray | None = None) -> float:
    """Median reference pixels per frame pixel of ``mapping`` (square root of the Jacobian's determinant)."""
    dxdx, dxdy = np.gradient(mapping[..., 0], axis=1), np.gradient(mapping[..., 0], axis=0)
    dydx, dydy = np.gradient(mapping[..., 1], axis=1), np.gradient(mapping[..., 1], axis=0)
    det = np.abs(dxdx * dydy - dxdy * dydx)
    vals = det[where] if where is not None and where.any() else det
    return float(np.sqrt(max(np.median(vals), 1e-6)))


def coverage(edit_alpha: np.ndarray, mapping: np.ndarray, weight: np.ndarray) -> float:
    """Share of the edit's alpha (reference) that some frame pixel drawn with weight > 0.5 shows."""
    hr, wr = edit_alpha.shape
    h, w = weight.shape
    painted = edit_alpha > 0
    total = float(edit_alpha.sum())
    if total <= 0:
        return 1.0
    drawn = warped_alpha(painted.astype(np.float32), mapping, np.ones_like(weight)) > 0
    k = int(np.clip(np.ceil(1.5 * local_scale(mapping, drawn)), 1, 6))
    if k > 1:
        mapping = cv2.resize(mapping.astype(np.float32), (w * k, h * k), interpolation=cv2.INTER_LINEAR)
        weight = cv2.resize(weight.astype(np.float32), (w * k, h * k), interpolation=cv2.INTER_LINEAR)
    sel = weight > 0.5
    xs = np.round(mapping[..., 0][sel]).astype(np.int64)
    ys = np.round(mapping[..., 1][sel]).astype(np.int64)
    ok = (xs >= 0) & (xs < wr) & (ys >= 0) & (ys < hr)
    hit = np.zeros((hr, wr), np.uint8)
    hit[ys[ok], xs[ok]] = 1
    hit = cv2.morphologyEx(hit, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    return float((edit_alpha * hit).sum() / total)


def pieces(alpha: np.ndarray, size_px: float, level: float = 0.1, min_px: int = 3,
           min_share: float = MIN_PIECE_SHARE) -> int:
    """Connected pieces of the edit's alpha seen at the scale of its size: blurred by 1.5 % of ``size_px`` (the
    edit's bounding-box diagonal in this image) and cut at ``level``, so thin strokes that a small rendering
    breaks into dots stay one piece and only gaps wider than a few per cent of the edit separate pieces. Specks
    under ``min_share`` of the whole cut area (and under ``min_px`` pixels) are not counted: a fleck of the
    drawing that the cut separates at one scale and not at another is not a fragment (d11/d12 with the pokemon
    sticker: a dot beside the rabbit's foot, 1 % of the area, made a "third piece" on 10-13 % of the frames)."""
    sigma = max(0.7, BLUR_FRACTION * size_px)
    mask = (cv2.GaussianBlur(alpha.astype(np.float32), (0, 0), sigma) > level).astype(np.uint8)
    n, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    areas = stats[1:, cv2.CC_STAT_AREA]
    return int((areas >= max(min_px, min_share * areas.sum())).sum())


def edit_size(alpha: np.ndarray) -> float:
    """Diagonal (pixels) of the bounding box of the painted part."""
    ys, xs = np.nonzero(alpha > 0.5)
    if len(xs) == 0:
        return 0.0
    return float(np.hypot(xs.max() - xs.min() + 1, ys.max() - ys.min() + 1))


def centroid(alpha: np.ndarray) -> np.ndarray | None:
    s = float(alpha.sum())
    if s < 1e-3:
        return None
    ys, xs = np.mgrid[0:alpha.shape[0], 0:alpha.shape[1]]
    return np.array([(alpha * xs).sum() / s, (alpha * ys).sum() / s])


def face_motion(prev_gray: np.ndarray, gray: np.ndarray, where: np.ndarray,
                at: np.ndarray | None = None) -> np.ndarray | None:
    """Motion (prev -> current, frame px) of the face under ``where`` (the edit's alpha in the previous frame) at
    the point ``at`` (default: its centroid).

    Shi-Tomasi corners of the previous frame inside the edit's box grown by a quarter of its size, tracked by
    pyramidal Lucas-Kanade both ways; the tracks that come back within 0.5 px vote for one RANSAC affine (1 px),
    evaluated at ``at``. Checked on a frame moved by known affine maps (3-15 px, rotations of 3-4 degrees): within
    0.05 px, where the mean of Farnebäck flow over the same pixels was 0.2-1.5 px off (it underestimates motion by
    smoothing across the region's edges). With fewer than 6 good tracks it falls back to that mean."""
    s = float(where.sum())
    if s < 1e-3:
        return None
    if at is None:
        at = centroid(where)
    ys, xs = np.nonzero(where > 0.05)
    if len(xs):
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
        gx, gy = 0.25 * (x1 - x0), 0.25 * (y1 - y0)
        mask = np.zeros(prev_gray.shape, np.uint8)
        mask[max(0, int(y0 - gy)):int(y1 + gy), max(0, int(x0 - gx)):int(x1 + gx)] = 255
        pts = cv2.goodFeaturesToTrack(prev_gray, 200, 0.01, 3, mask=mask)
        if pts is not None and len(pts) >= 6:
            lk = dict(winSize=(21, 21), maxLevel=4)
            nxt, st, _ = cv2.calcOpticalFlowPyrLK(prev_gray, gray, pts, None, **lk)
            back, st2, _ = cv2.calcOpticalFlowPyrLK(gray, prev_gray, nxt, None, **lk)
            ok = (st[:, 0] == 1) & (st2[:, 0] == 1) & (np.linalg.norm(back - pts, axis=-1)[:, 0] < 0.5)
            if ok.sum() >= 6:
                m, _ = cv2.estimateAffine2D(pts[ok], nxt[ok], method=cv2.RANSAC, ransacReprojThreshold=1.0)
                if m is not None:
                    return m[:, :2] @ at + m[:, 2] - at
    flow = cv2.calcOpticalFlowFarneback(prev_gray, gray, None, 0.5, 4, 21, 5, 7, 1.5, 0)
    return np.array([(flow[..., 0] * where).sum() / s, (flow[..., 1] * where).sum() / s])


@dataclass
class QualityMeter:
    """Accumulates the per-frame measures of one method on one clip. ``add(frame, mapping, weight)`` per frame."""

    edit_alpha: np.ndarray                      # (Hr, Wr) float [0, 1], the edit on the reference
    coverages: list = field(default_factory=list)
    piece_counts: list = field(default_factory=list)
    jitters: list = field(default_factory=list)
    seconds: float = 0.0

    def __post_init__(self):
        self.edit_alpha = self.edit_alpha.astype(np.float32)
        self.own_size = edit_size(self.edit_alpha)
        self.own_pieces = pieces(self.edit_alpha, self.own_size)
        self._prev = None

    def add(self, frame: np.ndarray, mapping: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """Measure one frame; returns the drawn alpha (H, W)."""
        alpha = warped_alpha(self.edit_alpha, mapping, weight)
        scale = local_scale(mapping, alpha > 0.05)      # reference px per frame px
        self.coverages.append(coverage(self.edit_alpha, mapping, weight))
        self.piece_counts.append(pieces(alpha, self.own_size / max(scale, 1e-3)))
        gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
        if self._prev is not None:
            prev_gray, prev_alpha = self._prev
            c0, c1 = centroid(prev_alpha), centroid(alpha)
            motion = face_motion(prev_gray, gray, prev_alpha, c0) if c0 is not None else None
            if c0 is not None and c1 is not None and motion is not None:
                self.jitters.append(float(np.linalg.norm((c1 - c0) - motion)))
            else:
                self.jitters.append(float("nan"))   # the edit vanished: no displacement (counted by coverage)
        self._prev = (gray, alpha)
        return alpha

    def summary(self) -> dict:
        cov = np.array(self.coverages)
        pcs = np.array(self.piece_counts)
        jit = np.array(self.jitters, dtype=float)
        n = len(cov)
        return {
            "frames": n,
            "coverage": float(cov.mean()) if n else float("nan"),
            "coverage_min": float(cov.min()) if n else float("nan"),
            "whole": float((pcs == self.own_pieces).mean()) if n else float("nan"),
            "own_pieces": self.own_pieces,
            "max_pieces": int(pcs.max()) if n else 0,
            "jitter": float(np.nanmean(jit)) if np.isfinite(jit).any() else float("nan"),
            "fps": n / self.seconds if self.seconds > 0 else float("nan"),
        }


__all__ = ["QualityMeter", "coverage", "pieces", "local_scale", "warped_alpha", "centroid", "face_motion"]
