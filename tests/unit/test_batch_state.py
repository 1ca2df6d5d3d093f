"""State file: atomic save, round trip, option hashing."""

from __future__ import annotations

import json

from rmmvideo.batch.state import BatchState, SegmentRecord, options_hash


def test_round_trip_and_atomic_save(tmp_path):
    p = tmp_path / "d" / "batch-state.json"
    st = BatchState.load(p)
    assert st.jobs == {}
    rec = st.job("a/b.mp4", input="in/a/b.mp4", output="out/a/b.mp4")
    rec.status, rec.frames, rec.error = "failed", 12, "boom"
    rec.segments = [{"index": 0, "start_pts": None, "end_pts": 5, "frames": 5, "start": 0.0, "end": 0.2}]
    rec.segment_status["0"] = SegmentRecord("done", 5, 1.5)
    st.save()
    assert [x.name for x in p.parent.iterdir()] == ["batch-state.json"]  # no temp file left
    data = json.loads(p.read_text())
    assert data["jobs"]["a/b.mp4"]["status"] == "failed"
    back = BatchState.load(p).jobs["a/b.mp4"]
    assert back.frames == 12 and back.error == "boom" and back.segments == rec.segments
    assert back.segment_status["0"] == SegmentRecord("done", 5, 1.5)
    assert st.job("a/b.mp4", input="i", output="o") is rec  # existing record reused


def test_options_hash():
    assert options_hash("rmm", {"scale": 2, "crf": 18}) == options_hash("rmm", {"crf": 18, "scale": 2})
    assert options_hash("rmm", {"scale": 2}) == options_hash("rmm", {"scale": 2, "weights": None})
    assert options_hash("rmm", {"scale": 2}) != options_hash("rmm", {"scale": 4})
    assert options_hash("rmm", {"scale": 2}) != options_hash("upscale", {"scale": 2})
