"""What the CUT / FastCUT trainer (engine/train/cut.py) and the U-GAT-IT trainer (engine/train/ugatit.py) share:
device and mixed-precision choice, the epoch counter, schedulers and gradient scalers, and the parts of a resumable
checkpoint that are not networks or optimisers (config, step, schedulers, scalers, RNG states).

A subclass builds its networks and ``self.optimizers`` (name -> torch.optim.Optimizer, the first one's learning
rate is reported as ``lr``), defines ``lr_factor(counter)`` (the LambdaLR rule), then calls
:meth:`TrainerBase._finish_setup`; its ``state_dict`` / ``load_state_dict`` add the networks and optimisers to
:meth:`_common_state` / :meth:`_load_common`.
"""
from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..device import select_device
from . import checkpoint as ckpt_io
from .config import RUN_CONTROL_FIELDS, TrainConfig


def amp_dtype(cfg: TrainConfig, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of a run: None off CUDA or with ``amp = "off"``; "auto" is bf16 where supported."""
    if device.type != "cuda" or cfg.amp == "off":
        return None
    if cfg.amp == "fp16":
        return torch.float16
    if cfg.amp == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class TrainerBase:
    """Config, device, epoch counter, schedule and checkpoint bookkeeping of a trainer (see the module docstring)."""

    checkpoint_format = ckpt_io.FORMAT

    def __init__(self, cfg: TrainConfig, epoch_size: int, device: str | torch.device | None = None):
        self.cfg = cfg
        self.epoch_size = max(1, int(epoch_size))
        self.device = select_device(device if device is not None else cfg.device)
        self.amp_dtype = amp_dtype(cfg, self.device)
        self.step = 0
        self.last: dict[str, torch.Tensor] = {}

    def _finish_setup(self) -> None:
        """Schedulers over ``self.optimizers`` and the two gradient scalers (active with fp16 autocast only)."""
        self.schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, self.lr_factor) for k, o in self.optimizers.items()}
        use_scaler = self.amp_dtype == torch.float16
        self.scaler_G = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.scaler_D = torch.amp.GradScaler("cuda", enabled=use_scaler)

    def lr_factor(self, counter: int) -> float:          # pragma: no cover - every trainer defines its rule
        raise NotImplementedError

    @property
    def lr(self) -> float:
        return next(iter(self.optimizers.values())).param_groups[0]["lr"]

    @property
    def epoch(self) -> int:
        """1-based epoch of the next iteration."""
        return self.step // self.epoch_size + 1

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    # ---- checkpoint bookkeeping ---------------------------------------------------------------------------------
    def _common_state(self) -> dict[str, Any]:
        return {
            "format": self.checkpoint_format, "config": self.cfg.to_dict(), "epoch_size": self.epoch_size,
            "step": self.step,
            "sched": {k: s.state_dict() for k, s in self.schedulers.items()},
            "scaler_G": self.scaler_G.state_dict(), "scaler_D": self.scaler_D.state_dict(),
            "rng": ckpt_io.rng_state(),
        }

    def _load_common(self, state: dict[str, Any], restore_rng: bool = True) -> None:
        for k, s in self.schedulers.items():
            s.load_state_dict(state["sched"][k])
        if state.get("scaler_G"):
            self.scaler_G.load_state_dict(state["scaler_G"])
        if state.get("scaler_D"):
            self.scaler_D.load_state_dict(state["scaler_D"])
        self.step = int(state["step"])
        self.epoch_size = int(state.get("epoch_size", self.epoch_size))
        if restore_rng and "rng" in state:
            ckpt_io.set_rng_state(state["rng"])

    def load_state_dict(self, state: dict[str, Any], restore_rng: bool = True) -> None:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def from_checkpoint(cls, state: dict[str, Any], overrides: dict[str, Any] | None = None,
                        device: str | torch.device | None = None):
        """Rebuild a trainer from a checkpoint dict; ``overrides`` may change run-control fields only."""
        d = dict(state["config"])
        for k, v in (overrides or {}).items():
            if k not in RUN_CONTROL_FIELDS:
                raise ValueError(f"{k} cannot change when resuming (it changes the model or the maths)")
            if v is not None and v != "":
                d[k] = v
        trainer = cls(TrainConfig.from_dict(d), int(state["epoch_size"]), device)
        trainer.load_state_dict(state)
        return trainer
