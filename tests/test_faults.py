"""Faults injected into whole runs: a raising plugin, NaN and inf, SIGTERM, a locked or failing database.

Each test injects one fault and checks that the record stays intact: the run
ends with the right status and exit code, nothing NaN or partial is written,
and results the database could not take are kept and imported later. Every
test here is marked ``fault`` (``python scripts/reliability.py`` counts them).
"""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import reliability
from conftest import TINY_RUN

pytestmark = pytest.mark.fault

PLUGIN = textwrap.dedent('''
    import math
    import os
    import signal

    import numpy as np

    from harness import hookimpl
    from harness.interfaces import Judge, TrainResult
    from plugins.trainers.native import NativeDPOTrainer


    class FaultyTrainer(NativeDPOTrainer):
        """Native DPO with a fault at its $FAULT_AT-th call (or always): raise, a NaN loss, or a signal to itself."""

        name = "faulty"
        description = "native DPO that misbehaves once, as $FAULT says"
        calls = 0

        def train(self, *, policy, data, rng):
            type(self).calls += 1
            if os.environ.get("FAULT_AT") in (str(type(self).calls), "always"):
                fault = os.environ["FAULT"]
                if fault == "raise":
                    raise RuntimeError("the GPU caught fire")
                if fault == "nan_loss":
                    result = super().train(policy=policy, data=data, rng=rng)
                    return TrainResult(result.policy, result.steps, result.epochs, result.loss_first, math.nan)
                if fault == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)
            return super().train(policy=policy, data=data, rng=rng)


    class InfiniteProxy(Judge):
        name = "infinite_proxy"
        description = "a proxy reward model that scores one response +inf"

        def score(self, *, world, prompts, responses, rng):
            scores = np.zeros(responses.lengths.shape)
            scores[0, 0] = math.inf
            return scores


    @hookimpl
    def register_trainers(register):
        register(FaultyTrainer)


    @hookimpl
    def register_judges(register):
        register(InfiniteProxy)
''')

RUN = [*TINY_RUN, "--iterations", "3", "--budget", "120", "--selector", "smallest", "--seed", "3"]


@pytest.fixture
def plugin(tmp_path):
    path = tmp_path / "faulty.py"
    path.write_text(PLUGIN)
    return str(path)


def _rows(db: Path, sql: str, *params):
    with sqlite3.connect(db, timeout=5) as conn:
        return conn.execute(sql, params).fetchall()


def _board_rows(db: Path) -> int:
    """Rows a run left in the leaderboard: runs, iterations and labels."""
    return sum(_rows(db, f"select count(*) from {table}")[0][0] for table in ("runs", "iterations", "labels"))


def _no_nan_anywhere(db: Path) -> None:
    """Every REAL in runs and iterations is finite."""
    with sqlite3.connect(db) as conn:
        for table in ("runs", "iterations"):
            columns = [c[1] for c in conn.execute(f"pragma table_info({table})") if c[2] == "REAL"]
            for column in columns:
                for (value,) in conn.execute(f'select "{column}" from {table} where "{column}" is not null'):
                    assert math.isfinite(value), (table, column, value)


def harness(*args, env=None, timeout=300):
    merged = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "harness", *map(str, args)], capture_output=True, text=True,
                          env=merged, timeout=timeout)


def test_a_plugin_raising_mid_run_is_named_and_the_board_stays_consistent(cli, plugin, tmp_path, monkeypatch):
    db = tmp_path / "board.db"
    monkeypatch.setenv("FAULT", "raise")
    monkeypatch.setenv("FAULT_AT", "2")
    result = cli("run", *RUN, "--trainer", "faulty", "--plugin", plugin, "--db", db)
    assert result.exit_code == 1, result.output
    (status, error, final), = _rows(db, "select status, error, final_win_rate from runs")
    assert status == "failed" and final is None
    assert error.startswith(f"trainer 'faulty' ({plugin}) raised RuntimeError: the GPU caught fire")
    assert "Traceback" in error
    assert _rows(db, "select iteration from iterations order by iteration") == [(0,), (1,)]
    assert _rows(db, "select iteration, count(*) from labels group by iteration") == [(1, 40), (2, 40)]
    assert _rows(db, "pragma integrity_check") == [("ok",)]
    # the run row, pi_0 and iteration 1, and the labels of iterations 1 and 2 (paid before the crash)
    reliability.fault("plugin raises mid-run", expected_rows=1 + 2 + 80, recorded_rows=_board_rows(db))


