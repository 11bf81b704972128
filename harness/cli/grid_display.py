"""What ``harness sweep`` and ``harness study run`` show while their runs run: plan lines, progress, result lines.

The running itself is :func:`harness.experiments.grid_run.run_tasks`; this
module renders its callbacks as a rich live display.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import typer

from harness.cli.common import cli_errors, sigterm_interrupts

STATUS_STYLE = {
    "finished": "green", "failed": "red", "crashed": "red", "interrupted": "yellow",
    "skipped": "dim", "cancelled": "dim",
}


def escape(text: str) -> str:
    """``text`` with rich markup escaped."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


def plan_counts_line(counts: dict[str, int]) -> str:
    """``plan: 3 new, 0 to resume, ...`` from :func:`harness.experiments.grid_run.count_actions`."""
    return (f"plan: {counts['new']} new, {counts['resume']} to resume, {counts['redo']} to redo, "
            f"{counts['skip']} finished (skip), {counts['busy']} running elsewhere (left alone)")


def plan_line(item: Any) -> str:
    """One planned run: its action, cell, seed, run id and the reason for the action."""
    text = f"{item.action:>6}  {item.cell.key} · seed {item.seed}"
    if item.world_seed != item.seed:
        text += f" (world {item.world_seed})"
    if item.run_id:
        text += f" · {item.run_id}"
    if item.reason:
        text += f" ({item.reason})"
    return text


def result_line(item: Any, result: Any) -> str:
    """One ended run: status, cell, seed, final win rate, time, run id, and why it failed."""
    style = STATUS_STYLE.get(result.status, "")
    status = result.status
    if result.status == "interrupted" and result.run_id is None:
        status = "not started"
    text = f"[{style}]{status:>11}[/]  {item.cell.key} · seed {item.seed}"
    if result.final:
        text += f" · win [bold]{result.final['final_win_rate']:.3f}[/]"
    text += f" · {result.seconds:.1f} s"
    if result.run_id:
        text += f" · {result.run_id}"
    if item.action == "resume":
        text += " (resumed)"
    elif item.action == "redo":
        text += f" (redo of {item.run_id})"
    if result.unrecorded:
        folder = escape(str(Path(result.unrecorded).parent))
        text += f"\n             [bold red]not in the leaderboard[/]: record it with harness leaderboard import {folder}"
    if result.error and result.status in ("failed", "crashed", "skipped"):
        last = result.error.strip().splitlines()[-1:] or [""]
        text += f"\n             [dim]{escape(last[0])}[/]"
    return text


def run_with_progress(console, executor, jobs: int, plugins: Sequence[str], tasks: Sequence[Any],
                      plan: Sequence[Any], *, title: str = "sweep"):
    """Run ``tasks`` (indexes into ``plan``) under a live progress display: a bar per running run and one
    overall; returns the :class:`harness.experiments.grid_run.GridOutcome`. A worker that cannot start
    exits 1; SIGTERM stops the grid like Ctrl-C."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from harness.experiments.executors import WorkerStartError
    from harness.experiments.grid_run import run_tasks

    progress = Progress(
        SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
        MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=False,
    )
    lines: dict[int, Any] = {}
    iterations = {task.index: plan[task.index].config.iterations for task in tasks}

    def on_event(event) -> None:
        item = plan[event.index]
        if event.index not in lines:
            lines[event.index] = progress.add_task(f"{item.cell.key} · seed {item.seed}",
                                                   total=iterations[event.index] + 1)
        if event.kind == "iteration":
            progress.update(lines[event.index], completed=(event.iteration or 0) + 1)

    def on_result(result) -> None:
        if result.index in lines:
            progress.remove_task(lines.pop(result.index))
        progress.advance(overall)
        progress.console.print(result_line(plan[result.index], result))

    def on_stopping() -> None:
        progress.console.print(
            "[yellow]Stopping:[/] interrupting the running runs (each marks itself interrupted); waiting for "
            "them. Ctrl-C again kills them (a re-run still resumes them)."
        )

    with sigterm_interrupts(), progress:
        overall = progress.add_task(f"[bold]{title}[/] ({jobs} {'job' if jobs == 1 else 'jobs'})", total=len(tasks))
        try:
            with cli_errors():
                return run_tasks(tasks, executor=executor, jobs=jobs, plugins=plugins, on_event=on_event,
                                 on_result=on_result, on_stopping=on_stopping)
        except WorkerStartError as exc:
            progress.console.print(f"[bold red]Error:[/] {exc}")
            raise typer.Exit(1) from None
