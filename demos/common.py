"""Helpers shared by the tabs: the app context, the shared engine queue, error handling and weight notices."""
from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import os
import re
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import gradio as gr

from engine import config, examples, registry, weights
from engine.errors import Cancelled, EngineError
from engine import queue
from engine.queue import GRADIO_CONCURRENCY_ID

log = logging.getLogger("gan-studio")

# How events reach the engine. Gradio queues them in three lanes; inside, every step (an image, a video frame or
# batch, a webcam frame) takes the engine lock in arrival order (engine.queue.FairLock), so the engine runs one
# step at a time and a step waits at most for the steps queued before it:
# - single images (short jobs): one at a time, in their own lane, so they are never stuck behind a whole video;
# - long jobs (videos, galleries): one at a time; their steps interleave with the short jobs' and the streams';
# - webcam streams: no Gradio limit; a stream holds the engine only while one of its frames runs, so an idle or
#   closed stream holds nothing. Frames that arrive while the previous one is still running are dropped by Gradio
#   (only the latest is kept).
ENGINE_QUEUE = {"concurrency_id": GRADIO_CONCURRENCY_ID, "concurrency_limit": 1}
LONG_QUEUE = {"concurrency_id": GRADIO_CONCURRENCY_ID + "-long", "concurrency_limit": 1}
#   Gradio's page captures a webcam frame every ``stream_every`` seconds (a JPEG, at the camera's size), uploads
#   it and posts it to the stream; the server keeps only the newest posted frame. ``stream_every`` caps the frame
#   rate (1 / stream_every), and every capture costs the browser a JPEG encode and the server an upload, whether or
#   not the frame is used: where the CPU is the limit, uploads of frames that will be dropped queue up behind each
#   other and the picture shown falls behind the camera. Sweep on the 2-core CPU with Chromium on the same cores
#   (benchmarks/bench_webcam_browser.py --stream-every 0.05,0.1,0.15,..., two rounds, 2026-12-02), shown fps and
#   median capture -> output latency:
#     classic propagation 384 px: 0.05 s 3.6-3.9 fps, 1.35-1.71 s | 0.1 s 4.1-7.4 fps, 0.50-0.80 s |
#                                 0.15 s 4.8-6.2 fps, 0.22-0.34 s
#     Magenta 384 px:             0.05 s 4.2-4.3 fps, 0.25-0.27 s | 0.1 s 4.9-5.1 fps, 0.25 s | 0.15 s 4.7-5.8 fps, 0.25-0.28 s
#   0.05 s (the previous default) is the worst on both counts; 0.1 and 0.15 give the same frame rates within the
#   noise, 0.15 the lower latency for propagation but a 6.7 fps cap. 0.1 s is the default (a 10 fps cap, the style
#   aim) for machines where the browser is not on the server's cores; a GPU server, whose answers come faster,
#   may lower it (env STREAM_EVERY, 0.01-2 s; not measured here: no GPU).
STREAM_EVERY_S = 0.1


def _stream_every() -> float:
    try:
        value = float(os.environ.get("STREAM_EVERY", STREAM_EVERY_S))
    except ValueError:
        return STREAM_EVERY_S
    return value if 0.01 <= value <= 2.0 else STREAM_EVERY_S


STREAM_QUEUE = {"concurrency_id": GRADIO_CONCURRENCY_ID + "-stream", "concurrency_limit": None,
                "stream_every": _stream_every(), "time_limit": 120}
# Webcam outputs: a JPEG costs ~2 ms to encode at 384 px where Gradio's default WebP costs ~20 ms and PNG ~55 ms
# (gr.Image.postprocess, measured on the 2-core CPU); the page asks the camera for at most 640x480 (the frames are
# shrunk to the working size on the server anyway, and a smaller capture is cheaper to encode, send and decode).
STREAM_OUTPUT_FORMAT = "jpeg"
WEBCAM_CONSTRAINTS = {"video": {"width": {"ideal": 640, "max": 1280}, "height": {"ideal": 480, "max": 720}}}
ENGINE_LANES = tuple(q["concurrency_id"] for q in (ENGINE_QUEUE, LONG_QUEUE, STREAM_QUEUE))


