"""The columns of a run's row in ``runs``, each declared once.

A :class:`Column` names the stored column, its SQLite type, what it holds,
the run-record key :meth:`leaderboard.store.Leaderboard.start_run` takes for
it (``config`` for ``config_json``; none for the columns the store writes
itself), the Python types that key accepts, and the migration that created it.
Everything else derives from :data:`RUN_COLUMNS`: the columns migration
``m001`` creates (those with ``since = "m001"``), the keys ``start_run``
requires, the columns no later write may change, the final metrics
``finish_run`` writes, and the schema reference's descriptions.

A new column is one new :class:`Column` with the ``since`` of the migration
that adds it.

Standard library only: the store reads this without importing sqlite-utils.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    """One column of ``runs``.

    ``key``: the run-record key ``start_run`` takes for it ("" for a column the
    store writes itself, and for the final metrics, which ``finish_run`` takes).
    ``accepts``: the Python types of that key's value. ``part``: ``identity``
    (written once by ``start_run``), ``managed`` (status and times, by the
    store), ``final`` (by ``finish_run``).
    """

    name: str
    type: type
    holds: str
    part: str
    key: str = ""
    accepts: tuple[type, ...] = ()
    since: str = "m001"


def _identity(name: str, kind: type, holds: str, accepts: tuple[type, ...] | None = None, key: str | None = None) -> Column:
    return Column(name, kind, holds, "identity", key or name, accepts or (kind,))


RUN_COLUMNS: tuple[Column, ...] = (
    Column("id", str, "run id: `r` + 10 hex digits", "managed"),
    Column("status", str, "`running`, `finished`, `failed`, `interrupted` or `awaiting_labels`", "managed"),
    Column("started_at", str, "UTC, ISO 8601", "managed"),
    Column("finished_at", str, "UTC, ISO 8601; set with the final status", "managed"),
    _identity("testbed", str, "testbed name"),
    _identity("instance_selector", str, "selector at the instance level (one pair per prompt)"),
    _identity("corpus_selector", str, "selector at the corpus level (which pairs to keep)"),
    _identity("allocator", str, "budget allocator"),
    _identity("trainer", str, "trainer name"),
    _identity("scorer_columns", str, "score columns computed, comma-separated"),
    _identity("seed", int, "run seed (prompts, samples, training)"),
    _identity("world_seed", int, "world seed (world, pi_ref, pi_0, evaluation set)"),
    _identity("iterations", int, "iterations planned"),
    _identity("budget", int, "gold-label budget"),
    _identity("keep", float, "corpus-level share of pairs kept", accepts=(int, float)),
    _identity("n_responses", int, "responses sampled per prompt (N)"),
    _identity("config_hash", str, "hash of the config without its seeds: one strategy"),
    _identity("config_json", str, "the full config, every option (JSON)", accepts=(dict,), key="config"),
    _identity("plugins_json", str, "plugin and version behind every component (JSON)", accepts=(dict,),
              key="plugins"),
    _identity("versions_json", str, "library versions (JSON)", accepts=(dict,), key="versions"),
    _identity("git_commit", str, "commit of the harness checkout (`-dirty` with changes)",
              accepts=(str, type(None))),
    _identity("command", str, "the command line"),
    _identity("harness_version", str, "pairsel-harness version"),
    Column("error", str, "traceback of a failed or interrupted run", "managed"),
    Column("initial_win_rate", float, "win rate of pi_0", "final"),
    Column("final_win_rate", float, "win rate of the final policy vs the reference outputs (ties 1/2)", "final"),
    Column("final_win_rate_se", float, "its standard error (one run's evaluation error)", "final"),
    Column("final_gold_reward", float, "mean gold reward of the final policy", "final"),
    Column("final_kl", float, "KL(pi ‖ pi_ref) of the final policy", "final"),
    Column("labels_used", int, "gold labels charged to the ledger", "final"),
    Column("wall_seconds", float, "wall time of the run, building its world excluded (that is time_setup)", "final"),
)


def columns(*, since: str | None = None, part: str | None = None) -> dict[str, type]:
    """``{column: SQLite type}`` of the declared columns, optionally of one migration or one part."""
    return {c.name: c.type for c in RUN_COLUMNS
            if (since is None or c.since == since) and (part is None or c.part == part)}


def required_run_keys() -> dict[str, tuple[type, ...]]:
    """The run-record keys ``start_run`` requires, with the Python types each value may have."""
    return {c.key: c.accepts for c in RUN_COLUMNS if c.part == "identity"}


def descriptions() -> dict[str, str]:
    """What each declared column holds (the schema reference)."""
    return {c.name: c.holds for c in RUN_COLUMNS}
