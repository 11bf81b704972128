"""The leaderboard: store (schema, transactions, validation), rendering and the CLI."""

from __future__ import annotations

import concurrent.futures
import datetime
import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from harness.cli.leaderboard import NO_RUNS_MESSAGE, leaderboard_app
from leaderboard import render
from leaderboard.migrations import migrations
from leaderboard.store import REQUIRED_RUN_KEYS, Leaderboard, default_db_path

REPO = Path(__file__).resolve().parents[1]


def make_run(**overrides):
    run = {
        "config": {"testbed": {"name": "synthetic", "preset": "default"}, "beta": 1.0, "keep": 0.5},
        "config_hash": "c0ffee",
        "seed": 0,
        "world_seed": 0,
        "testbed": "synthetic",
        "instance_selector": "smallest",
        "corpus_selector": "smallest",
        "allocator": "constant",
        "trainer": "dpo",
        "scorer_columns": "implicit",
        "plugins": {"instance_selector": {"plugin": "builtin", "version": "0.1.0"}},
        "versions": {"torch": "2.13.0", "numpy": "2.4.6"},
        "git_commit": "abc1234",
        "command": "harness run --seed 0",
        "iterations": 3,
        "budget": 3000,
        "keep": 0.5,
        "n_responses": 8,
        "harness_version": "0.1.0",
    }
    run.update(overrides)
    return run


def final(win_rate, **extra):
    metrics = {
        "final_win_rate": win_rate,
        "final_win_rate_se": 0.011,
        "initial_win_rate": 0.5,
        "final_gold_reward": 0.25,
        "final_kl": 2.5,
        "labels_used": 3000,
        "wall_seconds": 16.2,
    }
    metrics.update(extra)
    return metrics


@pytest.fixture
def lb(tmp_path):
    board = Leaderboard(tmp_path / "lb.db")
    yield board
    board.close()


def finished_run(lb, win_rate, **overrides):
    run_id = lb.start_run(make_run(**overrides))
    lb.record_iteration(run_id, {"iteration": 0, "win_rate": 0.5})
    lb.finish_run(run_id, final(win_rate))
    return run_id


# -- schema ------------------------------------------------------------------


def test_schema_tables_keys_and_indexes(lb):
    db = lb.db
    assert {"runs", "iterations", "_sqlite_migrations"} <= set(db.table_names())
    assert "ranked_runs" in db.view_names()
    assert db["runs"].pks == ["id"]
    assert db["iterations"].pks == ["run_id", "iteration"]
    fks = db["iterations"].foreign_keys
    assert [(fk.column, fk.other_table, fk.other_column) for fk in fks] == [("run_id", "runs", "id")]
    indexed = {tuple(index.columns) for index in db["runs"].indexes}
    assert {("status",), ("testbed",), ("final_win_rate",)} <= indexed
    columns = db["runs"].columns_dict
    assert columns["final_win_rate"] is float and columns["seed"] is int
    assert columns["config_json"] is str


def test_connection_settings(lb):
    assert lb.db.journal_mode == "wal"
    assert lb.db.execute("PRAGMA busy_timeout").fetchone()[0] == 30_000
    assert lb.db.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_reopening_applies_no_migration_twice(tmp_path):
    path = tmp_path / "lb.db"
    with Leaderboard(path) as first:
        run_id = first.start_run(make_run())
    with Leaderboard(path) as second:
        assert [m.name for m in migrations.applied(second.db)] == [
            m.name for m in migrations._migrations
        ]
        assert migrations.pending(second.db) == []
        assert second.get_run(run_id)["status"] == "running"


def test_migrations_file_works_with_the_sqlite_utils_cli(tmp_path):
    path = tmp_path / "migrated.db"
    subprocess.run(
        [sys.executable, "-m", "sqlite_utils", "migrate", str(path), str(REPO / "leaderboard" / "migrations.py")],
        check=True,
        capture_output=True,
    )
    with Leaderboard(path) as board:
        assert migrations.pending(board.db) == []
        board.start_run(make_run())


def test_create_false_never_creates_the_file(tmp_path):
    path = tmp_path / "missing.db"
    with pytest.raises(FileNotFoundError):
        Leaderboard(path, create=False)
    assert not path.exists()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path):
    path = tmp_path / "notes.db"
    path.write_text("this is not a database, just a long enough line of text\n" * 20)
    with pytest.raises(ValueError, match="not a SQLite database"):
        Leaderboard(path)


