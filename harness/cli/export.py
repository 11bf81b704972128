"""``harness export``: a run's labelled pairs as a preference dataset other tools read as they are."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

from harness.cli.common import DbOption, cli_errors, resolve_db, stderr_console

EXPORT_HELP = """\
Export what a run paid for, in formats other tools read.

[bold]Examples[/]

  harness export preferences r1a2b3c4d5 --out prefs.jsonl
  harness export preferences r1a2b3c4d5 --format parquet --out prefs.parquet --iteration 1
"""

export_app = typer.Typer(help=EXPORT_HELP, no_args_is_help=True, rich_markup_mode="rich")
PREFERENCE_FORMATS = ("jsonl", "parquet")


@export_app.command("preferences")
def preferences_command(
    run_id: Annotated[str, typer.Argument(metavar="RUN_ID", help="The run whose labelled pairs to export.")],
    out: Annotated[Path, typer.Option("--out", metavar="FILE", help="The file to write.")],
    file_format: Annotated[str, typer.Option("--format", help="jsonl or parquet.")] = "jsonl",
    iteration: Annotated[
        Optional[list[int]], typer.Option("--iteration", help="Only these iterations (repeatable). Default: all.")
    ] = None,
    db: DbOption = None,
) -> None:
    """The run's labelled pairs as prompt / chosen / rejected rows (ties left out).

    TRL's DPOTrainer and datasets.load_dataset("json" or "parquet", ...) read
    the file as it is. Extra columns say where each row came from: pair_id,
    iteration, source (annotator) and annotator (who, when known).
    """
    from harness.cli.label import open_run
    from harness.errors import UsageError
    from leaderboard.labels import preference_rows

    with cli_errors():
        if file_format not in PREFERENCE_FORMATS:
            raise UsageError(f"--format must be one of {', '.join(PREFERENCE_FORMATS)}; got {file_format!r}")
        board, _ = open_run(resolve_db(db), run_id)
        rows = preference_rows(board, run_id, iteration)
        if not rows:
            raise UsageError(f"run {run_id} has no labelled pairs to export"
                             + (f" in iteration(s) {', '.join(map(str, iteration))}" if iteration else ""))
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.partial")  # never a half-written file under the asked name
        try:
            if file_format == "jsonl":
                with tmp.open("w", encoding="utf-8") as handle:
                    for row in rows:
                        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            else:
                _write_parquet(rows, tmp)
            tmp.replace(out)
        finally:
            tmp.unlink(missing_ok=True)
    stderr_console().print(f"wrote {len(rows)} preference pair(s) of run {run_id} to {out}")


def _write_parquet(rows: list[dict], path: Path) -> None:
    from harness.errors import UsageError

    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UsageError("--format parquet needs pyarrow: pip install pyarrow (the [hf] extra has it)") from None
    pq.write_table(pa.Table.from_pylist(rows), path)
