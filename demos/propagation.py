"""Propagation tab: paint an edit once (a sticker, a mask, a drawing) and carry it to other images, a video file
and the live webcam through any correspondence backend (classic: painted on a reference image; GANgealing:
painted on the model's congealed average)."""
from __future__ import annotations

import cv2
import gradio as gr
import numpy as np

from demos.common import (
    LONG_QUEUE, STREAM_OUTPUT_FORMAT, STREAM_QUEUE, WEBCAM_CONSTRAINTS, AppContext, cancel_button, cancellable,
    example_files, guarded, progress_callback,
)
from demos.correspondence import _usable, backend_choices, backend_notice, load_working_image
from engine import imageio, videoio
from engine.client import get_client
from engine.correspondence import get_backend, visualise
from engine.errors import InputError

MAX_SIDE = 512
VIDEO_MAX_SIDE = 384
MAX_TARGETS = 64  # images per propagation request (checked before any is loaded)

INTRO = """### Edit propagation
1. Choose a backend. *Classic (no weights)*: upload a **reference** image below and paint on it. *GANgealing*: press
   **Load the model's average** and paint on the congealed average of the category.
2. Paint with the brush (any colour; transparency is kept), or upload an RGBA sticker instead.
3. Carry the edit to a gallery of images, a video file, or your webcam."""


def _edit_and_reference(backend, editor, sticker):
    """(edit RGBA, reference RGB or None) from the editor value and/or an uploaded sticker."""
    canvas = backend.canvas()
    background = editor.get("background") if editor else None
    if background is None and editor:
        background = editor.get("composite")
    if canvas is not None:
        reference = None
        base = canvas
    else:
        if background is None:
            raise InputError("Upload a reference image into the editor (the image you paint on) first.")
        reference = load_working_image(np.asarray(background), "(reference)", max_side=MAX_SIDE)
        base = reference
    size = (base.shape[1], base.shape[0])
    if sticker is not None:
        return visualise.fit_edit(np.asarray(imageio.load_rgba(sticker)), size), reference
    edit = visualise.edit_from_layers(editor.get("layers") if editor else None, size)
    if edit is None:
        raise InputError("Paint something on the canvas (or upload an RGBA sticker) first.")
    return edit, reference


def load_canvas(backend_name):
    backend = get_backend(backend_name)
    canvas = backend.canvas()
    if canvas is None:
        gr.Info("This backend paints on a reference image: upload one into the editor.")
        return gr.skip()
    return {"background": canvas, "layers": [], "composite": canvas}


@cancellable(2)
@guarded
def propagate_images(backend_name, editor, sticker, opacity, targets, progress=gr.Progress()):
    if targets and len(targets) > MAX_TARGETS:
        raise InputError(f"{len(targets)} target images; at most {MAX_TARGETS} per request.")
    backend = _usable(backend_name)
    edit, reference = _edit_and_reference(backend, editor, sticker)
    if not targets:
        raise InputError("Add one or more target images to the gallery first.")
    images, skipped = [], []
    for item in targets:
        path = item[0] if isinstance(item, (list, tuple)) else item
        try:
            images.append(load_working_image(path, max_side=MAX_SIDE))
        except InputError as exc:
            skipped.append(str(exc))
    if not images:
        raise InputError("None of the images could be read: " + "; ".join(skipped))
    outs = get_client().propagate(backend_name, edit, images, reference=reference, opacity=float(opacity),
                                  progress=progress_callback(progress))
    note = f"Propagated to {len(outs)} image(s)." + (f" Skipped: {'; '.join(skipped)}" if skipped else "")
    return outs, note


def tracking_options(backend_name, flow_method, reanchor_every) -> dict:
    """Stream options of the classic backend (GANgealing backends re-align every frame and take none of these)."""
    if backend_name != "classic":
        return {}
    opts = {}
    if flow_method:
        opts["method"] = "farneback" if str(flow_method).lower().startswith("farn") else "dis"
    if reanchor_every is not None:
        opts["reanchor_every"] = int(reanchor_every)
    return opts


