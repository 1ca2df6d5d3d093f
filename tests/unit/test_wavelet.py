import numpy as np
import pytest
import torch

from rmmvideo.models.wavelet import wavelet_packet2d, wavelet_style_code

pywt = pytest.importorskip("pywt")


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_packet_matches_pywavelets(levels: int) -> None:
    rng = np.random.default_rng(levels)
    x = rng.random((2, 3, 32, 48))
    out = wavelet_packet2d(torch.from_numpy(x), levels).numpy()
    assert out.shape == (2, 3, 4**levels, 32 // 2**levels, 48 // 2**levels)
    for b in range(2):
        wp = pywt.WaveletPacket2D(x[b], "haar", mode="periodization", axes=(-2, -1))
        ref = np.stack([node.data for node in wp.get_level(levels, order="natural")], axis=1)
        np.testing.assert_allclose(out[b], ref, atol=1e-6, rtol=0)
        # symmetric mode (pywt's default) agrees for even sizes
        wps = pywt.WaveletPacket2D(x[b], "haar", mode="symmetric", axes=(-2, -1))
        ref_s = np.stack([node.data for node in wps.get_level(levels, order="natural")], axis=1)
        np.testing.assert_allclose(out[b], ref_s, atol=1e-6, rtol=0)


@pytest.mark.parametrize("levels", [1, 2, 3, 4])
def test_style_code_matches_pywavelets(levels: int) -> None:
    rng = np.random.default_rng(10 + levels)
    x = rng.random((3, 3, 64, 64))
    code = wavelet_style_code(torch.from_numpy(x), levels).numpy()
    assert code.shape == (3, 3 * (4**levels - 1))
    for b in range(3):
        ref = []
        for ch in range(3):
            wp = pywt.WaveletPacket2D(x[b, ch], "haar", mode="periodization")
            nodes = wp.get_level(levels, order="natural")
            ref.extend(node.data.mean() for node in nodes[1:])
        np.testing.assert_allclose(code[b], np.array(ref), atol=1e-6, rtol=0)


def test_energy_preserved_and_shape_errors() -> None:
    x = torch.randn(1, 2, 16, 16, dtype=torch.float64)
    bands = wavelet_packet2d(x, 3)
    # Haar packets are orthonormal: energy is preserved
    assert torch.allclose(bands.pow(2).sum(), x.pow(2).sum())
    with pytest.raises(ValueError, match="divisible"):
        wavelet_packet2d(torch.zeros(1, 1, 12, 12), 3)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        wavelet_style_code(torch.zeros(1, 1, 16, 16), 2)
