"""Face masks and compositing (rmmvideo.video.composite)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from conftest_faces import face_patch
from skimage import data as skdata

from rmmvideo.config import FFHQ_TEMPLATE
from rmmvideo.models.face_parser import BiSeNet
from rmmvideo.video.align import align_matrices, five_points, warp_to_crops
from rmmvideo.video.composite import (
    composite_faces,
    ellipse_mask,
    face_masks,
    gaussian_blur,
    is_grey,
    labels_to_mask,
    landmark_mask,
    parsing_mask,
    restoration_detail,
    to_grey,
    transform_points,
)

S = 128
SOFT = 20.0 / S  # largest neighbour step allowed in a mask (a hard edge is 1)


def _max_step(m: torch.Tensor) -> float:
    """Largest difference between neighbouring pixels (a hard edge gives ~1)."""
    dx = (m[..., :, 1:] - m[..., :, :-1]).abs().max()
    dy = (m[..., 1:, :] - m[..., :-1, :]).abs().max()
    return float(max(dx, dy))


def _astronaut_case():
    """Frame (1, 3, 512, 512) in [0, 1], its face's 68 points and frame -> crop matrix."""
    img = skdata.astronaut()
    _, lm_patch = face_patch()
    lm = torch.from_numpy(lm_patch + np.array([120.0, 30.0]))[None]  # patch offset in the image
    m = align_matrices(five_points(lm), FFHQ_TEMPLATE, S)
    frame = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255.0
    return frame, lm, m


def _check_soft(mask: torch.Tensor, limit: float) -> None:
    assert mask.min() >= 0 and mask.max() <= 1
    border = torch.cat([mask[..., 0, :], mask[..., -1, :], mask[..., :, 0], mask[..., :, -1]], -1)
    assert float(border.max()) < 1e-6, "mask must vanish at the crop border"
    assert _max_step(mask) < limit, "mask has a hard edge"


def test_landmark_mask_covers_face_with_soft_edges():
    _, lm, m = _astronaut_case()
    lm_crop = transform_points(m, lm)
    mask = landmark_mask(lm_crop, S)
    assert mask.shape == (1, 1, S, S)
    _check_soft(mask, limit=SOFT)
    for p in (30, 33, 39, 42, 51, 57):  # nose, eyes' inner corners, lips: fully inside
        x, y = lm_crop[0, p].round().long().tolist()
        assert float(mask[0, 0, y, x]) > 0.99
    x, y = lm_crop[0, 8].round().long().tolist()  # chin: on the hull edge, faded
    assert float(mask[0, 0, y, x]) < 0.2
    # Forehead above the brows is included, the crop corners are not.
    bx, by = lm_crop[0, 17:27].mean(0).tolist()
    eyes_mouth = float((lm_crop[0, 36:48].mean(0) - lm_crop[0, 48:68].mean(0)).norm())
    assert float(mask[0, 0, int(by), int(bx)]) > 0.95
    assert float(mask[0, 0, int(by - 0.25 * eyes_mouth), int(bx)]) > 0.5
    assert float(mask[0, 0, int(by - 0.6 * eyes_mouth), int(bx)]) == 0.0
    assert float(mask[0, 0, :5, :5].max()) == 0.0


def test_ellipse_mask_is_soft_and_centred():
    mask = ellipse_mask(S, FFHQ_TEMPLATE, n=2)
    assert mask.shape == (2, 1, S, S)
    _check_soft(mask, limit=SOFT)
    nose = [int(v * S) for v in FFHQ_TEMPLATE[2]]
    assert float(mask[0, 0, nose[1], nose[0]]) == 1.0


def test_labels_to_mask_keeps_face_parts_and_drops_the_rest():
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    r = ((yy - S / 2) ** 2 + (xx - S / 2) ** 2).float().sqrt()
    labels = torch.zeros(1, S, S, dtype=torch.long)      # background
    labels[0][r < 0.45 * S] = 17                            # hair ring
    labels[0][r < 0.3 * S] = 1                              # skin disc
    labels[0][(r < 0.1 * S)] = 10                           # nose
    labels[0][yy > 0.9 * S] = 16                            # cloth
    m = labels_to_mask(labels, S)
    _check_soft(m, limit=SOFT)
    c = S // 2
    assert float(m[0, 0, c, c]) > 0.95                     # nose / skin kept
    assert float(m[0, 0, c, int(c + 0.42 * S)]) < 0.1      # hair dropped by default
    with_hair = labels_to_mask(labels, S, keep_hair=True)
    assert float(with_hair[0, 0, c, int(c + 0.38 * S)]) > 0.5
    assert float(m[0, 0, int(0.95 * S), c]) < 1e-3         # cloth dropped


