"""Translation pipeline with random weights: sizes, validation, galleries, folders (CLI) and video."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import InputError
from engine.models.mobile_resnet import MobileResnetGenerator
from engine.models.resnet_generator import CUTGenerator, CycleGANGenerator
from engine.pipelines import translate as T
from engine.translate_cli import main as cli_main


def _rgb(h, w, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


@pytest.mark.parametrize("factory", [lambda: CycleGANGenerator(ngf=8, n_blocks=2), lambda: CUTGenerator(ngf=8, n_blocks=2),
                                     lambda: MobileResnetGenerator("4_4_8_4_8_8_4_4")],
                         ids=["cyclegan", "cut", "mobile"])
@pytest.mark.parametrize("h,w", [(257, 333), (8, 8), (9, 31), (103, 10)])
def test_output_size_equals_input_size(factory, h, w):
    torch.manual_seed(0)
    model = factory().eval()
    x = torch.rand(1, 3, h, w)
    y = T.run_generator(model, x, device="cpu")
    assert y.shape == x.shape
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


def test_no_padding_path_is_exactly_the_generator():
    torch.manual_seed(0)
    model = MobileResnetGenerator("4_4_8_4_8_8_4_4").eval()
    x = torch.rand(2, 3, 32, 48)
    with torch.no_grad():
        direct = (model(x * 2 - 1) + 1) / 2
    torch.testing.assert_close(T.run_generator(model, x, device="cpu"), direct)   # default: fp32


def test_fast_path_is_an_explicit_choice_and_stays_close_to_fp32(monkeypatch):
    torch.manual_seed(0)
    model = MobileResnetGenerator("8_8_16_8_16_16_8_8").eval()
    x = torch.rand(1, 3, 40, 56)
    exact = T.run_generator(model, x, device="cpu", precision="fp32")
    monkeypatch.setenv("ENGINE_CPU_BF16", "1")
    assert T.DEFAULT_PRECISION == "fp32"
    assert T.inference_plan(torch.device("cpu")) == (False, None)              # the default is plain fp32
    assert torch.equal(T.run_generator(model, x, device="cpu"), exact)
    assert T.inference_plan(torch.device("cpu"), "fast") == (False, torch.bfloat16)
    fast = T.run_generator(model, x, device="cpu", precision="fast")
    assert not torch.equal(fast, exact) and (fast - exact).abs().mean() < 2 / 255
    monkeypatch.setenv("ENGINE_CPU_BF16", "0")                                  # no native bf16: fast = fp32
    assert T.inference_plan(torch.device("cpu"), "fast") == (False, None)
    assert torch.equal(T.run_generator(model, x, device="cpu", precision="fast"), exact)
    with pytest.raises(InputError, match="precision"):
        T.translate(_rgb(32, 32), "gancompression-horse2zebra", precision="half")


def test_padding_keeps_the_top_left_consistent():
    # the bottom/right reflect pad only changes pixels near the padded border (the receptive field is local
    # up to instance-norm statistics), so most of the image matches a run on the already aligned crop
    torch.manual_seed(0)
    model = MobileResnetGenerator("4_4_8_4_8_8_4_4").eval()
    x = torch.rand(1, 3, 64, 64)
    full = T.run_generator(model, x, device="cpu")
    odd = T.run_generator(model, x[..., :63, :62], device="cpu")
    assert odd.shape[-2:] == (63, 62)
    diff = (full[..., :40, :40] - odd[..., :40, :40]).abs().mean()
    assert diff < 0.05


def test_pipeline_translates_any_size(random_weights):
    out = T.translate(_rgb(257, 333), "gancompression-horse2zebra", max_side=0)
    assert out.shape == (257, 333, 3) and out.dtype == np.uint8
    inp, out = T.translate(_rgb(600, 400), "gancompression-horse2zebra", max_side=300, return_input=True)
    assert inp.shape == out.shape == (300, 200, 3)


@pytest.mark.parametrize("shape", [(1, 50, 3), (50, 1, 3), (7, 200, 3)])
def test_thin_images_are_rejected_clearly(random_weights, shape):
    with pytest.raises(InputError, match="at least 8 pixels"):
        T.translate(np.zeros(shape, np.uint8), "gancompression-horse2zebra")


def test_max_side_that_would_make_an_image_too_thin_is_rejected(random_weights):
    with pytest.raises(InputError, match="max side"):
        T.translate(_rgb(9, 2000), "gancompression-horse2zebra", max_side=200)
    with pytest.raises(InputError, match="max side"):
        T.translate(_rgb(64, 64), "gancompression-horse2zebra", max_side=4)


def test_bad_inputs_and_models(random_weights):
    with pytest.raises(InputError):
        T.translate(b"", "gancompression-horse2zebra")
    with pytest.raises(InputError):
        T.translate(b"\x89PNG\r\n\x1a\n broken", "gancompression-horse2zebra")
    with pytest.raises(InputError, match="not a translation model"):
        T.translate(_rgb(16, 16), "adain")
    with pytest.raises(InputError, match="Unknown model"):
        T.translate(_rgb(16, 16), "no-such-model")


def test_gallery_skips_unreadable_items_and_reports_progress(random_weights, tmp_path):
    good = tmp_path / "horse.png"
    Image.fromarray(_rgb(40, 60, 1)).save(good)
    png = io.BytesIO()
    Image.fromarray(_rgb(30, 20, 2)).save(png, format="PNG")
    seen = []
    res = T.translate_many([_rgb(33, 47), b"garbage", (str(good), "caption"), png.getvalue(), np.zeros((1, 9, 3))],
                           "gancompression-horse2zebra", progress=lambda f, d: seen.append(f))
    assert res.ok == 3
    assert [o.shape for o in res.outputs] == [(33, 47, 3), (40, 60, 3), (30, 20, 3)]
    assert [i.shape for i in res.inputs] == [(33, 47, 3), (40, 60, 3), (30, 20, 3)]
    assert res.names[1] == "horse.png"
    assert len(res.errors) == 2 and res.errors[0].startswith("image 2:")
    assert seen == sorted(seen) and seen[-1] == pytest.approx(1.0)
    with pytest.raises(InputError):
        T.translate_many([], "gancompression-horse2zebra")


def test_cli_folder_in_folder_out(random_weights, tmp_path, capsys):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        Image.fromarray(_rgb(37, 29 + i, i)).save(src / f"h{i}.jpg")
    code = cli_main(["--model", "gancompression-horse2zebra", "--input", str(src), "--output", str(dst)])
    assert code == 0
    assert sorted(p.name for p in dst.iterdir()) == ["h0.png", "h1.png"]
    assert Image.open(dst / "h1.png").size == (30, 37)

    (src / "broken.png").write_bytes(b"nope")
    Image.new("RGB", (100, 1)).save(src / "line.png")
    code = cli_main(["--input", str(src), "--output", str(dst), "--max-side", "16", "--format", "jpg"])
    captured = capsys.readouterr()
    assert code == 1
    assert "2 translated, 2 skipped" in captured.out
    assert "broken.png" in captured.out and "line.png" in captured.out
    assert "skipped broken.png" in captured.err            # reported as it happens, too
    assert max(Image.open(dst / "h0.jpg").size) == 16

    assert cli_main(["--input", str(tmp_path / "missing"), "--output", str(dst)]) == 2
    assert cli_main(["--model", "adain", "--input", str(src), "--output", str(dst)]) == 2


def test_cli_lists_models(capsys):
    assert cli_main(["--list"]) == 0
    out = capsys.readouterr().out
    for name in ("cyclegan-horse2zebra", "cyclegan-zebra2horse", "cut-horse2zebra", "fastcut-horse2zebra",
                 "gancompression-horse2zebra"):
        assert name in out


def _write_video(path, frames=30, size=(70, 45), fps=10):
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=fps)
        stream.width, stream.height = size[0] - size[0] % 2, size[1] - size[1] % 2
        stream.pix_fmt = "yuv420p"
        for i in range(frames):
            arr = np.zeros((stream.height, stream.width, 3), np.uint8)
            arr[:, : (i * 3) % stream.width] = (200, 120, 40)
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_video_is_bounded_browser_playable_and_reports_progress(random_weights, tmp_path):
    import av

    src = tmp_path / "clip.mp4"
    _write_video(src, frames=30, size=(70, 46), fps=10)
    seen = []
    res = T.translate_video(src, "gancompression-horse2zebra", max_seconds=2.0, max_side=35,
                            out_path=tmp_path / "out.mp4", progress=lambda f, d: seen.append(f))
    assert res.frames == 20 and res.truncated
    assert (res.width, res.height) == (36, 24)           # 35x23 after max-side, padded to even for yuv420p
    assert seen[-1] == pytest.approx(1.0) and seen == sorted(seen)
    with av.open(str(res.path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and s.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in c.decode(s)) == 20
        assert abs(float(s.average_rate) - 10) < 0.01
    data = res.path.read_bytes()
    assert 0 <= data.find(b"moov") < data.find(b"mdat")   # +faststart: the index comes first (streamable)


def test_short_video_is_not_truncated_and_bad_files_are_rejected(random_weights, tmp_path):
    src = tmp_path / "short.mp4"
    _write_video(src, frames=5, size=(32, 24), fps=5)
    res = T.translate_video(src, "gancompression-horse2zebra", max_seconds=10, out_path=tmp_path / "o.mp4")
    assert res.frames == 5 and not res.truncated
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"\x00" * 100)
    with pytest.raises(InputError):
        T.translate_video(bad, "gancompression-horse2zebra")
    with pytest.raises(InputError):
        T.translate_video(tmp_path / "none.mp4", "gancompression-horse2zebra")
