"""One queue for all accelerator work, shared fairly between users.

Every tab and every API caller runs its model work through :func:`run_exclusive`, so two requests never fight for
the GPU (or oversubscribe a small CPU). The lock is taken per *step* (one image, one video frame or batch, one
webcam frame), never for a whole video or stream, and it is granted in arrival order (:class:`FairLock`): a step
waits at most for the steps queued before it, so a short request is not starved behind a long video or a stream
that keeps sending frames.

Cancellation: a job runs inside :func:`cancel_scope` with a callable telling whether its user has gone (the app
sets it from Gradio's disconnect / Cancel). :func:`checkpoint` raises ``Cancelled`` once it says so; it is called
while waiting for the lock (abandoned work leaves the queue), before each step, and, through the forward pre-hooks
that :func:`add_cancel_points` puts on every module of a model, between the network's layers, tiles and stages.

In the app, Gradio queues events in front of this lock (``GRADIO_CONCURRENCY_ID`` and friends in
``demos.common``); the engine itself never imports Gradio.
"""
from __future__ import annotations

import collections
import contextlib
import contextvars
import functools
import threading
import time
from typing import Callable, Iterable, Iterator, Sequence, TypeVar

from .errors import Cancelled

T = TypeVar("T")
R = TypeVar("R")

GRADIO_CONCURRENCY_ID = "engine"
POLL_S = 0.1  # how often a waiting step looks at its cancel token


class FairLock:
    """A re-entrant lock granted first come, first served (a plain RLock lets the releasing thread win again).

    ``acquire(should_stop)`` gives up while waiting when ``should_stop()`` turns true (raising ``Cancelled``), so a
    cancelled job never runs a step.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._waiters: collections.deque = collections.deque()

    def acquire(self, should_stop: Callable[[], bool] | None = None) -> None:
        me = threading.get_ident()
        with self._mutex:
            if self._owner == me:
                self._depth += 1
                return
            if self._owner is None and not self._waiters:
                self._owner, self._depth = me, 1
                return
            granted = threading.Event()
            entry = (me, granted)
            self._waiters.append(entry)
        while not granted.wait(POLL_S):
            if should_stop is not None and should_stop():
                with self._mutex:
                    if not granted.is_set():
                        self._waiters.remove(entry)
                        raise Cancelled("Cancelled.")
                break  # granted meanwhile: hand it on below
        if should_stop is not None and should_stop():
            self.release()
            raise Cancelled("Cancelled.")

    def release(self) -> None:
        with self._mutex:
            if self._owner != threading.get_ident():
                raise RuntimeError("release of a FairLock not held by this thread")
            self._depth -= 1
            if self._depth:
                return
            if self._waiters:
                owner, granted = self._waiters.popleft()
                self._owner, self._depth = owner, 1  # hand-off: nobody can overtake the first waiter
                granted.set()
            else:
                self._owner = None

    def waiting(self) -> int:
        with self._mutex:
            return len(self._waiters)

    def __enter__(self) -> "FairLock":
        self.acquire(_current.get())
        return self

    def __exit__(self, *exc) -> None:
        self.release()


engine_lock = FairLock()

# ---- cancellation ---------------------------------------------------------------------------------------------

_current: contextvars.ContextVar[Callable[[], bool] | None] = contextvars.ContextVar("engine_job_cancelled",
                                                                                      default=None)


@contextlib.contextmanager
def cancel_scope(cancelled: Callable[[], bool]):
    """Run the enclosed engine work as one cancellable job: ``cancelled()`` says whether its user has gone."""
    token = _current.set(cancelled)
    try:
        yield
    finally:
        _current.reset(token)


def in_cancel_scope() -> bool:
    return _current.get() is not None


def is_cancelled() -> bool:
    cancelled = _current.get()
    return bool(cancelled is not None and cancelled())


def checkpoint() -> None:
    """Raise ``Cancelled`` when the current job was cancelled (a no-op outside a :func:`cancel_scope`)."""
    if is_cancelled():
        raise Cancelled("Cancelled.")


def _cancel_hook(module, inputs) -> None:
    checkpoint()


def add_cancel_points(model):
    """Make every module of ``model`` check the current job's cancel token before it runs (forward pre-hooks, a
    context-variable read each: free next to a convolution). Idempotent; returns the model."""
    for module in model.modules():
        if not getattr(module, "_engine_cancel_point", False):
            module.register_forward_pre_hook(_cancel_hook)
            module._engine_cancel_point = True
    return model


# ---- the queue ------------------------------------------------------------------------------------------------

class _Stats:
    """Counters the load tests read: how many jobs ran and the most that ever overlapped (must stay 1)."""

    def __init__(self) -> None:
        self.jobs = 0
        self.active = 0
        self.max_active = 0
        self.busy_seconds = 0.0
        self.cancelled = 0
        self._guard = threading.Lock()

    def reset(self) -> None:
        with self._guard:
            self.jobs = self.active = self.max_active = self.cancelled = 0
            self.busy_seconds = 0.0


stats = _Stats()


def run_exclusive(fn: Callable[..., R], *args, **kwargs) -> R:
    """Run one step ``fn`` holding the engine lock, after the steps queued before it (re-entrant: nested calls from
    the same thread are fine). Raises ``Cancelled`` instead of running when the current job was cancelled,
    including while it waited."""
    checkpoint()
    cancelled = _current.get()
    try:
        engine_lock.acquire(cancelled)
    except Cancelled:
        with stats._guard:
            stats.cancelled += 1
        raise
    try:
        with stats._guard:
            stats.active += 1
            stats.jobs += 1
            stats.max_active = max(stats.max_active, stats.active)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        except Cancelled:
            with stats._guard:
                stats.cancelled += 1
            raise
        finally:
            with stats._guard:
                stats.active -= 1
                stats.busy_seconds += time.perf_counter() - start
    finally:
        engine_lock.release()


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
