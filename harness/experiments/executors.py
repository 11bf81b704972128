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

Executors are plugins (the ``register_executors`` hook), chosen by name
(``--executor``); the built-ins are registered exactly as a third party's:

``local`` (:class:`LocalProcessExecutor`, the default; ``plugins/executors/local.py``)
    ``jobs`` worker processes started with the ``spawn`` method, so the parent
    never imports torch. Each worker sets its torch threads to
    ``cpus_per_run`` (default 1), rebuilds the plugin registry from the same
    ``--plugin`` specs, silences its stdout/stderr (only the parent prints),
    and runs one task at a time through :func:`harness.experiments.sweep.run_task`. A
    worker whose parent disappears interrupts its own run and exits.

``ray`` (``plugins/executors/ray.py``) and ``submitit`` (``plugins/executors/batch.py``)
    Runs on other machines. Their workers never open the leaderboard: each
    task goes without its database path (:meth:`DriverRecords.detach`), the
    run journals its record and returns it, and the driver writes it
    (:func:`record_returned`), so the nodes share no SQLite file.

An executor whose workers record their runs themselves has ``workers_record``
True; the planner then may resume unfinished runs
(:func:`harness.experiments.sweep.make_plan`); for the others they are redone.
"""

from __future__ import annotations

import collections
import dataclasses
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


@dataclass(frozen=True)
class Placement:
    """What each run asks for, and where the cluster is: ``--cpus-per-run``, ``--gpus-per-run``, ``--ray-address``."""

    cpus_per_run: int = 1
    gpus_per_run: float = 0.0
    address: str | None = None

    def __post_init__(self):
        if self.cpus_per_run < 1:
            raise UsageError(f"--cpus-per-run must be >= 1; got {self.cpus_per_run}")
        if self.gpus_per_run < 0:
            raise UsageError(f"--gpus-per-run must be >= 0; got {self.gpus_per_run}")


class Executor(ABC):
    """Runs :class:`~harness.experiments.sweep.RunTask` objects somewhere and reports how they ended."""

    name: ClassVar[str]
    #: True: the workers write the leaderboard themselves (and may resume runs); False: they return their runs'
    #: journals and the driver records them (:func:`record_returned`).
    workers_record: ClassVar[bool] = True

    def __init__(self, *, jobs: int, plugins: Sequence[str] = (), on_event: Callable[[Event], None] | None = None,
                 placement: Placement | None = None):
        if jobs < 1:
            raise UsageError(f"--jobs must be >= 1; got {jobs}")
        self.jobs = jobs
        self.plugins = tuple(plugins)
        self.on_event = on_event or (lambda event: None)
        self.placement = placement or Placement()

    @classmethod
    def check_available(cls) -> None:
        """UsageError (exit 2) if this executor cannot run here (a missing optional dependency)."""

    @classmethod
    def check_placement(cls, placement: Placement) -> None:
        """UsageError (exit 2) if this executor cannot place runs as ``placement`` asks."""

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


def set_threads(threads: int = 1) -> None:
    """Give this worker process ``threads`` torch (and OpenMP) threads."""
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ.setdefault("MKL_NUM_THREADS", str(threads))
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def remote_worker_environment(threads: int = 1) -> dict[str, str]:
    """The environment variables of a worker on another machine: ``threads`` threads, and no leaderboard (the
    driver records its runs, so a worker that tried to open the leaderboard fails loudly instead)."""
    from leaderboard.store import NO_LEADERBOARD_ENV

    return {"OMP_NUM_THREADS": str(threads), NO_LEADERBOARD_ENV: "1"}


def worker_registry(plugins: tuple[str, ...]):
    """The registry of ``plugins`` (the sweep's --plugin specs), built once per worker process."""
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


def _local_worker(conn, plugins: tuple[str, ...], parent_pid: int, quiet: bool,
                  threads: int = 1) -> None:  # pragma: no cover
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
            set_threads(threads)
            registry = worker_registry(plugins)
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
                 placement: Placement | None = None, start_method: str = "spawn", quiet: bool = True):
        super().__init__(jobs=jobs, plugins=plugins, on_event=on_event, placement=placement)
        self.check_placement(self.placement)
        import multiprocessing

        self._ctx = multiprocessing.get_context(start_method)
        self._quiet = quiet
        self._pending: collections.deque[RunTask] = collections.deque()
        self._workers: list[_Worker] = []
        self._outstanding = 0
        self._stopping = False

    @classmethod
    def check_placement(cls, placement: Placement) -> None:
        if placement.gpus_per_run or placement.address:
            raise UsageError("--gpus-per-run and --ray-address are for --executor ray; the local executor runs on "
                             "this machine, on the devices the runs' options name (-o testbed.device=cuda)")

    def submit(self, task: RunTask) -> None:
        if self._stopping:
            raise RuntimeError("this executor was cancelled")
        self._pending.append(task)
        self._outstanding += 1

    # The parent's loop ------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_local_worker, args=(child_end, self.plugins, os.getpid(), self._quiet,
                                        self.placement.cpus_per_run),
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


