"""Stream propagation (engine/correspondence/video.py) as a plain function over frames: the edit follows a moving
pattern, fades where its pixels disappear, re-anchoring stops drift; and over a short real clip when present."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.correspondence import get_backend, video, visualise
from engine.errors import InputError

H, W = 120, 160
SQ = 36


def texture(h, w, seed):
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float32)
    for s in (2, 4, 8):
        n = rng.random((h // s + 2, w // s + 2, 3)).astype(np.float32)
        img += cv2.resize(n, (w + 2 * s, h + 2 * s), interpolation=cv2.INTER_CUBIC)[s:s + h, s:s + w] * s
    img = (img - img.min()) / (img.max() - img.min())
    return (img * 255).astype(np.uint8)


BACKGROUND = (texture(H, W, 0) // 3 + 60).astype(np.uint8)
PATCH = texture(SQ, SQ, 1)


def frame_at(x: float, y: float) -> np.ndarray:
    """A textured square at top-left (x, y) (sub-pixel, by warping) over a static background."""
    f = BACKGROUND.copy()
    m = np.float32([[1, 0, x], [0, 1, y]])
    big = cv2.warpAffine(PATCH, m, (W, H))
    mask = cv2.warpAffine(np.ones((SQ, SQ), np.float32), m, (W, H))[..., None]
    return (f * (1 - mask) + big * mask).astype(np.uint8)


def square_mask(x, y, inset=6):
    m = np.zeros((H, W), bool)
    m[int(round(y)) + inset:int(round(y)) + SQ - inset, int(round(x)) + inset:int(round(x)) + SQ - inset] = True
    return m


def edit_on_square(x, y):
    """An RGBA edit: a red blob painted inside the square of the reference frame."""
    e = np.zeros((H, W, 4), np.uint8)
    e[square_mask(x, y, inset=8)] = (255, 0, 0, 255)
    return e


def track(prop, path):
    frames = [frame_at(x, y) for x, y in path]
    outs = [prop(f) for f in frames]
    return frames, outs


@pytest.mark.parametrize("method", ["dis", "farneback"])
def test_edit_follows_a_moving_pattern(method):
    path = [(20 + 2.5 * t, 30 + 1.5 * t) for t in range(30)]
    prop = video.StreamEditPropagator(edit_on_square(*path[0]), frame_at(*path[0]), opacity=1.0,
                                      options=video.StreamOptions(proc_side=160, method=method))
    frames, outs = track(prop, path)
    alpha = prop.edit_alpha((H, W)) > 0.5
    x, y = path[-1]
    want = square_mask(x, y, inset=8)
    assert visualise.mask_iou(alpha, want) > 0.7
    # it did not stay where it was painted
    assert visualise.mask_iou(alpha, square_mask(*path[0], inset=8)) < 0.1
    # the output is the frame with red pixels on the square and untouched elsewhere
    out = outs[-1].astype(int)
    assert (out[want][:, 0] - out[want][:, 1]).mean() > 150
    far = ~square_mask(x, y, inset=-8)
    assert np.abs(out[far] - frames[-1].astype(int)[far]).mean() < 2


def test_edit_fades_when_its_pixels_disappear():
    path = [(30 + 2 * t, 40) for t in range(8)]
    ref = frame_at(*path[0])
    prop = video.StreamEditPropagator(edit_on_square(*path[0]), ref, options=video.StreamOptions(
        proc_side=160, reanchor_every=0))
    for p in path:
        prop(frame_at(*p))
    before = prop.edit_alpha((H, W)).sum()
    # the square vanishes: the background alone (its pixels are not in the previous frame any more)
    for _ in range(3):
        prop(BACKGROUND.copy())
    after = prop.edit_alpha((H, W)).sum()
    assert before > 0 and after < 0.5 * before


def test_reanchoring_limits_drift_on_a_back_and_forth_motion():
    """Out and back to the start: chained flow drifts a little; re-anchoring snaps back onto the reference."""
    out_path = [(20 + 3.1 * t, 30 + 1.7 * t) for t in range(25)]
    path = out_path + out_path[::-1]
    edit = edit_on_square(*path[0])
    ref = frame_at(*path[0])
    errs = {}
    for every in (0, 7):       # 50 frames: with 7 the last frame (index 49) is a re-anchoring frame
        prop = video.StreamEditPropagator(edit, ref, options=video.StreamOptions(proc_side=160, reanchor_every=every,
                                                                                 reanchor_below=0.0))
        track(prop, path)
        mp, conf = prop.map, prop.conf
        gx, gy = np.meshgrid(np.arange(mp.shape[1]), np.arange(mp.shape[0]))
        m = square_mask(*path[-1], inset=8)
        m = cv2.resize(m.astype(np.uint8), (mp.shape[1], mp.shape[0])) > 0
        errs[every] = float(np.hypot(mp[..., 0] - gx, mp[..., 1] - gy)[m].mean())
        if every:
            assert prop.stats["reanchors"] == 7
    assert errs[0] > 0.3                    # chaining 50 flows drifts measurably...
    assert errs[7] < 0.25 and errs[7] < errs[0] / 2   # ...re-anchoring removes it


def test_resolution_change_restarts_and_frames_keep_their_shape():
    ref = frame_at(20, 30)
    prop = video.StreamEditPropagator(edit_on_square(20, 30), ref, options=video.StreamOptions(proc_side=160))
    out = prop(frame_at(22, 31))
    assert out.shape == ref.shape and out.dtype == np.uint8
    big = cv2.resize(frame_at(24, 32), (W * 2, H * 2))
    out2 = prop(big)
    assert out2.shape == big.shape


def test_backend_stream_validates_inputs():
    be = get_backend("classic")
    ref = frame_at(20, 30)
    with pytest.raises(InputError):
        be.stream(np.zeros((H, W, 4), np.uint8), reference=ref)          # nothing painted
    with pytest.raises(InputError):
        be.stream(edit_on_square(20, 30), reference=None)
    with pytest.raises(InputError):
        be.stream(edit_on_square(20, 30), reference=ref, not_an_option=3)
    handler = be.stream(edit_on_square(20, 30), reference=ref, opacity=0.5, proc_side=160)
    out = handler(frame_at(21, 30))
    inside = square_mask(21, 30, inset=10)
    # half opacity: red is mixed with the frame, not pasted
    assert 60 < (out[inside][:, 0].astype(int) - out[inside][:, 1].astype(int)).mean() < 200


@pytest.mark.slow
def test_real_clip_chained_and_direct_agree(shared_data):
    from engine import videoio

    clip = shared_data / "face-video" / "liveportrait" / "assets" / "examples" / "driving" / "d0.mp4"
    if not clip.exists():
        pytest.skip("face-video clip not in the data folder")
    frames = list(videoio.read_frames(clip, max_frames=40, max_side=256))
    f0 = frames[0]
    h, w = f0.shape[:2]
    edit = np.zeros((h, w, 4), np.uint8)
    cv2.ellipse(edit, (w // 2, int(h * 0.42)), (w // 9, h // 14), 0, 0, 360, (255, 0, 200, 230), -1)
    chained = video.StreamEditPropagator(edit, f0, options=video.StreamOptions(reanchor_every=0, reanchor_below=0))
    for f in frames:
        chained(f)
    direct = video.StreamEditPropagator(edit, f0)
    direct.track(frames[-1])
    a = chained.edit_alpha((h, w)) > 0.3
    b = direct.edit_alpha((h, w)) > 0.3
    assert a.sum() > 0.5 * (edit[..., 3] > 0).sum()
    assert visualise.mask_iou(a, b) > 0.7
