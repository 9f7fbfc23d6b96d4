"""GANgealing-only UI, placed by the Correspondence tab inside an accordion: congeal one image.

``build_congeal_panel(ctx)`` shows the aligned (congealed) image, a colour map of the dense flow, the model's
labelled average carried onto the image (dense correspondence at a glance) and an alignment quality score with a
warning when the alignment likely failed. Engine work: engine.client (congeal: engine.pipelines.gangealing.congeal_image
in process or on Ray Serve; no torch here).
"""
from __future__ import annotations

import gradio as gr

from demos.common import (
    ENGINE_QUEUE, AppContext, cancel_button, cancellable, example_files, guarded, progress_callback, run_buttons,
    runnable_choices,
)
from engine.client import get_client
from engine.errors import InputError

TASK = "congeal"
DEFAULT_MODEL = "gangealing-cat"
RESOLUTIONS = [128, 256, 512]

INTRO = """#### Congeal an image (GANgealing, Peebles et al., CVPR 2022)
A spatial transformer trained only on GAN-generated pairs warps an image of the model's category (cat, dog, face,
car, ...) into one shared *congealed* frame: a similarity transform (rotation, scale, shift; refined iteratively)
followed by a dense flow. Every pixel of the congealed frame then means the same object part in every image, which
is what the dense correspondence and propagation rely on. Single-cluster models also try the mirrored image and keep
the smoother warp; car and horse pick one of four clusters (and the mirror) with their classifier."""

FLOW_HELP = ("Colour = direction each aligned pixel was fetched from (white: not moved; stronger colour: farther, "
             "full saturation at the 99th-percentile distance given below).")


def quality_markdown(report) -> str:
    q = report.quality
    lines = [
        f"**{'⚠️ ' if q.flagged else '✅ '}{q.message}**",
        "",
        "| measure | value | meaning |",
        "|---|---|---|",
        f"| alignment score: TV of the residual flow | {q.tv:.3g} | the official smoothness score (flip inference, "
        "data filtering); lower = smoother; flagged above 1.5e-5 |",
        f"| warp roughness = 128·√TV | {q.roughness:.3f} px/px | RMS local stretch of the residual flow (limit 0.5) |",
        f"| aligned view outside the image | {q.outside:.0%} | flagged above 50% |",
        f"| mirrored before aligning | {'yes' if report.mirrored else 'no'} | |",
    ]
    if report.cluster is not None:
        lines.append(f"| cluster | {report.cluster} | chosen by the cluster classifier |")
    lines.append(f"| flow colour scale | {report.max_displacement:.1f} px | full saturation |")
    lines += ["", "_The flag thresholds are heuristics (not calibrated on the official checkpoints)._"]
    return "\n".join(lines)


@guarded
def congeal(image, model, resolution, flip, progress=gr.Progress()):
    if not model:
        raise InputError("No GANgealing model selected.")
    if image is None:
        raise InputError("Upload an image (or pick an example) first.")
    report_progress = progress_callback(progress)
    if report_progress:
        report_progress(0.1, "congealing")
    report = get_client().congeal(model, image, resolution=int(resolution or 256), flip=bool(flip))
    if report.quality.flagged:
        gr.Warning(report.quality.message)
    return report.aligned, report.flow, report.correspondence, quality_markdown(report)


EXAMPLES = [  # (examples/manifest.toml key, the model that aligns it)
    ("cat-flickr_cat_000253", "gangealing-cat"), ("cat-pixabay_cat_000181", "gangealing-cat"),
    ("dog-flickr_dog_000094", "gangealing-dog"), ("dog-pixabay_dog_000321", "gangealing-dog"),
    ("face-female-039913", "gangealing-celeba"), ("face-female-051340", "gangealing-celeba"),
]


def _examples(runnable: set[str]) -> list[list]:
    """[image, model] rows whose model can run now and whose image is here."""
    return [[f[0], model] for key, model in EXAMPLES if model in runnable and (f := example_files(key))]


def build_congeal_panel(ctx: AppContext) -> None:
    """Build the panel inside the caller's current Blocks context (e.g. a gr.Accordion)."""
    choices = runnable_choices(TASK)
    names = [name for _, name in choices]
    default = DEFAULT_MODEL if DEFAULT_MODEL in names else (names[0] if names else None)
    gr.Markdown(INTRO)
    if not choices:  # nothing to offer; the tab's notice (backends) already lists the checkpoints and how to get them
        gr.Markdown("⚠️ No GANgealing checkpoint is on this machine yet: see *Backends not available* at the top of "
                    "the tab for the files and where to put them.")
        return
    with gr.Row():
        with gr.Column():
            model = gr.Dropdown(choices, value=default, label="GANgealing model",
                                info="each model aligns one category; its checkpoint must be in a weights folder")
            image = gr.Image(type="numpy", label="Image to align", sources=["upload", "clipboard", "webcam"])
            with gr.Row():
                resolution = gr.Radio(RESOLUTIONS, value=256, label="Output resolution (px)")
                flip = gr.Checkbox(True, label="Flip inference", info="try the mirror too (single-cluster models)")
            button, stop = run_buttons("Congeal")
            examples = _examples(set(names))
            if examples:
                gr.Examples(examples, inputs=[image, model], label="Examples")
        with gr.Column():
            with gr.Row():
                aligned = gr.Image(label="Aligned (congealed)", type="numpy", interactive=False)
                flow = gr.Image(label="Dense flow", type="numpy", interactive=False)
            gr.Markdown(FLOW_HELP)
            correspondence = gr.Image(label="The model's labelled average carried onto the image", type="numpy",
                                      interactive=False)
            quality = gr.Markdown()
    event = button.click(cancellable(4)(congeal), [image, model, resolution, flip],
                         [aligned, flow, correspondence, quality], **ENGINE_QUEUE)
    cancel_button(event, button=stop)
