"""Downloads from mirrors and from a shared tar archive, against local HTTP servers on 127.0.0.1 only."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import os
import tarfile
import threading
from pathlib import Path

import pytest

from engine import weights
from engine.errors import WeightsCorruptError, WeightsMissingError


class _Server:
    """A loopback HTTP server: ``files`` maps a URL path to bytes; ``status`` forces an error code; counts hits."""

    def __init__(self, files: dict[str, bytes] | None = None, status: int | None = None):
        self.files, self.status, self.hits = dict(files or {}), status, []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server API)
                outer.hits.append(self.path)
                body = outer.files.get(self.path)
                if outer.status or body is None:
                    self.send_error(outer.status or 404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


@pytest.fixture
def servers():
    made = []

    def make(*args, **kwargs):
        made.append(_Server(*args, **kwargs))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def online(tmp_path, monkeypatch):
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("ENGINE_OFFLINE", raising=False)
    return tmp_path / "cache"


def _use(monkeypatch, *entries: weights.WeightFile) -> None:
    table = {e.key: e for e in entries}
    monkeypatch.setattr(weights, "manifest", lambda path=None: table)


def _no_part_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".part-*")]


def test_the_gan_compression_entry_lists_the_current_official_host_first():
    urls = weights.entry("gancompression-horse2zebra").urls
    path = "pretrained/cycle_gan/horse2zebra/compressed/latest_net_G.pth"
    assert urls[0] == "https://huggingface.co/mit-han-lab/gan-compression/resolve/main/" + path
    assert len(urls) >= 2 and all(u.endswith(path) for u in urls)
    assert "https://hanlab.mit.edu/files/gan_compression/" + path in urls


def test_a_failing_first_mirror_falls_back_to_the_second(servers, online, monkeypatch):
    payload = os.urandom(5000)
    broken, good = servers(status=503), servers({"/m/g.pth": payload})
    wf = weights.WeightFile(key="g", path="g/latest_net_G.pth", urls=(broken.url("/m/g.pth"), good.url("/m/g.pth")),
                            sha256=hashlib.sha256(payload).hexdigest(), license="t", source="t")
    _use(monkeypatch, wf)
    path = weights.resolve("g")
    assert path.read_bytes() == payload
    assert broken.hits == ["/m/g.pth"] and good.hits == ["/m/g.pth"]   # tried in order, each once
    assert _no_part_files(online)


def test_a_mirror_serving_other_bytes_is_skipped_and_never_installed(servers, online, monkeypatch, caplog):
    payload = os.urandom(4000)
    liar, good = servers({"/g.pth": b"not the official file"}), servers({"/g.pth": payload})
    wf = weights.WeightFile(key="g", path="g/latest_net_G.pth", urls=(liar.url("/g.pth"), good.url("/g.pth")),
                            sha256=hashlib.sha256(payload).hexdigest(), license="t", source="t")
    _use(monkeypatch, wf)
    assert weights.resolve("g").read_bytes() == payload
    # only liars: refused as corrupt (short message), each mirror's refusal logged, nothing left in the cache
    only_liar = dataclasses.replace(wf, key="h", path="h/latest_net_G.pth", urls=(liar.url("/g.pth"),) * 2)
    _use(monkeypatch, only_liar)
    caplog.clear()
    with pytest.raises(WeightsCorruptError, match="sha256"):
        weights.resolve("h")
    assert sum(liar.url("/g.pth") in r.getMessage() for r in caplog.records) == 2
    assert not (online / "h").exists() or not any((online / "h").iterdir())


def test_every_mirror_down_is_a_missing_error_each_tried_once(servers, online, monkeypatch, caplog):
    a, b = servers(status=404), servers(status=500)
    wf = weights.WeightFile(key="g", path="g/x.pth", urls=(a.url("/x"), b.url("/x")), license="t", source="t")
    _use(monkeypatch, wf)
    with pytest.raises(WeightsMissingError):
        weights.resolve("g")
    assert a.hits == ["/x"] and b.hits == ["/x"]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert a.url("/x") in logged and b.url("/x") in logged


# ---- the CUT archive: one download for both entries ----------------------------------------------------------

MEMBERS = [f"{task}_{kind}_pretrained" for task in ("cat2dog", "cityscapes", "horse2zebra") for kind in ("cut", "fastcut")]


def _official_like_tar(prefix: str = "") -> tuple[bytes, dict[str, bytes]]:
    """A tar with the layout of CUT's pretrained_models.tar: checkpoints/<name>_pretrained/latest_net_{G,D,F}.pth
    for six models (folders as their own entries, as ``tar -cf`` writes them); payloads random."""
    buf, contents = io.BytesIO(), {}
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add_dir(name):
            info = tarfile.TarInfo(prefix + name)
            info.type = tarfile.DIRTYPE
            tar.addfile(info)

        add_dir("checkpoints")
        for model in MEMBERS:
            add_dir(f"checkpoints/{model}")
            for net in ("G", "D", "F"):
                name = f"checkpoints/{model}/latest_net_{net}.pth"
                data = os.urandom(1500 + len(contents))
                contents[name] = data
                info = tarfile.TarInfo(prefix + name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue(), contents


@pytest.mark.parametrize("prefix", ["", "./"], ids=["plain", "dot-slash"])
def test_cut_and_fastcut_share_one_archive_download(servers, online, monkeypatch, prefix):
    blob, contents = _official_like_tar(prefix)
    server = servers({"/CUT/pretrained_models.tar": blob})
    url = (server.url("/CUT/pretrained_models.tar"),)
    cut = dataclasses.replace(weights.entry("cut-horse2zebra"), urls=url)
    fast = dataclasses.replace(weights.entry("fastcut-horse2zebra"), urls=url)
    assert cut.archive_member == "checkpoints/horse2zebra_cut_pretrained/latest_net_G.pth"
    _use(monkeypatch, cut, fast)
    assert [w.key for w in weights.archive_siblings(cut)] == ["cut-horse2zebra", "fastcut-horse2zebra"]
    p_cut = weights.resolve("cut-horse2zebra")
    p_fast = weights.resolve("fastcut-horse2zebra")
    assert server.hits == ["/CUT/pretrained_models.tar"]          # one download served both entries
    assert p_cut.read_bytes() == contents[cut.archive_member]
    assert p_fast.read_bytes() == contents[fast.archive_member]
    assert p_cut != p_fast and weights.status("fastcut-horse2zebra").state == "unverified"
    assert not (online / weights.ARCHIVE_DIR).exists() or not any((online / weights.ARCHIVE_DIR).iterdir())
    assert _no_part_files(online)


def test_an_archive_without_the_member_says_what_it_has(servers, online, monkeypatch):
    blob, _ = _official_like_tar("pretrained_models/")   # packed from a parent folder: still found by suffix
    server = servers({"/a.tar": blob})
    cut = dataclasses.replace(weights.entry("cut-horse2zebra"), urls=(server.url("/a.tar"),))
    wrong = dataclasses.replace(cut, key="wrong", path="wrong/latest_net_G.pth",
                                archive_member="checkpoints/zebra2horse_cut_pretrained/latest_net_G.pth")
    _use(monkeypatch, cut, wrong)
    assert weights.resolve("cut-horse2zebra").is_file()
    with pytest.raises(WeightsCorruptError, match="not in the archive") as err:
        weights.resolve("wrong")
    assert "horse2zebra_cut_pretrained/latest_net_G.pth" in str(err.value)


def test_member_lookup_refuses_links_and_ambiguity():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("checkpoints/horse2zebra_cut_pretrained/latest_net_G.pth")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
        for top in ("a", "b"):
            info = tarfile.TarInfo(f"{top}/x/latest_net_G.pth")
            info.size = 1
            tar.addfile(info, io.BytesIO(b"1"))
    buf.seek(0)
    with tarfile.open(fileobj=buf) as tar:
        index = weights._member_index(tar)
    with pytest.raises(WeightsCorruptError, match="regular file"):
        weights.find_member(index, "./checkpoints//horse2zebra_cut_pretrained/latest_net_G.pth")
    with pytest.raises(WeightsCorruptError, match="several"):
        weights.find_member(index, "x/latest_net_G.pth")


def test_real_gan_compression_checkpoint_through_the_fallback_mirror(servers, online, monkeypatch, shared_weights):
    real = shared_weights / "gan-compression-horse2zebra" / "latest_net_G.pth"
    if not real.is_file():
        pytest.skip("the real GAN Compression checkpoint is not in the weights folder")
    official = weights.entry("gancompression-horse2zebra")
    path = "/mit-han-lab/gan-compression/resolve/main/pretrained/cycle_gan/horse2zebra/compressed/latest_net_G.pth"
    down, mirror = servers(status=502), servers({path: real.read_bytes()})
    _use(monkeypatch, dataclasses.replace(official, urls=(down.url(path), mirror.url(path))))
    got = weights.resolve("gancompression-horse2zebra")
    assert got.parent.parent == online and weights.sha256_file(got) == official.sha256
    assert weights.status("gancompression-horse2zebra").state == "ready"
    assert len(down.hits) == 1 and len(mirror.hits) == 1
