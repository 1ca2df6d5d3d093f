"""Model configuration. It travels with the weights (safetensors metadata), so loading never
guesses an architecture.

A config fixes:
- ``size``: side of the square crop (pixels). The low-quality crop is resized to it; X_MR and
  X̂_HR have this size.
- ``unet_channels``: U-Net widths per level, full resolution first. ``len == n_rm3``; the U-Net
  has ``n_rm3 - 1`` downsamplings and its decoder feature at level i is z_S for RM3 block i.
- ``decoder_channels``: widths of the RM3 decoder blocks, lowest resolution first. RM3 block i
  runs at ``size / 2**(n_rm3 - 1 - i)``.
- ``rm3_kernel``: kernel size of the RM3 convolutions (z_S -> gamma/beta, attention maps);
  3 by default (older weights files without the key were built with 3).
- ``global_residual``: the generator is already residual on its input (X_MR = x_lq + U-Net
  correction, X̂_HR = X_MR + decoder correction, x_lq being the bicubic upscale); with this flag
  the decoder's last layer starts at zero too (the U-Net's always does), so an untrained model
  returns its input exactly. Only the initialisation differs: weights load the same either way.
  Off by default (the bundled weights were built without it).
- ``refine_layers``, ``refine_channels``: a full-resolution refinement head after the decoder
  (``rmmvideo.models.refine``); 0 layers (default) = none, the paper's generator.
- ``template``: 5 facial points (left eye, right eye, nose tip, left and right mouth corner) in
  crop coordinates normalised to [0, 1]; the video pipeline aligns faces to it.
- ``strength_curve``: (crop scale f, codec quantiser qp, luma weight a_Y, chroma weight a_C)
  points measured on these weights by ``rmmvideo.video.strength.calibrate_strength`` (qp -1:
  faces whose quantiser is unknown); ``--strength auto`` reads it (files calibrated before
  2026-12-08 hold (f, a_Y, a_C) or (f, a) points, without the quantiser and the safety factor
  applied: ``rmmvideo.video.strength.curve_points``). Empty: not calibrated (auto strength 0). A property of trained weights, not of the architecture; it is
  here so that it travels with them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from rmmvideo.errors import UserError

# The widely used 5-point template of 512x512 face crops (FFHQ-style alignment), normalised.
FFHQ_TEMPLATE: tuple[tuple[float, float], ...] = tuple(
    (x / 512.0, y / 512.0)
    for x, y in (
        (192.98, 239.95),
        (318.90, 240.19),
        (256.63, 314.02),
        (201.26, 371.41),
        (313.09, 371.15),
    )
)


def reject_unknown_keys(cls: type, d: dict[str, Any], what: str) -> None:
    """UserError naming the keys of ``d`` that are not fields of dataclass ``cls``."""
    unknown = set(d) - {f.name for f in fields(cls)}
    if unknown:
        raise UserError(f"{what}: unknown keys {sorted(unknown)}")


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """The mapping a YAML file holds; UserError when the file is missing or holds no mapping."""
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} not found: {p}")
    data = yaml.safe_load(p.read_text())
    if not isinstance(data, dict):
        raise UserError(f"{what} {p} does not hold a mapping")
    return data


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of an RMM model (see module docstring)."""

    name: str = "rmm-small"
    size: int = 128
    unet_channels: tuple[int, ...] = (32, 64, 128, 128, 128)
    decoder_channels: tuple[int, ...] = (128, 128, 64, 32, 32)
    z_n_dim: int = 512
    mapping_layers: int = 4
    mapping_dim: int = 512
    wavelet_levels: int = 4
    memory_size: int = 982
    key_dim: int = 128
    key_width: int = 64
    rm3_kernel: int = 3
    global_residual: bool = False
    refine_layers: int = 0
    refine_channels: int = 32
    template: tuple[tuple[float, float], ...] = FFHQ_TEMPLATE
    template_name: str = "ffhq"
    strength_curve: tuple[tuple[float, ...], ...] = ()

    def __post_init__(self) -> None:
        n = len(self.decoder_channels)
        if n < 1:
            raise ValueError("config: decoder_channels must list at least one RM3 block")
        if len(self.unet_channels) != n:
            raise ValueError(
                f"config: unet_channels has {len(self.unet_channels)} levels, "
                f"expected {n} (one per RM3 block)"
            )
        for what, div in (("n_rm3 - 1", 2 ** (n - 1)), ("wavelet_levels", 2**self.wavelet_levels)):
            if self.size % div:
                raise ValueError(f"config: size {self.size} is not divisible by 2**({what}) = {div}")
        if self.rm3_kernel < 1 or self.rm3_kernel % 2 != 1:
            raise ValueError(f"config: rm3_kernel must be a positive odd number, got {self.rm3_kernel}")
        if self.refine_layers != 0 and (self.refine_layers < 2 or self.refine_channels < 1):
            raise ValueError("config: refine_layers must be 0 (no head) or >= 2, with refine_channels >= 1")
        if len(self.template) != 5:
            raise ValueError(f"config: template needs 5 points, got {len(self.template)}")
        curve = self.strength_curve
        lengths = {len(p) for p in curve}
        keys = [tuple(p[:2]) if len(p) == 4 else (p[0],) for p in curve]  # (f, qp) or f
        if len(lengths) > 1 or lengths - {2, 3, 4} or any(p[0] <= 0 for p in curve) \
                or keys != sorted(set(keys)) or any(len(p) == 4 and p[1] != -1 and p[1] < 0 for p in curve) \
                or any(not 0.0 <= a <= 1.0 for p in curve for a in (p[2:] if len(p) == 4 else p[1:])):
            raise ValueError("config: strength_curve needs (f > 0, qp, a_Y, a_C) points (qp >= 0, or -1 for "
                             "unknown; weights in [0, 1]; older files: (f, a_Y, a_C) or (f, a)) with increasing "
                             "f, then qp")

    @property
    def n_rm3(self) -> int:
        """Number of RM3 blocks in the decoder."""
        return len(self.decoder_channels)

    @property
    def z_w_dim(self) -> int:
        """Wavelet style code size: 3 colour channels x (4**levels - 1) high-frequency bands."""
        return 3 * (4**self.wavelet_levels - 1)

    def block_resolutions(self) -> list[int]:
        """Spatial side of each RM3 block, lowest first."""
        n = self.n_rm3
        return [self.size // 2 ** (n - 1 - i) for i in range(n)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["unet_channels"] = list(self.unet_channels)
        d["decoder_channels"] = list(self.decoder_channels)
        d["template"] = [list(p) for p in self.template]
        if not self.global_residual:  # written only when on: files stay readable by older code
            del d["global_residual"]
        if not self.refine_layers:  # likewise
            del d["refine_layers"], d["refine_channels"]
        if self.strength_curve:
            d["strength_curve"] = [list(p) for p in self.strength_curve]
        else:
            del d["strength_curve"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        reject_unknown_keys(cls, d, "config")
        kw = dict(d)
        for key in ("unet_channels", "decoder_channels"):
            if key in kw:
                kw[key] = tuple(int(c) for c in kw[key])
        if "template" in kw:
            kw["template"] = tuple((float(x), float(y)) for x, y in kw["template"])
        if "strength_curve" in kw:
            kw["strength_curve"] = tuple(tuple(float(v) for v in p) for p in kw["strength_curve"])
        return cls(**kw)

    @classmethod
    def from_json(cls, text: str) -> "ModelConfig":
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "ModelConfig":
        """Read a model config YAML (the whole file, or its ``model:`` section)."""
        data = read_yaml_mapping(path, "config file")
        if "model" in data and isinstance(data["model"], dict):
            data = data["model"]
        return cls.from_dict(data)
