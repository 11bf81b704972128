"""Counts for the docs' reliability page (``python scripts/reliability.py``).

Tests marked ``fault`` or ``bad_input`` report what they tried here: bad
inputs fed, and for each fault the rows a run should have recorded against the
rows it did. With ``$HARNESS_RELIABILITY_OUT`` set, the counts are written
there as JSON at the end of the session; otherwise this is a no-op tally.
"""

from __future__ import annotations

import json
import os
from collections import Counter

COUNTS: Counter = Counter()
FAULTS: list[dict] = []
#: Per kind of generated bad input (tests/test_bad_input_generator.py): how each one ended.
OUTCOMES: dict[str, Counter] = {}


def bad_input(kind: str, n: int = 1) -> None:
    """``n`` more bad inputs of ``kind`` were tried (and handled)."""
    COUNTS[kind] += n


def outcome(kind: str, *, clean: bool, traceback: bool, partial: bool) -> None:
    """One generated bad input of ``kind`` ended as a clean exit 2 or not, with a traceback, leaving files behind."""
    counts = OUTCOMES.setdefault(kind, Counter())
    counts["tried"] += 1
    counts["clean"] += bool(clean)
    counts["traceback"] += bool(traceback)
    counts["partial"] += bool(partial)


def fault(name: str, *, expected_rows: int, recorded_rows: int) -> None:
    """A fault was injected; the run should have kept ``expected_rows`` leaderboard rows and kept ``recorded_rows``."""
    FAULTS.append({"fault": name, "expected_rows": expected_rows, "recorded_rows": recorded_rows})


def write() -> None:
    path = os.environ.get("HARNESS_RELIABILITY_OUT")
    if path:
        with open(path, "w", encoding="utf-8") as handle:
            json.dump({"bad_inputs": dict(COUNTS), "faults": FAULTS,
                       "outcomes": {kind: dict(counts) for kind, counts in OUTCOMES.items()}}, handle, indent=1)
