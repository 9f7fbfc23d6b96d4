"""The Correspondence tab's handlers as plain functions: match, then click a point."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest


def test_click_a_point_lands_on_the_shifted_match():
    import demos.correspondence as C

    rng = np.random.default_rng(0)
    a = (rng.random((64, 80, 3)) * 255).astype(np.uint8)
    b = np.roll(a, 3, axis=1)  # B is A moved 3 px to the right
    *_, state = C.match_images("classic", a, b)
    marked_a, marked_b, text = C.click_point(state, SimpleNamespace(index=[20, 30]))
    assert marked_a.shape == a.shape and marked_b.shape == b.shape
    mx, my, _ = (float(v) for v in C.visualise.match_point(state["flow"], state["confidence"], 20, 30))
    assert abs(mx - 23) < 1.0 and abs(my - 30) < 1.0
    assert "A (20, 30) → B (23" in text


def test_click_before_match_and_outside_the_image_are_clear_errors():
    import gradio as gr

    import demos.correspondence as C

    with pytest.raises(gr.Error, match="Press Match first"):
        C.click_point(None, SimpleNamespace(index=[1, 1]))
    flow = np.zeros((4, 4, 2), np.float32)
    with pytest.raises(gr.Error, match="outside image A"):
        C.click_point({"flow": flow, "confidence": np.ones((4, 4)), "a": np.zeros((4, 4, 3), np.uint8),
                       "b": np.zeros((4, 4, 3), np.uint8), "backend": "classic"}, SimpleNamespace(index=[9, 9]))
