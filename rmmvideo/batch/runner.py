"""The batch coordinator: discover jobs, skip verified outputs, schedule tasks, keep the state.

One process (this one) owns the state file and the schedule; workers (local processes or Ray
tasks) run `tasks.run_task`. Per file the work is a small graph:

    prepare (scan, plan segments, analysis pass when segmented)
      -> render whole file            (one segment)          -> verify -> rename to output
      -> render segment 0..n-1 (parallel) -> join (packet copy) -> verify -> rename to output

Ready tasks are served in file order (a file's segments before the next file's), so outputs
complete early and work folders stay few. A failing task fails its file only; the batch goes on.

Example:
    cfg = BatchConfig(out_dir=Path("out"), jobs=2, engine="rmm", options=RestoreOptions(scale=2))
    outcome = run_batch(["archive/"], cfg)
    sys.exit(1 if outcome.failed else 0)
"""

from __future__ import annotations

import heapq
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from rmmvideo.batch.backends import Backend, make_backend
from rmmvideo.batch.discover import Job, discover
from rmmvideo.batch.media import verify_output
from rmmvideo.batch.progress import Progress
from rmmvideo.batch.report import FileResult, print_summary, write_report
from rmmvideo.batch.state import (
    STATE_NAME,
    WORK_DIR,
    BatchState,
    JobRecord,
    SegmentRecord,
    options_hash,
)
from rmmvideo.batch.tasks import TaskSpec, facts_of, segment_path
from rmmvideo.errors import UserError
from rmmvideo.video.archive import archive_note
from rmmvideo.video.options import RestoreOptions

MAX_CRASHES = 2  # a task whose worker process died this many times fails its file


@dataclass
class BatchConfig:
    """Options of one batch run (the CLI flags of `rmmvideo batch`).

    out_dir: DIR; jobs: worker processes (local) or max tasks in flight (Ray; 0 = cluster capacity);
    ray: None (local processes), "auto" or a Ray address; segment_seconds: target segment
    length for splitting long files (<= 0: never split); engine: "rmm" | "upscale";
    options: the restoration options of every file (those of `rmmvideo run`; a CSV manifest's
    option cells override fields per file). Its per-run fields: ``threads`` > 0 is the torch
    threads of each worker (0: cores // jobs, see backends), ``quiet`` is ignored (workers are
    always quiet); quiet: plain status lines instead of progress bars.
    """

    out_dir: Path
    jobs: int = 1
    ray: str | None = None
    segment_seconds: float = 300.0
    engine: str = "rmm"
    options: RestoreOptions = field(default_factory=RestoreOptions)
    quiet: bool = False


@dataclass
class BatchOutcome:
    results: list[FileResult]
    report_path: Path
    stats: dict[str, Any]

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.results)


@dataclass
class _Live:
    index: int
    job: Job
    rec: JobRecord
    opts: RestoreOptions
    work: Path
    failed: bool = False
    pending: set[int] = field(default_factory=set)
    seconds: float = 0.0


def error_line(e: BaseException) -> str:
    """One line describing a task failure (the user's exception inside a Ray error)."""
    from rmmvideo.batch.ray_backend import error_cause

    e = error_cause(e)
    if isinstance(e, UserError):
        msg = str(e)
    else:
        text = str(e).strip().splitlines()
        msg = f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")
    return msg


def work_dir(out_dir: Path, key: str) -> Path:
    import hashlib

    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in Path(key).stem)[:40]
    return out_dir / WORK_DIR / f"{safe}-{hashlib.sha1(key.encode()).hexdigest()[:10]}"


def _clean_partials(output: Path) -> None:
    """Remove temp files a killed run left beside `output` (they never have the final name)."""
    if output.parent.is_dir():
        for p in output.parent.glob(f".{output.stem}.partial*{output.suffix}"):
            p.unlink(missing_ok=True)


