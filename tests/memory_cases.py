"""Requests whose memory used to blow up before any size check, each run in a fresh subprocess that reports its
peak RSS growth (``ru_maxrss`` after the case minus after a warm-up that builds the same model on a small input).

    python tests/memory_cases.py CASE TMPDIR      # prints one JSON line: {"case", "peak_mb", "outcome"}

Used by tests/test_fairness.py and benchmarks/bench_memory.py. Inputs are written without ever holding their
pixels in memory (a PNG of a solid colour is streamed row by row through zlib).
"""
from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = ("congeal_20000x8", "style_4000x8", "capture_144mp", "video_frames_over_limit")


def write_png(path: Path, width: int, height: int, rgb=(120, 140, 160)) -> Path:
    """A solid-colour RGB PNG of any size, streamed (memory: one row)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    z = zlib.compressobj(9)
    parts = []
    for _ in range(height):
        parts.append(z.compress(row))
    parts.append(z.flush())
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        fh.write(chunk(b"IDAT", b"".join(parts)))
        fh.write(chunk(b"IEND", b""))
    return path


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _run(case: str, tmp: Path) -> dict:
    sys.path.insert(0, str(ROOT))
    import numpy as np

    outcome = "ok"
    if case == "congeal_20000x8":
        from engine.pipelines import gangealing as G

        src = write_png(tmp / "strip.png", 20000, 8)
        G.congeal_image("gangealing-cat", np.full((64, 64, 3), 128, np.uint8), resolution=128)  # warm-up
        base = _rss_mb()
        try:
            rep = G.congeal_image("gangealing-cat", str(src), resolution=128)
            outcome = f"ok: aligned {rep.aligned.shape[1]}x{rep.aligned.shape[0]}"
        except Exception as exc:  # noqa: BLE001 - reported
            outcome = f"{type(exc).__name__}: {exc}"
    elif case == "style_4000x8":
        from engine.pipelines.style import StyleTransfer

        src = write_png(tmp / "thin-style.png", 4000, 8)
        st = StyleTransfer(cache_size=0)
        content = np.full((64, 64, 3), 128, np.uint8)
        st.run(content, [np.full((64, 64, 3), 90, np.uint8)], max_side=64, style_size=512)  # warm-up
        base = _rss_mb()
        try:
            res = st.run(content, [str(src)], max_side=64, style_size=512)
            outcome = f"ok: {res.image.size[0]}x{res.image.size[1]}"
        except Exception as exc:  # noqa: BLE001
            outcome = f"{type(exc).__name__}: {exc}"
    elif case == "capture_144mp":
        # What the webcam capture button gets: Gradio decodes the numpy-typed image itself, then the handler.
        import gradio as gr
        from gradio.data_classes import ImageData

        import app
        from demos import propagation

        src = write_png(tmp / "huge.png", 12000, 12000)
        app.apply_settings(app.parse_args([]))
        from engine import imageio

        getattr(imageio, "limit_decoders", lambda: None)()  # what app.build_app does (absent in older code)
        comp = gr.Image(type="numpy", sources=["webcam"])
        small = write_png(tmp / "small.png", 64, 64)
        propagation.capture(comp.preprocess(ImageData(path=str(small), orig_name="small.png")))  # warm-up
        base = _rss_mb()
        try:
            frame = comp.preprocess(ImageData(path=str(src), orig_name="huge.png"))
            out = propagation.capture(frame)["background"]
            outcome = f"ok: returned {out.shape[1]}x{out.shape[0]}"
        except Exception as exc:  # noqa: BLE001
            outcome = f"{type(exc).__name__}: {str(exc)[:160]}"
    elif case == "video_frames_over_limit":
        # A video whose frames are over the pixel limit (the limit is lowered so the clip stays small to write).
        from engine import videoio

        path = tmp / "big-frames.mp4"
        with videoio.VideoWriter(path, fps=10) as w:
            for i in range(3):
                w.write(np.full((480, 640, 3), 40 * i, np.uint8))
        os.environ["ENGINE_MAX_PIXELS"] = str(100_000)
        base = _rss_mb()
        try:
            frames = list(videoio.read_frames(path))
            outcome = f"ok: {len(frames)} frames of {frames[0].shape[1]}x{frames[0].shape[0]}"
        except Exception as exc:  # noqa: BLE001
            outcome = f"{type(exc).__name__}: {exc}"
    else:
        raise SystemExit(f"unknown case {case}")
    return {"case": case, "peak_mb": round(_rss_mb() - base, 1), "outcome": outcome}


def run_case(case: str, tmp: Path, timeout: float = 300, root: Path = ROOT) -> dict:
    """Run one case in a fresh interpreter (random weights, CPU, offline) and return its report."""
    env = {**os.environ, "ENGINE_RANDOM_WEIGHTS": "1", "ENGINE_OFFLINE": "1", "ENGINE_DEVICE": "cpu",
           "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONPATH": str(root)}
    env.pop("ENGINE_MAX_PIXELS", None)
    out = subprocess.run([sys.executable, str(root / "tests" / "memory_cases.py"), case, str(tmp)], env=env,
                         capture_output=True, text=True, timeout=timeout, cwd=str(root))
    if out.returncode != 0:
        raise RuntimeError(f"{case} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


if __name__ == "__main__":
    print(json.dumps(_run(sys.argv[1], Path(sys.argv[2]))))
