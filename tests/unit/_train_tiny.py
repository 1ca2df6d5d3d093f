"""Shared tiny setup for the trainer tests: a tiny ModelConfig and a small seeded dataset of
smooth random "faces" degraded with the real degradation model (eq. 16)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from rmmvideo.config import ModelConfig
from rmmvideo.train.degrade import DegradationConfig, degrade, resize_to
from rmmvideo.train.losses import LossWeights
from rmmvideo.train.trainer import TrainConfig

TINY = ModelConfig(
    name="rmm-tiny",
    size=32,
    unet_channels=(8, 8, 8),
    decoder_channels=(8, 8, 8),
    z_n_dim=16,
    mapping_layers=2,
    mapping_dim=16,
    wavelet_levels=2,
    memory_size=16,
    key_dim=8,
    key_width=8,
)


def tiny_images(n: int, size: int = 32, seed: int = 0) -> list[torch.Tensor]:
    """Smooth images for even indices, textured (noisy) ones for odd: (3, S, S) in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        coarse = 4 if i % 2 == 0 else 16
        x = torch.rand(1, 3, coarse, coarse, generator=g)
        x = F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)
        out.append(x[0].clamp(0, 1))
    return out


def tiny_dataset(n: int = 8, size: int = 32, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    deg = DegradationConfig(scale=(2.0, 4.0), gaussian_sigma=(0.5, 1.0), motion_length=(3, 5))
    items = []
    for i, hq in enumerate(tiny_images(n, size, seed)):
        lq = resize_to(degrade(hq, np.random.default_rng([seed, i]), deg), size)
        items.append({"lq": lq.float(), "hq": hq.float()})
    return items


def tiny_train_config(**kw) -> TrainConfig:
    base = dict(
        model=TINY,
        batch=4,
        steps=4,
        lr=2e-4,
        loss=LossWeights(adv=1.0, vgg=0.0, cx=0.0),
        disc_width=8,
        disc_layers=2,
        device="cpu",
        log_every=1,
        ckpt_every=0,
        sample_every=0,
        seed=0,
    )
    base.update(kw)
    return TrainConfig(**base)
