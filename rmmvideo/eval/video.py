"""Real-footage benchmark (``rmmvideo eval-video``): restored faces against a plain upscale.

Protocol, per clip and scale s:

1. the first N frames, cropped (top-left) to a multiple of 2 s in each direction: the truth HQ;
2. degrade: antialiased bicubic downscale by s, then libx264 at CRF c (preset medium, yuv420p,
   the source's pts and rate): the LQ clip;
3. restore the LQ clip with ``restore_video`` (the code path of ``rmmvideo run --scale s``) once
   per strength, and upscale it plainly with ``transcode_upscale`` (the no-face path); both are
   written with the same lossless-grade writer settings (FFV1, 10 bit) and decoded again, so the
   methods differ only by the restored faces;
4. score the faces against HQ, in face boxes found on the HQ frames by dlib's HOG detector
   (upsampled once; independent of the pipeline's detector):

- ``psnr`` (dB, RGB) and ``ssim`` in each face box, averaged over face-frames;
- ``fed``: dlib 128-d descriptor distance to HQ's (landmarks fitted in the HQ box), every 5th frame;
- ``temporal``: mean |(X_t - X_t-1) - (HQ_t - HQ_t-1)| in the box of frame t, in 8-bit levels
  (the flicker a method adds over the truth's own change);
- ``warp``: flow-warping error (Lai et al. 2018): X_t+1 warped to t with DIS optical flow
  computed on the HQ frames, occlusions masked by a forward-backward check, mean squared
  difference in the box (x 1e3, [0, 1] intensities); HQ's own value is the floor;
- ``jitter``: frame-to-frame motion of dlib's 68 landmarks fitted on the output minus the same on
  HQ, mean px (faces matched by box overlap);
- ``sharpness``: Laplacian variance of the luma in the box relative to HQ's (1 = as sharp).

Each method's row also holds its difference to the plain upscale (``psnr_gain``, and ratios for
FED, temporal, warp). ``noise_change``: for the model at strength 1, the mean absolute change
(8-bit levels, in the face boxes) between two runs with different noise seeds on the first
frames: how much the noise input matters to the weights.
"""

from __future__ import annotations

import json
import math
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the pipeline (torch, detectors) is imported lazily at run time
    from rmmvideo.video.options import Components, RestoreOptions, StrengthSetting
    from rmmvideo.video.probe import VideoInfo

Box = tuple[int, int, int, int]  # left, top, right, bottom (exclusive), pixels
FED_EVERY = 5
NOISE_FRAMES = 8


@dataclass
class MethodScore:
    """One method on one clip at one scale (means over the clip's face-frames)."""

    method: str
    psnr: float
    ssim: float
    fed: float
    temporal: float
    warp: float
    jitter: float
    sharpness: float
    psnr_gain: float = 0.0
    fed_ratio: float = 1.0
    temporal_ratio: float = 1.0
    warp_ratio: float = 1.0
    strengths: list[list[float]] = field(default_factory=list)  # per track, the (luma, chroma) strength the run chose
    fed_frames: list[float] = field(default_factory=list)  # FED of each scored face-frame, in the reference's order
    fed_se: float = float("nan")  # standard error of FED x: of the paired face-frame differences from bicubic's


@dataclass
class ClipResult:
    """All methods on one clip at one scale, or the reason it could not be scored."""

    clip: str
    scale: int
    frames: int = 0
    face_frames: int = 0
    size: tuple[int, int] = (0, 0)  # HQ (width, height) after the crop
    methods: list[MethodScore] = field(default_factory=list)
    hq_warp: float = float("nan")
    noise_change: float = float("nan")
    note: str = ""
    error: str = ""


# ----------------------------------------------------------------------------- frames


def _decode(path: Path, max_frames: int | None = None) -> tuple[list[np.ndarray], list[int]]:
    from rmmvideo.video.io import decode_frames

    images, pts = [], []
    it = decode_frames(path, max_frames=max_frames)
    try:
        for f in it:
            images.append(np.ascontiguousarray(f.image))
            pts.append(f.pts)
    finally:
        close = getattr(it, "close", None)
        if close is not None:
            close()
    return images, pts


