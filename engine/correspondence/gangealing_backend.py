"""GANgealing backends for the Correspondence and Propagation tabs (see base.py for the interface).

One backend per pretrained model: ``gangealing-<name>`` (bicycle, cat, cat_ssl_mix6, celeba, cub, dog, tvmonitor).
The clustering models (car, horse) learn four congealed spaces, each with its own average image, so they get one
backend per cluster: ``gangealing-car-cluster0`` ... ``gangealing-car-cluster3`` (the edit is painted on that
cluster's average; images are congealed with that cluster's head, the classifier deciding only the mirror).

Edits are painted on :meth:`canvas` (the model's congealed average, from DATA_DIR/gangealing-assets/assets);
``reference`` is not used. The work itself is in :mod:`engine.pipelines.gangealing`.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from .base import Backend, DenseMatch, Progress, StreamPropagator, register_backend


class GANgealingStream(StreamPropagator):
    """Per-frame handler: a :class:`~engine.pipelines.gangealing.Propagator` with temporal smoothing."""

    def __init__(self, propagator):
        self.propagator = propagator

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        return self.propagator(frame)

    def reset(self) -> None:
        self.propagator.reset()


class GANgealingBackend(Backend):
    needs_reference = False

    def __init__(self, model_name: str, cluster: Optional[int] = None, *, model=None,
                 canvas_image: Optional[np.ndarray] = None, resolution: int = 256):
        from ..models.gangealing import PRETRAINED

        settings = PRETRAINED[model_name]
        self.model_name = model_name
        self.registry_name = f"gangealing-{model_name}"
        self.cluster = cluster if settings.clustering else None
        if settings.clustering and cluster is None:
            self.cluster = 0
        suffix = f"-cluster{self.cluster}" if settings.clustering else ""
        self.name = self.registry_name + suffix
        self.title = f"GANgealing {model_name}" + (f" (cluster {self.cluster})" if settings.clustering else "")
        self.resolution = resolution
        self._model = model              # tests inject a GANgealing module; None = the registry's model
        self._canvas = canvas_image

    # -- state ----------------------------------------------------------------------------------------------
    def model(self):
        from ..pipelines import gangealing as pipe

        return self._model if self._model is not None else pipe.get_model(self.registry_name)

    def status(self) -> tuple[bool, str]:
        from .. import registry

        if self._model is None:
            st = registry.model_status(self.registry_name)
            if not st.usable:
                return False, f"{self.title}: checkpoint not available. {st.message}"
            note = st.message if st.state != "ready" else ""
        else:
            note = ""
        if self.canvas() is None:
            return False, (f"{self.title}: its average image (the canvas to paint on) was not found; set DATA_DIR to "
                           "a folder containing gangealing-assets/assets/averages.")
        return True, note

    def canvas(self) -> Optional[np.ndarray]:
        if self._canvas is not None:
            return self._canvas
        from ..pipelines import gangealing as pipe

        return pipe.average_image(self.model_name, self.cluster or 0)

    def dense_label(self) -> Optional[np.ndarray]:
        """The official mask on the canvas coloured by position: a ready-made edit showing dense correspondence."""
        from ..pipelines import gangealing as pipe

        return pipe.dense_label(self.model_name, self.cluster or 0)

    # -- work -----------------------------------------------------------------------------------------------
    def match(self, a: np.ndarray, b: np.ndarray, progress: Progress = None) -> DenseMatch:
        from ..pipelines import gangealing as pipe

        if progress is not None:
            progress(0.0, "congealing both images")
        c = pipe.correspond(self.model(), a, b, resolution=self.resolution)
        if progress is not None:
            progress(1.0, "done")
        return DenseMatch(flow=c.flow, confidence=c.confidence, extras={
            "congealed_a": c.aligned_a, "congealed_b": c.aligned_b, "quality_a": c.quality_a,
            "quality_b": c.quality_b, "cluster": c.cluster,
            "warning": " ".join(q.message for q in (c.quality_a, c.quality_b) if q.flagged)})

    def propagate(self, edit_rgba: np.ndarray, targets: Sequence[np.ndarray], *, reference: Optional[np.ndarray] = None,
                  opacity: float = 1.0, progress: Progress = None) -> list[np.ndarray]:
        from ..pipelines import gangealing as pipe

        return pipe.propagate(self.model(), edit_rgba, list(targets), cluster=self.cluster, opacity=opacity,
                              resolution=self.resolution, progress=progress)

    def stream(self, edit_rgba: np.ndarray, *, reference: Optional[np.ndarray] = None, opacity: float = 1.0,
               **options) -> StreamPropagator:
        """options: resolution (128/256/512), smoothing (EMA of the warp across frames, default 0.5), flip (flip
        inference, default True), flip_every (re-decide the mirror every N frames, reusing it in between: one STN
        pass instead of two; default 10), sigma (splat footprint), method ("exact" splat, or "fast": bilinear +
        blur)."""
        from ..pipelines import gangealing as pipe

        allowed = {"resolution", "smoothing", "flip", "flip_every", "sigma", "method"}
        unknown = set(options) - allowed
        if unknown:
            from ..errors import InputError
            raise InputError(f"Unknown stream options {sorted(unknown)}; allowed: {sorted(allowed)}.")
        kw = {"resolution": self.resolution, "smoothing": 0.5, "flip_every": 10, **options}
        return GANgealingStream(pipe.Propagator(self.model(), edit_rgba, cluster=self.cluster, opacity=opacity, **kw))


# name -> number of clusters; kept here (torch-free) so listing backends stays cheap. A test checks it against
# engine.models.gangealing.PRETRAINED.
MODELS = {"bicycle": 1, "car": 4, "cat": 1, "cat_ssl_mix6": 1, "celeba": 1, "cub": 1, "dog": 1, "horse": 4,
          "tvmonitor": 1}


def backend_names() -> list[str]:
    names = []
    for name, heads in MODELS.items():
        names += [f"gangealing-{name}-cluster{k}" for k in range(heads)] if heads > 1 else [f"gangealing-{name}"]
    return names


def _register() -> None:
    for name, heads in MODELS.items():
        for k in (range(heads) if heads > 1 else [None]):
            suffix = f"-cluster{k}" if k is not None else ""
            title = f"GANgealing {name}" + (f" (cluster {k})" if k is not None else "")
            register_backend(f"gangealing-{name}{suffix}", title, lambda name=name, k=k: GANgealingBackend(name, k))


_register()
