"""Multi-frame fusion of face regions (rmmvideo.video.fuse) on synthetic frames with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from rmmvideo.video.fuse import TemporalFusion, face_region, feather_window, fuse_plans
from rmmvideo.video.io_decode import DecodedFrame
from rmmvideo.video.render import FacePlan, FramePlan

H, W = 96, 112


def _scene(shift: float = 0.0) -> np.ndarray:
    """A smooth textured float image (H, W, 3) in [0, 1], shifted right by ``shift`` px."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float64)
    x = x - shift
    base = 0.5 + 0.2 * np.sin(x / 5.0) * np.cos(y / 7.0) + 0.1 * np.sin((x + y) / 3.0)
    return np.clip(np.stack([base, 0.9 * base, 0.8 * base + 0.1], -1), 0, 1)


def _face(track: int = 1) -> FacePlan:
    """A face whose 68 landmarks span (30..80, 25..70): its region covers most of the frame."""
    lm = np.stack(np.meshgrid(np.linspace(30, 80, 17), np.linspace(25, 70, 4)), -1).reshape(-1, 2)[:68]
    return FacePlan(track, lm[:5].copy(), lm, True)


def _frames(n: int, noise: float, seed: int = 0, step: float = 0.0) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    truth = [_scene(step * t) for t in range(n)]
    noisy = [np.clip(np.rint((f + rng.normal(0, noise, f.shape)) * 255), 0, 255).astype(np.uint8) for f in truth]
    return truth, noisy


def _err(img: np.ndarray, truth: np.ndarray, region: tuple[int, int, int, int]) -> float:
    x0, y0, x1, y1 = region
    m = 8  # away from the feathered edge
    return float(np.mean((img[y0 + m:y1 - m, x0 + m:x1 - m] / 255.0 - truth[y0 + m:y1 - m, x0 + m:x1 - m]) ** 2))


