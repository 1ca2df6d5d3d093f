"""Streaming face tracker (rmmvideo.video.track).

Most cases drive the real tracker with a scripted detector that reports ground-truth landmarks
(plus noise) of synthetic clips, so births, misses, occlusions and crossings happen exactly
where the test wants them; one case runs dlib's real detector on rendered astronaut frames.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest_faces import FaceState, box_of, render

from rmmvideo.errors import UserError
from rmmvideo.video.detect import Detection, DlibDetector
from rmmvideo.video.track import FaceTracker, FrameFaces


class ScriptedDetector:
    """Reports the faces listed for each frame; the pushed "image" is the frame number."""

    name = "scripted"

    def __init__(self, script: dict[int, list[np.ndarray]], noise: float = 0.0, seed: int = 0):
        self.script = script
        self.noise = noise
        self.rng = np.random.default_rng(seed)
        self.calls: list[int] = []

    def detect(self, images):
        out = []
        for im in images:
            idx = int(im)
            self.calls.append(idx)
            dets = []
            for lm in self.script.get(idx, []):
                noisy = lm + self.rng.normal(0, self.noise, lm.shape) if self.noise else lm
                dets.append(Detection(box=box_of(noisy), score=1.0, landmarks=noisy))
            out.append(dets)
        return out


def _run(tracker: FaceTracker, n: int, chunk: int = 1) -> list[FrameFaces]:
    out: list[FrameFaces] = []
    held = 0
    for s in range(0, n, chunk):
        frames = [(i, i) for i in range(s, min(n, s + chunk))]  # the "image" is the frame number
        out += tracker.push(frames)
        held = max(held, tracker.held_frames)
    out += tracker.flush()
    assert held <= tracker.lag + tracker.k + chunk
    return out


def _crossing_script(n: int = 30):
    """Face A moves right across the frame; face B (mirrored) enters at frame 6 from the right,
    moves left, passes behind A around frame 15 and leaves after frame 24."""
    gt_a, gt_b = {}, {}
    for t in range(n):
        a = FaceState(x=20 + 14 * t, y=60, scale=0.8 + 0.01 * t, mirrored=False)
        b = FaceState(x=600 - 16 * (t - 6), y=90, scale=0.8, mirrored=True) if 6 <= t <= 24 else None
        _, (la, lb) = render([a, b])
        gt_a[t] = la
        if lb is not None:
            gt_b[t] = lb
    return gt_a, gt_b


def _id_of(faces, gt: np.ndarray, tol: float = 8.0) -> int | None:
    best = [(np.linalg.norm(f.landmarks68 - gt, axis=1).mean(), f.track_id) for f in faces]
    best = [b for b in best if b[0] < tol]
    return min(best)[1] if best else None


def test_two_faces_enter_cross_leave_with_stable_ids():
    gt_a, gt_b = _crossing_script()
    script: dict[int, list[np.ndarray]] = {}
    occluded = []
    for t in range(30):
        faces = [gt_a[t]]
        if t in gt_b:
            # B passes behind A: hidden when the boxes overlap a lot.
            ba, bb = box_of(gt_a[t]), box_of(gt_b[t])
            ix = max(0, min(ba[2], bb[2]) - max(ba[0], bb[0]))
            if ix < 0.5 * (bb[2] - bb[0]):
                faces.append(gt_b[t])
            else:
                occluded.append(t)
        script[t] = faces
    script[21] = [f for f in script[21] if f is not gt_a[21]]  # A missed once
    assert occluded, "the script must contain an occlusion"
    det = ScriptedDetector(script, noise=1.0)
    tracker = FaceTracker(det, detect_every=3, min_hits=2, max_gap=2)
    out = _run(tracker, 30)

    assert [f.index for f in out] == list(range(30))
    assert det.calls == list(range(0, 30, 3)) + [29]
    ids = {f.track_id for ff in out for f in ff.faces}
    assert len(ids) == 2
    id_a = _id_of(out[0].faces, gt_a[0])
    first_b = min(t for t in gt_b if t % 3 == 0)  # first detection frame that sees B
    last_b = max(t for t in gt_b if t % 3 == 0 and t not in occluded)
    id_b = _id_of(out[first_b].faces, gt_b[first_b])
    assert id_a is not None and id_b is not None and id_a != id_b
    for t, ff in enumerate(out):
        a_faces = [f for f in ff.faces if f.track_id == id_a]
        assert len(a_faces) == 1, f"frame {t}: face A must be present (also at its missed detection)"
        assert np.linalg.norm(a_faces[0].landmarks68 - gt_a[t], axis=1).mean() < 4.0
        b_faces = [f for f in ff.faces if f.track_id == id_b]
        if first_b <= t <= last_b:
            # Present from its first detection (before its confirmation) and through the
            # occlusion, where it is interpolated; never swapped with A.
            assert len(b_faces) == 1, f"frame {t}: face B missing"
            assert np.linalg.norm(b_faces[0].landmarks68 - gt_b[t], axis=1).mean() < 6.0
        else:
            assert not b_faces, f"frame {t}: face B outside its detections"
    assert [f.detected for f in out[21].faces if f.track_id == id_a] == [False]
    assert tracker.anchor_frames(id_b) == [first_b, first_b + 3]
    assert [f.anchor for f in out[first_b].faces if f.track_id == id_b] == [True]


def test_chunked_pushes_give_the_same_result():
    gt_a, gt_b = _crossing_script()
    script = {t: [gt_a[t]] + ([gt_b[t]] if t in gt_b else []) for t in range(30)}
    runs = []
    for chunk in (1, 4, 30):
        tracker = FaceTracker(ScriptedDetector(script, noise=1.5, seed=3), detect_every=3)
        runs.append(_run(tracker, 30, chunk))
    for a, b in zip(runs[0], runs[1]):
        assert a.index == b.index and len(a.faces) == len(b.faces)
        for fa, fb in zip(a.faces, b.faces):
            assert fa.track_id == fb.track_id
            np.testing.assert_allclose(fa.landmarks68, fb.landmarks68)
    assert [len(f.faces) for f in runs[0]] == [len(f.faces) for f in runs[2]]


def test_false_positive_never_reaches_output():
    lm = render([FaceState(100, 60, 0.8, False)])[1][0]
    spurious = render([FaceState(450, 100, 0.5, True)])[1][0]
    script = {t: [lm] for t in range(12)}
    script[3] = [lm, spurious]
    out = _run(FaceTracker(ScriptedDetector(script), detect_every=1, min_hits=2, max_gap=1), 12)
    assert all(len(ff.faces) == 1 for ff in out)
    assert {ff.faces[0].track_id for ff in out} == {0}


def test_duplicate_boxes_on_one_face_make_one_track():
    lm = render([FaceState(100, 60, 0.8, False)])[1][0]
    other = render([FaceState(400, 60, 0.8, True)])[1][0]
    script = {t: [lm, lm + 3.0, other] for t in range(10)}  # the detector reports face 1 twice
    out = _run(FaceTracker(ScriptedDetector(script), detect_every=1, min_hits=2, max_gap=1), 10)
    assert all(len(ff.faces) == 2 for ff in out)
    assert {f.track_id for ff in out for f in ff.faces} == {0, 1}


def test_gap_bridged_within_max_gap_new_id_after():
    lm = render([FaceState(100, 60, 0.8, False)])[1][0]
    far = render([FaceState(420, 60, 0.8, False)])[1][0]
    script = {t: [lm] for t in range(40)}
    for t in (6, 7):  # two missed detections: bridged (max_gap = 2)
        script[t] = []
    for t in range(15, 23):  # gone for 8 frames, then a face elsewhere: a new track
        script[t] = []
    for t in range(23, 40):
        script[t] = [far]
    out = _run(FaceTracker(ScriptedDetector(script), detect_every=1, min_hits=2, max_gap=2,
                           smooth_sigma=1.0), 40)
    assert [len(ff.faces) for ff in out[:15]] == [1] * 15
    assert not out[6].faces[0].detected and out[8].faces[0].detected
    assert all(len(ff.faces) == 0 for ff in out[15:23])
    assert {ff.faces[0].track_id for ff in out[:15]} == {0}
    assert {ff.faces[0].track_id for ff in out[23:]} == {1}


def test_smoothing_reduces_landmark_jitter():
    n = 40
    gts = [render([FaceState(60 + 5 * t, 60, 0.8, False)])[1][0] for t in range(n)]
    det = ScriptedDetector({t: [gts[t]] for t in range(n)}, noise=2.0, seed=1)
    raw = [det.detect([t])[0][0].landmarks for t in range(n)]
    det.rng = np.random.default_rng(1)  # same noise again for the tracker
    out = _run(FaceTracker(det, detect_every=1, min_hits=1, max_gap=1, smooth_sigma=2.0), n)
    smooth = [ff.faces[0].landmarks68 for ff in out]

    def jitter(seq):  # std over time of the frame-to-frame motion (true motion is constant)
        return float(np.std(np.diff(np.stack(seq), axis=0), axis=0).mean())

    def err(seq):
        return float(np.mean([np.linalg.norm(s - g, axis=1).mean() for s, g in zip(seq, gts)]))

    assert jitter(smooth) < 0.5 * jitter(raw)
    assert err(smooth) < err(raw)


def test_lag_is_checked():
    with pytest.raises(UserError, match="lag"):
        FaceTracker(ScriptedDetector({}), detect_every=3, max_gap=2, lag=3)
    t = FaceTracker(ScriptedDetector({}), detect_every=3, min_hits=2, max_gap=2, smooth_sigma=2.0)
    assert t.lag == 3 * 3 + 5


def test_dlib_tracks_rendered_astronaut_faces():
    """The real dlib detector on rendered frames: two faces (one mirrored), moving and scaling,
    with detection every 3 frames, keep one id each."""
    n = 18
    frames, gts = [], []
    for t in range(n):
        a = FaceState(x=20 + 6 * t, y=40, scale=0.9 + 0.01 * t, mirrored=False)
        b = FaceState(x=480 - 5 * t, y=80, scale=1.0 - 0.01 * t, mirrored=True)
        img, gt = render([a, b])
        frames.append(img)
        gts.append(gt)
    det = DlibDetector(max_side=None)
    assert [len(d) for d in det.detect(frames[:1])] == [2], "dlib must see both faces first"
    tracker = FaceTracker(det, detect_every=3, min_hits=2, max_gap=1)
    out = []
    for i, im in enumerate(frames):
        out += tracker.push([(i, im)])
    out += tracker.flush()
    assert [ff.index for ff in out] == list(range(n))
    assert all(len(ff.faces) == 2 for ff in out)
    ids_a = {_id_of(ff.faces, gt[0], tol=10.0) for ff, gt in zip(out, gts)}
    ids_b = {_id_of(ff.faces, gt[1], tol=10.0) for ff, gt in zip(out, gts)}
    assert len(ids_a) == 1 and len(ids_b) == 1 and ids_a != ids_b and None not in ids_a | ids_b
    assert out[0].image is frames[0]
