"""``harness leaderboard``: browse, compare, plot and export the runs in the leaderboard database.

Mounted by the core CLI with ``app.add_typer(leaderboard_app, name="leaderboard")``.
Importing this module stays cheap (typer only): the store, rich, and for
``plot`` matplotlib and numpy, are imported inside the commands
(docs/internals/architecture.md#heavy-imports-and-the-two-output-streams).
Tables and messages go to stderr; stdout carries only ``--json`` and ``--csv``.

Every column a user names (``--by``, ``--sort``, ``--metric``) is checked
against the database's own schema before it reaches SQL; every value is a SQL
parameter (see ``leaderboard/query.py``).
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from harness.cli.common import DbOption, cli_errors, resolve_db, stderr_console

NO_RUNS_MESSAGE = "no runs yet: run `harness run` first"

LEADERBOARD_HELP = """\
Rank strategies (or single runs) by their final win rate.

By default each row is one strategy: the runs that share instance and corpus
selector, allocator, testbed, trainer and every other option (the stored
config_hash: the config without its seeds), so they differ only by their
seeds. A row shows how many seeds ran, the mean ± std over those seeds of the
final win rate against the testbed's fixed reference outputs, of the gold
reward and of KL(pi || pi_ref), and the mean gold labels used. The config
column is the hash's start (accepted by `compare --baseline`); settings lists
the options that differ between the rows shown.

The ± here is the spread over seeds (about 0.05 win rate on the synthetic
testbed, as large as most effects), so two strategies whose rows overlap may
still differ reliably: `harness leaderboard compare --baseline random` gives
paired differences over common seeds. Read win rate beside KL: a strategy that
moves the policy further can look better on win rate alone.

--by FIELDS groups by other columns instead (e.g. --by instance_selector,allocator;
`selector` means both selector levels); --by run shows one row per run, with
its own evaluation standard error. --sort orders by any shown column (numbers
high first, text A-Z; --reverse flips). Filters: --testbed, --sweep,
--selector (either level), --allocator, --status (default finished; --all =
--status all). --json / --csv print the rows on stdout for scripts. The
table fits the terminal: shared values move into its title, then the
least useful columns are left out (a note names them; names are never cut);
--wide shows every column.

Subcommands: show RUN_ID, compare, plot, export, merge, serve (the leaderboard
in a web browser, read-only; the browse extra) and publish (a static site to
share). The database is plain SQLite: any SQLite tool reads it.
"""

SHOW_HELP = """\
Show one run: setup, final metrics, provenance, config, and one column per iteration.

Provenance is the git commit, harness version, command line, the plugin and
version behind every component, and the library versions. The per-iteration
table (iteration 0 is the initial policy pi_0) groups the evaluation (win
rate, gold reward, KL), the budget, the selected-pair diagnostics (mean
|margin|, beta·margin quantiles, mean DPO weight, ranking accuracy, label
noise, selected-data KL), training and the time per stage. RUN_ID may be a
unique prefix of an id; a failed run shows its traceback.
"""

COMPARE_HELP = """\
Paired differences of each strategy against a baseline, over common seeds.

Why paired: the seed-to-seed spread of a strategy's final win rate (about
0.05 on the synthetic testbed) is as large as most effects, so means ± std of
two strategies overlap even when one beats the other on every seed. Runs with
the same seed and world seed share the world, pi_0 and the iteration-1 prompts
and samples (common random numbers), so their difference cancels most of that
spread. For each strategy this shows the mean and std of the per-seed
differences over the (seed, world_seed) pairs both have, n, a t-interval of
the mean (Student t, --confidence, default 95%) and whether the interval
excludes 0. Claims need >= 10 seeds.

Baseline rule: --baseline NAME (a selector) compares each strategy with the
strategy that uses NAME at both selection levels and whose config is
otherwise equal (testbed, allocator, trainer and all their options,
iterations, budget, keep, responses); strategies without one are listed as
unmatched. --baseline HASH (a prefix of a config hash, the config column of
`harness leaderboard`) compares every strategy on that strategy's testbed
with it, whatever their other options.
"""

PLOT_HELP = """\
Write PNG figures of the strategies (matplotlib, no display needed).

