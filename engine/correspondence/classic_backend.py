"""The weight-free correspondence backend: works offline for any pair of images and any video.

Pairwise: hand-crafted dense descriptors + SIFT-Flow-style belief propagation (engine/correspondence/classic.py;
Liu, Yuen & Torralba, TPAMI 2011). Streams: optical flow between consecutive frames with periodic re-anchoring to
the reference frame (engine/correspondence/video.py). Registered as ``classic``.

    >>> from engine.correspondence import get_backend
    >>> be = get_backend("classic")
    >>> m = be.match(img_a, img_b)                    # DenseMatch: flow (Ha, Wa, 2) into B, confidence (Ha, Wa)
    >>> out = be.propagate(edit_rgba, [img_b], reference=img_a)
    >>> handler = be.stream(edit_rgba, reference=frame0); frame_out = handler(frame)
"""
from __future__ import annotations

from typing import Optional, Sequence

import cv2
import numpy as np

from ..errors import InputError
from ..queue import run_exclusive
from . import classic, visualise
from .base import Backend, DenseMatch, Progress, StreamPropagator, register_backend
from .video import StreamEditPropagator, StreamOptions

MIN_SIDE = 16
MAX_SIDE = 2048  # larger inputs are shrunk first (the matcher works at ~200 px anyway; outputs stay usable)


def check_image(img, name: str = "image") -> np.ndarray:
    """Validate / convert an input to (H, W, 3) uint8 RGB; raises InputError with a readable reason."""
    if img is None:
        raise InputError(f"Please provide the {name}.")
    if not isinstance(img, np.ndarray):
        from ..imageio import as_numpy_rgb

        img = as_numpy_rgb(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise InputError(f"The {name} must be an RGB image; got an array of shape {img.shape}.")
    if img.dtype != np.uint8:
        from ..imageio import as_numpy_rgb

        img = as_numpy_rgb(img)
    if img.shape[2] == 4:  # composite on white, as everywhere in the engine
        a = img[..., 3:].astype(np.float32) / 255.0
        img = (img[..., :3].astype(np.float32) * a + 255.0 * (1 - a)).round().astype(np.uint8)
    h, w = img.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"The {name} is {w}x{h}; both sides must be at least {MIN_SIDE} pixels.")
    if max(h, w) > MAX_SIDE:
        s = MAX_SIDE / max(h, w)
        img = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img)


def check_edit(edit, reference: np.ndarray) -> np.ndarray:
    """An RGBA edit (H, W, 4) uint8 the size of the reference (resized if needed); must paint something."""
    if edit is None:
        raise InputError("Paint an edit (or upload an RGBA image) first.")
    if not isinstance(edit, np.ndarray):
        from ..imageio import load_rgba

        edit = np.asarray(load_rgba(edit))
    if edit.ndim != 3 or edit.shape[2] not in (3, 4):
        raise InputError(f"The edit must be an RGBA image; got an array of shape {edit.shape}.")
    edit = visualise.as_rgba(edit.astype(np.uint8) if edit.dtype != np.uint8 else edit)
    if edit.shape[:2] != reference.shape[:2]:
        edit = cv2.resize(edit, (reference.shape[1], reference.shape[0]), interpolation=cv2.INTER_LINEAR)
    if not (edit[..., 3] > 0).any():
        raise InputError("The edit is fully transparent: paint something on the reference first.")
    return edit


def confidence_weight(conf: np.ndarray, lo: float = 0.1, hi: float = 0.45) -> np.ndarray:
    """Confidence -> blending weight: a smooth ramp, lightly blurred so that isolated doubts do not speckle."""
    c = cv2.GaussianBlur(conf.astype(np.float32), (0, 0), max(1.0, max(conf.shape) / 200))
    t = np.clip((c - lo) / (hi - lo), 0, 1)
    return t * t * (3 - 2 * t)


class _LockedStream(StreamPropagator):
    """Runs each frame of an inner propagator under the engine lock."""

    def __init__(self, inner: StreamEditPropagator):
        self.inner = inner

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return run_exclusive(self.inner, frame)

    def reset(self) -> None:
        self.inner.reset()

    @property
    def stats(self) -> dict:
        return self.inner.stats


