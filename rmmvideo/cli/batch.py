"""`rmmvideo batch`: restore many files (folders, manifests), resumable, in parallel."""

from __future__ import annotations

import argparse

from rmmvideo.cli import checks
from rmmvideo.cli.run import add_restore_options, restore_options

HELP = "restore many videos (files, folders, manifests) into DIR: resumable, parallel, with a report"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="video files, folders (searched recursively, videos found by probing) or manifests "
                        "(.txt: one path per line; .csv: a 'path' column, optional 'output' and option "
                        "columns named like the options below: scale, crf, detect_every, ...)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder: outputs mirror the input tree; holds batch-state.json and report.json")
    p.add_argument("--jobs", type=checks.JOBS, default=None,
                   help="worker processes, 1..1024, default 1 (threads per worker = --threads, or cores / jobs); "
                        "with --ray: max tasks in flight (default: the cluster's CPUs, or GPUs when used)")
    p.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                   help="run on Ray: 'auto' = ray.init() (local, or RAY_ADDRESS), or a cluster address")
    p.add_argument("--segment-seconds", type=checks.SEGMENT_SECONDS, default=300.0,
                   help="split files longer than 1.5x this at keyframes into segments rendered in parallel "
                        "(0..86400; 0: never split)")
    p.add_argument("--engine", choices=("rmm", "upscale"), default="rmm",
                   help="rmm: face restoration; upscale: plain resize + encode, no face work")
    g = p.add_argument_group("restoration options (those of `rmmvideo run`; a CSV manifest's option columns "
                             "override them per file)")
    add_restore_options(g)  # --threads: torch threads per worker; --quiet: plain status lines
    checks.add_damage_option(g)


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace
    from pathlib import Path

    from rmmvideo.batch.runner import BatchConfig, run_batch

    options = replace(restore_options(args), on_damage=checks.on_damage_value(args.on_damage))
    if args.ray:
        from rmmvideo.batch.ray_backend import import_ray

        import_ray()  # fail fast with the install hint
    cfg = BatchConfig(out_dir=Path(args.out), jobs=args.jobs or (0 if args.ray else 1), ray=args.ray,
                      segment_seconds=args.segment_seconds, engine=args.engine, options=options,
                      quiet=args.quiet)
    outcome = run_batch(args.inputs, cfg)
    print(f"report: {outcome.report_path}")
    return 1 if outcome.failed else 0
