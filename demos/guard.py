"""One guard for the whole app, applied after the tabs are built: ``guard_app(demo)``.

It makes the class of failure "bad input ends in a crash, a bare 'Error', a traceback or a server path" structural
instead of per handler:

* every event handler of the Blocks goes through :func:`demos.common.guarded` (engine errors become a short
  message, anything else a logged internal error; messages are sanitised: no server paths, no HTML);
* every input component's ``preprocess`` is guarded too, and image and video slots hand the uploaded file to the
  engine's validation (``imageio.check_image``, ``videoio.check_video``) *before* Gradio decodes it, so a corrupt
  or hostile file gets the engine's clear message instead of Gradio's own "Error";
* image outputs are fitted to their encoding format's limits (WebP: 16383 px per side) before Gradio encodes them.

``unguarded(demo)`` lists whatever escaped (the tests assert it is empty).
"""
from __future__ import annotations

import base64
import logging

import gradio as gr
import numpy as np

from demos.common import GUARD_MARK, guarded, sanitise
from engine.errors import EngineError

log = logging.getLogger("gan-studio")

# Largest side each output format can encode (WebP: 14-bit sizes; JPEG/GIF: 16-bit). PNG has no practical limit.
FORMAT_MAX_SIDE = {"webp": 16383, "jpeg": 65535, "jpg": 65535, "gif": 65535}
_MARK = GUARD_MARK


def _label(component) -> str:
    label = str(getattr(component, "label", None) or type(component).__name__)
    return label.split("(")[0].split("—")[0].split("…")[0].strip(" :,") or type(component).__name__


def _refuse(component, exc: BaseException, stage: str) -> None:
    """Raise the sanitised gr.Error for a component that could not take (or give) a value."""
    if isinstance(exc, gr.Error):
        raise gr.Error(sanitise(exc.message), duration=exc.duration, visible=exc.visible, title=exc.title,
                       print_exception=False) from exc
    if isinstance(exc, EngineError):
        log.info("%s of %s refused: %s", stage, _label(component), exc)
        raise gr.Error(sanitise(f"{_label(component)}: {exc}"), print_exception=False) from exc
    log.error("%s of %s failed", stage, _label(component), exc_info=exc)
    kind = "this input could not be read" if stage == "preprocess" else "the result could not be shown"
    raise gr.Error(sanitise(f"{_label(component)}: {kind} ({type(exc).__name__}: {exc})."),
                   print_exception=False) from exc


# ---- inputs: hand files to the engine's validation before Gradio decodes them ------------------------------------

def _data_url_bytes(url: str) -> bytes:
    try:
        return base64.b64decode(url.split(",", 1)[1], validate=False)
    except Exception as exc:  # noqa: BLE001
        from engine.errors import InputError

        raise InputError("The image sent by the browser could not be decoded (bad data URL).") from exc


def _image_sources(component, payload) -> list:
    """(holder, source) for every file or bytes object in an Image / ImageEditor payload; holder is the FileData
    whose path is the source (None for bytes)."""
    if payload is None:
        return []
    if isinstance(payload, (bytes, bytearray)):
        return [(None, bytes(payload))]
    found = []
    path, url = getattr(payload, "path", None), getattr(payload, "url", None)
    if path:
        found.append((payload, path))
    elif isinstance(url, str) and url.startswith("data:"):
        found.append((None, _data_url_bytes(url)))
    for name in ("background", "composite"):
        found += _image_sources(component, getattr(payload, name, None))
    for layer in getattr(payload, "layers", None) or []:
        found += _image_sources(component, layer)
    blob_id = getattr(payload, "id", None)
    storage = getattr(component, "blob_storage", None)
    if blob_id is not None and storage is not None:
        cached = storage.get(blob_id)
        if cached is not None:
            for value in (cached.background, cached.composite, *(cached.layers or [])):
                if value:
                    found.append((None, bytes(value)))
    return found


# Modes Gradio's own decoding handles; others (float/32-bit/16-bit TIFF, CMYK, LAB, ...) are converted by the engine.
GRADIO_MODES = {"1", "L", "LA", "P", "PA", "RGB", "RGBA"}


def _engine_copy(path: str) -> str:
    """The upload converted by the engine (16-bit and float scaled by their range, CMYK to RGB, EXIF applied) and
    saved as PNG beside it, for Gradio to decode instead of the original."""
    from pathlib import Path

    from engine import imageio

    out = Path(path).with_name(Path(path).stem + ".engine.png")
    if not out.exists():
        imageio.load_image(path).save(out)
    return str(out)


