"""Unpaired image-to-image translation (horse ↔ zebra): CycleGAN, CUT / FastCUT, GAN Compression, U-GAT-IT.

validate -> preprocess -> run on the engine device (inside engine.queue's lock) -> postprocess.

Sizes: any size and aspect ratio. The image is (optionally) shrunk so its longer side is at most ``max_side``,
reflect-padded on the bottom/right to the generator's multiple (4), translated, and cropped back, so the output has
exactly the (resized) input's size and no pixel is resampled by the generator step. Images with a side under
``MIN_SIDE`` pixels (e.g. 1×N) are rejected with an InputError. A model with a ``fixed_size`` (full U-GAT-IT:
its training size) refuses every other size with an InputError; :func:`translate_detailed` also returns the
model's extra maps (U-GAT-IT's CAM attention) when it has any.

Inputs are RGB in [0, 1] mapped to [-1, 1] for the generators; outputs are (H, W, 3) uint8 numpy arrays.
Long jobs (galleries, folders, video) take a ``progress(fraction, description)`` callback.
"""
from __future__ import annotations

import contextlib
import functools
import os
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from .. import imageio, registry
from ..errors import InputError, ModelError

TASK = "translate"
DEFAULT_MODEL = "gancompression-horse2zebra"
MIN_SIDE = imageio.MIN_SIDE
DEFAULT_MAX_SIDE = 1024
VIDEO_MAX_SIDE = 512
VIDEO_MAX_SECONDS = 10.0
VIDEO_MAX_FRAMES = 900
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
DIRECTIONS = {"horse2zebra": "horse → zebra", "zebra2horse": "zebra → horse"}

Progress = Callable[[float, str], None] | None


# ---- models ---------------------------------------------------------------------------------------------------

@dataclass
class ModelInfo:
    name: str
    title: str
    direction: str
    usable: bool
    state: str
    message: str


def translation_models() -> list[ModelInfo]:
    """Every translation model with its direction and weight status (nothing is built or downloaded)."""
    out = []
    for s in registry.list_models(TASK):
        st = registry.model_status(s.name)
        out.append(ModelInfo(s.name, s.title, s.defaults.get("direction", ""), st.usable, st.state, st.message))
    return out


def _check_model_name(name: str) -> None:
    s = registry.spec(name)
    if s.task != TASK:
        raise InputError(f"{name!r} is a {s.task} model, not a translation model.")


# ---- optimised inference --------------------------------------------------------------------------------------

# Precision. "fp32" (the default) is the official computation: plain float32, what the authors' test scripts run
# and what published pictures / FID numbers come from. "fast" is an explicit choice: reduced-precision autocast
# where it is a measured win -- bf16 on a CPU with native bf16 (avx512_bf16 / amx_bf16; CPUs without it emulate
# bf16 slowly, so there "fast" is fp32), the engine's autocast dtype (bf16/fp16) on CUDA; MPS stays fp32.
# benchmarks/bench_translate_precision.py on this project's 2-core CPU (native avx512_bf16, heavily loaded by
# other jobs; ratio = fp32 / bf16 median time, interleaved, 256² images): CycleGAN 1.61x, CUT 0.96x, GAN
# Compression 0.92x / 1.04x / 1.27x in three runs; GAN Compression with its real weights on 8 horse2zebra test
# images: bf16 differs from fp32 by up to 38/255, mean 0.57/255, in 82-84 % of the pixels (any channel). The
# "max 8/255" this comment claimed before was not what the real weights give. Other settings measured by
# benchmarks/bench_translate.py: inference_mode always (equal or slightly faster than no_grad); channels_last off
# (0.7-0.95x on CPU; not measured on CUDA); torch.compile not used (minutes of compile per new input size on CPU).
PRECISIONS = ("fp32", "fast")
DEFAULT_PRECISION = "fp32"
FAST_PATH = {
    "cpu": {"channels_last": False, "half": "native-bf16"},
    "cuda": {"channels_last": False, "half": True},
    "mps": {"channels_last": False, "half": False},
}
FAST_PATH_NOTE = ("measured on a loaded 2-core CPU: 1.6x faster for CycleGAN, no gain for CUT (0.96x) or GAN "
                  "Compression (0.9-1.3x); with the real GAN Compression weights the output differs from fp32 by up "
                  "to 38/255, mean 0.57/255")


