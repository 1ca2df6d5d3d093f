"""Issue 17, archive footage, end to end on clips built from a real talking-head clip
(`archive_clips`): interlaced 576i MPEG-2 (.ts, MP2), its progressive twin (AC-3), anamorphic
720x480 H.264 at SAR 8:9, PAL DV .avi (SAR 16:15, bff, PCM), grey and sepia clips with grain.

Targets: no combing after restoration (comb energy within 1.1x of the restored progressive
twin's), faces found in >= 95 % of frames, face geometry of the anamorphic clip matching the
square-pixel source, display aspect kept, pts exact, audio kept (packet-identical when copied,
sample-identical when re-encoded losslessly), monochrome kept monochrome.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from tests.integration import archive_clips as clips

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def source(shared_data: Path) -> Path:
    src = shared_data / "videos" / clips.SOURCE
    if not src.is_file():
        pytest.skip(f"{src} not found")
    return src


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("archive")


@pytest.fixture(scope="module")
def comps():
    from rmmvideo.video.options import RestoreOptions, build_components

    return build_components(RestoreOptions(quiet=True))


def _options(**kw):
    from rmmvideo.video.options import RestoreOptions

    return RestoreOptions(**({"scale": 1.0, "quiet": True, "preset": "ultrafast", "crf": 12} | kw))


def _restore(src: Path, out: Path, comps, **kw) -> Path:
    from rmmvideo.video.pipeline import restore_video

    restore_video(src, out, _options(**kw), components=comps)
    return out


def _face_share(src: Path, comps, **kw) -> float:
    """Share of the decoded frames in which the pipeline's tracker has a face."""
    from rmmvideo.video.pipeline import analyze_video

    table = analyze_video(src, _options(**kw), components=comps)
    return sum(bool(f) for f in table.faces.values()) / table.frames


# ----------------------------------------------------------------------------- interlaced


@pytest.fixture(scope="module")
def interlaced(source: Path, work: Path):
    return clips.interlaced_576i(source, work)


def test_interlaced_restored_without_combing(interlaced, work: Path, comps) -> None:
    inter, prog, _ = interlaced
    ref = _restore(prog, work / "prog_out.mp4", comps)
    auto = _restore(inter, work / "inter_auto.mp4", comps)
    off = _restore(inter, work / "inter_off.mp4", comps, deinterlace="off")
    e_ref = clips.comb_energy(clips.decode_all(ref)[0])
    e_auto = clips.comb_energy(clips.decode_all(auto)[0])
    e_off = clips.comb_energy(clips.decode_all(off)[0])
    assert e_auto <= 1.1 * e_ref, (e_auto, e_ref)
    assert e_off > 1.3 * e_ref, (e_off, e_ref)  # the metric sees the combing bwdif removed
    assert _face_share(inter, comps) >= 0.95


def test_interlaced_pts_and_mp2_audio_exact(interlaced, work: Path, comps) -> None:
    inter, _, _ = interlaced
    out = work / "inter_auto.mp4"
    if not out.exists():
        _restore(inter, out, comps)
    _, pin, tbin = clips.decode_all(inter)
    _, pout, tbout = clips.decode_all(out)
    assert [p * tbin for p in pin] == [p * tbout for p in pout]
    assert clips.audio_packets(out) == clips.audio_packets(inter)  # MP2 copied into mp4


def test_field_rate_doubles_frames_with_field_pts(interlaced, work: Path, comps) -> None:
    inter, _, _ = interlaced
    out = _restore(inter, work / "inter_field.mkv", comps, deinterlace="field")
    _, pin, tbin = clips.decode_all(inter)
    _, pout, tbout = clips.decode_all(out)
    times = [p * tbin for p in pin]
    step = times[1] - times[0]
    want = [t for a in times for t in (a, a + step / 2)]
    assert len(pout) == 2 * len(pin)
    got = [p * tbout for p in pout]  # Matroska stores milliseconds
    assert max(abs(float(g - w)) for g, w in zip(got, want)) <= 0.0005


def test_progressive_twin_ac3_copied(interlaced, work: Path, comps) -> None:
    _, prog, _ = interlaced
    out = work / "prog_out.mp4"
    if not out.exists():
        _restore(prog, out, comps)
    assert clips.audio_packets(out) == clips.audio_packets(prog)


