"""`rmmvideo bench`: the pipeline against the no-face transcode of the same clip, in one run.

(a) decode + the same upscale + the same encoder, no face work (``transcode_upscale``);
(b) the full pipeline (``restore_video``). Each runs in its own fresh process (spawn) so that
its peak memory (max RSS) is its own. Prints frames/s of each, their ratio and peak memory.
"""

from __future__ import annotations

import argparse
import json

from rmmvideo.cli import checks

HELP = "benchmark the pipeline against the plain decode+upscale+encode of the same clip"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from rmmvideo.cli.run import add_restore_options

    p.add_argument("input", help="input video")
    p.add_argument("--frames", type=checks.FRAMES, default=None, help="only the first N frames of the clip, N >= 1")
    p.add_argument("--json", default=None, help="also write the results as JSON to this file")
    p.add_argument("--keep", default=None, help="folder to keep the two outputs in (default: deleted)")
    add_restore_options(p)


def _stage(kind: str, input: str, output: str, options: dict, frames: int | None) -> dict:
    """Run one stage in this (child) process; returns frames, seconds and max RSS (MiB)."""
    import resource
    import time

    import torch

    from rmmvideo.video.options import RestoreOptions, build_components
    from rmmvideo.video.pipeline import restore_video

    opts = RestoreOptions(**options)
    if opts.threads > 0:
        torch.set_num_threads(opts.threads)
    if kind == "transcode":
        from rmmvideo.video.io import transcode_upscale

        t0 = time.perf_counter()
        r = transcode_upscale(input, output, opts.scale, codec=opts.codec, crf=opts.crf,
                              preset=opts.preset, bit_depth=opts.bit_depth, device=opts.device,
                              max_frames=frames)
        n, secs = r.frames, time.perf_counter() - t0
        extra: dict = {}
    else:
        comps = build_components(opts)  # load time is reported apart from the streaming rate
        t0 = time.perf_counter()
        s = restore_video(input, output, opts, components=comps, max_frames=frames)
        n, secs = s.frames, time.perf_counter() - t0
        extra = {"faces": s.faces, "tracks": s.tracks, "detector": s.detector}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"stage": kind, "frames": n, "seconds": secs, "fps": n / secs, "max_rss_mib": rss, **extra}


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import multiprocessing as mp
    import os
    import platform
    import tempfile
    from pathlib import Path

    from rmmvideo.cli.run import restore_options
    from rmmvideo.video.probe import probe

    opts = restore_options(args)
    opts.quiet = True
    info = probe(args.input)
    options = dataclasses.asdict(opts)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="rmmvideo-bench-") as tmp:
        folder = Path(args.keep) if args.keep else Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        results = []
        for kind in ("transcode", "pipeline"):
            out = str(folder / f"{kind}.mp4")
            with ctx.Pool(1) as pool:
                results.append(pool.apply(_stage, (kind, str(info.path), out, options, args.frames)))
    a, b = results
    report = {
        "input": str(info.path), "size": f"{info.width}x{info.height}", "scale": opts.scale,
        "codec": opts.codec, "preset": opts.preset, "device": opts.device,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "transcode": a, "pipeline": b, "ratio_pipeline_over_transcode": b["fps"] / a["fps"],
    }
    print(f"input {report['input']} ({report['size']}), scale {opts.scale}, {opts.codec} {opts.preset}, "
          f"device {opts.device}")
    print(f"  (a) transcode, no faces : {a['frames']} frames, {a['fps']:.2f} frames/s, "
          f"peak RSS {a['max_rss_mib']:.0f} MiB")
    print(f"  (b) full pipeline       : {b['frames']} frames, {b['fps']:.2f} frames/s, "
          f"peak RSS {b['max_rss_mib']:.0f} MiB ({b['faces']} faces, {b['tracks']} tracks, {b['detector']})")
    print(f"  ratio (b)/(a)           : {report['ratio_pipeline_over_transcode']:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
