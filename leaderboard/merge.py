"""Fold leaderboard databases from other machines into one (``harness leaderboard merge``).

Each source is merged in **one write transaction** on the target (``BEGIN IMMEDIATE`` ... ``COMMIT``):
an error, Ctrl-C or a killed process leaves the target exactly as it was before that source, and a
source merged before it stays merged. The source is only read, through a read-only connection, inside
one read transaction (a consistent snapshot even while a run is writing to it).

What a source brings, per run row of its ``runs`` table:

* a run the target does not have is copied with its id and every column as stored (provenance,
  config, the machine's ``runs_root`` and all), with its rows of every per-run table
  (:data:`PER_RUN_TABLES`: ``iterations`` and ``labels``);
* a run the target has with **identical content** is skipped and counted. Identical means: the
  ``runs`` row is equal in every column (config hash, seeds, config, provenance, status, times and
  every recorded number), and so are the run's rows of every per-run table. A column that only one
  side has counts as NULL on the other, so a metric column added on demand by a newer run changes
  nothing. No column is left out of the comparison: run ids are 40 random bits, so one id in two
  databases means one holds a copy of the other's run, and a difference means that one copy changed
  afterwards (a number edited, a run resumed or finished on one machine) - the merge cannot know which
  copy is right;
* a run the target has with **different content** is a conflict: the whole source is refused
  (:class:`MergeConflict`, naming the run, the differing columns and both files) and nothing of it
  is written.

Runs are copied whatever their status. One that is ``running`` or ``awaiting_labels`` (or
``failed``/``interrupted``, which ``harness run --resume`` may still continue) is copied as it
stands and listed in the report as unfinished: if it changes later on its own machine, merging that
machine again is a conflict, so merge once such runs are done.

Tables shared by all runs are merged by key, keeping what the target already has: ``texts`` (keyed
by the sha256 of the text, so equal keys hold equal texts) and ``judgements`` (the judgement cache,
keyed by the question; like :meth:`leaderboard.judgements.JudgementCache.put_many`, a question already
answered keeps its first answer). :data:`SHARED_TABLES` lists them; ``_sqlite_migrations`` is the
target's own. A table in the source that the harness did not make is ignored (and named in the
report).

Only the standard library: the CLI stays light, and nothing here knows about Typer.
"""

from __future__ import annotations

import os
import pathlib
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from leaderboard.store import Leaderboard, busy_timeout, check_database_file

__all__ = ["MergeConflict", "MergeError", "MergeReport", "PER_RUN_TABLES", "SHARED_TABLES", "check_source",
           "merge", "merge_source"]

#: Tables with one or more rows per run, keyed to it by ``run_id``, with the columns that order a run's rows.
#: A run is copied with its rows of each; tests/test_leaderboard_merge.py fails when a migration adds a table
#: with a ``run_id`` that is not listed here.
PER_RUN_TABLES: dict[str, tuple[str, ...]] = {
    "iterations": ("iteration",),
    "labels": ("id",),
}
#: Tables shared by every run, merged by their primary key (insert-or-ignore: the target keeps its rows).
SHARED_TABLES: dict[str, tuple[str, ...]] = {
    "texts": ("hash",),
    "judgements": ("judge", "model", "prompt_hash", "pair_hash", "swapped"),
}
#: Tables a merge never copies: the migrations record (the target's own).
OWN_TABLES = frozenset({"_sqlite_migrations"})
#: Statuses of runs that may still change on the machine that ran them.
UNFINISHED = ("running", "awaiting_labels", "failed", "interrupted")


class MergeError(ValueError):
    """A source that cannot be merged (missing, not a leaderboard, a newer schema, the target itself)."""


class MergeConflict(MergeError):
    """A run of the source has the id of a run of the target but not its content."""


@dataclass
class MergeReport:
    """What merging one source did (or, dry, would do) to the target."""

    source: str
    target: str
    runs_added: list[str] = field(default_factory=list)
    runs_identical: list[str] = field(default_factory=list)
    #: Copied runs that were not finished in the source: (id, status).
    unfinished: list[tuple[str, str]] = field(default_factory=list)
    rows_added: dict[str, int] = field(default_factory=dict)  # per-run and shared table -> rows copied
    ignored_tables: list[str] = field(default_factory=list)
    dry_run: bool = False

    def counts(self) -> dict[str, Any]:
        """The report as plain JSON values (``--json``)."""
        data = asdict(self)
        data["unfinished"] = [{"id": run_id, "status": status} for run_id, status in self.unfinished]
        data["runs_added_count"] = len(self.runs_added)
        data["runs_identical_count"] = len(self.runs_identical)
        return data


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _same_file(a: pathlib.Path, b: pathlib.Path) -> bool:
    """One file under two names (a link, a relative and an absolute path), or the same path."""
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve() == b.resolve()


