"""Benchmark `rmmvideo batch`: throughput of --jobs 1 vs --jobs 2 (same cores), Ray's overhead.

    python pipelines/bench_batch.py [--engine upscale|rmm] [--frames 60] [--shrink 0.5] [--scale 2]
                                    [--ray] [--json results.json]

Inputs: the first `--frames` frames of every clip in ../shared/data/videos, shrunk by `--shrink`
(made with the I/O layer in a temp folder), restored at `--scale`. Each configuration runs on a
fresh output folder:
    local --jobs 1   (1 worker x all cores' threads)
    local --jobs 2   (2 workers x half the threads each: the same cores)
    ray   (ray.init(num_cpus=cores), one task per unit of work)      with --ray
Reported: wall time, frames/s, the jobs-2/jobs-1 throughput ratio, and per-task overhead
(time from submission to result minus the time the task ran) for each backend. Each
configuration first runs one file into a throw-away folder (worker start-up), then is measured.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from rmmvideo.batch.backends import cpu_cores
from rmmvideo.batch.runner import BatchConfig, run_batch
from rmmvideo.video.options import RestoreOptions

VIDEOS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "videos"


def make_inputs(folder: Path, frames: int, shrink: float) -> list[Path]:
    from rmmvideo.video.io import transcode_upscale

    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for clip in sorted(VIDEOS.glob("*.mp4")):
        dst = folder / clip.name
        transcode_upscale(clip, dst, shrink, max_frames=frames, preset="veryfast")
        out.append(dst)
    return out


def run_one(name: str, inputs: list[Path], out: Path, **cfg) -> dict:
    # warm-up on one file into a throw-away folder: worker start-up (fork server importing torch,
    # Ray workers importing rmmvideo) is paid once per batch, not per file; measure steady state
    run_batch([str(inputs[0])], BatchConfig(out_dir=out.with_name(out.name + "_warm"), quiet=True, **cfg),
              out=io.StringIO())
    t0 = time.perf_counter()
    outcome = run_batch([str(p) for p in inputs], BatchConfig(out_dir=out, quiet=True, **cfg), out=io.StringIO())
    wall = time.perf_counter() - t0
    frames = sum(r.frames for r in outcome.results if r.status == "done")
    failed = [f"{r.input}: {r.error}" for r in outcome.results if r.status == "failed"]
    row = {
        "config": name, "wall_s": round(wall, 2), "frames": frames, "fps": round(frames / wall, 2),
        "tasks": outcome.stats["tasks"], "overhead_per_task_s": outcome.stats["overhead_per_task_seconds"],
        "overhead_per_task_median_s": outcome.stats["overhead_per_task_median_seconds"],
        "threads_per_worker": outcome.stats["threads_per_worker"], "failed": failed,
    }
    print(f"{name:<10} wall {row['wall_s']:>7.2f}s  {frames} frames  {row['fps']:>7.2f} fps  "
          f"{row['tasks']} tasks  overhead/task mean {row['overhead_per_task_s']}s "
          f"median {row['overhead_per_task_median_s']}s", flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--engine", default="upscale", choices=("upscale", "rmm"))
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--shrink", type=float, default=0.5)
    ap.add_argument("--scale", type=float, default=2.0)
    ap.add_argument("--preset", default="veryfast")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--ray", action="store_true", help="also run on a local Ray instance")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    if not VIDEOS.is_dir():
        print(f"shared clips not found at {VIDEOS}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        inputs = make_inputs(tmp / "in", args.frames, args.shrink)
        opts = RestoreOptions(scale=args.scale, preset=args.preset, weights=args.weights)
        common = dict(engine=args.engine, options=opts, segment_seconds=0.0)
        rows = [
            run_one("jobs=1", inputs, tmp / "j1", jobs=1, **common),
            run_one("jobs=2", inputs, tmp / "j2", jobs=2, **common),
        ]
        if args.ray:
            import ray

            t0 = time.perf_counter()
            ray_tmp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: socket paths are limited
            ray.init(num_cpus=cpu_cores(), _temp_dir=str(ray_tmp), include_dashboard=False, log_to_driver=False)
            init_s = time.perf_counter() - t0
            try:
                row = run_one("ray", inputs, tmp / "ray", jobs=0, ray="auto", **common)
                row["ray_init_s"] = round(init_s, 2)
                rows.append(row)
            finally:
                ray.shutdown()
                shutil.rmtree(ray_tmp, ignore_errors=True)
        result = {
            "cores": cpu_cores(), "engine": args.engine, "files": len(inputs), "frames_per_file": args.frames,
            "rows": rows, "jobs2_over_jobs1_throughput": round(rows[1]["fps"] / rows[0]["fps"], 3),
        }
        if args.ray:
            result["ray_over_jobs2_throughput"] = round(rows[2]["fps"] / rows[1]["fps"], 3)
        print(json.dumps({k: v for k, v in result.items() if k != "rows"}))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=1))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
