"""Peak memory of requests that used to allocate before any size check (tests/memory_cases.py), each in a fresh
subprocess: peak RSS growth over a warm-up that built the same model on a small input.

    python benchmarks/bench_memory.py [--root DIR]     # DIR: another checkout (e.g. main) to compare against;
                                                       # copy tests/memory_cases.py into it first

Cases: congeal a 20000x8 PNG; a 4000x8 style image (style size 512); the webcam capture slot given a 144 MP PNG
(Gradio's own decoding + the handler); a video whose frames are over the pixel limit (limit lowered to 0.1 MP).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from memory_cases import CASES, run_case  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--root", type=Path, default=ROOT, help="checkout whose code runs the cases")
    args = p.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    for case in CASES:
        r = run_case(case, tmp, timeout=600, root=args.root.resolve())
        print(f"{case:26s} peak RSS +{r['peak_mb']:7.1f} MB  {r['outcome'][:110]}")


if __name__ == "__main__":
    main()
