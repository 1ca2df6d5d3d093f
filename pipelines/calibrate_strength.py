"""Measure a weights file's auto-strength calibration curve and write it into the file.

    python pipelines/calibrate_strength.py rmmvideo/weights/rmm-small.safetensors \
        --data ../shared/data/faces/utkface [--faces 64] [--align detected|exact] [--dry-run]
        [--gate CLIP... [--gate-scales 2 4 6 8]]

The faces are the validation split of the training data (``val_fraction`` 0.05, the split the
training configs hold out), at their own resolution (200 px for UTKFace). Each is degraded as
the video pipeline sees real footage at each crop scale (rmmvideo.video.strength.pipeline_view),
aligned as the pipeline aligns it (``--align detected``, the default: the pipeline's MTCNN +
dlib 68 points on the degraded face; ``exact``: the sources' own alignment, as before
2026-12-07), restored, and the least-squares blend weights of the model's detail's luma and chroma against
the truth (cut back until identity clearly improves) are the curve's point. The file is rewritten atomically with the curve in its config; its tensors are
unchanged.

``--gate CLIP...`` is the release check on real footage: the curve is written to a temporary
copy and ``rmmvideo eval-video`` runs on the clips (40 frames, CRF 30, ``--strengths auto``) at
each of ``--gate-scales``. If the curve loses to the plain upscale on any clip-scale (lower
PSNR, higher FED or temporal error), the file gets a zero curve (``auto`` = the plain upscale
bit for bit) and the measured curve and the losses are kept in its metadata. The calibration
faces are stills of another kind of face than real footage; on the shared clips at /6 and /8
the bundled weights' stills curve lost identity on three of five clips (README).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

GATE_FRAMES = 40  # the held-out real clips' protocol length


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
    p.add_argument("--gate", nargs="+", default=None, metavar="CLIP",
                   help="real clips the curve must not lose on (else a zero curve is written)")
    p.add_argument("--gate-scales", nargs="+", type=int, default=[2, 4, 6, 8], metavar="S")
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
    record: dict[str, object] = {"faces": len(sources), "data": str(args.data), "seed": args.seed,
                                 "val_fraction": args.val_fraction, "align": args.align}
    if args.gate:
        lost = gate(model, curve, args.gate, args.gate_scales)
        record["gate"] = {"clips": [Path(c).name for c in args.gate], "scales": args.gate_scales,
                          "frames": GATE_FRAMES, "lost": lost}
        if lost:
            print(f"the curve loses to the plain upscale on {len(lost)} clip-scale(s): writing a zero curve")
            for line in lost:
                print(f"  {line}")
            record["measured_curve"] = [list(p) for p in curve]
            curve = [(f, 0.0, 0.0) for f, _, _ in curve]
        else:
            print("the curve is never worse than the plain upscale on the gate clips")
    extra["strength_calibration"] = record
    model.config = replace(model.config, strength_curve=tuple(curve))
    save_pretrained(model, args.weights, extra=extra)
    print(f"wrote the curve into {args.weights}")
    return 0


def gate(model, curve: list[tuple[float, float, float]], clips: list[str], scales: list[int],
         frames: int = GATE_FRAMES) -> list[str]:
    """eval-video at ``auto`` with ``curve`` on ``clips`` x ``scales``: the clip-scales it loses on."""
    from rmmvideo.eval.video import evaluate_videos, worse_than_upscale
    from rmmvideo.models.weights import save_pretrained
    from rmmvideo.video.options import RestoreOptions

    with tempfile.TemporaryDirectory(prefix="rmmvideo-gate-") as tmp:
        w = Path(tmp) / "gate.safetensors"
        config = model.config
        model.config = replace(config, strength_curve=tuple(curve))
        try:
            save_pretrained(model, w)
        finally:
            model.config = config
        results = evaluate_videos(clips, scales=scales, frames=frames, strengths=["auto"],
                                  options=RestoreOptions(weights=str(w), quiet=True), noise_check=False,
                                  progress=lambda m: print(f"gate: {m}", file=sys.stderr, flush=True))
    return worse_than_upscale(results)


if __name__ == "__main__":
    sys.exit(main())