def test_a_sweep_goes_on_after_a_plugin_raises(cli, plugin, tmp_path, monkeypatch):
    db = tmp_path / "board.db"
    monkeypatch.setenv("FAULT", "raise")
    monkeypatch.setenv("FAULT_AT", "always")
    result = cli("sweep", *RUN[:-2], "--trainer", "native,faulty", "--seeds", "0-1", "--jobs", "2", "--plugin", plugin,
                 "--db", db)
    assert result.exit_code == 1, result.output
    statuses = dict(_rows(db, "select trainer || ':' || seed, status from runs"))
    assert statuses == {"native:0": "finished", "native:1": "finished", "faulty:0": "failed", "faulty:1": "failed"}
    finished_rows = _rows(db, "select count(*) from iterations join runs on id = run_id where status = 'finished'")
    reliability.fault("plugin raises in a sweep", expected_rows=2 * 4, recorded_rows=finished_rows[0][0])


@pytest.mark.parametrize("fault, step", [("nan_loss", "'train'"), ("nan_logprobs", "'logprobs'"),
                                         ("inf_scores", "'judge'")])
def test_nan_and_inf_stop_the_run_at_their_step(cli, plugin, tmp_path, monkeypatch, fault, step):
    db = tmp_path / "board.db"
    args = ["run", *RUN, "--plugin", plugin, "--db", db]
    if fault == "nan_loss":
        monkeypatch.setenv("FAULT", "nan_loss")
        monkeypatch.setenv("FAULT_AT", "2")
        args += ["--trainer", "faulty"]
        where = "iteration 2"
    elif fault == "nan_logprobs":
        from plugins.testbeds.synthetic.world import SyntheticWorld

        real = SyntheticWorld.logprobs
        calls = {"n": 0}

        def poisoned(self, policy, prompts, responses):
            values = real(self, policy, prompts, responses)
            calls["n"] += 1
            if calls["n"] == 3:  # 1-2: pi_0's evaluation; 3: iteration 1 scores the policy
                values = values.copy()
                values[0, 0] = np.nan
            return values

        monkeypatch.setattr(SyntheticWorld, "logprobs", poisoned)
        where = "iteration 1"
    else:
        args += ["--selector", "map", "--proxy-judge", "infinite_proxy"]
        where = "iteration 1"
    result = cli(*args)
    assert result.exit_code == 1, result.output
    (status, error), = _rows(db, "select status, error from runs")
    assert status == "failed"
    assert f"step {step}" in error and where in error and "not finite" in error
    _no_nan_anywhere(db)
    iteration = 2 if fault == "nan_loss" else 1
    recorded = _rows(db, "select count(*) from iterations")[0][0]
    reliability.fault(f"{fault.replace('_', ' ')}", expected_rows=iteration, recorded_rows=recorded)  # 0..iteration-1


def test_the_native_trainer_stops_at_the_first_nan_loss_with_the_weights_untouched():
    from dataclasses import replace

    from harness.errors import NonFiniteError
    from plugins.trainers.native import NativeDPOTrainer
    from tests.test_native_trainer import make_data, make_policy, params

    policy = make_policy()
    data = make_data(policy)
    poisoned = replace(data, ref_chosen_logps=np.full_like(data.ref_chosen_logps, np.nan))
    before = params(policy)
    with pytest.raises(NonFiniteError, match="training step 1 of"):
        NativeDPOTrainer().train(policy=policy, data=poisoned, rng=np.random.default_rng(0))
    assert (params(policy) == before).all()


