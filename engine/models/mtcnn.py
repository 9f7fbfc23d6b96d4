"""MTCNN face locator: three cascaded CNNs that find faces (boxes) and five landmarks each.

Paper: Kaipeng Zhang, Zhanpeng Zhang, Zhifeng Li and Yu Qiao, "Joint Face Detection and Alignment using Multi-task
Cascaded Convolutional Networks", IEEE Signal Processing Letters 23(10), 2016 (https://arxiv.org/abs/1604.02878).
Weights: the authors' released Caffe models as converted to PyTorch state dicts and shipped in the PyPI wheel
``facenet-pytorch==2.5.3`` (MIT; ``facenet_pytorch/data/{pnet,rnet,onet}.pt``). Only those three files are read
(``torch.load(weights_only=True)``, sha256-pinned in weights/manifest.toml); the package's code is never imported.
This file is our own implementation; layer names follow the state dicts so they load with ``strict=True``.

Used by engine.correspondence.video to find a face that is too small for the classic matcher (a wide stage shot).

Tensors (all float32, images RGB scaled as ``(x - 127.5) / 128`` i.e. to about [-1, 1]):
- ``PNet``: (N, 3, H, W), H, W >= 12 -> (face probability (N, H', W'), box offsets (N, 4, H', W')) with
  H' = ceil((H - 2) / 2) - 4: fully convolutional, one 12x12 window per output cell, stride 2.
- ``RNet``: (N, 3, 24, 24) -> (probability (N,), box offsets (N, 4)).
- ``ONet``: (N, 3, 48, 48) -> (probability (N,), box offsets (N, 4), landmarks (N, 10): 5 x then 5 y, as shares
  of the box; order left eye, right eye, nose, left mouth corner, right mouth corner, in the image's left/right).
Box offsets are shares of the box's width/height added to (x0, y0, x1, y1). The converted Caffe weights expect the
dense layers' input flattened in (W, H, C) order, hence the permute before each flatten.

Detection (:meth:`MTCNN.detect`): an image pyramid (factor 0.709, from the scale that maps ``min_face`` to 12 px),
P-Net on each level, NMS per level (IoU 0.5) then over all (0.7), box regression, squared boxes; R-Net on 24x24
crops, threshold, NMS 0.7, regression, squared; O-Net on 48x48 crops, threshold, regression, NMS 0.7 by the
smaller box's area ("Min"). Default thresholds 0.6 / 0.7 / 0.7 as in the paper's release.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

FACTOR = 0.709                     # pyramid step (area halves every two levels)
THRESHOLDS = (0.6, 0.7, 0.7)       # P-Net, R-Net, O-Net face-probability thresholds
MIN_FACE = 12                      # smallest face side (px) searched by default: P-Net's window at full size


class PNet(nn.Module):
    """Proposal network: 3x3 convs 3->10 (PReLU, 2x2 max pool) ->16 ->32, then 1x1 heads (2 classes, 4 offsets)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)
        self.conv4_2 = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), 1)[:, 1], self.conv4_2(x)


class RNet(nn.Module):
    """Refinement network on 24x24 crops: convs 28, 48 (3x3, 3x3/2 max pools), 64 (2x2), dense 576->128."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(x)).permute(0, 3, 2, 1).reshape(len(x), -1)
        x = self.prelu4(self.dense4(x))
        return torch.softmax(self.dense5_1(x), 1)[:, 1], self.dense5_2(x)


class ONet(nn.Module):
    """Output network on 48x48 crops: convs 32, 64, 64 (3x3, pools), 128 (2x2), dense 1152->256; three heads."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = F.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = F.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).reshape(len(x), -1)
        x = self.prelu5(self.dense5(x))
        return torch.softmax(self.dense6_1(x), 1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; boxes (K, 4) x0, y0, x1, y1. mode "union" (IoU) or "min" (overlap over the
    smaller box). Returns the kept indices, best first."""
    order = np.argsort(-scores, kind="stable")
    area = np.maximum(0, boxes[:, 2] - boxes[:, 0]) * np.maximum(0, boxes[:, 3] - boxes[:, 1])
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]))
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]))
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter / np.maximum(denom, 1e-9) <= threshold]
    return np.asarray(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares about their centres (the longer side)."""
    out = boxes.copy()
    side = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    out[:, 0], out[:, 1], out[:, 2], out[:, 3] = cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2
    return out


def _regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    wh = np.stack([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]] * 2, 1)
    return boxes[:, :4] + offsets * wh


