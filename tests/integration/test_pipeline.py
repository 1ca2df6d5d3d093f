"""End-to-end tests of the streaming pipeline (rmmvideo.video.pipeline / `rmmvideo run`).

A tiny randomly initialised RMM (with a few memory slots filled, so slot pinning is exercised)
keeps these fast; what is tested is the pipeline: tracking, conditioning, compositing,
timestamps, audio, sizes, bad input. Lossless FFV1 output makes pixel comparisons exact."""

from __future__ import annotations

import hashlib
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from conftest_faces import FaceState, render  # noqa: E402

from rmmvideo.cli.main import main  # noqa: E402
from rmmvideo.errors import UserError  # noqa: E402
from rmmvideo.video.options import RestoreOptions, build_components  # noqa: E402
from rmmvideo.video.pipeline import analyze_video, render_video, restore_video  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- helpers


def encode_frames(path: Path, frames: list[np.ndarray], rate: int = 25, codec: str = "libx264") -> Path:
    import av

    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=rate)
        vs.height, vs.width = frames[0].shape[:2]
        vs.pix_fmt = "yuv420p"
        if codec == "libx264":
            vs.options = {"crf": "10", "preset": "ultrafast"}
        for i, img in enumerate(frames):
            f = av.VideoFrame.from_ndarray(img, format="rgb24")
            f.pts = i
            f.time_base = Fraction(1, rate)
            for p in vs.encode(f):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return path


def decode_all(path: Path) -> tuple[list[np.ndarray], list[int]]:
    import av

    imgs, pts = [], []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            imgs.append(f.to_ndarray(format="rgb24"))
            pts.append(int(f.pts))
    return imgs, pts


def packets_md5(path: Path, kind: str) -> tuple[int, str]:
    import av

    h = hashlib.md5()
    n = 0
    with av.open(str(path)) as c:
        streams = [s for s in c.streams if s.type == kind]
        if not streams:
            return 0, ""
        for p in c.demux(streams[0]):
            if p.size == 0:
                continue
            h.update(bytes(p))
            n += 1
    return n, h.hexdigest()


def two_face_states(i: int) -> list[FaceState | None]:
    """Face A walks right and grows; face B (mirrored) enters at frame 4 and walks left."""
    a = FaceState(x=20 + 9 * i, y=60, scale=0.8 + 0.01 * i, mirrored=False)
    b = FaceState(x=520 - 6 * i, y=110, scale=0.75, mirrored=True) if i >= 4 else None
    return [a, b]


@pytest.fixture(scope="module")
def two_face_clip(tmp_path_factory) -> tuple[Path, list[list[np.ndarray | None]]]:
    frames, gts = [], []
    for i in range(20):
        img, gt = render(two_face_states(i), size=(360, 720))
        frames.append(img)
        gts.append(gt)
    path = encode_frames(tmp_path_factory.mktemp("clip") / "two_faces.mp4", frames)
    return path, gts


def opts(weights: Path, **kw: object) -> RestoreOptions:
    base = dict(weights=str(weights), detector="dlib", quiet=True, codec="ffv1", preset="ultrafast",
                detect_every=2, strength=1.0)  # 1: the random model's detail is pasted (auto may say 0)
    base.update(kw)
    return RestoreOptions(**base)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- synthetic faces


