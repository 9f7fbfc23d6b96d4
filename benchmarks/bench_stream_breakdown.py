"""Where a webcam frame's time goes on the server, without a browser: the Propagation webcam handler in-process,
and Gradio's stream transport through a live app on loopback.

    python benchmarks/bench_stream_breakdown.py [--side 384] [--frames 60]

Measured, all in one run (so a loaded machine weighs on each alike):
  * handler      demos.propagation.webcam_frame with a prepared edit (a painted band on the first frame of a
                 face clip, classic backend, same-scene reference), 640x480 frames shrunk to ``--side``; the optical
                 flow in the isolated worker process (the default) and in-process (ENGINE_ISOLATE_NATIVE=0);
  * encode       gr.Image(format="jpeg").postprocess of the output (what the webcam outputs use);
  * upload       one 640x480 JPEG frame posted to /gradio_api/upload, as the page does for each captured frame;
  * transport    post a frame to a running stream event and wait for its answer, with no edit prepared (the
                 handler only shrinks the frame): Gradio's own per-frame round trip.
The sum bounds the frame rate a stream can reach on this machine before the browser's own work (capture, JPEG
encode, decode and paint of the answer), which on a 2-core CI machine shares the same CPU. Needs DATA_DIR (or
../shared/data) for the face clip.

One run on the 2-core CPU (load average 3.3, another job running), 384 px, ms per frame: handler 28.1 with the
flow in the isolated worker (38.6 in-process in the same run: the worker's flow runs beside the server's thread),
JPEG encode 1.2, upload 44.8, stream round trip 16.9; sum 91.1 -> at most 11.0 fps. In the same period the browser
benchmark (benchmarks/bench_webcam_browser.py, Chromium on the same 2 cores) measured 3.2 answers/s: the rest is
the browser's own work competing for the CPU.

Again on 2026-12-02 afternoon (load average 3.7, 384 px): handler 21.4 ms with the flow in the worker (18.9
in-process), JPEG 1.0, upload 26.2, round trip 11.3; sum 60.0 -> at most 16.7 fps. The browser benchmark, idle
machine, same afternoon: 8.9 shown fps for classic 384 (Chromium took 1.17 of the 2 cores).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

CLIP = ("face-video", "liveportrait", "assets", "examples", "driving", "d0.mp4")


def _frames(n: int) -> list[np.ndarray]:
    from engine import videoio

    data = Path(os.environ.get("DATA_DIR", REPO.parent / "shared" / "data"))
    clip = data.joinpath(*CLIP)
    if not clip.is_file():
        sys.exit(f"needs the face clip {'/'.join(CLIP)} under DATA_DIR")
    return [cv2.resize(np.asarray(f), (640, 480)) for f in videoio.read_frames(clip, max_frames=n)]


def handler_ms(frames, side: int, isolate: bool) -> tuple[float, float]:
    """Median handler and JPEG-encode milliseconds per frame (the first 10 frames are warm-up)."""
    import gradio as gr

    from demos.propagation import prepare_stream_edit, webcam_frame

    os.environ["ENGINE_ISOLATE_NATIVE"] = "1" if isolate else "0"
    h, w = round(480 * side / 640), side
    ref = cv2.resize(frames[0], (w, h), interpolation=cv2.INTER_AREA)
    layer = np.zeros((h, w, 4), np.uint8)
    layer[h // 3:h // 3 + h // 7, w // 3:2 * w // 3] = (255, 200, 0, 255)
    prepared = prepare_stream_edit("classic", {"background": ref, "layers": [layer], "composite": ref}, None, 1.0)
    out_image = gr.Image(format="jpeg", type="numpy")
    state, run, enc = None, [], []
    for i, f in enumerate(frames):
        t0 = time.perf_counter()
        out, state = webcam_frame(f, prepared, state, side)
        t1 = time.perf_counter()
        out_image.postprocess(out)
        t2 = time.perf_counter()
        if i >= 10:
            run.append(t1 - t0)
            enc.append(t2 - t1)
    return 1e3 * statistics.median(run), 1e3 * statistics.median(enc)


def transport_ms(frames, side: int, tmp: Path) -> tuple[float, float]:
    """Median upload and send->answer milliseconds of a live stream with no edit prepared."""
    from PIL import Image

    from loopback import Stream, event_inputs, fn_index, live_app, upload

    paths = []
    for i, f in enumerate(frames[:10]):
        p = tmp / f"frame{i}.jpg"
        Image.fromarray(f).save(p, quality=85)
        paths.append(p)
    with live_app() as (url, demo):
        def inputs(fd):
            return event_inputs(demo, "propagate_webcam_frame", [fd, None, None, side])

        ups, files = [], []
        for p in paths * 2:
            t0 = time.perf_counter()
            files.append(upload(url, p))
            ups.append(time.perf_counter() - t0)
        stream = Stream(url, fn_index(demo, "propagate_webcam_frame")).join(inputs(files[0]))
        deadline = time.monotonic() + 60
        while stream.outputs < 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        rounds = []
        for k in range(40):
            n, t0 = stream.outputs, time.perf_counter()
            stream.send(inputs(files[k % len(files)]))
            while stream.outputs == n and time.perf_counter() - t0 < 10:
                time.sleep(0.002)
            rounds.append(time.perf_counter() - t0)
        stream.close()
    return 1e3 * statistics.median(ups), 1e3 * statistics.median(rounds)


def main(argv=None) -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--side", type=int, default=384)
    ap.add_argument("--frames", type=int, default=60)
    args = ap.parse_args(argv)
    os.environ.setdefault("ENGINE_DEVICE", "cpu")
    frames = _frames(args.frames)
    iso, enc = handler_ms(frames, args.side, isolate=True)
    inproc, _ = handler_ms(frames, args.side, isolate=False)
    os.environ["ENGINE_ISOLATE_NATIVE"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        up, rt = transport_ms(frames, args.side, Path(tmp))
    total = iso + enc + up + rt
    print(f"classic webcam propagation at {args.side} px, 640x480 camera frames; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print("| step | ms per frame |\n|---|---|")
    print(f"| handler (flow in the isolated worker) | {iso:.1f} |\n| handler (flow in-process) | {inproc:.1f} |")
    print(f"| JPEG encode of the output | {enc:.1f} |\n| upload of a camera frame | {up:.1f} |")
    print(f"| stream round trip (no edit) | {rt:.1f} |")
    print(f"| sum (isolated handler + encode + upload + round trip) | {total:.1f} -> at most {1e3 / total:.1f} fps |")


if __name__ == "__main__":
    main()
