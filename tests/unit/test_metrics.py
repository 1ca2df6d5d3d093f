"""Image metrics (PSNR, SSIM, MS-SSIM, Hist-CIEDE) and dlib identity metrics (FED, LLE)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rmmvideo.eval.metrics import (
    PSNR_CAP,
    ciede2000,
    hist_ciede,
    mean_lab_ciede,
    ms_ssim,
    ms_ssim_levels,
    psnr,
    rgb_to_lab,
    ssim,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
UTK = DATA / "faces" / "utkface"
needs_utk = pytest.mark.skipif(not UTK.is_dir(), reason=f"UTKFace crops not found at {UTK}")


def _img(b: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.rand(b, 3, size // 8, size // 8, generator=g), size=size, mode="bilinear")


def test_psnr_identical_is_cap_and_matches_noise_level() -> None:
    x = _img()
    assert torch.all(psnr(x, x) == PSNR_CAP)
    g = torch.Generator().manual_seed(1)
    x = torch.full((2, 3, 256, 256), 0.5)
    sigma = 0.02
    y = x + sigma * torch.randn(x.shape, generator=g)
    expected = 10 * math.log10(1 / sigma**2)
    assert torch.allclose(psnr(y, x), torch.full((2,), expected, dtype=torch.float64), atol=0.05)
    assert psnr(y[0], x[0]).shape == (1,)
    assert psnr(y, x, channel="y").shape == (2,)


def test_ssim_identity_and_monotone_in_noise() -> None:
    x = _img()
    assert torch.allclose(ssim(x, x), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(ms_ssim(x, x), torch.ones(2, dtype=torch.float64))
    g = torch.Generator().manual_seed(2)
    prev_s, prev_m = 1.0, 1.0
    for sigma in (0.02, 0.05, 0.1, 0.2):
        y = (x + sigma * torch.randn(x.shape, generator=g)).clamp(0, 1)
        s, m = float(ssim(y, x).mean()), float(ms_ssim(y, x).mean())
        assert s < prev_s and m < prev_m
        prev_s, prev_m = s, m
    assert ssim(y, x, channel="y").shape == (2,)


def test_ssim_matches_skimage() -> None:
    skm = pytest.importorskip("skimage.metrics")
    x = _img(1)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    ref = skm.structural_similarity(
        x[0].permute(1, 2, 0).double().numpy(), y[0].permute(1, 2, 0).double().numpy(),
        channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
    )
    assert abs(float(ssim(x, y)[0]) - ref) < 1e-6


def test_ms_ssim_levels() -> None:
    assert ms_ssim_levels(512) == 5 and ms_ssim_levels(176) == 5
    assert ms_ssim_levels(128) == 4 and ms_ssim_levels(11) == 1


def test_lab_and_ciede2000_match_reference() -> None:
    color = pytest.importorskip("skimage.color")
    x = _img(1)
    lab = rgb_to_lab(x)[0].permute(1, 2, 0).numpy()
    assert np.abs(lab - color.rgb2lab(x[0].permute(1, 2, 0).double().numpy())).max() < 1e-6
    # Sharma et al. 2005 test pairs
    pairs = [((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
             ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
             ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065)]
    for a, b, de in pairs:
        v = ciede2000(torch.tensor(a, dtype=torch.float64), torch.tensor(b, dtype=torch.float64))
        assert abs(float(v) - de) < 1e-4


def test_hist_ciede_is_a_colour_distribution_distance() -> None:
    x = _img(2)
    assert torch.allclose(hist_ciede(x, x), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    perm = x.flatten(2)[:, :, torch.randperm(64 * 64)].reshape(x.shape)
    assert torch.allclose(hist_ciede(perm, x), torch.zeros(2, dtype=torch.float64), atol=1e-9)
    warm = (x + torch.tensor([0.06, 0.0, -0.06]).view(1, 3, 1, 1)).clamp(0, 1)
    warmer = (x + torch.tensor([0.15, 0.0, -0.15]).view(1, 3, 1, 1)).clamp(0, 1)
    assert torch.all(hist_ciede(warm, x) > 1.0)
    assert torch.all(hist_ciede(warmer, x) > hist_ciede(warm, x))
    assert torch.all(mean_lab_ciede(warmer, x) > mean_lab_ciede(warm, x))
    small = F.interpolate(x, size=16, mode="area")  # distributions of different sizes compare
    assert hist_ciede(small, x).shape == (2,)


@needs_utk
def test_fed_and_lle_on_real_faces() -> None:
    from rmmvideo.eval.face_metrics import batch_fed_lle, face_reference, fed, lle, to_uint8
    from rmmvideo.train.data import center_square_resize, load_rgb, to_tensor
    from rmmvideo.train.degrade import _filter, gaussian_kernel

    files = sorted(UTK.glob("*.jpg"))
    a = to_tensor(center_square_resize(load_rgb(files[300]), 128))
    b = to_tensor(center_square_resize(load_rgb(files[5000]), 128))  # another person
    blurred = _filter(a, gaussian_kernel(1.0))
    assert fed(a, a) == 0.0 and lle(a, a) == 0.0
    f_blur, f_other = fed(blurred, a), fed(b, a)
    assert 0.0 < f_blur < f_other
    assert f_other > 0.6 > f_blur  # dlib's same-person threshold
    refs = [face_reference(to_uint8(a)), face_reference(to_uint8(b))]
    fe, ll = batch_fed_lle(torch.stack([blurred, b]), refs)
    assert abs(float(fe[0]) - f_blur) < 1e-9 and float(fe[1]) == 0.0 and float(ll[1]) == 0.0
