"""AdaIN style transfer: time per image at several sizes, with and without the style-statistics cache.

    python benchmarks/bench_adain.py [--device cpu|cuda] [--sizes 256 512 1024] [--style-size 512] [--reps N]
                                     [--tiled]

Random weights in the official layout (speed does not depend on the values). Every variant gets the same PIL
content (S x S) and style (style-size x style-size, the paper's default 512) and returns a uint8 image; variants are
interleaved rep by rep so load drift hits all of them alike:

    eager        the paper's test path in plain fp32: to tensor, encode content and style, AdaIN, decode
                 (torch.no_grad) -- the baseline, ratio 1.00
    engine       engine.pipelines.style.StyleTransfer.run with the cache off (fp32 on CPU; on CUDA also autocast)
    engine+cache the same with the style statistics already cached: the style is hashed, not encoded
    engine+tiles (--tiled) the cached path with 512-px tiles, to show what tiling costs

Reported: median seconds per image, images/s, ratio to eager (> 1 = faster), and the largest pixel difference
to eager's output (0-255) so a fast-but-wrong variant shows. Default run on a 2-core CPU: about 2-3 minutes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import imageio  # noqa: E402
from engine.device import autocast_dtype, describe, select_device  # noqa: E402
from engine.models import adain as A  # noqa: E402
from engine.pipelines import style as S  # noqa: E402

from timing import noise_image as _image, sync as _sync, time_interleaved  # noqa: E402

CPU_REPS = {256: 3, 512: 2, 1024: 1}
GPU_REPS = 10


def make_variants(model, device, tiled: bool):
    def eager(content, style):
        with torch.no_grad():
            c = imageio.pil_to_tensor(content).to(device)
            s = imageio.pil_to_tensor(style).to(device)
            t = A.adain(model.encoder(c), model.encoder(s))
            return imageio.tensor_to_numpy(model.decoder(t))

    variants = {"eager": eager}
    precisions = ["fp32"] + (["auto"] if autocast_dtype(device) is not None else [])
    for prec in precisions:
        tag = "" if prec == "fp32" else f" {autocast_dtype(device)}".replace("torch.", "")
        plain = S.StyleTransfer(model, device, precision=prec, cache_size=0)
        cached = S.StyleTransfer(model, device, precision=prec)
        variants[f"engine{tag}"] = lambda c, s, p=plain: np.asarray(p.run(c, [s], max_side=0, style_size=0).image)
        variants[f"engine+cache{tag}"] = lambda c, s, p=cached: np.asarray(p.run(c, [s], max_side=0, style_size=0).image)
        if tiled:
            tiles = S.StyleTransfer(model, device, precision=prec, tile_size=512)
            variants[f"engine+cache+tiles{tag}"] = \
                lambda c, s, p=tiles: np.asarray(p.run(c, [s], max_side=0, style_size=0).image)
    return variants


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--style-size", type=int, default=512)
    ap.add_argument("--reps", type=int, default=None, help="timed reps per size (default: 3/2/1 on CPU, 10 on GPU)")
    ap.add_argument("--tiled", action="store_true", help="also time 512-px tiles (the large-image path)")
    args = ap.parse_args(argv)

    device = select_device(args.device)
    torch.manual_seed(0)
    enc, dec = A.random_state_dicts(seed=0, full_encoder=False)
    model = A.AdaIN(A.encoder_from_state_dict(enc), A.decoder_from_state_dict(dec)).to(device)
    print(f"AdaIN benchmark on {describe(device)}, torch {torch.__version__}, {torch.get_num_threads()} CPU threads; "
          f"style {args.style_size}x{args.style_size}; random weights in the official layout")
    style = _image(1, args.style_size)
    variants = make_variants(model, device, args.tiled)

    # warm-up: first calls allocate, pick kernels and (for the cached variants) fill the cache
    warm = _image(2, min(args.sizes))
    for fn in variants.values():
        fn(warm, style)
    _sync(device)

    header = f"{'size':>6} {'variant':<24} {'s/image':>9} {'images/s':>9} {'vs eager':>9} {'max |diff|':>10}"
    print(header)
    print("-" * len(header))
    start_all = time.perf_counter()
    for size in args.sizes:
        content = _image(3 + size, size)
        reps = args.reps or (GPU_REPS if device.type == "cuda" else CPU_REPS.get(size, 1))
        med, outputs = time_interleaved(variants, (content, style), reps, device)
        base = med["eager"]
        for name in variants:
            diff = int(np.abs(outputs[name].astype(np.int16) - outputs["eager"].astype(np.int16)).max())
            print(f"{size:>6} {name:<24} {med[name]:>9.3f} {1 / med[name]:>9.2f} {base / med[name]:>9.2f} {diff:>10}")
    print(f"(timed part: {time.perf_counter() - start_all:.0f} s; ratios > 1 are faster than eager fp32. "
          "The cache saves the style's encoding, so its gain is largest for small contents.)")


if __name__ == "__main__":
    main()
