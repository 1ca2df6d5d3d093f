"""Detection test sets built from real clips, and their scoring (tests and ``pipelines/bench_detect.py``).

From each clip (any clip with one main face), :func:`load_source` decodes ``count``
consecutive frames and finds a reference face box per frame with dlib's HOG detector at the
clip's own resolution, where the face is large; frames it misses (a turned head) get the box
interpolated from the nearest hits on both sides, and frames with no hit on one side are
dropped. The reference therefore comes from a different detector than the ones under test.

:func:`make_sequences` turns a source into test sequences on a ``canvas`` (default 1280x720):

- ``size-N``: the whole frame scaled so the face is N pixels wide, pasted (drifting 0.1 face
  widths per frame) on a background taken from the clip's face-free band;
- ``turned``: the window of the clip where the head is turned most (largest landmark yaw,
  reference misses counting as the most turned), face 64 px wide;
- ``dark``: gamma 2.5 then Gaussian noise (sigma 6), face 64 px wide;
- ``noface``: the clip's face-free band alone, scaled to the canvas (false positives).

:func:`score_sequence` runs a real :class:`~rmmvideo.video.track.FaceTracker` over a sequence
and counts frames where a tracked face matches the reference (centre inside the reference box,
width within 0.5-2x), the tracks that match, the tracks on other faces the reference found
(clips with several people), and the tracks that match no reference face (false tracks).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # detectors and the tracker are imported lazily at run time
    from rmmvideo.video.detect import FaceDetector
    from rmmvideo.video.track import FaceTracker


@dataclass
class SourceClip:
    """``count`` consecutive frames (H, W, 3) uint8 of a clip, with reference boxes (N, 4) xyxy
    of the main (largest) face (NaN where unknown), a yaw proxy per frame (NaN where the
    reference detector missed), and per frame the other faces the reference found ((K, 4))."""

    name: str
    frames: list[np.ndarray]
    boxes: np.ndarray
    yaw: np.ndarray
    others: list[np.ndarray] = field(default_factory=list)


@dataclass
class DetSequence:
    """A test sequence: frames on the canvas and the reference box per frame (NaN: no face)."""

    clip: str
    kind: str  # size-N | turned | dark | noface
    frames: list[np.ndarray]
    boxes: np.ndarray  # (N, 4)
    others: list[np.ndarray] = field(default_factory=list)  # per frame (K, 4): other faces


@dataclass
class SequenceScore:
    clip: str
    kind: str
    frames: int
    face_frames: int  # frames with a reference face
    hits: int  # of those, frames where a tracked face matches it
    face_tracks: int  # distinct track ids matching the face
    false_tracks: int  # tracks that never match a reference face (main or other)
    seconds: float  # tracker (detection + tracking) time
    track_ids: list[int] = field(default_factory=list)
    other_tracks: int = 0  # tracks on another face the reference found (not false)

    @property
    def recall(self) -> float:
        return self.hits / self.face_frames if self.face_frames else float("nan")


def _read(path: Path, start: int, count: int) -> list[np.ndarray]:
    from rmmvideo.video.io import decode_frames

    out = []
    frames = decode_frames(path, max_frames=start + count)
    try:
        for f in frames:
            if f.index >= start:
                out.append(np.ascontiguousarray(f.image))
    finally:
        close = getattr(frames, "close", None)
        if close is not None:
            close()
    return out


def _yaw(lm: np.ndarray) -> float:
    """Head-turn proxy from 68 points: nose tip offset from the jaw ends' midpoint, in half jaw
    widths (0 frontal, about +-1 in profile)."""
    mid = (lm[0, 0] + lm[16, 0]) / 2.0
    half = max(abs(lm[16, 0] - lm[0, 0]) / 2.0, 1.0)
    return float((lm[30, 0] - mid) / half)


def _hog_faces(im: np.ndarray, short_side: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """HOG faces of an image, largest first (scanned with its short side at most
    ``short_side``, then at full size if nothing was found): [(box (4,), landmarks (68, 2))] in
    image pixels; landmarks only for the largest (zeros for the others)."""
    import cv2
    import dlib

    from rmmvideo.video import dlib_models

    hog = dlib_models.hog_detector()
    f = min(1.0, short_side / min(im.shape[:2]))
    for scale in ([f, 1.0] if f < 1.0 else [1.0]):
        work = im if scale == 1.0 else cv2.resize(im, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        rects = sorted(hog(np.ascontiguousarray(work), 0), key=lambda r: -r.width() * r.height())
        if len(rects):
            out = []
            for j, r in enumerate(rects):
                box = np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64)
                lm = np.zeros((68, 2))
                if j == 0:
                    rect = dlib.rectangle(r.left(), r.top(), r.right(), r.bottom())
                    lm = dlib_models.shape_to_numpy(dlib_models.shape_predictor(68)(work, rect))
                out.append(((box + 0.5) / scale - 0.5, (lm + 0.5) / scale - 0.5))
            return out
    return []


def reference_boxes(frames: list[np.ndarray], short_side: int = 480
                    ) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Reference face box (the largest HOG detection, scanned at ``short_side`` and at full
    size when that finds nothing) and yaw per frame, interpolated over misses between two hits;
    NaN elsewhere; and per frame the other HOG faces. Returns ``(boxes (N, 4), yaw (N,),
    others [(K, 4)])``."""
    n = len(frames)
    boxes = np.full((n, 4), np.nan)
    yaw = np.full(n, np.nan)
    others = []
    for i, im in enumerate(frames):
        found = _hog_faces(im, short_side)
        if found:
            boxes[i] = found[0][0]
            yaw[i] = _yaw(found[0][1])
        others.append(np.array([b for b, _ in found[1:]], np.float64).reshape(-1, 4))
    hit = np.flatnonzero(~np.isnan(boxes[:, 0]))
    if len(hit) >= 2:
        for c in range(4):
            inside = (np.arange(n) >= hit[0]) & (np.arange(n) <= hit[-1])
            boxes[inside, c] = np.interp(np.arange(n)[inside], hit, boxes[hit, c])
    return boxes, yaw, others