def test_a_foreign_database_with_a_runs_table_is_refused(tmp_path):
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("create table runs (name text)")
    conn.commit()
    conn.close()
    with pytest.raises(ValueError, match="not a leaderboard"):
        Leaderboard(path)


def test_default_db_path(monkeypatch, tmp_path):
    monkeypatch.delenv("HARNESS_DB", raising=False)
    monkeypatch.chdir(tmp_path)
    assert default_db_path() == tmp_path / "leaderboard.db"
    monkeypatch.setenv("HARNESS_DB", str(tmp_path / "x" / "y.db"))
    assert default_db_path() == tmp_path / "x" / "y.db"


# -- start_run -----------------------------------------------------------------


def test_start_run_stores_a_running_row_with_parsed_json(lb):
    run_id = lb.start_run(make_run(tags=["a", "b"], note="first try", budget_note=None))
    assert re.fullmatch(r"r[0-9a-f]{10}", run_id)
    row = lb.get_run(run_id)
    assert row["status"] == "running"
    assert row["finished_at"] is None and row["final_win_rate"] is None
    assert row["config"] == make_run()["config"]
    assert row["plugins"] == make_run()["plugins"]
    assert row["versions"] == {"torch": "2.13.0", "numpy": "2.4.6"}
    assert row["tags"] == ["a", "b"] and row["note"] == "first try"
    started = datetime.datetime.fromisoformat(row["started_at"])
    assert started.utcoffset() == datetime.timedelta(0)
    assert abs(datetime.datetime.now(datetime.timezone.utc) - started) < datetime.timedelta(minutes=1)
    stored = lb.db.execute("select config_json from runs where id = ?", [run_id]).fetchone()[0]
    assert json.loads(stored) == make_run()["config"]


def test_run_ids_are_unique(lb):
    ids = {lb.start_run(make_run(seed=seed)) for seed in range(50)}
    assert len(ids) == 50


@pytest.mark.parametrize("config", [None, "beta=1", ["beta", 1]])
def test_start_run_needs_a_dict_config(lb, config):
    with pytest.raises(ValueError, match="config"):
        lb.start_run(make_run(config=config))
    assert lb.runs(status=None) == []


@pytest.mark.parametrize("key", sorted(REQUIRED_RUN_KEYS))
def test_start_run_names_a_missing_key(lb, key):
    run = make_run()
    del run[key]
    with pytest.raises(ValueError, match=key):
        lb.start_run(run)
    assert lb.runs(status=None) == []


@pytest.mark.parametrize(
    "overrides",
    [{"seed": "0"}, {"seed": True}, {"budget": 3000.0}, {"testbed": 3}, {"plugins": "builtin"}],
)
def test_start_run_checks_types(lb, overrides):
    with pytest.raises(ValueError, match=next(iter(overrides))):
        lb.start_run(make_run(**overrides))


@pytest.mark.parametrize(
    "overrides",
    [
        {"keep": float("nan")},
        {"config": {"beta": float("inf")}},
        {"extra_score": float("-inf")},
    ],
)
def test_start_run_refuses_nan_and_inf(lb, overrides):
    with pytest.raises(ValueError, match=next(iter(overrides))):
        lb.start_run(make_run(**overrides))
    assert lb.runs(status=None) == []


@pytest.mark.parametrize("key", ["status", "id", "final_win_rate", "config_json"])
def test_start_run_refuses_keys_the_store_owns(lb, key):
    with pytest.raises(ValueError, match=key):
        lb.start_run(make_run(**{key: "x"}))


def test_numpy_scalars_are_unwrapped(lb):
    np = pytest.importorskip("numpy")
    run_id = lb.start_run(make_run(seed=np.int64(7), keep=np.float32(0.5)))
    lb.record_iteration(run_id, {"iteration": np.int64(0), "win_rate": np.float64(0.25)})
    assert lb.get_run(run_id)["seed"] == 7
    assert lb.iterations(run_id)[0]["win_rate"] == 0.25
    with pytest.raises(ValueError, match="kl"):
        lb.record_iteration(run_id, {"iteration": 1, "kl": np.float64("nan")})


