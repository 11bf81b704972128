"""``harness label``: the round trip with people who label pairs (``--annotator external``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli.common import DbOption, JsonOption, cli_errors, resolve_db, stderr_console

LABEL_HELP = """\
Labels from people: import them, see what is missing, hand pairs to Label Studio.

A run with --annotator external stops at each annotation step and writes the
selected pairs to RUN_DIR/iteration-<i>/to-label.jsonl, one per line:
pair_id, prompt, response_a, response_b (which response is shown as "a" is
randomised per pair; the harness undoes it on import). Label each pair a, b or
tie, then:

[bold]Examples[/]

  harness label status r1a2b3c4d5
  harness label import r1a2b3c4d5 labels.jsonl       # pair_id,label[,annotator]
  harness label import r1a2b3c4d5 labels.csv
  harness label labelstudio r1a2b3c4d5 --out tasks.json   # tasks for a Label Studio project
  harness label import r1a2b3c4d5 project-export.json     # Label Studio's JSON export
  harness run --resume r1a2b3c4d5
"""

label_app = typer.Typer(help=LABEL_HELP, no_args_is_help=True, rich_markup_mode="rich")
RunIdArgument = Annotated[str, typer.Argument(metavar="RUN_ID", help="The run (harness leaderboard --all shows ids).")]


def open_run(db_path: Path, run_id: str):
    from harness.errors import UnknownNameError, UsageError
    from leaderboard.store import Leaderboard

    if not db_path.exists():
        raise UsageError(f"no leaderboard database at {db_path}; pass the --db the run was recorded in")
    board = Leaderboard(db_path, create=False)
    run = board.get_run(run_id)
    if run is None:
        raise UnknownNameError("run", run_id, [r["id"] for r in board.runs(status=None)])
    return board, run


@label_app.command("status")
def status_command(run_id: RunIdArgument, db: DbOption = None, as_json: JsonOption = False) -> None:
    """Labels per iteration: requested, labelled, ties, missing, and who gave them."""
    from rich.table import Table

    from leaderboard.labels import status

    with cli_errors():
        board, run = open_run(resolve_db(db), run_id)
    rows = status(board, run_id)
    if as_json:
        typer.echo(json.dumps({"run_id": run_id, "status": run["status"], "iterations": [
            {"iteration": r.iteration, "requested": r.requested, "labelled": r.labelled, "ties": r.ties,
             "missing": r.missing, "source": r.source} for r in rows]}))
        return
    table = Table(title=f"labels of run {run_id} ({run['status']})")
    for column in ("iteration", "requested", "labelled", "ties", "missing", "source"):
        table.add_column(column, justify="left" if column == "source" else "right")
    for r in rows:
        missing = f"[bold yellow]{r.missing}[/]" if r.missing else "0"
        table.add_row(str(r.iteration), str(r.requested), str(r.labelled), str(r.ties), missing, r.source)
    console = stderr_console()
    console.print(table)
    if not rows:
        console.print("no labels recorded for this run yet")


@label_app.command("import")
def import_command(
    run_id: RunIdArgument,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="JSONL, CSV or Label Studio JSON export.")],
    file_format: Annotated[str, typer.Option("--format", help="auto, jsonl, csv or labelstudio.")] = "auto",
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """Import labels for pairs a run handed out; all or nothing, and a second import changes nothing.

    Each label is a, b or tie for the pair as shown in to-label.jsonl. The
    whole file is checked first (unknown or repeated pair_id, a label outside
    a / b / tie, a missing column, a malformed line, pairs of another run):
    one problem and nothing is written. A partial file is fine: the count
    still missing is shown.
    """
    from harness.errors import UsageError
    from harness.experiments.label_files import read_label_file
    from leaderboard.labels import LabelImportError, import_labels

    db_path = resolve_db(db)
    with cli_errors():
        board, _ = open_run(db_path, run_id)
        items = read_label_file(file, file_format)
        try:
            result = import_labels(board, run_id, items, source_file=str(file))
        except LabelImportError as exc:
            raise UsageError(str(exc)) from None
    missing = sum(result.missing.values())
    if as_json:
        typer.echo(json.dumps({"run_id": run_id, "written": result.written, "unchanged": result.unchanged,
                               "missing": {str(k): v for k, v in result.missing.items()}}))
    console = stderr_console()
    console.print(f"imported {result.written} label(s) for run {run_id}"
                  + (f"; {result.unchanged} already there, unchanged" if result.unchanged else ""))
    if missing:
        where = ", ".join(f"iteration {i}: {n}" for i, n in sorted(result.missing.items()))
        console.print(f"[yellow]{missing} pair(s) still missing a label[/] ({where})")
    else:
        console.print(f"every pair is labelled: harness run --resume {run_id} --db {db_path}")


@label_app.command("labelstudio")
def labelstudio_command(
    run_id: RunIdArgument,
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="Where the Label Studio tasks (JSON) go.")],
    iteration: Annotated[
        Optional[int],
        typer.Option("--iteration", min=1, help="Which iteration's pairs. Default: the one awaiting labels."),
    ] = None,
    db: DbOption = None,
) -> None:
    """Write the pairs out for labelling as Label Studio tasks, and print the labelling interface.

    Create a Label Studio project with the printed labelling config, import
    the tasks file, label, export the project as JSON, and import that file
    with harness label import: the left text is response_a, the right one
    response_b, and the "tie" choice is a tie.
    """
    from harness.experiments.labels import TO_LABEL, iteration_dir
    from harness.errors import UsageError
    from harness.experiments.label_files import LABELSTUDIO_CONFIG, labelstudio_tasks
    from harness.experiments.runner import runs_root
    from leaderboard.labels import status

    db_path = resolve_db(db)
    with cli_errors():
        board, run = open_run(db_path, run_id)
        if iteration is None:
            waiting = [s.iteration for s in status(board, run_id) if s.missing]
            if not waiting:
                raise UsageError(f"run {run_id} awaits no labels; pass --iteration to export an earlier one")
            iteration = waiting[0]
        to_label = iteration_dir(Path(run.get("runs_root") or runs_root(db_path)) / run_id, iteration) / TO_LABEL
        if not to_label.exists():
            raise UsageError(f"run {run_id} handed out no pairs for iteration {iteration} (no {to_label})")
        tasks = labelstudio_tasks(to_label)
    from harness.experiments.labels import write_atomically

    write_atomically(out, lambda handle: handle.write(json.dumps(tasks, ensure_ascii=False, indent=1)))
    console = stderr_console()
    console.print(f"wrote {len(tasks)} Label Studio task(s) to {out}. Labelling interface (Settings → Labeling Interface → Code):")
    typer.echo(LABELSTUDIO_CONFIG)
