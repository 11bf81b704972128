"""`--executor ray` on a local Ray: the workers never open the leaderboard, the driver alone writes it.

Each Ray worker runs with ``$HARNESS_NO_LEADERBOARD`` set, so any attempt to open a leaderboard file there
raises (tested below on its own), and its tasks carry no database path: a run journals its record in its run
directory and returns it with its result, and the driver replays it into SQLite. The sweep's rows, iterations
and labels must then equal those of the same sweep on the local executor, whose workers write the database
themselves; each run records the Ray node it ran on. Also: --gpus-per-run a cluster cannot place, and Ray
flags given to the local executor, exit 2 before anything runs.
"""

import json

import pytest

from leaderboard.store import NO_LEADERBOARD_ENV, Leaderboard, LeaderboardForbidden
from tests.conftest import TINY_RUN
from tests.extras import skip_unless_extra


def test_a_process_told_not_to_may_not_open_a_leaderboard(tmp_path, monkeypatch):
    from leaderboard.judgements import JudgementCache

    monkeypatch.setenv(NO_LEADERBOARD_ENV, "1")
    for opener in (Leaderboard, JudgementCache):
        with pytest.raises(LeaderboardForbidden, match="sweep worker whose driver records its runs"):
            opener(tmp_path / "board.db")
    assert not (tmp_path / "board.db").exists()
    Leaderboard(":memory:")  # a throwaway database is no shared file


def test_ray_flags_on_the_local_executor_exit_2(cli, db_path):
    for flags in (["--gpus-per-run", "1"], ["--ray-address", "ray://head:10001"]):
        result = cli("sweep", *TINY_RUN, "--seeds", "0", *flags)
        assert result.exit_code == 2 and "are for --executor ray" in result.output
    assert not db_path.exists() or Leaderboard(db_path).runs(status=None) == []


@pytest.fixture
def local_ray():
    skip_unless_extra("ray")
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def _rows(board, run_id):
    drop = ("recorded_at", "run_id")
    return [{k: v for k, v in r.items() if not k.startswith("time_") and k not in drop} for r in board.iterations(run_id)]


def _labels(board, run_id):
    return board.conn.execute("SELECT iteration, prompt_hash, a_hash, b_hash, label FROM labels WHERE run_id = ? "
                              "ORDER BY iteration, position", [run_id]).fetchall()


#: A trainer that says, in its log (the iteration row's train_no_leaderboard), whether its process may open a
#: leaderboard; otherwise the native trainer.
WITNESS = """
import os

from harness import hookimpl
from leaderboard.store import NO_LEADERBOARD_ENV
from plugins.trainers.native import NativeDPOTrainer


class WitnessTrainer(NativeDPOTrainer):
    name = "witness"

    def train(self, *, policy, data, rng):
        result = super().train(policy=policy, data=data, rng=rng)
        result.log["no_leaderboard"] = 1.0 if os.environ.get(NO_LEADERBOARD_ENV) else 0.0
        return result


@hookimpl
def register_trainers(register):
    register(WitnessTrainer)
"""


def test_ray_workers_return_their_runs_and_the_driver_records_them(cli, tmp_path, local_ray):
    witness = tmp_path / "witness.py"
    witness.write_text(WITNESS)
    args = ["sweep", *TINY_RUN, "--selector", "smallest,random", "--seeds", "0", "--trainer", "witness",
            "--plugin", str(witness), "--json"]
    on_ray = tmp_path / "ray.db"
    result = cli(*args, "--executor", "ray", "--jobs", "2", "--cpus-per-run", "1", "--db", on_ray)
    assert result.exit_code == 0, result.output
    local = tmp_path / "local.db"
    assert cli(*args, "--executor", "local", "--jobs", "1", "--db", local).exit_code == 0
    ray_board, local_board = Leaderboard(on_ray), Leaderboard(local)
    ray_runs = {r["sweep_cell"]: r for r in ray_board.runs(status=None)}
    local_runs = {r["sweep_cell"]: r for r in local_board.runs(status=None)}
    assert set(ray_runs) == set(local_runs) and len(ray_runs) == 2
    node = local_ray.get_runtime_context().get_node_id()
    for cell, run in ray_runs.items():
        assert run["status"] == "finished" and run["ray_node"] == node and run["executor"] == "ray"
        assert run["config_hash"] == local_runs[cell]["config_hash"]
        assert run["final_win_rate"] == local_runs[cell]["final_win_rate"]
        ray_rows, local_rows = _rows(ray_board, run["id"]), _rows(local_board, local_runs[cell]["id"])
        # the Ray worker could not have opened a leaderboard; the local worker could (it writes its own)
        assert [r.pop("train_no_leaderboard", None) for r in ray_rows] == [None, 1.0, 1.0]
        assert [r.pop("train_no_leaderboard", None) for r in local_rows] == [None, 0.0, 0.0]
        assert ray_rows == local_rows
        labels = _labels(ray_board, run["id"])
        assert labels and labels == _labels(local_board, local_runs[cell]["id"])
        run_dir = tmp_path / "runs" / run["id"]  # the journal the worker wrote, marked imported by the driver
        assert (run_dir / "unrecorded.imported.jsonl").is_file() and not (run_dir / "unrecorded.jsonl").exists()
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert {r["status"] for r in summary["results"]} == {"finished"}
    again = cli(*args, "--executor", "ray", "--db", on_ray)  # the driver's records are what a re-run plans from
    assert json.loads(again.stdout.strip().splitlines()[-1])["plan"]["skip"] == 2


