"""Restoration strength per track: how much of the model's detail to add to the plain upscale.

The compositor adds ``strength * mask * detail`` to the upscaled frame, where ``detail`` is
:func:`rmmvideo.video.composite.restoration_detail` (restored minus input, low band removed).
Strength 0 is the plain upscale bit for bit; 1 adds all of the model's detail.

``--strength auto`` reads the strength from the weights' own **calibration curve**
(``ModelConfig.strength_curve``), measured once per weights file by :func:`calibrate_strength`
on held-out faces degraded as real footage is (antialiased downscale, H.264 at CRF 20-36 on a
short clip with sub-pixel motion, resized to the crop as the pipeline samples it). For each crop
scale ``f`` (crop pixels per input pixel: above 1 the face is smaller than the crop, below 1
larger), the curve holds the least-squares blend weight of the model's detail against what the
upscale misses,

    a*(f) = <d, t - u> / <d, d>  (inside the face mask, clamped to [0, 1]),

d the detail, t the truth, u the upscale, then cut back (to 3/4, 1/2, 1/4 or 0 of it) until
the faces' dlib descriptor distance to the truth (FED) is lower than the upscale's by at least
one standard error of the paired differences: restoration must clearly not move identity.
A track's strength is ``SAFETY * a*(f_eff)`` with
``f_eff = min(f, scale)`` (an output smaller than the crop cannot show more than ``scale``
times the input), interpolated in log f. Below the smallest calibrated f (faces bigger than
the calibration's sources allow) it falls linearly to 0 at half that f; above the largest it
stays at the last value. Weights without a curve get strength 0 (the plain upscale), with a
warning: run ``pipelines/calibrate_strength.py`` on them.

Why a curve and not a self-check on the input: a cross-scale self-check (degrade the input
crop once more, restore, fit) cannot see codec artefacts, which dominate real footage at crop
scales near 1: on the shared clips it chose 0 where the best weight was 0.4-1 (README).
Why ``SAFETY``: the gain of a blend weight ``a`` is quadratic with its peak at a*, positive on
(0, 2 a*); taking 0.75 a* keeps ~94 % of the peak gain and stays positive on any track whose
own a* is at least 0.375 times the curve's.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from rmmvideo.config import ModelConfig
    from rmmvideo.eval.face_metrics import FaceReference
    from rmmvideo.models.rmm import RMM

log = logging.getLogger(__name__)

SAFETY = 0.75
# Crop scales (crop px per input px) the calibration measures: faces 2x bigger than the crop
# (where 200 px sources allow) to 5x smaller.
CALIBRATION_SCALES = (0.65, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0)
CALIBRATION_CRF = (20, 36)
# Standard errors by which a strength's mean FED must beat the upscale's (identity_safe).
IDENTITY_MARGIN = 1.0


def effective_scale(crop_scale: torch.Tensor, scale: float) -> float:
    """Median crop scale of a track's crops, capped by the output scale: ``min(f, scale)``.

    ``crop_scale`` (N,): crop pixels per input-frame pixel of each crop (the alignment's scale)."""
    f = float(crop_scale.to(torch.float64).median())
    return min(f, float(scale))


def curve_strength(curve: Sequence[Sequence[float]], f: float) -> float:
    """``SAFETY * a*(f)`` from a calibration curve of (f, a*) points sorted by f (module doc);
    0 for an empty curve."""
    if not curve or f <= 0:
        return 0.0
    fs = np.log(np.asarray([p[0] for p in curve], dtype=np.float64))
    a = np.asarray([p[1] for p in curve], dtype=np.float64)
    lf = math.log(f)
    if lf < fs[0]:  # bigger faces than calibrated: fade to 0 at half the smallest f
        value = a[0] * max(0.0, 1.0 - (fs[0] - lf) / math.log(2.0))
    else:
        value = float(np.interp(lf, fs, a))
    return float(min(1.0, max(0.0, SAFETY * value)))


def auto_strength(config: ModelConfig, f: float) -> float:
    """Auto strength of a face at effective crop scale ``f`` (:func:`effective_scale` for a
    track; a still's crop scale itself) from the weights' curve; 0, with a warning, without one."""
    if not config.strength_curve:
        _warn_uncalibrated(config.name)
        return 0.0
    return curve_strength(config.strength_curve, f)


_warned: set[str] = set()


def _warn_uncalibrated(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        log.warning("weights %r carry no strength calibration: auto strength is 0 (the plain upscale); "
                    "run pipelines/calibrate_strength.py on them, or give --strength", name)


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


def pipeline_view(source: torch.Tensor, f: float, size: int, crf: int, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """One face as the video pipeline sees it at crop scale ``f``, and its references.

    Args:
        source: (3, N, N) aligned face in [0, 1] at its own resolution.
        f: crop pixels per input pixel; the input face is ``size / f`` px (must be <= N).
        size: crop side S.
        crf: H.264 CRF of the input (a 3-frame clip with sub-pixel motion, 4:2:0).
        seed: the codec clip's shifts.
    Returns:
        ``(crop, upscale, truth)``, each (3, S, S): the input resized to S bilinearly (area-like
        when shrinking, as the pipeline's warp), its bicubic resize (the plain upscale in crop
        space), and the source resized to S; None when the input would exceed the source.
    """
    from rmmvideo.train.degrade import codec_roundtrip, downsample, resize_to

    n = source.shape[-1]
    down = n * f / size
    if down < 1.0:
        return None
    lq = codec_roundtrip(downsample(source, down), "h264", crf, frames=3, seed=seed)
    crop = F.interpolate(lq[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0].clamp(0.0, 1.0)
    return crop, resize_to(lq, size), resize_to(source, size)


def calibrate_strength(model: RMM, sources: Sequence[torch.Tensor],
                       scales: Sequence[float] = CALIBRATION_SCALES, crf: tuple[int, int] = CALIBRATION_CRF,
                       seed: int = 0, batch: int = 16) -> list[tuple[float, float]]:
    """Measure a weights file's strength curve (module doc) on held-out faces.

    Args:
        model: RMM in eval mode.
        sources: (3, N, N) aligned faces in [0, 1] at their own resolution (not trained on).
        scales: crop scales f to measure; those no source is big enough for are left out.
        crf: H.264 CRF range, drawn per face and scale from ``seed``.
    Returns:
        [(f, a*)] sorted by f, a* rounded to 3 decimals.
    """
    from rmmvideo.eval.face_metrics import face_reference, to_uint8
    from rmmvideo.models.rmm import make_noise
    from rmmvideo.train.degrade import resize_to
    from rmmvideo.video.composite import ellipse_mask, restoration_detail

    size = model.config.size
    g = np.random.default_rng(seed)
    mask = ellipse_mask(size, model.config.template)
    refs = [face_reference(to_uint8(resize_to(src, size))) for src in sources]  # the truths' faces
    curve = []
    for f in sorted(scales):
        views, used = [], []
        for k, src in enumerate(sources):
            c, s = int(g.integers(crf[0], crf[1] + 1)), int(g.integers(0, 2**62))
            v = pipeline_view(src, f, size, c, s)
            if v is not None:
                views.append(v)
                used.append(k)
        if not views:
            continue
        crop, up, truth = (torch.stack(t) for t in zip(*views))
        noise = make_noise(seed, len(crop), model.config.z_n_dim)
        with torch.no_grad():
            restored = torch.cat([model.restore(crop[i:i + batch], noise[i:i + batch]).x_hr
                                  for i in range(0, len(crop), batch)])
        w = mask.expand(len(crop), -1, -1, -1)
        detail = restoration_detail(restored, crop) * w
        a = fit_strength(detail, truth - up, w)
        curve.append((float(f), round(identity_safe(a, up, detail, [refs[k] for k in used]), 3)))
    return curve


def identity_safe(a: float, up: torch.Tensor, detail: torch.Tensor, refs: Sequence[FaceReference],
                  margin: float = IDENTITY_MARGIN) -> float:
    """The largest of ``a * (1, 3/4, 1/2, 1/4)`` (else 0) at which the faces' dlib descriptor
    distance to the truth (FED) is *significantly* lower than the upscale's: the mean paired
    difference plus ``margin`` standard errors must be <= 0. A PSNR-optimal weight that does not
    clearly improve identity is cut back, because a FED change smaller than the benchmark's noise
    wins or loses on a clip by chance (README): with ``margin`` 0 (the mean alone, before) the
    bundled weights got 0.13 on a shared clip at x4 where 40 frames measured FED 1.0045x.

    up, detail (already masked): (N, 3, S, S); refs: (N,) the truths' faces
    (:func:`rmmvideo.eval.face_metrics.face_reference`); those dlib found no face in are left out."""
    from rmmvideo.eval.face_metrics import fed_lle, to_uint8

    keep = [i for i, r in enumerate(refs) if r.detected]
    if a <= 0 or not keep:
        return max(0.0, a)

    def feds(x: torch.Tensor) -> np.ndarray:
        return np.asarray([fed_lle(to_uint8(x[i]), refs[i])[0] for i in keep], dtype=np.float64)

    base = feds(up)
    for k in (1.0, 0.75, 0.5, 0.25):
        d = feds((up + k * a * detail).clamp(0.0, 1.0)) - base
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
        if float(d.mean()) + margin * se <= 0:
            return k * a
    return 0.0
