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
on held-out faces degraded as real footage is (antialiased downscale, H.264 at CRF 18-40 on a
short clip with sub-pixel motion) and cropped as the pipeline crops them (:func:`detected_view`:
the pipeline's detector on the degraded face; :func:`pipeline_view`: the sources' own
alignment). It is indexed by the face's **crop scale** ``f`` (crop pixels per input pixel:
above 1 the face is smaller than the crop, below 1 larger) and by how coarsely the codec coded
it, the **mean H.264 quantiser** ``qp`` the decoder reports (``FacePlan.qp``, the same number
``--deblock auto`` and ``--fuse auto`` read): how much of the model's detail helps depends on
both (on 128 validation faces at f 1.6, the PSNR-optimal luma weight was 0.42 at CRF 20-25 and
0.74 at CRF 31-36, and full strength lost 0.17 dB and identity on the first, gained 0.35 dB on
the second). Each point ``(f, qp, a_Y, a_C)`` is the strength applied to such a face: the
least-squares blend weights of the detail's luma and chroma against what the upscale misses,

    (a_Y, a_C) = argmin || a_Y Y(d) + a_C (d - Y(d)) - (t - u) ||  (inside the face mask),

d the detail, t the truth, u the upscale, fitted on the faces coded within ``QP_HALF_WIDTH``
of ``qp`` (``qp`` -1: on every face, for faces whose codec gives no quantiser), times ``SAFETY``
and clamped to [0, 1], then cut back (the pair to 3/4, 1/2 or 1/4, and at each step the luma
weight to a half or none before the chroma is cut further) until the faces' dlib descriptor
distance to the truth (FED) is lower than the upscale's by at least one standard error of the
paired differences: restoration must clearly not move identity.
A track's strength is the curve's at ``f_eff = min(f, scale)`` (an output smaller than the
crop cannot show more than ``scale`` times the input) and the median quantiser of the crops that
pin it: interpolated in log f at each calibrated quantiser, then linearly in the quantiser
(held beyond the first and last). Below the smallest calibrated f (faces bigger than the
calibration's sources allow) it falls linearly to 0 at half that f; above the largest it stays
at the last value. Weights without a curve get strength 0 (the plain upscale), with a warning:
run ``pipelines/calibrate_strength.py`` on them. That script's release gate (``--gate``)
writes a zero curve when the measured one loses to the plain upscale on real clips where
strength 0 does not. Curves of older files hold ``(f, a)`` or ``(f, a_Y, a_C)`` points without
the quantiser and before ``SAFETY`` (:func:`curve_points`).

Why a curve and not a self-check on the input: a cross-scale self-check (degrade the input
crop once more, restore, fit) cannot see codec artefacts, which dominate real footage at crop
scales near 1: on the shared clips it chose 0 where the best weight was 0.4-1 (README).
Why ``SAFETY``: the gain of a blend weight ``a`` is quadratic with its peak at a*, positive on
(0, 2 a*); taking 0.75 a* keeps ~94 % of the peak gain and stays positive on any track whose
own a* is at least 0.375 times the curve's. It is applied to the fit before the clamp (a fit
of 1.3 gives 0.98, not 0.75) and before the identity guard (which so judges the applied pair).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
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
# H.264 CRF range of the calibration's inputs: their 3-frame clips read a mean quantiser of about
# CRF + 4.5, so QP 22-45, the range between finely and very coarsely coded footage.
CALIBRATION_CRF = (18, 40)
# Quantisers the curve is measured at (each on the faces coded within QP_HALF_WIDTH of it); a
# level with fewer than MIN_FACES such faces gets (0, 0).
CALIBRATION_QP = (24.0, 28.0, 32.0, 36.0, 40.0)
QP_HALF_WIDTH = 3.0
MIN_FACES = 24
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


UNKNOWN_QP = -1.0  # a curve point's quantiser for faces whose codec gives none (pooled over all)


