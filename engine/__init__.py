"""GAN studio inference engine: models, weights and pipelines, usable without the web app.

    >>> import engine
    >>> engine.list_models()                       # names, tasks and weight status
    >>> model = engine.load_model("gancompression-horse2zebra")

Importing this package is cheap: torch and the models load on first use.
"""
from .errors import EngineError, InputError, ModelError, WeightsCorruptError, WeightsError, WeightsMissingError
from .registry import list_models, load_model, model_status

__all__ = ["EngineError", "InputError", "ModelError", "WeightsCorruptError", "WeightsError", "WeightsMissingError",
           "list_models", "load_model", "model_status"]
