"""GFPGAN #533 / facexlib #48: one frame whose detected landmarks are rotated must not break the
face's alignment for that frame (the tracker's temporal smoothing spreads and attenuates it)."""

from __future__ import annotations

import numpy as np
from conftest_faces import FaceState, box_of, render

from rmmvideo.video.detect import Detection
from rmmvideo.video.track import FaceTracker


def _rotate(lm: np.ndarray, deg: float) -> np.ndarray:
    c = lm.mean(0)
    a = np.deg2rad(deg)
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (lm - c) @ r.T + c


def _eye_angle(lm: np.ndarray) -> float:
    left, right = lm[36:42].mean(0), lm[42:48].mean(0)
    return float(np.degrees(np.arctan2(right[1] - left[1], right[0] - left[0])))


class _Scripted:
    name = "scripted"

    def __init__(self, script: dict[int, np.ndarray]) -> None:
        self.script = script

    def detect(self, images):
        return [[Detection(box=box_of(self.script[int(im[0, 0, 0])]), score=1.0,
                           landmarks=self.script[int(im[0, 0, 0])])] for im in images]


def test_one_odd_detection_is_attenuated_and_spread_smoothly() -> None:
    n, odd, tilt = 30, 14, 15.0
    _, gts = render([FaceState(x=200, y=60, scale=1.0, mirrored=False)])
    script = {t: gts[0] + [2.0 * t, 0.0] for t in range(n)}  # a face moving right, upright
    script[odd] = _rotate(script[odd], tilt)  # one detection tilted by 15 degrees
    tracker = FaceTracker(_Scripted(script), detect_every=2, scene_cuts=False)
    frames = [(i, np.full((4, 4, 3), i, np.uint8)) for i in range(n)]
    out = []
    for i in range(0, n, 8):
        out += tracker.push(frames[i:i + 8])
    out += tracker.flush()
    angles = {f.index: _eye_angle(f.faces[0].landmarks68) - _eye_angle(gts[0]) for f in out if f.faces}
    assert len(angles) == n
    assert abs(angles[odd]) < 0.4 * tilt  # the odd frame keeps less than 40 % of its tilt
    steps = [abs(angles[t + 1] - angles[t]) for t in range(n - 1)]
    assert max(steps) < 0.12 * tilt  # no jump from one frame to the next: the tilt is spread
    assert abs(angles[0]) < 0.01 and abs(angles[n - 1]) < 0.01  # far from it: untouched
