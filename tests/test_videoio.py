"""Shared video I/O: round trip, limits and bad files."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from engine import videoio
from engine.errors import InputError

sys.path.insert(0, str(Path(__file__).parent))
from corpus import make_corpus  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def test_round_trip_keeps_frames_size_and_brightness(tmp_path):
    frames = [np.full((33, 45, 3), v, np.uint8) for v in (20, 120, 220)]
    with videoio.VideoWriter(tmp_path / "a.mp4", fps=10) as w:
        for f in frames:
            w.write(f)
    back = list(videoio.read_frames(tmp_path / "a.mp4"))
    assert len(back) == 3 and back[0].shape == (34, 46, 3)  # padded to even
    assert [abs(int(b.mean()) - int(f.mean())) <= 6 for b, f in zip(back, frames)] == [True] * 3
    assert float(videoio.probe(tmp_path / "a.mp4").fps) == pytest.approx(10)


def test_limits_and_progress(tmp_path):
    with videoio.VideoWriter(tmp_path / "b.mp4", fps=10) as w:
        for i in range(30):
            w.write(np.full((40, 80, 3), i * 8, np.uint8))
    assert len(list(videoio.read_frames(tmp_path / "b.mp4", max_seconds=1.0))) == 10
    assert list(videoio.read_frames(tmp_path / "b.mp4", max_frames=4, max_side=20))[0].shape == (10, 20, 3)
    seen = []
    out = videoio.map_video(tmp_path / "b.mp4", lambda f: 255 - f, max_frames=5, max_side=None,
                            progress=lambda p, d: seen.append(p), out_path=tmp_path / "c.mp4")
    inv = list(videoio.read_frames(out))
    assert len(inv) == 5 and abs(int(inv[2].mean()) - (255 - 16)) <= 6 and seen[-1] == 1.0


@pytest.mark.parametrize("name, needle", [("no_frames.mp4", "no decodable|no video stream"),
                                          ("audio_only.mp4", "no video stream"),
                                          ("fake_video.mp4", "could not be opened|no video stream|could not"),
                                          ("not_an_image.png", "could not be|no video stream"),
                                          ("empty.png", "empty")])
def test_bad_videos_give_clear_errors(corpus, name, needle):
    with pytest.raises(InputError, match=needle):
        list(videoio.read_frames(corpus[name][0]))
