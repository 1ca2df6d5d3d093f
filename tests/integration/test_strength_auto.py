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


def test_auto_strength_is_lower_for_a_sharp_clean_face_than_for_the_same_face_degraded() -> None:
    model = from_pretrained(default_weights_path())
    faces = [np.asarray(Image.open(FACES / n).convert("RGB")) for n in NAMES]
    sharp = resize_to_model(faces, 128, torch.device("cpu"))  # 200 px faces: the crop is a downsample
    small = [np.asarray(Image.fromarray(f).resize((32, 32), Image.BICUBIC)) for f in faces]
    degraded = resize_to_model(small, 128, torch.device("cpu"))  # 32 px faces blown up 4x
    styler = TrackStyler(model, seed=0, strength="auto", scale=4.0)
    styler.pin([0, 0], sharp, [True, True], crop_scale=torch.full((2,), 128 / 200))
    styler.pin([1, 1], degraded, [True, True], crop_scale=torch.full((2,), 128 / 32))
    s_sharp, s_degraded = styler.styles[0].strength, styler.styles[1].strength
    assert model.config.strength_curve  # the bundled weights are calibrated
    assert s_sharp == curve_strength(model.config.strength_curve, 128 / 200)
    assert s_degraded == curve_strength(model.config.strength_curve, 4.0)  # min(f = 4, scale 4)
    assert s_degraded.chroma > 0.0 and s_degraded.luma > s_sharp.luma and s_degraded.chroma > s_sharp.chroma
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