@dataclass
class AppContext:
    """What every tab needs to know about how the app was started."""

    data_dir: Path | None = None
    device: str | None = None

    def data(self, *parts: str) -> Path | None:
        """A path inside the data folder, or None when there is no data folder or the path does not exist."""
        if self.data_dir is None:
            return None
        path = self.data_dir.joinpath(*parts)
        return path if path.exists() else None

    def data_files(self, *parts: str, patterns=("*.jpg", "*.jpeg", "*.png", "*.webp"), limit: int | None = None) -> list[str]:
        folder = self.data(*parts)
        if folder is None or not folder.is_dir():
            return []
        files = sorted({str(p) for pat in patterns for p in folder.glob(pat)})
        return files[:limit] if limit else files


# An absolute path (POSIX or Windows; file:// is dropped first): a slash not preceded by a word character, a dot, a
# colon or another slash (so "3/10", "A/B", URLs and "horse->zebra" are left alone), then one or more segments.
_PATH = re.compile(r"(?:(?<![\w.:/\\>])/|\b[A-Za-z]:\\)(?:[^\s/\\'\"`<>|,;()\[\]{}]+[/\\]?)+")
MAX_MESSAGE = 600


def _last_part(match: "re.Match") -> str:
    text = match.group(0)
    parts = [p for p in re.split(r"[/\\]", text) if p]
    return (parts[-1] + ("/" if text[-1] in "/\\" else "")) if parts else "…"


def sanitise(message: str) -> str:
    """A message safe to show: absolute paths become their last part (a file name), ``<...>`` cannot form HTML
    (Gradio renders error messages as HTML), and it is at most MAX_MESSAGE characters."""
    text = _PATH.sub(_last_part, re.sub(r"\bfile://", "", str(message)))
    text = re.sub(r"<([^<>]{0,300})>", "‹\\1›", text).replace("<", "‹")
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return text.strip() or "The request failed."


def user_message(exc: BaseException) -> str:
    """The text a user sees for an exception raised by engine work (sanitised: no server paths, no HTML)."""
    if isinstance(exc, gr.Error):
        return sanitise(exc.message)
    if isinstance(exc, EngineError):
        return sanitise(str(exc))
    from engine.device import is_oom  # lazy: the tab modules stay free of torch at import time

    if is_oom(exc):
        return "Out of memory while running the model. Lower the max-side setting or use fewer images."
    return sanitise(f"Internal error ({type(exc).__name__}): {exc}. The app is still running; please report this.")


GUARD_MARK = "__gan_studio_guarded__"


def guarded(fn):
    """Wrap an event handler so engine errors become a clear gr.Error and the server never crashes.

    Works for plain and async functions and generators (streaming / progressive outputs). The wrapped signature is
    kept so Gradio still injects gr.Progress. Every message is sanitised (:func:`sanitise`); the full details of an
    unexpected error go to the server log, a user mistake (an EngineError) is logged in one line without traceback.
    ``demos.guard.guard_app`` applies this to every event of the app.
    """
    if getattr(fn, GUARD_MARK, False):
        return fn
    name = getattr(fn, "__name__", "handler")

    def _fail(exc: BaseException):
        if isinstance(exc, gr.Error):
            raise gr.Error(sanitise(exc.message), duration=exc.duration, visible=exc.visible, title=exc.title,
                           print_exception=False) from exc
        if isinstance(exc, EngineError):
            log.info("handler %s refused the request: %s", name, exc)
        else:
            log.error("handler %s failed:\n%s", name, traceback.format_exc())
        raise gr.Error(user_message(exc), print_exception=False) from exc

    if inspect.isasyncgenfunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            try:
                async for item in fn(*args, **kwargs):
                    yield item
            except Exception as exc:  # noqa: BLE001 - converted for the user
                _fail(exc)
    elif inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - converted for the user
                _fail(exc)
    elif inspect.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def wrapper(*args, **kwargs):
            try:
                return await fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - converted for the user
                _fail(exc)
    else:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - converted for the user
                _fail(exc)
    setattr(wrapper, GUARD_MARK, True)
    return wrapper


