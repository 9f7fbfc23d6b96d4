"""Loopback helpers for the fairness tests and benchmarks: launch the app in-process and drive a webcam stream the
way the browser does (join the stream event once, then post each new frame to ``/gradio_api/stream/{event_id}``).

Nothing here is a test; the fairness, robustness, corpus and scale-out tests and ``benchmarks/bench_fairness.py``
use it.
"""
from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from contextlib import contextmanager
from pathlib import Path

import httpx

ENV = {"ENGINE_RANDOM_WEIGHTS": "1", "ENGINE_OFFLINE": "1", "ENGINE_DEVICE": "cpu",
       "GRADIO_ANALYTICS_ENABLED": "False"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def env_settings(settings: dict):
    """Set environment variables (and drop the model cache) for the block; restore both after it."""
    from engine import registry

    saved = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    registry.clear_cache()
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        registry.clear_cache()


@contextmanager
def live_app(env: dict | None = None):
    """The whole app on a free loopback port (random weights, CPU, plus ``env``); yields (url, demo)."""
    with env_settings({**ENV, **(env or {})}):
        import app

        demo = app.build_app()
        port = free_port()
        demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True,
                    **app.launch_kwargs())
        try:
            yield f"http://127.0.0.1:{port}", demo
        finally:
            demo.close()


def fn_index(demo, api_name: str) -> int:
    for index, fn in demo.fns.items():
        if fn.api_name == api_name:
            return index
    raise KeyError(api_name)


def event_inputs(demo, api_name: str, given: list) -> list:
    """The data list of an event: ``given`` for its first inputs, each later input's component default (so
    callers keep working when a tab adds a setting at the end)."""
    fn = demo.fns[fn_index(demo, api_name)]
    defaults = []
    for block in fn.inputs:
        value = getattr(block, "value", None)
        defaults.append(None if callable(value) else value)
    if len(given) > len(defaults):
        raise ValueError(f"{api_name} takes {len(defaults)} inputs; {len(given)} given")
    return list(given) + defaults[len(given):]


def upload(url: str, path: str | Path) -> dict:
    """Upload a file like the browser does; returns the FileData dict an event's data carries."""
    with open(path, "rb") as fh:
        r = httpx.post(f"{url}/gradio_api/upload", files={"files": (Path(path).name, fh)}, timeout=30)
    r.raise_for_status()
    server_path = r.json()[0]
    return {"path": server_path, "meta": {"_type": "gradio.FileData"}, "orig_name": Path(path).name}


class Session:
    """One user's event over raw HTTP, as the browser sends it: ``join(data)`` queues the event, a reader thread
    follows the session's SSE channel (``outputs`` counts the streamed/generated outputs, ``result`` holds the
    final message), ``disconnect()`` drops the connection like a closed browser tab."""

    def __init__(self, url: str, index: int):
        self.url, self.index = url, index
        self.session = uuid.uuid4().hex[:11]
        self.event_id: str | None = None
        self.outputs = 0
        self.result: dict | None = None
        self.completed = threading.Event()
        self._response = None
        self._reader: threading.Thread | None = None
        self.http = httpx.Client(timeout=30)

    def _body(self, data: list) -> dict:
        return {"data": data, "fn_index": self.index, "session_hash": self.session, "event_data": None,
                "trigger_id": None}

    def join(self, data: list) -> "Session":
        r = self.http.post(f"{self.url}/gradio_api/queue/join", json=self._body(data))
        r.raise_for_status()
        self.event_id = r.json()["event_id"]
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        try:
            with httpx.stream("GET", f"{self.url}/gradio_api/queue/data", params={"session_hash": self.session},
                              timeout=httpx.Timeout(30, read=None)) as r:
                self._response = r
                for line in r.iter_lines():
                    if not line.startswith("data:"):
                        continue
                    msg = json.loads(line[5:])
                    if msg.get("msg") in ("process_streaming", "process_generating"):
                        self.outputs += 1
                    elif msg.get("msg") == "process_completed":
                        self.result = msg
                        self.completed.set()
                        return
        except (httpx.HTTPError, RuntimeError, AttributeError):  # closed by disconnect()
            return
        finally:
            self.completed.set()

    def disconnect(self) -> None:
        if self._response is not None:
            self._response.close()
        self.http.close()


class Stream(Session):
    """A webcam stream: ``join`` with the first frame's inputs, ``send`` each next frame, ``close`` like the
    browser's Stop."""

    def send(self, data: list) -> int:
        """Post the next frame; the HTTP status (404 once the stream event has ended)."""
        try:
            return self.http.post(f"{self.url}/gradio_api/stream/{self.event_id}", json=self._body(data)).status_code
        except httpx.HTTPError:
            return 0

    def close(self) -> None:
        if self.event_id:
            self.http.post(f"{self.url}/gradio_api/stream/{self.event_id}/close")
        self.disconnect()


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
