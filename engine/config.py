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
"""
from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
BUNDLED_WEIGHTS = REPO_ROOT / "weights"
_SHARED = REPO_ROOT.parent / "shared"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _paths(value: str | None) -> list[Path]:
    return [Path(p).expanduser() for p in (value or "").split(os.pathsep) if p.strip()]


def weights_dirs() -> list[Path]:
    """Folders searched for checkpoints before the repo's weights/ and the download cache."""
    dirs = _paths(os.environ.get("WEIGHTS_DIR"))
    if not dirs and (_SHARED / "weights").is_dir():
        dirs = [_SHARED / "weights"]
    return dirs


def data_dir() -> Path | None:
    """Folder with example data (the layout of ../shared/data), or None when not configured."""
    value = os.environ.get("DATA_DIR")
    if value:
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
