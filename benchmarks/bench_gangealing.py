"""GANgealing edit propagation: frames per second and per-stage time at 256 and 512 px, as ratios to the first
working version measured in the same run.

    python benchmarks/bench_gangealing.py [--frames 3] [--sizes 256 512] [--device cpu|cuda] [--quick]

Network: the official layout and widths (flow_size 128, channel multiplier 0.5, ~43 M parameters) with random
weights and an analytic similarity head (rotation 0.1, scale 0.8; the real checkpoints are not on this machine);
flip inference on (the official default: image and mirror both congealed), 3 similarity iterations (cat settings).
Edit: the cat model's official dense-label mask (about 30 % of the canvas) when DATA_DIR has gangealing-assets,
else a disc of the same coverage. Frame: 640 x 480 (an AFHQ cat when available), so framing, resizing and blending
at the original size are included.

Variants: ``baseline`` = the first working version; ``current`` = what the engine runs for images;
``stream`` = what it runs for video / webcam frames (mirror decision reused between re-checks, fast splat).
  stn       baseline: image and mirror congealed one after the other; current: one batch of two;
            stream: one pass with the stream's recent mirror decision (re-checked every 10 frames)
  upsample  baseline: grid_sample of the 128 px grid at every painted point (the release's way);
            current / stream: bilinear resize of the grid to the label resolution, then one gather
  splat     baseline: engine.splat.splat_reference (one scatter per footprint offset and channel);
            current: engine.splat.splat (exact, one flat index_add per channel); stream: splat_fast
  blend     same code in all (premultiplied layer resized to the frame, alpha composite)
Timings interleave the variants frame by frame and report medians, so machine load affects all alike.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import config  # noqa: E402
from engine.device import describe, select_device  # noqa: E402
from engine.models.gangealing import Congealed, build_gangealing, total_variation  # noqa: E402
from engine.pipelines import gangealing as pipe  # noqa: E402
from engine.splat import normalize, splat_reference  # noqa: E402


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def timed(dev, fn, *a, **kw):
    sync(dev)
    t = time.perf_counter()
    out = fn(*a, **kw)
    sync(dev)
    return out, time.perf_counter() - t


def make_model(dev):
    torch.manual_seed(0)
    m = build_gangealing(None, name="cat")
    with torch.no_grad():
        m.t_ema.stns[0].warp_head.linear.bias.copy_(torch.tensor([0.1, math.log(0.8), 0.05, -0.03]))
    return m.to(dev).eval()


def make_frame() -> np.ndarray:
    data = config.data_dir()
    files = sorted((data / "faces/assets/representative/afhq/src/cat").glob("*.jpg")) if data else []
    if files:
        from PIL import Image
        img = Image.open(files[0]).convert("RGB").resize((480, 480))
        canvas = Image.new("RGB", (640, 480))
        canvas.paste(img, (80, 0))
        return np.asarray(canvas).copy()
    rng = np.random.default_rng(0)
    return (rng.random((480, 640, 3)) * 255).astype(np.uint8)


def make_edit() -> np.ndarray:
    label = pipe.dense_label("cat")
    if label is not None:
        return label
    yy, xx = np.mgrid[0:512, 0:512]
    edit = np.zeros((512, 512, 4), np.uint8)
    edit[..., 0] = 255
    edit[..., 3] = (np.hypot(xx - 256, yy - 256) < 158) * 255
    return edit


# --- baseline stages (first working versions) ----------------------------------------------------------------

def stn_baseline(model, x):
    kw = dict(iters=model.settings.iters, padding_mode=model.settings.padding_mode, return_image=False)
    plain = model.t_ema(x, **kw)
    mirror = model.t_ema(x.flip(3), **kw)
    use = bool(total_variation(mirror.delta_flow)[0] < total_variation(plain.delta_flow)[0])
    res = mirror if use else plain
    grid = res.grid.clone()
    if use:
        grid[..., 0] = -grid[..., 0]
    return Congealed(image=None, grid=grid, delta_flow=res.delta_flow, matrix=res.matrix)


def upsample_baseline(grid, edit, size, sigma):
    idx, _ = edit.to(grid.device)
    L = edit.label_res
    u = (2 * (idx % L).float() + 1) / L - 1
    v = (2 * (idx // L).float() + 1) / L - 1
    where = torch.stack([u, v], -1).view(1, -1, 1, 2)
    pts = F.grid_sample(grid.permute(0, 3, 1, 2), where, mode="bilinear", padding_mode="border",
                        align_corners=False)[..., 0].permute(0, 2, 1)
    grid_l = pipe.resize_grid(grid, L)  # for the footprint sigma (same as current)
    return pipe.grid_to_pixels(pts, size), pipe.footprint_sigma(grid_l, size, sigma * max(1.0, size / L))


def splat_baseline(points, edit, size, sigma):
    _, values = edit.to(points.device)
    acc, weight = splat_reference(points, values.unsqueeze(0), size, size, sigma)
    return normalize(acc[:, :3], weight), normalize(acc[:, 3:], weight, soft=True)


# ---------------------------------------------------------------------------------------------------------------

STAGES = ("stn", "upsample", "splat", "blend")


VARIANTS = ("baseline", "current", "stream")


@torch.inference_mode()
def run_size(model, frame_np, edit_np, size, frames, dev, deadline, sigma=pipe.DEFAULT_SIGMA):
    edit = pipe.prepare_edit(edit_np, size)
    times = {v: {s: [] for s in ("frame",) + STAGES} for v in VARIANTS}
    totals = {v: [] for v in VARIANTS}
    outputs = {}
    # warm-up (one-off allocations, oneDNN primitive creation): one current frame, not counted
    fr = pipe.frame(frame_np, size, dev)
    res = pipe.stage_stn(model, fr.x)
    pts, sig = pipe.stage_points(res.grid, edit, size, sigma)
    pipe.stage_splat(pts, edit, size, sig)
    mirror = bool(res.flipped[0])
    for i in range(frames):
        if i > 0 and time.perf_counter() > deadline:
            break
        for variant in VARIANTS:
            t = {}
            fr, t["frame"] = timed(dev, pipe.frame, frame_np, size, dev)
            if variant == "baseline":
                res, t["stn"] = timed(dev, stn_baseline, model, fr.x)
                (pts, sig), t["upsample"] = timed(dev, upsample_baseline, res.grid, edit, size, sigma)
                (col, alp), t["splat"] = timed(dev, splat_baseline, pts, edit, size, sig)
            else:
                reuse = mirror if variant == "stream" else None  # a stream reuses its recent mirror decision
                res, t["stn"] = timed(dev, pipe.stage_stn, model, fr.x, mirror=reuse)
                (pts, sig), t["upsample"] = timed(dev, pipe.stage_points, res.grid, edit, size, sigma)
                (col, alp), t["splat"] = timed(dev, pipe.stage_splat, pts, edit, size, sig,
                                               "exact" if variant == "current" else "fast")
            out, t["blend"] = timed(dev, pipe.stage_blend, fr, col, alp, 1.0)
            outputs[variant] = out
            for k, v in t.items():
                times[variant][k].append(v)
            totals[variant].append(sum(t.values()))
    diff = float((outputs["baseline"] - outputs["current"]).abs().max()) * 255
    diff_stream = float((outputs["stream"] - outputs["current"]).abs().mean()) * 255
    return times, totals, edit.count, diff, diff_stream


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=2, help="timed frames per size and variant (after 1 warm-up)")
    ap.add_argument("--budget", type=float, default=150.0,
                    help="seconds after which no further frames are started (at least one per size is timed)")
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512], choices=pipe.RESOLUTIONS)
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="1 frame, 256 only (a smoke run)")
    args = ap.parse_args(argv)
    if args.quick:
        args.frames, args.sizes = 1, [256]
    dev = select_device(args.device)
    t0 = time.perf_counter()
    model = make_model(dev)
    frame_np, edit_np = make_frame(), make_edit()
    print(f"GANgealing propagation benchmark on {describe(dev)}, {torch.get_num_threads()} threads; "
          f"frame {frame_np.shape[1]}x{frame_np.shape[0]}, {args.frames} timed frames per variant (medians)")
    deadline = t0 + args.budget
    for size in args.sizes:
        times, totals, count, diff, diff_stream = run_size(model, frame_np, edit_np, size, args.frames, dev, deadline)
        med = {v: {k: statistics.median(x) * 1000 for k, x in times[v].items()} for v in times}
        fps = {v: 1.0 / statistics.median(totals[v]) for v in totals}
        n = len(totals["current"])
        print(f"\n== {size}x{size} working resolution, {count} painted points, {n} timed frame(s) ==")
        print(f"{'stage':10s} {'baseline ms':>12s} {'current ms':>11s} {'ratio':>7s} {'stream ms':>10s} {'ratio':>7s}")
        for k in ("frame",) + STAGES:
            b, c, f = med["baseline"][k], med["current"][k], med["stream"][k]
            print(f"{k:10s} {b:12.1f} {c:11.1f} {b / max(c, 1e-9):6.2f}x {f:10.1f} {b / max(f, 1e-9):6.2f}x")
        b, c, f = (1000 / fps[v] for v in VARIANTS)
        print(f"{'total':10s} {b:12.1f} {c:11.1f} {b / c:6.2f}x {f:10.1f} {b / f:6.2f}x")
        print(f"frames/s: baseline {fps['baseline']:.3f}, current {fps['current']:.3f} "
              f"({fps['current'] / fps['baseline']:.2f}x), stream {fps['stream']:.3f} "
              f"({fps['stream'] / fps['baseline']:.2f}x)")
        print(f"outputs: baseline vs current max |diff| {diff:.2f}/255 (same maths); stream (fast splat) vs current "
              f"mean |diff| {diff_stream:.2f}/255")
    print(f"\n(total benchmark time {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
