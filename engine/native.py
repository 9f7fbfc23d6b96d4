"""Native code that can crash the process runs here, in a worker process, so a crash fails one job, not the server.

OpenCV's optical flow (DIS, Farnebäck) is plain C++: given the wrong input it does not raise, it segfaults (OpenCV
5.0's DIS crashes on frames thinner than 16 px, and when one DIS object is reused for another frame size after a
call with an initial flow). Two layers keep that away from the server:

1. ``optical_flow`` checks its inputs before any native call (2-D, uint8, same shape, C-contiguous; an initial flow
   must be finite float32 of shape (H, W, 2) or it is dropped), pads frames smaller than ``MIN_FLOW_SIDE`` by
   replicating the border (the flow is cropped back), and gives every frame size its own DIS object.
2. The flow itself is computed in one long-lived worker process (a fresh ``python``, so no state or locks are
   inherited from the server's threads). If the worker dies (segfault, abort, out of memory) or exceeds ``CALL_TIMEOUT_S``, the call
   raises :class:`NativeCrash`, an ``EngineError`` whose message the user sees; the next call starts a fresh
   worker. Cost (``benchmarks/bench_isolation.py``, 2-core machine shared with other jobs): video propagation at
   the tab's size (384-px frames tracked at 320 px, 1.1 flow calls per frame) went from 20.1 to 24.2 ms per frame
   (+4.1 ms, x1.21); per flow call +4.1 ms, of which 2.3 ms is moving the frames and the flow through the pipe.

``ENGINE_ISOLATE_NATIVE=0`` computes in-process instead (same checks, no isolation).
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Optional

import numpy as np

from .errors import InputError, ModelError

log = logging.getLogger("gan-studio")

MIN_FLOW_SIDE = 32          # DIS needs >= 16 px on the short side (OpenCV 5.0 segfaults below); margin on top
MAX_FLOW_PIXELS = 16_000_000
CALL_TIMEOUT_S = 120.0
_MAX_DIS_SIZES = 8          # DIS objects kept per process (one per frame size, oldest dropped)


class NativeCrash(ModelError):
    """The worker process running native code died or hung; only this job failed, the engine is fine."""


def isolated() -> bool:
    return os.environ.get("ENGINE_ISOLATE_NATIVE", "1").strip().lower() not in {"0", "false", "no", "off"}


# ---- input checks (in the caller's process, before anything native) ----------------------------------------------

def _check_gray(name: str, img) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise InputError(f"optical flow needs 2-D gray frames; {name} has shape {arr.shape}")
    if arr.size == 0 or arr.size > MAX_FLOW_PIXELS:
        raise InputError(f"optical flow frame {name} is {arr.shape[1]}x{arr.shape[0]} px, outside 1..{MAX_FLOW_PIXELS}")
    if arr.dtype != np.uint8:
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise InputError(f"optical flow frame {name} holds NaN or infinite values")
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def _prepare(a, b, init):
    a, b = _check_gray("a", a), _check_gray("b", b)
    if a.shape != b.shape:
        raise InputError(f"optical flow frames differ in size: {a.shape} and {b.shape}")
    h, w = a.shape
    if init is not None:
        init = np.asarray(init)
        if init.shape != (h, w, 2) or init.dtype.kind != "f" or not np.isfinite(init).all():
            init = None  # a wrong initial flow is dropped, never handed to OpenCV
        else:
            init = np.ascontiguousarray(init, dtype=np.float32)
    ph, pw = max(0, MIN_FLOW_SIDE - h), max(0, MIN_FLOW_SIDE - w)
    if ph or pw:
        a = np.pad(a, ((0, ph), (0, pw)), mode="edge")
        b = np.pad(b, ((0, ph), (0, pw)), mode="edge")
        if init is not None:
            init = np.ascontiguousarray(np.pad(init, ((0, ph), (0, pw), (0, 0)), mode="edge"))
    return a, b, init, (h, w)


# ---- the native work (runs in the worker, or in-process when isolation is off) ------------------------------------

_dis_objects: "dict[tuple[int, int], object]" = {}
_dis_lock = threading.Lock()


def _dis_for(shape: tuple[int, int]):
    """One DIS object per frame size: a DIS object must never see two sizes (OpenCV 5.0 crashes)."""
    import cv2

    with _dis_lock:
        dis = _dis_objects.pop(shape, None)
        if dis is None:
            dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        _dis_objects[shape] = dis            # most recently used last
        while len(_dis_objects) > _MAX_DIS_SIZES:
            _dis_objects.pop(next(iter(_dis_objects)))
        return dis


def _flow_native(method: str, a: np.ndarray, b: np.ndarray, init: Optional[np.ndarray]) -> np.ndarray:
    import cv2

    if method == "dis":
        # calc() refines its flow argument when one of the right size is given, so pass a copy
        return _dis_for(a.shape).calc(a, b, None if init is None else init.copy())
    if method == "farneback":
        flags = cv2.OPTFLOW_USE_INITIAL_FLOW if init is not None else 0
        return cv2.calcOpticalFlowFarneback(a, b, None if init is None else init.copy(), 0.5, 4, 15, 3, 5, 1.1, flags)
    raise ValueError(f"unknown optical flow method {method!r} (dis, farneback)")


def _crash_for_tests(how: str = "segfault"):
    """Test hook: die the way a native bug does. Reachable only by code in the server process, never by input."""
    if how == "abort":
        os.abort()
    import ctypes

    ctypes.string_at(0)  # reads address 0: SIGSEGV


def _echo(method, a, b, init):
    """The transfer of a flow call without the flow (benchmarks measure the isolation overhead with it)."""
    return np.zeros((*a.shape, 2), np.float32)


def _check_video(path: str):
    from .videoio import check_video_here

    return check_video_here(path)


_OPS = {"flow": _flow_native, "check_video": _check_video, "echo": _echo, "crash": _crash_for_tests, "ping": lambda: "pong"}


class _Pipe:
    """A duplex connection made of two one-way multiprocessing Connections."""

    def __init__(self, reader, writer):
        self.reader, self.writer = reader, writer

    def send(self, obj) -> None:
        self.writer.send(obj)

    def recv(self):
        return self.reader.recv()

    def poll(self, timeout: float) -> bool:
        return self.reader.poll(timeout)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


def _serve_fds(read_fd: int, write_fd: int) -> None:
    """Entry point of the worker process."""
    from multiprocessing.connection import Connection

    _serve(_Pipe(Connection(read_fd, writable=False), Connection(write_fd, readable=False)))


def _serve(conn) -> None:  # the worker's main loop
    while True:
        try:
            op, args = conn.recv()
        except (EOFError, OSError):
            return
        try:
            conn.send(("ok", _OPS[op](*args)))
        except Exception as exc:  # noqa: BLE001 - reported to the caller, the worker keeps serving
            from .errors import EngineError

            conn.send(("engine", exc) if isinstance(exc, EngineError) else ("error", (type(exc).__name__, str(exc))))


# ---- the worker handle (in the server) -----------------------------------------------------------------------------

class _Worker:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.proc = None
        self.conn = None
        self.calls = 0
        self.crashes = 0      # worker deaths and timeouts (each fails one call; the next call starts afresh)

    def _start(self) -> None:
        """Start ``python -c 'engine.native._serve_fds(...)'`` with two pipes. A plain subprocess, not
        multiprocessing's spawn: that re-imports the caller's main module, which breaks scripts without a
        ``__main__`` guard; this inherits nothing from the server but the environment."""
        import subprocess
        import sys
        from multiprocessing.connection import Connection

        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        code = f"from engine.native import _serve_fds; _serve_fds({to_child_r}, {from_child_w})"
        try:
            proc = subprocess.Popen([sys.executable, "-c", code], pass_fds=(to_child_r, from_child_w), env=env,
                                    stdin=subprocess.DEVNULL, close_fds=True)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.proc = proc
        self.conn = _Pipe(Connection(from_child_r, writable=False), Connection(to_child_w, readable=False))

    def _alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(5)
            except Exception:  # noqa: BLE001 - a zombie is not worth failing for
                pass
        if self.conn is not None:
            self.conn.close()
        self.proc = self.conn = None

    def call(self, op: str, *args, timeout: float = CALL_TIMEOUT_S):
        with self.lock:
            if not self._alive():
                self._stop()
                self._start()
            self.calls += 1
            try:
                self.conn.send((op, args))
                if not self.conn.poll(timeout):
                    self.crashes += 1
                    self._stop()
                    raise NativeCrash(f"Native {op} work did not finish within {timeout:.0f} s and was stopped; "
                                      "this job failed, the app is still running.")
                status, value = self.conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                self.crashes += 1
                try:
                    code = self.proc.wait(5)
                except Exception:  # noqa: BLE001
                    code = None
                self._stop()
                log.error("native worker died during %s (exit code %s)", op, code)
                signal = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
                raise NativeCrash(f"The {op} step crashed in native code ({signal}) on this input; this job "
                                  "failed, the app is still running.") from exc
        if status == "engine":  # an EngineError raised there (e.g. InputError): the same error here
            raise value
        if status == "error":
            name, message = value
            if name in ("ValueError", "error"):  # cv2.error: OpenCV refused the input
                raise InputError(f"Optical flow refused this input: {message.strip().splitlines()[-1][:200]}")
            raise ModelError(f"{op} failed in the worker: {name}: {message[:200]}")
        return value

    def shutdown(self) -> None:
        with self.lock:
            self._stop()


worker = _Worker()


def call(op: str, *args, timeout: float = CALL_TIMEOUT_S):
    """Run ``op`` in the worker process (tests use ``call("crash")``)."""
    return worker.call(op, *args, timeout=timeout)


def optical_flow(a, b, init=None, method: str = "dis") -> np.ndarray:
    """Dense flow (H, W, 2) float32 between gray frames ``a`` and ``b``: a(x) ~ b(x + flow(x)).

    ``init``: an initial flow to refine (dropped when it does not fit). Inputs are checked here; the native call runs
    in the worker process unless ``ENGINE_ISOLATE_NATIVE=0``.
    """
    if method not in ("dis", "farneback"):
        raise ValueError(f"unknown optical flow method {method!r} (dis, farneback)")
    a, b, init, (h, w) = _prepare(a, b, init)
    flow = call("flow", method, a, b, init) if isolated() else _flow_native(method, a, b, init)
    flow = np.asarray(flow, dtype=np.float32)
    if flow.shape[:2] != a.shape:
        raise ModelError(f"optical flow returned shape {flow.shape} for frames of {a.shape}")
    return np.ascontiguousarray(flow[:h, :w])


__all__ = ["MIN_FLOW_SIDE", "NativeCrash", "call", "isolated", "optical_flow", "worker"]
