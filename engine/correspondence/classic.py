"""Weight-free dense correspondence: hand-crafted dense descriptors + discrete flow with a spatial prior.

The flow follows SIFT Flow (C. Liu, J. Yuen, A. Torralba, "SIFT Flow: Dense Correspondence across Scenes and its
Applications", TPAMI 2011): a dense SIFT-like descriptor at every grid cell of both images, then a discrete
labelling where each cell of A picks a cell of B, minimising

    sum_p  D_p(l_p)  +  sum_(p,q) lambda * min(|(l_p - p) - (l_q - q)|_1, T)  +  sum_p  eta * |l_p - g(p)|_1

(data term = truncated descriptor distance, truncated-L1 smoothness on the displacement, a pull towards the
position g(p) predicted by a global alignment). It is minimised with min-sum loopy belief propagation; each message
is an O(L) distance transform (Felzenszwalb & Huttenlocher, "Efficient Belief Propagation for Early Vision",
IJCV 2006), two passes of running minima vectorised over all nodes.

Before the flow, a global alignment g (scale of B relative to A and a shift; optionally a mirror) is found by
Hough voting of descriptor matches over a set of scales, the idea behind the local-offset voting of Proposal Flow
(Ham, Cho, Schmid, Ponce, CVPR 2016) reduced to one global offset per scale: votes are weighted by how distinctive
both cells are in their own image (repetitive background outvoting the object was the main failure), and each
scale is scored in both directions (A into B, B into A) so that neither image size is favoured. B is then
resampled at the chosen scale, which keeps descriptors comparable when the two objects differ in size.

Differences from SIFT Flow: one coarse level with the label region cut to A's aligned footprint (no pyramid),
multi-scale descriptors with unsigned gradient orientations (robust to the contrast reversals between instances),
sub-cell refinement by a parabola through the data cost, and a forward-backward check for the confidence map.

Everything here is numpy + OpenCV; no weights, no torch. Images are (H, W, 3) uint8 RGB.
"""
from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

import cv2
import numpy as np

Progress = Optional[Callable[[float, str], None]]


# --------------------------------------------------------------------------------------------------------------
# descriptors
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DescriptorParams:
    """Dense SIFT/HOG-like descriptor settings (sizes in pixels of the working image)."""

    cell_sizes: tuple[int, ...] = (4, 8, 16)   # one 4x4-cell SIFT layout per size (multi-scale, concatenated)
    scale_weights: tuple[float, ...] = (1.0, 1.0, 1.0)
    n_bins: int = 8                            # orientation bins
    signed: bool = False                       # False: orientation modulo pi (contrast-reversal invariant)
    grid: int = 4                              # cells per side of the SIFT layout
    color_weight: float = 0.0                  # weight of a small pooled Lab colour descriptor (0 = off)
    smooth_sigma: float = 0.8                  # pre-smoothing before gradients
    clip: float = 0.2                          # SIFT's clipping of normalised entries


def _orientation_channels(gray: np.ndarray, params: DescriptorParams) -> np.ndarray:
    """(H, W) float32 -> (n_bins, H, W): gradient magnitude softly split between the two nearest orientation bins."""
    if params.smooth_sigma > 0:
        gray = cv2.GaussianBlur(gray, (0, 0), params.smooth_sigma)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=1)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=1)
    mag = np.sqrt(gx * gx + gy * gy)
    ang = np.arctan2(gy, gx)
    period = 2 * np.pi if params.signed else np.pi
    pos = (np.mod(ang, period) / period) * params.n_bins
    lo = np.floor(pos).astype(np.int32)
    frac = (pos - lo).astype(np.float32)
    lo %= params.n_bins
    hi = (lo + 1) % params.n_bins
    chans = np.zeros((params.n_bins,) + gray.shape, np.float32)
    for b in range(params.n_bins):
        chans[b] = np.where(lo == b, mag * (1 - frac), 0) + np.where(hi == b, mag * frac, 0)
    return chans


