"""Fréchet Inception Distance, following the pytorch-fid protocol.

M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter. "GANs Trained by a Two Time-Scale Update Rule
Converge to a Local Nash Equilibrium." NeurIPS 2017. Protocol of M. Seitzer's pytorch-fid (the one CUT and GAN
Compression report): the TensorFlow FID Inception-v3 (``pt_inception-2015-12-05``), pool3 features (2048-d, after
the final average pool), images as RGB in [0, 1] resized to 299×299 bilinearly (``align_corners=False``) and scaled
to [-1, 1]; statistics mean and ``np.cov(rowvar=False)``; distance

    d² = ‖μ₁ − μ₂‖² + Tr(Σ₁) + Tr(Σ₂) − 2·Tr((Σ₁Σ₂)^{1/2})

with ``scipy.linalg.sqrtm`` and the usual numerical fixes (an ε·I offset when the product is singular, dropping a
negligible imaginary part).

The FID Inception differs from torchvision's: TF-style average pools that ignore zero padding in the A, C and first
E blocks, and a max pool in the last E block; 1008 classes. Its weights (``pt_inception-2015-12-05-6726825d.pth``)
are the ``fid-inception`` entry of weights/manifest.toml; any other feature network (a callable mapping
(N, 3, H, W) in [0, 1] to (N, D)) can be passed instead, e.g. for tests.

    python -m engine.fid --model gancompression-horse2zebra [--inception-weights FILE] [--data DIR]
    python -m engine.fid --real DIR_B --fake DIR_OF_TRANSLATIONS --inception-weights FILE
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import EngineError, InputError

INCEPTION_KEY = "fid-inception"
INPUT_SIZE = 299
Progress = Callable[[float, str], None] | None


# ---- the distance ---------------------------------------------------------------------------------------------

def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2) (squared, as FID reports it)."""
    from scipy import linalg

    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
        if not np.isfinite(covmean).all():
            # product (nearly) singular: regularise both covariances
            offset = np.eye(sigma1.shape[0]) * eps
            covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm has a significant imaginary part ({np.abs(covmean.imag).max():.3g})")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def statistics(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of an (N, D) feature matrix (covariance with N-1, like np.cov)."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise InputError(f"Need at least two feature vectors for a covariance; got shape {features.shape}.")
    return features.mean(axis=0), np.cov(features, rowvar=False)


# ---- the FID Inception network --------------------------------------------------------------------------------

def _fid_blocks():
    """torchvision Inception blocks with the TF FID pooling quirks (defined lazily: torchvision is heavy)."""
    import torch
    import torch.nn.functional as F
    from torchvision.models.inception import InceptionA, InceptionC, InceptionE

    def avg_no_pad(x):  # TensorFlow's average pool does not count the zero padding
        return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)

    def max_pool(x):
        return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)

    class MixedA(InceptionA):
        def forward(self, x):
            b5 = self.branch5x5_2(self.branch5x5_1(x))
            b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
            return torch.cat([self.branch1x1(x), b5, b3, self.branch_pool(avg_no_pad(x))], 1)

    class MixedC(InceptionC):
        def forward(self, x):
            b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
            d = x
            for layer in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4,
                          self.branch7x7dbl_5):
                d = layer(d)
            return torch.cat([self.branch1x1(x), b7, d, self.branch_pool(avg_no_pad(x))], 1)

    class MixedE(InceptionE):
        def __init__(self, in_channels, pool):
            super().__init__(in_channels)
            self._pool = pool

        def forward(self, x):
            s = self.branch3x3_1(x)
            b3 = torch.cat([self.branch3x3_2a(s), self.branch3x3_2b(s)], 1)
            d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
            bd = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
            return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(self._pool(x))], 1)

    return MixedA, MixedC, MixedE, avg_no_pad, max_pool