def test_gpus_a_ray_cluster_does_not_have_exit_2(cli, db_path, local_ray):
    result = cli("sweep", *TINY_RUN, "--seeds", "0", "--executor", "ray", "--gpus-per-run", "1")
    assert result.exit_code == 2 and "the Ray cluster has 0 GPUs" in result.output


def test_a_returned_journal_the_database_cannot_take_is_kept_for_leaderboard_import(cli, tmp_path, monkeypatch):
    """The driver's database locked while a result comes back: the record goes to a journal on the driver's
    side, which `harness leaderboard import` then records; nothing is lost."""
    import sqlite3

    from harness.experiments.executors import record_returned
    from harness.experiments.sweep import TaskResult

    plugin = tmp_path / "inline_executor.py"  # a run's real journal, from a sweep whose driver records it
    from tests.test_executor_plugins import INLINE

    plugin.write_text(INLINE)
    source = tmp_path / "source.db"
    assert cli("sweep", *TINY_RUN, "--seeds", "0", "--plugin", str(plugin), "--executor", "inline",
               "--db", source).exit_code == 0
    (run,) = Leaderboard(source).runs(status=None)
    from harness.experiments.journal import read_entries

    entries = read_entries(tmp_path / "runs" / run["id"] / "unrecorded.imported.jsonl")
    target = tmp_path / "elsewhere" / "board.db"
    Leaderboard(target).close()
    monkeypatch.setenv("HARNESS_DB_TIMEOUT", "0.1")
    holder = sqlite3.connect(target)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = record_returned(TaskResult(0, "finished", run_id=run["id"], journal=entries), target)
    finally:
        holder.rollback()
        holder.close()
    assert result.journal is None and result.unrecorded
    kept = tmp_path / "elsewhere" / "runs" / run["id"] / "unrecorded.jsonl"
    assert result.unrecorded == str(kept) and kept.is_file()
    imported = cli("leaderboard", "import", str(kept.parent), "--db", target)
    assert imported.exit_code == 0, imported.output
    assert Leaderboard(target).get_run(run["id"])["final_win_rate"] == run["final_win_rate"]


def test_a_journal_the_database_refuses_fails_that_run_only_and_is_kept(cli, tmp_path):
    """An entry the store refuses (a log key it cannot take) reaches the driver only when the run has ended:
    that run is reported failed with the reason, its record is kept on disk, and the sweep goes on."""
    from harness.experiments.executors import record_returned
    from harness.experiments.journal import read_entries
    from harness.experiments.sweep import TaskResult
    from tests.test_executor_plugins import INLINE

    plugin = tmp_path / "inline_executor.py"
    plugin.write_text(INLINE)
    source = tmp_path / "source.db"
    assert cli("sweep", *TINY_RUN, "--seeds", "0", "--plugin", str(plugin), "--executor", "inline",
               "--db", source).exit_code == 0
    (run,) = Leaderboard(source).runs(status=None)
    entries = read_entries(tmp_path / "runs" / run["id"] / "unrecorded.imported.jsonl")
    bad = [dict(e) for e in entries]
    for entry in bad:
        if entry["op"] == "iteration" and entry["row"]["iteration"] == 2:
            entry["row"] = {**entry["row"], "train_grad_json": 1.0}  # a key the store refuses
    target = tmp_path / "elsewhere" / "board.db"
    result = record_returned(TaskResult(0, "finished", run_id=run["id"], journal=bad), target)
    assert result.status == "failed" and "could not record run" in result.error and result.journal is None
    kept = tmp_path / "elsewhere" / "runs" / run["id"] / "unrecorded.jsonl"
    assert result.unrecorded == str(kept) and len(read_entries(kept)) == len(bad)
    row = Leaderboard(target).get_run(run["id"])
    assert row is not None and row["status"] == "running"  # what got in before the refused entry; named above
