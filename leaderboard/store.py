"""The leaderboard database: one row per run, one row per (run, iteration).

A run is written in three steps, each its own transaction:

1. :meth:`Leaderboard.start_run` inserts the run with status ``running``;
2. :meth:`Leaderboard.record_iteration` adds one row per iteration (0 = pi_0);
3. :meth:`Leaderboard.finish_run` writes the final metrics *and* sets status
   ``finished`` atomically, or :meth:`Leaderboard.fail_run` marks the run
   ``failed``/``interrupted`` with its error text.

So a run that dies half way is visible as ``running`` (killed) or
``failed``/``interrupted`` (caught), never as a finished row with partial
numbers. Every write takes SQLite's write lock up front (``BEGIN IMMEDIATE``)
and the connection waits up to 30 s for it, so parallel runs of a sweep can
share one database file (WAL mode lets readers proceed meanwhile).

Values are stored as plain SQLite values: numbers, text, NULL. A dict or list
under key ``k`` is stored as JSON text in column ``k_json`` and read back,
parsed, under ``k`` (``config`` <-> ``config_json``). NaN and infinities are
refused with a ValueError naming the key: the leaderboard never holds one.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import math
import os
import pathlib
import secrets
import sqlite3
import traceback
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from leaderboard.columns import required_run_keys

if TYPE_CHECKING:
    import sqlite_utils

__all__ = ["DB_ENV_VAR", "DEFAULT_DB_NAME", "Leaderboard", "NewerSchemaError", "default_db_path"]

DB_ENV_VAR = "HARNESS_DB"
DEFAULT_DB_NAME = "leaderboard.db"
BUSY_TIMEOUT_ENV = "HARNESS_DB_TIMEOUT"
BUSY_TIMEOUT_SECONDS = 30.0


def busy_timeout() -> float:
    """Seconds a write waits for another process's lock: ``$HARNESS_DB_TIMEOUT``, else 30.

    ValueError naming the variable and the fix when it is set to anything but a finite number >= 0.
    """
    value = os.environ.get(BUSY_TIMEOUT_ENV, "").strip()
    if not value:
        return BUSY_TIMEOUT_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds >= 0):
        raise ValueError(f"{BUSY_TIMEOUT_ENV}={value!r} is not a number of seconds; set it to a number >= 0 "
                         f"(e.g. {BUSY_TIMEOUT_ENV}=60), or unset it for the default of {BUSY_TIMEOUT_SECONDS:g}")
    return seconds

#: Keys ``start_run`` requires, with the Python types each value may have (from :mod:`leaderboard.columns`).
REQUIRED_RUN_KEYS: dict[str, tuple[type, ...]] = required_run_keys()

# Columns only the store itself writes.
_MANAGED = frozenset({"id", "status", "started_at", "finished_at", "error"})
#: Every status a run can have.
STATUSES = ("running", "finished", "failed", "interrupted", "awaiting_labels")
_FAIL_STATUSES = ("failed", "interrupted")

#: The migration set of ``leaderboard/migrations.py`` and every migration in it
#: (a test checks this list). Opening a database that has them all applied
#: needs neither sqlite-utils nor numpy (which sqlite-utils imports), so
#: reading the leaderboard stays fast; writes import sqlite-utils on demand.
MIGRATION_SET = "pairsel_harness.leaderboard"
MIGRATION_NAMES = (
    "m001_create_runs",
    "m002_create_iterations",
    "m003_indexes_and_ranked_view",
    "m004_labels_and_texts",
    "m005_judgements",
    "m006_text_messages",
)
_SCALARS = (str, int, float, type(None))


class NewerSchemaError(ValueError):
    """The database has schema migrations that this version of the harness does not know."""


def enable_wal(conn: sqlite3.Connection) -> None:
    """Switch the database of ``conn`` to WAL mode (readers never block the writer); idempotent."""
    if conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    level = conn.isolation_level
    conn.isolation_level = None  # the journal mode cannot change inside a transaction
    try:
        conn.execute("PRAGMA journal_mode = wal")
    except sqlite3.OperationalError as exc:
        # Another process holds the database while switching it; it is
        # switching it to WAL too, and the busy timeout covers writes.
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
    finally:
        conn.isolation_level = level


def _refuse_unknown_migrations(path: object, applied: set[str]) -> None:
    unknown = sorted(applied - set(MIGRATION_NAMES))
    if unknown:
        raise NewerSchemaError(
            f"{path} was written by a newer pairsel-harness: its schema has migration(s) {', '.join(unknown)} "
            "that this version does not know. Upgrade pairsel-harness (pip install -U pairsel-harness) to read "
            "or write it, or pass another --db; the file was not modified"
        )


def _foreign_message(path: object) -> str:
    return (f"{path} has a 'runs' table that pairsel-harness did not create; "
            "it is not a leaderboard database (pass another --db)")


def check_database_file(path: str | os.PathLike[str]) -> None:
    """Refuse, reading only, an existing SQLite file the harness could not use as its leaderboard: one from a
    newer schema (:class:`NewerSchemaError`) or another program's database with a ``runs`` table (ValueError).
    Lets a command fail before it creates anything, where opening a :class:`Leaderboard` would fail later."""
    uri = pathlib.Path(path).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout())
    except sqlite3.Error:
        return  # what cannot be opened here is reported by the open that follows
    try:
        tables = {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")}
        applied: set[str] = set()
        if "_sqlite_migrations" in tables:
            rows = conn.execute("select name from _sqlite_migrations where migration_set = ?", [MIGRATION_SET])
            applied = {name for (name,) in rows}
    except sqlite3.DatabaseError as exc:
        if type(exc) is sqlite3.DatabaseError:
            raise ValueError(f"{path} is not a SQLite database ({exc})") from None
        return  # locked or busy: the open that follows waits for it
    finally:
        conn.close()
    _refuse_unknown_migrations(path, applied)
    if not applied and "runs" in tables:
        raise ValueError(_foreign_message(path))


def default_db_path() -> pathlib.Path:
    """``$HARNESS_DB`` if set (and not empty), else ``./leaderboard.db``."""
    value = os.environ.get(DB_ENV_VAR, "").strip()
    return pathlib.Path(value) if value else pathlib.Path.cwd() / DEFAULT_DB_NAME


def _now() -> str:
    """The current UTC time, ISO 8601 with milliseconds."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def new_run_id() -> str:
    """A fresh run id: ``r`` + 10 hex digits."""
    return "r" + secrets.token_hex(5)


