"""PCK code (engine/correspondence/pck.py) against hand-computed cases, and the PF-WILLOW loader."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from engine.correspondence import pck


def test_threshold_is_alpha_times_longer_side_of_target_bbox():
    target = np.array([[10.0, 20.0], [110.0, 40.0], [60.0, 80.0]])   # bbox 100 x 60
    assert pck.pck_threshold(target, 0.1) == pytest.approx(10.0)
    assert pck.pck_threshold(target, 0.05) == pytest.approx(5.0)


def test_pck_hand_computed():
    target = np.array([[10.0, 20.0], [110.0, 40.0], [60.0, 80.0], [30.0, 30.0]])   # threshold 10 px
    pred = target + np.array([[3.0, 4.0],      # 5.0   -> correct
                              [6.0, 8.0],      # 10.0  -> correct (on the threshold)
                              [0.0, 10.5],     # 10.5  -> wrong
                              [-20.0, 0.0]])   # 20.0  -> wrong
    assert pck.pck(pred, target, 0.1) == pytest.approx(0.5)
    assert pck.pck(pred, target, 0.21) == pytest.approx(1.0)
    assert pck.pck(pred, target, 0.04) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        pck.pck(pred[:3], target)


def test_transfer_reads_flow_at_the_rounded_pixel_and_keeps_the_fraction():
    h, w = 6, 8
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    flow = np.stack([gx + 2.0, gy - 1.0], -1)      # a pure translation (+2, -1)
    flow[3, 4] = (100.0, 50.0)                      # a distinct value at pixel (x=4, y=3)
    kps = np.array([[1.2, 1.4], [4.4, 2.6]])        # the second rounds to (4, 3)
    out = pck.transfer_with_flow(flow, kps)
    np.testing.assert_allclose(out[0], [3.2, 0.4])
    np.testing.assert_allclose(out[1], [4.4 + 96.0, 2.6 + 47.0])


def test_identity_transfer_uses_normalised_coordinates():
    kps = np.array([[0.0, 0.0], [99.0, 49.0], [49.5, 24.5]])
    out = pck.identity_transfer(kps, (50, 100), (100, 200))   # (H, W) -> twice as large
    np.testing.assert_allclose(out, [[0.5, 0.5], [198.5, 98.5], [99.5, 49.5]])
    np.testing.assert_allclose(pck.identity_transfer(kps, (50, 100), (50, 100)), kps)


def test_pairs_are_all_ordered_pairs_and_max_pairs_subsamples():
    samples = list(range(4))
    pairs = pck.class_pairs(samples)
    assert len(pairs) == 12 and len(set(pairs)) == 12 and all(i != j for i, j in pairs)
    sub = pck.class_pairs(samples, 5)
    assert len(sub) == 5 and set(sub) <= set(pairs) and sub[0] == pairs[0] and sub[-1] == pairs[-1]


def _tiny_willow(root, n=3):
    """Two classes of n images whose keypoints are all in the same normalised place (identity is exact)."""
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.9, (10, 2))
    for cls, (w, h) in (("a(S)", (60, 40)), ("b(S)", (40, 40))):
        d = root / "pf-willow" / "PF-dataset-WILLOW" / cls
        d.mkdir(parents=True)
        for i in range(n):
            ww, hh = w + 10 * i, h + 6 * i
            Image.fromarray(rng.integers(0, 255, (hh, ww, 3), dtype=np.uint8)).save(d / f"img{i}.png")
            xy = base * [ww, hh] - 0.5        # 0-based pixel positions with the same normalised coordinates
            scipy.io.savemat(d / f"img{i}.mat", {"pts_coord": (xy + 1.0).T})   # stored 1-based, (2, K)
    return root


def test_loader_converts_to_zero_based_and_evaluate_identity_is_exact(tmp_path):
    root = pck.willow_root(_tiny_willow(tmp_path))
    data = pck.load_willow(root)
    assert sorted(data) == ["a(S)", "b(S)"] and len(data["a(S)"]) == 3
    kp = data["a(S)"][0].keypoints
    assert kp.shape == (10, 2)
    raw = scipy.io.loadmat(data["a(S)"][0].image_path.with_suffix(".mat"))["pts_coord"]
    np.testing.assert_allclose(kp, raw.T - 1.0)
    res = pck.evaluate(root, methods=("identity",))
    assert res["pairs"] == 12 and res["pairs_per_class"] == {"a(S)": 6, "b(S)": 6}
    assert res["overall"]["identity"] == pytest.approx(1.0)
    table = pck.format_table(res, ["identity"])
    assert "a(S)" in table and "overall" in table


def test_missing_dataset_is_a_clear_input_error(tmp_path):
    from engine.errors import InputError

    with pytest.raises(InputError):
        pck.willow_root(tmp_path)


def test_real_willow_identity_matches_a_hand_computation(shared_data):
    root = shared_data / "pf-willow" / "PF-dataset-WILLOW"
    if not root.is_dir():
        pytest.skip("pf-willow not in the data folder")
    cls = sorted(p.name for p in root.iterdir() if p.is_dir())[0]
    res = pck.evaluate(root, methods=("identity",), classes=[cls], max_pairs=4)
    data = pck.load_willow(root, [cls])[cls]
    want = []
    for i, j in pck.class_pairs(data, 4):
        a = Image.open(data[i].image_path)
        b = Image.open(data[j].image_path)
        ka, kb = data[i].keypoints, data[j].keypoints
        pred = np.stack([(ka[:, 0] + 0.5) / a.width * b.width - 0.5, (ka[:, 1] + 0.5) / a.height * b.height - 0.5], 1)
        thr = 0.1 * max(np.ptp(kb[:, 0]), np.ptp(kb[:, 1]))
        want.append(np.mean(np.linalg.norm(pred - kb, axis=1) <= thr))
    assert res["classes"][cls]["identity"] == pytest.approx(np.mean(want))
