"""The examples manifest: complete entries, byte-identical to the data folder, fetched safely (local HTTP only)."""
from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from engine import examples


def test_manifest_entries_are_complete_and_point_at_official_repositories():
    files = examples.manifest()
    assert len(files) >= 20
    for key, ef in files.items():
        assert ef.path and not Path(ef.path).is_absolute() and ".." not in Path(ef.path).parts, key
        assert len(ef.sha256) == 64 and int(ef.sha256, 16) >= 0, key
        assert ef.size > 0 and ef.license and ef.source, key
        assert ef.urls and all(u.startswith("https://raw.githubusercontent.com/") for u in ef.urls), key
        commit = ef.urls[0].split("/")[5]
        assert len(commit) == 40, f"{key}: URLs must pin a commit, not a branch"


def test_data_folder_copies_are_the_manifest_files(shared_data):
    """Offline the examples come from the data folder: the files there must be the same bytes as the downloads."""
    checked = 0
    for key, ef in examples.manifest().items():
        local = shared_data / ef.path
        if not local.is_file():
            continue
        data = local.read_bytes()
        assert len(data) == ef.size and hashlib.sha256(data).hexdigest() == ef.sha256, key
        checked += 1
    assert checked == len(examples.manifest())


@pytest.fixture
def server(tmp_path):
    """A static file server on 127.0.0.1 (never the internet) serving tmp_path/served."""
    root = tmp_path / "served"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _fake(monkeypatch, tmp_path, url: str, payload: bytes, sha: str | None = None):
    ef = examples.ExampleFile(key="horse", path="set/testA/horse.jpg", urls=(url,), size=len(payload),
                              sha256=sha or hashlib.sha256(payload).hexdigest(), license="test", source="test")
    monkeypatch.setattr(examples, "manifest", lambda path=None: {"horse": ef})
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DATA_DIR", "")
    monkeypatch.delenv("ENGINE_OFFLINE", raising=False)
    return ef


def test_prefetch_downloads_verifies_and_renames(server, tmp_path, monkeypatch):
    root, base = server
    payload = b"\xff\xd8 not really a jpeg " * 1000
    (root / "h.jpg").write_bytes(payload)
    _fake(monkeypatch, tmp_path, f"{base}/h.jpg", payload)
    assert examples.path("horse") is None and examples.paths("horse") is None
    found = examples.prefetch()
    target = tmp_path / "cache" / "examples" / "set" / "testA" / "horse.jpg"
    assert found == {"horse": target} and target.read_bytes() == payload
    assert examples.paths("horse") == [str(target)]
    assert not list(target.parent.glob(".part-*")), "the temporary file must be renamed, not left behind"


def test_prefetch_fetches_several_and_skips_a_bad_one(server, tmp_path, monkeypatch, caplog):
    root, base = server
    files = {}
    for i in range(4):
        payload = f"file {i}".encode() * 100
        (root / f"{i}.png").write_bytes(payload)
        files[f"k{i}"] = examples.ExampleFile(key=f"k{i}", path=f"set/{i}.png", urls=(f"{base}/{i}.png",),
                                              size=len(payload), sha256=hashlib.sha256(payload).hexdigest())
    files["k3"] = examples.ExampleFile(key="k3", path="set/3.png", urls=(f"{base}/missing.png",), size=1,
                                       sha256="0" * 64)
    monkeypatch.setattr(examples, "manifest", lambda path=None: files)
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("DATA_DIR", "")
    monkeypatch.delenv("ENGINE_OFFLINE", raising=False)
    with caplog.at_level("WARNING", logger="engine.examples"):
        found = examples.prefetch()
    assert sorted(found) == ["k0", "k1", "k2"] and "k3" in caplog.text
    assert examples.paths("k0", "k1") is not None and examples.paths("k0", "k3") is None


def test_wrong_sha256_is_not_kept_and_not_offered(server, tmp_path, monkeypatch, caplog):
    root, base = server
    (root / "h.jpg").write_bytes(b"tampered")
    _fake(monkeypatch, tmp_path, f"{base}/h.jpg", b"original")
    with caplog.at_level("WARNING", logger="engine.examples"):
        assert examples.prefetch() == {}
    folder = tmp_path / "cache" / "examples" / "set" / "testA"
    assert not any(folder.iterdir()) and "sha256" in caplog.text
    assert examples.path("horse") is None
    # a corrupted file that is already in the cache is not offered either
    (folder / "horse.jpg").write_bytes(b"tampered")
    assert examples.path("horse") is None


def test_offline_never_downloads_and_the_data_folder_comes_first(server, tmp_path, monkeypatch):
    root, base = server
    payload = b"payload"
    (root / "h.jpg").write_bytes(payload)
    _fake(monkeypatch, tmp_path, f"{base}/h.jpg", payload)
    monkeypatch.setenv("ENGINE_OFFLINE", "1")
    assert examples.prefetch() == {} and not (tmp_path / "cache" / "examples").exists()
    data = tmp_path / "data"
    (data / "set" / "testA").mkdir(parents=True)
    (data / "set" / "testA" / "horse.jpg").write_bytes(b"the user's own copy")
    monkeypatch.setenv("DATA_DIR", str(data))
    assert examples.path("horse") == data / "set" / "testA" / "horse.jpg"


def test_unreachable_server_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    import socket

    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _fake(monkeypatch, tmp_path, f"http://127.0.0.1:{port}/h.jpg", b"x")
    with caplog.at_level("WARNING", logger="engine.examples"):
        assert examples.prefetch(deadline_s=10) == {}
    assert "not downloaded" in caplog.text
