"""Recipe: remaster a film archive on Ray, resumable, with a per-reel scale.

    python pipelines/ray_archive.py ARCHIVE_DIR --out OUT_DIR [--address auto|ray://head:10001]
        [--target-height 1080] [--max-scale 4] [--segment-seconds 300] [--weights W] [--device cuda]

1. Finds every video under ARCHIVE_DIR (by probing) and writes OUT_DIR/manifest.csv with one
   row per reel: path, scale = target height / reel height (clipped to [1, --max-scale]).
2. Runs `rmmvideo batch` on Ray with that manifest: one Ray task per segment of
   --segment-seconds (long reels are split at keyframes, rendered in parallel from one shared
   track table, joined without re-encoding); a GPU per task when the cluster has GPUs and
   --device is not cpu.
3. Prints the summary; OUT_DIR/report.json has the per-reel results. Run the same command again
   after a crash or with more reels: finished reels are verified and skipped.

Equivalent CLI for step 2: rmmvideo batch OUT_DIR/manifest.csv --out OUT_DIR --ray auto.
On a cluster every node needs rmmvideo installed (same version) and the archive and OUT_DIR on a
shared filesystem at the same path.
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from rmmvideo.batch.discover import discover
from rmmvideo.batch.runner import BatchConfig, run_batch
from rmmvideo.errors import UserError
from rmmvideo.video.io import probe
from rmmvideo.video.options import RestoreOptions


def write_manifest(archive: Path, out_dir: Path, target_height: int, max_scale: float) -> Path:
    """OUT_DIR/manifest.csv: path (absolute), output (mirrors the archive tree), scale per reel."""
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / "manifest.csv"
    rows = []
    for job in discover([archive], out_dir):  # videos by probing, the output folder skipped
        info = probe(job.input)
        scale = min(max_scale, max(1.0, target_height / info.height))
        rows.append({"path": str(job.input.resolve()), "output": job.key, "scale": f"{scale:.4g}"})
    if not rows:
        raise UserError(f"no videos under {archive}")
    with open(manifest, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["path", "output", "scale"])
        w.writeheader()
        w.writerows(rows)
    return manifest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("archive", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--address", default="auto", help="Ray: auto (local / RAY_ADDRESS) or a cluster address")
    ap.add_argument("--target-height", type=int, default=1080)
    ap.add_argument("--max-scale", type=float, default=4.0)
    ap.add_argument("--segment-seconds", type=float, default=300.0)
    ap.add_argument("--engine", default="rmm", choices=("rmm", "upscale"))
    ap.add_argument("--weights", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--jobs", type=int, default=0, help="max tasks in flight (0: the cluster's capacity)")
    args = ap.parse_args(argv)
    try:
        manifest = write_manifest(args.archive, args.out, args.target_height, args.max_scale)
        opts = RestoreOptions(weights=args.weights, device=args.device)
        cfg = BatchConfig(out_dir=args.out, jobs=args.jobs, ray=args.address, segment_seconds=args.segment_seconds,
                          engine=args.engine, options=opts)
        outcome = run_batch([str(manifest)], cfg)
    except UserError as e:
        print(f"ray_archive: error: {e}", file=sys.stderr)
        return 2
    print(f"report: {outcome.report_path}")
    return 1 if outcome.failed else 0


if __name__ == "__main__":
    sys.exit(main())