#: Set (to anything) in processes that must never open a leaderboard file: a sweep's Ray workers, whose runs
#: the driver records (SQLite on a filesystem shared by several nodes is not safe).
NO_LEADERBOARD_ENV = "HARNESS_NO_LEADERBOARD"


class LeaderboardForbidden(RuntimeError):
    """This process was told never to open a leaderboard (``$HARNESS_NO_LEADERBOARD``)."""


def refuse_if_forbidden(path: str | os.PathLike[str]) -> None:
    """LeaderboardForbidden when ``$HARNESS_NO_LEADERBOARD`` is set and ``path`` is a file (not ``:memory:``)."""
    if os.environ.get(NO_LEADERBOARD_ENV) and str(path) != ":memory:":
        raise LeaderboardForbidden(f"this process may not open the leaderboard {path} (${NO_LEADERBOARD_ENV} is "
                                   "set: it is a sweep worker whose driver records its runs)")


class Leaderboard:
    """Open (creating if needed) the leaderboard database at ``path``.

    Pending schema migrations are applied on open. ``create=False`` refuses
    to create a missing file (FileNotFoundError) instead: the read-only CLI
    uses it so that looking at the leaderboard never leaves an empty
    database behind. ``":memory:"`` gives a throwaway in-memory database.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True):
        refuse_if_forbidden(path)
        self.path = path if str(path) == ":memory:" else pathlib.Path(path)
        memory = self.path == ":memory:"
        if not memory:
            if not self.path.exists():
                if not create:
                    raise FileNotFoundError(f"no leaderboard database at {self.path}")
                self.path.parent.mkdir(parents=True, exist_ok=True)
            elif self.path.is_dir():
                raise IsADirectoryError(f"{self.path} is a directory, not a leaderboard database")
        self.conn = sqlite3.connect(str(self.path), timeout=busy_timeout())
        self._db: sqlite_utils.Database | None = None
        try:
            self.conn.execute("PRAGMA foreign_keys = ON")
            # Reads only, before anything (even the journal mode) is written: a
            # file that is not a database, or a database from a newer schema,
            # is refused and left exactly as it was.
            self._check_schema_version()
            if not self._applied_migrations() and self._has_table("runs"):
                raise ValueError(_foreign_message(self.path))  # before WAL mode changes another program's file
            if not memory:
                self._enable_wal()
            self._migrate()
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            if type(exc) is sqlite3.DatabaseError:  # not a locked/busy OperationalError
                raise ValueError(f"{self.path} is not a SQLite database ({exc})") from None
            raise
        except BaseException:
            self.conn.close()
            raise

    @property
    def db(self) -> sqlite_utils.Database:
        """The connection as a ``sqlite_utils.Database`` (imports sqlite-utils on first use)."""
        if self._db is None:
            import sqlite_utils

            self._db = sqlite_utils.Database(self.conn, execute_plugins=False)
        return self._db

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Leaderboard:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Leaderboard({str(self.path)!r})"

    def _enable_wal(self) -> None:
        enable_wal(self.conn)

    def _applied_migrations(self) -> set[str]:
        if not self._has_table("_sqlite_migrations"):
            return set()
        rows = self.conn.execute(
            "select name from _sqlite_migrations where migration_set = ?", [MIGRATION_SET]
        )
        return {name for (name,) in rows}

    def _has_table(self, name: str) -> bool:
        query = "select 1 from sqlite_master where type = 'table' and name = ?"
        return self.conn.execute(query, [name]).fetchone() is not None

    def _check_schema_version(self) -> None:
        """Refuse (NewerSchemaError) a database with migrations this version does not know."""
        _refuse_unknown_migrations(self.path, self._applied_migrations())

    def _migrate(self) -> None:
        if self._applied_migrations() >= set(MIGRATION_NAMES):
            return
        from leaderboard.migrations import migrations

        with self._writing():
            # Re-read inside the write lock: a parallel process may have
            # migrated between our check and the lock.
            self._check_schema_version()
            if not self._applied_migrations() and self._has_table("runs"):
                raise ValueError(_foreign_message(self.path))
            migrations.apply(self.db)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """One write transaction holding the write lock from its start.

        ``BEGIN IMMEDIATE`` waits (busy timeout) for other writers instead of
        failing half way when a read lock cannot be upgraded. sqlite-utils
        calls inside nest as savepoints.
        """
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise
        else:
            self.conn.execute("COMMIT")

    # -- writing -------------------------------------------------------------

    def start_run(self, run: Mapping[str, Any], *, run_id: str | None = None, started_at: str | None = None) -> str:
        """Insert ``run`` with status ``running``; return its new id (``r`` + 10 hex digits).

        ``run_id`` and ``started_at`` are given when a run recorded offline is
        imported (``harness leaderboard import``): ValueError if that id exists.

        ``run`` holds every key of :data:`REQUIRED_RUN_KEYS` (``git_commit``
        may be None). ``config``, ``plugins`` and ``versions`` are stored as
        JSON in ``config_json``, ``plugins_json`` and ``versions_json``. Extra
        keys are kept: dicts and lists as JSON in ``<key>_json``, scalars in a
        column ``<key>`` (added if new). Raises ValueError, before writing
        anything, for a missing key, a value of the wrong type, or NaN/inf.
        """
        if not isinstance(run, Mapping):
            raise ValueError(f"run must be a dict, got {type(run).__name__}")
        if not isinstance(run.get("config"), dict):
            raise ValueError(
                f"run['config'] must be a dict, got {type(run.get('config')).__name__}"
            )
        missing = [key for key in REQUIRED_RUN_KEYS if key not in run]
        if missing:
            raise ValueError(f"run is missing required keys: {', '.join(missing)}")
        record: dict[str, Any] = {}
        for key, value in run.items():
            _check_key(key, "run")
            if key in _MANAGED or key in _final_columns():
                raise ValueError(
                    f"run key {key!r} is written by the leaderboard itself "
                    "(final metrics go to finish_run)"
                )
            value = _plain(value, key)
            if key == "scorer_columns" and isinstance(value, list):
                if not all(isinstance(v, str) for v in value):
                    raise ValueError(f"run['scorer_columns'] must be str, got {value!r}")
                value = ",".join(value)
            allowed = REQUIRED_RUN_KEYS.get(key)
            if allowed is not None and not _is_instance(value, allowed):
                names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
                raise ValueError(f"run[{key!r}] must be {names}, got {value!r}")
            _add(record, _encode(key, value), "run")
        chosen = run_id
        for _attempt in range(5):
            run_id = chosen or new_run_id()
            row = {"id": run_id, "status": "running", "started_at": started_at or _now(), **record}
            with self._writing():
                if self._status(run_id) is not None:
                    if chosen:
                        raise ValueError(f"a run with id {run_id} is already in {self.path}")
                    continue  # an id collision: draw another
                self._ensure_columns("runs", row)
                self.db["runs"].insert(row)
            return run_id
        raise RuntimeError("could not draw an unused run id")  # pragma: no cover

    def record_iteration(self, run_id: str, row: Mapping[str, Any]) -> None:
        """Store one iteration's metrics (``row["iteration"]`` = 0 for pi_0).

        New metric names become new columns of ``iterations``. Raises
        KeyError for an unknown run, ValueError if the run is no longer
        running, if that iteration is already recorded, or for a bad value.
        """
        if not isinstance(row, Mapping):
            raise ValueError(f"iteration row must be a dict, got {type(row).__name__}")
        if "iteration" not in row:
            raise ValueError("iteration row needs an 'iteration' key (0 = the initial policy)")
        record: dict[str, Any] = {}
        for key, value in row.items():
            _check_key(key, "iteration row")
            if key in ("run_id", "recorded_at"):
                raise ValueError(f"iteration row key {key!r} is written by the leaderboard itself")
            value = _plain(value, key)
            if key == "iteration":
                iteration = value
            _add(record, _encode(key, value), "iteration row")
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ValueError(f"'iteration' must be an int >= 0, got {row['iteration']!r}")
        record = {"run_id": run_id, **record, "recorded_at": _now()}
        with self._writing():
            self._require_running(run_id, "record an iteration of")
            if self.conn.execute(
                "select 1 from iterations where run_id = ? and iteration = ?", [run_id, iteration]
            ).fetchone():
                raise ValueError(f"iteration {iteration} of run {run_id} is already recorded")
            self._ensure_columns("iterations", record)
            self.db["iterations"].insert(record)

    def finish_run(self, run_id: str, final: Mapping[str, Any]) -> None:
        """Write the final metrics and set status ``finished``, in one transaction.

        ``final`` must hold ``final_win_rate``; other keys (``final_win_rate_se``,
        ``initial_win_rate``, ``final_gold_reward``, ``final_kl``,
        ``labels_used``, ``wall_seconds``, or new ones) are optional. Raises
        KeyError for an unknown run, ValueError (writing nothing) for NaN/inf,
        a key that would overwrite the run's setup, or a run that is not
        ``running``: a finished row is never rewritten.
        """
        if not isinstance(final, Mapping):
            raise ValueError(f"final metrics must be a dict, got {type(final).__name__}")
        record: dict[str, Any] = {}
        for key, value in final.items():
            _check_key(key, "final metrics")
            if key in _MANAGED or key in _run_identity():
                raise ValueError(f"final metric key {key!r} would overwrite the run's setup")
            _add(record, _encode(key, _plain(value, key)), "final metrics")
        win_rate = record.get("final_win_rate")
        if isinstance(win_rate, bool) or not isinstance(win_rate, (int, float)):
            raise ValueError(
                "final metrics need 'final_win_rate' as a number (the leaderboard ranks by it); "
                f"got {final.get('final_win_rate')!r}"
            )
        record.update(status="finished", finished_at=_now())
        with self._writing():
            self._require_running(run_id, "finish")
            self._ensure_columns("runs", record)
            self.db["runs"].update(run_id, record)

    def fail_run(self, run_id: str, status: str, error: str | BaseException | None) -> None:
        """Mark a running run ``failed`` or ``interrupted``, storing ``error`` (a traceback).

        An exception is formatted with its traceback. Raises KeyError for an
        unknown run, ValueError for another status or a run that is not
        ``running`` (a finished row is never rewritten).
        """
        if status not in _FAIL_STATUSES:
            raise ValueError(f"status must be one of {', '.join(_FAIL_STATUSES)}; got {status!r}")
        if isinstance(error, BaseException):
            error = "".join(traceback.format_exception(error))
        elif error is not None and not isinstance(error, str):
            error = str(error)
        with self._writing():
            self._require_running(run_id, f"mark {status}")
            self.db["runs"].update(
                run_id, {"status": status, "error": error, "finished_at": _now()}
            )

    def await_labels(self, run_id: str) -> None:
        """Mark a running run ``awaiting_labels``: it stopped for an external annotator.

        Not a failure: ``harness run --resume`` continues it once
        ``harness label import`` has supplied every label. Raises like
        :meth:`fail_run` for an unknown run or one that is not ``running``.
        """
        with self._writing():
            self._require_running(run_id, "mark awaiting_labels")
            self.conn.execute("UPDATE runs SET status = 'awaiting_labels', error = NULL WHERE id = ?", (run_id,))

    def reopen_run(self, run_id: str, *, keep_through: int) -> None:
        """Set an unfinished run back to ``running`` to resume it after iteration ``keep_through``.

        Iteration rows after ``keep_through`` (recorded after the last
        checkpoint) are deleted, in the same transaction, so the resumed run
        records them again; so are their labels, but for those an external
        annotator gave. A ``running`` run qualifies too: a process killed
        with SIGKILL never got to mark its run. A finished run is never reopened.
        """
        with self._writing():
            status = self._status(run_id)
            if status is None:
                raise KeyError(f"no run with id {run_id!r} in {self.path}")
            if status == "finished":
                raise ValueError(f"run {run_id} is finished; there is nothing to resume")
            self.conn.execute(
                "DELETE FROM iterations WHERE run_id = ? AND iteration > ?", (run_id, int(keep_through))
            )
            # Labels of the iterations run again are recorded again, except those an
            # external annotator gave: they were paid for and the resumed run uses them.
            self.conn.execute(
                "DELETE FROM labels WHERE run_id = ? AND iteration > ? AND shown_swapped IS NULL",
                (run_id, int(keep_through)),
            )
            self.conn.execute(
                "UPDATE runs SET status = 'running', error = NULL, finished_at = NULL WHERE id = ?", (run_id,)
            )

    def claim_run(
        self, run_id: str, tags: Mapping[str, Any], expected: Mapping[str, Any] | None = None
    ) -> bool:
        """Set ``tags`` on an unfinished run if its tags still hold ``expected``; False otherwise.

        A compare-and-swap in one write transaction: a sweep that is about to
        resume a run re-tags it with its own process, and two sweeps never
        resume the same run. ``tags`` and ``expected`` name existing columns
        of ``runs`` (set by the code, never by users); a finished run is never claimed.
        """
        known = {row[1] for row in self.conn.execute("PRAGMA table_info(runs)")}
        unknown = sorted((set(tags) | set(expected or {})) - known)
        if unknown:
            raise ValueError(f"not columns of runs: {', '.join(unknown)}")
        with self._writing():
            status = self._status(run_id)
            if status is None or status == "finished":
                return False
            if expected is not None:
                names = list(expected)
                current = self.conn.execute(
                    f"SELECT {', '.join(_quote(n) for n in names)} FROM runs WHERE id = ?", (run_id,)
                ).fetchone()
                if tuple(current) != tuple(expected[n] for n in names):
                    return False
            assignments = ", ".join(f"{_quote(n)} = ?" for n in tags)
            self.conn.execute(f"UPDATE runs SET {assignments} WHERE id = ?", (*tags.values(), run_id))
            return True

    # -- reading -------------------------------------------------------------

    def runs(
        self,
        status: str | None = "finished",
        testbed: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Runs, best ``final_win_rate`` first (runs without one last), then oldest first.

        ``status=None`` returns every status. JSON columns come back parsed
        (``config_json`` as ``config``).
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)} or None; got {status!r}")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise ValueError(f"limit must be an int >= 0 or None; got {limit!r}")
        wheres, params = [], []
        if status is not None:
            wheres.append("status = ?")
            params.append(status)
        if testbed is not None:
            wheres.append("testbed = ?")
            params.append(testbed)
        sql = "select * from runs"
        if wheres:
            sql += " where " + " and ".join(wheres)
        sql += " order by final_win_rate is null, final_win_rate desc, started_at, rowid"
        if limit is not None:
            sql += " limit ?"
            params.append(limit)
        return [decode_row(row) for row in self._query(sql, params)]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """The run with this id (JSON columns parsed), or None."""
        rows = self._query("select * from runs where id = ?", [run_id])
        return decode_row(rows[0]) if rows else None

    def iterations(self, run_id: str) -> list[dict[str, Any]]:
        """The run's iteration rows in order (iteration 0 first); [] for an unknown run."""
        return [
            decode_row(row)
            for row in self._query(
                "select * from iterations where run_id = ? order by iteration", [run_id]
            )
        ]

    # -- helpers -------------------------------------------------------------

    def _query(self, sql: str, params: list[Any]) -> list[dict[str, Any]]:
        cursor = self.conn.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]

    def _status(self, run_id: str) -> str | None:
        found = self.conn.execute("select status from runs where id = ?", [run_id]).fetchone()
        return None if found is None else found[0]

    def _require_running(self, run_id: str, action: str) -> None:
        status = self._status(run_id)
        if status is None:
            raise KeyError(f"no run with id {run_id!r} in {self.path}")
        if status != "running":
            raise ValueError(f"cannot {action} run {run_id}: its status is already {status!r}")

    def _ensure_columns(self, table: str, record: Mapping[str, Any]) -> None:
        """Add the columns ``record`` needs, typed by its values (call inside a write).

        Unlike sqlite-utils' ``alter=True``, a metric first seen as None gets a
        FLOAT column, not TEXT: TEXT affinity would turn later numbers into
        strings, and they would sort as text.
        """
        existing = {name.lower() for name in self.db[table].columns_dict}
        for key, value in record.items():
            if key.lower() not in existing:
                self.db[table].add_column(key, _column_type(key, value))
                existing.add(key.lower())


