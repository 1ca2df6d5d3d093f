"""`rmmvideo train`: train an RMM model from a train config YAML (configs/train/*.yaml)."""

from __future__ import annotations

import argparse
from pathlib import Path

from rmmvideo.cli import checks
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rmmvideo.train.trainer import Trainer, TrainConfig

HELP = "train an RMM model (checkpoints, resume, EMA export)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", required=True, help="train config YAML (configs/train/*.yaml)")
    p.add_argument("--out", default=None, help="run folder (default: runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--max-steps", type=checks.int_in(1), default=None,
                   help="stop at this total step, >= 1 (<= config steps)")
    p.add_argument("--threads", type=checks.int_in(1, 1024), default=None,
                   help="torch CPU threads, 1..1024 (default: config or torch's)")
    p.add_argument("--device", default=None, help="override the config's device (auto, cpu, cuda)")
    p.add_argument(
        "--export-only",
        action="store_true",
        help="load <out>/checkpoint.pt and export its EMA model, without training",
    )
    p.add_argument("--export-to", default=None, help="also copy the EMA export to this .safetensors path")
    p.add_argument("--half", action="store_true", help="export float16 tensors (half the file size)")
    p.add_argument("--quiet", action="store_true", help="log warnings only")


def build_trainer(cfg: "TrainConfig", out: Path) -> tuple["Trainer", dict]:
    """A trainer on ``cfg.data_dir`` (hashed train split; 4 validation faces for the sample
    grids) and the data record that goes into the export's metadata."""
    from rmmvideo.errors import UserError
    from rmmvideo.train.data import FaceFolderDataset
    from rmmvideo.train.degrade import degradation_from_dict
    from rmmvideo.train.trainer import Trainer

    if cfg.data_dir is None or not Path(cfg.data_dir).is_dir():
        raise UserError(f"data_dir not found: {cfg.data_dir}")
    deg = degradation_from_dict(cfg.degradation)
    common = dict(size=cfg.model.size, val_fraction=cfg.val_fraction, seed=cfg.seed, degradation=deg,
                  degrade_at_source=cfg.degrade_at_source)
    train_set = FaceFolderDataset(cfg.data_dir, split="train", **common)
    val_set = FaceFolderDataset(cfg.data_dir, split="val", limit=4, **common)
    data_info = {
        "data_dir": str(cfg.data_dir),
        "train_images": len(train_set),
        "val_fraction": cfg.val_fraction,
        "split": "sha1(name) < val_fraction -> val",
        "degradation": deg.to_dict(),
        "degrade_at_source": cfg.degrade_at_source,
    }
    return Trainer(cfg, out, train_set, val_set), data_info


def run(args: argparse.Namespace) -> int:
    import logging
    import shutil
    from dataclasses import replace

    import torch

    from rmmvideo.errors import UserError
    from rmmvideo.train.trainer import load_train_config

    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
    )
    try:
        cfg = load_train_config(args.config)
    except ValueError as e:  # e.g. a model section that describes no valid architecture
        raise UserError(f"{args.config}: {e}") from None
    if args.device:
        cfg = replace(cfg, device=args.device)
    if args.threads is None and cfg.threads:  # --threads itself is applied by rmmvideo.cli.main
        torch.set_num_threads(int(cfg.threads))
    out = Path(args.out) if args.out else Path("runs") / Path(args.config).stem
    if (out / "checkpoint.pt").is_file() and not (args.resume or args.export_only):
        raise UserError(f"{out} already holds a training run: pass --resume to continue it, or another --out")
    trainer, data_info = build_trainer(cfg, out)
    if trainer.device.type == "cuda":  # fixed shapes: cuDNN picks its fastest kernels; TF32 for fp32
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if args.export_only:
        trainer.load_checkpoint()
        path = trainer.export(data_info=data_info, half=args.half)
    else:
        trainer.fit(max_steps=args.max_steps, resume=args.resume, export=False)
        path = trainer.export(data_info=data_info, half=args.half)
    print(f"step {trainer.step}, EMA model: {path}")
    if args.export_to:
        dst = Path(args.export_to)
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, dst)
        print(f"copied to {dst}")
    return 0