def crop_to_multiple(image: np.ndarray, m: int) -> np.ndarray:
    """Top-left crop of (H, W, 3) to the largest multiple of ``m`` in each direction."""
    h, w = image.shape[:2]
    return image[: h - h % m, : w - w % m]


def degrade_clip(frames: Sequence[np.ndarray], pts: Sequence[int], info: VideoInfo, out: Path,
                 scale: int, crf: int) -> None:
    """Write the LQ clip: antialiased bicubic downscale by ``scale``, libx264 CRF ``crf``
    (preset medium, yuv420p), the source's pts, time base and rate."""
    from rmmvideo.video.io import VideoWriter
    from rmmvideo.video.upscale import upscale_images

    h, w = frames[0].shape[:2]
    with VideoWriter(out, width=w // scale, height=h // scale, time_base=info.time_base,
                     rate=info.average_rate, codec="libx264", crf=crf, preset="medium",
                     bit_depth=8, pix_fmt="yuv420p", background=False) as writer:
        for img, p in zip(frames, pts):
            writer.write(upscale_images(np.ascontiguousarray(img), 1.0 / scale), p)


# ----------------------------------------------------------------------------- faces and flow


def hq_face_boxes(frames: Sequence[np.ndarray]) -> list[list[Box]]:
    """Face boxes per HQ frame: dlib HOG (upsampled once), clipped to the frame."""
    from rmmvideo.video.dlib_models import hog_detector

    det = hog_detector()
    out = []
    for img in frames:
        h, w = img.shape[:2]
        boxes = []
        for r in det(img, 1):
            x0, y0 = max(0, r.left()), max(0, r.top())
            x1, y1 = min(w, r.right() + 1), min(h, r.bottom() + 1)
            if x1 - x0 >= 16 and y1 - y0 >= 16:
                boxes.append((x0, y0, x1, y1))
        out.append(boxes)
    return out


