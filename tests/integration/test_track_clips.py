"""Tracker on the shared clips: scene cuts (two clips joined end to end; no false cut on the
clips themselves) and short inputs (a 1-frame clip through ``rmmvideo run``)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from rmmvideo.video.track import FaceTracker, SceneCutDetector

VIDEOS = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "videos"


def _clip(name: str) -> Path:
    p = VIDEOS / name
    if not p.is_file():
        pytest.skip(f"{p} not found (../shared/data absent)")
    return p


def _frames_512(name: str, count: int, start: int = 0, size: int = 512) -> list[np.ndarray]:
    """``count`` frames of a shared clip from ``start``, resized to ``size`` squared by PyAV."""
    import av

    out = []
    with av.open(str(_clip(name))) as c:
        stream = c.streams.video[0]
        stream.thread_type = "AUTO"
        for i, f in enumerate(c.decode(stream)):
            if i >= start:
                out.append(f.reformat(width=size, height=size, format="rgb24").to_ndarray())
            if len(out) == count:
                break
    return out


@pytest.mark.slow
@pytest.mark.parametrize("first,second", [
    ("talking_512sq_30fps_audio.mp4", "talking_844sq_25fps_audio.mp4"),
    ("landscape_1280x720_30fps_audio.mp4", "portrait_720x1280_30fps_noaudio.mp4"),
])
def test_no_track_spans_a_cut_between_two_clips(first: str, second: str):
    from rmmvideo.video.detect import MtcnnDetector

    a, b = _frames_512(first, 21), _frames_512(second, 19)
    frames = a + b
    tracker = FaceTracker(MtcnnDetector(), detect_every=2)
    out = []
    for s in range(0, len(frames), 8):  # the pipeline's chunks; the cut falls inside one
        out += tracker.push([(i, frames[i]) for i in range(s, min(len(frames), s + 8))])
    out += tracker.flush()
    assert tracker.cuts == [len(a)]
    assert [ff.index for ff in out] == list(range(len(frames)))
    ids_a = {f.track_id for ff in out[:len(a)] for f in ff.faces}
    ids_b = {f.track_id for ff in out[len(a):] for f in ff.faces}
    assert ids_a and ids_b and not ids_a & ids_b
    # Each clip's face is tracked up to the cut and from it (the cut ends tracks, it does not
    # lose frames): the last frame before and the first after carry their own detections.
    assert all(ff.faces for ff in out)
    assert all(f.detected for f in out[len(a) - 1].faces + out[len(a)].faces)


@pytest.mark.slow
def test_no_false_cut_on_the_shared_clips():
    from rmmvideo.video.io import decode_frames

    clips = sorted(p for p in VIDEOS.glob("*.mp4")) if VIDEOS.is_dir() else []
    if not clips:
        pytest.skip(f"no clips in {VIDEOS}")
    for clip in clips:
        det = SceneCutDetector()
        cuts = [f.index for f in decode_frames(clip) if det.is_cut(f.image)]
        assert cuts == [], f"{clip.name}: false cuts at {cuts}"


def _one_frame_clip(path: Path, frame: np.ndarray) -> None:
    import av

    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=Fraction(30))
        s.width, s.height, s.pix_fmt = frame.shape[1], frame.shape[0], "yuv420p"
        c.streams.video[0].codec_context.time_base = Fraction(1, 30)
        for pkt in s.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            c.mux(pkt)
        for pkt in s.encode():
            c.mux(pkt)


@pytest.mark.slow
def test_one_frame_clip_through_run_restores_the_face(tmp_path: Path, capsys):
    from rmmvideo.cli.main import main
    from rmmvideo.video.io import probe

    src = tmp_path / "one.mp4"
    # A small, soft face (256 px frame, upscaled x2): one the pipeline restores.
    _one_frame_clip(src, _frames_512("talking_512sq_30fps_audio.mp4", 1, size=256)[0])
    assert probe(src).frame_count in (1, None)
    out = tmp_path / "one.out.mp4"
    # --strength 1: restore the tracked face whatever the automatic strength says
    rc = main(["run", str(src), "-o", str(out), "--scale", "2", "--strength", "1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "1 frame, 1 face restored, 1 track (strength 1.00 on 1)" in err, err
    assert out.is_file()
