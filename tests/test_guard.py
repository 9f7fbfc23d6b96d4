"""The app-wide guard (demos/guard.py, demos/common.guarded): every handler and component guarded, uploads validated
by the engine before Gradio decodes them, outputs fitted to their format, messages without paths or HTML."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

gr = pytest.importorskip("gradio")

from demos.common import guarded, sanitise  # noqa: E402
from demos.guard import guard_app, unguarded  # noqa: E402


@pytest.fixture(scope="module")
def app_demo():
    import os

    from engine import registry

    saved = os.environ.get("ENGINE_RANDOM_WEIGHTS")
    os.environ["ENGINE_RANDOM_WEIGHTS"] = "1"
    registry.clear_cache()
    import app

    try:
        yield app.build_app()
    finally:
        if saved is None:
            os.environ.pop("ENGINE_RANDOM_WEIGHTS", None)
        else:
            os.environ["ENGINE_RANDOM_WEIGHTS"] = saved
        registry.clear_cache()


def test_every_event_handler_and_component_of_the_app_is_guarded(app_demo):
    handlers = [f for f in app_demo.fns.values() if f.fn is not None]
    names = {f.name for f in handlers}
    assert len(handlers) >= 15 and {"first_frame", "capture", "congeal", "propagate_video"} <= names, names
    assert unguarded(app_demo) == []
    # and the check can fail: a handler added afterwards is reported until guard_app runs again
    with app_demo:
        gr.Button("late").click(lambda: None, None, None)
    assert any(m.startswith("handler") for m in unguarded(app_demo))
    guard_app(app_demo)
    assert unguarded(app_demo) == []


@pytest.mark.parametrize("text, leak", [
    ("cannot identify image file '/tmp/gradio/4f3a/photo.png'", "/tmp"),
    ("weights missing in /work/shared/weights/adain/ and /home/me/.cache/gan-studio/weights/adain/decoder.pth", "/work"),
    ("file:///etc/passwd", "/etc"),
    (r"C:\Users\me\weights\x.pth", "Users"),
    ("<img src=x onerror=alert(1)>", "<img"),
])
def test_messages_lose_paths_and_html(text, leak):
    out = sanitise(text)
    assert leak not in out and "<" not in out
    assert out  # the file name (or text) is kept


def test_harmless_text_is_kept():
    text = "frame 3/10 at 25 fps, horse->zebra, A/B, see https://github.com/x/y"
    assert sanitise(text) == text


def test_a_guarded_handler_reports_without_paths():
    @guarded
    def handler():
        raise OSError("[Errno 13] Permission denied: '/srv/app/secret/model.pth'")

    @guarded
    def user_error():
        raise gr.Error("Upload a video first (/tmp/gradio/x.mp4).")

    with pytest.raises(gr.Error) as err:
        handler()
    assert "/srv" not in err.value.message and "model.pth" in err.value.message
    assert "Internal error (OSError)" in err.value.message
    with pytest.raises(gr.Error) as err:
        user_error()
    assert err.value.message == "Upload a video first (x.mp4)."


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def test_image_slots_validate_through_the_engine_before_gradio_decodes(tmp_path):
    from gradio.data_classes import ImageData

    good = _png(Image.new("RGB", (40, 30), (200, 10, 10)))
    (tmp_path / "truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "sound.png").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(64))
    (tmp_path / "good.png").write_bytes(good)
    with gr.Blocks() as demo:
        image = gr.Image(type="numpy", label="Image to align")
        editor = gr.ImageEditor(type="numpy", label="Canvas (paint here)")
    guard_app(demo)
    for name, needle in (("truncated.png", "truncated or corrupt"), ("sound.png", "not an image format")):
        path = str(tmp_path / name)
        with pytest.raises(gr.Error, match=needle) as err:
            image.preprocess(ImageData(path=path, orig_name=name))
        assert str(tmp_path) not in err.value.message and err.value.message.startswith("Image to align:")
        with pytest.raises(gr.Error, match=needle):
            editor.preprocess(editor.data_model(background={"path": path, "orig_name": name}))
    ok = image.preprocess(ImageData(path=str(tmp_path / "good.png"), orig_name="good.png"))
    assert ok.shape == (30, 40, 3)


def test_image_outputs_are_fitted_to_webp_limits():
    with gr.Blocks() as demo:
        out = gr.Image(type="numpy", format="webp", interactive=False)
        png = gr.Image(type="numpy", format="png", interactive=False)
    guard_app(demo)
    wide = np.zeros((8, 20000, 3), np.uint8)
    data = out.postprocess(wide)
    with Image.open(data.path) as img:
        assert img.format == "WEBP" and img.size == (16383, 6)
    with Image.open(png.postprocess(wide).path) as img:
        assert img.size == (20000, 8)


def _explainers(demo) -> dict[int, object]:
    """trigger_after (the event) -> its failure follow-up."""
    return {f.trigger_after: f for f in demo.fns.values()
            if f.trigger_only_on_failure and getattr(f.fn, "__gan_studio_explains__", False)}


def test_every_event_with_visible_outputs_gets_a_failure_follow_up(app_demo):
    """All tabs, their sub-tabs, the webcam streams and the GANgealing panel (random weights: all offered): a failed
    event's outputs do not keep Gradio's red "Error" status (see test_browser_fresh for the browser's view)."""
    explainers = _explainers(app_demo)
    events = {fid: f for fid, f in app_demo.fns.items() if f.fn is not None and fid not in
              {e._id for e in explainers.values()}}
    visible = {fid: f for fid, f in events.items() if any(not isinstance(c, gr.State) for c in f.outputs)}
    names = {f.name for f in visible.values()}
    assert {"stylize_image", "stylize_video", "stream_frame", "translate_one", "translate_clip", "match_images",
            "congeal", "propagate_images", "propagate_video", "webcam_frame"} <= names, names
    missing = [f.name for fid, f in visible.items() if fid not in explainers]
    assert missing == []
    for fid, explainer in explainers.items():
        assert explainer.show_progress != "hidden" and not explainer.queue  # a status update, at once
        assert {c._id for c in explainer.outputs} <= {c._id for c in app_demo.fns[fid].outputs}


def test_a_failed_event_clears_its_results_and_shows_its_message():
    import asyncio
    from types import SimpleNamespace

    from gradio.state_holder import SessionState

    from engine.errors import InputError

    with gr.Blocks() as demo:
        inp = gr.Image(type="numpy", label="Input")
        out = gr.Image(label="Result", interactive=False)
        status = gr.Markdown()
        counter = gr.State(0)
        button = gr.Button("Run")

        def run(image, n):
            raise InputError("Upload an image at /srv/app/uploads/x.png first.")

        button.click(run, [inp, counter], [out, status, counter, inp])
    guard_app(demo)
    guard_app(demo)  # idempotent: one follow-up per event
    (event_id, explainer), = _explainers(demo).items()
    # the message goes to the status text, the result is cleared; the input the user edits keeps its value (its
    # status is reset all the same) and the State is left alone
    assert [c._id for c in explainer.outputs] == [inp._id, out._id, status._id]
    with pytest.raises(gr.Error):
        asyncio.run(demo.process_api(block_fn=demo.fns[event_id], inputs=[None, 0], state=SessionState(demo),
                                     session_hash="s1"))
    kept, cleared, told = explainer.fn(SimpleNamespace(session_hash="s1"))
    assert isinstance(kept, dict) and kept.get("__type__") == "update" and len(kept) == 1  # gr.skip()
    assert cleared is None and told == "⚠️ Upload an image at x.png first."
    # another session has no message of its own: a generic one, never a blank
    assert explainer.fn(SimpleNamespace(session_hash="s2"))[2].startswith("⚠️ The last run failed")