def check_source(source: str | os.PathLike[str], target: str | os.PathLike[str] | None = None) -> pathlib.Path:
    """The source as a path, refused (:class:`MergeError`, naming the file, reading only) when it is missing,
    a directory, not a SQLite database, another program's database, one from a newer schema, one with no
    ``runs`` table, or the target itself."""
    path = pathlib.Path(source)
    if target is not None and _same_file(path, pathlib.Path(target)):
        raise MergeError(f"{path} is the target database itself; merging it into itself would change nothing "
                         "(pass another file, or another --db)")
    if not path.exists():
        raise MergeError(f"no leaderboard database at {path}")
    if path.is_dir():
        raise MergeError(f"{path} is a directory, not a leaderboard database")
    try:
        check_database_file(path)  # NewerSchemaError is a ValueError too
    except ValueError as exc:
        raise MergeError(str(exc)) from None
    with _read_only(path) as conn:
        try:
            tables = _tables(conn, "main")
        except sqlite3.DatabaseError as exc:
            raise MergeError(f"{path} is not a SQLite database ({exc})") from None
    if "runs" not in tables:
        raise MergeError(f"{path} has no 'runs' table: it is not a leaderboard database")
    return path


class _read_only:
    """A read-only connection to ``path`` (never writes it, not even its journal mode), closed on exit."""

    def __init__(self, path: pathlib.Path):
        self.path = path

    def __enter__(self) -> sqlite3.Connection:
        uri = self.path.resolve().as_uri() + "?mode=ro"
        try:
            self.conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout())
        except sqlite3.Error as exc:
            raise MergeError(f"cannot open {self.path} to read it ({exc})") from None
        return self.conn

    def __exit__(self, *exc_info: object) -> None:
        self.conn.close()


def _tables(conn: sqlite3.Connection, schema: str) -> set[str]:
    return {name for (name,) in conn.execute(f"select name from {schema}.sqlite_master where type = 'table'")
            if not name.startswith("sqlite_")}


def _columns(conn: sqlite3.Connection, schema: str, table: str) -> dict[str, str]:
    """``{column: declared type}`` in table order."""
    return {row[1]: row[2] for row in conn.execute(f"PRAGMA {schema}.table_info({_quote(table)})")}


