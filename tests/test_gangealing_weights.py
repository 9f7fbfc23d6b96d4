"""Strict loading of GANgealing checkpoints in the official layout (random tensors; the real files are not here).

The expected layout is written out below from the official code's construction rules (models/spatial_transformers
and models/stylegan2/networks.py of wpeebles/gangealing), independently of our modules' state_dict()."""
from __future__ import annotations

import argparse
import tomllib

import pytest
import torch

from engine import registry
from engine.errors import WeightsCorruptError
from engine.models.gangealing import PRETRAINED, build_gangealing

CH = {4: 512, 8: 512, 16: 512, 32: 512, 64: 128, 128: 64}  # channel multiplier 0.5


def _resblock(prefix, cin, cout, down):
    keys = {f"{prefix}.conv1.0.weight": (cin, cin, 3, 3), f"{prefix}.conv1.1.bias": (cin,)}
    if down:
        keys.update({f"{prefix}.conv2.0.kernel": (4, 4), f"{prefix}.conv2.1.weight": (cout, cin, 3, 3),
                     f"{prefix}.conv2.2.bias": (cout,), f"{prefix}.skip.0.kernel": (4, 4),
                     f"{prefix}.skip.1.weight": (cout, cin, 1, 1)})
    else:
        keys.update({f"{prefix}.conv2.0.weight": (cout, cin, 3, 3), f"{prefix}.conv2.1.bias": (cout,),
                     f"{prefix}.skip.0.weight": (cout, cin, 1, 1)})
    return keys


