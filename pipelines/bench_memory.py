"""Peak memory of `restore_video` on a 1-minute vs a 10-minute clip (streaming must not grow).

Builds two clips by looping the frames of a real face clip (downscaled so the 10-minute run
stays affordable on a CPU), restores each in its own fresh process, and prints both peak RSS
values and their ratio.

    python pipelines/bench_memory.py [--clip ../shared/data/videos/talking_512sq_30fps_audio.mp4]
        [--side 160] [--minutes 1 10] [--weights W] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
from fractions import Fraction
from pathlib import Path


def make_long_clip(src: Path, dst: Path, seconds: float, side: int) -> int:
    """Loop `src`'s frames (resized to side x side) into `dst` at 30 fps for `seconds`."""
    import av
    import numpy as np
    from PIL import Image

    frames = []
    with av.open(str(src)) as c:
        for i, f in enumerate(c.decode(video=0)):
            if i >= 120:
                break
            img = f.to_ndarray(format="rgb24")
            frames.append(np.asarray(Image.fromarray(img).resize((side, side), Image.Resampling.BILINEAR)))
    loop = frames + frames[::-1]  # ping-pong: no jump at the loop point
    n = int(seconds * 30)
    with av.open(str(dst), "w") as out:
        vs = out.add_stream("libx264", rate=30)
        vs.width = vs.height = side
        vs.pix_fmt = "yuv420p"
        vs.options = {"preset": "ultrafast", "crf": "20"}
        for i in range(n):
            vf = av.VideoFrame.from_ndarray(loop[i % len(loop)], format="rgb24")
            vf.pts, vf.time_base = i, Fraction(1, 30)
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return n


def _run(clip: str, out: str, weights: str | None) -> dict:
    import resource
    import time

    from rmmvideo.video.options import RestoreOptions
    from rmmvideo.video.pipeline import restore_video

    t0 = time.perf_counter()
    s = restore_video(clip, out, RestoreOptions(scale=2, weights=weights, detector="dlib", quiet=True,
                                                preset="ultrafast", detect_every=3))
    return {"frames": s.frames, "faces": s.faces, "seconds": time.perf_counter() - t0,
            "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    repo = Path(__file__).resolve().parents[1]
    ap.add_argument("--clip", type=Path, default=repo.parent / "shared/data/videos/talking_512sq_30fps_audio.mp4")
    ap.add_argument("--side", type=int, default=160)
    ap.add_argument("--minutes", type=float, nargs=2, default=[1.0, 10.0])
    ap.add_argument("--weights", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ctx = mp.get_context("spawn")
    results = {}
    with tempfile.TemporaryDirectory(prefix="rmm-mem-") as tmp:
        for minutes in args.minutes:
            clip = Path(tmp) / f"clip_{minutes:g}min.mp4"
            make_long_clip(args.clip, clip, minutes * 60, args.side)
            with ctx.Pool(1) as pool:
                r = pool.apply(_run, (str(clip), str(Path(tmp) / "out.mp4"), args.weights))
            results[f"{minutes:g}min"] = r
            print(f"{minutes:g} min: {r['frames']} frames, {r['faces']} faces, {r['seconds']:.0f} s, "
                  f"peak RSS {r['max_rss_mib']:.0f} MiB", flush=True)
    a, b = (results[f"{m:g}min"] for m in args.minutes)
    ratio = b["max_rss_mib"] / a["max_rss_mib"]
    print(f"peak RSS ratio {args.minutes[1]:g} min / {args.minutes[0]:g} min: {ratio:.3f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": results, "ratio": ratio}, indent=2))


if __name__ == "__main__":
    main()
