"""The real-footage benchmark (rmmvideo.eval.video / `rmmvideo eval-video`)."""

from __future__ import annotations

import json
import math
import tempfile
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from rmmvideo.cli.main import main
from rmmvideo.eval.metrics import PSNR_CAP
from rmmvideo.eval.video import build_reference, score_method

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
FACE = SHARED / "faces" / "utkface" / "100_0_0_20170112213500903.jpg"
CLIP = SHARED / "videos" / "talking_512sq_30fps_audio.mp4"

needs_face = pytest.mark.skipif(not FACE.is_file(), reason=f"shared face crops not found in {FACE.parent}")
needs_clip = pytest.mark.skipif(not CLIP.is_file(), reason=f"shared clips not found in {CLIP.parent}")


def _face_frames(n: int = 6) -> list[np.ndarray]:
    """A real face (120 px) on a 256x256 grey canvas, moving 1 px per frame."""
    face = np.asarray(Image.open(FACE).convert("RGB").resize((120, 120), Image.BICUBIC))
    frames = []
    for t in range(n):
        img = np.full((256, 256, 3), 128, np.uint8)
        img[60 + t:180 + t, 60 + t:180 + t] = face
        frames.append(img)
    return frames


def _encode(path: Path, frames: list[np.ndarray], rate: int = 25) -> Path:
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream("libx264", rate=rate)
        vs.height, vs.width = frames[0].shape[:2]
        vs.pix_fmt = "yuv420p"
        vs.options = {"crf": "12", "preset": "ultrafast"}
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts, f.time_base = i, Fraction(1, rate)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return path


@needs_face
def test_scores_of_known_answers() -> None:
    frames = _face_frames()
    ref = build_reference(frames)
    assert all(len(b) == 1 for b in ref.boxes), "the face must be found in every frame"
    same = score_method("same", frames, ref)
    assert same.psnr == PSNR_CAP and same.ssim == pytest.approx(1.0)
    assert same.temporal == 0.0 and same.jitter == 0.0 and same.fed == 0.0
    assert same.sharpness == pytest.approx(1.0) and same.warp == pytest.approx(ref.warp)
    assert len(same.fed_frames) == len(ref.descriptors) and not any(same.fed_frames)
    sigma = 3.0
    rng = np.random.default_rng(0)
    noisy = [np.clip(np.rint(f + rng.normal(0, sigma, f.shape)), 0, 255).astype(np.uint8) for f in frames]
    got = score_method("noisy", noisy, ref)
    theory = 10 * math.log10(255.0 ** 2 / (sigma ** 2 + 1 / 12))  # + rounding to 8 bits
    assert got.psnr == pytest.approx(theory, abs=0.15)
    assert got.temporal > 1.0 and got.warp > ref.warp  # independent noise per frame is flicker


@needs_face
def test_bad_inputs_give_rows_or_one_line_errors_and_leave_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    noface = _encode(tmp_path / "noface.mp4", [np.full((128, 128, 3), 90 + 5 * t, np.uint8) for t in range(4)])
    short = _encode(tmp_path / "short.mp4", _face_frames(1))
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 10)
    before = set(Path(tempfile.gettempdir()).glob("rmmvideo-eval-video-*"))
    out_json = tmp_path / "r.json"
    rc = main(["eval-video", str(noface), str(short), str(broken), "--scales", "2", "--frames", "4",
               "--strengths", "0", "--no-noise-check", "--quiet", "--json", str(out_json)])
    assert rc == 1  # nothing could be scored
    rows = {Path(r["clip"]).name: r for r in json.loads(out_json.read_text())}
    assert "no face" in rows["noface.mp4"]["error"]
    assert "at least 2" in rows["short.mp4"]["error"]
    assert rows["broken.mp4"]["error"]
    assert set(Path(tempfile.gettempdir()).glob("rmmvideo-eval-video-*")) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.mp4", "noface.mp4", "r.json", "short.mp4"]
    assert main(["eval-video", str(tmp_path / "missing.mp4")]) == 2
    assert "clip not found" in capsys.readouterr().err


