"""Typed errors of the engine. Every message is written for the person using the app or the API."""


class EngineError(Exception):
    """Base class: anything the engine raises on purpose. ``str(err)`` is safe to show to a user."""


class InputError(EngineError, ValueError):
    """The input (image, video, mask, option) cannot be used; the message says why and what to do."""


class WeightsError(EngineError):
    """A checkpoint file cannot be used."""


class WeightsMissingError(WeightsError, FileNotFoundError):
    """A checkpoint was not found in any configured folder and could not be downloaded."""


class WeightsCorruptError(WeightsError):
    """A checkpoint exists but fails its sha256 check, does not unpickle safely or does not match the layout."""


class ModelError(EngineError, RuntimeError):
    """A model failed while running (e.g. out of memory); the request fails, the engine stays usable."""


class Cancelled(EngineError):
    """The caller cancelled the job (raised from a progress callback); partial results are discarded."""
