"""The H.264 quantiser of each decoded macroblock, read from the decoder (FFmpeg's
``AVVideoEncParams`` side data, ``export_side_data=venc_params``).

The quantiser parameter (QP, 0-51) is how coarsely the encoder rounded a macroblock: each step
of 6 doubles the quantiser step. It tells ``--deblock`` how much codec error to expect where,
instead of guessing it from the pixels (README, "Codec-artefact removal"). Only H.264 streams
carry it here; other codecs give None.

``QPMap``: one frame's per-macroblock QP, with the size of a block in the frame's pixels, so it
follows the frame through rotation and resampling to square pixels.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import av

H264 = 1  # AVVideoEncParamsType: AV_VIDEO_ENC_PARAMS_H264
MAX_QP = 51
# How coarsely a face was coded decides how much ``--deblock auto`` and ``--fuse auto`` change it
# (``coarseness``): nothing at a mean QP of FINE_QP or less, all from COARSE_QP. Faces coded at
# about libx264's default quality (CRF 23) or better are left as decoded: libx264 codes the shared clips,
# downscaled by 2 or 4, at a mean QP of 18-23 at CRF 18, 23-28 at CRF 23 and 30-35 at CRF 30; the
# clips as shipped (web H.264) have their face regions at 18-24 on average (25.3 at most over 9
# frames).
FINE_QP = 26.0
COARSE_QP = 30.0


@dataclass(frozen=True)
class QPMap:
    """``values``: (rows, cols) float32 luma QP of each macroblock; ``block``: (height, width) of a
    macroblock in the frame's pixels (16 x 16 when the frame is shown as stored)."""

    values: np.ndarray
    block: tuple[float, float]

    def pixels(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """(y1 - y0, x1 - x0) float32: the QP at each pixel of the frame's rows y0..y1, columns x0..x1."""
        rows = np.minimum((np.arange(y0, y1) + 0.5) / self.block[0], self.values.shape[0] - 1).astype(np.intp)
        cols = np.minimum((np.arange(x0, x1) + 0.5) / self.block[1], self.values.shape[1] - 1).astype(np.intp)
        return self.values[np.ix_(rows, cols)]

    def shown(self, rotation_quarters: int, scale: tuple[float, float]) -> QPMap:
        """The map of the frame as shown: rotated by ``rotation_quarters`` x 90 degrees
        counter-clockwise (as ``np.rot90``) after resampling by ``scale`` = (sy, sx)."""
        block = (self.block[0] * scale[0], self.block[1] * scale[1])
        k = rotation_quarters % 4
        return QPMap(np.ascontiguousarray(np.rot90(self.values, k)), block[::-1] if k % 2 else block)


def export_qp(codec_context: av.codec.context.CodecContext) -> None:
    """Ask a decoder (before its first packet) to attach each frame's quantisers."""
    codec_context.options = {**codec_context.options, "export_side_data": "venc_params"}


def qp_map(frame: av.VideoFrame) -> QPMap | None:
    """The frame's per-macroblock H.264 QP on the 8-bit scale (0-51), or None (not H.264, or the
    decoder gave none). FFmpeg reports a high bit depth stream's QP with H.264's bit-depth offset
    (+6 per bit above 8: a 10-bit stream coded like an 8-bit one at QP 20 reads 32), taken off here
    so that ``coarseness`` and the artefact model read every stream alike."""
    import av

    side = frame.side_data.get(av.sidedata.sidedata.Type.VIDEO_ENC_PARAMS)
    if side is None:
        return None
    raw = bytes(side)
    if len(raw) < 32:
        return None
    nb, offset, size = struct.unpack_from("<IxxxxQQ", raw, 0)
    kind, base = struct.unpack_from("<ii", raw, 24)
    if kind != H264 or nb == 0 or offset + nb * size > len(raw) or size < 20:
        return None
    blocks = np.ndarray((nb, 5), dtype="<i4", buffer=raw, offset=offset, strides=(size, 4))
    bw, bh = int(blocks[0, 2]), int(blocks[0, 3])
    if bw <= 0 or bh <= 0:
        return None
    base -= 6 * (max(8, frame.format.components[0].bits) - 8)
    values = np.full((-(-frame.height // bh), -(-frame.width // bw)), float(np.clip(base, 0, MAX_QP)), np.float32)
    r, c = blocks[:, 1] // bh, blocks[:, 0] // bw
    ok = (r >= 0) & (r < values.shape[0]) & (c >= 0) & (c < values.shape[1])
    values[r[ok], c[ok]] = np.clip(base + blocks[ok, 4], 0, MAX_QP)
    return QPMap(values, (float(bh), float(bw)))


def coarseness(qp: float | None) -> float:
    """How much of ``--deblock auto``'s and ``--fuse auto``'s change a face coded at mean quantiser
    ``qp`` gets: 0 at ``FINE_QP`` or below (or unknown, None), 1 from ``COARSE_QP``, linear between."""
    if qp is None:
        return 0.0
    return float(np.clip((qp - FINE_QP) / (COARSE_QP - FINE_QP), 0.0, 1.0))


def describe_coding(path: str | Path, frames: int = 48) -> str:
    """One line for ``rmmvideo probe``: the H.264 quantiser over the first ``frames`` frames (mean,
    range of the frames' means) and what ``--deblock auto`` / ``--fuse auto`` do with a face
    coded like the frame's average (faces may be coded a little finer or coarser)."""
    from rmmvideo.video.io_decode import decode_frames

    means: list[float] = []
    stream = decode_frames(path, quantisers=True, max_frames=frames)
    try:
        for f in stream:
            if f.qp is not None:
                means.append(float(f.qp.values.mean()))
    finally:
        stream.close()  # type: ignore[attr-defined]
    if not means:
        return "no codec quantisers (H.264 gives them): --deblock auto and --fuse auto leave its faces as decoded"
    qp = float(np.mean(means))
    c = coarseness(qp)
    verdict = ("coded finely: --deblock auto and --fuse auto leave faces coded like this as decoded" if c == 0.0 else
               "coded coarsely: --deblock auto and --fuse auto clean and fuse faces coded like this" if c == 1.0 else
               f"coded between: --deblock auto and --fuse auto act on faces coded like this at {c:.0%}")
    return (f"H.264 QP {qp:.1f} on average over {len(means)} frames ({min(means):.1f}-{max(means):.1f}); "
            f"{verdict} (they act above QP {FINE_QP:g}, fully from {COARSE_QP:g})")
