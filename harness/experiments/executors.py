"""Executors: where the runs of a sweep execute.

The interface is small (:class:`Executor`):

- ``submit(task)`` queues a :class:`harness.experiments.sweep.RunTask`;
- ``as_completed()`` yields a :class:`harness.experiments.sweep.TaskResult` for every
  submitted task as it completes, in completion order;
- ``cancel()`` stops: pending tasks never start, running ones are
  interrupted (the runner marks their rows ``interrupted``), and it returns
  only once they have ended, with their results;
- ``close()`` releases the workers (an executor is also a context manager).

Progress events (``started`` with a run id, ``iteration``) go to the
``on_event`` callback given to the constructor, in the parent process.

Two executors, chosen by name (``--executor``):

``local`` (:class:`LocalProcessExecutor`, the default)
    ``jobs`` worker processes started with the ``spawn`` method, so the parent
    never imports torch. Each worker sets ``OMP_NUM_THREADS=1`` and
    ``torch.set_num_threads(1)``, rebuilds the plugin registry from the same
    ``--plugin`` specs, silences its stdout/stderr (only the parent prints),
    and runs one task at a time through :func:`harness.experiments.sweep.run_task`. A
    worker whose parent disappears interrupts its own run and exits.

``ray`` (:class:`RayExecutor`, ``pip install 'pairsel-harness[ray]'``)
    One Ray task (``num_cpus=1``) per run, at most ``jobs`` at once. It uses
    an already initialised Ray, else connects to ``$RAY_ADDRESS`` when set,
    else starts a local Ray with ``ray.init()``. Every worker writes to the
    same SQLite file, so the nodes must share the database's filesystem (with
    working file locks): in practice one machine.
"""

from __future__ import annotations

import collections
import importlib.util
import os
import signal
import threading
import time
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from harness.errors import UnknownNameError, UsageError
from harness.experiments.sweep import RunTask, TaskResult

#: How long ``cancel`` waits for interrupted runs to mark their rows before it kills the workers.
CANCEL_TIMEOUT_SECONDS = 60.0


@dataclass(frozen=True)
class Event:
    """Progress of one task, reported to the parent: ``started`` (run_id) or ``iteration``."""

    index: int
    kind: str
    run_id: str | None = None
    iteration: int | None = None
    win_rate: float | None = None


class Executor(ABC):
    """Runs :class:`~harness.experiments.sweep.RunTask` objects somewhere and reports how they ended."""

    name: ClassVar[str]

    def __init__(self, *, jobs: int, plugins: Sequence[str] = (), on_event: Callable[[Event], None] | None = None):
        if jobs < 1:
            raise UsageError(f"--jobs must be >= 1; got {jobs}")
        self.jobs = jobs
        self.plugins = tuple(plugins)
        self.on_event = on_event or (lambda event: None)

    @classmethod
    def check_available(cls) -> None:
        """UsageError (exit 2) if this executor cannot run here (a missing optional dependency)."""

    @abstractmethod
    def submit(self, task: RunTask) -> None:
        """Queue ``task``; it starts when a worker is free."""

    @abstractmethod
    def as_completed(self) -> Iterator[TaskResult]:
        """Yield one result per submitted task, as each completes."""

    @abstractmethod
    def cancel(self) -> list[TaskResult]:
        """Stop everything; return the results of the tasks that were running, once they have ended."""

    def close(self) -> None:
        """Release the workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


# -- the worker side (runs in the worker process) ----------------------------------

_SIGNALLED = False
_REGISTRIES: dict[tuple[str, ...], Any] = {}


def _on_sigint(signum, frame):  # pragma: no cover - runs in workers
    """First SIGINT or SIGTERM: raise KeyboardInterrupt (the runner marks the run). Later ones: ignored,
    so a second signal (the terminal's and the parent's) cannot cut the marking short."""
    global _SIGNALLED
    _SIGNALLED = True
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def _set_one_thread() -> None:
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def _registry(plugins: tuple[str, ...]):
    if plugins not in _REGISTRIES:
        from harness.plugins import load_registry

        _REGISTRIES[plugins] = load_registry(plugins)
    return _REGISTRIES[plugins]


def _silence_output() -> None:
    """Only the parent prints: point this process's stdout and stderr at /dev/null."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    for fd in (1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


def _watch_parent(parent_pid: int) -> None:  # pragma: no cover - runs in workers
    """If the parent dies, interrupt this worker's run (marking it) so nothing is orphaned."""
    # Signals for the process go to the main thread, so they cut short whatever it waits on.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    while True:
        time.sleep(0.5)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), signal.SIGINT)
            return


