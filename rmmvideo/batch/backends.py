"""Execution backends: where tasks run. Both hand back concurrent.futures.Future objects.

LocalBackend: a ProcessPoolExecutor with `jobs` workers, each limited to `threads` = cores // jobs
threads (or `--threads` when given), so --jobs 1 and --jobs 2 use the same cores. Workers are started by a fork server
(Linux) that imported torch once: as safe as spawn (workers never fork the coordinator with its
threads) but a worker starts in milliseconds instead of paying torch's import each time;
spawn elsewhere.
RayBackend (ray_backend.py): one Ray task per unit of work, same Future interface.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import queue
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import TYPE_CHECKING, Protocol

from rmmvideo.batch.tasks import TaskSpec, init_worker, run_task, worker_env

if TYPE_CHECKING:
    from rmmvideo.video.options import RestoreOptions


def cpu_cores() -> int:
    """Cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def threads_per_worker(jobs: int, cores: int | None = None) -> int:
    return max(1, (cores or cpu_cores()) // max(1, jobs))


class Backend(Protocol):
    name: str
    capacity: int  # tasks the coordinator keeps in flight

    def submit(self, spec: TaskSpec) -> Future: ...
    def progress(self) -> list[tuple]: ...  # messages from workers since the last call
    def restart(self) -> None: ...  # after a worker died
    def shutdown(self, wait: bool = True) -> None: ...


PRELOAD = ["rmmvideo.batch.tasks", "torch", "rmmvideo.video.upscale"]


@contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of the block (child processes started in it
    inherit them; this process's environment is restored after)."""
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def worker_context(threads: int) -> mp.context.BaseContext:
    """forkserver with torch preloaded where available (Linux), else spawn.

    The fork server (one per coordinator process, reused by later batches) is started here with
    `worker_env(threads)`; spawned workers get the same variables from `init_worker`.
    """
    if "forkserver" in mp.get_all_start_methods():
        from multiprocessing import forkserver

        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(PRELOAD)
        with _environ(worker_env(threads)):
            forkserver.ensure_running()
        return ctx
    return mp.get_context("spawn")


class LocalBackend:
    """Worker processes on this machine."""

    name = "local"

    def __init__(self, jobs: int, threads: int | None = None) -> None:
        self.jobs = max(1, jobs)
        self.capacity = self.jobs
        self.threads = threads or threads_per_worker(self.jobs)
        self._ctx = worker_context(self.threads)
        self._sink = self._ctx.Queue()
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self.jobs,
            mp_context=self._ctx,
            initializer=init_worker,
            initargs=(self.threads, self._sink, os.getpid()),
        )

    def submit(self, spec: TaskSpec) -> Future:
        return self._pool.submit(run_task, spec)

    def progress(self) -> list[tuple]:
        out = []
        while True:
            try:
                out.append(self._sink.get_nowait())
            except queue.Empty:
                return out
            except (OSError, ValueError, EOFError):
                return out

    def restart(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._pool = self._new_pool()

    def shutdown(self, wait: bool = True) -> None:
        if not wait:  # interrupted: running tasks unwind (temporary outputs removed) and exit
            for proc in list((getattr(self._pool, "_processes", None) or {}).values()):
                if proc.is_alive():
                    proc.terminate()
        self._pool.shutdown(wait=wait, cancel_futures=True)
        self._sink.close()
        if wait:
            self._sink.join_thread()


def make_backend(jobs: int, ray: str | None, options: RestoreOptions) -> Backend:
    """LocalBackend, or RayBackend when `ray` is "auto" or an address. ``options.threads`` > 0
    sets the torch threads per worker (0: cores // jobs locally; see RayBackend)."""
    if ray:
        from rmmvideo.batch.ray_backend import RayBackend

        return RayBackend(ray, jobs or None, options)
    return LocalBackend(jobs or 1, options.threads or None)
