"""Device and precision choice, in one place.

Order: explicit argument > ``ENGINE_DEVICE`` > CUDA > MPS > CPU. Nothing here touches CUDA at import time.
Half precision is used only on accelerators (bf16 where supported, else fp16); CPU runs in float32.
"""
from __future__ import annotations

import contextlib
import functools
import os

import torch

from .errors import InputError


@functools.lru_cache(maxsize=None)
def _resolve(explicit: str | None, env: str | None) -> torch.device:
    choice = explicit or env
    if choice:
        try:
            device = torch.device(choice)
        except RuntimeError as exc:
            raise InputError(f"Unknown device {choice!r}: use cpu, cuda, cuda:N or mps.") from exc
        if device.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"Device {choice!r} was asked for but CUDA is not available on this machine.")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise InputError(f"Device {choice!r} was asked for but MPS is not available on this machine.")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def select_device(explicit: str | torch.device | None = None) -> torch.device:
    """The device the engine runs on."""
    if isinstance(explicit, torch.device):
        explicit = str(explicit)
    return _resolve(explicit, os.environ.get("ENGINE_DEVICE") or None)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Reduced precision for autocast on accelerators; None (float32) on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


def autocast(device: torch.device, enabled: bool = True):
    """Autocast context for inference on ``device`` (a no-op on CPU or when disabled)."""
    dtype = autocast_dtype(device)
    if not enabled or dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def describe(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    return str(device)


def is_oom(exc: BaseException) -> bool:
    """True for an accelerator or host out-of-memory error."""
    return isinstance(exc, (torch.OutOfMemoryError, MemoryError)) or "out of memory" in str(exc).lower()
