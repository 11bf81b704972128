"""A resume checks the run directory against the database: a restored backup never finishes a run without labels."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from conftest import TINY_TESTBED

REPO = Path(__file__).resolve().parents[1]


def _load_script(name: str):
    """A script of scripts/ as a module, without putting scripts/ on sys.path (it has a reliability.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


label_from_gold = _load_script("label_from_gold")  # the docs' stand-in for people

TINY = ["--iterations", "2", "--budget", "80", "-o", "trainer.epochs=2", *sum((["-o", o] for o in TINY_TESTBED), [])]


def _rows(db: Path, sql: str, *params):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def _label_and_resume(cli, db: Path, tmp_path: Path, run_id: str, iteration: int):
    to_label = tmp_path / "runs" / run_id / f"iteration-{iteration}" / "to-label.jsonl"
    out = tmp_path / f"labels-{iteration}.jsonl"
    assert label_from_gold.main([run_id, str(to_label), "--out", str(out), "--db", str(db)]) == 0
    assert cli("label", "import", run_id, out, "--db", db).exit_code == 0
    return cli("run", "--resume", run_id, "--db", db)


@pytest.fixture
def external_run(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("HARNESS_RUNS_DIR", raising=False)
    db = tmp_path / "board.db"
    result = cli("run", "--selector", "smallest", "--annotator", "external", "--db", db, *TINY)
    assert result.exit_code == 0, result.output
    (run_id,), = _rows(db, "select id from runs")
    return db, run_id


def test_a_database_restored_from_a_backup_does_not_finish_the_run_without_its_labels(cli, tmp_path, external_run):
    db, run_id = external_run
    backup = tmp_path / "backup.db"
    with sqlite3.connect(db) as source, sqlite3.connect(backup) as copy:  # the backup: awaiting iteration 1
        source.backup(copy)
    resumed = _label_and_resume(cli, db, tmp_path, run_id, 1)
    assert resumed.exit_code == 0, resumed.output  # stops again, for iteration 2's labels
    finished = _label_and_resume(cli, db, tmp_path, run_id, 2)
    assert finished.exit_code == 0 and _rows(db, "select status from runs") == [("finished",)]

    restored = tmp_path / "restored.db"  # the backup put back (beside the first: the same run directory)
    shutil.copy(backup, restored)
    again = cli("run", "--resume", run_id, "--db", restored)
    message = " ".join(again.output.split())
    assert again.exit_code == 2, again.output
    assert "checkpoint-2" in message and "come from different moments" in message
    assert _rows(restored, "select status from runs") == [("awaiting_labels",)]
    assert _rows(restored, "select count(*) from labels where label is not null") == [(0,)]


def test_a_run_directory_of_another_databases_run_is_refused(cli, tmp_path, external_run):
    db, run_id = external_run
    owner = tmp_path / "runs" / run_id / "OWNER.json"
    mark = json.loads(owner.read_text())
    assert mark["run_id"] == run_id and _rows(db, "select run_dir_token from runs") == [(mark["token"],)]
    owner.write_text(json.dumps({"run_id": "rdeadbeef00", "token": "0" * 16}))
    result = cli("run", "--resume", run_id, "--db", db)
    message = " ".join(result.output.split())
    assert result.exit_code == 2 and "belongs to run rdeadbeef00" in message and str(db) in message


def test_a_checkpoint_without_label_ids_is_checked_on_its_ledger_with_a_warning(cli, tmp_path, external_run):
    db, run_id = external_run
    resumed = _label_and_resume(cli, db, tmp_path, run_id, 1)
    assert resumed.exit_code == 0
    state_file = tmp_path / "runs" / run_id / "checkpoint-1" / "state.json"
    document = json.loads(state_file.read_text())
    assert document["format"] == 3 and len(document["labels"]["1"]) == document["charged"]["1"]
    document["format"], document["labels"] = 1, None  # as an older harness wrote it
    state_file.write_text(json.dumps(document))
    with pytest.warns(RuntimeWarning, match="older checkpoint without label ids"):
        finished = _label_and_resume(cli, db, tmp_path, run_id, 2)
    assert finished.exit_code == 0 and _rows(db, "select status from runs") == [("finished",)]
