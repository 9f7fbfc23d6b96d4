"""U-GAT-IT trainer: two generators, four CAM discriminators, one optimisation step, state, samples and export.

Paper: J. Kim, M. Kim, H. Kang, K. Lee, "U-GAT-IT: Unsupervised Generative Attentional Networks with Adaptive
Layer-Instance Normalization for Image-to-Image Translation", ICLR 2020. Every detail below was read from the
authors' PyTorch code (znxlwm/UGATIT-pytorch, MIT: ``UGATIT.py``, ``networks.py``, ``main.py``); the code is ours.
It runs on the CUT trainer's infrastructure (engine/train: data, TrainerBase in base.py, the training loop of
``cut.train``, checkpoints, progress, sample grids, export), selected with ``python -m engine.train ugatit``.

Networks: ``genA2B``, ``genB2A`` (engine.models.ugatit.UGATITGenerator; ngf 64, 4 blocks, full or light), global
discriminators ``disGA``, ``disGB`` (7 layers) and local ones ``disLA``, ``disLB`` (5 layers), all spectral-
normalised with CAM heads; PyTorch's default initialisation (the official code sets none).

One iteration (A, B in [-1, 1]), in the official order (the order matters: every discriminator forward pass in
training mode advances its spectral-norm power iteration):
1. discriminators: fakes A2B = genA2B(A), B2A = genB2A(B) (no gradient needed: only the D optimiser steps); each D
   scores the real image of its domain and the fake one, patch logits and CAM logits alike:
   ``L_D = λ_adv Σ_{D ∈ GA, LA, GB, LB} [MSE(D(real), 1) + MSE(D(fake), 0) + MSE(D_cam(real), 1) + MSE(D_cam(fake), 0)]``
   (least squares); one Adam step on the four discriminators.
2. generators: A2B, B2A again (with CAM logits), cycles A2B2A = genB2A(A2B), B2A2B = genA2B(B2A), identities
   A2A = genB2A(A), B2B = genA2B(B); for each domain
   ``λ_adv Σ_{G, L} [MSE(D(fake), 1) + MSE(D_cam(fake), 1)] + λ_cyc L1(cycle, real) + λ_id L1(identity, real)
   + λ_cam [BCE(cam(translation), 1) + BCE(cam(identity), 0)]`` with the generator's own CAM logits (BCE with
   logits); one Adam step on both generators; then every ρ of both generators is clipped to [0, 1].
Weights: λ_adv 1, λ_cyc 10, λ_id 10, λ_cam 1000. Adam(lr 1e-4, β (0.5, 0.999), weight decay 1e-4 in Adam's L2 form)
for both optimisers. Learning rate: constant, then linear decay to zero over the last ``n_epochs_decay`` epochs,
per iteration: step s (1-based) runs at lr·(1 − max(0, s − s₀)/S) with s₀ = n_epochs·E and S = n_epochs_decay·E,
the official ``decay_flag`` rule when the two phases are equal (it subtracts lr/(T/2) before every step past T/2).

Deliberate differences, none of which changes the maths: the D step's fakes are computed without a graph, and the
discriminators are frozen during the G step (the official code builds and then discards those gradients); each
sample's data is a function of (seed, sample index) (engine/train/data.py: A in a per-epoch permutation, B drawn
uniformly; the official code shuffles two loaders independently), so a resumed run repeats an uninterrupted one.
"""
from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models.ugatit import CAMDiscriminator, UGATITGenerator, clip_rho, load_generator
from . import checkpoint as ckpt_io
from .base import TrainerBase
from .config import TrainConfig
from .losses import lsgan_loss

GENERATORS = ("genA2B", "genB2A")
DISCRIMINATORS = ("disGA", "disGB", "disLA", "disLB")


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


