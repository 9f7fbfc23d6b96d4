"""Scale-out: the engine client on a Ray Serve application, and the batch CLI on Ray Data (engine/serve.py,
engine/client.py, engine/ray_batch.py).

One small local Ray instance for the whole module (2 CPUs, 200 MB object store, no dashboard), started and stopped
here; replicas use random weights on CPU, except the Ray Data test, which uses the real checkpoint when present.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from loopback import env_settings  # noqa: E402

ray = pytest.importorskip("ray")
pytest.importorskip("ray.serve")
pytest.importorskip("ray.data")

pytestmark = pytest.mark.slow

ENV = {"ENGINE_RANDOM_WEIGHTS": "1", "ENGINE_OFFLINE": "1", "ENGINE_DEVICE": "cpu", "ENGINE_THREADS": "1",
       "GRADIO_ANALYTICS_ENABLED": "False"}
MODEL = "gancompression-horse2zebra"


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def cluster():
    from ray import serve

    from engine.client import RayClient
    from engine.serve import ServeConfig, start

    with env_settings(ENV):
        ray.init(num_cpus=2, object_store_memory=200 * 1024 * 1024, include_dashboard=False, log_to_driver=False)
        try:
            start(ServeConfig(replicas={"style": 1, "translate": 2, "correspondence": 1}, num_cpus=0.25,
                              max_batch_size=4))
            yield RayClient(timeout_s=180)
        finally:
            try:
                serve.shutdown()
            finally:
                ray.shutdown()


def test_the_same_requests_give_identical_outputs_locally_and_on_serve(cluster):
    from engine.client import LocalClient

    local = LocalClient()
    img, style = _rgb(60, 70, 0), _rgb(64, 64, 1)
    assert np.array_equal(cluster.translate(img, MODEL, max_side=0), local.translate(img, MODEL, max_side=0))
    a = cluster.stylize(img, [style], alpha=0.7, max_side=0, style_size=64)
    b = local.stylize(img, [style], alpha=0.7, max_side=0, style_size=64)
    assert np.array_equal(np.asarray(a.image), np.asarray(b.image)) and a.info["size"] == b.info["size"]
    ma, mb = cluster.match("classic", img, style), local.match("classic", img, style)
    assert np.array_equal(ma.flow, mb.flow) and np.array_equal(ma.confidence, mb.confidence)
    edit = np.zeros((60, 70, 4), np.uint8)
    edit[10:30, 15:40] = (255, 0, 0, 255)
    remote_stream, local_stream = (c.stream("classic", edit, reference=img, opacity=0.9) for c in (cluster, local))
    frames = [_rgb(60, 70, 0), np.roll(_rgb(60, 70, 0), 2, axis=1)]
    for f in frames:   # the second frame depends on the stream state kept on the replica
        assert np.array_equal(remote_stream(f), local_stream(f))
    out, state = cluster.stylize_frame(img, [style], None, smooth=0.5, style_size=64)
    out2, state2 = local.stylize_frame(img, [style], None, smooth=0.5, style_size=64)
    assert np.array_equal(out, out2) and np.array_equal(state.mean, state2.mean)


def _frames(path) -> list[np.ndarray]:
    from engine import videoio

    return list(videoio.read_frames(path))


def test_videos_through_serve_match_the_local_engine(cluster, tmp_path):
    """Video is decoded and encoded on the front; frames (and the style stream's state) cross to the replicas.
    The model outputs are compared exactly; the MP4s only closely (H.264 encoding here is not bit-reproducible:
    two local runs of the same job already differ in a frame)."""
    import torch

    from engine import imageio, registry, videoio
    from engine.client import LocalClient
    from engine.pipelines import translate as T

    clip = tmp_path / "clip.mp4"
    frames = [np.roll(_rgb(48, 64, 7), 3 * k, axis=1) for k in range(5)]
    with videoio.VideoWriter(clip, 8) as writer:
        for f in frames:
            writer.write(f)
    y = T.run_generator(registry.load_model(MODEL), torch.cat([imageio.pil_to_tensor(f) for f in frames[:2]]))
    assert np.array_equal(cluster._run("translate", "frames", MODEL, frames[:2], "fp32"),
                          y.mul(255).round().byte().permute(0, 2, 3, 1).numpy())
    local = LocalClient()

    def close(p, q) -> bool:
        fp, fq = _frames(p), _frames(q)
        return len(fp) == len(fq) == 5 and all(x.shape == z.shape and np.abs(x.astype(int) - z).mean() < 3
                                               for x, z in zip(fp, fq))

    a = cluster.translate_video(str(clip), MODEL, max_side=0, out_path=tmp_path / "a.mp4", batch_size=2)
    b = local.translate_video(str(clip), MODEL, max_side=0, out_path=tmp_path / "b.mp4", batch_size=2)
    assert a.frames == b.frames == 5 and close(a.path, b.path)
    style = _rgb(64, 64, 8)
    kw = dict(max_side=64, style_size=64, smooth=0.6, preserve_color=True, alpha=0.8)
    sa = cluster.stylize_video(str(clip), [style], out_path=tmp_path / "sa.mp4", **kw)
    sb = local.stylize_video(str(clip), [style], out_path=tmp_path / "sb.mp4", **kw)
    assert sa.frames == sb.frames == 5 and sa.size == sb.size and close(sa.path, sb.path)


def test_engine_errors_cross_as_the_same_short_messages(cluster):
    from engine.errors import InputError

    with pytest.raises(InputError) as remote:
        cluster._run("translate", "image", "no-such-model", _rgb(32, 32, 0), "fp32", "round", False)
    assert "Unknown model" in str(remote.value) and "Traceback" not in str(remote.value)
    with pytest.raises(InputError, match="reference"):
        cluster.stream("classic", np.zeros((8, 8, 4), np.uint8), reference=None)


def test_translate_replicas_batch_concurrent_single_image_requests(cluster):
    img = _rgb(48, 56, 3)
    want = cluster.translate(img, MODEL, max_side=0)
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: cluster.translate(img, MODEL, max_side=0), range(16)))
    assert all(np.array_equal(o, want) for o in outs)
    sizes = set()
    for _ in range(12):
        sizes.update(cluster._run("translate", "batch_sizes"))
    assert max(sizes) > 1, f"no request was batched: batch sizes {sorted(sizes)}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_replicas_serve_concurrent_gradio_client_users(cluster, tmp_path):
    gradio_client = pytest.importorskip("gradio_client")
    import httpx
    from gradio_client import handle_file

    import app
    from engine.client import LocalClient, set_client

    assert len(cluster.replica_pids("translate", tries=16)) == 2
    # one picture per user: Gradio caches outputs by content hash, and two users receiving the same output at the
    # same moment can download a file that is still being written (a Gradio race, not an engine one)
    pics = [tmp_path / f"p{i}.png" for i in range(10)]
    for i, p in enumerate(pics):
        Image.fromarray(_rgb(40, 48, i)).save(p)
    want = {i: LocalClient().translate(str(p), MODEL, max_side=0) for i, p in enumerate(pics)}
    set_client(cluster)
    try:
        demo = app.build_app()
        port = _free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    **app.launch_kwargs())
        url = f"http://127.0.0.1:{port}/"
        failures: list[str] = []

        def user(u: int) -> int:
            # one download folder per user: gradio_client's concurrent downloads into one folder can collide
            client = gradio_client.Client(url, verbose=False, download_files=str(tmp_path / f"user{u}"),
                                          httpx_kwargs={"timeout": 300})   # a loaded 2-core machine is slow
            done = 0
            for j in range(2):
                i = u
                try:
                    try:
                        pair, _plot, _summary = client.predict(handle_file(str(pics[i])), MODEL, 0,
                                                               api_name="/translate_one")
                    except httpx.TransportError:   # a dropped HTTP connection on a loaded machine: once more
                        pair, _plot, _summary = client.predict(handle_file(str(pics[i])), MODEL, 0,
                                                               api_name="/translate_one")
                    got = np.asarray(Image.open(pair[1]).convert("RGB"), dtype=np.float32)
                    # the slider's files are WebP (lossy on noise): the nearest of the local outputs must be its own
                    nearest = min(want, key=lambda k: np.abs(got - want[k]).mean())
                    if got.shape != want[i].shape or nearest != i:
                        failures.append(f"user {u}: not the local engine's output for its image")
                    done += 1
                except Exception as exc:  # noqa: BLE001 - collected
                    failures.append(f"user {u} request {j}: {exc}")
            return done

        try:
            with ThreadPoolExecutor(10) as pool:
                done = sum(pool.map(user, range(10)))
        finally:
            demo.close()
    finally:
        set_client(None)
    assert not failures, failures[:3]
    assert done == 20


def test_a_killed_replica_is_replaced_and_the_request_retried_or_failed_clearly(cluster):
    from engine.client import LocalClient
    from engine.errors import ModelError

    (old,) = cluster.replica_pids("correspondence", tries=2)
    a, b = _rgb(256, 320, 5), _rgb(256, 320, 6)
    box: dict = {}

    def request():
        try:
            box["value"] = cluster.match("classic", a, b)
        except Exception as exc:  # noqa: BLE001 - checked below
            box["error"] = exc

    worker = threading.Thread(target=request)
    worker.start()
    time.sleep(0.2)   # the request is on its way or running (the classic match takes ~0.6 s even on an idle CPU)
    assert not box, "the request finished before the replica could be killed"
    os.kill(old, signal.SIGKILL)
    worker.join(240)
    assert not worker.is_alive()
    print(f"\nkilled replica {old} mid-request: " + (f"failed: {box['error']}" if "error" in box else "retried, ok"))
    if "error" in box:   # failed: with the short message, not Ray's traceback
        assert isinstance(box["error"], ModelError) and "try again" in str(box["error"]), box["error"]
    else:                # retried on the replacement: the right answer
        assert np.array_equal(box["value"].flow, LocalClient().match("classic", a, b).flow)
    again = cluster.match("classic", a[:64, :64], b[:64, :64])
    assert again.flow.shape == (64, 64, 2)
    assert cluster.replica_pids("correspondence", tries=2) != {old}


def test_ray_data_batch_cli_is_byte_identical_to_the_local_cli(cluster, shared_data, tmp_path, monkeypatch,
                                                               capsys):
    from engine import registry
    from engine.translate_cli import main

    src = sorted((shared_data / "horse2zebra" / "testA").glob("*.jpg"))[:4]
    if len(src) < 4:
        pytest.skip("testA has fewer than 4 images")
    inp = tmp_path / "in"
    inp.mkdir()
    for p in src:
        shutil.copy(p, inp / p.name)
    (inp / "broken.png").write_bytes(b"not an image")
    weights = Path(os.environ.get("WEIGHTS_DIR", Path(__file__).resolve().parents[2] / "shared" / "weights"))
    if (weights / "gan-compression-horse2zebra" / "latest_net_G.pth").is_file():
        monkeypatch.setenv("ENGINE_RANDOM_WEIGHTS", "0")   # the real checkpoint, on the driver and the actors
        monkeypatch.setenv("WEIGHTS_DIR", str(weights))
    registry.clear_cache()
    try:
        common = ["--model", MODEL, "--input", str(inp), "--max-side", "128", "--fp32", "--uint8", "truncate"]
        assert main(common + ["--output", str(tmp_path / "local")]) == 1
        local_report = capsys.readouterr().out
        assert main(common + ["--output", str(tmp_path / "ray"), "--ray", "--ray-actors", "1",
                              "--ray-cpus", "0.25", "--ray-batch-size", "2"]) == 1
        ray_report = capsys.readouterr().out
    finally:
        registry.clear_cache()
    names = sorted(p.name for p in (tmp_path / "local").iterdir())
    assert names == sorted(p.stem + ".png" for p in src)
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == names
    for name in names:
        assert (tmp_path / "local" / name).read_bytes() == (tmp_path / "ray" / name).read_bytes(), name
    strip = lambda text: [ln for ln in text.splitlines() if "translated," not in ln]  # noqa: E731 (timing line)
    assert strip(local_report) == strip(ray_report) and "broken.png" in local_report
    assert "4 translated, 1 skipped" in ray_report
