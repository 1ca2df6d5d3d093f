"""Multi-scale PatchGAN discriminators (paper eq. 8, after pix2pixHD [45]).

D_i sees the image average-pooled by a factor i in ``scales`` (paper: 1, 2, 4, 8) and returns a
map of real/fake logits. The per-scale loss weights (paper: 4, 2, 1, 1) are applied by the loss
(``rmmvideo.train.losses``); they are stored here so that both travel together.

All convolutions are spectrally normalised (Miyato et al. 2018) for a stable GAN game without
tuning; ``width`` sets the first layer's channels, so a tiny config stays cheap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm


class PatchDiscriminator(nn.Module):
    """PatchGAN: ``n_layers`` stride-2 convs (3x3, so any side >= 1 works), then a 3x3 logit conv.

    Args:
        in_channels: image channels (3).
        width: channels of the first conv; doubled per layer up to ``8 * width``.
        n_layers: number of stride-2 convs.

    Input ``(B, C, H, W)``; output logits ``(B, 1, ceil(H / 2**n_layers), ...)``.
    """

    def __init__(self, in_channels: int = 3, width: int = 64, n_layers: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c_in = in_channels
        for i in range(n_layers):
            c_out = width * min(2**i, 8)
            layers += [spectral_norm(nn.Conv2d(c_in, c_out, 3, 2, 1)), nn.LeakyReLU(0.2, True)]
            c_in = c_out
        layers += [spectral_norm(nn.Conv2d(c_in, c_in, 3, 1, 1)), nn.LeakyReLU(0.2, True)]
        layers += [spectral_norm(nn.Conv2d(c_in, 1, 3, 1, 1))]
        self.net = nn.Sequential(*layers)
        self.in_channels = in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"PatchDiscriminator: expected (B, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        return self.net(x)


class MultiScaleDiscriminator(nn.Module):
    """One :class:`PatchDiscriminator` per scale factor.

    Args:
        scales: downsampling factors (paper: 1, 2, 4, 8).
        weights: loss weight of each scale (paper: 4, 2, 1, 1).
        width, n_layers: see :class:`PatchDiscriminator`.

    ``forward(x)`` with x ``(B, 3, H, W)`` in [0, 1] returns one logit map per scale.
    """

    def __init__(
        self,
        scales: tuple[int, ...] = (1, 2, 4, 8),
        weights: tuple[float, ...] = (4.0, 2.0, 1.0, 1.0),
        width: int = 64,
        n_layers: int = 3,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if len(scales) != len(weights) or not scales:
            raise ValueError(
                f"MultiScaleDiscriminator: {len(scales)} scales but {len(weights)} weights"
            )
        self.scales = tuple(int(s) for s in scales)
        self.weights = tuple(float(w) for w in weights)
        self.discs = nn.ModuleList(
            PatchDiscriminator(in_channels, width, n_layers) for _ in self.scales
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outs = []
        for s, d in zip(self.scales, self.discs):
            if x.shape[-1] % s or x.shape[-2] % s:
                raise ValueError(
                    f"MultiScaleDiscriminator: image {tuple(x.shape[-2:])} not divisible by scale {s}"
                )
            xs = F.avg_pool2d(x, s) if s > 1 else x
            outs.append(d(xs * 2.0 - 1.0))
        return outs
