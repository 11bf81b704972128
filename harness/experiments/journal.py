"""A run's record survives a leaderboard it cannot write to.

Every leaderboard write of a run (its start, each iteration, its labels, the
end) goes through :class:`Recorder`. While the database takes the writes,
nothing else happens. The first time one fails with an operational error (the
file locked by another process for longer than the busy timeout, a read-only
or full disk, an I/O error), the recorder stops writing to it and appends
that write and every later one to ``RUN_DIR/unrecorded.jsonl`` instead; the run
carries on. :func:`replay` (``harness leaderboard import RUN_DIR``) writes the
journal into a leaderboard later, skipping whatever is already there, so it can
be run again safely. Nothing is lost silently: the run ends saying where its
record is and how to import it.
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

JOURNAL = "unrecorded.jsonl"
IMPORTED = "unrecorded.imported.jsonl"


def _plain(value: Any) -> Any:
    """JSON for numpy scalars and arrays (the rows hold floats and ints)."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


class Recorder:
    """Writes a run's record to the leaderboard, or to its run directory once the leaderboard fails."""

    def __init__(self, board: Any, run_id: str, run_dir: Path, *, failure: str | None = None):
        self.board, self.run_id, self.run_dir = board, run_id, Path(run_dir)
        self.failure = failure  # why the leaderboard is no longer written, once it is not

    @property
    def journal(self) -> Path:
        return self.run_dir / JOURNAL

    def write(self, op: str, payload: dict[str, Any] | Callable[[], dict[str, Any]], action: Callable[[], Any]) -> None:
        """Run ``action`` (a leaderboard write); once one has failed, journal ``op`` + ``payload`` instead.

        ``payload`` may be a function, called only when the entry is journalled.
        """
        if self.failure is None and self.board is not None:
            try:
                action()
                return
            except sqlite3.OperationalError as exc:
                self.failure = f"{type(exc).__name__}: {exc}"
                if self.board.conn.in_transaction:
                    self.board.conn.rollback()
        self._append({"op": op, "run_id": self.run_id, **(payload() if callable(payload) else payload)})

    def _append(self, entry: dict[str, Any]) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        line = json.dumps(entry, default=_plain, allow_nan=False)
        with self.journal.open("a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


@dataclass(frozen=True)
class ReplayResult:
    """What an import wrote: the runs, iteration rows and labels added, and entries already there."""

    runs: list[str]
    iterations: int
    labels: int
    skipped: int


def read_entries(path: Path) -> list[dict[str, Any]]:
    """The entries of the journal file ``path``; ValueError naming the line of a damaged one."""
    entries = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entries.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}, line {number}: not valid JSON ({exc.msg}); the journal was damaged") from None
    return entries


def replay(board: Any, run_dir: Path) -> ReplayResult:
    """Write ``RUN_DIR/unrecorded.jsonl`` into ``board``; entries already recorded are skipped.

    The journal is renamed ``unrecorded.imported.jsonl`` once every entry is in.
    """
    path = Path(run_dir) / JOURNAL
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} holds no {JOURNAL}: its run was recorded in the leaderboard already "
                                "(or this is not a run directory)")
    result = replay_entries(board, read_entries(path), where=str(path))
    path.rename(path.with_name(IMPORTED))
    return result


def replay_entries(board: Any, entries: list[dict[str, Any]], *, where: str = "the journal") -> ReplayResult:
    """Write journal ``entries`` (as :class:`Recorder` wrote them) into ``board``; those already there are skipped.

    A sweep's driver calls it with the entries its workers return (they never open the leaderboard).
    """
    from leaderboard.labels import PairLabel, record_pairs, record_scores

    runs: list[str] = []
    iterations = labels = skipped = 0
    for entry in entries:
        op, run_id = entry["op"], entry["run_id"]
        run = board.get_run(run_id)
        status = None if run is None else run["status"]
        if op == "start":
            if run is None:
                board.start_run(entry["record"], run_id=run_id, started_at=entry.get("started_at"))
                runs.append(run_id)
            else:
                skipped += 1
        elif op == "iteration":
            recorded = {row["iteration"] for row in board.iterations(run_id)}
            if entry["row"]["iteration"] in recorded or status != "running":
                skipped += 1
            else:
                board.record_iteration(run_id, entry["row"])
                iterations += 1
        elif op == "pairs":
            record_pairs(board, run_id, entry["iteration"], [PairLabel(**p) for p in entry["pairs"]], entry["source"],
                         replace=False)
            labels += len(entry["pairs"])
        elif op == "scores":
            record_scores(board, run_id, entry["iteration"], entry["prompts"], entry["responses"], entry["scores"],
                          entry["source"], replace=False)
            labels += len(entry["scores"])
        elif op in ("finish", "fail", "await"):
            if status != "running":
                skipped += 1
            elif op == "finish":
                board.finish_run(run_id, entry["final"])
            elif op == "fail":
                board.fail_run(run_id, entry["status"], entry["error"])
            else:
                board.await_labels(run_id)
        else:
            raise ValueError(f"{where}: unknown journal entry {op!r}")
    return ReplayResult(runs, iterations, labels, skipped)
