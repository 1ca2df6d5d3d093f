"""Streaming face tracker (rmmvideo.video.track).

Most cases drive the real tracker with a scripted detector that reports ground-truth landmarks
(plus noise) of synthetic clips, so births, misses, occlusions and crossings happen exactly
where the test wants them; one case runs dlib's real detector on rendered astronaut frames.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest_faces import FaceState, box_of, render

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
    tracker = FaceTracker(det, scene_cuts=False, detect_every=3, min_hits=2, max_gap=2)
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
    for t in (first_b, first_b + 3):  # the two detections that confirmed B
        assert [f.anchor for f in out[t].faces if f.track_id == id_b] == [True]


def test_chunked_pushes_give_the_same_result():
    gt_a, gt_b = _crossing_script()
    script = {t: [gt_a[t]] + ([gt_b[t]] if t in gt_b else []) for t in range(30)}
    runs = []
    for chunk in (1, 4, 30):
        tracker = FaceTracker(ScriptedDetector(script, noise=1.5, seed=3), scene_cuts=False, detect_every=3)
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
    out = _run(FaceTracker(ScriptedDetector(script), scene_cuts=False, detect_every=1, min_hits=2, max_gap=1), 12)
    assert all(len(ff.faces) == 1 for ff in out)
    assert {ff.faces[0].track_id for ff in out} == {0}


def test_duplicate_boxes_on_one_face_make_one_track():
    lm = render([FaceState(100, 60, 0.8, False)])[1][0]
    other = render([FaceState(400, 60, 0.8, True)])[1][0]
    script = {t: [lm, lm + 3.0, other] for t in range(10)}  # the detector reports face 1 twice
    out = _run(FaceTracker(ScriptedDetector(script), scene_cuts=False, detect_every=1, min_hits=2, max_gap=1), 10)
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
    out = _run(FaceTracker(ScriptedDetector(script), scene_cuts=False, detect_every=1, min_hits=2, max_gap=2,
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
    out = _run(FaceTracker(det, scene_cuts=False, detect_every=1, min_hits=1, max_gap=1, smooth_sigma=2.0), n)
    smooth = [ff.faces[0].landmarks68 for ff in out]

    def jitter(seq):  # std over time of the frame-to-frame motion (true motion is constant)
        return float(np.std(np.diff(np.stack(seq), axis=0), axis=0).mean())

    def err(seq):
        return float(np.mean([np.linalg.norm(s - g, axis=1).mean() for s, g in zip(seq, gts)]))

    assert jitter(smooth) < 0.5 * jitter(raw)
    assert err(smooth) < err(raw)


def test_lag_is_checked():
    with pytest.raises(ValueError, match="lag"):
        FaceTracker(ScriptedDetector({}), scene_cuts=False, detect_every=3, max_gap=2, lag=3)
    t = FaceTracker(ScriptedDetector({}), scene_cuts=False, detect_every=3, min_hits=2, max_gap=2, smooth_sigma=2.0)
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


# ------------------------------------------------------------------------- short streams


def test_one_frame_stream_gives_its_face():
    """A stream shorter than the confirmation lag (a still, a 1-frame clip) still gets faces:
    a tentative track detected in every detection frame the stream had is confirmed at flush."""
    lm = render([FaceState(100, 60, 0.8, False)])[1][0]
    tracker = FaceTracker(ScriptedDetector({0: [lm]}), scene_cuts=False, detect_every=2, min_hits=2)
    out = _run(tracker, 1)
    assert [ff.index for ff in out] == [0]
    assert [(f.track_id, f.detected, f.anchor) for f in out[0].faces] == [(0, True, True)]
    np.testing.assert_allclose(out[0].faces[0].landmarks68, lm)


def test_two_frame_stream_and_late_false_positive():
    lm = render([FaceState(100, 60, 0.8, False)])[1][0]
    spurious = render([FaceState(450, 100, 0.5, True)])[1][0]
    # 2 frames, k = 3: frame 0 by cadence, frame 1 at flush -> confirmed the ordinary way.
    out = _run(FaceTracker(ScriptedDetector({0: [lm], 1: [lm]}), scene_cuts=False, detect_every=3), 2)
    assert [len(ff.faces) for ff in out] == [1, 1]
    # In a long stream, a face seen only in the last detection frame stays unconfirmed.
    script = {t: [lm] for t in range(12)}
    script[11] = [lm, spurious]
    out = _run(FaceTracker(ScriptedDetector(script), scene_cuts=False, detect_every=1, max_gap=1), 12)
    assert all(len(ff.faces) == 1 for ff in out) and {ff.faces[0].track_id for ff in out} == {0}


# ------------------------------------------------------------------------- scene cuts


def _two_scenes(n_a: int, n_b: int) -> list[np.ndarray]:
    """Scene A: the astronaut's face moving right on grey; scene B: the mirrored face near the
    same place on a dark blue background (a cut to another shot of a similar framing)."""
    frames = []
    for t in range(n_a):
        frames.append(render([FaceState(100 + 4 * t, 60, 0.8, False)])[0])
    for t in range(n_b):
        img = render([FaceState(130 + 3 * t, 70, 0.8, True)])[0]
        bg = np.all(img == 118, axis=-1)
        img[bg] = (20, 40, 90)
        frames.append(img)
    return frames


def test_scene_cut_ends_every_track():
    frames = _two_scenes(10, 10)
    tracker = FaceTracker(DlibDetector(max_side=None), detect_every=4, min_hits=2, max_gap=1)
    out = []
    for i in range(0, 20, 3):  # chunks that do not line up with the cut
        out += tracker.push([(j, frames[j]) for j in range(i, min(20, i + 3))])
    out += tracker.flush()
    assert tracker.cuts == [10]
    assert [ff.index for ff in out] == list(range(20))
    assert all(len(ff.faces) == 1 for ff in out), [len(ff.faces) for ff in out]
    ids_a = {f.track_id for ff in out[:10] for f in ff.faces}
    ids_b = {f.track_id for ff in out[10:] for f in ff.faces}
    assert len(ids_a) == 1 and len(ids_b) == 1 and not ids_a & ids_b
    # The last frame of scene A (not on the k = 4 cadence) was detected, not extrapolated, and
    # scene B's first frame was detected at once (the cadence restarts at the cut).
    assert out[9].faces[0].detected and out[10].faces[0].detected
    # No smoothing across the cut: the frames on both sides are their own raw detections (a
    # track's window shrinks to nothing at its ends), not blends of the two shots.
    raw = DlibDetector(max_side=None).detect([frames[9], frames[10]])
    for ff, dets in zip(out[9:11], raw):
        np.testing.assert_allclose(ff.faces[0].landmarks68, dets[0].landmarks)


def test_one_frame_scene_between_cuts_is_kept():
    frames = _two_scenes(6, 1) + _two_scenes(6, 0)
    tracker = FaceTracker(DlibDetector(max_side=None), detect_every=2, min_hits=2, max_gap=1)
    out = tracker.push(list(enumerate(frames))) + tracker.flush()
    assert tracker.cuts == [6, 7]
    assert [len(ff.faces) for ff in out] == [1] * 13
    assert len({f.track_id for ff in out for f in ff.faces}) == 3


def test_scene_cut_detector_on_motion_and_cuts():
    from skimage import data as skdata

    from rmmvideo.video.track import SceneCutDetector

    coffee = skdata.coffee()  # (400, 600, 3)
    rocket = skdata.rocket()  # (427, 640, 3)
    det = SceneCutDetector()
    # A fast pan (24 px per frame) over one picture: every frame differs, none is a cut.
    pan = [np.ascontiguousarray(coffee[:, x:x + 300]) for x in range(0, 300, 24)]
    assert [det.is_cut(f) for f in pan] == [False] * len(pan)
    # Then a cut to another picture, and a static shot of it.
    rk = np.ascontiguousarray(rocket[:400, :300])
    assert det.is_cut(rk) is True
    assert [det.is_cut(rk) for _ in range(3)] == [False] * 3
    with pytest.raises(TypeError, match="image"):
        det.is_cut(3)  # type: ignore[arg-type]