def load_source(path: str | Path, count: int = 30, start: int = 0, pad: int = 0) -> SourceClip:
    """Frames ``start .. start + count - 1`` of ``path`` with their reference boxes. With
    ``pad``, the reference also looks at up to ``pad`` frames on each side, so a run of misses
    at the window's ends (a turned head) can still be bridged."""
    first = max(0, start - pad)
    frames = _read(Path(path), first, start - first + count + pad)
    boxes, yaw, others = reference_boxes(frames)
    keep = slice(start - first, start - first + count)
    return SourceClip(Path(path).name, frames[keep], boxes[keep], yaw[keep], others[keep])


def most_turned_start(path: str | Path, count: int = 30, stride: int = 5) -> int:
    """First frame of the ``count``-frame window where the head is turned most: mean |yaw| of
    every ``stride``-th frame, reference misses counting as 1 (a profile)."""
    frames = _read(Path(path), 0, 10**9)[::stride]
    _, yaw, _ = reference_boxes(frames)
    turn = np.where(np.isnan(yaw), 1.0, np.abs(yaw))
    w = max(1, count // stride)
    if len(turn) <= w:
        return 0
    means = np.convolve(turn, np.ones(w) / w, mode="valid")
    return int(np.argmax(means)) * stride


def face_free_band(src: SourceClip) -> tuple[int, int, int, int] | None:
    """Largest frame band (x0, y0, x1, y1) that keeps half a face width away from every
    reference box of the clip (main and other faces), or None when no band is at least 1/5 of
    the frame in both directions."""
    h, w = src.frames[0].shape[:2]
    b = np.concatenate([src.boxes[~np.isnan(src.boxes[:, 0])]] + list(src.others)).reshape(-1, 4)
    if not len(b):
        return None  # no reference face: where a face might be is unknown
    side = 0.5 * float(np.max(b[:, 2] - b[:, 0]))
    x0, y0 = float(b[:, 0].min()) - side, float(b[:, 1].min()) - side
    x1, y1 = float(b[:, 2].max()) + side, float(b[:, 3].max()) + side
    bands = [(0, 0, int(max(0, x0)), h), (int(min(w, x1)), 0, w, h),
             (0, 0, w, int(max(0, y0))), (0, int(min(h, y1)), w, h)]
    bands = [bd for bd in bands if bd[2] - bd[0] >= w / 5 and bd[3] - bd[1] >= h / 5]
    return max(bands, key=lambda bd: (bd[2] - bd[0]) * (bd[3] - bd[1])) if bands else None


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    interp = cv2.INTER_AREA if size[0] < image.shape[1] else cv2.INTER_CUBIC
    return cv2.resize(image, size, interpolation=interp)


def _background(src: SourceClip, i: int, canvas: tuple[int, int]) -> np.ndarray:
    band = face_free_band(src)
    if band is None:  # no face-free band: a flat grey canvas with the clip's mean colour
        colour = np.asarray(src.frames[i].reshape(-1, 3).mean(0), np.uint8)
        return np.broadcast_to(colour, (canvas[1], canvas[0], 3)).copy()
    x0, y0, x1, y1 = band
    return _resize(src.frames[i][y0:y1, x0:x1], canvas)


def _placement(src: SourceClip, i: int, face: float, canvas: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where :func:`_pasted` puts frame i: scaled size (nw, nh) and top-left (ox, oy)."""
    cw, ch = canvas
    f = face / float(np.nanmedian(src.boxes[:, 2] - src.boxes[:, 0]))
    h, w = src.frames[i].shape[:2]
    nw, nh = max(1, round(w * f)), max(1, round(h * f))
    sh, sw = min(nh, ch), min(nw, cw)
    ox = int(np.clip(round((cw - sw) * 0.25 + 0.1 * face * i), 0, cw - sw))
    oy = int(np.clip(round((ch - sh) * 0.6 - 0.03 * face * i), 0, ch - sh))
    return nw, nh, ox, oy


def _pasted(src: SourceClip, i: int, face: float, canvas: tuple[int, int]
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frame i scaled so the reference face is ``face`` px wide, pasted on the background at a
    position drifting by (0.1, -0.03) face widths per frame (a slow walk or pan, on top of the
    clip's own motion); returns (canvas image, reference box on it, other faces' boxes)."""
    cw, ch = canvas
    out = _background(src, i, canvas)
    box = src.boxes[i]
    im = src.frames[i]
    nw, nh, ox, oy = _placement(src, i, face, canvas)
    small = _resize(im, (nw, nh))
    sh, sw = min(small.shape[0], ch), min(small.shape[1], cw)
    out[oy:oy + sh, ox:ox + sw] = small[:sh, :sw]
    fx, fy = nw / im.shape[1], nh / im.shape[0]
    m, off = np.array([fx, fy, fx, fy]), np.array([ox, oy, ox, oy], np.float64)
    ref = box * m + off
    if np.isnan(box[0]) or ref[2] > ox + sw or ref[3] > oy + sh:
        ref = np.full(4, np.nan)
    others = src.others[i] * m + off if i < len(src.others) else np.zeros((0, 4))
    return out, ref, others


def landmark_errors(src: SourceClip, face: float, detector: FaceDetector,
                    canvas: tuple[int, int] = (1280, 720)) -> np.ndarray:
    """68-point error of ``detector`` on frames of ``src`` pasted with the face ``face`` px wide
    (as ``size-N`` sequences, whole-frame detection, no tracking), against dlib's 68 points on
    the full-resolution source frame mapped to the canvas. Per frame where both exist: mean
    point distance over the inter-ocular distance (a normalised mean error)."""
    errs = []
    for i, frame in enumerate(src.frames):
        found = _hog_faces(frame, 10**9)
        if not found:
            continue
        im, _, _ = _pasted(src, i, face, canvas)
        nw, nh, ox, oy = _placement(src, i, face, canvas)
        h, w = frame.shape[:2]
        # Pixel centres: source x maps to (x + 0.5) * nw / w - 0.5 + ox.
        ref = (found[0][1] + 0.5) * [nw / w, nh / h] - 0.5 + [ox, oy]
        dets = detector.detect([im])[0]
        if not dets:
            continue
        d = min(dets, key=lambda d: float(np.linalg.norm(d.landmarks.mean(0) - ref.mean(0))))
        iod = float(np.linalg.norm(ref[36:42].mean(0) - ref[42:48].mean(0)))
        errs.append(float(np.linalg.norm(d.landmarks - ref, axis=1).mean()) / iod)
    return np.asarray(errs)


def darken(image: np.ndarray, rng: np.random.Generator, gamma: float = 2.5, noise: float = 6.0) -> np.ndarray:
    """Low light: ``255 * (x / 255) ** gamma`` plus Gaussian noise of ``noise`` grey levels."""
    x = 255.0 * (image / 255.0) ** gamma + rng.normal(0.0, noise, image.shape)
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def make_sequences(src: SourceClip, kinds: list[str], canvas: tuple[int, int] = (1280, 720),
                   turned: SourceClip | None = None, seed: int = 0) -> list[DetSequence]:
    """Test sequences of ``kinds`` (``size-N``, ``dark``, ``noface``; ``turned`` uses the
    ``turned`` source, a window of the same clip) on a ``canvas`` (width, height)."""
    out = []
    for kind in kinds:
        frames, boxes = [], []
        s = turned if kind == "turned" else src
        if s is None:
            raise ValueError("make_sequences: kind 'turned' needs the turned source")
        rng = np.random.default_rng(seed)
        others = []
        for i in range(len(s.frames)):
            if kind == "noface":
                if face_free_band(s) is None:
                    break
                im, ref, oth = _background(s, i, canvas), np.full(4, np.nan), np.zeros((0, 4))
            elif kind.startswith("size-"):
                im, ref, oth = _pasted(s, i, float(kind[5:]), canvas)
            elif kind in ("turned", "dark"):
                im, ref, oth = _pasted(s, i, 64.0, canvas)
                if kind == "dark":
                    im = darken(im, rng)
            else:
                raise ValueError(f"unknown sequence kind {kind!r}")
            frames.append(im)
            boxes.append(ref)
            others.append(oth)
        if frames:
            out.append(DetSequence(src.name, kind, frames, np.stack(boxes), others))
    return out


def _matches(box: np.ndarray, ref: np.ndarray) -> bool:
    if np.isnan(ref[0]):
        return False
    cx, cy = (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0
    ratio = (box[2] - box[0]) / max(ref[2] - ref[0], 1e-6)
    return bool(ref[0] <= cx <= ref[2] and ref[1] <= cy <= ref[3] and 0.5 <= ratio <= 2.0)


def score_sequence(seq: DetSequence, make_tracker: Callable[[], FaceTracker]) -> SequenceScore:
    """Run a fresh tracker (``make_tracker()``) over ``seq`` and score it against the reference."""
    tracker = make_tracker()
    t0 = time.perf_counter()
    out = []
    for s in range(0, len(seq.frames), 8):  # chunks of 8, as the pipeline pushes them
        out += tracker.push([(i, seq.frames[i]) for i in range(s, min(len(seq.frames), s + 8))])
    out += tracker.flush()
    seconds = time.perf_counter() - t0
    hits = 0
    matched: set[int] = set()
    on_other: set[int] = set()
    seen: set[int] = set()
    for ff in out:
        ref = seq.boxes[ff.index]
        oth = seq.others[ff.index] if ff.index < len(seq.others) else np.zeros((0, 4))
        hit = False
        for f in ff.faces:
            seen.add(f.track_id)
            if _matches(f.box, ref):
                matched.add(f.track_id)
                hit = True
            elif any(_matches(f.box, o) for o in oth):
                on_other.add(f.track_id)
        hits += hit
    face_frames = int(np.sum(~np.isnan(seq.boxes[:, 0])))
    other = on_other - matched
    return SequenceScore(seq.clip, seq.kind, len(seq.frames), face_frames, hits, len(matched),
                         len(seen - matched - other), seconds, sorted(seen), len(other))