# -- record_iteration -----------------------------------------------------------


def test_iterations_are_stored_in_order_with_columns_added_on_demand(lb):
    run_id = lb.start_run(make_run())
    lb.record_iteration(run_id, {"iteration": 2, "win_rate": 0.7, "labels": 1000})
    lb.record_iteration(run_id, {"iteration": 0, "win_rate": 0.5, "labels": None, "kl": None})
    lb.record_iteration(
        run_id, {"iteration": 1, "win_rate": 0.6, "labels": 1000, "kl": 0.8, "quantiles": [0.1, 0.9]}
    )
    rows = lb.iterations(run_id)
    assert [row["iteration"] for row in rows] == [0, 1, 2]
    assert rows[1]["kl"] == 0.8 and rows[1]["quantiles"] == [0.1, 0.9]
    assert rows[0]["kl"] is None and rows[0]["labels"] is None
    assert all(row["run_id"] == run_id and row["recorded_at"] for row in rows)
    assert lb.iterations("r0000000000") == []


def test_a_metric_first_seen_as_none_stays_numeric(lb):
    # sqlite-utils' alter=True would make this a TEXT column, turning 0.8 into '0.8'.
    run_id = lb.start_run(make_run())
    lb.record_iteration(run_id, {"iteration": 0, "kl": None})
    lb.record_iteration(run_id, {"iteration": 1, "kl": 0.8})
    kind = lb.db.execute("select typeof(kl) from iterations where iteration = 1").fetchone()[0]
    assert kind == "real"


def test_record_iteration_errors(lb):
    run_id = lb.start_run(make_run())
    lb.record_iteration(run_id, {"iteration": 0, "win_rate": 0.5})
    with pytest.raises(ValueError, match="already recorded"):
        lb.record_iteration(run_id, {"iteration": 0, "win_rate": 0.9})
    with pytest.raises(KeyError):
        lb.record_iteration("rdeadbeef00", {"iteration": 0})
    for bad in ({"win_rate": 0.5}, {"iteration": -1}, {"iteration": 1.5}, {"iteration": True}):
        with pytest.raises(ValueError, match="iteration"):
            lb.record_iteration(run_id, bad)
    with pytest.raises(ValueError, match="gold_reward"):
        lb.record_iteration(run_id, {"iteration": 1, "win_rate": 0.6, "gold_reward": float("nan")})
    assert [row["iteration"] for row in lb.iterations(run_id)] == [0]
    assert lb.iterations(run_id)[0]["win_rate"] == 0.5
    lb.finish_run(run_id, final(0.6))
    with pytest.raises(ValueError, match="finished"):
        lb.record_iteration(run_id, {"iteration": 1, "win_rate": 0.6})


# -- finish_run / fail_run --------------------------------------------------------


def test_finish_run_writes_metrics_and_status(lb):
    run_id = lb.start_run(make_run())
    lb.finish_run(run_id, final(0.62, final_selected_kl=0.3))
    row = lb.get_run(run_id)
    assert row["status"] == "finished"
    assert row["final_win_rate"] == 0.62 and row["labels_used"] == 3000
    assert row["final_selected_kl"] == 0.3
    assert datetime.datetime.fromisoformat(row["finished_at"]) >= datetime.datetime.fromisoformat(
        row["started_at"]
    )


def test_finish_run_never_overwrites_a_finished_row(lb):
    run_id = lb.start_run(make_run())
    lb.finish_run(run_id, final(0.62))
    with pytest.raises(ValueError, match="finished"):
        lb.finish_run(run_id, final(0.99))
    with pytest.raises(ValueError, match="finished"):
        lb.fail_run(run_id, "failed", "late error")
    row = lb.get_run(run_id)
    assert row["final_win_rate"] == 0.62 and row["status"] == "finished" and row["error"] is None


def test_finish_run_unknown_id(lb):
    with pytest.raises(KeyError):
        lb.finish_run("rdeadbeef00", final(0.5))
    with pytest.raises(KeyError):
        lb.fail_run("rdeadbeef00", "failed", "boom")


