"""Auto strength (rmmvideo.video.strength) with the bundled weights on a real face, and the
calibration that sets it, measured on real faces."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rmmvideo.models.weights import default_weights_path, from_pretrained
from rmmvideo.video.render import TrackStyler
from rmmvideo.video.stills import resize_to_model
from rmmvideo.video.strength import Strength, curve_strength

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces" / "utkface"
NAMES = ["100_0_0_20170112213500903.jpg", "100_1_0_20170110183726390.jpg"]

pytestmark = pytest.mark.skipif(not (FACES / NAMES[0]).is_file(), reason=f"shared face crops not found in {FACES}")


def test_auto_strength_follows_the_bundled_curve_and_its_release_gate() -> None:
    """A track's auto strength is the bundled curve's at its crop scale. The curve was measured
    with the pipeline's alignment and passed through the release gate on real clips: if the
    gate found a loss, the curve is zero (auto = the plain upscale) and the measured one, which
    gives a small blurred face more detail than a sharp one, is kept in the metadata."""
    from rmmvideo.models.weights import read_metadata

    model = from_pretrained(default_weights_path())
    faces = [np.asarray(Image.open(FACES / n).convert("RGB")) for n in NAMES]
    sharp = resize_to_model(faces, 128, torch.device("cpu"))  # 200 px faces: the crop is a downsample
    small = [np.asarray(Image.fromarray(f).resize((32, 32), Image.BICUBIC)) for f in faces]
    degraded = resize_to_model(small, 128, torch.device("cpu"))  # 32 px faces blown up 4x
    styler = TrackStyler(model, seed=0, strength="auto", scale=4.0)
    styler.pin([0, 0], sharp, [True, True], crop_scale=torch.full((2,), 128 / 200))
    styler.pin([1, 1], degraded, [True, True], crop_scale=torch.full((2,), 128 / 32))
    styler.pin([2, 2], degraded, [True, True], crop_scale=torch.full((2,), 128 / 32), qp=[24.0, 24.0])
    styler.pin([3, 3], degraded, [True, True], crop_scale=torch.full((2,), 128 / 32), qp=[36.0, 38.0])
    s_sharp, s_degraded = styler.styles[0].strength, styler.styles[1].strength
    curve = model.config.strength_curve
    assert curve and all(len(p) == 4 for p in curve)  # the bundled weights are calibrated per quantiser
    assert s_sharp == curve_strength(curve, 128 / 200)
    assert s_degraded == curve_strength(curve, 4.0)  # min(f = 4, scale 4)
    assert styler.styles[2].strength == curve_strength(curve, 4.0, 24.0)
    assert styler.styles[3].strength == curve_strength(curve, 4.0, 37.0)  # the crops' median quantiser
    record = read_metadata(default_weights_path())["extra"]["strength_calibration"]
    assert record["align"] == "detected" and record["gate"]["scales"] == [2, 4, 6, 8]
    if record["gate"]["lost"]:
        assert s_sharp.is_zero and s_degraded.is_zero and all(p[2:] == (0.0, 0.0) for p in curve)
        curve = [tuple(p) for p in record["measured_curve"]]
    m_sharp, m_degraded = curve_strength(curve, 128 / 200), curve_strength(curve, 4.0)
    assert m_degraded.chroma > m_sharp.chroma and m_degraded.luma > m_sharp.luma
    # a coarsely coded face gets more of the model's detail than a finely coded one
    m_fine, m_coarse = curve_strength(curve, 2.0, 24.0), curve_strength(curve, 2.0, 36.0)
    assert m_coarse.luma > m_fine.luma and m_coarse.chroma >= m_fine.chroma
    fixed = TrackStyler(model, seed=0, strength=0.4, scale=4.0)
    fixed.pin([3], degraded[:1], [True])
    assert fixed.styles[3].strength == Strength.uniform(0.4)


def test_identity_safe_keeps_a_true_restoration_and_cuts_one_that_moves_identity() -> None:
    from rmmvideo.eval.face_metrics import face_reference, to_uint8
    from rmmvideo.train.degrade import resize_to
    from rmmvideo.video.strength import Strength, identity_safe

    faces = [np.asarray(Image.open(FACES / n).convert("RGB")) for n in NAMES]
    truth = resize_to(torch.stack([torch.from_numpy(f).permute(2, 0, 1).float() / 255 for f in faces]), 128)
    up = resize_to(resize_to(truth, 32), 128)  # a 32 px face blown up 4x
    refs = [face_reference(to_uint8(t)) for t in truth]
    full = Strength.uniform(1.0)
    assert identity_safe(full, up, truth - up, refs) == full  # the truth's own detail: identity improves
    # the improvement must beat the noise of the paired differences: an absurd margin refuses it
    assert identity_safe(full, up, truth - up, refs, margin=1e6).is_zero
    g = torch.Generator().manual_seed(0)
    wrong = 0.25 * torch.randn(truth.shape, generator=g)  # strong random "detail"
    assert identity_safe(full, up, wrong, refs).luma < 1.0


def test_detected_view_finds_real_faces_a_few_pixels_off_their_exact_alignment() -> None:
    """The calibration's faces aligned as the pipeline aligns them: MTCNN + dlib's 68 points on
    the degraded 200 px UTKFace crop (crop scale 2.5: an 80 px input) land near, but not on,
    the crop's own alignment; the truths differ by the misalignment alone."""
    from rmmvideo.train.degrade import resize_to
    from rmmvideo.video.detect import make_detector
    from rmmvideo.video.strength import detected_view, pipeline_view

    names = sorted(p.name for p in FACES.glob("*.jpg"))[:8]
    sources = [torch.from_numpy(np.asarray(Image.open(FACES / n).convert("RGB"))).permute(2, 0, 1).float() / 255
               for n in names]
    detector, _ = make_detector("mtcnn")
    template = from_pretrained(default_weights_path()).config.template
    views = [detected_view(s, 2.5, 128, template, 30, 0, detector) for s in sources]
    found = [(v, s) for v, s in zip(views, sources) if v is not None]
    assert len(found) >= 7, f"MTCNN found {len(found)} of 8 faces"
    exact = [resize_to(s, 128) for _, s in found]
    off = [float((v[2] - e).abs().mean()) for (v, _), e in zip(found, exact)]
    # UTKFace's crops put the detector's points a few px off the template: not the same crop...
    assert 0.01 < float(np.median(off)) < 0.15, off
    for i, (v, s) in enumerate(found):  # ...but the same face: nearer its own crop than another's
        other = exact[(i + 1) % len(exact)]
        assert off[i] < float((v[2] - other).abs().mean()), i
    crop = pipeline_view(found[0][1], 2.5, 128, 30, 0)[0]
    assert float((found[0][0][0] - crop).abs().mean()) < 0.2