def test_sigterm_mid_run_marks_it_interrupted_and_resume_finishes_it(plugin, tmp_path):
    db = tmp_path / "board.db"
    reference_db = tmp_path / "reference.db"
    base = ["run", *RUN, "--trainer", "faulty", "--plugin", plugin]
    reference = harness(*base, "--db", reference_db, env={"FAULT": "none", "FAULT_AT": "0"})
    assert reference.returncode == 0, reference.stderr
    stopped = harness(*base, "--db", db, env={"FAULT": "sigterm", "FAULT_AT": "2"})
    assert stopped.returncode == 130, stopped.stderr
    (run_id, status), = _rows(db, "select id, status from runs")
    assert status == "interrupted"
    resumed = harness("run", "--resume", run_id, "--plugin", plugin, "--db", db, env={"FAULT": "none", "FAULT_AT": "0"})
    assert resumed.returncode == 0, resumed.stderr
    metrics = "select iteration, win_rate, kl, labels from iterations order by iteration"
    assert _rows(db, metrics) == _rows(reference_db, metrics)
    reliability.fault("SIGTERM mid-run, then --resume", expected_rows=_board_rows(reference_db),
                      recorded_rows=_board_rows(db))


def test_a_database_locked_past_the_timeout_keeps_the_run_in_its_directory(plugin, tmp_path):
    db = tmp_path / "board.db"
    reference = tmp_path / "reference.db"
    assert harness("run", *RUN, "--db", reference).returncode == 0
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another process holds the write lock for the whole run
    try:
        result = harness("run", *RUN, "--db", db, env={"HARNESS_DB_TIMEOUT": "0.3"})
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert result.returncode == 1, result.stderr
    text = " ".join(result.stderr.split())
    assert "could not be written" in text and "harness leaderboard import" in text
    (journal,) = (tmp_path / "runs").glob("*/unrecorded.jsonl")
    ops = [json.loads(line)["op"] for line in journal.read_text().splitlines()]
    assert ops[0] == "start" and ops[-1] == "finish" and ops.count("iteration") == 4 and ops.count("pairs") == 3

    run_id = journal.parent.name
    early = harness("run", "--resume", run_id, "--db", db)  # the journal must be recorded first
    assert early.returncode == 2 and "harness leaderboard import" in early.stderr
    imported = harness("leaderboard", "import", journal.parent, "--db", db)
    assert imported.returncode == 0, imported.stderr
    metrics = "select iteration, win_rate, kl, labels from iterations order by iteration"
    assert _rows(db, metrics) == _rows(reference, metrics)
    assert _rows(db, "select status, labels_used from runs") == _rows(reference, "select status, labels_used from runs")
    assert _rows(db, "select count(*) from labels") == _rows(reference, "select count(*) from labels")
    again = harness("leaderboard", "import", journal.parent, "--db", db)
    assert again.returncode == 2 and "holds no unrecorded.jsonl" in again.stderr
    reliability.fault("database locked past the busy timeout, then import", expected_rows=_board_rows(reference),
                      recorded_rows=_board_rows(db))


def test_a_write_failing_mid_run_is_journalled_from_there_on(cli, tmp_path, monkeypatch):
    from leaderboard.store import Leaderboard

    db = tmp_path / "board.db"
    real = Leaderboard.record_iteration

    def failing(self, run_id, row):
        if row["iteration"] == 2:
            raise sqlite3.OperationalError("disk I/O error")
        return real(self, run_id, row)

    monkeypatch.setattr(Leaderboard, "record_iteration", failing)
    result = cli("run", *RUN, "--db", db)
    assert result.exit_code == 1
    (run_id, status), = _rows(db, "select id, status from runs")
    assert status == "running" and _rows(db, "select max(iteration) from iterations") == [(1,)]
    monkeypatch.setattr(Leaderboard, "record_iteration", real)
    imported = cli("leaderboard", "import", tmp_path / "runs" / run_id, "--db", db)
    assert imported.exit_code == 0, imported.output
    assert _rows(db, "select status from runs") == [("finished",)]
    assert _rows(db, "select max(iteration) from iterations") == [(3,)]
    ledger = _rows(db, "select labels_used from runs")[0][0]
    assert _rows(db, "select count(*) from labels") == [(ledger,)]
    reliability.fault("a write fails mid-run, then import", expected_rows=1 + 4 + ledger, recorded_rows=_board_rows(db))
