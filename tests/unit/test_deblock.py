"""--deblock: the artefact CNN, its weights file, and the stage that cleans face regions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from rmmvideo.errors import UserError
from rmmvideo.models.artefact import (
    ArtefactCNN,
    ArtefactConfig,
    default_artefact_path,
    load_artefact,
    save_artefact,
)
from rmmvideo.video.deblock import Deblocker, deblock_plans
from rmmvideo.video.io_decode import DecodedFrame
from rmmvideo.video.render import FacePlan, FramePlan

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _face(cx: float, cy: float, size: float, qp: float | None = None) -> FacePlan:
    t = np.linspace(0, 2 * np.pi, 68, endpoint=False)
    lm = np.stack([cx + size / 2 * np.cos(t), cy + size / 2 * np.sin(t)], 1)
    return FacePlan(0, lm[:5].copy(), lm, True, qp)


class _AddConstant(torch.nn.Module):
    """Adds ``rgb`` to every pixel."""

    config = ArtefactConfig()

    def __init__(self, rgb: tuple[float, float, float] = (0.1, 0.0, 0.0)) -> None:
        super().__init__()
        self.rgb = torch.tensor(rgb).view(1, 3, 1, 1)

    def forward(self, x: torch.Tensor, qp: torch.Tensor | None = None) -> torch.Tensor:
        return x + self.rgb


def _luma(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])


def test_untrained_model_is_the_identity_and_the_file_keeps_its_config(tmp_path: Path) -> None:
    torch.manual_seed(0)
    x = torch.rand(2, 3, 17, 23)
    assert torch.equal(ArtefactCNN(ArtefactConfig(8, 2))(x), x)
    model = ArtefactCNN(ArtefactConfig(8, 2))
    torch.nn.init.normal_(model.tail.weight, std=0.1)
    p = save_artefact(model, tmp_path / "a.safetensors", {"steps": 3})
    back = load_artefact(p)
    assert back.config == ArtefactConfig(8, 2) and not back.training
    assert torch.allclose(back(x), model(x))
    (tmp_path / "junk.safetensors").write_bytes(b"not a file")
    with pytest.raises(UserError, match="not a codec-artefact weights file"):
        load_artefact(tmp_path / "junk.safetensors")
    with pytest.raises(UserError, match="not found"):
        load_artefact(tmp_path / "missing.safetensors")


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_only_face_regions_change_feathered_at_their_edge(dtype: type) -> None:
    peak = np.iinfo(dtype).max
    image = np.full((120, 160, 3), peak // 4, dtype)
    d = Deblocker(_AddConstant(), torch.device("cpu"))
    assert d.clean(image, []) is image
    out = d.clean(image, [_face(80, 60, 40)])
    assert out is not image and out.dtype == dtype and d.faces_cleaned == 1
    changed = np.abs(out.astype(np.int64) - image.astype(np.int64)).max(-1) > 0
    ys, xs = np.nonzero(changed)
    # the region: the landmarks' box (60..100, 40..80) grown by 0.3 of its size (12 px)
    assert xs.min() >= 48 and xs.max() <= 113 and ys.min() >= 28 and ys.max() <= 93
    # only the colour of the change is kept: +0.1 red is +0.0701 red, -0.0299 green and blue
    assert int(out[60, 80, 0]) - int(image[60, 80, 0]) == pytest.approx(0.0701 * peak, abs=1)
    assert int(out[60, 80, 1]) - int(image[60, 80, 1]) == pytest.approx(-0.0299 * peak, abs=1)
    assert np.abs(_luma(out) - _luma(image)).max() <= 1.0  # the luma as decoded, to rounding
    assert int(out[30, 50, 0]) - int(image[30, 50, 0]) < 0.035 * peak  # feathered towards the edge
    assert np.array_equal(image, np.full_like(image, peak // 4))  # the input is not modified
    grey = Deblocker(_AddConstant((0.1, 0.1, 0.1)), torch.device("cpu"))  # a change of luma only
    assert np.array_equal(grey.clean(image, [_face(80, 60, 40)]), image)


def test_auto_changes_each_face_by_how_coarsely_it_was_coded() -> None:
    from rmmvideo.video.quantiser import COARSE_QP, FINE_QP, coarseness

    assert coarseness(None) == 0.0 and coarseness(FINE_QP) == 0.0 and coarseness(FINE_QP - 10) == 0.0
    assert coarseness(COARSE_QP) == 1.0 and coarseness(51) == 1.0
    assert coarseness((FINE_QP + COARSE_QP) / 2) == pytest.approx(0.5)
    image = np.full((120, 160, 3), 64, np.uint8)
    auto = Deblocker(_AddConstant(), torch.device("cpu"), auto=True)

    def red_change(qp: float | None) -> int:
        return int(auto.clean(image, [_face(80, 60, 40, qp)])[60, 80, 0]) - 64

    assert red_change(None) == 0 and red_change(FINE_QP) == 0 and auto.faces_cleaned == 0
    full = red_change(COARSE_QP + 3)
    assert full == round(0.0701 * 255) and auto.faces_cleaned == 1
    assert red_change((FINE_QP + COARSE_QP) / 2) == pytest.approx(full / 2, abs=1)
    # on: every face fully, whatever its quantiser
    assert int(Deblocker(_AddConstant(), torch.device("cpu")).clean(image, [_face(80, 60, 40, FINE_QP)])[60, 80, 0]) - 64 == full


class _RecordQP(torch.nn.Module):
    config = ArtefactConfig(qp_input=True)

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor | None] = []

    def forward(self, x: torch.Tensor, qp: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(qp)
        return x


def test_the_model_sees_each_regions_quantisers_and_auto_needs_them() -> None:
    from rmmvideo.video.deblock import window_qp
    from rmmvideo.video.fuse import face_region
    from rmmvideo.video.quantiser import QPMap

    image = np.full((64, 96, 3), 100, np.uint8)
    qp = QPMap(np.array([[20, 30, 40, 50, 51, 51], [10, 10, 10, 10, 10, 10]], np.float32), (32.0, 16.0))
    region = face_region(_face(40, 20, 20), 64, 96)
    model = _RecordQP()
    d = Deblocker(model, torch.device("cpu"), auto=True)
    # auto: the face's QP unknown
    assert d.clean(image, [_face(40, 20, 20)], [window_qp([qp], region)]) is image and model.seen == []
    d.clean(image, [_face(40, 20, 20, qp=40)], [window_qp([qp], region)])
    got = model.seen[-1]
    assert got is not None and got.shape[:2] == (1, 1)
    # the region is x 24..57, y 4..37: columns of blocks 1..3 (QP 30, 40, 50), rows 0..1
    assert got[0, 0, 0].mul(51).round().unique().tolist() == [30, 40, 50]
    assert got[0, 0, :, 0].mul(51).round().unique().tolist() == [10, 30]
    lower = QPMap(qp.values - 6, qp.block)
    # earlier frames' maps are averaged in
    d.clean(image, [_face(40, 20, 20, qp=40)], [window_qp([None, lower, qp], region)])
    assert model.seen[-1][0, 0, 0].mul(51).round().unique().tolist() == [27, 37, 47]
    assert window_qp([None, None], region) is None and window_qp([qp], None) is None
    Deblocker(model, torch.device("cpu")).clean(image, [_face(40, 20, 20)])  # on: unknown quantiser
    assert model.seen[-1] is None


def test_plans_are_cleaned_with_the_quantisers_of_the_frames_before() -> None:
    from rmmvideo.video.deblock import QP_WINDOW
    from rmmvideo.video.quantiser import QPMap

    model = _RecordQP()
    image = np.full((64, 96, 3), 100, np.uint8)
    plans = [FramePlan(DecodedFrame(i, i, i / 25, image, QPMap(np.full((2, 6), 30.0 + i, np.float32), (32.0, 16.0))),
                       [_face(40, 20, 20)]) for i in range(QP_WINDOW + 4)]
    out = list(deblock_plans(plans, Deblocker(model, torch.device("cpu"), auto=True)))
    assert len(out) == len(plans) and len(model.seen) == len(plans)
    means = [float(q.mean()) * 51 for q in model.seen]
    assert means[0] == pytest.approx(30) and means[1] == pytest.approx(30.5)
    last = len(plans) - 1  # the mean of its own and the QP_WINDOW maps before it
    assert means[-1] == pytest.approx(30 + last - QP_WINDOW / 2, abs=1e-4)
    # each face carries the same mean, for --fuse auto; the input plans are not modified
    assert [p.faces[0].qp for p in out] == pytest.approx(means, abs=1e-4)
    assert all(p.faces[0].qp is None for p in plans)
    unmarked = FramePlan(DecodedFrame(0, 0, 0.0, image), [_face(40, 20, 20)])  # no quantiser: no mark
    assert next(deblock_plans([unmarked], None)) is unmarked
    marked = next(deblock_plans(plans[:1], None))  # no deblocker: marked, not cleaned
    assert marked.faces[0].qp == pytest.approx(30) and marked.frame is plans[0].frame


def test_no_deblocker_passes_the_plans_through() -> None:
    plan = FramePlan(DecodedFrame(0, 0, 0.0, np.zeros((8, 8, 3), np.uint8)), [])
    assert next(deblock_plans([plan], None)) is plan
    assert next(deblock_plans([plan], Deblocker(_AddConstant(), torch.device("cpu")))) is plan  # no face
    face = FramePlan(DecodedFrame(0, 0, 0.0, np.zeros((64, 64, 3), np.uint8)), [_face(32, 32, 20)])
    assert next(deblock_plans([face], None)) is face


@pytest.mark.skipif(not (SHARED / "faces" / "utkface").is_dir(), reason="shared face crops not found")
def test_bundled_weights_undo_h264_on_held_out_faces_by_how_hard_it_was_coded() -> None:
    """The shipped weights on validation faces (never trained on), degraded as in training, with
    the decoder's quantisers: closer to the clean face than the decoded one at CRF 32 (on most
    faces and on average) and at CRF 14, nearly clean, where the quantiser is what lets it gain
    more than blind."""
    from rmmvideo.train.data import list_images, load_rgb, split_of, to_tensor
    from rmmvideo.train.degrade import codec_roundtrip_qp, downsample
    from rmmvideo.video.quantiser import MAX_QP

    assert default_artefact_path().is_file()
    model = load_artefact()
    assert model.config.qp_input
    root = SHARED / "faces" / "utkface"
    val = [p for p in list_images(root) if split_of(p.relative_to(root).as_posix(), 0.05) == "val"][:12]
    gains: dict[str, list[float]] = {"32": [], "14": [], "14 blind": []}
    for i, p in enumerate(val):
        clean = downsample(to_tensor(load_rgb(p)), 1.5).clamp(0, 1)
        for crf in (32, 14):
            lq, qp = codec_roundtrip_qp(clean, "h264", crf, frames=3, seed=i)
            lq = lq.clamp(0, 1)
            q = torch.from_numpy(qp.pixels(0, lq.shape[1], 0, lq.shape[2]) / MAX_QP)[None, None]
            with torch.inference_mode():
                out = model(lq[None], q)[0].clamp(0, 1)
                blind = model(lq[None])[0].clamp(0, 1)
            err = float((lq - clean).square().mean())
            gains[str(crf)].append(err / float((out - clean).square().mean()))
            if crf == 14:
                gains["14 blind"].append(err / float((blind - clean).square().mean()))
    g32, g14, b14 = (np.array(gains[k]) for k in ("32", "14", "14 blind"))
    assert g32.mean() > 1.05 and np.mean(g32 > 1) >= 0.75, gains
    assert g14.mean() > 1.05 and g14.mean() > b14.mean() + 0.05, gains  # measured: 1.18 against 1.06 blind


def test_segments_and_previews_read_the_frames_the_qp_average_needs() -> None:
    from rmmvideo.video.deblock import QP_WINDOW
    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.pipeline import context_before

    from rmmvideo.video.fuse import DEFAULT_RADIUS

    base = context_before(RestoreOptions(fuse=DEFAULT_RADIUS, deblock="off"))
    assert context_before(RestoreOptions(fuse=DEFAULT_RADIUS, deblock="auto")) == base + QP_WINDOW
    assert context_before(RestoreOptions(fuse=DEFAULT_RADIUS, deblock="on")) == base + QP_WINDOW
    # --fuse auto weighs faces by their quantisers: the frames of --fuse DEFAULT_RADIUS and the average's
    assert context_before(RestoreOptions(deblock="off")) == base + QP_WINDOW
    assert context_before(RestoreOptions(fuse=0, deblock="off")) == base - DEFAULT_RADIUS


def test_quantisers_are_decoded_where_a_stage_reads_them() -> None:
    """--strength auto reads each track's quantiser where it pins strengths (run, preview, batch's
    first pass), not in batch's second pass, whose strengths come from the track table."""
    from rmmvideo.video.deblock import needs_qp
    from rmmvideo.video.options import RestoreOptions

    bare = dict(deblock="off", fuse=0)
    assert needs_qp(RestoreOptions(**bare)) and not needs_qp(RestoreOptions(**bare), pins=False)
    assert not needs_qp(RestoreOptions(strength=1.0, **bare))
    assert needs_qp(RestoreOptions(strength=1.0), pins=False)  # --deblock auto, --fuse auto


