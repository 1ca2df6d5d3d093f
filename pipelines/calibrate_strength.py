"""Measure a weights file's auto-strength calibration curve and write it into the file.

    python pipelines/calibrate_strength.py rmmvideo/weights/rmm-small.safetensors \
        --data ../shared/data/faces/utkface [--faces 64] [--align detected|exact] [--dry-run]

The faces are the validation split of the training data (``val_fraction`` 0.05, the split the
training configs hold out), at their own resolution (200 px for UTKFace). Each is degraded as
the video pipeline sees real footage at each crop scale (rmmvideo.video.strength.pipeline_view),
aligned as the pipeline aligns it (``--align detected``, the default: the pipeline's MTCNN +
dlib 68 points on the degraded face; ``exact``: the sources' own alignment, as before
2026-12-07), restored, and the least-squares blend weights of the model's detail's luma and chroma against
the truth (cut back until identity clearly improves) are the curve's point. The file is rewritten atomically with the curve in its config; its tensors are
unchanged.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", help=".safetensors weights file (rewritten with the curve)")
    p.add_argument("--data", required=True, help="folder of aligned face crops (the training data)")
    p.add_argument("--faces", type=int, default=64, help="validation faces to measure on")
    p.add_argument("--val-fraction", type=float, default=0.05, help="the training run's val_fraction")
    p.add_argument("--align", choices=("detected", "exact"), default="detected",
                   help="crop each degraded face with the pipeline's detector (default) or the sources' exact alignment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--dry-run", action="store_true", help="print the curve, do not write it")
    args = p.parse_args(argv)

    import torch

    from rmmvideo.errors import UserError
    from rmmvideo.models.weights import from_pretrained, read_metadata, save_pretrained
    from rmmvideo.train.data import FaceFolderDataset
    from rmmvideo.video.strength import calibrate_strength

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model = from_pretrained(args.weights)
        ds = FaceFolderDataset(args.data, model.config.size, split="val", val_fraction=args.val_fraction,
                               limit=args.faces)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sources = [ds.load_source(i) for i in range(len(ds))]
    detector = None
    if args.align == "detected":
        from rmmvideo.video.detect import make_detector

        detector, _ = make_detector("mtcnn")
    curve = calibrate_strength(model, sources, seed=args.seed, detector=detector)
    print(f"{len(sources)} validation faces; curve (crop scale f, luma and chroma blend weights):")
    for f, luma, chroma in curve:
        print(f"  f {f:4.2f}  luma {luma:.3f}  chroma {chroma:.3f}")
    if args.dry_run:
        return 0

    extra = dict(read_metadata(args.weights)["extra"])
    extra["strength_calibration"] = {"faces": len(sources), "data": str(args.data), "seed": args.seed,
                                     "val_fraction": args.val_fraction, "align": args.align}
    model.config = replace(model.config, strength_curve=tuple(curve))
    save_pretrained(model, args.weights, extra=extra)
    print(f"wrote the curve into {args.weights}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