ABANDONED_AFTER_S = 3.0  # a job whose generator Gradio stopped resuming for this long is treated as cancelled


def progress_callback(progress: "gr.Progress | None"):
    """Adapt a gr.Progress to the engine's ``progress(fraction, description)`` callback.

    Inside a :func:`cancellable` handler the callback also raises ``Cancelled`` once the user cancelled the event,
    which stops the engine work at its next progress report (and releases the engine queue).
    """
    if progress is None and not queue.in_cancel_scope():
        return None

    def report(fraction: float, desc: str = "") -> None:
        if queue.is_cancelled():
            raise Cancelled("Cancelled.")
        if progress is not None:
            progress(float(fraction), desc=desc)

    return report


def cancellable(n_outputs: int, poll: float = 0.25):
    """Decorator for every handler that runs engine work: run it in a thread and wait as a generator.

    Cancelling the event (Stop, ``Job.cancel()``, a closed browser tab or a dropped client) makes Gradio close the
    generator or stop resuming it. Either way the job's engine cancel token (engine.queue.cancel_scope) turns
    true, so the work stops at its next check: a progress report, a step waiting for the engine (it leaves the
    queue), or the next layer of a network (every model's modules check it), instead of running on in the
    background. Apply it outside ``guarded``: ``@cancellable(2)`` then ``@guarded``; single-image handlers that
    tests call directly are wrapped where the event is registered: ``run.click(cancellable(3)(fn), ...)``.
    """
    skip = tuple(gr.skip() for _ in range(n_outputs)) if n_outputs > 1 else gr.skip()

    def decorate(fn):
        @functools.wraps(fn)
        def generator(*args, **kwargs):
            closed = threading.Event()
            resumed = [time.monotonic()]
            box: dict = {}

            def cancelled() -> bool:
                return closed.is_set() or time.monotonic() - resumed[0] > ABANDONED_AFTER_S

            def work():
                try:
                    with queue.cancel_scope(cancelled):
                        box["value"] = fn(*args, **kwargs)
                except BaseException as exc:  # noqa: BLE001 - re-raised in the generator
                    box["error"] = exc

            thread = threading.Thread(target=contextvars.copy_context().run, args=(work,), daemon=True,
                                      name=f"job-{fn.__name__}")
            thread.start()
            try:
                while thread.is_alive():
                    thread.join(poll)
                    if thread.is_alive():
                        yield skip
                        resumed[0] = time.monotonic()
            finally:
                closed.set()  # no-op when the work is done; stops it when Gradio closed the generator early
            if "error" in box:
                raise box["error"]
            yield box["value"]

        return generator

    return decorate


def run_buttons(label: str) -> tuple["gr.Button", "gr.Button"]:
    """A primary Run button with a small Cancel button beside it (wire the Cancel with ``cancel_button(event,
    button=cancel)`` once the run event exists)."""
    with gr.Row(equal_height=True):
        run = gr.Button(label, variant="primary", scale=5)
        stop = gr.Button("Cancel", variant="stop", size="sm", scale=1, min_width=90)
    return run, stop


def cancel_button(*events, label: str = "Cancel", button: "gr.Button | None" = None) -> "gr.Button":
    """A Stop button for engine jobs (a new one here, or ``button``): cancels ``events``; their engine work stops
    at its next step."""
    button = button or gr.Button(label, variant="stop", size="sm")
    button.click(None, None, None, cancels=list(events), queue=False)
    return button


def model_choices(task: str) -> list[tuple[str, str]]:
    """Dropdown choices (label, name) for the models of a task, with their weight state in the label."""
    out = []
    for s in registry.list_models(task):
        st = registry.model_status(s.name)
        suffix = {"ready": "", "unverified": "", "random": " [random weights]", "downloadable": " [downloads on first use]",
                  "missing": " [weights missing]", "corrupt": " [weights corrupt]"}[st.state]
        out.append((s.title + suffix, s.name))
    return out


