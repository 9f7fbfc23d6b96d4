"""Weight resolution: configured folders, sha256 checks, safe loading and downloads (through file:// URLs)."""
from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path

import pytest
import torch

from engine import config, registry, weights
from engine.errors import WeightsCorruptError, WeightsMissingError


def test_every_model_names_manifest_files_and_a_builder():
    files = weights.manifest()
    used = set()
    for spec in registry.list_models():
        assert spec.files, spec.name
        for key in spec.files.values():
            assert key in files, f"{spec.name} uses {key!r}, which is not in the manifest"
            used.add(key)
        module, func = spec.builder.split(":")
        assert module.startswith("engine.models."), spec.builder
    used.add("fid-inception")  # read by engine/fid.py, not by a model of the registry
    assert used == set(files), f"manifest entries nothing uses: {set(files) - used}"


def test_manifest_entries_are_complete():
    for key, wf in weights.manifest().items():
        assert wf.path and not Path(wf.path).is_absolute(), key
        assert wf.license and wf.source, f"{key} needs a licence and a source"
        if wf.sha256:
            assert len(wf.sha256) == 64 and int(wf.sha256, 16) >= 0, key
        for url in wf.urls:
            assert url.startswith(("http://", "https://")), url


def test_missing_file_error_names_file_and_remedy_and_logs_the_folders(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("ENGINE_OFFLINE", "1")
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    with caplog.at_level("WARNING", logger="engine.weights"), pytest.raises(WeightsMissingError) as err:
        weights.resolve("adain-decoder")
    msg = str(err.value)
    assert "decoder.pth" in msg and "--weights-dir FOLDER" in msg and "FOLDER/adain/decoder.pth" in msg
    # whole and short in a browser: no server paths (they are in the log), no <...> that HTML would swallow
    assert str(tmp_path) not in msg and "/work" not in msg and "<" not in msg and len(msg) < 300, msg
    assert str(tmp_path) in caplog.text
    cut = weights.how_to_get(weights.entry("cut-horse2zebra"))
    assert "pretrained_models.tar, extract it" in cut and "checkpoints/horse2zebra_cut_pretrained/latest_net_G.pth" in cut
    assert weights.status("adain-decoder").state == "missing"


MESSAGE_LIMIT = 300  # characters: a toast or a notice line a user reads in one go


def _check_user_message(msg: str, *roots: Path) -> None:
    assert msg and "<" not in msg and len(msg) < MESSAGE_LIMIT, (len(msg), msg)
    assert not any(str(r) in msg for r in (*roots, config.REPO_ROOT)), msg
    assert not re.search(r"(?<![\w:/.])/(?:[\w.-]+/)+[\w.-]*", msg), f"absolute path in: {msg}"


def test_every_missing_checkpoint_message_is_whole_short_and_pathless(tmp_path, monkeypatch):
    """What a user reads in the browser for any file of the manifest and any model of the registry, missing or
    damaged: no <...> (eaten as HTML), no server path, under 300 characters (a new family's entry, `how` text
    included, cannot make it longer). Files shipped by a pip package count as missing here (package absent)."""
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.setenv("ENGINE_OFFLINE", "1")
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ENGINE_RANDOM_WEIGHTS", raising=False)
    monkeypatch.setattr(weights, "package_file", lambda wf: None)
    for key, wf in weights.manifest().items():
        assert weights.status(key).state == "missing", key
        _check_user_message(weights.status(key).message, tmp_path)
        with pytest.raises(WeightsMissingError) as err:
            weights.resolve(key)
        _check_user_message(str(err.value), tmp_path)
        assert "--weights-dir FOLDER" in str(err.value), str(err.value)
    for spec in registry.list_models():  # the model's own line: the worst file's steps, the others named
        st = registry.model_status(spec.name)
        assert st.state == "missing" and not st.usable
        _check_user_message(st.message, tmp_path)
        with pytest.raises(WeightsMissingError) as err:
            registry.load_model(spec.name, device="cpu")
        _check_user_message(str(err.value), tmp_path)
    adain = registry.model_status("adain").message  # two files: the second is named, not repeated
    assert "decoder.pth" in adain and adain.count("--weights-dir") == 1, adain
    for key, wf in weights.manifest().items():  # a wrong file where the official one belongs
        if not wf.sha256:
            continue
        bad = tmp_path / "w" / wf.path
        bad.parent.mkdir(parents=True, exist_ok=True)
        bad.write_bytes(b"not it")
        with pytest.raises(WeightsCorruptError) as err:
            weights.resolve(key)
        _check_user_message(str(err.value), tmp_path)
        _check_user_message(weights.status(key).message, tmp_path)
    for spec in registry.list_models():
        st = registry.model_status(spec.name)
        if st.state == "corrupt":
            _check_user_message(st.message, tmp_path)


def _fake_manifest(tmp_path: Path, monkeypatch, payload: bytes, sha: str | None = None, urls=()):
    wf = weights.WeightFile(key="fake", path="fake/model.pth", urls=tuple(urls),
                            sha256=hashlib.sha256(payload).hexdigest() if sha is None else sha,
                            license="test", source="test")
    monkeypatch.setattr(weights, "manifest", lambda path=None: {"fake": wf})
    return wf


def test_sha256_mismatch_is_refused(tmp_path, monkeypatch):
    good = b"official bytes"
    _fake_manifest(tmp_path, monkeypatch, good)
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "model.pth").write_bytes(b"tampered bytes")
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    with pytest.raises(WeightsCorruptError, match="sha256"):
        weights.resolve("fake")
    assert weights.status("fake").state == "corrupt"
    (tmp_path / "fake" / "model.pth").write_bytes(good)
    os.utime(tmp_path / "fake" / "model.pth", ns=(1, 1))  # new mtime: the cached digest must not be reused
    assert weights.resolve("fake") == tmp_path / "fake" / "model.pth"
    assert weights.status("fake").state == "ready"


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickle_payload_is_refused_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        pickle.dump({"weight": _Payload()}, fh)
    with pytest.raises(WeightsCorruptError, match="Refused"):
        weights.load_state_dict(path)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_torch_save_payload_is_refused(tmp_path):
    path = tmp_path / "evil_zip.pth"
    torch.save({"conv.weight": torch.zeros(1), "extra": _Payload()}, path)
    with pytest.raises(WeightsCorruptError):
        weights.load_state_dict(path)