def _shared_frames(n: int) -> list[np.ndarray]:
    import itertools

    from rmmvideo.video.io import decode_frames

    return [f.image for f in itertools.islice(decode_frames(SHARED / "videos" / "talking_512sq_30fps_audio.mp4"), n)]


def _write_video():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration"))
    from archive_clips import write_video

    return write_video


@pytest.mark.skipif(not (SHARED / "videos").is_dir(), reason="shared clips not found")
def test_defaults_clean_and_fuse_coarsely_coded_faces_and_leave_finely_coded_ones(tmp_path: Path) -> None:
    """The defaults (--deblock auto --fuse auto) on a real face coded by libx264 at CRF 12 (QP
    under 25): the output equals the plain upscale's pipeline (--deblock off --fuse 0) bit for
    bit; at CRF 40 every face is cleaned and fused."""
    from fractions import Fraction

    from rmmvideo.video.io import decode_frames
    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.pipeline import restore_video

    images, write_video = _shared_frames(8), _write_video()
    out = {}
    for crf in (12, 40):
        clip = write_video(tmp_path / f"c{crf}.mp4", None, "libx264", images, Fraction(25), crf=crf)
        qp = [float(f.qp.values.mean()) for f in decode_frames(clip, quantisers=True)]
        assert (max(qp) < 25) if crf == 12 else (min(qp) > 29), qp
        for name, opts in (("default", RestoreOptions(scale=1.0, preset="ultrafast", crf=0)),
                           ("off", RestoreOptions(scale=1.0, preset="ultrafast", crf=0, deblock="off", fuse=0))):
            s = restore_video(clip, tmp_path / f"{name}{crf}.mp4", opts)
            out[name, crf] = (s, [f.image for f in decode_frames(tmp_path / f"{name}{crf}.mp4")])
    fine, fine_off = out["default", 12], out["off", 12]
    assert fine[0].tracks == 1 and fine[0].deblocked == 0 and fine[0].fused == 0
    assert all(np.array_equal(a, b) for a, b in zip(fine[1], fine_off[1], strict=True))
    coarse, coarse_off = out["default", 40], out["off", 40]
    assert coarse[0].deblocked == 8 and coarse[0].fused == 8
    assert not any(np.array_equal(a, b) for a, b in zip(coarse[1], coarse_off[1], strict=True))


