"""One guard for the whole app, applied after the tabs are built: ``guard_app(demo)``.

It makes the class of failure "bad input ends in a crash, a bare 'Error', a traceback or a server path" structural
instead of per handler:

* every event handler of the Blocks goes through :func:`demos.common.guarded` (engine errors become a short
  message, anything else a logged internal error; messages are sanitised: no server paths, no HTML);
* every input component's ``preprocess`` is guarded too, and image and video slots hand the uploaded file to the
  engine's validation (``imageio.check_image``, ``videoio.check_video``) *before* Gradio decodes it, so a corrupt
  or hostile file gets the engine's clear message instead of Gradio's own "Error";
* image outputs are fitted to their encoding format's limits (WebP: 16383 px per side) before Gradio encodes them;
* a failed event leaves no bare red "Error" on its outputs: Gradio marks every output of a failed event with an
  "Error" status that stays after the toast fades, so each event gets a ``.failure`` follow-up that clears its
  result outputs and writes the message into its status text (:func:`explain_failures`).

``unguarded(demo)`` lists whatever escaped (the tests assert it is empty).
"""
from __future__ import annotations

import base64
import inspect
import logging
import threading
from collections import OrderedDict

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


# ---- failed events: the message next to the outputs, not a bare "Error" ------------------------------------------

# Outputs a failure follow-up clears (results of the failed run) and the ones that take the message (status text).
_RESULTS = (gr.Image, gr.ImageSlider, gr.Gallery, gr.Video, gr.Audio, gr.File, gr.JSON, gr.Dataframe, gr.LinePlot,
            gr.ScatterPlot, gr.BarPlot, gr.Plot, gr.AnnotatedImage, gr.Model3D, gr.HighlightedText, gr.Label)
_TEXTS = (gr.Markdown, gr.Textbox, gr.HTML)
_EXPLAINER = "__gan_studio_explains__"
GENERIC_FAILURE = "The last run failed (its message was shown at the top right)."


class _LastFailures:
    """The last error message per (browser session, event), for the event's failure follow-up to show; bounded
    (an API client's failed calls have no follow-up that would take them)."""

    def __init__(self, limit: int = 512):
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self._limit = limit

    def put(self, session: str | None, fn_id: int, message: str) -> None:
        with self._lock:
            self._items[(session, fn_id)] = message
            self._items.move_to_end((session, fn_id))
            while len(self._items) > self._limit:
                self._items.popitem(last=False)

    def pop(self, session: str | None, fn_id: int) -> str | None:
        with self._lock:
            return self._items.pop((session, fn_id), None)


def _record_failures(demo: gr.Blocks, store: _LastFailures) -> None:
    """Wrap ``demo.process_api`` (preprocess, handler and postprocess of every event) so that the message of a
    failed event is kept for its session."""
    original = demo.process_api
    if getattr(original, _EXPLAINER, False):
        return
    signature = inspect.signature(original)

    async def process_api(*args, **kwargs):
        try:
            return await original(*args, **kwargs)
        except Exception as exc:
            try:
                bound = signature.bind_partial(*args, **kwargs).arguments
                block_fn = bound.get("block_fn")
                fn_id = block_fn if isinstance(block_fn, int) else getattr(block_fn, "_id", None)
                message = sanitise(exc.message) if isinstance(exc, gr.Error) else GENERIC_FAILURE
                store.put(bound.get("session_hash"), fn_id, message)
            except Exception:  # noqa: BLE001 - keeping the message must never hide the failure itself
                log.exception("could not keep the message of a failed event")
            raise

    setattr(process_api, _EXPLAINER, True)
    demo.process_api = process_api


def _outputs_plan(demo: gr.Blocks, block_fn) -> list[tuple[object, str]]:
    """(component, "message" | "clear" | "keep") for each visible output of ``block_fn``: status texts take the
    message (the first on the page; others are emptied), result views are cleared, and what the user edits (an
    input of some event that is interactive), the component whose own event failed (e.g. the image clicked) and
    any other kind of component keep their value (their red status goes all the same)."""
    inputs = {id(c) for fn in demo.fns.values() for c in fn.inputs}
    triggers = {target_id for target_id, _ in block_fn.targets}
    plan = []
    for comp in sorted(block_fn.outputs, key=lambda c: c._id):
        if isinstance(comp, gr.State) or not isinstance(comp, gr.components.Component):
            continue
        edited = comp._id in triggers or (id(comp) in inputs and getattr(comp, "interactive", None) is not False)
        if isinstance(comp, _TEXTS) and not edited:
            plan.append((comp, "message"))
        elif isinstance(comp, _RESULTS) and not edited:
            plan.append((comp, "clear"))
        else:
            plan.append((comp, "keep"))
    return plan


