"""End-to-end webcam streaming in a real browser: output fps and capture -> output latency, this code vs a baseline.

Headless Chromium takes a fake camera (a Y4M file made from a face clip, every frame numbered in a code band:
tests/browser_webcam.py) and streams it through Gradio to the app, exactly as a user's webcam would. The page
probe time-stamps every captured frame, every streamed answer and every new output image; latency is from a
frame's capture to its output (read from the frame code on the output; for style transfer, which repaints the
code, estimated from the capture the server took up). Each configuration streams for ``--seconds`` after
``--warm`` seconds of warm-up (model builds and the first-frame match stay out of the figures).

Configurations (random weights except classic, which has none: the pipeline cost is what is measured):
classic propagation at 256/384 px, GANgealing celeba at 256, AdaIN at 256/384, Magenta at 256/384.

Two apps are started on free ports, this checkout and ``--base`` (a git worktree of an older commit, default
/tmp/base21 = ``git worktree add /tmp/base21 21e3313``), and every configuration runs on both, alternating which
goes first, so a machine loaded by other jobs weighs on both alike. Prints a markdown table with new/old ratios.

    flock /tmp/bench.lock python benchmarks/bench_webcam_browser.py [--base /tmp/base21] [--seconds 8]
    flock /tmp/bench.lock python benchmarks/bench_webcam_browser.py --stream-every 0.033,0.05,0.1   # pick it

``--stream-every`` instead measures this checkout alone with several ``stream_every`` values (env STREAM_EVERY)
on classic 384 and Magenta 384. Needs Chromium, Playwright and DATA_DIR (or ../shared/data).

Measured 2026-12-02 (2-core CPU, nothing else running, --seconds 10; new = dbb21ff, old = 21e3313, both with
stream_every 0.1 s):

| configuration | px | shown fps new / old | answers/s new / old | latency median / p90 ms new; old |
|---|---|---|---|---|
| classic propagation | 256 | 6.2 / 5.2 (x1.20) | 6.1 / 5.4 (x1.13) | 686 / 1479; 863 / 1576 |
| classic propagation | 384 | 8.9 / 6.7 (x1.33) | 8.8 / 5.7 (x1.53) | 412 / 921; 810 / 1126 |
| GANgealing celeba (random) | 256 | 1.7 / 1.3 (x1.31) | 1.5 / 1.3 (x1.13) | 688 / 1023; 980 / 1451 |
| AdaIN (random) | 256 | - | 1.4 / 1.4 (x1.01) | 747 / 890; 757 / 862 |
| AdaIN (random) | 384 | - | 0.5 / 0.5 (x1.06) | 1949 / 1997; 2048 / 2279 |
| Magenta (random) | 256 | 7.3 / 7.0 (x1.04) | 6.9 / 6.8 (x1.01) | 177 / 334; 188 / 284 |
| Magenta (random) | 384 | 4.3 / 3.8 (x1.12) | 4.3 / 3.6 (x1.19) | 280 / 408; 333 / 427 |

The runs are noisy: three earlier rounds of classic 384 alone (stream_every 0.05 s then) read 5.2-8.4 fps new
and 6.0-8.8 old. Where the CPU goes during classic 384 (per-process CPU time sampled each second over a run):
Chromium 1.17 cores (renderer 0.46, GPU process 0.40 -- software compositing --, browser 0.16, video capture
0.15), the server 0.59 (flow worker included), of the 2. Without a browser (benchmarks/bench_stream_breakdown.py,
same day, load 3.7) a 384 px frame costs the server 60 ms (handler 21, upload 26, round trip 11, JPEG 1): at most ~17 fps
when the browser is on another machine.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests import browser_webcam as BW  # noqa: E402

CLIP = ("face-video", "liveportrait", "assets", "examples", "driving", "d0.mp4")
STYLE = ("adain-examples", "input", "style", "la_muse.jpg")
REFERENCE_EXAMPLE = "Examples: reference face"
STICKER_BLOCK = "or upload an RGBA sticker"

CONFIGS = [  # (name, kind, model/backend, side)
    ("classic propagation", "propagation", "classic", 256),
    ("classic propagation", "propagation", "classic", 384),
    ("GANgealing celeba (random)", "propagation", "GANgealing celeba", 256),
    ("AdaIN (random)", "style", "AdaIN", 256),
    ("AdaIN (random)", "style", "AdaIN", 384),
    ("Magenta (random)", "style", "Magenta", 256),
    ("Magenta (random)", "style", "Magenta", 384),
]


def _set_number(pg, label: str, value: int) -> bool:
    block = pg.locator("div.block").filter(has_text=label).locator("visible=true").last
    number = block.locator("input[type=number]").first
    if not number.count():
        return False
    number.fill(str(value))
    number.press("Enter")
    pg.wait_for_timeout(300)
    return True


def _choose(pg, label: str, option: str) -> bool:
    dropdown = pg.get_by_label(label, exact=True).first
    dropdown.click()
    opts = pg.get_by_role("option").filter(has_text=option)
    try:
        opts.first.wait_for(timeout=10_000)
    except Exception:  # noqa: BLE001 - not offered by this checkout
        pg.keyboard.press("Escape")
        return False
    opts.first.click()
    pg.wait_for_timeout(500)
    return True


def run_config(browser, url: str, kind: str, model: str, side: int, data: Path, seconds: float, warm: float,
               sticker: str) -> dict:
    pg = BW.open_app(browser, url)
    try:
        if kind == "style":
            radio = pg.get_by_role("radio", name=re.compile("^" + re.escape(model)))
            if not radio.count():
                return {"error": f"{model} not offered"}
            radio.first.check()
            pg.locator("div.block").filter(has_text="Style 1").first.locator("input[type=file]").first \
                .set_input_files(str(data.joinpath(*STYLE)))
            pg.wait_for_timeout(1500)
            BW.visible(pg, 'button[role="tab"]:has-text("Webcam")').click()
            if not _set_number(pg, "Frame max side", side):
                return {"error": "no frame-size setting"}
            probe, _ = BW.stream(pg, "Stylised", seconds=seconds, warm_s=warm, min_outputs=3, max_s=120,
                                 fetch=False, count="answers")
        else:
            pg.get_by_role("tab", name="Propagation").click()
            before = None
            if model == "classic":
                pg.locator("div.block").filter(has_text=REFERENCE_EXAMPLE).last.locator(
                    "button.gallery-item, tr.tr-body").first.click()
                pg.locator("div.block").filter(has_text=STICKER_BLOCK).last.locator("img").first.wait_for()

                def before():   # the webcam workflow: the streaming frame becomes the reference
                    time.sleep(1.5)
                    pg.get_by_role("button", name="Use this frame as the reference").click()
                    time.sleep(1.0)
            else:
                if not _choose(pg, "Backend", model):
                    return {"error": f"{model} not offered"}
                pg.get_by_role("button", name="Load the model's average (GANgealing)").click()
                pg.wait_for_timeout(1500)
                pg.locator("div.block").filter(has_text=STICKER_BLOCK).locator("input[type=file]").first \
                    .set_input_files(sticker, timeout=20_000)   # the upload box (the examples table repeats its label)
                pg.wait_for_timeout(1500)
            BW.visible(pg, 'button[role="tab"]:has-text("Webcam")').click()
            if not _set_number(pg, "Frame max side", side):
                return {"error": "no frame-size setting"}
            probe, _ = BW.stream(pg, "With the edit", seconds=seconds, before=before, warm_s=warm + 1.5,
                                 min_outputs=3, max_s=120, fetch=True, count="answers")
        return BW.summarise(probe)
    finally:
        pg.close()


def _env(extra: dict | None = None) -> dict:
    env = {**os.environ, "ENGINE_RANDOM_WEIGHTS": "1", "ENGINE_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "ENGINE_DEVICE": "cpu"}
    env.update(extra or {})
    return env


def _fmt(res: dict | None, key: str, digits: int = 1) -> str:
    if not res or "error" in res:
        return "—"
    v = res.get(key, float("nan"))
    return "—" if v != v else f"{v:.{digits}f}"


def _val(res: dict | None, key: str) -> float:
    return float("nan") if not res or "error" in res else float(res.get(key, float("nan")))


def _ratio(a: float, b: float) -> str:
    return "—" if a != a or b != b or b == 0 else f"×{a / b:.2f}"


def compare(args, data: Path, camera: Path, chromium: str, sticker: str) -> None:
    base = Path(args.base)
    if not (base / "app.py").exists():
        sys.exit(f"no baseline checkout at {base}: git worktree add {base} 21e3313")
    rows = []
    configs = [c for c in CONFIGS if not args.only or args.only in f"{c[0]} {c[3]}"]
    with BW.serve_app(REPO, _env(), ("--data-dir", str(data))) as new, \
            BW.serve_app(base, _env(), ("--data-dir", str(data))) as old, \
            BW.camera_browser(camera, chromium) as browser:
        for i, (name, kind, model, side) in enumerate(configs):
            results = {}
            order = [("new", new), ("old", old)] if i % 2 == 0 else [("old", old), ("new", new)]
            for tag, app in order:
                t0 = time.monotonic()
                try:
                    results[tag] = run_config(browser, app.url, kind, model, side, data, args.seconds, args.warm,
                                              sticker)
                except Exception as exc:  # noqa: BLE001 - one failed configuration is reported, the rest runs
                    results[tag] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"}
                print(f"# {name} {side} px [{tag}] {time.monotonic() - t0:.0f} s: {results[tag]}", flush=True)
            rows.append((name, side, results))
    print("\n| configuration | px | shown fps new / old (ratio) | answers/s new / old (ratio) | "
          "latency new: median / p90 ms | latency old: median / p90 ms | latency new/old | latency from |")
    print("|---|---|---|---|---|---|---|---|")
    for name, side, r in rows:
        n, o = r.get("new"), r.get("old")
        note = "; ".join(f"{t}: {r[t]['error']}" for t in ("new", "old") if r.get(t) and "error" in r[t])
        lat = lambda x: f"{_fmt(x, 'latency_ms', 0)} / {_fmt(x, 'latency_p90_ms', 0)}"  # noqa: E731
        pair = lambda key: (f"{_fmt(n, key)} / {_fmt(o, key)} "  # noqa: E731
                            f"({_ratio(_val(n, key), _val(o, key))})")
        src = n.get("latency_from", "") if n and "error" not in n else ""
        print(f"| {name} | {side} | {pair('fps')} | {pair('answer_fps')} | {lat(n)} | {lat(o)} | "
              f"{_ratio(_val(n, 'latency_ms'), _val(o, 'latency_ms'))} | {src}{' — ' + note if note else ''} |")
    print("\nshown fps: new pictures displayed in the output per second; answers/s: streamed answers per second "
          "(higher when a picture is replaced before it has loaded, or repeats: Gradio serves identical outputs "
          "from one cached URL, so a constant output (random-weight AdaIN) shows once).")


def stream_every_sweep(args, data: Path, camera: Path, chromium: str, sticker: str) -> None:
    values = [float(v) for v in args.stream_every.split(",")]
    picks = [c for c in CONFIGS if (c[2], c[3]) in (("classic", 384), ("Magenta", 384))]
    rows = []
    with BW.camera_browser(camera, chromium) as browser:
        for v in values:
            with BW.serve_app(REPO, _env({"STREAM_EVERY": str(v)}), ("--data-dir", str(data))) as app:
                for name, kind, model, side in picks:
                    res = run_config(browser, app.url, kind, model, side, data, args.seconds, args.warm, sticker)
                    print(f"# stream_every {v}: {name} {side}: {res}", flush=True)
                    rows.append((v, name, side, res))
    print("\n| stream_every (s) | configuration | px | shown fps (answers/s) | latency median / p90 (ms) | "
          "captures / s |")
    print("|---|---|---|---|---|---|")
    for v, name, side, res in rows:
        caps = res.get("captures", 0) / args.seconds if "error" not in res else float("nan")
        print(f"| {v:g} | {name} | {side} | {_fmt(res, 'fps')} ({_fmt(res, 'answer_fps')}) | "
              f"{_fmt(res, 'latency_ms', 0)} / "
              f"{_fmt(res, 'latency_p90_ms', 0)} | {caps:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--base", default="/tmp/base21", help="checkout of the baseline commit (git worktree)")
    p.add_argument("--seconds", type=float, default=8.0, help="measured streaming window per configuration")
    p.add_argument("--warm", type=float, default=2.0, help="seconds after the first answer before measuring")
    p.add_argument("--stream-every", help="comma-separated stream_every values: measure those instead")
    p.add_argument("--only", help="only the configurations whose 'name px' contains this text (e.g. 'Magenta')")
    args = p.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("Chromium is not installed")
    data = Path(os.environ.get("DATA_DIR") or REPO.parent / "shared" / "data")
    if not data.joinpath(*CLIP).exists():
        sys.exit(f"the face clip {'/'.join(CLIP)} is not in {data} (set DATA_DIR)")
    tmp = Path(tempfile.mkdtemp(prefix="bench-webcam-"))
    camera, _ = BW.make_camera(data.joinpath(*CLIP), tmp / "camera.y4m", side=400, frames=75)
    from demos.propagation import demo_sticker

    sticker = demo_sticker()
    t0 = time.monotonic()
    if args.stream_every:
        stream_every_sweep(args, data, camera, chromium, sticker)
    else:
        compare(args, data, camera, chromium, sticker)
    print(f"\n(total {time.monotonic() - t0:.0f} s; load average at the end {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