@needs_clip
def test_strength_zero_is_the_plain_upscale_through_the_run_path(tmp_path: Path) -> None:
    """Without cleaning and fusion (``--deblock off --fuse 0``), strength 0 is the plain upscale bit
    for bit."""
    md = tmp_path / "t.md"
    out_json = tmp_path / "t.json"
    rc = main(["eval-video", str(CLIP), "--scales", "4", "--frames", "6", "--strengths", "0", "1", "--fuse", "0",
               "--deblock", "off", "--no-noise-check", "--quiet", "--json", str(out_json), "--md", str(md)])
    assert rc == 0
    (row,) = json.loads(out_json.read_text())
    base, zero, one = row["methods"]
    assert base["method"] == "bicubic" and zero["method"] == "rmm s=0" and one["method"] == "rmm s=1"
    assert row["face_frames"] >= 6
    for k in ("psnr", "ssim", "fed", "temporal", "warp", "jitter", "sharpness"):
        assert zero[k] == base[k], k  # bit-exact: the same frames
    assert zero["psnr_gain"] == 0.0 and zero["strengths"] == [[0.0, 0.0]]
    assert one["psnr"] != base["psnr"]  # the model did change the faces
    assert "| x4 | rmm s=1 |" in md.read_text()


def test_fusion_beats_the_plain_upscale_on_a_real_clip(tmp_path: Path) -> None:
    """Multi-frame fusion alone (strength 0, --fuse 2 --deblock off) on compressed real footage (CRF
    30): more PSNR, less flicker and flow-warping error than the plain upscale."""
    out_json = tmp_path / "f.json"
    rc = main(["eval-video", str(CLIP), "--scales", "4", "--frames", "16", "--strengths", "0", "--fuse", "2",
               "--deblock", "off", "--no-noise-check", "--quiet", "--json", str(out_json)])
    assert rc == 0
    (row,) = json.loads(out_json.read_text())
    base, fused = row["methods"]
    assert fused["method"] == "rmm s=0" and fused["strengths"] == [[0.0, 0.0]]
    assert fused["psnr_gain"] > 0.02 and fused["temporal_ratio"] < 0.98 and fused["warp_ratio"] < 0.95


@needs_clip
def test_deblock_beats_the_plain_upscale_on_a_real_clip(tmp_path: Path) -> None:
    """Codec-artefact removal alone (strength 0, --deblock --fuse 0: the colour of every face
    cleaned) on compressed real footage (x2, CRF 30): more PSNR, and identity no worse beyond the
    clip's noise (2 standard errors)."""
    out_json = tmp_path / "d.json"
    rc = main(["eval-video", str(CLIP), "--scales", "2", "--frames", "20", "--strengths", "0", "--deblock",
               "--fuse", "0", "--no-noise-check", "--quiet", "--json", str(out_json)])
    assert rc == 0
    (row,) = json.loads(out_json.read_text())
    base, cleaned = row["methods"]
    assert cleaned["method"] == "rmm s=0" and cleaned["strengths"] == [[0.0, 0.0]]
    assert cleaned["psnr_gain"] > 0.05
    assert len(cleaned["fed_frames"]) == 4 and cleaned["fed_ratio"] - 1 <= 2 * cleaned["fed_se"]


@needs_clip
def test_the_defaults_beat_the_plain_upscale_on_compressed_real_footage(tmp_path: Path) -> None:
    """The defaults (--deblock auto --fuse auto, --strength auto) on real footage coded coarsely
    (x4, CRF 30: every face cleaned and fused): more PSNR, less flicker and flow-warping error, and
    identity no worse beyond the clip's noise; on the same clip coded finely (CRF 18) the plain
    upscale bit for bit."""
    rows = {}
    for crf in ("30", "18"):
        out_json = tmp_path / f"a{crf}.json"
        rc = main(["eval-video", str(CLIP), "--scales", "4", "--frames", "20", "--crf", crf, "--strengths", "auto",
                   "--no-noise-check", "--quiet", "--json", str(out_json)])
        assert rc == 0
        (row,) = json.loads(out_json.read_text())
        rows[crf] = row["methods"]
    base, auto = rows["30"]
    assert auto["method"] == "rmm auto" and auto["strengths"] == [[0.0, 0.0]]
    assert auto["psnr_gain"] > 0.1 and auto["temporal_ratio"] < 0.98 and auto["warp_ratio"] < 0.9
    assert auto["fed_ratio"] - 1 <= 2 * auto["fed_se"]
    base, auto = rows["18"]
    for k in ("psnr", "ssim", "fed", "temporal", "warp", "jitter", "sharpness"):
        assert auto[k] == base[k], k
