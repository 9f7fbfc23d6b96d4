"""fp32 against the bf16 fast path of the translation pipeline, speed and output difference, in one run.

    python benchmarks/bench_translate_precision.py [--weights-dir DIR] [--images N] [--sizes 256 512]
                                                   [--families cyclegan cut] [--family-sizes 256]

- GAN Compression with its real checkpoint (``gancompression-horse2zebra`` from --weights-dir / WEIGHTS_DIR) on
  the first N horse2zebra test images (DATA_DIR/horse2zebra/testA, 256², enlarged for larger sizes): ms per image
  for both precisions, and the uint8 output difference of bf16 to fp32 (max, mean, share of pixels with any
  channel different), per image size;
- CycleGAN and CUT with random weights (speed only: the difference of random weights says nothing about the
  released models). Both precisions go through ``engine.pipelines.translate.run_generator``, reps interleaved.
Ratio = fp32 median time / bf16 median time (> 1: bf16 is faster). On a CPU without native bf16 the fast path
is plain fp32 and the ratio is ~1.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import imageio, registry  # noqa: E402
from engine.models.resnet_generator import CUTGenerator, CycleGANGenerator  # noqa: E402
from engine.pipelines import translate as T  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def _time(fn, reps):
    out = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def _at_size(img, size):
    """The test images are 256²: to time larger sizes they are enlarged (bicubic) to a long side of ``size``."""
    if max(img.size) >= size:
        return img
    scale = size / max(img.size)
    return img.resize((round(img.width * scale), round(img.height * scale)), 3)


def real_model(images, sizes, reps):
    net = registry.load_model("gancompression-horse2zebra", "cpu")
    print(f"\nGAN Compression (real checkpoint), {len(images)} images, reps {reps}")
    print(f"{'size':>5} {'fp32 ms':>8} {'bf16 ms':>8} {'ratio':>6}  {'max|Δ|':>7} {'mean|Δ|':>8} {'px≠':>6}  (uint8 levels)")
    for size in sizes:
        prepared = [_at_size(T.prepare_image(p, size), size) for p in images]
        times = {"fp32": [], "fast": []}
        max_d, mean_d, share = 0, [], []
        for img in prepared:
            x = imageio.pil_to_tensor(img)
            outs = {p: imageio.tensor_to_numpy(T.run_generator(net, x, "cpu", precision=p)) for p in times}
            d = np.abs(outs["fp32"].astype(int) - outs["fast"].astype(int))
            max_d, mean_d, share = max(max_d, int(d.max())), mean_d + [d.mean()], share + [(d > 0).any(-1).mean()]
            for _ in range(reps):
                for p in times:
                    times[p] += _time(lambda: T.run_generator(net, x, "cpu", precision=p), 1)
        f, b = statistics.median(times["fp32"]) * 1e3, statistics.median(times["fast"]) * 1e3
        print(f"{size:>5} {f:8.1f} {b:8.1f} {f / b:5.2f}x  {max_d:7d} {np.mean(mean_d):8.3f} "
              f"{np.mean(share) * 100:5.1f}%", flush=True)


def random_models(families, sizes, reps):
    print(f"\nrandom-weight generators (speed only), reps {reps}")
    print(f"{'family':<9} {'size':>5} {'fp32 ms':>8} {'bf16 ms':>8} {'ratio':>6}")
    for name in families:
        torch.manual_seed(0)
        net = {"cyclegan": CycleGANGenerator, "cut": CUTGenerator}[name]().eval()
        for size in sizes:
            x = torch.rand(1, 3, size, size)
            times = {"fp32": [], "fast": []}
            for p in times:
                T.run_generator(net, x, "cpu", precision=p)   # warm-up
            for _ in range(reps):
                for p in times:
                    times[p] += _time(lambda: T.run_generator(net, x, "cpu", precision=p), 1)
            f, b = statistics.median(times["fp32"]) * 1e3, statistics.median(times["fast"]) * 1e3
            print(f"{name:<9} {size:>5} {f:8.1f} {b:8.1f} {f / b:5.2f}x", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights-dir", default=os.environ.get("WEIGHTS_DIR") or str(REPO.parent / "shared" / "weights"))
    p.add_argument("--data-dir", default=os.environ.get("DATA_DIR") or str(REPO.parent / "shared" / "data"))
    p.add_argument("--images", type=int, default=8)
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--families", nargs="*", default=["cyclegan", "cut"])
    p.add_argument("--family-sizes", type=int, nargs="+", default=[256], help="image sizes for the big generators")
    args = p.parse_args(argv)
    os.environ["WEIGHTS_DIR"] = args.weights_dir
    print(f"torch {torch.__version__}; CPU threads {torch.get_num_threads()}; native bf16: {T.cpu_has_native_bf16()}; "
          f"fast-path plan on cpu: {T.inference_plan(torch.device('cpu'), 'fast')}")
    images = sorted((Path(args.data_dir) / "horse2zebra" / "testA").glob("*.jpg"))[: args.images]
    if images:
        real_model(images, args.sizes, args.reps)
    else:
        print("no horse2zebra test images: skipping the real-checkpoint part")
    if args.families:
        random_models(args.families, args.family_sizes, max(1, args.reps // 2 + 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
