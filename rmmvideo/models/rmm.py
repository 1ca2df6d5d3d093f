"""RMM: the generator (U-Net + mapping network + RM3 decoder) and the full model with the
wavelet memory and its query network (paper sec. 3, Fig. 2).

Generator data flow for a crop of side S (``cfg.size``) and n = ``cfg.n_rm3`` blocks::

    x_lq (B,3,S,S) -> UNet -> x_mr (B,3,S,S), z_S = [z_S^1 (S/2**(n-1)) .. z_S^n (S)]
    z_N (B,Dn) -> MappingNetwork -> z_N^1..n (B,n,mapping_dim)
    h = conv(bottleneck = z_S^1)                                   (decision: the decoder
    for i in 1..n: h = RM3_i(h, z_S^i, z_N^i, Z_W)                 starts from the U-Net
                   h = lrelu(conv3x3(h)); h = up2x(h) if i < n     bottleneck)
    x_hr = x_mr + to_rgb(h)  (1x1 conv)                             (decision: residual on X_MR,
                                                                    so "RM3 0" is X_MR alone)
    x_hr = RefineHead(x_lq, x_hr)   only when cfg.refine_layers > 0 (an option; zero at init)

The U-Net is residual on x_lq (its output layer starts at zero), so the whole generator is a
global residual on the bicubic-upscaled input. ``cfg.global_residual`` also starts ``to_rgb`` at
zero, so that an untrained model is exactly the identity (default: 0.1 x the default init).

Decision: Z_W enters the RM3 blocks multiplied by ``ZW_INPUT_SCALE`` (50): on face crops in
[0, 1] its entries are ~5e-3 on average (max ~0.4), too small for the W layers to use early in
training; the scale brings them to O(0.1-1). The memory stores and retrieves the unscaled code.

Outputs are not clamped in training ([0, 1]-ish); ``RMM.restore`` clamps to [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rmmvideo.config import ModelConfig
from rmmvideo.models.keynet import KeyNet
from rmmvideo.models.mapping import MappingNetwork
from rmmvideo.models.memory import WaveletMemory
from rmmvideo.models.refine import RefineHead
from rmmvideo.models.rm3 import RM3Block
from rmmvideo.models.unet import UNet
from rmmvideo.models.wavelet import wavelet_style_code

ZW_INPUT_SCALE = 50.0


def make_noise(seed: int, n: int, dim: int) -> Tensor:
    """Deterministic standard-normal noise ``(n, dim)`` from ``seed`` (own torch.Generator,
    CPU, float32; the global RNG is untouched). The video pipeline uses one seed per track."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(n, dim, generator=g)


class RMMGenerator(nn.Module):
    """U-Net + mapping network + RM3 decoder (see module docstring)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        n, dc, uc = cfg.n_rm3, list(cfg.decoder_channels), list(cfg.unet_channels)
        self.unet = UNet(uc)
        self.mapping = MappingNetwork(cfg.z_n_dim, cfg.mapping_dim, cfg.mapping_layers, n)
        self.from_bottleneck = nn.Conv2d(uc[-1], dc[0], 3, 1, 1)
        self.blocks = nn.ModuleList(
            RM3Block(dc[i], uc[n - 1 - i], cfg.mapping_dim, cfg.z_w_dim, cfg.rm3_kernel)
            for i in range(n)
        )
        self.convs = nn.ModuleList(
            nn.Conv2d(dc[i], dc[min(i + 1, n - 1)], 3, 1, 1) for i in range(n)
        )
        self.to_rgb = nn.Conv2d(dc[-1], 3, 1)
        with torch.no_grad():
            self.to_rgb.weight.mul_(0.0 if cfg.global_residual else 0.1)
            self.to_rgb.bias.zero_()
        self.refine = RefineHead(cfg.refine_layers, cfg.refine_channels) if cfg.refine_layers else None

    def decoder_modules(self) -> list[nn.Module]:
        """The RM3 decoder's modules (for parameter counts)."""
        return [self.from_bottleneck, self.blocks, self.convs, self.to_rgb]

    def forward(self, x_lq: Tensor, z_n: Tensor, z_w: Tensor) -> tuple[Tensor, Tensor]:
        """
        Args:
            x_lq: ``(B, 3, S, S)`` low-quality crop in [0, 1], S = ``cfg.size``.
            z_n: ``(B, z_n_dim)`` Gaussian noise Z_N.
            z_w: ``(B, z_w_dim)`` wavelet style code Z_W.
        Returns:
            x_hr, x_mr: ``(B, 3, S, S)`` each.
        """
        cfg = self.cfg
        s = cfg.size
        if x_lq.dim() != 4 or tuple(x_lq.shape[1:]) != (3, s, s):
            raise ValueError(f"RMMGenerator: x_lq shape {tuple(x_lq.shape)}, expected (B, 3, {s}, {s})")
        b = x_lq.shape[0]
        if tuple(z_n.shape) != (b, cfg.z_n_dim):
            raise ValueError(f"RMMGenerator: z_n shape {tuple(z_n.shape)}, expected ({b}, {cfg.z_n_dim})")
        if tuple(z_w.shape) != (b, cfg.z_w_dim):
            raise ValueError(f"RMMGenerator: z_w shape {tuple(z_w.shape)}, expected ({b}, {cfg.z_w_dim})")
        x_mr, z_s = self.unet(x_lq)
        w_n = self.mapping(z_n)  # (B, n, mapping_dim)
        h = self.from_bottleneck(z_s[0])
        zw_in = z_w * ZW_INPUT_SCALE
        n = cfg.n_rm3
        for i in range(n):
            h = self.blocks[i](h, z_s[i], w_n[:, i], zw_in)
            h = F.leaky_relu(self.convs[i](h), 0.2)
            if i < n - 1:
                h = F.interpolate(h, scale_factor=2.0, mode="nearest")
        x_hr = x_mr + self.to_rgb(h)
        if self.refine is not None:
            x_hr = self.refine(x_lq, x_hr)
        return x_hr, x_mr


