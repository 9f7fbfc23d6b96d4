"""AdaIN networks: official checkpoint layouts load strictly, and the AdaIN operation follows its formula.

The official files are not available here, so state dicts with random values in the official layout are written
to disk and loaded through the registry builder, exactly as the real files would be.
"""
from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from engine import registry, weights
from engine.errors import WeightsCorruptError
from engine.models import adain as A

OFFICIAL_VGG_BYTES = 80_102_481


@pytest.fixture(scope="module")
def random_files(tmp_path_factory):
    """vgg_normalised.pth (whole 53-module stack) and decoder.pth with random values, saved like the originals."""
    enc, dec = A.random_state_dicts(seed=1, full_encoder=True)
    folder = tmp_path_factory.mktemp("adain-weights")
    torch.save(enc, folder / "vgg_normalised.pth")
    torch.save(dec, folder / "decoder.pth")
    return folder, enc, dec


def _conv_indices(state):
    return sorted({int(k.split(".")[0]) for k in state})


def test_layouts_match_the_official_indexing():
    full = A.build_vgg_encoder(full=True)
    assert len(full) == 53
    enc_state = full.state_dict()
    assert _conv_indices(enc_state) == list(A.ENCODER_CONV_INDICES)
    assert enc_state["0.weight"].shape == (3, 3, 1, 1)
    assert enc_state["2.weight"].shape == (64, 3, 3, 3)
    assert enc_state["29.weight"].shape == (512, 256, 3, 3)   # conv4_1, the last layer used
    assert enc_state["51.weight"].shape == (512, 512, 3, 3)   # conv5_4, present in the file
    # relu taps of the style loss sit where the paper's code slices the encoder
    for name, idx in A.RELU_TAPS.items():
        assert isinstance(full[idx], torch.nn.ReLU), name
    assert isinstance(full[A.ENCODER_LAYERS_USED - 1], torch.nn.ReLU)  # relu4_1 = module 30
    pools = [m for m in full if isinstance(m, torch.nn.MaxPool2d)]
    assert len(pools) == 4 and all(p.ceil_mode for p in pools)

    # The whole stack holds 20,024,396 float32 values: 80.1 MB, the size of the official vgg_normalised.pth
    # (the rest is the pickle's bookkeeping).
    n = sum(v.numel() for v in enc_state.values())
    assert 0 < OFFICIAL_VGG_BYTES - 4 * n < 20_000

    dec = A.build_decoder()
    assert len(dec) == 29
    dec_state = dec.state_dict()
    assert _conv_indices(dec_state) == list(A.DECODER_CONV_INDICES)
    assert dec_state["1.weight"].shape == (256, 512, 3, 3)
    assert dec_state["14.weight"].shape == (128, 256, 3, 3)
    assert dec_state["28.weight"].shape == (3, 64, 3, 3)
    assert not isinstance(dec[-1], torch.nn.ReLU)  # no final activation
    assert sum(isinstance(m, torch.nn.Upsample) for m in dec) == 3


def test_random_official_files_load_strictly_through_the_registry(random_files):
    folder, enc, dec = random_files
    files = {"encoder": folder / "vgg_normalised.pth", "decoder": folder / "decoder.pth"}
    model = registry.build_model("adain", files)
    assert isinstance(model, A.AdaIN)
    # encoder: the whole 53-module file was loaded, then cut to the 31 modules used (up to relu4_1)
    assert len(model.encoder) == A.ENCODER_LAYERS_USED
    for idx in (0, 2, 29):
        assert torch.equal(model.encoder[idx].weight, enc[f"{idx}.weight"])
        assert torch.equal(model.encoder[idx].bias, enc[f"{idx}.bias"])
    for idx in A.DECODER_CONV_INDICES:
        assert torch.equal(model.decoder[idx].weight, dec[f"{idx}.weight"])
    assert not any(p.is_meta for p in model.parameters())
    # the manifest keys are accepted as well as the registry's roles
    other = A.build_adain({"adain-vgg": files["encoder"], "adain-decoder": files["decoder"]})
    assert torch.equal(other.decoder[28].weight, model.decoder[28].weight)
    x = torch.rand(1, 3, 40, 56)
    with torch.inference_mode():
        assert model.encode(x).shape == (1, 512, 5, 7)
        assert model(x, x).shape == (1, 3, 40, 56)


def test_truncated_encoder_file_is_accepted_strictly():
    enc, _ = A.random_state_dicts(seed=2, full_encoder=False)
    assert max(_conv_indices(enc)) == 29
    encoder = A.encoder_from_state_dict(enc)
    assert len(encoder) == 31 and torch.equal(encoder[29].weight, enc["29.weight"])


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_files_that_do_not_match_the_layout_are_refused(random_files, damage):
    _, enc, dec = random_files
    enc, dec = dict(enc), dict(dec)
    if damage == "missing":
        del enc["51.bias"]
        del dec["28.bias"]
    elif damage == "unexpected":
        enc["53.weight"] = torch.zeros(1)
        dec["30.weight"] = torch.zeros(3, 64, 3, 3)  # the 31-module layout is not the official file
    else:
        enc["2.weight"] = torch.zeros(64, 3, 1, 1)
        dec["1.weight"] = torch.zeros(512, 256, 3, 3)
    with pytest.raises(WeightsCorruptError):
        A.encoder_from_state_dict(enc)
    with pytest.raises(WeightsCorruptError):
        A.decoder_from_state_dict(dec)