def _verified(job: Job, rec: JobRecord) -> str | None:
    """None if job.output is a finished, valid rendering of job.input; else why not."""
    if not job.output.is_file():
        return "no output yet"
    facts = rec.input_facts
    try:
        st = job.input.stat()
        if not facts or facts.get("size") != st.st_size or facts.get("mtime_ns") != st.st_mtime_ns:
            facts = rec.input_facts = facts_of(job.input)
    except (OSError, UserError) as e:
        return f"cannot read the input: {e}"
    if rec.damage:  # a damaged input kept: the output holds the frames that could be decoded
        from rmmvideo.batch.media import scan_video

        try:
            got = scan_video(job.output).frames
        except UserError as e:
            return str(e)
        return None if rec.status == "done" and got == rec.frames else f"{got} frames, {rec.frames} recorded"
    return verify_output(job.output, facts["frames"], facts["start"], facts["end"], facts["tol"])


def _input_changed(job: Job, rec: JobRecord) -> bool:
    """The input's size or mtime differ from when its facts were recorded."""
    facts = rec.input_facts
    if not facts:
        return False
    try:
        st = job.input.stat()
    except OSError:
        return True
    return facts.get("size") != st.st_size or facts.get("mtime_ns") != st.st_mtime_ns


class _DirLock:
    """An exclusive lock on DIR for the coordinator's lifetime (released by the OS on kill -9):
    two batches writing one state file would undo each other's records."""

    def __init__(self, out_dir: Path) -> None:
        self.path = out_dir / ".batch.lock"
        self.fh = None

    def __enter__(self) -> _DirLock:
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return self
        self.fh = open(self.path, "a+")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.fh.close()
            raise UserError(f"another rmmvideo batch is running on {self.path.parent}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fh is not None:
            self.fh.close()


def run_batch(inputs: list[str], config: BatchConfig, out: TextIO | None = None) -> BatchOutcome:
    """Run (or resume) a batch; returns per-file results. See the module docstring.

    Raises UserError (before any work) for bad options, missing weights, no inputs, or another
    batch running on the same DIR. Local workers are started by multiprocessing (fork server or
    spawn): a script calling this must do so under ``if __name__ == "__main__":``.
    """
    from rmmvideo.batch.engine import check_options

    check_options(config.engine, config.options)  # bad flags or missing weights: stop before any work
    out_dir = Path(config.out_dir)
    jobs = discover(inputs, out_dir)
    if not jobs:
        raise UserError("no video files found in the inputs")
    out_dir.mkdir(parents=True, exist_ok=True)
    with _DirLock(out_dir):
        return _run(jobs, config, out_dir, out or sys.stdout)


def _run(jobs: list[Job], config: BatchConfig, out_dir: Path, out: TextIO) -> BatchOutcome:
    run = _Coordinator(jobs, config, out_dir, out)
    run.plan()
    run.execute()
    return run.outcome()


class _Coordinator:
    """One batch run: the state file, each unfinished file's live record, the ready tasks (a heap
    in file order) and the results. `plan` decides per file (skip, fail, resume), `execute`
    schedules tasks on the backend and records their results, `outcome` writes the report."""

    def __init__(self, jobs: list[Job], config: BatchConfig, out_dir: Path, out: TextIO) -> None:
        self.jobs, self.config, self.out_dir, self.out = jobs, config, out_dir, out
        self.state = BatchState.load(out_dir / STATE_NAME)
        self.results: dict[str, FileResult] = {}
        self.lives: dict[str, _Live] = {}
        self.progress: Progress  # drawn from the end of `plan` (its clock starts there)
        self.ready: list[tuple[int, int, TaskSpec]] = []
        self.seq = 0
        self.crashes: dict[str, int] = {}
        self.overheads: list[float] = []  # submission -> result minus the task's own run time
        self.task_seconds: list[float] = []
        self.announce: list[Callable[[], None]] = []  # file-level lines, printed after the task's own line
        self.backend: Backend | None = None
        self.t_start = time.monotonic()

    # ------------------------------------------------------------ per file, before any work

    def plan(self) -> None:
        """Skip verified outputs, fail known-bad inputs, reset what changed, queue the rest."""
        from rmmvideo.batch.engine import check_options

        config, state = self.config, self.state
        for i, job in enumerate(self.jobs):
            opts = config.options
            rec = state.job(job.key, str(job.input), str(job.output))
            _clean_partials(job.output)
            work = work_dir(self.out_dir, job.key)
            if job.error is None and job.options:
                try:  # a bad per-file option (manifest cell) fails that file only
                    opts = replace(config.options, **job.options)
                    check_options(config.engine, opts)
                except (UserError, ValueError, TypeError) as e:
                    job.error = f"bad options {job.options}: {e}"
            h = options_hash(config.engine, opts)
            if job.error:
                rec.status, rec.error = "failed", job.error
                self.results[job.key] = FileResult(str(job.input), str(job.output), "failed", error=job.error)
                continue
            changed = _input_changed(job, rec)  # before _verified refreshes the cached facts
            if rec.options_hash == h and not changed and _verified(job, rec) is None:
                rec.status, rec.error = "done", None
                self.results[job.key] = FileResult(str(job.input), str(job.output), "skipped", rec.frames,
                                                   rec.faces, rec.tracks, round(rec.seconds, 2),
                                                   damage=rec.damage or None)
                shutil.rmtree(work, ignore_errors=True)
                continue
            if rec.options_hash != h or changed:  # nothing of an earlier attempt is reusable
                rec.segments, rec.segment_status, rec.input_facts = [], {}, None
                shutil.rmtree(work, ignore_errors=True)
            rec.options_hash, rec.status, rec.error, rec.damage = h, "pending", None, ""
            self.lives[job.key] = _Live(i, job, rec, opts, work)
        state.save()
        self.progress = Progress(len(self.jobs), quiet=config.quiet, out=self.out)
        self.progress.files_done = len(self.results)
        for r in self.results.values():
            if r.status == "failed":
                self.progress.note(f"FAILED {r.input}: {r.error}")
        self.t_start = time.monotonic()
        for live in self.lives.values():
            self.push(live, "prepare", label=f"{live.job.key} prepare")

    # ------------------------------------------------------------ the task graph of one file

    def push(self, live: _Live, kind: str, *, segment: dict | None = None, label: str = "") -> None:
        """Queue a task of `live`'s file (served in file order)."""
        self.seq += 1
        job = live.job
        tid = f"{live.index}:{kind}:{segment['index'] if segment else ''}"
        spec = TaskSpec(
            task_id=tid, kind=kind, key=job.key, engine=self.config.engine, input=str(job.input),
            output=str(job.output), work=str(live.work), options=live.opts,
            segment_seconds=self.config.segment_seconds, segment=segment, segments=list(live.rec.segments),
            facts=None if kind == "join" and _segments_damage(live.rec) else live.rec.input_facts,
            label=label or f"{job.key} {kind}",
        )
        if segment is not None:
            self.progress.expect(tid, int(segment["frames"]))
        elif kind == "render" and live.rec.input_facts:
            self.progress.expect(tid, int(live.rec.input_facts["frames"]))
        heapq.heappush(self.ready, (live.index, self.seq, spec))

    def fail(self, live: _Live, reason: str) -> None:
        if live.failed:
            return
        live.failed = True
        rec = live.rec
        rec.status, rec.error, rec.finished = "failed", reason, time.time()
        rec.seconds += live.seconds
        self.results[live.job.key] = FileResult(str(live.job.input), str(live.job.output), "failed",
                                                error=reason, seconds=round(live.seconds, 2))
        self.state.save()  # recorded before it is announced
        self.announce.append(lambda: self.progress.file_failed(f"FAILED {live.job.input}: {reason}"))

    def finish(self, live: _Live, frames: int, faces: int, tracks: int, damage: str = "") -> None:
        rec = live.rec
        damage = damage or rec.damage  # the render's own report, else what the prepare scan saw
        rec.status, rec.error, rec.finished = "done", None, time.time()
        rec.frames, rec.faces, rec.tracks, rec.damage = frames, faces, tracks, damage
        rec.seconds += live.seconds
        rec.segment_status = {}  # done: the segments are deleted with the work folder
        shutil.rmtree(live.work, ignore_errors=True)
        archive = (rec.input_facts or {}).get("archive")
        self.results[live.job.key] = FileResult(str(live.job.input), str(live.job.output), "done", frames, faces,
                                                tracks, round(live.seconds, 2), damage=damage or None,
                                                archive=archive)
        self.state.save()  # recorded before it is announced
        line = f"done {live.job.input} -> {live.job.output} ({frames} frames, {live.seconds:.1f}s)"
        if damage:
            line += f"; damaged input, every decodable frame kept: {damage}"
        if archive_note(archive):
            line += f"; {archive_note(archive)}"
        self.announce.append(lambda: self.progress.file_end(line))

    def on_prepared(self, live: _Live, res: dict[str, Any]) -> None:
        rec = live.rec
        rec.input_facts = res["facts"]
        rec.damage = str(res.get("damage") or "")  # a file cut short (its index lists more frames)
        segs = res["segments"]
        if rec.segments != segs:
            rec.segment_status = {}
        rec.segments = segs
        if len(segs) > 1:
            rec.faces, rec.tracks = int(res["faces"]), int(res["tracks"])
        self.progress.add_frames_total(int(rec.input_facts["frames"]))
        if len(segs) == 1:
            self.push(live, "render", label=live.job.key)
            return
        suffix = live.job.output.suffix
        for s in segs:
            i = int(s["index"])
            sr = rec.segment_status.get(str(i))
            p = segment_path(live.work, i, suffix)
            if sr is not None and sr.status == "done" and p.is_file() and _segment_ok(p, int(s["frames"])):
                self.progress.frames_done += int(s["frames"])  # reused from an earlier run
                continue
            rec.segment_status[str(i)] = SegmentRecord()
            live.pending.add(i)
            self.push(live, "render", segment=s, label=f"{live.job.key} seg {i + 1}/{len(segs)}")
        if not live.pending:
            self.push(live, "join", label=f"{live.job.key} join")

    def on_done(self, live: _Live, spec: TaskSpec, res: dict[str, Any]) -> None:
        rec = live.rec
        if spec.kind == "prepare":
            self.on_prepared(live, res)
        elif spec.kind == "render" and spec.segment is None:
            self.finish(live, int(res["frames"]), int(res["faces"]), int(res["tracks"]), str(res.get("damage") or ""))
        elif spec.kind == "render":
            i = int(spec.segment["index"])
            rec.segment_status[str(i)] = SegmentRecord("done", int(res["frames"]), round(res["seconds"], 3),
                                                        faces=int(res.get("faces", 0)),
                                                        damage=str(res.get("damage") or ""))
            live.pending.discard(i)
            if not live.pending:
                self.push(live, "join", label=f"{live.job.key} join")
        elif spec.kind == "join":
            # faces: restored in the segments (earlier runs' included); tracks: from the analysis
            # pass (segments would count a track crossing a cut twice)
            faces = sum(r.faces for r in rec.segment_status.values())
            self.finish(live, int(res["frames"]), faces, rec.tracks, _segments_damage(rec))

    # ------------------------------------------------------------ scheduling

    def execute(self) -> None:
        """Run the queued tasks on the backend until none is left (each result recorded in the
        state file before it is announced); the backend is shut down however this ends."""
        config, state, progress = self.config, self.state, self.progress
        backend = self.backend = make_backend(config.jobs, config.ray, config.options) if self.lives else None
        inflight: dict[Future, tuple[_Live, TaskSpec, float, int]] = {}
        generation = 0
        interrupted = False
        try:
            while backend is not None and (self.ready or inflight):
                while self.ready and len(inflight) < backend.capacity:
                    _, _, spec = heapq.heappop(self.ready)
                    live = self.lives[spec.key]
                    if live.failed:
                        continue
                    inflight[backend.submit(spec)] = (live, spec, time.monotonic(), generation)
                    if live.rec.status != "running":
                        live.rec.status, live.rec.started = "running", time.time()
                        live.rec.attempts += 1
                        state.save()
                if not inflight:
                    continue
                done, _ = wait(list(inflight), timeout=0.5, return_when=FIRST_COMPLETED)
                for msg in backend.progress():
                    progress.message(msg)
                changed = False
                for fut in done:
                    live, spec, t_sub, gen = inflight.pop(fut)
                    try:
                        res = fut.result()
                    except BrokenProcessPool:
                        if gen == generation:
                            backend.restart()
                            generation += 1
                        self.crashes[spec.task_id] = self.crashes.get(spec.task_id, 0) + 1
                        progress.task_end(spec.task_id, spec.label, 0, 0.0, ok=False)
                        if self.crashes[spec.task_id] >= MAX_CRASHES:
                            self.fail(live, f"worker process died while running {spec.label} "
                                            "(killed or out of memory)")
                        else:
                            heapq.heappush(self.ready, (live.index, 0, spec))
                        changed = True
                        continue
                    except Exception as e:  # noqa: BLE001 - isolate: this file fails, the batch goes on
                        self.fail(live, error_line(e))
                        progress.task_end(spec.task_id, spec.label, 0, 0.0, ok=False)
                        continue
                    wall = time.monotonic() - t_sub
                    self.overheads.append(max(0.0, wall - float(res["seconds"])))
                    self.task_seconds.append(float(res["seconds"]))
                    live.seconds += float(res["seconds"])
                    frames = int(res.get("frames", 0)) if spec.kind == "render" else 0
                    if not live.failed:
                        self.on_done(live, spec, res)
                    state.save()  # recorded before it is announced
                    progress.task_end(spec.task_id, spec.label, frames, float(res["seconds"]), ok=True)
                if changed:
                    state.save()
                for say in self.announce:
                    say()
                self.announce.clear()
        except KeyboardInterrupt:
            interrupted = True
            raise
        finally:
            if backend is not None:
                # interrupted: do not wait for running tasks (workers exit with this process)
                backend.shutdown(wait=not interrupted)
            state.save()
            progress.close()

    def outcome(self) -> BatchOutcome:
        """Results in input order, run statistics, report.json and the printed summary."""
        config, overheads = self.config, self.overheads
        wall = time.monotonic() - self.t_start
        ordered = [self.results[j.key] for j in self.jobs if j.key in self.results]
        frames_done = sum(r.frames for r in ordered if r.status == "done")
        stats = {
            "backend": self.backend.name if self.backend is not None else "none",
            "jobs": config.jobs,
            "threads_per_worker": getattr(self.backend, "threads", None),
            "engine": config.engine,
            "segment_seconds": config.segment_seconds,
            "wall_seconds": round(wall, 3),
            "frames_per_second": round(frames_done / wall, 3) if wall > 0 else None,
            "tasks": len(self.task_seconds),
            "task_seconds": round(sum(self.task_seconds), 3),
            # submission -> result minus the task's own run time: scheduling, transfer, worker start-up
            "overhead_per_task_seconds": round(sum(overheads) / len(overheads), 4) if overheads else None,
            "overhead_per_task_median_seconds": round(sorted(overheads)[len(overheads) // 2], 4) if overheads else None,
        }
        report = write_report(self.out_dir, ordered, {"stats": stats})
        print_summary(ordered, self.out)
        return BatchOutcome(ordered, report, stats)


def _segments_damage(rec: JobRecord) -> str:
    """The damage the job's segments reported (each distinct line once), or ""."""
    return " | ".join(dict.fromkeys(r.damage for r in rec.segment_status.values() if r.damage))


def _segment_ok(path: Path, frames: int) -> bool:
    from rmmvideo.batch.media import scan_video

    try:
        return scan_video(path).frames == frames
    except UserError:
        return False