def test_two_faces_tracks_restored_and_background_untouched(two_face_clip, tiny_weights, tmp_path):
    from rmmvideo.video.io import transcode_upscale

    clip, gts = two_face_clip
    out = tmp_path / "restored.mkv"
    summary = restore_video(clip, out, opts(tiny_weights, scale=2))
    assert summary.frames == 20
    assert summary.tracks == 2
    plain = tmp_path / "plain.mkv"
    transcode_upscale(clip, plain, 2, codec="ffv1")
    got, pts_out = decode_all(out)
    ref, pts_ref = decode_all(plain)
    assert pts_out == pts_ref and len(got) == 20
    assert got[0].shape == (720, 1440, 3)
    changed_inside = 0
    for i, (g, r, gt) in enumerate(zip(got, ref, gts)):
        face_zone = np.zeros(g.shape[:2], bool)
        for lm in gt:
            if lm is None:
                continue
            c = lm.mean(0) * 2 + 0.5
            half = (lm.max(0) - lm.min(0)).max() * 2 * 1.3  # generous: the mask's whole support
            x0, y0 = np.maximum(0, (c - half).astype(int))
            x1, y1 = (c + half).astype(int)
            face_zone[y0:y1, x0:x1] = True
            inside = np.abs(g[int(c[1]) - 10:int(c[1]) + 10, int(c[0]) - 10:int(c[0]) + 10].astype(int)
                            - r[int(c[1]) - 10:int(c[1]) + 10, int(c[0]) - 10:int(c[0]) + 10].astype(int))
            changed_inside += int(inside.max() > 2)
        # Background (away from every face) equals the plain upscale exactly.
        assert np.array_equal(g[~face_zone], r[~face_zone]), f"background changed in frame {i}"
    assert changed_inside >= 30  # the faces themselves were restored (changed) in most frames


def test_track_table_ids_are_stable(two_face_clip, tiny_weights):
    clip, gts = two_face_clip
    table = analyze_video(clip, opts(tiny_weights))
    assert table.frames == 20
    assert len(table.styles) == 2
    ids_by_side: dict[str, set[int]] = {"a": set(), "b": set()}
    for i, (pts, faces) in enumerate(sorted(table.faces.items())):
        for f in faces:
            # face A is not mirrored: its image-left eye is left of its nose; match by distance
            d = [np.inf if gt is None else np.abs(f.landmarks68 - gt).mean() for gt in gts[i]]
            ids_by_side["ab"[int(np.argmin(d))]].add(f.track_id)
            assert min(d) < 6.0  # landmarks follow the true face
    assert len(ids_by_side["a"]) == 1 and len(ids_by_side["b"]) == 1
    assert ids_by_side["a"] != ids_by_side["b"]
    assert all(s.slot >= 0 for s in table.styles.values())  # pinned from the filled memory


def test_segments_from_table_equal_single_pass(two_face_clip, tiny_weights, tmp_path):
    clip, _ = two_face_clip
    o = opts(tiny_weights, scale=1, fuse=2)  # fusion and stabiliser both read frames around a segment
    single = tmp_path / "single.mkv"
    restore_video(clip, single, o)
    table = analyze_video(clip, o)
    table.save(tmp_path / "t.npz")
    from rmmvideo.video.pipeline import TrackTable

    table = TrackTable.load(tmp_path / "t.npz")
    comps = build_components(o)
    _, pts = decode_all(clip)
    parts = [render_video(clip, tmp_path / f"seg{k}.mkv", o, table, s, e, audio=False, components=comps)
             for k, (s, e) in enumerate([(None, pts[7]), (pts[7], pts[13]), (pts[13], None)])]
    assert [p.frames for p in parts] == [7, 6, 7]
    whole, _ = decode_all(single)
    segs = [img for k in range(3) for img in decode_all(tmp_path / f"seg{k}.mkv")[0]]
    assert len(segs) == len(whole)
    for a, b in zip(whole, segs):
        assert np.array_equal(a, b)


