"""Resumable training checkpoints for CUT / FastCUT (Park et al., ECCV 2020) and U-GAT-IT (Kim et al., ICLR 2020) runs.

A checkpoint is one ``torch.save`` dict that loads with ``weights_only=True`` (tensors and plain containers only):
``format``, ``config`` (TrainConfig as a dict), ``step``, the state dicts of the generator ``G``, discriminator
``D``, MLP heads ``F``, their optimisers, LR schedulers and gradient scalers, and the RNG states (torch CPU, CUDA,
NumPy legacy, Python ``random``). Writes are atomic (temporary file, then rename).
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

FORMAT = "gan-studio-cut-train-v1"
UGATIT_FORMAT = "gan-studio-ugatit-train-v1"
FORMATS = (FORMAT, UGATIT_FORMAT)


def rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": np_state[0], "key": torch.from_numpy(np_state[1].astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    npst = state.get("numpy")
    if npst:
        np.random.set_state((npst["name"], npst["key"].numpy().astype(np.uint32), npst["pos"], npst["has_gauss"],
                             npst["cached_gaussian"]))
    py = state.get("python")
    if py:
        random.setstate((py[0], tuple(py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


def save(obj: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)
    return path


def load(path: str | Path) -> dict[str, Any]:
    from ..errors import InputError

    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "latest.pt" if (path / "checkpoints").is_dir() else path / "latest.pt"
    if not path.is_file():
        raise InputError(f"No training checkpoint at {path}")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") not in FORMATS:
        raise InputError(f"{path} is not a training checkpoint of engine.train ({', '.join(FORMATS)})")
    return obj