def _local_worker(conn, plugins: tuple[str, ...], parent_pid: int, quiet: bool) -> None:  # pragma: no cover
    """A local worker: receive tasks over ``conn`` until told to stop (None) or interrupted."""
    signal.signal(signal.SIGINT, _on_sigint)
    signal.signal(signal.SIGTERM, _on_sigint)  # a SIGTERM to the whole group (a scheduler's stop) is an interrupt too
    if quiet:
        _silence_output()
    threading.Thread(target=_watch_parent, args=(parent_pid,), daemon=True).start()

    def send(message: tuple) -> None:
        # SIGINT and SIGTERM are held back while a message is written, so the parent never reads half of one.
        held = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            conn.send(message)
        except (BrokenPipeError, EOFError, OSError):
            pass
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)

    try:
        try:
            _set_one_thread()
            registry = _registry(plugins)
        except KeyboardInterrupt:
            return
        except BaseException:
            send(("fatal", traceback.format_exc()))
            return
        from harness.experiments.sweep import run_task

        while not _SIGNALLED:
            try:
                task = conn.recv()
            except (EOFError, OSError, KeyboardInterrupt):
                return
            if task is None:
                return

            def emit(kind: str, _index: int = task.index, **data: Any) -> None:
                send(("event", Event(_index, kind, **data)))

            try:
                result = run_task(task, registry, emit)
            except KeyboardInterrupt:  # between the runner's handling and the return
                result = TaskResult(task.index, "interrupted")
            send(("done", result))
            if result.status == "interrupted" and _SIGNALLED:
                return
    except KeyboardInterrupt:
        return
    finally:
        try:
            conn.close()
        except OSError:
            pass


# -- the local process pool ------------------------------------------------------------


class _Worker:
    def __init__(self, process, conn):
        self.process = process
        self.conn = conn
        self.task: RunTask | None = None
        self.started = False  # its current task has created or claimed its run row
        self.alive = True


class LocalProcessExecutor(Executor):
    """``jobs`` spawned worker processes on this machine, one run each at a time."""

    name = "local"

    def __init__(self, *, jobs: int, plugins: Sequence[str] = (), on_event: Callable[[Event], None] | None = None,
                 start_method: str = "spawn", quiet: bool = True):
        super().__init__(jobs=jobs, plugins=plugins, on_event=on_event)
        import multiprocessing

        self._ctx = multiprocessing.get_context(start_method)
        self._quiet = quiet
        self._pending: collections.deque[RunTask] = collections.deque()
        self._workers: list[_Worker] = []
        self._outstanding = 0
        self._stopping = False

    def submit(self, task: RunTask) -> None:
        if self._stopping:
            raise RuntimeError("this executor was cancelled")
        self._pending.append(task)
        self._outstanding += 1

    # The parent's loop ------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_local_worker, args=(child_end, self.plugins, os.getpid(), self._quiet),
            name="harness-sweep-worker", daemon=True,
        )
        process.start()
        child_end.close()
        worker = _Worker(process, parent_end)
        self._workers.append(worker)
        return worker

    def _dispatch(self) -> None:
        if self._stopping:
            return
        live = [w for w in self._workers if w.alive]
        wanted = min(self.jobs, len(self._pending) + sum(1 for w in live if w.task is not None))
        while len(live) < wanted:
            live.append(self._start_worker())
        for worker in live:
            if worker.task is None and self._pending:
                task = self._pending.popleft()
                try:
                    worker.conn.send(task)
                except (BrokenPipeError, OSError):
                    self._pending.appendleft(task)
                    continue
                worker.task, worker.started = task, False

    def _poll(self, timeout: float) -> list[TaskResult]:
        """Wait up to ``timeout`` for messages or exits; return the results that came in."""
        from multiprocessing.connection import wait

        live = [w for w in self._workers if w.alive]
        if not live:
            return []
        handles = {w.conn: w for w in live}
        sentinels = {w.process.sentinel: w for w in live}
        ready = wait(list(handles) + list(sentinels), timeout=timeout)
        results: list[TaskResult] = []
        touched = {handles.get(h) or sentinels.get(h) for h in ready}
        for worker in touched:
            results += self._drain(worker)
            if not worker.process.is_alive():
                worker.process.join(timeout=1)
                results += self._drain(worker)
                results += self._bury(worker)
        return results

    def _drain(self, worker: _Worker) -> list[TaskResult]:
        results = []
        try:
            while worker.conn.poll():
                kind, payload = worker.conn.recv()
                if kind == "event":
                    if payload.kind == "started":
                        worker.started = True
                    self.on_event(payload)
                elif kind == "done":
                    worker.task = None
                    self._outstanding -= 1
                    results.append(payload)
                elif kind == "fatal":
                    raise WorkerStartError(f"a sweep worker failed to start:\n{payload}")
        except (EOFError, OSError):
            pass
        return results

    def _bury(self, worker: _Worker) -> list[TaskResult]:
        """A worker exited: report its unfinished task."""
        worker.alive = False
        try:
            worker.conn.close()
        except OSError:
            pass
        if worker.task is None:
            return []
        task, worker.task = worker.task, None
        self._outstanding -= 1
        code = worker.process.exitcode
        if not worker.started and self._stopping:
            return [TaskResult(task.index, "cancelled")]
        how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        return [TaskResult(task.index, "crashed", run_id=task.run_id,
                           error=f"worker process {worker.process.pid} died ({how}) during this run; "
                                 "re-run the sweep to resume it")]

    def as_completed(self) -> Iterator[TaskResult]:
        while self._outstanding > 0 and not self._stopping:
            self._dispatch()
            yield from self._poll(timeout=1.0)

    def cancel(self) -> list[TaskResult]:
        """Interrupt running tasks (SIGINT), stop idle workers, wait for all to exit.

        A second KeyboardInterrupt while waiting kills the workers at once:
        their runs stay ``running`` and a re-run of the sweep resumes them.
        """
        self._stopping = True
        results = [TaskResult(task.index, "cancelled") for task in self._pending]
        self._outstanding -= len(self._pending)
        self._pending.clear()
        for worker in self._workers:
            if not worker.alive:
                continue
            if worker.task is not None:
                _signal(worker.process.pid, signal.SIGINT)
            else:
                try:
                    worker.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        deadline = time.monotonic() + CANCEL_TIMEOUT_SECONDS
        try:
            while any(w.alive for w in self._workers):
                if time.monotonic() > deadline:
                    results += self._kill_all()
                    break
                results += self._poll(timeout=0.5)
        except KeyboardInterrupt:
            results += self._kill_all()
        return results

    def _kill_all(self) -> list[TaskResult]:
        results = []
        for worker in self._workers:
            if worker.alive:
                worker.process.terminate()
        for worker in self._workers:
            if worker.alive:
                worker.process.join(timeout=5)
                if worker.process.is_alive():
                    worker.process.kill()
                    worker.process.join(timeout=5)
                results += self._drain(worker)
                results += self._bury(worker)
        return results

    def close(self) -> None:
        for worker in self._workers:
            if worker.alive:
                try:
                    worker.conn.send(None)
                except (BrokenPipeError, OSError):
                    pass
        for worker in self._workers:
            if worker.alive:
                worker.process.join(timeout=10)
                if worker.process.is_alive():
                    worker.process.terminate()
                    worker.process.join(timeout=5)
                worker.alive = False
                try:
                    worker.conn.close()
                except OSError:
                    pass


