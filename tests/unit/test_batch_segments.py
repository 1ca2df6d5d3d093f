"""Segment planning at keyframes and packet-level scans."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest
from _batch_clips import make_clip

from rmmvideo.batch.media import VideoScan, scan_video, verify_output
from rmmvideo.batch.segments import plan_segments
from rmmvideo.errors import UserError


def _scan(seconds: float, fps: int = 25, key_every: float = 1.0) -> VideoScan:
    tb = Fraction(1, fps)
    n = int(seconds * fps)
    pts = list(range(n))
    keys = [p for p in pts if p % int(key_every * fps) == 0]
    return VideoScan(Path("x"), tb, pts, keys, n, 0.0, n / fps)


def test_plan_cuts_at_keyframes_and_covers_every_frame():
    scan = _scan(10.0)
    segs = plan_segments(scan, 3.0)
    assert [(s.start, s.end) for s in segs] == [(0.0, 3.0), (3.0, 6.0), (6.0, 10.0)]
    assert segs[0].start_pts is None and segs[-1].end_pts is None
    assert all(s.start_pts in scan.keyframes for s in segs[1:])
    assert sum(s.frames for s in segs) == scan.frames
    assert [s.index for s in segs] == [0, 1, 2]


@pytest.mark.parametrize("seconds", [0.0, -1.0, 8.0, 100.0])
def test_plan_one_segment_when_off_or_short(seconds):
    segs = plan_segments(_scan(10.0), seconds)
    assert len(segs) == 1 and segs[0].frames == 250


def test_plan_sparse_keyframes_give_longer_segments():
    segs = plan_segments(_scan(20.0, key_every=5.0), 3.0)
    assert [s.start for s in segs] == [0.0, 5.0, 10.0, 15.0]


def test_scan_and_verify_real_file(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=30, gop=10)
    scan = scan_video(clip)
    assert scan.frames == 30 and scan.keyframes == [0, 5120, 10240]
    assert scan.start == 0.0 and scan.end == pytest.approx(30 / 25)
    assert verify_output(clip, 30, scan.start, scan.end, 0.04) is None
    assert "frame count" in verify_output(clip, 31, scan.start, scan.end, 0.04)
    assert "ends at" in verify_output(clip, 30, scan.start, scan.end + 1, 0.04)
    trunc = tmp_path / "t.mp4"
    trunc.write_bytes(clip.read_bytes()[: clip.stat().st_size // 2])
    assert verify_output(trunc, 30, scan.start, scan.end, 0.04) is not None
    with pytest.raises(UserError):
        scan_video(tmp_path / "missing.mp4")


def test_segment_source_is_an_exact_packet_copy_of_the_range(tmp_path):
    import av

    from rmmvideo.batch.engine import segment_source

    clip = make_clip(tmp_path / "c.mp4", frames=50, gop=10)
    keys = scan_video(clip).keyframes
    start, end = keys[2], keys[3]
    src = segment_source(clip, tmp_path / "s.mp4", start, end)
    assert src == tmp_path / "s.mp4"

    def frames(p: Path) -> dict[int, bytes]:
        with av.open(str(p)) as c:
            return {int(f.pts): f.to_ndarray(format="rgb24").tobytes() for f in c.decode(video=0)}

    full, part = frames(clip), frames(src)
    wanted = {p: v for p, v in full.items() if start <= p < end}
    assert {p: v for p, v in part.items() if start <= p < end} == wanted and len(wanted) == 10
    assert len(part) <= 20 < len(full)  # the range plus one spare GOP, not the whole prefix
    # first segment, or a container whose timestamps a remux would round: the input itself
    assert segment_source(clip, tmp_path / "s0.mp4", None, start) == clip
    mkv = tmp_path / "c.mkv"
    mkv.write_bytes(b"")
    assert segment_source(mkv, tmp_path / "s1.mkv", start, end) == mkv
