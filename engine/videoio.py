"""Video files in and out, shared by every tab (PyAV / FFmpeg).

``read_frames`` yields RGB ``uint8`` frames (optionally shrunk to a max side, bounded in count and duration);
``VideoWriter`` writes a browser-playable MP4 (H.264, yuv420p, faststart); ``map_video`` ties both together with
progress. Bad files (no video stream, no frames, undecodable, not a video) raise InputError with the reason.
"""
from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import Image

from .errors import InputError

Progress = Callable[[float, str], None] | None
DEFAULT_FPS = Fraction(25, 1)
MIN_VIDEO_SIDE = 16        # thinner frames are degenerate (and crash native optical flow / resizers)
MAX_VIDEO_SIDE = 8192      # per side; frames are also held to ENGINE_MAX_PIXELS
MAX_VIDEO_FRAMES = int(os.environ.get("ENGINE_MAX_VIDEO_FRAMES", 3000))   # decoded per job at most
MAX_VIDEO_SECONDS = float(os.environ.get("ENGINE_MAX_VIDEO_SECONDS", 120))  # of video per job at most


@dataclass
class VideoInfo:
    fps: Fraction
    width: int
    height: int
    frames: int | None         # count from the container, when it says
    seconds: float | None


def _open(path: str | os.PathLike):
    import av

    path = Path(path)
    if not path.is_file():
        raise InputError(f"No such video file: {path.name}")
    if path.stat().st_size == 0:
        raise InputError(f"{path.name} is empty (0 bytes).")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        raise InputError(f"{path.name} could not be opened as a video ({exc}).") from exc
    if not container.streams.video:
        container.close()
        raise InputError(f"{path.name} has no video stream (audio only, or not a video).")
    return container


def _check_size(name: str, width: int, height: int) -> None:
    from . import config

    if min(width, height) < MIN_VIDEO_SIDE:
        raise InputError(f"{name} is {width}x{height} px; both sides of a video must be at least {MIN_VIDEO_SIDE} px.")
    if max(width, height) > MAX_VIDEO_SIDE or width * height > config.max_pixels():
        raise InputError(f"{name} is {width}x{height} px, over the limit of {MAX_VIDEO_SIDE} px per side and "
                         f"{config.max_pixels() / 1e6:.0f} MP per frame. Make it smaller first.")


def probe(path: str | os.PathLike) -> VideoInfo:
    """Container facts of a real video stream; refuses files without one (audio only, images such as SVG that have
    no decoder), degenerate sizes (under MIN_VIDEO_SIDE px) and frames over MAX_VIDEO_SIDE / ENGINE_MAX_PIXELS."""
    import av

    name = Path(path).name
    container = _open(path)
    try:
        stream = container.streams.video[0]
        ctx = stream.codec_context
        if ctx is None or not getattr(ctx, "name", None):
            raise InputError(f"{name} has no video stream we can decode (is it an image or a document?).")
        try:
            av.codec.Codec(ctx.name, "r")
        except Exception as exc:  # noqa: BLE001 - PyAV raises several types for unknown codecs
            raise InputError(f"{name} uses a video codec ({ctx.name}) that cannot be decoded here.") from exc
        width, height = int(getattr(ctx, "width", 0) or 0), int(getattr(ctx, "height", 0) or 0)
        if width <= 0 or height <= 0:
            raise InputError(f"{name} could not be read as a video (it gives no frame size).")
        _check_size(name, width, height)
        fps = stream.average_rate or stream.guessed_rate or DEFAULT_FPS
        if not math.isfinite(float(fps)) or not 0 < float(fps) <= 240:
            fps = DEFAULT_FPS
        seconds = (float(stream.duration * stream.time_base) if stream.duration and stream.time_base
                   else (container.duration / 1e6 if container.duration else None))
        if seconds is not None and (not math.isfinite(seconds) or seconds <= 0):
            seconds = None
        frames = stream.frames if stream.frames and stream.frames > 0 else None
        return VideoInfo(Fraction(fps), width, height, frames, seconds)
    finally:
        container.close()


def _check_frame_size(path, width: int, height: int, limit: int) -> None:
    if width * height > limit:
        raise InputError(f"{Path(path).name} has {width}x{height} frames ({width * height / 1e6:.3g} megapixels), "
                         f"over the limit of {limit / 1e6:.3g} MP per frame. Resize the video first.")


def check_video_here(path: str | os.PathLike) -> VideoInfo:
    """probe() and decode the first frame (in this process)."""
    info = probe(path)
    first = next(iter(read_frames(path, max_frames=1)), None)
    if first is None:
        raise InputError(f"{Path(path).name} has no decodable video frames.")
    return info


def check_video(path: str | os.PathLike) -> VideoInfo:
    """Is this a video we can process? A real, decodable video stream of a sane size (see probe); the first frame is
    decoded to be sure. Runs in the native worker process (engine.native) so a demuxer or decoder crash on a hostile
    file fails this check only. The app calls it on every uploaded video before any processing."""
    from . import native

    if not native.isolated():
        return check_video_here(path)
    return native.call("check_video", str(path))


