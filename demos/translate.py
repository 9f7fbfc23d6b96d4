"""The "Horse → Zebra" tab: unpaired translation with CycleGAN, CUT / FastCUT, GAN Compression and U-GAT-IT.

One image (slider comparison + spectrum analysis), several images (gallery in, gallery out) or a video file.
Engine work goes through engine.pipelines.translate on the shared engine queue; no torch here.
"""
from __future__ import annotations

import gradio as gr

from demos.common import (
    ENGINE_QUEUE, LONG_QUEUE, AppContext, cancel_button, cancellable, example_files, guarded, progress_callback,
    run_buttons, runnable_choices, show_weights_notice,
)
from engine import spectrum
from engine.client import get_client
from engine.errors import InputError
from engine.pipelines import translate as T

INTRO = """### Unpaired image-to-image translation
**CycleGAN** (Zhu et al., ICCV 2017) · **CUT / FastCUT** (Park et al., ECCV 2020: the same ResNet generator with
antialiased down/up-sampling) · **GAN Compression** (Li et al., CVPR 2020: a 0.36 M-parameter mobile generator,
about 30× smaller than CycleGAN's) · **U-GAT-IT** (Kim et al., ICLR 2020: CAM attention + AdaLIN; shown when you
have a checkpoint, none is published). Any size and aspect ratio: images are reflect-padded to a multiple of 4,
translated and cropped back, so the output has exactly the input's size (after the optional *max side* shrink).
Full (not light) U-GAT-IT takes only its training size (256×256). Models that expose where they look (U-GAT-IT's
attention map) show it as a heat map over the input beside the output."""

# Captions for the extra maps a model may return (engine.pipelines.translate.run_generator); others use their name.
MAP_CAPTIONS = {"attention": "Attention (CAM): where the generator looks — red = high, blue = low"}

SPECTRUM_HELP = """The azimuthally averaged power spectrum (Durall et al., CVPR 2020, *Watch your Up-Convolution*):
power per ring of equal spatial frequency (cycles/pixel; 0.5 = Nyquist along an axis, up to 0.71 in the corners),
each curve shifted to start at 0 dB. Transposed-convolution generators (CycleGAN, GAN Compression) tend to leave
excess power at the highest frequencies (a checkerboard); CUT's antialiased up-sampling is meant to suppress it."""


# horse2zebra testA (horses only: every model offered here translates horse → zebra, or is labelled otherwise)
EXAMPLES = ["horse-1030", "horse-1300", "horse-120", "horse-1620", "horse-1920", "horse-2100"]


def _choices() -> tuple[list[tuple[str, str]], str | None]:
    choices = runnable_choices(T.TASK)
    names = [name for _, name in choices]
    default = T.DEFAULT_MODEL if T.DEFAULT_MODEL in names else (names[0] if names else None)
    return choices, default


# Shown in the tab's status text (outputs cleared), not raised: a red "Error" over empty outputs explains nothing.
NO_MODEL = ("⚠️ No translation model can run here yet: the note at the top of the tab says which file to get and "
            "where to put it.")


def _summary(inp, out) -> str:
    share = spectrum.spectrum_summary({"input": inp, "output": out})
    band = {k: spectrum.band_energy(v, 0.35, 1.0) for k, v in (("input", inp), ("output", out))}
    return (f"Output {out.shape[1]}×{out.shape[0]}. Share of spectral power above 0.25 cycles/px: "
            f"input {share['input'] * 100:.2f} %, output {share['output'] * 100:.2f} %; "
            f"above 0.35 (where up-convolution artefacts sit): input {band['input'] * 100:.3f} %, "
            f"output {band['output'] * 100:.3f} %.")


UINT8_NOTE = ("Outputs are rounded to the nearest 8-bit level; the official code truncates (`tensor2im`), which is "
              "half a level darker on average (never more than one level). To reproduce the authors' saved images "
              "or their FID exactly: `python -m engine.translate_cli --uint8 truncate` and "
              "`python -m engine.fid` (truncates by default).")


@guarded
def translate_one(image, model, max_side, precision="fp32", progress=gr.Progress()):
    if not model:
        return None, None, NO_MODEL, []
    if image is None:
        raise InputError("Upload an image (or pick an example) first.")
    report = progress_callback(progress)
    if report:
        report(0.1, "translating")
    res = get_client().translate_detailed(image, model, max_side=int(max_side or 0) or None,
                                          precision=precision or T.DEFAULT_PRECISION)
    inp, out = res.input, res.output
    if report:
        report(0.9, "spectrum analysis")
    table = spectrum.spectrum_table({"input": inp, "output": out})
    maps = [(overlay, MAP_CAPTIONS.get(name, name)) for name, overlay in res.overlays().items()]
    return (inp, out), table, _summary(inp, out), maps


def show_maps(maps):
    """The model's extra maps (heat maps over the input), or a hidden gallery when the model has none."""
    return gr.Gallery(value=maps or None, visible=bool(maps))