class UGATITTrainer(TrainerBase):
    """Networks, optimisers, schedule and one training step of U-GAT-IT (see the module docstring).

    ``epoch_size`` is the number of iterations per epoch (the schedule is given in epochs, applied per iteration).
    """

    export_name = "ugatit_params.pt"
    checkpoint_format = ckpt_io.UGATIT_FORMAT
    resample = 2                      # PIL.Image.BILINEAR: torchvision's Resize default, as the official loader

    def __init__(self, cfg: TrainConfig, epoch_size: int, device: str | torch.device | None = None):
        if cfg.mode != "ugatit":
            raise ValueError(f"UGATITTrainer needs mode 'ugatit', got {cfg.mode!r}")
        super().__init__(cfg, epoch_size, device)

        torch.manual_seed(cfg.seed)
        gen = dict(ngf=cfg.ngf, n_blocks=cfg.n_blocks, img_size=cfg.crop_size, light=cfg.light)
        self.genA2B, self.genB2A = UGATITGenerator(**gen), UGATITGenerator(**gen)
        self.disGA = CAMDiscriminator(3, cfg.ndf, cfg.n_layers_d_global)
        self.disGB = CAMDiscriminator(3, cfg.ndf, cfg.n_layers_d_global)
        self.disLA = CAMDiscriminator(3, cfg.ndf, cfg.n_layers_d_local)
        self.disLB = CAMDiscriminator(3, cfg.ndf, cfg.n_layers_d_local)
        for name in GENERATORS + DISCRIMINATORS:
            getattr(self, name).to(self.device).train()

        adam = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        self.G_optim = torch.optim.Adam(itertools.chain(self.genA2B.parameters(), self.genB2A.parameters()), **adam)
        self.D_optim = torch.optim.Adam(itertools.chain(*(getattr(self, n).parameters() for n in DISCRIMINATORS)),
                                        **adam)
        self.optimizers = {"G": self.G_optim, "D": self.D_optim}
        self._finish_setup()

    # ---- schedule -----------------------------------------------------------------------------------------------
    def lr_factor(self, completed_steps: int) -> float:
        """Learning-rate factor of iteration ``completed_steps + 1`` (the scheduler counts iterations)."""
        s = completed_steps + 1
        start = self.cfg.n_epochs * self.epoch_size
        length = max(1, self.cfg.n_epochs_decay * self.epoch_size)
        return max(0.0, 1.0 - max(0, s - start) / length)

    @property
    def jitter_epochs(self) -> int:
        """The official U-GAT-IT loader keeps its resize-and-crop jitter for the whole run."""
        return 1 << 30

    def generators(self):
        return [getattr(self, n) for n in GENERATORS]

    def discriminators(self):
        return [getattr(self, n) for n in DISCRIMINATORS]

    # ---- one iteration ------------------------------------------------------------------------------------------
    def train_step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """One discriminator step and one generator step; inputs (N, 3, H, W) in [-1, 1]. Detached float32 losses."""
        cfg = self.cfg
        real_A = real_A.to(self.device, non_blocking=True)
        real_B = real_B.to(self.device, non_blocking=True)
        GA, GB, LA, LB = self.disGA, self.disGB, self.disLA, self.disLB

        # -- discriminators
        for d in self.discriminators():
            d.requires_grad_(True)
        self.D_optim.zero_grad(set_to_none=True)
        with self._autocast():
            with torch.no_grad():
                fake_A2B = self.genA2B(real_A)
                fake_B2A = self.genB2A(real_B)
            real_out = [d(x)[:2] for d, x in ((GA, real_A), (LA, real_A), (GB, real_B), (LB, real_B))]
            fake_out = [d(x)[:2] for d, x in ((GA, fake_B2A), (LA, fake_B2A), (GB, fake_A2B), (LB, fake_A2B))]
            per_d = [lsgan_loss(r[0], True) + lsgan_loss(f[0], False) + lsgan_loss(r[1], True) + lsgan_loss(f[1], False)
                     for r, f in zip(real_out, fake_out)]
            D_loss_A = cfg.lambda_adv * (per_d[0] + per_d[1])
            D_loss_B = cfg.lambda_adv * (per_d[2] + per_d[3])
            D_loss = D_loss_A + D_loss_B
        self.scaler_D.scale(D_loss).backward()
        self.scaler_D.step(self.D_optim)
        self.scaler_D.update()

        # -- generators
        for d in self.discriminators():
            d.requires_grad_(False)
        self.G_optim.zero_grad(set_to_none=True)
        with self._autocast():
            fake_A2B, cam_A2B, _ = self.genA2B(real_A, cam=True)
            fake_B2A, cam_B2A, _ = self.genB2A(real_B, cam=True)
            fake_A2B2A = self.genB2A(fake_A2B)
            fake_B2A2B = self.genA2B(fake_B2A)
            fake_A2A, cam_A2A, _ = self.genB2A(real_A, cam=True)
            fake_B2B, cam_B2B, _ = self.genA2B(real_B, cam=True)
            adv = [lsgan_loss(o[0], True) + lsgan_loss(o[1], True)
                   for o in (GA(fake_B2A)[:2], LA(fake_B2A)[:2], GB(fake_A2B)[:2], LB(fake_A2B)[:2])]
            adv_A, adv_B = cfg.lambda_adv * (adv[0] + adv[1]), cfg.lambda_adv * (adv[2] + adv[3])
            cyc_A = F.l1_loss(fake_A2B2A.float(), real_A.float())
            cyc_B = F.l1_loss(fake_B2A2B.float(), real_B.float())
            idt_A = F.l1_loss(fake_A2A.float(), real_A.float())
            idt_B = F.l1_loss(fake_B2B.float(), real_B.float())
            cam_A = _bce(cam_B2A, 1.0) + _bce(cam_A2A, 0.0)
            cam_B = _bce(cam_A2B, 1.0) + _bce(cam_B2B, 0.0)
            G_loss_A = adv_A + cfg.lambda_cycle * cyc_A + cfg.lambda_identity * idt_A + cfg.lambda_cam * cam_A
            G_loss_B = adv_B + cfg.lambda_cycle * cyc_B + cfg.lambda_identity * idt_B + cfg.lambda_cam * cam_B
            G_loss = G_loss_A + G_loss_B
        self.scaler_G.scale(G_loss).backward()
        self.scaler_G.step(self.G_optim)
        self.scaler_G.update()
        for g in self.generators():     # official: after the optimiser step
            clip_rho(g, 0.0, 1.0)
        for d in self.discriminators():
            d.requires_grad_(True)

        self.step += 1
        for s in self.schedulers.values():
            s.step()
        self.last = {"real_A": real_A, "real_B": real_B, "fake_A2B": fake_A2B.detach(), "fake_B2A": fake_B2A.detach()}
        losses = {"D": D_loss, "D_A": D_loss_A, "D_B": D_loss_B, "G": G_loss, "G_adv": adv_A + adv_B,
                  "G_cycle": cyc_A + cyc_B, "G_identity": idt_A + idt_B, "G_cam": cam_A + cam_B}
        return {k: v.detach().float() for k, v in losses.items()}

    # ---- samples ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _run(self, G, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with self._autocast():
            y, _, heat = G(x.to(self.device), cam=True)
        return y.float().cpu(), heat.float().cpu()

    def translate(self, x: torch.Tensor) -> torch.Tensor:
        """genA2B(x) for (N, 3, H, W) in [-1, 1], float32 on CPU."""
        return self._run(self.genA2B, x)[0]

    def sample_columns(self, sample_A: torch.Tensor, sample_B: torch.Tensor) -> list[torch.Tensor]:
        """The official grid's seven columns, here one row per image (A rows, then B rows): real, heat map of the
        identity pass, identity, heat map of the translation, translation, heat map of the cycle, cycle."""
        cols: list[list[torch.Tensor]] = [[] for _ in range(7)]
        for x, G, back in ((sample_A, self.genA2B, self.genB2A), (sample_B, self.genB2A, self.genA2B)):
            idt, h_idt = self._run(back, x)
            tr, h_tr = self._run(G, x)
            cyc, h_cyc = self._run(back, tr)
            size = tuple(x.shape[-2:])
            for i, t in enumerate((x.float().cpu(), heatmap_image(h_idt, size), idt, heatmap_image(h_tr, size), tr,
                                   heatmap_image(h_cyc, size), cyc)):
                cols[i].append(t)
        return [torch.cat(c) for c in cols]

    # ---- state --------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **self._common_state(),
            **{n: getattr(self, n).state_dict() for n in GENERATORS + DISCRIMINATORS},
            "G_optim": self.G_optim.state_dict(), "D_optim": self.D_optim.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any], restore_rng: bool = True) -> None:
        for n in GENERATORS + DISCRIMINATORS:
            getattr(self, n).load_state_dict(state[n], strict=True)
        self.G_optim.load_state_dict(state["G_optim"])
        self.D_optim.load_state_dict(state["D_optim"])
        self._load_common(state, restore_rng)

    # ---- export -------------------------------------------------------------------------------------------------
    def export(self, path: str | Path, fp16: bool, meta: dict[str, Any]) -> dict[str, Any]:
        return export_generators({n: getattr(self, n).state_dict() for n in GENERATORS}, path, fp16, meta)


