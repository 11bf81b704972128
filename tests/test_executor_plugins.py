"""Executors are plugins (the `register_executors` hook): a third party's, and the built-in `submitit` one.

A test plugin registers an `inline` executor (every run in this process, one after another, recorded the way
the cluster executors record theirs: the task goes without its database path, the run journals its record and
the driver writes it). The `submitit` executor runs each run as a job of submitit's local cluster (subprocesses)
and must record what the local executor records. Unknown or doubly registered names, and placements an
executor cannot give, exit 2 before anything runs.
"""

import json
import textwrap

import pytest

from harness.errors import PluginError
from leaderboard.store import Leaderboard
from tests.conftest import TINY_RUN
from tests.extras import skip_unless_extra

INLINE = textwrap.dedent('''
    from harness import hookimpl
    from harness.experiments.executors import DriverRecords, Executor, worker_registry


    class InlineExecutor(DriverRecords, Executor):
        """Every run in this process, one after another; the driver (this process) records them."""

        name = "inline"

        def __init__(self, *, jobs, plugins=(), on_event=None, placement=None):
            super().__init__(jobs=jobs, plugins=plugins, on_event=on_event, placement=placement)
            self.tasks = []

        def submit(self, task):
            self.tasks.append(self.detach(task))

        def as_completed(self):
            from harness.experiments.sweep import run_task

            while self.tasks:
                yield self.record(run_task(self.tasks.pop(0), worker_registry(self.plugins)))

        def cancel(self):
            self.tasks.clear()
            return []


    @hookimpl
    def register_executors(register):
        register(InlineExecutor)
''')


def _rows(board, run_id):
    drop = ("recorded_at", "run_id")
    return [{k: v for k, v in r.items() if not k.startswith("time_") and k not in drop}
            for r in board.iterations(run_id)]


def _same_as_local(cli, tmp_path, args, board):
    """The sweep's runs on ``board`` record what the same sweep on the local executor records."""
    local_db = tmp_path / "local.db"
    assert cli(*args, "--executor", "local", "--jobs", "1", "--db", local_db).exit_code == 0
    local = {r["sweep_cell"]: r for r in Leaderboard(local_db).runs(status=None)}
    mine = {r["sweep_cell"]: r for r in board.runs(status=None)}
    assert set(mine) == set(local) and mine
    for cell, run in mine.items():
        assert run["status"] == "finished" and run["final_win_rate"] == local[cell]["final_win_rate"]
        assert _rows(board, run["id"]) == _rows(Leaderboard(local_db), local[cell]["id"])
    return mine


def test_a_plugin_executor_runs_a_sweep_and_the_driver_records_it(cli, tmp_path):
    plugin = tmp_path / "inline_executor.py"
    plugin.write_text(INLINE)
    db = tmp_path / "inline.db"
    args = ["sweep", *TINY_RUN, "--selector", "smallest,random", "--seeds", "0", "--json"]
    result = cli(*args, "--plugin", str(plugin), "--executor", "inline", "--db", db)
    assert result.exit_code == 0, result.output
    runs = _same_as_local(cli, tmp_path, args, Leaderboard(db))
    for run in runs.values():  # recorded from the journal the run wrote in its directory, now marked imported
        assert (tmp_path / "runs" / run["id"] / "unrecorded.imported.jsonl").is_file()
    listed = cli("plugins", "--plugin", str(plugin), "--json")
    assert listed.exit_code == 0, listed.output
    (row,) = [r for r in json.loads(listed.stdout) if r["name"] == "inline_executor"]
    assert row["registered"] == {"executor": ["inline"]} and "register_executors" in row["hooks"]


def test_an_unknown_executor_exits_2_naming_the_known_ones(cli, db_path):
    result = cli("sweep", *TINY_RUN, "--seeds", "0", "--executor", "slurmm")
    assert result.exit_code == 2
    assert "slurmm" in result.output and "local" in result.output and "submitit" in result.output


def test_two_plugins_registering_one_executor_name_is_an_error(tmp_path):
    from harness.plugins import load_registry

    for name in ("first", "second"):
        (tmp_path / f"{name}.py").write_text(INLINE)
    with pytest.raises(PluginError, match="executor name 'inline' is registered by two plugins"):
        load_registry([str(tmp_path / "first.py"), str(tmp_path / "second.py")])


@pytest.mark.parametrize("registered, message", [
    ("object()", "invalid executor"),
    ("type('Nameless', (), {})", "invalid executor"),
    ("type('Half', (), {'name': 'half', 'submit': lambda self, task: None})",
     "lacks check_available, check_placement, as_completed, cancel, close"),
])
def test_an_executor_without_the_interface_is_refused_at_registration(tmp_path, registered, message):
    from harness.plugins import load_registry

    (tmp_path / "bad_executor.py").write_text(
        "from harness import hookimpl\n\n\n@hookimpl\ndef register_executors(register):\n"
        f"    register({registered})\n")
    with pytest.raises(PluginError, match=message):
        load_registry([str(tmp_path / "bad_executor.py")])


def test_submitit_jobs_record_what_local_workers_record(cli, tmp_path, monkeypatch):
    skip_unless_extra("submitit")
    monkeypatch.setenv("HARNESS_SUBMITIT_CLUSTER", "local")
    monkeypatch.setenv("HARNESS_SUBMITIT_FOLDER", str(tmp_path / "jobs"))
    db = tmp_path / "submitit.db"
    args = ["sweep", *TINY_RUN, "--selector", "smallest,random", "--seeds", "0", "--json"]
    result = cli(*args, "--executor", "submitit", "--jobs", "2", "--db", db)
    assert result.exit_code == 0, result.output
    runs = _same_as_local(cli, tmp_path, args, Leaderboard(db))
    assert {r["executor"] for r in runs.values()} == {"submitit"} and all(r["batch_job"] for r in runs.values())
    assert any((tmp_path / "jobs").iterdir())  # submitit's folder: the jobs' pickles and logs


def test_submitit_jobs_get_a_day_unless_told_otherwise(monkeypatch, tmp_path):
    """submitit's own time limit is minutes: a job would end "timed-out" long before a real-model run does."""
    skip_unless_extra("submitit")
    from plugins.executors.batch import TIMEOUT_MINUTES, SubmititExecutor

    monkeypatch.setenv("HARNESS_SUBMITIT_CLUSTER", "local")
    monkeypatch.setenv("HARNESS_SUBMITIT_FOLDER", str(tmp_path))
    assert SubmititExecutor(jobs=1)._executor._executor.parameters["timeout_min"] == TIMEOUT_MINUTES == 24 * 60
    monkeypatch.setenv("HARNESS_SUBMITIT_PARAMETERS", '{"timeout_min": 30}')
    assert SubmititExecutor(jobs=1)._executor._executor.parameters["timeout_min"] == 30


@pytest.mark.parametrize("flags, message", [
    (["--gpus-per-run", "0.5"], "a batch job asks for whole GPUs"),
    (["--ray-address", "ray://head:10001"], "--ray-address is for --executor ray"),
])
def test_placements_submitit_cannot_give_exit_2(cli, db_path, flags, message):
    skip_unless_extra("submitit")
    result = cli("sweep", *TINY_RUN, "--seeds", "0", "--executor", "submitit", *flags)
    assert result.exit_code == 2 and message in result.output