@pytest.mark.skipif(not (SHARED / "videos").is_dir(), reason="shared clips not found")
def test_auto_on_a_stream_without_quantisers_says_so_and_on_cleans_it(tmp_path: Path, capsys) -> None:
    from fractions import Fraction

    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.pipeline import restore_video

    # MPEG-2: its decoder exports no QP
    clip = _write_video()(tmp_path / "m2.ts", "mpegts", "mpeg2video", _shared_frames(6), Fraction(25), bit_rate=800_000)
    auto = restore_video(clip, tmp_path / "a.mp4", RestoreOptions(scale=1.0, preset="ultrafast"))
    assert auto.tracks == 1 and auto.deblocked == 0 and auto.fused == 0
    assert ("m2.ts: mpeg2video gives no codec quantisers (H.264 does), so --deblock auto and --fuse auto left its "
            "faces as decoded") in capsys.readouterr().err
    on = restore_video(clip, tmp_path / "o.mp4", RestoreOptions(scale=1.0, deblock="on", fuse=2, preset="ultrafast"))
    assert on.deblocked == 6 and on.fused == 6 and "gives no codec quantisers" not in capsys.readouterr().err


def test_the_coding_note_says_what_the_options_did_to_a_frames_faces() -> None:
    """preview's line: the faces' quantiser and what --deblock / --fuse did with it."""
    from rmmvideo.video.deblock import coding_note
    from rmmvideo.video.options import RestoreOptions

    defaults, off = RestoreOptions(), RestoreOptions(deblock="off", fuse=0)
    assert coding_note([_face(40, 20, 20)], defaults) == ""  # no quantiser
    assert coding_note([_face(40, 20, 20, 33.0)], defaults) == "codec QP 33.0: cleaned and fused"
    assert coding_note([_face(40, 20, 20, 20.0)], defaults) == "codec QP 20.0: left as decoded"
    assert coding_note([_face(40, 20, 20, 27.0), _face(80, 20, 20, 29.0)], defaults) == (
        "codec QP 28.0: cleaned and fused (50% of --deblock/--fuse auto)")
    assert coding_note([_face(40, 20, 20, 20.0)], RestoreOptions(deblock="on", fuse=2)) == "codec QP 20.0: cleaned and fused"
    assert coding_note([_face(40, 20, 20, 33.0)], off) == "codec QP 33.0: left as decoded"
    assert coding_note([_face(40, 20, 20, 33.0)], RestoreOptions(deblock="off")) == "codec QP 33.0: fused"