win_rate_vs_labels.png: win rate against cumulative gold labels, one line per
strategy (mean over seeds) with a ± std band; curves.png: win rate, gold reward
and KL(pi || pi_ref) per iteration, one panel each; frontier.png: gold reward
against KL, each run a point coloured by strategy, with the strategy's mean
path over iterations (compare strategies on gold reward against KL, not on win
rate alone). Takes the filters and --by of `harness leaderboard`; --limit keeps
the best N strategies (default 10).
"""

EXPORT_HELP = """\
Write the runs and their iterations to files, for pandas, R or a spreadsheet.

--format csv writes two files, <stem>-runs.csv and <stem>-iterations.csv
(JSON columns such as config_json as text); --format json writes one file
{"runs": [...], "iterations": [...]} with the JSON columns parsed. The format
defaults to --out's suffix. Unlike the tables, export takes every status
unless --status says otherwise; the other filters are those of
`harness leaderboard`.
"""

leaderboard_app = typer.Typer(
    name="leaderboard",
    help=LEADERBOARD_HELP,
    short_help="Rank strategies by final win rate (also: show, compare, plot, export).",
    invoke_without_command=True,
    no_args_is_help=False,
    add_completion=False,
)

# -- shared options ------------------------------------------------------------------

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print JSON on stdout instead of the table.")
]
CsvOption = Annotated[
    bool, typer.Option("--csv", help="Print CSV on stdout instead of the table.")
]
TestbedOption = Annotated[
    Optional[str],
    typer.Option("--testbed", metavar="NAME",
                 help="Only runs on this testbed (win rates are comparable within one testbed only)."),
]
SweepOption = Annotated[
    Optional[str],
    typer.Option("--sweep", metavar="SWEEP_ID", help="Only runs recorded by this sweep (column sweep_id)."),
]
SelectorOption = Annotated[
    Optional[str],
    typer.Option("--selector", metavar="NAME",
                 help="Only runs that use this selector at the instance or the corpus level."),
]
AllocatorOption = Annotated[
    Optional[str], typer.Option("--allocator", metavar="NAME", help="Only runs with this allocator.")
]
StatusOption = Annotated[
    Optional[str],
    typer.Option("--status", metavar="STATUS",
                 help="finished (default), running, failed, interrupted or all.", show_default=False),
]
WideOption = Annotated[
    bool,
    typer.Option("--wide", help="Show every column, uncut, however wide the terminal (by default the table fits "
                                "it: low-priority columns are left out, and a note names them)."),
]
ByOption = Annotated[
    Optional[str],
    typer.Option("--by", metavar="FIELDS",
                 help="Group by these comma-separated run columns instead of by strategy; `run`: one row per run."),
]


def parent_option(ctx: typer.Context, name: str, value: Any) -> Any:
    """A subcommand option, else the same option given before the subcommand.

    Typed on the command line beats read from the environment (``--db`` and ``$HARNESS_DB``) wherever it
    was typed: ``harness leaderboard --db X compare`` reads X even with ``HARNESS_DB`` set.
    """
    def typed(context) -> bool:  # by name: typer may bring its own copy of click's ParameterSource
        return getattr(context.get_parameter_source(name), "name", None) == "COMMANDLINE"

    if ctx.parent is None:
        return value
    if typed(ctx):
        return value
    if typed(ctx.parent):
        return ctx.parent.params.get(name, value)
    if value not in (None, False):
        return value
    return ctx.parent.params.get(name, value)


def _filters(status: str | None, testbed, sweep, selector, allocator, *, default_status: str = "finished"):
    from harness.errors import UnknownNameError
    from leaderboard.query import STATUS_CHOICES, Filters

    status = default_status if status is None else status
    if status not in STATUS_CHOICES:
        raise UnknownNameError("status", status, STATUS_CHOICES)
    return Filters(None if status == "all" else status, testbed, sweep, selector, allocator)


@leaderboard_app.callback()
def leaderboard(
    ctx: typer.Context,
    db: DbOption = None,
    json_output: JsonOption = False,
    csv_output: CsvOption = False,
    by: ByOption = None,
    sort: Annotated[
        Optional[str],
        typer.Option("--sort", metavar="COLUMN",
                     help="Order by this column (a shown column, or any run column with --by run)."),
    ] = None,
    reverse: Annotated[
        bool, typer.Option("--reverse", help="Reverse the order (numbers low first, text Z-A).")
    ] = False,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list running, failed and interrupted runs (= --status all).")
    ] = False,
    status: StatusOption = None,
    limit: Annotated[
        Optional[int],
        typer.Option("--limit", metavar="N", min=1, help="Show at most N rows (the first N in the order shown)."),
    ] = None,
    testbed: TestbedOption = None,
    sweep: SweepOption = None,
    selector: SelectorOption = None,
    allocator: AllocatorOption = None,
    wide: WideOption = False,
) -> None:
    if ctx.invoked_subcommand is not None:
        return
    if json_output and csv_output:
        _error("--json and --csv both print on stdout: pick one", code=2)
    path = resolve_db(db)
    if not path.exists():
        _no_database(path, json_output, csv_output)
        return
    with cli_errors():
        if show_all:
            if status not in (None, "all"):
                _error(f"--all means --status all; it conflicts with --status {status}", code=2)
            status = "all"
        filters = _filters(status, testbed, sweep, selector, allocator)
        with _open(path) as lb:
            from leaderboard.query import parse_by, table_columns

            fields = parse_by(by, table_columns(lb.conn, "runs"))
            if fields is None:
                _runs_view(lb, path, filters, sort, reverse, limit, json_output, csv_output, wide)
            else:
                _groups_view(lb, path, filters, fields, sort, reverse, limit, json_output, csv_output, wide)


def _runs_view(lb, path, filters, sort, reverse, limit, json_output, csv_output, wide=False) -> None:
    from leaderboard.query import check_name, is_numeric, select_runs, table_columns
    from leaderboard.render import print_leaderboard, to_json
    from leaderboard.store import decode_row

    columns = table_columns(lb.conn, "runs")
    if sort is not None:
        check_name(sort, columns, "sort column")
    descending = is_numeric(columns.get(sort or "final_win_rate", "REAL"))
    rows, notes = select_runs(lb.conn, filters, sort=sort, descending=descending != reverse, limit=limit)
    if csv_output:
        from leaderboard.export import csv_text

        typer.echo(csv_text(rows), nl=False)
        return
    runs = [decode_row(row) for row in rows]
    if json_output:
        typer.echo(to_json(runs))
        return
    console = stderr_console()
    if not runs:
        _nothing(lb, path, filters, console, notes)
        return
    caption = None
    if sort is not None or reverse:
        order = f"{'high' if descending != reverse else 'low'} first" if is_numeric(
            columns.get(sort or "final_win_rate", "")) else ("Z-A" if reverse else "A-Z")
        caption = (f"sorted by {sort or 'final_win_rate'}, {order}; ± is the standard error of one "
                   "run's win rate, not seed-to-seed spread")
    print_leaderboard(runs, console, show_status=filters.status is None, title=f"leaderboard: {path}",
                      caption=caption, wide=wide)
    for line in notes:
        console.print(f"note: {line}", style="dim")
    _unfinished_hint(lb, filters, console)


def _groups_view(lb, path, filters, fields, sort, reverse, limit, json_output, csv_output, wide=False) -> None:
    from harness.errors import UnknownNameError
    from leaderboard.query import (
        GROUP_METRICS, STRATEGY_FIELDS, config_settings, configs_for, group_runs,
        group_sort_keys, mark_deployability, select_runs, sort_groups, table_columns,
    )
    from leaderboard.render import group_caption, groups_to_json_list, print_groups

    sort_keys = group_sort_keys(fields)
    if sort is not None and sort not in sort_keys:
        raise UnknownNameError("sort column", sort, sort_keys)
    present = table_columns(lb.conn, "runs")  # metrics added by later versions may be absent in an old database
    metrics = [metric for metric in GROUP_METRICS if metric in present]
    wanted = list(dict.fromkeys(["id", "seed", "world_seed", *fields, *metrics]))
    rows, notes = select_runs(lb.conn, filters, wanted)
    groups = group_runs(rows, fields)
    mark_deployability(lb.conn, groups)  # † on a reference point's selector (harness.reference_point)
    if tuple(fields) == STRATEGY_FIELDS and groups:
        configs = configs_for(lb.conn, [g["run_ids"][0] for g in groups])
        settings = config_settings([configs.get(g["run_ids"][0]) for g in groups])
        for group, setting in zip(groups, settings):
            group["settings"] = setting
    key = sort_keys[sort or "final_win_rate"]
    numeric = _numeric_key(groups, key)
    descending = numeric != reverse
    groups = sort_groups(groups, key, descending=descending)
    if limit is not None:
        groups = groups[:limit]
    payload = groups_to_json_list(groups)
    if json_output:
        typer.echo(json.dumps(payload, indent=2, ensure_ascii=False))
        return
    if csv_output:
        from leaderboard.export import csv_text

        typer.echo(csv_text(payload), nl=False)
        return
    console = stderr_console()
    if not groups:
        _nothing(lb, path, filters, console, notes)
        return
    what = "strategies" if tuple(fields) == STRATEGY_FIELDS else f"groups by {', '.join(fields)}"
    caption = group_caption(fields, sort, descending, numeric)
    print_groups(groups, fields, console, title=f"leaderboard: {path} · {what}", caption=caption,
                 extra_notes=notes, wide=wide)
    _unfinished_hint(lb, filters, console)


def _numeric_key(groups: list[dict[str, Any]], key: str) -> bool:
    return all(isinstance(g.get(key), (int, float)) for g in groups if g.get(key) is not None)


def _unfinished_hint(lb, filters, console) -> None:
    from leaderboard.query import count_runs

    if filters.status != "finished":
        return
    counts = count_runs(lb.conn, filters)
    unfinished = sum(n for status, n in counts.items() if status != "finished")
    if unfinished:
        console.print(
            f"{unfinished} unfinished run(s) not shown (running, failed or interrupted): --all",
            style="dim",
        )


def _nothing(lb, path, filters, console, notes) -> None:
    """Say why nothing matched: no runs at all, only unfinished ones, or a filter value no run has."""
    from harness.errors import close_matches
    from leaderboard.query import count_runs, distinct_values

    described = filters.describe()
    where = f" matching {described}" if described else ""
    status = "" if filters.status is None else f"{filters.status} "
    console.print(f"no {status}runs{where} in {path}")
    for line in notes:
        console.print(f"note: {line}", style="dim")
    for value, columns, kind in (
        (filters.testbed, ("testbed",), "testbed"),
        (filters.selector, ("instance_selector", "corpus_selector"), "selector"),
        (filters.allocator, ("allocator",), "allocator"),
    ):
        if value is None:
            continue
        known = distinct_values(lb.conn, *columns)
        if value not in known:
            hint = f"no run uses {kind} {value!r}"
            matches = close_matches(value, known)
            if matches:
                hint += f"; did you mean {' or '.join(repr(m) for m in matches)}?"
            if known:
                hint += f" ({kind}s in this database: {', '.join(known)})"
            console.print(hint)
    counts = count_runs(lb.conn, filters)
    if not sum(counts.values()):
        if not described:
            console.print(NO_RUNS_MESSAGE)
        return
    if filters.status == "finished":
        unfinished = sum(n for s, n in counts.items() if s != "finished")
        if unfinished:
            console.print(f"--all lists {unfinished} running, failed or interrupted run(s)")
        else:
            console.print(NO_RUNS_MESSAGE)


# -- show ----------------------------------------------------------------------------


@leaderboard_app.command("show", help=SHOW_HELP)
def show(
    ctx: typer.Context,
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="A run id from the table.")],
    db: DbOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the run and its iterations as one JSON object on stdout.")
    ] = False,
    wide: Annotated[
        bool, typer.Option("--wide", help="Show each metric's meaning whole beside the numbers, however wide.")
    ] = False,
) -> None:
    db = parent_option(ctx, "db", db)
    path = resolve_db(db)
    if not path.exists():
        _error(f"no database at {path}; {NO_RUNS_MESSAGE}", code=1)
    with _open(path) as lb:
        run = lb.get_run(run_id)
        if run is None:
            ids = [r for (r,) in lb.conn.execute("select id from runs")]
            matches = [i for i in ids if run_id and i.startswith(run_id)]  # an empty prefix names no run
            if len(matches) == 1:
                run = lb.get_run(matches[0])
            else:
                _error(_unknown_run(run_id, ids, matches, path), code=2)
        iterations = lb.iterations(run["id"])
    if parent_option(ctx, "json_output", json_output):
        typer.echo(json.dumps({**run, "iteration_rows": iterations}, indent=2, ensure_ascii=False))
        return
    from leaderboard.render import print_run

    print_run(run, iterations, stderr_console(), wide=parent_option(ctx, "wide", wide))


# -- compare --------------------------------------------------------------------------


@leaderboard_app.command("compare", help=COMPARE_HELP)
def compare(
    ctx: typer.Context,
    baseline: Annotated[
        str,
        typer.Option("--baseline", metavar="SELECTOR_OR_HASH",
                     help="A selector name (used at both levels) or a config hash prefix."),
    ] = "random",
    metric: Annotated[
        str,
        typer.Option("--metric", metavar="COLUMN",
                     help="A numeric run column: final_win_rate, final_gold_reward, final_kl, delta_win_rate, ..."),
    ] = "final_win_rate",
    confidence: Annotated[
        float, typer.Option("--confidence", metavar="LEVEL", help="Level of the t-interval.")
    ] = 0.95,
    db: DbOption = None,
    json_output: JsonOption = False,
    testbed: TestbedOption = None,
    sweep: SweepOption = None,
    selector: Annotated[
        Optional[str],
        typer.Option("--selector", metavar="NAME",
                     help="Only show strategies that use this selector at either level (baselines are always read)."),
    ] = None,
    allocator: AllocatorOption = None,
    wide: WideOption = False,
) -> None:
    path = resolve_db(parent_option(ctx, "db", db))
    json_output = parent_option(ctx, "json_output", json_output)
    if not path.exists():
        _no_database(path, json_output, False, empty="{}")
        return
    with cli_errors():
        from leaderboard.compare import compare as run_compare
        from leaderboard.query import Filters

        filters = Filters(
            "finished",
            parent_option(ctx, "testbed", testbed), parent_option(ctx, "sweep", sweep),
            parent_option(ctx, "selector", selector), parent_option(ctx, "allocator", allocator),
        )
        with _open(path) as lb:
            result = run_compare(lb.conn, filters, baseline=baseline, metric=metric, confidence=confidence)
            if json_output:
                typer.echo(json.dumps(result, indent=2, ensure_ascii=False))
                return
            console = stderr_console()
            if not result["rows"]:
                _nothing(lb, path, filters, console, result["notes"])
                return
    from leaderboard.render import print_compare

    title = f"paired differences of {metric} vs baseline {baseline!r} ({result['baseline_kind']}): {path}"
    print_compare(result, console, title=title, wide=parent_option(ctx, "wide", wide))


# -- plot -----------------------------------------------------------------------------


@leaderboard_app.command("plot", help=PLOT_HELP)
def plot(
    ctx: typer.Context,
    out: Annotated[
        Path, typer.Option("--out", metavar="DIR", file_okay=False, help="Directory for the PNG files.")
    ] = Path("leaderboard-plots"),
    db: DbOption = None,
    by: ByOption = None,
    limit: Annotated[
        int, typer.Option("--limit", metavar="N", min=1, help="Plot the best N groups by mean final win rate.")
    ] = 10,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the written paths as a JSON list on stdout.")
    ] = False,
    testbed: TestbedOption = None,
    sweep: SweepOption = None,
    selector: SelectorOption = None,
    allocator: AllocatorOption = None,
    status: StatusOption = None,
) -> None:
    path = resolve_db(parent_option(ctx, "db", db))
    if not path.exists():
        _error(f"no database at {path}; {NO_RUNS_MESSAGE}", code=1)
    with cli_errors():
        from leaderboard.query import parse_by, table_columns

        filters = _filters(
            parent_option(ctx, "status", status), parent_option(ctx, "testbed", testbed),
            parent_option(ctx, "sweep", sweep), parent_option(ctx, "selector", selector),
            parent_option(ctx, "allocator", allocator),
        )
        with _open(path) as lb:
            from leaderboard.plots import collect

            fields = parse_by(parent_option(ctx, "by", by), table_columns(lb.conn, "runs"))
            if fields is None:
                _error("plot draws groups of runs: use --by FIELDS or the default (by strategy), not --by run", code=2)
            data = collect(lb.conn, filters, fields, limit=limit)
        console = stderr_console()
        if not data.groups:
            with _open(path) as lb:
                _nothing(lb, path, filters, console, data.notes)
            raise typer.Exit(1)
        try:
            import matplotlib  # noqa: F401  (a core dependency; a broken install gets a clear message)
        except ImportError as exc:
            _error(f"plot needs matplotlib ({exc}); install it with: pip install 'matplotlib>=3.11.2,<4'", code=1)
        from harness.experiments.locations import check_output_dir
        from leaderboard.plots import write_figures

        check_output_dir(out, "the plot directory", "--out")
        paths = write_figures(data, out)
    if json_output:
        typer.echo(json.dumps([str(p) for p in paths]))
    for line in data.notes:
        console.print(f"note: {line}", style="dim")
    console.print(f"{len(data.groups)} group(s), {data.n_runs} run(s):")
    for written in paths:
        console.print(f"  {written}", highlight=False)


# -- export ---------------------------------------------------------------------------


@leaderboard_app.command("export", help=EXPORT_HELP)
def export(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", metavar="PATH", dir_okay=False, help="File to write (CSV: the stem of two files).")],
    fmt: Annotated[
        Optional[str], typer.Option("--format", metavar="csv|json", help="csv or json; default: --out's suffix.")
    ] = None,
    db: DbOption = None,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the written paths as a JSON list on stdout.")
    ] = False,
    testbed: TestbedOption = None,
    sweep: SweepOption = None,
    selector: SelectorOption = None,
    allocator: AllocatorOption = None,
    status: Annotated[
        Optional[str],
        typer.Option("--status", metavar="STATUS", help="all (default), finished, running, failed or interrupted."),
    ] = None,
) -> None:
    path = resolve_db(parent_option(ctx, "db", db))
    if not path.exists():
        _error(f"no database at {path}; {NO_RUNS_MESSAGE}", code=1)
    with cli_errors():
        from leaderboard.export import export_runs, infer_format

        fmt = infer_format(fmt, out)
        filters = _filters(
            parent_option(ctx, "status", status),
            parent_option(ctx, "testbed", testbed), parent_option(ctx, "sweep", sweep),
            parent_option(ctx, "selector", selector), parent_option(ctx, "allocator", allocator),
            default_status="all",
        )
        with _open(path) as lb:
            written, n_runs, n_iterations, notes = export_runs(lb.conn, filters, fmt, out)
    if json_output:
        typer.echo(json.dumps([str(p) for p in written]))
    console = stderr_console()
    for line in notes:
        console.print(f"note: {line}", style="dim")
    console.print(f"exported {n_runs} run(s) and {n_iterations} iteration row(s):")
    for item in written:
        console.print(f"  {item}", highlight=False)


# -- import ---------------------------------------------------------------------------

IMPORT_HELP = """\
Record runs the leaderboard could not take: replay RUN_DIR/unrecorded.jsonl.

