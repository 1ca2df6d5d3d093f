"""A small codec-artefact remover at the input's resolution (``--deblock``), and its weights file.

``ArtefactCNN``: x + a residual of ``depth + 2`` 3x3 convolutions (ReLU between them), RGB in
[0, 1]. The last convolution starts at zero, so an untrained model is the identity. Trained to
undo H.264 on downscaled UTKFace training faces (``pipelines/codec_artefact_probe.py``; README,
"Codec-artefact removal").

Weights file: one ``.safetensors`` with the state dict and string metadata ``artefact_config``
(``{"channels": C, "depth": D}``) and ``extra`` (JSON: how it was trained); loading builds the
architecture from the metadata and loads strictly.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rmmvideo.errors import UserError

DEFAULT_NAME = "artefact-small.safetensors"
UNKNOWN_QP = -1.0  # the qp channel where the codec's quantiser is not known


@dataclass(frozen=True)
class ArtefactConfig:
    channels: int = 48
    depth: int = 6  # hidden 3x3 convolutions between the first and the last
    qp_input: bool = False  # a fourth input channel: the H.264 QP at each pixel / 51, -1 where unknown


class ArtefactCNN(nn.Module):
    """(B, 3, H, W) in [0, 1] -> (B, 3, H, W): x + a residual of 3x3 convolutions (any H, W).

    With ``config.qp_input`` the convolutions also see ``qp`` (B, 1, H, W): the codec's
    quantiser at each pixel as QP / 51, or -1 where it is unknown (None: unknown everywhere).
    """

    def __init__(self, config: ArtefactConfig = ArtefactConfig()) -> None:
        super().__init__()
        self.config = config
        self.head = nn.Conv2d(4 if config.qp_input else 3, config.channels, 3, padding=1)
        self.body = nn.ModuleList([nn.Conv2d(config.channels, config.channels, 3, padding=1)
                                   for _ in range(config.depth)])
        self.tail = nn.Conv2d(config.channels, 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor, qp: torch.Tensor | None = None) -> torch.Tensor:
        inp = x
        if self.config.qp_input:
            inp = torch.cat([x, qp if qp is not None else torch.full_like(x[:, :1], UNKNOWN_QP)], 1)
        h = F.relu(self.head(inp))
        for conv in self.body:
            h = F.relu(conv(h))
        return x + self.tail(h)


def default_artefact_path() -> Path:
    """The bundled weights: ``rmmvideo/weights/artefact-small.safetensors``."""
    import rmmvideo.weights

    return Path(rmmvideo.weights.__file__).resolve().parent / DEFAULT_NAME


def save_artefact(model: ArtefactCNN, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` and its config to one safetensors file (temporary file, then renamed)."""
    from safetensors.torch import save_file

    from rmmvideo.video.safe_output import atomic_output

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    meta = {"artefact_config": json.dumps(asdict(model.config)), "extra": json.dumps(extra or {}, sort_keys=True)}
    with atomic_output(p) as tmp:
        save_file(tensors, tmp, metadata=meta)
    return p


def load_artefact(path: str | Path | None = None, device: str | torch.device = "cpu") -> ArtefactCNN:
    """The model of a weights file (None: the bundled one), eval mode, on ``device``.

    Raises:
        UserError: missing or unreadable file, no ``artefact_config``, tensors not matching it.
    """
    from safetensors import SafetensorError, safe_open
    from safetensors.torch import load_file

    p = default_artefact_path() if path is None else Path(path)
    if not p.is_file():
        raise UserError(f"codec-artefact weights not found: {p}")
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
        config = ArtefactConfig(**json.loads(meta["artefact_config"]))
        sd = load_file(str(p), device="cpu")
    except (SafetensorError, OSError, KeyError, TypeError, ValueError) as e:  # not safetensors, bad metadata
        raise UserError(f"{p}: not a codec-artefact weights file ({type(e).__name__}: {e})") from None
    model = ArtefactCNN(config)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise UserError(f"{p}: tensors do not match artefact_config: {str(e).splitlines()[0][:200]}") from None
    return model.to(device).eval()
