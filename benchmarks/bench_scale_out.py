"""Scale-out: gradio_client load test throughput, local engine vs Ray Serve with 1 and 2 Translate replicas, and
the per-request overhead of the Serve path, all in one run.

    flock /tmp/bench.lock python benchmarks/bench_scale_out.py [--users 10 50] [--side 256] [--ray-cpus 2]

Every configuration serves the same app (built by app.build_app) on loopback; each of U users (one gradio_client
each, all at once) sends R translate requests (/translate_one, GAN Compression, random weights, a side x side
image). Throughput = requests / wall-clock seconds. Overhead: the median latency of one small (64 x 64) translation
through engine.client.RayClient minus the same through LocalClient, sequential calls, both measured here.
Random weights: speed does not depend on the values. torch threads: the default on the front and each replica.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# one torch thread in every process (the front and each replica): Ray gives its workers OMP_NUM_THREADS=1 anyway,
# and on a loaded 2-core machine two threads per process oversubscribe the cores (a first run with torch's default
# threads on the front measured 2.2 s per 64 x 64 image there against 56 ms on a one-thread replica)
os.environ.update({"ENGINE_RANDOM_WEIGHTS": "1", "ENGINE_OFFLINE": "1", "ENGINE_DEVICE": "cpu", "ENGINE_THREADS": "1",
                   "GRADIO_ANALYTICS_ENABLED": "False"})

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

MODEL = "gancompression-horse2zebra"
PER_USER = {10: 4, 50: 2}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def load_test(users: int, per_user: int, pics: list[Path], tmp: Path) -> tuple[float, int, int]:
    """(requests per second, successes, failures) of one load test on a fresh app."""
    import gradio_client
    from gradio_client import handle_file

    import app

    demo = app.build_app()
    port = _port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                **app.launch_kwargs())
    url = f"http://127.0.0.1:{port}/"
    # a generous HTTP timeout: with 50 users on 2 cores a request can wait in the queue for a minute
    clients = [gradio_client.Client(url, verbose=False, download_files=str(tmp / f"u{u}-{time.time_ns()}"),
                                    httpx_kwargs={"timeout": 600})
               for u in range(users)]
    clients[0].predict(handle_file(str(pics[0])), MODEL, 0, api_name="/translate_one")   # warm-up

    errors: list[str] = []

    def user(u: int) -> tuple[int, int]:
        ok = bad = 0
        for j in range(per_user):
            try:
                clients[u].predict(handle_file(str(pics[u])), MODEL, 0, api_name="/translate_one")
                ok += 1
            except Exception as exc:  # noqa: BLE001 - counted
                bad += 1
                errors.append(f"{type(exc).__name__}: {exc}"[:200])
        return ok, bad

    try:
        start = time.perf_counter()
        with ThreadPoolExecutor(users) as pool:
            results = list(pool.map(user, range(users)))
        wall = time.perf_counter() - start
    finally:
        demo.close()
    ok, bad = sum(r[0] for r in results), sum(r[1] for r in results)
    if errors:
        print(f"  {users} users: {bad} failed, e.g. {sorted(set(errors))[:3]}", flush=True)
    return ok / wall, ok, bad


def latencies_ms(clients: list, img: np.ndarray, n: int) -> list[float]:
    """Median ms of one small translation per client, calls interleaved (load drift hits all alike)."""
    times: list[list[float]] = [[] for _ in clients]
    for c in clients:
        c.translate(img, MODEL, max_side=0)
    for _ in range(n):
        for k, c in enumerate(clients):
            t = time.perf_counter()
            c.translate(img, MODEL, max_side=0)
            times[k].append((time.perf_counter() - t) * 1000)
    return [statistics.median(t) for t in times]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--users", type=int, nargs="+", default=[10, 50])
    p.add_argument("--side", type=int, default=256)
    p.add_argument("--ray-cpus", type=int, default=2)
    p.add_argument("--overhead-reps", type=int, default=30)
    args = p.parse_args()

    import ray
    from ray import serve

    from engine.client import LocalClient, RayClient, set_client
    from engine.serve import ServeConfig, start

    tmp = Path(tempfile.mkdtemp(prefix="bench-scale-out-"))
    pics = []
    for i in range(max(args.users)):   # one picture per user: Gradio caches outputs by content hash, and two
        path = tmp / f"p{i}.png"         # users getting the same output at once can read a half-written file
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (args.side, args.side, 3), dtype=np.uint8)).save(path)
        pics.append(path)
    small = np.random.default_rng(9).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    print(f"machine: {os.cpu_count()} CPUs (shared with other jobs); images {args.side}x{args.side}; "
          f"requests per user {PER_USER}", flush=True)

    rows: dict[str, dict[int, tuple]] = {}
    local = LocalClient()
    set_client(local)
    rows["local engine"] = {u: load_test(u, PER_USER.get(u, 2), pics, tmp) for u in args.users}
    print("local done", rows["local engine"], flush=True)

    ray.init(num_cpus=args.ray_cpus, object_store_memory=200 * 1024 * 1024, include_dashboard=False,
             log_to_driver=False)
    try:
        local_ms = serve_ms = float("nan")
        for replicas in (1, 2):
            start(ServeConfig(replicas={"style": 1, "translate": replicas, "correspondence": 1}, num_cpus=0.25))
            remote = RayClient(concurrency=2 * replicas)
            set_client(remote)
            rows[f"Serve, {replicas} replica{'s' if replicas > 1 else ''}"] = {
                u: load_test(u, PER_USER.get(u, 2), pics, tmp) for u in args.users}
            if replicas == 1:
                local_ms, serve_ms = latencies_ms([local, remote], small, args.overhead_reps)
            print(f"serve {replicas} done", flush=True)
    finally:
        set_client(None)
        serve.shutdown()
        ray.shutdown()

    base = rows["local engine"]
    print("\n| engine | " + " | ".join(f"{u} users: req/s (ratio to local)" for u in args.users) + " |")
    print("|---|" + "---|" * len(args.users))
    for name, by_users in rows.items():
        cells = []
        for u in args.users:
            rps, ok, bad = by_users[u]
            cells.append(f"{rps:.2f} ({rps / base[u][0]:.2f}x){'' if not bad else f', {bad} failed'}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"\nper-request latency, 64x64 translation, sequential, interleaved, median of {args.overhead_reps}: local "
          f"{local_ms:.1f} ms, Serve (1 replica) {serve_ms:.1f} ms -> Serve path overhead {serve_ms - local_ms:.1f} ms")


if __name__ == "__main__":
    main()
