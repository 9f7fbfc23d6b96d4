"""Example inputs for the tabs: ``examples/manifest.toml`` (URL + sha256 + licence + source of each file).

Where an example file comes from, in order:

1. the data folder (``--data-dir`` / ``DATA_DIR``), at the entry's ``path`` (the layout of the project's
   ``shared/data``) — this is how examples work offline;
2. the download cache (``ENGINE_CACHE_DIR``/examples), when a previous start downloaded it (sha256 checked again);
3. when downloads are allowed (not ``--offline``): :func:`prefetch` downloads it from the entry's ``urls`` (the
   papers' official repositories at a fixed commit) to a temporary file in the cache, checks its sha256 and only
   then renames it into place.

:func:`path` never downloads, so building a tab never waits on the network; the app calls :func:`prefetch` once at
start-up. No gradio and no torch here.
"""
from __future__ import annotations

import functools
import logging
import os
import tempfile
import tomllib
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from . import config

MANIFEST_PATH = config.BUNDLED_EXAMPLES / "manifest.toml"
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExampleFile:
    key: str
    path: str                    # relative path inside the data folder (and inside the cache)
    urls: tuple[str, ...] = ()
    sha256: str = ""
    size: int = 0
    license: str = ""
    source: str = ""


@functools.lru_cache(maxsize=4)
def _read(path: str, mtime: float) -> dict[str, ExampleFile]:
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    return {key: ExampleFile(key=key, **{**entry, "urls": tuple(entry.get("urls", ()))})
            for key, entry in raw.get("files", {}).items()}


def manifest(path: Path | None = None) -> dict[str, ExampleFile]:
    path = Path(path or MANIFEST_PATH)
    return _read(str(path), path.stat().st_mtime)


def cache_dir() -> Path:
    return config.cache_dir() / "examples"


def _verified(ef: ExampleFile, candidate: Path) -> bool:
    from .weights import _cached_sha256

    try:
        return not ef.sha256 or _cached_sha256(candidate) == ef.sha256.lower()
    except OSError:
        return False


def path(key: str, files: dict[str, ExampleFile] | None = None) -> Path | None:
    """The local file of example ``key`` (data folder first, then the verified cache), or None. Never downloads.

    A file in the data folder is used as it is (it is the user's own copy); a cached download must match its
    sha256.
    """
    ef = (files or manifest())[key]
    data = config.data_dir()
    if data is not None and (data / ef.path).is_file():
        return data / ef.path
    cached = cache_dir() / ef.path
    if cached.is_file() and _verified(ef, cached):
        return cached
    return None


def paths(*keys: str) -> list[str] | None:
    """String paths of all ``keys``, or None when any of them is not available now (an example needs them all)."""
    found = [path(k) for k in keys]
    return None if any(p is None for p in found) else [str(p) for p in found]


def download(ef: ExampleFile, *, timeout: float = 30.0) -> Path:
    """Fetch ``ef`` into the cache: temporary file in the target folder, sha256 check, atomic rename."""
    from .errors import WeightsCorruptError, WeightsMissingError
    from .weights import _fetch, sha256_file

    target = cache_dir() / ef.path
    target.parent.mkdir(parents=True, exist_ok=True)
    errors = []
    for url in ef.urls:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=".part-", suffix=Path(ef.path).suffix)
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _fetch(url, out, ef.size, None, timeout)
            actual = sha256_file(tmp)
            if ef.sha256 and actual != ef.sha256.lower():
                raise WeightsCorruptError(f"{Path(ef.path).name} from {url} does not match its sha256; not kept.")
            os.replace(tmp, target)
            return target
        except WeightsCorruptError:
            raise
        except Exception as exc:  # noqa: BLE001 - network errors: try the next URL
            errors.append(f"{url}: {exc}")
        finally:
            tmp.unlink(missing_ok=True)
    raise WeightsMissingError(f"Could not download the example {Path(ef.path).name}: " + "; ".join(errors))


def prefetch(keys: list[str] | None = None, *, deadline_s: float = 60.0, workers: int = 4) -> dict[str, Path]:
    """Make the examples ``keys`` (default: all) local, downloading the missing ones when downloads are allowed.

    Returns {key: path} of those available afterwards. Failures are logged, never raised: an example that could
    not be fetched is simply not offered. Waits at most ``deadline_s`` in total.
    """
    files = manifest()
    keys = list(files) if keys is None else keys
    found = {k: p for k in keys if (p := path(k, files)) is not None}
    todo = [files[k] for k in keys if k not in found and files[k].urls]
    if not todo or not config.allow_download():
        return found
    log.info("downloading %d example files (%.1f MB) into %s", len(todo), sum(f.size for f in todo) / 1e6,
             cache_dir())
    from .errors import WeightsCorruptError

    try:  # the first one alone: when there is no network, say so once instead of failing every file
        found[todo[0].key] = download(todo[0], timeout=min(30.0, deadline_s))
    except WeightsCorruptError as exc:
        log.warning("example %s not downloaded: %s", todo[0].key, exc)
    except Exception as exc:  # noqa: BLE001 - logged; no example is downloaded
        log.warning("examples not downloaded (no network?): %s; they are offered once they are in the data folder "
                    "(--data-dir) or the cache", exc)
        return found
    todo = todo[1:]
    failed = []
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="examples")
    futures = {pool.submit(download, ef, timeout=min(30.0, deadline_s)): ef.key for ef in todo}
    done, pending = wait(futures, timeout=deadline_s)
    for fut in done:
        try:
            found[futures[fut]] = fut.result()
        except Exception as exc:  # noqa: BLE001 - logged; the example is not offered
            failed.append(futures[fut])
            log.info("example %s not downloaded: %s", futures[fut], exc)
    if failed:
        log.warning("%d example files not downloaded (%s); those examples are not offered", len(failed),
                    ", ".join(sorted(failed)[:5]) + (", ..." if len(failed) > 5 else ""))
    if pending:
        log.warning("%d example downloads did not finish within %.0f s; they are not offered", len(pending),
                    deadline_s)
    pool.shutdown(wait=False, cancel_futures=True)
    return found
