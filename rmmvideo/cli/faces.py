"""`rmmvideo faces`: restore the faces of still images (photos, or crops already aligned)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rmmvideo.cli import checks

HELP = "restore faces in still images: an image or a folder of images -> a folder of PNGs"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="an image, or a folder of images (its top level; non-images are skipped)")
    p.add_argument("-o", "--output", required=True,
                   help="output folder (created); each output is INPUT_STEM.png")
    p.add_argument("--aligned", action="store_true",
                   help="inputs are face crops in the weights' template geometry: write the restored "
                        "crops at the model's size (no detection, no paste-back)")
    p.add_argument("--scale", type=checks.SCALE, default=2.0, help="upscale factor of whole photos, 0.25..16 (as `run`)")
    from rmmvideo.cli.run import add_model_options, add_strength_option

    add_model_options(p)
    add_strength_option(p)
    p.add_argument("--seed", type=checks.SEED, default=0, help="seed of the faces' noise vectors, >= 0")
    p.add_argument("--threads", type=checks.THREADS, default=0, help="torch CPU threads, 0..1024 (0 = default)")
    p.add_argument("--quiet", action="store_true", help="only warnings, failures and the summary line")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing output PNGs (without it, an existing output is an error)")


def run(args: argparse.Namespace) -> int:
    from rmmvideo.errors import UserError
    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.stills import discover_images, output_names, restore_stills

    if not args.overwrite:  # before any work: never replace a PNG silently
        images, _ = discover_images(args.input)
        existing = [o for o in output_names(images, Path(args.output)).values() if o.exists()]
        if existing:
            raise UserError(f"{len(existing)} output(s) exist, e.g. {existing[0]} (pass --overwrite to replace them)")

    options = RestoreOptions(scale=args.scale, weights=args.weights, device=args.device,
                             detector=args.detector, models_dir=args.models_dir, parser=args.parser,
                             strength=args.strength, seed=args.seed, threads=args.threads, quiet=args.quiet)
    summary = restore_stills(args.input, Path(args.output), options, aligned=args.aligned)
    print(summary.line())
    if summary.failed:
        print(f"rmmvideo: error: {len(summary.failed)} image(s) failed: "
              + ", ".join(p.name for p, _ in summary.failed), file=sys.stderr)
        return 1
    return 0
