"""Temporal stabilisation of restored faces along each track, in aligned crop space.

A face track's aligned crops hold the face still (the tracker smooths the landmarks), so what
changes from one crop to the next is expression (mouth, blinks), residual misalignment, and
noise: codec flicker in the input and restoration detail that changes for no reason. The
stabiliser averages each restored crop with the same track's previous ``window`` restored crops
wherever the *input* crops agree, and keeps the current frame wherever they differ:

    y_t = sum_k w_k y_{t-k} / sum_k w_k,   w_0 = 1,
    w_k(p) = exp(-(D_k(p) / (2 tau_k))^2),   D_k = G_sigma * (Y(c_t) - Y(c_{t-k})),

where ``c`` are the input crops, ``Y`` their luma, ``G_sigma`` a small Gaussian (1 px at 128)
and ``tau_k`` a robust estimate of the noise in ``D_k`` (1.4826 x its median absolute value over
the crop): pixels that changed more than the noise (a mouth opening, an eye closing, an
occlusion) get weight ~0 from older frames, so motion is not smeared. The filter is causal and
finite (FIR): a frame depends only on itself and its ``window`` predecessors of the same track,
so a segment rendered with ``window`` frames of warm-up equals the single pass (up to the float
rounding of the model's batched convolutions).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import torch

from rmmvideo.video.composite import gaussian_blur, to_grey

DEFAULT_WINDOW = 3


class TemporalStabiliser:
    """Per-track motion-gated temporal filter (module doc).

    Args:
        window: previous frames of the same track averaged in (0 disables the filter).
    """

    def __init__(self, window: int = DEFAULT_WINDOW) -> None:
        if window < 0:
            raise ValueError(f"window must be >= 0, got {window}")
        self.window = window
        self._history: dict[int, deque[tuple[int, torch.Tensor, torch.Tensor]]] = {}

    def __call__(self, track_ids: Sequence[int], frame_index: Sequence[int], lq: torch.Tensor,
                 restored: torch.Tensor) -> torch.Tensor:
        """Stabilise a batch of crops given in frame order.

        Args:
            track_ids: (N,) track of each crop.
            frame_index: (N,) frame number of each crop (increasing per track).
            lq: (N, 3, S, S) aligned input crops.
            restored: (N, 3, S, S) what would be pasted for them (input + restoration).
        Returns:
            (N, 3, S, S) stabilised crops.
        """
        if self.window == 0 or len(track_ids) == 0:
            return restored
        first = min(int(f) for f in frame_index)
        for t in [t for t, h in self._history.items() if not h or h[-1][0] < first - self.window]:
            del self._history[t]  # ended tracks
        out = restored.clone()
        sigma = lq.shape[-1] / 128.0
        luma = gaussian_blur(to_grey(lq)[:, :1], sigma)
        for i, (t, f) in enumerate(zip(track_ids, frame_index)):
            hist = self._history.setdefault(int(t), deque(maxlen=self.window))
            while hist and hist[0][0] < f - self.window:
                hist.popleft()
            if hist:
                num = restored[i].clone()
                den = torch.ones_like(luma[i])
                for _, y_prev, l_prev in hist:
                    d = luma[i] - l_prev
                    tau = (1.4826 * d.abs().median()).clamp_min(1e-4)
                    w = torch.exp(-(d / (2.0 * tau)) ** 2)
                    num += w * y_prev
                    den += w
                out[i] = num / den
            hist.append((int(f), restored[i], luma[i]))
        return out
