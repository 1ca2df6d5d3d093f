"""Save and load RMM weights: one ``.safetensors`` file that carries its own architecture.

File layout: every tensor of ``RMM.state_dict()`` (generator, query net, and the memory buffers
keys/values/ages/filled), plus string metadata:

- ``rmm_config``: the ``ModelConfig`` as JSON (architecture, crop size, alignment template);
- ``rmmvideo_format``: format version (``"1"``);
- ``extra``: JSON of an optional caller dict (e.g. training info).

Loading builds the architecture from ``rmm_config`` only (never guesses) and loads strictly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rmmvideo.config import ModelConfig
from rmmvideo.errors import UserError
from rmmvideo.models.rmm import RMM
from rmmvideo.video.safe_output import atomic_output

FORMAT_VERSION = "1"
DEFAULT_WEIGHTS_NAME = "rmm-small.safetensors"


def default_weights_path() -> Path:
    """Path of the bundled default weights (``rmmvideo/weights/rmm-small.safetensors``)."""
    import rmmvideo.weights

    return Path(rmmvideo.weights.__file__).resolve().parent / DEFAULT_WEIGHTS_NAME


def save_pretrained(model: RMM, path: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (config + all parameters and buffers) to one safetensors file.

    The file is written to a temporary name in the same folder and renamed, so a crash never
    leaves a half-written file under ``path``.

    Args:
        model: the RMM to save.
        path: destination ``.safetensors`` file (parent folders are created).
        extra: optional JSON-serialisable metadata (stored under ``extra``).
    Returns:
        the path written.
    """
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        "rmm_config": model.config.to_json(),
        "rmmvideo_format": FORMAT_VERSION,
        "extra": json.dumps(extra or {}, sort_keys=True),
    }
    with atomic_output(p) as tmp:
        save_file(tensors, tmp, metadata=meta)
    return p


def _resolve(path: str | Path | None) -> Path:
    if path is None:
        p = default_weights_path()
        if not p.is_file():
            raise UserError(
                f"no bundled weights yet ({p} is missing): pass a weights file explicitly"
            )
        return p
    p = Path(path)
    if not p.is_file():
        raise UserError(f"weights file not found: {p}")
    return p


def read_metadata(path: str | Path | None = None) -> dict[str, Any]:
    """Metadata of a weights file without loading tensors.

    Returns:
        ``{"rmm_config": dict, "rmmvideo_format": str, "extra": dict}``.
    Raises:
        UserError: missing file, not a safetensors file, or no ``rmm_config`` in it.
    """
    from safetensors import safe_open

    p = _resolve(path)
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as e:
        raise UserError(f"cannot read weights {p}: {type(e).__name__}: {e}") from e
    if "rmm_config" not in meta:
        raise UserError(f"{p} has no 'rmm_config' metadata: not an rmmvideo weights file")
    try:
        cfg = json.loads(meta["rmm_config"])
        extra = json.loads(meta.get("extra", "{}"))
    except json.JSONDecodeError as e:
        raise UserError(f"{p}: corrupt metadata ({e})") from e
    return {"rmm_config": cfg, "rmmvideo_format": meta.get("rmmvideo_format", ""), "extra": extra}


def from_pretrained(path: str | Path | None = None, device: str | torch.device = "cpu") -> RMM:
    """Build an RMM from a weights file's embedded config and load it strictly (eval mode).

    Tensors stored in another floating dtype (e.g. float16 to halve the file) are cast into the
    float32 model; names and shapes must match exactly.

    Args:
        path: ``.safetensors`` file, or None for the bundled default weights.
        device: where to put the model.
    Raises:
        UserError: file missing/unreadable, no bundled weights yet, or tensors not matching
            the embedded config.
    """
    from safetensors.torch import load_file

    p = _resolve(path)
    meta = read_metadata(p)
    try:
        cfg = ModelConfig.from_dict(meta["rmm_config"])
    except ValueError as e:  # an invalid architecture in the file: the file is bad, not the code
        raise UserError(f"{p}: invalid rmm_config metadata: {e}") from None
    model = RMM(cfg)
    sd = load_file(str(p), device="cpu")
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise UserError(
            f"{p}: tensors do not match the embedded config: {' '.join(first[:3])[:300]}"
        ) from e
    return model.to(device).eval()
