"""GANgealing geometry with weights we control: an STN whose heads are set analytically to a known similarity
transform and a known residual flow must congeal a transformed image back, and an edit painted in congealed space
must land where that known warp puts it. Also: dense correspondence, quality flags, flip inference, the webcam
handler, edit caching and input validation."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.errors import InputError
from engine.models.gangealing import (Congealed, GANgealing, PretrainedSettings, apply_affine, identity_grid,
                                      total_variation)
from engine.pipelines import gangealing as pipe

S = 256  # working resolution

# the known warp: congealed p -> image M_lin (p + delta) + t (normalised coordinates)
THETA, SCALE, TX, TY = 0.35, 0.8, 0.12, -0.06
DELTA = (0.03, -0.02)


def matrix(theta=THETA, scale=SCALE, tx=TX, ty=TY) -> torch.Tensor:
    c, s = scale * math.cos(theta), scale * math.sin(theta)
    return torch.tensor([[c, -s, tx], [s, c, ty]], dtype=torch.float32)


def known_warp(p: torch.Tensor) -> torch.Tensor:
    """Normalised congealed positions (..., 2) -> normalised image positions."""
    m = matrix()
    q = p + torch.tensor(DELTA)
    return q @ m[:, :2].T + m[:, 2]


def analytic_model(iters: int = 1, theta=THETA, scale=SCALE, tx=TX, ty=TY, delta=DELTA) -> GANgealing:
    """A narrow random network whose heads ignore their features: the similarity head outputs the constant
    (theta, scale, tx, ty); the flow head outputs the constant residual ``delta`` (the release's convex upsampling
    multiplies the coarse flow by 8; a large centre logit makes the upsampling pick the centre neighbour)."""
    torch.manual_seed(0)
    m = GANgealing(PretrainedSettings("test", "border", iters), supersize=S, max_channels=16).eval()
    sim, flow = m.t_ema.stns
    with torch.no_grad():
        sim.warp_head.linear.weight.zero_()
        sim.warp_head.linear.bias.copy_(torch.tensor([math.atanh(theta / math.pi), math.log(scale), tx, ty]))
        flow.warp_head.flow_out[2].weight.zero_()
        flow.warp_head.flow_out[2].bias.copy_(torch.tensor(delta) / 8)
        flow.warp_head.mask_out[2].weight.zero_()
        logits = torch.zeros(9 * 64)
        logits[4 * 64:5 * 64] = 40.0
        flow.warp_head.mask_out[2].bias.copy_(logits)
    return m


@pytest.fixture(scope="module")
def model():
    return analytic_model()


def blob_image(size: int, centre_px, sigma=3.0) -> torch.Tensor:
    """(1, 3, size, size) in [0, 1]: smooth red/green ramps, a Gaussian dot in blue at ``centre_px`` (x, y)."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    red = 0.3 + 0.3 * torch.sin(xx / 23.0)
    green = 0.3 + 0.3 * torch.cos(yy / 31.0)
    blue = torch.exp(-((xx - centre_px[0]) ** 2 + (yy - centre_px[1]) ** 2) / (2 * sigma ** 2))
    return torch.stack([red, green, blue])[None]


def warp_to_image(aligned: torch.Tensor, size: int, m=None, delta=DELTA) -> torch.Tensor:
    """The image whose congealing with the known warp is ``aligned``: B(q) = A(G^-1(q))."""
    m = matrix() if m is None else m
    q = identity_grid(size)
    p = (q - m[:, 2]) @ torch.linalg.inv(m[:, :2]).T - torch.tensor(delta)
    return F.grid_sample(aligned, p, mode="bilinear", padding_mode="zeros", align_corners=False)


def norm_to_px(g, size):
    return ((g + 1) * size - 1) / 2


def px_to_norm(p, size):
    return (2 * p + 1) / size - 1


def centroid(weight: np.ndarray, around, radius=12):
    x0, y0 = int(round(around[0])), int(round(around[1]))
    ys, xs = np.mgrid[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1]
    w = weight[y0 - radius:y0 + radius + 1, x0 - radius:x0 + radius + 1].astype(np.float64)
    assert w.sum() > 0, "nothing found near the expected position"
    return np.array([(w * xs).sum() / w.sum(), (w * ys).sum() / w.sum()])


