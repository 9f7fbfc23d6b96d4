"""GAN studio: one web app for image-to-image GAN papers, on one shared inference engine.

    python app.py [--host 127.0.0.1] [--port 7860] [--share] [--device cpu|cuda|mps]
                  [--weights-dir DIR ...] [--data-dir DIR] [--offline] [--engine local|ray|ray://HOST:PORT]

Thin on purpose: it reads the flags, builds the four tabs from demos/ and launches.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
from pathlib import Path

TABS = [  # (tab label, demos module)
    ("Style transfer", "demos.style"),
    ("Horse → Zebra", "demos.translate"),
    ("Correspondence", "demos.correspondence"),
    ("Propagation", "demos.propagation"),
]
# A message belongs to the tab it came from: switching tabs closes the open toasts instead of leaving them stacked
# over the next tab.
CLOSE_TOASTS_ON_TAB_CHANGE = """() => {
  document.addEventListener("click", (event) => {
    if (event.target.closest && event.target.closest("button[role='tab']")) {
      document.querySelectorAll(".toast-close").forEach((button) => button.click());
    }
  }, true);
}"""
MAX_UPLOAD_MB = 200  # per uploaded file; env ENGINE_MAX_UPLOAD_MB overrides


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="GAN studio: AdaIN, CycleGAN/CUT/GAN Compression, GANgealing demos")
    p.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), help="address to listen on")
    p.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    p.add_argument("--share", action="store_true", help="also create a public gradio.live link")
    p.add_argument("--device", help="cpu, cuda, cuda:N or mps (default: best available; env ENGINE_DEVICE)")
    p.add_argument("--weights-dir", action="append", default=[], help="folder with checkpoints (repeatable; env WEIGHTS_DIR)")
    p.add_argument("--data-dir", help="folder with example data, e.g. ../shared/data (env DATA_DIR)")
    p.add_argument("--offline", action="store_true", help="never download weights (env ENGINE_OFFLINE=1)")
    p.add_argument("--random-weights", action="store_true", help="tiny smoke-test mode: random weights for every model")
    p.add_argument("--engine", help="local (default: in this process), ray (the gan-studio Ray Serve application "
                                    "of this machine's Ray cluster) or ray://HOST:PORT (env ENGINE_BACKEND)")
    args, unknown = p.parse_known_args(argv)
    problems = [f"unknown option {u}" for u in unknown if u.startswith("-")]
    problems += [f"unexpected argument {u}" for u in unknown if not u.startswith("-")]
    for flag, folders in (("--weights-dir", args.weights_dir), ("--data-dir", [args.data_dir] if args.data_dir else [])):
        problems += [f"{flag} {d} is not a folder" for d in folders if not Path(d).expanduser().is_dir()]
    if problems:  # one line, then exit: a mistyped flag or folder must not be silently ignored
        p.exit(2, f"app.py: {'; '.join(problems)} (see python app.py --help).\n")
    return args


def apply_settings(args: argparse.Namespace) -> None:
    """Flags become the engine's environment settings (read lazily by engine.config)."""
    if args.weights_dir:
        os.environ["WEIGHTS_DIR"] = os.pathsep.join(str(Path(d).expanduser()) for d in args.weights_dir)
    if args.data_dir:
        os.environ["DATA_DIR"] = str(Path(args.data_dir).expanduser())
    if args.device:
        os.environ["ENGINE_DEVICE"] = args.device
    if args.offline:
        os.environ["ENGINE_OFFLINE"] = "1"
    if args.random_weights:
        os.environ["ENGINE_RANDOM_WEIGHTS"] = "1"
    if args.engine:
        os.environ["ENGINE_BACKEND"] = args.engine


def build_app():
    import gradio as gr

    from demos.common import AppContext
    from demos.guard import guard_app
    from engine import config, imageio

    imageio.limit_decoders()  # Gradio decodes webcam frames itself: PIL refuses anything over 2x the pixel limit

    from engine import examples

    examples.prefetch()  # examples not in the data folder or the cache are downloaded now when allowed (else skipped)
    ctx = AppContext(data_dir=config.data_dir(), device=os.environ.get("ENGINE_DEVICE"))
    # uploads and outputs in Gradio's cache are deleted an hour after they were made (checked every 15 minutes)
    with gr.Blocks(title="GAN studio", delete_cache=(900, 3600)) as demo:
        gr.Markdown("# GAN studio\nStyle transfer, unpaired translation and dense alignment — the papers' official "
                    "checkpoints on one engine, on CPU or GPU.")
        for label, module_name in TABS:
            with gr.Tab(label):
                try:
                    importlib.import_module(module_name).build(ctx)
                except Exception as exc:  # one broken tab must not take the app down
                    logging.getLogger("gan-studio").exception("tab %s failed to build", label)
                    gr.Markdown(f"⚠️ This tab could not be built: `{type(exc).__name__}: {exc}`")
    guard_app(demo)  # every handler and component: clear messages, no paths, uploads validated by the engine
    engine_concurrency(demo)
    demo.queue(default_concurrency_limit=4)
    return demo


def engine_concurrency(demo) -> None:
    """The shared engine queue runs one job at a time in-process; on Ray Serve as many as the replicas can take."""
    from engine.client import get_client
    from engine.queue import GRADIO_CONCURRENCY_ID

    limit = get_client().concurrency
    if limit > 1:   # the engine lanes with a limit (one-at-a-time and long jobs; streams have none)
        for fn in demo.fns.values():
            if str(fn.concurrency_id).startswith(GRADIO_CONCURRENCY_ID) and isinstance(fn.concurrency_limit, int):
                fn.concurrency_limit = max(fn.concurrency_limit, limit)


def allowed_paths() -> list[str]:
    """Folders the browser may load example files from: the data folder and the examples download cache."""
    from engine import config, examples

    data = config.data_dir()
    return [str(p) for p in (data, examples.cache_dir()) if p]


def check_environment() -> None:
    """Log one line for each configured folder (env WEIGHTS_DIR / DATA_DIR) that does not exist."""
    from engine import config

    log = logging.getLogger("gan-studio")
    for folder in config.weights_dirs():
        if not folder.is_dir():
            log.warning("WEIGHTS_DIR: %s is not a folder; it is ignored", folder)
    value = os.environ.get("DATA_DIR", "").strip()
    if value and not Path(value).expanduser().is_dir():
        log.warning("DATA_DIR: %s is not a folder; no data-folder examples", value)


def launch_kwargs() -> dict:
    """Launch settings (the security-relevant ones and the page script), shared by main() and the tests that
    launch the app in-process."""
    limit_mb = float(os.environ.get("ENGINE_MAX_UPLOAD_MB", MAX_UPLOAD_MB))
    return {"allowed_paths": allowed_paths(), "max_file_size": int(limit_mb * 1024 * 1024), "show_error": True,
            "js": page_script()}


def page_script() -> str:
    """The page's script: toasts closed on a tab change, and clicks that follow an example wait for it."""
    from demos.guard import EXAMPLES_FIRST_JS

    return f"() => {{ ({CLOSE_TOASTS_ON_TAB_CHANGE})(); ({EXAMPLES_FIRST_JS})(); }}"


def main(argv=None) -> None:
    args = parse_args(argv)
    apply_settings(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_environment()
    demo = build_app()
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, **launch_kwargs())


if __name__ == "__main__":
    main()
