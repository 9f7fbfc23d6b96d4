"""MTCNN face locator (engine/models/mtcnn.py): layer shapes with random weights; with the facenet-pytorch wheel's
weights (sha256-verified, strict load), faces found where they are on CelebA-HQ examples, also at ~20 px."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.models import mtcnn


def test_networks_shapes_and_state_dict_names():
    torch.manual_seed(0)
    model = mtcnn.build_mtcnn(None).requires_grad_(False)
    prob, off = model.pnet(torch.randn(2, 3, 30, 40))
    assert prob.shape == (2, 10, 15) and off.shape == (2, 4, 10, 15)        # one cell per 12 px window, stride 2
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1
    prob, off = model.rnet(torch.randn(3, 3, 24, 24))
    assert prob.shape == (3,) and off.shape == (3, 4)
    prob, off, marks = model.onet(torch.randn(3, 3, 48, 48))
    assert prob.shape == (3,) and off.shape == (3, 4) and marks.shape == (3, 10)
    keys = set(model.state_dict())
    assert {"pnet.conv4_2.weight", "rnet.dense5_2.bias", "onet.dense6_3.weight", "onet.prelu5.weight"} <= keys
    assert len(keys) == 13 + 16 + 21
    boxes, points = model.detect(np.random.default_rng(0).integers(0, 255, (40, 50, 3), np.uint8),
                                 thresholds=(0.0, 0.0, 0.0))
    assert boxes.shape[1:] == (5,) and points.shape[1:] == (5, 2) and len(boxes) == len(points) >= 1
    with pytest.raises(ValueError):
        model.detect(np.zeros((20, 20), np.uint8))


def test_nms_and_frontal():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    assert mtcnn.nms(boxes, scores, 0.5).tolist() == [3, 0, 2]          # box 1 overlaps box 0 (IoU 0.68)
    assert mtcnn.nms(boxes, scores, 0.5, "min").tolist() == [3, 2]      # box 3 lies inside 0 and 1
    marks = np.array([[10, 10], [30, 10], [20, 20], [12, 30], [28, 30]], np.float32)
    assert mtcnn.frontal(marks) == pytest.approx(1.0)
    marks[2, 0] = 31                                                       # nose beyond an eye: a profile
    assert mtcnn.frontal(marks) == 0.0


def test_missing_wheel_says_what_to_install(monkeypatch):
    from engine import registry, weights
    from engine.correspondence import faces

    monkeypatch.delenv("ENGINE_RANDOM_WEIGHTS", raising=False)
    monkeypatch.setattr(weights, "package_file", lambda wf: None)
    monkeypatch.setattr(faces, "_missing_reason", None)
    monkeypatch.setenv("WEIGHTS_DIR", "/nonexistent-weights")
    st = registry.model_status("mtcnn")
    assert not st.usable and "pip install facenet-pytorch==2.5.3" in st.message and len(st.message) < 300, st
    assert faces.locator() is None and "pip install facenet-pytorch==2.5.3" in faces.missing_reason()


def test_scene_cut_detector():
    from engine.correspondence import faces

    rng = np.random.default_rng(0)
    scene = cv2_blur(rng.integers(0, 255, (180, 320), np.uint8))
    panned = np.roll(scene, 6, axis=1)                                      # the camera moved: same shot
    other = np.clip(scene.astype(int) // 2 + 120, 0, 255).astype(np.uint8)[::-1]   # another shot
    assert not faces.is_cut(faces.thumb(scene), faces.thumb(panned))
    assert faces.is_cut(faces.thumb(scene), faces.thumb(other))
    assert not faces.is_cut(None, faces.thumb(scene))


def cv2_blur(img):
    import cv2

    return cv2.GaussianBlur(img, (0, 0), 8)


@pytest.mark.slow
def test_wheel_weights_find_faces_where_they_are(shared_data):
    import cv2

    from engine import imageio, registry, weights

    try:
        files = {role: weights.resolve(key) for role, key in registry.spec("mtcnn").files.items()}
    except Exception:  # noqa: BLE001 - the wheel is not installed here
        pytest.skip("facenet-pytorch==2.5.3 not installed")
    model = registry.build_model("mtcnn", files)                           # strict load of all three nets
    paths = sorted((shared_data / "faces" / "assets" / "representative" / "celeba_hq" / "src").rglob("*.jpg"))[:2]
    if not paths:
        pytest.skip("CelebA-HQ examples not in the data folder")
    for path in paths:
        img = cv2.resize(imageio.as_numpy_rgb(imageio.load_image(str(path))), (256, 256), interpolation=cv2.INTER_AREA)
        boxes, marks = model.detect(img, min_face=60)
        assert len(boxes) == 1 and boxes[0, 4] > 0.95, boxes
        x0, y0, x1, y1 = boxes[0, :4]
        assert 90 < (x0 + x1) / 2 < 166 and 90 < (y0 + y1) / 2 < 180 and 80 < y1 - y0 < 230, boxes  # centred
        eyes, mouth = marks[0, :2], marks[0, 3:]
        assert eyes[0, 0] < eyes[1, 0] and eyes[:, 1].max() < mouth[:, 1].min(), marks
        # the same face ~20 px tall, in a grey 160 x 120 frame
        f = 20.0 / (y1 - y0)
        small = cv2.resize(img, (round(256 * f), round(256 * f)), interpolation=cv2.INTER_AREA)
        frame = np.full((120, 160, 3), 100, np.uint8)
        frame[50:50 + small.shape[0], 70:70 + small.shape[1]] = small
        got, _ = model.detect(frame, min_face=10)
        assert len(got) >= 1, "the 20 px face was not found"
        expect = np.array([x0, y0, x1, y1]) * f + [70, 50, 70, 50]
        centre = (got[0, :2] + got[0, 2:4]) / 2
        assert np.abs(centre - (expect[:2] + expect[2:]) / 2).max() < 4, (got[0], expect)


@pytest.mark.slow
def test_scene_cut_keeps_an_edit_on_a_reference_without_a_face():
    """A cut re-places the edit only when the reference shows a face; a sticker painted on something else (here a
    texture) is tracked through the cut as before, not dropped."""
    from engine.correspondence import faces
    from engine.correspondence.video import StreamEditPropagator

    if faces.locator() is None:
        pytest.skip("face locator weights not installed (pip install facenet-pytorch==2.5.3)")
    import cv2

    rng = np.random.default_rng(1)
    scene = cv2.GaussianBlur(rng.integers(0, 255, (180, 320, 3), np.uint8), (0, 0), 3)
    edit = np.zeros((180, 320, 4), np.uint8)
    edit[60:120, 120:200] = (255, 0, 0, 255)
    prop = StreamEditPropagator(edit, scene)
    prop(scene)
    other = np.clip(scene.astype(int) // 3 + 150, 0, 255).astype(np.uint8)      # a different shot
    prop(other)
    assert prop.stats.get("cuts") == 1 and prop._ref_marks is False and not prop.unplaced
