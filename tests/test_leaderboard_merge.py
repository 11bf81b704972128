"""`harness leaderboard merge`: leaderboards of several machines folded into one (leaderboard/merge.py).

Two "machines" are made once per module: each holds a real tiny run (labels and texts from the loop),
and synthetic runs written through the store (an unfinished run with awaited labels, a metric column
added on demand, judgement-cache rows). Each test merges copies of them. A target is "unchanged" when
its logical dump (every schema statement and row) is the same before and after.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import reliability
from conftest import TINY_RUN

REPO = Path(__file__).resolve().parents[1]


# -- helpers -------------------------------------------------------------------------


def _run_record(seed: int, **extra):
    return {
        "config": {"testbed": {"name": "synthetic"}, "seed": seed}, "config_hash": "feedbeef", "seed": seed,
        "world_seed": seed, "testbed": "synthetic", "instance_selector": "largest", "corpus_selector": "largest",
        "allocator": "constant", "trainer": "native", "scorer_columns": "implicit_reward", "plugins": {},
        "versions": {}, "git_commit": None, "command": "test", "iterations": 1, "budget": 10, "keep": 0.5,
        "n_responses": 4, "harness_version": "test", **extra,
    }


def _judgement(answer: str, verdict: str = "A", pair: str = "p1"):
    from harness.judgements import Judgement, JudgementKey

    return Judgement(key=JudgementKey("openai", "gpt-test", "h" * 16, pair, 0), verdict=verdict, answer=answer,
                     prompt_tokens=3, completion_tokens=1)


def _rows(db: Path, sql: str, *params):
    conn = sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def _dump(db: Path) -> str:
    """sha256 of the database's logical content: every schema statement and row, in a fixed order."""
    conn = sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True)
    try:
        return hashlib.sha256("\n".join(conn.iterdump()).encode()).hexdigest()
    finally:
        conn.close()


def _copy(db: Path, to: Path) -> Path:
    """A copy of ``db`` at ``to`` through SQLite's backup API: what its WAL file holds included."""
    source, copy = sqlite3.connect(db), sqlite3.connect(to)
    try:
        source.backup(copy)
    finally:
        source.close()
        copy.close()
    return to


def _ids(db: Path) -> list[str]:
    return sorted(run_id for (run_id,) in _rows(db, "select id from runs"))


