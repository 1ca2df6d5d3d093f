"""One step of the full objective reaches every part of the model."""

from __future__ import annotations

import torch

from rmmvideo.train.trainer import Trainer

from _train_tiny import tiny_dataset, tiny_images, tiny_train_config


def _snapshot(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(module: torch.nn.Module, before: list[torch.Tensor]) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))


def test_one_step_updates_every_parameter_group(tmp_path):
    torch.manual_seed(0)
    data = tiny_dataset(8)
    t = Trainer(tiny_train_config(), tmp_path, data)
    m = t.model
    # Fill the memory with keys of other images and codes of smooth and textured faces, so the
    # triplet loss has positives and negatives (an empty memory gives it no gradient).
    from rmmvideo.models.wavelet import wavelet_style_code

    other = torch.stack(tiny_images(8, 32, seed=1))
    with torch.no_grad():
        m.keynet.eval()
        m.update_memory(m.keynet(other), wavelet_style_code(other, t.cfg.model.wavelet_levels))
    assert m.memory.n_filled > 1

    g = m.generator
    groups = {
        "unet": g.unet,
        "mapping": g.mapping,
        "rm3_blocks": g.blocks,
        "decoder_convs": g.convs,
        "keynet": m.keynet,
        "discriminators": t.disc,
    }
    before = {k: _snapshot(v) for k, v in groups.items()}
    lq, hq = t._batch(0)
    logs = t.train_step(lq, hq)
    assert logs["g_triplet"] > 0, "the triplet loss must be active for the key network test"
    for name, mod in groups.items():
        assert _changed(mod, before[name]), f"{name} did not change after one step"
    # the EMA moved towards the model but is not equal to it
    ema_changed = _changed(t.ema.generator.unet, before["unet"])
    assert ema_changed
    assert not torch.equal(next(t.ema.generator.unet.parameters()), next(g.unet.parameters()))
    # memory was updated with the batch
    assert set(logs) >= {"g_rec", "g_rec_mr", "g_adv", "g_triplet", "g_total", "d_total"}


def test_no_adversarial_weight_skips_discriminator(tmp_path):
    from rmmvideo.train.losses import LossWeights

    t = Trainer(tiny_train_config(loss=LossWeights(adv=0.0, vgg=0.0, cx=0.0)), tmp_path, tiny_dataset(4))
    before = _snapshot(t.disc)
    logs = t.train_step(*t._batch(0))
    assert "d_total" not in logs and "g_adv" not in logs
    assert not _changed(t.disc, before)
    assert t.objective.active == ["rec", "rec_mr", "triplet"]
