"""Restoration strength per track: how much of the model's detail to add to the plain upscale.

The compositor adds ``mask * weigh_detail(detail, strength)`` to the upscaled frame, where
``detail`` is :func:`rmmvideo.video.composite.restoration_detail` (restored minus input, low band
removed) and a :class:`Strength` weighs the detail's **luma** (BT.601 Y, the same on R, G, B) and
its **chroma** (the rest) separately. (0, 0) is the plain upscale bit for bit; (1, 1) adds all of
the model's detail; ``--strength x`` gives (x, x).

Why two weights: on held-out faces degraded as real footage is, the model's chroma detail (colour
edges that 4:2:0 and the codec blurred) helps PSNR and leaves identity alone, while its full luma
detail also smooths texture that dlib's face descriptor relies on: at crop scale 2 (96 validation
faces degraded as in the calibration below, phase-5 weights) all of the detail gained +0.46 dB with FED +0.002, the
same detail with its luma halved +0.47 dB with FED -0.003 (README).

``--strength auto`` reads the strength from the weights' own **calibration curve**
(``ModelConfig.strength_curve``), measured once per weights file by :func:`calibrate_strength`
on held-out faces degraded as real footage is (antialiased downscale, H.264 at CRF 20-36 on a
short clip with sub-pixel motion) and cropped as the pipeline crops them (:func:`detected_view`:
the pipeline's detector on the degraded face; :func:`pipeline_view`: the sources' own
alignment). For each crop
scale ``f`` (crop pixels per input pixel: above 1 the face is smaller than the crop, below 1
larger), the curve holds the least-squares blend weights of the detail's luma and chroma
against what the upscale misses,

    (a_Y, a_C) = argmin || a_Y Y(d) + a_C (d - Y(d)) - (t - u) ||  (inside the face mask, each in [0, 1]),

d the detail, t the truth, u the upscale, then cut back (the pair to 3/4, 1/2 or 1/4, and at each
step the luma weight to a half or none before the chroma is cut further) until the faces' dlib
descriptor distance to the truth (FED) is lower than the upscale's by at least one standard
error of the paired differences: restoration must clearly not move identity.
A track's strength is ``SAFETY * (a_Y, a_C)(f_eff)`` with
``f_eff = min(f, scale)`` (an output smaller than the crop cannot show more than ``scale``
times the input), interpolated in log f. Below the smallest calibrated f (faces bigger than
the calibration's sources allow) it falls linearly to 0 at half that f; above the largest it
stays at the last value. Weights without a curve get strength 0 (the plain upscale), with a
warning: run ``pipelines/calibrate_strength.py`` on them. That script's release gate
(``--gate``) writes a zero curve when the measured one loses to the plain upscale on real clips. Curves of older files hold one weight
per point (``(f, a)``), used for both components.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from rmmvideo.video.composite import to_grey

if TYPE_CHECKING:
    from rmmvideo.config import ModelConfig
    from rmmvideo.eval.face_metrics import FaceReference
    from rmmvideo.models.rmm import RMM
    from rmmvideo.video.detect import FaceDetector

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


@dataclass(frozen=True)
class Strength:
    """How much of the model's detail a face gets (module doc): ``luma`` weighs the detail's
    luma, ``chroma`` the rest; each in [0, 1]. ``Strength()`` is the plain upscale."""

    luma: float = 0.0
    chroma: float = 0.0

    def __post_init__(self) -> None:
        for name in ("luma", "chroma"):
            v = float(getattr(self, name))
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"Strength.{name} must be in [0, 1], got {v}")
            object.__setattr__(self, name, v)

    @classmethod
    def uniform(cls, s: float) -> Strength:
        """The same weight on luma and chroma (``--strength s``)."""
        return cls(s, s)

    @classmethod
    def of(cls, v: float | Sequence[float]) -> Strength:
        """From one weight for both (``--strength 0.5``) or ``(luma, chroma)`` (``--strength
        0.5/1``, :meth:`to_json`'s list)."""
        if isinstance(v, (int, float)):
            return cls.uniform(float(v))
        luma, chroma = v
        return cls(float(luma), float(chroma))

    def to_json(self) -> list[float]:
        return [self.luma, self.chroma]

    @property
    def is_zero(self) -> bool:
        """Adds nothing: the face stays the plain upscale."""
        return self.luma == 0.0 and self.chroma == 0.0

    def __str__(self) -> str:
        """``0.50`` when both weights agree, else ``0.38/0.75`` (luma/chroma)."""
        if self.luma == self.chroma:
            return f"{self.luma:.2f}"
        return f"{self.luma:.2f}/{self.chroma:.2f}"


def weigh_detail(detail: torch.Tensor, strength: torch.Tensor) -> torch.Tensor:
    """``luma * Y(detail) + chroma * (detail - Y(detail))`` per face.

    detail: (N, 3, S, S); strength: (N, 2) (luma, chroma) weights. Returns (N, 3, S, S)."""
    if strength.shape != (detail.shape[0], 2):
        raise ValueError(f"weigh_detail: strength shape {tuple(strength.shape)}, expected ({detail.shape[0]}, 2)")
    y = to_grey(detail)
    w = strength.to(detail.dtype).view(-1, 2, 1, 1, 1)
    return w[:, 1] * (detail - y) + w[:, 0] * y


def strength_tensor(strengths: Sequence[Strength], device: torch.device | str | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(N, 2) (luma, chroma) weights of ``strengths``, for :func:`weigh_detail`."""
    return torch.tensor([[s.luma, s.chroma] for s in strengths], dtype=dtype, device=device).view(-1, 2)


def curve_strength(curve: Sequence[Sequence[float]], f: float) -> Strength:
    """``SAFETY * (a_Y, a_C)(f)`` from a calibration curve of (f, a_Y, a_C) points sorted by f
    (module doc; an (f, a) point stands for (f, a, a)); zero for an empty curve."""
    if not curve or f <= 0:
        return Strength()
    fs = np.log(np.asarray([p[0] for p in curve], dtype=np.float64))
    lf = math.log(f)

    def component(k: int) -> float:
        a = np.asarray([p[k] if len(p) > 2 else p[1] for p in curve], dtype=np.float64)
        if lf < fs[0]:  # bigger faces than calibrated: fade to 0 at half the smallest f
            value = a[0] * max(0.0, 1.0 - (fs[0] - lf) / math.log(2.0))
        else:
            value = float(np.interp(lf, fs, a))
        return float(min(1.0, max(0.0, SAFETY * value)))

    return Strength(component(1), component(2))


def auto_strength(config: ModelConfig, f: float) -> Strength:
    """Auto strength of a face at effective crop scale ``f`` (:func:`effective_scale` for a
    track; a still's crop scale itself) from the weights' curve; zero, with a warning, without one."""
    if not config.strength_curve:
        _warn_uncalibrated(config.name)
        return Strength()
    return curve_strength(config.strength_curve, f)


_warned: set[str] = set()


def _warn_uncalibrated(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        log.warning("weights %r carry no strength calibration: auto strength is 0 (the plain upscale); "
                    "run pipelines/calibrate_strength.py on them, or give --strength", name)


def fit_strength(detail: torch.Tensor, lost: torch.Tensor, weight: torch.Tensor) -> Strength:
    """Least-squares blend weights of the detail's luma and chroma, each clamped to [0, 1]:
    argmin over (a_Y, a_C) in [0, 1]^2 of ||w (a_Y Y(d) + a_C (d - Y(d)) - lost)||^2.

    detail, lost: (N, 3, S, S); weight: (N, 1, S, S) in [0, 1]."""
    w = weight.to(torch.float64)
    d = detail.to(torch.float64)
    y = to_grey(d)
    parts = (y * w, (d - y) * w)
    e = lost.to(torch.float64) * w
    g = np.array([[float((p * q).sum()) for q in parts] for p in parts])
    b = np.array([float((p * e).sum()) for p in parts])

    def cost(a: np.ndarray) -> float:
        return float(a @ g @ a - 2.0 * b @ a)

    candidates = [np.zeros(2)]
    if np.linalg.det(g) > 1e-12 * max(1e-300, g[0, 0] * g[1, 1]):
        candidates.append(np.linalg.solve(g, b))
    for i in range(2):  # one weight on a bound, the other its best value given it
        j = 1 - i
        for v in (0.0, 1.0):
            a = np.zeros(2)
            a[i] = v
            a[j] = (b[j] - g[j, i] * v) / g[j, j] if g[j, j] > 1e-12 else 0.0
            candidates.append(a)
    feasible = [np.clip(a, 0.0, 1.0) for a in candidates]
    best = min(feasible, key=cost)
    return Strength(float(best[0]), float(best[1]))


def _degraded_input(source: torch.Tensor, f: float, size: int, crf: int, seed: int
                    ) -> tuple[torch.Tensor, float] | None:
    """The input face of :func:`pipeline_view` and :func:`detected_view` at crop scale ``f``:
    ``(lq (3, n', n'), the downscale factor)``, or None when it would exceed the source."""
    from rmmvideo.train.degrade import codec_roundtrip, downsample

    down = source.shape[-1] * f / size
    if down < 1.0:
        return None
    return codec_roundtrip(downsample(source, down), "h264", crf, frames=3, seed=seed), down


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
    from rmmvideo.train.degrade import resize_to

    degraded = _degraded_input(source, f, size, crf, seed)
    if degraded is None:
        return None
    lq, _ = degraded
    crop = F.interpolate(lq[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0].clamp(0.0, 1.0)
    return crop, resize_to(lq, size), resize_to(source, size)


def detected_view(source: torch.Tensor, f: float, size: int, template: Sequence[Sequence[float]], crf: int,
                  seed: int, detector: FaceDetector, pad: float = 0.5
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None:
    """:func:`pipeline_view` with the pipeline's own alignment: the face is found and its 68
    points placed by ``detector`` on the degraded input (padded by ``pad`` of its side, edge
    pixels repeated, so that the detector sees some surroundings), and the crop, upscale and
    truth are taken with the similarity those points give, as the video pipeline takes them
    (:func:`rmmvideo.video.align.align_matrices`, :func:`rmmvideo.video.align.warp_to_crops`).

    The model was trained on exactly aligned crops; a detector's points on a small, blocky
    face are a few pixels off, and that misalignment alone turned the bundled weights' FED gain
    at crop scale 4 into a loss (64 validation faces, strength 0.5: -0.015 exactly aligned,
    +0.004 with a random similarity of +-4 degrees, +-6 % scale, +-4 % shift), as eval-video
    measures on real footage at /6 and /8.

    Returns ``(crop, upscale, truth)``, each (3, S, S), or None when the input would exceed the
    source or the detector finds no face (the pipeline would not restore it either).
    """
    from rmmvideo.train.degrade import resize_to
    from rmmvideo.video.align import align_matrices, compose_affine, warp_to_crops
    from rmmvideo.video.detect import largest_face_points5

    degraded = _degraded_input(source, f, size, crf, seed)
    if degraded is None:
        return None
    lq, down = degraded
    image = (lq.permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    pts = largest_face_points5(detector, image, pad)
    if pts is None:
        return None
    to_crop = align_matrices(torch.as_tensor(pts, dtype=torch.float64)[None], template, size)  # input px -> crop
    # source pixels -> input pixels (pixel centres: x_in = (x_src + 0.5) / down - 0.5)
    src_to_in = torch.tensor([[1 / down, 0.0, 0.5 / down - 0.5], [0.0, 1 / down, 0.5 / down - 0.5]],
                             dtype=torch.float64)
    src_to_crop = compose_affine(to_crop, src_to_in)
    n = source.shape[-1]
    one = torch.zeros(1, dtype=torch.long)
    crop = warp_to_crops(lq[None], one, to_crop, size)[0].clamp(0.0, 1.0)
    up = warp_to_crops(resize_to(lq, n)[None], one, src_to_crop, size)[0].clamp(0.0, 1.0)
    truth = warp_to_crops(source[None], one, src_to_crop, size)[0].clamp(0.0, 1.0)
    return crop, up, truth


def calibrate_strength(model: RMM, sources: Sequence[torch.Tensor],
                       scales: Sequence[float] = CALIBRATION_SCALES, crf: tuple[int, int] = CALIBRATION_CRF,
                       seed: int = 0, batch: int = 16, detector: FaceDetector | None = None
                       ) -> list[tuple[float, float, float]]:
    """Measure a weights file's strength curve (module doc) on held-out faces.

    Args:
        model: RMM in eval mode.
        sources: (3, N, N) aligned faces in [0, 1] at their own resolution (not trained on).
        scales: crop scales f to measure; those no source is big enough for are left out.
        crf: H.264 CRF range, drawn per face and scale from ``seed``.
        detector: align each degraded face as the pipeline does (:func:`detected_view`); None:
            the sources' exact alignment (:func:`pipeline_view`). With a detector, a scale at
            which it finds fewer than a quarter of the faces (at least 8) gets (0, 0).
    Returns:
        [(f, a_Y, a_C)] sorted by f, weights rounded to 3 decimals.
    """
    from rmmvideo.eval.face_metrics import face_reference, to_uint8
    from rmmvideo.models.rmm import make_noise
    from rmmvideo.train.degrade import resize_to
    from rmmvideo.video.composite import ellipse_mask, restoration_detail

    size = model.config.size
    template = model.config.template
    g = np.random.default_rng(seed)
    mask = ellipse_mask(size, template)
    exact_refs = [] if detector is not None else [face_reference(to_uint8(resize_to(src, size))) for src in sources]
    curve = []
    for f in sorted(scales):
        views, refs, fits = [], [], 0
        for k, src in enumerate(sources):
            c, s = int(g.integers(crf[0], crf[1] + 1)), int(g.integers(0, 2**62))
            if detector is None:
                v = pipeline_view(src, f, size, c, s)
            else:
                fits += src.shape[-1] * f / size >= 1.0
                v = detected_view(src, f, size, template, c, s, detector)
            if v is not None:
                views.append(v)
                # the truths' faces: the exact crop's, or the crop the detected points give
                refs.append(exact_refs[k] if detector is None else face_reference(to_uint8(v[2])))
        if detector is not None and fits and len(views) < max(8, fits / 4):
            curve.append((float(f), 0.0, 0.0))  # the pipeline rarely finds such faces: no evidence
            continue
        if not views:
            continue
        crop, up, truth = (torch.stack(t) for t in zip(*views))
        noise = make_noise(seed, len(crop), model.config.z_n_dim)
        with torch.no_grad():
            restored = torch.cat([model.restore(crop[i:i + batch], noise[i:i + batch]).x_hr
                                  for i in range(0, len(crop), batch)])
        w = mask.expand(len(crop), -1, -1, -1)
        detail = restoration_detail(restored, crop) * w
        a = identity_safe(fit_strength(detail, truth - up, w), up, detail, refs)
        curve.append((float(f), round(a.luma, 3), round(a.chroma, 3)))
    return curve


# Cut-backs identity_safe tries, in order: the whole pair scaled by k, with the luma weight
# times r (the luma detail is what moves identity; the chroma detail barely does).
CUT_BACKS = tuple((k, r) for k in (1.0, 0.75, 0.5, 0.25) for r in (1.0, 0.5, 0.0))


def identity_safe(a: Strength, up: torch.Tensor, detail: torch.Tensor, refs: Sequence[FaceReference],
                  margin: float = IDENTITY_MARGIN) -> Strength:
    """The first of ``(k r a_Y, k a_C)`` for (k, r) in :data:`CUT_BACKS` (else zero) at which the
    faces' dlib descriptor distance to the truth (FED) is *significantly* lower than the
    upscale's: the mean paired difference plus ``margin`` standard errors must be <= 0. A
    PSNR-optimal pair that does not clearly improve identity is cut back, luma first, because a
    FED change smaller than the benchmark's noise wins or loses on a clip by chance (README):
    with ``margin`` 0 (the mean alone, before) the bundled weights got 0.13 on a shared clip at
    x4 where 40 frames measured FED 1.0045x.

    up, detail (already masked): (N, 3, S, S); refs: (N,) the truths' faces
    (:func:`rmmvideo.eval.face_metrics.face_reference`); those dlib found no face in are left out."""
    from rmmvideo.eval.face_metrics import fed_lle, to_uint8

    keep = [i for i, r in enumerate(refs) if r.detected]
    if a.is_zero or not keep:
        return a

    def feds(x: torch.Tensor) -> np.ndarray:
        return np.asarray([fed_lle(to_uint8(x[i]), refs[i])[0] for i in keep], dtype=np.float64)

    base = feds(up)
    tried: set[Strength] = set()
    for k, r in CUT_BACKS:
        ak = Strength(k * r * a.luma, k * a.chroma)
        if ak.is_zero or ak in tried:
            continue
        tried.add(ak)
        weights = strength_tensor([ak] * len(up), dtype=detail.dtype)
        d = feds((up + weigh_detail(detail, weights)).clamp(0.0, 1.0)) - base
        se = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else 0.0
        if float(d.mean()) + margin * se <= 0:
            return ak
    return Strength()