class DriverRecords:
    """For an executor whose workers never open the leaderboard (``workers_record = False``): :meth:`detach` a
    task from its database before sending it (the worker then journals its run and returns the journal), and
    :meth:`record` each result, which writes that journal into the database here, on the driver."""

    workers_record = False

    def detach(self, task: RunTask) -> RunTask:
        """``task`` without its database path, its run directory under the driver's runs root."""
        from pathlib import Path

        from harness.experiments.runner import runs_root

        if task.db_path is None:
            raise ValueError("a task handed to an executor names the driver's leaderboard (db_path)")
        databases = self.__dict__.setdefault("_driver_databases", {})
        databases[task.index] = task.db_path
        return dataclasses.replace(task, db_path=None, runs_dir=task.runs_dir or str(runs_root(Path(task.db_path))))

    def record(self, result: TaskResult) -> TaskResult:
        """``result`` with the journal its worker returned written into the driver's database."""
        return record_returned(result, self.__dict__["_driver_databases"][result.index])


def record_returned(result: TaskResult, db_path: str | os.PathLike[str]) -> TaskResult:
    """Write the journal a worker returned with ``result`` into the leaderboard at ``db_path`` (the driver's
    only write path for executors whose workers never open it); the result comes back without it.

    Entries already recorded are skipped, so a result seen twice does no harm. A row the journal leaves
    ``running`` (the run ended outside the runner's handlers) is closed with the result's status: its worker
    has returned, so nothing runs it any more. Where the run's journal file is reachable from here (a shared
    runs directory) it is marked imported, as ``harness leaderboard import`` does. When the journal cannot be
    written (the database locked past the busy timeout or read-only, or an entry it refuses) it is kept in
    the run's directory under this machine's runs root, the result's ``unrecorded`` names it and its error
    says why, so nothing is lost and the sweep goes on.
    """
    import json
    from pathlib import Path

    from harness.experiments.journal import IMPORTED, JOURNAL, replay_entries
    from harness.experiments.runner import runs_root
    from leaderboard.store import Leaderboard

    if not result.journal:
        return result
    journal = runs_root(Path(db_path)) / str(result.run_id) / JOURNAL
    try:
        with Leaderboard(db_path) as board:
            replay_entries(board, result.journal, where=f"the journal of run {result.run_id}")
            run = board.get_run(str(result.run_id))
            if run is not None and run["status"] == "running":
                status = result.status if result.status in ("failed", "interrupted") else "failed"
                board.fail_run(str(result.run_id), status, result.error or
                               f"the run ended {result.status} without recording an end; its worker has returned")
    except Exception as exc:  # noqa: BLE001 - the database or an entry: keep the record, go on with the sweep
        journal.parent.mkdir(parents=True, exist_ok=True)
        if not journal.exists():  # a shared runs directory: the worker's own journal is this file already
            journal.write_text("".join(json.dumps(entry) + "\n" for entry in result.journal), encoding="utf-8")
        why = f"the driver could not record run {result.run_id} ({type(exc).__name__}: {exc}); its record is in {journal}"
        return dataclasses.replace(result, status="failed" if result.status == "finished" else result.status,
                                   journal=None, unrecorded=str(journal),
                                   error=f"{result.error}\n{why}" if result.error else why)
    if journal.exists():
        journal.rename(journal.with_name(IMPORTED))
    return dataclasses.replace(result, journal=None, unrecorded=None)


def executor_class(name: str, registry: Any = None) -> type[Executor]:
    """The executor called ``name`` in ``registry`` (default: the built-ins and installed plugins), checked usable
    here; UsageError (exit 2) otherwise."""
    from harness.ranks import launched_processes

    if launched_processes() > 1:
        raise UsageError("sweeps and studies start their runs in worker processes of their own; start them as one "
                         "process, not under torchrun or accelerate launch (a multi-process launch is for one "
                         "harness run at a time)")
    if registry is None:
        from harness.plugins import load_registry

        registry = load_registry()
    known = {found: cls for found, (cls, _) in registry.executors.items()}
    try:
        cls = known[name]
    except KeyError:
        raise UnknownNameError("executor", name, known) from None
    cls.check_available()
    return cls


@dataclass(frozen=True)
class ExecutorChoice:
    """The executor a sweep or study asked for (``--executor``, found in the registry) and what each run asks of
    it (:class:`Placement`)."""

    cls: type[Executor]
    placement: Placement = Placement()

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def workers_record(self) -> bool:
        """Whether its workers write the leaderboard (so unfinished runs may be resumed)."""
        return self.cls.workers_record


def create_executor(executor: str | ExecutorChoice, *, jobs: int, plugins: Sequence[str] = (),
                    on_event: Callable[[Event], None] | None = None) -> Executor:
    """An executor by name (looked up in the default registry) or as chosen (:class:`ExecutorChoice`)."""
    choice = executor if isinstance(executor, ExecutorChoice) else ExecutorChoice(executor_class(executor))
    return choice.cls(jobs=jobs, plugins=plugins, on_event=on_event, placement=choice.placement)
