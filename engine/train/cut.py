"""CUT / FastCUT trainer: one optimisation step, the training loop, sample grids and resumable checkpoints.

Paper: T. Park, A. A. Efros, R. Zhang, J.-Y. Zhu, "Contrastive Learning for Unpaired Image-to-Image Translation",
ECCV 2020. Facts taken from the paper and the official code (taesungp/contrastive-unpaired-translation); the code
here is our own.

One iteration (batch X from A, Y from B):
1. ``real = [X, Y]`` for CUT (identity NCE), ``X`` for FastCUT; FastCUT flips ``real`` horizontally with p = 0.5
   (flip-equivariance). ``fake = G(real)`` → G(X) and, for CUT, the identity output G(Y).
2. Discriminator: ``L_D = ½ (MSE(D(G(X).detach()), 0) + MSE(D(Y), 1))`` (least squares), Adam step on D.
3. Generator and MLP heads: ``L_G = λ_GAN · MSE(D(G(X)), 1) + NCE`` with
   ``NCE = PatchNCE(X, G(X))`` (FastCUT) or ``½ (PatchNCE(X, G(X)) + PatchNCE(Y, G(Y)))`` (CUT), where
   ``PatchNCE(src, out) = λ_NCE · mean over layers l ∈ {0,4,8,12,16} of mean over patches of the patch NCE loss``
   between queries H_l(G_enc^l(out)) and keys H_l(G_enc^l(src)) at the same randomly sampled positions (256 per
   layer, shared between the source and the output), negatives from the same image, τ = 0.07. With the flip,
   the query features are flipped back before sampling. D is frozen for this step; Adam steps on G and the heads.

The keys are detached (the official loss detaches them), so they are computed without a graph: reused from step 1
when no flip happened (same weights, same input: identical values), recomputed under ``no_grad`` otherwise.
Learning rate: constant for ``n_epochs`` epochs, then linear decay to zero over ``n_epochs_decay`` epochs
(official rule: factor 1 − max(0, e − n_epochs) / (n_epochs_decay + 1) for 1-based epoch e).
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Callable

import torch

from ..device import describe
from ..models.patchgan import PatchDiscriminator, PatchSampleMLP, init_weights
from ..models.resnet_generator import CUTGenerator
from . import checkpoint as ckpt_io
from .base import TrainerBase
from .config import RUN_CONTROL_FIELDS, TrainConfig
from .losses import lsgan_loss, patch_nce

Progress = Callable[[float, str], None] | None


def feature_channels(G: torch.nn.Module, layers: tuple[int, ...]) -> list[int]:
    """Channels of the generator's outputs at ``layers`` (one tiny forward on CPU weights' device)."""
    p = next(G.parameters())
    with torch.no_grad():
        feats = G(torch.zeros(1, 3, 32, 32, device=p.device, dtype=p.dtype), layers=list(layers), encode_only=True)
    return [int(f.shape[1]) for f in feats]


class CUTTrainer(TrainerBase):
    """Networks, optimisers, schedulers and one training step of CUT or FastCUT.

    ``epoch_size`` is the number of iterations per epoch (the LR schedule is counted in epochs).
    """

    def __init__(self, cfg: TrainConfig, epoch_size: int, device: str | torch.device | None = None):
        super().__init__(cfg, epoch_size, device)
        self.nce_layers = list(cfg.nce_layers)

        torch.manual_seed(cfg.seed)
        self.G = init_weights(CUTGenerator(ngf=cfg.ngf, n_blocks=cfg.n_blocks), cfg.init_gain)
        n_modules = len(self.G.model)
        if max(self.nce_layers) >= n_modules or min(self.nce_layers) < 0:
            raise ValueError(f"nce_layers {self.nce_layers} must lie in [0, {n_modules - 1}] for this generator")
        self.D = init_weights(PatchDiscriminator(3, cfg.ndf, cfg.n_layers_d, cfg.d_antialias), cfg.init_gain)
        self.F = init_weights(PatchSampleMLP(feature_channels(self.G, cfg.nce_layers), cfg.netf_nc), cfg.init_gain)
        for net in (self.G, self.D, self.F):
            net.to(self.device).train()

        betas = (cfg.beta1, cfg.beta2)
        self.opt_G = torch.optim.Adam(self.G.parameters(), lr=cfg.lr, betas=betas)
        self.opt_D = torch.optim.Adam(self.D.parameters(), lr=cfg.lr, betas=betas)
        self.opt_F = torch.optim.Adam(self.F.parameters(), lr=cfg.lr, betas=betas)
        self.optimizers = {"G": self.opt_G, "D": self.opt_D, "F": self.opt_F}
        self._finish_setup()
        # the step's own randomness (patch positions, FastCUT's flip) has dedicated generators, saved in checkpoints,
        # so nothing else that draws random numbers (data loaders, user code) changes a run
        self.gen_patches = torch.Generator(device=self.device).manual_seed(cfg.seed + 1)
        self.gen_flip = torch.Generator().manual_seed(cfg.seed + 2)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True

    # ---- schedule -------------------------------------------------------------------------------------------
    def lr_factor(self, completed_epochs: int) -> float:
        """Official linear policy; ``completed_epochs`` is the scheduler's counter (1-based epoch − 1)."""
        epoch = completed_epochs + 1
        return 1.0 - max(0, epoch - self.cfg.n_epochs) / float(self.cfg.n_epochs_decay + 1)

    # ---- one iteration --------------------------------------------------------------------------------------
    def nce_loss(self, feats_src: list[torch.Tensor], feats_out: list[torch.Tensor], n_x: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """λ_NCE-weighted PatchNCE averaged over layers, for the first ``n_x`` images (X) and the rest (Y, or None).

        ``feats_src`` are the keys (no graph needed), ``feats_out`` the queries, both aligned spatially.
        """
        with torch.no_grad():
            k_proj, ids = self.F(feats_src, self.cfg.num_patches, generator=self.gen_patches)
        q_proj, _ = self.F(feats_out, self.cfg.num_patches, ids)
        loss_x = loss_y = 0.0
        for q, k in zip(q_proj, k_proj):
            per_patch = patch_nce(q, k, self.cfg.nce_t)            # (N, P)
            loss_x = loss_x + per_patch[:n_x].mean()
            if per_patch.shape[0] > n_x:
                loss_y = loss_y + per_patch[n_x:].mean()
        n_layers = len(q_proj)
        lam = self.cfg.lambda_nce
        loss_x = loss_x * lam / n_layers
        has_y = feats_out[0].shape[0] > n_x
        return loss_x, (loss_y * lam / n_layers if has_y else None)

    def train_step(self, real_A: torch.Tensor, real_B: torch.Tensor) -> dict[str, torch.Tensor]:
        """One D step and one G+F step. Inputs (N, 3, H, W) in [-1, 1]. Returns detached scalar losses."""
        cfg = self.cfg
        real_A = real_A.to(self.device, non_blocking=True)
        real_B = real_B.to(self.device, non_blocking=True)
        n = real_A.shape[0]
        real = torch.cat([real_A, real_B]) if cfg.nce_idt else real_A
        flipped = bool(cfg.flip_equivariance and torch.rand((), generator=self.gen_flip) < 0.5)
        if flipped:
            real = torch.flip(real, [3])

        with self._autocast():
            fake, feats_real = self.G(real, layers=self.nce_layers)
        fake_B = fake[:n]

        # -- discriminator
        self.D.requires_grad_(True)
        self.opt_D.zero_grad(set_to_none=True)
        with self._autocast():
            loss_D_fake = lsgan_loss(self.D(fake_B.detach()), False)
            loss_D_real = lsgan_loss(self.D(real_B), True)
            loss_D = 0.5 * (loss_D_fake + loss_D_real)
        self.scaler_D.scale(loss_D).backward()
        self.scaler_D.step(self.opt_D)
        self.scaler_D.update()

        # -- generator and MLP heads
        self.D.requires_grad_(False)
        self.opt_G.zero_grad(set_to_none=True)
        self.opt_F.zero_grad(set_to_none=True)
        with self._autocast():
            if cfg.lambda_gan > 0:
                loss_G_GAN = lsgan_loss(self.D(fake_B), True) * cfg.lambda_gan
            else:
                loss_G_GAN = torch.zeros((), device=self.device)
            if cfg.lambda_nce > 0:
                if flipped:   # keys from the unflipped sources
                    src = torch.cat([real_A, real_B]) if cfg.nce_idt else real_A
                    with torch.no_grad():
                        feats_src = self.G(src, layers=self.nce_layers, encode_only=True)
                else:
                    feats_src = [f.detach() for f in feats_real]
                feats_out = self.G(fake, layers=self.nce_layers, encode_only=True)
                if flipped:
                    feats_out = [torch.flip(f, [3]) for f in feats_out]
                loss_NCE, loss_NCE_Y = self.nce_loss(feats_src, feats_out, n)
            else:
                loss_NCE, loss_NCE_Y = torch.zeros((), device=self.device), None
            nce_both = 0.5 * (loss_NCE + loss_NCE_Y) if loss_NCE_Y is not None else loss_NCE
            loss_G = loss_G_GAN + nce_both
        self.scaler_G.scale(loss_G).backward()
        self.scaler_G.step(self.opt_G)
        self.scaler_G.step(self.opt_F)
        self.scaler_G.update()
        self.D.requires_grad_(True)

        self.step += 1
        if self.step % self.epoch_size == 0:
            for s in self.schedulers.values():
                s.step()
        losses = {"G_GAN": loss_G_GAN, "D_real": loss_D_real, "D_fake": loss_D_fake, "G": loss_G, "NCE": loss_NCE}
        if loss_NCE_Y is not None:
            losses["NCE_Y"] = loss_NCE_Y
        self.last = {"real_A": real_A, "real_B": real_B, "fake_B": fake_B.detach(), "flipped": torch.tensor(flipped)}
        if cfg.nce_idt:
            self.last["idt_B"] = fake[n:].detach()
        return {k: v.detach().float() for k, v in losses.items()}

    @torch.no_grad()
    def translate(self, x: torch.Tensor) -> torch.Tensor:
        """G(x) for (N, 3, H, W) in [-1, 1], float32 on CPU (the generator's train/eval modes are identical)."""
        with self._autocast():
            y = self.G(x.to(self.device))
        return y.float().cpu()

    # ---- what the shared training loop (train()) asks of a trainer ---------------------------------------------
    export_name = "latest_net_G.pth"

    @property
    def jitter_epochs(self) -> int:
        """Epochs with resize-and-crop jitter (official CUT: none once the learning rate decays)."""
        return self.cfg.n_epochs

    resample = 3   # PIL.Image.BICUBIC, the official CUT resize

    def sample_columns(self, sample_A: torch.Tensor, sample_B: torch.Tensor) -> list[torch.Tensor]:
        """Columns of the sample grid: A, G(A) and, for CUT, B, G(B) (identity)."""
        cols = [sample_A, self.translate(sample_A)]
        if self.cfg.nce_idt:
            cols += [sample_B, self.translate(sample_B)]
        return cols

    def export(self, path: str | Path, fp16: bool, meta: dict[str, Any]) -> dict[str, Any]:
        from .export import export_generator

        return export_generator(self.G, path, fp16=fp16, meta=meta)

    # ---- state ----------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            **self._common_state(),
            "G": self.G.state_dict(), "D": self.D.state_dict(), "F": self.F.state_dict(),
            "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(), "opt_F": self.opt_F.state_dict(),
            "rng_patches": self.gen_patches.get_state(), "rng_flip": self.gen_flip.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any], restore_rng: bool = True) -> None:
        self.G.load_state_dict(state["G"], strict=True)
        self.D.load_state_dict(state["D"], strict=True)
        self.F.load_state_dict(state["F"], strict=True)
        self.opt_G.load_state_dict(state["opt_G"])
        self.opt_D.load_state_dict(state["opt_D"])
        self.opt_F.load_state_dict(state["opt_F"])
        self._load_common(state, restore_rng)
        if restore_rng:
            if "rng_flip" in state:
                self.gen_flip.set_state(state["rng_flip"])
            if "rng_patches" in state:
                try:
                    self.gen_patches.set_state(state["rng_patches"])
                except (RuntimeError, ValueError):   # resumed on another device type: new, reproducible stream
                    self.gen_patches.manual_seed(self.cfg.seed + 1 + self.step)