def _explainer(store: _LastFailures, fn_id: int, plan: list[tuple[object, str]]):
    def explain_failure(request: gr.Request):
        message = store.pop(getattr(request, "session_hash", None), fn_id) or GENERIC_FAILURE
        values, told = [], False
        for comp, what in plan:
            if what == "message" and not told:
                values.append(("⚠️ " if isinstance(comp, gr.Markdown) else "") + message)
                told = True
            else:
                values.append("" if what == "message" else None if what == "clear" else gr.skip())
        return values[0] if len(values) == 1 else tuple(values)

    setattr(explain_failure, _EXPLAINER, True)
    return explain_failure


def explain_failures(demo: gr.Blocks) -> None:
    """Give every event with visible outputs a ``.failure`` follow-up (idempotent).

    Gradio marks each output of a failed event with a red "Error" status that outlives the toast. The follow-up,
    which runs only when the event failed, is an event on the same outputs, so their status becomes "complete"
    again (the pill goes); it clears the result views (no stale result beside an error) and writes the message
    into the first status text of the outputs (others are emptied)."""
    store = demo.__dict__.setdefault("_gan_studio_failures", _LastFailures())
    _record_failures(demo, store)
    from gradio.events import EventListenerMethod

    explained = demo.__dict__.setdefault("_gan_studio_explained", set())
    todo = []
    for fn_id, block_fn in list(demo.fns.items()):
        if block_fn.fn is None or getattr(block_fn.fn, _EXPLAINER, False) or fn_id in explained:
            continue
        explained.add(fn_id)
        plan = _outputs_plan(demo, block_fn)
        if plan:
            todo.append((fn_id, plan))
    with demo:
        for fn_id, plan in todo:
            block, _ = demo.default_config.set_event_trigger(
                [EventListenerMethod(None, "failure")], guarded(_explainer(store, fn_id, plan)), None,
                [comp for comp, _ in plan], trigger_after=fn_id, trigger_only_on_failure=True, queue=False,
                show_progress="minimal", api_visibility="private")
            setattr(block.fn, _EXPLAINER, True)
            explained.add(block._id)


# ---- examples: a click that follows an example waits until the example is in place -------------------------------

# Gradio loads a clicked example with a request to the server (``load_example``, no progress shown) and only then
# sets the input components. A Run click (or any button) in that window sends the inputs as they were — no image —
# and the handler says "upload an image first" while the example then appears. This page script holds such a click
# from the click on the example until its request has answered and the components had time to take the values
# (1 s and two frames; at most 15 s in all), then replays it. Example requests: those of a click on a dataset.
EXAMPLES_FIRST_JS = """() => {
  const config = window.gradio_config || {};
  const datasets = new Set((config.components || []).filter((c) => c.type === "dataset").map((c) => c.id));
  const loaders = new Set((config.dependencies || []).filter((d) => (d.targets || []).some(
    ([id, event]) => datasets.has(id) && (event === "click" || event === "select"))).map((d) => d.id));
  const loading = [];  // one token per example click whose request has not answered yet
  const held = [];
  const replayed = new WeakSet();
  const release = (token) => {
    const i = loading.indexOf(token === undefined ? loading[0] : token);
    if (i >= 0) loading.splice(i, 1);
    if (loading.length > 0 || held.length === 0) return;
    // two frames after the last answer: the components have rendered the example's values
    requestAnimationFrame(() => requestAnimationFrame(() => {
      if (loading.length === 0) held.splice(0).forEach((button) => { replayed.add(button); button.click(); });
    }));
  };
  document.addEventListener("click", (event) => {
    const target = event.target.closest ? event.target : event.target.parentElement;
    if (!target) return;
    if (target.closest("button.gallery-item, tr.tr-body")) {  // an example (a dataset's item): loading until answered
      if (loaders.size) { const token = {}; loading.push(token); setTimeout(() => release(token), 15000); }
      return;
    }
    const button = target.closest("button");
    if (!button || replayed.delete(button) || loading.length === 0 || button.getAttribute("role") === "tab") return;
    event.preventDefault();
    event.stopImmediatePropagation();
    if (!held.includes(button)) held.push(button);
  }, true);
  const fetchBefore = window.fetch;
  window.fetch = async function (input, init) {
    let loader = false;
    try {
      const url = String((input && input.url) || input);
      loader = /run\\/predict|queue\\/join/.test(url) && typeof init.body === "string"
        && loaders.has(JSON.parse(init.body).fn_index);
    } catch (error) { loader = false; }
    if (!loader) return fetchBefore.apply(this, arguments);
    try {
      return await fetchBefore.apply(this, arguments);
    } finally {
      setTimeout(() => release(), 1000);  // the values are applied (a gallery's images too) after the answer
    }
  };
}"""


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
    explain_failures(demo)
    return demo


def unguarded(demo: gr.Blocks) -> list[str]:
    """Names of event handlers and components that ``guard_app`` did not reach (empty when all are guarded)."""
    missing = [f"handler {block_fn.name}" for block_fn in demo.fns.values()
               if block_fn.fn is not None and not getattr(block_fn.fn, _MARK, False)]
    missing += [f"component {_label(b)} ({type(b).__name__})" for b in demo.blocks.values()
                if isinstance(b, gr.components.Component) and not getattr(b, _MARK, False)]
    return missing