def _check_images(component, payload) -> None:
    from engine import imageio

    for holder, src in _image_sources(component, payload):
        mode = imageio.check_image(src)[2]
        if holder is not None and mode not in GRADIO_MODES:  # handed over as the engine's conversion
            holder.path = _engine_copy(src)
            if getattr(holder, "orig_name", None):
                holder.orig_name = str(holder.orig_name).rsplit(".", 1)[0] + ".png"


def _check_video(component, payload) -> None:
    path = getattr(payload, "path", None)
    if path:
        from engine import videoio

        videoio.check_video(path)


def _validator(cls):
    if issubclass(cls, (gr.ImageEditor, gr.Image)):
        return _check_images
    if issubclass(cls, gr.Video):
        return _check_video
    return None


# ---- outputs: fit images to their format's limits before Gradio encodes them --------------------------------------

def _fit(value, max_side: int):
    from PIL import Image

    if isinstance(value, np.ndarray) and value.ndim >= 2 and max(value.shape[:2]) > max_side:
        h, w = value.shape[:2]
        scale = max_side / max(h, w)
        size = (max(1, int(w * scale)), max(1, int(h * scale)))
        log.info("output %dx%d shrunk to %dx%d for its format", w, h, *size)
        return np.asarray(Image.fromarray(value).resize(size, Image.Resampling.LANCZOS))
    if isinstance(value, Image.Image) and max(value.size) > max_side:
        scale = max_side / max(value.size)
        size = (max(1, int(value.width * scale)), max(1, int(value.height * scale)))
        log.info("output %dx%d shrunk to %dx%d for its format", *value.size, *size)
        return value.resize(size, Image.Resampling.LANCZOS)
    if isinstance(value, (list, tuple)):
        return type(value)(_fit(v, max_side) for v in value)
    if isinstance(value, dict):
        return {k: _fit(v, max_side) for k, v in value.items()}
    return value


_FITTED = (gr.Image, gr.ImageEditor, gr.ImageSlider, gr.Gallery)
_guarded_classes: dict[type, type] = {}


def _guarded_class(base: type) -> type:
    """A subclass of a component class whose preprocess validates and is guarded and whose postprocess fits images
    to their format; same name and same frontend component. The class of an instance is swapped (not a method
    patched) because Gradio re-creates a component from its class for each gr.update / gr.skip in a session."""
    if getattr(base, _MARK, False):
        return base
    if base in _guarded_classes:
        return _guarded_classes[base]
    check = _validator(base)
    fits = issubclass(base, _FITTED)

    def preprocess(self, payload):
        try:
            if check is not None and payload is not None:
                check(self, payload)
            return base.preprocess(self, payload)
        except Exception as exc:  # noqa: BLE001 - becomes a sanitised message for the user
            _refuse(self, exc, "preprocess")

    def postprocess(self, value):
        try:
            max_side = FORMAT_MAX_SIDE.get(str(getattr(self, "format", "") or "").lower().lstrip(".")) if fits else None
            return base.postprocess(self, _fit(value, max_side) if max_side else value)
        except Exception as exc:  # noqa: BLE001
            _refuse(self, exc, "postprocess")

    namespace = {"preprocess": preprocess, "postprocess": postprocess, _MARK: True,
                 "__module__": base.__module__, "__qualname__": base.__qualname__, "__doc__": base.__doc__}
    if getattr(base.get_block_name, "__func__", base.get_block_name) is gr.blocks.Block.get_block_name:
        name = base.__base__.__name__.lower() if hasattr(base, "is_template") else base.__name__.lower()
        namespace["get_block_name"] = lambda self, _n=name: _n
        namespace["get_block_class"] = lambda self, _n=name: _n
    cls = type(base)(base.__name__, (base,), namespace)
    _guarded_classes[base] = cls
    return cls


# ---- the app -----------------------------------------------------------------------------------------------------

def guard_app(demo: gr.Blocks) -> gr.Blocks:
    """Guard every event handler and every component of ``demo`` (idempotent); returns ``demo``."""
    for block_fn in demo.fns.values():
        fn = block_fn.fn
        if fn is not None and not getattr(fn, _MARK, False):
            block_fn.fn = guarded(fn)
    for block in demo.blocks.values():
        if isinstance(block, gr.components.Component) and not getattr(block, _MARK, False):
            block.__class__ = _guarded_class(type(block))
    return demo


def unguarded(demo: gr.Blocks) -> list[str]:
    """Names of event handlers and components that ``guard_app`` did not reach (empty when all are guarded)."""
    missing = [f"handler {block_fn.name}" for block_fn in demo.fns.values()
               if block_fn.fn is not None and not getattr(block_fn.fn, _MARK, False)]
    missing += [f"component {_label(b)} ({type(b).__name__})" for b in demo.blocks.values()
                if isinstance(b, gr.components.Component) and not getattr(b, _MARK, False)]
    return missing