@dataclass
class RestoreOutput:
    """Result of ``RMM.restore``: x_hr, x_mr ``(B, 3, S, S)`` in [0, 1]; slots ``(B,)`` long
    (memory slot used, -1 = empty memory, zero code); sims ``(B,)`` cosine similarity of the
    query with the used key (0 for slot -1, NaN where the caller gave the slot)."""

    x_hr: Tensor
    x_mr: Tensor
    slots: Tensor
    sims: Tensor


class RMM(nn.Module):
    """Full RMM: generator + query network (KeyNet) + wavelet memory.

    Args:
        cfg: architecture (travels with the weights).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.generator = RMMGenerator(cfg)
        self.keynet = KeyNet(cfg.key_dim, cfg.key_width)
        self.memory = WaveletMemory(cfg.memory_size, cfg.key_dim, cfg.z_w_dim)

    # ---- helpers -------------------------------------------------------------------------
    def _to_size(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise TypeError(f"expected float images in [0, 1], got dtype {x.dtype}")
        s = self.config.size
        if tuple(x.shape[-2:]) == (s, s):
            return x
        down = x.shape[-2] > s or x.shape[-1] > s
        return F.interpolate(x, size=(s, s), mode="bicubic", align_corners=False, antialias=down)

    def parameter_counts(self) -> dict[str, int]:
        """Trainable parameter counts per part: unet, mapping, rm3_decoder, keynet, refine (when
        the config has the head), total."""

        def count(mods: list[nn.Module]) -> int:
            return sum(p.numel() for m in mods for p in m.parameters())

        g = self.generator
        parts = {
            "unet": count([g.unet]),
            "mapping": count([g.mapping]),
            "rm3_decoder": count(g.decoder_modules()),
            "keynet": count([self.keynet]),
        }
        if g.refine is not None:
            parts["refine"] = count([g.refine])
        parts["total"] = sum(p.numel() for p in self.parameters())
        return parts

    # ---- inference -----------------------------------------------------------------------
    def query(self, x_lq: Tensor) -> Tensor:
        """``(B, 3, h, w)`` in [0, 1] (resized to ``cfg.size``) -> normalised query ``(B, key_dim)``."""
        return self.keynet(self._to_size(x_lq))

    @torch.no_grad()
    def restore(
        self, x_lq: Tensor, noise: Tensor | None = None, slots: Tensor | None = None
    ) -> RestoreOutput:
        """Restore low-quality face crops.

        Args:
            x_lq: ``(B, 3, h, w)`` in [0, 1], any size (bicubic resize to ``cfg.size``).
            noise: ``(B, z_n_dim)`` Z_N, or None for standard normal from torch's global RNG.
            slots: ``(B,)`` long memory slots to read Z_W from, or None; None or entries -1 =
                retrieve top-1 by the query (the query net runs only for those).
        Returns:
            RestoreOutput. Same inputs, noise and slots give bit-identical outputs. An empty
            memory gives a zero Z_W and slot -1. Runs in eval mode (a model in training mode
            is switched to eval for the call and back, so BatchNorm statistics never move).

        Raises:
            ValueError: bad shapes, or a given slot that is out of range or empty.
            TypeError: images that are not floating point.
        """
        was_training = self.training
        self.eval()
        try:
            return self._restore(x_lq, noise, slots)
        finally:
            self.train(was_training)

    def _restore(self, x_lq: Tensor, noise: Tensor | None, slots: Tensor | None) -> RestoreOutput:
        cfg = self.config
        x = self._to_size(x_lq)
        b, dev = x.shape[0], x.device
        if noise is None:
            noise = torch.randn(b, cfg.z_n_dim, device=dev, dtype=x.dtype)
        if tuple(noise.shape) != (b, cfg.z_n_dim):
            raise ValueError(f"noise shape {tuple(noise.shape)}, expected ({b}, {cfg.z_n_dim})")
        noise = noise.to(device=dev, dtype=x.dtype)
        if slots is None:
            slots = torch.full((b,), -1, dtype=torch.long, device=dev)
        slots = torch.as_tensor(slots, dtype=torch.long, device=dev)
        if tuple(slots.shape) != (b,):
            raise ValueError(f"slots shape {tuple(slots.shape)}, expected ({b},)")
        given = slots >= 0
        if bool((slots < -1).any()) or bool((slots >= cfg.memory_size).any()):
            raise ValueError(f"memory slot out of range [-1, {cfg.memory_size - 1}]")
        if bool((given & ~self.memory.filled[slots.clamp(min=0)]).any()):
            raise ValueError("a requested memory slot is empty")
        z_w = x.new_zeros(b, cfg.z_w_dim)
        sims = torch.full((b,), float("nan"), dtype=x.dtype, device=dev)
        used = slots.clone()
        if bool(given.any()):
            z_w[given] = self.memory.read(slots[given]).to(x.dtype)
        need = ~given
        if bool(need.any()):
            vals, got, s = self.memory.retrieve(self.keynet(x[need]))
            z_w[need], used[need], sims[need] = vals.to(x.dtype), got, s.to(x.dtype)
        x_hr, x_mr = self.generator(x, noise, z_w)
        return RestoreOutput(x_hr.clamp(0, 1), x_mr.clamp(0, 1), used, sims)

    # ---- training ------------------------------------------------------------------------
    def forward_train(
        self, x_lq: Tensor, x_hq: Tensor, z_n: Tensor, use_retrieved: Tensor | None = None
    ) -> dict[str, Tensor]:
        """One training forward (the trainer adds the image losses).

        Args:
            x_lq: ``(B, 3, S, S)`` degraded crop in [0, 1] at ``cfg.size``.
            x_hq: ``(B, 3, S, S)`` ground-truth crop in [0, 1].
            z_n: ``(B, z_n_dim)`` noise.
            use_retrieved: optional ``(B,)`` bool: those samples condition the generator on the
                code the memory retrieves for their query (what inference does) instead of the
                ground truth's Z_W (the paper's training). Ignored while the memory is empty.
        Returns:
            dict with ``x_hr``, ``x_mr`` ``(B, 3, S, S)`` (unclamped), ``q`` ``(B, key_dim)``
            query of x_lq, ``z_w`` ``(B, z_w_dim)`` wavelet code of x_hq (what the memory
            stores), ``loss_wmm`` scalar triplet loss of q against the current memory (eq. 15).
            Call ``update_memory(q, z_w)`` after it.
        """
        s = self.config.size
        for name, t in (("x_lq", x_lq), ("x_hq", x_hq)):
            if t.dim() != 4 or tuple(t.shape[1:]) != (3, s, s):
                raise ValueError(f"forward_train: {name} shape {tuple(t.shape)}, expected (B, 3, {s}, {s})")
        q = self.keynet(x_lq)
        z_w = wavelet_style_code(x_hq, self.config.wavelet_levels)
        z_cond = z_w
        if use_retrieved is not None and bool(use_retrieved.any()) and bool(self.memory.filled.any()):
            got, _, _ = self.memory.retrieve(q.detach())
            z_cond = torch.where(use_retrieved.to(torch.bool)[:, None], got.to(z_w.dtype), z_w)
        x_hr, x_mr = self.generator(x_lq, z_n, z_cond)
        loss_wmm = self.memory.triplet_loss(q, z_w)
        return {"x_hr": x_hr, "x_mr": x_mr, "q": q, "z_w": z_w, "loss_wmm": loss_wmm}

    @torch.no_grad()
    def update_memory(self, q: Tensor, z_w: Tensor) -> Tensor:
        """Write/merge a batch into the memory (see ``WaveletMemory.update``); returns slots."""
        return self.memory.update(q.detach(), z_w.detach())