class ClassicBackend(Backend):
    name = "classic"
    title = "Classic (no weights)"
    needs_reference = True

    def __init__(self, params: Optional[classic.FlowParams] = None):
        self.params = params or classic.FlowParams()
        self._alignments: dict[tuple[str, str], classic.GlobalAlignment] = {}   # last matches, for heat maps

    def status(self) -> tuple[bool, str]:
        return True, ("Hand-crafted dense descriptors + SIFT-Flow-style matching with a global alignment search; "
                      "no downloaded weights. Works for any pair of images; best when both show the same kind "
                      "of object at a similar pose.")

    def match(self, a: np.ndarray, b: np.ndarray, progress: Progress = None) -> DenseMatch:
        a = check_image(a, "first image (A)")
        b = check_image(b, "second image (B)")
        res = run_exclusive(classic.dense_flow, a, b, self.params, "bp", True, progress)
        if res.alignment is not None:
            if len(self._alignments) > 32:
                self._alignments.clear()
            self._alignments[(classic.image_digest(a), classic.image_digest(b))] = res.alignment
        return DenseMatch(res.flow, res.confidence, {"similarity": res.similarity, "alignment": res.alignment})

    def point_heatmap(self, a: np.ndarray, b: np.ndarray, x: float, y: float,
                      alignment: Optional[classic.GlobalAlignment] = None) -> np.ndarray:
        """Descriptor similarity of A's pixel (x, y) to every pixel of B, (Hb, Wb) float in [-1, 1]."""
        a = check_image(a, "first image (A)")
        b = check_image(b, "second image (B)")
        if not (0 <= x < a.shape[1] and 0 <= y < a.shape[0]):
            raise InputError(f"The point ({x:.0f}, {y:.0f}) is outside image A ({a.shape[1]}x{a.shape[0]}).")
        if alignment is None:   # the scale the last match of this pair used, when there was one
            alignment = self._alignments.get((classic.image_digest(a), classic.image_digest(b)))
        return run_exclusive(classic.point_similarity, a, b, x, y, self.params, alignment)

    def similarity(self, a: np.ndarray, b: np.ndarray, x: float, y: float) -> np.ndarray:
        """:meth:`point_heatmap` stretched to [0, 1] for display (1 = the most similar pixel of B)."""
        heat = self.point_heatmap(a, b, x, y)
        lo, hi = float(heat.min()), float(heat.max())
        return np.clip((heat - lo) / max(hi - lo, 1e-6), 0, 1).astype(np.float32)

    def mapping(self, target: np.ndarray, reference: np.ndarray, progress: Progress = None
                ) -> tuple[np.ndarray, np.ndarray]:
        """For each pixel of ``target``: its position in ``reference`` and a blending weight in [0, 1]."""
        res = run_exclusive(classic.dense_flow, target, reference, self.params, "bp", True, progress)
        return res.flow, confidence_weight(res.confidence)

    def propagate(self, edit_rgba: np.ndarray, targets: Sequence[np.ndarray], *, reference: Optional[np.ndarray] = None,
                  opacity: float = 1.0, progress: Progress = None) -> list[np.ndarray]:
        if reference is None:
            raise InputError("The classic backend needs the reference image the edit was painted on.")
        reference = check_image(reference, "reference image")
        edit = check_edit(edit_rgba, reference)
        if not targets:
            raise InputError("Add at least one target image to propagate the edit to.")
        pm = visualise.premultiply(edit)
        outs = []
        n = len(targets)
        for i, t in enumerate(targets):
            t = check_image(t, f"target image {i + 1}")

            def sub(f, d, i=i):
                if progress is not None:
                    progress((i + f) / n, f"image {i + 1}/{n}: {d}")

            mapping, weight = self.mapping(t, reference, sub)
            layer = visualise.warp_rgba(edit, mapping, pm)
            outs.append(visualise.composite(t, layer, opacity, weight))
        if progress is not None:
            progress(1.0, "done")
        return outs

    def stream(self, edit_rgba: np.ndarray, *, reference: Optional[np.ndarray] = None, opacity: float = 1.0,
               **options) -> StreamPropagator:
        """Per-frame handler. options: StreamOptions fields (proc_side, method, reanchor_every, ...)."""
        if reference is None:
            raise InputError("Capture or choose the reference frame the edit is painted on first.")
        reference = check_image(reference, "reference frame")
        edit = check_edit(edit_rgba, reference)
        known = set(StreamOptions.__dataclass_fields__)
        bad = sorted(set(options) - known)
        if bad:
            raise InputError(f"Unknown stream option(s) {bad}; valid: {sorted(known)}.")
        return _LockedStream(StreamEditPropagator(edit, reference, opacity, StreamOptions(**options)))


register_backend("classic", "Classic (no weights)", ClassicBackend)

__all__ = ["ClassicBackend", "check_edit", "check_image", "confidence_weight"]
