"""End-to-end: the app starts on loopback and every tab answers through gradio_client."""
from __future__ import annotations

import pytest

gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def client(running_app):
    return gradio_client.Client(running_app.url, verbose=False)


def test_app_starts_with_all_tabs_and_no_build_errors(running_app, client):
    print(f"cold start: {running_app.cold_start_s:.1f} s")
    log = running_app.log_path.read_text()
    assert "failed to build" not in log, log[-3000:]
    assert client.view_api(print_info=False, return_format="dict")["named_endpoints"]
