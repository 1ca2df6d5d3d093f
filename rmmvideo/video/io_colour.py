"""RGB -> Y'CbCr planes in torch (BT.709, limited range), for encoding from the device.

Converting and subsampling on the GPU leaves the CPU only the encoder's work and halves the
device->host copy (4:2:0 is 1.5 values per pixel instead of 3). The result matches swscale's
conversion used by `VideoWriter.write` to within a level or two of rounding; grey RGB gives
chroma exactly at the mid value (128 / 512).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# BT.709 luma weights
_KR, _KB = 0.2126, 0.0722
_KG = 1.0 - _KR - _KB

# pixel format -> (bits, chroma subsampling (sy, sx))
YUV_FORMATS: dict[str, tuple[int, tuple[int, int]]] = {
    "yuv420p": (8, (2, 2)),
    "yuv422p": (8, (1, 2)),
    "yuv444p": (8, (1, 1)),
    "yuv420p10le": (10, (2, 2)),
    "yuv422p10le": (10, (1, 2)),
    "yuv444p10le": (10, (1, 1)),
}


def _subsample(c: torch.Tensor, sy: int, sx: int) -> torch.Tensor:
    """Box-average (B, 1, H, W) by (sy, sx); odd edges are replicated (chroma size = ceil)."""
    if sy == 1 and sx == 1:
        return c
    h, w = c.shape[-2:]
    pad_h, pad_w = (-h) % sy, (-w) % sx
    if pad_h or pad_w:
        c = F.pad(c, (0, pad_w, 0, pad_h), mode="replicate")
    return F.avg_pool2d(c, kernel_size=(sy, sx), stride=(sy, sx))


def rgb_to_yuv_planes(x: torch.Tensor, pix_fmt: str) -> list[torch.Tensor]:
    """(B, 3, H, W) float RGB in [0, 1] -> [Y (B, H, W), U (B, h, w), V (B, h, w)] integer planes.

    pix_fmt: one of YUV_FORMATS; planes are uint8 (8-bit) or int16 holding 10-bit codes.
    Limited ("TV") range: Y in [16, 235] * 2^(bits-8), chroma centred on 128 * 2^(bits-8).
    """
    if pix_fmt not in YUV_FORMATS:
        raise ValueError(f"unsupported pixel format {pix_fmt!r}: use one of {', '.join(YUV_FORMATS)}")
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected (B, 3, H, W), got {tuple(x.shape)}")
    bits, (sy, sx) = YUV_FORMATS[pix_fmt]
    unit = float(1 << (bits - 8))
    x = x.float().clamp(0.0, 1.0)
    r, g, b = x[:, 0:1], x[:, 1:2], x[:, 2:3]
    luma = _KR * r + _KG * g + _KB * b
    if (sy, sx) != (1, 1):  # subsample the colour differences (linear: same as averaging RGB first)
        r, b, luma_c = _subsample(r, sy, sx), _subsample(b, sy, sx), _subsample(luma, sy, sx)
    else:
        luma_c = luma
    cb = (b - luma_c) / (2.0 * (1.0 - _KB))
    cr = (r - luma_c) / (2.0 * (1.0 - _KR))
    top = 255.0 * unit if bits == 8 else 1023.0
    y = (16.0 + 219.0 * luma) * unit
    u = (128.0 + 224.0 * cb) * unit
    v = (128.0 + 224.0 * cr) * unit
    out_dtype = torch.uint8 if bits == 8 else torch.int16
    return [p.round_().clamp_(0.0, top).to(out_dtype)[:, 0] for p in (y, u, v)]
