"""The ``ray`` executor: one Ray task per run, on a local Ray or a cluster; the driver alone writes the leaderboard.

``harness sweep --executor ray`` (``pip install 'pairsel-harness[ray]'``). Each
run is a Ray task asking for ``--cpus-per-run`` CPUs (that many torch threads)
and ``--gpus-per-run`` GPUs, at most ``--jobs`` at once. It uses an already
initialised Ray, else connects to ``--ray-address``, else ``$RAY_ADDRESS``, else
starts a local Ray. Its workers never open the leaderboard
(``$HARNESS_NO_LEADERBOARD`` is set in them and their tasks carry no database
path): each run journals its record and returns it, and the driver writes it
(:class:`harness.experiments.executors.DriverRecords`). Each run records its
Ray node and the GPUs Ray gave it. Ray is imported when the executor is made.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from harness import hookimpl
from harness.errors import UsageError
from harness.experiments.executors import (
    CANCEL_TIMEOUT_SECONDS,
    DriverRecords,
    Event,
    Executor,
    Placement,
    remote_worker_environment,
    set_threads,
    worker_registry,
)
from harness.experiments.sweep import RunTask, TaskResult


def _ray_task(task: RunTask, plugins: tuple[str, ...], threads: int) -> TaskResult:  # pragma: no cover - Ray
    """One run inside a Ray worker (``threads`` torch threads; the registry is built once per worker), tagged
    with where it ran: the Ray node and the GPUs Ray assigned (the host is a recorder tag already)."""
    import dataclasses

    import ray

    from harness.experiments.sweep import run_task

    set_threads(threads)
    context = ray.get_runtime_context()
    where = {"executor": "ray", "ray_node": context.get_node_id(),
             "gpu_ids": ",".join(str(g) for g in ray.get_gpu_ids()) or None}
    return run_task(dataclasses.replace(task, tags={**task.tags, **where}), worker_registry(plugins))


class RayExecutor(DriverRecords, Executor):
    """One Ray task per run (``cpus_per_run`` CPUs, ``gpus_per_run`` GPUs), at most ``jobs`` at once; the driver
    records every run (its workers never open the leaderboard)."""

    name = "ray"

    def __init__(self, *, jobs: int, plugins: Sequence[str] = (), on_event: Callable[[Event], None] | None = None,
                 placement: Placement | None = None):
        super().__init__(jobs=jobs, plugins=plugins, on_event=on_event, placement=placement)
        self.check_available()
        import ray

        self._ray = ray
        self._started_ray = False
        threads = self.placement.cpus_per_run
        env = remote_worker_environment(threads)
        if not ray.is_initialized():
            import logging

            address = self.placement.address or os.environ.get("RAY_ADDRESS") or None
            if address:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, log_to_driver=False,
                         logging_level=logging.WARNING)
            self._started_ray = True
        cpus = float(ray.cluster_resources().get("CPU", 0))
        if threads > cpus:
            self.close()
            raise UsageError(f"--cpus-per-run {threads}: the Ray cluster has {cpus:g} CPUs, so no run could ever be "
                             "placed; lower it")
        gpus = float(ray.cluster_resources().get("GPU", 0))
        if self.placement.gpus_per_run > gpus:
            self.close()
            raise UsageError(f"--gpus-per-run {self.placement.gpus_per_run:g}: the Ray cluster has {gpus:g} GPUs, "
                             "so no run could ever be placed; lower it, or connect to a cluster with GPUs "
                             "(--ray-address)")
        self._remote = ray.remote(num_cpus=threads, num_gpus=self.placement.gpus_per_run, max_retries=0,
                                  runtime_env={"env_vars": env})(_ray_task)
        self._pending: collections.deque[RunTask] = collections.deque()
        self._running: dict[Any, RunTask] = {}
        self._stopping = False

    @classmethod
    def check_available(cls) -> None:
        if importlib.util.find_spec("ray") is None:
            raise UsageError(
                "--executor ray needs Ray, which is not installed: pip install 'pairsel-harness[ray]' "
                "(or use --executor local)"
            )

    def submit(self, task: RunTask) -> None:
        """Queue ``task`` without its database path: the worker journals the run and the driver records it."""
        self._pending.append(self.detach(task))

    def _dispatch(self) -> None:
        while self._pending and len(self._running) < self.jobs and not self._stopping:
            task = self._pending.popleft()
            self._running[self._remote.remote(task, self.plugins, self.placement.cpus_per_run)] = task

    def _collect(self, ref) -> TaskResult:
        task = self._running.pop(ref)
        try:
            result = self._ray.get(ref)
        except self._ray.exceptions.TaskCancelledError:
            return TaskResult(task.index, "interrupted")
        except Exception as exc:  # the worker died, or Ray failed around the task
            return TaskResult(task.index, "crashed", run_id=task.run_id, error=f"{type(exc).__name__}: {exc}")
        return self.record(result)

    def as_completed(self) -> Iterator[TaskResult]:
        self._dispatch()
        while self._running and not self._stopping:
            done, _ = self._ray.wait(list(self._running), num_returns=1, timeout=1.0)
            for ref in done:
                yield self._collect(ref)
            self._dispatch()

    def cancel(self) -> list[TaskResult]:
        """Drop pending tasks; ``ray.cancel`` (a KeyboardInterrupt in the task) the running ones; wait."""
        self._stopping = True
        results = [TaskResult(task.index, "cancelled") for task in self._pending]
        self._pending.clear()
        for ref in list(self._running):
            try:
                self._ray.cancel(ref, force=False)
            except Exception:
                pass
        deadline = time.monotonic() + CANCEL_TIMEOUT_SECONDS
        while self._running and time.monotonic() < deadline:
            done, _ = self._ray.wait(list(self._running), num_returns=len(self._running), timeout=0.5)
            for ref in done:
                results.append(self._collect(ref))
        for ref, task in list(self._running.items()):
            self._ray.cancel(ref, force=True)
            self._running.pop(ref)
            results.append(TaskResult(task.index, "crashed", error="did not stop within the timeout; killed"))
        return results

    def close(self) -> None:
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False


@hookimpl
def register_executors(register):
    register(RayExecutor)
