"""`rmmvideo preview` on real clips, with a randomly initialised rmm-small (empty memory: slot -1).

What must hold: the left half is the plain upscale of the frame; the restored half differs from
it only inside the paste masks; the restored half is what `rmmvideo run` writes for that frame;
--at and --frame pick the same frame; out-of-range requests are one-line errors (exit 2).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from rmmvideo.config import ModelConfig
from rmmvideo.models.rmm import RMM
from rmmvideo.models.weights import save_pretrained
from rmmvideo.video.io import decode_frames
from rmmvideo.video.options import RestoreOptions, build_components
from rmmvideo.video.pipeline import restore_video
from rmmvideo.video.preview import PALETTE, preview_frame, render_preview
from rmmvideo.video.upscale import upscale_images

REPO = Path(__file__).resolve().parents[2]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
CLIP = VIDEOS / "talking_512sq_30fps_audio.mp4"  # 512x512, 30 fps, one face
VFR = VIDEOS / "talking_700sq_vfr_audio.mp4"  # 700x700, variable frame rate
pytestmark = pytest.mark.skipif(not CLIP.is_file() or not VFR.is_file(), reason=f"shared clips not found in {VIDEOS}")


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = RMM(ModelConfig.from_yaml(REPO / "configs" / "models" / "rmm-small.yaml"))
    return save_pretrained(model, tmp_path_factory.mktemp("w") / "w.safetensors")


def _options(weights: Path, **kw: object) -> RestoreOptions:
    base = {"weights": str(weights), "detector": "dlib", "threads": 1, "quiet": True, "scale": 2.0,
            "strength": 1.0}  # 1: the random model's detail is pasted (auto may say 0)
    base.update(kw)
    return RestoreOptions(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def comps(weights: Path):
    return build_components(_options(weights))


def _frame(path: Path, index: int) -> np.ndarray:
    it = decode_frames(path, max_frames=index + 1)
    try:
        for f in it:
            if f.index == index:
                return f.image
    finally:
        it.close()  # type: ignore[attr-defined]
    raise AssertionError(f"frame {index} not decoded")


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rmmvideo", *args], check=False, capture_output=True, text=True,
                          cwd=REPO, timeout=300)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def test_preview_cli_writes_side_by_side_png(weights: Path, tmp_path: Path) -> None:
    from PIL import Image

    out = tmp_path / "p.png"
    r = _cli("preview", str(CLIP), "--frame", "40", "--window", "8", "-o", str(out),
             "--weights", str(weights), "--detector", "dlib", "--threads", "1", "--quiet",
             "--strength", "1")
    assert r.returncode == 0, r.stderr
    assert "frame 40" in r.stdout and "1 face" in r.stdout and str(out) in r.stdout
    # start: 40 - the stabiliser's 3 frames, --fuse auto's 3 and the QP average's 8, aligned down to
    # the run's batches (8) and detection frames (2); end = 40 + lag + 2 + --fuse auto's 3
    assert "frames 24..55" in r.stdout
    img = np.asarray(Image.open(out).convert("RGB"))
    frame = _frame(CLIP, 40)
    h, w = frame.shape[:2]
    assert img.shape == (2 * h, 2 * 2 * w, 3)  # (H*s, 2*W*s)
    left, right = img[:, : 2 * w], img[:, 2 * w:]
    assert np.array_equal(left, upscale_images(frame, 2.0))
    changed = (left != right).any(-1)
    assert changed.mean() > 0.005  # the face was restored
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left


def test_restored_half_differs_only_inside_the_masks(weights: Path, comps) -> None:
    # the paste masks alone: without multi-frame fusion, which also touches the faces' surroundings
    res = render_preview(CLIP, index=20, options=_options(weights, fuse=0), window=8, components=comps,
                         keep_masks=True)
    assert res.info.index == 20 and len(res.info.faces) == 1
    face = res.info.faces[0]
    assert face.alpha is not None and face.alpha.shape == res.restored.shape[:2]
    assert np.array_equal(res.upscaled, upscale_images(_frame(CLIP, 20), 2.0))
    outside = face.alpha <= 0
    assert outside.mean() > 0.5
    assert np.array_equal(res.restored[outside], res.upscaled[outside])  # background bit-exact
    inside = face.alpha > 0.9
    diff = np.abs(res.restored.astype(int) - res.upscaled.astype(int)).mean(-1)
    assert inside.sum() > 1000 and (diff[inside] > 0).mean() > 0.5 and diff[inside].mean() > 2  # the face changed
    # the crop square holds the mask
    ys, xs = np.nonzero(face.alpha > 0)
    x0, y0, x1, y1 = face.box
    assert xs.min() >= x0 - 2 and xs.max() <= x1 + 2 and ys.min() >= y0 - 2 and ys.max() <= y1 + 2


@pytest.mark.slow
def test_preview_matches_run_output(weights: Path, comps, tmp_path: Path) -> None:
    """Frame N of `run` (lossless FFV1 4:4:4, only the RGB <-> YUV rounding) == preview of N,
    multi-frame fusion and codec-artefact removal included (the preview reads the target's
    neighbours too)."""
    opts = _options(weights, codec="ffv1", fuse=2, deblock="on")
    n = 6
    res = render_preview(CLIP, index=n, options=opts, window=24, components=comps, keep_masks=True)
    assert res.info.window_start == 0 and len(res.info.faces) == 1
    out = tmp_path / "run.mkv"
    restore_video(CLIP, out, opts, components=comps, max_frames=n + 16)
    ran = _frame(out, n)
    face = res.info.faces[0].alpha > 0.5
    # measured ~52 dB (YUV rounding); the neighbouring frame or a shifted face gives < 45
    assert _psnr(res.restored[face], ran[face]) > 45
    assert _psnr(res.restored, ran) > 45
    assert np.abs(res.restored.astype(int) - ran.astype(int)).max() <= 4
    assert _psnr(res.upscaled[face], ran[face]) < 40  # run changed the face: the check bites
    assert _psnr(res.restored[face], _frame(out, n + 1)[face]) < 45


@pytest.mark.parametrize("n, window, start", [(6, 24, 0), (40, 16, 24)])
def test_preview_tracks_equal_a_full_pass(weights: Path, comps, n: int, window: int, start: int) -> None:
    """The previewed frame's tracks and landmarks are those `run` plans for it (plan_frames over
    the stream from frame 0): exactly when the window reaches the start, and also from a later
    window start once the track has been followed for the smoothing radius + confirmation."""
    from rmmvideo.video.pipeline import make_tracker, plan_frames

    opts = _options(weights, scale=1.0)
    res = render_preview(CLIP, index=n, options=opts, window=window, components=comps)
    assert res.info.window_start == start
    tracker = make_tracker(comps.detector, opts)
    frames = decode_frames(CLIP, max_frames=n + tracker.lag + opts.detect_every)
    full = next(p for p in plan_frames(frames, tracker, opts.batch_size) if p.frame.index == n)
    assert [f.track_id for f in res.info.faces] == [f.track_id for f in full.faces] == [0]
    for got, want in zip(res.info.faces, full.faces):
        assert got.detected == want.detected
        np.testing.assert_allclose(got.landmarks68, want.landmarks68, rtol=0, atol=1e-9)


def test_at_and_frame_agree_on_vfr_clip(weights: Path, comps) -> None:
    from rmmvideo.video.io_decode import frame_pts_index

    pts, tb = frame_pts_index(VFR)
    n = 15
    t = float((pts[n] - pts[0]) * tb)
    gap = float((pts[n + 1] - pts[n]) * tb)
    opts = _options(weights, scale=1.0)
    a, ia = preview_frame(VFR, index=n, options=opts, window=6, components=comps)
    b, ib = preview_frame(VFR, time=t + 0.4 * gap, options=opts, window=6, components=comps)
    assert ia.index == ib.index == n and ia.pts == ib.pts == int(pts[n])
    assert np.array_equal(a, b)
    _, ic = preview_frame(VFR, time=t - 0.1 * gap, options=opts, window=6, components=comps)
    assert ic.index == n - 1


def test_overlay_marks_the_restored_half_only(weights: Path, comps) -> None:
    opts = _options(weights, scale=1.0)
    plain, info = preview_frame(CLIP, index=10, options=opts, window=8, components=comps)
    over, _ = preview_frame(CLIP, index=10, options=opts, window=8, components=comps, overlay=True)
    w = plain.shape[1] // 2
    assert np.array_equal(over[:, :w], plain[:, :w])
    right = over[:, w:]
    assert (right != plain[:, w:]).any(-1).sum() > 200
    colour = np.array(PALETTE[info.faces[0].track_id % len(PALETTE)], np.uint8)
    assert (right == colour).all(-1).sum() > 50  # the track's box and label


def test_out_of_range_is_a_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rmmvideo.cli.main import main

    out = tmp_path / "x.png"
    r = _cli("preview", str(CLIP), "--frame", "100000", "-o", str(out), "--quiet")  # the real command line
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "out of range" in r.stderr, r.stderr
    capsys.readouterr()
    for args, words in ((["--frame", "-1"], "out of range"), (["--at", "01:00:00"], "out of range"),
                        (["--at", "1:xx"], "bad time")):
        assert main(["preview", str(CLIP), *args, "-o", str(out), "--quiet"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0], err
    assert main(["preview", str(CLIP), "--frame", "0", "-o", str(CLIP)]) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert not out.exists()


def test_default_output_beside_the_input_and_no_face_frame(weights: Path, make_clip, capsys) -> None:
    from PIL import Image

    from rmmvideo.cli.main import main

    clip = make_clip("c.mp4", width=64, height=48, frames=8)  # a synthetic pattern: no face
    assert main(["preview", str(clip), "--frame", "5", "--weights", str(weights), "--detector", "dlib",
                 "--threads", "1", "--quiet"]) == 0
    out = clip.with_name("c.frame5.png")
    assert str(out) in capsys.readouterr().out
    img = np.asarray(Image.open(out))
    assert img.shape == (96, 256, 3)
    assert np.array_equal(img[:, :128], img[:, 128:])  # no face: restored == plain upscale
    assert np.array_equal(img[:, :128], upscale_images(_frame(clip, 5), 2.0))
