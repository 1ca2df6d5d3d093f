"""Full-reference image metrics in torch, batched: PSNR, SSIM, MS-SSIM and Hist-CIEDE colour
fidelity.

Inputs are ``(B, 3, H, W)`` (or ``(3, H, W)``) float in [0, 1]; each function returns one value
per image, shape ``(B,)`` (float64 on the input's device).

Conventions (state them when reporting numbers):
- PSNR: on RGB (all channels pooled) by default, or on the BT.601 luma Y with ``channel="y"``.
  Identical images have MSE 0 and an infinite PSNR; the value is capped at ``PSNR_CAP`` = 100 dB.
- SSIM: Wang et al. 2004 constants K1 = 0.01, K2 = 0.03, an 11x11 Gaussian window with σ = 1.5,
  valid convolution (no padding); per channel then averaged over RGB, or on Y.
- MS-SSIM: Wang et al. 2003, 5 scales with weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
  2x2 average pooling between scales, contrast-structure terms clamped at 0. An image too small
  for 5 scales (smallest side < 176 px with the 11 px window: the coarsest scale must hold a
  window) uses as many scales as fit (4 at 128 px), with the
  weights of those scales renormalised to sum to 1 (``ms_ssim_levels`` says how many).
- Hist-CIEDE (colour fidelity, the idea of the paper's Table 5): the distance between the colour
  *distributions* of two images, ignoring where the colours are. Both images are converted to
  CIELAB (sRGB, D65); for K = 32 quantile levels p_k = (k + 0.5) / K the per-channel quantiles
  (L(p_k), a(p_k), b(p_k)) of each image form K colours, and Hist-CIEDE is the mean CIEDE2000
  difference between the K matched colours. It is 0 for any pixel permutation of the same image,
  and equals ΔE00 of the global colour shift for an image shifted uniformly in Lab.
  ``mean_lab_ciede`` is the simpler CIEDE2000 between the two images' mean Lab colours.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_CAP = 100.0
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)
Channel = Literal["rgb", "y"]


def _batch(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.dim() == 3:
        x, y = x[None], y[None]
    if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(
            f"expected two images of the same shape (B, 3, H, W), got {tuple(x.shape)} and {tuple(y.shape)}"
        )
    return x.double(), y.double()


def _luma(x: Tensor) -> Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def psnr(x: Tensor, y: Tensor, channel: Channel = "rgb", cap: float = PSNR_CAP) -> Tensor:
    """PSNR in dB, data range 1, ``(B,)``; capped at ``cap`` (identical images give ``cap``)."""
    x, y = _batch(x, y)
    if channel == "y":
        x, y = _luma(x), _luma(y)
    mse = ((x - y) ** 2).flatten(1).mean(1)
    out = 10.0 * torch.log10(1.0 / mse.clamp_min(1e-30))
    return out.clamp(max=cap)


def _gauss_window(size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> Tensor:
    r = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2.0
    g = torch.exp(-(r**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_terms(x: Tensor, y: Tensor, win: Tensor) -> tuple[Tensor, Tensor]:
    """Mean SSIM and mean contrast-structure per image and channel: ``(B, C)`` each.
    The five local statistics are filtered in one separable depthwise convolution."""
    c = x.shape[1]
    k = win.numel()
    stats = torch.cat([x, y, x * x, y * y, x * y], 1)  # (B, 5C, H, W)
    wx = win.view(1, 1, 1, k).expand(5 * c, 1, 1, k)
    wy = win.view(1, 1, k, 1).expand(5 * c, 1, k, 1)
    f = F.conv2d(F.conv2d(stats, wx, groups=5 * c), wy, groups=5 * c)
    mx, my, xx, yy, xy = f.split(c, 1)
    c1, c2 = 0.01**2, 0.03**2
    sxx = xx - mx * mx
    syy = yy - my * my
    sxy = xy - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return (lum * cs).flatten(2).mean(2), cs.flatten(2).mean(2)


def ssim(x: Tensor, y: Tensor, channel: Channel = "rgb", win_size: int = 11, sigma: float = 1.5) -> Tensor:
    """SSIM ``(B,)`` (Gaussian window, standard constants, valid convolution)."""
    x, y = _batch(x, y)
    if channel == "y":
        x, y = _luma(x), _luma(y)
    if min(x.shape[-2:]) < win_size:
        raise ValueError(f"images of {tuple(x.shape[-2:])} are smaller than the {win_size} px window")
    s, _ = _ssim_terms(x, y, _gauss_window(win_size, sigma, x.dtype, x.device))
    return s.mean(1)


def ms_ssim_levels(side: int, win_size: int = 11) -> int:
    """Number of MS-SSIM scales (<= 5) that fit an image of the given smallest side."""
    n = 1
    while n < len(MS_SSIM_WEIGHTS) and side // 2**n >= win_size:
        n += 1
    return n


def ms_ssim(x: Tensor, y: Tensor, channel: Channel = "rgb", win_size: int = 11, sigma: float = 1.5) -> Tensor:
    """MS-SSIM ``(B,)`` (see module docstring for small images)."""
    x, y = _batch(x, y)
    if channel == "y":
        x, y = _luma(x), _luma(y)
    side = min(x.shape[-2:])
    if side < win_size:
        raise ValueError(f"images of {tuple(x.shape[-2:])} are smaller than the {win_size} px window")
    levels = ms_ssim_levels(side, win_size)
    w = torch.tensor(MS_SSIM_WEIGHTS[:levels], dtype=x.dtype, device=x.device)
    w = w / w.sum()
    win = _gauss_window(win_size, sigma, x.dtype, x.device)
    vals = []
    for i in range(levels):
        s, cs = _ssim_terms(x, y, win)
        vals.append((s if i == levels - 1 else cs).clamp_min(0.0))
        if i < levels - 1:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    stack = torch.stack(vals, 0)  # (levels, B, C)
    return torch.prod(stack ** w.view(-1, 1, 1), 0).mean(1)


# ----------------------------------------------------------------------------- colour


def rgb_to_lab(x: Tensor) -> Tensor:
    """sRGB in [0, 1] ``(B, 3, H, W)`` -> CIELAB (D65, 2°) ``(B, 3, H, W)``: L in [0, 100]."""
    x = x.double()
    lin = torch.where(x > 0.04045, ((x + 0.055) / 1.055) ** 2.4, x / 12.92)
    m = torch.tensor(
        [[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169], [0.019334, 0.119193, 0.950227]],
        dtype=x.dtype, device=x.device,
    )
    xyz = torch.einsum("ij,bjhw->bihw", m, lin)
    white = torch.tensor([0.95047, 1.0, 1.08883], dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    t = xyz / white
    d = 6.0 / 29.0
    f = torch.where(t > d**3, t.clamp_min(1e-12) ** (1.0 / 3.0), t / (3 * d * d) + 4.0 / 29.0)
    L = 116.0 * f[:, 1] - 16.0
    a = 500.0 * (f[:, 0] - f[:, 1])
    b = 200.0 * (f[:, 1] - f[:, 2])
    return torch.stack([L, a, b], 1)


def ciede2000(lab1: Tensor, lab2: Tensor) -> Tensor:
    """CIEDE2000 colour difference (Sharma et al. 2005, kL = kC = kH = 1) between Lab colours
    ``(..., 3)`` and ``(..., 3)`` -> ``(...)``."""
    L1, a1, b1 = lab1.unbind(-1)
    L2, a2, b2 = lab2.unbind(-1)
    c1 = torch.sqrt(a1**2 + b1**2)
    c2 = torch.sqrt(a2**2 + b2**2)
    cm = (c1 + c2) / 2
    g = 0.5 * (1 - torch.sqrt(cm**7 / (cm**7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p = torch.sqrt(a1p**2 + b1**2)
    c2p = torch.sqrt(a2p**2 + b2**2)
    h1p = torch.remainder(torch.atan2(b1, a1p), 2 * math.pi)
    h2p = torch.remainder(torch.atan2(b2, a2p), 2 * math.pi)
    dL = L2 - L1
    dC = c2p - c1p
    dh = h2p - h1p
    dh = torch.where(dh > math.pi, dh - 2 * math.pi, dh)
    dh = torch.where(dh < -math.pi, dh + 2 * math.pi, dh)
    zero = (c1p * c2p) == 0
    dh = torch.where(zero, torch.zeros_like(dh), dh)
    dH = 2 * torch.sqrt(c1p * c2p) * torch.sin(dh / 2)
    Lm = (L1 + L2) / 2
    cmp_ = (c1p + c2p) / 2
    hsum = h1p + h2p
    hm = torch.where(
        (h1p - h2p).abs() <= math.pi, hsum / 2,
        torch.where(hsum < 2 * math.pi, (hsum + 2 * math.pi) / 2, (hsum - 2 * math.pi) / 2),
    )
    hm = torch.where(zero, hsum, hm)
    t = (1 - 0.17 * torch.cos(hm - math.radians(30)) + 0.24 * torch.cos(2 * hm)
         + 0.32 * torch.cos(3 * hm + math.radians(6)) - 0.20 * torch.cos(4 * hm - math.radians(63)))
    d_theta = math.radians(30) * torch.exp(-(((torch.rad2deg(hm) - 275) / 25) ** 2))
    rc = 2 * torch.sqrt(cmp_**7 / (cmp_**7 + 25.0**7))
    sl = 1 + 0.015 * (Lm - 50) ** 2 / torch.sqrt(20 + (Lm - 50) ** 2)
    sc = 1 + 0.045 * cmp_
    sh = 1 + 0.015 * cmp_ * t
    rt = -torch.sin(2 * d_theta) * rc
    return torch.sqrt((dL / sl) ** 2 + (dC / sc) ** 2 + (dH / sh) ** 2 + rt * (dC / sc) * (dH / sh))


def hist_ciede(x: Tensor, ref: Tensor, levels: int = 32) -> Tensor:
    """Hist-CIEDE colour-distribution distance ``(B,)`` (module docstring). Images may differ in
    size (only their colour distributions are compared)."""
    if x.dim() == 3:
        x, ref = x[None], ref[None]
    if x.dim() != 4 or ref.dim() != 4 or x.shape[:2] != ref.shape[:2] or x.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W) images, got {tuple(x.shape)} and {tuple(ref.shape)}")
    p = (torch.arange(levels, dtype=torch.float64, device=x.device) + 0.5) / levels
    qx = torch.quantile(rgb_to_lab(x).flatten(2), p, dim=2)  # (levels, B, 3)
    qr = torch.quantile(rgb_to_lab(ref).flatten(2), p, dim=2)
    return ciede2000(qx, qr).mean(0)


def mean_lab_ciede(x: Tensor, ref: Tensor) -> Tensor:
    """CIEDE2000 between the mean Lab colours of two images ``(B,)``."""
    if x.dim() == 3:
        x, ref = x[None], ref[None]
    return ciede2000(rgb_to_lab(x).mean((2, 3)), rgb_to_lab(ref).mean((2, 3)))
