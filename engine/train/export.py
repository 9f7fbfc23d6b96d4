"""Export a trained CUT / FastCUT generator in the official checkpoint layout, and build it back for inference.

Paper: Park et al., "Contrastive Learning for Unpaired Image-to-Image Translation", ECCV 2020.

The exported ``.pth`` is a plain state dict with the keys of the official ``latest_net_G.pth``
(``model.<idx>...``, including the ``filt`` buffers of the antialiased sampling layers; see
shared/specs/checkpoints.md section 2), so it loads with ``strict=True`` into
:class:`engine.models.resnet_generator.CUTGenerator` of the same width. Optionally stored in float16 (half the
size; ``load_state_dict`` casts back to float32). A JSON file beside it records what a registry entry needs:
the builder, ``ngf`` / ``n_blocks`` (also recoverable from the tensor shapes with :func:`infer_arch`), the
sha256 and size, and the training settings.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Mapping

import torch

BUILDER = "engine.train.export:build_trained_cut"


def generator_state_dict(G: torch.nn.Module, fp16: bool = False) -> dict[str, torch.Tensor]:
    """CPU copy of ``G``'s state dict (floating tensors in float16 when ``fp16``)."""
    out = {}
    for k, v in G.state_dict().items():
        v = v.detach().to("cpu").clone()
        if fp16 and v.is_floating_point():
            v = v.half()
        out[k] = v
    return out


def infer_arch(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """``{"ngf", "n_blocks"}`` of a CUT generator state dict (first conv width, number of residual blocks)."""
    ngf = int(state["model.1.weight"].shape[0])
    blocks = {int(m.group(1)) for k in state if (m := re.match(r"model\.(\d+)\.conv_block\.", k))}
    return {"ngf": ngf, "n_blocks": len(blocks)}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def export_generator(G_or_state: torch.nn.Module | Mapping[str, torch.Tensor], path: str | Path,
                     fp16: bool = False, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write the generator to ``path`` (+ ``path.json``); checks that it loads strictly; returns the JSON info."""
    from ..models.resnet_generator import CUTGenerator

    if isinstance(G_or_state, torch.nn.Module):
        state = generator_state_dict(G_or_state, fp16)
    else:
        state = {k: (v.half() if fp16 and v.is_floating_point() else v).detach().cpu().clone()
                 for k, v in G_or_state.items()}
    arch = infer_arch(state)
    CUTGenerator(ngf=arch["ngf"], n_blocks=arch["n_blocks"]).load_state_dict(state, strict=True)  # layout check
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    info = {
        "arch": "cut_resnet_generator",
        "builder": BUILDER,
        "build_args": arch,
        **arch,
        "dtype": "float16" if fp16 else "float32",
        "parameters": int(sum(v.numel() for k, v in state.items() if not k.endswith(".filt"))),
        "size": path.stat().st_size,
        "sha256": _sha256(path),
        "paper": "Park et al., Contrastive Learning for Unpaired Image-to-Image Translation, ECCV 2020",
        **(meta or {}),
    }
    path.with_suffix(".json").write_text(json.dumps(info, indent=2))
    return info


def export_from_checkpoint(checkpoint: str | Path, path: str | Path, fp16: bool = False) -> dict[str, Any]:
    """Export the generator of a training checkpoint (file, or a run folder with checkpoints/latest.pt)."""
    from . import checkpoint as ckpt_io

    state = ckpt_io.load(checkpoint)
    cfg = state["config"]
    meta = {"mode": cfg.get("mode"), "step": int(state["step"]), "epoch_size": int(state.get("epoch_size", 0)),
            "crop_size": cfg.get("crop_size"), "a_dir": cfg.get("a_dir"), "b_dir": cfg.get("b_dir")}
    return export_generator(state["G"], path, fp16=fp16, meta=meta)


def build_trained_cut(files: Mapping[str, Path] | None = None, ngf: int = 64, n_blocks: int = 9) -> torch.nn.Module:
    """Registry builder for our own trained CUT / FastCUT generators of any width.

    ``files``: ``{"generator": path}`` (strict load via engine.weights, weights_only) or None for random init.
    Use ``build_args={"ngf": ..., "n_blocks": ...}`` from the export's JSON in the ModelSpec.
    """
    from ..models.resnet_generator import CUTGenerator, load_checkpoint

    model = CUTGenerator(ngf=ngf, n_blocks=n_blocks)
    if files:
        if len(files) != 1:
            raise ValueError(f"expected one generator file, got {sorted(files)}")
        load_checkpoint(model, Path(next(iter(files.values()))))
    return model.eval()


def registry_snippet(info: Mapping[str, Any], key: str, rel_path: str, title: str) -> str:
    """Text of the manifest table and the ModelSpec line that register an exported generator."""
    manifest = (f'[files.{key}]\npath = "{rel_path}"\nsha256 = "{info["sha256"]}"\nsize = {info["size"]}\n'
                f'license = "ours (trained with engine.train on horse2zebra; data: CycleGAN horse2zebra set)"\n'
                f'source = "python -m engine.train {info.get("mode", "cut")} (step {info.get("step", "?")}), '
                f'ngf {info["ngf"]}, {info["n_blocks"]} blocks, {info["dtype"]}"\n')
    spec = (f'ModelSpec("{key}", "translate", "{title}", "{BUILDER}",\n'
            f'          files={{"generator": "{key}"}}, build_args={{"ngf": {info["ngf"]}, "n_blocks": {info["n_blocks"]}}},\n'
            f'          defaults={{"multiple": 4, "direction": "horse2zebra"}},\n'
            f'          paper="Park et al., ECCV 2020 (our training)"),')
    return f"# weights/manifest.toml\n{manifest}\n# engine/registry.py, in _SPECS\n{spec}\n"
