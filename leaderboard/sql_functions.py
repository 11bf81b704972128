"""SQL functions the browsing views (:mod:`leaderboard.views`) call, added to a sqlite3 connection.

* ``pairsel_compare(baseline, metric, confidence)``: the rows of
  :func:`leaderboard.compare.compare` over the finished runs, as a JSON array (read with
  ``json_each``). An empty or NULL argument takes the default of ``harness leaderboard compare``
  (``random``, ``final_win_rate``, ``0.95``). A baseline or metric that does not exist gives one row
  whose ``reason`` says what is wrong and what to pass instead, rather than an SQL error.
* ``pairsel_stdev(x)``: the sample standard deviation (ddof 1) of the non-null values, an aggregate.

Both compute with the same code as the command line (:mod:`leaderboard.compare`,
:mod:`leaderboard.stats`), so the browser shows the numbers the terminal shows.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

__all__ = ["DEFAULT_BASELINE", "DEFAULT_CONFIDENCE", "DEFAULT_METRIC", "compare_rows", "register"]

DEFAULT_BASELINE = "random"
DEFAULT_METRIC = "final_win_rate"
DEFAULT_CONFIDENCE = 0.95


def compare_rows(conn: sqlite3.Connection, baseline: Any = None, metric: Any = None,
                 confidence: Any = None) -> list[dict[str, Any]]:
    """The rows ``harness leaderboard compare`` computes with these options (empty: the defaults)."""
    from harness.errors import HarnessError
    from leaderboard.compare import compare
    from leaderboard.query import Filters

    baseline = str(baseline).strip() if baseline not in (None, "") else DEFAULT_BASELINE
    metric = str(metric).strip() if metric not in (None, "") else DEFAULT_METRIC
    try:
        level = float(confidence) if confidence not in (None, "") else DEFAULT_CONFIDENCE
    except ValueError:
        return [{"reason": f"confidence must be a number between 0 and 1, e.g. 0.95; got {confidence!r}"}]
    try:
        result = compare(conn, Filters("finished", None, None, None, None),
                         baseline=baseline, metric=metric, confidence=level)
    except HarnessError as exc:
        return [{"reason": str(exc)}]
    return result["rows"]


class _Stdev:
    """The ``pairsel_stdev`` aggregate."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def step(self, value: Any) -> None:
        if value is not None:
            self.values.append(float(value))

    def finalize(self) -> float | None:
        from leaderboard.stats import mean_std

        return mean_std(self.values)[2]


def register(conn: sqlite3.Connection) -> None:
    """Add ``pairsel_compare`` and ``pairsel_stdev`` to ``conn``."""

    def pairsel_compare(baseline: Any, metric: Any, confidence: Any) -> str:
        rows = compare_rows(conn, baseline, metric, confidence)
        return json.dumps(rows, ensure_ascii=False, default=str)

    conn.create_function("pairsel_compare", 3, pairsel_compare)
    conn.create_aggregate("pairsel_stdev", 1, _Stdev)
