"""The batch state file: DIR/batch-state.json, one record per job, written atomically.

Only the coordinating process writes it (workers return results), after every change of a
job's status, through a temp file + fsync + rename: a kill at any moment leaves either the old
or the new state, never a torn file.

Job status: "pending" -> "running" -> "done" | "failed". A job is resumed when it is not done,
when its options changed (`options_hash`), or when its output no longer verifies.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmmvideo.video.safe_output import atomic_output

if TYPE_CHECKING:
    from rmmvideo.video.options import RestoreOptions

STATE_NAME = "batch-state.json"
WORK_DIR = ".rmmbatch"  # segments and track tables of unfinished jobs, inside DIR
STATUSES = ("pending", "running", "done", "failed")


# RestoreOptions fields set per process, not per file: they never change an output
# (quiet: workers are always quiet; threads: torch threads per worker, see backends.py)
PER_RUN_OPTIONS = ("quiet", "threads")


def options_hash(engine: str, options: RestoreOptions) -> str:
    """Short stable hash of the engine and the options that shape the output.

    From ``dataclasses.asdict(options)``: the fields that differ from ``RestoreOptions()``'s
    defaults, less `PER_RUN_OPTIONS`. Fields at their default are left out, so a new option
    added to RestoreOptions (its default keeping the old output) does not redo finished files,
    and state files written when batch options were a dict of the flags given keep matching.
    """
    from rmmvideo.video.options import RestoreOptions

    defaults = asdict(RestoreOptions())
    shaping = {}
    for k, v in asdict(options).items():
        if k in PER_RUN_OPTIONS or v == defaults[k]:
            continue
        if isinstance(v, int) and not isinstance(v, bool) and isinstance(defaults[k], (float, str)):
            v = float(v)  # a number field (scale, strength): 4 and 4.0 are one output
        if k == "strength" and isinstance(v, (tuple, list)):  # (luma, chroma): (1, 1.0) is strength 1.0
            v = [float(x) for x in v]
            v = v[0] if v[0] == v[1] else v
        shaping[k] = v
    blob = json.dumps({"engine": engine, **shaping}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()[:16]


@dataclass
class SegmentRecord:
    status: str = "pending"
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    faces: int = 0
    damage: str = ""  # damaged input kept (on_damage="warn"): problems and spans


@dataclass
class JobRecord:
    """What the state file keeps per job (key = output path relative to DIR)."""

    input: str
    output: str
    status: str = "pending"
    error: str | None = None
    options_hash: str = ""
    frames: int = 0  # frames written (done) / expected (after planning)
    faces: int = 0
    tracks: int = 0
    seconds: float = 0.0  # wall time of the work, summed over attempts
    started: float | None = None  # unix time of the last start
    finished: float | None = None
    attempts: int = 0
    input_facts: dict[str, Any] | None = None  # frames, start, end, tol, size, mtime_ns of the input
    segments: list[dict[str, Any]] = field(default_factory=list)  # planned Segment dicts
    segment_status: dict[str, SegmentRecord] = field(default_factory=dict)  # str(index) -> record
    damage: str = ""  # done from a damaged input (on_damage="warn"): problems and damaged spans

    @staticmethod
    def from_dict(d: dict[str, Any]) -> JobRecord:
        d = dict(d)
        seg = {k: SegmentRecord(**v) for k, v in (d.pop("segment_status", None) or {}).items()}
        known = {k: v for k, v in d.items() if k in JobRecord.__dataclass_fields__}
        return JobRecord(**known, segment_status=seg)


class BatchState:
    """In-memory state plus atomic save to `path`.

    Example:
        st = BatchState.load(out_dir / STATE_NAME)
        rec = st.job("a/film.mp4", input="in/a/film.mp4", output="out/a/film.mp4")
        rec.status = "running"; st.save()
    """

    def __init__(self, path: Path, jobs: dict[str, JobRecord] | None = None) -> None:
        self.path = Path(path)
        self.jobs: dict[str, JobRecord] = jobs or {}

    @staticmethod
    def load(path: str | os.PathLike) -> BatchState:
        """Read the state file; a missing file gives an empty state."""
        p = Path(path)
        if not p.exists():
            return BatchState(p)
        data = json.loads(p.read_text(encoding="utf-8"))
        jobs = {k: JobRecord.from_dict(v) for k, v in data.get("jobs", {}).items()}
        return BatchState(p, jobs)

    def job(self, key: str, input: str, output: str) -> JobRecord:
        """The record for `key`, created as pending if new."""
        rec = self.jobs.get(key)
        if rec is None:
            rec = self.jobs[key] = JobRecord(input=input, output=output)
        rec.input, rec.output = input, output
        return rec

    def to_dict(self) -> dict[str, Any]:
        return {"version": 1, "updated": time.time(), "jobs": {k: asdict(v) for k, v in self.jobs.items()}}

    def save(self) -> None:
        """Write atomically: temp file in the same folder, fsync, rename."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(self.path) as tmp, open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
