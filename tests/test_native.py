"""Native code (OpenCV optical flow) cannot take the process down: checked inputs, one DIS object per size, and a
worker process whose crash fails only the call that was running."""
from __future__ import annotations

import numpy as np
import pytest

from engine import native


def _pair(h: int, w: int, shift: int = 1, seed: int = 0):
    import cv2

    rng = np.random.default_rng(seed)
    a = cv2.GaussianBlur(rng.integers(0, 255, (h, w), np.uint8), (0, 0), 1.5) if min(h, w) > 4 else \
        rng.integers(0, 255, (h, w), np.uint8)
    return a, np.roll(a, shift, axis=1)


# Each of these killed a process with SIGSEGV when handed to OpenCV 5.0's DIS directly: frames thinner than 16 px,
# and one DIS object reused for a new size after a call with an initial flow.
SIZES = [(240, 320), (480, 640), (16, 16), (8, 64), (14, 100), (2, 2), (1, 1), (2, 1920), (12, 384), (240, 320)]


@pytest.mark.parametrize("isolate", ["1", "0"])
def test_flow_handles_sizes_that_crash_opencv(monkeypatch, isolate):
    monkeypatch.setenv("ENGINE_ISOLATE_NATIVE", isolate)
    crashes = native.worker.crashes
    for h, w in SIZES:
        a, b = _pair(h, w)
        flow = native.optical_flow(a, b)
        assert flow.shape == (h, w, 2) and flow.dtype == np.float32 and np.isfinite(flow).all(), (h, w)
        refined = native.optical_flow(a, b, init=flow)            # a call with an initial flow, then a new size
        assert refined.shape == (h, w, 2)
        wrong = native.optical_flow(a, b, init=np.zeros((h + 3, w, 2), np.float32))  # misfit init is dropped
        assert wrong.shape == (h, w, 2)
    assert native.worker.crashes == crashes, "the worker crashed"


def test_flow_is_right_and_the_same_in_the_worker_and_in_process(monkeypatch):
    a, b = _pair(120, 160, shift=3)
    monkeypatch.setenv("ENGINE_ISOLATE_NATIVE", "1")
    isolated = native.optical_flow(a, b)
    monkeypatch.setenv("ENGINE_ISOLATE_NATIVE", "0")
    local = native.optical_flow(a, b)
    np.testing.assert_allclose(isolated, local, atol=1e-5)
    assert abs(float(np.median(isolated[20:-20, 20:-20, 0])) - 3.0) < 0.5  # the 3-px shift is found


def test_bad_inputs_are_refused_before_native_code():
    from engine.errors import InputError

    a, _ = _pair(64, 64)
    with pytest.raises(InputError):
        native.optical_flow(a, a[:32])
    with pytest.raises(InputError):
        native.optical_flow(np.stack([a, a, a], -1), a)
    with pytest.raises(InputError):
        native.optical_flow(np.full((64, 64), np.nan, np.float32), a)
    with pytest.raises(ValueError):
        native.optical_flow(a, a, method="lucas")
    out = native.optical_flow(a.astype(np.float64), a[:, ::-1])  # other dtypes / non-contiguous are converted
    assert out.shape == (64, 64, 2)


@pytest.mark.parametrize("how", ["segfault", "abort"])
def test_a_native_crash_fails_only_that_call(monkeypatch, how):
    monkeypatch.setenv("ENGINE_ISOLATE_NATIVE", "1")
    a, b = _pair(64, 80)
    native.optical_flow(a, b)
    crashes = native.worker.crashes
    with pytest.raises(native.NativeCrash, match="crashed in native code .*signal") as err:
        native.call("crash", how)
    assert "/" not in str(err.value)
    flow = native.optical_flow(a, b)  # a fresh worker serves the next call
    assert flow.shape == (64, 80, 2)
    assert native.worker.crashes == crashes + 1
