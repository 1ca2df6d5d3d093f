"""Auto strength (rmmvideo.video.strength) with the bundled weights on a real face."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rmmvideo.models.weights import default_weights_path, from_pretrained
from rmmvideo.video.pipeline import TrackStyler
from rmmvideo.video.stills import resize_to_model

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
    assert s_sharp == 0.0  # output at x4 of a 200 px face: the crop already holds all it can show
    assert 0.0 < s_degraded <= 1.0 and s_degraded > s_sharp
    fixed = TrackStyler(model, seed=0, strength=0.4, scale=4.0)
    fixed.pin([3], degraded[:1], [True])
    assert fixed.styles[3].strength == 0.4
