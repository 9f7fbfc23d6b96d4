"""Timing helpers shared by the benchmarks: device sync, a reproducible test image, interleaved timing.

Interleaving (every variant once per rep, in turn) makes load drift on a noisy machine hit all variants alike, so
the ratios to a baseline measured in the same run stay meaningful.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image


def sync(device: torch.device) -> None:
    """Wait for queued GPU work (a no-op off CUDA), so a timer measures the work, not its launch."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def noise_image(seed: int, size: int) -> Image.Image:
    """A smooth random ``size`` x ``size`` RGB image (bicubic upscale of 1/8-size noise), the same for a seed."""
    rng = np.random.default_rng(seed)
    small = (rng.random((max(1, size // 8), max(1, size // 8), 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def time_interleaved(variants: dict[str, Callable[..., Any]], inputs: tuple, reps: int,
                     device: torch.device) -> tuple[dict[str, float], dict[str, Any]]:
    """Median seconds per call of each variant on ``inputs`` over ``reps`` interleaved reps, and its last output."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    outputs: dict[str, Any] = {}
    for _ in range(max(1, reps)):
        for name, fn in variants.items():
            sync(device)
            t0 = time.perf_counter()
            outputs[name] = fn(*inputs)
            sync(device)
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}, outputs
