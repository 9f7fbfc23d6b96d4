"""The Horse → Zebra tab: builds, imports no torch, handlers return what the components expect."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


REPO = Path(__file__).resolve().parent.parent


def test_tab_module_does_not_import_torch():
    code = "import sys, demos.translate; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_tab_builds_with_the_engine_queue(random_weights):
    import gradio as gr

    from demos import translate as D
    from demos.common import ENGINE_QUEUE, LONG_QUEUE, AppContext

    with gr.Blocks() as demo:
        D.build(AppContext(data_dir=None))
    engine_fns = [fn for fn in demo.fns.values() if fn.name in ("translate_one", "translate_gallery", "translate_clip")]
    assert len(engine_fns) == 3
    lanes = {fn.name: (fn.concurrency_id, fn.concurrency_limit) for fn in engine_fns}
    assert lanes["translate_one"] == (ENGINE_QUEUE["concurrency_id"], 1)        # single images: the short lane
    assert lanes["translate_gallery"] == lanes["translate_clip"] == (LONG_QUEUE["concurrency_id"], 1)
    sliders = [b for b in demo.blocks.values() if isinstance(b, gr.ImageSlider)]
    assert len(sliders) == 2
    choices, default = D._choices()
    from engine import registry
    n_models = len(registry.list_models("translate"))
    assert default == "gancompression-horse2zebra" and len(choices) == n_models   # random weights: all usable


def test_handlers(random_weights):
    import gradio as gr

    from demos import translate as D

    img = (np.random.default_rng(0).random((45, 61, 3)) * 255).astype(np.uint8)
    (inp, out), table, summary, maps = D.translate_one(img, "gancompression-horse2zebra", 0)
    assert inp.shape == out.shape == (45, 61, 3) and maps == []
    assert set(table["image"]) == {"input", "output"} and "cycles/px" in summary
    with pytest.raises(gr.Error, match="Upload an image"):
        D.translate_one(None, "gancompression-horse2zebra", 512)
    with pytest.raises(gr.Error, match="at least 8 pixels"):
        D.translate_one(img[:1], "gancompression-horse2zebra", 512)
    # no runnable model: the outputs are cleared and the status text explains (no red "Error" over empty outputs)
    slider, plot, note, maps = D.translate_one(img, None, 512)
    assert slider is None and plot is None and maps == [] and "No translation model" in note and "<" not in note
    gallery, pairs, first, status = list(D.translate_gallery([(img, None), (img[:, :20], "b")], "cyclegan-zebra2horse", 0))[-1]
    assert len(gallery) == 2 and first[1].shape == (45, 61, 3) and status.startswith("2 translated")