def test_luma_and_chroma_strengths_reach_the_frames(two_face_clip, tiny_weights, tmp_path):
    """A track's strength weighs its detail's luma and chroma apart, and survives the track table."""
    from rmmvideo.video.io import transcode_upscale
    from rmmvideo.video.pipeline import TrackTable
    from rmmvideo.video.strength import Strength

    clip, _ = two_face_clip
    o = opts(tiny_weights, scale=1, codec="ffv1", bit_depth=10, fuse=0)  # the strengths alone, no fusion
    table = analyze_video(clip, o)
    plain = tmp_path / "plain.mkv"
    transcode_upscale(clip, plain, 1, codec="ffv1", bit_depth=10)
    ref = np.stack(decode_all(plain)[0]).astype(np.float64)
    luma = np.array([0.299, 0.587, 0.114])
    moved = {}
    for name, st in (("chroma", Strength(0.0, 1.0)), ("luma", Strength(1.0, 0.0)), ("both", Strength(0.25, 0.5))):
        for style in table.styles.values():
            style.strength = st
        table.save(tmp_path / f"{name}.npz")
        loaded = TrackTable.load(tmp_path / f"{name}.npz")
        assert {s.strength for s in loaded.styles.values()} == {st}
        out = tmp_path / f"{name}.mkv"
        render_video(clip, out, o, loaded, audio=False)
        diff = np.stack(decode_all(out)[0]).astype(np.float64) - ref
        y = diff @ luma
        moved[name] = (np.abs(y).mean(), np.abs(diff - y[..., None]).mean())  # luma, chroma change
    assert moved["chroma"][1] > 5 * moved["chroma"][0]  # chroma only: the luma stays the upscale's
    assert moved["luma"][0] > 5 * moved["luma"][1]  # luma only: the colour stays the upscale's
    assert 0 < moved["both"][0] < moved["luma"][0] and 0 < moved["both"][1] < moved["chroma"][1]


def test_temporal_track_is_stable_frame_is_not(tiny_weights, tmp_path):
    """A still face: per-track conditioning gives identical restored frames, per-frame not."""
    img, _ = render([FaceState(x=200, y=60, scale=0.9, mirrored=False)], size=(360, 640))
    clip = encode_frames(tmp_path / "still.mkv", [img] * 8, codec="ffv1")  # lossless: equal frames
    results = {}
    for mode in ("track", "frame"):
        out = tmp_path / f"{mode}.mkv"
        restore_video(clip, out, opts(tiny_weights, scale=1, temporal=mode))
        frames, _ = decode_all(out)
        results[mode] = max(np.abs(f.astype(int) - frames[3].astype(int)).max() for f in frames[2:6])
    assert results["track"] == 0
    assert results["frame"] > 0


def test_same_seed_same_output_other_seed_differs(two_face_clip, tiny_weights, tmp_path):
    clip, _ = two_face_clip
    outs = []
    for k, seed in enumerate([3, 3, 4]):
        out = tmp_path / f"s{k}.mkv"
        restore_video(clip, out, opts(tiny_weights, scale=1, seed=seed), max_frames=6)
        outs.append(decode_all(out)[0])
    assert all(np.array_equal(a, b) for a, b in zip(outs[0], outs[1]))
    assert any(not np.array_equal(a, b) for a, b in zip(outs[0], outs[2]))


# ----------------------------------------------------------------------------- real clips


def _clips() -> list[Path]:
    d = REPO.parent / "shared" / "data" / "videos"
    return sorted(d.glob("*.mp4")) if d.is_dir() else []


@pytest.mark.slow
@pytest.mark.parametrize("name", [p.name for p in _clips()] or ["(no shared clips)"])
def test_real_clip_frames_pts_audio_size(name, shared_videos, tiny_weights, tmp_path):
    clip = next(p for p in shared_videos if p.name == name)
    from rmmvideo.video.probe import probe

    info = probe(clip)
    out = tmp_path / "out.mp4"
    summary = restore_video(clip, out, opts(tiny_weights, scale=2, codec="libx264", preset="ultrafast",
                                            detect_every=3))
    assert summary.faces > 0 and summary.tracks >= 1  # every shared clip shows a face
    _, pts_in = decode_all(clip)
    got, pts_out = decode_all(out)
    assert pts_out == pts_in
    assert got[0].shape[:2] == (info.height * 2, info.width * 2)
    assert packets_md5(out, "audio") == packets_md5(clip, "audio")
    if info.has_audio:
        assert packets_md5(out, "audio")[0] > 0


