"""The content hash of a leaderboard database: what its tables hold, not how the file lays it out.

Definition (docs/leaderboard/browse.md#the-content-hash)::

    for each table, by name (sqlite_master tables, sqlite_* internals left out):
        the line  ["table", NAME, [its column names, sorted]]
        then one line per row: the sha256 (hex) of the row as canonical JSON,
        these lines sorted
    content hash = "sha256:" + sha256 of all those lines, each ending in "\\n"

A row's canonical JSON is the object ``{column: value}`` with sorted keys, no spaces
(``separators=(",", ":")``), non-ASCII kept as UTF-8, a BLOB as ``{"$blob": "HEX"}``.
Sorting the rows makes the hash independent of rowids and storage order; reading
values makes it independent of pages, VACUUM, the journal mode and whether the WAL
has been checkpointed. Two files with the same rows in the same tables hash alike;
any changed, added or removed row, table or column changes it.

Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from typing import Any

__all__ = ["content_hash"]


def _plain(value: Any) -> Any:
    if isinstance(value, (bytes, memoryview)):
        return {"$blob": bytes(value).hex()}
    return value


def _row_digest(columns: list[str], row: tuple) -> str:
    record = {name: _plain(value) for name, value in zip(columns, row)}
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def content_hash(conn: sqlite3.Connection) -> str:
    """``sha256:HEX`` over every table's rows (module docstring), reading only."""
    digest = hashlib.sha256()
    tables = sorted(name for (name,) in conn.execute(
        "select name from sqlite_master where type = 'table' and name not like 'sqlite_%'"))
    for table in tables:
        quoted = '"' + table.replace('"', '""') + '"'
        cursor = conn.execute(f"select * from {quoted}")
        columns = [d[0] for d in cursor.description]
        header = json.dumps(["table", table, sorted(columns)], separators=(",", ":"), ensure_ascii=False)
        digest.update(header.encode("utf-8") + b"\n")
        for line in sorted(_row_digest(columns, row) for row in cursor):
            digest.update(line.encode("ascii") + b"\n")
    return "sha256:" + digest.hexdigest()
