"""Schema of the leaderboard database, as ``sqlite_utils.Migrations``.

Each migration runs once per database and is recorded in the
``_sqlite_migrations`` table. Never edit a migration that has shipped: add a
new one below it. This file imports nothing from the harness, so the
sqlite-utils command line can apply it on its own::

    sqlite-utils migrate leaderboard.db leaderboard/migrations.py

The tables are plain SQLite tables with JSON stored as text, so
``datasette leaderboard.db`` browses them as they are.

``runs``
    One row per run, keyed by ``id``. Written with status ``running`` when a
    run starts; ``finished`` rows get their final metrics in the same
    transaction that sets the status, ``failed``/``interrupted`` rows get the
    error text and never any final metric. Columns for metrics that are not
    declared here are added on demand when a run first reports them.
``iterations``
    One row per (``run_id``, ``iteration``); iteration 0 is the initial policy
    pi_0. Metric columns are added on demand.
``ranked_runs`` (view)
    Finished runs, best final win rate first: the table ``harness
    leaderboard`` shows.
"""

from __future__ import annotations

import textwrap

from sqlite_utils import Migrations

from leaderboard.columns import columns

# leaderboard/store.py names this set and its migrations (MIGRATION_SET,
# MIGRATION_NAMES) so that it can open an up-to-date database without
# importing sqlite-utils: add a new migration's name there too.
migrations = Migrations("pairsel_harness.leaderboard")

#: Columns of ``runs`` that m001 created besides the final metrics (:mod:`leaderboard.columns` declares them).
RUN_COLUMNS: dict[str, type] = {name: kind for name, kind in columns(since="m001").items()
                                if name not in columns(part="final")}

#: Final metrics written by ``finish_run``; declared so that they have a type,
#: can be indexed and appear in datasette before the first run finishes.
FINAL_COLUMNS: dict[str, type] = columns(part="final")


@migrations(name="m001_create_runs")
def m001_create_runs(db):
    db["runs"].create(
        {**RUN_COLUMNS, **FINAL_COLUMNS},
        pk="id",
        not_null={"status", "started_at"},
    )


@migrations(name="m002_create_iterations")
def m002_create_iterations(db):
    db["iterations"].create(
        {"run_id": str, "iteration": int, "recorded_at": str},
        pk=("run_id", "iteration"),
        foreign_keys=[("run_id", "runs", "id")],
        not_null={"run_id", "iteration"},
    )


@migrations(name="m003_indexes_and_ranked_view")
def m003_indexes_and_ranked_view(db):
    runs = db["runs"]
    runs.create_index(["status"])
    runs.create_index(["testbed"])
    runs.create_index(["final_win_rate"])
    runs.create_index(["started_at"])
    # Runs with the same config hash differ only by seed: group them.
    runs.create_index(["config_hash"])
    db.create_view(
        "ranked_runs",
        textwrap.dedent(
            """
            select
              id, testbed, instance_selector, corpus_selector, allocator, trainer,
              seed, world_seed, iterations, budget, labels_used,
              final_win_rate, final_win_rate_se,
              final_win_rate - initial_win_rate as delta_win_rate,
              final_gold_reward, final_kl, wall_seconds, started_at, finished_at,
              config_hash
            from runs
            where status = 'finished'
            order by final_win_rate is null, final_win_rate desc, started_at, rowid
            """
        ).strip(),
    )


@migrations(name="m004_labels_and_texts")
def m004_labels_and_texts(db):
    """Every gold label a run paid for, and the text it was given for.

    ``labels``: one row per label (``kind`` ``pair``: a pairwise preference,
    ``label`` in a / b / tie in the harness's own order of the pair;
    ``kind`` ``score``: one pointwise gold score of one response, in
    ``score``). A run's ledger is the count of its rows. ``shown_swapped`` is
    set for pairs handed to an external annotator (1: they saw b as "a");
    their ``label`` stays NULL until imported. Text is stored once in
    ``texts``, keyed by its sha256 (16 hex digits).
    """
    db["texts"].create({"hash": str, "text": str}, pk="hash", not_null={"text"})
    db["labels"].create(
        {
            "id": str,
            "run_id": str,
            "iteration": int,
            "kind": str,
            "position": int,
            "prompt_hash": str,
            "a_hash": str,
            "b_hash": str,
            "shown_swapped": int,
            "label": str,
            "score": float,
            "source": str,
            "annotator": str,
            "requested_at": str,
            "labelled_at": str,
        },
        pk="id",
        foreign_keys=[("run_id", "runs", "id")],
        not_null={"run_id", "iteration", "kind", "position", "prompt_hash", "a_hash", "source", "requested_at"},
    )
    db["labels"].create_index(["run_id", "iteration"])


@migrations(name="m005_judgements")
def m005_judgements(db):
    """Every answer a paying judge got (``leaderboard.judgements``), so no run pays twice for one.

    ``IF NOT EXISTS``: a judgement cache opened on a database before this
    migration ran creates the same table itself.
    """
    db.execute(JUDGEMENTS_TABLE_SQL)


@migrations(name="m006_text_messages")
def m006_text_messages(db):
    """``texts.messages``: a conversational prompt's message list (JSON), beside its canonical text.

    A testbed that renders chat messages into one prompt text (its chat-template rendering) keeps the list
    here, so that an export in TRL's conversational format gives the messages back. NULL for plain text.
    """
    db["texts"].add_column("messages", str)


#: The ``judgements`` table; :class:`leaderboard.judgements.JudgementCache` runs the same statement
#: on a database that predates this migration.
JUDGEMENTS_TABLE_SQL = """CREATE TABLE IF NOT EXISTS judgements (
    judge TEXT NOT NULL,
    model TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    pair_hash TEXT NOT NULL,
    swapped INTEGER NOT NULL CHECK (swapped IN (0, 1)),
    verdict TEXT NOT NULL CHECK (verdict IN ('A', 'B', 'invalid')),
    answer TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    created_at TEXT NOT NULL,
    PRIMARY KEY (judge, model, prompt_hash, pair_hash, swapped)
)"""