def precision_choices(device=None) -> list[tuple[str, str]]:
    """(label, value) for each precision, the "fast" label saying what it does on ``device`` (default: the
    engine's) and what was measured."""
    import torch

    from ..device import select_device

    device = torch.device(device) if device is not None else select_device()
    _, dtype = inference_plan(device, "fast")
    if dtype is None:
        fast = f"fast — same as fp32 on this {'CPU (no native bf16)' if device.type == 'cpu' else device.type}"
    elif device.type == "cpu":
        fast = f"fast — bf16 autocast ({FAST_PATH_NOTE})"
    else:
        fast = (f"fast — {str(dtype).replace('torch.', '')} autocast on the GPU (speed and output difference not "
                f"measured in this project)")
    return [("fp32 — the official computation (default)", "fp32"), (fast, "fast")]

_prepared: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="ignore")
    except OSError:
        return frozenset()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return frozenset(flags)


def cpu_has_native_bf16() -> bool:
    """True on x86 CPUs with bf16 instructions (``ENGINE_CPU_BF16=0/1`` overrides the detection)."""
    env = os.environ.get("ENGINE_CPU_BF16", "").strip().lower()
    if env in {"0", "1", "false", "true", "no", "yes", "off", "on"}:
        return env in {"1", "true", "yes", "on"}
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


def check_precision(precision: str | None) -> str:
    precision = precision or DEFAULT_PRECISION
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}.")
    return precision


def inference_plan(device, precision: str = DEFAULT_PRECISION) -> tuple[bool, "torch.dtype | None"]:
    """(channels_last, autocast dtype or None) that run_generator uses on ``device`` at ``precision``."""
    import torch

    from ..device import autocast_dtype

    device = torch.device(device)
    plan = FAST_PATH.get(device.type, {"channels_last": False, "half": False})
    if check_precision(precision) == "fp32":
        return False, None
    dtype = None
    if plan["half"] == "native-bf16":
        dtype = torch.bfloat16 if cpu_has_native_bf16() else None
    elif plan["half"]:
        dtype = autocast_dtype(device)
    return plan["channels_last"], dtype


def run_generator(model, x01, device=None, precision: str = DEFAULT_PRECISION, with_maps: bool = False, *,
                  exact: bool = False):
    """Translate a float tensor (N, 3, H, W) in [0, 1] -> (N, 3, H, W) in [0, 1] on CPU, any H, W >= MIN_SIDE.

    Pads (reflect) to the model's ``size_multiple``, maps to [-1, 1], runs at ``precision`` ("fp32": plain
    float32; "fast": the device's fast path, see FAST_PATH; ``exact=True`` is the older spelling of "fp32"),
    crops back. Call inside the engine lock (the functions below do).

    Optional model features (any family may offer them; nothing here is model-specific):
    - ``model.fixed_size`` = (H, W): the only input size it accepts (e.g. full U-GAT-IT); other sizes are refused
      with an InputError before anything runs;
    - ``model.forward_with_maps(x) -> (image, {name: (N, 1, h, w) map})``: with ``with_maps=True`` the maps are
      upsampled (bilinear) to the padded size, cropped like the image, min-max normalised per image and returned
      as ``(y, {name: (N, H, W) float32 in [0, 1]})``; models without it return ``(y, {})``.
    """
    import torch

    from ..device import is_oom

    if x01.dim() != 4 or x01.shape[1] != 3:
        raise InputError(f"Expected an (N, 3, H, W) image batch; got shape {tuple(x01.shape)}.")
    h, w = x01.shape[-2:]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"Image is {w}x{h}; both sides must be at least {MIN_SIDE} pixels for the generator.")
    fixed = getattr(model, "fixed_size", None)
    if fixed is not None and (h, w) != tuple(fixed):
        raise InputError(f"This model only translates {fixed[1]}x{fixed[0]} images (its training size; its layers "
                         f"take the whole feature map), and this one is {w}x{h}. Crop the image to a square and set "
                         f"the max side to {max(fixed)}, or use a model that takes any size.")
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    channels_last, half = inference_plan(device, "fp32" if exact else precision)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    if _prepared.get(model) != fmt:
        model.to(memory_format=fmt)
        _prepared[model] = fmt
    amp = torch.autocast(device.type, dtype=half) if half is not None else contextlib.nullcontext()
    multiple = int(getattr(model, "size_multiple", 4))
    x, size = imageio.pad_to_multiple(x01, multiple, mode="reflect")
    try:
        with torch.inference_mode(), amp:
            x = x.to(device, non_blocking=True).mul(2.0).sub(1.0).contiguous(memory_format=fmt)
            if with_maps and hasattr(model, "forward_with_maps"):
                y, maps = model.forward_with_maps(x)
            else:
                y, maps = model(x), {}
        y = imageio.crop_to(y, size).float().add(1.0).mul(0.5).clamp(0.0, 1.0)
        y = y.to("cpu").contiguous()
        if not with_maps:
            return y
        return y, {name: _normalised_map(m, x.shape[-2:], size) for name, m in maps.items()}
    except Exception as exc:
        if is_oom(exc):
            if device.type == "cuda":
                torch.cuda.empty_cache()
            raise ModelError(f"Out of memory translating a {w}x{h} image on {device}. "
                             f"Lower the max-side setting.") from exc
        raise


