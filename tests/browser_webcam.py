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

import contextlib
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
  const P = window.__probe = {captures: [], outputs: [], answers: []};
  // every streamed answer as it arrives (Gradio's SSE stream): counts answers even when an output repeats (Gradio
  // serves identical images from one cached URL, so the <img> does not change)
  const origFetch = window.fetch;
  window.fetch = async (...args) => {
    const r = await origFetch(...args);
    const u = String((args[0] && args[0].url) || args[0]);
    if (u.includes('queue/data') && r.body) {
      try {
        const reader = r.clone().body.getReader(), dec = new TextDecoder();
        (async () => { for (;;) { const {done, value} = await reader.read(); if (done) break;
          const n = (dec.decode(value).match(/"msg":"process_streaming"/g) || []).length;
          for (let i = 0; i < n; i++) P.answers.push(performance.now()); } })();
      } catch (e) {}
    }
    return r;
  };
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
  // every new picture Gradio puts in an <img> of the output block labelled ``label``: fetched and decoded here
  // (fetch + createImageBitmap), time-stamped once decoded. (Not the <img>'s own load event: in headless Chromium
  // a streamed output <img> whose src changes every few hundred ms rarely completes a load.)
  P.watch = (label) => {
    const seen = new Set();
    const take = async (img) => {
      const src = img.src;
      if (!src || seen.has(src) || !src.includes('file=')) return;
      const block = img.closest('div.block');
      if (!block || !block.innerText.includes(label)) return;
      seen.add(src);
      try {
        const bmp = await createImageBitmap(await (await fetch(src)).blob());
        const t = performance.now();
        scratch.width = bmp.width; scratch.height = bmp.height;
        const ctx = scratch.getContext('2d', {willReadFrequently: true});
        ctx.drawImage(bmp, 0, 0);
        P.outputs.push([t, readCode(ctx, scratch.width, scratch.height), src]);
      } catch (e) {}
    };
    new MutationObserver((records) => {
      for (const r of records) {
        if (r.type === 'attributes' && r.target instanceof HTMLImageElement) take(r.target);
        for (const n of r.addedNodes || []) {
          if (n instanceof HTMLImageElement) take(n);
          else if (n.querySelectorAll) n.querySelectorAll('img').forEach(take);
        }
      }
    }).observe(document.body, {subtree: true, childList: true, attributes: true, attributeFilter: ['src']});
  };
})();
""" % {"cells": CELLS, "bits": BITS, "band": BAND}


def summarise(probe: dict, fps_in: int = 25) -> dict:
    """fps and capture -> output latency (ms) from the page probe's records.

    ``fps``: new output images per second; ``answer_fps``: streamed answers per second (counts repeated outputs
    too). ``latency_ms`` / ``latency_p90_ms``: from each output's own frame code when it can be read; otherwise
    (``latency_from`` = "estimate") from the capture the server took up: the newest capture before the previous
    answer arrived (Gradio keeps only the newest frame and takes it up when the previous answer is done)."""
    caps = probe["captures"]
    outs = sorted(probe["outputs"])
    answers = sorted(probe.get("answers") or [])
    res = {"outputs": len(outs), "captures": len(caps), "answers": len(answers)}
    for key, times in (("fps", [o[0] for o in outs]), ("answer_fps", answers)):
        span = (times[-1] - times[0]) / 1000 if len(times) >= 2 else 0
        res[key] = (len(times) - 1) / span if span > 0 else float("nan")
    by_k: dict = {}
    for t, k in caps:
        if k >= 0:
            by_k.setdefault(k, []).append(t)
    coded = []
    for t, k, _ in outs:   # the clip loops: the latest capture of that frame number before the output
        times = [c for c in by_k.get(k, []) if c <= t]
        if times:
            coded.append(t - times[-1])
    estimate = []
    cap_times = sorted(t for t, _ in caps)
    ends = [o[0] for o in outs] if len(outs) >= len(answers) else answers
    for prev, t in zip(ends, ends[1:]):
        before = [c for c in cap_times if c <= prev]
        if before:
            estimate.append(t - before[-1])
    lat = coded if len(coded) >= max(2, 0.5 * len(outs)) else estimate
    res["latency_ms"] = float(np.median(lat)) if lat else float("nan")
    res["latency_p90_ms"] = float(np.percentile(lat, 90)) if lat else float("nan")
    res["latency_from"] = "frame code" if lat is coded else "estimate"
    res["codes_read"] = len(coded)
    return res


# ---- the app, the browser and one stream (shared by the browser tests and benchmarks/bench_webcam_browser.py) ----

BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage", *CHROMIUM_ARGS]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve_app(repo: Path, env: dict, args=(), log: Path | None = None, timeout_s: float = 180.0,
              python: str | None = None):
    """``python app.py`` of the checkout ``repo`` on a free loopback port with ``env``; yields the process with
    ``.url``, ``.log_path`` and ``.cold_start_s``; stopped on exit. Raises RuntimeError when it does not start."""
    import subprocess
    import sys
    import tempfile
    import time
    import urllib.request

    port = free_port()
    log = Path(log or tempfile.mkstemp(prefix="gan-studio-app-", suffix=".log")[1])
    with open(log, "w") as fh:
        proc = subprocess.Popen([python or sys.executable, "app.py", "--host", "127.0.0.1", "--port", str(port),
                                 *args], cwd=repo, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    started = time.monotonic()
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the app exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() - started > timeout_s:
                raise RuntimeError(f"the app did not start within {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        proc.cold_start_s = time.monotonic() - started
        proc.url, proc.log_path = url, log
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def camera_browser(camera_path: Path, chromium: str):
    """Headless Chromium whose camera is the Y4M file ``camera_path``."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium,
                                    args=[*BROWSER_ARGS, f"--use-file-for-fake-video-capture={camera_path}"])
        try:
            yield browser
        finally:
            browser.close()


