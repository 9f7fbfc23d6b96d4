"""The engine client every tab talks to: the in-process engine (default) or a Ray Serve application.

    from engine.client import get_client
    client = get_client()     # ENGINE_BACKEND (the app's --engine): "local" (default), "ray" or "ray://HOST:PORT"
    out = client.translate("horse.jpg", "gancompression-horse2zebra", max_side=512)

Both clients have the same methods, with the signatures of the pipeline calls the tabs make (engine.pipelines.*,
engine.correspondence backends), and return the same types, so a tab never knows which one it talks to:

* :class:`LocalClient` calls the pipelines in this process (the engine lock, model cache and device as before);
* :class:`RayClient` sends the model work to the deployments of ``python -m engine.serve`` (one per task family:
  Style, Translate, Correspondence). Images are decoded, validated and resized here, exactly as the local path
  does, and cross as uint8 arrays; loops over galleries and video frames run here, one remote call per image or
  batch of frames, so progress reports and cancellation work as in the local engine. Per-stream state is either
  passed explicitly (style: the small EMA statistics) or kept on the replica that the stream's frames are routed
  to (propagation: Serve's multiplexed routing keyed by a stream id, re-created from the edit if that replica is
  gone). A request whose replica dies is retried once on another (or the replacement) replica; after that it fails
  with a short message.

Metadata (model lists, weight status, backend titles, GANgealing canvases) is read in this process from the same
manifest, so the front needs the repository but no model is ever built here in Ray mode.
"""
from __future__ import annotations

import os
import threading
import time
import uuid
from typing import Any, Callable, Sequence

import numpy as np

from .errors import (Cancelled, EngineError, InputError, ModelError, WeightsCorruptError, WeightsError,
                     WeightsMissingError)

Progress = Callable[[float, str], None] | None

APP_NAME = "gan-studio"
DEPLOYMENTS = {"style": "Style", "translate": "Translate", "correspondence": "Correspondence"}
ERRORS = {cls.__name__: cls for cls in (EngineError, InputError, ModelError, WeightsError, WeightsMissingError,
                                        WeightsCorruptError, Cancelled)}


class EngineClient:
    """What the tabs call. Subclasses: LocalClient (in-process) and RayClient (Ray Serve)."""

    kind = "abstract"
    concurrency = 1  # how many engine events the Gradio front may run at once

    def describe(self) -> str:
        return self.kind

    # ---- translation (engine.pipelines.translate) ----
    def translate(self, image, model: str, *, max_side: int | None = 1024, return_input: bool = False,
                  precision: str = "fp32", uint8: str = "round", exact: bool = False):
        raise NotImplementedError

    def translate_detailed(self, image, model: str, *, max_side: int | None = 1024, precision: str = "fp32",
                           uint8: str = "round", exact: bool = False):
        raise NotImplementedError

    def translate_many(self, images: Sequence, model: str, *, max_side: int | None = 1024, progress: Progress = None,
                       max_images: int | None = 64, precision: str = "fp32", uint8: str = "round",
                       exact: bool = False):
        raise NotImplementedError

    def translate_video(self, src, model: str, *, max_side: int | None = 512, max_seconds: float = 10.0,
                        max_frames: int = 900, out_path=None, progress: Progress = None, batch_size: int = 4,
                        precision: str = "fp32"):
        raise NotImplementedError

    # ---- style (engine.pipelines.style.pipeline_for(model): run / stylize_video / stylize_frame) ----
    def stylize(self, content, styles, *, model: str | None = None, weights=None, alpha: float = 1.0,
                preserve_color: bool = False, mask=None, max_side: int | None = 512, style_size: int | None = 512,
                progress: Progress = None):
        raise NotImplementedError

    def stylize_video(self, video, styles, *, model: str | None = None, out_path=None, weights=None,
                      alpha: float = 1.0, preserve_color: bool = False, max_side: int | None = 512,
                      style_size: int | None = 512, max_frames: int | None = 300, max_seconds: float | None = None,
                      smooth: float = 0.0, progress: Progress = None):
        raise NotImplementedError

    def stylize_frame(self, frame, styles, state=None, *, model: str | None = None, weights=None,
                      alpha: float = 1.0, preserve_color: bool = False, max_side: int | None = 384,
                      style_size: int | None = 256, smooth: float = 0.0):
        raise NotImplementedError

    def style_pipeline(self, model: str | None = None):
        """An object with the style pipeline's ``run`` / ``stylize_video`` / ``stylize_frame`` for ``model``."""
        return _StyleView(self, model)

    # ---- correspondence / propagation (engine.correspondence backends, engine.pipelines.gangealing) ----
    def match(self, backend: str, a: np.ndarray, b: np.ndarray, progress: Progress = None):
        raise NotImplementedError

    def similarity(self, backend: str, a: np.ndarray, b: np.ndarray, x: float, y: float) -> np.ndarray | None:
        """Per-point similarity map over B, or None when the backend has none."""
        raise NotImplementedError

    def propagate(self, backend: str, edit_rgba: np.ndarray, targets: Sequence[np.ndarray], *, reference=None,
                  opacity: float = 1.0, progress: Progress = None) -> list[np.ndarray]:
        raise NotImplementedError

    def stream(self, backend: str, edit_rgba: np.ndarray, *, reference=None, opacity: float = 1.0, **options):
        """A per-frame callable ``frame (H, W, 3) uint8 -> frame with the edit`` for videos and the webcam."""
        raise NotImplementedError

    def congeal(self, model: str, image, *, resolution: int = 256, flip: bool = True):
        raise NotImplementedError


