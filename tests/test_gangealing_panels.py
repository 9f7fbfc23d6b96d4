"""The GANgealing congeal panel: builds inside an accordion, and its handler returns the aligned image, the flow map,
the correspondence overlay and a quality report (with a warning when the alignment is flagged)."""
import gradio as gr
import numpy as np
import pytest
import torch

from demos.common import AppContext
from demos.gangealing_panels import build_congeal_panel, congeal
from engine.pipelines import gangealing as G
try:
    from test_gangealing import analytic_model  # the tests folder is on sys.path (pytest's default import mode)
except ImportError:  # pragma: no cover
    from tests.test_gangealing import analytic_model


def test_panel_builds_in_an_accordion(tmp_path, random_weights):
    with gr.Blocks() as demo:
        with gr.Accordion("Congeal an image"):
            build_congeal_panel(AppContext(data_dir=tmp_path))
    assert any(getattr(b, "label", None) == "Aligned (congealed)" for b in demo.blocks.values())


def test_panel_without_any_checkpoint_offers_nothing_that_would_fail(tmp_path, monkeypatch):
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ENGINE_OFFLINE", "1")
    with gr.Blocks() as demo:
        build_congeal_panel(AppContext(data_dir=tmp_path))
    blocks = list(demo.blocks.values())
    assert not any(isinstance(b, (gr.Dropdown, gr.Button, gr.Dataset)) for b in blocks)
    note = " ".join(str(b.value) for b in blocks if isinstance(b, gr.Markdown))
    assert "No GANgealing checkpoint" in note and "<" not in note


def test_handler_outputs_and_warning(monkeypatch):
    good = analytic_model()
    rough = analytic_model()
    with torch.no_grad():
        torch.manual_seed(1)
        rough.t_ema.stns[1].warp_head.flow_out[2].weight.normal_(0, 0.5)
    models = {"gangealing-cat": good, "gangealing-dog": rough}
    monkeypatch.setattr(G, "get_model", lambda name, device=None: models[name])
    warnings = []
    monkeypatch.setattr(gr, "Warning", lambda msg, *a, **k: warnings.append(msg))
    img = (np.random.default_rng(0).random((180, 240, 3)) * 255).astype(np.uint8)

    aligned, flow, corr, md = congeal(img, "gangealing-cat", 128, True, progress=None)
    assert aligned.shape == (128, 128, 3) and flow.shape == (128, 128, 3)
    assert corr is None  # the analytic test model has no assets
    assert "✅" in md and "TV of the residual flow" in md and not warnings

    _, _, _, md = congeal(img, "gangealing-dog", 128, False, progress=None)
    assert "⚠️" in md and warnings and "rough" in warnings[0]


def test_handler_rejects_missing_input():
    with pytest.raises(gr.Error, match="Upload an image"):
        congeal(None, "gangealing-cat", 256, True, progress=None)
