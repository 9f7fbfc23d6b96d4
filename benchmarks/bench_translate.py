"""Translation generators: images per second, eager fp32 against the candidate optimisations, in the same run.

    python benchmarks/bench_translate.py [--device cpu|cuda] [--sizes 256 512] [--families mobile cyclegan cut]
                                         [--reps N] [--threads N] [--compile]

Families (random weights; speed does not depend on the values): GAN Compression's mobile generator (0.36 M
params), CycleGAN's ResNet-9 (11.4 M) and CUT/FastCUT's antialiased ResNet-9 (same weights, more work per pixel).
Variants, each timed on the same input, interleaved rep by rep so that load drift hits all of them alike:

    eager            fp32, torch.no_grad()                      (the baseline: ratio 1.00)
    inference_mode   fp32, torch.inference_mode()
    channels_last    inference_mode + NHWC memory format
    half             inference_mode + autocast (bf16 on CPU, fp16/bf16 on CUDA)
    compile          inference_mode + torch.compile             (only with --compile: compile time is minutes)
    engine           engine.pipelines.translate.run_generator (pad to 4, [0,1]<->[-1,1], crop, the device's
                     fast path: FAST_PATH / inference_plan(precision="fast")) - the app's "fast" choice

Reported: median ms per image, images/s, ratio to eager (>1 = faster) and the max abs output difference to eager
(in [-1, 1] units) so a fast-but-wrong variant shows. Default run: about 2-4 minutes on a 2-core CPU (fewer reps
for the big generators).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch  # noqa: E402

from engine.device import autocast_dtype, describe, select_device  # noqa: E402
from engine.models.mobile_resnet import MobileResnetGenerator  # noqa: E402
from engine.models.resnet_generator import CUTGenerator, CycleGANGenerator  # noqa: E402
from engine.pipelines import translate as T  # noqa: E402
from timing import sync as _sync  # noqa: E402

FAMILIES = {"mobile": MobileResnetGenerator, "cyclegan": CycleGANGenerator, "cut": CUTGenerator}
# reps per (family, size) on CPU: the big generators take seconds per 512² image on two cores
CPU_REPS = {("mobile", 256): 8, ("mobile", 512): 3, ("cyclegan", 256): 2, ("cyclegan", 512): 1,
            ("cut", 256): 2, ("cut", 512): 1}


def _half_dtype(device):
    return autocast_dtype(device) or torch.bfloat16   # CPU: bf16 autocast is the only half CPU path


def make_variants(model, model_cl, device, use_compile):
    half = _half_dtype(device)

    def eager(x):
        with torch.no_grad():
            return model(x * 2 - 1)

    def inference(x):
        with torch.inference_mode():
            return model(x * 2 - 1)

    def channels_last(x):
        with torch.inference_mode():
            return model_cl((x * 2 - 1).contiguous(memory_format=torch.channels_last))

    def half_precision(x):
        with torch.inference_mode(), torch.autocast(device.type, dtype=half):
            return model(x * 2 - 1).float()

    def engine(x):
        return T.run_generator(model_engine, x, device=device, precision="fast") * 2 - 1

    model_engine = type(model)().to(device).eval()
    model_engine.load_state_dict(model.state_dict())
    variants = {"eager": eager, "inference_mode": inference, "channels_last": channels_last,
                f"half ({str(half).replace('torch.', '')})": half_precision}
    if use_compile:
        compiled = torch.compile(model)

        def compiled_fn(x):
            with torch.inference_mode():
                return compiled(x * 2 - 1)

        variants["compile"] = compiled_fn
    variants["engine"] = engine
    return variants


def bench_one(family, size, device, reps, use_compile):
    torch.manual_seed(0)
    model = FAMILIES[family]().to(device).eval()
    model_cl = FAMILIES[family]().to(device).eval()
    model_cl.load_state_dict(model.state_dict())
    model_cl.to(memory_format=torch.channels_last)
    x = torch.rand(1, 3, size, size, device=device)
    variants = make_variants(model, model_cl, device, use_compile)
    outputs, times = {}, {name: [] for name in variants}
    for name, fn in variants.items():     # warm-up (and compile) once, keep the output for the accuracy column
        start = time.perf_counter()
        outputs[name] = fn(x).float().to("cpu")
        _sync(device)
        if name == "compile":
            print(f"    ({family} {size}²: torch.compile warm-up {time.perf_counter() - start:.1f}s)", flush=True)
    for _ in range(reps):
        for name, fn in variants.items():
            _sync(device)
            start = time.perf_counter()
            fn(x)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    base = statistics.median(times["eager"])
    rows = []
    for name in variants:
        med = statistics.median(times[name])
        err = float((outputs[name] - outputs["eager"]).abs().max())
        rows.append((family, size, name, med * 1000, 1 / med, base / med, err))
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", help="cpu, cuda, ... (default: best available)")
    p.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    p.add_argument("--reps", type=int, help="timed reps per variant (default: per family/size, fewer for big ones)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile (slow to compile on CPU)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    print(f"device: {describe(device)}; torch {torch.__version__}; CPU threads {torch.get_num_threads()}; "
          f"engine fast path (channels_last, autocast dtype) = {T.inference_plan(device, 'fast')}")
    print(f"{'family':<9} {'size':>5} {'variant':<16} {'ms/img':>9} {'img/s':>8} {'vs eager':>9} {'max|Δ|':>8}")
    all_rows = []
    for family in args.families:
        for size in args.sizes:
            reps = args.reps or (CPU_REPS.get((family, size), 3) if device.type == "cpu" else 20)
            rows = bench_one(family, size, device, reps, args.compile)
            for fam, sz, name, ms, ips, ratio, err in rows:
                print(f"{fam:<9} {sz:>5} {name:<16} {ms:9.1f} {ips:8.2f} {ratio:8.2f}x {err:8.1e}", flush=True)
            all_rows += rows
    print("\nratio = eager median time / variant median time, same process, interleaved reps.")
    best = {}
    for fam, sz, name, ms, ips, ratio, err in all_rows:
        if name not in ("eager", "engine") and err < 0.05:
            best.setdefault(name, []).append(ratio)
    for name, ratios in best.items():
        print(f"{name:<16} geometric-mean speed-up over all families/sizes: "
              f"{statistics.geometric_mean(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