@pytest.mark.parametrize("n", [0, 9])
def test_preview_shows_the_deinterlaced_frame_that_run_writes(interlaced, work: Path, comps, n: int) -> None:
    from rmmvideo.video.preview import render_preview

    inter, _, _ = interlaced
    out = work / "inter_auto.mkv"
    if not out.exists():
        _restore(inter, out, comps, codec="ffv1")
    ran = clips.decode_all(out)[0][n]
    res = render_preview(inter, index=n, options=_options(codec="ffv1"), components=comps)
    stored = render_preview(inter, index=n, options=_options(codec="ffv1", deinterlace="off"), components=comps)
    assert res.restored.shape == ran.shape
    # the same deinterlaced frame as run's (only the restoration's float rounding may differ)
    assert np.abs(res.restored.astype(int) - ran).max() <= 2
    assert np.array_equal(res.upscaled, res.restored)  # auto strength: the plain upscale, bit for bit
    assert clips.comb_energy([stored.upscaled]) > 1.3 * clips.comb_energy([res.upscaled])


def test_preview_at_field_rate_shows_run_s_fields(interlaced, work: Path, comps) -> None:
    from rmmvideo.video.preview import render_preview

    inter, _, _ = interlaced
    out = _restore(inter, work / "inter_field_ffv1.mkv", comps, deinterlace="field", codec="ffv1")
    ran = clips.decode_all(out)[0]
    assert len(ran) == 40
    opts = _options(codec="ffv1", deinterlace="field")
    for n in (0, 1, 17, 39):  # first and second fields, mid-clip, the last field
        res = render_preview(inter, index=n, options=opts, components=comps)
        assert res.info.index == n
        assert np.abs(res.restored.astype(int) - ran[n]).max() <= 2, n
    # --at counts field times: the second field of stored frame 3 starts 3.5 frames in (15 fps)
    assert render_preview(inter, time=3.5 / 15 + 0.001, options=opts, components=comps).info.index == 7


# ----------------------------------------------------------------------------- anamorphic


@pytest.fixture(scope="module")
def anamorphic(source: Path, work: Path):
    return clips.anamorphic_480(source, work)


def _landmarks(images: list[np.ndarray]) -> list[np.ndarray | None]:
    from rmmvideo.video.detect import DlibDetector

    det = DlibDetector()
    return [d[0].landmarks if d else None for d in det.detect(images)]


def test_anamorphic_square_output_keeps_display_aspect_and_face_geometry(anamorphic, work: Path, comps) -> None:
    import av

    src, display = anamorphic
    out = _restore(src, work / "ana_square.mp4", comps, scale=2.0)
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        w, h, sar = vs.codec_context.width, vs.codec_context.height, vs.sample_aspect_ratio
    assert (sar is None or sar == 1) and Fraction(w, h) == Fraction(4, 3)  # 1440x1080, square pixels
    assert _face_share(src, comps) >= 0.95
    frames = clips.decode_all(out)[0]
    got = _landmarks(frames[::4])
    ref = _landmarks(display[::4])
    errs = []
    for g, r in zip(got, ref):
        assert g is not None and r is not None
        r_out = r * (w / 640.0)  # reference display frames are 640x480
        iod = np.linalg.norm(r_out[36:42].mean(0) - r_out[42:48].mean(0))
        errs.append(np.linalg.norm(g - r_out, axis=1).mean() / iod)
    # measured (measure_archive): 0.007 of the inter-ocular distance; with the SAR ignored
    # (the stored pixels shown square) 0.062
    assert float(np.mean(errs)) < 0.03, errs


def test_preview_of_anamorphic_input_is_in_square_pixels(anamorphic, work: Path, comps) -> None:
    from rmmvideo.video.preview import render_preview

    src, _ = anamorphic
    out = _restore(src, work / "ana_square_x1.mkv", comps, codec="ffv1")
    ran = clips.decode_all(out)[0][5]
    res = render_preview(src, index=5, options=_options(codec="ffv1"), components=comps)
    assert res.restored.shape == ran.shape == (540, 720, 3)  # 720x480 stored at SAR 8:9: 4:3 square pixels
    assert np.abs(res.restored.astype(int) - ran).max() <= 2


