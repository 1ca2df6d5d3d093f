"""`rmmvideo batch`: restore many files (folders, manifests), resumable, in parallel."""

from __future__ import annotations

import argparse

from rmmvideo.cli import checks

HELP = "restore many videos (files, folders, manifests) into DIR: resumable, parallel, with a report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, folders (searched recursively, videos found by probing) or manifests "
                        "(.txt: one path per line; .csv: a 'path' column plus optional option columns "
                        "such as scale, crf)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: outputs mirror the input tree; holds batch-state.json and report.json")
    p.add_argument("--jobs", type=checks.JOBS, default=None,
                   help="worker processes, 1..1024, default 1 (threads per worker = cores / jobs); "
                        "with --ray: max tasks in flight (default: the cluster's CPUs, or GPUs when used)")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run on Ray: 'auto' = ray.init() (local, or RAY_ADDRESS), or a cluster address")
    p.add_argument("--segment-seconds", type=checks.SEGMENT_SECONDS, default=300.0,
                   help="split files longer than 1.5x this at keyframes into segments rendered in parallel "
                        "(0..86400; 0: never split)")
    p.add_argument("--engine", choices=("rmm", "upscale"), default="rmm",
                   help="rmm: face restoration; upscale: plain resize + encode, no face work")
    g = p.add_argument_group("restoration options (as in `rmmvideo run`; unset = the pipeline's default)")
    g.add_argument("--scale", type=checks.SCALE, default=None, help="upscale factor, 0.25..16 (default 2)")
    g.add_argument("--weights", default=None, help="model weights (.safetensors); default: bundled small model")
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:N")
    g.add_argument("--detector", default=None, help="face detector backend")
    g.add_argument("--seed", type=checks.SEED, default=None, help="seed of the per-track noise, >= 0")
    from rmmvideo.cli.run import add_strength_option

    add_strength_option(g, default=None)
    g.add_argument("--codec", default=None, help="video encoder (default libx264)")
    g.add_argument("--crf", type=checks.CRF, default=None, help="encoder quality, 0..51 (default 18)")
    g.add_argument("--preset", default=None, help="encoder preset (default medium)")
    checks.add_damage_option(g, default=None)
    p.add_argument("--quiet", action="store_true", help="plain status lines instead of progress bars")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rmmvideo.batch.runner import BatchConfig, run_batch
    from rmmvideo.errors import UserError

    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs must be at least 1, got {args.jobs}")
    if args.segment_seconds < 0:
        raise UserError(f"--segment-seconds must be >= 0, got {args.segment_seconds}")
    options = {k: getattr(args, k) for k in ("scale", "weights", "device", "detector", "seed", "strength",
                                             "codec", "crf", "preset") if getattr(args, k) is not None}
    if args.on_damage is not None:
        options["on_damage"] = checks.on_damage_value(args.on_damage)
    if args.ray:
        from rmmvideo.batch.ray_backend import import_ray

        import_ray()  # fail fast with the install hint
    cfg = BatchConfig(out_dir=Path(args.out), jobs=args.jobs or (0 if args.ray else 1), ray=args.ray, segment_seconds=args.segment_seconds,
                      engine=args.engine, options=options, quiet=args.quiet)
    outcome = run_batch(args.inputs, cfg)
    print(f"report: {outcome.report_path}")
    return 1 if outcome.failed else 0
