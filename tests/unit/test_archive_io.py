"""Archive footage on synthetic clips (no shared data): idet verdicts and telecine signs,
deinterlacing with exact pts, square-pixel views, SAR tagging and resampling in the writer,
lossless audio fallback, monochrome (grey / tinted) detection, `rmmvideo probe`, discovery."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from rmmvideo.errors import UserError
from rmmvideo.video.archive import (
    FieldScan,
    _cadence_telecine,
    archive_facts,
    archive_note,
    auto_deinterlace,
    plan_view,
    resolve_deinterlace,
    scan_fields,
    square_size,
)
from rmmvideo.video.io import VideoWriter, decode_frames, probe, transcode_upscale
from rmmvideo.video.probe import monochrome_kind
from tests.conftest import synthetic_image
from tests.integration.archive_clips import (
    audio_samples,
    comb_energy,
    decode_all,
    weave,
    write_video,
)


def _moving(n: int, w: int = 352, h: int = 288) -> list[np.ndarray]:
    """Frames with clear motion between consecutive frames (a bar sweeping over a pattern)."""
    out = []
    for i in range(n):
        img = synthetic_image(3 * i, w, h)
        x = (i * 9) % (w - 40)
        img[:, x:x + 40] = 255 - img[:, x:x + 40]
        out.append(img)
    return out


def _interlaced(tmp: Path, top_first: bool, n: int = 12) -> tuple[Path, Path]:
    """(interlaced MPEG-2 .ts, progressive twin .ts holding each frame's first field's picture)."""
    src = _moving(2 * n)
    woven = [weave(src[2 * k], src[2 * k + 1], top_first) for k in range(n)]
    i = write_video(tmp / f"i_{'tff' if top_first else 'bff'}.ts", "mpegts", "mpeg2video", woven, Fraction(25),
                    interlaced_top=top_first)
    p = write_video(tmp / "p.ts", "mpegts", "mpeg2video", [src[2 * k] for k in range(n)], Fraction(25))
    return i, p


# ----------------------------------------------------------------------------- geometry


def test_square_size_never_drops_samples() -> None:
    assert square_size(720, 480, Fraction(8, 9)) == (720, 540)  # NTSC 4:3: taller
    assert square_size(720, 576, Fraction(16, 15)) == (768, 576)  # PAL 4:3: wider
    assert square_size(720, 480, Fraction(32, 27)) == (854, 480)  # NTSC 16:9, rounded to even
    assert square_size(720, 576, Fraction(1)) == (720, 576)
    with pytest.raises(ValueError):
        square_size(720, 576, Fraction(0))


def test_plan_view_sar_and_rotation(tmp_path: Path) -> None:
    import dataclasses

    clip = write_video(tmp_path / "a.mp4", None, "libx264", _moving(4, 72, 48), Fraction(25), sar=Fraction(8, 9))
    info = probe(clip)
    assert info.sar == Fraction(8, 9) and info.display_aspect == Fraction(4, 3)
    view = plan_view(info, "off", "square")
    assert (view.width, view.height, view.decode_size) == (72, 54, (72, 54))
    assert view.output_geometry(info, 2.0) == (144, 108, Fraction(1))
    assert plan_view(info, "off", "keep").output_geometry(info, 2.0) == (144, 96, Fraction(8, 9))
    turned = dataclasses.replace(info, width=48, height=72, rotation=90)
    tv = plan_view(turned, "off", "keep")
    assert (tv.width, tv.height) == (54, 72)  # upright square size
    assert tv.output_geometry(turned, 1.0) == (48, 72, Fraction(9, 8))
    with pytest.raises(ValueError):
        plan_view(info, "off", "stretch")


def test_writer_tags_sar_and_resamples_kept_sar(tmp_path: Path) -> None:
    out = tmp_path / "o.mp4"
    with VideoWriter(out, width=72, height=48, time_base=Fraction(1, 25), sar=Fraction(8, 9),
                     input_size=(72, 54), preset="ultrafast") as w:
        with pytest.raises(ValueError, match="54, 72, 3"):
            w.write(np.zeros((48, 72, 3), np.uint8), 0)
        for i, img in enumerate(_moving(3, 72, 54)):
            w.write(img, i)
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert (vs.codec_context.width, vs.codec_context.height) == (72, 48)
        assert vs.sample_aspect_ratio == Fraction(8, 9) and vs.display_aspect_ratio == Fraction(4, 3)


def test_anamorphic_decode_is_square_and_upscale_keeps_display_aspect(tmp_path: Path) -> None:
    clip = write_video(tmp_path / "a.mp4", None, "libx264", _moving(5, 72, 48), Fraction(25), sar=Fraction(8, 9))
    info = probe(clip)
    view = plan_view(info, "auto", "square")
    frames = list(decode_frames(clip, view=view))
    assert len(frames) == 5 and frames[0].image.shape == (54, 72, 3)
    with VideoWriter.for_input(info, tmp_path / "o.mkv", 2.0, view=view, preset="ultrafast") as w:
        for f in frames:
            w.write(np.zeros((108, 144, 3), np.uint8), f.pts)
    with av.open(str(tmp_path / "o.mkv")) as c:
        vs = c.streams.video[0]
        assert Fraction(vs.codec_context.width, vs.codec_context.height) == info.display_aspect


# ----------------------------------------------------------------------------- interlacing


@pytest.mark.parametrize("top_first", [True, False], ids=["tff", "bff"])
def test_idet_finds_field_order(tmp_path: Path, top_first: bool) -> None:
    inter, prog = _interlaced(tmp_path, top_first)
    scan = scan_fields(inter)
    assert scan.verdict == ("tff" if top_first else "bff"), scan
    t, b, _, _ = scan.reversed_votes or (0, 0, 0, 0)  # played backwards: the other field order
    assert (b if top_first else t) >= 0.9 * (scan.tff if top_first else scan.bff), scan
    assert scan_fields(prog).verdict == "progressive"
    info = probe(inter)
    assert info.interlaced_frames and info.codec == "mpeg2video"
    view = plan_view(info, "auto")
    assert (view.deinterlace, view.parity) == ("frame", "tff" if top_first else "bff")
    assert plan_view(probe(prog), "auto").deinterlace == "off"
    assert (auto_deinterlace(inter), auto_deinterlace(prog)) == ("frame", "off")


def test_deinterlace_frame_and_field_pts_exact(tmp_path: Path) -> None:
    inter, prog = _interlaced(tmp_path, True)
    info = probe(inter)
    _, pin, tb = decode_all(inter)
    frame_view = plan_view(info, "frame")
    frames = list(decode_frames(inter, view=frame_view))
    assert [f.pts for f in frames] == pin and frame_view.time_base == tb
    combed = comb_energy(decode_all(inter)[0])
    clean = comb_energy([f.image for f in frames])
    ref = comb_energy(decode_all(prog)[0])
    # smooth synthetic content: the progressive twin's energy is tiny (~1.4), combing's ~850
    assert combed > 100 * ref and clean <= 1.5 * ref, (combed, clean, ref)
    field_view = plan_view(info, "field")
    fields = list(decode_frames(inter, view=field_view))
    assert field_view.time_base == tb / 2 and field_view.rate == 2 * info.average_rate
    step = pin[1] - pin[0]
    assert [f.pts for f in fields] == [q for p in pin for q in (2 * p, 2 * p + step)]
    assert [f.time for f in fields][::2] == [float(p * tb) for p in pin]


def test_resolve_deinterlace_idet_wins_over_flags(tmp_path: Path) -> None:
    import dataclasses

    info = probe(write_video(tmp_path / "p.mp4", None, "libx264", _moving(3, 64, 48), Fraction(25)))
    scan = lambda t, b, p: FieldScan(30, t, b, p, 0, 0, None)
    flagged = dataclasses.replace(info, field_order="tt", interlaced_frames=True)
    assert resolve_deinterlace(flagged, "auto", scan(0, 0, 29))[0] == "off"  # PsF: flagged, not combed
    assert resolve_deinterlace(info, "auto", scan(2, 25, 2))[:2] == ("frame", "bff")  # combed, flagged progressive
    assert resolve_deinterlace(dataclasses.replace(info, field_order="bb"), "auto", scan(5, 5, 5))[:2] == ("frame", "bff")
    assert resolve_deinterlace(info, "auto", scan(5, 5, 5))[0] == "off"
    # idet's order must survive time reversal: bff forward and bff (or nothing) backwards is not
    # a field order, so the flags decide
    fake = dataclasses.replace(scan(0, 46, 0), reversed_votes=(1, 0, 0, 46))
    assert (fake.forward_verdict, fake.verdict) == ("bff", "undetermined")
    assert resolve_deinterlace(info, "auto", fake)[0] == "off"
    assert resolve_deinterlace(dataclasses.replace(info, field_order="bb"), "auto", fake)[:2] == ("frame", "bff")
    real = dataclasses.replace(scan(0, 46, 0), reversed_votes=(44, 0, 0, 2))
    assert real.verdict == "bff" and resolve_deinterlace(info, "auto", real)[:2] == ("frame", "bff")
    assert dataclasses.replace(scan(40, 0, 0), reversed_votes=(0, 10, 0, 36)).verdict == "undetermined"
    assert resolve_deinterlace(info, "field", None)[0] == "field"
    with pytest.raises(ValueError):
        resolve_deinterlace(info, "weave", None)


def test_telecine_signs(tmp_path: Path) -> None:
    # hard 3:2: film frames A B C D -> video frames A, B, B|C, C|D, D (top|bottom fields):
    # frame 3 repeats B's top field, frame 5 D's bottom field
    film = _moving(24)
    out = []
    for k in range(0, 24, 4):
        a, b, c, d = film[k:k + 4]
        out += [a, b, weave(b, c, True), weave(c, d, True), d]
    hard = write_video(tmp_path / "hard.ts", "mpegts", "mpeg2video", out, Fraction(30), interlaced_top=True)
    assert scan_fields(hard).telecine == "hard 3:2"
    assert scan_fields(write_video(tmp_path / "plain.ts", "mpegts", "mpeg2video", film, Fraction(24))).telecine is None
    # soft 3:2: frame durations alternating 1.5 and 1 frame (repeat-field flags), as MPEG-2 demuxers report
    assert not _cadence_telecine(list(np.cumsum([0] + [3003, 4504, 3003, 3003, 4504, 2002] * 3)))  # irregular VFR
    assert _cadence_telecine([sum(4504 if j % 2 == 0 else 3003 for j in range(k)) for k in range(20)])
    assert not _cadence_telecine([3003 * k for k in range(20)])


# ----------------------------------------------------------------------------- audio


def _with_audio(tmp: Path, codec: str, sample_format: str, fmt: str, name: str) -> Path:
    t = np.arange(48000 * 5 // 25)  # as long as the 5 video frames
    x = (np.sin(t * 0.05) * 8000).astype(np.int16)
    return write_video(tmp / name, fmt, "dvvideo" if fmt in ("avi", "dv") else "mpeg2video",
                       _moving(5, 720, 576), Fraction(25), audio=(codec, np.stack([x, x]), sample_format))


def test_pcm_into_mp4_reencoded_flac_sample_identical(tmp_path: Path) -> None:
    src = _with_audio(tmp_path, "pcm_s16le", "s16", "avi", "dv.avi")
    res = transcode_upscale(src, tmp_path / "o.mp4", 0.25, preset="ultrafast")
    with av.open(str(res.output)) as c:
        assert c.streams.audio[0].codec_context.name == "flac"
    assert np.array_equal(audio_samples(res.output), audio_samples(src))
    with VideoWriter(tmp_path / "n.mp4", width=16, height=16, time_base=Fraction(1, 25), source=src) as w:
        assert w.audio_notes == ["audio #1 (pcm_s16le) cannot be copied into .mp4: re-encoded losslessly as flac"]
        w.write(np.zeros((16, 16, 3), np.uint8), 0)


def test_transcode_upscale_with_a_view(tmp_path: Path) -> None:
    inter, _ = _interlaced(tmp_path, True, n=6)
    view = plan_view(probe(inter), "field", "square")
    res = transcode_upscale(inter, tmp_path / "o.mp4", 1.0, preset="ultrafast", view=view)
    _, pout, tbout = decode_all(res.output)
    _, pin, tbin = decode_all(inter)
    assert res.frames == 12 and [p * tbout for p in pout][::2] == [p * tbin for p in pin]


def test_raw_dv_into_mp4(tmp_path: Path) -> None:
    # raw DV reports an average rate of 60000/s for 25 frames/s: the mp4 muxer refused the file
    # at its trailer until probe fell back to the guessed rate
    src = _with_audio(tmp_path, "pcm_s16le", "s16", "dv", "tape.dv")
    assert probe(src).average_rate == 25
    res = transcode_upscale(src, tmp_path / "o.mp4", 0.25, preset="ultrafast")
    assert res.frames == 5
    assert np.array_equal(audio_samples(res.output), audio_samples(src))


def test_archive_facts_and_note(tmp_path: Path) -> None:
    src = _with_audio(tmp_path, "pcm_s16le", "s16", "avi", "dv.avi")
    facts = archive_facts(src, ".mp4")
    assert facts["audio"] == ["#1 pcm_s16le: re-encoded losslessly as flac"]
    assert archive_facts(src, ".mov")["audio"] == ["#1 pcm_s16le: copied"]
    assert "re-encoded losslessly as flac" in archive_note(facts)
    plain = write_video(tmp_path / "p.mp4", None, "libx264", _moving(3, 64, 48), Fraction(25))
    assert archive_note(archive_facts(plain, ".mp4")) == ""


def test_float_pcm_into_mp4_is_a_one_line_error(tmp_path: Path) -> None:
    t = np.arange(48000 * 5 // 25)
    x = (np.sin(t * 0.05) * 8000).astype(np.int16)
    src = write_video(tmp_path / "f.mkv", None, "libx264", _moving(5, 64, 48), Fraction(25),
                      audio=("pcm_f32le", np.stack([x, x]), "flt"))
    with pytest.raises(UserError, match="cannot be stored losslessly in an .mp4 file: use .mkv or .mov") as e:
        transcode_upscale(src, tmp_path / "o.mp4", 1.0, preset="ultrafast")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "o.mp4").exists()
    res = transcode_upscale(src, tmp_path / "o.mkv", 1.0, preset="ultrafast")  # copied there
    assert np.array_equal(audio_samples(res.output), audio_samples(src))


# ----------------------------------------------------------------------------- monochrome


def test_monochrome_kind() -> None:
    rng = np.random.default_rng(0)
    colour = synthetic_image(0, 128, 96)
    y = colour.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    grain = y + rng.normal(0, 2.0, y.shape)
    grey = np.repeat(np.clip(grain, 0, 255)[..., None], 3, -1).astype(np.uint8)
    sepia = np.clip(np.stack([grain + 12, grain * 0.86 + 8, grain * 0.66 + 4], -1), 0, 255).astype(np.uint8)
    assert monochrome_kind(colour) == "colour"
    assert monochrome_kind(grey) == "grey"
    assert monochrome_kind(sepia) == "tinted"
    half = sepia.copy()
    half[:, :64] = colour[:, :64]
    assert monochrome_kind(half) == "colour"


# ----------------------------------------------------------------------------- CLI and discovery


def test_probe_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rmmvideo.cli.main import main

    inter, _ = _interlaced(tmp_path, True)
    assert main(["probe", str(inter), "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    assert r["idet"]["verdict"] == "tff" and r["deinterlace_auto"] == "frame" and r["container"] == "mpegts"
    assert r["sar"] == "1" and r["display_aspect"] == "11/9" and r["monochrome"] == "no"
    assert r["coding"].startswith("no codec quantisers")  # MPEG-2: the auto modes leave its faces alone
    assert main(["probe", str(inter)]) == 0
    assert "deinterlace_auto: frame" in capsys.readouterr().out
    bad = tmp_path / "notes.txt"
    bad.write_text("not a video")
    assert main(["probe", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("rmmvideo: error:") and "\n" not in err


def test_batch_discovers_archive_containers(tmp_path: Path) -> None:
    from rmmvideo.batch.discover import discover

    folder = tmp_path / "in"
    folder.mkdir()
    frames = _moving(3, 64, 48)
    for name, fmt, codec in [("a.ts", "mpegts", "mpeg2video"), ("b.m2ts", "mpegts", "mpeg2video"),
                             ("c.mpg", "mpeg", "mpeg2video"), ("d.vob", "vob", "mpeg2video"),
                             ("e.avi", "avi", "mpeg2video")]:
        write_video(folder / name, fmt, codec, frames, Fraction(25))
    write_video(folder / "f.dv", "dv", "dvvideo", _moving(3, 720, 576), Fraction(25))
    jobs = discover([folder], tmp_path / "out")
    assert sorted(j.key for j in jobs) == ["a.mp4", "b.mp4", "c.mp4", "d.mp4", "e.mp4", "f.mp4"]
    assert all(j.error is None for j in jobs)