def open_app(browser, url: str, timeout_ms: int = 120_000):
    """A new page of ``browser`` on the app at ``url`` with the probe installed."""
    pg = browser.new_page(viewport={"width": 1400, "height": 1000})
    pg.set_default_timeout(timeout_ms)
    pg.add_init_script(PROBE_JS)
    pg.goto(url, wait_until="load")
    pg.get_by_role("tab", name="Style transfer").wait_for()
    return pg


def visible(pg, selector: str):
    return pg.locator(f"{selector} >> visible=true").first


def fetch_image(pg, src):
    from io import BytesIO

    from PIL import Image

    resp = pg.request.get(src)
    return np.asarray(Image.open(BytesIO(resp.body())).convert("RGB")) if resp.ok else None


def stream(pg, out_label: str, seconds: float = 10.0, before=None, min_outputs: int = 4, max_s: float = 90.0,
           until=None, warm_s: float = 0.0, fetch: bool = True,
           count: str = "outputs") -> tuple[dict, list[np.ndarray]]:
    """Open the visible webcam, start streaming, watch the output block ``out_label`` for ``seconds`` (longer, up
    to ``max_s``, until ``min_outputs`` outputs arrived: a loaded machine is slow, not broken); returns the page
    probe's records (output frame codes read here from the fetched images) and the output images.

    ``before()`` runs once the stream started (records are cleared after it); ``until(image)`` delays the window
    until the newest output passes it; ``warm_s``: seconds after the first answer before the window starts (model
    builds and first-frame work stay out of the figures); ``count``: what ``min_outputs`` counts, "outputs" (new
    pictures shown) or "answers" (streamed answers: for a model whose output does not change)."""
    import time

    visible(pg, 'button[role="tab"]:has-text("Webcam")').click()
    visible(pg, "text=Click to Access Webcam").click()
    record = visible(pg, 'button[aria-label="capture photo"]')
    record.wait_for()
    # Gradio's output <img> loads lazily: a picture outside the viewport is never fetched, so the output is kept in
    # view, as a user watching it would
    pg.locator("div.block").filter(has_text=out_label).locator("visible=true").last.scroll_into_view_if_needed()
    clear = "() => { window.__probe.captures = []; window.__probe.outputs = []; window.__probe.answers = []; }"
    pg.evaluate("(label) => window.__probe.watch(label)", out_label)
    pg.evaluate(clear)
    record.click()
    if before is not None:
        before()
        pg.evaluate(clear)
    start = time.monotonic()
    ready = until is None and not warm_s
    while True:
        time.sleep(0.25 if warm_s else 0.5)
        n = pg.evaluate(f"() => window.__probe.{count}.length")
        if not ready and pg.evaluate("() => window.__probe.outputs.length + window.__probe.answers.length"):
            if until is None:
                time.sleep(warm_s)
                ready = True
            else:   # e.g. the edit shows: from then on the window of ``seconds`` counts
                src = pg.evaluate("() => (window.__probe.outputs[window.__probe.outputs.length - 1] || [])[2]")
                last = fetch_image(pg, src) if src else None
                ready = last is not None and until(last)
            if ready:
                pg.evaluate(clear)
                start = time.monotonic()
                continue
        waited = time.monotonic() - start
        if (ready and waited >= seconds and n >= min_outputs) or waited >= max_s:
            break
    probe = pg.evaluate("() => ({captures: window.__probe.captures, outputs: window.__probe.outputs, "
                        "answers: window.__probe.answers})")
    visible(pg, 'button:has-text("Stop")').click()
    images = []   # every output image, fetched back; its frame code is read here (the page's reading is a bonus)
    for rec in probe["outputs"] if fetch else []:
        img = fetch_image(pg, rec[2])
        if img is not None:
            k = read_code(img)
            rec[1] = -1 if k is None else k
            images.append(img)
    return probe, images
