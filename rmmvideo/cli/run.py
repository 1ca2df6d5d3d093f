"""`rmmvideo run`: restore the faces of one video."""

from __future__ import annotations

import argparse
import functools
from typing import TYPE_CHECKING

from rmmvideo.cli import checks

if TYPE_CHECKING:
    from pathlib import Path

    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.probe import VideoInfo

HELP = "restore the faces in a video (streaming; audio and timestamps kept)"


def add_model_options(p: argparse._ActionsContainer) -> None:
    """Weights, device, face detector and parser: shared by run, preview and faces."""
    p.add_argument("--weights", default=None, help="RMM weights (.safetensors); default: bundled rmm-small")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    p.add_argument("--detector", choices=["auto", "mtcnn", "fan", "dlib"], default="auto",
                   help="face detector: face-alignment (S3FD+FAN) when its weights are present, else "
                        "mtcnn (MTCNN + dlib 68 points, offline); dlib = HOG (frontal faces >= 80 px)")
    p.add_argument("--models-dir", default=None, help="folder holding face-alignment's weight files (offline installs)")
    p.add_argument("--parser", default=None, help="face-parsing (BiSeNet, 79999_iter.pth) checkpoint for paste masks")


def parse_strength(text: str) -> float | str | tuple[float, float]:
    """``--strength``: 'auto', a number in [0, 1] (luma and chroma alike), or ``L/C``: separate
    weights in [0, 1] for the detail's luma and chroma (``0.5/1``)."""
    def weight(part: str) -> float:
        try:
            v = float(part)
        except ValueError:
            v = float("nan")
        if not 0.0 <= v <= 1.0:
            raise argparse.ArgumentTypeError(
                f"expected 'auto', a number in [0, 1] or LUMA/CHROMA weights such as 0.5/1, got {text!r}")
        return v

    if text == "auto":
        return "auto"
    parts = text.split("/")
    if len(parts) == 2:
        return weight(parts[0]), weight(parts[1])
    return weight(text)


def add_strength_option(p: argparse._ActionsContainer, default: str | None = "auto") -> None:
    """``--strength auto|0..1|L/C``: shared by run, preview, faces, batch and bench."""
    p.add_argument("--strength", type=parse_strength, default=default, metavar="auto|0..1|L/C",
                   help="restoration strength per face track: 0 = the plain upscale (bit for bit), "
                        "1 = all of the model's detail, L/C = separate weights for the detail's luma and chroma "
                        "(e.g. 0.5/1: half the luma detail, which moves identity most, all of the colour detail), "
                        "auto = per track, from the weights' calibration at the face's size and codec quantiser")


def add_fuse_option(p: argparse._ActionsContainer) -> None:
    from rmmvideo.video.quantiser import COARSE_QP, FINE_QP

    p.add_argument("--fuse", type=checks.FUSE, default="auto", metavar="auto|N",
                   help="multi-frame fusion: the N frames before and after each frame that show the same face "
                        "track are motion-compensated and averaged into its face regions where they agree, before "
                        "restoration (less codec noise and flicker). auto (default) = 3, weighed by how coarsely the "
                        f"codec coded each face (H.264 QP: nothing at {FINE_QP:g} or less, all from {COARSE_QP:g}; "
                        "nothing without a quantiser); N = 0..8 for every face (0 = off; on nearly clean input it "
                        "softens faces a little: README)")


def add_deblock_option(p: argparse._ActionsContainer) -> None:
    p.add_argument("--deblock", nargs="?", const="on", default="auto", choices=["off", "auto", "on"],
                   help="remove codec artefacts from face regions at the input's resolution with a small learned "
                        "CNN that reads the codec's quantiser, before fusion and restoration; only the colour it "
                        "corrects is kept. auto (default) = by how coarsely the codec coded each face (as --fuse "
                        "auto), on (the bare flag) = every face fully, off. README: gains and costs")


def add_restore_options(p: argparse._ActionsContainer) -> None:
    """Options shared by run, preview, bench and batch (they map onto RestoreOptions)."""
    p.add_argument("--scale", type=checks.SCALE, default=2.0, help="upscale factor of the whole frame, 0.25..16")
    add_model_options(p)
    p.add_argument("--temporal", choices=["track", "frame"], default="track",
                   help="track: fixed noise + pinned memory slot per face track; frame: fresh per frame")
    add_fuse_option(p)
    add_deblock_option(p)
    add_strength_option(p)
    p.add_argument("--seed", type=checks.SEED, default=0, help="run seed >= 0 (per-track noise derives from it)")
    p.add_argument("--detect-every", type=checks.DETECT_EVERY, default=2,
                   help="run the face detector every k frames, 1..1000")
    p.add_argument("--batch-size", type=checks.BATCH_SIZE, default=8, help="frames per restoration batch, 1..1024")
    p.add_argument("--codec", default="libx264", choices=["libx264", "libx265", "prores", "ffv1"])
    p.add_argument("--crf", type=checks.CRF, default=18, help="x264/x265 quality, 0..51 (lower = better)")
    p.add_argument("--preset", default="medium", help="x264/x265 speed preset")
    p.add_argument("--bit-depth", type=int, choices=[8, 10], default=None,
                   help="output bit depth (default: 10 for 10-bit input, else 8)")
    p.add_argument("--threads", type=checks.THREADS, default=0,
                   help="torch CPU threads per process, 0..1024 (0 = default: torch's own; "
                        "batch: cores / jobs per worker)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, only log lines")
    p.add_argument("--deinterlace", choices=["auto", "off", "frame", "field"], default="auto",
                   help="interlaced input: yadif to one frame per frame, or per field (double rate); "
                        "auto = when idet or the stream's flags say interlaced")
    p.add_argument("--sar", choices=["square", "keep"], default="square",
                   help="anamorphic input (faces are always restored in square pixels): write square "
                        "pixels at the display aspect, or keep the input's sample aspect ratio")


