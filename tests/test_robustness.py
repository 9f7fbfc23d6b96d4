"""Holding up under bad input, load, faults and hostile requests (the app runs in-process, random weights).

Every check talks to a live server on loopback through gradio_client or plain HTTP; request loops are bounded.
"""
from __future__ import annotations

import json
import os
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import handle_file  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from corpus import EXPECT_ERROR, make_corpus  # noqa: E402
from loopback import live_app  # noqa: E402

UPLOAD_LIMIT_MB = 2
ENV = {"ENGINE_RANDOM_WEIGHTS": "1", "ENGINE_OFFLINE": "1", "ENGINE_DEVICE": "cpu",
       "ENGINE_MAX_UPLOAD_MB": str(UPLOAD_LIMIT_MB), "GRADIO_ANALYTICS_ENABLED": "False"}
MODEL = "gancompression-horse2zebra"


@pytest.fixture(scope="module")
def live():
    with live_app(ENV) as (url, demo):
        yield SimpleNamespace(url=url, demo=demo, client=gradio_client.Client(url + "/", verbose=False))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _alive(url: str) -> bool:
    with urllib.request.urlopen(url + "/", timeout=10) as r:
        return r.status == 200


def _picture(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def _image_endpoints(style_path: Path):
    """(name, function calling the endpoint with one image file) for every tab that takes an image."""
    def translate(client, f):
        return client.predict(handle_file(f), MODEL, 256, api_name="/translate_one")

    def stylize(client, f):
        editor = {"background": handle_file(f), "layers": [], "composite": None, "id": None}
        return client.predict(editor, None, False, handle_file(str(style_path)), 1.0, None, 1.0, None, 1.0, None, 1.0,
                              1.0, False, 64, 64, api_name="/stylize_image")

    def stylize_as_style(client, f):
        editor = {"background": handle_file(str(style_path)), "layers": [], "composite": None, "id": None}
        return client.predict(editor, None, False, handle_file(f), 1.0, None, 1.0, None, 1.0, None, 1.0,
                              1.0, False, 64, 64, api_name="/stylize_image")

    def backend(client) -> str:
        choices = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/match"]
        names = choices["parameters"][0]["python_type"]["type"]
        return "classic" if "classic" in names else "gangealing-celeba"

    def match(client, f):
        return client.predict(backend(client), handle_file(f), handle_file(str(style_path)), api_name="/match")

    def propagate(client, f):
        editor = {"background": handle_file(str(style_path)), "layers": [], "composite": None, "id": None}
        return client.predict(backend(client), editor, handle_file(f), 1.0,
                              [{"image": handle_file(f), "caption": None}], api_name="/propagate_images")

    return [("translate", translate), ("stylize-content", stylize), ("stylize-style", stylize_as_style),
            ("correspondence", match), ("propagation", propagate)]


def test_bad_input_corpus_gets_clear_errors_or_results(live, corpus, tmp_path):
    style = _picture(tmp_path / "style.png")
    tried = 0
    outcomes = {}
    for name, (path, kind) in corpus.items():
        if kind != "image":
            continue
        for endpoint, call in _image_endpoints(style):
            tried += 1
            try:
                call(live.client, str(path))
                outcomes[(name, endpoint)] = "ok"
            except Exception as exc:  # noqa: BLE001 - inspected below
                msg = str(exc)
                outcomes[(name, endpoint)] = "error: " + msg[:120]
                assert "Internal error" not in msg and "Traceback" not in msg, (name, endpoint, msg)
                assert len(msg) > 15, (name, endpoint, msg)
            assert _alive(live.url), f"server down after {name} -> {endpoint}"
    for (name, endpoint), outcome in outcomes.items():
        if name in EXPECT_ERROR:
            assert outcome.startswith("error"), (name, endpoint, outcome)
        if name in {"sixteen_bit.png", "cmyk.jpg", "palette_transparent.png", "animated.gif", "greyscale.jpg",
                    "rgba.png", "exif_rotated.jpg"}:
            assert outcome == "ok", (name, endpoint, outcome)
    print(f"\nbad-input corpus: {tried} image requests, "
          f"{sum(o == 'ok' for o in outcomes.values())} results, {sum(o != 'ok' for o in outcomes.values())} clear errors")


def test_bad_input_corpus_through_the_python_api(corpus, random_weights):
    """The same corpus through the engine's Python API: a result or an EngineError, nothing else."""
    from engine.errors import EngineError
    from engine.pipelines import translate

    style_ok = 0
    for name, (path, kind) in corpus.items():
        if kind != "image":
            continue
        try:
            out = translate.translate(str(path), MODEL, max_side=256)
            assert out.ndim == 3 and out.shape[2] == 3
            style_ok += 1
        except EngineError as exc:
            assert name not in {"cmyk.jpg", "rgba.png", "sixteen_bit.png", "exif_rotated.jpg"}, (name, exc)
    assert style_ok >= 7


def test_bad_videos_get_clear_errors(live, corpus, tmp_path):
    style = _picture(tmp_path / "style.png")
    for name in ("no_frames.mp4", "audio_only.mp4", "fake_video.mp4", "not_an_image.png"):
        path = str(corpus[name][0])
        calls = [lambda: live.client.predict(handle_file(path), MODEL, 64, 2, api_name="/translate_clip"),
                 lambda: live.client.predict(handle_file(path), handle_file(str(style)), 1.0, None, 1.0, None, 1.0,
                                             None, 1.0, 1.0, False, 64, 64, 2, 0.0, api_name="/stylize_video")]
        for call in calls:
            with pytest.raises(Exception) as err:
                call()
            msg = str(err.value)
            assert any(s in msg for s in ("video", "decod", "frames", "could not")), (name, msg)
            assert "Internal error" not in msg
        assert _alive(live.url)


def test_tampered_and_pickled_checkpoints_are_refused(corpus, tmp_path, monkeypatch):
    from engine import registry, weights
    from engine.errors import WeightsCorruptError

    folder = tmp_path / "w" / "gan-compression-horse2zebra"
    folder.mkdir(parents=True)
    (folder / "latest_net_G.pth").write_bytes(corpus["tampered.pth"][0].read_bytes())
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.delenv("ENGINE_RANDOM_WEIGHTS", raising=False)
    st = registry.model_status(MODEL)
    assert not st.usable and st.state == "corrupt" and "sha256" in st.message
    with pytest.raises(WeightsCorruptError):
        weights.resolve("gancompression-horse2zebra")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(WeightsCorruptError, match="Refused"):
        weights.load_state_dict(corpus["pickle_payload.pth"][0])
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_concurrent_users_all_finish_and_the_engine_is_serialised(live, tmp_path):
    from engine import queue

    users, per_user = 10, 5  # 50 requests in all, mixed tabs
    pics = [_picture(tmp_path / f"p{i}.png", 48 + 8 * (i % 3), 40, seed=i) for i in range(users)]
    style = _picture(tmp_path / "style.png", 48, 48, seed=99)
    queue.stats.reset()
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()

    def user(i: int) -> None:
        client = gradio_client.Client(live.url + "/", verbose=False)
        w = 48 + 8 * (i % 3)
        for j in range(per_user):
            start = time.perf_counter()
            try:
                if (i + j) % 2 == 0:
                    pair, _plot, _ = client.predict(handle_file(str(pics[i])), MODEL, 0, api_name="/translate_one")
                    ok = Image.open(pair[1]).size == (w, 40)
                else:
                    editor = {"background": handle_file(str(pics[i])), "layers": [], "composite": None, "id": None}
                    out, _ = client.predict(editor, None, False, handle_file(str(style)), 1.0, None, 1.0, None, 1.0,
                                            None, 1.0, 1.0, False, 0, 48, api_name="/stylize_image")
                    ok = Image.open(out).size == (w, 40)
                if not ok:
                    raise AssertionError("wrong output size")
            except Exception as exc:  # noqa: BLE001 - collected
                with lock:
                    failures.append(f"user {i} request {j}: {exc}")
            with lock:
                latencies.append(time.perf_counter() - start)

    started = time.perf_counter()
    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, range(users)))
    wall = time.perf_counter() - started
    assert not failures, failures[:5]
    assert len(latencies) == users * per_user
    assert queue.stats.max_active == 1, "two engine jobs overlapped"
    assert queue.stats.jobs >= users * per_user
    p50, p95 = statistics.median(latencies), float(np.percentile(latencies, 95))
    print(f"\nload: {users * per_user} requests from {users} concurrent users in {wall:.1f} s; "
          f"latency p50 {p50:.2f} s, p95 {p95:.2f} s; engine jobs {queue.stats.jobs}, max overlap {queue.stats.max_active}")


