"""U-GAT-IT generator (Kim et al., ICLR 2020): AdaLIN / LIN maths, CAM outputs, the official checkpoint layout,
sizes in the pipeline and the registry entries. Tiny widths, CPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine import registry
from engine.errors import InputError, WeightsCorruptError
from engine.models.ugatit import (
    ILN, AdaILN, CAMDiscriminator, UGATITGenerator, build_ugatit, clip_rho, infer_arch, instance_layer_stats,
)
from engine.pipelines import translate as T

# The keys of the official ResnetGenerator(ngf=2, n_blocks=1, light=True) of znxlwm/UGATIT-pytorch, written out
# from its networks.py (the layout a checkpoint's genA2B / genB2A must have).
OFFICIAL_KEYS_1_BLOCK = {
    "gap_fc.weight", "gmp_fc.weight", "conv1x1.weight", "conv1x1.bias", "gamma.weight", "beta.weight",
    "UpBlock1_1.conv1.weight", "UpBlock1_1.norm1.rho", "UpBlock1_1.conv2.weight", "UpBlock1_1.norm2.rho",
    "DownBlock.1.weight", "DownBlock.5.weight", "DownBlock.9.weight", "DownBlock.12.conv_block.1.weight",
    "DownBlock.12.conv_block.5.weight", "FC.0.weight", "FC.2.weight", "UpBlock2.2.weight", "UpBlock2.3.rho",
    "UpBlock2.3.gamma", "UpBlock2.3.beta", "UpBlock2.7.weight", "UpBlock2.8.rho", "UpBlock2.8.gamma",
    "UpBlock2.8.beta", "UpBlock2.11.weight",
}


def _hand_norm(x: np.ndarray, rho: np.ndarray, eps: float = 1e-5):
    """ρ·x̂_IN + (1−ρ)·x̂_LN in float64 with the unbiased variance (ddof=1) and eps inside the sqrt."""
    out = np.empty_like(x)
    for n in range(x.shape[0]):
        ln = (x[n] - x[n].mean()) / np.sqrt(x[n].var(ddof=1) + eps)
        for c in range(x.shape[1]):
            inn = (x[n, c] - x[n, c].mean()) / np.sqrt(x[n, c].var(ddof=1) + eps)
            out[n, c] = rho[c] * inn + (1 - rho[c]) * ln[c]
    return out


def test_adalin_matches_a_hand_computation_for_rho_0_1_and_between():
    torch.manual_seed(0)
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64) * 3 + 1
    gamma = torch.randn(2, 3, dtype=torch.float64)
    beta = torch.randn(2, 3, dtype=torch.float64)
    norm = AdaILN(3)
    assert torch.all(norm.rho == torch.tensor(0.9)) and norm.eps == 1e-5
    norm = norm.double()
    for rho in ([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [0.0, 0.35, 1.0]):
        with torch.no_grad():
            norm.rho.copy_(torch.tensor(rho, dtype=torch.float64).view(1, 3, 1, 1))
        got = norm(x, gamma, beta).detach().numpy()
        want = _hand_norm(x.numpy(), np.array(rho)) * gamma.numpy()[:, :, None, None] + beta.numpy()[:, :, None, None]
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)
    # the biased variance (divisor n) would give a measurably different result on a 4x5 map
    x_in, _ = instance_layer_stats(x)
    biased = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5)
    assert (x_in - biased).abs().max() > 1e-2


def test_lin_uses_its_own_gamma_beta_and_rho_is_clipped_not_in_forward():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 6, 3, dtype=torch.float64)
    norm = ILN(4).double()
    assert torch.all(norm.rho == 0) and torch.all(norm.gamma == 1) and torch.all(norm.beta == 0)
    rho = torch.tensor([-0.5, 0.2, 0.8, 1.7], dtype=torch.float64)
    with torch.no_grad():
        norm.rho.copy_(rho.view(1, 4, 1, 1))
        norm.gamma.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5], dtype=torch.float64).view(1, 4, 1, 1))
        norm.beta.copy_(torch.tensor([0.0, 1.0, 0.5, -2.0], dtype=torch.float64).view(1, 4, 1, 1))
    g, b = norm.gamma.detach().numpy()[0, :, 0, 0], norm.beta.detach().numpy()[0, :, 0, 0]
    # the forward pass uses rho as it is (out of range too), as the official code does
    want = _hand_norm(x.numpy(), rho.numpy()) * g[None, :, None, None] + b[None, :, None, None]
    np.testing.assert_allclose(norm(x).detach().numpy(), want, rtol=1e-10, atol=1e-10)
    gen = UGATITGenerator(ngf=2, n_blocks=1, light=True)
    with torch.no_grad():
        for m in gen.modules():
            if isinstance(m, (AdaILN, ILN)):
                m.rho.copy_(torch.linspace(-1, 2, m.rho.numel()).view_as(m.rho))
    clip_rho(clip_rho(gen))
    rhos = torch.cat([m.rho.flatten() for m in gen.modules() if isinstance(m, (AdaILN, ILN))])
    assert rhos.min() == 0 and rhos.max() == 1 and ((rhos > 0) & (rhos < 1)).any()


def test_cam_logits_and_attention_map_shapes_and_values():
    torch.manual_seed(2)
    gen = UGATITGenerator(ngf=4, n_blocks=2, light=True).eval()
    x = torch.rand(2, 3, 36, 44) * 2 - 1
    with torch.no_grad():
        out, logits, heat = gen(x, cam=True)
        img, maps = gen.forward_with_maps(x)
        feat, logits2, heat2 = gen.attention(x)
        plain = gen(x)
    assert out.shape == x.shape and logits.shape == (2, 2) and heat.shape == (2, 1, 9, 11)
    assert out.abs().max() <= 1 and torch.equal(plain, out) and torch.equal(img, out)
    assert set(maps) == {"attention"} and torch.equal(maps["attention"], heat)
    # the heat map is the channel sum of the (ReLU'd) channel-weighted features; logits are the pooled features
    # through gap_fc / gmp_fc
    assert torch.allclose(heat2, feat.sum(1, keepdim=True)) and heat.min() >= 0
    enc = gen.DownBlock(x)
    assert torch.allclose(logits[:, 0], enc.mean((2, 3)) @ gen.gap_fc.weight[0], atol=1e-6)
    assert torch.allclose(logits[:, 1], enc.amax((2, 3)) @ gen.gmp_fc.weight[0], atol=1e-6)
    for n_layers, (side, logit_side) in ((7, (128, 2)), (5, (128, 14))):
        d = CAMDiscriminator(ndf=2, n_layers=n_layers)
        o, c, h = d(torch.rand(1, 3, side, side))
        assert o.shape == (1, 1, logit_side, logit_side) and c.shape == (1, 2) and h.shape[:2] == (1, 1)


def _official_checkpoint(path, **arch):
    torch.manual_seed(3)
    a2b, b2a = UGATITGenerator(**arch), UGATITGenerator(**arch)
    for g in (a2b, b2a):   # rho / gamma / beta away from their initial values, so a wrong load shows
        with torch.no_grad():
            for m in g.modules():
                if isinstance(m, (AdaILN, ILN)):
                    m.rho.uniform_(0, 1)
                if isinstance(m, ILN):
                    m.gamma.uniform_(0.5, 1.5)
                    m.beta.uniform_(-0.5, 0.5)
    d = CAMDiscriminator(ndf=2, n_layers=5)
    torch.save({"genA2B": a2b.state_dict(), "genB2A": b2a.state_dict(), "disGA": d.state_dict(),
                "disGB": d.state_dict(), "disLA": d.state_dict(), "disLB": d.state_dict()}, path)
    return a2b.eval(), b2a.eval()


def test_strict_load_of_random_weights_in_the_official_layout(tmp_path):
    assert set(UGATITGenerator(ngf=2, n_blocks=1, light=True).state_dict()) == OFFICIAL_KEYS_1_BLOCK
    path = tmp_path / "horse2zebra_params_latest.pt"
    a2b, b2a = _official_checkpoint(path, ngf=4, n_blocks=2, light=True)
    x = torch.rand(1, 3, 20, 28) * 2 - 1
    for direction, ref in (("A2B", a2b), ("B2A", b2a)):
        model = build_ugatit({"checkpoint": path}, direction=direction)
        assert (model.ngf, model.n_blocks, model.light) == (4, 2, True) and model.fixed_size is None
        with torch.no_grad():
            assert torch.equal(model(x), ref(x))
    # full mode: the size comes from the first FC layer
    full = tmp_path / "full.pt"
    f_a2b, _ = _official_checkpoint(full, ngf=2, n_blocks=1, img_size=16, light=False)
    model = build_ugatit({"checkpoint": full}, direction="A2B")
    assert infer_arch(model.state_dict()) == {"ngf": 2, "n_blocks": 1, "light": False, "img_size": 16}
    assert model.fixed_size == (16, 16)
    x16 = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x16), f_a2b(x16))


def test_mismatched_checkpoints_are_refused(tmp_path):
    path = tmp_path / "ok.pt"
    _official_checkpoint(path, ngf=4, n_blocks=2, light=True)
    state = torch.load(path, weights_only=True)
    cases = {
        "missing_rho.pt": {**state, "genA2B": {k: v for k, v in state["genA2B"].items() if k != "UpBlock2.3.rho"}},
        "extra_key.pt": {**state, "genA2B": {**state["genA2B"], "UpBlock2.3.running_mean": torch.zeros(4)}},
        "renamed.pt": {**state, "genA2B": {k.replace("UpBlock1_", "UpBlock_"): v for k, v in state["genA2B"].items()}},
        "no_generators.pt": {"model.1.weight": torch.zeros(1)},
    }
    for name, obj in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(WeightsCorruptError) as err:
            build_ugatit({"checkpoint": tmp_path / name}, direction="A2B")
        assert name in str(err.value) and str(tmp_path) not in str(err.value)
    assert "no 'genA2B'" in str(pytest.raises(WeightsCorruptError, build_ugatit,
                                              {"checkpoint": tmp_path / "no_generators.pt"}).value)
    # the other direction of a file with a broken genA2B still loads
    assert build_ugatit({"checkpoint": tmp_path / "missing_rho.pt"}, direction="B2A").n_blocks == 2


@pytest.mark.parametrize("h,w", [(37, 53), (9, 31), (64, 40)])
def test_light_mode_any_size_is_padded_and_cropped_back(h, w):
    torch.manual_seed(4)
    gen = UGATITGenerator(ngf=4, n_blocks=1, light=True).eval()
    x = torch.rand(1, 3, h, w)
    y, maps = T.run_generator(gen, x, device="cpu", exact=True, with_maps=True)
    assert y.shape == x.shape and maps["attention"].shape == (1, h, w)
    m = maps["attention"]
    assert m.min() == 0 and m.max() == pytest.approx(1.0)
    ph, pw = (-h) % 4, (-w) % 4
    padded = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="reflect" if ph < h and pw < w else "replicate")
    with torch.no_grad():
        direct = gen(padded * 2 - 1)[..., :h, :w].add(1).mul(0.5).clamp(0, 1)
    torch.testing.assert_close(y, direct)
    assert torch.equal(T.run_generator(gen, x, device="cpu", exact=True), y)   # without maps: the same image


def test_full_mode_refuses_other_sizes_with_a_clear_message():
    gen = UGATITGenerator(ngf=2, n_blocks=1, img_size=16, light=False).eval()
    assert T.run_generator(gen, torch.rand(1, 3, 16, 16), device="cpu").shape == (1, 3, 16, 16)
    for shape in ((1, 3, 16, 20), (1, 3, 32, 32)):
        with pytest.raises(InputError, match=r"only translates 16x16 images.*max side to 16"):
            T.run_generator(gen, torch.rand(*shape), device="cpu")


def test_overlay_and_translate_detailed_with_random_weights(random_weights, tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (30, 42, 3), dtype=np.uint8))
    res = T.translate_detailed(img, "ugatit-horse2zebra", max_side=0)
    assert res.input.shape == res.output.shape == (30, 42, 3) and res.maps["attention"].shape == (30, 42)
    over = res.overlays()["attention"]
    assert over.shape == (30, 42, 3) and over.dtype == np.uint8 and not np.array_equal(over, res.input)
    # where the map is highest the overlay is reddest (JET: red = high), where lowest the bluest
    m = res.maps["attention"]
    hot, cold = np.unravel_index(m.argmax(), m.shape), np.unravel_index(m.argmin(), m.shape)
    red_minus_blue = over[..., 0].astype(int) - over[..., 2].astype(int) - (res.input[..., 0].astype(int)
                                                                            - res.input[..., 2].astype(int)) // 2
    assert red_minus_blue[hot] > red_minus_blue[cold]
    # models without maps: same call, no maps
    plain = T.translate_detailed(img, "gancompression-horse2zebra", max_side=0)
    assert plain.maps == {} and plain.overlays() == {}


def test_registry_offers_both_directions_from_one_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ENGINE_RANDOM_WEIGHTS", raising=False)
    names = ("ugatit-horse2zebra", "ugatit-zebra2horse")
    for name in names:
        st = registry.model_status(name)
        assert not st.usable and st.state == "missing" and "No official U-GAT-IT" in st.message
    assert {registry.spec(n).defaults["direction"] for n in names} == {"horse2zebra", "zebra2horse"}
    (tmp_path / "ugatit").mkdir()
    a2b, b2a = _official_checkpoint(tmp_path / "ugatit" / "horse2zebra_params_latest.pt", ngf=4, n_blocks=2,
                                    light=True)
    registry.clear_cache()
    try:
        assert all(registry.model_status(n).usable for n in names)
        assert {m.name for m in T.translation_models() if m.usable} >= set(names)
        x = torch.rand(1, 3, 12, 16) * 2 - 1
        for name, ref in zip(names, (a2b, b2a)):
            with torch.no_grad():
                assert torch.equal(registry.load_model(name, "cpu")(x), ref(x))
    finally:
        registry.clear_cache()


def test_translation_tab_shows_the_attention_map_only_for_models_that_have_one(random_weights):
    from demos import translate as D

    img = (np.random.default_rng(1).random((40, 52, 3)) * 255).astype(np.uint8)
    (inp, out), _table, _summary, maps = D.translate_one(img, "ugatit-horse2zebra", 0)
    assert inp.shape == out.shape == (40, 52, 3)
    assert len(maps) == 1 and maps[0][0].shape == (40, 52, 3) and "Attention (CAM)" in maps[0][1]
    assert D.show_maps(maps).visible is True
    *_, none = D.translate_one(img, "cyclegan-horse2zebra", 0)
    assert none == [] and D.show_maps(none).visible is False
    choices = [name for _, name in D._choices()[0]]
    assert "ugatit-horse2zebra" in choices and "ugatit-zebra2horse" in choices


def test_fast_precision_bf16_autocast_keeps_the_norms_in_float32(monkeypatch):
    monkeypatch.setenv("ENGINE_CPU_BF16", "1")
    torch.manual_seed(5)
    gen = UGATITGenerator(ngf=4, n_blocks=1, light=True).eval()
    x = torch.rand(1, 3, 24, 28)
    exact = T.run_generator(gen, x, device="cpu", precision="fp32")
    fast, maps = T.run_generator(gen, x, device="cpu", precision="fast", with_maps=True)
    assert fast.dtype == torch.float32 and torch.isfinite(fast).all() and maps["attention"].shape == (1, 24, 28)
    assert 0 < (fast - exact).abs().mean() < 0.05
