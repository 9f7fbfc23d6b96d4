"""Training of CUT / FastCUT (Park et al., "Contrastive Learning for Unpaired Image-to-Image Translation",
ECCV 2020) on two image folders, with resumable checkpoints and export in the official generator layout.

    python -m engine.train cut --a DATA/horse2zebra/trainA --b DATA/horse2zebra/trainB --out runs/cut
    python -m engine.train fastcut ...
    python -m engine.train export runs/cut --out weights/ours/cut_horse2zebra.pth [--fp16]

Python: ``from engine.train import make_config, train``. Importing this package does not import torch.
"""
from __future__ import annotations

from .config import TrainConfig, make_config, preset

__all__ = ["TrainConfig", "make_config", "preset", "train", "CUTTrainer"]


def __getattr__(name: str):
    if name in ("train", "CUTTrainer"):
        from . import cut
        return getattr(cut, name)
    raise AttributeError(name)
