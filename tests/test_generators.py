"""Generator layouts: strict loading of the official checkpoint formats (CycleGAN, CUT/FastCUT, GAN Compression)."""
from __future__ import annotations

import pytest
import torch

from engine import registry
from engine.errors import WeightsCorruptError
from engine.models.mobile_resnet import HORSE2ZEBRA_CONFIG, MobileResnetGenerator, build_gancompression, parse_config
from engine.models.resnet_generator import (CUTGenerator, CycleGANGenerator, Downsample, ResnetGenerator, Upsample,
                                            build_cut, build_cyclegan, clean_state_dict)

# conv (weight + bias) module indices of the official files (shared/specs/checkpoints.md, section 2)
CYCLEGAN_CONVS = ["model.1", "model.4", "model.7", "model.19", "model.22", "model.26"] + [
    f"model.{i}.conv_block.{j}" for i in range(10, 19) for j in (1, 5)]
CUT_CONVS = ["model.1", "model.4", "model.8", "model.22", "model.26", "model.30"] + [
    f"model.{i}.conv_block.{j}" for i in range(12, 21) for j in (1, 5)]
CUT_FILTERS = {"model.7.filt": (128, 1, 3, 3), "model.11.filt": (256, 1, 3, 3),
               "model.21.filt": (256, 1, 4, 4), "model.25.filt": (128, 1, 4, 4)}


def _expected_keys(convs):
    return {f"{c}.{p}" for c in convs for p in ("weight", "bias")}


def _save_random(model, path, seed=1):
    torch.manual_seed(seed)
    state = {k: (torch.randn_like(v) if not k.endswith("filt") else v.clone()) for k, v in model.state_dict().items()}
    torch.save(state, path)
    return state


def test_cyclegan_layout_matches_the_official_keys():
    sd = CycleGANGenerator().state_dict()
    assert set(sd) == _expected_keys(CYCLEGAN_CONVS)
    assert sd["model.1.weight"].shape == (64, 3, 7, 7)
    assert sd["model.7.weight"].shape == (256, 128, 3, 3)
    assert sd["model.19.weight"].shape == (256, 128, 3, 3)        # ConvTranspose: (in, out, k, k)
    assert sd["model.26.weight"].shape == (3, 64, 7, 7)
    assert sum(v.numel() for v in sd.values()) == 11_378_179     # the released resnet_9blocks generator


def test_cut_layout_matches_the_official_keys():
    sd = CUTGenerator().state_dict()
    assert set(sd) == _expected_keys(CUT_CONVS) | set(CUT_FILTERS)
    for key, shape in CUT_FILTERS.items():
        assert tuple(sd[key].shape) == shape
    assert sd["model.4.weight"].shape == (128, 64, 3, 3)
    assert sd["model.22.weight"].shape == (128, 256, 3, 3)
    assert len(CUTGenerator().model) == 32


def test_antialias_filters_are_the_binomial_kernels():
    down = Downsample(2).filt[0, 0]
    up = Upsample(2).filt[0, 0]
    b3 = torch.tensor([1.0, 2.0, 1.0])
    b4 = torch.tensor([1.0, 3.0, 3.0, 1.0])
    assert torch.allclose(down, torch.outer(b3, b3) / 16)
    assert torch.allclose(up, torch.outer(b4, b4) / 64 * 4)


