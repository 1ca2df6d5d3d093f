"""The one place a device name becomes a ``torch.device`` (training and every video command)."""

from __future__ import annotations

import torch

from rmmvideo.errors import UserError


def pick_device(name: str) -> torch.device:
    """``"auto"`` (CUDA when available, else the CPU), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...

    Raises UserError for a name torch does not know, or CUDA asked for where it is not available."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except RuntimeError as e:
        raise UserError(f"unknown device {name!r}: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"device {name!r} requested but CUDA is not available")
    return dev
