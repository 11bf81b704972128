"""Options and error handling shared by the CLI commands."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.errors import HarnessError, PluginError, UsageError

PluginOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--plugin",
        metavar="PATH_OR_MODULE",
        help="Load a plugin from a .py file or an importable module for this command (repeatable).",
    ),
]

DbOption = Annotated[
    Optional[Path],
    typer.Option(
        "--db",
        envvar="HARNESS_DB",
        metavar="PATH",
        dir_okay=False,
        help="Leaderboard database file. Default: $HARNESS_DB if set, else leaderboard.db in the working directory.",
        show_default=False,
    ),
]

# The shape of one run, shared by `harness run` and `harness sweep` (validated in harness.config).
IterationsOption = Annotated[int, typer.Option("--iterations", "-k", help="DPO iterations (>= 1).")]
BudgetOption = Annotated[int, typer.Option("--budget", help="Total gold labels of a run, over all its iterations (> 0).")]
KeepOption = Annotated[float, typer.Option("--keep", help="Share of instance pairs kept at corpus level, in (0, 1].")]
ResponsesOption = Annotated[int, typer.Option("--responses", "-n", help="Responses sampled per prompt (>= 2).")]

ReferenceOption = Annotated[
    str,
    typer.Option(
        "--reference",
        help="DPO reference each iteration trains against: fixed (pi_ref, the SFT model; the paper's "
        "default) or previous (pi_{i-1}). Selection scores use the reference the policy was trained with.",
    ),
]

# Running many runs: shared by `harness sweep` and `harness study run`.
JobsOption = Annotated[
    Optional[int], typer.Option("--jobs", "-j", min=1, help="Runs in parallel. Default: the number of cores (divided "
                                                            "by --cpus-per-run).")
]
ExecutorOption = Annotated[str, typer.Option(
    "--executor", help="Where runs execute: local (processes), ray, submitit (SLURM or local jobs), or a plugin's.")]
CpusPerRunOption = Annotated[int, typer.Option(
    "--cpus-per-run", min=1, help="CPUs (torch threads) each run gets; with --executor ray, asked of Ray.")]
GpusPerRunOption = Annotated[float, typer.Option(
    "--gpus-per-run", min=0.0, help="GPUs Ray gives each run (--executor ray; fractions share a GPU). Default 0.")]
RayAddressOption = Annotated[Optional[str], typer.Option(
    "--ray-address", metavar="ADDRESS", help="The Ray cluster to run on (--executor ray), e.g. ray://head:10001. "
                                             "Default: $RAY_ADDRESS, else a local Ray.")]


def rerun_advice(choice) -> str:
    """What a re-run of a sweep or study that did not end cleanly will do with ``choice``'s runs."""
    if choice.workers_record:
        return "Run the same command again to resume interrupted runs and redo failed ones (finished runs are skipped)."
    return (f"Run the same command again to redo interrupted and failed runs (finished runs are skipped; "
            f"{choice.name} workers do not resume runs).")


def executor_choice(registry, executor: str, cpus_per_run: int = 1, gpus_per_run: float = 0.0,
                    ray_address: str | None = None):
    """The :class:`~harness.experiments.executors.ExecutorChoice` of the flags: the executor of that name in
    ``registry``, checked usable here and able to place runs so (exit 2 otherwise)."""
    from harness.experiments.executors import ExecutorChoice, Placement, executor_class

    placement = Placement(cpus_per_run=cpus_per_run, gpus_per_run=gpus_per_run, address=ray_address)
    cls = executor_class(executor, registry)
    cls.check_placement(placement)
    return ExecutorChoice(cls, placement)
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Validate, print the plan, run nothing.")]


def plugins_for_workers(specs: list[str] | None) -> list[str]:
    """``--plugin`` specs as worker processes can load them: plugin files by absolute path."""
    return [str(Path(spec).resolve()) if spec.endswith(".py") or Path(spec).exists() else spec
            for spec in specs or ()]