def _normalised_map(m, padded: tuple[int, int], size: tuple[int, int]):
    """(N, 1, h, w) map -> (N, H, W) float32 in [0, 1] on CPU: bilinear to the padded size, cropped, min-max per image."""
    import torch.nn.functional as F

    m = F.interpolate(m.float(), size=tuple(padded), mode="bilinear", align_corners=False)
    m = imageio.crop_to(m, size)[:, 0].to("cpu")
    lo = m.flatten(1).min(1).values[:, None, None]
    hi = m.flatten(1).max(1).values[:, None, None]
    return ((m - lo) / (hi - lo).clamp_min(1e-12)).contiguous()


def heatmap_overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """A [0, 1] map (H, W) as a JET heat map (blue = low, red = high; the colour map U-GAT-IT's own sample grids
    use) blended over an (H, W, 3) uint8 image -> (H, W, 3) uint8."""
    import cv2

    heat8 = np.clip(np.asarray(heat, dtype=np.float32) * 255.0 + 0.5, 0, 255).astype(np.uint8)
    color = cv2.cvtColor(cv2.applyColorMap(heat8, cv2.COLORMAP_JET), cv2.COLOR_BGR2RGB)
    return cv2.addWeighted(np.ascontiguousarray(image, dtype=np.uint8), 1 - alpha, color, alpha, 0)


# ---- images ---------------------------------------------------------------------------------------------------

def prepare_image(src, max_side: int | None = DEFAULT_MAX_SIDE) -> Image.Image:
    """Load (path / bytes / PIL / array), validate and shrink to ``max_side`` (0/None = keep). RGB PIL out."""
    img = imageio.load_image(src, min_side=MIN_SIDE)
    if max_side is not None and max_side < 0:
        raise InputError("max side must be positive (or 0 to keep the size).")
    if max_side and max_side < MIN_SIDE:
        raise InputError(f"max side must be at least {MIN_SIDE} pixels (or 0 to keep the size).")
    resized = imageio.resize_max_side(img, max_side)
    if min(resized.size) < MIN_SIDE:
        raise InputError(
            f"Image is {img.width}x{img.height}; shrunk to a max side of {max_side} it would be "
            f"{resized.width}x{resized.height}, thinner than {MIN_SIDE} pixels. Use a larger max side.")
    return resized


def check_uint8(rule: str | None) -> str:
    rule = rule or "round"
    if rule not in imageio.UINT8_RULES:
        raise InputError(f"uint8 rule must be one of {', '.join(imageio.UINT8_RULES)}; got {rule!r}.")
    return rule


def translate_pil(model, img: Image.Image, device=None, precision: str = DEFAULT_PRECISION,
                  uint8: str = "round", *, exact: bool = False) -> np.ndarray:
    """One prepared RGB image through a loaded generator -> (H, W, 3) uint8. Call inside the engine lock.

    ``uint8``: "round" (nearest level) or "truncate" (the official ``tensor2im``: floor, half a level darker on
    average; see imageio.tensor_to_numpy). ``exact=True``: the older spelling of precision="fp32"."""
    y = run_generator(model, imageio.pil_to_tensor(img), device=device, precision="fp32" if exact else precision)
    return imageio.tensor_to_numpy(y, uint8)


def translate(image, model: str = DEFAULT_MODEL, *, max_side: int | None = DEFAULT_MAX_SIDE, device=None,
              return_input: bool = False, precision: str = DEFAULT_PRECISION, uint8: str = "round",
              exact: bool = False):
    """Translate one image with the registry model ``model``.

    Returns the output as (H, W, 3) uint8, the size of the (resized) input; with ``return_input`` returns
    ``(input_used, output)`` so callers can compare like with like. ``precision``: "fp32" (default, the official
    computation) or "fast" (see FAST_PATH_NOTE for speed and difference); ``uint8``: "round" or "truncate"
    (the official code's rule, see translate_pil). ``exact=True``: the older spelling of precision="fp32".
    """
    from ..queue import run_exclusive

    _check_model_name(model)
    precision, uint8 = check_precision("fp32" if exact else precision), check_uint8(uint8)
    img = prepare_image(image, max_side)

    def job():
        net = registry.load_model(model, device)
        return translate_pil(net, img, precision=precision, uint8=uint8)

    out = run_exclusive(job)
    return (np.asarray(img, dtype=np.uint8), out) if return_input else out