@cancellable(2)
@guarded
def propagate_video(backend_name, editor, sticker, opacity, video, max_seconds, flow_method="DIS",
                    reanchor_every=10, progress=gr.Progress()):
    backend = _usable(backend_name)
    edit, reference = _edit_and_reference(backend, editor, sticker)
    if not video:
        raise InputError("Upload a video file first (or click an example).")
    stream = get_client().stream(backend_name, edit, reference=reference, opacity=float(opacity),
                                 **tracking_options(backend_name, flow_method, reanchor_every))
    path = videoio.map_video(video, stream, max_seconds=float(max_seconds),
                             max_side=VIDEO_MAX_SIDE, progress=progress_callback(progress))
    info = videoio.probe(path)
    return str(path), f"{info.frames or '?'} frames at {float(info.fps):.3g} fps, {info.width}×{info.height}."


def first_frame(video):
    if not video:
        raise gr.Error("Upload a video first.")
    frame = next(iter(videoio.read_frames(video, max_frames=1, max_side=VIDEO_MAX_SIDE)))
    return {"background": frame, "layers": [], "composite": frame}


def prepare_stream_edit(backend_name, editor, sticker, opacity, flow_method="DIS", reanchor_every=10):
    """The webcam's edit, prepared once when the canvas, sticker, backend or options change (not per frame):
    ``{"key", "backend", "edit", "reference", "opacity", "options"}``; unchanged while there is nothing to carry."""
    try:
        backend = _usable(backend_name)
        edit, reference = _edit_and_reference(backend, editor, sticker)
    except InputError:
        # nothing (new) to carry: keep what was prepared (an editor passing through an empty state while it
        # updates must not switch the edit off); before anything was prepared the camera is shown as it is
        return gr.skip()
    options = tracking_options(backend_name, flow_method, reanchor_every)
    if backend_name == "classic":
        options["anchor_in_background"] = True   # matching another face takes seconds: frames keep flowing
    key = (backend_name, visualise.array_key(edit, reference), float(opacity), tuple(sorted(options.items())))
    return {"key": key, "backend": backend_name, "edit": edit, "reference": reference, "opacity": float(opacity),
            "options": options}


