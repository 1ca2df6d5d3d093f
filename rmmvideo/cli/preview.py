"""`rmmvideo preview`: one frame, restored as `run` would, side by side with the input."""

from __future__ import annotations

import argparse

from rmmvideo.cli import checks

HELP = "preview one frame: [input upscaled | restored] as a PNG (frame-accurate seek)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rmmvideo.cli.run import add_restore_options

    p.add_argument("input", help="input video (any format FFmpeg reads)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--frame", type=checks.int_in(0), default=None,
                       help="0-based frame index (presentation order), >= 0")
    where.add_argument("--at", default=None,
                       help="time from the first frame: HH:MM:SS.mmm, MM:SS.mmm or seconds")
    p.add_argument("-o", "--output", default=None,
                   help="output image (default: beside the input, INPUT_STEM.frameN.png)")
    p.add_argument("--overlay", action="store_true",
                   help="draw track ids (* = interpolated between detections), crop squares and "
                        "paste-mask outlines on the restored half")
    p.add_argument("--window", type=checks.int_in(0, 10000), default=24,
                   help="frames of tracking context before the frame, 0..10000 (tracks are rebuilt over this window)")
    checks.add_output_options(p)
    add_restore_options(p)


def run(args: argparse.Namespace) -> int:
    from rmmvideo.cli.run import restore_options
    from rmmvideo.video.preview import (
        check_output,
        default_preview_path,
        parse_timestamp,
        render_preview,
        save_preview,
    )

    at = parse_timestamp(args.at) if args.at is not None else None
    if args.output is not None:
        check_output(args.output, args.input)  # fail before any work
    if args.output is not None or args.frame is not None:  # an existing output needs --overwrite
        checks.check_output(args.output or default_preview_path(args.input, args.frame), args.input, args.overwrite)
    res = render_preview(args.input, index=args.frame, time=at, options=restore_options(args),
                         window=args.window, keep_masks=args.overlay)
    target = args.output or default_preview_path(args.input, res.info.index)
    checks.check_output(target, args.input, args.overwrite)  # --at: the frame is known only now
    written = save_preview(target, res.side_by_side(args.overlay), input=args.input)
    print(f"{res.info.line()} -> {written}")
    return 0