def _grey(img: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def flow_pairs(frames: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    """For each t < T-1: (map (H, W, 2) float32 of t's pixels into t+1, valid (H, W) bool), from
    DIS optical flow on the HQ frames with a forward-backward consistency check (Sundaram et
    al. 2010: |f + b(x + f)|^2 < 0.01 (|f|^2 + |b(x + f)|^2) + 0.5)."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    grey = [_grey(f) for f in frames]
    h, w = grey[0].shape
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    out = []
    for t in range(len(grey) - 1):
        fw = dis.calc(grey[t], grey[t + 1], None)
        bw = dis.calc(grey[t + 1], grey[t], None)
        mx, my = gx + fw[..., 0], gy + fw[..., 1]
        bw_at = cv2.remap(bw, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        s = fw + bw_at
        ok = (s ** 2).sum(-1) < 0.01 * ((fw ** 2).sum(-1) + (bw_at ** 2).sum(-1)) + 0.5
        ok &= (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
        out.append((np.stack([mx, my], -1), ok))
    return out


def _warp_error(x_t: np.ndarray, x_next: np.ndarray, flow: tuple[np.ndarray, np.ndarray], box: Box) -> float:
    import cv2

    maps, ok = flow
    x0, y0, x1, y1 = box
    mx, my = maps[y0:y1, x0:x1, 0], maps[y0:y1, x0:x1, 1]
    warped = cv2.remap(x_next, np.ascontiguousarray(mx), np.ascontiguousarray(my), cv2.INTER_LINEAR,
                       borderMode=cv2.BORDER_REPLICATE).astype(np.float64) / 255.0
    m = ok[y0:y1, x0:x1]
    if not m.any():
        return float("nan")
    d = ((x_t[y0:y1, x0:x1].astype(np.float64) / 255.0 - warped) ** 2).sum(-1)
    return float(d[m].mean() * 1e3)


def _landmarks(img: np.ndarray, box: Box) -> np.ndarray:
    import dlib

    from rmmvideo.video.dlib_models import shape_predictor, shape_to_numpy

    x0, y0, x1, y1 = box
    return shape_to_numpy(shape_predictor(68)(img, dlib.rectangle(x0, y0, x1 - 1, y1 - 1)))


def _lap_var(img: np.ndarray) -> float:
    import cv2

    return float(cv2.Laplacian(_grey(np.ascontiguousarray(img)).astype(np.float64), cv2.CV_64F).var())


# ----------------------------------------------------------------------------- scoring


@dataclass
class Reference:
    """What every method of one clip is scored against (computed once per clip)."""

    frames: list[np.ndarray]
    boxes: list[list[Box]]
    flows: list[tuple[np.ndarray, np.ndarray]]
    landmarks: list[list[np.ndarray]]  # per frame, per box: (68, 2)
    descriptors: dict[tuple[int, int], np.ndarray]  # (frame, box) -> 128-d, every FED_EVERY frames
    sharpness: list[list[float]]
    warp: float  # HQ's own flow-warping error (the floor)


def build_reference(frames: list[np.ndarray]) -> Reference:
    from rmmvideo.eval.face_metrics import face_descriptor

    boxes = hq_face_boxes(frames)
    flows = flow_pairs(frames)
    lms = [[_landmarks(f, b) for b in bs] for f, bs in zip(frames, boxes)]
    desc = {(t, i): face_descriptor(frames[t], lms[t][i])
            for t in range(0, len(frames), FED_EVERY) for i in range(len(boxes[t]))}
    sharp = [[_lap_var(f[b[1]:b[3], b[0]:b[2]]) for b in bs] for f, bs in zip(frames, boxes)]
    ref = Reference(frames, boxes, flows, lms, desc, sharp, float("nan"))
    ref.warp = _mean([_warp_error(frames[t], frames[t + 1], flows[t], b)
                      for t in range(len(frames) - 1) for b in boxes[t]])
    return ref


def _mean(v: Sequence[float]) -> float:
    a = np.asarray([x for x in v if math.isfinite(x)], np.float64)
    return float(a.mean()) if a.size else float("nan")


def score_method(name: str, out: list[np.ndarray], ref: Reference) -> MethodScore:
    """Score one method's frames (same size and count as the reference's)."""
    import torch

    from rmmvideo.eval import metrics as M
    from rmmvideo.eval.face_metrics import face_descriptor
    from rmmvideo.video.track import box_iou

    if len(out) != len(ref.frames) or out[0].shape != ref.frames[0].shape:
        raise ValueError(f"{name}: {len(out)} frames of {out[0].shape}, expected {len(ref.frames)} of "
                         f"{ref.frames[0].shape}")
    psnr, ssim, fed, temporal, warp, jitter, sharp = [], [], [], [], [], [], []
    lms: list[list[np.ndarray]] = []
    for t, (x, gt) in enumerate(zip(out, ref.frames)):
        lms.append([])
        for i, b in enumerate(ref.boxes[t]):
            x0, y0, x1, y1 = b
            xb = torch.from_numpy(np.ascontiguousarray(x[y0:y1, x0:x1])).permute(2, 0, 1).double() / 255
            gb = torch.from_numpy(np.ascontiguousarray(gt[y0:y1, x0:x1])).permute(2, 0, 1).double() / 255
            psnr.append(float(M.psnr(xb, gb)[0]))
            if min(y1 - y0, x1 - x0) >= 11:
                ssim.append(float(M.ssim(xb, gb)[0]))
            lm = _landmarks(x, b)
            lms[t].append(lm)
            if (t, i) in ref.descriptors:
                fed.append(float(np.linalg.norm(face_descriptor(x, lm) - ref.descriptors[(t, i)])))
            hs = ref.sharpness[t][i]
            if hs > 0:
                sharp.append(_lap_var(x[y0:y1, x0:x1]) / hs)
            if t > 0:
                xd = x[y0:y1, x0:x1].astype(np.float64) - out[t - 1][y0:y1, x0:x1]
                gd = gt[y0:y1, x0:x1].astype(np.float64) - ref.frames[t - 1][y0:y1, x0:x1]
                temporal.append(float(np.abs(xd - gd).mean()))
                prev = [j for j, pb in enumerate(ref.boxes[t - 1]) if box_iou(pb, b)[0, 0] > 0.3]
                if prev:
                    j = prev[0]
                    dm = (lm - lms[t - 1][j]) - (ref.landmarks[t][i] - ref.landmarks[t - 1][j])
                    jitter.append(float(np.linalg.norm(dm, axis=1).mean()))
            if t < len(out) - 1:
                warp.append(_warp_error(x, out[t + 1], ref.flows[t], b))
    return MethodScore(name, _mean(psnr), _mean(ssim), _mean(fed), _mean(temporal), _mean(warp),
                       _mean(jitter), _mean(sharp), fed_frames=fed)


def _relative(m: MethodScore, base: MethodScore) -> None:
    def ratio(a: float, b: float) -> float:
        return a / b if b > 0 else (1.0 if a == b else float("inf"))

    m.psnr_gain = m.psnr - base.psnr
    m.fed_ratio = ratio(m.fed, base.fed)
    m.temporal_ratio = ratio(m.temporal, base.temporal)
    m.warp_ratio = ratio(m.warp, base.warp)
    m.fed_se = fed_ratio_se(m.fed_frames, base.fed_frames)


def fed_ratio_se(fed: Sequence[float], base: Sequence[float]) -> float:
    """Standard error of a method's FED ratio to the upscale's from the paired face-frames (the
    same faces scored for both): std(fed - base) / sqrt(n) / mean(base); nan under 2 pairs.
    A ratio within about 2 of these from 1 is within what the clip's few scored faces resolve."""
    a, b = np.asarray(fed, np.float64), np.asarray(base, np.float64)
    if a.shape != b.shape or a.size < 2 or not b.mean() > 0:
        return float("nan")
    return float((a - b).std(ddof=1) / math.sqrt(a.size) / b.mean())


# ----------------------------------------------------------------------------- driver


def strength_name(strength: StrengthSetting) -> str:
    if strength == "auto":
        return "rmm auto"
    if isinstance(strength, (tuple, list)):
        return f"rmm s={float(strength[0]):g}/{float(strength[1]):g}"
    return f"rmm s={float(strength):g}"


def evaluate_clip(clip: Path, scale: int, crf: int, frames: int, strengths: Sequence[StrengthSetting],
                  components: Components, options: RestoreOptions, work: Path,
                  decoded: dict[Path, tuple[VideoInfo, list[np.ndarray], list[int]]],
                  noise_check: bool = True) -> ClipResult:
    """Run the protocol on one clip at one scale (see the module doc). ``decoded`` caches each
    clip's probe and first frames across scales."""
    from dataclasses import replace

    from rmmvideo.video.io import probe, transcode_upscale
    from rmmvideo.video.pipeline import restore_video

    res = ClipResult(clip=str(clip), scale=scale)
    if clip not in decoded:
        decoded[clip] = (probe(clip), *_decode(clip, frames))
    info, hq_full, pts = decoded[clip]
    if len(hq_full) < 2:
        res.error = f"only {len(hq_full)} frame(s): the protocol needs at least 2"
        return res
    hq = [np.ascontiguousarray(crop_to_multiple(f, 2 * scale)) for f in hq_full]
    res.frames = len(hq)
    res.size = (hq[0].shape[1], hq[0].shape[0])
    if len(hq) < frames:
        res.note = f"clip has {len(hq)} frames, fewer than {frames}: scored on those"
    ref = build_reference(hq)
    res.face_frames = sum(len(b) for b in ref.boxes)
    if res.face_frames == 0:
        res.error = "no face found in the original frames"
        return res
    res.hq_warp = ref.warp
    lq = work / f"{clip.stem}.x{scale}.lq.mp4"
    degrade_clip(hq, pts, info, lq, scale, crf)
    base_path = work / f"{clip.stem}.x{scale}.bicubic.mkv"
    transcode_upscale(lq, base_path, float(scale), codec="ffv1", bit_depth=10)
    base = score_method("bicubic", _decode(base_path)[0], ref)
    res.methods.append(base)
    for s in strengths:
        opts = replace(options, scale=float(scale), strength=s, codec="ffv1", bit_depth=10, quiet=True)
        out_path = work / f"{clip.stem}.x{scale}.{strength_name(s).replace(' ', '_').replace('/', '-')}.mkv"
        summary = restore_video(lq, out_path, opts, components=components)
        m = score_method(strength_name(s), _decode(out_path)[0], ref)
        m.strengths = [[round(v, 3) for v in st.to_json()] for st in summary.strengths]
        _relative(m, base)
        res.methods.append(m)
    if noise_check:
        res.noise_change = _noise_change(lq, ref, options, components, scale, work)
    return res


def _noise_change(lq: Path, ref: Reference, options: RestoreOptions, components: Components, scale: int,
                  work: Path) -> float:
    """Mean |run(seed 0) - run(seed 1)| in the face boxes, 8-bit levels, strength 1, first frames."""
    from dataclasses import replace

    from rmmvideo.video.pipeline import restore_video

    outs = []
    for seed in (0, 1):
        p = work / f"noise{seed}.mkv"
        opts = replace(options, scale=float(scale), strength=1.0, seed=seed, codec="ffv1",
                       bit_depth=10, quiet=True)
        restore_video(lq, p, opts, components=components, max_frames=NOISE_FRAMES)
        outs.append(_decode(p)[0])
        p.unlink()
    diffs = [float(np.abs(a[b[1]:b[3], b[0]:b[2]].astype(np.float64) - c[b[1]:b[3], b[0]:b[2]]).mean())
             for t, (a, c) in enumerate(zip(*outs)) for b in ref.boxes[t]]
    return _mean(diffs)


def evaluate_videos(clips: Sequence[str | Path], scales: Sequence[int] = (2, 4), crf: int = 30,
                    frames: int = 90, strengths: Sequence[StrengthSetting] = ("auto", 1.0),
                    options: RestoreOptions | None = None, noise_check: bool = True,
                    progress: Callable[[str], None] | None = None) -> list[ClipResult]:
    """The real-footage benchmark over ``clips`` x ``scales`` (module doc). A clip that cannot
    be read or has no face gets a row with its ``error``; the others go on."""
    from rmmvideo.errors import UserError
    from rmmvideo.video.options import RestoreOptions, build_components

    opts = options or RestoreOptions(quiet=True)
    comps = build_components(opts)
    results: list[ClipResult] = []
    with tempfile.TemporaryDirectory(prefix="rmmvideo-eval-video-") as tmp:
        for clip in map(Path, clips):
            cache: dict[Path, tuple[VideoInfo, list[np.ndarray], list[int]]] = {}
            for s in scales:
                if progress is not None:
                    progress(f"{clip.name} x{s}")
                try:
                    results.append(evaluate_clip(clip, int(s), crf, frames, strengths, comps, opts,
                                                 Path(tmp), cache, noise_check))
                except UserError as e:
                    results.append(ClipResult(clip=str(clip), scale=int(s), error=str(e)))
                for f in Path(tmp).iterdir():
                    f.unlink()
    return results


# ----------------------------------------------------------------------------- reports


def _f(v: float, nd: int = 2) -> str:
    return "-" if not math.isfinite(v) else f"{v:.{nd}f}"


def to_markdown(results: Sequence[ClipResult]) -> str:
    """Per-clip rows and per-scale means, Markdown."""
    from rmmvideo.video.strength import Strength

    lines = [("| clip | scale | method | PSNR | ΔPSNR | SSIM | FED | FED x | temporal x | warp x | "
              "jitter px | sharpness | strengths |"),
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        name = Path(r.clip).name
        if r.error:
            lines.append(f"| {name} | x{r.scale} | - | {r.error} |  |  |  |  |  |  |  |  |  |")
            continue
        for m in r.methods:
            st = ", ".join(str(Strength.of(v)) for v in m.strengths[:6]) + (" ..." if len(m.strengths) > 6 else "")
            lines.append(f"| {name} | x{r.scale} | {m.method} | {_f(m.psnr)} | {_f(m.psnr_gain, 3)} | "
                         f"{_f(m.ssim, 4)} | {_f(m.fed, 4)} | {_fed_x(m)} | "
                         f"{_f(m.temporal_ratio, 3)} | {_f(m.warp_ratio, 3)} | {_f(m.jitter, 3)} | "
                         f"{_f(m.sharpness, 3)} | {st} |")
    lines += ["", "Means per scale and method (over the clips that were scored):", "",
              ("| scale | method | clips | ΔPSNR | FED x | temporal x | warp x | sharpness | "
               "worst ΔPSNR | clips worse in PSNR / FED / temporal | FED worse by > 2 SE |"),
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for scale, method, rows in _groups(results):
        worse = [sum(col) for col in zip(*(_lost(m) for m in rows))]
        lines.append(f"| x{scale} | {method} | {len(rows)} | {_f(_mean([m.psnr_gain for m in rows]), 3)} | "
                     f"{_f(_mean([m.fed_ratio for m in rows]), 3)} | "
                     f"{_f(_mean([m.temporal_ratio for m in rows]), 3)} | "
                     f"{_f(_mean([m.warp_ratio for m in rows]), 3)} | {_f(_mean([m.sharpness for m in rows]), 3)} | "
                     f"{_f(min(m.psnr_gain for m in rows), 3)} | {worse[0]} / {worse[1]} / {worse[2]} | "
                     f"{sum(fed_worse_beyond_noise(m) for m in rows)} |")
    noise = [(r.scale, r.noise_change) for r in results if math.isfinite(r.noise_change)]
    if noise:
        lines += ["", "Noise sensitivity (strength 1, first frames, two noise seeds): mean |difference| "
                  "in the face boxes = " + ", ".join(f"x{s}: {v:.3f}" for s, v in
                                                     _mean_by_scale(noise).items()) + " (8-bit levels)"]
    return "\n".join(lines) + "\n"


def _fed_x(m: MethodScore) -> str:
    """FED x, with its standard error (``± se``) where one was measured."""
    if m.method == "bicubic" or not math.isfinite(m.fed_se):
        return _f(m.fed_ratio, 3)
    return f"{_f(m.fed_ratio, 3)} ±{m.fed_se:.3f}"


def fed_worse_beyond_noise(m: MethodScore, k: float = 2.0) -> bool:
    """FED x above 1 by more than ``k`` standard errors (:func:`fed_ratio_se`)."""
    return math.isfinite(m.fed_se) and m.fed_ratio - 1.0 > k * m.fed_se


def _lost(m: MethodScore) -> tuple[bool, bool, bool]:
    """The never-worse rule: (lower PSNR, higher FED, higher temporal error) than the upscale."""
    return m.psnr_gain < 0, m.fed_ratio > 1, m.temporal_ratio > 1


def worse_than_upscale(results: Sequence[ClipResult], method: str = "rmm auto",
                       baseline: str | None = None) -> list[str]:
    """Where ``method`` lost to the plain upscale, one phrase per clip-scale: lower PSNR, higher
    FED or higher temporal error (the never-worse rule). A clip-scale that could not be scored
    counts as lost; an empty list means never worse.

    ``baseline``: another method of the same results (e.g. ``"rmm s=0"``, the pipeline without
    the model's detail); a metric on which it already loses counts against ``method`` only where
    ``method`` is worse than ``baseline`` too (what ``method`` adds did not cause that loss)."""
    out = []
    for r in results:
        name = f"{Path(r.clip).name} x{r.scale}"
        if r.error:
            out.append(f"{name}: not scored ({r.error})")
            continue
        scores = {m.method: m for m in r.methods}
        m = scores.get(method)
        if m is None:
            continue
        lost = list(_lost(m))
        base = scores.get(baseline) if baseline else None
        if base is not None:
            worse = (m.psnr_gain < base.psnr_gain, m.fed_ratio > base.fed_ratio, m.temporal_ratio > base.temporal_ratio)
            lost = [x and (w or not b) for x, w, b in zip(lost, worse, _lost(base))]
        what = [w for w, bad in zip((f"ΔPSNR {m.psnr_gain:+.3f} dB", f"FED {m.fed_ratio:.3f}x",
                                     f"temporal {m.temporal_ratio:.3f}x"), lost) if bad]
        if what:
            out.append(f"{name}: {', '.join(what)}")
    return out


def _groups(results: Sequence[ClipResult]) -> list[tuple[int, str, list[MethodScore]]]:
    out: dict[tuple[int, str], list[MethodScore]] = {}
    for r in results:
        for m in r.methods:
            if m.method != "bicubic":
                out.setdefault((r.scale, m.method), []).append(m)
    return [(s, n, v) for (s, n), v in out.items()]


def _mean_by_scale(pairs: Sequence[tuple[int, float]]) -> dict[int, float]:
    by: dict[int, list[float]] = {}
    for s, v in pairs:
        by.setdefault(s, []).append(v)
    return {s: _mean(v) for s, v in sorted(by.items())}


def to_json(results: Sequence[ClipResult]) -> str:
    return json.dumps([asdict(r) for r in results], indent=2, allow_nan=True)
