"""`rmmvideo eval-video`: the real-footage benchmark (restored faces vs a plain bicubic upscale)."""

from __future__ import annotations

import argparse

HELP = "benchmark restoration on real clips: degrade (downscale + x264), restore, score faces vs bicubic"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rmmvideo.cli.run import add_deblock_option, add_fuse_option, add_model_options, parse_strength

    p.add_argument("clips", nargs="+", metavar="CLIP", help="original (high-quality) video clips")
    p.add_argument("--scales", type=int, nargs="+", default=[2, 4], help="downscale factors to test (2..8)")
    p.add_argument("--crf", type=int, default=30, help="libx264 CRF of the degraded clip (0..51)")
    p.add_argument("--frames", type=int, default=90, help="first N frames of each clip (>= 2)")
    p.add_argument("--strengths", type=parse_strength, nargs="+", default=["auto", 1.0], metavar="auto|0..1|L/C",
                   help="restoration strengths to score, each as its own row beside bicubic")
    add_model_options(p)
    p.add_argument("--seed", type=int, default=0, help="run seed (per-track noise derives from it)")
    p.add_argument("--temporal", choices=["track", "frame"], default="track",
                   help="as in run: track (per-track style, stabiliser) or frame (each frame alone)")
    add_fuse_option(p)
    add_deblock_option(p)
    p.add_argument("--no-noise-check", action="store_true",
                   help="skip the two-seed run that measures how much the noise input changes the output")
    p.add_argument("--json", default=None, help="write the full results as JSON")
    p.add_argument("--md", default=None, help="write the tables as Markdown")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from tqdm import tqdm

    from rmmvideo.errors import UserError
    from rmmvideo.eval.video import evaluate_videos, to_json, to_markdown
    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.safe_output import atomic_output

    if any(not 2 <= s <= 8 for s in args.scales):
        raise UserError(f"--scales must be integers in 2..8, got {args.scales}")
    if not 0 <= args.crf <= 51:
        raise UserError(f"--crf must be in 0..51, got {args.crf}")
    if args.frames < 2:
        raise UserError(f"--frames must be >= 2, got {args.frames}")
    for c in args.clips:
        if not Path(c).is_file():
            raise UserError(f"clip not found: {c}")
    options = RestoreOptions(weights=args.weights, device=args.device, detector=args.detector,
                             models_dir=args.models_dir, parser=args.parser, seed=args.seed, temporal=args.temporal,
                             fuse=args.fuse, deblock=args.deblock,
                             threads=args.threads, quiet=True)
    bar = None if args.quiet else tqdm(total=len(args.clips) * len(args.scales), unit="run", file=sys.stderr)

    started = False

    def step(label: str) -> None:
        nonlocal started
        if bar is not None:
            if started:
                bar.update(1)
            started = True
            bar.set_description(label)

    try:
        results = evaluate_videos(args.clips, args.scales, args.crf, args.frames, args.strengths, options,
                                  noise_check=not args.no_noise_check, progress=step)
    finally:
        if bar is not None:
            bar.update(1)
            bar.close()
    md = to_markdown(results)
    print(md, end="")
    for path, text in ((args.json, to_json(results)), (args.md, md)):
        if path:
            with atomic_output(path) as tmp:
                Path(tmp).write_text(text)
    return 1 if all(r.error for r in results) else 0
