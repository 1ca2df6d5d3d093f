"""Alignment warps: similarity fit, crops, paste-back (rmmvideo.video.align)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage import data as skdata

from rmmvideo.config import FFHQ_TEMPLATE
from rmmvideo.video.align import (
    align_matrices,
    compose_affine,
    five_points,
    invert_affine,
    paste_back,
    scale_affine,
    similarity_transform,
    template_points,
    warp_to_crops,
)

# Approximate 5 points of the astronaut's face in skimage.data.astronaut() (512x512).
ASTRONAUT_5 = np.array([[205.0, 116.0], [240.0, 112.0], [226.0, 135.0], [210.0, 155.0], [242.0, 152.0]])


def _astronaut() -> torch.Tensor:
    img = skdata.astronaut()
    return torch.from_numpy(img).permute(2, 0, 1).double() / 255.0  # (3, 512, 512)


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a - b) ** 2).mean())
    return 10 * math.log10(1.0 / max(mse, 1e-20))


def _random_similarity(n: int, gen: torch.Generator) -> torch.Tensor:
    ang = (torch.rand(n, generator=gen, dtype=torch.float64) - 0.5) * 2.0
    sc = 0.3 + 2.0 * torch.rand(n, generator=gen, dtype=torch.float64)
    t = (torch.rand(n, 2, generator=gen, dtype=torch.float64) - 0.5) * 400
    a = sc[:, None, None] * torch.stack(
        [torch.stack([ang.cos(), -ang.sin()], -1), torch.stack([ang.sin(), ang.cos()], -1)], -2)
    return torch.cat([a, t[:, :, None]], -1)


def test_five_points_layout():
    lm = np.zeros((68, 2))
    lm[36:42] = [10.0, 20.0]
    lm[42:48] = [30.0, 20.0]
    lm[30] = [20.0, 30.0]
    lm[48] = [12.0, 40.0]
    lm[54] = [28.0, 40.0]
    p = five_points(lm)
    assert p.shape == (5, 2)
    np.testing.assert_allclose(p, [[10, 20], [30, 20], [20, 30], [12, 40], [28, 40]])
    pt = five_points(torch.from_numpy(np.stack([lm, lm + 1])))
    assert pt.shape == (2, 5, 2)
    np.testing.assert_allclose(pt[1].numpy(), p + 1)
    with pytest.raises(ValueError, match="68, 2"):
        five_points(np.zeros((5, 2)))


def test_similarity_transform_recovers_known_transform():
    gen = torch.Generator().manual_seed(0)
    m_true = _random_similarity(6, gen)
    src = torch.rand(6, 5, 2, generator=gen, dtype=torch.float64) * 300
    dst = torch.einsum("nij,npj->npi", m_true[:, :, :2], src) + m_true[:, None, :, 2]
    m = similarity_transform(src, dst)
    assert m.shape == (6, 2, 3)
    torch.testing.assert_close(m, m_true, atol=1e-9, rtol=1e-9)


def test_similarity_transform_never_reflects():
    src = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 0.2]]], dtype=torch.float64)
    dst = src.clone()
    dst[..., 0] = -dst[..., 0]  # mirror image: best similarity must still be a rotation
    m = similarity_transform(src, dst[0])
    assert torch.linalg.det(m[0, :, :2]) > 0


def test_invert_and_compose_do_not_modify_inputs():
    gen = torch.Generator().manual_seed(1)
    m = _random_similarity(4, gen)
    keep = m.clone()
    inv = invert_affine(m)
    eye = compose_affine(m, inv)
    torch.testing.assert_close(eye[:, :, :2], torch.eye(2, dtype=torch.float64).expand(4, 2, 2))
    torch.testing.assert_close(eye[:, :, 2], torch.zeros(4, 2, dtype=torch.float64), atol=1e-9, rtol=0)
    assert torch.equal(m, keep)


def test_warp_integer_translation_is_exact():
    frame = torch.rand(1, 3, 40, 50, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    m = torch.tensor([[[1.0, 0.0, -10.0], [0.0, 1.0, -7.0]]], dtype=torch.float64)  # frame -> crop
    keep = m.clone()
    crop = warp_to_crops(frame, torch.tensor([0]), m, 16)
    torch.testing.assert_close(crop[0], frame[0, :, 7:23, 10:26], atol=1e-12, rtol=0)
    assert torch.equal(m, keep)


def test_template_alignment_puts_points_on_template():
    frame = _astronaut()[None]
    m = align_matrices(torch.from_numpy(ASTRONAUT_5)[None], FFHQ_TEMPLATE, 128)
    tp = template_points(FFHQ_TEMPLATE, 128)
    mapped = torch.einsum("ij,pj->pi", m[0, :, :2], torch.from_numpy(ASTRONAUT_5)) + m[0, :, 2]
    # The fit is a similarity, so the residual is small (points are hand-picked, not exact).
    assert float((mapped - tp).norm(dim=-1).max()) < 6.0
    crop = warp_to_crops(frame, torch.tensor([0]), m, 128)
    assert crop.shape == (1, 3, 128, 128) and float(crop.std()) > 0.05


@pytest.mark.parametrize("canvas_scale", [1, 2])
def test_warp_then_paste_back_reproduces_frame(canvas_scale: int):
    frame = _astronaut()
    frames = torch.stack([frame, frame.flip(-1)])  # (2, 3, 512, 512)
    pts = torch.from_numpy(np.stack([ASTRONAUT_5, ASTRONAUT_5]))
    pts[1, :, 0] = 511 - pts[1, :, 0]
    pts[1] = pts[1][[1, 0, 2, 4, 3]]  # mirrored face: left/right swap
    size = 256
    m = align_matrices(pts, FFHQ_TEMPLATE, size)
    fidx = torch.tensor([0, 1])
    crops = warp_to_crops(frames, fidx, m, size)
    masks = torch.ones(2, 1, size, size, dtype=torch.float64)
    s = float(canvas_scale)
    if canvas_scale == 1:
        canvas = frames.clone()
    else:
        canvas = F.interpolate(frames, scale_factor=s, mode="bilinear", align_corners=False)
    to_canvas = compose_affine(scale_affine(s, torch.float64), invert_affine(m))
    keep_canvas, keep_m = canvas.clone(), to_canvas.clone()
    out = paste_back(canvas, crops, masks, fidx, to_canvas)
    assert torch.equal(canvas, keep_canvas) and torch.equal(to_canvas, keep_m)

    # Where each canvas pixel falls in its crop.
    hh, ww = canvas.shape[-2:]
    ys, xs = torch.meshgrid(torch.arange(hh, dtype=torch.float64), torch.arange(ww, dtype=torch.float64),
                            indexing="ij")
    for b in range(2):
        inv = invert_affine(to_canvas[b:b + 1])[0]
        u = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
        v = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
        inside = (u > 2) & (u < size - 3) & (v > 2) & (v < size - 3)
        outside = (u < -1.01) | (u > size + 0.01) | (v < -1.01) | (v > size + 0.01)
        assert inside.sum() > 1000 and outside.sum() > 1000
        ref = canvas[b][:, inside]
        got = out[b][:, inside]
        assert _psnr(got, ref) > 35.0
        # Background exactly unchanged outside the mask support.
        assert torch.equal(out[b][:, outside], canvas[b][:, outside])


def test_paste_back_overlapping_faces_are_averaged():
    canvas = torch.zeros(1, 3, 64, 64)
    crops = torch.stack([torch.full((3, 16, 16), 0.2), torch.full((3, 16, 16), 0.8)])
    masks = torch.ones(2, 1, 16, 16)
    m = torch.tensor([[[1.0, 0.0, 10.0], [0.0, 1.0, 10.0]], [[1.0, 0.0, 18.0], [0.0, 1.0, 10.0]]])
    out = paste_back(canvas, crops, masks, torch.tensor([0, 0]), m)
    assert torch.allclose(out[0, :, 15, 13], torch.tensor(0.2))   # face 0 only
    assert torch.allclose(out[0, :, 15, 22], torch.tensor(0.5))   # overlap: mean of the two
    assert torch.allclose(out[0, :, 15, 31], torch.tensor(0.8))   # face 1 only
    assert torch.equal(out[0, :, 40:, :], canvas[0, :, 40:, :])
    inplace = canvas.clone()
    paste_back(inplace, crops, masks, torch.tensor([0, 0]), m, inplace=True)
    assert torch.equal(inplace, out)


def test_warp_antialiases_when_shrinking():
    # A one-pixel checkerboard shrunk 4x must average to grey, not alias into stripes.
    yy, xx = torch.meshgrid(torch.arange(256), torch.arange(256), indexing="ij")
    board = ((yy + xx) % 2).double()[None, None].expand(1, 3, 256, 256).contiguous()
    ang = 0.3
    m = 0.25 * torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]], dtype=torch.float64)
    t = torch.tensor([32.0, 32.0], dtype=torch.float64) - m @ torch.tensor([128.0, 128.0], dtype=torch.float64)
    mat = torch.cat([m, t[:, None]], 1)[None]
    smooth = warp_to_crops(board, torch.tensor([0]), mat, 48)[0, :, 8:40, 8:40]
    aliased = warp_to_crops(board, torch.tensor([0]), mat, 48, max_supersample=1)[0, :, 8:40, 8:40]
    assert float(smooth.std()) < 0.1
    assert float(aliased.std()) > 2 * float(smooth.std())
    assert abs(float(smooth.mean()) - 0.5) < 0.05


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"\(N, 2, 3\)"):
        warp_to_crops(torch.zeros(1, 3, 8, 8), torch.tensor([0]), torch.zeros(1, 3, 3), 4)
    with pytest.raises(ValueError, match="masks"):
        paste_back(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 4), torch.zeros(1, 3, 4, 4),
                   torch.tensor([0]), torch.zeros(1, 2, 3))


def test_faces_at_and_beyond_the_frame_edge():
    frame = torch.rand(1, 3, 40, 60, generator=torch.Generator().manual_seed(5))
    # Crop 0 hangs over the left edge, crop 1 lies entirely outside the frame.
    m = torch.tensor([[[1.0, 0.0, 8.0], [0.0, 1.0, -10.0]], [[1.0, 0.0, -100.0], [0.0, 1.0, -100.0]]],
                     dtype=torch.float64)  # frame -> crop
    crops = warp_to_crops(frame, torch.tensor([0, 0]), m, 16)
    assert float(crops[0, :, :, :8].abs().max()) < 1e-5  # outside the frame: zeros (float32 grid)
    torch.testing.assert_close(crops[0, :, :, 8:], frame[0, :, 10:26, 0:8], atol=1e-5, rtol=0)
    assert torch.equal(crops[1], torch.zeros(3, 16, 16))
    white = torch.ones(2, 3, 16, 16)
    out = paste_back(frame, white, torch.ones(2, 1, 16, 16), torch.tensor([0, 0]), invert_affine(m))
    torch.testing.assert_close(out[0, :, 11:25, 0:7], torch.ones(3, 14, 7), atol=1e-5, rtol=0)
    assert torch.equal(out[0, :, :, 10:], frame[0, :, :, 10:])
