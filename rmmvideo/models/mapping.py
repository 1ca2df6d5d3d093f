"""Mapping network: Gaussian noise Z_N -> one embedding z_N^i per RM3 level (paper sec. 3).

An MLP (StyleGAN-like: the input is normalised to unit RMS, then ``layers`` linear + LeakyReLU
layers of width ``dim``) shared by all levels, followed by one linear head per level (the
"disentangled" embeddings z_N^1..n).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MappingNetwork(nn.Module):
    """Args:
        z_dim: size of Z_N.
        dim: width of the MLP and of each embedding.
        layers: number of shared layers (>= 1).
        n_levels: number of RM3 levels (heads).
    """

    def __init__(self, z_dim: int, dim: int, layers: int, n_levels: int) -> None:
        super().__init__()
        if layers < 1 or n_levels < 1:
            raise ValueError(f"MappingNetwork: layers {layers} and n_levels {n_levels} must be >= 1")
        self.z_dim, self.dim, self.n_levels = z_dim, dim, n_levels
        mlp: list[nn.Module] = []
        for i in range(layers):
            mlp += [nn.Linear(z_dim if i == 0 else dim, dim), nn.LeakyReLU(0.2)]
        self.mlp = nn.Sequential(*mlp)
        self.heads = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_levels))

    def forward(self, z: Tensor) -> Tensor:
        """``(B, z_dim)`` -> ``(B, n_levels, dim)``."""
        if z.dim() != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"MappingNetwork: expected (B, {self.z_dim}), got {tuple(z.shape)}")
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        w = self.mlp(z)
        return torch.stack([head(w) for head in self.heads], dim=1)