def heatmap_image(heat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, 1, h, w) CAM heat maps -> (N, 3, H, W) JET images in [-1, 1], each min-max normalised then resized
    bilinearly (the official ``cam()`` helper's steps)."""
    import cv2

    out = []
    for m in heat.float().cpu():
        m = m[0].numpy()
        m = m - m.min()
        m = m / max(float(m.max()), 1e-12)
        m8 = cv2.resize(np.uint8(255 * m), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
        rgb = cv2.cvtColor(cv2.applyColorMap(m8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
        out.append(torch.from_numpy(rgb).permute(2, 0, 1).float().div(127.5).sub(1.0))
    return torch.stack(out)


def export_generators(states: dict[str, dict[str, torch.Tensor]], path: str | Path, fp16: bool = False,
                      meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``{"genA2B", "genB2A"}`` in the official checkpoint layout to ``path`` (+ ``.json``), check that both
    load strictly (engine.models.ugatit.load_generator) and return the JSON info."""
    from ..models.ugatit import infer_arch

    out = {}
    for n in GENERATORS:
        out[n] = {k: (v.half() if fp16 and v.is_floating_point() else v).detach().cpu().clone()
                  for k, v in states[n].items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(out, tmp)
    tmp.replace(path)
    for direction in ("A2B", "B2A"):
        load_generator(path, direction)            # layout check: strict load of both directions
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    arch = infer_arch(out["genA2B"])
    info = {"arch": "ugatit_generator", "builder": "engine.models.ugatit:build_ugatit", **arch,
            "dtype": "float16" if fp16 else "float32",
            "parameters": int(sum(v.numel() for v in out["genA2B"].values())),
            "size": path.stat().st_size, "sha256": digest,
            "paper": "Kim et al., U-GAT-IT, ICLR 2020", **(meta or {})}
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    return info


def export_from_checkpoint(state: dict[str, Any], path: str | Path, fp16: bool = False) -> dict[str, Any]:
    """Export both generators of a U-GAT-IT training checkpoint dict (from engine.train.checkpoint.load)."""
    cfg = state["config"]
    meta = {"mode": "ugatit", "step": int(state["step"]), "epoch_size": int(state.get("epoch_size", 0)),
            "crop_size": cfg.get("crop_size"), "a_dir": cfg.get("a_dir"), "b_dir": cfg.get("b_dir")}
    return export_generators({n: state[n] for n in GENERATORS}, path, fp16, meta)


def install_hint(info: dict[str, Any], path: str | Path) -> str:
    """Where to put an exported file so the translation tab offers both directions."""
    return (f"# U-GAT-IT ({'light' if info.get('light') else 'full'}, ngf {info['ngf']}, {info['n_blocks']} blocks): "
            f"copy {Path(path).name} to <weights folder>/ugatit/horse2zebra_params_latest.pt and start the app with "
            f"--weights-dir <weights folder>; the manifest entry ugatit-horse2zebra (engine/registry.py: "
            f"ugatit-horse2zebra and ugatit-zebra2horse) then finds it.\n"
            f"# To pin it: set sha256 = \"{info['sha256']}\" and size = {info['size']} in weights/manifest.toml.\n")
