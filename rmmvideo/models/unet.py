"""U-Net of RMM: low-quality crop -> X_MR and multi-scale spatial features z_S (paper sec. 3).

Levels follow ``config.unet_channels`` (full resolution first, ``n = len`` levels, ``n - 1``
stride-2 downsamplings). Encoder level j runs at ``S / 2**j``; the decoder goes back up with
skip connections; its feature at each level is z_S for the RM3 block of that resolution.

Decisions:
- X_MR = x + to_rgb(d_0) (a residual on the resized input), so the U-Net starts from the
  identity and only has to learn the refinement (it is trained with reconstruction only).
- Skips are added, not concatenated (a light, FPN-like U-Net decoder, chosen for CPU speed):
  ``d_j = lrelu(conv3x3(up2x(conv1x1(d_{j+1})) + e_j))``; the 1x1 lateral conv runs at the
  lower resolution, so the full-resolution conv has ``channels[0]`` inputs instead of
  ``channels[0] + channels[1]``.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def _act() -> nn.Module:
    return nn.LeakyReLU(0.2, inplace=True)


class UNet(nn.Module):
    """Args:
        channels: widths per level, full resolution first.
    """

    def __init__(self, channels: tuple[int, ...] | list[int]) -> None:
        super().__init__()
        ch = list(channels)
        if len(ch) < 1:
            raise ValueError("UNet: need at least one level")
        self.channels = ch
        n = len(ch)
        self.enc = nn.ModuleList()
        for j in range(n):
            if j == 0:
                self.enc.append(nn.Sequential(nn.Conv2d(3, ch[0], 3, 1, 1), _act()))
            else:
                self.enc.append(
                    nn.Sequential(
                        nn.Conv2d(ch[j - 1], ch[j], 3, 2, 1), _act(),
                        nn.Conv2d(ch[j], ch[j], 3, 1, 1), _act(),
                    )
                )
        # lat[j] maps d_{j+1} to ch[j] channels (at the low resolution); dec[j] fuses
        # up2x(lat[j](d_{j+1})) + e_j, for j = n-2 .. 0
        self.lat = nn.ModuleList(nn.Conv2d(ch[j + 1], ch[j], 1) for j in range(n - 1))
        self.dec = nn.ModuleList(
            nn.Sequential(nn.Conv2d(ch[j], ch[j], 3, 1, 1), _act()) for j in range(n - 1)
        )
        self.to_rgb = nn.Conv2d(ch[0], 3, 1)
        nn.init.zeros_(self.to_rgb.weight)
        nn.init.zeros_(self.to_rgb.bias)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """
        Args:
            x: ``(B, 3, S, S)``, S divisible by ``2**(n-1)``.
        Returns:
            x_mr ``(B, 3, S, S)``; z_s: list of n decoder features, lowest resolution first,
            ``z_s[i]`` of shape ``(B, channels[n-1-i], S / 2**(n-1-i), S / 2**(n-1-i))``.
        """
        n = len(self.channels)
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"UNet: expected (B, 3, S, S), got {tuple(x.shape)}")
        if x.shape[-1] % 2 ** (n - 1) or x.shape[-2] % 2 ** (n - 1):
            raise ValueError(f"UNet: size {tuple(x.shape[-2:])} not divisible by {2 ** (n - 1)}")
        skips = []
        h = x
        for enc in self.enc:
            h = enc(h)
            skips.append(h)
        feats = [h]  # bottleneck, lowest resolution
        for j in range(n - 2, -1, -1):
            up = F.interpolate(self.lat[j](h), scale_factor=2.0, mode="nearest")
            h = self.dec[j](up + skips[j])
            feats.append(h)
        return x + self.to_rgb(h), feats
