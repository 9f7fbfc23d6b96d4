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

import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import cv2
import numpy as np

from .. import native
from . import visualise
from .anchor import _affine, _apply, _fit, padded_anchor, plausible, semantic_anchor
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
    anchor: str = "auto"          # first frame -> reference: "flow" (same scene), "semantic" (another instance), "auto"
    motion: str = "affine"        # the transform tracked per frame: "affine" or "similarity"
    anchor_in_background: bool = False  # live streams: match the first frame on a thread, pass frames meanwhile
    landmarks_first: bool = True  # another face: place the edit from face landmarks first, the matcher if none


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


def _affine_map(m: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h, w, 2) positions m(x, y) of every pixel."""
    g = _grid(h, w)
    return (g[..., 0:1] * m[:, 0] + g[..., 1:2] * m[:, 1] + m[:, 2]).astype(np.float32)


def _sample(field: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear samples of an (H, W, C) field at (N, 2) points (border replicated)."""
    if len(pts) == 0:  # a featureless frame has no key points (OpenCV refuses an empty map)
        return np.zeros((0, field.shape[2] if field.ndim == 3 else 1), field.dtype)
    xs = np.ascontiguousarray(pts[:, 0], np.float32).reshape(1, -1)
    ys = np.ascontiguousarray(pts[:, 1], np.float32).reshape(1, -1)
    out = cv2.remap(field, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, field.shape[2] if field.ndim == 3 else 1)


