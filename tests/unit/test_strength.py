"""Never-worse compositing: the detail band (rmmvideo.video.composite.restoration_detail), residual
paste-back, the temporal stabiliser and the strength estimate (rmmvideo.video.strength)."""

from __future__ import annotations

import math

import pytest
import torch

from rmmvideo.video.align import paste_back
from rmmvideo.video.composite import restoration_detail
from rmmvideo.video.stabilise import TemporalStabiliser
from rmmvideo.video.strength import degrade_in_crop_space, fit_strength, resolution_gap

S = 64


def _face_like(seed: int = 0) -> torch.Tensor:
    """(1, 3, S, S) smooth image in [0.2, 0.8] (shading plus a few soft blobs)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, S // 8, S // 8, generator=g)
    x = torch.nn.functional.interpolate(x, size=(S, S), mode="bicubic", align_corners=False)
    return (0.2 + 0.6 * (x - x.min()) / (x.max() - x.min())).clamp(0, 1)


def test_colour_offset_is_removed_and_fine_detail_is_kept() -> None:
    lq = _face_like()
    offset = torch.tensor([0.08, -0.05, 0.03]).view(1, 3, 1, 1)
    assert restoration_detail(lq + offset, lq).abs().max() < 1e-5  # a colour shift is not detail
    shading = torch.linspace(-0.1, 0.1, S).view(1, 1, 1, S).expand(1, 3, S, S)
    assert restoration_detail(lq + shading, lq).abs().mean() < 0.1 * shading.abs().mean()
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    fine = 0.05 * ((yy + xx) % 2 * 2 - 1).float().expand(1, 3, S, S)  # 1-px checkerboard
    kept = restoration_detail(lq + fine + offset, lq)
    assert torch.allclose(kept, fine, atol=0.01)  # the detail survives, the offset does not


def test_residual_paste_adds_only_inside_the_mask_and_zero_strength_is_exact() -> None:
    canvas = torch.rand(1, 3, 40, 50)
    detail = torch.full((1, 3, 16, 16), 0.1)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1.0
    m = torch.tensor([[[1.0, 0.0, 10.0], [0.0, 1.0, 5.0]]], dtype=torch.float64)  # crop -> canvas shift
    out = paste_back(canvas, detail, mask, torch.zeros(1, dtype=torch.long), m, residual=True)
    inside = out[..., 5 + 6:5 + 10, 10 + 6:10 + 10] - canvas[..., 5 + 6:5 + 10, 10 + 6:10 + 10]
    assert torch.allclose(inside, torch.full_like(inside, 0.1), atol=1e-6)
    assert torch.equal(out[..., :5, :], canvas[..., :5, :]) and torch.equal(out[..., :, :10], canvas[..., :, :10])
    zero = paste_back(canvas, detail, mask * 0.0, torch.zeros(1, dtype=torch.long), m, residual=True)
    assert torch.equal(zero, canvas)


def test_resolution_gap() -> None:
    f = torch.tensor([0.5, 1.0, 2.0, 4.0, 8.0])
    # big faces (f <= 1: the crop is a downsample) have nothing to gain at x2 / x4 ...
    assert resolution_gap(f, 2.0).tolist()[:2] == [1.0, 1.0]
    # ... small ones gain up to the output scale
    assert resolution_gap(f, 4.0).tolist()[2:] == [2.0, 4.0, 4.0]
    assert resolution_gap(f, 1.0).tolist() == [1.0] * 5  # no upscale: nothing to add


def test_fit_strength_recovers_the_blend_weight_and_clamps() -> None:
    g = torch.Generator().manual_seed(1)
    lost = torch.randn(2, 3, S, S, generator=g)
    w = torch.ones(2, 1, S, S)
    assert math.isclose(fit_strength(lost / 0.6, lost, w), 0.6, rel_tol=1e-6)
    assert fit_strength(-lost, lost, w) == 0.0  # detail that points away from the truth
    assert fit_strength(0.5 * lost, lost, w) == 1.0  # clamped
    assert fit_strength(torch.zeros_like(lost), lost, w) == 0.0


def test_degrade_in_crop_space_removes_fine_detail_only() -> None:
    x = _face_like(3)
    assert (degrade_in_crop_space(x, 2.0) - x).abs().mean() < 0.01  # smooth content stays
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    fine = x + 0.05 * ((yy + xx) % 2 * 2 - 1).float()
    assert (degrade_in_crop_space(fine, 2.0) - x).abs().mean() < 0.01  # 1-px detail is gone


def test_stabiliser_averages_static_noise_but_keeps_motion() -> None:
    g = torch.Generator().manual_seed(2)
    base = _face_like(4)
    stab = TemporalStabiliser(window=3)
    outs, truths = [], []
    for t in range(8):
        truth = base.clone()
        if t >= 5:  # a "mouth" opens at frame 5: a big local change
            truth[..., 40:52, 20:44] = 0.05
        noisy = truth + 0.02 * torch.randn(truth.shape, generator=g)
        outs.append(stab([7], [t], noisy, noisy))
        truths.append(truth)
    err_in = (outs[0] - truths[0]).abs().mean()  # first frame: nothing to average with
    err_static = (outs[4] - truths[4]).abs().mean()
    assert err_static < 0.7 * err_in  # noise averaged over 4 frames
    moved = outs[5][..., 40:52, 20:44]
    assert (moved - 0.05).abs().mean() < 0.03  # the change is not smeared with the old frames
    # FIR: frame 7 restarted with only frames 4..6 of history gives the same result
    fresh = TemporalStabiliser(window=3)
    g2 = torch.Generator().manual_seed(2)
    noisy_all = []
    for t in range(8):
        truth = truths[t]
        noisy_all.append(truth + 0.02 * torch.randn(truth.shape, generator=g2))
    for t in range(4, 7):
        fresh([7], [t], noisy_all[t], noisy_all[t])
    assert torch.allclose(fresh([7], [7], noisy_all[7], noisy_all[7]), outs[7], atol=1e-6)


def test_stabiliser_keeps_tracks_apart_and_window_zero_is_identity() -> None:
    a, b = _face_like(5), _face_like(6)
    stab = TemporalStabiliser(window=2)
    stab([1], [0], a, a)
    out = stab([2], [1], b, b)  # a new track: no history, returned as is
    assert torch.equal(out, b)
    assert torch.equal(TemporalStabiliser(0)([1, 1], [0, 1], torch.cat([a, b]), torch.cat([a, b])), torch.cat([a, b]))
    with pytest.raises(ValueError):
        TemporalStabiliser(-1)
