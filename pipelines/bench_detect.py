"""Face detection benchmark on sequences built from real clips (``rmmvideo.eval.detection``).

For every clip: faces rescaled to each ``--sizes`` width on a ``--canvas`` (1280x720), the
clip's most turned window (64 px), the clip darkened (gamma 2.5 + noise, 64 px), and the clip's
face-free band alone (false positives). Each sequence goes through a fresh ``FaceTracker`` with the
pipeline's settings (detection every ``--detect-every`` frames, track-guided search). Prints
recall per kind (frames where a tracked face matches the reference), tracks per face, false
tracks, and detector ms per frame (wall time, and CPU time of the process, which a busy machine
does not inflate); then the 68-point error per face size and the whole-frame scan time at 720p
and 1080p.

    python pipelines/bench_detect.py [--videos ../shared/data/videos] [--detector auto|mtcnn|dlib|fan]
        [--frames 30] [--sizes 24 32 48 64 128] [--detect-every 2] [--full-every 6] [--canvas 1280x720]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path


def main() -> None:
    # Idle OpenMP threads sleep instead of spinning (before torch loads: it is imported below)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import numpy as np

    from rmmvideo.eval.detection import (
        landmark_errors,
        load_source,
        make_sequences,
        most_turned_start,
        score_sequence,
    )
    from rmmvideo.video.detect import make_detector
    from rmmvideo.video.track import FaceTracker

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    here = Path(__file__).resolve().parents[1]
    ap.add_argument("--videos", type=Path, default=here.parent / "shared" / "data" / "videos")
    ap.add_argument("--detector", default="auto")
    ap.add_argument("--models-dir", default=None)
    ap.add_argument("--frames", type=int, default=30, help="frames per sequence")
    ap.add_argument("--sizes", type=int, nargs="+", default=[24, 32, 48, 64, 128])
    ap.add_argument("--kinds", nargs="+", default=["turned", "dark", "noface"])
    ap.add_argument("--detect-every", type=int, default=2)
    ap.add_argument("--full-every", type=int, default=6)
    ap.add_argument("--canvas", default="1280x720", help="canvas size WxH of the sequences")
    ap.add_argument("--json", type=Path, default=None, help="also write the per-sequence scores here")
    args = ap.parse_args()
    canvas = tuple(int(v) for v in args.canvas.lower().split("x"))

    det, why = make_detector(args.detector, models_dir=args.models_dir)
    print(f"detector: {det.name} ({why})")
    clips = sorted(p for p in args.videos.iterdir() if p.suffix.lower() in (".mp4", ".mov", ".mkv"))
    kinds = [f"size-{s}" for s in args.sizes] + list(args.kinds)

    def tracker() -> FaceTracker:
        return FaceTracker(det, detect_every=args.detect_every, full_every=args.full_every)

    scores = []
    cpu: dict[int, float] = {}
    for clip in clips:
        src = load_source(clip, args.frames)
        turned = (load_source(clip, args.frames, most_turned_start(clip, args.frames), pad=args.frames)
                  if "turned" in kinds else None)
        for seq in make_sequences(src, kinds, canvas=canvas, turned=turned):  # type: ignore[arg-type]
            t = tracker()
            c0 = time.process_time()
            s = score_sequence(seq, lambda t=t: t)
            cpu[id(s)] = time.process_time() - c0  # detection + tracking, CPU time of this process
            s.seconds = t.detect_seconds  # detector wall time only
            scores.append(s)
            print(f"  {clip.name:40s} {seq.kind:8s} recall {s.hits:3d}/{s.face_frames:3d}  "
                  f"face tracks {s.face_tracks}  false tracks {s.false_tracks}  other faces' tracks {s.other_tracks}  "
                  f"{1000 * s.seconds / s.frames:6.1f} ms/frame ({1000 * cpu[id(s)] / s.frames:.1f} CPU)", flush=True)

    print(f"\n{'kind':9s} {'recall':>8s} {'frames':>7s} {'tracks/face':>12s} {'false tracks':>13s} "
          f"{'ms/frame':>9s} {'CPU ms/frame':>13s}")
    for kind in kinds:
        ks = [s for s in scores if s.kind == kind]
        if not ks:
            continue
        ff = sum(s.face_frames for s in ks)
        hits = sum(s.hits for s in ks)
        per_face = [s.face_tracks for s in ks if s.face_frames]
        ms = 1000 * sum(s.seconds for s in ks) / sum(s.frames for s in ks)
        cms = 1000 * sum(cpu[id(s)] for s in ks) / sum(s.frames for s in ks)
        rec = f"{100 * hits / ff:7.1f}%" if ff else "      -"
        tpf = f"{np.mean(per_face):.2f}" if per_face else "-"
        print(f"{kind:9s} {rec:>8s} {sum(s.frames for s in ks):7d} {tpf:>12s} "
              f"{sum(s.false_tracks for s in ks):13d} {ms:9.1f} {cms:13.1f}")

    # Landmark accuracy per face size (whole-frame detection, first 6 frames of every clip).
    for size in args.sizes:
        errs = np.concatenate([landmark_errors(load_source(c, 6), float(size), det, canvas) for c in clips])  # type: ignore[arg-type]
        print(f"68-point error at {size:3d} px: mean {errs.mean():.3f}, median {np.median(errs):.3f} "
              f"inter-ocular distances (n={len(errs)}; vs dlib on the full-resolution source)")

    # Whole-frame scan time (no tracking) at 720p and 1080p on a canvas with one 48 px face.
    seq = make_sequences(load_source(clips[0], 4), ["size-48"])[0]
    import cv2

    for w, h in ((1280, 720), (1920, 1080)):
        ims = [cv2.resize(im, (w, h)) for im in seq.frames]
        det.detect(ims[:1])
        t0, c0 = time.perf_counter(), time.process_time()
        for im in ims:
            det.detect([im])
        wall, used = time.perf_counter() - t0, time.process_time() - c0
        print(f"whole-frame scan at {w}x{h}: {1000 * wall / len(ims):.0f} ms ({1000 * used / len(ims):.0f} ms CPU)")
    if args.json is not None:
        args.json.write_text(json.dumps([s.__dict__ for s in scores], indent=1))


if __name__ == "__main__":
    main()
