"""Device selection order and the engine-wide queue."""
from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import torch

from engine import device, queue
from engine.errors import InputError


def test_explicit_argument_beats_environment(monkeypatch):
    monkeypatch.setenv("ENGINE_DEVICE", "cpu")
    assert device.select_device().type == "cpu"
    assert device.select_device("cpu") == torch.device("cpu")
    assert device.select_device(torch.device("cpu")).type == "cpu"


def test_unknown_or_unavailable_devices_are_clear_errors(monkeypatch):
    with pytest.raises(InputError, match="Unknown device"):
        device.select_device("tpu-ish")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            device.select_device("cuda")
        monkeypatch.setenv("ENGINE_DEVICE", "cuda:0")
        with pytest.raises(InputError):
            device.select_device()


def test_cpu_runs_float32():
    cpu = torch.device("cpu")
    assert device.autocast_dtype(cpu) is None
    with device.autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_import_does_not_initialise_cuda_or_build_models():
    code = ("import torch, engine, engine.registry, engine.weights, engine.imageio, engine.device, demos.common;"
            "engine.list_models(); engine.model_status('adain');"
            "print(torch.cuda.is_initialized(), len(engine.registry._cache))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split() == ["False", "0"]


def test_engine_queue_never_overlaps_jobs():
    queue.stats.reset()
    overlap = []
    active = [0]

    def job(i):
        active[0] += 1
        overlap.append(active[0])
        time.sleep(0.01)
        active[0] -= 1
        return i

    threads = [threading.Thread(target=queue.run_exclusive, args=(job, i)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlap) == 1 and queue.stats.jobs == 12 and queue.stats.max_active == 1


def test_lock_is_reentrant_and_batches_cover_all_items():
    assert queue.run_exclusive(lambda: queue.run_exclusive(lambda: 7)) == 7
    seen = []
    out = queue.map_batched(lambda b: [x * 2 for x in b], list(range(7)), batch_size=3,
                            progress=lambda f, d: seen.append(f))
    assert out == [x * 2 for x in range(7)] and seen[-1] == 1.0 and len(seen) == 3
    with pytest.raises(ValueError):
        list(queue.batched([1], 0))


def test_cli_lists_every_model_with_status(tmp_path):
    out = subprocess.run([sys.executable, "-m", "engine", "--weights-dir", str(tmp_path)], capture_output=True,
                         text=True, timeout=120, env={**__import__("os").environ, "ENGINE_OFFLINE": "1",
                                                      "ENGINE_CACHE_DIR": str(tmp_path / "c")})
    assert out.returncode == 0, out.stderr
    from engine import registry
    for spec in registry.list_models():
        assert spec.name in out.stdout
    assert "missing" in out.stdout
