"""Correspondence tab: dense correspondence between two images, click-a-point matching, and (GANgealing)
congealing of one image. Works with any backend of engine.correspondence: the weight-free classic matcher for any
pair of images, or a GANgealing model for its category."""
from __future__ import annotations

import importlib.util

import gradio as gr

from demos.common import (
    ENGINE_QUEUE, AppContext, cancel_button, cancellable, example_files, guarded, progress_callback, run_buttons,
    weights_notice,
)
from engine import imageio, registry
from engine.client import get_client
from engine.correspondence import get_backend, list_backends, visualise

from engine.errors import InputError

MAX_SIDE = 512

INTRO = """### Dense correspondence
Pick two images of the same kind of object, press **Match**, then click a point on image A to see where it lands
in image B. The colour-coded view paints B with a colour per position and gives every pixel of A the colour of
its match in B, so a good match shows the same colour layout on both objects (grey: low confidence).
*Classic (no weights)* works offline for any pair; GANgealing backends need their category's checkpoint (cat,
dog, face, car, ...)."""

# pairs of examples/manifest.toml keys: CelebA-HQ faces, AFHQ cats, and GANgealing's average face (a close-up)
# against a full portrait (different scales). The classic backend needs no weights, so they always run.
EXAMPLE_PAIRS = [("face-female-039913", "face-female-051340"), ("cat-flickr_cat_000253", "cat-pixabay_cat_000181"),
                 ("gangealing-average-celeba", "face-female-069067")]


def backend_choices() -> tuple[list[tuple[str, str]], str | None]:
    """(label, name) of the backends that can run now, and the default (the first); the others are in
    :func:`backend_notice`."""
    choices = [(title, name) for name, title in list_backends() if get_backend(name).status()[0]]
    return choices, (choices[0][1] if choices else None)


def backend_notice() -> str:
    """Markdown naming, once, what the backends that cannot run are missing ('' when all can run)."""
    models, other = [], []
    for name, title in list_backends():
        backend = get_backend(name)
        ok, message = backend.status()
        if ok:
            continue
        model = getattr(backend, "registry_name", None)  # a backend built on a registry model (GANgealing)
        if model and not registry.model_status(model).usable:
            if model not in models:
                models.append(model)
        elif title not in other:
            other.append(title)
    notice = weights_notice(models)
    if other:
        notice += ("\n\n" if notice else "") + (
            f"⚠️ {', '.join(other)}: the weights are here but the model's average image (the canvas) is not; start "
            "with `--data-dir` pointing at a folder with `gangealing-assets/assets/averages`.")
    return notice

def _usable(name: str):
    if not name:
        raise InputError("Choose a backend first.")
    backend = get_backend(name)
    ok, message = backend.status()
    if not ok:
        raise InputError(f"{backend.title} cannot run here: its checkpoint or average image is missing (see the note "
                         "at the top of the tab).")
    return backend

def load_working_image(src, what: str = "", max_side: int = MAX_SIDE):
    """An upload as (H, W, 3) uint8, shrunk to ``max_side``; refused when it is (or would become) thinner than
    8 pixels."""
    if src is None:
        raise InputError(f"Upload image {what} first (or click an example).".replace("  ", " "))
    img = imageio.resize_max_side(imageio.load_image(src, min_side=imageio.MIN_SIDE), max_side)
    if min(img.size) < imageio.MIN_SIDE:
        raise InputError(f"Image {what} is too thin: shrunk to a max side of {max_side} px it would be "
                         f"{img.width}x{img.height}.".replace("  ", " "))
    return imageio.as_numpy_rgb(img)

def colour_views(a, b, flow, confidence):
    """Dense colour-coded view without holes: B is painted with a colour key of its positions and every pixel of A
    takes the key colour of where it lands in B (grey where the match is not trusted)."""
    coloured_a, key = visualise.correspondence_colors(flow, b.shape, confidence)
    return (0.6 * coloured_a + 0.4 * a).astype("uint8"), (0.6 * key + 0.4 * b).astype("uint8")

