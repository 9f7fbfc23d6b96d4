"""What each tab offers on a fresh machine, built in-process: only model/backend choices that can run, examples
only when a model can run them (no zebras among the horses), and each missing model named once, in a notice that is
whole (no ``<...>``) and free of server paths."""
from __future__ import annotations

import re
import shutil

import gradio as gr
import pytest

from demos.common import AppContext
from engine import config, examples, registry

SERVER_PATH = re.compile(r"(?<![\w:/.])/(?:[\w.-]+/)+[\w.-]*")


@pytest.fixture
def bare(tmp_path, monkeypatch):
    """No data folder, no weights folder, empty cache, offline."""
    monkeypatch.setenv("DATA_DIR", "")
    monkeypatch.setenv("WEIGHTS_DIR", "")
    monkeypatch.setenv("ENGINE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("ENGINE_OFFLINE", "1")
    monkeypatch.delenv("ENGINE_RANDOM_WEIGHTS", raising=False)
    registry.clear_cache()
    return tmp_path


def _build(module: str, ctx: AppContext) -> list:
    import importlib

    with gr.Blocks() as demo:
        importlib.import_module(module).build(ctx)
    return list(demo.blocks.values())


def _markdown(blocks) -> str:
    return "\n".join(str(b.value) for b in blocks if isinstance(b, gr.Markdown))


def _choices(blocks, label: str) -> list:
    return [b.choices for b in blocks if isinstance(b, (gr.Dropdown, gr.Radio)) and b.label == label]


def test_bare_offline_translate_tab_offers_no_model_and_no_example(bare):
    blocks = _build("demos.translate", AppContext(data_dir=None))
    assert _choices(blocks, "Model") == [[]]
    assert not any(isinstance(b, gr.Dataset) for b in blocks)
    text = _markdown(blocks)
    for spec in registry.list_models("translate"):
        if not registry.model_status(spec.name).usable:
            assert text.count(f"**{spec.title}**") == 1, spec.title  # named once
    assert "<" not in text and not SERVER_PATH.search(text.replace("FOLDER/", "FOLDER-")), text
    assert "--weights-dir FOLDER" in text


def test_bare_offline_correspondence_lists_only_the_classic_backend(bare):
    blocks = _build("demos.correspondence", AppContext(data_dir=None))
    assert _choices(blocks, "Backend") == [[("Classic (no weights)", "classic")]]
    text = _markdown(blocks)
    assert "unavailable" not in text and "<" not in text
    assert text.count("GANgealing: bicycle, car, cat") == 1  # the 15 GANgealing backends: one line, once
    assert not any(isinstance(b, gr.Dropdown) and b.label == "GANgealing model" for b in blocks)


def test_examples_need_a_runnable_model_and_horses_are_horses(bare, shared_data, monkeypatch, random_weights):
    monkeypatch.setenv("DATA_DIR", str(shared_data))
    blocks = _build("demos.translate", AppContext(data_dir=shared_data))
    sets = [b for b in blocks if isinstance(b, gr.Dataset) and "horse2zebra" in str(b.label)]
    assert len(sets) == 1 and len(sets[0].samples) == 6
    for key in __import__("demos.translate", fromlist=["EXAMPLES"]).EXAMPLES:
        assert "/testA/" in examples.manifest()[key].path  # horses (testA), never zebras (testB)


def test_without_weights_no_translation_examples_even_with_data(bare, shared_data, monkeypatch):
    monkeypatch.setenv("DATA_DIR", str(shared_data))
    blocks = _build("demos.translate", AppContext(data_dir=shared_data))
    assert not any(isinstance(b, gr.Dataset) for b in blocks)


def test_every_style_example_row_runs(bare, shared_data, monkeypatch, tmp_path):
    """Each example row, as one click loads it, stylises (at a small size) with the default style model."""
    from demos import style

    if not registry.model_status(style.default_model()).usable:
        pytest.skip("no style model can run here")
    monkeypatch.setenv("DATA_DIR", str(shared_data))
    rows, labels = style._image_examples(AppContext(data_dir=shared_data))
    assert len(rows) == 7 and len(labels) == 7
    for row, label in zip(rows, labels):
        content, s1, s2, s3, s4, w1, w2, w3, w4, alpha, preserve, spatial, mask = row
        editor = {"background": content, "layers": [], "composite": content}
        image, info = style.stylize_image.__wrapped__(editor, mask, spatial, s1, w1, s2, w2, s3, w3, s4, w4, alpha,
                                                       preserve, 96, 96, style.default_model(), progress=None)
        assert max(image.size) == 96, label
        assert "spatial control" in info if spatial else True


def test_examples_cache_is_an_allowed_path(bare):
    import app

    assert str(examples.cache_dir()) in app.allowed_paths()


def test_start_up_rejects_unknown_flags_and_missing_folders_in_one_line(tmp_path, capsys):
    import app

    for argv, expected in ((["--bogus"], "unknown option --bogus"),
                           (["--data-dir", str(tmp_path / "nope")], "--data-dir"),
                           (["--weights-dir", str(tmp_path / "nada")], "is not a folder")):
        with pytest.raises(SystemExit) as exit_:
            app.parse_args(argv)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and expected in err and err.count("\n") == 1, err
    assert app.parse_args(["--data-dir", str(tmp_path)]).data_dir == str(tmp_path)


def test_empty_settings_mean_no_folder(monkeypatch, tmp_path):
    monkeypatch.setenv("DATA_DIR", "")
    monkeypatch.setenv("WEIGHTS_DIR", "")
    assert config.data_dir() is None and config.weights_dirs() == []
    monkeypatch.setenv("DATA_DIR", str(tmp_path))
    assert config.data_dir() == tmp_path
    shutil.rmtree(tmp_path)
    assert config.data_dir() is None
