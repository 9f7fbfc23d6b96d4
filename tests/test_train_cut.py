"""CUT / FastCUT trainer (Park et al., ECCV 2020): loss definition, one step, resume, export. Tiny CPU settings."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from engine.models.patchgan import PatchDiscriminator, PatchSampleMLP, gather_patches
from engine.models.resnet_generator import CUTGenerator, build_cut
from engine.train.config import make_config
from engine.train.cut import CUTTrainer, train
from engine.train.data import UnpairedData, list_images, to_model_range
from engine.train.export import build_trained_cut, export_generator, infer_arch
from engine.train.losses import patch_nce

TINY = dict(ngf=4, n_blocks=9, ndf=8, netf_nc=16, num_patches=16, crop_size=32, load_size=36, device="cpu",
            num_workers=0, seed=0, print_every=1, sample_every=0, save_every=0, n_samples=2)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny tensors gain nothing from threads, and OpenMP spin-waits make them ~100x slower when other
    processes share the cores; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(mode="cut", **kw):
    return make_config(mode, **{**TINY, **kw})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """Two small image folders; some files greyscale or palette, like horse2zebra's 7 greyscale zebras."""
    root = tmp_path_factory.mktemp("h2z")
    rng = np.random.default_rng(0)
    for dom, n in (("A", 5), ("B", 4)):
        d = root / dom
        d.mkdir()
        for i in range(n):
            arr = rng.integers(0, 256, (40, 44, 3), dtype=np.uint8)
            img = Image.fromarray(arr, "RGB")
            if dom == "B" and i == 1:
                img = img.convert("L")
            if dom == "A" and i == 2:
                img = img.convert("P")
            img.save(d / f"{i:03d}.{'jpg' if i % 2 and img.mode != 'P' else 'png'}")
    return root / "A", root / "B"