@guarded
def match_images(backend_name, a_src, b_src, progress=gr.Progress()):
    backend = _usable(backend_name)
    a, b = load_working_image(a_src, "A"), load_working_image(b_src, "B")
    result = get_client().match(backend_name, a, b, progress=progress_callback(progress))
    view_a, view_b = colour_views(a, b, result.flow, result.confidence)
    conf = visualise.overlay(a, visualise.colorize(result.confidence, 0.0, 1.0), 0.6)
    note = (f"Matched {a.shape[1]}×{a.shape[0]} → {b.shape[1]}×{b.shape[0]} with {backend.title}; "
            f"mean confidence {float(result.confidence.mean()):.2f}. Click a point on image A.")
    align = result.extras.get("alignment")
    if align is not None:   # classic backend: the global alignment it found before the flow
        note += (f"\n\nGlobal alignment found first: B's content is {1 / align.scale:.2f}× the size of A's"
                 + (", mirrored" if getattr(align, "flip", False) else "") + "; the flow then adds local motion.")
    if result.extras.get("warning"):
        gr.Warning(result.extras["warning"])
        note += f"\n\n⚠️ {result.extras['warning']}"
    state = {"a": a, "b": b, "flow": result.flow, "confidence": result.confidence, "backend": backend_name}
    return view_a, view_b, conf, a, b, None, note, state

@guarded
def click_point(state, evt: gr.SelectData):
    if not state:
        raise InputError("Press Match first, then click a point on image A.")
    x, y = evt.index[0], evt.index[1]
    mx, my, conf = visualise.match_point(state["flow"], state["confidence"], x, y)
    heat = None
    similarity = get_client().similarity(state["backend"], state["a"], state["b"], x, y)  # optional per backend
    if similarity is not None:
        heat = visualise.overlay(state["b"], visualise.colorize(similarity, 0.0, 1.0), 0.6)
    marked_b = visualise.draw_marker(heat if heat is not None else state["b"], mx, my)
    text = f"A ({x}, {y}) → B ({mx:.1f}, {my:.1f}), confidence {conf:.2f}"
    if conf < 0.2:
        text += " — low confidence: this point is probably occluded or ambiguous."
    return visualise.draw_marker(state["a"], x, y), marked_b, text

def build(ctx: AppContext) -> None:
    gr.Markdown(INTRO)
    choices, default = backend_choices()
    notice = backend_notice()
    if notice:
        with gr.Accordion("⚠️ Backends not available on this machine: how to get them", open=False):
            gr.Markdown(notice)
    backend = gr.Dropdown(choices=choices, value=default, label="Backend", interactive=True)
    with gr.Row():
        a_in = gr.Image(label="Image A", type="filepath", image_mode=None, sources=["upload", "clipboard"], height=300)
        b_in = gr.Image(label="Image B", type="filepath", image_mode=None, sources=["upload", "clipboard"], height=300)
    run, stop = run_buttons("Match")
    pairs = [f for keys in EXAMPLE_PAIRS if (f := example_files(*keys))]
    if pairs:
        gr.Examples(pairs, [a_in, b_in], label="Examples (CelebA-HQ faces, AFHQ cats, GANgealing's average face)")
    note = gr.Markdown()
    with gr.Row():
        view_a = gr.Image(label="A, each pixel in the colour of its match in B", type="numpy", interactive=False)
        view_b = gr.Image(label="B, colour key of positions", type="numpy", interactive=False)
        conf = gr.Image(label="Confidence of each match of A (yellow = high)", type="numpy", interactive=False)
    gr.Markdown("**Click a point on image A** (left) to see its match in B.")
    with gr.Row():
        click_a = gr.Image(label="A (click here)", type="numpy", interactive=False)
        click_b = gr.Image(label="Match in B (over the similarity map when the backend gives one)", type="numpy",
                           interactive=False)
    point = gr.Markdown()
    state = gr.State(None)
    match_event = run.click(cancellable(8)(match_images), [backend, a_in, b_in],
                            [view_a, view_b, conf, click_a, click_b, point, note, state], api_name="match",
                            **ENGINE_QUEUE)
    cancel_button(match_event, button=stop)
    click_a.select(click_point, [state], [click_a, click_b, point], api_name="match_point")
    if importlib.util.find_spec("demos.gangealing_panels") is not None:
        from demos.gangealing_panels import build_congeal_panel

        with gr.Accordion("Congeal with GANgealing", open=False):
            build_congeal_panel(ctx)