def webcam_frame(frame, prepared, state, max_side=VIDEO_MAX_SIDE):
    """One webcam frame -> the frame with the edit. ``prepared``: :func:`prepare_stream_edit`'s value (this session's
    edit); ``state``: this session's propagator, made once per prepared edit and reused for every frame."""
    if frame is None:
        return None, state
    frame = np.asarray(frame)
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[..., :3]
    side = int(max_side or VIDEO_MAX_SIDE)
    if frame.ndim != 3 or frame.dtype != np.uint8 or frame.shape[2] != 3:
        frame = imageio.as_numpy_rgb(frame)
    h, w = frame.shape[:2]
    if max(h, w) > side:   # shrink first: everything after works at the working size
        scale = side / max(h, w)
        frame = cv2.resize(frame, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    if not prepared:
        return frame, {"key": None, "stream": None, "last": frame}
    if not state or state.get("key") != prepared["key"]:
        state = {"key": prepared["key"], "stream": get_client().stream(
            prepared["backend"], prepared["edit"], reference=prepared["reference"], opacity=prepared["opacity"],
            **prepared["options"])}
    state["last"] = frame   # what "Use this frame as the reference" takes while streaming
    return state["stream"](frame), state


@guarded
def capture(frame, state=None):
    """The webcam frame as the reference. While streaming, the webcam component holds no value: the last frame the
    stream handler saw (kept in this session's stream state) is taken instead."""
    if frame is None and isinstance(state, dict):
        frame = state.get("last")
    if frame is None:
        raise gr.Error("Start the webcam first.")
    frame = load_working_image(frame, "(webcam frame)", max_side=MAX_SIDE)  # the size the editor works at
    return {"background": frame, "layers": [], "composite": frame}


def demo_sticker() -> str:
    """A small RGBA sticker drawn here (sunglasses and a moustache placed for an aligned portrait); written once to
    the temp folder so examples work without any data folder."""
    import tempfile
    from pathlib import Path

    from PIL import Image, ImageDraw

    path = Path(tempfile.gettempdir()) / "gan-studio-sticker-glasses-v1.png"
    if not path.exists():
        img = Image.new("RGBA", (512, 512), (0, 0, 0, 0))
        d = ImageDraw.Draw(img)
        for cx in (190, 322):
            d.ellipse((cx - 52, 200, cx + 52, 268), fill=(20, 20, 30, 235), outline=(240, 200, 40, 255), width=6)
        d.line((242, 226, 270, 226), fill=(240, 200, 40, 255), width=8)
        d.chord((196, 330, 316, 380), 180, 360, fill=(60, 35, 20, 230))
        tmp = path.with_suffix(".part.png")
        img.save(tmp)
        tmp.replace(path)
    return str(path)


STICKERS = {  # category: (average image, official sticker), keys of examples/manifest.toml
    "celeba": ("gangealing-average-celeba", "gangealing-sticker-celeba"),
    "cat": ("gangealing-average-cat", "gangealing-sticker-cat"),
    "dog": ("gangealing-average-dog", "gangealing-sticker-dog"),
}
REFERENCES = ["face-female-039913", "face-female-051340", "face-female-069067"]  # painted on with demo_sticker()
TARGET_SETS = [  # each example fills the target gallery with one set
    ["face-male-005735", "face-male-006930", "face-male-016387", "face-male-191300"],
    ["cat-flickr_cat_000253", "cat-pixabay_cat_000181", "cat-pixabay_cat_000241", "cat-pixabay_cat_000276"],
    ["dog-flickr_dog_000094", "dog-pixabay_dog_000321", "dog-pixabay_dog_000322", "dog-pixabay_dog_001082"],
]
CLIPS = ["face-video-d0"]


def asset_sticker(path: str, side: int = 512) -> str:
    """GANgealing's stickers are 8192x8192 RGBA; a copy shrunk to ``side`` is written once to the temp folder."""
    import tempfile
    from pathlib import Path

    src = Path(path)
    out = Path(tempfile.gettempdir()) / f"gan-studio-{src.stem}-{side}.png"
    if not out.exists():
        img = imageio.load_rgba(src, max_pixels=8192 * 8192 + 1)
        img = img.resize((side, side), resample=3)  # bicubic
        tmp = out.with_suffix(".part.png")
        img.save(tmp)
        tmp.replace(out)
    return str(out)


def sticker_examples(ctx: AppContext) -> list[list[str]]:
    """[average image, shrunk sticker] pairs that are here (data folder or example cache); for the classic
    backend the average image is a clean reference of the category and the sticker is painted on it."""
    rows = []
    for keys in STICKERS.values():
        found = example_files(*keys)
        if found is not None:
            try:
                rows.append([found[0], asset_sticker(found[1])])
            except Exception:  # noqa: BLE001 - an unreadable asset just means no example
                continue
    return rows


def build(ctx: AppContext) -> None:
    gr.Markdown(INTRO)
    choices, default = backend_choices()
    notice = backend_notice()
    if notice:
        with gr.Accordion("⚠️ Backends not available on this machine: how to get them", open=False):
            gr.Markdown(notice)
    with gr.Row():
        backend = gr.Dropdown(choices=choices, value=default, label="Backend", scale=3)
        load = gr.Button("Load the model's average (GANgealing)", scale=1,  # only useful with a GANgealing backend
                         visible=any(not get_backend(name).needs_reference for _, name in choices))
    with gr.Row():
        editor = gr.ImageEditor(label="Canvas: the reference image (classic) or the average (GANgealing) — paint here",
                                type="numpy", image_mode="RGBA", height=420, transforms=(),
                                brush=gr.Brush(colors=["#ff2d55", "#ffd60a", "#30d158", "#0a84ff", "#000000"],
                                               default_size=12))
        with gr.Column():
            sticker = gr.Image(label="…or upload an RGBA sticker (covers the whole canvas)", type="filepath",
                               image_mode=None, sources=["upload"], height=200)
            opacity = gr.Slider(0, 1, value=0.9, step=0.05, label="Opacity of the edit")
    edit_events = []   # everything that sets the canvas programmatically (the webcam's edit is re-prepared after)
    refs = [f[0] for key in REFERENCES if (f := example_files(key))]
    if refs:
        edit_events.append(gr.Examples([[r, demo_sticker()] for r in refs], [editor, sticker],
                                       label="Examples: reference face + sticker (classic backend)").load_input_event)
    assets = sticker_examples(ctx)
    if assets:
        edit_events.append(gr.Examples(
            assets, [editor, sticker], label="Examples: GANgealing's stickers on the category's average image "
            "as the reference (classic backend; then pick face / cat targets below)").load_input_event)
    edit_events.append(load.click(load_canvas, [backend], [editor]))
    with gr.Accordion("Video / webcam tracking options (classic backend)", open=False):
        gr.Markdown("The edit follows a video or the webcam by optical flow between consecutive frames; every N "
                    "frames the frame is matched straight to the reference frame again to stop drift. Pixels that "
                    "become occluded fade out instead of smearing.")
        with gr.Row():
            flow_method = gr.Radio(["DIS", "Farneback"], value="DIS", label="Optical flow (DIS is faster)")
            reanchor = gr.Slider(0, 60, value=10, step=1, label="Re-anchor every N frames (0 = never)")

    with gr.Tab("Images"):
        targets = gr.Gallery(label="Target images", type="filepath", interactive=True, columns=4, height=260,
                             file_types=["image"])
        run = gr.Button("Propagate to the images", variant="primary")
        out_gallery = gr.Gallery(label="With the edit", columns=4, height=300, interactive=False, format="png")
        note = gr.Markdown()
        target_sets = [[f] for keys in TARGET_SETS if (f := example_files(*keys))]
        if target_sets:
            gr.Examples(target_sets, [targets], label="Example targets (faces, cats, dogs)")
        images_event = run.click(propagate_images, [backend, editor, sticker, opacity, targets], [out_gallery, note],
                                 api_name="propagate_images", **LONG_QUEUE)
        cancel_button(images_event)

    with gr.Tab("Video"):
        with gr.Row():
            video_in = gr.Video(label="Video", sources=["upload"])
            video_out = gr.Video(label="With the edit (H.264 MP4)", interactive=False)
        with gr.Row():
            seconds = gr.Slider(1, 30, value=5, step=1, label="At most this many seconds")
            use_first = gr.Button("Paint on the first frame (classic)")
        run_video = gr.Button("Propagate through the video", variant="primary")
        video_note = gr.Markdown()
        clips = [f[0] for key in CLIPS if (f := example_files(key))]
        if clips:
            gr.Examples([[c] for c in clips], [video_in], label="Example clips (faces)")
        edit_events.append(use_first.click(first_frame, [video_in], [editor]))
        video_event = run_video.click(propagate_video, [backend, editor, sticker, opacity, video_in, seconds, flow_method,
                                                        reanchor], [video_out, video_note], api_name="propagate_video",
                                      **LONG_QUEUE)
        cancel_button(video_event)

    with gr.Tab("Webcam"):
        gr.Markdown("Start the camera, press **Use this frame as the reference** (classic), paint on it above, and "
                    "the edit follows you. GANgealing backends use the model's average instead.")
        with gr.Row():
            cam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy", height=300,
                           webcam_options=gr.WebcamOptions(constraints=WEBCAM_CONSTRAINTS))
            cam_out = gr.Image(label="With the edit", type="numpy", height=300, interactive=False,
                               format=STREAM_OUTPUT_FORMAT)
        with gr.Row():
            grab = gr.Button("Use this frame as the reference", scale=3)
            cam_side = gr.Slider(128, 512, value=VIDEO_MAX_SIDE, step=32, scale=2,
                                 label="Frame max side (px; frames are shrunk to this first)")
        prepared = gr.State(None)    # this session's edit, prepared when the inputs change (not per frame)
        stream_state = gr.State(None)  # this session's propagator
        prep_inputs = [backend, editor, sticker, opacity, flow_method, reanchor]
        for trigger in prep_inputs:
            trigger.change(prepare_stream_edit, prep_inputs, prepared, api_visibility="private", queue=False)
        edit_events.append(grab.click(capture, [cam, stream_state], [editor]))
        for event in edit_events:
            event.then(prepare_stream_edit, prep_inputs, prepared, api_visibility="private", queue=False)
        cam.stream(webcam_frame, [cam, prepared, stream_state, cam_side], [cam_out, stream_state],
                   api_name="propagate_webcam_frame", **STREAM_QUEUE)
