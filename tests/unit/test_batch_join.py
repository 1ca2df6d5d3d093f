"""Join by packet copy: dts rebuilt across segments, frames/timestamps/audio exactly kept."""

from __future__ import annotations

import random
from pathlib import Path

import av
import pytest
from _batch_clips import audio_packets, decoded, make_clip

from rmmvideo.batch.engine import upscale_range
from rmmvideo.batch.join import join_segments, rewrite_dts
from rmmvideo.batch.media import scan_video
from rmmvideo.video.options import RestoreOptions


def _packets(path: Path) -> list[tuple[int, int]]:
    with av.open(str(path)) as c:
        return [(int(p.pts), int(p.dts)) for p in c.demux(video=0) if p.size]


def _valid(pts: list[int], dts: list[int]) -> bool:
    return all(d <= p for d, p in zip(dts, pts)) and all(a < b for a, b in zip(dts, dts[1:]))


def test_rewrite_dts_valid_for_reordered_sequences():
    rng = random.Random(0)
    for _ in range(200):
        n = rng.randint(1, 60)
        pts = [i * 512 for i in range(n)]
        # bounded local reordering, as B-frames do
        for i in range(0, n - 2, 3):
            if rng.random() < 0.7:
                pts[i + 1], pts[i + 2] = pts[i + 2], pts[i + 1]
        dts = rewrite_dts(pts, min_delay=rng.randint(0, 3))
        assert _valid(pts, dts), (pts, dts)


def test_rewrite_dts_reproduces_encoder_dts(tmp_path):
    clip = make_clip(tmp_path / "c.mp4", frames=30, audio=False)
    pk = _packets(clip)
    pts, dts = [p for p, _ in pk], [d for _, d in pk]
    delay = sum(d < min(pts) for d in dts)
    assert delay > 0  # preset medium uses B-frames: the case this is about
    assert rewrite_dts(pts, min_delay=delay) == dts


def test_rewrite_dts_rejects_duplicate_pts():
    with pytest.raises(ValueError, match="duplicate pts"):
        rewrite_dts([0, 512, 512])


def _delay_dts(src: Path, dst: Path, frames: int, step: int) -> None:
    """Remux `src` with every dts moved `frames` x `step` earlier: what an encoder with a longer
    reorder delay writes (still valid on its own: dts increasing and <= pts)."""
    with av.open(str(src)) as ic, av.open(str(dst), "w") as oc:
        ov = oc.add_stream_from_template(ic.streams.video[0])
        for p in ic.demux(video=0):
            if p.size:
                p.dts -= frames * step
                p.stream = ov
                oc.mux(p)


def test_join_segments_with_different_encoder_delays(tmp_path):
    """Segment 2 with a longer encoder delay than segment 1: plain concatenation would put its
    first dts before segment 1's last; the join must still give valid timestamps, the input's
    pts, the segments' pictures and the input's audio byte for byte."""
    src = make_clip(tmp_path / "in.mp4", frames=40, gop=10)
    cut = scan_video(src).keyframes[2]
    opts = RestoreOptions(scale=1, preset="medium", crf=18)
    s1, s2, s2d = tmp_path / "s1.mp4", tmp_path / "s2.mp4", tmp_path / "s2d.mp4"
    upscale_range(src, s1, opts, None, cut)
    upscale_range(src, s2, opts, cut, None)
    _delay_dts(s2, s2d, frames=3, step=512)
    p1, p2 = _packets(s1), _packets(s2d)
    assert _valid(*zip(*p2))
    assert p2[0][1] < p1[-1][1]  # the naive concatenation is broken
    out = tmp_path / "joined.mp4"
    assert join_segments(src, [s1, s2d], out) == 40
    pk = _packets(out)
    assert _valid([p for p, _ in pk], [d for _, d in pk])
    got = decoded(out)
    assert [p for p, _ in got] == [p for p, _ in decoded(src)]
    parts = decoded(s1) + decoded(s2)
    assert all((a[1] == b[1]).all() for a, b in zip(got, parts))
    assert audio_packets(out) == audio_packets(src) and len(audio_packets(src)) > 10
    assert not list(tmp_path.glob(".*partial*"))


def test_join_refuses_segments_with_other_parameters(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=20, gop=10)
    cut = scan_video(src).keyframes[1]
    s1, s2 = tmp_path / "s1.mp4", tmp_path / "s2.mp4"
    upscale_range(src, s1, RestoreOptions(scale=1, preset="ultrafast"), None, cut)
    upscale_range(src, s2, RestoreOptions(scale=1, preset="medium"), cut, None)
    with pytest.raises(ValueError, match="other codec parameters"):
        join_segments(src, [s1, s2], tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


def test_join_without_audio(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=20, gop=10)
    seg = tmp_path / "s.mp4"
    upscale_range(src, seg, RestoreOptions(scale=1, preset="ultrafast"))
    out = tmp_path / "o.mp4"
    join_segments(src, [seg], out, audio=False)
    assert audio_packets(out) == []
    assert scan_video(out).frames == 20


def test_join_keeps_container_and_stream_tags(tmp_path):
    plain = make_clip(tmp_path / "plain.mp4", frames=20, gop=10)
    src = tmp_path / "tagged.mp4"
    with av.open(str(plain)) as ic, av.open(str(src), "w") as oc:  # same packets, with tags
        oc.metadata["title"] = "Reel 7"
        streams = {}
        for s in ic.streams:
            streams[s.index] = oc.add_stream_from_template(s)
        streams[1].metadata["language"] = "fra"
        for p in ic.demux():
            if p.size:
                p.stream = streams[p.stream.index]
                oc.mux(p)
    seg = tmp_path / "s.mp4"
    upscale_range(src, seg, RestoreOptions(scale=1, preset="ultrafast"))
    out = tmp_path / "o.mp4"
    join_segments(src, [seg], out)
    with av.open(str(out)) as c:
        assert c.metadata.get("title") == "Reel 7"
        assert c.streams.audio[0].metadata.get("language") == "fra"
    assert audio_packets(out) == audio_packets(src)
