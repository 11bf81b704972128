"""A small leaderboard for the serve and publish tests: three strategies on five seeds, labels for one run."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from leaderboard.labels import PairLabel, record_pairs
from leaderboard.store import Leaderboard
from tests.test_leaderboard_browse import add_run, largest_win, random_win, smallest_win


def make_board(path: Path) -> dict[str, str]:
    """Write the leaderboard at ``path``; returns {"smallest/0": run id, ...} and "labelled": the run with labels."""
    ids: dict[str, str] = {}
    with Leaderboard(path) as board:
        for seed in range(5):
            ids[f"smallest/{seed}"] = add_run(board, "smallest", seed=seed, win=smallest_win(seed))
            ids[f"random/{seed}"] = add_run(board, "random", seed=seed, win=random_win(seed))
            ids[f"largest/{seed}"] = add_run(board, "largest", seed=seed, win=largest_win(seed))
        labelled = ids["smallest/0"]
        record_pairs(board, labelled, 1, [
            PairLabel(0, "Say <hello> & wave", "hello!", "go away", "a"),
            PairLabel(1, "Count to three", "1 2 3", "1 2", "b"),
        ], "testbed:synthetic")
    ids["labelled"] = labelled
    return ids


def make_newer_schema(path: Path) -> None:
    """A leaderboard with a migration this harness does not know."""
    Leaderboard(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("insert into _sqlite_migrations (migration_set, name, applied_at) "
                     "values ('pairsel_harness.leaderboard', 'm999_from_the_future', '2030-01-01')")


def make_foreign(path: Path) -> None:
    """Another program's database that happens to have a runs table."""
    with sqlite3.connect(path) as conn:
        conn.execute("create table runs (id integer primary key, distance real)")
