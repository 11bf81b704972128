"""Progress reporting: a silent reporter for tests and libraries, a rich one for the CLI."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


class NullReporter:
    """Reports nothing; the default outside the CLI."""

    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        yield lambda n=1: None

    def log(self, message: str) -> None:
        """Say nothing (the rich reporter prints ``message`` above its live display)."""


class RichReporter:
    """Shows each stage as a live line with a spinner and elapsed time, on stderr.

    Use as a context manager around the run; ``log`` prints a line above the
    live display (per-iteration summaries).
    """

    def __init__(self, console=None, total_steps: int | None = None, title: str = "run"):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            SpinnerColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console or Console(stderr=True, emoji=False)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self.console,
            transient=False,
        )
        self._overall = None
        self._total = total_steps
        self._title = title

    def __enter__(self) -> RichReporter:
        self.progress.__enter__()
        if self._total:
            self._overall = self.progress.add_task(f"[bold]{self._title}", total=self._total)
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def log(self, message: str) -> None:
        self.progress.console.print(message)

    @contextlib.contextmanager
    def stage(self, description: str, total: int | None = None) -> Iterator[Callable[[int], None]]:
        task = self.progress.add_task(description, total=total)

        def advance(n: int = 1) -> None:
            self.progress.advance(task, n)

        try:
            yield advance
        finally:
            done = self.progress.tasks[self.progress.task_ids.index(task)]
            self.progress.update(task, total=done.total or 1, completed=done.total or 1)
            self.progress.stop_task(task)
            self.progress.remove_task(task)

    def step(self, message: str | None = None) -> None:
        """Advance the overall bar by one step and print ``message`` above it."""
        if message:
            self.log(message)
        if self._overall is not None:
            self.progress.advance(self._overall, 1)