def _sample(chan: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Bilinear samples of a (H, W) map at float grids xs, ys (border replicated)."""
    return cv2.remap(chan, xs.astype(np.float32), ys.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


def _normalise(desc: np.ndarray, clip: float) -> np.ndarray:
    desc = desc / (np.linalg.norm(desc, axis=-1, keepdims=True) + 1e-6)
    if clip:
        desc = np.minimum(desc, clip)
        desc = desc / (np.linalg.norm(desc, axis=-1, keepdims=True) + 1e-6)
    return desc


def dense_descriptors(image: np.ndarray, stride: int = 4, params: DescriptorParams = DescriptorParams(),
                      offset: Optional[float] = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Multi-scale dense SIFT-like descriptors on a regular grid.

    image: (H, W, 3) uint8 RGB (or (H, W) gray). Returns (desc (gh, gw, D) float32 with unit L2 norm,
    xs (gw,), ys (gh,)) where xs/ys are the pixel positions of the grid cells.
    """
    if image.ndim == 3:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    else:
        gray = image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0)
    h, w = gray.shape
    off = (stride - 1) / 2.0 if offset is None else offset
    xs = np.arange(off, w, stride, dtype=np.float32)
    ys = np.arange(off, h, stride, dtype=np.float32)
    gx, gy = np.meshgrid(xs, ys)
    chans = _orientation_channels(gray, params)
    parts = []
    g = params.grid
    for cell, weight in zip(params.cell_sizes, params.scale_weights):
        # triangular (bilinear) spatial pooling over one cell, as in SIFT's trilinear interpolation
        k = 2 * cell + 1
        tri = np.minimum(np.arange(1, k + 1), np.arange(k, 0, -1)).astype(np.float32)
        tri /= tri.sum()
        pooled = [cv2.sepFilter2D(c, -1, tri, tri, borderType=cv2.BORDER_REFLECT) for c in chans]
        offs = (np.arange(g) - (g - 1) / 2.0) * cell
        feats = []
        for oy in offs:
            for ox in offs:
                sx, sy = gx + ox, gy + oy
                feats.append(np.stack([_sample(p, sx, sy) for p in pooled], axis=-1))
        d = np.concatenate(feats, axis=-1)
        parts.append(_normalise(d, params.clip) * weight)
    if params.color_weight > 0:
        lab = cv2.cvtColor(image, cv2.COLOR_RGB2LAB).astype(np.float32) / 255.0 if image.ndim == 3 else None
        if lab is not None:
            cell = params.cell_sizes[len(params.cell_sizes) // 2]
            blur = cv2.GaussianBlur(lab, (0, 0), cell)
            col = np.stack([_sample(blur[..., c], gx, gy) for c in range(3)], -1) - 0.5
            parts.append(col * params.color_weight)
    desc = np.concatenate(parts, axis=-1)
    desc /= np.linalg.norm(desc, axis=-1, keepdims=True) + 1e-6
    return desc.astype(np.float32), xs, ys


# --------------------------------------------------------------------------------------------------------------
# discrete flow (SIFT-Flow-style belief propagation over the full label grid of B)
# --------------------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FlowParams:
    """Settings of the classic matcher. Sizes are in pixels of the working images."""

    max_side: int = 192            # A is resized so that its longer side is this (B by the hypothesis' scale)
    stride: int = 8                # grid step of the descriptors / labels
    descriptor: DescriptorParams = field(default_factory=DescriptorParams)
    data_scale: float = 1.0        # data term = data_scale * min(1 - cosine, data_trunc)
    data_trunc: float = 0.8
    data_distinct: float = 0.0     # weight the data term by (distinctiveness of A's cell) ** this
    smooth: float = 0.1            # lambda: cost per grid cell of displacement difference between neighbours
    smooth_trunc: float = 4.0      # T, in grid cells
    prior: float = 0.02            # eta: cost per grid cell away from the global alignment's prediction
    iterations: int = 30
    damping: float = 0.0
    subpixel: object = "data"      # parabolic refinement of the chosen label on "data" cost or "belief" (False: off)
    smooth_output: float = 1.0     # Gaussian sigma (grid cells) applied to the final flow (0 = off)
    # global alignment: Hough voting over (mirror, scale, translation) before the flow
    scales: tuple[float, ...] = (0.5, 0.63, 0.79, 1.0, 1.26, 1.59, 2.0)   # B enlarged by (A content / B content)
    aspects: tuple[float, ...] = (1.0,)   # B's aspect change relative to A's (width/height stretch)
    flips: bool = False            # also try B mirrored left-right (objects facing the other way)
    hough_topk: int = 10
    hough_floor: float = 0.3       # similarities below this do not vote
    hough_distinct: bool = True    # weight votes by the distinctiveness of both cells
    hough_symmetric: bool = True   # score each scale in both directions (A into B and B into A)
    crop_margin: float = 0.3       # B's label region = A's footprint under the alignment + this x max_side
    candidates: int = 1            # run the flow for this many best alignments and keep the best one by:
    select: str = "consistency"    # "consistency" (forward-backward round trip) or "energy" (BP energy)


def _working_image(img: np.ndarray, max_side: int) -> tuple[np.ndarray, float]:
    h, w = img.shape[:2]
    scale = max_side / max(h, w)
    size = (max(8, int(round(w * scale))), max(8, int(round(h * scale))))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return cv2.resize(img, size, interpolation=interp), scale


def _l1_distance_transform(h: np.ndarray, lam: float, axis: int) -> np.ndarray:
    """In place: h[i] <- min_j h[j] + lam*|i - j| along ``axis`` (0 or 1), by a forward and a backward pass.

    Label axes come first and node axes last, so every step is one vectorised minimum over all nodes.
    """
    n = h.shape[axis]
    view = h if axis == 0 else np.moveaxis(h, 1, 0)
    for i in range(1, n):
        np.minimum(view[i], view[i - 1] + lam, out=view[i])
    for i in range(n - 2, -1, -1):
        np.minimum(view[i], view[i + 1] + lam, out=view[i])
    return h


def _message(h: np.ndarray, lam: float, trunc: float) -> np.ndarray:
    """min_{l'} h(l') + lam * min(|l - l'|_1, trunc) for every node; h: (Lh, Lw, ...nodes)."""
    floor = h.min(axis=(0, 1)) + lam * trunc
    dt = _l1_distance_transform(_l1_distance_transform(h.copy(), lam, 0), lam, 1)
    return np.minimum(dt, floor)


def _shift_labels(m: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """out[y, x, ...] = m[y - dy, x - dx, ...] on the two leading (label) axes, edge-clamped; |dy|, |dx| <= 1."""
    out = m
    if dx:
        out = np.concatenate([out[:, :1], out[:, :-1]], axis=1) if dx > 0 else \
            np.concatenate([out[:, 1:], out[:, -1:]], axis=1)
    if dy:
        out = np.concatenate([out[:1], out[:-1]], axis=0) if dy > 0 else \
            np.concatenate([out[1:], out[-1:]], axis=0)
    return out


def bp_flow(cost: np.ndarray, smooth: float, trunc: float, iterations: int, damping: float = 0.0,
            progress: Progress = None) -> tuple[np.ndarray, np.ndarray]:
    """Min-sum loopy BP on A's 4-connected grid with B's grid cells as labels.

    cost: (Ha, Wa, Hb, Wb) data cost. Smoothness: smooth * min(|d_p - d_q|_1, trunc) on the displacement d in
    grid cells. Returns (labels (Ha, Wa, 2) as (x, y) cells of B, beliefs (Ha, Wa, Hb, Wb)).
    """
    ha, wa, hb, wb = cost.shape
    c = np.ascontiguousarray(cost.transpose(2, 3, 0, 1), dtype=np.float32)   # (Hb, Wb, Ha, Wa)
    # msgs[k][..., y, x] = message node (y, x) receives from its neighbour at offset dirs[k]
    dirs = {"left": (0, -1), "right": (0, 1), "up": (-1, 0), "down": (1, 0)}
    opposite = {"left": "right", "right": "left", "up": "down", "down": "up"}
    msgs = {k: np.zeros_like(c) for k in dirs}
    for it in range(iterations):
        belief = c + msgs["left"] + msgs["right"] + msgs["up"] + msgs["down"]
        new = {}
        for k, (dy, dx) in dirs.items():
            # sender s = receiver r + (dy, dx); the sender's belief leaves out what r told s (msgs[opposite] at s)
            h = belief - msgs[opposite[k]]
            hs = h[:, :, max(dy, 0):ha + min(dy, 0), max(dx, 0):wa + min(dx, 0)]
            m = _message(hs, smooth, trunc)
            # smoothness on displacements: l_s - s == l_r - r  <=>  l_s = l_r + (dy, dx), so m_r(l) = DT_s(l + (dy, dx))
            m = _shift_labels(m, -dy, -dx)
            m -= m.min(axis=(0, 1))
            full = np.zeros_like(c)
            full[:, :, max(-dy, 0):ha + min(-dy, 0), max(-dx, 0):wa + min(-dx, 0)] = m
            if damping:
                full = damping * msgs[k] + (1 - damping) * full
            new[k] = full
        msgs = new
        if progress is not None:
            progress((it + 1) / iterations, "belief propagation")
    belief = (c + msgs["left"] + msgs["right"] + msgs["up"] + msgs["down"]).transpose(2, 3, 0, 1)
    flat = belief.reshape(ha, wa, -1).argmin(axis=2)
    labels = np.stack([flat % wb, flat // wb], axis=-1)
    return labels, belief


def _subpixel(belief: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Parabolic refinement of integer labels along x and y of the label grid."""
    ha, wa, hb, wb = belief.shape
    lx, ly = labels[..., 0], labels[..., 1]
    iy, ix = np.meshgrid(np.arange(ha), np.arange(wa), indexing="ij")
    out = labels.astype(np.float32).copy()
    for axis, (l, lim) in enumerate(((lx, wb), (ly, hb))):
        lm = np.clip(l - 1, 0, lim - 1)
        lp = np.clip(l + 1, 0, lim - 1)
        if axis == 0:
            c0, cm, cp = belief[iy, ix, ly, lx], belief[iy, ix, ly, lm], belief[iy, ix, ly, lp]
        else:
            c0, cm, cp = belief[iy, ix, ly, lx], belief[iy, ix, lm, lx], belief[iy, ix, lp, lx]
        denom = cm - 2 * c0 + cp
        ok = (denom > 1e-6) & (l > 0) & (l < lim - 1)
        delta = np.where(ok, 0.5 * (cm - cp) / np.where(ok, denom, 1), 0)
        out[..., axis] += np.clip(delta, -0.5, 0.5)
    return out


@dataclass
class Hypothesis:
    """How B's working image was made: B resized by ``factor`` (original px -> working px, per axis), mirrored."""

    factor: tuple[float, float]
    flip: bool
    width: int                  # working image width (for un-mirroring)
    image: np.ndarray           # working image (H, W, 3)
    desc: np.ndarray            # (gh, gw, D)
    xs: np.ndarray
    ys: np.ndarray
    distinct: Optional[np.ndarray] = None   # lazily computed distinctiveness of the cells

    def to_working(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) B original pixels -> working-image positions (inverse of :meth:`to_original`)."""
        x = (pts[..., 0] + 0.5) * self.factor[0] - 0.5
        y = (pts[..., 1] + 0.5) * self.factor[1] - 0.5
        if self.flip:
            x = self.width - 1 - x
        return np.stack([x, y], -1)

    def to_original(self, pts: np.ndarray) -> np.ndarray:
        """(..., 2) working-image positions -> B's original pixels."""
        x, y = pts[..., 0], pts[..., 1]
        if self.flip:
            x = self.width - 1 - x
        return np.stack([(x + 0.5) / self.factor[0] - 0.5, (y + 0.5) / self.factor[1] - 0.5], -1)


@dataclass
class GlobalAlignment:
    scale: float                # B is enlarged by this to bring its content to A's size (A content / B content)
    flip: bool
    shift: tuple[float, float]  # (tx, ty) in working pixels: a cell at p in A matches p + shift in B's working image
    score: float
    aspect: float = 1.0         # B's working image is also stretched by sqrt(aspect) in x and 1/sqrt(aspect) in y


@dataclass
class GridMatch:
    """Correspondence of A's working grid cells to B's original pixels."""

    flow: np.ndarray            # (gha, gwa, 2): matching (x, y) in B's original pixels for each grid cell of A
    similarity: np.ndarray      # (gha, gwa): cosine similarity of the chosen match
    xs_a: np.ndarray            # grid positions in A's working image
    ys_a: np.ndarray
    scale_a: float              # A original px -> working px
    shape_a: tuple[int, int]    # original (H, W)
    shape_b: tuple[int, int]
    alignment: Optional[GlobalAlignment] = None
    energy: float = 0.0         # BP energy per grid cell of the chosen labelling (lower = better explained)


class _LRU:
    """A small thread-safe LRU cache bounded by total array bytes (descriptors of recently used images)."""

    def __init__(self, max_bytes: int = 192 * 2**20):
        self.max_bytes = max_bytes
        self._data: "OrderedDict[tuple, tuple[object, int]]" = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            hit = self._data.get(key)
            if hit is None:
                return None
            self._data.move_to_end(key)
            return hit[0]

    def put(self, key, value, nbytes: int) -> None:
        with self._lock:
            if key in self._data:
                return
            self._data[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes and len(self._data) > 1:
                _, (_, n) = self._data.popitem(last=False)
                self._bytes -= n

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self._bytes = 0


_CACHE = _LRU()


def image_digest(img: np.ndarray) -> str:
    """A content hash of an image array (cache key)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(str((img.shape, img.dtype.str)).encode())
    h.update(np.ascontiguousarray(img).data)
    return h.hexdigest()


def _hypothesis(b: np.ndarray, max_side: int, scale: float, flip: bool, params: FlowParams,
                aspect: float = 1.0, digest: Optional[str] = None) -> Hypothesis:
    """B resized (and mirrored) for one alignment hypothesis, with its dense descriptors (cached by content)."""
    key = (digest or image_digest(b), max_side, round(scale, 6), flip, round(aspect, 6), params.stride,
           params.descriptor)
    hit = _CACHE.get(key)
    if hit is not None:
        return hit
    img, f = _working_image(b, max(16, int(round(max_side * scale))))
    factor = (f, f)
    if aspect != 1.0:
        h, w = img.shape[:2]
        size = (max(8, int(round(w * np.sqrt(aspect)))), max(8, int(round(h / np.sqrt(aspect)))))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        factor = (f * size[0] / w, f * size[1] / h)
    if flip:
        img = np.ascontiguousarray(img[:, ::-1])
    desc, xs, ys = dense_descriptors(img, params.stride, params.descriptor)
    hyp = Hypothesis(factor, flip, img.shape[1], img, desc, xs, ys)
    _CACHE.put(key, hyp, desc.nbytes + img.nbytes)
    return hyp


def _distinctiveness_of(hyp: Hypothesis) -> np.ndarray:
    if hyp.distinct is None:
        hyp.distinct = distinctiveness(hyp.desc)
    return hyp.distinct


def distinctiveness(desc: np.ndarray, k: int = 10) -> np.ndarray:
    """1 - mean cosine similarity of each cell to its k most similar other cells of the same image, (gh, gw).

    Repetitive or flat regions (sky, road, walls) score low; structured object parts score high.
    """
    flat = desc.reshape(-1, desc.shape[-1])
    k = max(1, min(k, len(flat) - 1))
    ss = flat @ flat.T
    top = -np.partition(-ss, k, axis=1)[:, 1:k + 1]
    return np.clip(1.0 - top.mean(axis=1), 0.02, None).reshape(desc.shape[:2]).astype(np.float32)


def _hough_shift(src: Hypothesis, dst: Hypothesis, params: FlowParams) -> tuple[float, float, float]:
    """Vote for the translation dst-working minus src-working with every src cell's top-k descriptor matches.

    Votes are weighted by the match's similarity above ``hough_floor`` (squared) and by the distinctiveness of
    both cells, so that repetitive background does not outvote the object. Returns (score, tx, ty).
    """
    da, db = src.desc, dst.desc
    d = da.shape[-1]
    sim = da.reshape(-1, d) @ db.reshape(-1, d).T                   # (NA, NB)
    k = min(params.hough_topk, sim.shape[1])
    idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
    w = np.maximum(np.take_along_axis(sim, idx, 1) - params.hough_floor, 0.0) ** 2
    if params.hough_distinct:
        wa = _distinctiveness_of(src).reshape(-1)
        wb = _distinctiveness_of(dst).reshape(-1)
        w = w * wa[:, None] * wb[idx]
        norm = float(wa.sum())
    else:
        norm = float(sim.shape[0])
    gxa, gya = np.meshgrid(src.xs, src.ys)
    gxb, gyb = np.meshgrid(dst.xs, dst.ys)
    tx = gxb.reshape(-1)[idx] - gxa.reshape(-1)[:, None]
    ty = gyb.reshape(-1)[idx] - gya.reshape(-1)[:, None]
    st = params.stride
    hx = np.arange(-src.xs[-1] - st, dst.xs[-1] + 2 * st, st)
    hy = np.arange(-src.ys[-1] - st, dst.ys[-1] + 2 * st, st)
    hist, ex, ey = np.histogram2d(tx.ravel(), ty.ravel(), bins=[hx, hy], weights=w.ravel())
    hist = cv2.GaussianBlur(hist.astype(np.float32), (0, 0), 1.0)
    i, j = np.unravel_index(int(hist.argmax()), hist.shape)
    return float(hist[i, j]) / norm, float((ex[i] + ex[i + 1]) / 2), float((ey[j] + ey[j + 1]) / 2)


def global_alignment(a: np.ndarray, b: np.ndarray, params: FlowParams = FlowParams(), progress: Progress = None,
                     digests: tuple[Optional[str], Optional[str]] = (None, None)
                     ) -> list[tuple[GlobalAlignment, Hypothesis]]:
    """(mirror, scale, shift) hypotheses of B relative to A with B's working image for each, best first.

    Each hypothesis is scored symmetrically: the Hough peak of A's cells voting into B resized by ``scale`` plus
    the peak of B's cells voting into A resized by 1 / ``scale``. One direction alone favours the side with more
    cells to choose from; the sum does not. The shift is the mean of both directions' estimates.
    """
    da_key, db_key = digests[0] or image_digest(a), digests[1] or image_digest(b)
    src = _hypothesis(a, params.max_side, 1.0, False, params, digest=da_key)
    out = []
    combos = [(s, f, r) for f in ((False, True) if params.flips else (False,)) for s in params.scales
              for r in params.aspects]
    for n, (scale, flip, aspect) in enumerate(combos):
        hyp = _hypothesis(b, params.max_side, scale, flip, params, aspect, digest=db_key)
        score, tx, ty = _hough_shift(src, hyp, params)
        if params.hough_symmetric:
            b_src = _hypothesis(b, params.max_side, 1.0, flip, params, digest=db_key)
            back = _hypothesis(a, params.max_side, 1.0 / scale, flip, params, 1.0 / aspect, digest=da_key)
            score_b, ux, uy = _hough_shift(b_src, back, params)
            score = score + score_b
            if not flip:  # (with a mirror the reverse shift lives in mirrored coordinates: keep the forward one)
                sx, sy = scale * np.sqrt(aspect), scale / np.sqrt(aspect)
                tx, ty = (tx - sx * ux) / 2, (ty - sy * uy) / 2
        out.append((GlobalAlignment(scale, flip, (tx, ty), score, aspect), hyp))
        if progress is not None:
            progress((n + 1) / len(combos), "global alignment")
    return sorted(out, key=lambda ah: -ah[0].score)


def inverse_alignment(al: GlobalAlignment) -> GlobalAlignment:
    """The alignment of A relative to B implied by ``al`` (B relative to A); exact for scale + shift."""
    sx, sy = al.scale * np.sqrt(al.aspect), al.scale / np.sqrt(al.aspect)
    return GlobalAlignment(1.0 / al.scale, al.flip, (-al.shift[0] / sx, -al.shift[1] / sy), al.score,
                           1.0 / al.aspect)


def labeling_energy(cost: np.ndarray, labels: np.ndarray, smooth: float, trunc: float) -> float:
    """Energy of an integer labelling (gha, gwa, 2) under the data cost and truncated-L1 displacement smoothness."""
    gha, gwa = labels.shape[:2]
    data = cost[np.arange(gha)[:, None], np.arange(gwa)[None, :], labels[..., 1], labels[..., 0]].sum()
    grid = np.stack(np.meshgrid(np.arange(gwa), np.arange(gha)), -1)
    disp = labels - grid
    sx = np.minimum(np.abs(disp[:, 1:] - disp[:, :-1]).sum(-1), trunc).sum()
    sy = np.minimum(np.abs(disp[1:] - disp[:-1]).sum(-1), trunc).sum()
    return float(data + smooth * (sx + sy))


def _cost_volume(da: np.ndarray, db: np.ndarray) -> np.ndarray:
    gha, gwa, d = da.shape
    ghb, gwb, _ = db.shape
    sim = da.reshape(-1, d) @ db.reshape(-1, d).T
    return sim.reshape(gha, gwa, ghb, gwb)


def _prior_cost(px, py, xs_b, ys_b, stride) -> np.ndarray:
    """|l - predicted position|_1 in grid cells, (gha, gwa, ghb, gwb); px (gwa,), py (gha,) predictions."""
    cx = np.abs(xs_b[None, :] - px[:, None]) / stride        # (gwa, gwb)
    cy = np.abs(ys_b[None, :] - py[:, None]) / stride        # (gha, ghb)
    return (cy[:, None, :, None] + cx[None, :, None, :]).astype(np.float32)


def grid_match(a: np.ndarray, b: np.ndarray, params: FlowParams = FlowParams(), method: str = "bp",
               progress: Progress = None, alignment: Optional[GlobalAlignment] = None) -> GridMatch:
    """Match A's grid cells to B.

    method "bp": global alignment (scale/shift[/mirror] by symmetric Hough voting), then belief propagation with
    the truncated-L1 smoothness and a pull towards the aligned position; "nn": each cell's most similar cell of B
    at the same scale, no spatial prior (the baseline). ``alignment`` skips the search.
    """
    da_key, db_key = image_digest(a), image_digest(b)
    src = _hypothesis(a, params.max_side, 1.0, False, params, digest=da_key)
    sa = src.factor[0]
    gha, gwa = src.desc.shape[:2]
    if method == "nn":
        hyp = _hypothesis(b, params.max_side, 1.0, False, params, digest=db_key)
        sim = _cost_volume(src.desc, hyp.desc)
        flat = sim.reshape(gha, gwa, -1).argmax(axis=2)
        gwb = hyp.desc.shape[1]
        pos = np.stack([hyp.xs[flat % gwb], hyp.ys[flat // gwb]], -1)
        chosen = sim.reshape(gha, gwa, -1).max(axis=2)
        return GridMatch(hyp.to_original(pos).astype(np.float32), chosen.astype(np.float32), src.xs, src.ys, sa,
                         a.shape[:2], b.shape[:2])
    if method != "bp":
        raise ValueError(f"unknown method {method!r}")

    def sub(lo, hi):
        return None if progress is None else (lambda f, d: progress(lo + (hi - lo) * f, d))

    if alignment is not None:
        candidates = [(alignment, _hypothesis(b, params.max_side, alignment.scale, alignment.flip, params,
                                              alignment.aspect, digest=db_key))]
    elif len(params.scales) > 1 or len(params.aspects) > 1 or params.flips:
        candidates = global_alignment(a, b, params, sub(0.0, 0.3), (da_key, db_key))[:max(1, params.candidates)]
    else:
        scale = params.scales[0] if params.scales else 1.0
        hyp = _hypothesis(b, params.max_side, scale, False, params, digest=db_key)
        # no search: the same normalised position
        tx = (src.xs[0] + 0.5) / src.image.shape[1] * hyp.image.shape[1] - 0.5 - src.xs[0]
        ty = (src.ys[0] + 0.5) / src.image.shape[0] * hyp.image.shape[0] - 0.5 - src.ys[0]
        candidates = [(GlobalAlignment(scale, False, (float(tx), float(ty)), 0.0), hyp)]
    best, best_score = None, None
    for n, (align, hyp) in enumerate(candidates):
        span = 0.7 / len(candidates)
        gm = _flow_on_hypothesis(src, a.shape[:2], b.shape[:2], align, hyp, params,
                                 sub(0.3 + n * span, 0.3 + (n + 1) * span))
        if len(candidates) == 1:
            return gm
        # lower is better: the energy, or minus the forward-backward consistency of the flow
        score = gm.energy if params.select == "energy" else -_round_trip(gm, b, a, params)
        if best is None or score < best_score:
            best, best_score = gm, score
    return best


def _round_trip(gm: GridMatch, b: np.ndarray, a: np.ndarray, params: FlowParams) -> float:
    """Mean forward-backward consistency in [0, 1] of a grid match, using the reverse flow under the inverse
    alignment (a wrong alignment rarely comes back to where it started)."""
    back = grid_match(b, a, params, alignment=inverse_alignment(gm.alignment))
    flow_ba = upsample_flow(back)
    ret = lookup(flow_ba, gm.flow[..., 0].ravel(), gm.flow[..., 1].ravel()).reshape(gm.flow.shape)
    gx, gy = np.meshgrid((gm.xs_a + 0.5) / gm.scale_a - 0.5, (gm.ys_a + 0.5) / gm.scale_a - 0.5)
    sigma = 2.0 * params.stride / gm.scale_a
    err2 = (ret[..., 0] - gx) ** 2 + (ret[..., 1] - gy) ** 2
    return float(np.exp(-err2 / (2 * sigma * sigma)).mean())


def _flow_on_hypothesis(src: Hypothesis, shape_a, shape_b, align: GlobalAlignment, hyp: Hypothesis,
                        params: FlowParams, progress: Progress) -> GridMatch:
    da, xs_a, ys_a, sa, wa_img = src.desc, src.xs, src.ys, src.factor[0], src.image
    gha, gwa = da.shape[:2]
    tx, ty = align.shift
    # label region: A's footprint under the alignment, with a margin
    m = params.crop_margin * params.max_side
    ha_w, wa_w = wa_img.shape[:2]
    kx = (hyp.xs >= tx - m) & (hyp.xs <= tx + wa_w + m)
    ky = (hyp.ys >= ty - m) & (hyp.ys <= ty + ha_w + m)
    if kx.sum() < 2 or ky.sum() < 2:
        kx[:] = True
        ky[:] = True
    db = hyp.desc[ky][:, kx]
    xs_b, ys_b = hyp.xs[kx], hyp.ys[ky]
    sim = _cost_volume(da, db)
    ghb, gwb = db.shape[:2]
    cost = params.data_scale * np.minimum(1.0 - sim, params.data_trunc)
    if params.data_distinct:
        dw = _distinctiveness_of(src) ** params.data_distinct
        cost *= (dw / dw.mean())[:, :, None, None]
    if params.prior:
        cost += params.prior * _prior_cost(xs_a + tx, ys_a + ty, xs_b, ys_b, params.stride)
    labels, belief = bp_flow(cost, params.smooth, params.smooth_trunc, params.iterations, params.damping,
                             progress)
    energy = labeling_energy(cost, labels, params.smooth, params.smooth_trunc) / (gha * gwa)
    lab = _subpixel(cost if params.subpixel == "data" else belief, labels) if params.subpixel \
        else labels.astype(np.float32)
    if params.smooth_output > 0:
        # smooth the displacement (label minus the cell's aligned position), not the labels: a pure shift or an
        # identity stays exact up to the borders
        base = np.stack(np.meshgrid((xs_a + tx - xs_b[0]) / params.stride, (ys_a + ty - ys_b[0]) / params.stride),
                        -1).astype(np.float32)
        disp = lab - base
        disp = np.stack([cv2.GaussianBlur(disp[..., c], (0, 0), params.smooth_output,
                                          borderType=cv2.BORDER_REPLICATE) for c in range(2)], -1)
        lab = base + disp
    li = np.clip(np.round(lab).astype(int), 0, [gwb - 1, ghb - 1])
    chosen = sim[np.arange(gha)[:, None], np.arange(gwa)[None, :], li[..., 1], li[..., 0]]
    pos = np.stack([xs_b[0] + lab[..., 0] * params.stride, ys_b[0] + lab[..., 1] * params.stride], -1)
    return GridMatch(hyp.to_original(pos).astype(np.float32), chosen.astype(np.float32), xs_a, ys_a, sa,
                     shape_a, shape_b, align, energy)


def upsample_flow(gm: GridMatch, values: Optional[np.ndarray] = None) -> np.ndarray:
    """Grid values (default: the flow, in B's original pixels) -> one value per pixel of A's original image."""
    h, w = gm.shape_a
    if values is None:
        values = gm.flow
    stride = gm.xs_a[1] - gm.xs_a[0] if len(gm.xs_a) > 1 else 1.0
    x = (np.arange(w, dtype=np.float32) + 0.5) * gm.scale_a - 0.5
    y = (np.arange(h, dtype=np.float32) + 0.5) * gm.scale_a - 0.5
    gx = (x - gm.xs_a[0]) / stride
    gy = (y - gm.ys_a[0]) / stride
    mx, my = np.meshgrid(gx, gy)
    vals = values if values.ndim == 3 else values[..., None]
    out = np.stack([cv2.remap(vals[..., c].astype(np.float32), mx, my, cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE) for c in range(vals.shape[-1])], -1)
    return out if values.ndim == 3 else out[..., 0]


def lookup(flow: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Bilinear sample of a dense (H, W, C) field at float positions (border replicated)."""
    return np.stack([cv2.remap(flow[..., c].astype(np.float32), np.asarray(x, np.float32).reshape(1, -1),
                               np.asarray(y, np.float32).reshape(1, -1), cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE)[0] for c in range(flow.shape[-1])], -1)


def consistency_confidence(flow_ab: np.ndarray, flow_ba: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-|flow_ba(flow_ab(p)) - p|^2 / (2 sigma^2)) for each pixel p of A (forward-backward check)."""
    h, w = flow_ab.shape[:2]
    back = np.stack([cv2.remap(flow_ba[..., c], flow_ab[..., 0], flow_ab[..., 1], cv2.INTER_LINEAR,
                               borderMode=cv2.BORDER_REPLICATE) for c in range(2)], -1)
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    err2 = (back[..., 0] - gx) ** 2 + (back[..., 1] - gy) ** 2
    return np.exp(-err2 / (2 * sigma * sigma)).astype(np.float32)


@dataclass
class DenseResult:
    flow: np.ndarray        # (Ha, Wa, 2) absolute positions in B
    confidence: np.ndarray  # (Ha, Wa) in [0, 1]
    similarity: np.ndarray  # (Ha, Wa) cosine similarity of the match
    alignment: Optional[GlobalAlignment] = None


def dense_flow(a: np.ndarray, b: np.ndarray, params: FlowParams = FlowParams(), method: str = "bp",
               bidirectional: bool = True, progress: Progress = None) -> DenseResult:
    """Dense correspondence A -> B at A's full resolution, with a confidence map.

    Confidence = forward-backward consistency (when ``bidirectional``; the reverse flow reuses the inverse of
    the forward alignment) x a ramp of the descriptor similarity of the match.
    """
    def sub(lo, hi):
        if progress is None:
            return None
        return lambda f, d: progress(lo + (hi - lo) * f, d)

    gm = grid_match(a, b, params, method, progress=sub(0.0, 0.6 if bidirectional else 1.0))
    flow = upsample_flow(gm)
    sim = upsample_flow(gm, gm.similarity)
    sim_conf = np.clip((sim - 0.3) / 0.4, 0.0, 1.0)
    if bidirectional:
        inv = inverse_alignment(gm.alignment) if gm.alignment is not None else None
        gb = grid_match(b, a, params, method, progress=sub(0.6, 1.0), alignment=inv)
        flow_ba = upsample_flow(gb)
        # tolerance: two grid cells of the working image, in A's pixels
        sigma = 2.0 * params.stride / gm.scale_a
        conf = consistency_confidence(flow, flow_ba, sigma) * (0.3 + 0.7 * sim_conf)
    else:
        conf = sim_conf
    return DenseResult(flow.astype(np.float32), conf.astype(np.float32), sim.astype(np.float32), gm.alignment)


def point_similarity(a: np.ndarray, b: np.ndarray, x: float, y: float, params: FlowParams = FlowParams(),
                     alignment: Optional[GlobalAlignment] = None) -> np.ndarray:
    """Cosine similarity between A's descriptor at pixel (x, y) and every pixel of B: (Hb, Wb) in [-1, 1].

    With ``alignment`` the descriptors of B are taken at the alignment's scale (what the matcher compared).
    """
    src = _hypothesis(a, params.max_side, 1.0, False, params)
    al = alignment or GlobalAlignment(1.0, False, (0.0, 0.0), 0.0)
    hyp = _hypothesis(b, params.max_side, al.scale, al.flip, params, al.aspect)
    sa = src.factor[0]
    gx = np.clip(((x + 0.5) * sa - 0.5 - src.xs[0]) / params.stride, 0, len(src.xs) - 1)
    gy = np.clip(((y + 0.5) * sa - 0.5 - src.ys[0]) / params.stride, 0, len(src.ys) - 1)
    q = lookup(src.desc, np.array([gx]), np.array([gy]))[0]
    q /= np.linalg.norm(q) + 1e-6
    sim = (hyp.desc @ q).astype(np.float32)
    hb, wb = b.shape[:2]
    pix = hyp.to_working(identity_map(hb, wb))
    mx = (pix[..., 0] - hyp.xs[0]) / params.stride
    my = (pix[..., 1] - hyp.ys[0]) / params.stride
    return cv2.remap(sim, mx.astype(np.float32), my.astype(np.float32), cv2.INTER_LINEAR,
                     borderMode=cv2.BORDER_REPLICATE)


# --------------------------------------------------------------------------------------------------------------
# warping helpers
# --------------------------------------------------------------------------------------------------------------

def warp_image(src: np.ndarray, mapping: np.ndarray, border_value=0) -> np.ndarray:
    """Backward warp: out[y, x] = src[mapping[y, x, 1], mapping[y, x, 0]] (bilinear)."""
    return cv2.remap(src, mapping[..., 0].astype(np.float32), mapping[..., 1].astype(np.float32),
                     cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=border_value)


def identity_map(h: int, w: int) -> np.ndarray:
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return np.stack([gx, gy], -1)


def with_params(params: FlowParams, **kw) -> FlowParams:
    return replace(params, **kw)


def clear_cache() -> None:
    """Forget cached descriptors."""
    _CACHE.clear()


__all__ = ["DescriptorParams", "DenseResult", "FlowParams", "GlobalAlignment", "GridMatch", "bp_flow", "clear_cache",
           "consistency_confidence", "dense_descriptors", "dense_flow", "distinctiveness", "global_alignment",
           "grid_match", "identity_map", "image_digest", "inverse_alignment", "lookup", "point_similarity",
           "upsample_flow", "warp_image", "with_params"]