def test_anamorphic_keep_sar(anamorphic, work: Path, comps) -> None:
    import av

    src, _ = anamorphic
    out = _restore(src, work / "ana_keep.mp4", comps, scale=2.0, sar="keep")
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        assert (vs.codec_context.width, vs.codec_context.height) == (1440, 960)
        assert vs.sample_aspect_ratio == Fraction(8, 9)
        assert vs.display_aspect_ratio == Fraction(4, 3)
    assert clips.audio_packets(out) == clips.audio_packets(src)
    _, pin, tbin = clips.decode_all(src)
    _, pout, tbout = clips.decode_all(out)
    assert [p * tbin for p in pin] == [p * tbout for p in pout]


# ----------------------------------------------------------------------------- DV


@pytest.fixture(scope="module")
def dv(source: Path, work: Path):
    return clips.dv_pal(source, work)


def test_dv_avi_to_mp4_flac_sample_identical_and_4_3(dv, work: Path, comps) -> None:
    import av

    src, _ = dv
    out = _restore(src, work / "dv.mp4", comps)
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "flac"
        vs = c.streams.video[0]
        assert Fraction(vs.codec_context.width, vs.codec_context.height) == Fraction(4, 3)  # 768x576
    assert np.array_equal(clips.audio_samples(out), clips.audio_samples(src))
    _, pin, tbin = clips.decode_all(src)
    _, pout, tbout = clips.decode_all(out)
    assert [p * tbin for p in pin] == [p * tbout for p in pout]
    assert clips.comb_energy(clips.decode_all(out)[0]) < 0.8 * clips.comb_energy(
        clips.decode_all(_restore(src, work / "dv_off.mp4", comps, deinterlace="off"))[0])


def test_dv_avi_to_mov_copies_pcm(dv, work: Path, comps) -> None:
    import av

    src, _ = dv
    out = _restore(src, work / "dv.mov", comps)
    # copied: the same PCM bytes (mov stores PCM in chunks of its own size, so packets regroup)
    assert b"".join(clips.audio_packets(out)) == b"".join(clips.audio_packets(src))
    with av.open(str(out)) as c:
        assert c.streams.audio[0].codec_context.name == "pcm_s16le"


# ----------------------------------------------------------------------------- monochrome


@pytest.mark.parametrize("sepia", [False, True], ids=["grey", "sepia"])
def test_monochrome_with_grain_stays_monochrome(source: Path, work: Path, comps, sepia: bool) -> None:
    from rmmvideo.video.probe import monochrome_kind, probe

    src, _ = clips.monochrome_grain(source, work, sepia=sepia)
    info = probe(src)
    assert info.is_gray and info.tinted == sepia
    out = _restore(src, work / f"mono_{sepia}.mp4", comps)
    restored = clips.decode_all(out)[0]
    for img in restored[::3]:
        small = clips.resize(img, 128, 128)
        assert monochrome_kind(small) == ("tinted" if sepia else "grey")


def test_batch_report_says_what_was_done(dv, interlaced, work: Path) -> None:
    import json
    import shutil

    from rmmvideo.cli.main import main

    folder = work / "batch-in"
    folder.mkdir(exist_ok=True)
    shutil.copy(dv[0], folder / "dv_pal.avi")
    shutil.copy(interlaced[0], folder / "tape.ts")
    out = work / "batch-out"
    assert main(["batch", str(folder), "--out", str(out), "--scale", "1", "--preset", "ultrafast", "--quiet"]) == 0
    results = {Path(r["input"]).name: r for r in json.loads((out / "report.json").read_text())["results"]}
    dvr, tsr = results["dv_pal.avi"]["archive"], results["tape.ts"]["archive"]
    assert (dvr["scan"], dvr["deinterlace"], dvr["sar"], dvr["restored_at"]) == ("bff", "frame", "16/15", "768x576")
    assert dvr["audio"] == ["#1 pcm_s16le: re-encoded losslessly as flac"]
    assert (tsr["scan"], tsr["field_order"], tsr["deinterlace"]) == ("tff", "bb", "frame")
    assert tsr["audio"] == ["#1 mp2: copied"]