def test_fan_backend_code_path_with_random_weights(shared_videos, tiny_weights, tmp_path):
    """face-alignment's S3FD + FAN with random weights (offline): the code path runs end to end."""
    from face_alignment.detection.sfd.net_s3fd import s3fd
    from face_alignment.models import FAN

    from rmmvideo.video.detect import FAN_FILE, S3FD_FILE

    d = tmp_path / "fa"
    d.mkdir()
    torch.manual_seed(0)
    torch.save(s3fd().state_dict(), d / S3FD_FILE)
    torch.save(FAN(4).state_dict(), d / FAN_FILE)
    clip = next(p for p in shared_videos if p.name.startswith("talking_512"))
    out = tmp_path / "fan.mp4"
    o = opts(tiny_weights, detector="fan", models_dir=str(d), scale=1, codec="libx264")
    comps = build_components(o)  # loads the random weights through make_detector("fan")
    assert comps.detector.name == "fan"
    # Random S3FD finds boxes everywhere: keep only its most confident ones, on small frames,
    # so the random FAN has few crops to do (the code path is the point here).
    comps.detector.threshold, comps.detector.max_side = 0.95, 160
    s = restore_video(clip, out, o, components=comps, max_frames=6)
    assert s.detector == "fan" and s.frames == 6
    assert len(decode_all(out)[0]) == 6


# ----------------------------------------------------------------------------- odd inputs


def test_no_face_video_is_the_plain_upscale(make_clip, tiny_weights, tmp_path):
    from rmmvideo.video.io import transcode_upscale

    clip = make_clip("noface.mp4", width=96, height=64, frames=6, audio=True)
    out = tmp_path / "o.mkv"
    s = restore_video(clip, out, opts(tiny_weights, scale=2))
    assert s.faces == 0 and s.frames == 6
    plain = tmp_path / "p.mkv"
    transcode_upscale(clip, plain, 2, codec="ffv1")
    assert all(np.array_equal(a, b) for a, b in zip(decode_all(out)[0], decode_all(plain)[0]))


@pytest.mark.parametrize("kind", ["odd", "rotated", "tenbit", "gray"])
def test_odd_rotated_tenbit_gray_inputs(kind, make_clip, tiny_weights, tmp_path):
    import av

    kw: dict = {"frames": 5}
    if kind == "odd":
        kw |= {"width": 853, "height": 481, "pix_fmt": "yuv444p"}
    elif kind == "rotated":
        kw |= {"width": 96, "height": 64, "rotation": 90}
    elif kind == "tenbit":
        kw |= {"width": 96, "height": 64, "pix_fmt": "yuv420p10le"}
    else:
        kw |= {"width": 96, "height": 64, "gray": True}
    clip = make_clip(f"{kind}.mp4", **kw)
    scale = 1 if kind == "odd" else 2
    out = tmp_path / "o.mp4"
    restore_video(clip, out, opts(tiny_weights, scale=scale, codec="libx264"))
    with av.open(str(out)) as c:
        vs = c.streams.video[0]
        frames = list(c.decode(vs))
        assert len(frames) == 5
        w, h = frames[0].width, frames[0].height
        if kind == "rotated":  # displayed upright: 64x96 -> 128x192
            assert (w, h) == (128, 192)
        elif kind == "odd":
            assert (w, h) == (853, 481)
        else:
            assert (w, h) == (192, 128)
        if kind == "tenbit":
            assert "10" in vs.codec_context.pix_fmt
        if kind == "gray":
            rgb = frames[2].to_ndarray(format="rgb24").astype(int)
            assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 3


