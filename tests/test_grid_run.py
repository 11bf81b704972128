"""Grid execution outside the CLI: run_tasks reports through callbacks and stops cleanly on Ctrl-C."""

from __future__ import annotations

import pytest

from harness.experiments import executors
from harness.experiments.grid_run import GridOutcome, count_actions, run_tasks
from harness.experiments.sweep import RunTask, TaskResult


class FakePool:
    """An executor stand-in: every task finishes in order; ``interrupt_after`` raises Ctrl-C after that many."""

    def __init__(self, *, jobs, plugins, on_event, interrupt_after=None):
        self.on_event, self.interrupt_after = on_event or (lambda event: None), interrupt_after
        self.tasks, self.closed, self.cancelled = [], False, False

    def submit(self, task):
        self.tasks.append(task)

    def as_completed(self):
        for done, task in enumerate(self.tasks):
            if done == self.interrupt_after:
                raise KeyboardInterrupt
            self.on_event(type("Event", (), {"index": task.index, "kind": "iteration", "iteration": 1})())
            yield TaskResult(task.index, "failed" if task.seed == 13 else "finished", run_id=f"r{task.index}")

    def cancel(self):
        self.cancelled = True
        running = self.tasks[self.interrupt_after]
        return [TaskResult(running.index, "interrupted", run_id=f"r{running.index}"),
                *(TaskResult(t.index, "cancelled") for t in self.tasks[self.interrupt_after + 1:])]

    def close(self):
        self.closed = True


def _tasks(*seeds):
    return [RunTask(index=i, cell_key="selector=smallest", seed=s, action="new", db_path="x.db")
            for i, s in enumerate(seeds)]


@pytest.fixture
def pools(monkeypatch):
    made = []

    def create(name, *, jobs, plugins=(), on_event=None, interrupt_after=None):
        pool = FakePool(jobs=jobs, plugins=plugins, on_event=on_event, interrupt_after=made_interrupt[0])
        made.append(pool)
        return pool

    made_interrupt = [None]
    monkeypatch.setattr(executors, "create_executor", create)
    return made, made_interrupt


def test_results_and_events_reach_the_callbacks(pools):
    made, _ = pools
    events, results = [], []
    outcome = run_tasks(_tasks(0, 1, 13), executor="local", jobs=2, on_event=events.append,
                        on_result=results.append)
    assert [r.index for r in outcome.results] == [0, 1, 2] == [r.index for r in results]
    assert [e.index for e in events] == [0, 1, 2]
    assert made[0].closed and not outcome.interrupted
    assert [r.run_id for r in outcome.failed()] == ["r2"] and outcome.exit_code == 1


def test_ctrl_c_interrupts_the_running_runs_and_drops_the_unstarted(pools):
    made, interrupt = pools
    interrupt[0] = 1
    stopping = []
    outcome = run_tasks(_tasks(0, 1, 2), executor="local", jobs=1, on_stopping=lambda: stopping.append(True))
    assert stopping == [True] and made[0].cancelled and made[0].closed
    assert [(r.index, r.status) for r in outcome.results] == [(0, "finished"), (1, "interrupted")]
    assert outcome.interrupted and outcome.exit_code == 130
    assert outcome.failed() == []  # runs the user interrupted are not failures


def test_exit_codes_and_action_counts():
    assert GridOutcome().exit_code == 0
    assert GridOutcome([TaskResult(0, "crashed")]).exit_code == 1
    assert GridOutcome([TaskResult(0, "interrupted")]).exit_code == 1  # interrupted by something else: redo
    plan = [type("P", (), {"action": a})() for a in ("new", "new", "skip", "resume", "busy")]
    assert count_actions(plan) == {"new": 2, "resume": 1, "redo": 0, "skip": 1, "busy": 1}
