"""The H.264 quantisers read from the decoder: geometry of a QPMap, and real decodes."""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from rmmvideo.train.degrade import codec_clip, codec_roundtrip_qp
from rmmvideo.video.archive import plan_view
from rmmvideo.video.io import decode_frames
from rmmvideo.video.io_decode import RandomAccessReader
from rmmvideo.video.probe import probe
from rmmvideo.video.quantiser import QPMap

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
from archive_clips import write_video  # noqa: E402


def test_qpmap_pixels_follow_blocks_resampling_and_rotation() -> None:
    m = QPMap(np.array([[10, 20, 30], [40, 50, 60]], np.float32), (16.0, 16.0))
    px = m.pixels(0, 32, 0, 48)
    assert px.shape == (32, 48) and px[0, 0] == 10 and px[15, 15] == 10 and px[16, 16] == 50 and px[31, 47] == 60
    assert m.pixels(40, 42, 100, 101).tolist() == [[60], [60]]  # past the last block: the last block
    wide = m.shown(0, (1.0, 1.5))  # resampled 1.5x wider
    assert wide.block == (16.0, 24.0) and wide.pixels(0, 1, 23, 25).tolist() == [[10, 20]]
    turned = m.shown(1, (1.0, 1.0))  # 90 degrees counter-clockwise, as np.rot90
    assert turned.values.tolist() == [[30, 60], [20, 50], [10, 40]]
    assert turned.pixels(0, 48, 0, 32)[0, 31] == 60


def test_roundtrip_quantiser_rises_with_crf_and_other_codecs_have_none() -> None:
    torch.manual_seed(0)
    x = torch.rand(3, 50, 66)
    means = []
    for crf in (14, 26, 38):
        y, qp = codec_roundtrip_qp(x, "h264", crf, frames=3, seed=1)
        assert y.shape == x.shape and qp is not None and qp.values.shape == (4, 5) and qp.block == (16.0, 16.0)
        assert 0 <= qp.values.min() and qp.values.max() <= 51
        means.append(float(qp.values.mean()))
    assert means[0] < means[1] < means[2], means
    assert codec_roundtrip_qp(x, "mpeg2", 6, frames=2)[1] is None


def test_codec_clip_decodes_every_frame_with_its_quantisers() -> None:
    torch.manual_seed(0)
    frames = [torch.rand(3, 33, 47) for _ in range(3)]
    out = codec_clip(frames, "h264", 24)
    assert len(out) == 3
    for (y, qp), x in zip(out, frames):
        assert y.shape == x.shape and qp is not None and qp.values.shape == (3, 3)
        assert 0.02 < float((y - x).abs().mean()) < 0.3  # coded, not copied, and still this frame
    assert float((out[1][0] - out[2][0]).abs().mean()) > 0.05  # frames stay apart


def _clip(path: Path, crf: int, sar: Fraction = Fraction(1)) -> Path:
    rng = np.random.default_rng(0)
    base = (rng.random((48, 72, 3)) * 255).astype(np.uint8)
    frames = [np.roll(base, i, 1) for i in range(5)]
    return write_video(path, None, "libx264", frames, Fraction(25), sar=sar, crf=crf)


def test_decoded_frames_carry_their_quantisers_in_display_geometry(tmp_path: Path) -> None:
    lo = [f.qp.values.mean() for f in decode_frames(_clip(tmp_path / "lo.mp4", 16), quantisers=True)]
    hi = [f.qp.values.mean() for f in decode_frames(_clip(tmp_path / "hi.mp4", 40), quantisers=True)]
    assert len(lo) == len(hi) == 5 and max(lo) + 10 < min(hi), (lo, hi)
    clip = _clip(tmp_path / "sar.mp4", 30, Fraction(8, 9))  # 72x48 stored, 72x54 shown
    info = probe(clip)
    for deinterlace in ("off", "frame", "field"):  # through yadif too
        view = plan_view(info, deinterlace, "square")
        seq = list(decode_frames(clip, view=view, quantisers=True))
        assert all(f.qp is None for f in decode_frames(clip, view=view))  # only when asked
        with RandomAccessReader(clip, view=view, quantisers=True) as reader:
            one = next(reader.window(3, 1))
        for f in (seq[3], one):
            assert f.image.shape == (54, 72, 3) and f.qp is not None
            assert f.qp.block == (18.0, 16.0) and f.qp.values.shape == (3, 5)
        assert np.array_equal(seq[3].qp.values, one.qp.values)


def test_streams_without_quantisers_give_none(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = [(rng.random((48, 64, 3)) * 255).astype(np.uint8) for _ in range(3)]
    clip = write_video(tmp_path / "m.ts", "mpegts", "mpeg2video", frames, Fraction(25))
    assert all(f.qp is None for f in decode_frames(clip, quantisers=True))


def test_probe_says_how_coarsely_a_stream_was_coded(tmp_path: Path) -> None:
    """``rmmvideo probe``'s coding line: finely and coarsely coded H.264 by its mean quantiser, and
    a stream without quantisers."""
    from rmmvideo.video.quantiser import describe_coding

    rng = np.random.default_rng(1)
    base = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    frames = [np.ascontiguousarray(np.kron(np.roll(base, t, 1), np.ones((16, 16, 1), np.uint8))) for t in range(6)]
    fine = describe_coding(write_video(tmp_path / "f.mp4", None, "libx264", frames, Fraction(25), crf=5))
    coarse = describe_coding(write_video(tmp_path / "c.mp4", None, "libx264", frames, Fraction(25), crf=45))
    none = describe_coding(write_video(tmp_path / "m.ts", "mpegts", "mpeg2video", frames, Fraction(25)))
    assert fine.startswith("H.264 QP ") and "over 6 frames" in fine and "coded finely" in fine, fine
    assert "coded coarsely" in coarse and "clean and fuse" in coarse, coarse
    assert float(fine.split()[2]) < 26 < 30 < float(coarse.split()[2])
    assert none.startswith("no codec quantisers") and "as decoded" in none


def test_a_10_bit_streams_quantisers_are_on_the_8_bit_scale(tmp_path: Path) -> None:
    """FFmpeg reports a 10-bit H.264 stream's QP 12 higher (H.264's bit-depth offset) than an 8-bit
    stream's coded the same way; the maps read the same, so coarseness means the same for both."""
    rng = np.random.default_rng(2)
    base = (rng.random((6, 8, 3)) * 255).astype(np.uint8)
    frames = [np.ascontiguousarray(np.kron(np.roll(base, t, 1), np.ones((16, 16, 1), np.uint8))) for t in range(6)]
    qp = {}
    for pix_fmt in ("yuv420p", "yuv420p10le"):
        clip = write_video(tmp_path / f"{pix_fmt}.mp4", None, "libx264", frames, Fraction(25), pix_fmt=pix_fmt, crf=20)
        decoded = list(decode_frames(clip, quantisers=True, high_bit_depth=True))
        assert decoded[0].image.dtype == (np.uint16 if pix_fmt.endswith("10le") else np.uint8)
        qp[pix_fmt] = [float(f.qp.values.mean()) for f in decoded]
    assert qp["yuv420p10le"] == qp["yuv420p"] and 10 < np.mean(qp["yuv420p"]) < 30, qp