class _StyleView:
    """The style pipeline's three calls, bound to a client and a model."""

    def __init__(self, client: EngineClient, model: str | None):
        self.client, self.model = client, model

    def run(self, content, styles, **kwargs):
        return self.client.stylize(content, styles, model=self.model, **kwargs)

    def stylize_video(self, video, styles, **kwargs):
        return self.client.stylize_video(video, styles, model=self.model, **kwargs)

    def stylize_frame(self, frame, styles, state=None, **kwargs):
        return self.client.stylize_frame(frame, styles, state, model=self.model, **kwargs)


# ---------------------------------------------------------------------------------------------------------------
# in-process


class _LocalStream:
    def __init__(self, inner):
        self.inner = inner

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        from .queue import run_exclusive

        return run_exclusive(self.inner, frame)

    def reset(self) -> None:
        self.inner.reset()


class LocalClient(EngineClient):
    """The engine in this process: exactly the pipeline calls the tabs made before the client existed."""

    kind = "local"

    def translate(self, image, model, **kwargs):
        from .pipelines import translate as T

        return T.translate(image, model, **kwargs)

    def translate_detailed(self, image, model, **kwargs):
        from .pipelines import translate as T

        return T.translate_detailed(image, model, **kwargs)

    def translate_many(self, images, model, **kwargs):
        from .pipelines import translate as T

        return T.translate_many(images, model, **kwargs)

    def translate_video(self, src, model, **kwargs):
        from .pipelines import translate as T

        return T.translate_video(src, model, **kwargs)

    @staticmethod
    def _style(model: str | None):
        from .pipelines.style import pipeline_for

        return pipeline_for(model)

    def style_pipeline(self, model=None):
        return self._style(model)   # the pipeline object itself: exactly the calls the tab made before

    def stylize(self, content, styles, *, model=None, **kwargs):
        return self._style(model).run(content, styles, **kwargs)

    def stylize_video(self, video, styles, *, model=None, **kwargs):
        return self._style(model).stylize_video(video, styles, **kwargs)

    def stylize_frame(self, frame, styles, state=None, *, model=None, **kwargs):
        return self._style(model).stylize_frame(frame, styles, state, **kwargs)

    def match(self, backend, a, b, progress=None):
        from .correspondence import get_backend

        return get_backend(backend).match(a, b, progress=progress)

    def similarity(self, backend, a, b, x, y):
        from .correspondence import get_backend

        fn = getattr(get_backend(backend), "similarity", None)
        return None if fn is None else fn(a, b, x, y)

    def propagate(self, backend, edit_rgba, targets, *, reference=None, opacity=1.0, progress=None):
        from .correspondence import get_backend

        return get_backend(backend).propagate(edit_rgba, targets, reference=reference, opacity=opacity,
                                              progress=progress)

    def stream(self, backend, edit_rgba, *, reference=None, opacity=1.0, **options):
        from .correspondence import get_backend

        return _LocalStream(get_backend(backend).stream(edit_rgba, reference=reference, opacity=opacity, **options))

    def congeal(self, model, image, *, resolution=256, flip=True):
        from .pipelines import gangealing as G

        return G.congeal_image(model, image, resolution=resolution, flip=flip)


# ---------------------------------------------------------------------------------------------------------------
# Ray Serve


def unwrap(reply):
    """A replica's reply ``("ok", value)`` / ``("error", class, message)`` -> the value, or the engine error."""
    status = reply[0]
    if status == "ok":
        return reply[1]
    if status == "error":
        raise ERRORS.get(reply[1], EngineError)(reply[2])
    raise ModelError(f"Internal error on the engine server ({reply[1]}). The app is still running; please report "
                     "this.")


