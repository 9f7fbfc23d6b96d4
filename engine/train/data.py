"""Unpaired two-folder image data for CUT / FastCUT training.

Paper: Park et al., "Contrastive Learning for Unpaired Image-to-Image Translation", ECCV 2020. The data handling
follows the official "unaligned" data set: A images in a shuffled order, B images drawn at random (no fixed pairs),
each resized to load_size × load_size (bicubic), randomly cropped to crop_size and randomly flipped, then mapped to
[-1, 1]. In the learning-rate decay phase (epoch > n_epochs) the official code stops the resize-and-crop jitter
(load size = crop size); so does this one.

Determinism: every sample is a pure function of (seed, global sample index): which A and B image, the crop and the
flip. A resumed run therefore sees exactly the data an uninterrupted run would have seen, whatever the number of
loader workers. Greyscale / palette / RGBA files are converted to RGB (engine.imageio.load_image).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import InputError
from ..imageio import load_image

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".ppm"}


def list_images(folder: str | Path, max_images: int = 0) -> list[Path]:
    """Sorted image files directly inside ``folder`` (first ``max_images`` when > 0)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"Image folder not found: {folder}")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise InputError(f"No images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in {folder}")
    return files[:max_images] if max_images and max_images > 0 else files


def to_model_range(img: Image.Image) -> torch.Tensor:
    """RGB PIL -> (3, H, W) float32 in [-1, 1]."""
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float().div_(127.5).sub_(1.0)


def augment(img: Image.Image, load_size: int, crop_size: int, flip: bool, rng: np.random.Generator,
            resample: int = Image.BICUBIC) -> torch.Tensor:
    """Resize to load_size² (bicubic; U-GAT-IT: bilinear), random crop_size² crop, random horizontal flip
    -> (3, crop, crop) in [-1, 1]."""
    img = img if img.mode == "RGB" else img.convert("RGB")
    if img.size != (load_size, load_size):
        img = img.resize((load_size, load_size), resample)
    x = int(rng.integers(0, load_size - crop_size + 1))
    y = int(rng.integers(0, load_size - crop_size + 1))
    img = img.crop((x, y, x + crop_size, y + crop_size))
    if flip and rng.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    return to_model_range(img)


class UnpairedData(torch.utils.data.Dataset):
    """Items ``start .. start + length - 1`` of the (endless) deterministic sample stream of two folders.

    Item ``i`` is global sample ``g = start + i``; with E = samples per epoch, epoch ``e = g // E`` visits A in the
    permutation drawn from (seed, e) and takes a uniformly random B image. Returns ``{"A", "B"}`` tensors
    (3, crop, crop) in [-1, 1] and the indices of the images used (``"A_index"``, ``"B_index"``).
    """

    def __init__(self, a_files: list[Path], b_files: list[Path], *, load_size: int, crop_size: int,
                 flip: bool, seed: int, samples_per_epoch: int, n_epochs_constant: int,
                 start: int = 0, length: int = 0, resample: int = Image.BICUBIC):
        self.a_files, self.b_files = list(a_files), list(b_files)
        self.load_size, self.crop_size, self.flip, self.seed = load_size, crop_size, flip, seed
        self.samples_per_epoch = max(1, int(samples_per_epoch))
        self.n_epochs_constant = n_epochs_constant
        self.start, self.length = int(start), int(length)
        self.resample = resample
        self._perm_cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.length

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perm_cache:
            if len(self._perm_cache) > 4:
                self._perm_cache.clear()
            self._perm_cache[epoch] = np.random.default_rng([self.seed, 1, epoch]).permutation(len(self.a_files))
        return self._perm_cache[epoch]

    def sample(self, g: int) -> dict:
        epoch = g // self.samples_per_epoch
        pos = g % self.samples_per_epoch
        a_index = int(self._perm(epoch)[pos % len(self.a_files)])
        rng = np.random.default_rng([self.seed, 2, g])
        b_index = int(rng.integers(0, len(self.b_files)))
        # official: no resize-and-crop jitter once the learning rate decays (1-based epoch > n_epochs)
        load = self.crop_size if epoch + 1 > self.n_epochs_constant else self.load_size
        a = augment(load_image(self.a_files[a_index]), load, self.crop_size, self.flip, rng, self.resample)
        b = augment(load_image(self.b_files[b_index]), load, self.crop_size, self.flip, rng, self.resample)
        return {"A": a, "B": b, "A_index": a_index, "B_index": b_index}

    def __getitem__(self, i: int) -> dict:
        if i < 0 or i >= self.length:
            raise IndexError(i)
        return self.sample(self.start + i)


def fixed_batch(files: list[Path], n: int, size: int) -> torch.Tensor:
    """The first ``n`` images resized to size² (no augmentation): (n, 3, size, size) in [-1, 1], for sample grids."""
    picks = files[: max(1, n)]
    return torch.stack([to_model_range(load_image(p).resize((size, size), Image.BICUBIC)) for p in picks])


def pack_folder(src: str | Path, dst: str | Path, quality: int = 85, max_images: int = 0) -> tuple[int, int]:
    """Re-encode the images of ``src`` as RGB JPEG files in ``dst`` (to carry a data set under a size limit, e.g.
    to a GPU machine). Returns (number of files, total bytes)."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    files = list_images(src, max_images)
    total = 0
    for p in files:
        out = dst / (p.stem + ".jpg")
        load_image(p).save(out, "JPEG", quality=int(quality))
        total += out.stat().st_size
    return len(files), total
