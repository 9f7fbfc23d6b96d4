"""Model registry: names -> builder + checkpoint files + default inference settings.

A builder is ``"module:function"`` called as ``fn(files, **build_args)`` where ``files`` maps a role (e.g.
``"generator"``) to a verified checkpoint path, or is ``None`` for random initialisation (tests, benchmarks,
``ENGINE_RANDOM_WEIGHTS=1``). With files, a builder loads with ``weights.load_state_dict`` and ``strict=True``.
Modules are imported only when a model is built, so listing models stays cheap.
"""
from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import config, weights


@dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str                                   # "style", "translate", "congeal", "locate"
    title: str
    builder: str                                # "module:function"
    files: dict[str, str] = field(default_factory=dict)   # role -> manifest key
    build_args: dict[str, Any] = field(default_factory=dict)
    defaults: dict[str, Any] = field(default_factory=dict)  # default inference settings for pipelines / UI
    paper: str = ""


def _gangealing(name: str, padding: str, iters: int, heads: int = 1) -> ModelSpec:
    return ModelSpec(
        name=f"gangealing-{name}", task="congeal", title=f"GANgealing: {name}",
        builder="engine.models.gangealing:build_gangealing", files={"checkpoint": f"gangealing-{name}"},
        build_args={"num_heads": heads, "name": name},
        defaults={"padding_mode": padding, "iters": iters, "num_heads": heads, "flow_size": 128, "input_size": 256},
        paper="Peebles et al., GAN-Supervised Dense Visual Alignment, CVPR 2022")


_SPECS = [
    ModelSpec("adain", "style", "AdaIN (Huang & Belongie 2017)", "engine.models.adain:build_adain",
              files={"encoder": "adain-vgg", "decoder": "adain-decoder"},
              defaults={"max_side": 512, "alpha": 1.0},
              paper="Huang & Belongie, Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization, ICCV 2017"),
    ModelSpec("magenta", "style", "Magenta arbitrary stylisation (Ghiasi et al. 2017)",
              "engine.models.magenta:build_magenta",
              files={"predict": "magenta-predict", "transform": "magenta-transform"},
              defaults={"max_side": 512, "alpha": 1.0, "style_size": 256,
                        "pipeline": "engine.pipelines.style_magenta:MagentaStyleTransfer"},
              paper="Ghiasi et al., Exploring the structure of a real-time, arbitrary neural artistic stylization "
                    "network, BMVC 2017"),
    ModelSpec("mtcnn", "locate", "MTCNN face locator (Zhang et al. 2016)", "engine.models.mtcnn:build_mtcnn",
              files={"pnet": "mtcnn-pnet", "rnet": "mtcnn-rnet", "onet": "mtcnn-onet"},
              paper="Zhang et al., Joint Face Detection and Alignment using Multi-task Cascaded Convolutional "
                    "Networks, IEEE Signal Processing Letters 2016"),
    ModelSpec("cyclegan-horse2zebra", "translate", "CycleGAN horse → zebra", "engine.models.resnet_generator:build_cyclegan",
              files={"generator": "cyclegan-horse2zebra"}, defaults={"multiple": 4, "direction": "horse2zebra"},
              paper="Zhu et al., Unpaired Image-to-Image Translation using Cycle-Consistent Adversarial Networks, ICCV 2017"),
    ModelSpec("cyclegan-zebra2horse", "translate", "CycleGAN zebra → horse", "engine.models.resnet_generator:build_cyclegan",
              files={"generator": "cyclegan-zebra2horse"}, defaults={"multiple": 4, "direction": "zebra2horse"},
              paper="Zhu et al., ICCV 2017"),
    ModelSpec("cut-horse2zebra", "translate", "CUT horse → zebra", "engine.models.resnet_generator:build_cut",
              files={"generator": "cut-horse2zebra"}, defaults={"multiple": 4, "direction": "horse2zebra"},
              paper="Park et al., Contrastive Learning for Unpaired Image-to-Image Translation, ECCV 2020"),
    ModelSpec("fastcut-horse2zebra", "translate", "FastCUT horse → zebra", "engine.models.resnet_generator:build_cut",
              files={"generator": "fastcut-horse2zebra"}, defaults={"multiple": 4, "direction": "horse2zebra"},
              paper="Park et al., ECCV 2020"),
    ModelSpec("gancompression-horse2zebra", "translate", "GAN Compression horse → zebra (CycleGAN, 0.36M params)",
              "engine.models.mobile_resnet:build_gancompression",
              files={"generator": "gancompression-horse2zebra"}, defaults={"multiple": 4, "direction": "horse2zebra"},
              paper="Li et al., GAN Compression: Efficient Architectures for Interactive Conditional GANs, CVPR 2020"),
    # U-GAT-IT: one official-layout checkpoint holds both generators (genA2B = horse → zebra, genB2A = zebra → horse);
    # light or full mode and the widths are read from the file. Random weights build the light model.
    ModelSpec("ugatit-horse2zebra", "translate", "U-GAT-IT horse → zebra",
              "engine.models.ugatit:build_ugatit", files={"checkpoint": "ugatit-horse2zebra"},
              build_args={"direction": "A2B"}, defaults={"multiple": 4, "direction": "horse2zebra"},
              paper="Kim et al., U-GAT-IT: Unsupervised Generative Attentional Networks with Adaptive Layer-Instance "
                    "Normalization for Image-to-Image Translation, ICLR 2020"),
    ModelSpec("ugatit-zebra2horse", "translate", "U-GAT-IT zebra → horse",
              "engine.models.ugatit:build_ugatit", files={"checkpoint": "ugatit-horse2zebra"},
              build_args={"direction": "B2A"}, defaults={"multiple": 4, "direction": "zebra2horse"},
              paper="Kim et al., ICLR 2020"),
    _gangealing("bicycle", "reflection", 3),
    _gangealing("car", "reflection", 3, heads=4),
    _gangealing("cat", "border", 3),
    _gangealing("cat_ssl_mix6", "border", 3),
    _gangealing("celeba", "border", 1),
    _gangealing("cub", "border", 1),
    _gangealing("dog", "border", 3),
    _gangealing("horse", "reflection", 3, heads=4),
    _gangealing("tvmonitor", "reflection", 3),
]
MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in _SPECS}


