"""AdaIN "official pre-processing": test.py's sizes and filters (torchvision Resize on PIL, bilinear, int()),
and test.lua's spatial-control rule (nearest-neighbour mask sampling, biased statistics). Random weights in the
official pytorch-AdaIN layout, on CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.errors import InputError
from engine.models import adain as A
from engine.pipelines import style as S

transforms = pytest.importorskip("torchvision.transforms")


@pytest.fixture(scope="module")
def model():
    enc, dec = A.random_state_dicts(seed=1, full_encoder=False)
    return A.AdaIN(A.encoder_from_state_dict(enc), A.decoder_from_state_dict(dec))


def _photo(seed: int, w: int, h: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    base = (rng.random((h // 5 + 2, w // 5 + 2, 3)) * 255).astype(np.uint8)
    return Image.fromarray(base).resize((w, h), Image.Resampling.BICUBIC)


@pytest.mark.parametrize("w,h,size", [(300, 200, 512), (200, 301, 512), (97, 61, 64), (512, 512, 512),
                                      (1001, 333, 128), (64, 90, 64)])
def test_official_resize_is_torchvision_resize(w, h, size):
    img = _photo(0, w, h)
    ours, ref = S.official_resize(img, size), transforms.Resize(size)(img)
    assert ours.size == ref.size and min(ours.size) == size
    assert np.array_equal(np.asarray(ours), np.asarray(ref))


def _test_py(model, content: Image.Image, style: Image.Image, content_size: int, style_size: int, alpha: float):
    """pytorch-AdaIN test.py's path, written from its code: Resize + ToTensor, vgg, AdaIN with unbiased variance
    + eps (calc_mean_std), alpha mix, decoder, save_image's uint8 conversion (x * 255 + 0.5, clamped)."""
    c = transforms.ToTensor()(transforms.Resize(content_size)(content))[None]
    s = transforms.ToTensor()(transforms.Resize(style_size)(style))[None]

    def mean_std(f, eps=1e-5):
        n, ch = f.shape[:2]
        var = f.reshape(n, ch, -1).var(dim=2) + eps
        return f.reshape(n, ch, -1).mean(dim=2).reshape(n, ch, 1, 1), var.sqrt().reshape(n, ch, 1, 1)

    with torch.no_grad():
        fc, fs = model.encoder(c), model.encoder(s)
        (cm, cs), (sm, ss) = mean_std(fc), mean_std(fs)
        t = (fc - cm) / cs * ss + sm
        out = model.decoder(alpha * t + (1 - alpha) * fc)
    arr = out[0].mul(255).add_(0.5).clamp_(0, 255).permute(1, 2, 0).to(torch.uint8).numpy()
    return arr, c.shape[-2:]


