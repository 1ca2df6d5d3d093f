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
    import hashlib

    from rmmvideo.video.options import RestoreOptions

    O = RestoreOptions
    assert options_hash("rmm", O(scale=2, crf=20)) == options_hash("rmm", O(crf=20, scale=2.0))
    assert options_hash("rmm", O(scale=4)) != options_hash("rmm", O(scale=3))
    assert options_hash("rmm", O(scale=4)) != options_hash("upscale", O(scale=4))
    # options run alone had before batch took RestoreOptions: each one redoes the file
    base = options_hash("rmm", O())
    for changed in (O(temporal="frame"), O(detect_every=3), O(parser="p.pth"), O(models_dir="m"), O(bit_depth=10),
                    O(batch_size=4), O(deinterlace="off"), O(sar="keep"), O(strength=0.5), O(on_damage="error")):
        assert options_hash("rmm", changed) != base, changed
    # luma/chroma strengths: the same weights are one output, other weights another
    assert options_hash("rmm", O(strength=(1, 1.0))) == options_hash("rmm", O(strength=1.0))
    assert options_hash("rmm", O(strength=(0.5, 1))) == options_hash("rmm", O(strength=(0.5, 1.0)))
    assert options_hash("rmm", O(strength=(0.5, 1.0))) != options_hash("rmm", O(strength=0.5))
    # per-run options never change an output: they keep finished files
    assert options_hash("rmm", O(threads=3, quiet=True)) == base
    # the fingerprint of state files written when batch options were a dict of the flags given
    old = json.dumps({"engine": "rmm", "scale": 4.0, "crf": 20}, sort_keys=True)
    assert options_hash("rmm", O(scale=4, crf=20)) == hashlib.sha1(old.encode()).hexdigest()[:16]