@pytest.mark.parametrize(
    "bad",
    [
        {"final_kl": float("nan")},
        {"final_win_rate": float("inf")},
        {"per_iteration": [0.5, float("nan")]},
    ],
)
def test_finish_run_refuses_nan_before_writing_anything(lb, bad):
    run_id = lb.start_run(make_run())
    columns_before = set(lb.db["runs"].columns_dict)
    with pytest.raises(ValueError, match=next(iter(bad))):
        lb.finish_run(run_id, final(0.6, new_metric=1.0, **bad))
    row = lb.get_run(run_id)
    assert row["status"] == "running"
    assert row["final_win_rate"] is None and row["final_gold_reward"] is None
    assert set(lb.db["runs"].columns_dict) == columns_before


@pytest.mark.parametrize("bad", [{}, {"final_win_rate": None}, {"final_win_rate": "0.6"}])
def test_finish_run_needs_a_numeric_final_win_rate(lb, bad):
    run_id = lb.start_run(make_run())
    with pytest.raises(ValueError, match="final_win_rate"):
        lb.finish_run(run_id, bad)


@pytest.mark.parametrize("key", ["seed", "status", "config", "testbed", "started_at"])
def test_finish_run_cannot_rewrite_the_setup(lb, key):
    run_id = lb.start_run(make_run())
    with pytest.raises(ValueError, match=key):
        lb.finish_run(run_id, final(0.6, **{key: 1}))
    assert lb.get_run(run_id)["seed"] == 0


def test_finish_run_is_one_transaction(lb, monkeypatch):
    """A failure after the new column is added leaves neither the column nor the metrics."""
    import sqlite_utils.db

    run_id = lb.start_run(make_run())

    def broken_update(self, *args, **kwargs):
        raise sqlite3.OperationalError("disk I/O error (simulated)")

    monkeypatch.setattr(sqlite_utils.db.Table, "update", broken_update)
    with pytest.raises(sqlite3.OperationalError):
        lb.finish_run(run_id, final(0.6, brand_new_metric=1.0))
    monkeypatch.undo()
    row = lb.get_run(run_id)
    assert row["status"] == "running" and row["final_win_rate"] is None
    assert "brand_new_metric" not in lb.db["runs"].columns_dict
    lb.finish_run(run_id, final(0.6))  # and the run can still be finished
    assert lb.get_run(run_id)["status"] == "finished"


@pytest.mark.parametrize("status", ["failed", "interrupted"])
def test_fail_run(lb, status):
    run_id = lb.start_run(make_run())
    lb.record_iteration(run_id, {"iteration": 0, "win_rate": 0.5})
    lb.fail_run(run_id, status, "Traceback (most recent call last):\n  ...\nRuntimeError: boom")
    row = lb.get_run(run_id)
    assert row["status"] == status and "RuntimeError: boom" in row["error"]
    assert row["finished_at"] and row["final_win_rate"] is None
    with pytest.raises(ValueError, match=status):
        lb.finish_run(run_id, final(0.6))


def test_fail_run_formats_an_exception_with_its_traceback(lb):
    run_id = lb.start_run(make_run())
    try:
        raise RuntimeError("exploded in iteration 2")
    except RuntimeError as exc:
        lb.fail_run(run_id, "failed", exc)
    error = lb.get_run(run_id)["error"]
    assert "Traceback" in error and "RuntimeError: exploded in iteration 2" in error


def test_fail_run_needs_a_failure_status(lb):
    run_id = lb.start_run(make_run())
    for status in ("finished", "running", "crashed"):
        with pytest.raises(ValueError, match="status"):
            lb.fail_run(run_id, status, "x")
    assert lb.get_run(run_id)["status"] == "running"


# -- reading ------------------------------------------------------------------


def test_runs_are_ranked_by_final_win_rate(lb):
    low = finished_run(lb, 0.41)
    high = finished_run(lb, 0.77, seed=1)
    mid = finished_run(lb, 0.6, seed=2, testbed="hf")
    running = lb.start_run(make_run(seed=3))
    failed = lb.start_run(make_run(seed=4))
    lb.fail_run(failed, "interrupted", "KeyboardInterrupt")
    assert [r["id"] for r in lb.runs()] == [high, mid, low]
    assert [r["id"] for r in lb.runs(status=None)] == [high, mid, low, running, failed]
    assert [r["id"] for r in lb.runs(status="interrupted")] == [failed]
    assert [r["id"] for r in lb.runs(testbed="synthetic")] == [high, low]
    assert [r["id"] for r in lb.runs(limit=2)] == [high, mid]
    assert lb.runs(limit=0) == []
    with pytest.raises(ValueError):
        lb.runs(status="done")
    assert lb.get_run("r0000000000") is None