# -- values ------------------------------------------------------------------


def _final_columns() -> dict[str, type]:
    from leaderboard.migrations import FINAL_COLUMNS

    return FINAL_COLUMNS


def _run_identity() -> frozenset[str]:
    """Columns that start_run writes and nothing may change afterwards."""
    from leaderboard.migrations import RUN_COLUMNS

    return (frozenset(RUN_COLUMNS) | frozenset(REQUIRED_RUN_KEYS)) - {"finished_at", "error"}


def _check_key(key: object, what: str) -> None:
    if not isinstance(key, str) or not key.strip():
        raise ValueError(f"{what} keys must be non-empty strings; got {key!r}")
    if key.endswith("_json"):
        raise ValueError(
            f"{what} key {key!r}: pass the object itself under {key[:-5]!r}; "
            "the leaderboard stores it as JSON in that column"
        )


def _add(record: dict[str, Any], columns: Mapping[str, Any], what: str) -> None:
    """Merge ``columns`` into ``record``, refusing names that differ only by case."""
    taken = {name.lower() for name in record}
    for name, value in columns.items():
        if name.lower() in taken:
            raise ValueError(f"{what} has two keys that name column {name!r} (SQLite ignores case)")
        record[name] = value
        taken.add(name.lower())


def _is_instance(value: Any, types: tuple[type, ...]) -> bool:
    if isinstance(value, bool):
        return bool in types
    if isinstance(value, int) and float in types and int not in types:
        return False
    return isinstance(value, types)


