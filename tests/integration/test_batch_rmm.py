"""Segmented restoration equals a single pass: the real pipeline on a real clip, tiny weights.

The analysis pass tracks faces over the whole file and pins each track's noise and memory slot;
segments are then rendered in parallel from that one table. A track crossing a cut must look the
same as in `restore_video`'s single streaming pass: per-frame PSNR above 45 dB (identical here,
the work being deterministic and the encode lossless).
"""

from __future__ import annotations

import io
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rmmvideo.batch.media import scan_video
from rmmvideo.batch.runner import BatchConfig, run_batch
from rmmvideo.video import pipeline
from rmmvideo.video.options import RestoreOptions

REPO = Path(__file__).resolve().parents[2]
VIDEOS = REPO.parent / "shared" / "data" / "videos"
pytestmark = pytest.mark.skipif(not VIDEOS.is_dir(), reason=f"shared clips not found at {VIDEOS}")


def keyframe_cut(src: Path, dst: Path, frames: int, size: int, gop: int) -> Path:
    """First `frames` frames of `src` (decoded with the I/O layer), resized, re-encoded with a
    keyframe every `gop` frames, the input's pts and time base kept, and its audio copied."""
    from PIL import Image

    from rmmvideo.video.io import decode_frames, probe

    info = probe(src)
    with av.open(str(dst), "w") as oc, av.open(str(src)) as ic:
        vs = oc.add_stream("libx264", rate=30)
        vs.width = vs.height = size
        vs.pix_fmt = "yuv420p"
        vs.time_base = vs.codec_context.time_base = Fraction(info.time_base)
        vs.options = {"crf": "12", "preset": "veryfast", "g": str(gop), "keyint_min": str(gop), "sc_threshold": "0"}
        oa = oc.add_stream_from_template(ic.streams.audio[0])  # every stream before the first packet
        last = 0.0
        for f in decode_frames(src, max_frames=frames):
            img = np.asarray(Image.fromarray(f.image).resize((size, size), Image.BICUBIC))
            vf = av.VideoFrame.from_ndarray(img, format="rgb24")
            vf.pts, vf.time_base = f.pts, Fraction(info.time_base)
            for p in vs.encode(vf):
                oc.mux(p)
            last = f.time
        for p in vs.encode():
            oc.mux(p)
        for p in ic.demux(ic.streams.audio[0]):
            if p.size and p.pts is not None and float(p.pts * p.time_base) <= last:
                p.stream = oa
                oc.mux(p)
    return dst


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


@pytest.mark.slow
def test_segmented_restoration_equals_single_pass(tmp_path, tiny_weights):
    clip = keyframe_cut(VIDEOS / "talking_512sq_30fps_audio.mp4", tmp_path / "talk.mp4", frames=24, size=256, gop=8)
    keys = scan_video(clip).keyframes
    assert len(keys) == 3
    from rmmvideo.batch.engine import segment_source

    # segments render from packet copies of their range (not the whole file): that path is tested
    assert segment_source(clip, tmp_path / "probe.mp4", keys[1], keys[2]) != clip
    opts = RestoreOptions(weights=str(tiny_weights), scale=1.0, crf=0, preset="ultrafast", seed=3,
                          strength=1.0, fuse=2, deblock="auto")  # 1: faces are restored (auto: 0 at scale 1)
    runs = {}
    for name, seconds, jobs in (("single", 0.0, 1), ("segmented", 0.25, 2)):
        runs[name] = run_batch([str(clip)], BatchConfig(out_dir=tmp_path / name, jobs=jobs, engine="rmm",
                               options=opts, segment_seconds=seconds, quiet=True), out=io.StringIO())
        assert runs[name].results[0].status == "done", runs[name].results[0].error
    assert runs["segmented"].stats["tasks"] == 1 + 3 + 1  # prepare (+ analysis), 3 segments, join
    single, seg = runs["single"].results[0], runs["segmented"].results[0]
    assert single.faces > 0 and single.tracks >= 1  # a face is tracked across both cuts
    assert (seg.frames, seg.faces, seg.tracks) == (single.frames, single.faces, single.tracks)
    values = []
    with av.open(str(tmp_path / "single" / "talk.mp4")) as ca, av.open(str(tmp_path / "segmented" / "talk.mp4")) as cb:
        for fa, fb in zip(ca.decode(video=0), cb.decode(video=0), strict=True):
            assert fa.pts == fb.pts
            values.append(psnr(fa.to_ndarray(format="rgb24"), fb.to_ndarray(format="rgb24")))
    # the segments' packet copies hold the frames the QP average, fusion and stabiliser read before them: equal up
    # to the model's float rounding (without that context the first frames fell to 44.6 dB)
    assert len(values) == 24 and min(values) > 50.0, values


def _frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]


@pytest.mark.slow
def test_run_only_options_reach_the_worker(tmp_path, tiny_weights):
    """`--temporal frame --detect-every 3` (options batch did not take before it carried a
    RestoreOptions) reach the worker: the batch output equals `restore_video`'s with them, and
    each of them changes the output on this clip (at its default: min PSNR 45 dB for track,
    61 dB for detect-every 2 against the batch output, measured)."""
    from dataclasses import replace

    from rmmvideo.cli.main import main

    clip = keyframe_cut(VIDEOS / "talking_512sq_30fps_audio.mp4", tmp_path / "talk.mp4", frames=12, size=256, gop=12)
    common = ["--weights", str(tiny_weights), "--scale", "1", "--crf", "0", "--preset", "ultrafast", "--seed", "3",
              "--strength", "1"]  # 1: faces are restored (auto gives 0 at scale 1)
    assert main(["batch", str(clip), "--out", str(tmp_path / "b"), "--segment-seconds", "0", "--quiet",
                 "--temporal", "frame", "--detect-every", "3", *common]) == 0
    opts = RestoreOptions(weights=str(tiny_weights), scale=1.0, crf=0, preset="ultrafast", seed=3,
                          strength=1.0, quiet=True, temporal="frame", detect_every=3)
    refs = {}
    for name, o in (("both", opts), ("track", replace(opts, temporal="track")), ("every2", replace(opts, detect_every=2))):
        pipeline.restore_video(clip, tmp_path / f"{name}.mp4", o)
        refs[name] = _frames(tmp_path / f"{name}.mp4")
    got = _frames(tmp_path / "b" / "talk.mp4")
    assert len(got) == 12
    # deterministic work, lossless encode: the very same frames
    assert all(np.array_equal(a, b) for a, b in zip(got, refs["both"], strict=True))
    for name in ("track", "every2"):  # either option left at its default would show
        assert not all(np.array_equal(a, b) for a, b in zip(got, refs[name], strict=True)), name
