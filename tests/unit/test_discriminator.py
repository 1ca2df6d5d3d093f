"""Multi-scale discriminators (eq. 8)."""

from __future__ import annotations

import pytest
import torch

from rmmvideo.models.discriminator import MultiScaleDiscriminator


def test_shapes_scales_and_weights():
    torch.manual_seed(0)
    d = MultiScaleDiscriminator(width=8, n_layers=3)
    assert d.scales == (1, 2, 4, 8) and d.weights == (4.0, 2.0, 1.0, 1.0)
    outs = d(torch.rand(2, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(2, 1, 4, 4), (2, 1, 2, 2), (2, 1, 1, 1), (2, 1, 1, 1)]


def test_gradients_reach_every_scale_and_input():
    torch.manual_seed(0)
    d = MultiScaleDiscriminator(width=8, n_layers=2)
    x = torch.rand(1, 3, 64, 64, requires_grad=True)
    sum(o.mean() for o in d(x)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for sub in d.discs:
        grads = [p.grad for p in sub.parameters()]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_bad_input_raises():
    d = MultiScaleDiscriminator(width=8, n_layers=2)
    with pytest.raises(ValueError, match="divisible"):
        d(torch.rand(1, 3, 36, 36))
    with pytest.raises(ValueError, match="expected"):
        d(torch.rand(1, 1, 32, 32))


def test_save_load_round_trip():
    torch.manual_seed(0)
    a = MultiScaleDiscriminator(width=8, n_layers=2)
    b = MultiScaleDiscriminator(width=8, n_layers=2)
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    x = torch.rand(1, 3, 32, 32)
    for oa, ob in zip(a(x), b(x)):
        assert torch.equal(oa, ob)
