"""Registers the known backends (each module calls ``register_backend`` at import; imports are cheap)."""
import importlib

for _module in ("classic_backend", "gangealing_backend"):
    try:
        importlib.import_module(f"{__package__}.{_module}")
    except ModuleNotFoundError as exc:  # a backend still being written is simply absent
        if exc.name != f"{__package__}.{_module}":
            raise
