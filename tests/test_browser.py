"""A real browser (Debian's headless Chromium driven by Playwright) opens the app, runs one example in every tab,
saves screenshots and checks what the page shows. Skipped when Chromium, Playwright or the data folder is absent."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
TIMEOUT = 120_000  # ms; CPU inference with random weights on a small machine


@pytest.fixture(scope="module")
def page(running_app, shared_data):
    if CHROMIUM is None:
        pytest.skip("Chromium is not installed (Debian package chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pg = browser.new_page(viewport={"width": 1400, "height": 1000})
        pg.set_default_timeout(TIMEOUT)
        pg.goto(running_app.url, wait_until="load")
        pg.get_by_role("tab", name="Style transfer").wait_for()
        yield pg
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("BROWSER_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _block(pg, label: str):
    """The innermost Gradio block whose text contains ``label``."""
    return pg.locator("div.block").filter(has_text=label).last


def _first_example(pg, label: str) -> None:
    _block(pg, label).locator("button.gallery-item, tr.tr-body").first.click()


def _wait_for_image(pg, label: str) -> None:
    _block(pg, label).locator("img").first.wait_for(state="visible")


def _no_error_toast(pg) -> None:
    toasts = pg.locator(".toast-body.error, .toast-wrap .error")
    assert toasts.count() == 0, toasts.first.inner_text()


def test_every_tab_runs_an_example(page, shots, running_app):
    pg = page
    assert "GAN studio" in pg.title()
    for tab in ("Style transfer", "Horse → Zebra", "Correspondence", "Propagation"):
        assert pg.get_by_role("tab", name=tab).is_visible()

    # Style transfer: one click on an example loads the content and styles and stylises.
    pg.get_by_role("tab", name="Style transfer").click()
    _first_example(pg, "Examples (one click")
    _wait_for_image(pg, "Stylised")
    _no_error_toast(pg)
    pg.screenshot(path=str(shots / "style.png"), full_page=True)

    # Horse -> Zebra: a testA horse, then Translate; the comparison slider and the spectrum appear.
    pg.get_by_role("tab", name="Horse → Zebra").click()
    _first_example(pg, "Examples (horse2zebra test set)")
    pg.get_by_role("button", name="Translate", exact=True).click()
    _wait_for_image(pg, "Input ↔ output")
    pg.get_by_text("Share of spectral power").wait_for()
    _no_error_toast(pg)
    pg.screenshot(path=str(shots / "translate.png"), full_page=True)

    # Correspondence: a pair of faces, Match; the colour-coded views appear.
    pg.get_by_role("tab", name="Correspondence").click()
    _first_example(pg, "Examples (CelebA-HQ faces")
    pg.get_by_role("button", name="Match", exact=True).click()
    _wait_for_image(pg, "B, colour key of positions")
    pg.get_by_text("mean confidence").wait_for()
    _no_error_toast(pg)
    pg.screenshot(path=str(shots / "correspondence.png"), full_page=True)

    # Propagation: reference + sticker example, example targets, Propagate; the output gallery fills.
    pg.get_by_role("tab", name="Propagation").click()
    _first_example(pg, "Examples: reference face")
    _first_example(pg, "Example targets")
    pg.get_by_role("button", name="Propagate to the images", exact=True).click()
    try:
        pg.get_by_text("Propagated to").wait_for()
    finally:
        pg.screenshot(path=str(shots / "propagation.png"), full_page=True)
    _wait_for_image(pg, "With the edit")
    _no_error_toast(pg)
    pg.screenshot(path=str(shots / "propagation.png"), full_page=True)
    assert "ERROR gan-studio: handler" not in running_app.log_path.read_text()  # no unexpected exception
