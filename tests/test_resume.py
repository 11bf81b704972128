"""`harness run --resume`: a run killed with SIGKILL mid-way ends with the numbers of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys

import pytest

import reliability
from killer_plugin import KILLER  # the plugin file's source
from leaderboard.store import Leaderboard
from tests.conftest import TINY_RUN

RUN = [*TINY_RUN, "--iterations", "3", "--budget", "120", "--selector", "smallest", "--seed", "7",
       "--trainer", "native_killer"]


@pytest.fixture
def killer(tmp_path):
    path = tmp_path / "killer.py"
    path.write_text(KILLER)
    return str(path)


def harness(*args, db, kill_at=None):
    env = dict(os.environ, HARNESS_DB=str(db))
    env.pop("KILL_AT_ITERATION", None)
    if kill_at is not None:
        env["KILL_AT_ITERATION"] = str(kill_at)
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, env=env)


def strip(rows):
    return [{k: v for k, v in r.items() if not k.startswith("time_") and k not in ("recorded_at",)} for r in rows]


@pytest.mark.fault
@pytest.mark.parametrize("reference", ["fixed", "previous"])
def test_sigkill_in_iteration_2_then_resume_matches_an_uninterrupted_run(killer, tmp_path, reference):
    db = tmp_path / "board.db"
    args = [*RUN, "--reference", reference]
    killed = harness("run", *args, "--plugin", killer, db=db, kill_at=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    board = Leaderboard(db)
    (run,) = board.runs(status=None)
    assert run["status"] == "running"  # SIGKILL gave it no chance to say otherwise
    assert [r["iteration"] for r in board.iterations(run["id"])] == [0, 1]

    resumed = harness("run", "--resume", run["id"], "--plugin", killer, "--json", db=db)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["run_id"] == run["id"]

    uninterrupted = harness("run", *args, "--plugin", killer, "--json", db=db)
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    reference_id = json.loads(uninterrupted.stdout.strip().splitlines()[-1])["run_id"]

    board = Leaderboard(db)
    after, uninterrupted = board.get_run(run["id"]), board.get_run(reference_id)
    assert after["status"] == "finished" and after["error"] is None
    assert strip(board.iterations(run["id"])) == [
        {**row, "run_id": run["id"]} for row in strip(board.iterations(reference_id))
    ]
    for key in ("final_win_rate", "final_win_rate_se", "final_gold_reward", "final_kl", "labels_used",
                "initial_win_rate"):
        assert after[key] == uninterrupted[key], key
    reliability.fault(f"SIGKILL mid-run, then --resume ({reference} reference)",
                      expected_rows=len(board.iterations(reference_id)), recorded_rows=len(board.iterations(run["id"])))


@pytest.mark.fault
def test_a_corrupted_checkpoint_is_named_and_never_continued(killer, tmp_path):
    db = tmp_path / "board.db"
    assert harness("run", *RUN, "--plugin", killer, db=db, kill_at=2).returncode == -signal.SIGKILL
    (run,) = Leaderboard(db).runs(status=None)
    (policy_file,) = (tmp_path / "runs" / run["id"]).glob("checkpoint-*/policy.safetensors")
    data = policy_file.read_bytes()
    policy_file.write_bytes(data[: len(data) // 2])

    resumed = harness("run", "--resume", run["id"], "--plugin", killer, db=db)
    assert resumed.returncode == 1
    assert "policy.safetensors" in resumed.stderr and "sha256" in resumed.stderr
    after = Leaderboard(db).get_run(run["id"])
    assert after["status"] == "failed" and after["final_win_rate"] is None
    kept = len(Leaderboard(db).iterations(run["id"]))  # pi_0 and iteration 1, recorded before the kill
    reliability.fault("corrupted checkpoint on resume", expected_rows=2, recorded_rows=kept)


def test_resume_refuses_finished_and_unknown_runs(cli, db_path):
    result = cli("run", *TINY_RUN, "--json")
    assert result.exit_code == 0
    run_id = json.loads(result.stdout.strip().splitlines()[-1])["run_id"]
    finished = cli("run", "--resume", run_id)
    assert finished.exit_code == 2 and "already finished" in finished.output
    unknown = cli("run", "--resume", run_id[:-1] + "x")
    assert unknown.exit_code == 2 and "did you mean" in unknown.output
