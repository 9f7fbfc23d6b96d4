"""Fairness of the shared engine between users: how long a short request waits behind a webcam stream and behind
an abandoned large job (the whole app on loopback, random weights, CPU).

    python benchmarks/bench_fairness.py [--large 2048] [--cap 200]

Scenarios (each measures the wall time of one short 64x64 translation sent by a second user):
    alone          nothing else running (the baseline: the short request's own run time)
    stream-idle    a webcam stream (style tab) sent one frame and then nothing, without closing
    stream-active  a webcam stream sending a frame every 0.1 s for the whole measurement
    abandoned      a large style transfer (--large px content, tiled) whose client disconnected as it started

Reported: seconds and the ratio to ``alone``. A wait longer than ``--cap`` seconds is reported as "> cap".
Run it on main and on a branch in the same session to compare (the numbers depend on the machine's load).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from loopback import Session, Stream, event_inputs, fn_index, live_app, upload  # noqa: E402

MODEL = "gancompression-horse2zebra"


def picture(path: Path, w: int, h: int, seed: int = 0) -> Path:
    y, x = np.mgrid[0:h, 0:w]
    rng = np.random.default_rng(seed)
    arr = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) // 3) % 256], -1)
    arr = (arr + rng.integers(0, 8, arr.shape)).clip(0, 255).astype(np.uint8)
    Image.fromarray(arr).save(path)
    return path


def short_request(client, pic: str, cap: float) -> float:
    from gradio_client import handle_file

    start = time.perf_counter()
    job = client.submit(handle_file(pic), MODEL, 0, api_name="/translate_one")
    while not job.done() and time.perf_counter() - start < cap:
        time.sleep(0.05)
    if not job.done():
        job.cancel()
        return float("inf")
    job.result()
    return time.perf_counter() - start


def stream_inputs(demo, frame: dict, style: dict) -> list:
    # stylize_webcam_frame: cam, (style, weight) x4, alpha, preserve, style size, frame side, smoothing, state (then defaults)
    return event_inputs(demo, "stylize_webcam_frame",
                        [frame, style, 1.0, None, 1.0, None, 1.0, None, 1.0, 1.0, False, 128, 128, 0.0, None])


def style_inputs(demo, content: dict, style: dict, max_side: int) -> list:
    editor = {"background": content, "layers": [], "composite": content}
    return event_inputs(demo, "stylize_image",
                        [editor, None, False, style, 1.0, None, 1.0, None, 1.0, None, 1.0, 1.0, False, max_side, 128])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--large", type=int, default=2048, help="side of the abandoned style job's content (px)")
    p.add_argument("--cap", type=float, default=200.0, help="give up waiting after this many seconds")
    args = p.parse_args()
    from gradio_client import Client

    from engine import queue

    tmp = Path(tempfile.mkdtemp(prefix="bench-fair-"))
    small = str(picture(tmp / "small.png", 64, 64))
    frame_png = picture(tmp / "frame.png", 160, 120, 1)
    style_png = picture(tmp / "style.png", 128, 128, 2)
    large_png = picture(tmp / "large.png", args.large, args.large, 3)
    results: dict[str, float] = {}
    with live_app() as (url, demo):
        client = Client(url + "/", verbose=False)
        short_request(client, small, args.cap)  # warm-up: builds the translation model
        results["alone"] = short_request(client, small, args.cap)

        frame, style = upload(url, frame_png), upload(url, style_png)
        cam = fn_index(demo, "stylize_webcam_frame")
        s = Stream(url, cam).join(stream_inputs(demo, frame, style))
        deadline = time.monotonic() + 60
        while s.outputs < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        results["stream-idle"] = short_request(client, small, args.cap)
        s.close()
        time.sleep(1.0)

        s = Stream(url, cam).join(stream_inputs(demo, frame, style))
        stop = threading.Event()

        def feed():
            while not stop.is_set():
                s.send(stream_inputs(demo, frame, style))
                time.sleep(0.1)

        feeder = threading.Thread(target=feed, daemon=True)
        deadline = time.monotonic() + 60
        while s.outputs < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        feeder.start()
        time.sleep(1.0)
        before = s.outputs
        t0 = time.perf_counter()
        results["stream-active"] = short_request(client, small, args.cap)
        frames = (s.outputs - before) / max(time.perf_counter() - t0, 1e-9)
        stop.set()
        feeder.join()
        s.close()
        time.sleep(1.0)

        content = upload(url, large_png)
        queue.stats.reset()
        big = Session(url, fn_index(demo, "stylize_image")).join(style_inputs(demo, content, style, 0))
        deadline = time.monotonic() + 60
        while queue.stats.active == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)
        big.disconnect()
        gone = time.perf_counter()
        results["abandoned"] = short_request(client, small, args.cap)
        deadline = time.monotonic() + args.cap
        while queue.stats.active and time.monotonic() < deadline:
            time.sleep(0.2)
        freed = time.perf_counter() - gone if not queue.stats.active else float("inf")

    base = results["alone"]
    print(f"stream frames processed per second during stream-active: {frames:.1f}")
    print(f"abandoned job: engine idle {freed:.1f} s after the client disconnected")
    for name, value in results.items():
        shown = f"> {args.cap:.0f}" if value == float("inf") else f"{value:.2f}"
        ratio = "" if value == float("inf") else f"  ({value / base:.1f}x alone)"
        print(f"{name:15s} {shown} s{ratio}")


if __name__ == "__main__":
    main()
