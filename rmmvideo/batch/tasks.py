"""Work units the batch hands to workers (local processes or Ray tasks): prepare, render, join.

`run_task(spec)` is the single entry point a backend calls; it is a top-level function of a
plain module so it pickles by name for spawn and for Ray. Workers never touch the state file:
they write files under the job's work folder (and the final output, by rename, once verified)
and return a small dict.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rmmvideo.batch import engine as eng
from rmmvideo.batch.media import (
    VideoScan,
    check_complete,
    frame_duration,
    scan_video,
    verify_output,
)
from rmmvideo.batch.segments import Segment, plan_segments
from rmmvideo.errors import TERMINATION_SIGNALS, Terminated, forget_termination, stop_for
from rmmvideo.video.archive import archive_facts
from rmmvideo.video.safe_output import atomic_output

if TYPE_CHECKING:
    from rmmvideo.video.options import RestoreOptions

TABLE_NAME = "tracks.table"

# Where progress messages go in this worker: a queue-like object with put(), set by the local
# pool's initializer or passed in by the Ray backend. None: no progress reporting.
_SINK: Any = None
_BUSY = threading.Event()  # a task is running in this worker


@dataclass(frozen=True)
class TaskSpec:
    """One unit of work. kind: "prepare" | "render" | "join".

    prepare: scan the input, plan segments, run the analysis pass when there is more than one.
    render:  `segment` None -> whole file with audio into `output`; else that segment, video only.
    join:    packet-copy the job's segments + the input's audio into `output`.
    """

    task_id: str
    kind: str
    key: str
    engine: str
    input: str
    output: str
    work: str
    options: RestoreOptions  # a picklable dataclass: sent as is to local workers and Ray tasks
    segment_seconds: float = 0.0
    segment: dict[str, Any] | None = None
    segments: list[dict[str, Any]] = field(default_factory=list)
    facts: dict[str, Any] | None = None
    label: str = ""


def worker_env(threads: int) -> dict[str, str]:
    """Environment for worker processes (a user's own settings win).

    OMP_WAIT_POLICY=PASSIVE: OpenMP threads that spin at every barrier while encoder/decoder
    threads (or other jobs) hold the cores made a 2-thread worker 7x slower than a 1-thread one
    on this 2-core machine (24 frames: 15.7 s vs 2.3 s); passive waiting brought it to 3.8 s.
    Thread counts: BLAS/OpenMP pools are sized when numpy/torch load, i.e. in the fork server.
    """
    env = {"OMP_WAIT_POLICY": "PASSIVE"}
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    return {k: v for k, v in env.items() if k not in os.environ}


def init_worker(threads: int | None, sink: Any, coordinator: int | None = None) -> None:
    """Per-process setup of a local pool worker: thread count for torch/BLAS, progress sink,
    exit with the coordinator (pid)."""
    global _SINK
    _SINK = sink
    _stop_on_termination()
    if coordinator is not None:
        watch_coordinator(coordinator)
    if threads:  # spawned workers (no fork server): numpy/torch are not loaded yet, env applies
        os.environ.update(worker_env(threads))
        _set_threads(threads)


def _stop_on_termination() -> None:
    """SIGTERM/SIGHUP in a pool worker: a running task unwinds (its temporary outputs are
    removed) and the worker exits with 128 + n (`run_task`); an idle worker exits at once."""
    if threading.current_thread() is not threading.main_thread():
        return
    forget_termination()

    def handler(signum: int, _frame: object) -> None:
        if _BUSY.is_set():
            stop_for(signum)  # recorded too: a swallowed raise still stops the task's writes
        os._exit(128 + signum)

    for s in TERMINATION_SIGNALS:
        signal.signal(s, handler)


def _coordinator_gone() -> None:
    """Stop this worker: a running task first unwinds (SIGTERM to itself, up to 30 s)."""
    if _BUSY.is_set():
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(300):
            if not _BUSY.is_set():
                break
            time.sleep(0.1)
    os._exit(70)


def watch_coordinator(pid: int) -> None:
    """Exit this worker as soon as process `pid` (the coordinator) is gone, e.g. after kill -9.

    An idle pool worker would otherwise wait for work forever (it holds its own queue's write
    end, so it never sees end-of-file), and a busy one would keep writing files.
    """
    import threading

    def wait_pidfd(fd: int) -> None:
        import select

        p = select.poll()
        p.register(fd, select.POLLIN)
        while not p.poll(None):
            pass
        _coordinator_gone()

    def poll_pid() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                _coordinator_gone()
            except PermissionError:
                pass

    try:
        target, args = wait_pidfd, (os.pidfd_open(pid),)
    except (AttributeError, OSError):  # not Linux >= 5.3, or the coordinator is already gone
        target, args = poll_pid, ()
    threading.Thread(target=target, args=args, name="rmmvideo-watch", daemon=True).start()


def _set_threads(threads: int | None) -> None:
    """torch intra-op threads for this worker process (both engines use torch)."""
    if not threads:
        return
    import torch

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


class _Reporter:
    """Throttled progress messages: ("start", id, pid, label), ("frames", id, n)."""

    def __init__(self, spec: TaskSpec, sink: Any) -> None:
        self.spec, self.sink, self.last = spec, sink, 0.0
        self._put(("start", spec.task_id, os.getpid(), spec.label))

    def _put(self, msg: tuple) -> None:
        if self.sink is None:
            return
        try:
            self.sink.put_nowait(msg)
        except Exception:  # noqa: BLE001 - progress is best effort, never fails a job
            pass

    def frames(self, n: int, *_: Any, **__: Any) -> None:
        """Frames written so far by this task (extra arguments, e.g. a total, are ignored)."""
        now = time.monotonic()
        if now - self.last >= 0.5:
            self.last = now
            self._put(("frames", self.spec.task_id, n))


def facts_of(path: Path, scan: VideoScan | None = None) -> dict[str, Any]:
    """Input facts used to verify outputs (cached in the state file with the input's size/mtime)."""
    scan = scan or scan_video(path)
    st = path.stat()
    return {
        "frames": scan.frames,
        "start": scan.start,
        "end": scan.end,
        "tol": max(frame_duration(scan), 1e-3),
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
    }


def segment_path(work: Path, index: int, suffix: str) -> Path:
    return work / f"seg-{index:05d}{suffix}"


def run_task(spec: TaskSpec, sink: Any = None, threads: int | None = None) -> dict[str, Any]:
    """Execute one task; returns {"seconds", "frames", "faces", "tracks", ...}. Raises on failure.

    `sink` and `threads` come with each task on Ray; a local pool worker got them once from
    `init_worker`.

    Stopped by SIGTERM/SIGHUP in a pool worker (`init_worker`): the task unwinds, removing its
    temporary outputs, and the worker process exits with 128 + n."""
    _BUSY.set()
    try:
        return _run_task(spec, sink, threads)
    except Terminated as e:
        os._exit(128 + e.signum)
    finally:
        _BUSY.clear()


def _run_task(spec: TaskSpec, sink: Any, threads: int | None) -> dict[str, Any]:
    _set_threads(threads)
    rep = _Reporter(spec, sink if sink is not None else _SINK)
    t0 = time.perf_counter()
    work = Path(spec.work)
    work.mkdir(parents=True, exist_ok=True)
    inp, out = Path(spec.input), Path(spec.output)
    res: dict[str, Any]
    if spec.kind == "prepare":
        scan = scan_video(inp)
        warn = spec.options.on_damage == "warn"
        cut = bool(scan.reported and scan.frames < scan.reported)
        if not warn:
            check_complete(scan)
        # a file cut short is rendered in one piece: its frames are known only by decoding them
        segs = plan_segments(scan, 0 if cut else spec.segment_seconds)
        damage = f"truncated: {scan.frames} of {scan.reported} video packets present" if cut else ""
        res = {"facts": facts_of(inp, scan), "segments": [s.to_dict() for s in segs], "frames": 0, "faces": 0,
               "tracks": 0, "damage": damage}
        if spec.engine == "rmm":  # what the restoration path does: interlacing, SAR, audio handling
            res["facts"]["archive"] = archive_facts(inp, out.suffix)
        if len(segs) > 1:
            table = work / TABLE_NAME
            a = eng.analyze_file(spec.engine, inp, table, spec.options)
            res.update(faces=a["faces"], tracks=a["tracks"])
    elif spec.kind == "render" and spec.segment is None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(out, [inp]) as tmp:  # renamed onto the output only once verified
            res = eng.restore_file(spec.engine, inp, tmp, spec.options, progress=rep.frames)
            # damaged input kept (on_damage="warn"): fewer frames than the input announces
            _verify(tmp, None if res.get("damage") else spec.facts)
    elif spec.kind == "render":
        seg = Segment.from_dict(spec.segment)
        dst = segment_path(work, seg.index, out.suffix)
        table = work / TABLE_NAME
        res = eng.render_segment(spec.engine, inp, dst, spec.options, table if table.exists() else None,
                                 seg.start_pts, seg.end_pts, progress=rep.frames)
        got = scan_video(dst).frames
        if got != seg.frames and not res.get("damage"):
            dst.unlink(missing_ok=True)
            raise RuntimeError(f"segment {seg.index} has {got} frames, expected {seg.frames}")
    elif spec.kind == "join":
        from rmmvideo.batch.join import join_segments

        paths = [segment_path(work, Segment.from_dict(s).index, out.suffix) for s in spec.segments]
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(out, [inp]) as tmp:
            n = join_segments(inp, paths, tmp)
            _verify(tmp, spec.facts)
        res = {"frames": n, "faces": 0, "tracks": 0}
    else:
        raise ValueError(f"unknown task kind {spec.kind!r}")
    res["seconds"] = time.perf_counter() - t0
    res["pid"] = os.getpid()
    return res


def _verify(tmp: Path, facts: dict[str, Any] | None) -> None:
    """RuntimeError if the rendered `tmp` does not match the input's facts (frames, start, end)."""
    if facts is not None:
        reason = verify_output(tmp, facts["frames"], facts["start"], facts["end"], facts["tol"])
        if reason is not None:
            raise RuntimeError(f"output check failed: {reason}")
