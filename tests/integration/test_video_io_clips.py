"""Video I/O on the real clips in ../shared/data/videos (skipped when the folder is absent)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import av
import numpy as np
import pytest

from rmmvideo.errors import UserError
from rmmvideo.video.io import (
    RandomAccessReader,
    VideoWriter,
    decode_frames,
    probe,
    transcode_upscale,
)

# name -> (width, height, has audio) from ../shared/data/README.md
EXPECTED = {
    "talking_700sq_vfr_audio.mp4": (700, 700, True),
    "talking_844sq_25fps_audio.mp4": (844, 844, True),
    "talking_512sq_30fps_audio.mp4": (512, 512, True),
    "portrait_720x1280_30fps_noaudio.mp4": (720, 1280, False),
    "landscape_1280x720_30fps_audio.mp4": (1280, 720, True),
}
FIRST_N = 8  # frames per clip for the quick transcode checks


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def packet_pts(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return sorted(int(p.pts) for p in c.demux(c.streams.video[0]) if p.size)


def audio_digest(path: Path) -> tuple[int, str] | None:
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        h = hashlib.md5()
        n = 0
        for p in c.demux(c.streams.audio[0]):
            if p.size:
                h.update(bytes(p))
                n += 1
        return n, h.hexdigest()


@pytest.fixture(scope="module")
def clips(shared_videos: list[Path]) -> dict[str, Path]:
    return {p.name: p for p in shared_videos}


def test_probe_real_clips(clips):
    for name, (w, h, audio) in EXPECTED.items():
        if name not in clips:
            continue
        info = probe(clips[name])
        assert (info.width, info.height, info.has_audio) == (w, h, audio), name
        assert info.bit_depth == 8 and not info.is_gray and info.rotation == 0
        assert info.frame_count and info.duration


def test_decode_real_clip_count_and_pts(clips):
    p = clips["talking_700sq_vfr_audio.mp4"]
    frames = [(f.index, f.pts, f.time) for f in decode_frames(p, prefetch_frames=4)]
    pts = packet_pts(p)
    assert len(frames) == len(pts) == probe(p).frame_count
    assert [f[1] for f in frames] == pts
    info = probe(p)
    assert [f[2] for f in frames] == [float(x * info.time_base) for x in pts]
    gaps = np.diff(pts)
    assert len(set(gaps.tolist())) > 1  # really variable frame rate


@pytest.mark.slow
def test_full_decode_every_clip(clips):
    """Every real clip decodes completely (no false damage report), pts = the packet index."""
    for name, p in clips.items():
        pts = [f.pts for f in decode_frames(p, prefetch_frames=4)]
        assert pts == packet_pts(p), name
        assert len(pts) == probe(p).frame_count, name


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_transcode_first_frames_each_clip(clips, tmp_path, name):
    if name not in clips:
        pytest.skip(f"{name} not in shared data")
    src = clips[name]
    info = probe(src)
    res = transcode_upscale(src, tmp_path / "up.mp4", 2, preset="ultrafast", max_frames=FIRST_N)
    out = probe(res.output)
    assert (out.width, out.height) == (2 * info.width, 2 * info.height)
    assert out.time_base == info.time_base
    assert packet_pts(res.output) == packet_pts(src)[:FIRST_N]
    assert audio_digest(res.output) == audio_digest(src)  # whole audio copied byte for byte


@pytest.mark.slow
def test_full_vfr_clip_end_to_end(clips, tmp_path):
    src = clips["talking_700sq_vfr_audio.mp4"]
    before = md5(src)
    res = transcode_upscale(src, tmp_path / "full.mkv", 2, preset="ultrafast")
    mp4 = transcode_upscale(src, tmp_path / "full.mp4", 2, preset="ultrafast")
    src_pts = packet_pts(src)
    assert res.frames == mp4.frames == len(src_pts) == 135
    assert packet_pts(mp4.output) == src_pts  # every pts, VFR included
    assert audio_digest(mp4.output) == audio_digest(src) == audio_digest(res.output)
    info = probe(src)
    with av.open(str(res.output)) as c:  # Matroska: milliseconds, shifted by the AAC priming
        t = sorted(float(p.pts * p.time_base) for p in c.demux(c.streams.video[0]) if p.size)
    rel = np.array(t) - t[0]
    assert np.allclose(rel, [float((x - src_pts[0]) * info.time_base) for x in src_pts], atol=0.0011)
    # the picture is the upscaled input
    a = next(iter(decode_frames(src)))
    b = next(iter(decode_frames(mp4.output)))
    small = b.image.reshape(700, 2, 700, 2, 3).mean(axis=(1, 3))
    assert np.abs(small - a.image).mean() < 3.0
    assert md5(src) == before


def test_rotated_real_clip(clips, tmp_path):
    """The 512 clip remuxed with a 90-degree display matrix: decoded upright, upscaled, no tag out."""
    src = clips["talking_512sq_30fps_audio.mp4"]
    rotated = tmp_path / "rotated.mp4"
    with av.open(str(src)) as inp, av.open(str(rotated), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        vout.set_display_rotation(90)
        for p in inp.demux(vin):
            if p.size:
                p.stream = vout
                out.mux(p)
    info = probe(rotated)
    assert info.rotation == 90
    plain = [f.image for f in decode_frames(src, max_frames=3)]
    turned = [f.image for f in decode_frames(rotated, max_frames=3)]
    assert all(np.array_equal(np.rot90(a), b) for a, b in zip(plain, turned))
    res = transcode_upscale(rotated, tmp_path / "up.mp4", 2, preset="ultrafast", max_frames=3)
    out = probe(res.output)
    assert out.rotation == 0 and (out.width, out.height) == (1024, 1024)


def test_random_access_real_clips(clips):
    for name in ("talking_700sq_vfr_audio.mp4", "landscape_1280x720_30fps_audio.mp4"):
        p = clips[name]
        seq = {f.index: f for f in decode_frames(p, max_frames=40)}
        with RandomAccessReader(p) as reader:
            for i in (39, 0, 17, 30, 5):
                (f,) = reader.window(i, 1)
                assert f.pts == seq[i].pts
                assert np.array_equal(f.image, seq[i].image)
            win = list(reader.window(20, 5))
            assert [f.pts for f in win] == [seq[i].pts for i in range(20, 25)]


def test_truncated_real_clips(clips, tmp_path):
    # index first (landscape): the index proves the cut: a one-line UserError before any frame,
    # or with on_damage="warn" the first half of the frames
    src = clips["landscape_1280x720_30fps_audio.mp4"]
    data = src.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    assert probe(cut).truncated
    with pytest.raises(UserError, match="truncated") as e:
        next(iter(decode_frames(cut)))
    assert "\n" not in str(e.value)
    n = sum(1 for _ in decode_frames(cut, on_damage="warn"))
    assert 100 < n < 282
    # the baseline refuses to produce a short output
    target = tmp_path / "out.mp4"
    with pytest.raises(UserError):
        transcode_upscale(cut, target, 2, preset="ultrafast")
    assert not target.exists() and sorted(x.name for x in tmp_path.iterdir()) == ["cut.mp4"]
    # index last (portrait): cut in half it cannot be opened
    src2 = clips["portrait_720x1280_30fps_noaudio.mp4"]
    cut2 = tmp_path / "cut2.mp4"
    cut2.write_bytes(src2.read_bytes()[: src2.stat().st_size // 2])
    with pytest.raises(UserError) as e2:
        probe(cut2)
    assert "\n" not in str(e2.value)


def test_writer_interrupt_on_real_clip(clips, tmp_path):
    src = clips["talking_844sq_25fps_audio.mp4"]
    before = md5(src)
    info = probe(src)
    target = tmp_path / "out.mp4"
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter.for_input(info, target, 1, preset="ultrafast") as w:
            for f in decode_frames(src, prefetch_frames=2):
                w.write(f.image, f.pts)
                if f.index == 5:
                    raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []
    assert md5(src) == before


def test_ten_bit_output_from_real_clip(clips, tmp_path):
    src = clips["talking_512sq_30fps_audio.mp4"]
    res = transcode_upscale(src, tmp_path / "up10.mkv", 2, preset="ultrafast", bit_depth=10, max_frames=4)
    out = probe(res.output)
    assert out.pix_fmt == "yuv420p10le" and out.bit_depth == 10 and (out.width, out.height) == (1024, 1024)
    a = next(iter(decode_frames(src))).image.astype(float)
    b = next(iter(decode_frames(res.output, high_bit_depth=True))).image / 257.0
    assert np.abs(b.reshape(512, 2, 512, 2, 3).mean(axis=(1, 3)) - a).mean() < 3.0
