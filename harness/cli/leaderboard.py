"""``harness leaderboard``: browse the runs stored in the leaderboard database.

Mounted by the core CLI with ``app.add_typer(leaderboard_app, name="leaderboard")``.
Importing this module stays cheap (typer only): sqlite-utils, rich and the
store are imported inside the commands (DESIGN D6). Tables go to stderr;
stdout carries only ``--json``.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from harness.cli.common import DbOption, resolve_db, stderr_console

NO_RUNS_MESSAGE = "no runs yet: run `harness run` first"

LEADERBOARD_HELP = """\
Rank finished runs by their final win rate.

Each row is one run: its selectors (instance/corpus level; one name when both
levels use the same), budget allocator, testbed, trainer, seed, iterations
and gold labels used; then the final policy's win rate against the testbed's
fixed reference outputs with its standard error, the change (Δ) from the
initial policy pi_0's win rate, mean gold reward, KL(pi || pi_ref), wall time
and when the run finished.

Ranking is by final win rate alone, best first. The ± is one run's
evaluation error, not the spread over seeds (about 0.05 on the synthetic
testbed), so to compare two strategies run both on the same seeds and compare
paired differences; read win rate beside KL, since a strategy that moves the
policy further can look better on win rate alone.

Only finished runs are ranked: --all also lists running, failed and
interrupted runs with their status. --json prints the runs (config included)
as a JSON list on stdout, for scripts. The database is plain SQLite: open it
with `datasette leaderboard.db` or sqlite-utils to browse every column and
the per-iteration table.
"""

SHOW_HELP = """\
Show one run: its setup, final metrics, plugins, config and one row per iteration.

