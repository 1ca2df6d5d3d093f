"""Damaged input mid-stream: every decodable frame kept with its pts, damaged spans reported."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rmmvideo.errors import UserError
from rmmvideo.video.io_decode import DamageReport, decode_frames


def damage_keyframe(clip: Path, out: Path, index: int) -> tuple[list[int], Fraction]:
    """Copy `clip` to `out` with the payload of the `index`-th video packet (by pts) overwritten
    by random bytes (about 2 KB of damage in the middle of the file). Returns all packet pts."""
    with av.open(str(clip)) as c:
        vs = c.streams.video[0]
        packets = sorted((p.pts, p.pos, p.size) for p in c.demux(vs) if p.size)
        tb = Fraction(vs.time_base)
    _, pos, size = packets[index]
    data = bytearray(clip.read_bytes())
    data[pos + 4: pos + size] = np.random.default_rng(1).integers(0, 256, size - 4, dtype=np.uint8).tobytes()
    out.write_bytes(bytes(data))
    return [p[0] for p in packets], tb


@pytest.fixture
def damaged(make_clip, tmp_path) -> tuple[Path, list[int], Fraction]:
    clip = make_clip("ok.mp4", width=128, height=96, frames=60, options={"g": "10"},
                     container_options={"movflags": "faststart"})
    pts, tb = damage_keyframe(clip, tmp_path / "damaged.mp4", 30)  # the keyframe at 1.0 s
    return tmp_path / "damaged.mp4", pts, tb


def test_warn_keeps_every_decodable_frame_and_reports_the_span(damaged):
    path, all_pts, tb = damaged
    report = DamageReport()
    got = [f.pts for f in decode_frames(path, on_damage="warn", damage=report, prefetch_frames=4)]
    lost = sorted(set(all_pts) - set(got))
    assert 0 < len(lost) < 20 and len(got) + len(lost) == 60
    assert set(got) <= set(all_pts) and got == sorted(got)  # original pts, never renumbered
    assert report and "undecodable" in report.line()
    # one span: from the first lost frame to the next decoded one
    nxt = min(p for p in got if p > lost[-1])
    assert report.spans == [(float(lost[0] * tb), float(nxt * tb))]
    assert report.spans_text() == f"{float(lost[0] * tb):.3f}-{float(nxt * tb):.3f}s"


def test_error_mode_fails_at_the_damage_not_at_the_end(damaged):
    path, _, _ = damaged
    got = []
    with pytest.raises(UserError, match="undecodable") as e:
        for f in decode_frames(path):
            got.append(f.pts)
    assert "\n" not in str(e.value)
    assert 20 <= len(got) <= 40  # stopped near the damage (1.0 s of 2.0 s), not after every frame


def test_intact_clip_has_no_damage(make_clip):
    report = DamageReport()
    assert len(list(decode_frames(make_clip("c.mp4", frames=12), on_damage="warn", damage=report))) == 12
    assert not report and report.spans == []


def test_spans_are_the_same_through_the_deinterlacer(damaged):
    """With a decode view (bwdif, frames in the view's own time base) the damaged span is still
    measured in the input's timeline."""
    from rmmvideo.video.archive import plan_view
    from rmmvideo.video.probe import probe

    path, _, _ = damaged
    plain = DamageReport()
    list(decode_frames(path, on_damage="warn", damage=plain))
    view = plan_view(probe(path), deinterlace="field")  # one frame per field, pts in half the time base
    assert view.filters is not None
    through = DamageReport()
    list(decode_frames(path, on_damage="warn", damage=through, view=view))
    assert through.spans == plain.spans and len(plain.spans) == 1


def test_frames_out_of_order_after_damage_are_left_out_not_retimed(tmp_path):
    """B-frames around a damaged keyframe can come out of the decoder out of order: they are
    left out (counted in the span), never given made-up timestamps."""
    from _batch_clips import make_clip

    clip = make_clip(tmp_path / "b.mp4", frames=60, gop=10, audio=False)  # B-frames
    all_pts, _ = damage_keyframe(clip, tmp_path / "d.mp4", 30)
    report = DamageReport()
    got = [f.pts for f in decode_frames(tmp_path / "d.mp4", on_damage="warn", damage=report)]
    assert got == sorted(set(got)) and set(got) <= set(all_pts)
    assert 40 < len(got) < 60 and report.spans
