"""Batch restoration of many videos: resumable, segment-parallel, local processes or Ray.

    from rmmvideo.batch.runner import BatchConfig, run_batch
    outcome = run_batch(["archive/", "more.csv"], BatchConfig(out_dir=Path("out"), jobs=2))

Modules: discover (inputs -> jobs, mirrored output names), state (DIR/batch-state.json),
media (packet scans, output verification), segments (keyframe split), join (packet-copy join),
engine (what renders: the restoration pipeline or a plain upscale), tasks (worker side),
backends / ray_backend (where tasks run), progress, report, runner (the coordinator).
The CLI is `rmmvideo batch` (rmmvideo/cli/batch.py).
"""
