"""Drift and speed of video edit propagation (engine/correspondence/video.py) on a face clip.

An edit is painted on frame 0 (three blobs: forehead and both cheeks, placed for a centred portrait). It is carried
to the last frame
  * frame by frame (optical flow between consecutive frames), without and with re-anchoring to frame 0,
    for DIS and Farnebäck flow;
  * directly from frame 0 to the last frame: the classic pairwise matcher, and one optical flow.
Reported: IoU of the propagated edit mask at the last frame against the direct classic result and against the
direct optical flow; a ground-truth drift measure: the clip is played forward and then backward (a palindrome),
so the last frame *is* frame 0 and the tracked map must be the identity: mean error (px) of the map over the
painted pixels and IoU of the returned mask with the painted one; and frames per second (2-core CPU figures in the
report come from this script).

    python benchmarks/bench_video_drift.py [--clip PATH] [--max-frames 150] [--max-side 384]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import config, videoio  # noqa: E402
from engine.correspondence import classic, video, visualise  # noqa: E402
from engine.correspondence.classic_backend import confidence_weight  # noqa: E402

DEFAULT_CLIP = ("face-video", "liveportrait", "assets", "examples", "driving", "d6.mp4")


def paint(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    e = np.zeros((h, w, 4), np.uint8)
    cv2.ellipse(e, (int(w * 0.5), int(h * 0.33)), (int(w * 0.1), int(h * 0.05)), 0, 0, 360, (255, 0, 200, 230), -1)
    for cx in (0.38, 0.62):
        cv2.circle(e, (int(w * cx), int(h * 0.58)), int(w * 0.045), (255, 200, 0, 230), -1)
    return e


def run_stream(edit, frames, opts: video.StreamOptions):
    prop = video.StreamEditPropagator(edit, frames[0], 1.0, opts)
    t0 = time.perf_counter()
    for f in frames:
        prop(f)
    sec = time.perf_counter() - t0
    return prop, len(frames) / sec


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--clip", type=Path, default=None)
    ap.add_argument("--max-frames", type=int, default=150)
    ap.add_argument("--max-side", type=int, default=384)
    args = ap.parse_args(argv)
    clip = args.clip
    if clip is None:
        data = config.data_dir()
        if data is None or not data.joinpath(*DEFAULT_CLIP).exists():
            print("No clip: pass --clip or set DATA_DIR (face-video/...)", file=sys.stderr)
            return 2
        clip = data.joinpath(*DEFAULT_CLIP)
    frames = list(videoio.read_frames(clip, max_frames=args.max_frames, max_side=args.max_side))
    h, w = frames[0].shape[:2]
    edit = paint(frames[0])
    painted = edit[..., 3] > 0
    print(f"clip {clip.name}: {len(frames)} frames at {w}x{h}; edit covers {painted.mean() * 100:.1f}% of frame 0")

    # direct references at the last frame
    t0 = time.perf_counter()
    res = classic.dense_flow(frames[-1], frames[0])
    t_classic = time.perf_counter() - t0
    layer = visualise.warp_rgba(edit, res.flow)
    direct_classic = layer[..., 3] * confidence_weight(res.confidence) > 0.3
    dis_direct = video.StreamEditPropagator(edit, frames[0])
    dis_direct.track(frames[-1])
    direct_flow = dis_direct.edit_alpha((h, w)) > 0.3

    variants = [
        ("DIS, chained only", video.StreamOptions(method="dis", reanchor_every=0, reanchor_below=0)),
        ("DIS + re-anchoring", video.StreamOptions(method="dis")),
        ("Farneback, chained only", video.StreamOptions(method="farneback", reanchor_every=0, reanchor_below=0)),
        ("Farneback + re-anchoring", video.StreamOptions(method="farneback")),
    ]
    palindrome = frames + frames[-2::-1]
    rows = []
    for name, opts in variants:
        prop, fps = run_stream(edit, frames, opts)
        mask = prop.edit_alpha((h, w)) > 0.3
        loop, _ = run_stream(edit, palindrome, opts)
        mp = loop.map / loop.ref_scale
        mp = cv2.resize(mp, (w, h), interpolation=cv2.INTER_LINEAR)
        gx, gy = np.meshgrid(np.arange(w), np.arange(h))
        loop_err = float(np.hypot(mp[..., 0] - gx, mp[..., 1] - gy)[painted].mean())
        loop_iou = visualise.mask_iou(loop.edit_alpha((h, w)) > 0.3, painted)
        rows.append((name, visualise.mask_iou(mask, direct_classic), visualise.mask_iou(mask, direct_flow),
                     mask.sum() / painted.sum(), loop_err, loop_iou, fps, prop.stats["reanchors"]))

    print(f"\nDirect matches frame {len(frames) - 1} -> frame 0: classic pairwise matcher {t_classic:.2f} s; "
          f"IoU(classic direct, DIS direct) = {visualise.mask_iou(direct_classic, direct_flow):.3f}")
    head = (f"{'method':<26}{'IoU vs classic':>15}{'IoU vs DIS':>11}{'area':>7}{'loop err px':>12}"
            f"{'loop IoU':>9}{'fps':>7}{'re-anchors':>11}")
    print("\n" + head + "\n" + "-" * len(head))
    for r in rows:
        print(f"{r[0]:<26}{r[1]:>15.3f}{r[2]:>11.3f}{r[3]:>7.2f}{r[4]:>12.2f}{r[5]:>9.3f}{r[6]:>7.1f}{r[7]:>11d}")
    base = rows[0]
    print("\nratios against 'DIS, chained only' (same run): "
          + "; ".join(f"{r[0]}: loop error x{r[4] / max(base[4], 1e-6):.2f}, fps x{r[6] / base[6]:.2f}" for r in rows[1:]))
    print("(area = propagated mask area / painted area; loop = forward then backward through the clip, ground truth "
          "is the identity)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