@dataclass
class Translation:
    """One translated image with whatever extra outputs the model offers (see ``run_generator``)."""
    input: np.ndarray                                           # (H, W, 3) uint8, the (resized) input used
    output: np.ndarray                                          # (H, W, 3) uint8, same size
    maps: dict[str, np.ndarray] = field(default_factory=dict)   # name -> (H, W) float32 in [0, 1]

    def overlays(self, alpha: float = 0.5) -> dict[str, np.ndarray]:
        """Each map as a heat map over the input: name -> (H, W, 3) uint8."""
        return {name: heatmap_overlay(self.input, m, alpha) for name, m in self.maps.items()}


def translate_detailed(image, model: str = DEFAULT_MODEL, *, max_side: int | None = DEFAULT_MAX_SIDE, device=None,
                       exact: bool = False, precision: str = DEFAULT_PRECISION, uint8: str = "round") -> Translation:
    """Like :func:`translate`, plus the model's extra outputs (e.g. U-GAT-IT's CAM attention map) when it has any."""
    from ..queue import run_exclusive

    _check_model_name(model)
    precision, uint8 = check_precision("fp32" if exact else precision), check_uint8(uint8)
    img = prepare_image(image, max_side)

    def job():
        net = registry.load_model(model, device)
        return run_generator(net, imageio.pil_to_tensor(img), precision=precision, with_maps=True)

    y, maps = run_exclusive(job)
    return Translation(np.asarray(img, dtype=np.uint8), imageio.tensor_to_numpy(y, uint8),
                       {name: m[0].numpy() for name, m in maps.items()})


@dataclass
class BatchResult:
    inputs: list[np.ndarray] = field(default_factory=list)     # the (resized) inputs actually translated
    outputs: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)            # "name: reason" for each skipped input

    @property
    def ok(self) -> int:
        return len(self.outputs)


def _name_of(src, index: int) -> str:
    if isinstance(src, (str, os.PathLike)):
        return Path(src).name
    if isinstance(src, tuple) and src and isinstance(src[0], (str, os.PathLike)):
        return Path(src[0]).name  # gr.Gallery gives (path, caption)
    return f"image {index + 1}"


def translate_many(images: Sequence, model: str = DEFAULT_MODEL, *, max_side: int | None = DEFAULT_MAX_SIDE,
                   device=None, progress: Progress = None, max_images: int | None = 64,
                   precision: str = DEFAULT_PRECISION, uint8: str = "round", exact: bool = False) -> BatchResult:
    """Translate several images (paths, bytes, PIL, arrays, or gr.Gallery (path, caption) pairs), one at a time
    under the engine lock so other requests interleave. Unreadable inputs are skipped and reported in ``errors``."""
    from ..queue import run_exclusive

    _check_model_name(model)
    precision, uint8 = check_precision("fp32" if exact else precision), check_uint8(uint8)
    items = list(images or [])
    if not items:
        raise InputError("No images given.")
    if max_images and len(items) > max_images:
        raise InputError(f"{len(items)} images given; at most {max_images} per request.")
    result = BatchResult()
    if progress:
        progress(0.0, f"loading the model ({model})")
    run_exclusive(registry.load_model, model, device)
    for i, src in enumerate(items):
        name = _name_of(src, i)
        raw = src[0] if isinstance(src, tuple) else src
        try:
            img = prepare_image(raw, max_side)
            out = run_exclusive(lambda: translate_pil(registry.load_model(model, device), img,
                                                      precision=precision, uint8=uint8))
        except InputError as exc:
            result.errors.append(f"{name}: {exc}")
        else:
            result.inputs.append(np.asarray(img, dtype=np.uint8))
            result.outputs.append(out)
            result.names.append(name)
        if progress:
            progress((i + 1) / len(items), f"image {i + 1}/{len(items)}")
    return result


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder`` (sorted; by suffix, so unreadable ones are reported later)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder} is not a folder.")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


# ---- video ----------------------------------------------------------------------------------------------------

@dataclass
class VideoResult:
    path: Path
    frames: int
    fps: float
    width: int
    height: int
    truncated: bool        # the input was longer than max_seconds / max_frames
    source_seconds: float | None


