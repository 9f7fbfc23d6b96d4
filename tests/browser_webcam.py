"""A fake camera for Chromium and in-page probes for the webcam sub-tabs (used by tests/test_browser_webcam.py and
benchmarks/bench_webcam_browser.py).

The camera is a Y4M file (``--use-file-for-fake-video-capture``) made from a face clip with the project's own
video reader. Every frame carries its number as a 12-cell binary code in a band along the top (white = 1, with a
white first and a black last cell marking the direction, since Gradio mirrors webcam captures). In the page:

* every frame Gradio captures for the stream (its canvas ``toDataURL('image/jpeg')``) is time-stamped and its code
  read from that canvas;
* every new output image is time-stamped when it has loaded, and its code read back: capture -> output latency of
  that very frame. When the output hides the code (style transfer repaints everything), the latency is taken from
  the last capture (Gradio sends the next frame only once the previous answer is in).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

BITS = 10                       # frame numbers 0..1023
CELLS = BITS + 2                # start marker (white), bits, end marker (black)
BAND = 0.07                     # band height, share of the frame height


def burn_code(frame: np.ndarray, k: int) -> np.ndarray:
    """Write frame number ``k`` into the top band of ``frame`` (copy)."""
    out = frame.copy()
    h, w = out.shape[:2]
    band = max(8, int(round(BAND * h)))
    cell = w / CELLS
    bits = [1] + [(k >> (BITS - 1 - i)) & 1 for i in range(BITS)] + [0]
    for i, b in enumerate(bits):
        out[:band, int(round(i * cell)):int(round((i + 1) * cell))] = 235 if b else 16
    return out


def read_code(img: np.ndarray) -> int | None:
    """Frame number from an (H, W, 3) image carrying :func:`burn_code`'s band (either orientation), or None."""
    h, w = img.shape[:2]
    band = max(8, int(round(BAND * h)))
    y = band // 2
    cell = w / CELLS
    vals = np.array([img[max(0, y - 1):y + 2, int((i + 0.5) * cell) - 1:int((i + 0.5) * cell) + 2].mean()
                     for i in range(CELLS)])
    bits = vals > 125
    if bits[0] and not bits[-1]:
        pass
    elif bits[-1] and not bits[0]:
        bits = bits[::-1]
    else:
        return None
    return int(sum(int(b) << (BITS - 1 - i) for i, b in enumerate(bits[1:-1])))


def write_y4m(path: Path, frames, fps: int = 25) -> Path:
    """Frames (H, W, 3) uint8 RGB -> a YUV4MPEG2 file (4:2:0, BT.601 full range as Chromium reads it)."""
    frames = list(frames)
    h, w = frames[0].shape[:2]
    with open(path, "wb") as fh:
        fh.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for f in frames:
            rgb = f.astype(np.float32)
            y = 0.299 * rgb[..., 0] + 0.587 * rgb[..., 1] + 0.114 * rgb[..., 2]
            u = 128 - 0.168736 * rgb[..., 0] - 0.331264 * rgb[..., 1] + 0.5 * rgb[..., 2]
            v = 128 + 0.5 * rgb[..., 0] - 0.418688 * rgb[..., 1] - 0.081312 * rgb[..., 2]
            sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))  # noqa: E731
            fh.write(b"FRAME\n")
            for plane in (y, sub(u), sub(v)):
                fh.write(np.clip(np.round(plane), 0, 255).astype(np.uint8).tobytes())
    return path


def make_camera(clip: Path, out: Path, side: int = 480, frames: int = 150, fps: int = 25) -> tuple[Path, list]:
    """A Y4M fake camera from the first ``frames`` of ``clip`` (square-cropped, ``side`` px, numbered)."""
    from engine import videoio

    src = []
    for f in videoio.read_frames(clip, max_frames=frames):
        h, w = f.shape[:2]
        s = min(h, w)
        f = f[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]
        from PIL import Image

        f = np.asarray(Image.fromarray(f).resize((side, side), Image.Resampling.BILINEAR))
        src.append(burn_code(f, len(src)))
    return write_y4m(out, src, fps), src


