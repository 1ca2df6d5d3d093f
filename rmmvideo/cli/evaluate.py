"""`rmmvideo eval`: score a model against bicubic upsampling on a folder of HQ faces under the
paper's test protocols (-TB at a scale, -TD x4/x8/x16) and two milder ones (mild, video)."""

from __future__ import annotations

import argparse

from rmmvideo.cli import checks

HELP = "evaluate restoration on a folder of HQ faces (PSNR, SSIM, MS-SSIM, Hist-CIEDE, FED, LLE)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("faces", metavar="DIR_OF_HQ_FACES", help="folder of high-quality face images")
    p.add_argument("--protocol", choices=["tb", "mild", "video", "td4", "td8", "td16"], default="tb",
                   help="tb: blur+noise+JPEG at --scale; mild: blur sigma 0-1.5, noise 1-8, JPEG 50-90 at "
                   "--scale; video: mild blur, noise 1-4, H.264 CRF 23-35 at --scale; tdN: plain downsampling by N")
    p.add_argument("--scale", type=checks.float_in(1, 32), default=4.0,
                   help="downsampling factor of the tb, mild and video protocols, 1..32")
    p.add_argument("--weights", default=None,
                   help="model weights (.safetensors); omitted: the bundled default weights, "
                   "or the bicubic baseline only when there are none")
    p.add_argument("--bicubic-only", action="store_true", help="score bicubic upsampling only")
    p.add_argument("--size", type=checks.int_in(16, 4096), default=128,
                   help="crop size when no --weights (else the model's), 16..4096")
    p.add_argument("--split", choices=["val", "all"], default="val",
                   help="val: the hashed validation split (as in training); all: every image")
    p.add_argument("--val-fraction", type=checks.float_in(0, 1, low_open=True), default=0.05,
                   help="validation share of the split, (0, 1]")
    p.add_argument("--limit", type=checks.int_in(1), default=None, help="evaluate at most N faces, N >= 1")
    p.add_argument("--seed", type=checks.SEED, default=0, help="degradation and noise seed, >= 0")
    p.add_argument("--align", action="store_true",
                   help="detect and align faces to the model's template (for non-aligned photos)")
    p.add_argument("--batch-size", type=checks.BATCH_SIZE, default=8, help="faces per restore batch, 1..1024")
    p.add_argument("--no-face-metrics", action="store_true", help="skip the dlib FED/LLE metrics")
    p.add_argument("--json", default=None, help="write the full report (per-face values) as JSON")
    p.add_argument("--md", default=None, help="write the summary table as Markdown")
    p.add_argument("--device", default="cpu", help="torch device for the model")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rmmvideo.config import FFHQ_TEMPLATE
    from rmmvideo.errors import UserError
    from rmmvideo.eval.evaluate import evaluate, model_restore_fn
    from rmmvideo.train.data import FaceFolderDataset

    restore_fn, size, template, name = None, int(args.size), FFHQ_TEMPLATE, "rmm"
    weights: Path | None = None
    if args.weights and not args.bicubic_only:
        weights = Path(args.weights)
        if not weights.is_file():
            raise UserError(f"weights not found: {weights}")
    elif not args.bicubic_only:
        from rmmvideo.models.weights import default_weights_path

        weights = default_weights_path() if default_weights_path().is_file() else None
    if weights is not None:
        from rmmvideo.models.weights import from_pretrained

        model = from_pretrained(weights, device=args.device)
        size, template = model.config.size, model.config.template
        name = f"rmm ({weights.name})"
        restore_fn = model_restore_fn(model, args.device, args.seed)
    elif args.align:
        raise UserError("--align needs model weights (the template comes with the model)")
    if args.batch_size < 1:
        raise UserError("--batch-size must be >= 1")
    ds = FaceFolderDataset(
        args.faces, size, split=args.split, val_fraction=args.val_fraction, seed=args.seed,
        align=args.align, template=template if args.align else None, limit=args.limit,
    )
    report = evaluate(
        ds, restore_fn, protocol=args.protocol, scale=args.scale, seed=args.seed,
        batch_size=args.batch_size, face_metrics=not args.no_face_metrics, method_name=name,
        progress=not args.quiet,
    )
    if restore_fn is None:
        report.notes.append("no model weights: bicubic baseline only")
    md = report.to_markdown()
    print(md, end="")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(report.to_json())
    if args.md:
        Path(args.md).parent.mkdir(parents=True, exist_ok=True)
        Path(args.md).write_text(md)
    return 0
