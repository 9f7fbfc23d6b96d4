"""Image validation on a corpus of odd inputs generated here (no downloads)."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from engine import imageio
from engine.errors import InputError


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture()
def photo() -> Image.Image:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    return Image.fromarray(arr, "RGB")


def test_rgba_alpha_is_composited_on_white():
    arr = np.zeros((4, 4, 4), np.uint8)
    arr[..., 0] = 200
    arr[:2, :, 3] = 255  # top half opaque red-ish, bottom half fully transparent
    out = np.asarray(imageio.load_image(_bytes(Image.fromarray(arr, "RGBA"), "PNG")))
    assert out.shape == (4, 4, 3)
    assert (out[:2] == [200, 0, 0]).all() and (out[2:] == 255).all()


def test_palette_with_transparency_and_la_and_greyscale():
    p = Image.new("P", (5, 5), 0)
    p.putpalette([10, 20, 30] + [0] * 765)
    p.info["transparency"] = 0
    assert (np.asarray(imageio.load_image(_bytes(p, "PNG"))) == 255).all()
    la = Image.fromarray(np.stack([np.full((3, 3), 50, np.uint8), np.full((3, 3), 255, np.uint8)], -1), "LA")
    assert (np.asarray(imageio.load_image(_bytes(la, "PNG"))) == 50).all()
    grey = Image.fromarray(np.full((6, 7), 77, np.uint8), "L")
    out = np.asarray(imageio.load_image(_bytes(grey, "JPEG", quality=100)))
    assert out.shape == (6, 7, 3) and abs(int(out.mean()) - 77) <= 1


def test_sixteen_bit_png_keeps_its_range():
    arr = np.linspace(0, 65535, 64 * 8, dtype=np.uint16).reshape(8, 64)
    img = Image.fromarray(arr)
    out = np.asarray(imageio.load_image(_bytes(img, "PNG")))[..., 0]
    assert out.min() == 0 and out.max() == 255  # scaled, not clipped to white
    assert np.all(np.diff(out[0].astype(int)) >= 0)


def test_cmyk_jpeg_becomes_rgb(photo):
    out = imageio.load_image(_bytes(photo.convert("CMYK"), "JPEG", quality=95))
    assert out.mode == "RGB" and out.size == photo.size
    assert np.abs(np.asarray(out, float) - np.asarray(photo, float)).mean() < 40


def test_exif_orientation_is_applied(photo):
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    out = imageio.load_image(_bytes(photo, "JPEG", exif=exif))
    assert out.size == (photo.height, photo.width)


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    out = np.asarray(imageio.load_image(buf.getvalue()))
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


@pytest.mark.parametrize("data, needle", [
    (b"", "empty"),
    (b"this is not an image at all", "not an image"),
])
def test_bad_bytes_give_clear_errors(data, needle):
    with pytest.raises(InputError, match=needle):
        imageio.load_image(data)


def test_truncated_files_give_clear_errors(photo):
    for fmt in ("JPEG", "PNG"):
        data = _bytes(photo, fmt)
        with pytest.raises(InputError, match="truncated or corrupt|not an image"):
            imageio.load_image(data[: len(data) // 3])


def test_decompression_bomb_is_refused_before_decoding():
    img = Image.new("L", (10000, 10000))
    data = _bytes(img, "PNG", optimize=True)
    assert len(data) < 1_000_000
    with pytest.raises(InputError, match="megapixels|decompression"):
        imageio.load_image(data, max_pixels=20_000_000)


def test_tiny_and_thin_images(photo):
    one = imageio.load_image(_bytes(Image.new("RGB", (1, 1), (1, 2, 3)), "PNG"))
    assert one.size == (1, 1)
    with pytest.raises(InputError, match="at least 8"):
        imageio.load_image(Image.new("RGB", (1, 50)), min_side=8)
    thin = imageio.load_image(Image.new("RGB", (20000, 20)))
    assert thin.size == (20000, 20)


def test_wrong_file_path_and_arrays(tmp_path):
    with pytest.raises(InputError, match="No such"):
        imageio.load_image(tmp_path / "nope.png")
    (tmp_path / "fake.jpg").write_text("hello")
    with pytest.raises(InputError):
        imageio.load_image(tmp_path / "fake.jpg")
    f = imageio.load_image(np.full((3, 3), 0.5, np.float32))
    assert np.asarray(f)[0, 0, 0] in (127, 128)
    with pytest.raises(InputError, match="shape"):
        imageio.load_image(np.zeros((3, 3, 2), np.uint8))


def test_resize_max_side_keeps_aspect_and_never_enlarges():
    img = Image.new("RGB", (1000, 500))
    assert imageio.resize_max_side(img, 256).size == (256, 128)
    assert imageio.resize_max_side(img, 4000).size == (1000, 500)
    assert imageio.resize_max_side(img, 0).size == (1000, 500)
    assert imageio.resize_short_side(img, 250).size == (500, 250)


@pytest.mark.parametrize("h, w, m", [(257, 333, 4), (5, 9, 4), (2, 300, 8), (64, 64, 4)])
def test_pad_to_multiple_and_crop_back(h, w, m):
    t = torch.rand(1, 3, h, w)
    padded, size = imageio.pad_to_multiple(t, m)
    assert padded.shape[-2] % m == 0 and padded.shape[-1] % m == 0
    assert torch.equal(imageio.crop_to(padded, size), t)


def test_tensor_round_trip(photo):
    t = imageio.pil_to_tensor(photo)
    assert t.shape == (1, 3, 40, 60) and t.dtype == torch.float32 and 0 <= t.min() and t.max() <= 1
    assert np.array_equal(imageio.tensor_to_numpy(t), np.asarray(photo))
