"""Restoration strength per track: how much of the model's detail to add to the plain upscale.

The compositor adds ``strength * mask * detail`` to the upscaled frame, where ``detail`` is
:func:`rmmvideo.video.composite.restoration_detail` (restored minus input, low band removed).
Strength 0 is the plain upscale bit for bit; 1 adds all of the model's detail.

``--strength auto`` measures, per track, how much the model's detail can be trusted on *this*
face, with a cross-scale self-check (no ground truth needed): the track's first confident
aligned crops ``c`` are degraded once more in crop space, by the same resolution factor ``k``
that separates them from the truth (:func:`resolution_gap`), to ``c2``; the model restores
``c2``; and the least-squares weight of its detail ``d2`` against what was really lost,
``e = c - c2``, inside the paste mask, is

    alpha = <d2, e> / <d2, d2>,   strength = clamp(alpha, 0, 1).

That is the blend weight that would have minimised the error one scale down. A model whose
detail points away from the truth (paints over glasses, lashes, moles; shifts texture) gets a
small or zero weight; one that recovers real detail gets a weight near 1. When the input crop
already holds all the resolution the output can show (``k`` near 1: big, sharp faces), there is
nothing for the model to add at its crop size and the strength is 0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from rmmvideo.models.rmm import RMM

# A resolution gap below this (output detail / input detail at the crop size) leaves the model
# nothing to add that the upscale does not already show.
MIN_GAP = 1.25


def resolution_gap(crop_per_frame_px: torch.Tensor, scale: float) -> torch.Tensor:
    """(N,) how many times finer the output's detail is than the input crop's, at the crop size.

    ``crop_per_frame_px`` (N,): crop pixels per input-frame pixel (the alignment's scale f).
    The input crop resolves min(1, 1/f) of the crop's Nyquist band, the upscaled output (s times
    the frame's pixels) at most min(1, s/f); the gap is their ratio (>= 1)."""
    f = crop_per_frame_px.to(torch.float64).clamp_min(1e-6)
    lq = torch.clamp(1.0 / f, max=1.0)
    hq = torch.clamp(scale / f, max=1.0)
    return (hq / lq).clamp_min(1.0)


def degrade_in_crop_space(crops: torch.Tensor, factor: float) -> torch.Tensor:
    """(N, 3, S, S) -> the same crops with ``factor`` times less resolution (antialiased bicubic
    down to S / factor, bicubic back up to S), clamped to [0, 1]."""
    s = crops.shape[-1]
    small = max(4, round(s / factor))
    down = F.interpolate(crops, size=(small, small), mode="bicubic", align_corners=False, antialias=True)
    return F.interpolate(down, size=(s, s), mode="bicubic", align_corners=False).clamp(0.0, 1.0)


def fit_strength(detail: torch.Tensor, lost: torch.Tensor, weight: torch.Tensor) -> float:
    """Least-squares blend weight clamped to [0, 1]: argmin_a ||w (a * detail - lost)||^2.

    detail, lost: (N, 3, S, S); weight: (N, 1, S, S) in [0, 1]."""
    w = weight.to(torch.float64)
    d = detail.to(torch.float64) * w
    e = lost.to(torch.float64) * w
    den = float((d * d).sum())
    if den <= 1e-12:
        return 0.0
    return float(min(1.0, max(0.0, float((d * e).sum()) / den)))


def self_check_strength(model: RMM, crops: torch.Tensor, noise: torch.Tensor, slots: torch.Tensor,
                        gap: float, weight: torch.Tensor | None = None) -> float:
    """The cross-scale self-check (module doc) on one face's crops.

    Args:
        model: RMM (``restore(x, noise, slots)``).
        crops: (N, 3, S, S) aligned input crops of one face (track or still).
        noise: (N, z_n_dim) and slots: (N,) the conditioning the face is restored with.
        gap: the resolution gap (:func:`resolution_gap`); below ``MIN_GAP`` the strength is 0.
        weight: (N, 1, S, S) paste mask (default: the whole crop).
    Returns:
        strength in [0, 1].
    """
    from rmmvideo.video.composite import restoration_detail

    if gap < MIN_GAP:
        return 0.0
    c2 = degrade_in_crop_space(crops, gap)
    with torch.no_grad():
        r2 = model.restore(c2, noise, slots).x_hr
    w = weight if weight is not None else torch.ones_like(crops[:, :1])
    return fit_strength(restoration_detail(r2, c2), crops - c2, w)