def usable_models(task: str) -> list[str]:
    return [s.name for s in registry.list_models(task) if registry.model_status(s.name).usable]


def runnable_choices(task: str) -> list[tuple[str, str]]:
    """Dropdown choices (label, name) of the models of ``task`` that can run now (or download first)."""
    usable = set(usable_models(task))
    return [(label, name) for label, name in model_choices(task) if name in usable]


def _file_line(key: str) -> str:
    """How to get one checkpoint file, as markdown (a link, where it goes); no ``<...>``, no server paths."""
    wf = weights.entry(key)
    name = Path(wf.path).name
    link = f"[{Path(wf.urls[0]).name}]({wf.urls[0]})" if wf.urls else f"`{name}` (no download URL known)"
    extract = f" (extract `{wf.archive_member}`)" if wf.archive_member else ""
    return f"{link}{extract} → `FOLDER/{wf.path}`"


def _group_title(titles: list[str]) -> str:
    prefix = titles[0].split(": ")[0] + ": "
    if len(titles) > 1 and all(t.startswith(prefix) for t in titles):
        return prefix + ", ".join(t[len(prefix):] for t in titles)
    return ", ".join(titles)


def weights_notice(names: list[str]) -> str:
    """Markdown listing, once, the models of ``names`` that cannot run and how to get their weights ('' if none).

    Models with one file each from the same download folder into the same weights subfolder (the GANgealing
    checkpoints) share one line.
    """
    lines, groups = [], {}
    for name in names:
        if registry.model_status(name).usable:
            continue
        spec = registry.spec(name)
        states = {key: weights.status(key).state for key in spec.files.values()}
        (key, state), = states.items() if len(states) == 1 else ((None, None),)
        if state == "missing" and weights.entry(key).urls and not weights.entry(key).archive_member:
            wf = weights.entry(key)
            group = (wf.urls[0].rsplit("/", 1)[0], str(Path(wf.path).parent))
            if group not in groups:
                lines.append(group)  # expanded below, in the order of the first member
            groups.setdefault(group, []).append((spec.title, wf))
            continue
        parts = []
        for key, state in states.items():
            if state == "missing":
                parts.append(_file_line(key))
            elif state == "corrupt":
                parts.append(f"`{weights.entry(key).path}` is not the official file: delete it, then {_file_line(key)}")
        lines.append(f"- **{spec.title}**: " + "; ".join(parts))
    for i, item in enumerate(list(lines)):
        if isinstance(item, tuple):
            members = groups[item]
            if len(members) < 3:
                lines[i] = "\n".join(f"- **{title}**: {_file_line(wf.key)}" for title, wf in members)
            else:
                links = ", ".join(f"[{Path(wf.urls[0]).name}]({wf.urls[0]})" for _, wf in members)
                lines[i] = f"- **{_group_title([t for t, _ in members])}**: {links} → `FOLDER/{item[1]}/`"
    if not lines:
        return ""
    offline = "" if config.allow_download() else " and downloads are off (`--offline`)"
    return (f"⚠️ Not available on this machine{offline} — their weights are missing:\n" + "\n".join(lines)
            + "\n\nPut each file at the path shown inside a folder FOLDER and start with `--weights-dir FOLDER` (or "
            "set `WEIGHTS_DIR`); `python -m engine` shows what is found.")


def show_weights_notice(names: list[str], *, any_runnable: bool) -> None:
    """The notice in the current Blocks context: open when nothing can run, folded away otherwise."""
    notice = weights_notice(names)
    if not notice:
        return
    missing = sum(1 for n in names if not registry.model_status(n).usable)
    with gr.Accordion(f"⚠️ {missing} model{'s' if missing > 1 else ''} not available on this machine: how to get "
                      "the weights", open=not any_runnable):
        gr.Markdown(notice)


def example_files(*keys: str) -> list[str] | None:
    """Paths of the example files ``keys`` (data folder or download cache), or None when one is not here."""
    return examples.paths(*keys)


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes", "on"}