class RemoteStream:
    """A propagation stream on the Correspondence deployment: frames carry the stream id, Serve routes them to the
    replica that holds the stream (multiplexed model id); a replica that does not know the id (first frame, or it
    was replaced) asks for the edit once and builds the stream again."""

    def __init__(self, client: "RayClient", spec: dict):
        self.client, self.spec, self.id = client, spec, uuid.uuid4().hex
        self._sent = False

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        for _ in range(2):
            reply = self.client._call("correspondence", "stream_frame", self.id, frame,
                                      None if self._sent else self.spec, multiplexed_id=self.id)
            self._sent = True
            if reply == ("need_spec",):
                self._sent = False
                continue
            return unwrap(reply)
        raise ModelError("The engine server lost this stream twice in a row; please start the stream again.")

    def reset(self) -> None:
        self.id, self._sent = uuid.uuid4().hex, False


def _style_image(src) -> np.ndarray:
    from . import imageio

    return np.asarray(imageio.load_image(src), dtype=np.uint8)


def _styles_as_arrays(styles) -> list:
    from .pipelines.style import _as_list

    return [_style_image(s) for s in _as_list(styles)]


class RayClient(EngineClient):
    """Model work on the ``gan-studio`` Ray Serve application (see engine/serve.py and docs/SCALE_OUT.md).

    ``address``: what ``ray.init`` connects to when this process has no Ray yet ("auto": the cluster this machine
    belongs to; "ray://HOST:10001": Ray Client). ``timeout_s``: the longest one remote call may take.
    """

    kind = "ray"

    def __init__(self, address: str | None = None, *, timeout_s: float = 600.0, retries: int = 1,
                 concurrency: int | None = None):
        self.address = address or os.environ.get("RAY_ADDRESS") or "auto"
        self.timeout_s = timeout_s
        self.retries = retries
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._info: dict | None = None
        self._concurrency = concurrency

    # ---- connection ----
    def connect(self) -> dict:
        """Connect (once) and return the application's info: replicas per deployment, settings."""
        with self._lock:
            if self._info is not None:
                return self._info
            import ray
            from ray import serve

            if not ray.is_initialized():
                try:
                    ray.init(address=self.address, log_to_driver=False)
                except Exception as exc:  # noqa: BLE001 - a short message instead of Ray's traceback
                    raise EngineError(f"Cannot reach the Ray cluster at {self.address!r} ({type(exc).__name__}). "
                                      "Start it (ray start --head) or pass --engine ray://HOST:10001.") from exc
            try:
                ingress = serve.get_app_handle(APP_NAME)
                info = ingress.info.remote().result(timeout_s=60)
            except Exception as exc:  # noqa: BLE001
                raise EngineError(f"No {APP_NAME!r} Serve application on the Ray cluster ({type(exc).__name__}): "
                                  "start it with `python -m engine.serve`.") from exc
            for family, deployment in DEPLOYMENTS.items():
                self._handles[family] = serve.get_deployment_handle(deployment, app_name=APP_NAME)
            self._info = info
            return info

    @property
    def concurrency(self) -> int:  # type: ignore[override]
        if self._concurrency:
            return self._concurrency
        env = os.environ.get("ENGINE_CONCURRENCY")
        if env:
            return max(1, int(env))
        info = self.connect()
        return max(2, 2 * max(info["replicas"].values()))

    def describe(self) -> str:
        info = self.connect()
        reps = ", ".join(f"{k} ×{v}" for k, v in info["replicas"].items())
        return f"Ray Serve ({reps})"

    def handle(self, family: str):
        self.connect()
        return self._handles[family]

    def _call(self, family: str, method: str, *args, multiplexed_id: str | None = None):
        """One remote call; a replica that dies under it is replaced by Serve and the call is retried."""
        from ray import exceptions as rx

        lost = (rx.RayActorError, getattr(rx, "ActorUnavailableError", rx.RayActorError))
        handle = self.handle(family)
        if multiplexed_id is not None:
            handle = handle.options(multiplexed_model_id=multiplexed_id)
        for attempt in range(self.retries + 1):
            try:
                return getattr(handle, method).remote(*args).result(timeout_s=self.timeout_s)
            except lost as exc:
                if attempt < self.retries:
                    time.sleep(0.5)
                    continue
                raise ModelError("The engine server lost the worker running this request (it is being restarted). "
                                 "Please try again in a few seconds.") from exc
            except TimeoutError as exc:
                raise ModelError(f"The engine server did not answer within {self.timeout_s:g} s.") from exc
            except rx.RayTaskError as exc:  # an error outside the replica's own guard (e.g. unpicklable input)
                raise ModelError(f"The engine server could not run this request ({type(exc.cause).__name__}).") \
                    from exc

    def _run(self, family: str, method: str, *args, **kw):
        return unwrap(self._call(family, method, *args, **kw))

    def replica_pids(self, family: str, tries: int = 8) -> set[int]:
        """Process ids of the replicas answering ``family`` requests (tests and diagnostics)."""
        return {self._run(family, "pid") for _ in range(tries)}

    # ---- translation ----
    @staticmethod
    def _translate_settings(model, precision, uint8, exact):
        from .pipelines import translate as T

        T._check_model_name(model)
        return T.check_precision("fp32" if exact else precision), T.check_uint8(uint8)

    def translate(self, image, model, *, max_side=1024, return_input=False, precision="fp32", uint8="round",
                  exact=False):
        from .pipelines import translate as T

        precision, uint8 = self._translate_settings(model, precision, uint8, exact)
        img = np.asarray(T.prepare_image(image, max_side), dtype=np.uint8)
        out, _maps = self._run("translate", "image", model, img, precision, uint8, False)
        return (img, out) if return_input else out

    def translate_detailed(self, image, model, *, max_side=1024, precision="fp32", uint8="round", exact=False):
        from .pipelines import translate as T

        precision, uint8 = self._translate_settings(model, precision, uint8, exact)
        img = np.asarray(T.prepare_image(image, max_side), dtype=np.uint8)
        out, maps = self._run("translate", "image", model, img, precision, uint8, True)
        return T.Translation(img, out, maps)

    def translate_many(self, images, model, *, max_side=1024, progress=None, max_images=64, precision="fp32",
                       uint8="round", exact=False):
        from .pipelines import translate as T

        precision, uint8 = self._translate_settings(model, precision, uint8, exact)
        items = list(images or [])
        if not items:
            raise InputError("No images given.")
        if max_images and len(items) > max_images:
            raise InputError(f"{len(items)} images given; at most {max_images} per request.")
        result = T.BatchResult()
        if progress:
            progress(0.0, f"loading the model ({model})")
        for i, src in enumerate(items):
            name = T._name_of(src, i)
            raw = src[0] if isinstance(src, tuple) else src
            try:
                img = np.asarray(T.prepare_image(raw, max_side), dtype=np.uint8)
                out, _maps = self._run("translate", "image", model, img, precision, uint8, False)
            except InputError as exc:
                result.errors.append(f"{name}: {exc}")
            else:
                result.inputs.append(img)
                result.outputs.append(out)
                result.names.append(name)
            if progress:
                progress((i + 1) / len(items), f"image {i + 1}/{len(items)}")
        return result

    def translate_video(self, src, model, *, max_side=512, max_seconds=10.0, max_frames=900, out_path=None,
                        progress=None, batch_size=4, precision="fp32"):
        from .pipelines import translate as T

        return T.translate_video(src, model, max_side=max_side, max_seconds=max_seconds, max_frames=max_frames,
                                 out_path=out_path, progress=progress, batch_size=batch_size, precision=precision,
                                 run_batch=lambda frames: self._run("translate", "frames", model, frames, precision))

    # ---- style ----
    def stylize(self, content, styles, *, model=None, weights=None, alpha=1.0, preserve_color=False, mask=None,
                max_side=512, style_size=512, progress=None):
        from .pipelines.style import mask_array

        if content is None:
            raise InputError("Give a content image.")
        content = _style_image(content)
        if mask is not None:
            mask = mask_array(mask, (content.shape[1], content.shape[0]))
        if progress:
            progress(0.0, "stylising on the engine server")
        res = self._run("style", "run", model, content, _styles_as_arrays(styles),
                        dict(weights=weights, alpha=alpha, preserve_color=preserve_color, mask=mask,
                             max_side=max_side, style_size=style_size))
        if progress:
            progress(1.0, "done")
        return res

    def stylize_frame(self, frame, styles, state=None, *, model=None, weights=None, alpha=1.0, preserve_color=False,
                      max_side=384, style_size=256, smooth=0.0):
        if frame is None:
            raise InputError("No webcam frame.")
        return self._run("style", "frame", model, _style_image(frame), _styles_as_arrays(styles), state,
                         dict(weights=weights, alpha=alpha, preserve_color=preserve_color, max_side=max_side,
                              style_size=style_size, smooth=smooth))

    def stylize_video(self, video, styles, *, model=None, out_path=None, weights=None, alpha=1.0,
                      preserve_color=False, max_side=512, style_size=512, max_frames=300, max_seconds=None,
                      smooth=0.0, progress=None):
        """The video is decoded and encoded here; each frame is one remote ``frame`` call with the stream's state
        (EMA statistics, colour reference) passed along, so any replica can take any frame."""
        from . import videoio
        from .pipelines.style import VideoResult, plan_video

        styles, norm_w, limit, info, fps, total = plan_video(
            video, styles, weights=weights, alpha=alpha, smooth=smooth, max_side=max_side, max_frames=max_frames,
            max_seconds=max_seconds)
        arrays = _styles_as_arrays(styles)
        start, state, size = time.perf_counter(), None, None
        if progress:
            progress(0.0, "encoding styles")
        settings = dict(weights=norm_w, alpha=alpha, preserve_color=preserve_color, max_side=limit,
                        style_size=style_size, smooth=smooth)
        with videoio.VideoWriter(out_path, info.fps) as writer:
            for frame in videoio.read_frames(video, max_frames=max_frames or None, max_seconds=max_seconds or None,
                                             max_side=limit):
                size = size or (frame.shape[1], frame.shape[0])
                out, state = self._run("style", "frame", model, frame, arrays, state, settings)
                writer.write(out)
                if progress:
                    progress(min(writer.frames / max(total, 1), 1.0), f"frame {writer.frames}/{total or '?'}")
        seconds = time.perf_counter() - start
        return VideoResult(writer.path, writer.frames, fps, size,
                           {"seconds": round(seconds, 2), "smooth": smooth,
                            "frames_per_second": round(writer.frames / max(seconds, 1e-9), 2),
                            "source_frames": info.frames, "source_seconds": info.seconds})

    # ---- correspondence ----
    def match(self, backend, a, b, progress=None):
        if progress:
            progress(0.0, "matching on the engine server")
        return self._run("correspondence", "match", backend, np.asarray(a), np.asarray(b))

    def similarity(self, backend, a, b, x, y):
        return self._run("correspondence", "similarity", backend, np.asarray(a), np.asarray(b), float(x), float(y))

    def propagate(self, backend, edit_rgba, targets, *, reference=None, opacity=1.0, progress=None):
        if not targets:
            raise InputError("Add at least one target image to propagate the edit to.")
        outs = []
        for i, target in enumerate(targets):   # one call per image: progress and cancellation between images
            outs += self._run("correspondence", "propagate", backend, np.asarray(edit_rgba), [np.asarray(target)],
                              reference, float(opacity))
            if progress:
                progress((i + 1) / len(targets), f"image {i + 1}/{len(targets)}")
        return outs

    def stream(self, backend, edit_rgba, *, reference=None, opacity=1.0, **options):
        spec = {"backend": backend, "edit": np.asarray(edit_rgba), "reference": reference, "opacity": float(opacity),
                "options": options}
        self._run("correspondence", "check_stream", spec)  # bad edits / options fail now, not on the first frame
        return RemoteStream(self, spec)

    def congeal(self, model, image, *, resolution=256, flip=True):
        return self._run("correspondence", "congeal", model, np.asarray(image), int(resolution), bool(flip))


