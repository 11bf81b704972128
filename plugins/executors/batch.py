"""The ``submitit`` executor: each run a batch job (SLURM, or a local subprocess); the driver writes the leaderboard.

``harness sweep --executor submitit`` (``pip install 'pairsel-harness[submitit]'``)
submits every run as one job through submitit's ``AutoExecutor``: on a machine
with SLURM (``sbatch`` on the PATH) a SLURM job, elsewhere a local subprocess
(``$HARNESS_SUBMITIT_CLUSTER`` picks one: ``slurm``, ``local`` or ``debug``).
Each job asks for ``--cpus-per-run`` CPUs (``cpus_per_task``, and that many torch
threads) and ``--gpus-per-run`` GPUs (``gpus_per_node``, a whole number); any
other parameter of submitit (``slurm_partition``, ``timeout_min``, ``mem_gb``,
``slurm_account`` ...) comes from ``$HARNESS_SUBMITIT_PARAMETERS``, a JSON object;
the time limit is 24 hours unless it sets ``timeout_min`` (submitit's own default
is a few minutes).
At most ``--jobs`` jobs are queued or running at once.

submitit exchanges the task and its result through a folder every node can
read (``$HARNESS_SUBMITIT_FOLDER``, default ``submitit/`` in the working
directory); the logs of each job stay there. The leaderboard is not on that
path's side: a job never opens it (``$HARNESS_NO_LEADERBOARD``, no database
path in its task), its run journals its record and returns it with the result,
and the driver writes it (:class:`harness.experiments.executors.DriverRecords`).
Each run records the job id it ran as (``batch_job``).

Cancelling (Ctrl-C) cancels the jobs; a run cut short that way returns nothing
and is redone by a re-run. submitit is imported when the executor is made.
"""

from __future__ import annotations

import collections
import importlib.util
import json
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from harness import hookimpl
from harness.errors import UsageError
from harness.experiments.executors import (
    DriverRecords,
    Event,
    Executor,
    Placement,
    remote_worker_environment,
    set_threads,
    worker_registry,
)
from harness.experiments.sweep import RunTask, TaskResult

FOLDER_ENV = "HARNESS_SUBMITIT_FOLDER"
CLUSTER_ENV = "HARNESS_SUBMITIT_CLUSTER"
PARAMETERS_ENV = "HARNESS_SUBMITIT_PARAMETERS"
#: A job's time limit unless ``$HARNESS_SUBMITIT_PARAMETERS`` sets ``timeout_min``: submitit's own default is
#: minutes (its jobs end as "timed-out"), far shorter than a real-model run.
TIMEOUT_MINUTES = 24 * 60
#: How often the driver asks submitit whether jobs have ended (seconds).
POLL_SECONDS = 1.0


def run_job(task: RunTask, plugins: tuple[str, ...], threads: int) -> TaskResult:  # pragma: no cover - in the job
    """One run inside a batch job: no leaderboard, ``threads`` torch threads, tagged with the job that ran it."""
    import dataclasses

    from harness.experiments.sweep import run_task

    os.environ.update(remote_worker_environment(threads))
    set_threads(threads)
    job = os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID") or str(os.getpid())
    return run_task(dataclasses.replace(task, tags={**task.tags, "executor": "submitit", "batch_job": job}),
                    worker_registry(plugins))


class SubmititExecutor(DriverRecords, Executor):
    """One submitit job per run, at most ``jobs`` at once; the driver records every run."""

    name = "submitit"

    def __init__(self, *, jobs: int, plugins: Sequence[str] = (), on_event: Callable[[Event], None] | None = None,
                 placement: Placement | None = None):
        super().__init__(jobs=jobs, plugins=plugins, on_event=on_event, placement=placement)
        self.check_available()
        self.check_placement(self.placement)
        import submitit

        try:
            extra = json.loads(os.environ.get(PARAMETERS_ENV) or "{}")
        except json.JSONDecodeError as exc:
            raise UsageError(f"${PARAMETERS_ENV} is not a JSON object ({exc.msg}); e.g. "
                             '\'{"slurm_partition": "gpu", "timeout_min": 240}\'') from None
        if not isinstance(extra, dict):
            raise UsageError(f"${PARAMETERS_ENV} must be a JSON object of submitit parameters, got {extra!r}")
        self._executor = submitit.AutoExecutor(folder=os.environ.get(FOLDER_ENV) or "submitit",
                                               cluster=os.environ.get(CLUSTER_ENV) or None)
        parameters: dict[str, Any] = {"cpus_per_task": self.placement.cpus_per_run, "name": "pairsel-run",
                                      "timeout_min": TIMEOUT_MINUTES}
        if self.placement.gpus_per_run:
            parameters["gpus_per_node"] = int(self.placement.gpus_per_run)
        try:
            self._executor.update_parameters(**{**parameters, **extra})
        except (TypeError, ValueError) as exc:
            raise UsageError(f"submitit refused the job parameters ({exc}); check ${PARAMETERS_ENV}") from None
        self._pending: collections.deque[RunTask] = collections.deque()
        self._running: dict[Any, RunTask] = {}  # submitit job -> its task
        self._stopping = False

    @classmethod
    def check_available(cls) -> None:
        if importlib.util.find_spec("submitit") is None:
            raise UsageError("--executor submitit needs submitit, which is not installed: "
                             "pip install 'pairsel-harness[submitit]' (or use --executor local)")

    @classmethod
    def check_placement(cls, placement: Placement) -> None:
        if placement.address:
            raise UsageError("--ray-address is for --executor ray; submitit submits to the scheduler of this "
                             f"machine (${CLUSTER_ENV} picks slurm or local)")
        if placement.gpus_per_run != int(placement.gpus_per_run):
            raise UsageError(f"--gpus-per-run {placement.gpus_per_run:g}: a batch job asks for whole GPUs")

    def submit(self, task: RunTask) -> None:
        self._pending.append(self.detach(task))

    def _dispatch(self) -> None:
        while self._pending and len(self._running) < self.jobs and not self._stopping:
            task = self._pending.popleft()
            job = self._executor.submit(run_job, task, self.plugins, self.placement.cpus_per_run)
            self._running[job] = task

    def _collect(self, job) -> TaskResult:
        task = self._running.pop(job)
        try:
            result = job.result()
        except Exception as exc:  # the job failed outside the run (killed, out of memory, a node lost)
            return TaskResult(task.index, "crashed", run_id=task.run_id,
                              error=f"batch job {job.job_id} ended without a result: {type(exc).__name__}: {exc}")
        return self.record(result)

    def as_completed(self) -> Iterator[TaskResult]:
        self._dispatch()
        while self._running and not self._stopping:
            done = [job for job in list(self._running) if job.done()]
            for job in done:
                yield self._collect(job)
            self._dispatch()
            if not done:
                time.sleep(POLL_SECONDS)

    def cancel(self) -> list[TaskResult]:
        """Drop pending tasks, cancel the jobs; their runs return nothing (a re-run redoes them)."""
        self._stopping = True
        results = [TaskResult(task.index, "cancelled") for task in self._pending]
        self._pending.clear()
        for job, task in list(self._running.items()):
            try:
                job.cancel(check=False)
            except Exception:  # noqa: BLE001 - already ended, or the scheduler is gone
                pass
            self._running.pop(job)
            results.append(TaskResult(task.index, "interrupted", error=f"batch job {job.job_id} cancelled"))
        return results


@hookimpl
def register_executors(register):
    register(SubmititExecutor)
