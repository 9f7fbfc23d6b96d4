"""Issue 12's hostile corpus (tests/corpus.py: HOSTILE_IMAGES, HOSTILE_VIDEOS) into every image and video slot of the
app through gradio_client, on one in-process server with random weights.

Each request must end in a result or a clear message (not a bare "Error", no traceback, no "Internal error", no
server path), the server must answer after each, and nothing the corpus does may be logged as an internal error.
Also: a job that crashes in native code (the optical-flow worker dies) fails alone; the next request is served.
"""
from __future__ import annotations

import logging
import re
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from corpus import HOSTILE_IMAGES, HOSTILE_VIDEOS, make_hostile_corpus  # noqa: E402
from loopback import live_app  # noqa: E402

ENV = {"ENGINE_RANDOM_WEIGHTS": "1", "ENGINE_OFFLINE": "1", "ENGINE_DEVICE": "cpu", "GRADIO_ANALYTICS_ENABLED": "False",
       "ENGINE_ISOLATE_NATIVE": "1"}
MODEL = "gancompression-horse2zebra"
ABSOLUTE_PATH = re.compile(r"(?<![\w.:/])/(?:tmp|work|home|root|usr|etc|var|private|Users|srv|opt|mnt)\b")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with live_app(ENV) as (url, _demo):
        yield url, gradio_client.Client(url + "/", verbose=False)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    good = folder / "good.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(good)
    sticker = np.zeros((48, 64, 4), np.uint8)
    sticker[10:30, 20:44] = (255, 40, 40, 220)
    Image.fromarray(sticker, "RGBA").save(folder / "sticker.png")
    return {"good": str(good), "sticker": str(folder / "sticker.png"),
            **{k: str(v) for k, v in make_hostile_corpus(folder).items()}}


def _skipped(note: str) -> str:
    """Galleries skip unreadable images and say so in their note: that note is the message."""
    if "skipped" in note.lower():
        raise RuntimeError(note)
    return note


def _editor(path):
    return {"background": handle_file(path), "layers": [], "composite": None, "id": None}


def _styles(first, second=None):
    return [first, 1.0, second, 1.0, None, 1.0, None, 1.0]


