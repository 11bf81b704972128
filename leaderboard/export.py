"""Exporting runs and iterations as CSV (two files) or JSON (one file), and CSV text for ``--csv``.

CSV keeps the stored values as they are (JSON columns such as ``config_json``
as text, NULL as an empty cell); JSON parses the JSON columns back (``config``).
Plain Python: csv, json and sqlite3.
"""

from __future__ import annotations

import csv
import datetime
import io
import json
import sqlite3
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

from harness.errors import UsageError
from leaderboard.query import Filters, quote, table_columns, where_sql

__all__ = ["FORMATS", "csv_paths", "csv_text", "export_runs", "infer_format", "write_csv"]

FORMATS = ("csv", "json")


def _cell(value: Any) -> Any:
    if isinstance(value, (list, dict)):
        if all(isinstance(v, (str, int, float)) for v in value) and isinstance(value, list):
            return " ".join(str(v) for v in value)
        return json.dumps(value, ensure_ascii=False)
    return "" if value is None else value


def write_csv(rows: Sequence[Mapping[str, Any]], out: TextIO, columns: Sequence[str] | None = None) -> None:
    """``rows`` as CSV with a header: the union of their keys in first-seen order.

    Lists of plain values become space-separated text, other lists and dicts JSON.
    """
    if columns is None:
        seen: dict[str, None] = {}
        for row in rows:
            seen.update(dict.fromkeys(row))
        columns = list(seen)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    buffer = io.StringIO()
    write_csv(rows, buffer, columns)
    return buffer.getvalue()


def infer_format(fmt: str | None, out: Path) -> str:
    """``fmt`` checked, or the format named by ``out``'s suffix; UsageError otherwise."""
    if fmt is None:
        suffix = out.suffix.lower().lstrip(".")
        if suffix in FORMATS:
            return suffix
        raise UsageError(
            f"cannot tell the format from {out.name!r}: pass --format csv or --format json "
            "(or an --out ending in .csv or .json)"
        )
    if fmt.lower() not in FORMATS:
        raise UsageError(f"unknown --format {fmt!r}; use csv or json")
    return fmt.lower()


def csv_paths(out: Path) -> tuple[Path, Path]:
    """``results.csv`` -> (``results-runs.csv``, ``results-iterations.csv``) beside it."""
    stem = out.name[: -len(out.suffix)] if out.suffix.lower() == ".csv" else out.name
    return out.with_name(f"{stem}-runs.csv"), out.with_name(f"{stem}-iterations.csv")


def _rows(cursor: sqlite3.Cursor) -> tuple[list[str], list[tuple]]:
    return [d[0] for d in cursor.description], cursor.fetchall()


def _decode(names: Iterable[str], row: tuple) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(names, row):
        if name.endswith("_json") and len(name) > 5:
            try:
                out[name[:-5]] = None if value is None else json.loads(value)
            except ValueError:
                out[name] = value
        else:
            out[name] = value
    return out


def export_runs(
    conn: sqlite3.Connection, filters: Filters, fmt: str, out: Path
) -> tuple[list[Path], int, int, list[str]]:
    """Write the runs matching ``filters`` and their iterations; (paths, runs, iteration rows, notes).

    Runs in leaderboard order (best final win rate first), iterations by run
    in that order, then by iteration.
    """
    columns = table_columns(conn, "runs")
    where, params, notes = where_sql(filters, columns)
    order = " order by final_win_rate is null, final_win_rate desc, started_at, rowid"
    run_names, runs = _rows(conn.execute(f"select * from runs{where}{order}", params))
    iteration_columns = table_columns(conn, "iterations")
    select = ", ".join(f"i.{quote(c)}" for c in iteration_columns)
    iteration_names, iterations = _rows(conn.execute(
        f"select {select} from iterations i join (select id, final_win_rate, started_at, rowid as r "
        f"from runs{where}) o on o.id = i.run_id "
        "order by o.final_win_rate is null, o.final_win_rate desc, o.started_at, o.r, i.iteration",
        params,
    ))
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "csv":
        runs_path, iterations_path = csv_paths(out)
        for target, names, rows in ((runs_path, run_names, runs), (iterations_path, iteration_names, iterations)):
            with open(target, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(names)
                writer.writerows(["" if v is None else v for v in row] for row in rows)
        return [runs_path, iterations_path], len(runs), len(iterations), notes
    payload = {
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "filters": {k: v for k, v in vars(filters).items() if v is not None},
        "runs": [_decode(run_names, row) for row in runs],
        "iterations": [_decode(iteration_names, row) for row in iterations],
    }
    with open(out, "w", encoding="utf-8") as fh:
        json.dump(payload, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    return [out], len(runs), len(iterations), notes