def test_random_init_is_fast_and_registry_spec_points_at_the_manifest():
    start = time.perf_counter()
    model = A.build_adain(None)
    assert time.perf_counter() - start < 5.0
    assert len(model.encoder) == 31 and not any(p.requires_grad for p in model.parameters())
    spec = registry.spec("adain")
    assert spec.builder == "engine.models.adain:build_adain" and spec.task == "style"
    vgg = weights.entry(spec.files["encoder"])
    assert vgg.path.endswith("vgg_normalised.pth") and vgg.size == OFFICIAL_VGG_BYTES
    assert vgg.sha256 == "804ca2835ecf7539f0cd2a7ac3c18ce81e6f8468969ae7117ac0c148d286bb4a"
    assert weights.entry(spec.files["decoder"]).path.endswith("decoder.pth")


def test_random_weights_mode_builds_through_load_model(monkeypatch):
    monkeypatch.setenv("ENGINE_RANDOM_WEIGHTS", "1")
    registry.clear_cache()
    try:
        model = registry.load_model("adain", "cpu")
        assert isinstance(model, A.AdaIN)
    finally:
        registry.clear_cache()


# ---- the operation ------------------------------------------------------------------------------------------


def _np_mean_std(x: np.ndarray, eps=1e-5):
    flat = x.reshape(x.shape[0], x.shape[1], -1).astype(np.float64)
    return flat.mean(-1), np.sqrt(flat.var(-1, ddof=1) + eps)


def test_mean_std_is_per_channel_with_unbiased_variance_plus_eps():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, 7, generator=gen) * 3 + 1
    mean, std = A.mean_std(x)
    ref_mean, ref_std = _np_mean_std(x.numpy())
    assert mean.shape == (2, 5, 1, 1)
    np.testing.assert_allclose(mean.flatten(1).numpy(), ref_mean, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std.flatten(1).numpy(), ref_std, rtol=1e-5)
    # eps goes on the variance: a constant channel has std sqrt(1e-5), not 1e-5
    const = torch.full((1, 1, 4, 4), 2.0)
    assert A.mean_std(const)[1].item() == pytest.approx(1e-5 ** 0.5, rel=1e-4)
    # masked statistics use only the selected positions (n - 1 in the variance)
    mask = (torch.arange(42).reshape(1, 1, 6, 7) % 3 == 0).float()
    m_mean, m_std = A.mean_std(x, mask)
    sel = x.numpy().reshape(2, 5, -1)[:, :, mask.flatten().bool().numpy()]
    np.testing.assert_allclose(m_mean.flatten(1).numpy(), sel.mean(-1), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m_std.flatten(1).numpy(), np.sqrt(sel.var(-1, ddof=1) + 1e-5), rtol=1e-5)


def test_adain_matches_its_formula():
    gen = torch.Generator().manual_seed(1)
    c = torch.randn(1, 8, 5, 9, generator=gen) * 2 + 3
    s = torch.randn(1, 8, 11, 4, generator=gen) * 0.5 - 1  # style size may differ
    out = A.adain(c, s).numpy().astype(np.float64)
    cm, cs = _np_mean_std(c.numpy())
    sm, ss = _np_mean_std(s.numpy())
    ref = (c.numpy() - cm[..., None, None]) / cs[..., None, None] * ss[..., None, None] + sm[..., None, None]
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5)
    # the output carries the style's mean (exactly) and, up to eps, its std
    om, os_ = _np_mean_std(out)
    np.testing.assert_allclose(om, sm, atol=1e-5)
    np.testing.assert_allclose(os_, ss, rtol=1e-3)
    assert not np.allclose(om, cm, atol=0.1)


def test_forward_with_alpha_zero_is_the_reconstruction_path():
    enc, dec = A.random_state_dicts(seed=3, full_encoder=False)
    model = A.AdaIN(A.encoder_from_state_dict(enc), A.decoder_from_state_dict(dec))
    x = torch.rand(1, 3, 48, 32)
    style = torch.rand(1, 3, 40, 40)
    with torch.inference_mode():
        recon = model.decoder(model.encoder(x))
        assert torch.allclose(model(x, style, alpha=0.0), recon, atol=1e-6)
        assert not torch.allclose(model(x, style, alpha=1.0), recon, atol=1e-3)
    with pytest.raises(ValueError):
        model(x, style, alpha=1.5)


def test_real_checkpoints_when_present():
    """With the official files on this machine (WEIGHTS_DIR/adain/...): strict load, and the decoder does its job --
    the stylised image's relu4_1 statistics are closer to the AdaIN target's than the content's were."""
    found = {role: weights.status(key) for role, key in registry.spec("adain").files.items()}
    if not all(st.path is not None and st.state in ("ready", "unverified") for st in found.values()):
        pytest.skip("official AdaIN weights not on this machine")
    model = registry.build_model("adain", {role: st.path for role, st in found.items()})
    rng = np.random.default_rng(0)
    content = torch.from_numpy(rng.random((1, 3, 32, 32), dtype=np.float32)).repeat_interleave(4, 2).repeat_interleave(4, 3)
    style = torch.linspace(0, 1, 3 * 128 * 128).reshape(1, 3, 128, 128) ** 2
    with torch.inference_mode():
        fc, fs = model.encode(content), model.encode(style)
        out = model.decode(A.adain(fc, fs)).clamp(0, 1)
        m_o, s_o = A.mean_std(model.encode(out))
    m_s, s_s = A.mean_std(fs)
    m_c, s_c = A.mean_std(fc)
    assert torch.linalg.norm(m_o - m_s) < torch.linalg.norm(m_c - m_s)
    assert torch.linalg.norm(s_o - s_s) < torch.linalg.norm(s_c - s_s)