def _params(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


# ---- PatchNCE ---------------------------------------------------------------------------------------------

def test_patch_nce_matches_hand_computed_cross_entropy():
    torch.manual_seed(1)
    n, p, d, tau = 2, 5, 4, 0.07
    q = torch.nn.functional.normalize(torch.randn(n, p, d, dtype=torch.float64), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(n, p, d, dtype=torch.float64), dim=-1)
    got = patch_nce(q.float(), k.float(), tau)
    assert got.shape == (n, p)
    for b in range(n):
        for i in range(p):
            logits = [float(q[b, i] @ k[b, i]) / tau] + [float(q[b, i] @ k[b, j]) / tau for j in range(p) if j != i]
            m = max(logits)
            expected = -(logits[0] - m - math.log(sum(math.exp(v - m) for v in logits)))
            assert got[b, i].item() == pytest.approx(expected, rel=1e-5, abs=1e-5)


def test_patch_nce_negatives_come_only_from_the_same_image_and_keys_get_no_gradient():
    torch.manual_seed(2)
    q = torch.nn.functional.normalize(torch.randn(2, 6, 8), dim=-1).requires_grad_(True)
    k = torch.nn.functional.normalize(torch.randn(2, 6, 8), dim=-1).requires_grad_(True)
    base = patch_nce(q, k)
    k2 = k.detach().clone()
    k2[1] = torch.nn.functional.normalize(torch.randn(6, 8), dim=-1)   # change only image 1's keys
    other = patch_nce(q, k2)
    assert torch.equal(base[0], other[0])
    assert not torch.allclose(base[1], other[1])
    base.sum().backward()
    assert k.grad is None and q.grad is not None and q.grad.abs().sum() > 0
    # a perfect match (q = k, orthogonal patches) gives a smaller loss than random features
    eye = torch.eye(6)[None]
    assert patch_nce(eye, eye).mean() < base.mean().item()


def test_patch_sampling_shares_positions_between_real_and_fake():
    torch.manual_seed(3)
    heads = PatchSampleMLP([3, 5], nc=8)
    fa = [torch.randn(2, 3, 6, 6), torch.randn(2, 5, 4, 4)]
    fb = [torch.randn(2, 3, 6, 6), torch.randn(2, 5, 4, 4)]
    out_a, ids = heads(fa, num_patches=10)
    out_b, ids_b = heads(fb, num_patches=10, patch_ids=ids)
    assert [i.shape for i in ids] == [(2, 10), (2, 10)]
    assert all(torch.equal(x, y) for x, y in zip(ids, ids_b))
    for i in ids:   # distinct positions within each image
        assert all(len(set(row.tolist())) == 10 for row in i)
    for o in out_a + out_b:
        assert torch.allclose(o.norm(dim=-1), torch.ones(o.shape[:2]), atol=1e-5)
    # gathered rows are the feature vectors at those positions
    g = gather_patches(fa[0], ids[0])
    r, c = divmod(int(ids[0][1, 3]), 6)
    assert torch.equal(g[1, 3], fa[0][1, :, r, c])


def test_patchgan_shapes():
    D = PatchDiscriminator(ndf=8)
    assert D(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)
    assert PatchDiscriminator(ndf=8, antialias=False)(torch.zeros(1, 3, 256, 256)).shape == (1, 1, 30, 30)


# ---- one training step ------------------------------------------------------------------------------------

def test_one_cut_step_updates_all_networks_and_d_sees_real_and_fake_b():
    cfg = tiny("cut")
    assert (cfg.lambda_nce, cfg.nce_idt, cfg.flip_equivariance) == (1.0, True, False)
    t = CUTTrainer(cfg, epoch_size=10)
    seen = []
    t.D.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach().clone()))
    g0, d0, f0 = _params(t.G), _params(t.D), _params(t.F)
    torch.manual_seed(0)
    A, B = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    losses = t.train_step(A, B)
    assert set(losses) == {"G_GAN", "D_real", "D_fake", "G", "NCE", "NCE_Y"}
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["G"].item() == pytest.approx(losses["G_GAN"].item() + 0.5 * (losses["NCE"] + losses["NCE_Y"]).item(), rel=1e-5)
    assert _changed(g0, t.G) and _changed(d0, t.D) and _changed(f0, t.F)
    assert t.step == 1
    # D got the fake (twice: its own step, then the generator's) and the real B, never real A
    assert any(torch.equal(x, B) for x in seen)
    assert sum(torch.allclose(x, t.last["fake_B"]) for x in seen) == 2
    assert not any(x.shape == A.shape and torch.equal(x, A) for x in seen)
    assert t.last["idt_B"].shape == B.shape


def test_fastcut_steps_with_and_without_flip():
    cfg = tiny("fastcut")
    assert (cfg.lambda_nce, cfg.nce_idt, cfg.flip_equivariance) == (10.0, False, True)
    t = CUTTrainer(cfg, epoch_size=100)
    torch.manual_seed(5)
    flips = set()
    A, B = torch.rand(1, 3, 32, 32) * 2 - 1, torch.rand(1, 3, 32, 32) * 2 - 1
    for _ in range(8):
        g0 = _params(t.G)
        losses = t.train_step(A, B)
        assert "NCE_Y" not in losses and all(torch.isfinite(v) for v in losses.values())
        assert _changed(g0, t.G)
        flips.add(bool(t.last["flipped"]))
        if flips == {True, False}:
            break
    assert flips == {True, False}


@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_mixed_precision_path_runs(mode):
    """The CUDA autocast path, exercised with CPU bfloat16 autocast: losses stay float32 and finite."""
    t = CUTTrainer(tiny(mode), epoch_size=10)
    assert t.amp_dtype is None          # off on CPU by default
    t.amp_dtype = torch.bfloat16
    g0 = _params(t.G)
    A = torch.rand(1, 3, 32, 32) * 2 - 1
    for _ in range(2):
        losses = t.train_step(A, A.flip(3))
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in losses.values())
    assert t.last["fake_B"].dtype == torch.bfloat16 and _changed(g0, t.G)
    assert all(p.dtype == torch.float32 for p in t.G.parameters())


