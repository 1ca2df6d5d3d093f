"""Never-worse compositing: the detail band (rmmvideo.video.composite.restoration_detail), residual
paste-back, the temporal stabiliser and the auto strength (rmmvideo.video.strength)."""

from __future__ import annotations

import logging
import math

import pytest
import torch

from rmmvideo.config import ModelConfig
from rmmvideo.video.align import paste_back
from rmmvideo.video.composite import restoration_detail
from rmmvideo.video.stabilise import TemporalStabiliser
from rmmvideo.video.strength import (
    SAFETY,
    Strength,
    auto_strength,
    calibrate_strength,
    curve_strength,
    detected_view,
    effective_scale,
    fit_strength,
    pipeline_view,
    strength_tensor,
    weigh_detail,
)

S = 64


def _face_like(seed: int = 0) -> torch.Tensor:
    """(1, 3, S, S) smooth image in [0.2, 0.8] (shading plus a few soft blobs)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, S // 8, S // 8, generator=g)
    x = torch.nn.functional.interpolate(x, size=(S, S), mode="bicubic", align_corners=False)
    return (0.2 + 0.6 * (x - x.min()) / (x.max() - x.min())).clamp(0, 1)


def test_colour_offset_is_removed_and_fine_detail_is_kept() -> None:
    lq = _face_like()
    offset = torch.tensor([0.08, -0.05, 0.03]).view(1, 3, 1, 1)
    assert restoration_detail(lq + offset, lq).abs().max() < 1e-5  # a colour shift is not detail
    shading = torch.linspace(-0.1, 0.1, S).view(1, 1, 1, S).expand(1, 3, S, S)
    assert restoration_detail(lq + shading, lq).abs().mean() < 0.1 * shading.abs().mean()
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    fine = 0.05 * ((yy + xx) % 2 * 2 - 1).float().expand(1, 3, S, S)  # 1-px checkerboard
    kept = restoration_detail(lq + fine + offset, lq)
    assert torch.allclose(kept, fine, atol=0.01)  # the detail survives, the offset does not


def test_residual_paste_adds_only_inside_the_mask_and_zero_strength_is_exact() -> None:
    canvas = torch.rand(1, 3, 40, 50)
    detail = torch.full((1, 3, 16, 16), 0.1)
    mask = torch.zeros(1, 1, 16, 16)
    mask[..., 4:12, 4:12] = 1.0
    m = torch.tensor([[[1.0, 0.0, 10.0], [0.0, 1.0, 5.0]]], dtype=torch.float64)  # crop -> canvas shift
    out = paste_back(canvas, detail, mask, torch.zeros(1, dtype=torch.long), m, residual=True)
    inside = out[..., 5 + 6:5 + 10, 10 + 6:10 + 10] - canvas[..., 5 + 6:5 + 10, 10 + 6:10 + 10]
    assert torch.allclose(inside, torch.full_like(inside, 0.1), atol=1e-6)
    assert torch.equal(out[..., :5, :], canvas[..., :5, :]) and torch.equal(out[..., :, :10], canvas[..., :, :10])
    zero = paste_back(canvas, detail, mask * 0.0, torch.zeros(1, dtype=torch.long), m, residual=True)
    assert torch.equal(zero, canvas)


CURVE = ((0.8, 0.2), (1.0, 0.4), (2.0, 0.8), (4.0, 1.0))


def _pair(st: Strength) -> tuple[float, float]:
    return st.luma, st.chroma


def test_curve_strength_interpolates_in_log_scale_and_fades_below_the_calibrated_range() -> None:
    def s(f: float) -> tuple[float, float]:
        st = curve_strength(CURVE, f)
        assert st.luma == st.chroma  # (f, a) points: one weight for both
        return st.luma

    assert s(1.0) == pytest.approx(SAFETY * 0.4)
    assert s(math.sqrt(2.0)) == pytest.approx(SAFETY * 0.6)  # halfway in log f
    assert s(10.0) == pytest.approx(SAFETY * 1.0)  # flat above the last point
    assert s(0.4) == 0.0  # half the smallest calibrated f: faded out
    assert s(0.8 / math.sqrt(2.0)) == pytest.approx(SAFETY * 0.1)
    assert curve_strength((), 2.0) == Strength()


def test_curve_strength_reads_luma_and_chroma_weights() -> None:
    curve = ((1.0, 0.2, 0.6), (2.0, 0.4, 1.0))
    st = curve_strength(curve, math.sqrt(2.0))
    assert (st.luma, st.chroma) == (pytest.approx(SAFETY * 0.3), pytest.approx(SAFETY * 0.8))
    assert str(Strength(0.375, 0.75)) == "0.38/0.75" and str(Strength.uniform(0.5)) == "0.50"
    assert Strength.of(Strength(0.25, 0.5).to_json()) == Strength(0.25, 0.5)
    assert Strength.of(0.3) == Strength.uniform(0.3)  # track tables of older runs
    with pytest.raises(ValueError, match="chroma"):
        Strength(0.5, 1.5)


QP_CURVE = ((1.0, -1.0, 0.1, 0.5), (1.0, 24.0, 0.0, 0.2), (1.0, 32.0, 0.4, 0.8),
            (2.0, -1.0, 0.3, 0.9), (2.0, 24.0, 0.1, 0.4), (2.0, 32.0, 0.8, 1.0))


def test_curve_strength_follows_the_faces_codec_quantiser() -> None:
    """(f, qp, a_Y, a_C) points are applied strengths: interpolated in log f at each quantiser,
    then linearly in the quantiser (held beyond the calibrated ones); an unknown quantiser reads
    the qp -1 rows."""
    assert _pair(curve_strength(QP_CURVE, 1.0, 32.0)) == (pytest.approx(0.4), pytest.approx(0.8))  # no SAFETY
    assert _pair(curve_strength(QP_CURVE, 1.0, 28.0)) == (pytest.approx(0.2), pytest.approx(0.5))
    assert _pair(curve_strength(QP_CURVE, math.sqrt(2.0), 32.0)) == (pytest.approx(0.6), pytest.approx(0.9))
    assert _pair(curve_strength(QP_CURVE, 2.0, 45.0)) == (pytest.approx(0.8), pytest.approx(1.0))  # held
    assert _pair(curve_strength(QP_CURVE, 2.0, 10.0)) == (pytest.approx(0.1), pytest.approx(0.4))
    assert _pair(curve_strength(QP_CURVE, 2.0)) == (pytest.approx(0.3), pytest.approx(0.9))  # unknown
    assert _pair(curve_strength(QP_CURVE, 0.5, 32.0)) == (0.0, 0.0)  # faded below the calibrated f
    # a curve without quantiser rows serves every face; one with only quantiser rows gives an
    # unknown quantiser nothing
    assert curve_strength(CURVE, 2.0, 32.0) == curve_strength(CURVE, 2.0)
    assert curve_strength([p for p in QP_CURVE if p[1] >= 0], 2.0).is_zero


def test_weigh_detail_weighs_luma_and_chroma_apart() -> None:
    g = torch.Generator().manual_seed(3)
    d = torch.randn(3, 3, 8, 8, generator=g)
    from rmmvideo.video.composite import to_grey

    out = weigh_detail(d, strength_tensor([Strength.uniform(0.6), Strength(0.0, 1.0), Strength(1.0, 0.0)]))
    assert torch.allclose(out[0], 0.6 * d[0], atol=1e-6)  # one weight: the detail scaled
    assert to_grey(out[1:2]).abs().max() < 1e-6  # chroma only: no luma left
    assert torch.allclose(out[1], d[1] - to_grey(d[1:2])[0], atol=1e-6)
    assert torch.allclose(out[2], to_grey(d[2:3])[0], atol=1e-6)  # luma only: grey detail
    with pytest.raises(ValueError, match="strength shape"):
        weigh_detail(d, torch.ones(3))


def test_effective_scale_is_the_median_crop_scale_capped_by_the_output_scale() -> None:
    f = torch.tensor([1.5, 3.0, 2.0])
    assert effective_scale(f, 4.0) == 2.0
    assert effective_scale(f, 1.25) == 1.25  # the output cannot show more than x1.25 the input


def test_auto_strength_reads_the_curve_of_the_weights_and_is_zero_without_one(caplog) -> None:
    calibrated = ModelConfig(name="calibrated", strength_curve=CURVE)
    st = auto_strength(calibrated, effective_scale(torch.tensor([2.0, 2.0]), 4.0))
    assert _pair(st) == (pytest.approx(SAFETY * 0.8), pytest.approx(SAFETY * 0.8))
    with caplog.at_level(logging.WARNING):
        assert auto_strength(ModelConfig(name="uncalibrated-test"), 2.0).is_zero
    assert "no strength calibration" in caplog.text


def test_strength_curve_travels_in_the_config_and_is_validated() -> None:
    for curve in (CURVE, ((1.0, 0.2, 0.6), (2.0, 0.4, 1.0)), QP_CURVE):
        cfg = ModelConfig(strength_curve=curve)
        assert ModelConfig.from_json(cfg.to_json()).strength_curve == curve
    assert "strength_curve" not in ModelConfig().to_dict()  # uncalibrated files stay as they were
    for bad in (((2.0, 0.5), (1.0, 0.5)), ((1.0, 1.5),), ((0.0, 0.5),), ((1.0, 0.5, 1.2),), ((1.0,),),
                ((1.0, 32.0, 0.5, 0.5), (1.0, 24.0, 0.5, 0.5)), ((1.0, -2.0, 0.5, 0.5),), ((1.0, 32.0, 0.5, 1.5),),
                ((1.0, 0.5), (2.0, 32.0, 0.5, 0.5))):
        with pytest.raises(ValueError, match="strength_curve"):
            ModelConfig(strength_curve=bad)


def test_pipeline_view_makes_crops_as_the_pipeline_sees_them() -> None:
    src = _face_like(5)[0]  # (3, 64, 64) stands in for a 64 px source face
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    src = (src + 0.1 * ((yy // 2 + xx // 2) % 2 * 2 - 1).float()).clamp(0, 1)  # 2-px texture
    assert pipeline_view(src, 0.5, 64, 30, 0) is None  # would need a 128 px source
    crop, up, truth, qp = pipeline_view(src, 4.0, 64, 23, 0)
    assert crop.shape == up.shape == truth.shape == (3, 64, 64)
    assert 20 < qp < pipeline_view(src, 4.0, 64, 35, 0)[3]  # the input's quantiser: coarser at a higher CRF
    assert torch.allclose(truth, src, atol=1e-5)  # the truth is the source at the crop size
    assert (crop - truth).abs().mean() > 0.05  # a 16 px input has lost the texture
    big = pipeline_view(src, 1.0, 64, 23, 0)[0]
    assert (big - truth).abs().mean() < (crop - truth).abs().mean()


class _PointsDetector:
    """Stand-in detector: 68 points that put the template exactly where ``pipeline_view``'s
    crop has it, ``shift`` input pixels to the right (or no face at all)."""

    name = "points"

    def __init__(self, n: int, pad: int, shift: float = 0.0, found: bool = True) -> None:
        self.n, self.pad, self.shift, self.found = n, pad, shift, found
        self.seen: list[tuple[int, ...]] = []

    def detect(self, images):
        import numpy as np

        from rmmvideo.video.align import (
            LEFT_EYE,
            MOUTH_LEFT,
            MOUTH_RIGHT,
            NOSE_TIP,
            RIGHT_EYE,
            template_points,
        )
        from rmmvideo.video.detect import Detection

        self.seen.append(images[0].shape)
        if not self.found:
            return [[]]
        crop_pts = template_points(ModelConfig().template, S).numpy()  # (5, 2) crop pixels
        pts = (crop_pts + 0.5) * self.n / S - 0.5 + self.pad  # input pixels, padded frame
        pts[:, 0] += self.shift
        lm = np.zeros((68, 2))
        for idx, pt in zip((LEFT_EYE, RIGHT_EYE, NOSE_TIP, MOUTH_LEFT, MOUTH_RIGHT), pts):
            lm[idx] = pt
        box = np.array([0.0, 0.0, images[0].shape[1], images[0].shape[0]])
        return [[Detection(box, 1.0, lm)]]


def test_detected_view_crops_where_the_detectors_points_say() -> None:
    src = _face_like(5)[0]
    yy, xx = torch.meshgrid(torch.arange(S), torch.arange(S), indexing="ij")
    src = (src + 0.1 * ((yy // 2 + xx // 2) % 2 * 2 - 1).float()).clamp(0, 1)
    template = ModelConfig().template
    exact = pipeline_view(src, 2.0, S, 23, 0)  # a 32 px input, padded by 16 px for the detector
    det = _PointsDetector(n=32, pad=16)
    crop, up, truth, _ = detected_view(src, 2.0, S, template, 23, 0, det)
    assert det.seen == [(64, 64, 3)]  # the input with its padding, as uint8 RGB
    assert torch.allclose(truth, exact[2], atol=1e-4)  # exact points: the same crops
    assert (crop - exact[0]).abs().mean() < 0.01 and (up - exact[1]).abs().mean() < 0.01
    # points 2 input px to the right: the crops sample the source 4 px further right
    moved = detected_view(src, 2.0, S, template, 23, 0, _PointsDetector(n=32, pad=16, shift=2.0))[2]
    assert torch.allclose(moved[:, 8:-8, 8:-12], src[:, 8:-8, 12:-8], atol=1e-4)
    assert detected_view(src, 2.0, S, template, 23, 0, _PointsDetector(32, 16, found=False)) is None
    assert detected_view(src, 0.5, S, template, 23, 0, det) is None  # would need a 128 px source


def test_calibration_gives_zero_where_the_pipeline_finds_no_faces(tiny_weights) -> None:
    from rmmvideo.models.weights import from_pretrained

    model = from_pretrained(tiny_weights)
    sources = [_face_like(k)[0] for k in range(8)]
    blind = _PointsDetector(n=32, pad=16, found=False)
    curve = calibrate_strength(model, sources, scales=(0.25, 1.0, 2.0), seed=0, detector=blind)
    assert curve == [(f, q, 0.0, 0.0) for f in (1.0, 2.0) for q in (-1.0, 24.0, 28.0, 32.0, 36.0, 40.0)]  # no evidence


def test_calibrate_strength_gives_sorted_points_in_range(tiny_weights) -> None:
    from rmmvideo.models.weights import from_pretrained

    model = from_pretrained(tiny_weights)
    sources = [_face_like(k)[0] for k in range(2)]  # 64 px sources, 32 px crops: f >= 0.5 reachable
    curve = calibrate_strength(model, sources, scales=(0.25, 1.0, 2.0), seed=0)
    assert [p[:2] for p in curve] == [(f, q) for f in (1.0, 2.0) for q in (-1.0, 24.0, 28.0, 32.0, 36.0, 40.0)]
    assert all(len(p) == 4 and 0.0 <= p[2] <= 1.0 and 0.0 <= p[3] <= 1.0 for p in curve)
    assert all(p[2:] == (0.0, 0.0) for p in curve if p[1] >= 0)  # two faces: too few at any quantiser
    assert curve == calibrate_strength(model, sources, scales=(0.25, 1.0, 2.0), seed=0)  # seeded
    # each scale draws its own degradations: measured alone, the same points
    assert calibrate_strength(model, sources, scales=(2.0,), seed=0) == curve[6:]


def test_fit_strength_recovers_the_luma_and_chroma_weights_and_clamps() -> None:
    from rmmvideo.video.composite import to_grey

    g = torch.Generator().manual_seed(1)
    d = torch.randn(2, 3, S, S, generator=g)
    w = torch.ones(2, 1, S, S)
    y = to_grey(d)
    lost = 0.4 * y + 0.8 * (d - y)  # what the upscale misses: 0.4 of the luma, 0.8 of the chroma
    assert fit_strength(d, lost, w) == (pytest.approx(0.4, rel=1e-6), pytest.approx(0.8, rel=1e-6))
    assert fit_strength(d, 0.6 * d, w) == (pytest.approx(0.6, rel=1e-6), pytest.approx(0.6, rel=1e-6))
    assert fit_strength(-d, d, w) == (0.0, 0.0)  # detail that points away from the truth
    assert fit_strength(0.5 * d, d, w) == (1.0, 1.0)  # clamped
    assert fit_strength(0.5 * d, d, w, upper=4.0) == (pytest.approx(2.0, rel=1e-6), pytest.approx(2.0, rel=1e-6))
    assert fit_strength(d, 1.5 * y - 0.5 * (d - y), w) == (1.0, 0.0)  # luma beyond 1, chroma below 0
    assert fit_strength(torch.zeros_like(d), d, w) == (0.0, 0.0)


def test_stabiliser_averages_static_noise_but_keeps_motion() -> None:
    g = torch.Generator().manual_seed(2)
    base = _face_like(4)
    stab = TemporalStabiliser(window=3)
    outs, truths = [], []
    for t in range(8):
        truth = base.clone()
        if t >= 5:  # a "mouth" opens at frame 5: a big local change
            truth[..., 40:52, 20:44] = 0.05
        noisy = truth + 0.02 * torch.randn(truth.shape, generator=g)
        outs.append(stab([7], [t], noisy, noisy))
        truths.append(truth)
    err_in = (outs[0] - truths[0]).abs().mean()  # first frame: nothing to average with
    err_static = (outs[4] - truths[4]).abs().mean()
    assert err_static < 0.7 * err_in  # noise averaged over 4 frames
    moved = outs[5][..., 40:52, 20:44]
    assert (moved - 0.05).abs().mean() < 0.03  # the change is not smeared with the old frames
    # FIR: frame 7 restarted with only frames 4..6 of history gives the same result
    fresh = TemporalStabiliser(window=3)
    g2 = torch.Generator().manual_seed(2)
    noisy_all = []
    for t in range(8):
        truth = truths[t]
        noisy_all.append(truth + 0.02 * torch.randn(truth.shape, generator=g2))
    for t in range(4, 7):
        fresh([7], [t], noisy_all[t], noisy_all[t])
    assert torch.allclose(fresh([7], [7], noisy_all[7], noisy_all[7]), outs[7], atol=1e-6)


def test_stabiliser_compensates_motion() -> None:
    """A face drifting 1.5 px per frame (the head turns, the alignment lags): the history is
    warped onto the current crop, so noise is still averaged, and the output is not smeared."""
    g = torch.Generator().manual_seed(3)
    big = torch.nn.functional.interpolate(_face_like(8), size=(2 * S, 2 * S), mode="bicubic", align_corners=False)
    stab = TemporalStabiliser(window=3)
    errs_in, errs_out = [], []
    for t in range(6):
        shift = int(round(3 * t))  # 1.5 px per frame at S (3 px of the 2x image)
        truth = torch.nn.functional.avg_pool2d(big[..., 8:8 + 2 * S - 16, shift:shift + 2 * S - 16], 2)
        truth = torch.nn.functional.interpolate(truth, size=(S, S), mode="bilinear", align_corners=False)
        noisy = truth + 0.02 * torch.randn(truth.shape, generator=g)
        out = stab([1], [t], noisy, noisy)
        errs_in.append(float((noisy - truth)[..., 8:-8, 8:-8].abs().mean()))
        errs_out.append(float((out - truth)[..., 8:-8, 8:-8].abs().mean()))
    assert errs_out[0] == pytest.approx(errs_in[0])  # no history yet
    for t in (4, 5):  # three compensated predecessors: noise averaged down, nothing smeared
        assert errs_out[t] < 0.75 * errs_in[t], (t, errs_out, errs_in)


def test_stabiliser_keeps_tracks_apart_and_window_zero_is_identity() -> None:
    a, b = _face_like(5), _face_like(6)
    stab = TemporalStabiliser(window=2)
    stab([1], [0], a, a)
    out = stab([2], [1], b, b)  # a new track: no history, returned as is
    assert torch.equal(out, b)
    assert torch.equal(TemporalStabiliser(0)([1, 1], [0, 1], torch.cat([a, b]), torch.cat([a, b])), torch.cat([a, b]))
    with pytest.raises(ValueError):
        TemporalStabiliser(-1)


def test_calibrate_strength_pipeline_writes_the_curve_into_the_weights(tiny_weights, tmp_path) -> None:
    """pipelines/calibrate_strength.py: --dry-run leaves the file alone; otherwise the curve is
    in the config, the tensors are unchanged, and a bad file is a one-line error (exit 2)."""
    import shutil

    import numpy as np
    from PIL import Image
    from safetensors.torch import load_file

    from rmmvideo.models.weights import from_pretrained
    from tests.conftest import load_pipeline

    mod = load_pipeline("calibrate_strength")
    faces = tmp_path / "faces"
    faces.mkdir()
    rng = np.random.default_rng(0)
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((64, 64), Image.BICUBIC) \
            .save(faces / f"face_{i:03d}.png")
    w = tmp_path / "w.safetensors"
    shutil.copy(tiny_weights, w)
    before = w.read_bytes()
    args = [str(w), "--data", str(faces), "--faces", "3", "--val-fraction", "0.5"]
    assert mod.main(args + ["--dry-run"]) == 0
    assert w.read_bytes() == before
    assert mod.main(args) == 0
    curve = from_pretrained(w).config.strength_curve
    fs = [0.65, 0.8, 1.0, 1.25, 1.6, 2.0, 2.5, 3.2, 4.0, 5.0]  # 64 px sources reach them all
    assert [p[:2] for p in curve] == [(f, q) for f in fs for q in (-1.0, 24.0, 28.0, 32.0, 36.0, 40.0)]
    assert all(p[2:] == (0.0, 0.0) for p in curve)  # noise: the pipeline's detector finds no face
    assert mod.main(args + ["--align", "exact"]) == 0  # the sources' own alignment: measured anyway
    measured = from_pretrained(w).config.strength_curve
    assert len(measured) == 60
    assert mod.main(args + ["--align", "exact", "--jobs", "2"]) == 0  # scales in two processes: the same curve
    assert from_pretrained(w).config.strength_curve == measured
    old, new = load_file(str(tiny_weights)), load_file(str(w))
    assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
    assert mod.main([str(tmp_path / "missing.safetensors"), "--data", str(faces)]) == 2
    # the release gate: a clip-scale it cannot score counts as lost, so the curve is zeroed and
    # the measured one kept in the metadata
    from rmmvideo.models.weights import read_metadata

    bad_clip = tmp_path / "not_a_video.mp4"
    bad_clip.write_text("not a video")
    assert mod.main(args + ["--align", "exact", "--gate", str(bad_clip), "--gate-scales", "4"]) == 0
    gated = from_pretrained(w).config.strength_curve
    assert [p[:2] for p in gated] == [p[:2] for p in curve] and all(p[2:] == (0.0, 0.0) for p in gated)
    record = read_metadata(w)["extra"]["strength_calibration"]
    assert record["gate"]["lost"][0].startswith("not_a_video.mp4 x4: not scored")
    assert len(record["measured_curve"]) == 60
    # --regate gates the measured curve again without measuring (no --data needed)
    assert mod.main([str(w), "--regate"]) == 2  # needs --gate
    assert mod.main([str(w), "--regate", "--gate", str(bad_clip), "--gate-scales", "2"]) == 0
    again = read_metadata(w)["extra"]["strength_calibration"]
    assert again["measured_curve"] == record["measured_curve"] and again["faces"] == record["faces"]
    assert again["gate"]["scales"] == [2] and again["gate"]["lost"][0].startswith("not_a_video.mp4 x2")
    assert all(p[2:] == (0.0, 0.0) for p in from_pretrained(w).config.strength_curve)


def test_worse_than_upscale_names_every_lost_clip_scale() -> None:
    from rmmvideo.eval.video import ClipResult, MethodScore, worse_than_upscale

    def row(gain: float, fed: float, temporal: float) -> MethodScore:
        return MethodScore("rmm auto", 30.0, 0.9, 0.3, 1.0, 1.0, 1.0, 0.1, psnr_gain=gain, fed_ratio=fed,
                           temporal_ratio=temporal)

    base = MethodScore("bicubic", 30.0, 0.9, 0.3, 1.0, 1.0, 1.0, 0.1)
    results = [ClipResult("a/one.mp4", 4, methods=[row(0.1, 0.99, 1.0), base]),
               ClipResult("two.mp4", 2, methods=[row(0.0, 1.004, 0.98)]),
               ClipResult("three.mp4", 8, methods=[row(-0.01, 1.0, 1.02)]),
               ClipResult("four.mp4", 4, error="no face found in the original frames")]
    assert worse_than_upscale(results) == [
        "two.mp4 x2: FED 1.004x", "three.mp4 x8: ΔPSNR -0.010 dB, temporal 1.020x",
        "four.mp4 x4: not scored (no face found in the original frames)"]
    assert worse_than_upscale(results[:1]) == []  # gains, and the bicubic row is not judged
    assert worse_than_upscale(results, method="rmm s=1") == [  # no such rows: only the unscored one
        "four.mp4 x4: not scored (no face found in the original frames)"]
    # against a baseline (strength 0): its own losses count only where the method is worse still
    s0 = [MethodScore("rmm s=0", 30.0, 0.9, 0.3, 1.0, 1.0, 1.0, 0.1, psnr_gain=0.05, fed_ratio=fed,
                      temporal_ratio=1.01) for fed in (1.01, 1.002)]
    pair = [ClipResult("five.mp4", 8, methods=[row(0.1, 1.005, 1.005), s0[0]]),
            ClipResult("six.mp4", 8, methods=[row(0.1, 1.005, 1.0), s0[1]])]
    assert worse_than_upscale(pair) == ["five.mp4 x8: FED 1.005x, temporal 1.005x", "six.mp4 x8: FED 1.005x"]
    assert worse_than_upscale(pair, baseline="rmm s=0") == ["six.mp4 x8: FED 1.005x"]


def test_identity_safe_cuts_the_luma_before_the_chroma(monkeypatch) -> None:
    """With an identity distance that the detail's chroma lowers and its luma raises, the guard
    keeps all of the chroma and drops the luma (a stand-in for dlib's FED, which needs faces)."""
    from types import SimpleNamespace

    import numpy as np

    import rmmvideo.eval.face_metrics as fm
    from rmmvideo.video.composite import to_grey
    from rmmvideo.video.strength import identity_safe

    n = 6
    truth = torch.stack([_face_like(k)[0] for k in range(n)])
    up = torch.nn.functional.avg_pool2d(truth, 4).repeat_interleave(4, -1).repeat_interleave(4, -2)
    luma_w = np.array([0.299, 0.587, 0.114])

    def fake_fed(img: np.ndarray, ref: SimpleNamespace) -> tuple[float, float]:
        x = img.astype(np.float64) / 255.0
        y = x @ luma_w
        chroma_err = np.abs((x - y[..., None]) - ref.chroma).mean()
        luma_moved = np.abs(y - ref.up_luma).mean()  # this "descriptor" dislikes any luma change
        return chroma_err + 10.0 * luma_moved, 0.0

    def ref(i: int) -> SimpleNamespace:
        t = truth[i].permute(1, 2, 0).double().numpy()
        u = up[i].permute(1, 2, 0).double().numpy()
        return SimpleNamespace(detected=True, chroma=t - (t @ luma_w)[..., None], up_luma=u @ luma_w)

    monkeypatch.setattr(fm, "fed_lle", fake_fed)
    refs = [ref(i) for i in range(n)]
    detail = truth - up
    assert to_grey(detail).abs().mean() > 0.01  # the detail has luma to drop
    assert identity_safe(Strength.uniform(1.0), up, detail, refs) == Strength(0.0, 1.0)


def test_strength_option_takes_luma_and_chroma_weights(tiny_weights, capsys) -> None:
    import argparse

    from rmmvideo.cli.main import main
    from rmmvideo.cli.run import option_from_text, parse_strength
    from rmmvideo.errors import UserError
    from rmmvideo.models.weights import from_pretrained
    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.render import TrackStyler

    assert parse_strength("auto") == "auto" and parse_strength("0.3") == 0.3
    assert parse_strength("0.5/1") == (0.5, 1.0)
    assert option_from_text("strength", "0/0.75") == (0.0, 0.75)  # batch manifests read it the same way
    for bad in ("0.5/2", "a/1", "0.5/1/1", "1.5", "-0"[:1]):
        with pytest.raises(argparse.ArgumentTypeError, match="LUMA/CHROMA"):
            parse_strength(bad)
    assert main(["run", "x.mp4", "--strength", "1/7"]) == 2
    assert "--strength" in capsys.readouterr().err
    RestoreOptions(strength=(0.5, 1.0))
    for bad in ((0.5, 1.5), (0.5,), (0.5, 0.5, 0.5), (True, 1.0), "0.5"):
        with pytest.raises(UserError, match="--strength"):
            RestoreOptions(strength=bad)  # type: ignore[arg-type]
    styler = TrackStyler(from_pretrained(tiny_weights), seed=0, strength=(0.5, 1.0))
    styler.pin([4], torch.rand(1, 3, 32, 32), [True])
    assert styler.styles[4].strength == Strength(0.5, 1.0)


def test_auto_strength_of_a_track_reads_its_faces_codec_quantiser(tiny_weights) -> None:
    """A track's auto strength is the curve's at the median quantiser of the crops that pin it
    (the unknown rows when none has one): a coarsely coded face gets more of the model's detail."""
    from dataclasses import replace

    from rmmvideo.models.weights import from_pretrained
    from rmmvideo.video.render import TrackStyler

    model = from_pretrained(tiny_weights)
    model.config = replace(model.config, strength_curve=QP_CURVE)
    styler = TrackStyler(model, seed=0, strength="auto", scale=4.0)
    crops, scale = torch.rand(3, 3, 32, 32), torch.full((3,), 2.0)
    styler.pin([1, 1, 1], crops, [True] * 3, crop_scale=scale, qp=[30.0, 34.0, 32.0])
    styler.pin([2, 2, 2], crops, [True] * 3, crop_scale=scale, qp=[24.0, None, 24.0])
    styler.pin([3, 3, 3], crops, [True] * 3, crop_scale=scale)
    assert styler.styles[1].strength == curve_strength(QP_CURVE, 2.0, 32.0) == Strength(0.8, 1.0)
    assert styler.styles[2].strength == curve_strength(QP_CURVE, 2.0, 24.0)
    assert styler.styles[3].strength == curve_strength(QP_CURVE, 2.0)
    assert styler.styles[2].strength.luma < styler.styles[3].strength.luma < styler.styles[1].strength.luma


def test_run_summary_says_which_tracks_stayed_the_plain_upscale() -> None:
    from rmmvideo.video.pipeline import RunSummary

    zero, mid = Strength(), Strength(0.38, 0.75)
    line = RunSummary("in.mp4", "out.mp4", 90, 84, 3, 12.0, strengths=[zero, mid, zero]).line()
    assert line.startswith("90 frames, 84 faces restored, 3 tracks (strength 0 = the plain upscale on 2, "
                           "0.38/0.75 on 1) in 12.0 s"), line
    many = [Strength.uniform(k / 10) for k in range(6)]
    assert "others on 3)" in RunSummary("a", "b", 1, 1, 6, 1.0, strengths=many).line()
    assert RunSummary("a", "b", 1, 1, 0, 1.0).line().startswith("1 frame, 1 face restored, 0 tracks in")  # no note
    fused = RunSummary("in.mp4", "out.mp4", 90, 0, 1, 12.0, strengths=[zero], fused=88).line()
    assert fused.startswith("90 frames, 0 faces restored, 88 fused across frames, 1 track "
                            "(strength 0 = the fused upscale on 1) in 12.0 s"), fused
    both = RunSummary("in.mp4", "out.mp4", 90, 0, 1, 12.0, strengths=[zero], fused=88, deblocked=90).line()
    assert both.startswith("90 frames, 0 faces restored, 90 cleaned of codec artefacts, 88 fused across frames, "
                           "1 track (strength 0 = the cleaned, fused upscale on 1)"), both