@pytest.mark.parametrize("kind", ["empty", "truncated", "text", "audio_only"])
def test_bad_input_gives_one_line_error_and_no_output(kind, make_clip, shared_videos, tmp_path, capsys):
    bad = tmp_path / f"{kind}.mp4"
    if kind == "empty":
        bad.write_bytes(b"")
    elif kind == "text":
        bad.write_text("this is not a video\n" * 50)
    elif kind == "truncated":
        data = next(p for p in shared_videos if p.name.startswith("talking_512")).read_bytes()
        bad.write_bytes(data[: len(data) // 2])
    else:
        bad = make_clip("audio_only.m4a", video=False, frames=10)
    before = hashlib.md5(bad.read_bytes()).hexdigest()
    out = tmp_path / "out.mp4"
    rc = main(["run", str(bad), "-o", str(out), "--quiet", "--detector", "dlib"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert err.startswith("rmmvideo: error:") and "\n" not in err
    assert not out.exists()
    assert list(tmp_path.glob("out*")) == []  # no temporary left behind either
    assert hashlib.md5(bad.read_bytes()).hexdigest() == before


def test_refuses_to_overwrite_input_and_default_output_name(make_clip, tiny_weights):
    clip = make_clip("in.mp4", width=64, height=48, frames=3)
    before = hashlib.md5(clip.read_bytes()).hexdigest()
    with pytest.raises(UserError):
        restore_video(clip, clip, opts(tiny_weights, codec="libx264"))
    assert hashlib.md5(clip.read_bytes()).hexdigest() == before
    s = restore_video(clip, None, opts(tiny_weights, codec="libx264"))
    assert Path(s.output) == clip.with_name("in.rmm-x2.mp4") and Path(s.output).is_file()


def test_cli_run_prints_summary(make_clip, tiny_weights, capsys):
    clip = make_clip("c.mp4", width=64, height=48, frames=4, audio=True)
    rc = main(["run", str(clip), "--weights", str(tiny_weights), "--quiet", "--detector", "dlib",
               "--preset", "ultrafast", "--scale", "1.5"])
    out = capsys.readouterr().out
    assert rc == 0 and "4 frames" in out


def test_progress_callback_counts_frames(make_clip, tiny_weights, tmp_path):
    clip = make_clip("p.mp4", width=64, height=48, frames=11)
    seen: list[int] = []
    restore_video(clip, tmp_path / "p_out.mp4", opts(tiny_weights, codec="libx264", batch_size=4),
                  progress=seen.append)
    assert seen == [4, 8, 11]


def test_analysis_cleans_and_fuses_only_the_frames_that_pin_tracks(two_face_clip, tiny_weights, monkeypatch):
    """Pass 1 pins each track from the batch where it first appears, so it cleans and fuses only
    the frames showing a track not pinned yet; the styles are those pinned with every frame
    cleaned and fused."""
    import rmmvideo.video.deblock as deblock
    import rmmvideo.video.fuse as fuse
    import rmmvideo.video.pipeline as pipeline

    clip, _ = two_face_clip
    o = opts(tiny_weights, fuse=2, deblock="on", batch_size=4)
    fused: list[int] = []
    real_fuse = fuse.TemporalFusion.fuse

    def counting(self: fuse.TemporalFusion, images: list, faces: list, centre: int) -> object:
        fused.append(centre)
        return real_fuse(self, images, faces, centre)

    monkeypatch.setattr(fuse.TemporalFusion, "fuse", counting)
    table = analyze_video(clip, o)
    assert table.frames == 20 and len(table.styles) == 2
    assert 0 < len(fused) <= 8  # the first batches (both faces enter at once), not all 20 frames
    lazy = len(fused)

    monkeypatch.setattr(pipeline, "fuse_plans", lambda plans, fusion, needed=None: fuse.fuse_plans(plans, fusion))
    monkeypatch.setattr(pipeline, "deblock_plans", lambda plans, d, needed=None: deblock.deblock_plans(plans, d))
    every = analyze_video(clip, o)
    assert len(fused) - lazy == 20  # every frame fused
    assert every.styles == table.styles