def curve_points(curve: Sequence[Sequence[float]]) -> list[tuple[float, float, float, float]]:
    """The points of a calibration curve as ``(f, qp, a_Y, a_C)`` applied strengths (module doc).

    Curves written before quantiser calibration hold ``(f, a)`` or ``(f, a_Y, a_C)`` points
    without :data:`SAFETY` applied: they read as ``(f, UNKNOWN_QP, SAFETY a_Y, SAFETY a_C)``."""
    out = []
    for p in curve:
        if len(p) == 4:
            out.append((float(p[0]), float(p[1]), float(p[2]), float(p[3])))
        else:
            a_y, a_c = (p[1], p[1]) if len(p) == 2 else (p[1], p[2])
            out.append((float(p[0]), UNKNOWN_QP, min(1.0, SAFETY * a_y), min(1.0, SAFETY * a_c)))
    return out


def curve_strength(curve: Sequence[Sequence[float]], f: float, qp: float | None = None) -> Strength:
    """The strength of a face at crop scale ``f`` coded at mean quantiser ``qp`` (None: unknown)
    from a calibration curve (:func:`curve_points`): interpolated in log f at each calibrated
    quantiser, then linearly in the quantiser (held at the first and last); faces without a
    quantiser, and every face with a curve that has no quantiser rows, read the unknown rows.
    Zero for an empty curve."""
    points = curve_points(curve)
    if not points or f <= 0:
        return Strength()
    known = sorted({q for _, q, _, _ in points if q >= 0})
    levels = known if qp is not None and known else [UNKNOWN_QP]
    values = np.array([_along_f([p for p in points if p[1] == q], f) for q in levels])  # (levels, 2)
    if len(levels) == 1 or qp is None:
        pair = values[0]
    else:
        pair = np.array([np.interp(qp, levels, values[:, k]) for k in range(2)])
    return Strength(*(float(min(1.0, max(0.0, v))) for v in pair))


def _along_f(points: Sequence[tuple[float, float, float, float]], f: float) -> tuple[float, float]:
    """(a_Y, a_C) at ``f`` from one quantiser's points sorted by f: linear in log f, flat above
    the last point, fading to 0 at half the first f below it; (0, 0) without points."""
    if not points:
        return 0.0, 0.0
    fs = np.log(np.asarray([p[0] for p in points], dtype=np.float64))
    lf = math.log(f)
    out = []
    for k in (2, 3):
        a = np.asarray([p[k] for p in points], dtype=np.float64)
        if lf < fs[0]:  # bigger faces than calibrated: fade to 0 at half the smallest f
            out.append(float(a[0] * max(0.0, 1.0 - (fs[0] - lf) / math.log(2.0))))
        else:
            out.append(float(np.interp(lf, fs, a)))
    return out[0], out[1]


def auto_strength(config: ModelConfig, f: float, qp: float | None = None) -> Strength:
    """Auto strength of a face at effective crop scale ``f`` (:func:`effective_scale` for a
    track; a still's crop scale itself) and mean codec quantiser ``qp`` (None: unknown) from the
    weights' curve; zero, with a warning, without one."""
    if not config.strength_curve:
        _warn_uncalibrated(config.name)
        return Strength()
    return curve_strength(config.strength_curve, f, qp)


_warned: set[str] = set()


def _warn_uncalibrated(name: str) -> None:
    if name not in _warned:
        _warned.add(name)
        log.warning("weights %r carry no strength calibration: auto strength is 0 (the plain upscale); "
                    "run pipelines/calibrate_strength.py on them, or give --strength", name)


def fit_strength(detail: torch.Tensor, lost: torch.Tensor, weight: torch.Tensor,
                 upper: float = 1.0) -> tuple[float, float]:
    """Least-squares blend weights (a_Y, a_C) of the detail's luma and chroma, each in
    [0, ``upper``]: argmin of ||w (a_Y Y(d) + a_C (d - Y(d)) - lost)||^2.

    detail, lost: (N, 3, S, S); weight: (N, 1, S, S) in [0, 1] (a per-face factor weighs faces)."""
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
        for v in (0.0, upper):
            a = np.zeros(2)
            a[i] = v
            a[j] = (b[j] - g[j, i] * v) / g[j, j] if g[j, j] > 1e-12 else 0.0
            candidates.append(a)
    feasible = [np.clip(a, 0.0, upper) for a in candidates]
    best = min(feasible, key=cost)
    return float(best[0]), float(best[1])


