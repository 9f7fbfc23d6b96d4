"""Cost of running optical flow in the native worker process (engine/native.py) instead of in the server process.

The same edit is propagated through the same frames twice per round, with ENGINE_ISOLATE_NATIVE=0 (in-process
OpenCV) and =1 (worker process), alternating over several rounds; reported: ms per frame for each, the difference
per frame and per flow call, and the ratio. Frames come from a face clip when the data folder has one (else a
synthetic moving texture) at the Propagation tab's video size (longer side 384, tracked at 320).

    python benchmarks/bench_isolation.py [--frames 60] [--rounds 3] [--clip PATH]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import config, native, videoio  # noqa: E402
from engine.correspondence import video  # noqa: E402

CLIP = ("face-video", "liveportrait", "assets", "examples", "driving", "d6.mp4")


def frames(n: int, clip: str | None) -> list[np.ndarray]:
    data = config.data_dir()
    path = Path(clip) if clip else (data.joinpath(*CLIP) if data else None)
    if path is not None and path.is_file():
        return list(videoio.read_frames(path, max_frames=n, max_side=384))
    import cv2

    rng = np.random.default_rng(0)
    tex = cv2.GaussianBlur(rng.integers(0, 255, (400, 560, 3), np.uint8), (0, 0), 3)
    return [np.ascontiguousarray(tex[40 + i % 20: 256 + i % 20, 40 + i: 424 + i]) for i in range(n)]


def run(clip_frames: list[np.ndarray], isolate: str) -> tuple[float, int]:
    os.environ["ENGINE_ISOLATE_NATIVE"] = isolate
    ref = clip_frames[0]
    edit = np.zeros((*ref.shape[:2], 4), np.uint8)
    edit[ref.shape[0] // 3: ref.shape[0] // 2, ref.shape[1] // 3: ref.shape[1] // 2] = (255, 0, 0, 200)
    prop = video.StreamEditPropagator(edit, ref)
    calls = native.worker.calls
    start = time.perf_counter()
    for f in clip_frames:
        prop(f)
    return (time.perf_counter() - start) / len(clip_frames), native.worker.calls - calls


def flow_calls(n: int) -> tuple[float, float]:
    """Seconds per optical_flow call (320x320 DIS, with an initial flow), in-process vs worker, interleaved."""
    import cv2

    rng = np.random.default_rng(1)
    a = cv2.GaussianBlur(rng.integers(0, 255, (320, 320), np.uint8), (0, 0), 2)
    b = np.roll(a, 2, axis=1)
    init = np.zeros((320, 320, 2), np.float32)
    times = {"0": [], "1": []}
    for i in range(2 * n):
        mode = "01"[i % 2]
        os.environ["ENGINE_ISOLATE_NATIVE"] = mode
        start = time.perf_counter()
        native.optical_flow(a, b, init)
        times[mode].append(time.perf_counter() - start)
    echo = []
    for _ in range(n):
        start = time.perf_counter()
        native.call("echo", "dis", a, b, init)
        echo.append(time.perf_counter() - start)
    return float(np.median(times["0"])), float(np.median(times["1"])), float(np.median(echo))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clip")
    args = p.parse_args()
    clip_frames = frames(args.frames, args.clip)
    native.call("ping")  # the worker's start-up (about once per server) is not part of the per-frame cost
    run(clip_frames[:5], "1"), run(clip_frames[:5], "0")  # warm-up
    local, worker, calls = [], [], 0
    for _ in range(args.rounds):
        local.append(run(clip_frames, "0")[0])
        t, calls = run(clip_frames, "1")
        worker.append(t)
    lo, wo = float(np.median(local)), float(np.median(worker))
    h, w = clip_frames[0].shape[:2]
    print(f"{len(clip_frames)} frames {w}x{h}, {calls / len(clip_frames):.2f} flow calls per frame, median of "
          f"{args.rounds} rounds")
    print(f"in-process : {lo * 1e3:7.2f} ms/frame")
    print(f"worker     : {wo * 1e3:7.2f} ms/frame")
    print(f"isolation  : {(wo - lo) * 1e3:+7.2f} ms/frame ({(wo - lo) * 1e3 / max(calls / len(clip_frames), 1e-9):+.2f} "
          f"ms per flow call), ratio worker/in-process {wo / lo:.3f}")
    cl, cw, ce = flow_calls(100)
    print(f"one 320x320 DIS call (median of 100, interleaved): in-process {cl * 1e3:.2f} ms, worker {cw * 1e3:.2f} ms, "
          f"difference {(cw - cl) * 1e3:+.2f} ms; the transfer alone (same arrays there and back, no flow) "
          f"{ce * 1e3:.2f} ms")
    native.worker.shutdown()


if __name__ == "__main__":
    main()
