"""Recipe: train the demo model (rmm-small on UTKFace, CPU) and bundle its EMA weights.

Built only on rmmvideo's public API; equivalent to::

    rmmvideo train --config configs/train/utk-small.yaml --out runs/utk-small --threads 2
    rmmvideo train --config configs/train/utk-small.yaml --out runs/utk-small --export-only \\
        --half --export-to rmmvideo/weights/rmm-small.safetensors
    rmmvideo eval ../shared/data/faces/utkface --weights rmmvideo/weights/rmm-small.safetensors

Usage: python pipelines/train_demo.py [--max-steps N] [--resume] [--export-to PATH]
Stop early with SIGTERM (kill PID): the trainer finishes the step, checkpoints, and exports.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from rmmvideo.train.data import FaceFolderDataset
from rmmvideo.train.degrade import DegradationConfig
from rmmvideo.train.trainer import Trainer, load_train_config

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "train" / "utk-small.yaml"))
    ap.add_argument("--out", default=str(REPO / "runs" / "utk-small"))
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--export-to", default=None, help="e.g. rmmvideo/weights/rmm-small.safetensors")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    cfg = load_train_config(args.config)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    deg = DegradationConfig.from_dict(cfg.degradation)
    common = dict(size=cfg.model.size, val_fraction=cfg.val_fraction, seed=cfg.seed, degradation=deg)
    train_set = FaceFolderDataset(cfg.data_dir, split="train", **common)
    val_set = FaceFolderDataset(cfg.data_dir, split="val", limit=4, **common)
    trainer = Trainer(cfg, args.out, train_set, val_set)
    trainer.fit(max_steps=args.max_steps, resume=args.resume, export=False)
    info = {"data_dir": str(cfg.data_dir), "train_images": len(train_set), "degradation": deg.to_dict()}
    print("EMA export:", trainer.export(data_info=info))
    if args.export_to:
        print("bundled:", trainer.export(Path(args.export_to), data_info=info, half=True))


if __name__ == "__main__":
    main()