@pytest.mark.parametrize("h,w", [(8, 8), (9, 13), (32, 20)])
def test_antialias_resampling_sizes(h, w):
    x = torch.randn(1, 3, h, w)
    assert Downsample(3)(x).shape[-2:] == ((h + 1) // 2, (w + 1) // 2)
    assert Upsample(3)(x).shape[-2:] == (2 * h, 2 * w)


def test_upsample_of_a_constant_is_constant():
    # the [1,3,3,1]·4 kernel with replicate padding must not darken borders or add a checkerboard
    y = Upsample(1)(torch.full((1, 1, 5, 7), 0.7))
    assert torch.allclose(y, torch.full_like(y, 0.7), atol=1e-6)


@pytest.mark.parametrize("builder,cls", [(build_cyclegan, CycleGANGenerator), (build_cut, CUTGenerator)])
def test_strict_load_round_trip(tmp_path, builder, cls):
    path = tmp_path / "latest_net_G.pth"
    state = _save_random(cls(), path)
    model = builder({"generator": path})
    loaded = model.state_dict()
    assert set(loaded) == set(state)
    for key in state:
        assert torch.equal(loaded[key], state[key]), key


@pytest.mark.parametrize("builder,cls", [(build_cyclegan, CycleGANGenerator), (build_cut, CUTGenerator)])
def test_strict_load_rejects_a_wrong_layout(tmp_path, builder, cls):
    state = cls().state_dict()
    missing = dict(state)
    missing.pop("model.1.bias")
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(WeightsCorruptError, match="model.1.bias"):
        builder({"generator": tmp_path / "missing.pth"})
    # the other family's file does not load either (CUT has the antialias buffers and shifted indices)
    other = CUTGenerator if cls is CycleGANGenerator else CycleGANGenerator
    torch.save(other().state_dict(), tmp_path / "other.pth")
    with pytest.raises(WeightsCorruptError):
        builder({"generator": tmp_path / "other.pth"})


def test_old_cyclegan_files_with_norm_stats_and_module_prefix_load(tmp_path):
    model = CycleGANGenerator()
    state = {f"module.{k}": torch.randn_like(v) for k, v in model.state_dict().items()}
    state["module.model.2.running_mean"] = torch.zeros(64)
    state["module.model.2.running_var"] = torch.ones(64)
    state["module.model.2.num_batches_tracked"] = torch.tensor(0)
    torch.save(state, tmp_path / "old.pth")
    loaded = build_cyclegan({"generator": tmp_path / "old.pth"}).state_dict()
    assert torch.equal(loaded["model.26.weight"], state["module.model.26.weight"])
    assert set(clean_state_dict(state, model)) == set(model.state_dict())


def test_mobile_layout_of_the_horse2zebra_config():
    model = MobileResnetGenerator(HORSE2ZEBRA_CONFIG)
    sd = model.state_dict()
    assert len(sd) == 84
    assert sum(v.numel() for v in sd.values()) == 356_867
    assert sd["model.7.weight"].shape == (128, 32, 3, 3)
    assert sd["model.10.conv_block.1.conv.2.weight"].shape == (64, 128, 1, 1)     # hidden 64 in blocks 10-12
    assert sd["model.13.conv_block.1.conv.2.weight"].shape == (128, 128, 1, 1)    # hidden 128 in blocks 13-18
    assert sd["model.19.weight"].shape == (128, 32, 3, 3)
    assert sd["model.22.weight"].shape == (32, 16, 3, 3)
    with pytest.raises(ValueError):
        parse_config("16_16_32")


def test_mobile_strict_round_trip_and_input_clamp(tmp_path):
    state = _save_random(MobileResnetGenerator(), tmp_path / "g.pth")
    model = build_gancompression({"generator": tmp_path / "g.pth"})
    assert torch.equal(model.state_dict()["model.18.conv_block.6.conv.2.weight"],
                       state["model.18.conv_block.6.conv.2.weight"])
    x = torch.rand(1, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(model(x * 3), model((x * 3).clamp(-1, 1)))   # inputs are clamped to [-1, 1]
        assert not torch.allclose(model(x * 3), model(x))   # the clamp is not a no-op on this input


def test_real_gan_compression_checkpoint_loads_strictly(shared_weights):
    path = shared_weights / "gan-compression-horse2zebra" / "latest_net_G.pth"
    if not path.is_file():
        pytest.skip("GAN Compression checkpoint not present")
    model = build_gancompression({"generator": path})
    assert sum(p.numel() for p in model.parameters()) == 356_867
    # the registry resolves the same file through the manifest (sha256-verified)
    assert registry.model_status("gancompression-horse2zebra").usable


@pytest.mark.parametrize("name", ["cyclegan-horse2zebra", "cyclegan-zebra2horse", "cut-horse2zebra",
                                  "fastcut-horse2zebra", "gancompression-horse2zebra"])
def test_registry_builds_every_translation_model_at_random_init(name):
    model = registry.build_model(name, None)
    x = torch.rand(1, 3, 16, 24) * 2 - 1
    with torch.no_grad():
        y = model(x)
    assert y.shape == x.shape and y.abs().max() <= 1.0


def test_cut_features_at_nce_layers():
    g = ResnetGenerator(ngf=8, n_blocks=9, antialias=True)
    x = torch.randn(2, 3, 32, 40)
    feats = g(x, layers=[0, 4, 8, 12, 16], encode_only=True)
    assert [tuple(f.shape) for f in feats] == [(2, 3, 38, 46), (2, 16, 32, 40), (2, 32, 16, 20), (2, 32, 8, 10),
                                               (2, 32, 8, 10)]
    out, feats2 = g(x, layers=[4, -1])
    assert out.shape == x.shape and torch.equal(feats2[-1], out)
    assert torch.equal(feats2[0], feats[1])
    with pytest.raises(ValueError):
        g(x, layers=[99])


def test_small_widths_and_block_counts_for_trainers():
    g = CUTGenerator(ngf=16, n_blocks=2)
    assert len(g.model) == 32 - 7
    assert g(torch.randn(1, 3, 12, 20)).shape == (1, 3, 12, 20)


def _official_sub_mobile(config: list[int], n_blocks: int = 9) -> torch.nn.Sequential:
    """The generator as the official SubMobileResnetGenerator builds it (8-width config), written from its
    construction rule: down-sampling i maps c[i]*2**i -> c[i+1]*2**i*2 channels, block i has hidden width
    4*c[3 + i//3], up-sampling i maps (c[2] or c[6]) * 2**(2-i) -> c[6+i]*2**(2-i)/2."""
    from engine.models.mobile_resnet import MobileResnetBlock

    nn = torch.nn
    norm = lambda ch: nn.InstanceNorm2d(ch)  # noqa: E731 (affine=False, no running stats, as the official model)
    layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, config[0], 7), norm(config[0]), nn.ReLU(True)]
    for i in range(2):
        layers += [nn.Conv2d(config[i] * 2 ** i, config[i + 1] * 2 ** i * 2, 3, stride=2, padding=1),
                   norm(config[i + 1] * 2 ** i * 2), nn.ReLU(True)]
    ic = config[2]
    layers += [MobileResnetBlock(ic * 4, config[3 + i // 3] * 4) for i in range(n_blocks)]
    for i in range(2):
        oc, mult = config[6 + i], 2 ** (2 - i)
        layers += [nn.ConvTranspose2d(ic * mult, oc * mult // 2, 3, stride=2, padding=1, output_padding=1),
                   norm(oc * mult // 2), nn.ReLU(True)]
        ic = oc
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ic, 3, 7), nn.Tanh()]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("config", ["4_8_12_4_8_12_6_2", "12_4_8_8_4_12_2_6"])
def test_mobile_widths_follow_the_official_rule_when_the_first_two_differ(tmp_path, config):
    widths = parse_config(config)
    torch.manual_seed(0)
    official = _official_sub_mobile(widths).eval()
    state = {f"model.{k}": torch.randn_like(v) * 0.2 for k, v in official.state_dict().items()}
    assert state["model.4.weight"].shape == (2 * widths[1], widths[0], 3, 3)
    assert state["model.7.weight"].shape == (4 * widths[2], 2 * widths[1], 3, 3)
    torch.save(state, tmp_path / "g.pth")
    ours = build_gancompression({"generator": tmp_path / "g.pth"}, config=config)   # strict load
    official.load_state_dict({k[len("model."):]: v for k, v in state.items()})
    x = torch.rand(1, 3, 32, 40) * 2 - 1
    with torch.inference_mode():
        assert torch.equal(ours(x), official(x))