def official_stn_layout(prefix: str, flow: bool, heads: int, supersize: int = 256) -> dict[str, tuple]:
    keys = {f"{prefix}.input_downsample.kernel_horz": (3, 1, 1, 2 * supersize // 128),
            f"{prefix}.input_downsample.kernel_vert": (3, 1, 2 * supersize // 128, 1),
            f"{prefix}.convs.0.0.weight": (64, 3, 1, 1), f"{prefix}.convs.0.1.bias": (64,)}
    # similarity: 5 down-sampling blocks 128 -> 4 px; flow: 3 down-sampling blocks 128 -> 16 px, then 1 plain block
    res_in = [128, 64, 32, 16] + ([] if flow else [8])
    for i, r in enumerate(res_in, start=1):
        down = not flow or i <= 3
        keys.update(_resblock(f"{prefix}.convs.{i}", CH[r], CH[r // 2], down))
    keys.update({f"{prefix}.final_conv.0.weight": (512, 512, 3, 3), f"{prefix}.final_conv.1.bias": (512,),
                 f"{prefix}.warp_head.warper.blur_filter": (1, 1, 4, 4)})
    if flow:
        for head, out in (("flow_out", 2 * heads), ("mask_out", 9 * 64 * heads)):
            keys.update({f"{prefix}.warp_head.{head}.0.weight": (512, 512, 3, 3),
                         f"{prefix}.warp_head.{head}.0.bias": (512,),
                         f"{prefix}.warp_head.{head}.2.weight": (out, 512, 3, 3),
                         f"{prefix}.warp_head.{head}.2.bias": (out,)})
    else:
        keys.update({f"{prefix}.final_linear.weight": (512, 512 * 16), f"{prefix}.final_linear.bias": (512,),
                     f"{prefix}.warp_head.linear.weight": (4 * heads, 512),
                     f"{prefix}.warp_head.linear.bias": (4 * heads,),
                     f"{prefix}.warp_head.one_hot": (1, 1, 1, 3)})
    return keys


def official_classifier_layout(logits: int) -> dict[str, tuple]:
    keys = {"input_downsample.kernel_horz": (3, 1, 1, 4), "input_downsample.kernel_vert": (3, 1, 4, 1),
            "convs.0.0.weight": (64, 3, 1, 1), "convs.0.1.bias": (64,)}
    for i, r in enumerate([128, 64, 32, 16, 8], start=1):
        keys.update(_resblock(f"convs.{i}", CH[r], CH[r // 2], True))
    keys.update({"final_conv.0.weight": (512, 512, 3, 3), "final_conv.1.bias": (512,),
                 "to_logits.weight": (logits, 8192), "to_logits.bias": (logits,)})
    return keys


def _constant(key, shape):
    """The fixed filters the official modules register as buffers."""
    if key.endswith(".kernel"):
        k = torch.tensor([1.0, 3, 3, 1])
        k = k[:, None] * k[None]
        return k / k.sum()
    if key.endswith("blur_filter"):
        k = torch.tensor([1.0, 3, 3, 1])
        return (k[:, None] * k[None] / 64)[None, None]
    if key.endswith("one_hot"):
        return torch.tensor([0.0, 0, 1]).view(1, 1, 1, 3)
    if "input_downsample" in key:
        s = max(shape) // 2
        ramp = torch.arange(1, 2 * s + 1, 2, dtype=torch.float32)
        k = torch.cat([ramp, ramp.flip(0)])
        return (k / k.sum()).view(shape[2:]).repeat(3, 1, 1, 1)
    return None


def random_state(layout: dict[str, tuple], seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in layout.items():
        const = _constant(key, shape)
        out[key] = const if const is not None else torch.randn(shape, generator=gen)
    return out


def official_checkpoint(heads: int, seed: int = 0, supersize: int = 256) -> dict:
    layout = {**official_stn_layout("stns.0", False, heads, supersize),
              **official_stn_layout("stns.1", True, heads, supersize)}
    ckpt = {"t_ema": random_state(layout, seed),
            "args": argparse.Namespace(transform=["similarity", "flow"], flow_size=128, stn_channel_multiplier=0.5,
                                       num_heads=heads, padding_mode="reflection", real_size=supersize, debug=False),
            "ll": {"coefficients": torch.zeros(heads, 1)}, "g_ema": {"style.1.weight": torch.zeros(2, 2)}}
    if heads > 1:
        ckpt["classifier"] = random_state(official_classifier_layout(2 * heads), seed + 1)
    return ckpt


@pytest.fixture(scope="module")
def cat_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("gg") / "cat.pt"
    ckpt = official_checkpoint(1)
    torch.save(ckpt, path)
    return path, ckpt


def _assert_loaded(module, state):
    own = module.state_dict()
    for key, value in state.items():
        if "input_downsample" in key:
            continue
        assert torch.equal(own[key], value), key


@pytest.mark.slow
def test_official_layout_loads_strictly(cat_file):
    path, ckpt = cat_file
    model = build_gangealing({"checkpoint": path}, name="cat")
    _assert_loaded(model.t_ema, ckpt["t_ema"])
    assert model.classifier is None and model.settings == PRETRAINED["cat"]
    expected = {k for k in ckpt["t_ema"]}
    assert set(model.t_ema.state_dict()) == expected  # our layout is exactly the official one
    # the file holds an argparse.Namespace: the plain weights_only loader refuses it ...
    from engine import weights
    with pytest.raises(WeightsCorruptError):
        weights.load_state_dict(path)


@pytest.mark.slow
def test_clustering_checkpoint_loads_stn_and_classifier(tmp_path):
    ckpt = official_checkpoint(4, seed=5, supersize=512)  # trained at 512: other input_downsample kernels, ignored
    ckpt["t_ema"]["stns.0.warp_head.rebias"] = torch.zeros(4)  # legacy key the official loader drops
    path = tmp_path / "car.pt"
    torch.save(ckpt, path)
    model = build_gangealing({"checkpoint": path}, name="car", num_heads=4)
    _assert_loaded(model.t_ema, {k: v for k, v in ckpt["t_ema"].items() if "rebias" not in k})
    _assert_loaded(model.classifier, ckpt["classifier"])
    del ckpt["classifier"]
    torch.save(ckpt, path)
    with pytest.raises(WeightsCorruptError, match="classifier"):
        build_gangealing({"checkpoint": path}, name="car", num_heads=4)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape", "filter", "heads"])
def test_layout_mismatches_are_refused(tmp_path, cat_file, damage):
    _, ckpt = cat_file
    sd = dict(ckpt["t_ema"])
    name, heads = "cat", 1
    if damage == "missing":
        del sd["stns.1.warp_head.mask_out.2.bias"]
    elif damage == "unexpected":
        sd["stns.1.warp_head.extra.weight"] = torch.zeros(3)
    elif damage == "shape":
        sd["stns.0.final_linear.weight"] = torch.zeros(512, 4096)
    elif damage == "filter":
        sd["stns.0.convs.1.conv2.0.kernel"] = torch.ones(4, 4)
    else:  # a single-head file given to a 4-head model
        name, heads = "horse", 4
    path = tmp_path / "bad.pt"
    torch.save({**ckpt, "t_ema": sd, "classifier": {}}, path)
    with pytest.raises(WeightsCorruptError):
        build_gangealing({"checkpoint": path}, name=name, num_heads=heads)


class Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_unsafe_pickles_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    torch.save({"t_ema": {}, "args": argparse.Namespace(x=1), "payload": Evil()}, path)
    with pytest.raises(WeightsCorruptError):
        build_gangealing({"checkpoint": path}, name="cat")
    assert "must never run" not in capsys.readouterr().out
    path2 = tmp_path / "not_gg.pt"
    torch.save({"state_dict": {}}, path2)
    with pytest.raises(WeightsCorruptError, match="t_ema"):
        build_gangealing({"checkpoint": path2}, name="cat")


def test_manifest_and_registry_entries():
    with open(registry.weights.MANIFEST_PATH, "rb") as fh:
        files = tomllib.load(fh)["files"]
    assert set(PRETRAINED) == {"bicycle", "car", "cat", "cat_ssl_mix6", "celeba", "cub", "dog", "horse", "tvmonitor"}
    for name, s in PRETRAINED.items():
        entry = files[f"gangealing-{name}"]
        assert entry["urls"] == [f"http://efrosgans.eecs.berkeley.edu/gangealing/pretrained/{name}.pt"]
        assert entry.get("sha256", "") == ""  # no official digest published
        spec = registry.spec(f"gangealing-{name}")
        assert spec.files == {"checkpoint": f"gangealing-{name}"}
        assert spec.defaults["padding_mode"] == s.padding_mode and spec.defaults["iters"] == s.iters
        assert spec.build_args == {"num_heads": s.num_heads, "name": name}
    assert (PRETRAINED["car"].num_heads, PRETRAINED["horse"].num_heads, PRETRAINED["celeba"].iters) == (4, 4, 1)
    assert PRETRAINED["tvmonitor"].padding_mode == "reflection" and PRETRAINED["dog"].padding_mode == "border"


def test_backend_list_matches_the_models():
    from engine.correspondence import get_backend, list_backends
    from engine.correspondence.gangealing_backend import MODELS, backend_names

    assert MODELS == {n: s.num_heads for n, s in PRETRAINED.items()}
    listed = {name for name, _ in list_backends()}
    assert set(backend_names()) <= listed
    assert "gangealing-car-cluster3" in listed and "gangealing-car" not in listed
    b = get_backend("gangealing-horse-cluster2")
    assert (b.model_name, b.cluster, b.needs_reference) == ("horse", 2, False)
    ok, message = get_backend("gangealing-dog").status()  # no checkpoint on this machine (tests are offline)
    if not ok:
        assert "checkpoint" in message or "average" in message