def _degraded_input(source: torch.Tensor, f: float, size: int, crf: int, seed: int
                    ) -> tuple[torch.Tensor, float, float] | None:
    """The input face of :func:`pipeline_view` and :func:`detected_view` at crop scale ``f``:
    ``(lq (3, n', n'), the downscale factor, its mean H.264 quantiser)``, or None when it would
    exceed the source."""
    from rmmvideo.train.degrade import codec_roundtrip_qp, downsample

    down = source.shape[-1] * f / size
    if down < 1.0:
        return None
    lq, qp = codec_roundtrip_qp(downsample(source, down), "h264", crf, frames=3, seed=seed)
    if qp is None:
        raise RuntimeError("the H.264 decoder gave no quantisers (FFmpeg without venc_params export?)")
    return lq, down, float(qp.values.mean())


def pipeline_view(source: torch.Tensor, f: float, size: int, crf: int, seed: int
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None:
    """One face as the video pipeline sees it at crop scale ``f``, and its references.

    Args:
        source: (3, N, N) aligned face in [0, 1] at its own resolution.
        f: crop pixels per input pixel; the input face is ``size / f`` px (must be <= N).
        size: crop side S.
        crf: H.264 CRF of the input (a 3-frame clip with sub-pixel motion, 4:2:0).
        seed: the codec clip's shifts.
    Returns:
        ``(crop, upscale, truth, qp)``: each image (3, S, S), the input resized to S bilinearly
        (area-like when shrinking, as the pipeline's warp), its bicubic resize (the plain upscale
        in crop space), and the source resized to S; ``qp`` the input's mean H.264 quantiser
        (what the pipeline reads of a face, ``FacePlan.qp``). None when the input would exceed
        the source.
    """
    from rmmvideo.train.degrade import resize_to

    degraded = _degraded_input(source, f, size, crf, seed)
    if degraded is None:
        return None
    lq, _, qp = degraded
    crop = F.interpolate(lq[None], size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)[0].clamp(0.0, 1.0)
    return crop, resize_to(lq, size), resize_to(source, size), qp


def detected_view(source: torch.Tensor, f: float, size: int, template: Sequence[Sequence[float]], crf: int,
                  seed: int, detector: FaceDetector, pad: float = 0.5
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float] | None:
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

    Returns ``(crop, upscale, truth, qp)`` as :func:`pipeline_view`, or None when the input
    would exceed the source or the detector finds no face (the pipeline would not restore it
    either).
    """
    from rmmvideo.train.degrade import resize_to
    from rmmvideo.video.align import align_matrices, compose_affine, warp_to_crops
    from rmmvideo.video.detect import largest_face_points5

    degraded = _degraded_input(source, f, size, crf, seed)
    if degraded is None:
        return None
    lq, down, qp = degraded
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
    return crop, up, truth, qp


def calibrate_strength(model: RMM, sources: Sequence[torch.Tensor],
                       scales: Sequence[float] = CALIBRATION_SCALES, crf: tuple[int, int] = CALIBRATION_CRF,
                       seed: int = 0, batch: int = 16, detector: FaceDetector | None = None,
                       qp_levels: Sequence[float] = CALIBRATION_QP
                       ) -> list[tuple[float, float, float, float]]:
    """Measure a weights file's strength curve (module doc) on held-out faces.

    Args:
        model: RMM in eval mode.
        sources: (3, N, N) aligned faces in [0, 1] at their own resolution (not trained on).
        scales: crop scales f to measure; those no source is big enough for are left out.
        crf: H.264 CRF range, drawn per face and scale from ``seed``.
        detector: align each degraded face as the pipeline does (:func:`detected_view`); None:
            the sources' exact alignment (:func:`pipeline_view`). With a detector, a scale at
            which it finds fewer than a quarter of the faces (at least 8) gets (0, 0).
        qp_levels: the quantisers to measure at: each point is fitted on the faces whose input
            was coded within ``QP_HALF_WIDTH`` of it; one with fewer than ``MIN_FACES`` gets (0, 0).
    Returns:
        [(f, qp, a_Y, a_C)] sorted by f then qp, applied strengths rounded to 3 decimals: for
        each f an ``UNKNOWN_QP`` point fitted on every face, then one per quantiser level.
    """
    from rmmvideo.eval.face_metrics import face_reference, to_uint8
    from rmmvideo.models.rmm import make_noise
    from rmmvideo.train.degrade import resize_to
    from rmmvideo.video.composite import ellipse_mask, restoration_detail

    size = model.config.size
    template = model.config.template
    mask = ellipse_mask(size, template)
    exact_refs = [] if detector is not None else [face_reference(to_uint8(resize_to(src, size))) for src in sources]
    levels = [UNKNOWN_QP, *sorted(qp_levels)]
    curve: list[tuple[float, float, float, float]] = []
    for f in sorted(scales):
        g = np.random.default_rng([seed, round(f * 1000)])  # per scale: the same draws for any subset of scales
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
            curve += [(float(f), q, 0.0, 0.0) for q in levels]  # the pipeline rarely finds such faces: no evidence
            continue
        if not views:
            continue
        crop, up, truth = (torch.stack([v[i] for v in views]) for i in range(3))
        qps = np.asarray([v[3] for v in views])
        noise = make_noise(seed, len(crop), model.config.z_n_dim)
        with torch.no_grad():
            restored = torch.cat([model.restore(crop[i:i + batch], noise[i:i + batch]).x_hr
                                  for i in range(0, len(crop), batch)])
        w = mask.expand(len(crop), -1, -1, -1)
        detail = restoration_detail(restored, crop) * w
        for q in levels:
            idx = np.arange(len(views)) if q == UNKNOWN_QP else np.flatnonzero(np.abs(qps - q) <= QP_HALF_WIDTH)
            a = Strength()
            if len(idx) >= MIN_FACES or q == UNKNOWN_QP:
                sel = torch.as_tensor(idx)
                a_y, a_c = fit_strength(detail[sel], truth[sel] - up[sel], w[sel], upper=1.0 / SAFETY)
                a = identity_safe(Strength(min(1.0, SAFETY * a_y), min(1.0, SAFETY * a_c)), up[sel], detail[sel],
                                  [refs[i] for i in idx])
            curve.append((float(f), q, round(a.luma, 3), round(a.chroma, 3)))
    return curve


def calibrate_jobs(model: RMM, sources: Sequence[torch.Tensor], seed: int, detector: str | None, jobs: int = 1,
                   threads: int | None = None) -> list[tuple[float, float, float, float]]:
    """:func:`calibrate_strength` over :data:`CALIBRATION_SCALES`, the scales split among ``jobs``
    processes (each scale draws its own degradations, so the curve is the same for any number).
    ``detector``: the name of the detector to align with (``make_detector``), None: exact."""
    curve = split_over_processes(_calibrate_part, "scales", CALIBRATION_SCALES, jobs, model, sources, seed,
                                 detector, threads=threads)
    return curve if jobs <= 1 else sorted(curve)


def split_over_processes(fn: Callable[..., list], key: str, items: Sequence, jobs: int, *args: object,
                         **kwargs: object) -> list:
    """``fn(*args, key=part, **kwargs)`` on ``jobs`` parts of ``items`` (``items[i::jobs]``), each
    in a spawned process, the results concatenated in part order; with ``jobs`` <= 1 one call
    here, on all of ``items``. Used by the calibration and by its release gate (one crop scale
    or upscale factor per item). ``fn`` and its arguments must pickle."""
    if jobs <= 1:
        return list(fn(*args, **{key: items}, **kwargs))
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        parts = [pool.submit(fn, *args, **{key: items[i::jobs]}, **kwargs) for i in range(jobs)]
        return [r for part in parts for r in part.result()]


def _calibrate_part(model: RMM, sources: Sequence[torch.Tensor], seed: int, detector: str | None,
                    scales: Sequence[float], threads: int | None) -> list[tuple[float, float, float, float]]:
    if threads:
        torch.set_num_threads(threads)
    found = None
    if detector is not None:
        from rmmvideo.video.detect import make_detector

        found, _ = make_detector(detector)
    return calibrate_strength(model, sources, scales=scales, seed=seed, detector=found)


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