def test_small_compressed_progressive_clip_is_not_deinterlaced(shared_data: Path, work: Path) -> None:
    """idet alone calls this progressive clip bff (the eval-video degradation of a shared clip:
    /6 to 140x140, x264 CRF 30): yadif then cost its face 0.3 dB. Played backwards its frames
    do not vote tff, so the field order is not confirmed and the flags (progressive) decide."""
    from rmmvideo.eval.video import _decode, crop_to_multiple, degrade_clip
    from rmmvideo.video.archive import plan_view, scan_fields
    from rmmvideo.video.io import probe

    src = shared_data / "videos" / "talking_844sq_25fps_audio.mp4"
    if not src.is_file():
        pytest.skip(f"{src} not found")
    hq, pts = _decode(src, 48)
    lq = work / "844sq_x6_crf30.mp4"
    degrade_clip([np.ascontiguousarray(crop_to_multiple(f, 12)) for f in hq], pts, probe(src), lq, 6, 30)
    scan = scan_fields(lq)
    assert scan.forward_verdict == "bff" and scan.reversed_votes is not None, scan  # idet's false vote
    assert scan.verdict == "undetermined" and "not confirmed" in scan.line(), scan
    view = plan_view(probe(lq), "auto")
    assert view.deinterlace == "off", view.reason


@pytest.mark.parametrize("top_first", [True, False], ids=["tff", "bff"])
def test_combed_h264_flagged_progressive_is_deinterlaced(source: Path, work: Path, top_first: bool) -> None:
    """Woven real frames encoded as progressive H.264 at CRF 30 (a transcode that kept the
    combing): idet's order is confirmed by the reversed frames, and the clip is deinterlaced."""
    from rmmvideo.video.archive import plan_view, scan_fields
    from rmmvideo.video.io import probe

    raw = clips.source_frames(source, 48)
    woven = [clips.weave(raw[2 * k], raw[2 * k + 1], top_first) for k in range(24)]
    path = clips.write_video(work / f"combed_{top_first}.mp4", None, "libx264", woven, Fraction(25), crf=30)
    scan = scan_fields(path)
    order = "tff" if top_first else "bff"
    assert scan.verdict == order and scan.reversed_votes is not None, scan
    assert "field order confirmed" in scan.line()
    view = plan_view(probe(path), "auto")
    assert (view.deinterlace, view.parity) == ("frame", order), view.reason


def test_upscale_engine_deinterlaces_as_run_does_whole_and_in_segments(source: Path, work: Path, comps) -> None:
    """batch --engine upscale on combed H.264 (mp4): the same deinterlaced frames as `run` at
    strength 0 (the plain upscale), and a segment equal to the whole file's frames (its copy
    starts at the frame before the range, which the deinterlacer reads)."""
    from rmmvideo.batch.engine import render_segment, restore_file
    from rmmvideo.video.pipeline import restore_video

    raw = clips.source_frames(source, 48)
    woven = [clips.weave(raw[2 * k], raw[2 * k + 1], True) for k in range(24)]
    path = clips.write_video(work / "combed_engine.mp4", None, "libx264", woven, Fraction(25), crf=18)
    opts = _options(codec="ffv1")
    whole = restore_file("upscale", path, work / "engine_whole.mkv", opts)
    assert whole["frames"] == 24
    ran = restore_video(path, work / "engine_run.mkv", opts, components=comps)
    assert ran.frames == 24
    up, pts, _ = clips.decode_all(work / "engine_whole.mkv")
    rmm = clips.decode_all(work / "engine_run.mkv")[0]
    assert max(int(np.abs(a.astype(int) - b).max()) for a, b in zip(up, rmm)) <= 1
    stored = clips.decode_all(path)[0]
    assert clips.comb_energy(up) < 0.7 * clips.comb_energy(stored)
    _, src_pts, _ = clips.decode_all(path)
    seg = render_segment("upscale", path, work / "engine_seg.mkv", opts, None, src_pts[10], src_pts[17])
    assert seg["frames"] == 7
    got = clips.decode_all(work / "engine_seg.mkv")[0]
    assert all(np.array_equal(a, b) for a, b in zip(got, up[10:17]))