CHROMIUM_ARGS = ["--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"]

# In-page probe: installed before the app loads. window.__probe = {captures: [[t, k]], outputs: [[t, k, src]]}
PROBE_JS = """
(() => {
  const CELLS = %(cells)d, BITS = %(bits)d, BAND = %(band)f;
  const P = window.__probe = {captures: [], outputs: [], watching: null};
  const readCode = (ctx, w, h) => {
    const band = Math.max(8, Math.round(BAND * h)), y = Math.floor(band / 2), cell = w / CELLS;
    const bits = [];
    for (let i = 0; i < CELLS; i++) {
      const d = ctx.getImageData(Math.floor((i + 0.5) * cell) - 1, y - 1, 3, 3).data;
      let s = 0; for (let j = 0; j < d.length; j += 4) s += (d[j] + d[j + 1] + d[j + 2]) / 3;
      bits.push(s / 9 > 125 ? 1 : 0);
    }
    let b = bits;
    if (b[0] === 1 && b[CELLS - 1] === 0) {} else if (b[CELLS - 1] === 1 && b[0] === 0) { b = b.slice().reverse(); }
    else return -1;
    let k = 0; for (let i = 1; i <= BITS; i++) k = k * 2 + b[i];
    return k;
  };
  const orig = HTMLCanvasElement.prototype.toDataURL;
  HTMLCanvasElement.prototype.toDataURL = function (type, q) {
    if (type === 'image/jpeg' && this.width > 0) {
      let k = -1;
      try { k = readCode(this.getContext('2d'), this.width, this.height); } catch (e) {}
      P.captures.push([performance.now(), k]);
    }
    return orig.call(this, type, q);
  };
  const scratch = document.createElement('canvas');
  P.watch = (root) => {
    const seen = new Set();
    const check = () => {
      const img = root.querySelector('img');
      if (!img || !img.src || seen.has(img.src)) return;
      const src = img.src; seen.add(src);
      const probe = new Image();
      probe.onload = () => {
        const t = performance.now();
        scratch.width = probe.naturalWidth; scratch.height = probe.naturalHeight;
        const ctx = scratch.getContext('2d', {willReadFrequently: true});
        ctx.drawImage(probe, 0, 0);
        P.outputs.push([t, readCode(ctx, scratch.width, scratch.height), src]);
      };
      probe.src = src;
    };
    P.watching = new MutationObserver(check);
    P.watching.observe(root, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  };
})();
""" % {"cells": CELLS, "bits": BITS, "band": BAND}


def summarise(probe: dict, fps_in: int = 25) -> dict:
    """fps of outputs and capture -> output latency (ms) from the page probe's records."""
    caps = probe["captures"]
    outs = sorted(probe["outputs"])
    res = {"outputs": len(outs), "captures": len(caps)}
    if len(outs) >= 2:
        span = (outs[-1][0] - outs[0][0]) / 1000
        res["fps"] = (len(outs) - 1) / span if span > 0 else float("nan")
    by_k: dict = {}
    for t, k in caps:
        if k >= 0:
            by_k.setdefault(k, []).append(t)
    coded = []
    for t, k, _ in outs:   # the clip loops: the latest capture of that frame number before the output
        times = [c for c in by_k.get(k, []) if c <= t]
        if times:
            coded.append(t - times[-1])
    last = []
    cap_times = sorted(t for t, _ in caps)
    for t, _, _ in outs:
        before = [c for c in cap_times if c <= t]
        if before:
            last.append(t - before[-1])
    res["latency_ms"] = float(np.median(coded)) if coded else (float(np.median(last)) if last else float("nan"))
    res["latency_from"] = "frame code" if coded else "last capture"
    res["codes_read"] = len(coded)
    return res
