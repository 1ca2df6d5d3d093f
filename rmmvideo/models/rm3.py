"""RM3: Restoration with Memorized Modulation block (paper sec. 3, eqs. 1-7).

For a decoder feature ``h`` (B, C, H, W):

- IN path (eqs. 1-3): ``h_I = instance_norm(h)``; ``X_I = gamma_XI * h_I + beta_XI`` for
  X in {S, N, W}; attention ``softmax_3(conv(h_I)) -> M_SI, M_NI, M_WI``;
  ``H_I = S_I*M_SI + N_I*M_NI + W_I*M_WI``.
- LN path (eqs. 4-6): the same with ``h_L = layer_norm(h)`` (over C, H, W of each sample).
- AdaAO (eq. 7): ``M_O = sigmoid(conv(h))``; ``H = H_I*M_O + H_L*(1 - M_O)``.

``rm3_modulate`` is the functional form (all parameters given); ``RM3Block`` owns the layers
that produce them: a conv on z_S for the spatial gamma/beta maps (S), a fully connected layer on
z_N and one on z_W for per-channel gamma/beta (N, W; broadcast over H, W).

Decision: the layers predicting gamma start with bias 1 and small weights, so that a freshly
initialised block starts close to plain normalisation (as SPADE's ``1 + gamma`` does).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Affine = tuple[Tensor, Tensor]  # (gamma, beta), each broadcastable to (B, C, H, W)

EPS = 1e-5


def instance_norm(h: Tensor, eps: float = EPS) -> Tensor:
    """Eq. 1: normalise each (sample, channel) over H, W (biased variance). ``(B,C,H,W)``."""
    return F.instance_norm(h, eps=eps)


def layer_norm(h: Tensor, eps: float = EPS) -> Tensor:
    """Eq. 4: normalise each sample over C, H, W (biased variance). ``(B,C,H,W)``."""
    return F.layer_norm(h, h.shape[1:], eps=eps)


def _mix(hn: Tensor, affines: Sequence[Affine], att_logits: Tensor) -> Tensor:
    """Eqs. 2-3 / 5-6: ``sum_X (gamma_X * hn + beta_X) * softmax(att)_X``, computed as
    ``hn * sum_X gamma_X m_X + sum_X beta_X m_X`` (same value, fewer full-size passes)."""
    m = torch.softmax(att_logits, dim=1)  # (B, 3, H, W)
    g: Tensor | None = None
    b: Tensor | None = None
    for k, (gamma, beta) in enumerate(affines):
        mk = m[:, k : k + 1]
        g = gamma * mk if g is None else torch.addcmul(g, gamma, mk)
        b = beta * mk if b is None else torch.addcmul(b, beta, mk)
    assert g is not None and b is not None
    return torch.addcmul(b, hn, g)


def rm3_modulate(
    h: Tensor,
    in_affines: Sequence[Affine],
    ln_affines: Sequence[Affine],
    att_in_weight: Tensor,
    att_in_bias: Tensor | None,
    att_ln_weight: Tensor,
    att_ln_bias: Tensor | None,
    ao_weight: Tensor,
    ao_bias: Tensor | None,
    eps: float = EPS,
) -> Tensor:
    """Functional RM3 (eqs. 1-7).

    Args:
        h: ``(B, C, H, W)`` input feature.
        in_affines: 3 pairs (gamma, beta) for S, N, W of the IN path, each broadcastable to
            ``(B, C, H, W)`` (S: ``(B, C, H, W)``; N, W: ``(B, C, 1, 1)``).
        ln_affines: the same for the LN path.
        att_in_weight, att_in_bias: conv ``(3, C, k, k)``, ``(3,)`` on h_I -> attention logits.
        att_ln_weight, att_ln_bias: conv ``(3, C, k, k)``, ``(3,)`` on h_L.
        ao_weight, ao_bias: conv ``(1, C, k, k)``, ``(1,)`` on h -> AdaAO logit.
        eps: variance epsilon of both normalisations.
    Returns:
        ``(B, C, H, W)``.
    """
    if h.dim() != 4:
        raise ValueError(f"rm3_modulate: expected h of shape (B, C, H, W), got {tuple(h.shape)}")
    if len(in_affines) != 3 or len(ln_affines) != 3:
        raise ValueError("rm3_modulate: need 3 (gamma, beta) pairs (S, N, W) per path")
    h_i = instance_norm(h, eps)
    h_l = layer_norm(h, eps)
    pad_i = att_in_weight.shape[-1] // 2
    pad_l = att_ln_weight.shape[-1] // 2
    pad_o = ao_weight.shape[-1] // 2
    big_i = _mix(h_i, in_affines, F.conv2d(h_i, att_in_weight, att_in_bias, padding=pad_i))
    big_l = _mix(h_l, ln_affines, F.conv2d(h_l, att_ln_weight, att_ln_bias, padding=pad_l))
    m_o = torch.sigmoid(F.conv2d(h, ao_weight, ao_bias, padding=pad_o))
    return torch.lerp(big_l, big_i, m_o)  # = H_I * M_O + H_L * (1 - M_O)


class RM3Block(nn.Module):
    """RM3 block: modulates h with z_S (spatial), z_N (noise embedding) and z_W (wavelet code).

    Args:
        channels: C of h.
        zs_channels: channels of z_S.
        zn_dim: size of this level's noise embedding z_N^i.
        zw_dim: size of the wavelet code Z_W.
        kernel_size: kernel of the z_S conv and of the attention convs (odd).
    """

    def __init__(
        self, channels: int, zs_channels: int, zn_dim: int, zw_dim: int, kernel_size: int = 3
    ) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"RM3Block: kernel_size must be odd, got {kernel_size}")
        c, k, p = channels, kernel_size, kernel_size // 2
        self.channels = c
        # gamma/beta for [IN, LN] from each source: 4C outputs (gamma_I, beta_I, gamma_L, beta_L)
        self.s_affine = nn.Conv2d(zs_channels, 4 * c, k, padding=p)
        self.n_affine = nn.Linear(zn_dim, 4 * c)
        self.w_affine = nn.Linear(zw_dim, 4 * c)
        self.att_in = nn.Conv2d(c, 3, k, padding=p)
        self.att_ln = nn.Conv2d(c, 3, k, padding=p)
        self.att_out = nn.Conv2d(c, 1, k, padding=p)
        with torch.no_grad():
            for m in (self.s_affine, self.n_affine, self.w_affine):
                nn.init.normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
                m.bias[: c].fill_(1.0)  # gamma_I
                m.bias[2 * c : 3 * c].fill_(1.0)  # gamma_L

    @staticmethod
    def _split(t: Tensor) -> tuple[Affine, Affine]:
        """``(B, 4C, ...)`` -> (gamma_I, beta_I), (gamma_L, beta_L)."""
        gi, bi, gl, bl = t.chunk(4, dim=1)
        return (gi, bi), (gl, bl)

    def forward(self, h: Tensor, z_s: Tensor, z_n: Tensor, z_w: Tensor) -> Tensor:
        """
        Args:
            h: ``(B, C, H, W)``.
            z_s: ``(B, Cs, Hs, Ws)``, resized (bilinear) to ``(H, W)`` when sizes differ.
            z_n: ``(B, Dn)``.
            z_w: ``(B, Dw)``.
        Returns:
            ``(B, C, H, W)``.
        """
        b, c, hh, ww = h.shape
        if c != self.channels:
            raise ValueError(f"RM3Block: h has {c} channels, expected {self.channels}")
        if z_s.dim() != 4 or z_s.shape[0] != b or z_s.shape[1] != self.s_affine.in_channels:
            raise ValueError(
                f"RM3Block: z_s shape {tuple(z_s.shape)}, expected "
                f"({b}, {self.s_affine.in_channels}, Hs, Ws)"
            )
        if z_n.shape != (b, self.n_affine.in_features):
            raise ValueError(
                f"RM3Block: z_n shape {tuple(z_n.shape)}, expected ({b}, {self.n_affine.in_features})"
            )
        if z_w.shape != (b, self.w_affine.in_features):
            raise ValueError(
                f"RM3Block: z_w shape {tuple(z_w.shape)}, expected ({b}, {self.w_affine.in_features})"
            )
        if z_s.shape[-2:] != (hh, ww):
            z_s = F.interpolate(z_s, size=(hh, ww), mode="bilinear", align_corners=False)
        s_i, s_l = self._split(self.s_affine(z_s))
        n_i, n_l = self._split(self.n_affine(z_n)[:, :, None, None])
        w_i, w_l = self._split(self.w_affine(z_w)[:, :, None, None])
        return rm3_modulate(
            h,
            (s_i, n_i, w_i),
            (s_l, n_l, w_l),
            self.att_in.weight,
            self.att_in.bias,
            self.att_ln.weight,
            self.att_ln.bias,
            self.att_out.weight,
            self.att_out.bias,
        )