def test_a_failing_or_out_of_memory_model_fails_only_that_request(live, tmp_path, monkeypatch):
    import torch

    import engine.pipelines.translate as T

    pic = str(_picture(tmp_path / "x.png"))
    real = T.run_generator
    for error, needle in ((torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), "Out of memory"),
                          (RuntimeError("kaboom"), "kaboom")):
        calls = []

        def failing_once(*args, _error=error, **kwargs):
            calls.append(1)
            if len(calls) == 1:
                raise _error
            return real(*args, **kwargs)

        monkeypatch.setattr(T, "run_generator", failing_once)
        with pytest.raises(Exception, match=needle):
            live.client.predict(handle_file(pic), MODEL, 0, api_name="/translate_one")
        pair, _, _ = live.client.predict(handle_file(pic), MODEL, 0, api_name="/translate_one")
        assert Image.open(pair[1]).size == (64, 48)
    monkeypatch.setattr(T, "run_generator", real)


def test_cancelling_a_video_job_stops_it_and_frees_the_queue(live, tmp_path):
    from engine import queue, videoio

    video = tmp_path / "long.mp4"
    with videoio.VideoWriter(video, fps=50) as w:
        y, x = np.mgrid[0:128, 0:128]
        for i in range(500):  # smooth moving gradients: long but small (the test app limits uploads to 2 MB)
            w.write(np.stack([(x + i) % 256, (y + 2 * i) % 256, (x + y) % 256], -1).astype(np.uint8))
    queue.stats.reset()
    job = live.client.submit(handle_file(str(video)), MODEL, 128, 10, api_name="/translate_clip")
    deadline = time.monotonic() + 60
    while queue.stats.jobs < 3 and time.monotonic() < deadline and not job.done():
        time.sleep(0.1)
    assert not job.done(), f"the video job ended early: {job.exception()}"
    assert queue.stats.jobs >= 3, f"the video job never started ({job.status().code})"
    job.cancel()
    # The worker stops at its next progress report: at once when Gradio closes the generator, at the latest
    # ABANDONED_AFTER_S after Gradio stopped resuming it.
    from demos.common import ABANDONED_AFTER_S

    deadline = time.monotonic() + ABANDONED_AFTER_S + 10
    previous = -1
    while time.monotonic() < deadline:
        time.sleep(1.5)
        if queue.stats.jobs == previous:
            break
        previous = queue.stats.jobs
    assert queue.stats.jobs == previous, "the cancelled job is still running engine work"
    assert previous < 100, "the job ran (nearly) to the end instead of stopping"  # 500 frames = 125 batches
    start = time.perf_counter()
    pair, _, _ = live.client.predict(handle_file(str(_picture(tmp_path / "y.png"))), MODEL, 0, api_name="/translate_one")
    assert Image.open(pair[1]).size == (64, 48) and time.perf_counter() - start < 30


