"""The judgement cache: every answer a paying judge got, kept in the leaderboard database.

A judge that pays per call (an LLM behind an HTTP API) stores each answer
here the moment it arrives, so a re-run, a resumed run or a run that failed
half way never pays for the same question twice. The table lives in the
leaderboard database file (``judgements``) next to ``runs`` and
``iterations``; :class:`JudgementCache` creates it if it is missing, with the
same SQL a leaderboard migration uses, so either may come first.

``judgements``
    One row per question asked, keyed by ``(judge, model, prompt_hash,
    pair_hash, swapped)``:

    * ``judge``: the judge's name (``openai``);
    * ``model``: the model that answered, as named to the endpoint;
    * ``prompt_hash``: sha256 of everything in the request but the two
      responses (the judge's template, its settings that change the answer,
      and the instruction);
    * ``pair_hash``: sha256 of the two response texts in canonical
      (sorted) order, so the pair (a, b) and the pair (b, a) share rows;
    * ``swapped``: 0 when the canonically first response was shown first
      (as "A"), 1 when it was shown second;
    * ``verdict``: the shown position the judge preferred, ``A`` or ``B``,
      or ``invalid`` when its answer was neither;
    * ``answer``: the raw answer text; ``prompt_tokens`` and
      ``completion_tokens``: what the endpoint billed; ``created_at``: UTC,
      ISO 8601.

No credential is ever stored: the cache is given keys and answers only.
Writes take SQLite's write lock up front (``BEGIN IMMEDIATE``) and wait up to
30 s for it, and the file is in WAL mode, exactly like
:class:`leaderboard.store.Leaderboard`, so parallel runs can share the file.
This module uses only the standard library.
"""

from __future__ import annotations

import datetime
import os
import pathlib
import sqlite3
import threading
from collections.abc import Iterable

from harness.judgements import VERDICTS, Judgement, JudgementKey, digest
from leaderboard.migrations import JUDGEMENTS_TABLE_SQL  # created if missing, as the migration does
from leaderboard.store import busy_timeout, enable_wal, refuse_if_forbidden

__all__ = ["JUDGEMENTS_TABLE_SQL", "Judgement", "JudgementCache", "JudgementKey", "VERDICTS", "digest"]


_COLUMNS = ("judge", "model", "prompt_hash", "pair_hash", "swapped",
            "verdict", "answer", "prompt_tokens", "completion_tokens", "created_at")


def _now() -> str:
    """The current UTC time, ISO 8601 with milliseconds (as the leaderboard writes it)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


class JudgementCache:
    """The ``judgements`` table of the leaderboard database at ``path`` (created if needed): the
    :class:`harness.judgements.JudgementCache` the experiment layer gives paying judges.

    ``":memory:"`` gives a throwaway cache. Safe to share between threads;
    every :meth:`put` is its own committed transaction.
    """

    def __init__(self, path: str | os.PathLike[str]):
        refuse_if_forbidden(path)
        self.path = path if str(path) == ":memory:" else pathlib.Path(path)
        memory = self.path == ":memory:"
        if not memory:
            if self.path.is_dir():
                raise IsADirectoryError(f"{self.path} is a directory, not a leaderboard database")
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        # Autocommit mode: transactions are begun explicitly (BEGIN IMMEDIATE).
        self.conn = sqlite3.connect(str(self.path), timeout=busy_timeout(),
                                    isolation_level=None, check_same_thread=False)
        try:
            if not memory:
                self._enable_wal()
            with self._writing():
                self.conn.execute(JUDGEMENTS_TABLE_SQL)
        except sqlite3.DatabaseError as exc:
            self.conn.close()
            if type(exc) is sqlite3.DatabaseError:  # not a locked/busy OperationalError
                raise ValueError(f"{self.path} is not a SQLite database ({exc})") from None
            raise
        except BaseException:
            self.conn.close()
            raise

    # -- lifecycle -----------------------------------------------------------

    def close(self) -> None:
        with self._lock:
            self.conn.close()

    def __enter__(self) -> JudgementCache:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"JudgementCache({str(self.path)!r})"

    def __len__(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT count(*) FROM judgements").fetchone()[0])

    def _enable_wal(self) -> None:
        enable_wal(self.conn)

    def _writing(self):
        """A write transaction holding the write lock from its start (see leaderboard.store)."""
        return _Transaction(self.conn)

    # -- reading and writing -------------------------------------------------

    def get(self, key: JudgementKey) -> Judgement | None:
        """The stored answer to ``key``, or None."""
        return self.get_many([key]).get(JudgementKey(*key))

    def get_many(self, keys: Iterable[JudgementKey]) -> dict[JudgementKey, Judgement]:
        """The stored answers to those of ``keys`` that have one (missing keys are left out)."""
        query = (f"SELECT {', '.join(_COLUMNS)} FROM judgements WHERE judge = ? AND model = ? "
                 "AND prompt_hash = ? AND pair_hash = ? AND swapped = ?")
        found: dict[JudgementKey, Judgement] = {}
        with self._lock:
            for key in keys:
                key = JudgementKey(*key)
                if key in found:
                    continue
                row = self.conn.execute(query, tuple(key)).fetchone()
                if row is not None:
                    found[key] = _from_row(row)
        return found

    def put(self, judgement: Judgement) -> bool:
        """Store one answer at once (committed); False if that key was already stored."""
        return self.put_many([judgement]) == 1

    def put_many(self, judgements: Iterable[Judgement]) -> int:
        """Store answers in one transaction; return how many were new.

        A key already stored keeps its first answer (two parallel runs that
        paid for the same question agree on what is cached).
        """
        rows = [_to_row(j) for j in judgements]
        if not rows:
            return 0
        sql = (f"INSERT OR IGNORE INTO judgements ({', '.join(_COLUMNS)}) "
               f"VALUES ({', '.join('?' * len(_COLUMNS))})")
        with self._lock, self._writing():
            before = self.conn.total_changes
            self.conn.executemany(sql, rows)
            return self.conn.total_changes - before


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any exception."""

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.conn.execute("COMMIT")
        elif self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def _to_row(judgement: Judgement) -> tuple:
    """The table row of ``judgement`` (``created_at`` now if unset)."""
    key = JudgementKey(*judgement.key)
    return (*key[:4], int(key.swapped), judgement.verdict, judgement.answer,
            int(judgement.prompt_tokens), int(judgement.completion_tokens), judgement.created_at or _now())


def _from_row(row: tuple) -> Judgement:
    """The :class:`Judgement` of a table row."""
    key = JudgementKey(row[0], row[1], row[2], row[3], int(row[4]))
    return Judgement(key=key, verdict=row[5], answer=row[6] or "", prompt_tokens=int(row[7] or 0),
                     completion_tokens=int(row[8] or 0), created_at=row[9])