def test_learning_rate_constant_then_linear_to_zero():
    cfg = tiny("cut", n_epochs=2, n_epochs_decay=3)
    t = CUTTrainer(cfg, epoch_size=2)
    A = torch.zeros(1, 3, 32, 32)
    lrs = []
    for _ in range(10):
        lrs.append(t.lr)
        t.train_step(A, A)
    per_epoch = lrs[::2]
    expected = [cfg.lr * (1 - max(0, e - cfg.n_epochs) / (cfg.n_epochs_decay + 1)) for e in range(1, 6)]
    assert per_epoch == pytest.approx(expected)
    assert lrs[0] == lrs[1] and per_epoch[-1] < per_epoch[2] < per_epoch[1]


# ---- data -------------------------------------------------------------------------------------------------

def test_data_is_rgb_deterministic_and_stops_jitter_in_decay(folders):
    a_dir, b_dir = folders
    a, b = list_images(a_dir), list_images(b_dir)
    ds = UnpairedData(a, b, load_size=36, crop_size=32, flip=True, seed=3, samples_per_epoch=5,
                      n_epochs_constant=1, start=0, length=20)
    s0, s0b = ds[1], ds[1]
    assert s0["A"].shape == (3, 32, 32) and s0["B"].shape == (3, 32, 32)
    assert torch.equal(s0["A"], s0b["A"]) and torch.equal(s0["B"], s0b["B"])
    assert s0["A"].min() >= -1 and s0["A"].max() <= 1
    # every sample of an epoch visits A once (5 images, 5 samples per epoch)
    assert sorted(ds[i]["A_index"] for i in range(5)) == list(range(5))
    # the greyscale B file comes back as 3 equal channels
    grey = next(ds[i] for i in range(20) if ds[i]["B_index"] == 1)
    assert torch.equal(grey["B"][0], grey["B"][1]) and torch.equal(grey["B"][1], grey["B"][2])
    # decay phase (epoch 2 > n_epochs 1): no resize-and-crop jitter, only the flip
    s = ds[7]
    full = to_model_range(Image.open(a[s["A_index"]]).convert("RGB").resize((32, 32), Image.BICUBIC))
    assert torch.equal(s["A"], full) or torch.equal(s["A"], full.flip(2))


# ---- resume -----------------------------------------------------------------------------------------------

def _log(path):
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_resumed_run_matches_uninterrupted_run(folders, tmp_path):
    a_dir, b_dir = folders
    common = dict(a_dir=str(a_dir), b_dir=str(b_dir), epoch_size=3, n_epochs=1, n_epochs_decay=1)
    full = train(tiny("fastcut", out_dir=str(tmp_path / "full"), max_steps=4, **common), log=lambda s: None)
    part = train(tiny("fastcut", out_dir=str(tmp_path / "part"), max_steps=2, **common), log=lambda s: None)
    assert part["step"] == 2
    resumed_cfg = tiny("fastcut", out_dir=str(tmp_path / "part"), max_steps=4)   # architecture comes from the file
    res = train(resumed_cfg, resume=tmp_path / "part", log=lambda s: None)
    assert res["step"] == 4
    log_full, log_part = _log(tmp_path / "full" / "log.jsonl"), _log(tmp_path / "part" / "log.jsonl")
    assert sorted(log_part) == [1, 2, 3, 4]
    for step in (3, 4):       # step 4 runs at the decayed learning rate (epoch 2)
        for key in ("G_GAN", "D_real", "D_fake", "NCE", "lr"):
            assert log_part[step][key] == pytest.approx(log_full[step][key], rel=1e-5, abs=1e-7), (step, key)
    assert log_full[4]["lr"] < log_full[3]["lr"]
    g_full, g_res = full["trainer"].G.state_dict(), res["trainer"].G.state_dict()
    assert all(torch.allclose(g_full[k], g_res[k], atol=1e-6) for k in g_full)
    assert (tmp_path / "full" / "samples").glob("*.png")