When a run cannot write to the leaderboard (the database locked by another
process past the busy timeout, a read-only or full disk), it carries on and
keeps every write it could not make in its run directory; it ends saying so.
This command writes them in. Entries already recorded are skipped, so running
it twice changes nothing.

[bold]Example[/]

  harness leaderboard import runs/r1a2b3c4d5
"""


@leaderboard_app.command("import", help=IMPORT_HELP)
def import_run(
    ctx: typer.Context,
    run_dirs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="Run directories to import.")],
    db: DbOption = None,
) -> None:
    from harness.experiments.journal import replay
    from leaderboard.store import Leaderboard

    path = resolve_db(parent_option(ctx, "db", db))
    console = stderr_console()
    with cli_errors():
        board = Leaderboard(path)
        for run_dir in run_dirs:
            try:
                result = replay(board, run_dir)
            except (FileNotFoundError, ValueError) as exc:
                _error(str(exc), code=2)
            console.print(f"{run_dir}: {len(result.runs)} run(s), {result.iterations} iteration row(s) and "
                          f"{result.labels} label(s) recorded in {path}"
                          + (f"; {result.skipped} entr(ies) were there already" if result.skipped else ""))


# -- helpers -------------------------------------------------------------------------


def _no_database(path: Path, json_output: bool, csv_output: bool, empty: str = "[]") -> None:
    if json_output:
        typer.echo(empty)
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
