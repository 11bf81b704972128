"""Where a run writes, checked before anything is written: the leaderboard file and the runs directory.

:func:`check_locations` raises :class:`~harness.errors.UsageError` (exit 2),
naming the path and the fix, when the database file or the directory that
will hold the runs' checkpoints cannot be used: a parent that is a file, a
name longer than the filesystem allows, a directory that cannot be written
(read-only, or a pseudo-filesystem such as ``/proc``), or an existing file
that is not a SQLite database. The writability probe creates and removes one
temporary directory in the nearest existing ancestor; nothing else is made.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from harness.errors import UsageError

SQLITE_HEADER = b"SQLite format 3\x00"


#: How to point the harness at another database.
DB_FIX = "pass --db (or set HARNESS_DB) to a file in a directory you can write"


def check_database_path(db_path: Path) -> None:
    """UsageError when ``db_path`` could never hold a leaderboard database: a name the filesystem refuses, a
    parent that is a file, a directory, or an existing file that is not SQLite. For commands that only read
    it too (a path that does not exist yet is fine: there are no runs there). Nothing is made."""
    db_path = Path(db_path)
    _check_names(db_path, "the leaderboard database", DB_FIX)
    _nearest_directory(db_path, "the leaderboard database", DB_FIX)
    if db_path.is_dir():
        raise UsageError(f"the leaderboard database {db_path} is a directory; {DB_FIX}")
    if db_path.exists() and not db_path.is_file():
        raise UsageError(f"the leaderboard database {db_path} is not a regular file (a device, pipe or socket); "
                         f"{DB_FIX}")
    if db_path.exists():
        _check_sqlite(db_path)


def check_locations(db_path: Path, runs_dir: Path) -> None:
    """UsageError unless ``db_path`` can be opened or created and ``runs_dir`` can be created and written."""
    db_path, runs_dir = Path(db_path), Path(runs_dir)
    check_database_path(db_path)  # its names and ancestors; what is left is whether it can be written
    _probe_writable(db_path, "the leaderboard database", DB_FIX)
    _check_path(runs_dir, "the runs directory (checkpoints)",
                "set HARNESS_RUNS_DIR to a directory you can write, or move the database")
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UsageError(f"the runs directory {runs_dir} is a file; set HARNESS_RUNS_DIR to a directory")


def check_output_dir(path: Path, what: str, option: str) -> None:
    """UsageError unless ``path`` is, or can be made as, a directory this process can write (nothing is made)."""
    path = Path(path)
    fix = f"pass {option} with a directory you can write"
    _check_path(path, what, fix)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a directory; {fix}")


def _check_path(path: Path, what: str, fix: str) -> None:
    """Its ancestors are directories, its name fits the filesystem, and its nearest existing ancestor is writable."""
    _check_names(path, what, fix)
    _probe_writable(path, what, fix)


def _probe_writable(path: Path, what: str, fix: str) -> None:
    """Make and remove a temporary directory in the nearest existing ancestor of ``path``; UsageError if refused."""
    ancestor = _nearest_directory(path, what, fix)
    try:
        probe = tempfile.mkdtemp(prefix=".harness-probe-", dir=ancestor)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"{what} {path} cannot be written: {ancestor}: {reason}; {fix}") from None
    os.rmdir(probe)


def _check_names(path: Path, what: str, fix: str) -> None:
    """Every part of ``path`` fits the filesystem's limit on a name (checked first: a stat of one is an error)."""
    try:
        limit = os.pathconf(path.anchor or ".", "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    for part in path.parts:
        if len(os.fsencode(part)) > limit:
            raise UsageError(f"{what} {path} has a name of {len(os.fsencode(part))} bytes, over the filesystem's "
                             f"limit of {limit}; {fix}")


def _nearest_directory(path: Path, what: str, fix: str) -> Path:
    """The nearest existing ancestor of ``path``; UsageError when it is a file."""
    ancestor = path.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if ancestor.exists() and not ancestor.is_dir():
        raise UsageError(f"{what} {path} cannot be made: {ancestor} is a file, not a directory; {fix}")
    return ancestor


def _check_sqlite(path: Path) -> None:
    try:
        with open(path, "rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise UsageError(f"the leaderboard database {path} cannot be read: {exc.strerror or exc}") from None
    if head and head != SQLITE_HEADER:
        raise UsageError(f"{path} is not a SQLite database (it is some other file); pass --db with the path of a "
                         "leaderboard database, or of a new file")
    if head:
        from leaderboard.store import check_database_file

        try:
            check_database_file(path)  # another program's database, or a newer schema
        except ValueError as exc:
            raise UsageError(str(exc)) from None