# ---- export -----------------------------------------------------------------------------------------------

def test_export_loads_strictly_and_gives_identical_output(tmp_path):
    t = CUTTrainer(tiny("cut"), epoch_size=10)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    t.train_step(x, x)
    info = export_generator(t.G, tmp_path / "g.pth")
    assert info["ngf"] == 4 and info["n_blocks"] == 9 and json.loads((tmp_path / "g.json").read_text())["sha256"]
    model = build_trained_cut({"generator": tmp_path / "g.pth"}, ngf=4, n_blocks=9)
    y = torch.rand(2, 3, 36, 44) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(y), t.G.eval()(y))
    # the registry builds it from the JSON's build_args
    from engine import registry
    spec = registry.ModelSpec("cut-test-export", "translate", "test", info["builder"], files={"generator": "x"},
                              build_args=info["build_args"])
    registry.register(spec)
    try:
        built = registry.build_model("cut-test-export", {"generator": tmp_path / "g.pth"})
    finally:
        registry.MODELS.pop("cut-test-export", None)
    with torch.no_grad():
        assert torch.equal(built(y), model(y))
    # same keys and shapes (up to width) as the official layout the translation tab loads
    official = build_cut().state_dict()
    state = torch.load(tmp_path / "g.pth", weights_only=True)
    assert state.keys() == official.keys()
    assert all(state[k].dim() == official[k].dim() for k in state)
    assert infer_arch(official) == {"ngf": 64, "n_blocks": 9}
    # fp16: about half the bytes, still a strict load, close output
    info16 = export_generator(t.G, tmp_path / "g16.pth", fp16=True)
    assert info16["size"] < 0.6 * info["size"]
    m16 = build_trained_cut({"generator": tmp_path / "g16.pth"}, ngf=4, n_blocks=9)
    with torch.no_grad():
        assert (m16(y) - t.G(y)).abs().max() < 2e-2


def test_cli_export_of_a_run(folders, tmp_path, capsys):
    from engine.train.__main__ import main

    a_dir, b_dir = folders
    argv = ["cut", "--a", str(a_dir), "--b", str(b_dir), "--out", str(tmp_path / "run"), "--ngf", "4", "--ndf", "8",
            "--netf-nc", "16", "--num-patches", "8", "--crop-size", "32", "--load-size", "36", "--workers", "0",
            "--max-steps", "1", "--device", "cpu", "--sample-every", "1"]
    assert main(argv) == 0
    assert list((tmp_path / "run" / "samples").glob("step_*.png"))
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "x.pth"), "--fp16"]) == 0
    out = capsys.readouterr().out
    assert "[files.cut-horse2zebra-ours]" in out and "build_trained_cut" in out
    g = CUTGenerator(ngf=4, n_blocks=9)
    g.load_state_dict(torch.load(tmp_path / "x.pth", weights_only=True), strict=True)


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["cut", "fastcut"])
def test_cuda_steps_with_mixed_precision(mode, tmp_path):
    t = CUTTrainer(tiny(mode, device="cuda", amp="auto", crop_size=64, load_size=72), epoch_size=10)
    assert t.amp_dtype in (torch.bfloat16, torch.float16)
    g0 = _params(t.G)
    A = torch.rand(1, 3, 64, 64) * 2 - 1
    for _ in range(3):
        losses = t.train_step(A, A.flip(3))
    assert all(torch.isfinite(v).item() for v in losses.values()) and _changed(g0, t.G)
    state = t.state_dict()
    t2 = CUTTrainer.from_checkpoint(state)
    assert t2.step == 3 and all(torch.equal(a, b) for a, b in zip(t.G.parameters(), t2.G.parameters()))
    info = export_generator(t.G, tmp_path / "g.pth", fp16=True)
    assert info["dtype"] == "float16"
