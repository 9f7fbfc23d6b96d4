"""Carry an edit painted on one frame through a video or a live webcam stream.

Between consecutive frames the motion comes from dense optical flow (OpenCV's DIS, Kroeger et al., "Fast Optical
Flow using Dense Inverse Search", ECCV 2016; Farnebäck as a fallback). Instead of warping the edit image again and
again (which blurs and drifts), the propagator keeps, for every pixel of the current frame, its position in the
reference frame (a coordinate map) and composes it with each new frame-to-frame flow; the edit itself is sampled
once per frame from the untouched original.

Drift control: every ``reanchor_every`` frames (and whenever the tracked confidence falls below
``reanchor_below``) the current frame is matched directly to the reference frame; where that direct match passes
a forward-backward check it replaces the chained map. Occluded or unreliable pixels (failed forward-backward checks,
pixels that came from outside the reference) lose confidence and their edit fades instead of smearing.

Everything is numpy/OpenCV; ``StreamEditPropagator`` is a plain callable (frame -> frame) usable by any backend
that can express its correspondence as "where is this pixel in the reference frame". Video files go through
``engine.videoio.map_video(path, propagator)``.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np

from .. import native
from . import visualise
from .base import StreamPropagator

Progress = Optional[Callable[[float, str], None]]


@dataclass
class StreamOptions:
    proc_side: int = 320          # frames are tracked at this longer side (the edit is drawn at full resolution)
    method: str = "dis"           # "dis" or "farneback"
    reanchor_every: int = 10      # frames between direct matches to the reference (0 = never)
    reanchor_below: float = 0.6   # also re-anchor when the mean tracked confidence of the edit drops below this
    fb_tolerance: float = 1.5     # forward-backward error (proc pixels) at which a pixel's confidence halves
    confidence_decay: float = 0.998  # per-frame decay of the chained confidence (unverified accumulation)
    min_confidence: float = 0.15  # below this the edit is not drawn at all


def _gray(frame: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    h, w = frame.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        frame = cv2.resize(frame, (max(8, round(w * scale)), max(8, round(h * scale))), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), scale


class OpticalFlow:
    """Dense flow between two gray frames: flow(a, b)[y, x] = displacement so that a(x) ~ b(x + d).

    The native call goes through ``engine.native.optical_flow``: inputs checked first, one DIS object per frame size,
    run in a worker process so that an OpenCV crash fails only this job.
    """

    def __init__(self, method: str = "dis"):
        if method not in ("dis", "farneback"):
            raise ValueError(f"unknown optical flow method {method!r} (dis, farneback)")
        self.method = method

    def __call__(self, a: np.ndarray, b: np.ndarray, init: Optional[np.ndarray] = None) -> np.ndarray:
        """init: an initial flow (H, W, 2) to refine instead of starting from zero."""
        return native.optical_flow(a, b, init, self.method)


def _grid(h: int, w: int) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.stack([gx, gy], -1)


def _fb_confidence(fwd: np.ndarray, bwd: np.ndarray, tol: float) -> np.ndarray:
    """Per-pixel confidence of fwd (a -> b) from the round trip through bwd (b -> a)."""
    h, w = fwd.shape[:2]
    pos = _grid(h, w) + fwd
    back = cv2.remap(bwd, pos[..., 0], pos[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=(1e4, 1e4))
    err = np.linalg.norm(fwd + back, axis=-1)
    inside = (pos[..., 0] >= 0) & (pos[..., 0] <= w - 1) & (pos[..., 1] >= 0) & (pos[..., 1] <= h - 1)
    return (1.0 / (1.0 + (err / tol) ** 2) * inside).astype(np.float32)


class StreamEditPropagator(StreamPropagator):
    """Blend an edit painted on a reference frame into each new frame of a stream.

    edit_rgba: (Hr, Wr, 4) uint8 drawn on ``reference`` (Hr, Wr, 3) uint8. Frames may have another size; they are
    related to the reference through normalised coordinates before tracking starts.
    anchor: optional ``fn(frame, reference) -> (map (H, W, 2) in reference pixels, confidence (H, W))`` used to
    re-anchor (default: optical flow straight to the reference, fine for a live camera / one shot).
    """

    def __init__(self, edit_rgba: np.ndarray, reference: np.ndarray, opacity: float = 1.0,
                 options: Optional[StreamOptions] = None, anchor=None):
        self.edit = visualise.as_rgba(edit_rgba)
        self.reference = np.ascontiguousarray(reference)
        if self.edit.shape[:2] != self.reference.shape[:2]:
            self.edit = cv2.resize(self.edit, (self.reference.shape[1], self.reference.shape[0]),
                                   interpolation=cv2.INTER_LINEAR)
        self.opacity = float(opacity)
        self.opt = options or StreamOptions()
        self.flow = OpticalFlow(self.opt.method)
        self.anchor = anchor
        self._edit_pm = visualise.premultiply(self.edit)
        self._edit_alpha = self.edit[..., 3].astype(np.float32) / 255.0
        self.ref_gray, self.ref_scale = _gray(self.reference, self.opt.proc_side)
        self.stats = {"frames": 0, "reanchors": 0, "seconds": 0.0}
        self.reset()

    # -- state ------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.prev_gray: Optional[np.ndarray] = None
        self.map: Optional[np.ndarray] = None     # (hp, wp, 2) position in reference *proc* pixels
        self.conf: Optional[np.ndarray] = None    # (hp, wp)
        self.frame_shape: Optional[tuple[int, int]] = None
        self.since_anchor = 0

    def _direct(self, gray: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map of the current frame (proc pixels) straight into the reference (proc pixels), with confidence."""
        hp, wp = gray.shape
        hr, wr = self.ref_gray.shape
        if self.anchor is not None:
            mapping, conf = self.anchor(frame, self.reference)
            mp = cv2.resize(mapping, (wp, hp), interpolation=cv2.INTER_LINEAR) * self.ref_scale
            return mp.astype(np.float32), cv2.resize(conf.astype(np.float32), (wp, hp))
        # optical flow between the frame resized to the reference's proc size and the reference
        g = cv2.resize(gray, (wr, hr), interpolation=cv2.INTER_AREA) if (hp, wp) != (hr, wr) else gray
        fwd = self.flow(g, self.ref_gray)
        bwd = self.flow(self.ref_gray, g)
        conf = _fb_confidence(fwd, bwd, self.opt.fb_tolerance)
        mapping = _grid(hr, wr) + fwd
        if (hp, wp) != (hr, wr):
            mapping = cv2.resize(mapping, (wp, hp), interpolation=cv2.INTER_LINEAR)
            conf = cv2.resize(conf, (wp, hp), interpolation=cv2.INTER_LINEAR)
        return mapping.astype(np.float32), conf

    def _edit_confidence(self) -> float:
        """Mean tracked confidence over the pixels that currently show the edit."""
        a = cv2.remap(self._alpha_proc, self.map[..., 0], self.map[..., 1], cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        w = a > 0.05
        return float(self.conf[w].mean()) if w.any() else 1.0

    @property
    def _alpha_proc(self) -> np.ndarray:
        hr, wr = self.ref_gray.shape
        if getattr(self, "_alpha_cache", None) is None or self._alpha_cache.shape != (hr, wr):
            self._alpha_cache = cv2.resize(self._edit_alpha, (wr, hr), interpolation=cv2.INTER_AREA)
        return self._alpha_cache

    def track(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance the tracker by one frame; returns (map to reference proc pixels, confidence) at proc size."""
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) frame; got {frame.shape}")
        if self.frame_shape is not None and frame.shape[:2] != self.frame_shape:
            self.reset()                       # the stream changed resolution: start over
        gray, _ = _gray(frame, self.opt.proc_side)
        if self.prev_gray is None:
            self.map, self.conf = self._direct(gray, frame)
            self.since_anchor = 0
        else:
            back = self.flow(gray, self.prev_gray)          # current pixel -> previous frame
            fwd = self.flow(self.prev_gray, gray)
            hp, wp = gray.shape
            pos = _grid(hp, wp) + back
            self.map = cv2.remap(self.map, pos[..., 0], pos[..., 1], cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REPLICATE)
            prev_conf = cv2.remap(self.conf, pos[..., 0], pos[..., 1], cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_CONSTANT, borderValue=0)
            # min, not product: one occlusion is remembered, small per-frame doubts do not compound to zero
            self.conf = np.minimum(prev_conf * self.opt.confidence_decay,
                                   _fb_confidence(back, fwd, self.opt.fb_tolerance))
            self.since_anchor += 1
            due = self.opt.reanchor_every and self.since_anchor >= self.opt.reanchor_every
            if due or self._edit_confidence() < self.opt.reanchor_below:
                self._reanchor(gray, frame)
        self.prev_gray = gray
        self.frame_shape = frame.shape[:2]
        return self.map, self.conf

    def _reanchor(self, gray: np.ndarray, frame: np.ndarray) -> None:
        """Snap the chained map back onto the reference where a direct match confirms it.

        The direct match is optical flow from the current frame straight to the reference frame, *initialised with
        the chained map*, so large accumulated motion is no problem and only the residual drift is estimated. The
        refinement replaces the chain only where it stays close to it (drift, not a jump to a look-alike) and
        explains the pixel at least as well photometrically; there the confidence is restored.
        """
        if self.anchor is not None:
            direct, dconf = self._direct(gray, frame)
            w = np.clip(dconf - 0.5 * self.conf, 0.0, 1.0)[..., None]
            self.map = (w * direct + (1 - w) * self.map).astype(np.float32)
            self.conf = np.maximum(self.conf, dconf).astype(np.float32)
            self.since_anchor = 0
            self.stats["reanchors"] += 1
            return
        hp, wp = gray.shape
        hr, wr = self.ref_gray.shape
        same = (hp, wp) == (hr, wr)
        g = gray if same else cv2.resize(gray, (wr, hr), interpolation=cv2.INTER_AREA)
        chain = self.map if same else cv2.resize(self.map, (wr, hr), interpolation=cv2.INTER_LINEAR)
        base = _grid(hr, wr)
        refined = base + self.flow(g, self.ref_gray, init=chain - base)
        tol = max(2.0, 0.015 * max(hr, wr))
        agree = np.exp(-(np.linalg.norm(refined - chain, axis=-1) / tol) ** 2)
        gf = g.astype(np.float32)

        def photo_err(m):
            warped = cv2.remap(self.ref_gray, m[..., 0], m[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0).astype(np.float32)
            return cv2.GaussianBlur(np.abs(gf - warped), (0, 0), 1.5)

        e_ref, e_chain = photo_err(refined), photo_err(chain)
        w = agree * (e_ref <= e_chain + 3.0)
        restored = w * np.exp(-(e_ref / 20.0) ** 2)
        if not same:
            w = cv2.resize(w, (wp, hp), interpolation=cv2.INTER_LINEAR)
            restored = cv2.resize(restored, (wp, hp), interpolation=cv2.INTER_LINEAR)
            refined = cv2.resize(refined, (wp, hp), interpolation=cv2.INTER_LINEAR)
        self.map = (w[..., None] * refined + (1 - w[..., None]) * self.map).astype(np.float32)
        self.conf = np.maximum(self.conf, restored).astype(np.float32)
        self.since_anchor = 0
        self.stats["reanchors"] += 1

    def placement(self, frame_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Where the current frame's pixels are in the reference (H, W, 2) and the edit's weight there (H, W)."""
        h, w = frame_shape
        full_map = cv2.resize(self.map, (w, h), interpolation=cv2.INTER_LINEAR) / self.ref_scale
        weight = cv2.resize(self.conf, (w, h), interpolation=cv2.INTER_LINEAR)
        lo = self.opt.min_confidence
        weight = np.clip((weight - lo) / max(1e-6, 1 - lo), 0, 1)
        return full_map, weight

    def edit_layer(self, frame_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The edit warped onto the current frame: (premultiplied RGBA float (H, W, 4), weight (H, W))."""
        full_map, weight = self.placement(frame_shape)
        return visualise.warp_rgba(self.edit, full_map, self._edit_pm), weight

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        frame = np.ascontiguousarray(frame[..., :3]).astype(np.uint8)
        self.track(frame)
        layer, weight = self.edit_layer(frame.shape[:2])
        out = visualise.composite(frame, layer, self.opacity, weight)
        self.stats["frames"] += 1
        self.stats["seconds"] += time.perf_counter() - t0
        return out

    def edit_alpha(self, frame_shape: tuple[int, int]) -> np.ndarray:
        """The propagated edit's alpha on the current frame (after confidence), (H, W) float in [0, 1]."""
        layer, weight = self.edit_layer(frame_shape)
        return layer[..., 3] * weight


__all__ = ["OpticalFlow", "StreamEditPropagator", "StreamOptions"]