def test_parsing_mask_runs_the_parser():
    torch.manual_seed(0)
    parser = BiSeNet().eval()
    crops = torch.rand(2, 3, 64, 64)
    m = parsing_mask(parser, crops, parse_size=64)
    assert m.shape == (2, 1, 64, 64)
    assert m.min() >= 0 and m.max() <= 1
    border = torch.cat([m[..., 0, :], m[..., -1, :], m[..., :, 0], m[..., :, -1]], -1)
    assert float(border.max()) < 1e-6


def _uint8(x: torch.Tensor) -> np.ndarray:
    """(B, 3, H, W) in [0, 1] -> (B, H, W, 3) uint8."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def test_composite_no_box_and_exact_background():
    frame, lm, m = _astronaut_case()
    scale = 2
    h, w = frame.shape[-2:]
    up = _uint8(F.interpolate(frame, scale_factor=scale, mode="bilinear", align_corners=False))
    mask = landmark_mask(transform_points(m, lm), S)
    # White detail added to a black canvas: the pasted alpha is soft everywhere (no box, no hard edge).
    black = np.zeros_like(up)
    composite_faces(black, torch.ones(1, 3, S, S), mask, [0], m, (h, w))
    assert black.max() == 255
    assert _max_step(torch.from_numpy(black).float() / 255) < 0.1
    # Zero detail (the model gave back its input) leaves every pixel bit-exact.
    same = up.copy()
    composite_faces(same, torch.zeros(1, 3, S, S), mask, [0], m, (h, w))
    assert np.array_equal(same, up)
    # Real detail changes the face only: the background is bit-exact.
    crop = warp_to_crops(frame, torch.tensor([0]), m, S)
    detail = restoration_detail((crop + 0.2 * torch.rand(crop.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1), crop)
    out = up.copy()
    composite_faces(out, detail, mask, [0], m, (h, w))
    assert np.array_equal(out[:, :, :300], up[:, :, :300])  # left of the face
    assert np.array_equal(out[:, 600:], up[:, 600:])  # below the face
    assert not np.array_equal(out, up)
    # A zero mask (strength 0) changes nothing.
    zero = up.copy()
    composite_faces(zero, detail, mask * 0.0, [0], m, (h, w))
    assert np.array_equal(zero, up)


def test_grey_frames_stay_grey():
    frame, lm, m = _astronaut_case()
    grey_frame = to_grey(frame)
    assert bool(is_grey(grey_frame)[0]) and not bool(is_grey(frame)[0])
    colour_detail = 0.3 * (warp_to_crops(frame, torch.tensor([0]), m, S) - 0.5)
    mask = landmark_mask(transform_points(m, lm), S)
    canvas = _uint8(torch.cat([grey_frame, frame]))
    composite_faces(canvas, colour_detail.repeat(2, 1, 1, 1), mask.repeat(2, 1, 1, 1), [0, 1], m.repeat(2, 1, 1),
                    tuple(frame.shape[-2:]), grey=[True, False])
    spread = canvas.max(-1).astype(int) - canvas.min(-1)
    assert spread[0].max() == 0  # grey in, grey out
    assert spread[1].max() > 50  # colour frame keeps colour


def test_gaussian_blur_preserves_constants_and_mass():
    x = torch.full((1, 2, 20, 30), 0.7)
    torch.testing.assert_close(gaussian_blur(x, 3.0), x)
    d = torch.zeros(1, 1, 41, 41)
    d[0, 0, 20, 20] = 1.0
    b = gaussian_blur(d, 2.0)
    assert abs(float(b.sum()) - 1.0) < 1e-5 and float(b.max()) < 0.05


def test_face_masks_picks_the_method():
    frame, lm, m = _astronaut_case()
    crops = warp_to_crops(frame, torch.tensor([0]), m, S)
    by_lm = face_masks(crops, m, landmarks68=lm)
    torch.testing.assert_close(by_lm, landmark_mask(transform_points(m, lm), S))
    by_tpl = face_masks(crops, m, template=FFHQ_TEMPLATE)
    torch.testing.assert_close(by_tpl, ellipse_mask(S, FFHQ_TEMPLATE))