@pytest.mark.parametrize("step", [0.0, 1.5])
def test_fusion_averages_out_noise_of_a_still_or_moving_face(step: float) -> None:
    truth, noisy = _frames(5, noise=0.02, step=step)
    faces = [[_face()] for _ in noisy]
    region = face_region(faces[2][0], H, W)
    assert region is not None
    before = [f.copy() for f in noisy]
    fused = TemporalFusion(2).fuse(noisy, faces, 2)
    assert _err(fused, truth[2], region) < 0.45 * _err(noisy[2], truth[2], region)  # 5 frames: ~1/5
    assert all(np.array_equal(a, b) for a, b in zip(before, noisy))  # inputs untouched
    x0, y0, x1, y1 = region
    outside = np.ones((H, W), bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(fused[outside], noisy[2][outside])  # only the face region changes
    assert fused.dtype == np.uint8


def test_what_changes_in_one_frame_keeps_that_frame() -> None:
    """A patch that appears in the centre frame only (a mouth opening, a blink) is not averaged away."""
    truth, noisy = _frames(5, noise=0.01)
    patch = (slice(40, 52), slice(50, 62))
    noisy[2][patch] = 30
    fused = TemporalFusion(2).fuse(noisy, [[_face()] for _ in noisy], 2)
    assert np.abs(fused[patch].astype(int) - 30).mean() < 4


def test_nothing_is_fused_across_tracks_radius_zero_or_frames_without_faces() -> None:
    _, noisy = _frames(5, noise=0.02)
    other = [[_face(track=1)] if t == 2 else [_face(track=2)] for t in range(5)]  # a cut: new tracks
    assert np.array_equal(TemporalFusion(2).fuse(noisy, other, 2), noisy[2])
    same = [[_face()] for _ in noisy]
    assert TemporalFusion(0).fuse(noisy, same, 2) is noisy[2]
    assert TemporalFusion(2).fuse(noisy, [[] for _ in noisy], 2) is noisy[2]
    with pytest.raises(ValueError):
        TemporalFusion(-1)


def test_deep_frames_keep_their_dtype() -> None:
    truth, noisy = _frames(3, noise=0.02)
    deep = [f.astype(np.uint16) * 257 for f in noisy]
    out = TemporalFusion(1).fuse(deep, [[_face()] for _ in deep], 1)
    assert out.dtype == np.uint16
    region = face_region(_face(), H, W)
    assert _err(out / 257.0, truth[1], region) < 0.8 * _err(noisy[1], truth[1], region)


def test_region_and_window() -> None:
    assert face_region(_face(), H, W) == (15, 10, 96, 86)  # the box (30..80, 25..70) grown by 0.3 x 50 px
    tiny = FacePlan(1, np.zeros((5, 2)), np.full((68, 2), 10.0), True)
    assert face_region(tiny, H, W) is None
    win = feather_window(40, 20)
    assert win.shape == (40, 20, 1) and win[20, 10, 0] == 1.0 and 0 < win[0, 0, 0] < 0.1


def test_fuse_plans_streams_every_plan_in_order_with_its_neighbours() -> None:
    truth, noisy = _frames(7, noise=0.02)
    plans = [FramePlan(DecodedFrame(t, 100 * t, t / 25, f), [_face()]) for t, f in enumerate(noisy)]
    out = list(fuse_plans(iter(plans), TemporalFusion(2)))
    assert [p.frame.pts for p in out] == [p.frame.pts for p in plans]
    fusion = TemporalFusion(2)
    images, faces = [p.frame.image for p in plans], [p.faces for p in plans]
    for t, p in enumerate(out):
        lo, hi = max(0, t - 2), min(7, t + 3)
        assert np.array_equal(p.frame.image, fusion.fuse(images[lo:hi], faces[lo:hi], t - lo))
        assert p.faces is plans[t].faces and p.frame.index == t
    assert all(p.frame.image is noisy[t] for t, p in enumerate(plans))  # the inputs' plans unchanged
    assert list(fuse_plans(iter(plans), TemporalFusion(0))) == plans


def test_auto_fuses_each_face_by_how_coarsely_it_was_coded() -> None:
    """``--fuse auto``: radius ``DEFAULT_RADIUS``, each face's neighbours weighed by
    ``coarseness(face.qp)``: a face coded finely (or without a quantiser) keeps its pixels, a
    coarse one is fused as by ``--fuse DEFAULT_RADIUS``, one between is fused part way."""
    from dataclasses import replace

    from rmmvideo.video.fuse import DEFAULT_RADIUS, fusion_for
    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.quantiser import COARSE_QP, FINE_QP

    truth, noisy = _frames(5, noise=0.03, seed=3)
    region = face_region(_face(), H, W)
    assert region is not None
    auto = fusion_for(RestoreOptions())
    assert auto.radius == DEFAULT_RADIUS and auto.auto
    assert fusion_for(RestoreOptions(fuse=4)).radius == 4 and not fusion_for(RestoreOptions(fuse=4)).auto

    def fused(qp: float | None) -> np.ndarray:
        return auto.fuse(noisy, [[replace(_face(), qp=qp)] for _ in noisy], 2)

    assert fused(None) is noisy[2] and fused(FINE_QP) is noisy[2] and auto.faces_fused == 0
    full = fused(COARSE_QP + 5)
    assert np.array_equal(full, TemporalFusion(DEFAULT_RADIUS).fuse(noisy, [[_face()] for _ in noisy], 2))
    half = fused((FINE_QP + COARSE_QP) / 2)
    e_full, e_half, e_none = (_err(x, truth[2], region) for x in (full, half, noisy[2]))
    assert e_full < e_half < e_none


def test_smooth_trajectories_fits_each_pixels_displacements() -> None:
    from rmmvideo.video.fuse import smooth_trajectories

    offsets = [-2, -1, 1, 2]
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 5, 2)), rng.normal(size=(6, 5, 2))
    smooth = [(a * d + b * d * d).astype(np.float32) for d in offsets]
    for x, y in zip(smooth_trajectories(smooth, offsets), smooth):  # a trajectory it can fit: kept
        np.testing.assert_allclose(x, y, atol=1e-4)
    jitter = [y + np.float32(0.5 * (-1) ** k) for k, y in enumerate(smooth)]  # +-0.5 px, alternating
    fitted = smooth_trajectories(jitter, offsets)
    assert max(float(np.abs(x - y).max()) for x, y in zip(fitted, smooth)) < 0.5 * 0.8
    two = [np.ones((2, 2, 2), np.float32), np.zeros((2, 2, 2), np.float32)]
    assert all(x is y for x, y in zip(smooth_trajectories(two, [-1, 1]), two))  # too few to fit


def test_fusion_warps_along_the_fitted_trajectories(monkeypatch) -> None:
    """A noisy face moving 1 px a frame, whose measured flows carry up to 0.6 px of error that
    is not smooth in time (DIS locking on codec artefacts; this error is orthogonal to every
    trajectory a d + b d^2, so the fit removes all of it): fused along the fitted trajectories,
    the centre frame is nearer the truth than fused along the measured flows."""
    import rmmvideo.video.fuse as fuse

    truth, frames = _frames(5, noise=0.005, seed=1, step=1.0)
    faces = [[_face()] for _ in frames]
    region = face_region(faces[2][0], H, W)
    assert region is not None
    x0, y0, x1, y1 = region

    def flows_with_error() -> object:
        errors = iter([0.15, -0.6, -0.6, 0.15])  # to the frames 2 before, 1 before, 1 after, 2 after
        offsets = iter([-2, -1, 1, 2])

        def flow(self: TemporalFusion, cur: np.ndarray, other: np.ndarray) -> np.ndarray:
            f = np.zeros(cur.shape + (2,), np.float32)
            f[..., 0] = next(offsets) + next(errors)  # the true flow is d px to the right
            return f
        return flow

    errors = {}
    for fit in (False, True):
        if not fit:  # the flows as measured
            monkeypatch.setattr(fuse, "smooth_trajectories", lambda flows, _offsets: list(flows))
        else:
            monkeypatch.undo()
        monkeypatch.setattr(TemporalFusion, "_flow", flows_with_error())
        errors[fit] = _err(TemporalFusion(2).fuse(frames, faces, 2), truth[2], region)
    assert errors[True] < 0.6 * errors[False], errors