def read_frames(path: str | os.PathLike, *, max_frames: int | None = None, max_seconds: float | None = None,
                max_side: int | None = None) -> Iterator[np.ndarray]:
    """Decode frames as (H, W, 3) uint8 RGB; stops after ``max_frames`` or ``max_seconds`` of video (at most
    MAX_VIDEO_FRAMES / MAX_VIDEO_SECONDS per job), or at a frame of a degenerate size (a damaged part)."""
    import av

    from .imageio import resize_max_side

    from .config import max_pixels

    info = probe(path)
    _check_frame_size(path, info.width, info.height, max_pixels())
    name = Path(path).name
    limit = min(max_frames or MAX_VIDEO_FRAMES, MAX_VIDEO_FRAMES)
    max_seconds = min(max_seconds or MAX_VIDEO_SECONDS, MAX_VIDEO_SECONDS)
    limit = min(limit, max(1, int(max_seconds * float(info.fps) + 1e-6)))
    container = _open(path)
    count = 0
    try:
        for frame in container.decode(video=0):
            if count >= limit:
                break
            if min(frame.width, frame.height) < MIN_VIDEO_SIDE or max(frame.width, frame.height) > MAX_VIDEO_SIDE:
                if count == 0:
                    _check_size(name, frame.width, frame.height)
                break  # a frame of a degenerate size mid-stream: a damaged part, keep what came before
            _check_frame_size(path, frame.width, frame.height, max_pixels())  # before it is converted to RGB
            img = frame.to_image()
            if max_side:
                img = resize_max_side(img, max_side)
            count += 1
            yield np.asarray(img.convert("RGB"))
    except av.error.FFmpegError as exc:
        if count == 0:
            raise InputError(f"{name} could not be decoded ({exc}).") from exc
        # keep what decoded before a damaged part
    finally:
        container.close()
    if count == 0:
        raise InputError(f"{name} has no decodable video frames.")


OUTPUT_TTL_S = 3600.0  # temporary outputs older than this are deleted when the next one is made


def temp_output(suffix: str) -> Path:
    """A new temporary output file in the engine's own temp folder; files there older than OUTPUT_TTL_S are
    removed first (the app hands outputs to Gradio, which copies them into its own, separately cleaned cache)."""
    import time

    folder = Path(tempfile.gettempdir()) / "gan-studio-outputs"
    folder.mkdir(exist_ok=True)
    now = time.time()
    for old in folder.glob("gan-studio-*"):
        try:
            if now - old.stat().st_mtime > OUTPUT_TTL_S:
                old.unlink()
        except OSError:
            continue  # removed by another process meanwhile
    fd, name = tempfile.mkstemp(suffix=suffix, prefix="gan-studio-", dir=folder)
    os.close(fd)
    return Path(name)


class VideoWriter:
    """Write RGB frames to a browser-playable MP4. Odd sizes are padded by one edge pixel (yuv420p needs even)."""

    def __init__(self, path: str | os.PathLike | None = None, fps: Fraction | float = DEFAULT_FPS, crf: int = 20):
        if path is None:
            path = temp_output(".mp4")
        self.path = Path(path)
        self.fps = Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps
        self.crf = crf
        self.frames = 0
        self._container = None
        self._stream = None
        self._size = None

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = np.ascontiguousarray(frame[..., :3], dtype=np.uint8)
        h, w = frame.shape[:2]
        if self._container is None:
            self._size = (w + w % 2, h + h % 2)
            self._container = av.open(str(self.path), "w", format="mp4", options={"movflags": "+faststart"})
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            self._stream = self._container.add_stream(codec, rate=self.fps)
            self._stream.width, self._stream.height = self._size
            self._stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                self._stream.options = {"crf": str(self.crf), "preset": "veryfast"}
        if (w, h) != self._size:
            if (w + w % 2, h + h % 2) == self._size:
                frame = np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            else:  # a stream that changes size mid-way is resized to the first frame's size
                frame = np.asarray(Image.fromarray(frame).resize(self._size, Image.Resampling.BILINEAR))
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) written (even), or (0, 0) before the first frame."""
        return self._size or (0, 0)

    def close(self) -> Path:
        if self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
        return self.path

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close()
        if exc_type is not None:
            self.path.unlink(missing_ok=True)


def map_video(src: str | os.PathLike, fn: Callable[[np.ndarray], np.ndarray], *, out_path=None,
              max_frames: int | None = None, max_seconds: float | None = 10.0, max_side: int | None = 512,
              progress: Progress = None) -> Path:
    """Apply ``fn`` to every frame of ``src`` and write the result as MP4; returns the output path."""
    info = probe(src)
    total = info.frames or (int(info.seconds * float(info.fps)) if info.seconds else 0)
    if max_seconds:
        total = min(total or 10**9, max(1, int(max_seconds * float(info.fps))))
    if max_frames:
        total = min(total or 10**9, max_frames)
    with VideoWriter(out_path, info.fps) as writer:
        for frame in read_frames(src, max_frames=max_frames, max_seconds=max_seconds, max_side=max_side):
            writer.write(fn(frame))
            if progress is not None:
                progress(min(writer.frames / max(total, 1), 1.0), f"frame {writer.frames}/{total or '?'}")
    return writer.path
