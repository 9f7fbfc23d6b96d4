"""Translation is faithful to the official code by default: fp32 (the bf16 fast path only on request) and the
official uint8 rule (``tensor2im`` truncation) on request; checked with the real GAN Compression checkpoint."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine import imageio, registry
from engine.pipelines import translate as T

MODEL = "gancompression-horse2zebra"


@pytest.fixture(scope="module")
def real(shared_data, shared_weights):
    path = shared_data / "horse2zebra" / "testA" / "n02381460_1000.jpg"
    if not path.is_file() or not (shared_weights / "gan-compression-horse2zebra").is_dir():
        pytest.skip("horse2zebra data or GAN Compression weights not present")
    mp = pytest.MonkeyPatch()
    mp.setenv("WEIGHTS_DIR", str(shared_weights))
    mp.delenv("ENGINE_RANDOM_WEIGHTS", raising=False)
    registry.clear_cache()
    try:
        net = registry.load_model(MODEL, "cpu")
        yield net, np.asarray(Image.open(path).convert("RGB"))
    finally:
        registry.clear_cache()
        mp.undo()


def _official_tensor2im(net, rgb: np.ndarray) -> np.ndarray:
    """What the official test script saves: ToTensor, Normalize(0.5, 0.5), G in fp32, util.tensor2im
    ((y + 1) / 2 * 255, then astype(uint8), i.e. truncation)."""
    x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None].float().div(255) * 2 - 1
    with torch.no_grad():
        y = net(x)[0].float().numpy()
    return ((np.transpose(y, (1, 2, 0)) + 1) / 2.0 * 255.0).astype(np.uint8)


def test_default_is_fp32_and_truncate_reproduces_the_official_image(real, monkeypatch):
    net, rgb = real
    monkeypatch.setenv("ENGINE_CPU_BF16", "1")           # even where bf16 is native, the default is fp32
    official = _official_tensor2im(net, rgb)
    truncated = T.translate(rgb, MODEL, max_side=None, uint8="truncate")
    assert np.array_equal(truncated, official)             # bit-exact with the official saved image
    rounded = T.translate(rgb, MODEL, max_side=None)       # the app's rule: nearest level
    d = rounded.astype(int) - official.astype(int)
    assert d.min() >= 0 and d.max() <= 1                   # rounding is never darker, at most one level brighter
    assert 0.3 < d.mean() < 0.7                            # about half a level on average


def test_fast_path_is_opt_in_and_its_difference_is_what_the_label_says(real, monkeypatch):
    net, rgb = real
    monkeypatch.setenv("ENGINE_CPU_BF16", "1")
    exact = T.translate(rgb, MODEL, max_side=None)
    fast = T.translate(rgb, MODEL, max_side=None, precision="fast")
    d = np.abs(exact.astype(int) - fast.astype(int))
    assert d.max() > 0                                     # bf16 does change the picture ...
    assert d.mean() < 2.0 and d.max() <= 64                # ... by about what was measured (mean 0.57, max 38)
    labels = dict((v, k) for k, v in T.precision_choices("cpu"))
    assert "official" in labels["fp32"] and "/255" in labels["fast"]
    monkeypatch.setenv("ENGINE_CPU_BF16", "0")
    assert "same as fp32" in dict((v, k) for k, v in T.precision_choices("cpu"))["fast"]


def test_tensor_to_numpy_rules():
    t = torch.tensor([0.0, 0.4 / 255, 0.6 / 255, 1.7 / 255, 1.0]).reshape(1, 1, 5).expand(3, 1, 5)
    assert imageio.tensor_to_numpy(t)[0, :, 0].tolist() == [0, 0, 1, 2, 255]
    assert imageio.tensor_to_numpy(t, "truncate")[0, :, 0].tolist() == [0, 0, 0, 1, 255]
    with pytest.raises(ValueError):
        imageio.tensor_to_numpy(t, "ceil")
