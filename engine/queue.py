"""One queue for all accelerator work.

Every tab and every API caller runs its model work through ``engine_lock`` so that two requests never fight for
the GPU (or oversubscribe a small CPU). In the app the same guarantee also holds at the Gradio level: every event
that reaches the engine uses ``concurrency_id=GRADIO_CONCURRENCY_ID`` with a limit of one, so waiting requests queue
in Gradio (with their position shown) instead of blocking worker threads.
"""
from __future__ import annotations

import functools
import threading
import time
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

T = TypeVar("T")
R = TypeVar("R")

GRADIO_CONCURRENCY_ID = "engine"
engine_lock = threading.RLock()


class _Stats:
    """Counters the load tests read: how many jobs ran and the most that ever overlapped (must stay 1)."""

    def __init__(self) -> None:
        self.jobs = 0
        self.active = 0
        self.max_active = 0
        self.busy_seconds = 0.0
        self._guard = threading.Lock()

    def reset(self) -> None:
        with self._guard:
            self.jobs = self.active = self.max_active = 0
            self.busy_seconds = 0.0


stats = _Stats()


def run_exclusive(fn: Callable[..., R], *args, **kwargs) -> R:
    """Run ``fn`` holding the engine lock (re-entrant: nested calls from the same thread are fine)."""
    with engine_lock:
        with stats._guard:
            stats.active += 1
            stats.jobs += 1
            stats.max_active = max(stats.max_active, stats.active)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            with stats._guard:
                stats.active -= 1
                stats.busy_seconds += time.perf_counter() - start


def exclusive(fn: Callable[..., R]) -> Callable[..., R]:
    """Decorator form of :func:`run_exclusive`."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        return run_exclusive(fn, *args, **kwargs)

    return wrapper


def batched(items: Sequence[T], batch_size: int) -> Iterator[Sequence[T]]:
    """Split ``items`` into consecutive batches (the optional batch path of pipelines)."""
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


def map_batched(fn: Callable[[Sequence[T]], Iterable[R]], items: Sequence[T], batch_size: int = 1,
                progress: Callable[[float, str], None] | None = None) -> list[R]:
    """Apply a batch function over ``items`` under the engine lock, one batch at a time, reporting progress.

    The lock is taken per batch, so other tabs' requests interleave between batches of a long job.
    """
    out: list[R] = []
    for batch in batched(items, batch_size):
        out.extend(run_exclusive(fn, batch))
        if progress is not None:
            progress(len(out) / max(len(items), 1), f"{len(out)}/{len(items)}")
    return out
