"""The interface every correspondence / edit-propagation backend implements.

Two kinds of backend share the Correspondence and Propagation tabs:

* ``classic`` — weight-free hand-crafted descriptors + flow (works for any images, offline);
* ``gangealing-<name>`` — GANgealing's congealing spatial transformer (needs the model's checkpoint).

All images cross this interface as numpy arrays: RGB ``uint8`` of shape (H, W, 3), edits as RGBA ``uint8``
of shape (H, W, 4) drawn on the backend's *canvas* (GANgealing: the model's congealed average image;
classic: the reference image the user chose).
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

Progress = Optional[Callable[[float, str], None]]


@dataclass
class DenseMatch:
    """Dense correspondence from image A to image B.

    flow: (Ha, Wa, 2) float32 — for each pixel (x, y) of A, the matching position (x', y') in B's pixel
        coordinates (absolute positions, not displacements).
    confidence: (Ha, Wa) float32 in [0, 1] — how much to trust each match (0 = occluded / unreliable).
    extras: backend-specific arrays (e.g. congealed images, quality scores).
    """

    flow: np.ndarray
    confidence: np.ndarray
    extras: dict = field(default_factory=dict)


class StreamPropagator(abc.ABC):
    """Carries one edit through a stream of frames (video or webcam); call it once per frame."""

    @abc.abstractmethod
    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """frame: (H, W, 3) uint8 RGB -> the frame with the edit blended in, same shape and dtype."""

    def reset(self) -> None:  # pragma: no cover - optional
        """Forget the stream's state (e.g. a new video starts)."""


class Backend(abc.ABC):
    """A correspondence + propagation method."""

    name: str = ""
    title: str = ""
    needs_reference: bool = True  # True: the user paints on a reference image; False: on canvas()

    def status(self) -> tuple[bool, str]:
        """(usable now, a message for the UI: why not / how to get weights)."""
        return True, ""

    def canvas(self) -> Optional[np.ndarray]:
        """The fixed image edits are painted on (H, W, 3) uint8, or None when the user picks a reference."""
        return None

    @abc.abstractmethod
    def match(self, a: np.ndarray, b: np.ndarray, progress: Progress = None) -> DenseMatch:
        """Dense correspondence A -> B."""

    @abc.abstractmethod
    def propagate(self, edit_rgba: np.ndarray, targets: Sequence[np.ndarray], *, reference: Optional[np.ndarray] = None,
                  opacity: float = 1.0, progress: Progress = None) -> list[np.ndarray]:
        """Blend an RGBA edit drawn on the canvas (or on ``reference``) into each target image."""

    @abc.abstractmethod
    def stream(self, edit_rgba: np.ndarray, *, reference: Optional[np.ndarray] = None,
               opacity: float = 1.0, **options) -> StreamPropagator:
        """A per-frame handler for video files and the live webcam."""


_FACTORIES: dict[str, Callable[[], Backend]] = {}
_TITLES: dict[str, str] = {}
_INSTANCES: dict[str, Backend] = {}


def register_backend(name: str, title: str, factory: Callable[[], Backend]) -> None:
    """Register a backend lazily: ``factory`` is only called on first use."""
    _FACTORIES[name] = factory
    _TITLES[name] = title


def _ensure_registered() -> None:
    # Imported here, not at module import, so listing stays cheap and import order does not matter.
    from . import registry_hooks  # noqa: F401  (registers the backends on import)


def list_backends() -> list[tuple[str, str]]:
    """[(name, title)] of every registered backend, classic first."""
    _ensure_registered()
    return sorted(_TITLES.items(), key=lambda kv: (kv[0] != "classic", kv[0]))


def get_backend(name: str) -> Backend:
    from ..errors import InputError

    _ensure_registered()
    if name not in _FACTORIES:
        raise InputError(f"Unknown correspondence backend {name!r}; choose one of {sorted(_FACTORIES)}.")
    if name not in _INSTANCES:
        _INSTANCES[name] = _FACTORIES[name]()
    return _INSTANCES[name]
