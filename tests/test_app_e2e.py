"""End-to-end: the app starts on loopback (random weights) and every tab answers through gradio_client."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402


@pytest.fixture(scope="module")
def client(running_app):
    return gradio_client.Client(running_app.url, verbose=False)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pics")
    rng = np.random.default_rng(1)
    paths = {}
    for name, (w, h) in {"a": (90, 70), "b": (64, 64), "odd": (75, 53)}.items():
        y, x = np.mgrid[0:h, 0:w]
        arr = np.stack([x * 255 // w, y * 255 // h, rng.integers(0, 255, (h, w))], -1).astype(np.uint8)
        paths[name] = folder / f"{name}.png"
        Image.fromarray(arr).save(paths[name])
    return paths


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


def test_app_starts_with_all_tabs_and_no_build_errors(running_app, client):
    print(f"cold start: {running_app.cold_start_s:.1f} s")
    log = running_app.log_path.read_text()
    assert "failed to build" not in log, log[-3000:]
    names = set(client.view_api(print_info=False, return_format="dict")["named_endpoints"])
    for endpoint in ("/stylize_image", "/translate_one", "/translate_gallery", "/translate_clip", "/stylize_video"):
        assert endpoint in names


def test_style_tab_endpoint(client, pictures):
    editor = {"background": handle_file(str(pictures["a"])), "layers": [], "composite": None, "id": None}
    out, info = client.predict(editor, None, False, handle_file(str(pictures["b"])), 1.0, None, 1.0, None, 1.0, None,
                               1.0, 1.0, False, 64, 64, api_name="/stylize_image")
    assert _size(out) == (64, 50)  # 90x70 shrunk to a max side of 64, aspect kept
    assert isinstance(info, str) and info


def test_translate_tab_endpoint_keeps_odd_sizes(client, pictures):
    pair, _plot, summary = client.predict(handle_file(str(pictures["odd"])), "gancompression-horse2zebra", 0,
                                          api_name="/translate_one")
    assert _size(pair[0]) == _size(pair[1]) == (75, 53)
    assert "75×53" in summary


def test_translate_tab_reports_bad_input_clearly(client, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(Exception) as err:
        client.predict(handle_file(str(bad)), "gancompression-horse2zebra", 0, api_name="/translate_one")
    assert any(s in str(err.value) for s in ("not an image", "could not be decoded", "cannot identify image file"))


def _first_usable_backend(client) -> str:
    info = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/match"]
    choices = info["parameters"][0]["python_type"]["type"]
    assert "classic" in choices or "gangealing" in choices
    return "classic" if "classic" in choices else "gangealing-celeba"


def test_correspondence_tab_endpoint(client, pictures):
    backend = _first_usable_backend(client)
    out = client.predict(backend, handle_file(str(pictures["a"])), handle_file(str(pictures["b"])), api_name="/match")
    view_a, view_b, conf = out[:3]
    assert _size(view_a) == (90, 70) and _size(view_b) == (64, 64) and _size(conf) == (90, 70)
    assert "Matched 90×70 → 64×64" in out[6]


def test_propagation_tab_endpoint(client, pictures, tmp_path):
    backend = _first_usable_backend(client)
    sticker = tmp_path / "sticker.png"
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[20:40, 20:40] = (255, 0, 0, 255)
    Image.fromarray(rgba, "RGBA").save(sticker)
    editor = {"background": handle_file(str(pictures["b"])), "layers": [], "composite": None, "id": None}
    gallery, note = client.predict(backend, editor, handle_file(str(sticker)), 1.0,
                                   [{"image": handle_file(str(pictures["a"])), "caption": None}],
                                   api_name="/propagate_images")
    assert len(gallery) == 1 and _size(gallery[0]["image"]) == (90, 70)
    assert note.startswith("Propagated to 1 image")


def test_every_long_job_has_a_cancel_button(monkeypatch):
    monkeypatch.setenv("ENGINE_RANDOM_WEIGHTS", "1")
    import app

    demo = app.build_app()
    names = {i: f.name for i, f in demo.fns.items()}
    cancelled = {names[j] for f in demo.fns.values() for j in (getattr(f, "cancels", None) or [])}
    assert {"stylize_video", "translate_gallery", "translate_clip", "propagate_images", "propagate_video"} <= cancelled