def _rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    cursor = conn.execute(sql, params)
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def _differences(ours: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """Columns whose values differ; a column one side lacks is NULL there (names compared without case)."""
    a = {key.lower(): value for key, value in ours.items()}
    b = {key.lower(): value for key, value in theirs.items()}
    return sorted(name for name in a.keys() | b.keys() if not _equal(a.get(name), b.get(name)))


def _equal(x: Any, y: Any) -> bool:
    if isinstance(x, (bytes, str)) or isinstance(y, (bytes, str)):
        return type(x) is type(y) and x == y
    return x == y  # numbers (1 == 1.0, as SQLite compares them) and NULL


def _run_rows(conn: sqlite3.Connection, schema: str, table: str, run_id: str) -> list[dict[str, Any]]:
    order = ", ".join(_quote(c) for c in PER_RUN_TABLES[table])
    return _rows(conn, f"select * from {schema}.{_quote(table)} where run_id = ? order by {order}", [run_id])


def _conflict_of(run_id: str, source_conn: sqlite3.Connection, target_conn: sqlite3.Connection,
                 source_tables: set[str], source_row: dict[str, Any], target_row: dict[str, Any]) -> str | None:
    """Why the source's run differs from the target's, or None when they are identical."""
    columns = _differences(target_row, source_row)
    if columns:
        shown = ", ".join(columns[:6]) + (f" and {len(columns) - 6} more" if len(columns) > 6 else "")
        return f"its runs row differs in {shown}"
    for table in PER_RUN_TABLES:
        theirs = _run_rows(source_conn, "main", table, run_id) if table in source_tables else []
        ours = _run_rows(target_conn, "main", table, run_id)
        if len(theirs) != len(ours):
            return f"it has {len(theirs)} {table} row(s) in one and {len(ours)} in the other"
        for mine, other in zip(ours, theirs):
            columns = _differences(mine, other)
            if columns:
                key = ", ".join(f"{c}={mine.get(c)!r}" for c in PER_RUN_TABLES[table])
                return f"its {table} row ({key}) differs in {', '.join(columns[:6])}"
    return None


def _add_columns(target: sqlite3.Connection, table: str, source_columns: dict[str, str]) -> None:
    """Give the target's ``table`` the columns of the source's it lacks (metric columns added on demand),
    with the source's declared type."""
    existing = {name.lower() for name in _columns(target, "main", table)}
    for name, declared in source_columns.items():
        if name.lower() not in existing:
            target.execute(f"ALTER TABLE main.{_quote(table)} ADD COLUMN {_quote(name)} {declared or ''}".rstrip())
            existing.add(name.lower())


def _insert(target: sqlite3.Connection, table: str, rows: list[dict[str, Any]], *, ignore: bool = False) -> int:
    """Insert ``rows`` (dicts, one column set) into the target's ``table``; the number of rows written."""
    if not rows:
        return 0
    names = list(rows[0])
    sql = (f"INSERT {'OR IGNORE ' if ignore else ''}INTO main.{_quote(table)} ({', '.join(_quote(n) for n in names)}) "
           f"VALUES ({', '.join('?' * len(names))})")
    before = target.total_changes
    target.executemany(sql, [tuple(row[n] for n in names) for row in rows])
    return target.total_changes - before


def _copy_run(target: sqlite3.Connection, source: sqlite3.Connection, source_tables: set[str],
              run: dict[str, Any], report: MergeReport) -> None:
    """Copy one run row and its rows of every per-run table (inside the caller's transaction)."""
    _insert(target, "runs", [run])
    for table in PER_RUN_TABLES:
        if table in source_tables:
            added = _insert(target, table, _run_rows(source, "main", table, run["id"]))
            report.rows_added[table] = report.rows_added.get(table, 0) + added


def merge_source(board: Leaderboard, source: str | os.PathLike[str], *, target_name: str | None = None,
                 dry_run: bool = False) -> MergeReport:
    """Merge the leaderboard database ``source`` into ``board`` in one write transaction; its report.

    Raises :class:`MergeError` (a source that cannot be merged) or :class:`MergeConflict` (a run with the
    same id and other content), with nothing written. ``dry_run`` does everything and rolls back.
    """
    target_name = target_name or str(board.path)
    path = check_source(source, None if board.path == ":memory:" else board.path)
    report = MergeReport(source=str(path), target=target_name, dry_run=dry_run)
    target = board.conn
    with _read_only(path) as src:
        src.execute("BEGIN")  # one read transaction: a consistent snapshot of the source
        source_tables = _tables(src, "main")
        target_tables = _tables(target, "main")
        known = {"runs", *PER_RUN_TABLES, *SHARED_TABLES, *OWN_TABLES}
        report.ignored_tables = sorted(source_tables - known)
        target.execute("BEGIN IMMEDIATE")
        try:
            to_copy: list[dict[str, Any]] = []
            for run in _rows(src, "select * from main.runs order by rowid"):
                found = _rows(target, "select * from main.runs where id = ?", [run["id"]])
                if not found:
                    to_copy.append(run)
                    continue
                why = _conflict_of(run["id"], src, target, source_tables, run, found[0])
                if why is not None:
                    raise MergeConflict(
                        f"run {run['id']} is in both {path} and {target_name} with different content ({why}); "
                        f"nothing from {path} was merged. One copy changed after they parted (a number edited, the "
                        f"run resumed or finished on one machine); keep the right one: leave {path} out, or merge "
                        "into a database that does not have the other"
                    )
                report.runs_identical.append(run["id"])
            if to_copy:
                for table in ("runs", *PER_RUN_TABLES):
                    if table in source_tables and table in target_tables:
                        _add_columns(target, table, _columns(src, "main", table))
            for run in to_copy:
                _copy_run(target, src, source_tables, run, report)
                report.runs_added.append(run["id"])
                if run.get("status") in UNFINISHED:
                    report.unfinished.append((run["id"], run["status"]))
            for table in SHARED_TABLES:
                if table in source_tables and table in target_tables:
                    columns = [c for c in _columns(src, "main", table) if c.lower() in
                               {t.lower() for t in _columns(target, "main", table)}]
                    rows = _rows(src, f"select {', '.join(_quote(c) for c in columns)} from main.{_quote(table)}")
                    report.rows_added[table] = _insert(target, table, rows, ignore=True)
        except BaseException:
            if target.in_transaction:
                target.execute("ROLLBACK")
            raise
        if dry_run:
            target.execute("ROLLBACK")
        else:
            target.execute("COMMIT")
    return report


def merge(target: str | os.PathLike[str], sources: Iterable[str | os.PathLike[str]], *,
          dry_run: bool = False) -> list[MergeReport]:
    """Merge every source into the leaderboard at ``target``, one transaction each, in order.

    Every source is checked (:func:`check_source`) before anything is written. A failure stops the merge at
    that source: the sources before it stay merged (their reports are on the exception as ``merged``, the
    failed source as ``source``).
    ``dry_run`` writes nothing at all, not even a missing target: it merges into an in-memory copy.
    """
    target_path = pathlib.Path(target)
    sources = [check_source(source, target_path) for source in sources]
    if dry_run:
        board = Leaderboard(":memory:")
        if target_path.exists():
            check_database_file(target_path)
            with _read_only(target_path) as conn:
                conn.backup(board.conn)
            board._migrate()  # an older target as this version would write it
    else:
        board = Leaderboard(target_path)
    reports: list[MergeReport] = []
    try:
        for source in sources:
            try:
                reports.append(merge_source(board, source, target_name=str(target_path), dry_run=False))
            except BaseException as exc:  # the source's transaction is rolled back; say what was merged
                exc.merged = list(reports)  # type: ignore[attr-defined]
                exc.source = str(source)  # type: ignore[attr-defined]
                raise
    finally:
        board.close()
    for report in reports:
        report.dry_run = dry_run
    return reports
