"""Batched 2-D Haar wavelet packet transform and the wavelet style code Z_W (paper sec. 3, WMM).

The transform matches ``pywt.WaveletPacket2D(x, "haar", mode="periodization")`` (for even sizes
``mode="symmetric"`` gives the same Haar coefficients) with ``get_level(n, order="natural")``:
bands per level in the order a, h, v, d, applied recursively, so band index
``sum(idx(p_k) * 4**(n-1-k))`` holds node path ``p_0 p_1 ... p_{n-1}``.

For a 2x2 block ``[[p, q], [r, s]]`` pywt's Haar gives
``a = (p+q+r+s)/2, h = (p+q-r-s)/2, v = (p-q+r-s)/2, d = (p-q-r+s)/2``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def haar_dwt2(x: Tensor) -> Tensor:
    """One level of the 2-D Haar transform.

    Args:
        x: ``(B, C, H, W)`` with even H, W.
    Returns:
        ``(B, C, 4, H/2, W/2)``: bands a, h, v, d.
    """
    if x.dim() != 4:
        raise ValueError(f"haar_dwt2: expected (B, C, H, W), got shape {tuple(x.shape)}")
    if x.shape[-1] % 2 or x.shape[-2] % 2:
        raise ValueError(f"haar_dwt2: H and W must be even, got {tuple(x.shape[-2:])}")
    p = x[..., 0::2, 0::2]
    q = x[..., 0::2, 1::2]
    r = x[..., 1::2, 0::2]
    s = x[..., 1::2, 1::2]
    a = (p + q + r + s) * 0.5
    h = (p + q - r - s) * 0.5
    v = (p - q + r - s) * 0.5
    d = (p - q - r + s) * 0.5
    return torch.stack((a, h, v, d), dim=2)


def wavelet_packet2d(x: Tensor, levels: int) -> Tensor:
    """Full Haar wavelet packet decomposition (every band split again at each level).

    Args:
        x: ``(B, C, H, W)``; H and W divisible by ``2**levels``.
        levels: number of levels (>= 1).
    Returns:
        ``(B, C, 4**levels, H / 2**levels, W / 2**levels)``, bands in pywt's natural order.
    """
    if levels < 1:
        raise ValueError(f"wavelet_packet2d: levels must be >= 1, got {levels}")
    if x.dim() != 4:
        raise ValueError(f"wavelet_packet2d: expected (B, C, H, W), got shape {tuple(x.shape)}")
    b, c, h, w = x.shape
    div = 2**levels
    if h % div or w % div:
        raise ValueError(
            f"wavelet_packet2d: H, W = {h}, {w} must be divisible by 2**levels = {div}"
        )
    bands = x.reshape(b, c, h, w)  # (B, C*N, h, w) with N bands so far, band-major within C
    n = 1
    for _ in range(levels):
        hh, ww = bands.shape[-2:]
        bands = haar_dwt2(bands)  # (B, C*N, 4, h/2, w/2): each band splits into 4 children
        n *= 4
        bands = bands.reshape(b, c * n, hh // 2, ww // 2)
    return bands.reshape(b, c, n, h // div, w // div)


def wavelet_style_code(x: Tensor, levels: int) -> Tensor:
    """Wavelet style code Z_W: average of each high-frequency packet band, per colour channel.

    Args:
        x: ``(B, 3, H, W)`` image (the model uses values in [0, 1]).
        levels: packet levels n; Z_W has ``3 * (4**n - 1)`` entries.
    Returns:
        ``(B, 3 * (4**levels - 1))``, channel-major (all bands of R, then G, then B); the
        approximation band (index 0) is dropped.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"wavelet_style_code: expected (B, 3, H, W), got shape {tuple(x.shape)}")
    bands = wavelet_packet2d(x, levels)  # (B, 3, 4**n, h, w)
    return bands[:, :, 1:].mean(dim=(-2, -1)).flatten(1)
