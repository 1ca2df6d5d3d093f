"""Wavelet Memory Module (WMM, paper sec. 3, eqs. 14-15).

Keys K_S ``(M, Dk)`` are L2-normalised query vectors of low-quality faces; values V_W
``(M, Dw)`` are wavelet style codes Z_W of the matching high-quality faces.

Decisions (see docs/rmm-notes.md):

- ``kl_w``: each code is turned into a probability vector by ``|z| / sum |z|`` (plus a small
  floor). Why not softmax: Z_W entries are band averages of order 1e-3..1e-1, so a softmax of
  them is nearly uniform and every KL would be ~0 (everything "similar", the threshold eta =
  0.7 would never fire). The abs/sum form is scale invariant and compares the spectral shape of
  the two codes, which is what the memory should tell apart. Measured on 100 UTKFace crops at
  128 px (4-level codes): pairwise KL_w quantiles 10% / 50% / 90% = 0.51 / 0.70 / 1.01, so the
  paper's eta = 0.7 splits pairs of different faces about in half (a useful threshold); the same
  face rescaled by 6% gives 0.36 / 0.52 / 0.69.
- Write slot: when the top-1 value is not similar (KL_w >= eta) the pair (q, Z_W) goes into the
  oldest slot (empty slots first, then the largest age; ties -> lowest index), as in Kaiser et
  al. 2017 ("Learning to remember rare events"), the paper's memory lineage. Every update call
  ages all filled slots by one per sample; a merged or written slot gets age 0.
- Triplet loss in the intended sense: ``max(sim(q, K_neg) - sim(q, K_pos) + m, 0)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

KL_FLOOR = 1e-8


def code_distribution(z: Tensor) -> Tensor:
    """``(..., D)`` wavelet code -> probability vector ``|z| / sum |z|`` over the last dim."""
    a = z.abs() + KL_FLOOR
    return a / a.sum(dim=-1, keepdim=True)


def kl_w(p: Tensor, q: Tensor) -> Tensor:
    """Wavelet KL divergence KL_w(p || q) between codes (broadcast over leading dims).

    Args:
        p, q: ``(..., D)`` wavelet codes (any sign/scale; normalised by ``code_distribution``).
    Returns:
        ``(...)`` non-negative KL values.
    """
    pp, qq = code_distribution(p), code_distribution(q)
    return (pp * (pp.log() - qq.log())).sum(dim=-1)


class WaveletMemory(nn.Module):
    """Key-value memory of wavelet codes with cosine top-1 retrieval.

    Buffers (saved with the weights): ``keys (M, Dk)``, ``values (M, Dw)``, ``ages (M,)`` int64,
    ``filled (M,)`` bool.

    Args:
        size: number of slots M.
        key_dim: Dk (query size).
        value_dim: Dw (wavelet code size).
        eta: KL_w threshold for "similar value" (paper: 0.7).
        margin: triplet margin m (paper: 0.1).
    """

    def __init__(
        self, size: int, key_dim: int, value_dim: int, eta: float = 0.7, margin: float = 0.1
    ) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"WaveletMemory: size must be >= 1, got {size}")
        self.size, self.key_dim, self.value_dim = size, key_dim, value_dim
        self.eta, self.margin = eta, margin
        self.register_buffer("keys", torch.zeros(size, key_dim))
        self.register_buffer("values", torch.zeros(size, value_dim))
        self.register_buffer("ages", torch.zeros(size, dtype=torch.long))
        self.register_buffer("filled", torch.zeros(size, dtype=torch.bool))

    @property
    def n_filled(self) -> int:
        return int(self.filled.sum())

    def _check_q(self, q: Tensor) -> None:
        if q.dim() != 2 or q.shape[1] != self.key_dim:
            raise ValueError(f"WaveletMemory: query shape {tuple(q.shape)}, expected (B, {self.key_dim})")

    def similarities(self, q: Tensor) -> Tensor:
        """Cosine similarity of each query with each key; ``-inf`` on empty slots. ``(B, M)``."""
        self._check_q(q)
        sims = F.normalize(q, dim=1) @ self.keys.to(q.dtype).t()
        return sims.masked_fill(~self.filled, float("-inf"))

    def retrieve(self, q: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Top-1 retrieval (eq. 14) among filled slots.

        Args:
            q: ``(B, Dk)`` queries.
        Returns:
            values ``(B, Dw)``, slots ``(B,)`` long, sims ``(B,)``. With an empty memory: zero
            codes, slot -1 and similarity 0.
        """
        self._check_q(q)
        b = q.shape[0]
        if not bool(self.filled.any()):
            return (
                q.new_zeros(b, self.value_dim),
                torch.full((b,), -1, dtype=torch.long, device=q.device),
                q.new_zeros(b),
            )
        sims, slots = self.similarities(q).max(dim=1)
        return self.values[slots].to(q.dtype), slots, sims

    def read(self, slots: Tensor) -> Tensor:
        """Values of given slots. ``slots (B,)`` long -> ``(B, Dw)``; -1 or empty slot -> zeros."""
        if slots.dim() != 1:
            raise ValueError(f"WaveletMemory.read: slots must be (B,), got {tuple(slots.shape)}")
        if bool(((slots < -1) | (slots >= self.size)).any()):
            raise ValueError(f"WaveletMemory.read: slot out of range [-1, {self.size - 1}]")
        valid = slots >= 0
        idx = slots.clamp(min=0)
        ok = valid & self.filled[idx]
        return self.values[idx] * ok[:, None].to(self.values.dtype)

    @torch.no_grad()
    def update(self, q: Tensor, z_w: Tensor) -> Tensor:
        """Memory update, one sample after the other (paper sec. 3, end of WMM).

        If ``KL_w(V[t1] || Z_W) < eta`` for the top-1 slot t1: ``K[t1] <- normalise(mean(q,
        K[t1]))`` and its age is reset; otherwise (q, Z_W) is written into the oldest slot.

        Args:
            q: ``(B, Dk)`` queries (normalised here).
            z_w: ``(B, Dw)`` wavelet codes of the high-quality faces.
        Returns:
            ``(B,)`` long: the slot each sample merged into or was written to.
        """
        self._check_q(q)
        if z_w.shape != (q.shape[0], self.value_dim):
            raise ValueError(
                f"WaveletMemory.update: z_w shape {tuple(z_w.shape)}, expected ({q.shape[0]}, {self.value_dim})"
            )
        qn = F.normalize(q.detach(), dim=1).to(self.keys.dtype)
        zw = z_w.detach().to(self.values.dtype)
        used = torch.empty(q.shape[0], dtype=torch.long, device=q.device)
        for i in range(q.shape[0]):
            self.ages += self.filled.long()
            slot = -1
            if bool(self.filled.any()):
                sims = (self.keys @ qn[i]).masked_fill(~self.filled, float("-inf"))
                t1 = int(sims.argmax())
                if float(kl_w(self.values[t1], zw[i])) < self.eta:
                    self.keys[t1] = F.normalize(self.keys[t1] + qn[i], dim=0)
                    self.ages[t1] = 0
                    slot = t1
            if slot < 0:
                # oldest: empty slots rank above any age
                score = torch.where(self.filled, self.ages, torch.full_like(self.ages, 2**62))
                slot = int(score.argmax())
                self.keys[slot] = qn[i]
                self.values[slot] = zw[i]
                self.ages[slot] = 0
                self.filled[slot] = True
            used[i] = slot
        return used

    def triplet_loss(
        self, q: Tensor, z_w: Tensor, margin: float | None = None, eta: float | None = None
    ) -> Tensor:
        """WMM triplet loss (eq. 15, intended sense), mean over samples that have both a
        positive and a negative.

        K_pos: the most similar filled key whose value has ``KL_w(V || Z_W) < eta``; K_neg: the
        most similar filled key whose value has ``KL_w(V || Z_W) > eta``. Loss per sample
        ``max(sim(q, K_neg) - sim(q, K_pos) + m, 0)``. Samples lacking a positive or a negative
        contribute nothing; if no sample has both, the result is a zero that keeps q's graph.

        Args:
            q: ``(B, Dk)`` queries (gradient flows into q; keys are buffers).
            z_w: ``(B, Dw)`` wavelet codes of the high-quality faces.
        Returns:
            scalar loss.
        """
        m = self.margin if margin is None else margin
        e = self.eta if eta is None else eta
        sims = self.similarities(q)  # (B, M), -inf on empty
        kl = kl_w(self.values.to(z_w.dtype)[None], z_w.detach()[:, None])  # (B, M)
        pos = self.filled[None] & (kl < e)
        neg = self.filled[None] & (kl > e)
        ninf = torch.tensor(float("-inf"), dtype=sims.dtype, device=sims.device)
        s_pos = torch.where(pos, sims, ninf).max(dim=1).values
        s_neg = torch.where(neg, sims, ninf).max(dim=1).values
        ok = pos.any(dim=1) & neg.any(dim=1)
        if not bool(ok.any()):
            return q.sum() * 0.0
        return F.relu(s_neg[ok] - s_pos[ok] + m).mean()
