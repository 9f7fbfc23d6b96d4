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
