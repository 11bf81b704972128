"""Running the planned runs of a sweep or a study on an executor, with progress reported through callbacks.

``harness sweep`` and ``harness study run`` plan their runs
(:func:`harness.experiments.sweep.make_plan`), turn the runs to do into tasks
and hand them to :func:`run_tasks`, which submits them to an executor
(:mod:`harness.experiments.executors`) and collects the results. It draws
nothing: the caller passes callbacks for the executor's events (a run
started, an iteration recorded), for each result, and for the moment a
Ctrl-C starts stopping the runs, and renders them as it likes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from harness.experiments.sweep import IDLE_ACTIONS, RUN_ACTIONS, RunTask, TaskResult

if TYPE_CHECKING:
    from harness.experiments.executors import ExecutorChoice

#: Statuses of a result that count as a failure of the sweep.
FAILED_STATUSES = ("failed", "crashed")


@dataclass
class GridOutcome:
    """The results of the runs that ran (in the order they ended) and whether Ctrl-C stopped the grid."""

    results: list[TaskResult] = field(default_factory=list)
    interrupted: bool = False

    def failed(self) -> list[TaskResult]:
        """Runs that failed; an interrupted run counts too unless the user interrupted the grid."""
        return [r for r in self.results
                if r.status in FAILED_STATUSES or (r.status == "interrupted" and not self.interrupted)]

    @property
    def exit_code(self) -> int:
        """130 after Ctrl-C, 1 if a run failed, else 0."""
        return 130 if self.interrupted else 1 if self.failed() else 0


def run_tasks(
    tasks: Sequence[RunTask],
    *,
    executor: str | ExecutorChoice,
    jobs: int,
    plugins: Sequence[str] = (),
    on_event: Callable[[Any], None] | None = None,
    on_result: Callable[[TaskResult], None] | None = None,
    on_stopping: Callable[[], None] | None = None,
) -> GridOutcome:
    """Run ``tasks`` on ``jobs`` workers of ``executor`` (``local`` or ``ray``, or an :class:`ExecutorChoice` with
    what each run asks for); returns their outcome.

    ``on_event`` receives the executor's events, ``on_result`` every result as
    it arrives. On Ctrl-C (KeyboardInterrupt, which a SIGTERM handler may raise
    too) ``on_stopping`` is called, the running runs are interrupted (each marks
    itself ``interrupted``; a re-run resumes it) and their results collected;
    runs that never started are dropped. A worker that cannot start raises
    :class:`harness.experiments.executors.WorkerStartError`.
    """
    from harness.experiments.executors import create_executor

    outcome = GridOutcome()
    report = on_result or (lambda result: None)
    pool = create_executor(executor, jobs=jobs, plugins=list(plugins), on_event=on_event)
    try:
        try:
            for task in tasks:
                pool.submit(task)
            for result in pool.as_completed():
                outcome.results.append(result)
                report(result)
        except KeyboardInterrupt:
            outcome.interrupted = True
            if on_stopping is not None:
                on_stopping()
            for result in pool.cancel():
                if result.status == "cancelled":  # never started
                    continue
                outcome.results.append(result)
                report(result)
    finally:
        pool.close()
    return outcome


def count_actions(plan: Sequence[Any]) -> dict[str, int]:
    """How many planned runs take each action (``new``, ``resume``, ``redo``, ``skip``, ``busy``)."""
    counts = {action: 0 for action in (*RUN_ACTIONS, *IDLE_ACTIONS)}
    for item in plan:
        counts[item.action] += 1
    return counts