def test_ties_keep_the_older_run_first(lb):
    first = finished_run(lb, 0.6)
    second = finished_run(lb, 0.6, seed=1)
    assert [r["id"] for r in lb.runs()] == [first, second]


def _parallel_run(path, seed):
    with Leaderboard(path) as board:
        run_id = board.start_run(make_run(seed=seed))
        for iteration in range(3):
            board.record_iteration(
                run_id, {"iteration": iteration, "win_rate": 0.5, f"metric_{seed % 3}": 1.0}
            )
        board.finish_run(run_id, final(0.5 + seed / 100))
        return run_id


def test_parallel_processes_share_one_database(tmp_path):
    path = tmp_path / "shared.db"
    with concurrent.futures.ProcessPoolExecutor(max_workers=6) as pool:
        ids = list(pool.map(_parallel_run, [path] * 12, range(12)))
    with Leaderboard(path) as board:
        assert len(set(ids)) == 12
        runs = board.runs()
        assert len(runs) == 12 and all(r["status"] == "finished" for r in runs)
        assert sum(len(board.iterations(run_id)) for run_id in ids) == 36


# -- render -------------------------------------------------------------------


def _render(runs, width, **kwargs):
    console = Console(width=width, record=True, color_system=None, file=open("/dev/null", "w"))
    render.print_leaderboard(runs, console, **kwargs)
    return console.export_text()


def test_selector_label():
    assert render.selector_label({"instance_selector": "smallest", "corpus_selector": "smallest"}) == "smallest"
    assert (
        render.selector_label({"instance_selector": "random", "corpus_selector": "smallest"})
        == "random/smallest"
    )


def test_format_wall():
    assert render.format_wall(16.24) == "16.2s"
    assert render.format_wall(192) == "3m12s"
    assert render.format_wall(3900) == "1h05m"
    assert render.format_wall(None) == "—"


def test_table_shows_every_column(lb):
    best = finished_run(lb, 0.73, instance_selector="random", corpus_selector="smallest")
    finished_run(lb, 0.61, seed=1)
    text = _render(lb.runs(), width=140)
    for header in ("#", "run", "selector", "allocator", "testbed", "trainer", "seed", "iter",
                   "labels", "win rate ± se", "Δ vs π₀", "gold", "KL", "wall", "finished"):
        assert header in text
    lines = text.splitlines()
    first_row = next(line for line in lines if best in line)
    assert first_row.lstrip().startswith("1")
    for cell in ("random/smallest", "constant", "synthetic", "dpo", "3,000", "0.730 ± 0.011",
                 "+0.230", "0.250", "2.50", "16.2s"):
        assert cell in first_row
    assert "smallest " in text and "smallest/smallest" not in text
    assert render.CAPTION in " ".join(text.split())


@pytest.mark.parametrize("width", [100, 120, 140])
def test_table_fits_the_terminal_without_cutting_numbers(lb, width):
    ids = [
        finished_run(lb, 0.7 - k / 10, seed=k, instance_selector=sel, corpus_selector="smallest")
        for k, sel in enumerate(["random", "smallest", "largest"])
    ]
    text = _render(lb.runs(), width=width)
    table_lines = [line for line in text.splitlines() if any(i in line for i in ids)]
    assert len(table_lines) == 3
    for line, run_id in zip(table_lines, ids):
        assert len(line.rstrip()) <= width
        assert run_id in line  # ids are never cut
        assert re.search(r"0\.\d{3} ± 0\.011", line)
        assert re.search(r"[+-]0\.\d{3}", line)


def test_all_shows_status_and_leaves_unfinished_runs_unranked(lb):
    finished_run(lb, 0.6)
    failed = lb.start_run(make_run(seed=1))
    lb.fail_run(failed, "failed", "boom")
    text = _render(lb.runs(status=None), width=140, show_status=True)
    row = next(line for line in text.splitlines() if failed in line)
    assert "failed" in row and row.lstrip().startswith("—")
    payload = render.to_json_list(lb.runs(status=None))
    assert [item["rank"] for item in payload] == [1, None]


