"""Measure a weights file's auto-strength calibration curve and write it into the file.

    python pipelines/calibrate_strength.py rmmvideo/weights/rmm-small.safetensors \
        --data ../shared/data/faces/utkface [--faces 256] [--align detected|exact] [--dry-run]
        [--jobs 2] [--gate CLIP... [--gate-scales 2 4 6 8] [--regate]]

The faces are the validation split of the training data (``val_fraction`` 0.05, the split the
training configs hold out), at their own resolution (200 px for UTKFace). Each is degraded as
the video pipeline sees real footage at each crop scale (rmmvideo.video.strength.pipeline_view:
H.264 at a CRF drawn from 18-40, whose quantiser the face keeps), aligned as the pipeline
aligns it (``--align detected``, the default: the pipeline's MTCNN + dlib 68 points on the
degraded face; ``exact``: the sources' own alignment, as before 2026-12-07), restored, and the
least-squares blend weights of the model's detail's luma and chroma against the truth (times
the safety factor, cut back until identity clearly improves) are the curve's points: one per
crop scale and codec quantiser, and one per crop scale for faces whose quantiser is unknown
(rmmvideo.video.strength). ``--jobs N`` measures the crop scales (and runs the gate's scales)
in N processes; the curve is the same. The file is rewritten atomically with the curve in its
config; its tensors are unchanged.

``--gate CLIP...`` is the release check on real footage: the curve is written to a temporary
copy and ``rmmvideo eval-video`` runs on the clips (40 frames, CRF 30, ``--strengths auto 0``) at
each of ``--gate-scales``. If the curve loses to the plain upscale on any clip-scale (lower
PSNR, higher FED or temporal error) where strength 0 (the same cleaning and fusion without the
model's detail) does not, or is worse than strength 0 where that loses already, the file gets a
zero curve (``auto`` = strength 0) and the measured curve and the losses are kept in its
metadata. The calibration faces are stills of another kind of face than real footage; on the
shared clips at /6 and /8 the bundled weights' stills curve lost identity on three of five clips
(README). ``--regate`` runs the gate again on the curve the file holds (its measured one where
the gate zeroed it) without measuring: for when the pipeline before the model changed.
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
    p.add_argument("--data", help="folder of aligned face crops (the training data; not needed with --regate)")
    p.add_argument("--faces", type=int, default=64, help="validation faces to measure on")
    p.add_argument("--val-fraction", type=float, default=0.05, help="the training run's val_fraction")
    p.add_argument("--align", choices=("detected", "exact"), default="detected",
                   help="crop each degraded face with the pipeline's detector (default) or the sources' exact alignment")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--jobs", type=int, default=1, help="processes measuring crop scales in parallel (the same curve)")
    p.add_argument("--dry-run", action="store_true", help="print the curve, do not write it")
    p.add_argument("--gate", nargs="+", default=None, metavar="CLIP",
                   help="real clips the curve must not lose on (else a zero curve is written)")
    p.add_argument("--gate-scales", nargs="+", type=int, default=[2, 4, 6, 8], metavar="S")
    p.add_argument("--regate", action="store_true",
                   help="do not measure: run the --gate on the file's measured curve again (after the pipeline changed)")
    args = p.parse_args(argv)

    import torch

    from rmmvideo.errors import UserError
    from rmmvideo.models.weights import from_pretrained, read_metadata, save_pretrained
    from rmmvideo.train.data import FaceFolderDataset
    from rmmvideo.video.strength import calibrate_jobs, curve_points

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.regate and not args.data:
        print("error: --data is required (the folder of aligned face crops)", file=sys.stderr)
        return 2
    try:
        model = from_pretrained(args.weights)
        ds = None if args.regate else FaceFolderDataset(args.data, model.config.size, split="val",
                                                        val_fraction=args.val_fraction, limit=args.faces)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    extra = dict(read_metadata(args.weights)["extra"])
    if args.regate:
        if not args.gate:
            print("error: --regate needs --gate CLIP...", file=sys.stderr)
            return 2
        record: dict[str, object] = dict(extra.get("strength_calibration", {}))
        curve = curve_points(record.get("measured_curve") or model.config.strength_curve)
        if not curve:
            print(f"error: {args.weights} holds no measured strength curve to gate", file=sys.stderr)
            return 2
        record.pop("measured_curve", None)
    else:
        sources = [ds.load_source(i) for i in range(len(ds))]
        curve = calibrate_jobs(model, sources, args.seed, "mtcnn" if args.align == "detected" else None, args.jobs,
                               args.threads)
        record = {"faces": len(sources), "data": str(args.data), "seed": args.seed,
                  "val_fraction": args.val_fraction, "align": args.align}
    print(f"{record.get('faces', '?')} validation faces; curve (crop scale f, codec quantiser, luma and chroma "
          "weights):")
    for f, qp, luma, chroma in curve:
        q = "any" if qp < 0 else f"{qp:g}"
        print(f"  f {f:4.2f}  QP {q:>3}  luma {luma:.3f}  chroma {chroma:.3f}")
    if args.dry_run:
        return 0

    if args.gate:
        lost = gate(model, curve, args.gate, args.gate_scales, jobs=args.jobs)
        record["gate"] = {"clips": [Path(c).name for c in args.gate], "scales": args.gate_scales,
                          "frames": GATE_FRAMES, "baseline": "rmm s=0", "lost": lost}
        if lost:
            print(f"the curve loses to the plain upscale on {len(lost)} clip-scale(s): writing a zero curve")
            for line in lost:
                print(f"  {line}")
            record["measured_curve"] = [list(p) for p in curve]
            curve = [(f, qp, 0.0, 0.0) for f, qp, _, _ in curve]
        else:
            print("the curve is never worse than the plain upscale on the gate clips")
    extra["strength_calibration"] = record
    model.config = replace(model.config, strength_curve=tuple(curve))
    save_pretrained(model, args.weights, extra=extra)
    print(f"wrote the curve into {args.weights}")
    return 0


def gate(model, curve: list[tuple[float, float, float, float]], clips: list[str], scales: list[int],
         frames: int = GATE_FRAMES, jobs: int = 1) -> list[str]:
    """eval-video at ``auto`` with ``curve`` and at strength 0 on ``clips`` x ``scales`` (the
    scales split among ``jobs`` processes): the clip-scales where auto loses to the plain upscale
    in a metric, unless strength 0 (the same pipeline without the model's detail) already loses
    there and auto is not worse than it."""
    from rmmvideo.eval.video import evaluate_videos, to_markdown, worse_than_upscale
    from rmmvideo.models.weights import save_pretrained
    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.strength import split_over_processes

    with tempfile.TemporaryDirectory(prefix="rmmvideo-gate-") as tmp:
        w = Path(tmp) / "gate.safetensors"
        config = model.config
        model.config = replace(config, strength_curve=tuple(curve))
        try:
            save_pretrained(model, w)
        finally:
            model.config = config
        # a progress line per clip-scale where the evaluation runs here (a lambda does not pickle)
        progress = {} if jobs > 1 else {"progress": lambda m: print(f"gate: {m}", file=sys.stderr, flush=True)}
        results = split_over_processes(evaluate_videos, "scales", scales, jobs, clips, frames=frames,
                                       strengths=["auto", 0.0], options=RestoreOptions(weights=str(w), quiet=True),
                                       noise_check=False, **progress)
        if jobs > 1:
            results.sort(key=lambda r: (r.clip, r.scale))
    print(to_markdown(results), flush=True)
    return worse_than_upscale(results, baseline="rmm s=0")


if __name__ == "__main__":
    sys.exit(main())