# Experiment tracking (harness.tracking): shared by `harness run` and `harness sweep`; not part of a run's config.
ReportToOption = Annotated[
    Optional[list[str]],
    typer.Option(
        "--report-to",
        metavar="BACKEND",
        help="Send each run's metrics to a tracker (TRL's names): tensorboard, wandb, or none (the default). "
        "Repeatable or a comma list. The loop's per-iteration metrics and the trainer's per-step log go to one "
        "tracker run named by the run id (tagged with the sweep id). Each backend is an extra: "
        "pip install 'pairsel-harness[tensorboard]'. Changes no number and not the config hash.",
        show_default=False,
    ),
]
LoggingDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--logging-dir",
        metavar="DIR",
        file_okay=False,
        help="Where trackers write (TensorBoard event files in DIR/RUN_ID; W&B's files there unless $WANDB_DIR "
        "is set). Default: the run's directory (RUN_DIR/tensorboard).",
        show_default=False,
    ),
]


def tracking_options(report_to: list[str] | None, logging_dir: Path | None) -> tuple[tuple[str, ...], Path | None]:
    """``--report-to`` and ``--logging-dir`` checked before anything is made: exit 2 naming the fix (an unknown
    backend, one whose extra is not installed, a folder that cannot be written)."""
    from harness.experiments.locations import check_output_dir
    from harness.tracking import parse_report_to

    with cli_errors():
        backends = parse_report_to(report_to)
        if logging_dir is not None:
            if not backends:
                raise UsageError("--logging-dir is where trackers write; it needs --report-to tensorboard or wandb")
            logging_dir = logging_dir.resolve()
            check_output_dir(logging_dir, "the tracking folder", "--logging-dir")
    return backends, logging_dir


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON to stdout (rich output stays on stderr).")
]


def stderr_console():
    from rich.console import Console

    return Console(stderr=True, emoji=False)  # ":100:" in a weights label is text, not an emoji code


def resolve_db(db: Path | None) -> Path:
    """``--db`` if given, else the leaderboard's default (``$HARNESS_DB`` or ./leaderboard.db).

    Exit 2 when the path could never hold a database (:func:`harness.experiments.locations.check_database_path`)
    or ``$HARNESS_DB_TIMEOUT``, which every open of the database reads, is not a number of seconds.
    """
    from harness.experiments.locations import check_database_path
    from leaderboard.store import busy_timeout, default_db_path

    path = db if db is not None else default_db_path()
    try:
        busy_timeout()
        check_database_path(path)
    except (ValueError, UsageError) as exc:  # both name the fix
        stderr_console().print(f"[bold red]Error:[/] {_escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    return path


def writable_db(db: Path | None) -> Path:
    """:func:`resolve_db`, checked for writing before anything is made: exit 2 naming the path and the fix
    when the database or the runs directory beside it cannot be used (:mod:`harness.experiments.locations`)."""
    from harness.experiments.locations import check_locations
    from harness.experiments.runner import runs_root

    db_path = resolve_db(db)
    with cli_errors():
        check_locations(db_path, runs_root(db_path))
    if not db_path.parent.exists():  # made on the first write; said now, so that a typo in --db is seen
        stderr_console().print(f"note: {db_path.parent} does not exist; it will be made for the database",
                               style="dim", soft_wrap=True)
    return db_path


@contextlib.contextmanager
def cli_errors() -> Iterator[None]:
    """Turn the harness's own errors into a message on stderr and exit code 2."""
    try:
        yield
    except (UsageError, PluginError) as exc:
        stderr_console().print(f"[bold red]Error:[/] {_escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from None
    except HarnessError as exc:
        stderr_console().print(f"[bold red]Error:[/] {_escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(1) from None


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM stops the command like Ctrl-C (runs end ``interrupted``, resumable).

    Outside the main thread (where handlers cannot be set) SIGTERM is left alone.
    """
    import signal

    try:
        previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    except ValueError:
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum, frame):
    raise KeyboardInterrupt