def _ncc(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Normalised cross-correlation of two gray images over ``mask``."""
    if mask.sum() < 16:
        return 0.0
    x = a[mask].astype(np.float32)
    y = b[mask].astype(np.float32)
    x -= x.mean()
    y -= y.mean()
    d = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / d) if d > 1e-6 else 0.0


def _ramp(v: float, lo: float, hi: float) -> float:
    return float(np.clip((v - lo) / (hi - lo), 0.0, 1.0))


class StreamEditPropagator(StreamPropagator):
    """Blend an edit painted on a reference image into each new frame of a stream.

    edit_rgba: (Hr, Wr, 4) uint8 drawn on ``reference`` (Hr, Wr, 3) uint8. The reference may be a frame of the
    stream itself (webcam: "use this frame"; video: "paint on the first frame") or another image showing the same
    kind of object (a portrait, GANgealing's average face): the first frame is matched to it by optical flow in
    the first case (``options.anchor``: "auto" decides by how well optical flow explains the reference); in the
    second by the face locator's five landmarks when both show a frontal face (``options.landmarks_first``: about
    0.2 s on a 2-core CPU), else by the classic matcher (6-60 s there for a 384 px frame of the face clips).
    anchor: optional ``fn(frame, reference) -> (map (H, W, 2) in reference pixels, confidence (H, W))`` replacing
    that first match.

    Tracking: the first frame is the *key frame*; each later frame is related to it by one robust 2-D transform
    (affine, or similarity with ``options.motion``) fitted to dense optical flow over the key region (the part
    of the key frame the edit covers, grown by 15 % of its size). Chaining transforms instead of dense maps keeps
    the edit whole (one transform cannot tear it), and re-anchoring to the key frame (optical flow initialised
    by the transform) stops the drift. A confidence (appearance of the key region compared with the previous
    frame, restored by a successful re-anchoring) fades the edit when what it was painted on disappears.
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
        if self.opt.anchor not in ("auto", "flow", "semantic"):
            raise ValueError(f"unknown anchor {self.opt.anchor!r} (auto, flow, semantic)")
        if self.opt.motion not in ("affine", "similarity"):
            raise ValueError(f"unknown motion model {self.opt.motion!r} (affine, similarity)")
        self.flow = OpticalFlow(self.opt.method)
        self.anchor = anchor
        self._edit_pm = visualise.premultiply(self.edit)
        self._edit_alpha = self.edit[..., 3].astype(np.float32) / 255.0
        self.ref_gray, self.ref_scale = _gray(self.reference, self.opt.proc_side)
        hr, wr = self.ref_gray.shape
        self._alpha_proc = cv2.resize(self._edit_alpha, (wr, hr), interpolation=cv2.INTER_AREA)
        # the part of the reference the edit covers, grown by half its size: where tracking looks
        ys, xs = np.nonzero(self._alpha_proc > 0.02)
        if len(xs):
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            gx, gy = REGION_GROW * (x1 - x0) + 2, REGION_GROW * (y1 - y0) + 2
            self._ref_box = (max(0, x0 - gx), max(0, y0 - gy), min(wr, x1 + gx), min(hr, y1 + gy))
        else:
            self._ref_box = (0, 0, wr, hr)
        self._levels: dict = {1: self._edit_pm}   # the edit shrunk by powers of two (see _level)
        self._ref_marks = None    # the reference face's five landmarks (face locator), False when it has none
        self.stats = {"frames": 0, "reanchors": 0, "seconds": 0.0, "anchor": None}
        self.reset()

    # -- state ------------------------------------------------------------------------------------------------
    def reset(self) -> None:
        self.prev_gray: Optional[np.ndarray] = None
        self.key_gray: Optional[np.ndarray] = None
        self.T: Optional[np.ndarray] = None         # 2x3: current proc pixel -> key proc pixel
        self.m0_affine: Optional[np.ndarray] = None  # 2x3: key proc pixel -> reference proc pixel, or
        self.m0_dense: Optional[np.ndarray] = None   # (hp, wp, 2) the same as a dense map
        self.map: Optional[np.ndarray] = None        # (hp, wp, 2) current proc pixel -> reference proc pixel
        self.conf: Optional[np.ndarray] = None       # (hp, wp) blending confidence (uniform)
        self.confidence = 1.0
        self.frame_shape: Optional[tuple[int, int]] = None
        self.since_anchor = 0
        self._pending = None    # (thread, result box, key gray) while a background first-frame match runs
        self.unplaced = False   # the first-frame match found no believable placement: nothing is drawn
        self._thumb = None      # the previous frame shrunk for the scene-cut test (faces.is_cut)

    # -- the first frame ----------------------------------------------------------------------------------------
    def _flow_anchor(self, gray: np.ndarray) -> tuple[np.ndarray, float]:
        """Optical flow from the frame (at the reference's proc size) to the reference: (map in reference proc
        pixels at the reference's proc size, how well it explains the reference in [0, 1])."""
        hr, wr = self.ref_gray.shape
        g = cv2.resize(gray, (wr, hr), interpolation=cv2.INTER_AREA) if gray.shape != (hr, wr) else gray
        fwd = self.flow(g, self.ref_gray)
        bwd = self.flow(self.ref_gray, g)
        conf = _fb_confidence(fwd, bwd, self.opt.fb_tolerance)
        mapping = _grid(hr, wr) + fwd
        warped = cv2.remap(self.ref_gray, mapping[..., 0], mapping[..., 1], cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE)
        x0, y0, x1, y1 = (int(v) for v in self._ref_box)
        box = np.zeros((hr, wr), bool)
        box[y0:y1, x0:x1] = True
        score = _ncc(cv2.GaussianBlur(g, (0, 0), 1.0), cv2.GaussianBlur(warped, (0, 0), 1.0), box)
        score *= float(conf[box].mean()) if box.any() else 0.0
        return mapping.astype(np.float32), score

    def _start(self, gray: np.ndarray, frame: np.ndarray) -> None:
        hp, wp = gray.shape
        hr, wr = self.ref_gray.shape
        fs = gray.shape[1] / frame.shape[1]          # proc pixels per frame pixel
        self.m0_affine = self.m0_dense = None
        self._pending = None
        if self.anchor is not None:
            mapping, _ = self.anchor(frame, self.reference)
            self.m0_dense = (cv2.resize(mapping, (wp, hp), interpolation=cv2.INTER_LINEAR)
                             * self.ref_scale).astype(np.float32)
            self.stats["anchor"] = "custom"
        else:
            dense, score = (None, 0.0)
            if self.opt.anchor in ("auto", "flow"):
                dense, score = self._flow_anchor(gray)
            if self.opt.anchor == "flow" or (self.opt.anchor == "auto" and score >= SAME_SCENE_SCORE):
                dense = (cv2.resize(dense, (wp, hp), interpolation=cv2.INTER_LINEAR) if (hp, wp) != (hr, wr)
                         else dense)
                # one transform fitted to the flow over the edit's box: the edit moves, it is not bent by how the
                # face deformed since the reference (a mouth that opened, eyes that closed)
                x0, y0, x1, y1 = self._ref_box
                inbox = ((dense[..., 0] >= x0) & (dense[..., 0] < x1) & (dense[..., 1] >= y0) & (dense[..., 1] < y1))
                ys, xs = np.nonzero(inbox[::2, ::2])
                src = np.stack([xs * 2, ys * 2], -1).astype(np.float32)
                m, share = _fit(src, dense[ys * 2, xs * 2], max(1.0, 0.005 * max(hp, wp)), self.opt.motion)
                if m is not None and share >= 0.3:
                    self.m0_affine = m
                else:
                    self.m0_dense = dense
                self.stats["anchor"] = "flow"
            else:
                if self.opt.anchor_in_background:    # live streams: frames keep flowing while it is computed
                    box: dict = {}
                    worker = threading.Thread(target=self._semantic, args=(frame, fs, box), daemon=True,
                                              name="stream-anchor")
                    self._pending = (worker, box, gray)
                    worker.start()
                    return
                self._semantic(frame, fs, {})
        self._finish_start(gray)

    def _semantic(self, frame: np.ndarray, fs: float, box: dict) -> None:
        hp, wp = round(frame.shape[0] * fs), round(frame.shape[1] * fs)
        hr, wr = self.ref_gray.shape
        try:
            box_ref = tuple(v / self.ref_scale for v in self._ref_box)
            a = self._locate(frame) if self.opt.landmarks_first else None
            if not plausible(a, frame.shape[:2], self.reference.shape[:2], box_ref):
                a, _ = semantic_anchor(frame, self.reference, self.opt.motion)
            if not plausible(a, frame.shape[:2], self.reference.shape[:2], box_ref):
                # a reference framed tightly on the face (GANgealing's average fills its image) leaves the matcher
                # no context: once more with it padded by half its size in grey (d13 with the average face: the
                # stickers then land on the cheeks)
                a = padded_anchor(frame, self.reference, self.opt.motion)
            if not plausible(a, frame.shape[:2], self.reference.shape[:2], box_ref):
                # the reference's framing does not fit the frame (a face far smaller than the matcher's scales, or
                # none): that fit to background would stretch the edit over the whole frame. The face locator's
                # landmarks place it when it finds a frontal face (short_hamilton_clip: a 15 px face on a stage)
                a = None if self.opt.landmarks_first else self._locate(frame)   # (tried first already)
            if not plausible(a, frame.shape[:2], self.reference.shape[:2], box_ref):
                # still nothing believable: draw nothing rather than a misplaced edit
                self.stats["implausible_anchor"] = True
                self.unplaced = True
        except Exception as exc:  # noqa: BLE001 - reported through box / raised by the caller
            box["error"] = exc
            if not self.opt.anchor_in_background:
                raise
            return
        if a is None:     # nothing matched: the same normalised position
            m0 = np.array([[wr / wp, 0, 0], [0, hr / hp, 0]], np.float64)
        else:   # frame px -> reference px, in proc pixels of both
            s_in = np.diag([1 / fs, 1 / fs, 1.0])
            s_out = np.diag([self.ref_scale, self.ref_scale, 1.0])
            m0 = (s_out @ _affine(a) @ s_in)[:2]
        self.m0_affine = m0
        self.stats["anchor"] = "semantic"
        box["done"] = True

    def _locate(self, frame: np.ndarray) -> Optional[np.ndarray]:
        """frame px -> reference px from the face locator's landmarks (the largest frontal face of the frame onto
        the reference's face), or None (no locator, no frontal face in the frame or in the reference)."""
        from . import faces

        model = faces.locator()
        if model is None:
            return None
        if self._ref_marks is None:
            found = faces.best_face(self.reference, model, min_face=0.1 * max(self.reference.shape[:2]))
            self._ref_marks = found[1] if found is not None else False
        if self._ref_marks is False:
            return None
        found = faces.best_face(frame, model)
        self.stats["located"] = self.stats.get("located", 0) + 1
        return None if found is None else faces.landmark_map(found[1], self._ref_marks)

    def _cut(self, gray: np.ndarray, frame: np.ndarray) -> None:
        """A new shot: place the edit afresh on its largest frontal face (that frame becomes the key frame), or
        draw nothing until the next cut when there is none. An edit on a reference without a face (or with a
        custom anchor) is not about faces: the cut is tracked through as before."""
        self.stats["cuts"] = self.stats.get("cuts", 0) + 1
        a = self._locate(frame) if self.anchor is None else None
        if self.anchor is not None or self._ref_marks is False:
            self._prev_T = self.T
            self._step(gray)
            return
        box_ref = tuple(v / self.ref_scale for v in self._ref_box)
        if not plausible(a, frame.shape[:2], self.reference.shape[:2], box_ref):
            self.unplaced = True
            return
        fs = gray.shape[1] / frame.shape[1]
        s_in = np.diag([1 / fs, 1 / fs, 1.0])
        s_out = np.diag([self.ref_scale, self.ref_scale, 1.0])
        self.m0_affine, self.m0_dense = (s_out @ _affine(a) @ s_in)[:2], None
        self.unplaced = False
        self._finish_start(gray)

    def _finish_start(self, gray: np.ndarray) -> None:
        hp, wp = gray.shape
        self.key_gray = gray
        self.T = np.array([[1.0, 0, 0], [0, 1.0, 0]])
        self.confidence = 1.0
        self.since_anchor = 0
        # the key region: key pixels whose reference position falls in the (grown) edit box
        ref_pos = self._key_to_ref_grid()
        x0, y0, x1, y1 = self._ref_box
        region = ((ref_pos[..., 0] >= x0) & (ref_pos[..., 0] < x1) & (ref_pos[..., 1] >= y0)
                  & (ref_pos[..., 1] < y1))
        step = max(2, int(round(max(hp, wp) / 80)))
        sub = np.zeros_like(region)
        sub[step // 2::step, step // 2::step] = True
        ys, xs = np.nonzero(region & sub)
        self.key_region = region
        self.key_pts = np.stack([xs, ys], -1).astype(np.float32)
        self._prev_blur = cv2.GaussianBlur(gray, (0, 0), 1.0).astype(np.float32)
        self._key_values = _sample(self._prev_blur[..., None], self.key_pts)[:, 0]

    def _key_to_ref_grid(self) -> np.ndarray:
        hp, wp = self.key_gray.shape
        if self.m0_affine is not None:
            return _affine_map(self.m0_affine, hp, wp)
        return self.m0_dense

    # -- tracking -----------------------------------------------------------------------------------------------
    def _tol(self) -> float:
        return max(1.0, 0.004 * max(self.key_gray.shape))

    def _step(self, gray: np.ndarray) -> None:
        """Advance T by the flow from the previous frame, fitted over the key region's points.

        Only points that still look like themselves vote: the same grey level (lightly blurred) in the previous
        frame and in the key frame, so background that slides into the region, occluders and badly tracked
        boundaries are left out before the robust fit."""
        if len(self.key_pts) < 6:
            return
        inv = cv2.invertAffineTransform(self.T)
        prev_pts = _apply(inv, self.key_pts)                       # key points in the previous frame
        fwd = self.flow(self.prev_gray, gray)
        cur_pts = prev_pts + _sample(fwd, prev_pts)
        h, w = gray.shape
        inside = ((cur_pts[:, 0] >= 0) & (cur_pts[:, 0] <= w - 1) & (cur_pts[:, 1] >= 0) & (cur_pts[:, 1] <= h - 1)
                  & (prev_pts[:, 0] >= 0) & (prev_pts[:, 0] <= w - 1) & (prev_pts[:, 1] >= 0)
                  & (prev_pts[:, 1] <= h - 1))
        blur = cv2.GaussianBlur(gray, (0, 0), 1.0).astype(np.float32)
        now = _sample(blur[..., None], cur_pts)[:, 0]
        before = _sample(self._prev_blur[..., None], prev_pts)[:, 0]
        valid = inside & (np.abs(now - before) < 12) & (np.abs(now - self._key_values) < 30)
        m, share = _fit(cur_pts[valid], self.key_pts[valid], self._tol(), self.opt.motion)
        if m is not None:
            self.T = m
        self._prev_blur = blur
        # appearance of the key region now vs in the previous frame (both brought into key coordinates)
        hk, wk = self.key_gray.shape
        now_img = cv2.warpAffine(gray, self.T, (wk, hk), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        before_img = cv2.warpAffine(self.prev_gray, self._prev_T, (wk, hk), flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_REPLICATE)
        same = _ramp(_ncc(now_img, before_img, self.key_region), 0.3, 0.7)
        kept = float(valid.mean()) if len(valid) else 0.0
        self.confidence = min(self.confidence * self.opt.confidence_decay, same, _ramp(kept, 0.1, 0.3))

    def _reanchor(self, gray: np.ndarray, jump_ok: bool = False) -> None:
        """Match the current frame straight to the key frame (flow initialised by T: only the drift remains)."""
        hk, wk = self.key_gray.shape
        now = cv2.warpAffine(gray, self.T, (wk, hk), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        residual = self.flow(self.key_gray, now)                   # key pixel -> its position in `now`
        pos = self.key_pts + _sample(residual, self.key_pts)       # in key coordinates, through the current T
        cur = _apply(cv2.invertAffineTransform(self.T), pos)       # in the current frame
        m, share = _fit(cur, self.key_pts, self._tol(), self.opt.motion)
        self.since_anchor = 0
        if m is None or share < 0.3:
            return
        region_pts = self.key_pts
        moved = np.linalg.norm(_apply(m, _apply(cv2.invertAffineTransform(self.T), region_pts)) - region_pts, axis=1)
        extent = float(np.ptp(region_pts, axis=0).max()) if len(region_pts) else 1.0
        if not jump_ok and float(np.median(moved)) > max(4.0, 0.1 * extent):   # a jump, not drift: keep the chain
            return
        fixed = cv2.warpAffine(gray, m, (wk, hk), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        blur = lambda g: cv2.GaussianBlur(g, (0, 0), 1.0)  # noqa: E731
        before = _ncc(blur(self.key_gray), blur(now), self.key_region)
        after = _ncc(blur(self.key_gray), blur(fixed), self.key_region)
        if after + 0.01 < before:
            return
        self.T = m
        self.confidence = max(self.confidence, _ramp(after, 0.3, 0.6))
        self.stats["reanchors"] += 1

    def _scene_cut(self, gray: np.ndarray) -> bool:
        """Whether ``gray`` starts a new shot (cheap: 32x18 thumbnails); only acted on with a face locator."""
        from . import faces

        now = faces.thumb(gray)
        cut = faces.is_cut(self._thumb, now)
        self._thumb = now
        return cut and faces.locator() is not None

    def track(self, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Advance the tracker by one frame; returns (map to reference proc pixels, confidence) at proc size."""
        if frame.ndim != 3 or frame.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) frame; got {frame.shape}")
        if self.frame_shape is not None and frame.shape[:2] != self.frame_shape:
            self.reset()                       # the stream changed resolution: start over
        gray, _ = _gray(frame, self.opt.proc_side)
        cut = self._scene_cut(gray)            # (the thumbnail is kept on every frame, the first one included)
        if self._pending is not None:
            worker, box, key_gray = self._pending
            if worker.is_alive():
                self.frame_shape = frame.shape[:2]
                self.map = None
                return None, None
            self._pending = None
            if "error" in box:
                raise box["error"]
            self.prev_gray = key_gray
            self._finish_start(key_gray)
            self._prev_T = self.T
            self._reanchor(gray, jump_ok=True)      # the frames went on meanwhile: catch up with the key frame
        elif self.prev_gray is None:
            self._start(gray, frame)
            if self._pending is not None:
                self.frame_shape = frame.shape[:2]
                self.map = None
                return None, None
        elif cut:
            self._cut(gray, frame)
        else:
            self._prev_T = self.T
            self._step(gray)
            self.since_anchor += 1
            due = self.opt.reanchor_every and self.since_anchor >= self.opt.reanchor_every
            if due or self.confidence < self.opt.reanchor_below:
                self._reanchor(gray)
        self.prev_gray = gray
        self.frame_shape = frame.shape[:2]
        hp, wp = gray.shape
        if self.m0_affine is not None:
            self.map = _affine_map((_affine(self.m0_affine) @ _affine(self.T))[:2], hp, wp)
        else:
            self.map = cv2.warpAffine(self.m0_dense, self.T, (wp, hp), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                      borderMode=cv2.BORDER_REPLICATE)
        self.conf = np.full((hp, wp), self.confidence, np.float32)
        return self.map, self.conf

    def placement(self, frame_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """Where the current frame's pixels are in the reference (H, W, 2) and the edit's weight there (H, W)."""
        h, w = frame_shape
        if self.map is None:    # the first-frame match is still running: nothing drawn yet
            return np.full((h, w, 2), -1e4, np.float32), np.zeros((h, w), np.float32)
        hp, wp = self.map.shape[:2]
        lo = self.opt.min_confidence
        drawn = 0.0 if self.unplaced else np.clip((self.confidence - lo) / max(1e-6, 1 - lo), 0, 1)
        weight = np.full((h, w), drawn, np.float32)
        if self.m0_affine is not None:     # exact at full resolution: frame px -> proc px -> reference px
            s_in = np.diag([wp / w, hp / h, 1.0])
            s_out = np.diag([1 / self.ref_scale, 1 / self.ref_scale, 1.0])
            m = (s_out @ _affine(self.m0_affine) @ _affine(self.T) @ s_in)[:2]
            return _affine_map(m, h, w), weight
        return cv2.resize(self.map, (w, h), interpolation=cv2.INTER_LINEAR) / self.ref_scale, weight

    def _level(self, mapping: np.ndarray) -> tuple[np.ndarray, float]:
        """The edit prefiltered for the scale it is drawn at (premultiplied, cached per power of two) and the
        factor to divide reference positions by: a sticker drawn at a third of its size is sampled from a copy
        shrunk by area averaging, not from every third pixel (thin lines would break up)."""
        h, w = mapping.shape[:2]
        d = mapping[min(h - 1, h // 2 + 1), w // 2] - mapping[h // 2, w // 2]
        e = mapping[h // 2, min(w - 1, w // 2 + 1)] - mapping[h // 2, w // 2]
        scale = float(np.sqrt(abs(d[0] * e[1] - d[1] * e[0])))      # reference px per frame px
        f = 2 ** int(np.floor(np.log2(scale))) if scale >= 2 else 1
        if f not in self._levels:
            hr, wr = self.edit.shape[:2]
            small = cv2.resize(self._edit_pm, (max(1, round(wr / f)), max(1, round(hr / f))),
                               interpolation=cv2.INTER_AREA)
            self._levels[f] = small
        return self._levels[f], self.edit.shape[1] / self._levels[f].shape[1]

    def edit_layer(self, frame_shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        """The edit warped onto the current frame: (premultiplied RGBA float (H, W, 4), weight (H, W))."""
        full_map, weight = self.placement(frame_shape)
        pm, f = self._level(full_map)
        if f != 1:
            full_map = (full_map + 0.5) / f - 0.5
        return visualise.warp_rgba(self.edit, full_map, pm), weight

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


SAME_SCENE_SCORE = 0.6   # flow-anchor score above which the reference is taken to be a frame of the same scene
REGION_GROW = 0.15       # the key region: the edit's bounding box grown by this share of its size on each side

__all__ = ["OpticalFlow", "StreamEditPropagator", "StreamOptions", "padded_anchor", "plausible", "semantic_anchor"]
