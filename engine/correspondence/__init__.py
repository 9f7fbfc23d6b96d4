"""Dense correspondence and edit propagation backends (see base.py for the interface)."""
from .base import Backend, DenseMatch, StreamPropagator, get_backend, list_backends, register_backend

__all__ = ["Backend", "DenseMatch", "StreamPropagator", "get_backend", "list_backends", "register_backend"]