def to_uint8(t):
    return (t[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def dot_edit(size, centre, colour=(255, 0, 0), radius=4.0):
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    a = np.clip(1.5 - np.hypot(xx - centre[0], yy - centre[1]) / radius, 0, 1)
    edit = np.zeros((size, size, 4), np.uint8)
    edit[..., :3] = colour
    edit[..., 3] = (a * 255).astype(np.uint8)
    return edit


# ---------------------------------------------------------------------------------------------------------------

def test_grid_is_the_known_warp(model):
    res = model.t_ema(torch.zeros(1, 3, S, S), output_resolution=128, return_image=False)
    expected = known_warp(identity_grid(128))
    assert torch.allclose(res.grid, expected, atol=1e-5)
    assert torch.allclose(res.matrix[0], matrix(), atol=1e-6)
    assert torch.allclose(res.delta_flow, torch.tensor(DELTA).expand_as(res.delta_flow), atol=1e-6)
    assert float(total_variation(res.delta_flow.detach())) < 1e-10


def test_iterations_compose_the_similarity():
    m = analytic_model(iters=2, theta=0.2, scale=0.9, tx=0.05, ty=0.0, delta=(0.0, 0.0))
    res = m.t_ema(torch.zeros(1, 3, S, S), iters=2, return_image=False)
    one = matrix(0.2, 0.9, 0.05, 0.0)
    full = torch.cat([one, torch.tensor([[0.0, 0.0, 1.0]])])
    assert torch.allclose(res.matrix[0], (full @ full)[:2], atol=1e-5)


def test_congeals_a_transformed_image_back(model):
    dot = (80.0, 170.0)  # in the aligned frame
    aligned = blob_image(S, dot)
    image = warp_to_image(aligned, S)
    res = model.congeal(image * 2 - 1, output_resolution=S, flip=False)
    out = (res.image + 1) / 2
    found = centroid(out[0, 2].numpy(), dot)
    assert np.abs(found - np.array(dot)).max() < 1.0, found
    inner = (slice(None), slice(None), slice(64, 192), slice(64, 192))
    assert float((out[inner] - aligned[inner]).abs().mean()) < 0.02
    # the dot really moved: in the input it is elsewhere
    moved = norm_to_px(known_warp(px_to_norm(torch.tensor(dot), S)), S)
    assert float((moved - torch.tensor(dot)).norm()) > 20


@pytest.mark.parametrize("shape", [(S, S), (240, 320), (384, 384)])
def test_edit_lands_where_the_inverse_transform_puts_it(model, shape):
    """Paint a dot in congealed space, propagate into an image of any size: it lands at the known warp's image of
    the dot (after framing: centred edge-padded square, resized to the working resolution)."""
    h, w = shape
    side = max(h, w)
    target = torch.rand(1, 3, h, w) * 0.2  # dark noise
    edit_centre = (100.0, 140.0)  # canvas pixels (canvas drawn at 512, label resolution 256)
    edit = dot_edit(512, (edit_centre[0] * 2 + 0.5, edit_centre[1] * 2 + 0.5), radius=6.0)
    target = to_uint8(target)
    out = pipe.Propagator(model, edit, resolution=S, flip=False)(target)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8
    diff = out.astype(np.float64) - target
    redness = diff[..., 0] - np.abs(diff[..., 1:]).mean(-1)
    g = known_warp(px_to_norm(torch.tensor(edit_centre), S))
    expected = norm_to_px(g, side).numpy() - np.array([(side - w) // 2, (side - h) // 2])
    found = centroid(np.clip(redness, 0, None), expected, radius=20)
    assert np.abs(found - expected).max() < 1.0, (found, expected)
    far = np.abs(np.mgrid[0:h, 0:w][::-1].transpose(1, 2, 0) - expected).max(-1) > 40
    assert np.abs(diff[far]).max() <= 1  # nothing painted elsewhere


class TwoWarps(torch.nn.Module):
    """Congeals with one of two analytic networks, chosen by a marker: a black top-left pixel selects the first."""

    def __init__(self, first: GANgealing, second: GANgealing):
        super().__init__()
        self.first, self.second = first.t_ema, second.t_ema

    def forward(self, x, **kw):
        return (self.first if float(x[0, :, 0, 0].max()) < -0.99 else self.second)(x, **kw)


def test_dense_correspondence_follows_the_known_warps():
    """One aligned scene seen through two different known warps (A and B): every covered pixel of A must match
    the B position that the composed warp G_b(G_a^-1(.)) gives, within a pixel."""
    second = dict(theta=-0.2, scale=0.9, tx=-0.1, ty=0.08, delta=(0.0, 0.01))
    ma, mb = analytic_model(), analytic_model(**second)
    aligned = blob_image(S, (128.0, 120.0))
    a = warp_to_image(aligned, S)
    b = warp_to_image(aligned, S, matrix(*list(second.values())[:4]), second["delta"])
    a[:, :, 0, 0] = 0.0
    b[:, :, 0, 0] = 1.0
    gg = GANgealing(PretrainedSettings("pair", "border", 1), supersize=S, max_channels=8).eval()
    gg.t_ema = TwoWarps(ma, mb)
    corr = pipe.correspond(gg, to_uint8(a), to_uint8(b), resolution=S, flip=False)
    assert corr.flow.shape == (S, S, 2) and corr.confidence.shape == (S, S)

    def g_inv(q, m, d):  # image -> congealed, normalised
        return (q - m[:, 2]) @ torch.linalg.inv(m[:, :2]).T - torch.tensor(d)

    mb_ = matrix(*list(second.values())[:4])
    ys, xs = np.mgrid[40:216:7, 40:216:7]
    q = px_to_norm(torch.tensor(np.stack([xs, ys], -1), dtype=torch.float32), S)
    c = g_inv(q, matrix(), DELTA)
    inside = (c.abs() < 0.95).all(-1)  # A pixels whose congealed position is well inside the congealed view
    expected = norm_to_px((c + torch.tensor(second["delta"])) @ mb_[:, :2].T + mb_[:, 2], S).numpy()
    got = corr.flow[ys, xs]
    inside = inside.numpy() & (expected > 2).all(-1) & (expected < S - 3).all(-1)  # ... and inside B
    err = np.abs(got - expected).max(-1)[inside]
    assert inside.sum() > 100 and err.max() < 1.0, err.max()
    assert corr.confidence[ys, xs][inside].min() > 0.9
    outside = (c.abs() > 1.1).any(-1).numpy()  # not seen by the congealed view: no confidence
    assert outside.sum() > 10 and corr.confidence[ys, xs][outside].max() < 0.1


# ---------------------------------------------------------------------------------------------------------------

class CentroidSTN(torch.nn.Module):
    """A stand-in congealing network that tracks the brightest blob: translation to its centroid, no rotation."""

    num_heads = 1

    def forward(self, x, *, output_resolution=None, return_image=True, **kw):
        n, _, s, _ = x.shape
        w = (x[:, 2] + 1).clamp(min=0) ** 4
        ys, xs = torch.meshgrid(torch.arange(s, dtype=x.dtype), torch.arange(s, dtype=x.dtype), indexing="ij")
        cx = (w * xs).sum((1, 2)) / w.sum((1, 2))
        cy = (w * ys).sum((1, 2)) / w.sum((1, 2))
        t = torch.stack([px_to_norm(cx, s), px_to_norm(cy, s)], 1)
        m = torch.zeros(n, 2, 3)
        m[:, 0, 0] = m[:, 1, 1] = 0.5
        m[:, :, 2] = t
        res = output_resolution or 128
        grid = apply_affine(m, identity_grid(res, n))
        delta = torch.zeros(n, 128, 128, 2)
        img = F.grid_sample(x, grid, align_corners=False) if return_image else None
        return Congealed(image=img, grid=grid, delta_flow=delta, matrix=m)


def tracking_model() -> GANgealing:
    m = GANgealing(PretrainedSettings("track", "border", 1), supersize=S, max_channels=8)
    m.t_ema = CentroidSTN()
    return m.eval()


def moving_frames(count=4, size=(200, 260)):
    h, w = size
    frames, centres = [], []
    for i in range(count):
        c = (70.0 + 30 * i, 80.0 + 12 * i)
        img = blob_image(max(h, w), c, sigma=6.0)[:, :, :h, :w]
        frames.append(to_uint8(img))
        centres.append(c)
    return frames, centres


def test_webcam_handler_follows_the_object():
    from engine.correspondence.gangealing_backend import GANgealingBackend

    canvas = np.full((512, 512, 3), 128, np.uint8)
    backend = GANgealingBackend("cat", model=tracking_model(), canvas_image=canvas, resolution=S)
    assert backend.status()[0] and backend.canvas() is canvas
    edit = dot_edit(512, (256.5, 256.5), colour=(255, 0, 255), radius=5.0)  # at the congealed centre
    pipe.clear_edit_cache()
    handler = backend.stream(edit, opacity=1.0, smoothing=0.0)
    frames, centres = moving_frames()
    for img, c in zip(frames, centres):
        out = handler(img)
        assert out.shape == img.shape and out.dtype == np.uint8
        magenta = np.clip(out[..., 0].astype(float) + out[..., 2] - 2.0 * out[..., 1] - img[..., 0] - img[..., 2], 0,
                          None)
        found = centroid(magenta, c, radius=15)
        assert np.abs(found - np.array(c)).max() < 1.5, (found, c)
    assert pipe.edit_stats["prepared"] == 1
    handler.reset()
    backend.stream(edit, opacity=0.5)  # same edit again: prepared from the cache
    assert pipe.edit_stats == {"prepared": 1, "hits": 1}


def test_temporal_smoothing_lags_behind():
    frames, centres = moving_frames(count=2)
    edit = dot_edit(512, (256.5, 256.5), radius=5.0)
    smooth = pipe.Propagator(tracking_model(), edit, resolution=S, flip=False, smoothing=0.5)
    smooth(frames[0])
    out = smooth(frames[1])
    red = np.clip(out[..., 0].astype(float) - out[..., 1] - frames[1][..., 0], 0, None)
    mid = (np.array(centres[0]) + np.array(centres[1])) / 2
    assert np.abs(centroid(red, mid, radius=25) - mid).max() < 3.0  # halfway between the two frames' positions
    smooth.reset()
    out = smooth(frames[1])
    red = np.clip(out[..., 0].astype(float) - out[..., 1] - frames[1][..., 0], 0, None)
    assert np.abs(centroid(red, centres[1], radius=15) - np.array(centres[1])).max() < 1.5


def test_flip_inference_picks_the_smoother_mirror():
    class Lopsided(torch.nn.Module):
        """Residual flow roughness grows with the brightness of the image's left half; grid = identity + 0.1 x."""

        def forward(self, x, *, output_resolution=None, return_image=True, **kw):
            n = x.shape[0]
            left = x[:, :, :, : x.shape[-1] // 2].mean((1, 2, 3))
            noise = torch.randn(1, 128, 128, 2, generator=torch.Generator().manual_seed(0))
            delta = noise * (left + 1).view(n, 1, 1, 1)
            grid = identity_grid(output_resolution or 128, n) + torch.tensor([0.1, 0.0])
            return Congealed(image=None, grid=grid, delta_flow=delta, matrix=torch.zeros(n, 2, 3))

    m = GANgealing(PretrainedSettings("flip", "border", 1), supersize=S, max_channels=8)
    m.t_ema = Lopsided()
    x = -torch.ones(2, 3, 64, 64)
    x[0, :, :, :32] = 1.0   # bright left: its mirror is smoother
    x[1, :, :, 32:] = 1.0   # bright right: keep as is
    res = m.congeal(x, return_image=False)
    assert res.flipped.tolist() == [True, False]
    assert torch.allclose(res.grid[0, ..., 0], -(identity_grid(128)[0, ..., 0] + 0.1))  # mirrored back
    assert torch.allclose(res.grid[1, ..., 0], identity_grid(128)[0, ..., 0] + 0.1)


def test_streams_reuse_the_mirror_decision_between_checks():
    """flip_every=3: two STN passes (image + mirror) on frames 0 and 3, one pass with the kept decision between."""
    calls = []

    class Counting(CentroidSTN):
        def forward(self, x, **kw):
            calls.append(x.shape[0])
            return super().forward(x, **kw)

    m = tracking_model()
    m.t_ema = Counting()
    frames, _ = moving_frames(count=5)
    prop = pipe.Propagator(m, dot_edit(64, (32, 32)), resolution=128, flip_every=3)
    for img in frames:
        prop(img)
    assert calls == [2, 1, 1, 2, 1]
    calls.clear()
    res = m.congeal(torch.zeros(2, 3, 64, 64), mirror=torch.tensor([True, False]), return_image=False)
    assert calls == [1 * 2] and res.flipped.tolist() == [True, False]  # one batch, the imposed decision
    assert torch.allclose(res.grid[0, ..., 0], -res.grid[1, ..., 0])


def test_clustering_model_uses_the_classifier():
    m = GANgealing(PretrainedSettings("clu", "border", 1, num_heads=4), supersize=S, max_channels=8).eval()
    with torch.no_grad():
        m.classifier.to_logits.weight.zero_()
        m.classifier.to_logits.bias.copy_(torch.tensor([0, 0, 0, 1.0, 0, 0, 0, 0]))  # cluster 3, not mirrored
        head = m.t_ema.stns[0].warp_head.linear
        head.weight.zero_()
        bias = torch.zeros(16)
        bias[2 * 4 + 3] = 0.25    # shift x of head 3 (layout: parameter * K + head)
        bias[2 * 4 + 1] = -0.5    # shift x of head 1
        head.bias.copy_(bias)
    x = torch.zeros(1, 3, S, S)
    res = m.congeal(x, return_image=False)
    assert res.heads.tolist() == [3] and res.flipped.tolist() == [False]
    assert float(res.matrix[0, 0, 2]) == pytest.approx(0.25, abs=1e-6)
    res = m.congeal(x, cluster=1, return_image=False)  # a fixed cluster: its head, classifier only for the mirror
    assert res.heads.tolist() == [1]
    assert float(res.matrix[0, 0, 2]) == pytest.approx(-0.5, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------

def test_congeal_report_and_quality_flag(model):
    img = to_uint8(warp_to_image(blob_image(S, (128.0, 128.0)), S))
    report = pipe.congeal_image(model, img, resolution=S, with_correspondence=False)
    assert report.aligned.shape == (S, S, 3) and report.flow.shape == (S, S, 3)
    assert not report.quality.flagged and report.quality.roughness < 1e-3
    # the flow map's colour scale is the largest displacement of the known warp
    disp = norm_to_px(known_warp(identity_grid(S)), S) - norm_to_px(identity_grid(S), S)
    assert report.max_displacement == pytest.approx(float(np.percentile(disp.norm(dim=-1).numpy(), 99)), rel=0.05)
    rough = analytic_model()
    with torch.no_grad():
        torch.manual_seed(1)
        rough.t_ema.stns[1].warp_head.flow_out[2].weight.normal_(0, 0.5)
    bad = pipe.congeal_image(rough, img, resolution=S, with_correspondence=False)
    assert bad.quality.flagged and "rough" in bad.quality.message
    assert bad.quality.tv > pipe.TV_LIMIT > report.quality.tv
    assert bad.quality.roughness == pytest.approx(128 * math.sqrt(bad.quality.tv))
    # roughness is the RMS norm of the residual flow's Jacobian (px/px) when neighbour differences are small:
    # a residual flow stretching x by 10 % everywhere has roughness 0.1
    ramp = identity_grid(128)[..., :1].expand(1, 128, 128, 2) * torch.tensor([0.1, 0.0])
    q = pipe.quality(ramp, identity_grid(128))[0]
    assert q.roughness == pytest.approx(0.1, rel=0.02) and not q.flagged


def test_dense_label_correspondence_overlay(model, shared_data):
    report = pipe.congeal_image(model, np.zeros((100, 150, 3), np.uint8), resolution=128)
    assert report.correspondence is None  # the test model's name has no assets ...
    label = pipe.dense_label("cat")        # ... but the real ones do
    assert label.shape == (512, 512, 4) and (label[..., 3] > 0).mean() > 0.05
    assert pipe.average_image("cat").shape == (512, 512, 3)
    assert pipe.average_image("car", 2).shape == (512, 512, 3)
    assert pipe.average_image("cub").shape == (512, 512, 3)  # the CUB model's assets are named "bird"


def test_input_validation(model, monkeypatch):
    good = dot_edit(64, (32, 32))
    with pytest.raises(InputError, match="empty"):
        pipe.Propagator(model, np.zeros((64, 64, 4), np.uint8))
    with pytest.raises(InputError, match="RGBA"):
        pipe.Propagator(model, np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(InputError, match="square"):
        pipe.Propagator(model, np.zeros((64, 128, 4), np.uint8))
    with pytest.raises(InputError, match="resolution"):
        pipe.Propagator(model, good, resolution=300)
    with pytest.raises(InputError, match="opacity"):
        pipe.Propagator(model, good, opacity=2.0)
    with pytest.raises(InputError, match="8 pixels"):
        pipe.Propagator(model, good)(np.zeros((4, 30, 3), np.uint8))
    with pytest.raises(InputError, match="No target"):
        pipe.propagate(model, good, [])
    with pytest.raises(InputError, match="Unknown GANgealing"):
        pipe.get_model("gangealing-zebra")
    monkeypatch.setenv("ENGINE_MAX_PIXELS", "1000")
    with pytest.raises(InputError, match="megapixels"):
        pipe.congeal_image(model, np.zeros((40, 40, 3), np.uint8))
