"""Losses of the RMM objective (eqs. 8-12) on small random tensors."""

from __future__ import annotations

import pytest
import torch

from rmmvideo.config import FFHQ_TEMPLATE
from rmmvideo.models.discriminator import MultiScaleDiscriminator
from rmmvideo.models.vgg import load_vgg19
from rmmvideo.train.losses import (
    LossWeights,
    RMMObjective,
    component_boxes,
    component_contextual_loss,
    contextual_loss,
    huber_loss,
    perceptual_loss,
)


@pytest.fixture(scope="module")
def vgg():
    torch.manual_seed(0)
    return load_vgg19(None)


def _smooth_image(seed: int, size: int = 64) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(x, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


def test_huber_matches_hand_computation():
    pred = torch.tensor([[0.0, 0.5, 0.005, -0.02]])
    target = torch.zeros(1, 4)
    delta = 0.01
    # |d| = 0, 0.5, 0.005, 0.02 -> 0, delta*(0.5-delta/2), 0.5*0.005^2, delta*(0.02-delta/2)
    hand = (0.0 + 0.01 * (0.5 - 0.005) + 0.5 * 0.005**2 + 0.01 * (0.02 - 0.005)) / 4
    assert huber_loss(pred, target, delta).item() == pytest.approx(hand, rel=1e-6)
    # delta >= all errors: pure half-MSE
    assert huber_loss(pred, target, 1.0).item() == pytest.approx(0.5 * (pred**2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError):
        huber_loss(pred, torch.zeros(4))


def test_perceptual_zero_for_identical_positive_otherwise(vgg):
    x = _smooth_image(1)
    y = _smooth_image(2)
    assert perceptual_loss(vgg, x, x).item() == 0.0
    assert perceptual_loss(vgg, x, y).item() > 0.0


def test_contextual_zero_for_identical_positive_otherwise(vgg):
    x = _smooth_image(1)
    y = _smooth_image(2)
    fx = vgg(x, ("relu3_2",))["relu3_2"]
    fy = vgg(y, ("relu3_2",))["relu3_2"]
    same = contextual_loss(fx, fx).item()
    diff = contextual_loss(fx, fy).item()
    assert same < 1e-3
    assert diff > 0.05
    boxes = component_boxes(FFHQ_TEMPLATE, 64)
    assert component_contextual_loss(vgg, x, x, boxes).item() < 1e-2
    assert component_contextual_loss(vgg, x, y, boxes).item() > 0.1


def test_contextual_nearly_invariant_to_small_shift(vgg):
    x = _smooth_image(3, 72)
    a = x[:, :, 4:68, 4:68]
    shifted = x[:, :, 6:70, 5:69]  # 2 px down, 1 px right
    other = _smooth_image(4, 72)[:, :, 4:68, 4:68]
    fa, fs, fo = (vgg(t, ("relu3_2",))["relu3_2"] for t in (a, shifted, other))
    cx_shift = contextual_loss(fs, fa).item()
    cx_other = contextual_loss(fo, fa).item()
    # pixel-aligned L2 of the features treats the shift as a large change; CX much less so
    l2_shift = torch.mean((fs - fa) ** 2).item()
    l2_other = torch.mean((fo - fa) ** 2).item()
    assert cx_shift < 0.5 * cx_other
    assert cx_shift / cx_other < l2_shift / l2_other


def test_component_boxes_on_template():
    boxes = component_boxes(FFHQ_TEMPLATE, 512)
    assert set(boxes) == {"left_eye", "right_eye", "mouth"}
    (lt, ll, ls, _), (rt, rl, rs, _), (mt, ml, ms, _) = boxes["left_eye"], boxes["right_eye"], boxes["mouth"]
    assert ll + ls / 2 == pytest.approx(193, abs=2) and lt + ls / 2 == pytest.approx(240, abs=2)
    assert rl + rs / 2 == pytest.approx(319, abs=2) and rt + rs / 2 == pytest.approx(240, abs=2)
    assert mt + ms / 2 == pytest.approx(371, abs=2) and ml + ms / 2 == pytest.approx(256, abs=3)
    for t, l, h, w in boxes.values():
        assert 0 <= t and t + h <= 512 and 0 <= l and l + w <= 512


def test_adversarial_terms_and_objective(vgg):
    torch.manual_seed(0)
    disc = MultiScaleDiscriminator(width=8, n_layers=2)
    x_hq = _smooth_image(5, 32)
    x_hr = _smooth_image(6, 32).requires_grad_(True)
    out = {"x_hr": x_hr, "x_mr": x_hr * 0.5, "triplet": torch.tensor(0.25)}
    # random VGG: perceptual and contextual disabled by default
    obj = RMMObjective(LossWeights(), FFHQ_TEMPLATE, 32, vgg=vgg)
    assert obj.active == ["rec", "rec_mr", "adv", "triplet"]
    g = obj.generator_loss(out, x_hq, disc)
    assert set(g) == {"rec", "rec_mr", "adv", "triplet", "total"}
    w = LossWeights()
    expect = w.rec * g["rec"] + w.rec_mr * g["rec_mr"] + w.adv * g["adv"] + w.triplet * g["triplet"]
    assert g["total"].item() == pytest.approx(expect.item(), rel=1e-6)
    g["total"].backward()
    assert x_hr.grad is not None and x_hr.grad.abs().sum() > 0
    d = obj.discriminator_loss(disc, x_hq, x_hr)
    assert d["d_real"].item() > 0 and d["d_fake"].item() > 0
    # opt in to random VGG: all terms active
    obj2 = RMMObjective(LossWeights(), FFHQ_TEMPLATE, 32, vgg=vgg, allow_random_vgg=True)
    g2 = obj2.generator_loss(out, x_hq, disc)
    assert g2["vgg"].item() > 0 and g2["cx"].item() > 0