class WorkerStartError(RuntimeError):
    """A worker could not start (e.g. a plugin that imports in the parent but not in a fresh process)."""


def _signal(pid: int | None, signum: int) -> None:
    if pid is None:
        return
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


# -- Ray -----------------------------------------------------------------------------


def _ray_task(task: RunTask, plugins: tuple[str, ...]) -> TaskResult:  # pragma: no cover - runs in Ray workers
    """One run inside a Ray worker (one torch thread; the registry is built once per worker)."""
    from harness.experiments.sweep import run_task

    _set_one_thread()
    return run_task(task, _registry(plugins))


class RayExecutor(Executor):
    """One Ray task per run (``num_cpus=1``), at most ``jobs`` at once."""

    name = "ray"

    def __init__(self, *, jobs: int, plugins: Sequence[str] = (), on_event: Callable[[Event], None] | None = None):
        super().__init__(jobs=jobs, plugins=plugins, on_event=on_event)
        self.check_available()
        import ray

        self._ray = ray
        self._started_ray = False
        if not ray.is_initialized():
            import logging

            runtime_env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
            if os.environ.get("RAY_ADDRESS"):
                ray.init(runtime_env=runtime_env, log_to_driver=False, logging_level=logging.WARNING)
            else:
                ray.init(num_cpus=max(jobs, 1), include_dashboard=False, runtime_env=runtime_env,
                         log_to_driver=False, logging_level=logging.WARNING)
            self._started_ray = True
        self._remote = ray.remote(num_cpus=1, max_retries=0)(_ray_task)
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
        self._pending.append(task)

    def _dispatch(self) -> None:
        while self._pending and len(self._running) < self.jobs and not self._stopping:
            task = self._pending.popleft()
            self._running[self._remote.remote(task, self.plugins)] = task

    def _collect(self, ref) -> TaskResult:
        task = self._running.pop(ref)
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.TaskCancelledError:
            return TaskResult(task.index, "interrupted")
        except Exception as exc:  # the worker died, or Ray failed around the task
            return TaskResult(task.index, "crashed", run_id=task.run_id, error=f"{type(exc).__name__}: {exc}")

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


EXECUTORS: dict[str, type[Executor]] = {
    LocalProcessExecutor.name: LocalProcessExecutor,
    RayExecutor.name: RayExecutor,
}


def executor_class(name: str) -> type[Executor]:
    """The executor called ``name``, checked usable here; UsageError (exit 2) otherwise."""
    from harness.ranks import launched_processes

    if launched_processes() > 1:
        raise UsageError("sweeps and studies start their runs in worker processes of their own; start them as one "
                         "process, not under torchrun or accelerate launch (a multi-process launch is for one "
                         "harness run at a time)")
    try:
        cls = EXECUTORS[name]
    except KeyError:
        raise UnknownNameError("executor", name, EXECUTORS) from None
    cls.check_available()
    return cls


def create_executor(name: str, *, jobs: int, plugins: Sequence[str] = (),
                    on_event: Callable[[Event], None] | None = None) -> Executor:
    return executor_class(name)(jobs=jobs, plugins=plugins, on_event=on_event)
