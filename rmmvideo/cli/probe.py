"""`rmmvideo probe`: what an input is, as the restoration path sees it: size, sample and display
aspect ratio, field order (the stream's flag and FFmpeg's idet), telecine, colour range and
matrix, monochrome or tinted, audio and what each output container would do with it, and how
coarsely the codec coded it (what ``--deblock auto`` and ``--fuse auto`` will do)."""

from __future__ import annotations

import argparse
import json

HELP = "describe a video input: interlacing (flags + idet), telecine, SAR/DAR, colour, audio handling, codec quantiser"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("inputs", nargs="+", help="video files")
    p.add_argument("--frames", type=int, default=48,
                   help="frames FFmpeg's idet filter and the quantiser summary look at")
    p.add_argument("--json", action="store_true", help="print JSON (one object per input, in a list)")


def run(args: argparse.Namespace) -> int:
    from rmmvideo.errors import UserError
    from rmmvideo.video.archive import describe, scan_fields
    from rmmvideo.video.probe import probe
    from rmmvideo.video.quantiser import describe_coding

    if args.frames < 1:
        raise UserError(f"--frames must be >= 1, got {args.frames}")
    reports = []
    for path in args.inputs:
        info = probe(path)
        report = describe(info, scan_fields(info.path, args.frames), outputs=(".mp4", ".mkv", ".mov"))
        report["coding"] = describe_coding(info.path, args.frames)
        reports.append(report)
    if args.json:
        print(json.dumps(reports, indent=1))
        return 0
    for r in reports:
        print(r["path"])
        for key, value in r.items():
            if key == "path":
                continue
            if isinstance(value, dict) and key == "audio_output":
                for suffix, lines in value.items():
                    print(f"  audio into {suffix}: {'; '.join(lines) or 'none'}")
                continue
            if isinstance(value, dict):
                value = ", ".join(f"{k} {v}" for k, v in value.items())
            elif isinstance(value, list):
                value = "x".join(map(str, value)) if key.endswith("size") else "; ".join(map(str, value)) or "none"
            print(f"  {key}: {value}")
    return 0
