"""U-GAT-IT generator speed next to CycleGAN's ResNet-9, in the same run (random weights; speed does not depend on
the values).

    flock /tmp/bench.lock python benchmarks/bench_ugatit.py [--sizes 256 512] [--reps 3] [--threads N] [--full]

Models: U-GAT-IT light (Kim et al., ICLR 2020; ngf 64, 4 + 4 residual blocks, the official configuration), optionally
U-GAT-IT full at 256² (--full: its first FC layer is 268 M weights, 1 GiB), and the baseline CycleGAN ResNet-9
(ngf 64, 9 blocks). Each is run through engine.pipelines.translate.run_generator at precision "fp32" (what the app
runs by default: pad to 4, [0, 1] <-> [-1, 1], crop back), on one 3×S×S image, reps interleaved model by model so
load drift hits all alike. Reported: median seconds per image and the ratio to CycleGAN at the same size
(> 1 = U-GAT-IT is slower), plus parameter counts.

Measured once on this project's 2-core CPU while other jobs loaded it heavily (load average about 20; 2 torch
threads, 3 reps, fp32): at 256² CycleGAN 2.19 s/image, U-GAT-IT light 2.77 s (1.27x), full 2.60 s (1.19x); at 512²
CycleGAN 4.59 s, light 5.29 s (1.15x). Parameters: CycleGAN 11.38 M, light 10.59 M, full 278.96 M (268 M of them in
the first FC layer, which costs little time but 1 GiB). Under that load the figures are rough; the ratios are the
point: U-GAT-IT light costs roughly 1.15-1.3x CycleGAN per image.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.device import describe, select_device  # noqa: E402
from engine.models.resnet_generator import CycleGANGenerator  # noqa: E402
from engine.models.ugatit import UGATITGenerator  # noqa: E402
from engine.pipelines import translate as T  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--device", default=None)
    p.add_argument("--full", action="store_true", help="also U-GAT-IT full mode (256² only)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    torch.manual_seed(0)
    models = {"cyclegan_resnet9": CycleGANGenerator(), "ugatit_light": UGATITGenerator(light=True)}
    if args.full:
        models["ugatit_full"] = UGATITGenerator(light=False, img_size=256)
    for m in models.values():
        m.to(device).eval().requires_grad_(False)
    print(f"device: {describe(device)}; torch threads {torch.get_num_threads()}; precision fp32; "
          f"{args.reps} reps (median)")
    for name, m in models.items():
        print(f"  {name}: {sum(q.numel() for q in m.parameters()) / 1e6:.2f} M parameters")
    print(f"{'size':>6} {'model':>18} {'s/image':>9} {'vs CycleGAN':>12}")
    for size in args.sizes:
        x = torch.rand(1, 3, size, size)
        runnable = {n: m for n, m in models.items() if getattr(m, "fixed_size", None) in (None, (size, size))}
        for m in runnable.values():            # warm-up
            T.run_generator(m, x, device=device, precision="fp32")
        times: dict[str, list[float]] = {n: [] for n in runnable}
        for _ in range(args.reps):
            for n, m in runnable.items():
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                T.run_generator(m, x, device=device, precision="fp32")
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                times[n].append(time.perf_counter() - t0)
        base = statistics.median(times["cyclegan_resnet9"])
        for n, ts in times.items():
            med = statistics.median(ts)
            print(f"{size:>6} {n:>18} {med:>9.3f} {med / base:>11.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
