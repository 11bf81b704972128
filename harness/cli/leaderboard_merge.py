"""``harness leaderboard merge``: fold leaderboard databases from other machines into this one.

Registered on the leaderboard sub-app by :func:`register`, called where the CLI is built
(:func:`harness.cli.build_app`) with the leaderboard's way of reading an option typed before the subcommand.
The merge itself is :mod:`leaderboard.merge`; this module parses, reports and maps errors to exit codes.
Importing it costs typer only.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from collections.abc import Callable
from typing import Annotated, Any

import typer

from harness.cli.common import DbOption, JsonOption, cli_errors, resolve_db, stderr_console, writable_db

MERGE_HELP = """\
Fold the leaderboards of other machines into this one (--db).

Every run keeps its id and provenance and comes with its iteration rows and
its labels (and their texts); the judgement cache comes along too. A run the
target already has is skipped when it is identical (the same run row, config
hash, seeds, status and every number, and the same iteration and label rows)
and refused when it is not: the same id with other content is a conflict, and
nothing of that file is merged (exit 2, naming the run and both files). Runs
that were still running, awaiting labels, failed or interrupted are copied as
they stand and listed: merge again after they finish and they conflict, so
merge once they are done.

Each file is merged in one transaction: an error, Ctrl-C or a killed process
leaves the target as it was before that file (the files before it stay
merged). A missing file, one that is not SQLite, another program's database,
one from a newer harness, or the target itself: exit 2, nothing written.
--dry-run reports what would be merged and writes nothing.

[bold]Example[/]

  harness leaderboard merge laptop.db server.db --db all.db
"""


def register(app: typer.Typer, parent_option: Callable[[typer.Context, str, Any], Any]) -> None:
    """Add ``merge`` to the ``harness leaderboard`` sub-app; ``parent_option(ctx, name, value)`` gives an
    option typed before the subcommand (``harness leaderboard --db X merge``) where the command has none."""

    @app.command("merge", help=MERGE_HELP, short_help="Merge leaderboards from other machines into this one.")
    def merge(
        ctx: typer.Context,
        sources: Annotated[list[Path], typer.Argument(metavar="OTHER.db...",
                                                      help="Leaderboard databases to merge in.")],
        db: DbOption = None,
        dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be merged; write nothing.")] = False,
        json_output: JsonOption = False,
    ) -> None:
        run_merge(sources, parent_option(ctx, "db", db), dry_run, parent_option(ctx, "json_output", json_output))


def run_merge(sources: list[Path], db: Path | None, dry_run: bool, json_output: bool) -> None:
    """The ``merge`` command once its options are known: merge, report, exit 2 naming the file on refusal."""
    from leaderboard.merge import MergeError, merge as merge_into

    target = resolve_db(db) if dry_run else writable_db(db)
    console = stderr_console()
    with cli_errors():
        try:
            reports = merge_into(target, sources, dry_run=dry_run)
        except MergeError as exc:
            _done_before(console, getattr(exc, "merged", []), target)
            _fail(console, str(exc))
        except ValueError as exc:  # the target itself: not SQLite, another program's, a newer schema
            _fail(console, str(exc))
        except sqlite3.Error as exc:  # the disk, or a lock held past the busy timeout ($HARNESS_DB_TIMEOUT)
            _done_before(console, getattr(exc, "merged", []), target)
            source = getattr(exc, "source", None)
            _fail(console, f"merging {source or 'into ' + str(target)} failed: {exc}; {target} holds no part of "
                  f"{source or 'it'}", code=1)
        except KeyboardInterrupt as exc:
            _done_before(console, getattr(exc, "merged", []), target)
            source = getattr(exc, "source", "the file being merged")
            _fail(console, f"interrupted while merging {source}: rolled back, {target} holds no part of it",
                  code=130)
    verb = "would be added" if dry_run else "added"
    for report in reports:
        rows = report.rows_added
        console.print(
            f"{report.source}: {len(report.runs_added)} run(s) {verb}, {len(report.runs_identical)} identical "
            f"run(s) skipped; {rows.get('iterations', 0)} iteration row(s), {rows.get('labels', 0)} label(s), "
            f"{rows.get('texts', 0)} text(s) and {rows.get('judgements', 0)} judgement(s) {verb}",
            highlight=False, soft_wrap=True)
        if report.unfinished:
            listed = ", ".join(f"{run_id} ({status})" for run_id, status in report.unfinished)
            console.print(f"note: copied unfinished, as they stand: {listed}; if they change on their machine, "
                          "merging it again conflicts", style="dim", highlight=False, soft_wrap=True)
        if report.ignored_tables:
            console.print(f"note: tables the harness did not make were left out: {', '.join(report.ignored_tables)}",
                          style="dim", highlight=False, soft_wrap=True)
    if dry_run:
        console.print(f"dry run: nothing was written to {target}", style="dim", highlight=False, soft_wrap=True)
    elif reports:
        console.print(f"merged into {target}", highlight=False, soft_wrap=True)
    if json_output:
        typer.echo(json.dumps({"target": str(target), "dry_run": dry_run,
                               "sources": [report.counts() for report in reports]}, indent=1))


def _done_before(console, reports, target: Path) -> None:
    for report in reports:
        console.print(f"{report.source}: merged into {target} before the error ({len(report.runs_added)} run(s) "
                      "added); it stays merged", highlight=False, soft_wrap=True)


def _fail(console, message: str, code: int = 2) -> None:
    from rich.markup import escape

    console.print(f"[bold red]Error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)
