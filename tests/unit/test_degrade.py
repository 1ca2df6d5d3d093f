"""Degradation model (eq. 16): parameter ranges, determinism, protocols, kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rmmvideo.errors import UserError
from rmmvideo.train.degrade import (
    DegradationConfig,
    apply_params,
    degrade,
    degrade_tb,
    degrade_td,
    _filter,
    gaussian_blur,
    gaussian_kernel,
    motion_kernel,
    resize_to,
    sample_params,
)


def _face(size: int = 64, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(3, size // 8, size // 8, generator=g)
    return resize_to(base, size)  # smooth-ish image in [0, 1]


def test_sampled_parameters_within_paper_ranges() -> None:
    cfg = DegradationConfig()
    rng = np.random.default_rng(0)
    draws = [sample_params(rng, cfg) for _ in range(600)]
    kinds = {p.blur for p in draws}
    assert kinds == {"none", "gaussian", "motion"}
    for p in draws:
        assert 1.0 <= p.sigma <= 5.0
        assert 3 <= p.motion_length <= 21
        assert 0.0 <= p.motion_angle < 180.0
        assert 2.0 <= p.scale <= 12.0
        assert p.noise_sigma == 0.0 or 1.0 <= p.noise_sigma <= 15.0
        assert p.jpeg_quality is None or 40 <= p.jpeg_quality <= 80
        assert not p.grayscale
    blur_share = np.mean([p.blur != "none" for p in draws])
    assert 0.7 < blur_share < 0.9  # blur_prob 0.8
    assert 0.7 < np.mean([p.jpeg_quality is not None for p in draws]) < 0.9


def test_same_seed_same_output_different_seed_different() -> None:
    hq = _face()
    a = degrade(hq, np.random.default_rng(7))
    b = degrade(hq, np.random.default_rng(7))
    c = degrade(hq, np.random.default_rng(8))
    assert torch.equal(a, b)
    assert a.shape != c.shape or not torch.equal(a, c)


def test_output_low_resolution_and_range() -> None:
    hq = _face(96)
    rng = np.random.default_rng(1)
    for _ in range(10):
        state = rng.bit_generator.state
        p = sample_params(rng, DegradationConfig())
        rng.bit_generator.state = state
        lq = degrade(hq, rng)
        assert lq.shape == (3, max(1, round(96 / p.scale)), max(1, round(96 / p.scale)))
        assert lq.min() >= 0.0 and lq.max() <= 1.0
        assert torch.equal(lq, apply_params(hq, p))


def test_noise_level_matches_sigma() -> None:
    cfg = DegradationConfig(blur_prob=0.0, noise_prob=1.0, jpeg_prob=0.0, scale=(1.0, 1.0),
                            noise_sigma=(10.0, 10.0))
    hq = torch.full((3, 128, 128), 0.5)
    lq = degrade(hq, np.random.default_rng(0), cfg)
    assert lq.shape == hq.shape
    assert abs(float((lq - hq).std()) * 255.0 - 10.0) < 0.3


def test_td_is_plain_downsampling() -> None:
    hq = _face(128)
    for s in (4, 8, 16):
        lq = degrade_td(hq, s)
        assert lq.shape == (3, 128 // s, 128 // s)
    flat = torch.full((3, 64, 64), 0.25)
    assert torch.allclose(degrade_td(flat, 4), torch.full((3, 16, 16), 0.25), atol=1e-6)


def test_tb_has_everything_at_fixed_scale() -> None:
    cfg = DegradationConfig.tb(4)
    rng = np.random.default_rng(3)
    for _ in range(20):
        p = sample_params(rng, cfg)
        assert p.scale == 4.0 and p.blur != "none" and p.noise_sigma >= 1.0
        assert p.jpeg_quality is not None
    lq = degrade_tb(_face(64), 4, np.random.default_rng(0))
    assert lq.shape == (3, 16, 16)


def test_grayscale_option_gives_equal_channels() -> None:
    lq = degrade_tb(_face(64), 2, np.random.default_rng(0), grayscale=True)
    assert torch.allclose(lq[0], lq[1], atol=1.5 / 255) and torch.allclose(lq[1], lq[2], atol=1.5 / 255)


def test_numpy_input_roundtrip() -> None:
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    out = degrade(img, np.random.default_rng(0))
    ref = degrade(torch.from_numpy(img).permute(2, 0, 1).float() / 255.0, np.random.default_rng(0))
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape[2] == 3
    assert np.allclose(out, ref.permute(1, 2, 0).numpy(), atol=1e-6)


def test_kernels_normalised_and_centred() -> None:
    g = gaussian_kernel(2.0)
    assert g.shape == (13, 13) and abs(float(g.sum()) - 1) < 1e-6
    assert torch.allclose(g, g.flip(0)) and torch.allclose(g, g.t())
    for length, angle in ((5, 0.0), (8, 45.0), (15, 100.0)):
        k = motion_kernel(length, angle)
        assert k.shape[0] % 2 == 1 and k.shape[0] > length
        assert abs(float(k.sum()) - 1) < 1e-6
        assert torch.allclose(k, k.flip(0).flip(1), atol=1e-6)  # symmetric segment through centre
    x = torch.rand(3, 40, 36)
    assert torch.allclose(gaussian_blur(x, 3.0), _filter(x, gaussian_kernel(3.0)), atol=1e-5)
    h = motion_kernel(9, 0.0)
    assert float(h[h.shape[0] // 2].sum()) > 0.99  # horizontal: all mass on the middle row


def test_resize_to_shapes() -> None:
    x = torch.rand(2, 3, 10, 12)
    assert resize_to(x, 32).shape == (2, 3, 32, 32)
    assert resize_to(x[0], (20, 24)).shape == (3, 20, 24)


def test_bad_inputs() -> None:
    with pytest.raises(UserError):
        DegradationConfig(scale=(4.0, 2.0))
    with pytest.raises(UserError):
        DegradationConfig(blur_prob=1.5)
    with pytest.raises(UserError):
        DegradationConfig.from_dict({"blurr": 1})
    with pytest.raises(ValueError):
        degrade(torch.rand(64, 64, 3), np.random.default_rng(0))
    assert DegradationConfig.from_dict(DegradationConfig().to_dict()) == DegradationConfig()
