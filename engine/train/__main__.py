"""``python -m engine.train``: train CUT / FastCUT (Park et al., ECCV 2020) on two image folders, or export.

    python -m engine.train cut --a .../horse2zebra/trainA --b .../horse2zebra/trainB --out runs/cut_h2z
    python -m engine.train fastcut --a ... --b ... --out runs/fastcut_h2z --time-budget 20m
    python -m engine.train cut --out runs/cut_h2z --resume            # continue from runs/cut_h2z/checkpoints/latest.pt
    python -m engine.train export runs/cut_h2z --out weights/ours/cut_h2z.pth --fp16 --key cut-h2z-ours
    python -m engine.train pack --a .../trainA --b .../trainB --out .h2z --quality 85   # a copy small enough to carry
    python -m engine.train ugatit --a .../trainA --b .../trainB --out runs/ugatit_h2z [--light]   # U-GAT-IT (ICLR 2020)

Without --a/--b, DATA_DIR/horse2zebra/trainA and trainB are used when present. Defaults are the official ones
(see engine/train/config.py); everything can be made tiny for a smoke test (--crop-size 64 --load-size 72 --ngf 16).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _duration(text: str) -> float:
    """Seconds from '90', '90s', '20m', '1.5h'."""
    text = text.strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600}.get(text[-1:], None)
    return float(text[:-1]) * scale if scale else float(text)


def _train_parser(sub, mode: str) -> None:
    p = sub.add_parser(mode, help=f"train {mode.upper()}",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--a", dest="a_dir", help="folder of domain-A images (input domain, e.g. horses)")
    p.add_argument("--b", dest="b_dir", help="folder of domain-B images (target domain, e.g. zebras)")
    p.add_argument("--out", dest="out_dir", default=f"runs/{mode}", help="run folder (checkpoints, samples, export)")
    p.add_argument("--resume", nargs="?", const="", default=None,
                   help="continue a run: a checkpoint file or run folder (default: --out's latest checkpoint)")
    g = p.add_argument_group("networks")
    g.add_argument("--ngf", type=int, help="generator width (64 official; 32 or 16 for a small, fast model)")
    g.add_argument("--n-blocks", type=int, help="residual blocks (CUT 9, U-GAT-IT 4)")
    g.add_argument("--ndf", type=int, help="discriminator width (64)")
    if mode == "ugatit":
        _ugatit_arguments(p, g)
    else:
        _cut_arguments(p, g)
    _common_arguments(p)


def _ugatit_arguments(p, g) -> None:
    g.add_argument("--light", action="store_true", default=None,
                   help="U-GAT-IT light: the AdaLIN MLP reads pooled features (less memory; any size at inference)")
    g.add_argument("--n-layers-d-global", type=int, help="global discriminator layers (7)")
    g.add_argument("--n-layers-d-local", type=int, help="local discriminator layers (5)")
    g = p.add_argument_group("losses")
    g.add_argument("--lambda-adv", type=float, help="adversarial weight (1)")
    g.add_argument("--lambda-cycle", type=float, help="cycle weight (10)")
    g.add_argument("--lambda-identity", type=float, help="identity weight (10)")
    g.add_argument("--lambda-cam", type=float, help="CAM weight (1000)")
    g.add_argument("--weight-decay", type=float, help="Adam weight decay (1e-4)")


def _cut_arguments(p, g) -> None:
    g.add_argument("--n-layers-d", type=int, help="PatchGAN layers (3 = 70x70)")
    g.add_argument("--no-d-antialias", dest="d_antialias", action="store_false", default=None,
                   help="stride-2 discriminator convs instead of CUT's blur-pool")
    g = p.add_argument_group("losses")
    g.add_argument("--lambda-gan", type=float)
    g.add_argument("--lambda-nce", type=float)
    g.add_argument("--nce-idt", type=lambda s: s.lower() in ("1", "true", "yes"), help="identity NCE (true/false)")
    g.add_argument("--flip-equivariance", type=lambda s: s.lower() in ("1", "true", "yes"), help="true/false")
    g.add_argument("--nce-layers", type=lambda s: tuple(int(x) for x in s.split(",")), help="e.g. 0,4,8,12,16")
    g.add_argument("--num-patches", type=int)
    g.add_argument("--nce-t", type=float)
    g.add_argument("--netf-nc", type=int, help="MLP head width (256)")


def _common_arguments(p) -> None:
    g = p.add_argument_group("optimisation")
    g.add_argument("--lr", type=float)
    g.add_argument("--beta1", type=float)
    g.add_argument("--beta2", type=float)
    g.add_argument("--n-epochs", type=int, help="epochs at the initial learning rate")
    g.add_argument("--n-epochs-decay", type=int, help="epochs of linear decay to zero")
    g.add_argument("--epoch-size", type=int, help="iterations per epoch (default max(|A|,|B|)/batch)")
    g.add_argument("--batch-size", type=int)
    g = p.add_argument_group("data")
    g.add_argument("--load-size", type=int, help="resize to this square size before cropping (286)")
    g.add_argument("--crop-size", type=int, help="random crop size (256)")
    g.add_argument("--no-flip", action="store_true", default=None, help="no random horizontal flip")
    g.add_argument("--max-images", type=int, help="use only the first N images of each folder")
    g = p.add_argument_group("run control")
    g.add_argument("--seed", type=int)
    g.add_argument("--device", help="cpu, cuda, cuda:1 (default: best available)")
    g.add_argument("--amp", choices=["auto", "off", "bf16", "fp16"], help="mixed precision on CUDA (auto)")
    g.add_argument("--workers", dest="num_workers", type=int, help="data loader processes")
    g.add_argument("--print-every", type=int)
    g.add_argument("--sample-every", type=int, help="write a sample grid PNG every N steps (0 = only at the end)")
    g.add_argument("--save-every", type=int, help="write checkpoints/latest.pt every N steps")
    g.add_argument("--n-samples", type=int, help="rows of the sample grid")
    g.add_argument("--max-steps", type=int, help="stop after N iterations in total (0 = whole schedule)")
    g.add_argument("--time-budget", type=_duration, help="stop (checkpoint + export) after this long: 900, 20m, 2h")
    g.add_argument("--export-fp16", action="store_true", default=None, help="export the generator in float16")


def _export_parser(sub) -> None:
    p = sub.add_parser("export", help="export a run's generator in the official CUT layout")
    p.add_argument("checkpoint", help="training checkpoint file or run folder")
    p.add_argument("--out", required=True, help="output .pth path")
    p.add_argument("--fp16", action="store_true", help="store float16 tensors (half size)")
    p.add_argument("--key", default="cut-horse2zebra-ours", help="registry / manifest name for the printed snippet")
    p.add_argument("--title", default="CUT horse → zebra (ours)")
    p.add_argument("--rel-path", help="path inside a weights folder for the manifest (default ours/<file name>)")


def _pack_parser(sub) -> None:
    p = sub.add_parser("pack", help="re-encode two image folders as RGB JPEG (OUT/trainA, OUT/trainB) to carry them")
    p.add_argument("--a", dest="a_dir", required=True)
    p.add_argument("--b", dest="b_dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--quality", type=int, default=85)
    p.add_argument("--max-images", type=int, default=0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.train", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _train_parser(sub, "cut")
    _train_parser(sub, "fastcut")
    _train_parser(sub, "ugatit")
    _export_parser(sub)
    _pack_parser(sub)
    args = parser.parse_args(argv)

    if args.command == "pack":
        from .data import pack_folder

        grand = 0
        for name, src in (("trainA", args.a_dir), ("trainB", args.b_dir)):
            n, size = pack_folder(src, Path(args.out) / name, args.quality, args.max_images)
            grand += size
            print(f"{name}: {n} images, {size / 2 ** 20:.1f} MiB")
        print(f"total {grand / 2 ** 20:.1f} MiB in {args.out}")
        return 0

    if args.command == "export":
        from . import checkpoint as ckpt_io
        from .export import export_from_checkpoint, registry_snippet

        state = ckpt_io.load(args.checkpoint)
        if state.get("format") == ckpt_io.UGATIT_FORMAT:
            from .ugatit import export_from_checkpoint as export_ugatit, install_hint

            info = export_ugatit(state, args.out, fp16=args.fp16)
            print(json.dumps(info, indent=2))
            print()
            print(install_hint(info, args.out))
            return 0
        del state
        info = export_from_checkpoint(args.checkpoint, args.out, fp16=args.fp16)
        print(json.dumps(info, indent=2))
        print()
        print(registry_snippet(info, args.key, args.rel_path or f"ours/{Path(args.out).name}", args.title))
        return 0

    from ..errors import InputError
    from .config import make_config

    values = {k: v for k, v in vars(args).items() if k not in ("command", "resume")}
    if not values.get("a_dir") or not values.get("b_dir"):
        from .. import config as engine_config

        data = engine_config.data_dir()
        if args.resume is None:
            if data is None or not (data / "horse2zebra" / "trainA").is_dir():
                raise SystemExit("--a and --b are required (no DATA_DIR/horse2zebra found)")
            values["a_dir"] = values.get("a_dir") or str(data / "horse2zebra" / "trainA")
            values["b_dir"] = values.get("b_dir") or str(data / "horse2zebra" / "trainB")
            print(f"data: {values['a_dir']} -> {values['b_dir']}")
    cfg = make_config(args.command, **values)
    resume = None
    if args.resume is not None:
        resume = args.resume or cfg.out_dir
    from .cut import train

    try:
        summary = train(cfg, resume=resume)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    summary.pop("trainer", None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
