"""Streaming face tracker: stable ids, detection every k frames, smoothed landmarks.

How it works (all decisions are delayed by a bounded ``lag`` so they can be applied to frames
already seen, and memory stays O(lag) frames):

0. **Scene cuts** (:class:`SceneCutDetector`, on 64x36 thumbnails of every frame): at a cut,
   the last frame of the old scene is detected (if it was not a detection frame), every track
   ends, and the frames before the cut are returned at once. Nothing crosses a cut: tracks after
   it get new ids, and interpolation and smoothing stay within a track. The detection cadence
   restarts on the first frame after the cut.
1. **Detection** runs on every ``detect_every``-th frame of a scene (k) and on its last frame
   (:meth:`FaceTracker.flush` ends the last scene). With a detector that has ``detect_near``
   (track-guided search), the scene's first detection frame and every ``full_every``-th one scan
   the whole frame, and the others search only around the live tracks' predicted boxes (no
   call when there is none); other detectors get all of a push's detection frames in one call.
2. **Association** (per detection frame, in order): every live track predicts its box and 68
   points at this frame with constant velocity from its last two detections; the cost of track i
   vs detection j is ``(1 - IoU) + mean landmark distance / face size``, solved with the
   Hungarian method (``scipy.optimize.linear_sum_assignment``); a pair is allowed only when the
   landmark distance is under ``dist_gate`` face sizes or the IoU is at least ``iou_gate``.
   Constant-velocity prediction keeps identities apart when two faces cross.
3. **Birth / death**: an unmatched detection starts a tentative track; it is confirmed (gets a
   public id, ids count up from 0) after ``min_hits`` consecutive detection-frame hits and dies on
   its first miss before that (false positives never reach the output). A confirmed track dies
   after ``max_gap`` consecutive missed detection frames. Frames before confirmation still get
   the face, because they are not final yet (``lag >= (min_hits - 1) * k``). A scene too short
   to confirm anything (a still image, a 1-frame clip, a very short shot) keeps the tentative
   tracks that were detected in every one of its detection frames.
4. **Between detections** landmarks and boxes are linearly interpolated between the track's
   detections (this also bridges missed detections of a live track). No extrapolation: a track
   is present from its first to its last detection.
5. **Smoothing**: a centred Gaussian over time (``smooth_sigma`` frames, window radius
   ``r = ceil(2.5 sigma)``) on the interpolated landmarks and boxes, so aligned crops do not
   jitter. Near a track's ends the window shrinks symmetrically (a one-sided window would lag
   behind a moving face), so the first and last frames of a track are not smoothed.
6. **Finality**: after processing detection frame T, frames up to ``T - lag`` are final and are
   returned in order. ``lag >= (max_gap + 1) * k + r`` guarantees that neither a later detection
   nor the smoothing window can change a returned frame.

The first ``min_hits`` detections of a track (those that confirmed it) are flagged ``anchor``,
so a pipeline can pin per-track state (e.g. the memory slot) from the track's first confident
frames.
"""

from __future__ import annotations

import bisect
import math
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment

from rmmvideo.video.align import five_points
from rmmvideo.video.detect import Detection, FaceDetector


@dataclass(frozen=True)
class TrackedFace:
    """One tracked face in one frame (smoothed values, frame pixels).

    ``box`` (4,) xyxy, ``landmarks68`` (68, 2), ``points5`` (5, 2) (left eye, right eye, nose tip,
    left / right mouth corner; "left" = image left), ``score`` (detector score, interpolated
    between detections), ``detected`` (the detector found this face in this frame), ``anchor``
    (one of the detections that confirmed the track)."""

    track_id: int
    box: np.ndarray
    landmarks68: np.ndarray
    points5: np.ndarray
    score: float
    detected: bool
    anchor: bool = False


@dataclass
class FrameFaces:
    """Final faces of one frame: ``index`` as pushed, ``faces`` sorted by track id, ``image``
    the object pushed with it (passed through untouched)."""

    index: int
    faces: list[TrackedFace]
    image: Any = None


@dataclass
class _Obs:
    seq: int
    index: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float


@dataclass
class _Track:
    obs: list[_Obs] = field(default_factory=list)
    track_id: int | None = None  # public id once confirmed
    hits: int = 0
    misses: int = 0
    dead: bool = False
    anchors: list[int] = field(default_factory=list)  # seqs of the confirming detections

    @property
    def confirmed(self) -> bool:
        return self.track_id is not None


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (N, 4) and (M, 4) xyxy boxes -> (N, M)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


