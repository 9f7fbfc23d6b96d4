"""Face location for edit propagation: where the face is when it is too small for the classic matcher, and scene
cuts.

The locator is MTCNN (engine/models/mtcnn.py, weights from the ``facenet-pytorch`` wheel). Without those weights
(package not installed, or ``ENGINE_RANDOM_WEIGHTS=1``) :func:`locator` returns None and callers do what they did
before (a tiny face gets no edit, a cut is tracked through).

A placement from landmarks: the five MTCNN landmarks of the frame's face mapped onto the reference face's own five
landmarks by one least-squares similarity transform (scale, rotation, shift).
"""
from __future__ import annotations

import threading
from typing import Optional

import cv2
import numpy as np

FRONTAL_MIN = 0.35      # frontal(landmarks) below this is taken as a side view (no edit drawn on it)
MIN_FACE_PX = 10        # the smallest face side (px) the locator looks for, at ...
LOCATE_SIDE = 480       # ... frames shrunk to this longer side (about 1.5 s on this 2-core CPU at 384 x 216)
CUT_THUMB = (32, 18)    # scene cuts are judged on frames shrunk to this size (gray)
CUT_LEVEL = 15.0        # a cut: mean absolute difference of consecutive thumbnails (0-255) above this ...
CUT_HIST = 0.14         # ... and their 16-bin gray histograms differing by more than this share (total variation)

_lock = threading.Lock()
_missing_reason: Optional[str] = None


def locator():
    """The MTCNN model on the engine's device, or None when its weights are not available (see module doc)."""
    global _missing_reason
    from .. import config, registry

    if config.random_weights():
        return None
    with _lock:
        if _missing_reason is not None:
            return None
        status = registry.model_status("mtcnn")
        if status.state not in ("ready", "unverified"):
            _missing_reason = "face locator not available: pip install facenet-pytorch==2.5.3"
            return None
    return registry.load_model("mtcnn", device="cpu")   # small nets, many tiny steps: the CPU is the right place


def missing_reason() -> Optional[str]:
    return _missing_reason


def best_face(image: np.ndarray, model=None, min_face: float = MIN_FACE_PX
              ) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """The largest frontal face of ``image`` (H, W, 3) uint8 RGB: (box (5,) x0, y0, x1, y1, probability; landmarks
    (5, 2)) in pixels, or None (no locator, no face, or only side views)."""
    from ..models.mtcnn import frontal

    model = model if model is not None else locator()
    if model is None:
        return None
    side = max(image.shape[:2])
    f = min(1.0, LOCATE_SIDE / side)        # large frames are searched at LOCATE_SIDE (cost grows with area)
    small = image if f == 1.0 else cv2.resize(image, (round(image.shape[1] * f), round(image.shape[0] * f)),
                                              interpolation=cv2.INTER_AREA)
    boxes, marks = model.detect(small, min_face=max(min_face * f, MIN_FACE_PX))
    boxes[:, :4] /= f
    marks /= f
    best, area = None, 0.0
    for b, m in zip(boxes, marks):
        a = float((b[2] - b[0]) * (b[3] - b[1]))
        if frontal(m) >= FRONTAL_MIN and a > area:
            best, area = (b, m), a
    return best


def landmark_map(frame_marks: np.ndarray, reference_marks: np.ndarray) -> Optional[np.ndarray]:
    """2x3 similarity taking frame pixels to reference pixels from matching five-point landmarks, or None."""
    m, _ = cv2.estimateAffinePartial2D(frame_marks.astype(np.float32), reference_marks.astype(np.float32),
                                       method=cv2.LMEDS)
    return None if m is None else m.astype(np.float64)


def thumb(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cut detector's view of a gray frame: the frame shrunk to (18, 32) float32, and its 16-bin histogram."""
    t = cv2.resize(gray, CUT_THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)
    hist = np.histogram(t, bins=16, range=(0, 256))[0].astype(np.float32)
    return t, hist / max(1.0, float(hist.sum()))


def is_cut(before, now) -> bool:
    """Whether two consecutive frames (their :func:`thumb`) are different shots: the picture changed a lot *and*
    so did its brightness histogram (a fast pan or a head turn changes the first, hardly the second). Measured on
    the 14 face-video clips at 384 px: short_hamilton_clip's three cuts give 26-30 / 0.19-0.33; the largest values
    elsewhere are 19.2 / 0.06 (d12, fast head motion) and, by histogram, 12.6 / 0.09."""
    if before is None:
        return False
    return (float(np.abs(now[0] - before[0]).mean()) > CUT_LEVEL
            and 0.5 * float(np.abs(now[1] - before[1]).sum()) > CUT_HIST)


__all__ = ["best_face", "is_cut", "landmark_map", "locator", "thumb"]
