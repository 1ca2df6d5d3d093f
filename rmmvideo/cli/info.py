"""`rmmvideo info`: describe a model (from a config YAML or a weights file): parameter counts
per part, RM3 blocks, code sizes, memory, crop size and alignment template."""

from __future__ import annotations

import argparse
from typing import Any

HELP = "describe a model: parameter counts, RM3 blocks, Z_W/Z_N sizes, memory, crop size, template"


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", default=None, help="model config YAML (e.g. configs/models/rmm-512.yaml)")
    src.add_argument("--weights", default=None,
                     help="weights file (.safetensors); neither option: the bundled default weights")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")


def describe(args: argparse.Namespace) -> dict[str, Any]:
    """Build the info dict for ``args`` (``config`` or ``weights``, else the bundled weights)."""
    from rmmvideo.config import ModelConfig
    from rmmvideo.errors import UserError
    from rmmvideo.models.rmm import RMM
    from rmmvideo.models.weights import (
        default_weights_path,
        from_pretrained,
        read_metadata,
    )

    info: dict[str, Any] = {}
    if args.config is not None:
        try:
            cfg = ModelConfig.from_yaml(args.config)
        except ValueError as e:  # the user's config file describes an invalid model
            raise UserError(f"{args.config}: {e}") from None
        model = RMM(cfg)
        info["source"] = {"config": str(args.config)}
        filled = None
    else:
        path = args.weights if args.weights is not None else default_weights_path()
        model = from_pretrained(args.weights)  # None -> bundled (UserError when absent)
        cfg = model.config
        meta = read_metadata(path)
        info["source"] = {"weights": str(path), "format": meta["rmmvideo_format"], "extra": meta["extra"]}
        filled = model.memory.n_filled
    info.update(
        name=cfg.name,
        crop_size=cfg.size,
        rm3_blocks=cfg.n_rm3,
        block_resolutions=cfg.block_resolutions(),
        unet_channels=list(cfg.unet_channels),
        decoder_channels=list(cfg.decoder_channels),
        rm3_kernel=cfg.rm3_kernel,
        z_w_dim=cfg.z_w_dim,
        z_n_dim=cfg.z_n_dim,
        wavelet_levels=cfg.wavelet_levels,
        mapping={"layers": cfg.mapping_layers, "dim": cfg.mapping_dim},
        key_dim=cfg.key_dim,
        key_width=cfg.key_width,
        memory_size=cfg.memory_size,
        memory_filled=filled,
        template_name=cfg.template_name,
        template=[list(p) for p in cfg.template],
        parameters=model.parameter_counts(),
    )
    return info


def _text(info: dict[str, Any]) -> str:
    pc = info["parameters"]
    src = info["source"]
    lines = [
        f"model        {info['name']}  ({'weights ' + src['weights'] if 'weights' in src else 'config ' + src['config']})",
        f"crop size    {info['crop_size']}x{info['crop_size']}",
        (
            f"RM3 blocks   {info['rm3_blocks']} at "
            f"{', '.join(str(r) for r in info['block_resolutions'])} px (kernel {info['rm3_kernel']})"
        ),
        f"Z_W          {info['z_w_dim']} ({info['wavelet_levels']}-level Haar packets x 3 channels)",
        f"Z_N          {info['z_n_dim']} -> mapping {info['mapping']['layers']} x {info['mapping']['dim']}",
        "memory       "
        + (f"{info['memory_filled']} / {info['memory_size']} slots filled" if info["memory_filled"] is not None
           else f"{info['memory_size']} slots")
        + f", key {info['key_dim']} (ResNet18-style width {info['key_width']})",
        f"template     {info['template_name']}",
        "parameters",
    ]
    for part in ("unet", "mapping", "rm3_decoder", "keynet", "total"):
        lines.append(f"  {part:<11}{pc[part]:>12,}")
    if "weights" in src and src.get("extra"):
        lines.append(f"extra        {src['extra']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    info = describe(args)
    print(json.dumps(info, indent=2) if args.json else _text(info))
    return 0
