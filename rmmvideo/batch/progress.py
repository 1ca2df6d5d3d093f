"""Batch progress: overall (files, frames, ETA) and one status line per worker.

On a terminal (and without --quiet) tqdm bars are drawn: one overall bar and one per worker.
Otherwise plain lines are printed when a task starts or ends and when a file finishes.
File results (done / failed with the reason) are always printed as one line each.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO


def fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds != seconds or seconds == float("inf"):
        return "--:--:--"
    s = int(seconds)
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


@dataclass
class _Worker:
    slot: int
    label: str = ""
    frames: int = 0
    total: int = 0


class Progress:
    """Tracks totals and draws them. Frames count toward the total when their task ends (and
    live, from workers' messages, while it runs)."""

    def __init__(self, files: int, quiet: bool = False, out: TextIO | None = None) -> None:
        self.out = out or sys.stdout
        self.files_total = files
        self.files_done = 0
        self.frames_total = 0
        self.frames_done = 0  # of finished tasks
        self.live: dict[str, int] = {}  # task id -> frames so far
        self.task_total: dict[str, int] = {}
        self.workers: dict[int, _Worker] = {}  # pid -> worker
        self.task_pid: dict[str, int] = {}
        self.t0 = time.monotonic()
        self.bars = not quiet and self.out.isatty()
        self._tqdm = None
        self._wbars: dict[int, object] = {}
        if self.bars:
            from tqdm import tqdm

            self._tqdm = tqdm(total=0, unit="frame", desc="frames", position=0, file=self.out, dynamic_ncols=True)

    # -- totals
    def add_frames_total(self, n: int) -> None:
        self.frames_total += n
        if self._tqdm is not None:
            self._tqdm.total = self.frames_total
            self._tqdm.refresh()

    def done_frames(self) -> int:
        return self.frames_done + sum(self.live.values())

    def eta(self) -> float | None:
        done = self.done_frames()
        el = time.monotonic() - self.t0
        if done <= 0 or el <= 0:
            return None
        return max(0, self.frames_total - done) / (done / el)

    def overall(self) -> str:
        return (f"files {self.files_done}/{self.files_total}, frames {self.done_frames()}/{self.frames_total}, "
                f"ETA {fmt_eta(self.eta())}")

    # -- events
    def message(self, msg: tuple) -> None:
        """A worker message: ("start", task_id, pid, label) or ("frames", task_id, n)."""
        if msg[0] == "start":
            _, tid, pid, label = msg
            w = self.workers.get(pid)
            if w is None:
                w = self.workers[pid] = _Worker(slot=len(self.workers) + 1)
            w.label, w.frames, w.total = label, 0, self.task_total.get(tid, 0)
            self.task_pid[tid] = pid
            self.live[tid] = 0
            if self.bars:
                self._worker_bar(w)
            elif tid in self.task_total:  # render tasks (prepare/join are quick: reported if slow)
                self._line(f"[w{w.slot}] {label}: started")
        elif msg[0] == "frames":
            _, tid, n = msg
            if tid in self.live:
                self.live[tid] = n
                pid = self.task_pid.get(tid)
                if pid in self.workers:
                    self.workers[pid].frames = n
                    if self.bars:
                        self._worker_bar(self.workers[pid])
        self._refresh()

    def expect(self, task_id: str, frames: int) -> None:
        self.task_total[task_id] = frames

    def task_end(self, task_id: str, label: str, frames: int, seconds: float, ok: bool) -> None:
        self.live.pop(task_id, None)
        self.frames_done += frames
        pid = self.task_pid.pop(task_id, None)
        w = self.workers.get(pid) if pid is not None else None
        if w is not None:
            w.label, w.frames = "idle", 0
            if self.bars:
                self._worker_bar(w)
        if not self.bars and ok and (frames or seconds >= 1.0):
            who = f"[w{w.slot}] " if w else ""
            self._line(f"{who}{label}: {frames} frames in {seconds:.1f}s" if frames else f"{who}{label}: {seconds:.1f}s")
        self._refresh()

    def file_end(self, line: str) -> None:
        self.files_done += 1
        self._line(f"{line} | {self.overall()}")
        self._refresh()

    def file_failed(self, line: str) -> None:
        self.files_done += 1
        self._line(line)
        self._refresh()

    def note(self, line: str) -> None:
        self._line(line)

    # -- drawing
    def _line(self, text: str) -> None:
        if self._tqdm is not None:
            self._tqdm.write(text, file=self.out)
        else:
            print(text, file=self.out, flush=True)

    def _refresh(self) -> None:
        if self._tqdm is not None:
            self._tqdm.n = self.done_frames()
            self._tqdm.set_postfix_str(f"files {self.files_done}/{self.files_total}", refresh=False)
            self._tqdm.refresh()

    def _worker_bar(self, w: _Worker) -> None:
        from tqdm import tqdm

        bar = self._wbars.get(w.slot)
        if bar is None:
            bar = self._wbars[w.slot] = tqdm(total=0, position=w.slot, file=self.out, leave=False,
                                             bar_format="{desc}", dynamic_ncols=True)
        total = f"/{w.total}" if w.total else ""
        bar.set_description_str(f"  w{w.slot}: {w.label} {w.frames}{total} frames" if w.label != "idle"
                                else f"  w{w.slot}: idle")

    def close(self) -> None:
        for b in self._wbars.values():
            b.close()
        if self._tqdm is not None:
            self._tqdm.close()
