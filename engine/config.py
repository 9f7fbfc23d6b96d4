"""Engine settings, read from the environment (the app's flags set the same variables).

| setting | env var | default |
|---|---|---|
| weight folders (searched in order) | ``WEIGHTS_DIR`` (``os.pathsep``-separated) | ``../shared/weights`` beside the repo if present |
| data folder (examples, benchmarks) | ``DATA_DIR`` | ``../shared/data`` beside the repo if present |
| download missing weights | ``ENGINE_OFFLINE=1`` forbids | allowed |
| download cache | ``ENGINE_CACHE_DIR`` | ``~/.cache/gan-studio/weights`` |
| device | ``ENGINE_DEVICE`` (cpu, cuda, cuda:1, mps) | best available |
| random weights (tests/demos only) | ``ENGINE_RANDOM_WEIGHTS=1`` | off |
| largest image accepted | ``ENGINE_MAX_PIXELS`` | 40 megapixels |

Set to an empty string, ``WEIGHTS_DIR`` / ``DATA_DIR`` mean *none* (no ``../shared`` default): a bare start.
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
_INSTALLED = Path(__file__).resolve().parent / "_manifests"  # where `pip install .` puts the manifests


def _bundled(name: str) -> Path:
    """The repository's ``weights/`` or ``examples/`` folder; in a non-editable install, its installed copy."""
    here = REPO_ROOT / name
    return here if (here / "manifest.toml").is_file() or not (_INSTALLED / name).is_dir() else _INSTALLED / name


BUNDLED_WEIGHTS = _bundled("weights")
BUNDLED_EXAMPLES = _bundled("examples")
_SHARED = REPO_ROOT.parent / "shared"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _paths(value: str | None) -> list[Path]:
    return [Path(p).expanduser() for p in (value or "").split(os.pathsep) if p.strip()]


def weights_dirs() -> list[Path]:
    """Folders searched for checkpoints before the repo's weights/ and the download cache."""
    if "WEIGHTS_DIR" in os.environ:
        return _paths(os.environ["WEIGHTS_DIR"])
    dirs = []
    if (_SHARED / "weights").is_dir():
        dirs = [_SHARED / "weights"]
    return dirs


def data_dir() -> Path | None:
    """Folder with example data (the layout of ../shared/data), or None when not configured."""
    value = os.environ.get("DATA_DIR")
    if value is not None:
        if not value.strip():
            return None
        path = Path(value).expanduser()
        return path if path.is_dir() else None
    return _SHARED / "data" if (_SHARED / "data").is_dir() else None


def allow_download() -> bool:
    return not _truthy(os.environ.get("ENGINE_OFFLINE")) and not _truthy(os.environ.get("HF_HUB_OFFLINE"))


def cache_dir() -> Path:
    value = os.environ.get("ENGINE_CACHE_DIR")
    return Path(value).expanduser() if value else Path.home() / ".cache" / "gan-studio" / "weights"


def random_weights() -> bool:
    return _truthy(os.environ.get("ENGINE_RANDOM_WEIGHTS"))


def max_pixels() -> int:
    return int(os.environ.get("ENGINE_MAX_PIXELS", 40_000_000))
