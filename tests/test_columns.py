"""The run record's columns are declared once (leaderboard.columns); the schema, start_run and the runner agree."""

from __future__ import annotations

from harness.config import build_config, instantiate
from harness.experiments.runner import run_record
from harness.plugins import load_registry
from leaderboard import columns
from leaderboard.store import REQUIRED_RUN_KEYS, Leaderboard


def test_migration_m001_creates_exactly_the_declared_columns_in_order():
    conn = Leaderboard(":memory:").conn
    created = [name for (name,) in conn.execute("select name from pragma_table_info('runs') order by cid")]
    declared = [c.name for c in columns.RUN_COLUMNS if c.since == "m001"]
    assert created[: len(declared)] == declared
    assert set(created) == set(declared)  # no later migration adds a column to runs yet


def test_start_run_requires_the_declared_identity_keys():
    assert REQUIRED_RUN_KEYS == columns.required_run_keys()
    identity = [c for c in columns.RUN_COLUMNS if c.part == "identity"]
    assert len(REQUIRED_RUN_KEYS) == len(identity) == 19
    assert REQUIRED_RUN_KEYS["config"] == (dict,) and REQUIRED_RUN_KEYS["keep"] == (int, float)


def test_the_runner_writes_every_required_key_with_an_accepted_type():
    registry = load_registry()
    config = build_config(registry)
    record = run_record(config, instantiate(registry, config), registry)
    for key, accepted in REQUIRED_RUN_KEYS.items():
        assert key in record, key
        assert isinstance(record[key], accepted), (key, type(record[key]))


def test_every_declared_column_is_described_once():
    names = [c.name for c in columns.RUN_COLUMNS]
    assert len(names) == len(set(names))
    assert all(c.holds for c in columns.RUN_COLUMNS)
    from leaderboard.schema_doc import DESCRIPTIONS

    assert DESCRIPTIONS["runs"] == columns.descriptions()