def build_fid_inception():
    """The FID Inception-v3 (random weights) as a feature extractor: (N, 3, H, W) in [0, 1] -> (N, 2048)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from torchvision.models.inception import Inception3

    MixedA, MixedC, MixedE, avg_no_pad, max_pool = _fid_blocks()
    net = Inception3(num_classes=1008, aux_logits=False, init_weights=False)
    net.Mixed_5b = MixedA(192, pool_features=32)
    net.Mixed_5c = MixedA(256, pool_features=64)
    net.Mixed_5d = MixedA(288, pool_features=64)
    net.Mixed_6b = MixedC(768, channels_7x7=128)
    net.Mixed_6c = MixedC(768, channels_7x7=160)
    net.Mixed_6d = MixedC(768, channels_7x7=160)
    net.Mixed_6e = MixedC(768, channels_7x7=192)
    net.Mixed_7b = MixedE(1280, avg_no_pad)
    net.Mixed_7c = MixedE(2048, max_pool)

    class FIDInceptionFeatures(nn.Module):
        """pool3 features of the FID Inception; keeps the full classifier so the official file loads strictly."""

        input_size = INPUT_SIZE
        dims = 2048

        def __init__(self, inception: Inception3):
            super().__init__()
            self.inception = inception

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
                x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
            x = 2.0 * x - 1.0
            n = self.inception
            for layer in (n.Conv2d_1a_3x3, n.Conv2d_2a_3x3, n.Conv2d_2b_3x3):
                x = layer(x)
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            x = n.Conv2d_4a_3x3(n.Conv2d_3b_1x1(x))
            x = F.max_pool2d(x, kernel_size=3, stride=2)
            for layer in (n.Mixed_5b, n.Mixed_5c, n.Mixed_5d, n.Mixed_6a, n.Mixed_6b, n.Mixed_6c, n.Mixed_6d,
                          n.Mixed_6e, n.Mixed_7a, n.Mixed_7b, n.Mixed_7c):
                x = layer(x)
            return F.adaptive_avg_pool2d(x, 1).flatten(1)

    return FIDInceptionFeatures(net).eval()


def load_fid_inception(path: str | Path | None = None, device=None):
    """The FID Inception with the official weights (``path``, or the manifest's ``fid-inception`` entry)."""
    from . import weights
    from .device import select_device

    if path is None:
        path = weights.resolve(INCEPTION_KEY)
    model = build_fid_inception()
    state = weights.load_state_dict(Path(path))
    weights.load_strict(model.inception, state, name=Path(path).name)
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(select_device(device)).eval()


# ---- features of image sets -----------------------------------------------------------------------------------

def _to_tensor(src, size: int | None):
    import torch.nn.functional as F

    from . import imageio

    t = imageio.pil_to_tensor(imageio.load_image(src))
    if size:
        t = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)
    return t


def activations(images: Sequence, extractor, batch_size: int = 50, device=None,
                progress: Progress = None) -> np.ndarray:
    """(N, D) features of ``images`` (paths, PIL, arrays) under ``extractor`` ((N,3,H,W) in [0,1] -> (N,D)).

    When the extractor declares ``input_size`` (the FID Inception: 299), each image is resized to it first with
    bilinear interpolation (per image, which is what pytorch-fid's in-network resize does), so images of mixed
    sizes can share a batch; otherwise images in a batch must share a size.
    """
    import torch

    from .queue import run_exclusive

    items = list(images)
    if not items:
        raise InputError("No images to compute features of.")
    if device is None:
        try:
            device = next(extractor.parameters()).device
        except (AttributeError, StopIteration):
            device = torch.device("cpu")
    size = getattr(extractor, "input_size", None)
    feats = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        batch = torch.cat([_to_tensor(src, size) for src in chunk])

        def job():
            with torch.inference_mode():
                out = extractor(batch.to(device))
            if out.dim() == 4:  # spatial features: average them, as pytorch-fid does for non-1×1 maps
                out = out.mean(dim=(2, 3))
            return out.float().cpu().numpy()

        feats.append(run_exclusive(job))
        if progress:
            progress(min(start + batch_size, len(items)) / len(items), f"features {start + len(chunk)}/{len(items)}")
    return np.concatenate(feats, axis=0)


def fid_of_sets(images_a: Sequence, images_b: Sequence, extractor, batch_size: int = 50, device=None,
                progress: Progress = None) -> float:
    """FID between two image sets under ``extractor``."""
    mu1, s1 = statistics(activations(images_a, extractor, batch_size, device, progress))
    mu2, s2 = statistics(activations(images_b, extractor, batch_size, device, progress))
    return frechet_distance(mu1, s1, mu2, s2)


