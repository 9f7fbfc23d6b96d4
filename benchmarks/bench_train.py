"""Training speed of CUT vs FastCUT (Park et al., ECCV 2020): seconds per iteration and peak GPU memory.

    python benchmarks/bench_train.py                       # 256², ngf 64 (the official setting), best device
    python benchmarks/bench_train.py --size 64 --ngf 16 --device cpu --threads 1   # the CPU figure

Each mode runs ``--warmup`` untimed steps, then ``--steps`` timed steps on fixed random batches (the data loader is
not timed; it runs in worker processes during training). CUT and FastCUT are timed in alternating blocks so that a
machine shared with other work slows both alike. Baseline measured in the same run: one generator forward pass
(inference, no grad) at the same size; every figure is also printed as a ratio to it and CUT/FastCUT to each other.
With ``--amp both`` on CUDA each mode is timed with mixed precision and in float32.
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
from engine.train.config import make_config  # noqa: E402
from engine.train.cut import CUTTrainer  # noqa: E402
from timing import sync as _sync  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--ngf", type=int, default=64)
    ap.add_argument("--ndf", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--steps", type=int, default=30, help="timed steps per mode")
    ap.add_argument("--blocks", type=int, default=3, help="alternating blocks the timed steps are split into")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--device", default=None)
    ap.add_argument("--amp", choices=["auto", "off", "both"], default="both",
                    help="CUDA precision: auto (bf16/fp16), off (float32) or both")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = leave as is)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    amps = ["auto", "off"] if (args.amp == "both" and device.type == "cuda") else [args.amp if args.amp != "both" else "off"]
    print(f"device {describe(device)}; {args.size}², ngf {args.ngf}, ndf {args.ndf}, batch {args.batch_size}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads")

    s, bs = args.size, args.batch_size
    gen = torch.Generator().manual_seed(0)
    A = torch.rand(bs, 3, s, s, generator=gen) * 2 - 1
    B = torch.rand(bs, 3, s, s, generator=gen) * 2 - 1

    results = {}
    for amp in amps:
        trainers = {}
        for mode in ("cut", "fastcut"):
            cfg = make_config(mode, ngf=args.ngf, ndf=args.ndf, crop_size=s, load_size=s, batch_size=bs,
                              device=str(device), amp=amp)
            trainers[mode] = CUTTrainer(cfg, epoch_size=10 ** 9)
        # baseline: generator inference
        G = trainers["cut"].G
        x = A.to(device)
        with torch.no_grad(), trainers["cut"]._autocast():
            for _ in range(args.warmup):
                G(x)
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                G(x)
            _sync(device)
        base = (time.perf_counter() - t0) / args.steps
        for t in trainers.values():
            for _ in range(args.warmup):
                t.train_step(A, B)
        _sync(device)
        times = {m: [] for m in trainers}
        peak = {}
        per_block = max(1, args.steps // args.blocks)
        for _ in range(args.blocks):
            for mode, t in trainers.items():
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                _sync(device)
                t0 = time.perf_counter()
                for _ in range(per_block):
                    t.train_step(A, B)
                _sync(device)
                times[mode].append((time.perf_counter() - t0) / per_block)
                if device.type == "cuda":
                    peak[mode] = max(peak.get(mode, 0), torch.cuda.max_memory_allocated(device))
        label = f"amp {trainers['cut'].amp_dtype or 'off'}"
        print(f"\n[{label}] baseline: generator forward (no grad) {base * 1000:.1f} ms")
        for mode in trainers:
            med = statistics.median(times[mode])
            mem = f", peak GPU memory {peak[mode] / 2 ** 30:.2f} GiB" if mode in peak else ""
            print(f"  {mode:8s} {med:.4f} s/it  ({med / base:.1f}x the generator forward){mem}  "
                  f"blocks: {', '.join(f'{v:.4f}' for v in times[mode])}")
            results[(amp, mode)] = med
        ratio = statistics.median(c / f for c, f in zip(times["cut"], times["fastcut"]))
        print(f"  CUT / FastCUT time per iteration: {ratio:.2f}x (median of per-block ratios)")
        if peak:
            print(f"  CUT / FastCUT peak memory: {peak['cut'] / peak['fastcut']:.2f}x")
    if len(amps) == 2:
        for mode in ("cut", "fastcut"):
            print(f"mixed precision speed-up, {mode}: {results[('off', mode)] / results[('auto', mode)]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