@pytest.mark.parametrize("alpha", [1.0, 0.6])
def test_official_mode_reproduces_test_py(model, alpha):
    content, style = _photo(1, 90, 61), _photo(2, 70, 100)   # both enlarged, as test.py does
    ref, (h, w) = _test_py(model, content, style, 64, 48, alpha)
    pipe = S.StyleTransfer(model, device="cpu", tile_size=None)
    res = pipe.run(content, [style], alpha=alpha, preprocess="official", content_size=64, style_size=48)
    ours = np.asarray(res.image)
    assert ours.shape[:2] == (h, w) == (64, int(64 * 90 / 61))
    assert ref.shape[0] >= h and ref.shape[1] >= w                     # test.py keeps the 8*ceil(side/8) output
    diff = np.abs(ours.astype(int) - ref[:h, :w].astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.02                       # float summation order only
    assert res.info["preprocess"] == "official" and res.info["resized_from"] == (90, 61)
    app = pipe.run(content, [style], alpha=alpha, max_side=512, style_size=48)   # default: no enlarging
    assert app.image.size == (90, 61) and app.info["preprocess"] == "app"


def test_bad_preprocess_is_a_clear_error(model):
    pipe = S.StyleTransfer(model, device="cpu")
    with pytest.raises(InputError, match="pre-processing"):
        pipe.run(_photo(0, 32, 32), [_photo(1, 32, 32)], preprocess="lua")


def test_nearest_mask_rule_is_test_lua_scale_simple():
    rng = np.random.default_rng(3)
    mask = rng.random((45, 67)) > 0.5
    fm = S.feature_mask_nearest(mask, (6, 9))[0, 0].numpy().astype(bool)
    for j in range(6):                       # Torch image.scale 'simple': (long)(i * (float)src / (float)dst)
        for i in range(9):
            jj = min(int(np.float32(j) * (np.float32(45) / np.float32(6))), 44)
            ii = min(int(np.float32(i) * (np.float32(67) / np.float32(9))), 66)
            assert fm[j, i] == mask[jj, ii]
    same = np.zeros((64, 64), bool)
    same[::8, ::8] = True                    # a mask of the content's size: the top-left pixel of each 8x8 block
    assert S.feature_mask_nearest(same, (8, 8)).all() and not S.feature_mask(same, (8, 8)).any()


def test_official_spatial_control_uses_biased_region_statistics(model):
    torch.manual_seed(0)
    fc = torch.randn(1, 8, 5, 6) * 3 + 1
    mask = torch.zeros(1, 1, 5, 6)
    mask[..., :, :2] = 1
    fs = [torch.randn(1, 8, 4, 4) * 2, torch.randn(1, 8, 3, 5) + 4]
    styles = [S.lua_style_stats(f) for f in fs]
    t = S.target_features(fc, styles, mask=mask, biased=True)
    # test.lua: index the region's features, AdaIN module (batch-norm: biased var + eps; style std biased, no eps)
    flat, m = fc.reshape(8, -1), mask.reshape(-1).bool()
    want = torch.zeros_like(flat)
    for idx, f in ((m, fs[0]), (~m, fs[1])):
        part = flat[:, idx]
        norm = (part - part.mean(1, keepdim=True)) / (part.var(1, unbiased=False, keepdim=True) + 1e-5).sqrt()
        sf = f.reshape(8, -1)
        want[:, idx] = norm * sf.std(1, unbiased=False, keepdim=True) + sf.mean(1, keepdim=True)
    torch.testing.assert_close(t.reshape(8, -1), want, rtol=1e-5, atol=1e-5)


def test_official_mode_with_a_mask_end_to_end(model):
    pipe = S.StyleTransfer(model, device="cpu", tile_size=None)
    content = _photo(4, 80, 64)
    mask = np.zeros((64, 80), bool)
    mask[:, :34] = True                      # covers 2 of the 8 px of cells x = 32..39: nearest says yes
    styles = [_photo(5, 48, 48), _photo(6, 48, 48)]
    off = pipe.run(content, styles, mask=mask, preprocess="official", content_size=64, style_size=48)
    app = pipe.run(content, styles, mask=mask, max_side=80, style_size=48)
    assert off.info["mask_rule"].startswith("nearest") and app.info["mask_rule"] == "area majority"
    assert off.image.size == app.image.size == (80, 64)
    fa = S.feature_mask(mask, (8, 10))[0, 0].numpy()
    fn = S.feature_mask_nearest(mask, (8, 10))[0, 0].numpy()
    assert (fa != fn).sum() == 8             # the column of cells holding the boundary (x = 32..39)
    assert not np.array_equal(np.asarray(off.image), np.asarray(app.image))


def test_style_tab_offers_both_rules_and_names_the_one_used():
    from demos import style as D

    assert [v for _, v in D.PREPROCESS_CHOICES] == ["app", "official"]
    assert "test.py" in D.PREPROCESS_CHOICES[1][0] and "nearest" in D.PREPROCESS_CHOICES[1][0]
    text = D._describe({"size": (80, 64), "spatial_control": True, "styles": 2, "style_cache_hits": 0,
                        "tiled": False, "preserve_color": False, "seconds": 0.1, "device": "cpu",
                        "preprocess": "official", "mask_rule": "nearest, biased statistics (test.lua)"})
    assert "official pre-processing" in text and "mask rule: nearest" in text
