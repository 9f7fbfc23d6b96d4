"""PCK (percentage of correct keypoints) on PF-WILLOW, and the command that prints it.

Protocol (Ham, Cho, Schmid, Ponce, "Proposal Flow", CVPR 2016; the authors' dense-flow evaluation script):
all ordered pairs (i, j), i != j, of images inside a class; a source keypoint (x, y) of image i is moved by the
flow's displacement at its rounded position; it is correct when it lands within alpha * max(w, h) of the target
keypoint, (w, h) being the size of the bounding box of image j's keypoints. The PCK of a pair is its fraction of
correct keypoints; a class's PCK is the mean over its pairs; the overall figure is the mean over classes (the
per-pair mean over all pairs is printed too).

    python -m engine.correspondence.pck                      # all classes, all pairs, classic + baselines
    python -m engine.correspondence.pck --max-pairs 20 --classes "car(G)" "duck(S)"

Data: DATA_DIR/pf-willow/PF-dataset-WILLOW/<class>/<name>.png + <name>.mat ('pts_coord', (2, 10), 1-based).
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

# A matcher maps (image_a, image_b, keypoints_a (K, 2)) -> predicted keypoints in B (K, 2), 0-based pixels.
KeypointMatcher = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


# --------------------------------------------------------------------------------------------------------------
# metric
# --------------------------------------------------------------------------------------------------------------

def pck_threshold(target_kps: np.ndarray, alpha: float = 0.1) -> float:
    """alpha x the longer side of the bounding box of the target keypoints (K, 2)."""
    kps = np.asarray(target_kps, dtype=np.float64)
    extent = kps.max(axis=0) - kps.min(axis=0)
    return float(alpha * max(extent[0], extent[1]))


def pck(pred: np.ndarray, target: np.ndarray, alpha: float = 0.1) -> float:
    """Fraction of predicted keypoints (K, 2) within pck_threshold(target, alpha) of the target keypoints (K, 2)."""
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != 2:
        raise ValueError(f"pred and target must both be (K, 2); got {pred.shape} and {target.shape}")
    dist = np.linalg.norm(pred - target, axis=1)
    return float(np.mean(dist <= pck_threshold(target, alpha)))


def transfer_with_flow(flow: np.ndarray, kps: np.ndarray) -> np.ndarray:
    """Move keypoints (K, 2) of A by a dense flow (Ha, Wa, 2) of absolute positions in B.

    As in the reference evaluation, the displacement is read at the keypoint's rounded pixel and added to the
    exact keypoint position.
    """
    h, w = flow.shape[:2]
    kps = np.asarray(kps, dtype=np.float64)
    xi = np.clip(np.round(kps[:, 0]).astype(int), 0, w - 1)
    yi = np.clip(np.round(kps[:, 1]).astype(int), 0, h - 1)
    disp = flow[yi, xi].astype(np.float64) - np.stack([xi, yi], axis=1)
    return kps + disp


def identity_transfer(kps: np.ndarray, shape_a: tuple[int, int], shape_b: tuple[int, int]) -> np.ndarray:
    """No motion: a keypoint keeps its normalised coordinates ((x + 0.5) / W) when the image sizes differ."""
    ha, wa = shape_a[:2]
    hb, wb = shape_b[:2]
    kps = np.asarray(kps, dtype=np.float64)
    return np.stack([(kps[:, 0] + 0.5) / wa * wb - 0.5, (kps[:, 1] + 0.5) / ha * hb - 0.5], axis=1)


# --------------------------------------------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------------------------------------------

@dataclass
class Sample:
    cls: str
    name: str
    image_path: Path
    keypoints: np.ndarray  # (K, 2) 0-based (x, y)


def willow_root(data_dir: Optional[Path] = None) -> Path:
    from .. import config
    from ..errors import InputError

    base = Path(data_dir) if data_dir else config.data_dir()
    if base is None:
        raise InputError("No data folder configured: set DATA_DIR (it must contain pf-willow/).")
    for cand in (base / "pf-willow" / "PF-dataset-WILLOW", base / "PF-dataset-WILLOW", base):
        if cand.is_dir() and any(cand.glob("*/*.mat")):
            return cand
    raise InputError(f"PF-WILLOW not found under {base} (expected pf-willow/PF-dataset-WILLOW/<class>/*.png + .mat).")


def load_keypoints(mat_path: Path) -> np.ndarray:
    """(K, 2) 0-based (x, y) from a PF-WILLOW .mat ('pts_coord', (2, K), 1-based MATLAB pixels)."""
    import scipy.io

    pts = np.asarray(scipy.io.loadmat(str(mat_path))["pts_coord"], dtype=np.float64)
    if pts.ndim != 2 or pts.shape[0] != 2:
        raise ValueError(f"{mat_path}: expected pts_coord of shape (2, K); got {pts.shape}")
    return pts.T - 1.0


def load_willow(root: Path, classes: Optional[Sequence[str]] = None) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    available = sorted(p.name for p in root.iterdir() if p.is_dir())
    for cls in classes or available:
        if cls not in available:
            raise ValueError(f"class {cls!r} not in {available}")
        samples = []
        for mat in sorted((root / cls).glob("*.mat")):
            png = mat.with_suffix(".png")
            if png.exists():
                samples.append(Sample(cls, mat.stem, png, load_keypoints(mat)))
        out[cls] = samples
    return out


def class_pairs(samples: Sequence[Sample], max_pairs: Optional[int] = None) -> list[tuple[int, int]]:
    """All ordered pairs (i, j), i != j; with max_pairs, an evenly spread subset (deterministic)."""
    pairs = [(i, j) for i, j in itertools.permutations(range(len(samples)), 2)]
    if max_pairs is not None and max_pairs < len(pairs):
        idx = np.linspace(0, len(pairs) - 1, max_pairs).round().astype(int)
        pairs = [pairs[k] for k in idx]
    return pairs


def _read_rgb(path: Path) -> np.ndarray:
    from ..imageio import as_numpy_rgb

    return as_numpy_rgb(str(path))


# --------------------------------------------------------------------------------------------------------------
# methods compared by the command
# --------------------------------------------------------------------------------------------------------------

def method_identity(a, b, kps):
    return identity_transfer(kps, a.shape, b.shape)


def _flow_method(method: str):
    def run(a, b, kps):
        from . import classic

        gm = classic.grid_match(a, b, classic.FlowParams(), method=method)
        return transfer_with_flow(classic.upsample_flow(gm), kps)
    run.__name__ = f"method_{method}"
    return run


METHODS: dict[str, KeypointMatcher] = {
    "identity": method_identity,
    "nn": _flow_method("nn"),
    "classic": _flow_method("bp"),
}
METHOD_TITLES = {
    "identity": "identity (no motion, normalised coords)",
    "nn": "nearest-neighbour descriptors (no spatial prior)",
    "classic": "classic: descriptors + BP flow (ours)",
}


def _eval_pair(job):
    methods, path_a, path_b, kps_a, kps_b, alpha = job
    a, b = _read_rgb(path_a), _read_rgb(path_b)
    out = {}
    for m in methods:
        t0 = time.perf_counter()
        pred = METHODS[m](a, b, kps_a)
        out[m] = (pck(pred, kps_b, alpha), time.perf_counter() - t0)
    return out


def evaluate(root: Path, methods: Sequence[str] = ("identity", "nn", "classic"), classes=None,
             max_pairs: Optional[int] = None, alpha: float = 0.1, workers: int = 1,
             progress: Optional[Callable[[float, str], None]] = None) -> dict:
    """PCK per class and overall for each method. Returns {"classes": {cls: {method: pck}}, "overall": ...}."""
    data = load_willow(root, classes)
    jobs, owners = [], []
    for cls, samples in data.items():
        for i, j in class_pairs(samples, max_pairs):
            jobs.append((tuple(methods), samples[i].image_path, samples[j].image_path, samples[i].keypoints,
                         samples[j].keypoints, alpha))
            owners.append(cls)
    results: list[dict] = []
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for k, r in enumerate(pool.map(_eval_pair, jobs, chunksize=2)):
                results.append(r)
                if progress:
                    progress((k + 1) / len(jobs), f"{k + 1}/{len(jobs)} pairs")
    else:
        for k, job in enumerate(jobs):
            results.append(_eval_pair(job))
            if progress:
                progress((k + 1) / len(jobs), f"{k + 1}/{len(jobs)} pairs")
    per_class: dict[str, dict[str, float]] = {}
    seconds = {m: 0.0 for m in methods}
    for cls in data:
        idx = [k for k, o in enumerate(owners) if o == cls]
        per_class[cls] = {m: float(np.mean([results[k][m][0] for k in idx])) if idx else float("nan")
                          for m in methods}
    for r in results:
        for m in methods:
            seconds[m] += r[m][1]
    overall = {m: float(np.nanmean([per_class[c][m] for c in per_class])) for m in methods}
    per_pair = {m: float(np.mean([r[m][0] for r in results])) if results else float("nan") for m in methods}
    return {"classes": per_class, "overall": overall, "pair_mean": per_pair, "pairs": len(results),
            "pairs_per_class": {c: owners.count(c) for c in data}, "seconds": seconds}


def format_table(res: dict, methods: Sequence[str], alpha: float = 0.1) -> str:
    w = max(len(c) for c in list(res["classes"]) + ["overall (class mean)"]) + 2
    head = f"{'class':<{w}}{'pairs':>6}" + "".join(f"{m:>11}" for m in methods)
    lines = [f"PCK@{alpha:g} on PF-WILLOW", head, "-" * len(head)]
    for cls, row in res["classes"].items():
        lines.append(f"{cls:<{w}}{res['pairs_per_class'][cls]:>6}" + "".join(f"{row[m]:>11.3f}" for m in methods))
    lines.append("-" * len(head))
    lines.append(f"{'overall (class mean)':<{w}}{res['pairs']:>6}" + "".join(f"{res['overall'][m]:>11.3f}"
                                                                           for m in methods))
    lines.append(f"{'overall (pair mean)':<{w}}{'':>6}" + "".join(f"{res['pair_mean'][m]:>11.3f}" for m in methods))
    base = res["overall"].get("identity")
    if base:
        lines.append(f"{'ratio vs identity':<{w}}{'':>6}" + "".join(f"{res['overall'][m] / base:>10.2f}x"
                                                                    for m in methods))
    lines.append(f"{'s / pair (CPU, 1 worker)':<{w}}{'':>6}" + "".join(
        f"{res['seconds'][m] / max(res['pairs'], 1):>11.3f}" for m in methods))
    lines.append("")
    lines += [f"  {m}: {METHOD_TITLES.get(m, m)}" for m in methods]
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.correspondence.pck", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", type=Path, default=None, help="data folder (default: DATA_DIR / ../shared/data)")
    ap.add_argument("--classes", nargs="*", default=None, help="subset of classes (default: all)")
    ap.add_argument("--max-pairs", type=int, default=None, help="at most this many pairs per class (evenly spread)")
    ap.add_argument("--methods", nargs="*", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--workers", type=int, default=1, help="processes (pairs run in parallel)")
    args = ap.parse_args(argv)
    root = willow_root(args.data_dir)
    t0 = time.perf_counter()

    def report(f, d):
        print(f"\r  {d}", end="", file=sys.stderr, flush=True)

    res = evaluate(root, args.methods, args.classes, args.max_pairs, args.alpha, args.workers, report)
    wall = time.perf_counter() - t0
    print("", file=sys.stderr)
    print(format_table(res, args.methods, args.alpha))
    print(f"\n{res['pairs']} pairs, wall time {wall:.1f} s with {args.workers} worker(s)")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