def translate_video(src: str | os.PathLike, model: str = DEFAULT_MODEL, *, max_side: int | None = VIDEO_MAX_SIDE,
                    max_seconds: float = VIDEO_MAX_SECONDS, max_frames: int = VIDEO_MAX_FRAMES,
                    out_path: str | os.PathLike | None = None, device=None, progress: Progress = None,
                    batch_size: int = 4, precision: str = DEFAULT_PRECISION,
                    run_batch: Callable[[list[np.ndarray]], np.ndarray] | None = None) -> VideoResult:
    """Translate the first ``max_seconds`` of a video file, frame by frame, into a browser-playable MP4
    (engine.videoio: H.264, yuv420p, +faststart; same frame rate; audio dropped). Frames are shrunk to
    ``max_side``; each frame is translated at its exact size and the writer pads odd sizes by one edge pixel
    (a yuv420p requirement). Frames go through the engine queue in batches of ``batch_size``; ``run_batch``
    (frames -> (N, H, W, 3) uint8) replaces the local model call (engine.client's Ray Serve path)."""
    from .. import videoio
    from ..queue import run_exclusive

    _check_model_name(model)
    precision = check_precision(precision)
    if max_seconds <= 0 or max_frames < 1:
        raise InputError("max seconds and max frames must be positive.")
    info = videoio.probe(src)
    fps = float(info.fps)
    limit = max(1, min(max_frames, int(max_seconds * fps + 1e-6)))
    expected = info.frames or (int(info.seconds * fps) if info.seconds else 0)
    total = min(limit, expected) if expected else limit
    if progress:
        progress(0.0, f"loading the model ({model})")
    if run_batch is None:
        run_exclusive(registry.load_model, model, device)

    def job(batch: list[np.ndarray]) -> np.ndarray:
        import torch

        net = registry.load_model(model, device)
        y = run_generator(net, torch.cat([imageio.pil_to_tensor(f) for f in batch]), device=device,
                          precision=precision)
        return y.mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    pending: list[np.ndarray] = []
    read = 0
    with videoio.VideoWriter(out_path, info.fps) as writer:
        def flush() -> None:
            if pending:
                for arr in (run_batch(list(pending)) if run_batch else run_exclusive(job, pending)):
                    writer.write(arr)
                pending.clear()
                if progress:
                    progress(min(writer.frames / max(total, 1), 1.0), f"frame {writer.frames}/{total}")

        for frame in videoio.read_frames(src, max_frames=limit + 1, max_side=max_side):
            read += 1
            if read > limit:
                break
            if min(frame.shape[:2]) < MIN_SIDE:
                raise InputError(f"Video frames are {info.width}x{info.height}; after resizing they would be "
                                 f"thinner than {MIN_SIDE} pixels.")
            if pending and frame.shape != pending[0].shape:  # a stream that changes size mid-way
                flush()
            pending.append(frame)
            if len(pending) >= batch_size:
                flush()
        flush()
    width, height = writer.size
    return VideoResult(writer.path, writer.frames, fps, width, height, read > limit, info.seconds)


# ---- folders (the CLI) ----------------------------------------------------------------------------------------

@dataclass
class FolderReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)   # "file: reason"


def translate_folder(input_dir: str | os.PathLike, output_dir: str | os.PathLike, model: str = DEFAULT_MODEL, *,
                     max_side: int | None = DEFAULT_MAX_SIDE, device=None, progress: Progress = None,
                     suffix: str = ".png", overwrite: bool = True, precision: str = DEFAULT_PRECISION,
                     uint8: str = "round", exact: bool = False,
                     on_skip: Callable[[str], None] | None = None) -> FolderReport:
    """Translate every image file in ``input_dir`` into ``output_dir`` (same stem, ``suffix`` format).
    Unreadable files are skipped and reported; the output folder is created."""
    from ..queue import run_exclusive

    _check_model_name(model)
    precision, uint8 = check_precision("fp32" if exact else precision), check_uint8(uint8)
    files = list_images(input_dir)
    if not files:
        raise InputError(f"No image files ({', '.join(IMAGE_SUFFIXES)}) in {input_dir}.")
    out_dir = Path(output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = FolderReport()
    run_exclusive(registry.load_model, model, device)
    for i, path in enumerate(files):
        target = out_dir / (path.stem + suffix)
        try:
            if target.exists() and not overwrite:
                raise InputError(f"{target.name} exists (not overwriting)")
            img = prepare_image(path, max_side)
            out = run_exclusive(lambda: translate_pil(registry.load_model(model, device), img,
                                                      precision=precision, uint8=uint8))
            Image.fromarray(out).save(target)
            report.written.append(target)
        except (InputError, OSError) as exc:
            msg = f"{path.name}: {exc}"
            report.skipped.append(msg)
            if on_skip:
                on_skip(msg)
        if progress:
            progress((i + 1) / len(files), path.name)
    return report