@functools.cache
def restore_option_actions() -> dict[str, argparse.Action]:
    """Every restoration option (`add_restore_options`) and ``--on-damage``, by their
    RestoreOptions field name (``detect_every``): one definition of type, range and choices for
    the command line and for a batch manifest's option columns (`option_from_text`)."""
    p = argparse.ArgumentParser(add_help=False)
    add_restore_options(p)
    checks.add_damage_option(p)
    return {a.dest: a for a in p._actions}


def option_from_text(name: str, text: str) -> object:
    """One restoration option given as text (a CSV manifest cell), parsed and range-checked as
    its command-line flag: ``option_from_text("crf", "20") == 20``. `name` is the RestoreOptions
    field (``detect_every``; ``detect-every`` works too); ``on_damage`` takes the flag's
    warn|fail (``error`` too) and gives the API's warn|error.

    Raises KeyError for an unknown name, ValueError (one line) for a bad value."""
    action = restore_option_actions()[name.replace("-", "_")]
    if action.nargs == 0:  # a switch (--quiet): not an option with a value
        raise KeyError(name)
    if action.dest == "on_damage" and text == "error":
        text = "fail"
    try:
        value = action.type(text) if callable(action.type) else text
    except (argparse.ArgumentTypeError, ValueError, TypeError) as e:
        raise ValueError(str(e) or f"invalid value {text!r}") from None
    if action.choices is not None and value not in action.choices:
        raise ValueError(f"invalid choice {text!r} (choose from {', '.join(map(str, action.choices))})")
    return checks.on_damage_value(str(value)) if action.dest == "on_damage" else value


def restore_options(args: argparse.Namespace) -> RestoreOptions:
    """RestoreOptions from the flags of `add_restore_options` (``on_damage`` stays the default)."""
    from rmmvideo.video.options import RestoreOptions

    return RestoreOptions(
        scale=args.scale, weights=args.weights, device=args.device, detector=args.detector,
        models_dir=args.models_dir, parser=args.parser, temporal=args.temporal, fuse=args.fuse, deblock=args.deblock, strength=args.strength, seed=args.seed,
        detect_every=args.detect_every, batch_size=args.batch_size, codec=args.codec, crf=args.crf,
        preset=args.preset, bit_depth=args.bit_depth, threads=args.threads, quiet=args.quiet,
        deinterlace=args.deinterlace, sar=args.sar,
    )


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("input", help="input video (any format FFmpeg reads)")
    p.add_argument("-o", "--output", default=None,
                   help="output file (default: beside the input, INPUT_STEM.rmm-xS.mp4)")
    p.add_argument("--max-frames", type=checks.FRAMES, default=None,
                   help="only the first N frames, N >= 1 (audio kept whole)")
    checks.add_output_options(p)
    checks.add_damage_option(p)
    add_restore_options(p)


def check_run(args: argparse.Namespace, options: RestoreOptions) -> tuple[VideoInfo, Path]:
    """Checks before any work (input, output path, output size and memory): (VideoInfo, target)."""
    import sys

    from rmmvideo.errors import UserError
    from rmmvideo.video.io_encode import CONTAINERS
    from rmmvideo.video.pipeline import default_output_path
    from rmmvideo.video.probe import probe
    from rmmvideo.video.upscale import scaled_size

    info = probe(args.input)
    target = checks.check_output(args.output or default_output_path(info.path, options.scale),
                                 info.path, args.overwrite, tuple(CONTAINERS))
    h, w = scaled_size(info.height, info.width, options.scale)
    if min(h, w) < checks.MIN_OUTPUT_SIDE:
        raise UserError(f"--scale {options.scale:g} makes a {w}x{h} output from {info.width}x{info.height}: "
                        f"frames must be at least {checks.MIN_OUTPUT_SIDE} px on each side")
    deep = (options.bit_depth or (10 if info.bit_depth > 8 else 8)) > 8
    warning = checks.check_memory(w, h, options.batch_size, deep)
    if warning:
        print(f"rmmvideo: warning: {warning}", file=sys.stderr)
    return info, target


def run(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from rmmvideo.video.pipeline import restore_video

    options = replace(restore_options(args), on_damage=checks.on_damage_value(args.on_damage))
    info, target = check_run(args, options)
    summary = restore_video(info.path, target, options, max_frames=args.max_frames)
    if args.quiet:
        print(summary.line())
    return 0
