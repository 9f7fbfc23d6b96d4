"""Batch translation from the command line: a folder of images in, a folder of translations out.

    python -m engine.translate_cli --model gancompression-horse2zebra --input DIR --output DIR
                                   [--max-side N] [--device cpu|cuda|...] [--weights-dir DIR] [--format png|jpg]
                                   [--precision fp32|fast] [--uint8 round|truncate]
    python -m engine.translate_cli --ray [ADDRESS] [--ray-actors N] ...   (the same job on Ray Data)
    python -m engine.translate_cli --list

Every image file in --input (by suffix) is translated to --output/<stem>.<format>. Unreadable or too-small files
are skipped with a message; the exit code is 0 when everything was translated, 1 when some files were skipped,
2 when nothing could run (unknown model, missing weights, bad folder).

``--ray`` runs the folder as a Ray Data ``map_batches`` job over a pool of actors (engine.ray_batch): same output
names, same report, same exit codes. Without an address it starts a local Ray instance; ``--ray auto`` or
``--ray HOST:6379`` joins a cluster (see docs/SCALE_OUT.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time


def _progress_printer(stream=sys.stderr):
    start = time.perf_counter()
    interactive = stream.isatty()

    def report(fraction: float, desc: str) -> None:
        elapsed = time.perf_counter() - start
        line = f"[{fraction * 100:5.1f}%] {elapsed:6.1f}s  {desc}"
        if interactive:
            print(f"\r{line:<80}", end="", file=stream, flush=True)
        else:
            print(line, file=stream, flush=True)

    return report


def _run_on_ray(args, model: str, on_skip):
    import ray

    from .ray_batch import translate_folder_ray

    if args.device:   # forwarded to the actors with the other engine settings
        os.environ["ENGINE_DEVICE"] = args.device
    started = False
    if not ray.is_initialized():
        if args.ray == "local":
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=args.ray, log_to_driver=False)
        started = True
    try:
        return translate_folder_ray(args.input, args.output, model, max_side=args.max_side or None,
                                    suffix="." + args.format, overwrite=not args.no_overwrite,
                                    precision="fp32" if args.fp32 else args.precision, uint8=args.uint8,
                                    progress=_progress_printer(), on_skip=on_skip, actors=args.ray_actors,
                                    batch_size=args.ray_batch_size, num_cpus=args.ray_cpus, num_gpus=args.ray_gpus)
    finally:
        if started:
            ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.translate_cli",
                                     description="Translate a folder of images (horse <-> zebra).")
    parser.add_argument("--model", default=None, help="registry name (see --list); default gancompression-horse2zebra")
    parser.add_argument("--input", "-i", help="folder of input images")
    parser.add_argument("--output", "-o", help="folder for the translations (created)")
    parser.add_argument("--max-side", type=int, default=1024, help="shrink so the longer side is at most N (0 = keep)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1, mps (default: best available / ENGINE_DEVICE)")
    parser.add_argument("--weights-dir", action="append", default=[], help="folder with checkpoints (repeatable)")
    parser.add_argument("--format", default="png", choices=["png", "jpg", "webp"], help="output image format")
    parser.add_argument("--no-overwrite", action="store_true", help="skip outputs that already exist")
    parser.add_argument("--precision", choices=["fp32", "fast"], default="fp32",
                        help="fp32 (default): plain float32, the official computation; fast: bf16 autocast on CPUs "
                             "with native bf16 / the autocast dtype on CUDA (faster, outputs differ slightly)")
    parser.add_argument("--fp32", action="store_true", help="same as --precision fp32 (kept for old scripts)")
    parser.add_argument("--uint8", choices=["round", "truncate"], default="round",
                        help="round (default): nearest level; truncate: the official tensor2im rule (floor), to "
                             "reproduce the authors' saved images exactly (half a level darker on average)")
    parser.add_argument("--list", action="store_true", help="list the translation models and their weights")
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="run on Ray Data (no ADDRESS: a local Ray instance; auto / HOST:6379: a cluster)")
    parser.add_argument("--ray-actors", type=int, default=2, help="with --ray: actors (one model each), default 2")
    parser.add_argument("--ray-cpus", type=float, default=1.0, help="with --ray: CPUs per actor (default 1)")
    parser.add_argument("--ray-gpus", type=float, help="with --ray: GPUs per actor (default 1 if the cluster has GPUs)")
    parser.add_argument("--ray-batch-size", type=int, default=4, help="with --ray: images per actor call")
    args = parser.parse_args(argv)
    if args.weights_dir:
        os.environ["WEIGHTS_DIR"] = os.pathsep.join(args.weights_dir)

    from .errors import EngineError
    from .pipelines import translate as T

    if args.list:
        for m in T.translation_models():
            print(f"{m.name:<28} {m.state:<12} {m.message}")
        return 0
    if not args.input or not args.output:
        parser.error("--input and --output are required (or use --list)")
    model = args.model or T.DEFAULT_MODEL
    if args.max_side < 0:
        parser.error("--max-side must be >= 0")

    def on_skip(msg: str) -> None:
        print(f"\nskipped {msg}", file=sys.stderr, flush=True)

    start = time.perf_counter()
    try:
        if args.ray:
            report = _run_on_ray(args, model, on_skip)
        else:
            report = T.translate_folder(args.input, args.output, model, max_side=args.max_side or None,
                                        device=args.device, progress=_progress_printer(), suffix="." + args.format,
                                        overwrite=not args.no_overwrite,
                                        precision="fp32" if args.fp32 else args.precision, uint8=args.uint8,
                                        on_skip=on_skip)
    except EngineError as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    elapsed = time.perf_counter() - start
    print(file=sys.stderr)
    print(f"{len(report.written)} translated, {len(report.skipped)} skipped -> {args.output} ({elapsed:.1f}s)")
    for msg in report.skipped:
        print(f"  skipped {msg}")
    return 1 if report.skipped else 0


if __name__ == "__main__":
    sys.exit(main())
