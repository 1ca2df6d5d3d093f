"""Ray backend: one Ray task per unit of work (prepare, each segment, join).

`--ray auto` calls `ray.init()` (a local instance, or the cluster named by RAY_ADDRESS);
any other value is passed as the address (e.g. "ray://head:10001"). When Ray is already
initialised in this process (a notebook, a test fixture) that instance is used and left running.
Each task asks for 1 CPU, and 1 GPU only when the cluster has GPUs and the device option is not
"cpu" (a GPU task on a machine without GPUs would stay pending forever). Torch threads per
task: `--threads` when given, else 1 (CPU tasks) or the cluster's CPUs per GPU (GPU tasks).
"""

from __future__ import annotations

import queue
from concurrent.futures import Future
from typing import TYPE_CHECKING

from rmmvideo.batch.tasks import TaskSpec, run_task
from rmmvideo.errors import UserError

if TYPE_CHECKING:
    from rmmvideo.video.options import RestoreOptions

INSTALL_HINT = "Ray is not installed: pip install 'rmmvideo[ray]' (or pip install ray)"


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError(INSTALL_HINT) from None
    return ray


class RayBackend:
    name = "ray"

    def __init__(self, address: str, jobs: int | None, options: RestoreOptions) -> None:
        ray = import_ray()
        self.ray = ray
        self._owns = False
        if not ray.is_initialized():
            try:
                ray.init(address=None if address == "auto" else address, log_to_driver=False,
                         include_dashboard=False)
            except (ConnectionError, ValueError, RuntimeError) as e:
                raise UserError(f"cannot start or reach Ray at {address!r}: {e}") from None
            self._owns = True
        res = ray.cluster_resources()
        cpus = int(res.get("CPU", 1))
        gpus = int(res.get("GPU", 0))
        use_gpu = gpus > 0 and options.device != "cpu"
        self.num_gpus = 1 if use_gpu else 0
        slots = gpus if use_gpu else cpus
        self.capacity = max(1, min(jobs, slots) if jobs else slots)
        self.threads = options.threads or (1 if not use_gpu else max(1, cpus // max(1, gpus)))
        self._remote = ray.remote(num_cpus=1, num_gpus=self.num_gpus, max_retries=1)(run_task)
        from ray.util.queue import Queue

        self._sink = Queue(actor_options={"num_cpus": 0})

    def submit(self, spec: TaskSpec) -> Future:
        ref = self._remote.remote(spec, self._sink, self.threads)
        return ref.future()

    def progress(self) -> list[tuple]:
        out: list[tuple] = []
        try:
            n = self._sink.qsize()
            if n:
                out = list(self._sink.get_nowait_batch(n))
        except (queue.Empty, Exception):  # noqa: BLE001 - progress is best effort
            pass
        return out

    def restart(self) -> None:
        pass  # Ray replaces dead workers itself

    def shutdown(self, wait: bool = True) -> None:
        try:
            self._sink.shutdown()
        except Exception:  # noqa: BLE001
            pass
        if self._owns:
            self.ray.shutdown()


def error_cause(e: BaseException) -> BaseException:
    """The user's exception inside a RayTaskError (or `e` itself)."""
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, BaseException) else e