def test_realign_faces_makes_the_pipelines_alignment_the_identity(tmp_path: Path) -> None:
    """pipelines/realign_faces.py on real faces: same names and sizes (so the train/val split
    by name is kept), and aligning an output as the pipeline does (the similarity that puts the
    detector's five points on the template) is now the identity, while UTKFace's own crops
    need a few degrees, percent and pixels."""
    import math
    import shutil

    from rmmvideo.video.align import align_matrices, five_points
    from rmmvideo.video.detect import make_detector
    from tests.conftest import load_pipeline

    mod = load_pipeline("realign_faces")
    src = tmp_path / "src"
    src.mkdir()
    names = sorted(p.name for p in FACES.glob("*.jpg"))[::997][:6]
    for n in names:
        shutil.copy(FACES / n, src / n)
    assert mod.main([str(src), str(tmp_path / "out"), "--val", "6"]) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == names  # nothing else left behind
    detector, _ = make_detector("mtcnn")
    template = from_pretrained(default_weights_path()).config.template

    def realignment(folder: Path, name: str) -> tuple[float, float, float]:
        """(|scale - 1|, |rotation| in degrees, centre shift in px) of the pipeline's alignment."""
        img = np.asarray(Image.open(folder / name).convert("RGB"))
        face = detector.detect([np.pad(img, ((100, 100), (100, 100), (0, 0)), mode="edge")])[0][0]
        m = align_matrices(torch.as_tensor(five_points(face.landmarks) - 100)[None], template, img.shape[1])[0]
        m = m.numpy()
        c = np.full(2, (img.shape[1] - 1) / 2)
        scale = math.sqrt(abs(float(np.linalg.det(m[:, :2]))))
        return abs(scale - 1), abs(math.degrees(math.atan2(m[1, 0], m[0, 0]))), float(np.linalg.norm(m[:, :2] @ c + m[:, 2] - c))

    before = np.array([realignment(src, n) for n in names])
    after = np.array([realignment(tmp_path / "out", n) for n in names])
    assert Image.open(tmp_path / "out" / names[0]).size == Image.open(src / names[0]).size
    assert (after[:, 0] < 0.02).all() and (after[:, 1] < 1.0).all() and (after[:, 2] < 1.5).all(), after
    assert before.max(0)[0] > 0.02 or before.max(0)[1] > 1.0 or before.max(0)[2] > 1.5, before
    assert mod.main([str(src), str(src / "inside")]) == 2  # never into the source folder