def _plain(value: Any, key: str) -> Any:
    """``value`` as a plain Python value; numpy/torch scalars unwrapped; NaN/inf refused."""
    if isinstance(value, bool):
        return value
    if not isinstance(value, (*_SCALARS, dict, list, tuple)):
        item = getattr(value, "item", None)
        if callable(item):
            try:
                value = item()
            except (TypeError, ValueError):
                raise ValueError(
                    f"{key!r}: cannot store {type(value).__name__} (not a single number)"
                ) from None
        elif isinstance(value, os.PathLike):
            value = os.fspath(value)
        else:
            raise ValueError(f"{key!r}: cannot store a value of type {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{key!r} is {value}: the leaderboard refuses NaN and infinite metrics")
    if isinstance(value, tuple):
        value = list(value)
    return value


def _encode(key: str, value: Any) -> dict[str, Any]:
    """The column(s) for one key: JSON text under ``<key>_json`` for dicts and lists."""
    if isinstance(value, (dict, list)):
        try:
            text = json.dumps(value, allow_nan=False, default=_json_default)
        except ValueError as exc:
            raise ValueError(f"{key!r} holds a NaN or infinite number ({exc})") from None
        except TypeError as exc:
            raise ValueError(f"{key!r} cannot be stored as JSON: {exc}") from None
        return {f"{key}_json": text}
    if isinstance(value, bool):
        value = int(value)
    return {key: value}


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    for method in ("tolist", "item"):  # numpy arrays and scalars, torch tensors
        convert = getattr(value, method, None)
        if callable(convert):
            return convert()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _column_type(key: str, value: Any) -> type:
    if key.endswith("_json") or isinstance(value, str):
        return str
    if isinstance(value, int):
        return int
    return float  # floats, and None: a metric whose first value is missing


def decode_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A stored row with its ``<key>_json`` columns parsed back under ``<key>``."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if key.endswith("_json") and len(key) > 5:
            out[key[:-5]] = None if value is None else json.loads(value)
        else:
            out[key] = value
    return out


def _quote(identifier: str) -> str:
    """A column name as a quoted SQL identifier (names are checked against the schema first)."""
    return '"' + identifier.replace('"', '""') + '"'