def _dicts(db: Path, sql: str, *params) -> list[dict]:
    conn = sqlite3.connect(Path(db).resolve().as_uri() + "?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in conn.execute(sql, params)]
    finally:
        conn.close()


def _per_run(db: Path, run_id: str) -> dict[str, list]:
    """Everything stored about one run: its row, its iteration and label rows, and the texts they name."""
    return {
        "run": _dicts(db, "select * from runs where id = ?", run_id),
        "iterations": _dicts(db, "select * from iterations where run_id = ? order by iteration", run_id),
        "labels": _dicts(db, "select * from labels where run_id = ? order by id", run_id),
        "texts": _dicts(db, "select t.hash, t.text from labels l join texts t on t.hash in "
                            "(l.prompt_hash, l.a_hash, l.b_hash) where l.run_id = ? order by l.id, t.hash", run_id),
    }


def _same_run(target: Path, source: Path, run_id: str) -> bool:
    """The target holds the source's run as stored, every column (a column only the target has is NULL)."""
    ours, theirs = _per_run(target, run_id), _per_run(source, run_id)
    for table, rows in theirs.items():
        if len(ours[table]) != len(rows):
            return False
        for mine, other in zip(ours[table], rows):
            if any(mine[key] != value for key, value in other.items()) or any(
                    mine[key] is not None for key in mine.keys() - other.keys()):
                return False
    return True


@pytest.fixture(scope="module")
def machines(cli, tmp_path_factory):
    """(laptop.db, server.db): what two machines recorded, never modified by a test (tests copy them)."""
    from leaderboard.judgements import JudgementCache
    from leaderboard.labels import PairLabel, record_pairs
    from leaderboard.store import Leaderboard

    root = tmp_path_factory.mktemp("machines")
    laptop, server = root / "laptop.db", root / "server.db"
    for db, seed in ((laptop, 0), (server, 1)):
        result = cli("run", "--selector", "smallest", "--seed", seed, "--db", db, *TINY_RUN)
        assert result.exit_code == 0, result.output
    with Leaderboard(laptop) as board:  # a run stopped for an external annotator: its labels awaited
        waiting = board.start_run(_run_record(5))
        board.record_iteration(waiting, {"iteration": 0, "win_rate": 0.5})
        record_pairs(board, waiting, 1, [PairLabel(0, "a prompt", "yes", "no", None, shown_swapped=True)],
                     "external")
        board.await_labels(waiting)
    with JudgementCache(laptop) as cache:
        cache.put(_judgement("A, clearly"))
    with Leaderboard(server) as board:  # a run with a metric column only the server has
        run_id = board.start_run(_run_record(7, server_note="on the server"))
        board.record_iteration(run_id, {"iteration": 0, "win_rate": 0.5, "server_metric": 1.25})
        board.finish_run(run_id, {"final_win_rate": 0.61, "final_server_metric": 2.5})
    with JudgementCache(server) as cache:
        cache.put(_judgement("B!", verdict="B", pair="p2"))
    return laptop, server


@pytest.fixture
def copies(machines, tmp_path):
    """Fresh copies of the two machines' databases in this test's folder."""
    return tuple(_copy(db, tmp_path / db.name) for db in machines)


def _merge(cli, target: Path, *sources, extra=()):
    return cli("leaderboard", "merge", *sources, "--db", target, *extra)


# -- merging ---------------------------------------------------------------------------


def test_runs_appear_once_with_their_iterations_labels_texts_and_judgements(cli, copies, tmp_path):
    laptop, server = copies
    target = tmp_path / "all.db"
    result = _merge(cli, target, laptop, server, extra=["--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [s["runs_added_count"] for s in report["sources"]] == [2, 2]
    assert _ids(target) == sorted(_ids(laptop) + _ids(server))
    for source in (laptop, server):
        for run_id in _ids(source):
            assert _same_run(target, source, run_id), run_id  # every column, ids kept
    labels = sum(s["rows_added"]["labels"] for s in report["sources"])
    assert labels == _rows(target, "select count(*) from labels")[0][0] > 80
    # the judgement cache of both machines, as stored
    assert sorted(_rows(target, "select pair_hash, answer from judgements")) == [("p1", "A, clearly"), ("p2", "B!")]
    # the server's on-demand columns came with its run
    assert _rows(target, "select server_note, final_server_metric from runs where server_note is not null") == [
        ("on the server", 2.5)]
    assert _rows(target, "select server_metric from iterations where server_metric is not null") == [(1.25,)]
    # the unfinished run is copied as it stands, and said so
    (waiting,) = [u for s in report["sources"] for u in s["unfinished"]]
    assert waiting["status"] == "awaiting_labels" and waiting["id"] in result.stderr
    assert _rows(target, "select count(*) from labels where run_id = ? and label is null", waiting["id"]) == [(1,)]
    assert _rows(target, "PRAGMA foreign_key_check") == [] and _rows(target, "PRAGMA integrity_check") == [("ok",)]
    # and the leaderboard shows the merged runs
    shown = cli("leaderboard", "--db", target, "--by", "run", "--all", "--json")
    assert shown.exit_code == 0, shown.output
    assert sorted(row["id"] for row in json.loads(shown.stdout)) == _ids(target)


def test_merging_again_or_from_a_machine_that_holds_merged_runs_changes_nothing(cli, copies, tmp_path):
    laptop, server = copies
    target = tmp_path / "all.db"
    assert _merge(cli, target, laptop, server).exit_code == 0
    before = _dump(target)
    again = _merge(cli, target, laptop, server, extra=["--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert [(s["runs_added_count"], s["runs_identical_count"]) for s in report["sources"]] == [(0, 2), (0, 2)]
    assert all(not any(s["rows_added"].values()) for s in report["sources"])
    assert _dump(target) == before
    # the server merges the combined database: it gains the laptop's runs, its own are identical
    combined = _copy(target, tmp_path / "combined.db")
    result = _merge(cli, server, combined, extra=["--json"])
    assert result.exit_code == 0, result.output
    (source,) = json.loads(result.stdout)["sources"]
    assert sorted(source["runs_added"]) == _ids(laptop) and sorted(source["runs_identical"]) == sorted(
        set(_ids(target)) - set(_ids(laptop)))
    assert _ids(server) == _ids(target)


def test_dry_run_reports_the_merge_and_writes_nothing(cli, copies, tmp_path):
    laptop, server = copies
    target = tmp_path / "all.db"
    dry = _merge(cli, target, laptop, server, extra=["--dry-run", "--json"])
    assert dry.exit_code == 0, dry.output
    assert not target.exists()  # not even an empty database
    assert "would be added" in dry.stderr and "nothing was written" in dry.stderr
    assert _merge(cli, target, laptop).exit_code == 0
    before = _dump(target)
    dry = _merge(cli, target, laptop, server, extra=["--dry-run", "--json"])
    assert _dump(target) == before
    real = _merge(cli, target, laptop, server, extra=["--json"])
    def counts(out: str) -> list[dict]:
        return [{k: v for k, v in s.items() if k != "dry_run"} for s in json.loads(out)["sources"]]

    assert counts(dry.stdout) == counts(real.stdout)


# -- refused ---------------------------------------------------------------------------


def _edit(db: Path, sql: str, *params) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute(sql, params)
    conn.close()


@pytest.mark.bad_input
@pytest.mark.parametrize("edit", ["number", "label", "extra iteration"])
def test_a_run_with_the_same_id_and_other_content_refuses_the_whole_source(cli, copies, tmp_path, edit):
    laptop, server = copies
    target = _copy(laptop, tmp_path / "target.db")
    edited = _copy(laptop, tmp_path / "edited.db")
    (run_id,) = [r for (r,) in _rows(laptop, "select id from runs where status = 'finished'")]
    if edit == "number":
        _edit(edited, "update runs set final_win_rate = final_win_rate + 0.001 where id = ?", run_id)
    elif edit == "label":
        _edit(edited, "update labels set label = case label when 'a' then 'b' else 'a' end "
                      "where id = (select min(id) from labels where run_id = ?)", run_id)
    else:
        _edit(edited, "insert into iterations (run_id, iteration, recorded_at) values (?, 99, 'now')", run_id)
    # a run the target lacks, from the same file: it must not be merged either
    _edit(edited, "insert into runs (id, status, started_at) values ('rnew0000001', 'failed', 'now')")
    before = _dump(target)
    result = _merge(cli, target, edited)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert run_id in message and str(edited) in message and str(target) in message
    assert "nothing from" in message
    assert _dump(target) == before
    reliability.bad_input("leaderboard merge conflict")


def test_a_conflict_in_a_later_file_keeps_the_earlier_files_merged(cli, copies, tmp_path):
    laptop, server = copies
    target = _copy(laptop, tmp_path / "target.db")
    edited = _copy(laptop, tmp_path / "edited.db")
    _edit(edited, "update runs set seed = seed + 100 where status = 'finished'")
    result = _merge(cli, target, server, edited)
    assert result.exit_code == 2, result.output
    assert "stays merged" in result.stderr and set(_ids(server)) <= set(_ids(target))
    assert set(_ids(target)) == set(_ids(laptop)) | set(_ids(server))


def _newer_schema(path: Path, laptop: Path) -> Path:
    _copy(laptop, path)
    _edit(path, "insert into _sqlite_migrations (migration_set, name, applied_at) "
                "values ('pairsel_harness.leaderboard', 'm999_from_the_future', 'now')")
    return path


def _foreign(path: Path, laptop: Path) -> Path:
    _edit(path, "create table runs (id integer primary key, name text)")
    return path


def _text(path: Path, laptop: Path) -> Path:
    path.write_text("run,win_rate\nr1,0.5\n" * 50)
    return path


def _directory(path: Path, laptop: Path) -> Path:
    path.mkdir()
    return path


@pytest.mark.bad_input
@pytest.mark.parametrize("make, words", [
    (_newer_schema, "newer pairsel-harness"),
    (_foreign, "not a leaderboard database"),
    (_text, "not a SQLite database"),
    (lambda path, laptop: path, "no leaderboard database"),
    (_directory, "is a directory"),
    (lambda path, laptop: path.parent / "target.db", "is the target database itself"),
])
def test_a_source_that_cannot_be_merged_exits_2_naming_it_and_changes_nothing(cli, copies, tmp_path, make, words):
    laptop, server = copies
    target = _copy(server, tmp_path / "target.db")
    source = make(tmp_path / "other.db", laptop)
    source_before = source.read_bytes() if source.is_file() else None
    before = _dump(target)
    # it is refused before anything is written, even after a good source
    result = _merge(cli, target, laptop, source)
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.split())
    assert str(source) in message and words in message, message
    assert _dump(target) == before
    if source_before is not None and source != target:
        assert source.read_bytes() == source_before
    reliability.bad_input("leaderboard merge source")


def test_a_self_merge_through_another_name_is_refused(cli, copies, tmp_path, monkeypatch):
    laptop, _ = copies
    monkeypatch.chdir(laptop.parent)
    before = _dump(laptop)
    result = cli("leaderboard", "merge", laptop.name, "--db", laptop)
    assert result.exit_code == 2 and "target database itself" in result.stderr
    link = tmp_path / "link.db"
    link.symlink_to(laptop)
    assert _merge(cli, laptop, link).exit_code == 2
    assert _dump(laptop) == before


def test_a_target_from_a_newer_schema_is_refused(cli, copies, tmp_path):
    laptop, server = copies
    target = _newer_schema(tmp_path / "newer.db", laptop)
    before = target.read_bytes()
    result = _merge(cli, target, server)
    assert result.exit_code == 2 and "newer pairsel-harness" in result.stderr
    assert target.read_bytes() == before


# -- interrupted -----------------------------------------------------------------------

#: `harness leaderboard merge` in a process that dies (SIGKILL) or is interrupted (Ctrl-C) right after
#: the first run of the source is copied, inside the source's transaction.
KILLER = """
import os, signal, sys
import leaderboard.merge as merge
copy = merge._copy_run

def copy_then_die(*args, **kwargs):
    copy(*args, **kwargs)
    if os.environ["MERGE_FAULT"] == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise KeyboardInterrupt

merge._copy_run = copy_then_die
from harness.cli import main
sys.argv = ["harness", *sys.argv[1:]]
main()
"""


@pytest.mark.fault
@pytest.mark.parametrize("fault", ["sigkill", "ctrl-c"])
def test_an_interrupted_merge_leaves_the_target_as_it_was(copies, tmp_path, fault):
    laptop, server = copies
    target = _copy(laptop, tmp_path / "target.db")
    before, runs_before = _dump(target), len(_ids(target))
    env = {**os.environ, "MERGE_FAULT": fault, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", KILLER, "leaderboard", "merge", str(server), "--db", str(target)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    if fault == "sigkill":
        assert done.returncode == -signal.SIGKILL, done.stderr
    else:
        assert done.returncode == 130, done.stderr
        assert "interrupted" in done.stderr and str(target) in " ".join(done.stderr.split())
    assert _rows(target, "PRAGMA integrity_check") == [("ok",)]
    assert _dump(target) == before
    reliability.fault(f"leaderboard merge killed mid-transaction ({fault})", expected_rows=runs_before,
                      recorded_rows=len(_ids(target)))
    # and the merge, run again, completes
    again = subprocess.run([sys.executable, "-m", "harness", "leaderboard", "merge", str(server), "--db", str(target)],
                           capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert _ids(target) == sorted(_ids(laptop) + _ids(server))


# -- what merge must know about the schema -----------------------------------------------------


def test_every_table_of_the_schema_is_handled_by_merge(tmp_path):
    """A migration that adds a table fails this test until leaderboard/merge.py says how to merge it."""
    from leaderboard.merge import OWN_TABLES, PER_RUN_TABLES, SHARED_TABLES
    from leaderboard.store import Leaderboard

    with Leaderboard(tmp_path / "fresh.db") as board:
        conn = board.conn
        tables = {name for (name,) in conn.execute("select name from sqlite_master where type = 'table'")
                  if not name.startswith("sqlite_")}
        handled = {"runs", *PER_RUN_TABLES, *SHARED_TABLES, *OWN_TABLES}
        assert tables == handled, f"tables merge does not handle: {sorted(tables - handled)}; " \
                                  f"listed but gone: {sorted(handled - tables)}"
        for table in tables - {"runs"}:
            columns = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
            keyed = {row[2] for row in conn.execute(f"PRAGMA foreign_key_list({table})")}
            if "run_id" in columns or "runs" in keyed:
                assert table in PER_RUN_TABLES, f"{table} has rows per run: add it to PER_RUN_TABLES"
            if table in PER_RUN_TABLES:
                assert set(PER_RUN_TABLES[table]) <= columns
            if table in SHARED_TABLES:
                primary = [row[1] for row in sorted(conn.execute(f"PRAGMA table_info({table})"), key=lambda r: r[5])
                           if row[5]]
                assert tuple(primary) == SHARED_TABLES[table], f"{table}: merged by its primary key"


def test_a_judgement_the_target_has_keeps_its_answer(copies, tmp_path):
    from leaderboard.judgements import JudgementCache
    from leaderboard.merge import merge

    laptop, _ = copies
    target = tmp_path / "target.db"
    with JudgementCache(target) as cache:
        cache.put(_judgement("B, on second thought", verdict="B"))
    (report,) = merge(target, [laptop])
    assert report.rows_added["judgements"] == 0
    assert _rows(target, "select verdict, answer from judgements") == [("B", "B, on second thought")]


def test_merge_imports_no_heavy_library(copies, tmp_path):
    """Merging into an existing leaderboard needs neither sqlite-utils (which imports pandas when it is
    installed) nor anything heavier than numpy. (Creating a new target applies the migrations, which need
    sqlite-utils, as every command that creates a database does.)"""
    from test_import_hygiene import PROBE

    laptop, server = copies
    heavy = ["torch", "transformers", "trl", "datasets", "scipy", "pandas", "sqlite_utils"]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(["leaderboard", "merge", str(laptop), "--db", str(server)]),
         json.dumps(heavy)],
        capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert "CODE=0" in done.stderr, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("HEAVY=")]
    assert json.loads(line[len("HEAVY="):]) == []
