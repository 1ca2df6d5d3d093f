"""`rmmvideo run`: restore the faces of one video."""

from __future__ import annotations

import argparse

HELP = "restore the faces in a video (streaming; audio and timestamps kept)"


def add_model_options(p: argparse.ArgumentParser) -> None:
    """Weights, device, face detector and parser: shared by run, preview and faces."""
    p.add_argument("--weights", default=None, help="RMM weights (.safetensors); default: bundled rmm-small")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--detector", choices=["auto", "fan", "dlib"], default="auto",
                   help="face detector: face-alignment (S3FD+FAN) when its weights are present, else dlib")
    p.add_argument("--models-dir", default=None, help="folder holding face-alignment's weight files (offline installs)")
    p.add_argument("--parser", default=None, help="face-parsing (BiSeNet, 79999_iter.pth) checkpoint for paste masks")


def add_restore_options(p: argparse.ArgumentParser) -> None:
    """Options shared by run, preview and bench (they map onto RestoreOptions)."""
    p.add_argument("--scale", type=float, default=2.0, help="upscale factor of the whole frame")
    add_model_options(p)
    p.add_argument("--temporal", choices=["track", "frame"], default="track",
                   help="track: fixed noise + pinned memory slot per face track; frame: fresh per frame")
    p.add_argument("--seed", type=int, default=0, help="run seed (per-track noise derives from it)")
    p.add_argument("--detect-every", type=int, default=2, help="run the face detector every k frames")
    p.add_argument("--batch-size", type=int, default=8, help="frames per restoration batch")
    p.add_argument("--codec", default="libx264", choices=["libx264", "libx265", "prores", "ffv1"])
    p.add_argument("--crf", type=int, default=18, help="x264/x265 quality (lower = better)")
    p.add_argument("--preset", default="medium", help="x264/x265 speed preset")
    p.add_argument("--bit-depth", type=int, choices=[8, 10], default=None,
                   help="output bit depth (default: 10 for 10-bit input, else 8)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, only log lines")
    p.add_argument("--deinterlace", choices=["auto", "off", "frame", "field"], default="auto",
                   help="interlaced input: yadif to one frame per frame, or per field (double rate); "
                        "auto = when idet or the stream's flags say interlaced")
    p.add_argument("--sar", choices=["square", "keep"], default="square",
                   help="anamorphic input (faces are always restored in square pixels): write square "
                        "pixels at the display aspect, or keep the input's sample aspect ratio")


def restore_options(args: argparse.Namespace) -> "object":
    from rmmvideo.video.pipeline import RestoreOptions

    return RestoreOptions(
        scale=args.scale, weights=args.weights, device=args.device, detector=args.detector,
        models_dir=args.models_dir, parser=args.parser, temporal=args.temporal, seed=args.seed,
        detect_every=args.detect_every, batch_size=args.batch_size, codec=args.codec, crf=args.crf,
        preset=args.preset, bit_depth=args.bit_depth, threads=args.threads, quiet=args.quiet,
        deinterlace=args.deinterlace, sar=args.sar,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="input video (any format FFmpeg reads)")
    p.add_argument("-o", "--output", default=None,
                   help="output file (default: beside the input, INPUT_STEM.rmm-xS.mp4)")
    p.add_argument("--max-frames", type=int, default=None, help="only the first N frames (audio kept whole)")
    add_restore_options(p)


def run(args: argparse.Namespace) -> int:
    from rmmvideo.video.pipeline import restore_video

    summary = restore_video(args.input, args.output, restore_options(args), max_frames=args.max_frames)
    if args.quiet:
        print(summary.line())
    return 0