class SceneCutDetector:
    """Hard scene cuts between consecutive frames, from 64x36 thumbnails.

    Two measures of frame t against frame t-1: ``hist``, half the L1 distance between joint
    RGB histograms (4x4x4 bins; 0 = same colours, 1 = disjoint), and ``diff``, the mean absolute
    difference of the grey thumbnails (0-1). A cut needs both: ``hist`` at least
    ``hist_threshold`` and at least ``ratio`` times the median ``hist`` of the last ``window``
    frames (motion within a shot, even a fast pan, moves pixels but keeps most colours: on a
    24 px/frame pan ``hist`` stays under 0.07 while ``diff`` reaches 0.12), and ``diff`` at least
    ``diff_threshold`` (a colour shift that leaves the picture in place is no cut). Cuts
    between two shots of nearly the same colours, and gradual transitions (fades, dissolves),
    are not detected.
    """

    def __init__(self, hist_threshold: float = 0.1, diff_threshold: float = 0.08, ratio: float = 3.0,
                 window: int = 15) -> None:
        self.hist_threshold = float(hist_threshold)
        self.diff_threshold = float(diff_threshold)
        self.ratio = float(ratio)
        self._recent: deque[float] = deque(maxlen=int(window))  # recent ``hist`` values
        self._prev: tuple[np.ndarray, np.ndarray] | None = None
        self.last: tuple[float, float] = (0.0, 0.0)  # (hist, diff) of the last frame

    @staticmethod
    def features(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(H, W, 3) uint8/uint16 RGB -> (grey thumbnail (36, 64) in [0, 1], histogram (64,))."""
        import cv2

        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise TypeError(f"scene cuts: expected an (H, W, 3) image, got {type(image).__name__} "
                            f"{getattr(image, 'shape', '')}")
        # Every s-th pixel first (s keeps at least 144 rows or columns), then an area resize:
        # a direct area resize of a 720p frame costs ~4 ms, this well under 1 ms.
        s = max(1, min(image.shape[0] // 144, image.shape[1] // 144))
        im = image[::s, ::s]
        im = im if im.dtype == np.uint8 else (im >> 8).astype(np.uint8)
        thumb = cv2.resize(np.ascontiguousarray(im), (64, 36), interpolation=cv2.INTER_AREA)
        q = (thumb >> 6).astype(np.int64)  # 4 levels per channel
        hist = np.bincount((q[..., 0] * 16 + q[..., 1] * 4 + q[..., 2]).ravel(), minlength=64)
        grey = thumb.astype(np.float64).mean(-1) / 255.0
        return grey, hist / hist.sum()

    def is_cut(self, image: np.ndarray) -> bool:
        """Feed the next frame; True when a cut lies between it and the previous frame."""
        grey, hist = self.features(image)
        prev, self._prev = self._prev, (grey, hist)
        if prev is None:
            return False
        h = 0.5 * float(np.abs(hist - prev[1]).sum())
        d = float(np.abs(grey - prev[0]).mean())
        self.last = (h, d)
        base = float(np.median(self._recent)) if self._recent else 0.0
        cut = h >= max(self.hist_threshold, self.ratio * base) and d >= self.diff_threshold
        if cut:
            self._recent.clear()  # the new scene's motion starts afresh
        else:
            self._recent.append(h)
        return cut


class FaceTracker:
    """Batched streaming face tracker (see module docstring).

    Args:
        detector: a :class:`~rmmvideo.video.detect.FaceDetector`.
        detect_every: run the detector on every k-th pushed frame (k >= 1).
        min_hits: consecutive detection-frame hits to confirm a track.
        max_gap: consecutive missed detection frames after which a confirmed track ends.
        lag: frames held back before they are final; None = the minimum that keeps every
            decision final, ``max((min_hits - 1) * k, (max_gap + 1) * k + r)``.
        smooth_sigma: Gaussian smoothing of landmarks over time, in frames (0 = off).
        iou_gate: a track-detection pair with IoU at least this is allowed.
        dist_gate: a pair whose mean landmark distance is at most this many face sizes
            (sqrt of the predicted box area) is allowed.
        dup_iou: an unmatched detection overlapping a face already found in the same frame by
            more than this IoU is a duplicate and starts no track.
        full_every: with a detector that has ``detect_near`` (track-guided search), only every
            ``full_every``-th detection frame of a scene (and its first) scans the whole frame;
            the others search around the predicted boxes of live tracks. 1 = always whole frames.
        scene_cuts: detect scene cuts (:class:`SceneCutDetector`; pushed images must then be
            (H, W, 3) arrays) and end every track at each cut.
        cut_detector: the cut detector to use (default: ``SceneCutDetector()``).

    Example::

        tracker = FaceTracker(DlibDetector(), detect_every=3)
        for index, image in enumerate(frames):
            for ff in tracker.push([(index, image)]):
                use(ff.index, ff.faces)
        for ff in tracker.flush():
            use(ff.index, ff.faces)
    """

    def __init__(self, detector: FaceDetector, detect_every: int = 3, min_hits: int = 2,
                 max_gap: int = 2, lag: int | None = None, smooth_sigma: float = 2.0,
                 iou_gate: float = 0.1, dist_gate: float = 1.0, dup_iou: float = 0.6,
                 full_every: int = 6, scene_cuts: bool = True,
                 cut_detector: SceneCutDetector | None = None) -> None:
        if detect_every < 1 or min_hits < 1 or max_gap < 0 or smooth_sigma < 0 or full_every < 1:
            raise ValueError("tracker: need detect_every >= 1, min_hits >= 1, max_gap >= 0, "
                             "smooth_sigma >= 0, full_every >= 1")
        self.detector = detector
        self.k = int(detect_every)
        self.min_hits = int(min_hits)
        self.max_gap = int(max_gap)
        self.sigma = float(smooth_sigma)
        self.radius = int(math.ceil(2.5 * self.sigma)) if self.sigma > 0 else 0
        self.iou_gate = float(iou_gate)
        self.dist_gate = float(dist_gate)
        self.dup_iou = float(dup_iou)
        self.full_every = int(full_every)
        self.scene_cuts = (cut_detector or SceneCutDetector()) if scene_cuts else None
        need = max((self.min_hits - 1) * self.k, (self.max_gap + 1) * self.k + self.radius)
        if lag is None:
            lag = need
        if lag < need:
            raise ValueError(
                f"tracker: lag {lag} is too short for detect_every={self.k}, min_hits={self.min_hits}, "
                f"max_gap={self.max_gap}, smooth_sigma={self.sigma}: need at least {need}"
            )
        self.lag = int(lag)
        self._seq = 0
        self._pending: deque[tuple[int, int, Any]] = deque()  # (seq, index, image)
        self._last_det_seq = -1
        self._next_det_seq = 0  # the next frame to detect (every k-th frame of each scene)
        self._scene_det_frames = 0  # detection frames processed in the current scene
        self.cuts: list[int] = []  # frame indices that start a new scene
        self._tracks: list[_Track] = []
        self._next_id = 0
        self.detect_seconds = 0.0
        self.track_seconds = 0.0
        self.frames_detected = 0
        self.frames_full = 0  # detection frames scanned whole (the rest: near live tracks)

    # ---------------------------------------------------------------------------- public API

    def push(self, frames: Sequence[tuple[int, Any]]) -> list[FrameFaces]:
        """Add frames ``(index, image)`` in stream order (images (H, W, 3) uint8 RGB for the
        detector). Returns the frames that became final, in order (possibly none)."""
        out: list[FrameFaces] = []
        to_detect: list[tuple[int, int, Any]] = []
        for index, image in frames:
            seq = self._seq
            self._seq += 1
            if self.scene_cuts is not None and self.scene_cuts.is_cut(image):
                self._run_detection(to_detect)
                to_detect = []
                out += self._end_scene()
                self.cuts.append(int(index))
                self._next_det_seq = seq
            self._pending.append((seq, int(index), image))
            if seq >= self._next_det_seq:
                to_detect.append((seq, int(index), image))
                self._next_det_seq = seq + self.k
        self._run_detection(to_detect)
        return out + self._finalise(self._last_det_seq - self.lag)

    def flush(self) -> list[FrameFaces]:
        """End of stream: detect the last frame if it was not a detection frame, then return
        every remaining frame (see :meth:`_end_scene` for tentative tracks)."""
        return self._end_scene()

    def _end_scene(self) -> list[FrameFaces]:
        """End the current scene (a cut or the end of the stream): detect its last frame if it
        was not a detection frame, end every track, and return every pending frame.

        A tentative track is confirmed here only when it was detected in every detection frame
        of the scene, i.e. the scene was too short to confirm anything (a still image, a 1-frame
        clip, a shot of less than ``(min_hits - 1) * k + 1`` frames); otherwise it is dropped."""
        if self._pending and self._pending[-1][0] > self._last_det_seq:
            self._run_detection([self._pending[-1]])
        for tr in self._tracks:
            if not tr.confirmed and not tr.dead and tr.hits == self._scene_det_frames:
                self._confirm(tr)
            tr.dead = True
        out = self._finalise(self._seq)
        self._tracks = []
        self._scene_det_frames = 0
        return out

    @property
    def held_frames(self) -> int:
        """Frames pushed but not yet returned (bounded by ``lag + detect_every``)."""
        return len(self._pending)

    # ---------------------------------------------------------------------------- internals

    def _run_detection(self, items: list[tuple[int, int, Any]]) -> None:
        """Detect and associate ``items`` in order. Without track-guided search (a detector
        with no ``detect_near``, or ``full_every == 1``) all frames go in one detector call;
        with it, each frame is either scanned whole (the scene's first detection frame and every
        ``full_every``-th) or searched near the live tracks' predicted boxes (no call at all
        when there is no live track)."""
        if not items:
            return
        near = getattr(self.detector, "detect_near", None)
        if near is None or self.full_every == 1:
            t0 = time.perf_counter()
            results = self.detector.detect([im for _, _, im in items])
            if len(results) != len(items):
                raise RuntimeError(f"detector returned {len(results)} results for {len(items)} images")
            self.detect_seconds += time.perf_counter() - t0
            self.frames_full += len(items)
            for (seq, index, _), dets in zip(items, results):
                self._detected(seq, index, dets)
            return
        for seq, index, image in items:
            t0 = time.perf_counter()
            if self._scene_det_frames % self.full_every == 0:
                dets = self.detector.detect([image])[0]
                self.frames_full += 1
            else:
                regions = [self._predict(t, seq)[0] for t in self._tracks if not t.dead]
                dets = near([image], [np.stack(regions)])[0] if regions else []
            self.detect_seconds += time.perf_counter() - t0
            self._detected(seq, index, dets)

    def _detected(self, seq: int, index: int, dets: list[Detection]) -> None:
        t0 = time.perf_counter()
        self._associate(seq, index, dets)
        self._last_det_seq = seq
        self._scene_det_frames += 1
        self.frames_detected += 1
        self.track_seconds += time.perf_counter() - t0

    def _predict(self, tr: _Track, seq: int) -> tuple[np.ndarray, np.ndarray]:
        last = tr.obs[-1]
        if len(tr.obs) < 2:
            return last.box, last.landmarks
        prev = tr.obs[-2]
        dt = min(seq - last.seq, (self.max_gap + 1) * self.k)
        f = dt / float(last.seq - prev.seq)
        return (last.box + f * (last.box - prev.box), last.landmarks + f * (last.landmarks - prev.landmarks))

    def _associate(self, seq: int, index: int, dets: list[Detection]) -> None:
        live = [t for t in self._tracks if not t.dead]
        matched_t: set[int] = set()
        matched_d: set[int] = set()
        if live and dets:
            preds = [self._predict(t, seq) for t in live]
            pboxes = np.stack([p[0] for p in preds])
            plms = np.stack([p[1] for p in preds])  # (T, 68, 2)
            dboxes = np.stack([d.box for d in dets])
            dlms = np.stack([d.landmarks for d in dets])  # (D, 68, 2)
            iou = box_iou(pboxes, dboxes)
            size = np.sqrt(np.clip((pboxes[:, 2] - pboxes[:, 0]) * (pboxes[:, 3] - pboxes[:, 1]), 1.0, None))
            dist = np.linalg.norm(plms[:, None] - dlms[None], axis=-1).mean(-1) / size[:, None]
            cost = (1.0 - iou) + dist
            ok = (dist <= self.dist_gate) | (iou >= self.iou_gate)
            big = 1e6
            rows, cols = linear_sum_assignment(np.where(ok, cost, big))
            for r, c in zip(rows, cols):
                if ok[r, c]:
                    matched_t.add(r)
                    matched_d.add(c)
                    self._hit(live[r], seq, index, dets[c])
        for i, tr in enumerate(live):
            if i not in matched_t:
                tr.misses += 1
                if not tr.confirmed or tr.misses > self.max_gap:
                    tr.dead = True
        # Tentative tracks that died never produce output: drop them now.
        self._tracks = [t for t in self._tracks if t.confirmed or not t.dead]
        # Unmatched detections start tentative tracks, unless they duplicate a face already
        # tracked (a second box on the same face, from the detector or its NMS).
        taken = [t.obs[-1].box for t in self._tracks if not t.dead and t.obs[-1].seq == seq]
        for j, d in enumerate(dets):
            if j not in matched_d:
                if taken and float(box_iou(d.box, np.stack(taken)).max()) > self.dup_iou:
                    continue
                taken.append(np.asarray(d.box, np.float64))
                tr = _Track()
                self._hit(tr, seq, index, d)
                self._tracks.append(tr)

    def _hit(self, tr: _Track, seq: int, index: int, d: Detection) -> None:
        tr.obs.append(_Obs(seq, index, np.asarray(d.box, np.float64), np.asarray(d.landmarks, np.float64), float(d.score)))
        tr.hits += 1
        tr.misses = 0
        if not tr.confirmed and tr.hits >= self.min_hits:
            self._confirm(tr)

    def _confirm(self, tr: _Track) -> None:
        """Give a tentative track its public id; its last ``min_hits`` detections are anchors."""
        tr.track_id = self._next_id
        self._next_id += 1
        tr.anchors = [o.seq for o in tr.obs[-self.min_hits:]]

    def _raw_at(self, tr: _Track, seq: int) -> tuple[np.ndarray, np.ndarray, float]:
        """Box, landmarks, score of a track at ``seq`` by linear interpolation of detections."""
        seqs = [o.seq for o in tr.obs]
        j = bisect.bisect_left(seqs, seq)
        if j < len(seqs) and seqs[j] == seq:
            o = tr.obs[j]
            return o.box, o.landmarks, o.score
        a, b = tr.obs[j - 1], tr.obs[j]
        w = (seq - a.seq) / float(b.seq - a.seq)
        return ((1 - w) * a.box + w * b.box, (1 - w) * a.landmarks + w * b.landmarks,
                (1 - w) * a.score + w * b.score)

    def _face_at(self, tr: _Track, seq: int) -> TrackedFace | None:
        first, last = tr.obs[0].seq, tr.obs[-1].seq
        if not (first <= seq <= last):
            return None
        # A symmetric window (shrunk near the track's ends) keeps linear motion unbiased.
        rad = min(self.radius, seq - first, last - seq)
        lo, hi = seq - rad, seq + rad
        boxes, lms, wsum = 0.0, 0.0, 0.0
        for g in range(lo, hi + 1):
            w = math.exp(-0.5 * ((g - seq) / self.sigma) ** 2) if self.sigma > 0 else float(g == seq)
            b, lm, _ = self._raw_at(tr, g)
            boxes = boxes + w * b
            lms = lms + w * lm
            wsum += w
        _, _, score = self._raw_at(tr, seq)
        lm68 = np.asarray(lms / wsum, dtype=np.float64)
        detected = any(o.seq == seq for o in tr.obs)
        assert tr.track_id is not None
        return TrackedFace(track_id=tr.track_id, box=np.asarray(boxes / wsum, dtype=np.float64),
                           landmarks68=lm68, points5=five_points(lm68), score=float(score),
                           detected=detected, anchor=seq in tr.anchors)

    def _finalise(self, upto: int) -> list[FrameFaces]:
        """Emit pending frames with seq <= upto; prune old observations and ended tracks."""
        t0 = time.perf_counter()
        out = []
        while self._pending and self._pending[0][0] <= upto:
            seq, index, image = self._pending.popleft()
            faces = []
            for tr in self._tracks:
                if tr.confirmed:
                    f = self._face_at(tr, seq)
                    if f is not None:
                        faces.append(f)
            faces.sort(key=lambda f: f.track_id)
            out.append(FrameFaces(index=index, faces=faces, image=image))
        if out:
            done = self._pending[0][0] - 1 if self._pending else self._seq - 1
            keep_from = done + 1 - self.radius
            kept = []
            for tr in self._tracks:
                if tr.dead and tr.obs[-1].seq <= done:
                    continue  # every frame of this track has been returned
                seqs = [o.seq for o in tr.obs]
                i = bisect.bisect_left(seqs, keep_from)
                i = max(0, min(i - 1, len(seqs) - 2))
                tr.obs = tr.obs[i:]
                kept.append(tr)
            self._tracks = kept
        self.track_seconds += time.perf_counter() - t0
        return out
