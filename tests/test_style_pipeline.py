"""Style-transfer pipeline: interpolation, colour preservation, spatial control, alpha, tiling, the style cache,
any input size, video and webcam frames. Tiny random-weight models on CPU."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from engine import imageio
from engine.errors import InputError
from engine.models import adain as A
from engine.pipelines import style as S


@pytest.fixture(scope="module")
def model():
    enc, dec = A.random_state_dicts(seed=0, full_encoder=False)  # well-scaled random weights, official layout
    return A.AdaIN(A.encoder_from_state_dict(enc), A.decoder_from_state_dict(dec))


@pytest.fixture()
def pipe(model):
    return S.StyleTransfer(model, device="cpu")


def _img(seed: int, w: int, h: int, tint=(1.0, 1.0, 1.0)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.random((h // 4 + 1, w // 4 + 1, 3))
    arr = np.asarray(Image.fromarray((base * 255).astype(np.uint8)).resize((w, h), Image.Resampling.BILINEAR))
    return np.clip(arr * np.asarray(tint), 0, 255).astype(np.uint8)


def _stats(mean: float, std: float, c: int = 512):
    return (torch.full((1, c, 1, 1), mean), torch.full((1, c, 1, 1), std))


# ---- interpolation weights -----------------------------------------------------------------------------------


def test_weights_are_normalised_and_validated():
    assert S.normalise_weights([1, 1, 2], 3) == [0.25, 0.25, 0.5]
    assert S.normalise_weights(None, 4) == [0.25] * 4
    assert sum(S.normalise_weights([3, 7], 2)) == pytest.approx(1.0)
    for bad in ([1, -1], [0, 0], [1, float("nan")], [1]):
        with pytest.raises(InputError):
            S.normalise_weights(bad, 2)


def test_interpolation_is_the_weighted_sum_of_adain_outputs():
    gen = torch.Generator().manual_seed(0)
    fc = torch.randn(1, 16, 6, 5, generator=gen) * 2 + 1
    styles = [torch.randn(1, 16, 7, 7, generator=gen) * (k + 1) + k for k in range(3)]
    stats = [A.mean_std(s) for s in styles]
    t = S.target_features(fc, stats, weights=[2, 1, 1])  # normalised to [0.5, 0.25, 0.25]
    ref = 0.5 * A.adain(fc, styles[0]) + 0.25 * A.adain(fc, styles[1]) + 0.25 * A.adain(fc, styles[2])
    assert torch.allclose(t, ref, atol=1e-5)
    # unnormalised weights give the same result as their normalised version; a one-hot weight = that style alone
    assert torch.allclose(S.target_features(fc, stats, weights=[20, 10, 10]), t, atol=1e-5)
    assert torch.allclose(S.target_features(fc, stats, weights=[0, 1, 0]), A.adain(fc, styles[1]), atol=1e-5)
    # alpha blends linearly with the content features
    t3 = S.target_features(fc, stats, weights=[2, 1, 1], alpha=0.3)
    assert torch.allclose(t3, 0.3 * ref + 0.7 * fc, atol=1e-5)


# ---- colour preservation -------------------------------------------------------------------------------------


def test_color_preservation_moves_style_colour_statistics_onto_the_content():
    rng = np.random.default_rng(0)
    content = torch.from_numpy(rng.random((3, 40, 30))).float()
    content[1] = 0.6 * content[0] + 0.2 * content[1]           # correlated channels
    style = torch.from_numpy(rng.random((3, 25, 50)) ** 3).float()
    style[2] = 1 - style[0] * 0.8 + 0.3 * style[2]             # anti-correlated, different means
    out = S.match_color(style, content)
    assert out.shape == style.shape

    def mean_cov(x):
        f = x.reshape(3, -1).double()
        return f.mean(1), torch.cov(f)

    m_c, cov_c = mean_cov(content)
    m_s, cov_s = mean_cov(style)
    m_o, cov_o = mean_cov(out)
    assert torch.allclose(m_o, m_c, atol=1e-6)                 # means match exactly
    assert not torch.allclose(m_s, m_c, atol=0.05)
    # covariance: close to the content's, far from the style's
    assert torch.linalg.norm(cov_o - cov_c) < 0.06 * torch.linalg.norm(cov_c)   # + I keeps it slightly off
    assert torch.linalg.norm(cov_s - cov_c) > 0.3 * torch.linalg.norm(cov_c)

    # exact: with C = F F^T + I (standardised colours), the standardised output's scatter is
    # C_c^1/2 C_s^-1/2 (C_s - I) C_s^-1/2 C_c^1/2 = C_c - C_c^1/2 C_s^-1 C_c^1/2
    def scatter_plus_eye(x):
        f = x.reshape(3, -1).double()
        f = (f - f.mean(1, keepdim=True)) / f.std(1, keepdim=True)
        return f @ f.T + torch.eye(3, dtype=torch.float64)

    c_c, c_s = scatter_plus_eye(content), scatter_plus_eye(style)
    root = S._sqrtm_psd(c_c)
    expected = c_c - root @ torch.linalg.inv(c_s) @ root
    f_o = out.reshape(3, -1).double()
    f_o = (f_o - f_o.mean(1, keepdim=True)) / content.reshape(3, -1).double().std(1, keepdim=True)
    assert torch.allclose(f_o @ f_o.T, expected, rtol=1e-6, atol=1e-6)


def test_color_preservation_recolours_the_style_before_encoding(pipe):
    content, style = _img(1, 40, 32, tint=(1.0, 0.4, 0.2)), _img(2, 48, 48, tint=(0.2, 0.5, 1.0))
    plain, _ = pipe.style_stats(style, style_size=0)
    x = imageio.pil_to_tensor(content)
    kept, _ = pipe.style_stats(style, style_size=0, color_ref=x, color_key="c1")
    recoloured = S.match_color(imageio.pil_to_tensor(style), x)
    with torch.inference_mode():
        direct = A.mean_std(pipe.model.encoder(recoloured))
    assert torch.allclose(kept[0], direct[0], atol=1e-5) and torch.allclose(kept[1], direct[1], atol=1e-5)
    assert not torch.allclose(kept[0], plain[0], atol=1e-3)


# ---- spatial control -----------------------------------------------------------------------------------------


def test_mask_routes_each_region_to_its_style():
    gen = torch.Generator().manual_seed(3)
    fc = torch.randn(1, 8, 6, 10, generator=gen)
    mask = torch.zeros(1, 1, 6, 10)
    mask[..., :, :4] = 1.0
    fg, bg = _stats(5.0, 0.5, 8), _stats(-3.0, 2.0, 8)
    t = S.target_features(fc, [fg, bg], mask=mask)
    m_fg, s_fg = A.mean_std(t, mask)
    m_bg, s_bg = A.mean_std(t, 1 - mask)
    assert torch.allclose(m_fg, torch.full_like(m_fg, 5.0), atol=1e-4)
    assert torch.allclose(m_bg, torch.full_like(m_bg, -3.0), atol=1e-4)
    assert torch.allclose(s_fg, torch.full_like(s_fg, 0.5), rtol=1e-2)
    assert torch.allclose(s_bg, torch.full_like(s_bg, 2.0), rtol=1e-2)
    # each region is AdaIN of that region's content features alone
    sel = mask[0, 0].bool()
    region = fc[..., sel].unsqueeze(-1)
    ref = (region - region.mean(-2, keepdim=True)) / (region.var(-2, keepdim=True) + 1e-5).sqrt() * 0.5 + 5.0
    assert torch.allclose(t[..., sel].unsqueeze(-1), ref, atol=1e-4)
    with pytest.raises(InputError):
        S.target_features(fc, [fg], mask=mask)


def test_mask_array_reads_painted_layers_and_mask_files():
    layer = np.zeros((20, 30, 4), np.uint8)
    layer[5:10, 0:12] = (255, 0, 0, 255)          # painted strokes: alpha > 0
    m = S.mask_array(layer, (30, 20))
    assert m.shape == (20, 30) and m[5:10, :12].all() and m.sum() == 60
    bw = np.zeros((40, 60), np.uint8)
    bw[:, 30:] = 255                                # a black/white mask file, other size: resized
    m2 = S.mask_array(bw, (30, 20))
    assert m2[:, 15:].all() and not m2[:, :15].any()


def test_spatial_control_end_to_end(pipe):
    content = _img(4, 64, 48)
    style_a, style_b = _img(5, 48, 48, tint=(1, 0.2, 0.2)), _img(6, 48, 48, tint=(0.2, 0.2, 1))
    mask = np.zeros((48, 64), bool)
    mask[:, :32] = True
    both = np.asarray(pipe(content, [style_a, style_b], mask=mask, style_size=0), np.float32)
    only_a = np.asarray(pipe(content, [style_a, style_b], mask=np.ones_like(mask), style_size=0), np.float32)
    only_b = np.asarray(pipe(content, [style_a, style_b], mask=np.zeros_like(mask), style_size=0), np.float32)
    single_a = np.asarray(pipe(content, [style_a], style_size=0), np.float32)
    assert np.abs(only_a - single_a).max() <= 1        # full mask = style A everywhere
    # away from the boundary, the masked half looks like style A's result and the other half like B's
    left, right = (slice(None), slice(0, 16)), (slice(None), slice(48, 64))
    assert np.abs(both[left] - only_a[left]).mean() < np.abs(both[left] - only_b[left]).mean()
    assert np.abs(both[right] - only_b[right]).mean() < np.abs(both[right] - only_a[right]).mean()
    with pytest.raises(InputError):
        pipe(content, [style_a], mask=mask)


# ---- alpha, sizes, tiling ------------------------------------------------------------------------------------


def test_alpha_zero_with_same_content_and_style_is_the_reconstruction(pipe, model):
    content = _img(7, 45, 37)                          # not a multiple of 8: decoded at 48x40, cropped back
    out = pipe.run(content, [content], alpha=0.0, style_size=0).image
    x = imageio.pil_to_tensor(content)
    with torch.inference_mode():
        recon = model.decoder(model.encoder(x))[..., :37, :45]
    assert out.size == (45, 37)
    assert np.abs(np.asarray(out, np.int16) - imageio.tensor_to_numpy(recon).astype(np.int16)).max() <= 1
    full = pipe.run(content, [_img(8, 40, 40)], alpha=1.0, style_size=0).image
    assert np.abs(np.asarray(full, np.int16) - np.asarray(out, np.int16)).mean() > 2


@pytest.mark.parametrize("size", [(300, 7), (5, 90), (1, 1), (33, 17)])
def test_any_size_and_aspect_ratio(pipe, size):
    w, h = size
    out = pipe.run(np.full((h, w, 3), 128, np.uint8), [_img(9, 32, 32)], max_side=0, style_size=0)
    assert out.image.size == (w, h)


def test_max_side_shrinks_and_is_capped(pipe):
    res = pipe.run(_img(10, 200, 100), [_img(11, 32, 32)], max_side=64, style_size=0)
    assert res.image.size == (64, 32) and res.info["resized_from"] == (200, 100)
    assert S.MAX_SIDE_LIMIT >= 2048


def test_tiled_encoding_and_decoding_equal_the_whole_image(model):
    x = torch.rand(1, 3, 70, 139)                      # not multiples of 8: ceil-mode pooling at the far edges
    with torch.inference_mode():
        feats = model.encoder(x)
        tiled = S.encode_tiled(model.encoder, x, 64)
        assert tiled.shape == feats.shape == (1, 512, 9, 18)
        assert torch.allclose(tiled, feats, atol=1e-4)
        # the halo matters: too little context gives visible seams
        assert not torch.allclose(S.encode_tiled(model.encoder, x, 64, halo=16), feats, atol=1e-2)
        out = model.decoder(feats)
        assert torch.allclose(S.decode_tiled(model.decoder, feats, 64), out, atol=1e-4)
        assert not torch.allclose(S.decode_tiled(model.decoder, feats, 64, halo=1), out, atol=1e-2)


def test_tiled_pipeline_matches_untiled(model):
    content, style = _img(12, 100, 70), _img(13, 40, 40)
    whole = S.StyleTransfer(model, device="cpu", tile_size=None).run(content, [style], style_size=0)
    tiled = S.StyleTransfer(model, device="cpu", tile_size=64).run(content, [style], style_size=0)
    assert tiled.info["tiled"] and not whole.info["tiled"]
    assert np.abs(np.asarray(whole.image, np.int16) - np.asarray(tiled.image, np.int16)).max() <= 1


# ---- style statistics cache ----------------------------------------------------------------------------------


def test_second_content_with_the_same_style_skips_style_encoding(pipe, model):
    calls = []
    hook = model.encoder.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    try:
        style = _img(14, 56, 40)
        r1 = pipe.run(_img(15, 32, 32), [style], style_size=32)
        assert len(calls) == 2 and r1.info["style_cache_hits"] == 0       # content + style
        calls.clear()
        r2 = pipe.run(_img(16, 40, 24), [style.copy()], style_size=32)     # same pixels, another array
        assert len(calls) == 1 and r2.info["style_cache_hits"] == 1       # content only
        calls.clear()
        pipe.run(_img(16, 40, 24), [style], style_size=48)                # size settings are part of the key
        assert len(calls) == 2
        calls.clear()
        pipe.run(_img(17, 40, 24), [style], style_size=32, preserve_color=True)   # recoloured: new key
        pipe.run(_img(18, 40, 24), [style], style_size=32, preserve_color=True)   # another content: new key
        assert len(calls) == 4
    finally:
        hook.remove()
    info = pipe.cache_info()
    assert info["hits"] == 1 and info["entries"] == 4
    pipe.clear_cache()
    assert pipe.cache_info()["entries"] == 0


def test_cached_result_equals_uncached(model):
    content, style = _img(19, 48, 40), _img(20, 40, 56)
    cached = S.StyleTransfer(model, device="cpu")
    cached(_img(21, 32, 32), [style], style_size=32)                      # fill the cache
    a = np.asarray(cached(content, [style], style_size=32))
    b = np.asarray(S.StyleTransfer(model, device="cpu", cache_size=0)(content, [style], style_size=32))
    assert np.array_equal(a, b)


def test_a_style_file_is_decoded_once_across_webcam_frames(pipe, tmp_path, monkeypatch):
    """A webcam stream passes the same style file with every frame: it is decoded and hashed once, and decoded
    again only when the file changes (another picture under the same name)."""
    path = tmp_path / "style.png"
    Image.fromarray(_img(30, 32, 32)).save(path)
    decoded = []
    real = imageio.load_image
    monkeypatch.setattr(imageio, "load_image", lambda x, *a, **k: (decoded.append(x), real(x, *a, **k))[1])
    frame = _img(31, 48, 40)
    outs, state = [], None
    for _ in range(4):
        out, state = pipe.stylize_frame(frame, [str(path)], state, max_side=48, style_size=0)
        outs.append(out)
    assert sum(1 for x in decoded if isinstance(x, str) and x == str(path)) == 1, decoded
    assert all(np.array_equal(outs[0], o) for o in outs[1:])
    Image.fromarray(_img(32, 40, 24)).save(path)          # another picture: new size and time, new statistics
    os.utime(path, ns=(10**18, 10**18))
    changed, _ = pipe.stylize_frame(frame, [str(path)], state, max_side=48, style_size=0)
    assert sum(1 for x in decoded if isinstance(x, str) and x == str(path)) == 2     # decoded (and hashed) once more
    assert not np.array_equal(changed, outs[0])


# ---- bad input -----------------------------------------------------------------------------------------------


def test_bad_inputs_raise_input_errors(pipe, tmp_path):
    img = _img(22, 32, 32)
    for kwargs in ({"alpha": 1.5}, {"alpha": -0.1}, {"weights": [1, 2]}):
        with pytest.raises(InputError):
            pipe.run(img, [img], **kwargs)
    with pytest.raises(InputError):
        pipe.run(img, [])
    with pytest.raises(InputError):
        pipe.run(None, [img])
    bogus = tmp_path / "not_a_video.mp4"
    bogus.write_bytes(b"this is not a video")
    with pytest.raises(InputError):
        pipe.stylize_video(bogus, [img])


# ---- video and webcam ----------------------------------------------------------------------------------------


def test_video_in_video_out_with_progress(pipe, tmp_path):
    av = pytest.importorskip("av")
    from engine import videoio

    src = tmp_path / "in.mp4"
    with videoio.VideoWriter(src, fps=12) as w:
        for i in range(8):
            w.write(np.roll(_img(23, 48, 32), 2 * i, axis=1))
    seen = []
    res = pipe.stylize_video(src, [_img(24, 32, 32)], max_frames=5, max_side=40, style_size=0, smooth=0.5,
                             progress=lambda f, d: seen.append(f))
    assert res.frames == 5 and res.path.is_file() and res.size == (40, 27)
    fractions = [f for f in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) >= 5
    with av.open(str(res.path)) as c:
        stream = c.streams.video[0]
        assert stream.codec_context.name in ("h264", "mpeg4")
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(stream)]
    assert len(frames) == 5 and frames[0].shape == (28, 40, 3)   # odd side padded for yuv420p
    short = pipe.stylize_video(src, [_img(24, 32, 32)], max_seconds=0.25, max_side=32, style_size=0)
    assert short.frames == 3


def test_webcam_frames_and_flicker_smoothing(pipe):
    style = _img(25, 32, 32)
    f1, f2 = _img(26, 64, 48), _img(27, 64, 48, tint=(0.5, 0.5, 0.5))
    out1, state = pipe.stylize_frame(f1, [style], None, smooth=0.75, max_side=64, style_size=0)
    assert out1.shape == (48, 64, 3) and out1.dtype == np.uint8 and state.frames == 1
    m1 = state.mean.copy()
    out2, state = pipe.stylize_frame(f2, [style], state, smooth=0.75, max_side=64, style_size=0)
    with torch.inference_mode():
        own2 = A.mean_std(pipe.model.encoder(imageio.pil_to_tensor(f2)))
    np.testing.assert_allclose(state.mean, 0.75 * m1 + 0.25 * own2[0].numpy(), rtol=1e-4, atol=1e-6)
    # smoothing changes the second frame (its normalisation uses the running statistics), off = per-frame stats
    plain, _ = pipe.stylize_frame(f2, [style], None, smooth=0.0, max_side=64, style_size=0)
    assert np.abs(out2.astype(np.int16) - plain.astype(np.int16)).mean() > 0.5
    out_no_state, st = pipe.stylize_frame(f2, [style], None, smooth=0.0, max_side=64, style_size=0)
    assert st.mean is None and np.array_equal(out_no_state, plain)


def test_official_spatial_control_example(pipe, shared_data):
    """The papers' mask example: mask.png over blonde_girl.jpg, two styles; the mask splits the image."""
    root = shared_data / "adain-examples" / "input"
    content = root / "content" / "blonde_girl.jpg"
    if not content.is_file():
        pytest.skip("adain-examples not in the data folder")
    img = imageio.resize_max_side(imageio.load_image(content), 64)
    mask = S.mask_array(root / "mask" / "mask.png", img.size)
    assert 0.2 < mask.mean() < 0.9
    styles = [root / "style" / "woman_in_peasant_dress_cropped.jpg", root / "style" / "mondrian_cropped.jpg"]
    res = pipe.run(img, styles, mask=mask, style_size=64, max_side=64)
    assert res.info["spatial_control"] and res.image.size == img.size


def test_out_of_memory_halves_the_tile_size_then_gives_a_clear_error(pipe):
    from engine.errors import ModelError

    seen = []

    def fn(arg, tile):
        seen.append(tile)
        if tile is None or tile > 300:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return tile

    x = torch.zeros(1, 3, 8, 8)
    pipe.tile_size = None
    assert pipe._run_tiled(fn, x, 2000) == 256 and seen == [None, 1000, 496, 256]   # floor: MIN_TILE

    def never(arg, tile):
        raise RuntimeError("CUDA out of memory")

    with pytest.raises(ModelError):
        pipe._run_tiled(never, x, 2000)

    def other(arg, tile):
        raise RuntimeError("some other failure")

    with pytest.raises(RuntimeError, match="other failure"):
        pipe._run_tiled(other, x, 2000)