def _http(url: str, data: bytes | None = None, headers: dict | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_files_outside_the_allowed_folders_cannot_be_read(live):
    secret = Path(os.environ.get("WEIGHTS_DIR", "/etc")).resolve()
    targets = ["/etc/passwd", "../../../../etc/passwd", "%2Fetc%2Fpasswd", str(Path(__file__).resolve()),
               str(secret / "gan-compression-horse2zebra" / "latest_net_G.pth")]
    for target in targets:
        status, body = _http(f"{live.url}/gradio_api/file={target}")
        assert status in (403, 404), (target, status)
        assert b"root:" not in body
    # A file input that names a server path instead of an upload is refused before the handler runs.
    body = json.dumps({"data": [{"path": "/etc/passwd", "meta": {"_type": "gradio.FileData"}}, MODEL, 0]}).encode()
    status, raw = _http(f"{live.url}/gradio_api/call/translate_one", body, {"Content-Type": "application/json"})
    assert status == 200
    event = json.loads(raw)["event_id"]
    status, stream = _http(f"{live.url}/gradio_api/call/translate_one/{event}")
    assert b"event: error" in stream and b"root:" not in stream


def test_uploads_are_size_limited(live):
    boundary = uuid.uuid4().hex
    data = os.urandom((UPLOAD_LIMIT_MB + 1) * 1024 * 1024)
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    status, _ = _http(f"{live.url}/gradio_api/upload", body,
                      {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 413
    assert _alive(live.url)
