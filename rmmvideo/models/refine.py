"""Full-resolution refinement head (an architecture option of issue 12, off by default).

The RMM generator does almost all of its work below full resolution: at ``size`` x ``size`` it
has one 3x3 convolution on each side of the U-Net and the last RM3 block. The head adds
``layers`` 3x3 convolutions at full resolution on the low-quality crop and the generator's
output, and adds their result to that output::

    x_hr' = x_hr + conv_L(lrelu(... lrelu(conv_1(cat(x_lq, x_hr)))))

Its last convolution starts at zero, so a head added to trained weights leaves them exactly as
they were until it is trained (``init_from`` can grow a model by a head).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RefineHead(nn.Module):
    """Args:
        layers: number of 3x3 convolutions, >= 2.
        channels: their width.
    """

    def __init__(self, layers: int, channels: int) -> None:
        super().__init__()
        if layers < 2 or channels < 1:
            raise ValueError(f"RefineHead: need layers >= 2 and channels >= 1, got {layers}, {channels}")
        mods: list[nn.Module] = [nn.Conv2d(6, channels, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        for _ in range(layers - 2):
            mods += [nn.Conv2d(channels, channels, 3, 1, 1), nn.LeakyReLU(0.2, inplace=True)]
        out = nn.Conv2d(channels, 3, 3, 1, 1)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.body = nn.Sequential(*mods, out)

    def forward(self, x_lq: Tensor, x_hr: Tensor) -> Tensor:
        """``x_lq``, ``x_hr``: ``(B, 3, S, S)`` -> refined ``x_hr`` ``(B, 3, S, S)``."""
        return x_hr + self.body(torch.cat([x_lq, x_hr], dim=1))
