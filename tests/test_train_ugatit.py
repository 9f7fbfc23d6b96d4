"""U-GAT-IT trainer (Kim et al., ICLR 2020) on the engine.train infrastructure: official settings, one step,
exact resume, samples, export and the CLI. Tiny widths, 96² crops (the smallest a 7-layer global discriminator
takes), CPU."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine.models.ugatit import ILN, AdaILN, build_ugatit
from engine.train.config import make_config
from engine.train.cut import train
from engine.train.ugatit import DISCRIMINATORS, GENERATORS, UGATITTrainer

TINY = dict(ngf=2, ndf=2, n_blocks=1, crop_size=96, load_size=100, light=True, device="cpu", num_workers=0, seed=0,
            print_every=1, sample_every=0, save_every=0, n_samples=1)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny(**kw):
    return make_config("ugatit", **{**TINY, **kw})


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("ugatit_data")
    rng = np.random.default_rng(0)
    for dom, n in (("A", 3), ("B", 2)):
        (root / dom).mkdir()
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (104, 110, 3), dtype=np.uint8)).save(root / dom / f"{i}.png")
    return root / "A", root / "B"


def _snapshot(module):
    return [p.detach().clone() for p in module.parameters()]


def _changed(before, module):
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def _rhos(module):
    return torch.cat([m.rho.detach().flatten() for m in module.modules() if isinstance(m, (AdaILN, ILN))])


def test_official_settings():
    cfg = make_config("ugatit")
    assert (cfg.ngf, cfg.ndf, cfg.n_blocks, cfg.light) == (64, 64, 4, False)
    assert (cfg.n_layers_d_global, cfg.n_layers_d_local) == (7, 5)
    assert (cfg.lambda_adv, cfg.lambda_cycle, cfg.lambda_identity, cfg.lambda_cam) == (1, 10, 10, 1000)
    assert (cfg.lr, cfg.beta1, cfg.beta2, cfg.weight_decay, cfg.batch_size) == (1e-4, 0.5, 0.999, 1e-4, 1)
    assert (cfg.load_size, cfg.crop_size) == (286, 256) and cfg.n_epochs == cfg.n_epochs_decay
    t = UGATITTrainer(tiny(), epoch_size=4)
    for opt in (t.G_optim, t.D_optim):
        g = opt.param_groups[0]
        assert (g["lr"], g["betas"], g["weight_decay"]) == (1e-4, (0.5, 0.999), 1e-4)
    assert [t.disGA.n_layers, t.disLA.n_layers] == [7, 5]
    with pytest.raises(ValueError, match="at least 96"):
        tiny(crop_size=64, load_size=72)


def test_one_step_updates_both_generators_and_all_four_discriminators():
    t = UGATITTrainer(tiny(), epoch_size=10)
    with torch.no_grad():   # rho outside [0, 1] before the step: clipped after it
        for g in (t.genA2B, t.genB2A):
            for m in g.modules():
                if isinstance(m, (AdaILN, ILN)):
                    m.rho.copy_(torch.linspace(-0.5, 1.5, m.rho.numel()).view_as(m.rho))
    before = {n: _snapshot(getattr(t, n)) for n in GENERATORS + DISCRIMINATORS}
    torch.manual_seed(0)
    A, B = torch.rand(1, 3, 96, 96) * 2 - 1, torch.rand(1, 3, 96, 96) * 2 - 1
    losses = t.train_step(A, B)
    assert set(losses) == {"D", "D_A", "D_B", "G", "G_adv", "G_cycle", "G_identity", "G_cam"}
    assert all(torch.isfinite(v) for v in losses.values())
    expected_g = losses["G_adv"] + 10 * losses["G_cycle"] + 10 * losses["G_identity"] + 1000 * losses["G_cam"]
    assert losses["G"].item() == pytest.approx(expected_g.item(), rel=1e-5)
    assert losses["D"].item() == pytest.approx((losses["D_A"] + losses["D_B"]).item(), rel=1e-6)
    for n in GENERATORS + DISCRIMINATORS:
        assert _changed(before[n], getattr(t, n)), f"{n} did not change"
    for g in (t.genA2B, t.genB2A):
        r = _rhos(g)
        assert r.min() >= 0 and r.max() <= 1 and (r == 0).any() and (r == 1).any()
    assert t.step == 1 and t.last["fake_A2B"].shape == A.shape


def test_learning_rate_constant_then_linear_to_zero_per_iteration():
    t = UGATITTrainer(tiny(n_epochs=1, n_epochs_decay=1), epoch_size=2)
    factors = [t.lr_factor(k) for k in range(4)]            # iterations 1..4; decay over iterations 3 and 4
    assert factors == pytest.approx([1.0, 1.0, 0.5, 0.0])
    assert t.lr == pytest.approx(1e-4)


def _log(path):
    return {r["step"]: r for r in map(json.loads, path.read_text().splitlines())}


@pytest.mark.slow
def test_exact_resume_samples_and_export(folders, tmp_path):
    a_dir, b_dir = folders
    common = dict(a_dir=str(a_dir), b_dir=str(b_dir), epoch_size=2, n_epochs=1, n_epochs_decay=1)
    full = train(tiny(out_dir=str(tmp_path / "full"), max_steps=4, **common), log=lambda s: None)
    part = train(tiny(out_dir=str(tmp_path / "part"), max_steps=2, **common), log=lambda s: None)
    assert part["step"] == 2
    res = train(tiny(out_dir=str(tmp_path / "part"), max_steps=4), resume=tmp_path / "part", log=lambda s: None)
    assert res["step"] == 4
    log_full, log_part = _log(tmp_path / "full" / "log.jsonl"), _log(tmp_path / "part" / "log.jsonl")
    assert sorted(log_part) == [1, 2, 3, 4] and log_full[4]["lr"] < log_full[3]["lr"]
    for step in (3, 4):
        for key in ("D", "G", "G_cam", "G_cycle", "lr"):
            assert log_part[step][key] == pytest.approx(log_full[step][key], rel=1e-5, abs=1e-7), (step, key)
    tf, tr = full["trainer"], res["trainer"]
    for n in GENERATORS + DISCRIMINATORS:
        sf, sr = getattr(tf, n).state_dict(), getattr(tr, n).state_dict()
        assert all(torch.allclose(sf[k], sr[k], atol=1e-6) for k in sf), n
    # sample grid: 7 columns (real, heat, identity, heat, translation, heat, cycle), one row per A and B sample
    grid = Image.open(full["samples"])
    assert grid.size == (7 * 96, 2 * 96)
    # the export is an official-layout checkpoint the registry builder loads, both directions
    state = torch.load(full["export"], weights_only=True)
    assert set(state) == {"genA2B", "genB2A"}
    x = torch.rand(1, 3, 40, 52) * 2 - 1
    for direction, G in (("A2B", tf.genA2B), ("B2A", tf.genB2A)):
        model = build_ugatit({"checkpoint": full["export"]}, direction=direction)
        with torch.no_grad():
            assert torch.equal(model(x), G.eval()(x))


def test_cli_trains_and_exports(folders, tmp_path, capsys):
    from engine.train.__main__ import main

    a_dir, b_dir = folders
    argv = ["ugatit", "--a", str(a_dir), "--b", str(b_dir), "--out", str(tmp_path / "run"), "--ngf", "2", "--ndf", "2",
            "--n-blocks", "1", "--light", "--crop-size", "96", "--load-size", "100", "--workers", "0",
            "--max-steps", "1", "--device", "cpu", "--lambda-cam", "500"]
    assert main(argv) == 0
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["mode"] == "ugatit" and cfg["lambda_cam"] == 500 and cfg["light"] is True and cfg["lr"] == 1e-4
    capsys.readouterr()
    assert main(["export", str(tmp_path / "run"), "--out", str(tmp_path / "u.pt"), "--fp16"]) == 0
    out = capsys.readouterr().out
    assert "ugatit/horse2zebra_params_latest.pt" in out and '"dtype": "float16"' in out
    assert build_ugatit({"checkpoint": tmp_path / "u.pt"}, direction="B2A").light
