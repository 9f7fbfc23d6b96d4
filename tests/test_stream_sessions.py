"""Two users streaming their webcams at the same time never share stream state: the Propagation tab's propagator
and the Style tab's flicker-smoothing statistics live in each session's gr.State. Two interleaved streams through
the tabs' own handlers give exactly what each stream gives alone."""
from __future__ import annotations

import numpy as np
import pytest

from tests.test_video_propagation import SQ, edit_on_square, frame_at


def _prop_stream(path, edit_xy):
    """Inputs of demos.propagation.webcam_frame for one user: frames along ``path``, reference = the first one."""
    ref = frame_at(*path[0])
    editor = {"background": ref, "layers": [edit_on_square(*edit_xy)], "composite": ref}
    return [frame_at(*p) for p in path], editor


def test_two_interleaved_propagation_streams_do_not_share_state():
    from demos.propagation import prepare_stream_edit, webcam_frame

    path_a = [(20 + 2.0 * t, 30 + 0.5 * t) for t in range(14)]
    path_b = [(90 - 1.5 * t, 60 - 1.0 * t) for t in range(14)]
    frames_a, editor_a = _prop_stream(path_a, path_a[0])
    frames_b, editor_b = _prop_stream(path_b, path_b[0])

    prep_a = prepare_stream_edit("classic", editor_a, None, 1.0)
    prep_b = prepare_stream_edit("classic", editor_b, None, 1.0)
    assert prep_a["key"] != prep_b["key"]

    def run(frames, prepared, state=None):
        outs = []
        for f in frames:
            out, state = webcam_frame(f, prepared, state)
            outs.append(out)
        return outs, state

    alone_a, _ = run(frames_a, prep_a)
    alone_b, _ = run(frames_b, prep_b)
    state_a = state_b = None
    mixed_a, mixed_b = [], []
    for fa, fb in zip(frames_a, frames_b):           # user A's frame, then user B's, ...
        out, state_a = webcam_frame(fa, prep_a, state_a)
        mixed_a.append(out)
        out, state_b = webcam_frame(fb, prep_b, state_b)
        mixed_b.append(out)
    assert state_a is not state_b and state_a["stream"] is not state_b["stream"]
    for x, y in zip(mixed_a + mixed_b, alone_a + alone_b):
        assert np.array_equal(x, y)
    # and the edit did follow each user's own square (red on the square, not on the other user's position)
    for outs, path in ((mixed_a, path_a), (mixed_b, path_b)):
        x, y = (int(round(v)) for v in path[-1])
        patch = outs[-1][y + 10:y + SQ - 10, x + 10:x + SQ - 10].astype(int)
        assert (patch[..., 0] - patch[..., 1]).mean() > 150


def test_two_interleaved_style_streams_keep_their_own_smoothing(random_weights):
    from demos.style import stream_frame

    rng = np.random.default_rng(0)

    def frames(seed, tint):
        r = np.random.default_rng(seed)
        base = r.integers(0, 255, (12, 16, 3)).astype(np.float32)
        return [np.clip(np.kron(base * (tint + 0.1 * k), np.ones((4, 4, 1))), 0, 255).astype(np.uint8)
                for k in range(5)]

    style_a = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)
    style_b = rng.integers(0, 255, (32, 32, 3)).astype(np.uint8)[..., ::-1].copy()
    fa, fb = frames(1, 0.5), frames(2, 1.0)

    def call(frame, style, state):
        return stream_frame(frame, style, 1.0, None, 1.0, None, 1.0, None, 1.0, 1.0, False, 0, 64, 0.8, state)

    def alone(fr, style):
        state, outs = None, []
        for f in fr:
            out, state = call(f, style, state)
            outs.append(out)
        return outs, state

    alone_a, end_a = alone(fa, style_a)
    alone_b, end_b = alone(fb, style_b)
    sa = sb = None
    for k in range(len(fa)):
        out_a, sa = call(fa[k], style_a, sa)
        out_b, sb = call(fb[k], style_b, sb)
        assert np.array_equal(out_a, alone_a[k]) and np.array_equal(out_b, alone_b[k])
    assert sa is not sb and sa.frames == sb.frames == len(fa)
    np.testing.assert_allclose(sa.mean, end_a.mean)
    np.testing.assert_allclose(sb.mean, end_b.mean)
    assert not np.allclose(sa.mean, sb.mean)       # the two streams' running statistics differ


@pytest.mark.parametrize("module", ["demos.propagation", "demos.style"])
def test_stream_handlers_keep_no_module_level_stream_state(module):
    """No propagator or stream statistics in a module global: every mutable module attribute is a constant."""
    import importlib

    from engine.correspondence.base import StreamPropagator

    mod = importlib.import_module(module)
    for name, value in vars(mod).items():
        assert not isinstance(value, StreamPropagator), name
        assert type(value).__name__ != "StreamState", name