def evaluate_translation(model: str, source_dir: str | Path, target_dir: str | Path, extractor, *,
                         max_side: int | None = None, limit: int | None = None, device=None,
                         progress: Progress = None, uint8: str = "truncate") -> dict:
    """Translate every image of ``source_dir`` (e.g. horse2zebra/testA) with ``model`` and compute the FID of the
    translations against ``target_dir`` (testB). Also returns the FID of the untranslated sources (a baseline the
    translation should beat).

    The translations are computed in fp32 and converted to uint8 by ``uint8``: "truncate" (default: the official
    ``tensor2im`` rule the authors' saved images -- and the FIDs published from them -- went through) or "round"
    (what the app shows: nearest level, on average half a level brighter)."""
    from .pipelines import translate as T

    sources = T.list_images(source_dir)[:limit] if limit else T.list_images(source_dir)
    targets = T.list_images(target_dir)[:limit] if limit else T.list_images(target_dir)
    if len(sources) < 2 or len(targets) < 2:
        raise InputError("Need at least two images in each folder.")
    result = T.translate_many(sources, model, max_side=max_side, device=device, progress=progress,
                              max_images=None, precision="fp32", uint8=uint8)   # the official computation
    fake = result.outputs
    mu_b, s_b = statistics(activations(targets, extractor, device=device))
    mu_f, s_f = statistics(activations(fake, extractor, device=device))
    mu_a, s_a = statistics(activations(result.inputs, extractor, device=device))
    return {
        "model": model,
        "fid": frechet_distance(mu_f, s_f, mu_b, s_b),
        "fid_untranslated": frechet_distance(mu_a, s_a, mu_b, s_b),
        "n_fake": len(fake),
        "n_real": len(targets),
        "uint8": uint8,
        "skipped": result.errors,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m engine.fid", description="FID (pytorch-fid protocol).")
    parser.add_argument("--model", help="translate --source with this model, then compare with --target")
    parser.add_argument("--data", help="horse2zebra folder (default: DATA_DIR/horse2zebra)")
    parser.add_argument("--source", help="images to translate (default: <data>/testA)")
    parser.add_argument("--target", help="real target-domain images (default: <data>/testB)")
    parser.add_argument("--real", help="with --fake: FID between two folders, no translation")
    parser.add_argument("--fake")
    parser.add_argument("--inception-weights", help="pt_inception-2015-12-05-6726825d.pth (default: manifest)")
    parser.add_argument("--max-side", type=int, default=0, help="shrink inputs first (0 = keep, the protocol)")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images of each folder")
    parser.add_argument("--device")
    parser.add_argument("--uint8", choices=["truncate", "round"], default="truncate",
                        help="how translations become uint8: truncate (default, the official tensor2im rule, "
                             "comparable with published FIDs) or round (the app's display rule)")
    parser.add_argument("--weights-dir", action="append", default=[],
                        help="folder with checkpoints, searched first (repeatable; env WEIGHTS_DIR)")
    args = parser.parse_args(argv)
    if args.weights_dir:  # the flag the missing-weights messages advise
        os.environ["WEIGHTS_DIR"] = os.pathsep.join(args.weights_dir)

    from . import config
    from .pipelines import translate as T

    try:
        extractor = load_fid_inception(args.inception_weights, device=args.device)
        if args.real or args.fake:
            if not (args.real and args.fake):
                parser.error("--real and --fake go together")
            lim = args.limit or None
            fid = fid_of_sets(T.list_images(args.fake)[:lim], T.list_images(args.real)[:lim], extractor)
            print(f"FID {fid:.3f}")
            return 0
        if not args.model:
            parser.error("give --model (translate and evaluate) or --real/--fake")
        data = Path(args.data) if args.data else (config.data_dir() / "horse2zebra" if config.data_dir() else None)
        source = Path(args.source) if args.source else (data / "testA" if data else None)
        target = Path(args.target) if args.target else (data / "testB" if data else None)
        if source is None or target is None:
            parser.error("no data folder: pass --data or --source/--target")

        def report(fraction, desc):
            print(f"\r[{fraction * 100:5.1f}%] {desc:<40}", end="", file=sys.stderr, flush=True)

        res = evaluate_translation(args.model, source, target, extractor, max_side=args.max_side or None,
                                   limit=args.limit or None, device=args.device, progress=report,
                                   uint8=args.uint8)
        print(file=sys.stderr)
        print(f"{res['model']}: FID {res['fid']:.2f} (translations vs {res['n_real']} targets); "
              f"untranslated sources: {res['fid_untranslated']:.2f} (fp32, uint8 by {res['uint8']})")
        for msg in res["skipped"]:
            print(f"skipped {msg}", file=sys.stderr)
        return 1 if res["skipped"] else 0
    except EngineError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