def register(spec: ModelSpec) -> None:
    """Add or replace a model (e.g. a user's own trained checkpoint)."""
    MODELS[spec.name] = spec


def spec(name: str) -> ModelSpec:
    if name not in MODELS:
        from .errors import InputError
        raise InputError(f"Unknown model {name!r}. Known models: {', '.join(sorted(MODELS))}.")
    return MODELS[name]


def list_models(task: str | None = None) -> list[ModelSpec]:
    return [s for s in MODELS.values() if task is None or s.task == task]


@dataclass
class ModelStatus:
    name: str
    usable: bool
    state: str            # "ready", "unverified", "downloadable", "missing", "corrupt", "random"
    message: str


def model_status(name: str) -> ModelStatus:
    """Whether a model can run now, without downloading or building anything."""
    s = spec(name)
    if config.random_weights():
        return ModelStatus(name, True, "random", "random weights (ENGINE_RANDOM_WEIGHTS=1): output is meaningless")
    order = ["corrupt", "missing", "downloadable", "unverified", "ready"]
    problems = sorted(((role, weights.status(key)) for role, key in s.files.items()),
                      key=lambda item: order.index(item[1].state))
    worst = problems[0][1].state if problems else "ready"
    usable = worst in ("ready", "unverified", "downloadable")
    if worst == "ready":
        return ModelStatus(name, usable, worst, "ready (sha256 verified)")
    # One sentence a user can act on (the worst file's); further files of the same state are only named, so the
    # message stays short (`python -m engine` shows each file's own line).
    role, first = problems[0]
    message = f"{role}: {first.message.rstrip('.')}"
    also = [Path(weights.entry(st.key).path).name for _, st in problems[1:] if st.state == worst]
    if also:
        message += f"; also {worst}: {', '.join(also)} (same steps)"
    return ModelStatus(name, usable, worst, message)


def file_statuses(name: str) -> list[tuple[str, "weights.WeightStatus"]]:
    """(role, status) of each checkpoint file of model ``name`` (for listings that show every file)."""
    return [(role, weights.status(key)) for role, key in spec(name).files.items()]


def _builder(s: ModelSpec):
    module_name, func_name = s.builder.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def build_model(name: str, files: dict[str, Path] | None = None):
    """Build a model on CPU: random weights when ``files`` is None, else strictly loaded from ``files``."""
    s = spec(name)
    return _builder(s)(files, **s.build_args)


_cache: dict[tuple[str, str], Any] = {}
_cache_guard = threading.Lock()
_key_locks: dict[tuple[str, str], threading.Lock] = {}


def load_model(name: str, device=None, progress=None):
    """The model ``name`` on ``device`` (engine default when None), in eval mode, built and loaded once per process.

    Thread-safe: concurrent first calls build it once. Raises WeightsMissingError / WeightsCorruptError with a
    message that says which file, where it was looked for and how to get it.
    """
    import torch

    from .device import select_device

    device = select_device(device)
    _apply_thread_setting()
    key = (name, str(device))
    with _cache_guard:
        if key in _cache:
            return _cache[key]
        lock = _key_locks.setdefault(key, threading.Lock())
    with lock:
        if key in _cache:
            return _cache[key]
        s = spec(name)
        files = None
        if not config.random_weights():
            files = {role: weights.resolve(k, progress=progress) for role, k in s.files.items()}
        if files is None:
            torch.manual_seed(0)
        model = build_model(name, files).to(device).eval()
        for p in model.parameters():
            p.requires_grad_(False)
        from .queue import add_cancel_points

        add_cancel_points(model)  # a cancelled job stops at its next layer
        with _cache_guard:
            _cache[key] = model
        return model


def _apply_thread_setting() -> None:
    """``ENGINE_THREADS=N`` caps torch's CPU threads (useful on small shared machines, where 2 threads can thrash)."""
    import os

    import torch

    value = os.environ.get("ENGINE_THREADS")
    if value and value.isdigit() and int(value) > 0 and torch.get_num_threads() != int(value):
        torch.set_num_threads(int(value))


def clear_cache() -> None:
    with _cache_guard:
        _cache.clear()