def test_note_when_rows_mix_testbeds(lb):
    finished_run(lb, 0.6)
    finished_run(lb, 0.5, testbed="hf")
    assert any("testbeds" in note for note in render.notes(lb.runs()))
    assert not any("testbeds" in note for note in render.notes(lb.runs(testbed="hf")))


def test_json_form(lb):
    run_id = finished_run(lb, 0.6)
    payload = json.loads(render.to_json(lb.runs()))
    assert payload[0]["id"] == run_id and payload[0]["rank"] == 1
    assert payload[0]["config"] == make_run()["config"]
    assert payload[0]["delta_win_rate"] == pytest.approx(0.1)
    assert "config_json" not in payload[0]


# -- CLI ----------------------------------------------------------------------


def cli_app():
    app = typer.Typer()

    @app.command()
    def run():  # a stand-in for the core CLI's other commands
        pass

    app.add_typer(leaderboard_app, name="leaderboard")
    return app


def invoke(args, env=None):
    runner = CliRunner()
    return runner.invoke(cli_app(), ["leaderboard", *args], env={"COLUMNS": "140", **(env or {})})


@pytest.fixture
def populated(tmp_path):
    path = tmp_path / "lb.db"
    with Leaderboard(path) as board:
        ids = {
            "best": finished_run(board, 0.75, instance_selector="random", corpus_selector="smallest"),
            "worst": finished_run(board, 0.45, seed=1, instance_selector="largest", corpus_selector="largest"),
            "hf": finished_run(board, 0.6, seed=2, testbed="hf"),
        }
        ids["failed"] = board.start_run(make_run(seed=3))
        board.fail_run(ids["failed"], "failed", "Traceback ...\nRuntimeError: boom")
    return path, ids