# ---------------------------------------------------------------------------------------------------------------
# choice


_client: EngineClient | None = None
_client_key: str | None = None
_client_lock = threading.Lock()


def make_client(spec: str | None) -> EngineClient:
    """``"local"`` (or empty) -> LocalClient; ``"ray"`` / ``"ray:ADDRESS"`` / ``"ray://HOST:PORT"`` -> RayClient."""
    spec = (spec or "local").strip()
    if spec in ("", "local"):
        return LocalClient()
    if spec == "ray":
        return RayClient()
    if spec.startswith("ray://"):
        return RayClient(spec)
    if spec.startswith("ray:"):
        return RayClient(spec[4:])
    raise InputError(f"Unknown engine {spec!r}: use local, ray, ray:ADDRESS or ray://HOST:PORT.")


def get_client() -> EngineClient:
    """The process-wide client chosen by ``ENGINE_BACKEND`` (the app's ``--engine``); re-chosen if it changes."""
    global _client, _client_key
    key = os.environ.get("ENGINE_BACKEND", "local")
    with _client_lock:
        if _client is None or key != _client_key:
            _client, _client_key = make_client(key), key
        return _client


def set_client(client: EngineClient | None) -> None:
    """Install a client explicitly (tests, embedding); None goes back to ``ENGINE_BACKEND``."""
    global _client, _client_key
    with _client_lock:
        _client = client
        _client_key = os.environ.get("ENGINE_BACKEND", "local") if client is not None else None