def test_plain_state_dict_loads_and_non_dict_is_refused(tmp_path):
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(2)}, good)
    assert torch.equal(weights.load_state_dict(good)["w"], torch.ones(2))
    bad = tmp_path / "list.pth"
    torch.save([torch.ones(1)], bad)
    with pytest.raises(WeightsCorruptError, match="not a state dict"):
        weights.load_state_dict(bad)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsCorruptError):
        weights.load_state_dict(junk)


def test_download_goes_through_temp_file_sha_check_and_rename(tmp_path, monkeypatch):
    payload = os.urandom(3000)
    src = tmp_path / "server" / "model.pth"
    src.parent.mkdir()
    src.write_bytes(payload)
    wf = _fake_manifest(tmp_path, monkeypatch, payload, urls=[src.as_uri()])
    cache = tmp_path / "cache"
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(cache))
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("ENGINE_OFFLINE", raising=False)
    assert weights.status("fake").state == "downloadable"
    seen = []
    path = weights.resolve("fake", progress=lambda f, d: seen.append(f))
    assert path == cache / wf.path and path.read_bytes() == payload
    assert seen and seen[-1] == pytest.approx(1.0)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".part-")]


def test_download_with_wrong_digest_leaves_nothing_behind(tmp_path, monkeypatch):
    src = tmp_path / "model.pth"
    src.write_bytes(b"not the official file")
    wf = _fake_manifest(tmp_path, monkeypatch, b"official", urls=[src.as_uri()])
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.delenv("ENGINE_OFFLINE", raising=False)
    with pytest.raises(WeightsCorruptError):
        weights.resolve("fake")
    folder = tmp_path / "cache" / Path(wf.path).parent
    assert not folder.exists() or not any(folder.iterdir())


def test_offline_mode_never_downloads(tmp_path, monkeypatch):
    src = tmp_path / "model.pth"
    src.write_bytes(b"x")
    _fake_manifest(tmp_path, monkeypatch, b"x", urls=[src.as_uri()])
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path / "empty"))
    monkeypatch.setenv("ENGINE_OFFLINE", "1")
    with pytest.raises(WeightsMissingError, match="downloads are off"):
        weights.resolve("fake")
    assert not (tmp_path / "cache").exists()


def test_real_gan_compression_checkpoint_resolves_and_verifies(shared_weights, monkeypatch):
    monkeypatch.setenv("WEIGHTS_DIR", str(shared_weights))
    path = weights.resolve("gancompression-horse2zebra")
    assert path.stat().st_size == weights.entry("gancompression-horse2zebra").size
    state = weights.load_state_dict(path)
    assert sum(t.numel() for t in state.values()) == 356_867


def test_model_status_reports_without_building(monkeypatch, tmp_path):
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("ENGINE_OFFLINE", "1")
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    st = registry.model_status("adain")
    assert not st.usable and st.state == "missing" and "vgg_normalised.pth" in st.message
    monkeypatch.setenv("ENGINE_RANDOM_WEIGHTS", "1")
    assert registry.model_status("adain").usable


def test_manifest_with_an_unknown_field_is_refused_by_name(tmp_path):
    bad = tmp_path / "manifest.toml"
    bad.write_text('[files.x]\npath = "x.pth"\nconverter = "a:b"\n')
    with pytest.raises(ValueError, match="converter"):
        weights.manifest(bad)