def _crops(image: torch.Tensor, boxes: np.ndarray, size: int) -> torch.Tensor:
    """(K, 3, size, size) area-resampled crops of ``image`` (1, 3, H, W); outside the image is zero (mid grey
    after normalisation)."""
    _, _, h, w = image.shape
    out = image.new_zeros((len(boxes), 3, size, size))
    for k, (x0, y0, x1, y1) in enumerate(np.round(boxes[:, :4]).astype(int)):
        x1, y1 = max(x1, x0 + 1), max(y1, y0 + 1)
        patch = image.new_zeros((1, 3, y1 - y0, x1 - x0))
        sx0, sy0, sx1, sy1 = max(0, x0), max(0, y0), min(w, x1), min(h, y1)
        if sx1 > sx0 and sy1 > sy0:
            patch[:, :, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[:, :, sy0:sy1, sx0:sx1]
        out[k] = F.interpolate(patch, size=(size, size), mode="area")[0]
    return out


class MTCNN(nn.Module):
    """The three networks (state-dict prefixes ``pnet.``, ``rnet.``, ``onet.``) and the cascade."""

    def __init__(self):
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()

    @torch.no_grad()
    def detect(self, image: np.ndarray, min_face: float = MIN_FACE, thresholds=THRESHOLDS,
               factor: float = FACTOR) -> tuple[np.ndarray, np.ndarray]:
        """Faces in ``image`` (H, W, 3) uint8 RGB: boxes (K, 5) float32 ``x0, y0, x1, y1, probability`` in pixels
        (best first) and landmarks (K, 5, 2) float32 (x, y) pixels (eyes, nose, mouth corners)."""
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) image; got {image.shape}")
        p = next(self.parameters())
        h, w = image.shape[:2]
        img = torch.from_numpy(np.array(image, np.float32)).to(p.device, p.dtype).permute(2, 0, 1)[None]
        img = (img - 127.5) / 128.0
        empty = np.zeros((0, 5), np.float32), np.zeros((0, 5, 2), np.float32)
        # stage 1: P-Net over the pyramid
        found = []
        scale = 12.0 / max(min_face, 1.0)
        while min(h, w) * scale >= 12:
            level = F.interpolate(img, size=(int(h * scale + 1), int(w * scale + 1)), mode="area")
            prob, off = self.pnet(level)
            prob, off = prob[0].cpu().numpy(), off[0].cpu().numpy()
            ys, xs = np.nonzero(prob >= thresholds[0])
            if len(ys):
                b = np.stack([2 * xs, 2 * ys, 2 * xs + 12, 2 * ys + 12], 1) / scale
                cand = np.concatenate([b, prob[ys, xs, None], off[:, ys, xs].T], 1)
                found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
            scale *= factor
        if not found:
            return empty
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        boxes = _square(_regress(cand[:, :4], cand[:, 5:9]))
        # stage 2: R-Net
        prob, off = (t.cpu().numpy() for t in self.rnet(_crops(img, boxes, 24)))
        ok = prob > thresholds[1]
        boxes, prob, off = boxes[ok], prob[ok], off[ok]
        if not len(boxes):
            return empty
        keep = nms(boxes, prob, 0.7)
        boxes = _square(_regress(boxes[keep], off[keep]))
        # stage 3: O-Net
        prob, off, marks = (t.cpu().numpy() for t in self.onet(_crops(img, boxes, 48)))
        ok = prob > thresholds[2]
        boxes, prob, off, marks = boxes[ok], prob[ok], off[ok], marks[ok]
        if not len(boxes):
            return empty
        bw, bh = (boxes[:, 2] - boxes[:, 0])[:, None], (boxes[:, 3] - boxes[:, 1])[:, None]
        points = np.stack([boxes[:, :1] + bw * marks[:, :5], boxes[:, 1:2] + bh * marks[:, 5:]], -1)
        boxes = _regress(boxes, off)
        keep = nms(boxes, prob, 0.7, "min")
        out = np.concatenate([boxes[keep], prob[keep, None]], 1)
        return out.astype(np.float32), points[keep].astype(np.float32)


def frontal(landmarks: np.ndarray) -> float:
    """How frontal a face is from its five landmarks (5, 2), in [0, 1]: the nose's horizontal position between
    the eyes (0.5 = centred) mapped so that 1 is centred and 0 is at or beyond an eye (a profile)."""
    left, right, nose = landmarks[0, 0], landmarks[1, 0], landmarks[2, 0]
    span = right - left
    if span <= 1e-6:
        return 0.0
    t = (nose - left) / span
    return float(np.clip(1.0 - 2.0 * abs(t - 0.5), 0.0, 1.0))


def build_mtcnn(files: dict[str, Path] | None = None) -> MTCNN:
    """The locator; ``files`` maps "pnet", "rnet", "onet" to the wheel's state dicts (random weights when None)."""
    model = MTCNN()
    if files:
        for role in ("pnet", "rnet", "onet"):
            state = torch.load(str(files[role]), map_location="cpu", weights_only=True)
            getattr(model, role).load_state_dict(state, strict=True)
    return model.eval()


__all__ = ["MTCNN", "ONet", "PNet", "RNet", "build_mtcnn", "frontal", "nms"]
