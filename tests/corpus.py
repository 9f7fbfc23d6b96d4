"""A corpus of bad and odd inputs, generated on the fly (nothing downloaded or committed).

``make_corpus(folder)`` writes the files and returns {name: (path, kind)} where kind is "image", "video" or
"weights". Each item is either handled correctly (a sensible result) or refused with a clear error.
"""
from __future__ import annotations

import io
import os
import pickle
from pathlib import Path

import numpy as np
from PIL import Image


def _photo(w: int = 96, h: int = 64) -> Image.Image:
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([(x * 255 // max(w - 1, 1)), (y * 255 // max(h - 1, 1)), ((x + y) % 64) * 4], -1)
    return Image.fromarray(arr.astype(np.uint8), "RGB")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def _video(path: Path, frames: int, codec: str = "mpeg4", audio_only: bool = False) -> None:
    import av

    with av.open(str(path), "w") as out:
        if audio_only:
            stream = out.add_stream("aac", rate=16000)
            stream.layout = "mono"
            samples = np.zeros((1, 1024), np.float32)
            for _ in range(5):
                frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                frame.sample_rate = 16000
                for packet in stream.encode(frame):
                    out.mux(packet)
            for packet in stream.encode(None):
                out.mux(packet)
            return
        stream = out.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        out.start_encoding()  # writes the header even when no frame follows
        for i in range(frames):
            arr = np.full((48, 64, 3), (i * 20) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


def make_corpus(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    items: dict[str, tuple[bytes | None, str, str]] = {}
    jpeg, png = _save(photo, "JPEG", quality=90), _save(photo, "PNG")
    items["empty.png"] = (b"", "image", "error")
    items["truncated.jpg"] = (jpeg[: len(jpeg) // 3], "image", "error")
    items["truncated.png"] = (png[: len(png) // 3], "image", "error")
    items["not_an_image.png"] = (b"%PDF-1.4 definitely not pixels\n" * 20, "image", "error")
    items["one_pixel.png"] = (_save(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"), "image", "either")
    items["very_wide.png"] = (_save(Image.new("RGB", (20000, 20), (90, 90, 90)), "PNG"), "image", "either")
    sixteen = Image.fromarray((np.linspace(0, 65535, 96 * 64).reshape(64, 96)).astype(np.uint16))
    items["sixteen_bit.png"] = (_save(sixteen, "PNG"), "image", "ok")
    items["cmyk.jpg"] = (_save(photo.convert("CMYK"), "JPEG"), "image", "ok")
    pal = photo.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0
    items["palette_transparent.png"] = (_save(pal, "PNG", transparency=0), "image", "ok")
    frames = [photo, photo.transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    items["animated.gif"] = (buf.getvalue(), "image", "ok")
    items["greyscale.jpg"] = (_save(photo.convert("L"), "JPEG"), "image", "ok")
    items["rgba.png"] = (_save(photo.convert("RGBA"), "PNG"), "image", "ok")
    items["bomb.png"] = (_save(Image.new("1", (12000, 12000)), "PNG", optimize=True), "image", "error")
    exif = Image.Exif()
    exif[0x0112] = 6
    items["exif_rotated.jpg"] = (_save(photo, "JPEG", exif=exif), "image", "ok")
    out: dict[str, tuple[Path, str]] = {}
    for name, (data, kind, _) in items.items():
        path = folder / name
        path.write_bytes(data)
        out[name] = (path, kind)
    # Videos: one with no frames, one that holds only audio (no video codec to decode), one fake.
    _video(folder / "no_frames.mp4", 0)
    _video(folder / "audio_only.mp4", 0, audio_only=True)
    (folder / "fake_video.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 50)
    for name in ("no_frames.mp4", "audio_only.mp4", "fake_video.mp4"):
        out[name] = (folder / name, "video")
    # Weights: bytes that fail the manifest's sha256, and a pickle that would run code.
    (folder / "tampered.pth").write_bytes(b"\x80\x02}q\x00." + b"tampered" * 100)
    with open(folder / "pickle_payload.pth", "wb") as fh:
        pickle.dump({"model.1.weight": _Payload()}, fh)
    out["tampered.pth"] = (folder / "tampered.pth", "weights")
    out["pickle_payload.pth"] = (folder / "pickle_payload.pth", "weights")
    return out


EXPECT_ERROR = {"empty.png", "truncated.jpg", "truncated.png", "not_an_image.png", "bomb.png"}


# ---- hostile inputs (issue 12): odd videos, non-images in image slots, bombs hidden in metadata -------------------

def _png_chunk(tag: bytes, data: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def _png_with_chunk(png: bytes, tag: bytes, data: bytes) -> bytes:
    """``png`` with one more chunk right after IHDR (8-byte signature + 25-byte IHDR chunk)."""
    return png[:33] + _png_chunk(tag, data) + png[33:]


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width`` x ``height`` pixels (the pixel data is a few bytes)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + _png_chunk(b"IEND", b""))


def _wav(seconds: float = 0.2, rate: int = 8000) -> bytes:
    import wave

    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x00\x00" * int(seconds * rate))
    return buf.getvalue()


def _clip(path: Path, width: int, height: int, frames: int, fps: int = 10, codec: str = "libx264",
          faststart: bool = False, crf: int = 51) -> None:
    """A small moving-gradient clip; 4K ones at the lowest quality (a 10 s 4K clip is about 20 KB)."""
    import av

    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", format="mp4", options=options) as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "crf": str(crf)}
        ch, cw = (height + 1) // 2, (width + 1) // 2
        ramp = np.linspace(16, 235, width).astype(np.uint8)
        for i in range(frames):
            y = np.broadcast_to(np.roll(ramp, 7 * i), (height, width)).copy()
            y[height // 4: height // 2, (i * width // 20) % width:][:, : max(1, width // 8)] = 235
            planes = np.concatenate([y.reshape(-1), np.full(2 * ch * cw, 128, np.uint8)])
            frame = av.VideoFrame(width, height, "yuv420p")
            offset = 0
            for plane, (pw, ph) in zip(frame.planes, ((width, height), (cw, ch), (cw, ch))):
                rows = planes[offset: offset + pw * ph].reshape(ph, pw)
                offset += pw * ph
                buf = np.zeros((ph, plane.line_size), np.uint8)
                buf[:, :pw] = rows
                plane.update(buf.tobytes())
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


HOSTILE_IMAGES = {  # name: expected outcome in a slot that takes images ("ok", "error" or "either")
    "truncated.jpg": "error", "truncated.png": "error", "audio_only.wav": "error", "iccp_bomb.png": "error",
    "ztxt_bomb.png": "error", "claims_100000x100000.png": "error", "cmyk.tif": "ok", "float.tif": "ok",
    "wide_20000x8.png": "either",
}
HOSTILE_VIDEOS = {  # name: expected outcome in a slot that takes videos
    "truncated_faststart.mp4": "ok", "clip_4k_10s.mp4": "ok", "one_by_one.mp4": "error", "two_by_two.mp4": "error",
    "wide_1920x2.mp4": "error", "svg_as_video.svg": "error", "audio_only.mp4": "error",
}


def make_hostile_corpus(folder: Path) -> dict[str, Path]:
    """Write the hostile inputs of HOSTILE_IMAGES and HOSTILE_VIDEOS (a few hundred KB in all); returns name -> path."""
    import zlib

    folder.mkdir(parents=True, exist_ok=True)
    photo = _photo()
    png, jpeg = _save(photo, "PNG"), _save(photo, "JPEG", quality=90)
    bomb = zlib.compress(b"\x00" * (16 << 20), 9)  # 16 MB of zeros in ~16 KB: past Pillow's MAX_TEXT_CHUNK (1 MB)
    grey = (np.linspace(0.0, 1.0, 96 * 64, dtype=np.float32).reshape(64, 96))
    data = {
        "truncated.jpg": jpeg[: len(jpeg) // 3],
        "truncated.png": png[: len(png) // 3],
        "audio_only.wav": _wav(),
        "iccp_bomb.png": _png_with_chunk(png, b"iCCP", b"icc\x00\x00" + bomb),
        "ztxt_bomb.png": _png_with_chunk(png, b"zTXt", b"Comment\x00\x00" + bomb),
        "claims_100000x100000.png": _png_claiming(100000, 100000),
        "cmyk.tif": _save(photo.convert("CMYK"), "TIFF"),
        "float.tif": _save(Image.fromarray(grey, "F"), "TIFF"),
        "wide_20000x8.png": _save(Image.new("RGB", (20000, 8), (90, 140, 200)), "PNG"),
        "svg_as_video.svg": b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48">'
                            b'<rect width="64" height="48" fill="red"/></svg>',
    }
    out = {}
    for name, blob in data.items():
        (folder / name).write_bytes(blob)
        out[name] = folder / name
    full = folder / "full_faststart.mp4"
    _clip(full, 160, 120, 30, faststart=True, crf=20)
    blob = full.read_bytes()
    (folder / "truncated_faststart.mp4").write_bytes(blob[: len(blob) // 2])  # moov first, half the frames missing
    full.unlink()
    _clip(folder / "clip_4k_10s.mp4", 3840, 2160, 10, fps=1)
    _clip(folder / "one_by_one.mp4", 1, 1, 3, codec="mpeg4")
    _clip(folder / "two_by_two.mp4", 2, 2, 3)
    _clip(folder / "wide_1920x2.mp4", 1920, 2, 3)
    _video(folder / "audio_only.mp4", 0, audio_only=True)
    for name in ("truncated_faststart.mp4", "clip_4k_10s.mp4", "one_by_one.mp4", "two_by_two.mp4", "wide_1920x2.mp4",
                 "audio_only.mp4"):
        out[name] = folder / name
    assert set(out) == set(HOSTILE_IMAGES) | set(HOSTILE_VIDEOS)
    return out