# ---- sample grids -------------------------------------------------------------------------------------------

def save_grid(path: str | Path, columns: list[torch.Tensor]) -> Path:
    """PNG with one row per image and one column per tensor in ``columns`` (each (n, 3, H, W) in [-1, 1])."""
    from PIL import Image

    n = min(c.shape[0] for c in columns)
    rows = [torch.cat([c[i].float().cpu() for c in columns], dim=2) for i in range(n)]
    grid = torch.cat(rows, dim=1)
    arr = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, "RGB").save(path)
    return path


# ---- the training run ---------------------------------------------------------------------------------------

def _format_losses(losses: dict[str, float]) -> str:
    return " ".join(f"{k} {v:.3f}" for k, v in losses.items())


def trainer_class(mode: str):
    """The trainer of a mode: CUTTrainer for cut / fastcut, UGATITTrainer for ugatit (engine/train/ugatit.py)."""
    if mode == "ugatit":
        from .ugatit import UGATITTrainer
        return UGATITTrainer
    return CUTTrainer


def train(cfg: TrainConfig, resume: str | Path | None = None, progress: Progress = None,
          log: Callable[[str], None] = print) -> dict[str, Any]:
    """Train (or continue) a run; returns a summary (steps, seconds per iteration, last losses, file paths).

    Writes under ``cfg.out_dir``: ``checkpoints/latest.pt`` (every ``save_every`` steps and at the end),
    ``samples/step_XXXXXXX.png`` (every ``sample_every`` steps and at the end), ``log.jsonl`` (one line per print)
    and ``export/latest_net_G.pth`` + ``.json`` (the generator in the official CUT layout, at the end).
    """
    from .data import UnpairedData, fixed_batch, list_images

    if resume is not None:
        state = ckpt_io.load(resume)
        overrides = {k: getattr(cfg, k) for k in RUN_CONTROL_FIELDS}
        trainer = trainer_class(state["config"]["mode"]).from_checkpoint(state, overrides)
        cfg = trainer.cfg
        del state
        log(f"resumed from {resume} at step {trainer.step} (epoch {trainer.epoch})")
    a_files = list_images(cfg.a_dir, cfg.max_images)
    b_files = list_images(cfg.b_dir, cfg.max_images)
    if resume is None:
        epoch_size = cfg.epoch_size or max(1, max(len(a_files), len(b_files)) // cfg.batch_size)
        trainer = trainer_class(cfg.mode)(cfg, epoch_size)
    epoch_size = trainer.epoch_size
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps({**cfg.to_dict(), "epoch_size": epoch_size}, indent=2))

    total = cfg.total_epochs * epoch_size
    end = min(total, cfg.max_steps) if cfg.max_steps else total
    start = trainer.step
    log(f"{cfg.mode.upper()} on {describe(trainer.device)}, amp {trainer.amp_dtype or 'off'}; "
        f"|A| = {len(a_files)}, |B| = {len(b_files)}, {epoch_size} it/epoch, epochs {cfg.n_epochs}+{cfg.n_epochs_decay} "
        f"({total} it); this run: steps {start} -> {end}")
    bs = cfg.batch_size
    data = UnpairedData(a_files, b_files, load_size=cfg.load_size, crop_size=cfg.crop_size, flip=not cfg.no_flip,
                        seed=cfg.seed, samples_per_epoch=epoch_size * bs, n_epochs_constant=trainer.jitter_epochs,
                        start=start * bs, length=max(0, end - start) * bs, resample=trainer.resample)
    on_cuda = trainer.device.type == "cuda"
    workers = max(0, cfg.num_workers)
    loader = torch.utils.data.DataLoader(data, batch_size=bs, shuffle=False, num_workers=workers,
                                         generator=torch.Generator().manual_seed(cfg.seed),
                                         pin_memory=on_cuda, drop_last=False,
                                         persistent_workers=False, prefetch_factor=4 if workers else None)
    sample_A = fixed_batch(a_files, cfg.n_samples, cfg.crop_size)
    sample_B = fixed_batch(b_files, cfg.n_samples, cfg.crop_size)

    def write_samples() -> Path:
        return save_grid(out / "samples" / f"step_{trainer.step:07d}.png", trainer.sample_columns(sample_A, sample_B))

    def save_ckpt() -> Path:
        return ckpt_io.save(trainer.state_dict(), out / "checkpoints" / "latest.pt")

    t_start = time.perf_counter()
    t_mark, step_mark = t_start, start
    sums: dict[str, torch.Tensor] = {}
    count = 0
    last_losses: dict[str, float] = {}
    sec_per_it = float("nan")
    stopped = "schedule done" if end == total else "max_steps"
    log_file = open(out / "log.jsonl", "a", encoding="utf-8")
    try:
        for batch in loader:
            lr_used, epoch_used = trainer.lr, trainer.epoch
            losses = trainer.train_step(batch["A"], batch["B"])
            for k, v in losses.items():
                sums[k] = sums[k] + v if k in sums else v.clone()
            count += 1
            step = trainer.step
            if step % cfg.print_every == 0 or step == end:
                if on_cuda:
                    torch.cuda.synchronize(trainer.device)
                now = time.perf_counter()
                sec_per_it = (now - t_mark) / max(1, step - step_mark)
                t_mark, step_mark = now, step
                last_losses = {k: float(v) / count for k, v in sums.items()}
                if not all(math.isfinite(v) for v in last_losses.values()):
                    save_ckpt()
                    raise FloatingPointError(f"non-finite loss at step {step}: {last_losses}")
                sums, count = {}, 0
                eta = sec_per_it * (end - step)
                record = {"step": step, "epoch": epoch_used, "lr": lr_used, "sec_per_it": sec_per_it,
                          **last_losses}
                if on_cuda:
                    record["max_mem_gib"] = torch.cuda.max_memory_allocated(trainer.device) / 2 ** 30
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                log(f"[{step}/{end}] epoch {epoch_used} lr {lr_used:.2e} {sec_per_it:.3f} s/it "
                    f"eta {eta / 60:.1f} min | {_format_losses(last_losses)}")
                if progress is not None:
                    progress((step - start) / max(1, end - start), f"step {step}/{end}")
            if cfg.sample_every and step % cfg.sample_every == 0:
                write_samples()
            if cfg.save_every and step % cfg.save_every == 0:
                save_ckpt()
            if cfg.time_budget and time.perf_counter() - t_start > cfg.time_budget:
                stopped = "time budget"
                break
    finally:
        log_file.close()
    ckpt_path = save_ckpt()
    grid = write_samples()
    export_path = out / "export" / trainer.export_name
    info = trainer.export(export_path, cfg.export_fp16,
                          {"mode": cfg.mode, "step": trainer.step, "epoch_size": epoch_size,
                           "crop_size": cfg.crop_size, "a_dir": str(cfg.a_dir), "b_dir": str(cfg.b_dir)})
    elapsed = time.perf_counter() - t_start
    log(f"stopped ({stopped}) at step {trainer.step} after {elapsed / 60:.1f} min; checkpoint {ckpt_path}; "
        f"samples {grid}; generator {export_path} ({info['size'] / 2 ** 20:.1f} MiB)")
    return {"step": trainer.step, "stopped": stopped, "sec_per_it": sec_per_it, "losses": last_losses,
            "checkpoint": str(ckpt_path), "samples": str(grid), "export": str(export_path), "elapsed_s": elapsed,
            "trainer": trainer}