def _upload(url: str, path: str) -> dict:
    import json
    import uuid

    boundary = uuid.uuid4().hex
    name = Path(path).name
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + Path(path).read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(url + "/gradio_api/upload", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        server_path = json.loads(r.read())[0]
    return {"path": server_path, "orig_name": name, "meta": {"_type": "gradio.FileData"}}


def _stream_call(client, api_name: str, *data):
    """One call of a streaming (webcam) event over Gradio's HTTP API (gradio_client cannot read streaming replies).
    Raises with the server's message on an error event."""
    import json

    url = client.src.rstrip("/")
    data = [_upload(url, d) if isinstance(d, str) and Path(d).is_file() else d for d in data]
    req = urllib.request.Request(f"{url}/gradio_api/call{api_name}", data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        event = json.loads(r.read())["event_id"]
    with urllib.request.urlopen(f"{url}/gradio_api/call{api_name}/{event}", timeout=120) as r:
        kind = None
        for raw in r:  # the stream stays open while the webcam "streams": read up to the first reply, then close
            line = raw.decode().strip()
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind in ("error", "complete", "generating"):
                payload = json.loads(line.split(":", 1)[1].strip())
                if kind == "error":
                    raise RuntimeError(payload.get("error") if isinstance(payload, dict) else payload)
                return payload
    raise AssertionError(f"no reply from {api_name}")


def image_slots(f):
    """slot name -> call(client, path) for every input of the app that takes an image."""
    good, style, sticker = f["good"], handle_file(f["good"]), handle_file(f["sticker"])
    gallery = lambda p: [{"image": handle_file(p), "caption": None}]  # noqa: E731
    return {
        "translate image": lambda c, p: c.predict(handle_file(p), MODEL, 64, api_name="/translate_one"),
        "translate gallery": lambda c, p: _skipped(c.predict(gallery(p), MODEL, 64, api_name="/translate_gallery")[-1]),
        "style content editor": lambda c, p: c.predict(_editor(p), None, False, *_styles(style), 1.0, False, 64, 64,
                                                       api_name="/stylize_image"),
        "style mask": lambda c, p: c.predict(_editor(good), handle_file(p), True, *_styles(style, style), 1.0, False,
                                             64, 64, api_name="/stylize_image"),
        "style image": lambda c, p: c.predict(_editor(good), None, False, *_styles(handle_file(p)), 1.0, False, 64, 64,
                                              api_name="/stylize_image"),
        "style webcam frame": lambda c, p: _stream_call(c, "/stylize_webcam_frame", p, *_styles(_upload(
            c.src.rstrip("/"), good)), 1.0, False, 64, 64, 0.0, None, "adain"),
        "match image A": lambda c, p: c.predict("classic", handle_file(p), handle_file(good), api_name="/match"),
        "match image B": lambda c, p: c.predict("classic", handle_file(good), handle_file(p), api_name="/match"),
        "congeal image": lambda c, p: c.predict(handle_file(p), "gangealing-cat", 128, True, api_name="/congeal"),
        "propagation reference": lambda c, p: c.predict("classic", _editor(p), sticker, 0.9, gallery(good),
                                                        api_name="/propagate_images"),
        "propagation sticker": lambda c, p: c.predict("classic", _editor(good), handle_file(p), 0.9, gallery(good),
                                                      api_name="/propagate_images"),
        "propagation targets": lambda c, p: _skipped(c.predict("classic", _editor(good), sticker, 0.9, gallery(p),
                                                               api_name="/propagate_images")[-1]),
        "propagation webcam frame": lambda c, p: _stream_call(c, "/propagate_webcam_frame", p, 128),
        "propagation capture": lambda c, p: c.predict(handle_file(p), api_name="/capture"),
    }


def video_slots(f):
    style, sticker = handle_file(f["good"]), handle_file(f["sticker"])
    return {
        "translate video": lambda c, p: c.predict(handle_file(p), MODEL, 64, 2, api_name="/translate_clip"),
        "style video": lambda c, p: c.predict(handle_file(p), *_styles(style), 1.0, False, 64, 64, 2, 0.0,
                                              api_name="/stylize_video"),
        "propagation video": lambda c, p: c.predict("classic", _editor(f["good"]), sticker, 0.9, handle_file(p), 2,
                                                    api_name="/propagate_video"),
        "propagation first frame": lambda c, p: c.predict(handle_file(p), api_name="/first_frame"),
    }


def _alive(url: str) -> bool:
    with urllib.request.urlopen(url + "/", timeout=20) as r:
        return r.status == 200


def _check_message(msg: str, where) -> None:
    assert len(msg) > 15 and msg.strip().lower() not in {"error", "none"}, (where, msg)
    assert "Traceback" not in msg and "Internal error" not in msg, (where, msg)
    assert not ABSOLUTE_PATH.search(msg), (where, msg)
    assert "<" not in msg, (where, msg)


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


@pytest.mark.slow
def test_hostile_corpus_into_every_image_and_video_slot(server, files, capfd):
    url, client = server
    errors = _Records()
    logging.getLogger().addHandler(errors)
    outcomes: dict[tuple[str, str], str] = {}
    start = time.perf_counter()
    try:
        for kinds, slots in ((HOSTILE_IMAGES, image_slots(files)), (HOSTILE_VIDEOS, video_slots(files))):
            for name in kinds:
                for slot, call in slots.items():
                    try:
                        call(client, files[name])
                        outcomes[(name, slot)] = "result"
                    except Exception as exc:  # noqa: BLE001 - inspected
                        msg = str(exc)
                        _check_message(msg, (name, slot))
                        outcomes[(name, slot)] = "message: " + msg
                    assert _alive(url), f"server down after {name} -> {slot}"
    finally:
        logging.getLogger().removeHandler(errors)
    seconds = time.perf_counter() - start
    internal = [r for r in errors.records if r.levelno >= logging.ERROR or r.exc_info]
    assert not internal, [r.getMessage()[:300] for r in internal]
    assert "Traceback" not in capfd.readouterr().err
    expected = {**HOSTILE_IMAGES, **HOSTILE_VIDEOS}
    wrong = [(n, s, o[:160]) for (n, s), o in outcomes.items()
             if (expected[n] == "ok" and o != "result") or (expected[n] == "error" and o == "result")]
    assert not wrong, wrong
    results = sum(o == "result" for o in outcomes.values())
    n_img, n_vid = len(HOSTILE_IMAGES) * len(image_slots(files)), len(HOSTILE_VIDEOS) * len(video_slots(files))
    print(f"\nhostile corpus: {len(HOSTILE_IMAGES)} images x {len(image_slots(files))} image slots + "
          f"{len(HOSTILE_VIDEOS)} videos x {len(video_slots(files))} video slots = {n_img + n_vid} requests in "
          f"{seconds:.0f} s: {results} results, {len(outcomes) - results} clear messages, 0 server deaths, "
          f"0 internal errors, 0 paths")
    for name in expected:
        row = [o for (n, _), o in outcomes.items() if n == name]
        print(f"  {name:28s} {sum(o == 'result' for o in row):2d} results, {sum(o != 'result' for o in row):2d} messages"
              f"  e.g. {next((o[9:110] for o in row if o != 'result'), '')}")


def test_a_job_crashing_in_native_code_leaves_the_server_serving(server, files, monkeypatch):
    from engine import native
    from engine.correspondence import video

    url, client = server
    clip = files["truncated_faststart.mp4"]
    args = ("classic", _editor(files["good"]), handle_file(files["sticker"]), 0.9, handle_file(clip), 1)
    crashes = native.worker.crashes
    monkeypatch.setattr(video.OpticalFlow, "__call__", lambda self, a, b, init=None: native.call("crash"))
    with pytest.raises(Exception, match="crashed in native code") as err:
        client.predict(*args, api_name="/propagate_video")
    _check_message(str(err.value), "native crash")
    assert native.worker.crashes == crashes + 1
    assert _alive(url)
    monkeypatch.undo()
    out, note = client.predict(*args, api_name="/propagate_video")  # the next job runs in a fresh worker
    assert Path(out).is_file() and "frames" in note