@cancellable(4)
@guarded
def translate_gallery(items, model, max_side, precision="fp32", progress=gr.Progress()):
    if not model:
        return [], [], None, NO_MODEL
    if not items:
        raise InputError("Add one or more images to the gallery first.")
    res = get_client().translate_many(items, model, max_side=int(max_side or 0) or None,
                                      progress=progress_callback(progress),
                                      precision=precision or T.DEFAULT_PRECISION)
    for msg in res.errors:
        gr.Warning(f"Skipped {msg}")
    gallery = [(out, name) for out, name in zip(res.outputs, res.names)]
    pairs = list(zip(res.inputs, res.outputs))
    first = pairs[0] if pairs else None
    status = f"{res.ok} translated" + (f", {len(res.errors)} skipped: " + "; ".join(res.errors) if res.errors else ".")
    return gallery, pairs, first, status


def show_pair(pairs, evt: gr.SelectData):
    if not pairs or evt.index is None or evt.index >= len(pairs):
        return gr.skip()
    return pairs[evt.index]


@cancellable(2)
@guarded
def translate_clip(video, model, max_side, max_seconds, precision="fp32", progress=gr.Progress()):
    if not model:
        return None, NO_MODEL
    if not video:
        raise InputError("Upload a video file first.")
    res = get_client().translate_video(video, model, max_side=int(max_side or 0) or T.VIDEO_MAX_SIDE,
                            max_seconds=float(max_seconds), progress=progress_callback(progress),
                            precision=precision or T.DEFAULT_PRECISION)
    note = (f"{res.frames} frames at {res.fps:.3g} fps, {res.width}×{res.height}"
            + (f" — only the first {max_seconds:g} s were translated (the clip is longer)." if res.truncated else ".")
            + " Audio is not kept.")
    return str(res.path), note


def build(ctx: AppContext) -> None:
    gr.Markdown(INTRO)
    choices, default = _choices()
    show_weights_notice([m.name for m in T.translation_models()], any_runnable=bool(choices))
    with gr.Row():
        model = gr.Dropdown(choices=choices, value=default, label="Model", interactive=bool(choices), scale=3,
                            info=None if choices else "no translation model can run yet: see the note above")
        max_side = gr.Slider(0, 2048, value=512, step=32, label="Max side (px, 0 = keep the size)", scale=2)
    precision = gr.Radio(choices=T.precision_choices(), value=T.DEFAULT_PRECISION, label="Precision",
                         info=UINT8_NOTE)

    with gr.Tab("One image"):
        with gr.Row():
            image = gr.Image(label="Input", type="filepath", image_mode=None, sources=["upload", "clipboard"], height=360)
            slider = gr.ImageSlider(label="Input ↔ output (drag to compare)", type="numpy", max_height=360,
                                    interactive=False)
            maps_view = gr.Gallery(label="What the model attends to (heat map over the input)", visible=False,
                                   columns=1, height=360, interactive=False, format="png", allow_preview=True)
        run, stop = run_buttons("Translate")
        examples = [f for key in EXAMPLES if (f := example_files(key))]
        if examples and choices:  # offered only when a model can translate them
            gr.Examples(examples=examples, inputs=[image], label="Examples (horse2zebra test set)")
        with gr.Accordion("Analysis: 1-D power spectrum of input and output", open=True):
            gr.Markdown(SPECTRUM_HELP)
            plot = gr.LinePlot(x="frequency", y="power_db", color="image", x_title="spatial frequency (cycles/pixel)",
                               y_title="power (dB, relative)", height=320, label="Azimuthally averaged spectrum")
            summary = gr.Markdown()
        maps = gr.State([])
        one_event = run.click(cancellable(4)(translate_one), [image, model, max_side, precision],
                              [slider, plot, summary, maps], **ENGINE_QUEUE)
        one_event.then(show_maps, [maps], [maps_view], queue=False)
        cancel_button(one_event, button=stop)

    with gr.Tab("Several images"):
        with gr.Row():
            gallery_in = gr.Gallery(label="Inputs (drop several images)", type="filepath", interactive=True,
                                    columns=4, height=300, file_types=["image"])
            gallery_out = gr.Gallery(label="Translations (click one to compare)", columns=4, height=300,
                                     interactive=False, format="png")
        run_many = gr.Button("Translate all", variant="primary")
        status_many = gr.Markdown()
        pairs = gr.State([])
        pair_view = gr.ImageSlider(label="Selected: input ↔ output", type="numpy", max_height=360, interactive=False)
        many_event = run_many.click(translate_gallery, [gallery_in, model, max_side, precision],
                                    [gallery_out, pairs, pair_view, status_many], **LONG_QUEUE)
        cancel_button(many_event)
        gallery_out.select(show_pair, [pairs], [pair_view])

    with gr.Tab("Video"):
        with gr.Row():
            video_in = gr.Video(label="Input video", sources=["upload"])
            video_out = gr.Video(label="Translated (H.264 MP4)", interactive=False)
        seconds = gr.Slider(1, 30, value=5, step=1, label="Translate at most this many seconds")
        gr.Markdown(f"Frames are shrunk to the max side above ({T.VIDEO_MAX_SIDE} px when it is 0) and padded to "
                    "even sizes (one edge pixel) for H.264.")
        run_video = gr.Button("Translate video", variant="primary")
        status_video = gr.Markdown()
        video_event = run_video.click(translate_clip, [video_in, model, max_side, seconds, precision],
                                      [video_out, status_video], **LONG_QUEUE)
        cancel_button(video_event)
