"""Degradation model (eq. 16): parameter ranges, determinism, protocols, kernels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rmmvideo.errors import UserError
from rmmvideo.train.degrade import (
    DegradationConfig,
    DegradationMixture,
    _filter,
    apply_params,
    chroma_subsample_420,
    codec_roundtrip,
    degradation_from_dict,
    degrade,
    degrade_tb,
    degrade_td,
    film_grain,
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


# ----------------------------------------------------------------------------- video stages (issue 12)


def _textured(size: int = 64, seed: int = 0) -> torch.Tensor:
    """A smooth gradient with mild texture: compresses with visible 8x8 blocks at low quality."""
    g = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.2, 0.8, size)
    base = 0.5 * ramp[None, :, None] + 0.5 * ramp[None, None, :]
    tex = resize_to(torch.rand(3, 13, 13, generator=g), size) - 0.5
    return (base + 0.3 * tex).clamp(0, 1)


def _blockiness(x: torch.Tensor) -> float:
    """Mean |horizontal step| across 8-px block borders over the mean step inside blocks."""
    d = (x[..., 1:] - x[..., :-1]).abs().mean(dim=(0, 1))  # (W - 1,), step between col j and j+1
    border = torch.tensor([j % 8 == 7 for j in range(d.numel())])
    return float(d[border].mean() / d[~border].mean())


def test_paper_draws_unchanged_by_video_stages() -> None:
    # recorded before the video stages existed: eval protocols and old training draws stay put
    p = sample_params(np.random.default_rng(123), DegradationConfig())
    assert (p.blur, p.motion_length, p.jpeg_quality, p.noise_seed) == ("motion", 11, 77, 2365658676248364811)
    assert p.scale == pytest.approx(10.197545615930022) and p.sigma == pytest.approx(4.248378026623095)
    assert p.noise_sigma == pytest.approx(13.458497703556603)
    assert (p.codec, p.chroma420, p.grain_sigma) == (None, False, 0.0)


def test_video_stages_seeded_and_deterministic() -> None:
    x = _textured(40)
    assert torch.equal(film_grain(x, 6.0, 0.8, 5), film_grain(x, 6.0, 0.8, 5))
    assert not torch.equal(film_grain(x, 6.0, 0.8, 5), film_grain(x, 6.0, 0.8, 6))
    for codec in ("h264", "mpeg2", "mpeg4"):
        a = codec_roundtrip(x, codec, 30 if codec == "h264" else 8, frames=4, seed=1)
        assert torch.equal(a, codec_roundtrip(x, codec, 30 if codec == "h264" else 8, frames=4, seed=1))
        assert a.shape == x.shape
    # the shifted reference frames matter: another shift seed gives another last frame
    assert not torch.equal(codec_roundtrip(x, "h264", 34, 4, seed=1), codec_roundtrip(x, "h264", 34, 4, seed=2))
    cfg = DegradationConfig(grain_prob=1.0, chroma_prob=1.0, codec_prob=1.0, gaussian_sigma=(0.0, 1.5),
                            scale=(1.5, 3.0))
    hq = _face(96)
    a, b = degrade(hq, np.random.default_rng(4), cfg), degrade(hq, np.random.default_rng(4), cfg)
    assert torch.equal(a, b) and not torch.equal(a, degrade(hq, np.random.default_rng(5), cfg))


def test_codec_stage_produces_8x8_blocking_and_quality_orders() -> None:
    x = _textured(64)
    assert _blockiness(x) < 1.2
    for codec in ("mpeg2", "mpeg4"):
        y = codec_roundtrip(x, codec, 24, frames=1)
        assert _blockiness(y) > 1.5, codec
    h = codec_roundtrip(x, "h264", 45, frames=1)
    assert _blockiness(h) > 1.15  # H.264 deblocks its block edges, yet they still show
    # error grows with CRF / quantiser; odd sides survive the 4:2:0 padding
    err = [float((codec_roundtrip(x, "h264", q, 3) - x).abs().mean()) for q in (18, 30, 42)]
    assert err[0] < err[1] < err[2]
    err = [float((codec_roundtrip(x, "mpeg2", q, 3) - x).abs().mean()) for q in (2, 10, 28)]
    assert err[0] < err[1] < err[2]
    assert codec_roundtrip(_textured(64)[:, :37, :45], "mpeg4", 6, 3).shape == (3, 37, 45)


def test_chroma_420_halves_chroma_resolution_and_keeps_luma() -> None:
    m = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]])
    ycc = torch.zeros(3, 32, 32)
    ycc[0] = 0.5 + 0.2 * _textured(32)[0] - 0.1  # arbitrary luma detail
    ycc[1, :, 0::2], ycc[1, :, 1::2] = 0.1, -0.1  # Cb alternates every column (full resolution)
    ycc[2] = torch.linspace(-0.1, 0.1, 32)[None, :]  # Cr: smooth ramp (survives)
    x = torch.einsum("ij,jhw->ihw", torch.linalg.inv(m), ycc)
    assert x.min() >= 0 and x.max() <= 1
    out = torch.einsum("ij,jhw->ihw", m, chroma_subsample_420(x))
    assert torch.allclose(out[0], ycc[0], atol=1e-5)  # luma untouched
    assert float(out[1].abs().max()) < 1e-5  # full-resolution chroma detail is gone
    assert float((out[2] - ycc[2])[:, 2:-2].abs().max()) < 0.01  # half-resolution chroma kept
    odd = torch.rand(3, 15, 9)
    assert chroma_subsample_420(odd).shape == odd.shape


def test_film_grain_level_and_correlation() -> None:
    flat = torch.full((3, 96, 96), 0.5)
    g = film_grain(flat, 8.0, 1.0, 0) - flat
    assert abs(float(g.std()) * 255 - 8.0) < 0.5
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])  # monochrome
    r = float(torch.corrcoef(torch.stack([g[0, :, :-1].reshape(-1), g[0, :, 1:].reshape(-1)]))[0, 1])
    assert r > 0.5  # neighbouring pixels correlated (grain size 1 px); white noise would give ~0


def test_clean_share_and_zero_sigma() -> None:
    hq = _face(64)
    clean = DegradationConfig(clean_prob=1.0, codec_prob=1.0, grain_prob=1.0, chroma_prob=1.0,
                              noise_prob=1.0, jpeg_prob=1.0, blur_prob=1.0, scale=(4.0, 4.0))
    assert torch.equal(degrade(hq, np.random.default_rng(0), clean), degrade_td(hq, 4))
    no_blur = DegradationConfig(blur_prob=1.0, motion_prob=0.0, gaussian_sigma=(0.0, 0.0), noise_prob=0.0,
                                jpeg_prob=0.0, scale=(2.0, 2.0))
    assert torch.equal(degrade(hq, np.random.default_rng(0), no_blur), degrade_td(hq, 2))
    draws = [sample_params(np.random.default_rng(i), DegradationConfig(clean_prob=0.3, codec_prob=1.0))
             for i in range(400)]
    assert 0.22 < np.mean([p.codec is None for p in draws]) < 0.38


def test_mixture_draws_components_by_weight() -> None:
    d = {"mixture": [{"weight": 3, "scale": [2, 2]}, {"weight": 1, "scale": [8, 8], "codec_prob": 1.0}]}
    mix = degradation_from_dict(d)
    assert isinstance(mix, DegradationMixture) and degradation_from_dict(mix.to_dict()) == mix
    assert isinstance(degradation_from_dict({"scale": [2, 4]}), DegradationConfig)
    rng = np.random.default_rng(0)
    draws = [sample_params(rng, mix) for _ in range(800)]
    share8 = np.mean([p.scale == 8.0 for p in draws])
    assert 0.2 < share8 < 0.3
    assert all((p.codec is not None) == (p.scale == 8.0) for p in draws)
    with pytest.raises(UserError):
        degradation_from_dict({"mixture": [{"scale": [2, 2]}]})
    with pytest.raises(UserError):
        DegradationConfig(codecs=("vp9",))


def test_mild_and_video_protocol_configs() -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        p = sample_params(rng, DegradationConfig.mild(4))
        assert p.scale == 4.0 and p.blur == "gaussian" and 0 <= p.sigma <= 1.5
        assert 1 <= p.noise_sigma <= 8 and 50 <= (p.jpeg_quality or 0) <= 90 and p.codec is None
        v = sample_params(rng, DegradationConfig.video(4))
        assert v.codec == "h264" and 23 <= v.codec_quality <= 35 and v.jpeg_quality is None
    assert degrade(_face(128), np.random.default_rng(0), DegradationConfig.video(4)).shape == (3, 32, 32)


def test_mild_and_video_eval_protocols(tmp_path) -> None:
    import json

    from PIL import Image

    from rmmvideo.cli.main import main
    from rmmvideo.eval.evaluate import degrade_for_protocol, item_rng

    hq = _face(64, seed=3)
    for proto in ("mild", "video"):
        a = degrade_for_protocol(hq, proto, 4, item_rng(0, "a"))
        assert a.shape == (3, 16, 16) and torch.equal(a, degrade_for_protocol(hq, proto, 4, item_rng(0, "a")))
        assert not torch.equal(a, degrade_for_protocol(hq, proto, 4, item_rng(1, "a")))
    for i in range(3):
        arr = (_textured(64, seed=i).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        Image.fromarray(arr).save(tmp_path / f"f{i}.png")
    psnr = {}
    for proto in ("tb", "mild", "video", "td4"):
        out = tmp_path / f"{proto}.json"
        assert main(["eval", str(tmp_path), "--protocol", proto, "--split", "all", "--size", "64",
                     "--no-face-metrics", "--bicubic-only", "--json", str(out), "--quiet"]) == 0
        psnr[proto] = json.loads(out.read_text())["methods"]["bicubic"]["psnr"]
    assert psnr["tb"] < psnr["mild"] < psnr["td4"] and psnr["video"] < psnr["td4"]


def test_codec_stage_gives_the_same_bits_in_every_process() -> None:
    """x264 with its default threads picked different macroblock decisions from one process to
    the next (up to 29 levels apart on real faces); the stage runs the codecs on one thread."""
    import subprocess
    import sys

    code = (
        "import hashlib, torch\n"
        "from tests.unit.test_degrade import _textured\n"
        "from rmmvideo.train.degrade import codec_roundtrip\n"
        "h = hashlib.sha1()\n"
        "for s in range(12):\n"
        "    x = _textured(64, seed=s)\n"
        "    for c, q in (('h264', 24 + s), ('mpeg2', 3 + s), ('mpeg4', 3 + s)):\n"
        "        h.update(codec_roundtrip(x, c, q, 3, 0.75, s).numpy().tobytes())\n"
        "print(h.hexdigest())\n"
    )
    root = str(Path(__file__).resolve().parents[2])
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, check=True)
            for _ in range(3)]
    assert len({r.stdout for r in runs}) == 1, [r.stdout for r in runs]