Iteration 0 is the initial policy pi_0. RUN_ID may be a unique prefix of an id
from the table; a failed run shows its traceback.
"""

leaderboard_app = typer.Typer(
    name="leaderboard",
    help=LEADERBOARD_HELP,
    short_help="Rank finished runs by final win rate (see also: show RUN_ID).",
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
)

JsonOption = Annotated[
    bool,
    typer.Option("--json", help="Print a JSON list on stdout instead of the table."),
]


@leaderboard_app.callback()
def leaderboard(
    ctx: typer.Context,
    db: DbOption = None,
    json_output: JsonOption = False,
    show_all: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also list running, failed and interrupted runs (unranked, after the ranked ones).",
        ),
    ] = False,
    limit: Annotated[
        int | None,
        typer.Option("--limit", metavar="N", min=1, help="Show at most N runs (the best N)."),
    ] = None,
    testbed: Annotated[
        str | None,
        typer.Option(
            "--testbed",
            metavar="NAME",
            help="Only runs on this testbed (win rates are comparable within one testbed only).",
        ),
    ] = None,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    path = resolve_db(db)
    if not path.exists():
        _no_database(path, json_output)
        return
    from leaderboard.render import print_leaderboard, to_json

    with _open(path) as lb:
        runs = lb.runs(status=None if show_all else "finished", testbed=testbed, limit=limit)
        unfinished = 0 if show_all else len(lb.runs(status=None, testbed=testbed)) - len(
            lb.runs(status="finished", testbed=testbed)
        )
    if json_output:
        typer.echo(to_json(runs))
        return
    console = stderr_console()
    if not runs:
        where = f" on testbed {testbed!r}" if testbed else ""
        console.print(f"no finished runs{where} in {path}")
        if unfinished:
            console.print(f"--all lists {unfinished} running, failed or interrupted run(s)")
        else:
            console.print(NO_RUNS_MESSAGE)
        return
    print_leaderboard(runs, console, show_status=show_all, title=f"leaderboard: {path}")
    if unfinished:
        console.print(
            f"{unfinished} unfinished run(s) not shown (running, failed or interrupted): --all",
            style="dim",
        )


@leaderboard_app.command("show", help=SHOW_HELP)
def show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A run id from the table.")],
    db: DbOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the run and its iterations as one JSON object on stdout.")
    ] = False,
) -> None:
    if db is None and ctx.parent is not None:
        db = ctx.parent.params.get("db")
    path = resolve_db(db)
    if not path.exists():
        _error(f"no database at {path}; {NO_RUNS_MESSAGE}", code=1)
    with _open(path) as lb:
        run = lb.get_run(run_id)
        if run is None:
            ids = [r["id"] for r in lb.runs(status=None)]
            matches = [i for i in ids if i.startswith(run_id)]
            if len(matches) == 1:
                run = lb.get_run(matches[0])
            else:
                _error(_unknown_run(run_id, ids, matches, path), code=1)
        iterations = lb.iterations(run["id"])
    if json_output:
        typer.echo(json.dumps({**run, "iteration_rows": iterations}, indent=2, ensure_ascii=False))
        return
    _print_run(run, iterations, stderr_console())


# -- helpers -------------------------------------------------------------------


def _no_database(path: Path, json_output: bool) -> None:
    if json_output:
        typer.echo("[]")
    typer.echo(f"{NO_RUNS_MESSAGE} (no database at {path})", err=True)


def _error(message: str, code: int) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _open(path: Path):
    """The leaderboard at an existing path; a friendly exit 2 if it is not one."""
    from leaderboard.store import Leaderboard

    try:
        return Leaderboard(path, create=False)
    except (ValueError, IsADirectoryError, FileNotFoundError) as exc:
        _error(str(exc), code=2)


def _unknown_run(run_id: str, ids: list[str], matches: list[str], path: Path) -> str:
    if len(matches) > 1:
        return f"run id prefix {run_id!r} is ambiguous: {', '.join(sorted(matches))}"
    message = f"no run {run_id!r} in {path}"
    close = difflib.get_close_matches(run_id, ids, n=3, cutoff=0.6)
    if close:
        message += f"; did you mean {' or '.join(close)}?"
    return message


_SETUP_KEYS = (
    "status", "testbed", "instance_selector", "corpus_selector", "allocator", "trainer",
    "scorer_columns", "seed", "world_seed", "iterations", "budget", "keep", "n_responses",
    "config_hash", "git_commit", "harness_version", "command", "started_at", "finished_at",
)
_HIDDEN_KEYS = {"id", "config", "plugins", "versions", "error"}


def _print_run(run: dict[str, Any], iterations: list[dict[str, Any]], console: Any) -> None:
    from rich import box
    from rich.table import Table

    from leaderboard.render import format_wall

    console.print(f"run {run['id']}", style="bold")
    facts = Table(box=None, show_header=False, pad_edge=False)
    facts.add_column(style="dim", no_wrap=True)
    facts.add_column(overflow="fold")
    for key in _SETUP_KEYS:
        if run.get(key) is not None:
            facts.add_row(key, str(run[key]))
    for key, value in run.items():  # final metrics and any later columns
        if key not in _SETUP_KEYS and key not in _HIDDEN_KEYS and value is not None:
            shown = format_wall(value) if key == "wall_seconds" else _cell(value)
            facts.add_row(key, shown)
    for key in ("plugins", "versions", "config"):
        if run.get(key):
            facts.add_row(key, json.dumps(run[key], sort_keys=True))
    console.print(facts)
    if run.get("error"):
        console.print("error:", style="bold red")
        console.print(run["error"], markup=False, highlight=False)
    if not iterations:
        console.print("no iterations recorded", style="dim")
        return
    # Few iterations, many metrics: one row per metric, one column per iteration.
    metrics = [
        key
        for key in iterations[0]
        if key not in ("run_id", "recorded_at", "iteration")
        and any(row.get(key) is not None for row in iterations)
    ]
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, title="per iteration (0 = pi_0)", title_justify="left")
    table.add_column("metric", no_wrap=True, overflow="ellipsis")
    for row in iterations:
        table.add_column(str(row["iteration"]), justify="right", no_wrap=True)
    for key in metrics:
        table.add_row(key, *(_cell(row.get(key)) for row in iterations))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    return str(value)