def test_cli_missing_database_is_friendly_and_creates_nothing(tmp_path):
    path = tmp_path / "nothing.db"
    result = invoke(["--db", str(path)])
    assert result.exit_code == 0
    assert NO_RUNS_MESSAGE in result.stderr and result.stdout == ""
    assert not path.exists()
    result = invoke(["--db", str(path), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout) == []
    assert not path.exists()


def test_cli_table_goes_to_stderr_ranked(populated):
    path, ids = populated
    result = invoke(["--db", str(path), "--by", "run"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    err = result.stderr
    assert err.index(ids["best"]) < err.index(ids["hf"]) < err.index(ids["worst"])
    assert ids["failed"] not in err
    assert "random/smallest" in err and "--all" in err
    assert "win rates are only comparable within one testbed" in " ".join(err.split())


def test_cli_json_is_the_only_stdout(populated):
    path, ids = populated
    result = invoke(["--db", str(path), "--json", "--by", "run"])
    assert result.exit_code == 0
    payload = json.loads(result.stdout)
    assert [item["id"] for item in payload] == [ids["best"], ids["hf"], ids["worst"]]
    assert payload[0]["config"]["beta"] == 1.0 and payload[0]["status"] == "finished"
    assert result.stderr == ""


def test_cli_all_limit_and_testbed(populated):
    path, ids = populated
    payload = json.loads(invoke(["--db", str(path), "--json", "--all", "--by", "run"]).stdout)
    assert [item["id"] for item in payload][-1] == ids["failed"]
    assert payload[-1]["status"] == "failed" and payload[-1]["rank"] is None
    text = invoke(["--db", str(path), "--all", "--by", "run"]).stderr
    assert ids["failed"] in text and "failed" in text
    payload = json.loads(invoke(["--db", str(path), "--json", "--limit", "1", "--by", "run"]).stdout)
    assert [item["id"] for item in payload] == [ids["best"]]
    payload = json.loads(invoke(["--db", str(path), "--json", "--testbed", "hf", "--by", "run"]).stdout)
    assert [item["id"] for item in payload] == [ids["hf"]]
    assert invoke(["--db", str(path), "--limit", "0"]).exit_code == 2


def test_cli_reads_harness_db_and_defaults_to_the_working_directory(populated, tmp_path, monkeypatch):
    path, ids = populated
    result = invoke(["--json", "--by", "run"], env={"HARNESS_DB": str(path)})
    assert len(json.loads(result.stdout)) == 3
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("HARNESS_DB", raising=False)
    result = invoke([])
    assert result.exit_code == 0 and NO_RUNS_MESSAGE in result.stderr
    assert str(elsewhere / "leaderboard.db") in result.stderr
    assert not (elsewhere / "leaderboard.db").exists()


def test_cli_empty_database_says_so(tmp_path):
    path = tmp_path / "lb.db"
    with Leaderboard(path) as board:
        board.start_run(make_run())
    result = invoke(["--db", str(path)])
    assert result.exit_code == 0
    assert "no finished runs" in result.stderr and "--all" in result.stderr


def test_cli_refuses_a_file_that_is_not_a_leaderboard(tmp_path):
    path = tmp_path / "junk.db"
    path.write_text("not sqlite at all, definitely not a database header\n" * 20)
    result = invoke(["--db", str(path)])
    assert result.exit_code == 2
    assert "not a SQLite database" in result.stderr and "Traceback" not in result.output


def test_cli_show(populated):
    path, ids = populated
    result = invoke(["--db", str(path), "show", ids["best"][:6]])
    assert result.exit_code == 0, result.output
    assert ids["best"] in result.stderr and "iteration" in result.stderr
    payload = json.loads(invoke(["show", ids["failed"], "--db", str(path), "--json"]).stdout)
    assert payload["status"] == "failed" and "RuntimeError: boom" in payload["error"]
    result = invoke(["--db", str(path), "show", "rzzzzzzzzzz"])
    assert result.exit_code == 2 and "no run" in result.stderr
    result = invoke(["--db", str(path), "show", "r"])
    assert result.exit_code == 2 and "ambiguous" in result.stderr


def test_cli_help_teaches_the_ranking():
    result = invoke(["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "Rank strategies (or single runs) by their final win rate" in text
    assert "the spread over seeds" in text and "paired differences" in text
    for option in ("--db", "--json", "--all", "--limit", "--testbed", "HARNESS_DB"):
        assert option in text


# -- import cost ----------------------------------------------------------------


def _modules_after(statement):
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, check=True, capture_output=True, text=True
    ).stdout
    return set(out.split())


def test_cli_module_import_is_light():
    modules = _modules_after("import harness.cli.leaderboard")
    for heavy in ("torch", "numpy", "transformers"):
        assert heavy not in modules


def test_leaderboard_package_import_is_free():
    modules = _modules_after("import leaderboard")
    for heavy in ("sqlite_utils", "rich", "torch", "numpy"):
        assert heavy not in modules
    modules = _modules_after("from leaderboard import Leaderboard")
    assert "leaderboard.store" in modules


def test_reading_an_up_to_date_database_needs_neither_sqlite_utils_nor_numpy(populated):
    path, ids = populated
    statement = (
        "from leaderboard.store import Leaderboard; "
        f"lb = Leaderboard({str(path)!r}, create=False); "
        f"assert lb.runs()[0]['id'] == {ids['best']!r}; lb.get_run({ids['worst']!r}); "
        f"lb.iterations({ids['worst']!r})"
    )
    modules = _modules_after(statement)
    assert "leaderboard.store" in modules
    assert "sqlite_utils" not in modules and "numpy" not in modules


def test_store_knows_every_migration():
    from leaderboard import store

    assert migrations.name == store.MIGRATION_SET
    assert tuple(m.name for m in migrations._migrations) == store.MIGRATION_NAMES


def test_claim_run_is_a_compare_and_swap_on_unfinished_runs(tmp_path):
    with Leaderboard(tmp_path / "lb.db") as board:
        run_id = board.start_run({**make_run(), "pid": 11, "hostname": "a"})
        assert not board.claim_run(run_id, {"pid": 22, "hostname": "b"}, {"pid": 99, "hostname": "a"})
        assert board.get_run(run_id)["pid"] == 11  # a stale expectation changes nothing
        assert board.claim_run(run_id, {"pid": 22, "hostname": "b"}, {"pid": 11, "hostname": "a"})
        assert (board.get_run(run_id)["pid"], board.get_run(run_id)["hostname"]) == (22, "b")
        with pytest.raises(ValueError, match="not columns of runs: nope"):
            board.claim_run(run_id, {"nope": 1})
        board.finish_run(run_id, {"final_win_rate": 0.5})
        assert not board.claim_run(run_id, {"pid": 33})
        assert not board.claim_run("r-unknown", {"pid": 33})
